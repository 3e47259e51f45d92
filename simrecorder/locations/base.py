"""The :class:`Location` contract: a small synchronous byte key-value store.

Everything in simrecorder that keeps bytes by key (MuMMI namespaces, encore's directory,
block series, content-addressed blobs, JSON object storage) stands on this contract, so
that atomic writes, locking, listing, URLs and error translation are written once per
kind of storage, not once per subsystem.

A location has four primitives:

- :meth:`Location.read` is a context manager yielding a binary stream, or ``None`` when
  the key is absent, so a large value never has to sit in memory;
- :meth:`Location.write` stores ``bytes`` or a binary stream and returns ``False`` when
  the location *declines* (full, value too large, read-only by design) — declining is
  not an error, it is what lets :class:`~simrecorder.locations.Fanout` spill over;
  failing (a server that is down, a damaged disk) raises;
- :meth:`Location.delete` returns whether something was deleted;
- :meth:`Location.keys` lists keys under a prefix, sorted.

Everything else (:meth:`~Location.get`, :meth:`~Location.put`, :meth:`~Location.exists`,
:meth:`~Location.read_many`, :meth:`~Location.write_many`, :meth:`~Location.sub`) is
derived, and a location overrides a derived method only to do it faster (Redis pipelines
``read_many``; taridx commits its index once per ``write_many``).

Keys are ``/``-separated paths with the rules of :func:`simrecorder._keys.validate_key`
(no empty, ``.`` or ``..`` parts, no control characters), so a key can become a path on
every file system and an object name on every server.
"""

from __future__ import annotations

import abc
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import IO, ClassVar

from .._keys import validate_key
from ..errors import ArgumentTypeError, InvalidArgumentError, ReadOnlyError, StoreLockedError

__all__ = [
    "LOCK_PREFIX",
    "Data",
    "Location",
    "LocationLock",
    "SubLocation",
    "acquire_within",
    "check_location_key",
    "lock_key",
    "rewind",
]

#: What :meth:`Location.write` accepts: bytes-like or a readable binary stream.
Data = bytes | bytearray | memoryview | IO[bytes]

#: Size of the pieces a stream is copied in (large values never sit in memory whole).
COPY_CHUNK_BYTES = 1 << 20

#: Prefix of the stored name of a lock (a file or a Redis key); never a listed key.
LOCK_PREFIX = ".simrecorder-lock-"

#: Seconds between two attempts of :func:`acquire_within` while it waits for a lock.
LOCK_POLL_SECONDS = 0.05


def check_location_key(key: object) -> str:
    """Return ``key`` if it is a valid location key, else raise :class:`InvalidKeyError`.

    Location keys follow the series-key rules of :func:`simrecorder._keys.validate_key`.

    Examples
    --------
    >>> check_location_key("ab/cdef")
    'ab/cdef'
    """
    return validate_key(key)


def rewind(stream: IO[bytes], position: int | None) -> None:
    """Seek ``stream`` back to ``position`` so the next location can read it again.

    Raises
    ------
    ArgumentTypeError
        If the stream cannot seek: a non-seekable stream can be offered to one location
        only (composites buffer such streams before offering them).
    """
    if position is None:
        raise ArgumentTypeError(
            "cannot rewind a non-seekable stream: it can be written to one location only"
        )
    stream.seek(position)


def stream_position(stream: IO[bytes]) -> int | None:
    """The current position of ``stream``, or ``None`` when it cannot seek."""
    try:
        if stream.seekable():
            return stream.tell()
    except (OSError, ValueError):
        pass
    return None


def check_data(where: object, key: str, data: object) -> None:
    """Raise :class:`ArgumentTypeError` (naming ``where`` and ``key``) unless ``data`` is
    bytes-like or a readable stream."""
    if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
        raise ArgumentTypeError(
            f"{where!r}: cannot write {key!r}: a location stores bytes or a binary stream, "
            f"got {type(data).__name__}"
        )


def stream_positions(items: Mapping[str, Data]) -> dict[str, int | None]:
    """Where each stream among ``items`` stands (``None`` for bytes-likes and streams
    that cannot seek), for :func:`rewind_streams` when a batch is declined."""
    return {
        key: None if isinstance(data, (bytes, bytearray, memoryview)) else stream_position(data)
        for key, data in items.items()
    }


def rewind_streams(items: Mapping[str, Data], positions: Mapping[str, int | None]) -> None:
    """Seek the seekable streams of a declined batch back to ``positions``."""
    for key, data in items.items():
        position = positions.get(key)
        if position is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            rewind(data, position)


def as_bytes(data: Data) -> bytes:
    """Read ``data`` whole: bytes-likes are converted, streams read to their end."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        return data.read()
    raise ArgumentTypeError(
        f"a location stores bytes or a binary stream, got {type(data).__name__}"
    )


def iter_chunks(data: Data, size: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield ``data`` in pieces of at most ``size`` bytes (streams are read lazily)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    if not hasattr(data, "read"):
        raise ArgumentTypeError(
            f"a location stores bytes or a binary stream, got {type(data).__name__}"
        )
    while True:
        piece = data.read(size)
        if not piece:
            return
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise ArgumentTypeError(
                f"a location stores binary streams, got a stream yielding {type(piece).__name__}"
            )
        yield bytes(piece)


def lock_key(name: str) -> str:
    """The stored name of the lock ``name``: its last part gets :data:`LOCK_PREFIX`, so
    the lock ``"a/writer"`` lives next to the keys under ``a/`` and is never one of them.

    Examples
    --------
    >>> lock_key("run1/writer")
    'run1/.simrecorder-lock-writer'
    """
    folder, _, last = check_location_key(name).rpartition("/")
    if last.startswith(LOCK_PREFIX):
        raise InvalidArgumentError(f"invalid lock name {name!r}: give the name, not the key")
    return f"{folder}/{LOCK_PREFIX}{last}" if folder else LOCK_PREFIX + last


def is_lock_name(part: str) -> bool:
    """Whether the key part ``part`` is the stored name of a lock (see :func:`lock_key`)."""
    return part.startswith(LOCK_PREFIX)


class LocationLock(abc.ABC):
    """A writer lock held on a location, as :meth:`Location.lock` returns it.

    Use it as a context manager or call :meth:`release`; :meth:`check` raises when
    the lock was lost (a lease that expired while its holder stalled). Only the
    process that took the lock releases it: a forked child's copy does nothing.

    Attributes
    ----------
    location
        The location the lock is on.
    name
        The lock's name (``"writer"``, or ``"prefix/writer"`` through a view).
    """

    def __init__(self, location: Location, name: str) -> None:
        self.location = location
        self.name = name
        self._pid = os.getpid()
        self._held = True

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (until :meth:`release`)."""
        return self._held and self._pid == os.getpid()

    def release(self) -> None:
        """Give the lock back (idempotent; a no-op in a forked child)."""
        if self.held:
            self._held = False
            self._release()

    @abc.abstractmethod
    def _release(self) -> None:
        """Give the lock back (backend hook, called once, in the holder's process)."""

    def check(self) -> None:
        """Raise :class:`StoreLockedError` when this lock is no longer held (the
        default: a lock is held until released)."""
        if not self.held:
            raise StoreLockedError(f"{self!r} was released: this writer no longer holds it")

    def __enter__(self) -> LocationLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.location!r}>"


def acquire_within(attempt: Callable[[], LocationLock], timeout: float | None) -> LocationLock:
    """Call ``attempt`` until it returns a lock or ``timeout`` seconds have passed.

    ``attempt`` raises :class:`StoreLockedError` while another writer holds the lock;
    ``timeout=0`` tries once, ``None`` waits for ever.
    """
    if timeout is not None and timeout < 0:
        raise InvalidArgumentError(f"a lock timeout is >= 0 seconds or None; got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except StoreLockedError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_POLL_SECONDS)


class Location(abc.ABC):
    """A synchronous byte key-value location.

    Subclasses implement :meth:`read`, :meth:`write`, :meth:`delete`, :meth:`keys` and
    :attr:`url`; they state what they can do in the capability class attributes below.
    Locations are picklable (they cross into worker processes) and compare equal when
    they address the same storage (same :attr:`url`).

    Attributes
    ----------
    protocol
        The URL scheme of this kind of location (``"memory"``, ``"file"``, ``"redis"``...).
    persistent
        Whether values outlive the process.
    read_only
        Whether this location refuses every write (:meth:`write` returns ``False``).
    supports_streaming
        Whether :meth:`read` streams from storage instead of loading the value whole.
    supports_atomic_batch
        Whether :meth:`write_many` lands all values or none.
    max_value_bytes
        Largest value accepted (larger ones are declined), or ``None`` for no limit.
    supports_locking
        Whether :meth:`lock` gives writer locks (directory, Redis, memory; not fsspec
        file systems, taridx or composites).
    """

    protocol: ClassVar[str] = ""
    persistent: ClassVar[bool] = True
    read_only: bool = False
    supports_streaming: ClassVar[bool] = False
    supports_atomic_batch: ClassVar[bool] = False
    supports_locking: bool = False
    max_value_bytes: int | None = None

    # -- primitives -------------------------------------------------------------------------

    @abc.abstractmethod
    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """Open the value under ``key`` for reading.

        Parameters
        ----------
        key
            The key.

        Returns
        -------
        context manager
            Yields a readable binary stream, or ``None`` when ``key`` is absent. Exceptions
            raised by the consumer inside the ``with`` block propagate unchanged.
        """

    @abc.abstractmethod
    def write(self, key: str, data: Data) -> bool:
        """Store ``data`` under ``key``, replacing any earlier value.

        A write is atomic: a reader (or a process killed mid-write) sees the old value
        or the new one, never a part.

        Parameters
        ----------
        key
            The key.
        data
            Bytes-like, or a readable binary stream (read to its end).

        Returns
        -------
        bool
            ``True`` when stored, ``False`` when the location declined (full, value too
            large, read-only). A declining location has read nothing from a seekable
            stream, or has rewound it.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""

    @abc.abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, sorted.

        ``prefix`` is a plain string prefix (``"a/b"`` also matches ``"a/bc"``); pass
        ``"a/b/"`` for the keys under a folder.
        """

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A URL that :func:`~simrecorder.locations.open_location` opens to this location."""

    @classmethod
    def from_url(cls, url: str, **options: object) -> Location:
        """Open the location that :attr:`url` names (kinds with no URL form raise).

        Raises
        ------
        InvalidArgumentError
            When this kind of location cannot be reopened from a URL.
        """
        raise InvalidArgumentError(f"{cls.__name__} cannot be opened from a URL ({url!r})")

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional hook, most locations hold nothing
        """Release connections or handles (the default holds none)."""

    def __enter__(self) -> Location:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- derived ----------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """Return the value under ``key`` as bytes, or ``None`` when absent."""
        with self.read(key) as stream:
            return None if stream is None else stream.read()

    def put(self, key: str, data: bytes) -> bool:
        """Store bytes under ``key`` (see :meth:`write`)."""
        return self.write(key, data)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        with self.read(key) as stream:
            return stream is not None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Return ``{key: bytes or None}`` for ``keys`` (one round trip where possible)."""
        return {key: self.get(key) for key in keys}

    def write_many(self, items: Mapping[str, Data]) -> dict[str, bool]:
        """Store several values; return ``{key: stored}`` (see :meth:`write`)."""
        return {key: self.write(key, data) for key, data in items.items()}

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete several keys; return how many existed."""
        return sum(self.delete(key) for key in keys)

    def lock(self, name: str = "writer", timeout: float | None = 0) -> LocationLock:
        """Take the exclusive lock ``name`` of this location (one writer at a time).

        Parameters
        ----------
        name
            The lock's name, a valid key (``"writer"``; a view's lock ``"writer"`` is
            its parent's ``"<prefix>/writer"``, so the two exclude each other).
        timeout
            Seconds to wait while another writer holds it: ``0`` (default) tries
            once, ``None`` waits for ever.

        Returns
        -------
        LocationLock
            The held lock: a context manager; :meth:`LocationLock.release` gives it back.

        Raises
        ------
        StoreLockedError
            Another writer (in this or another process) holds the lock.
        InvalidArgumentError
            This kind of location has no locks (:attr:`supports_locking` is false).
        """
        raise InvalidArgumentError(
            f"{self!r} has no writer locks (supports_locking is False): cannot lock {name!r}"
        )

    def sub(self, prefix: str) -> Location:
        """A view of the keys under ``prefix + '/'``, with that prefix removed.

        Examples
        --------
        >>> from simrecorder.locations import MemoryLocation
        >>> root = MemoryLocation()
        >>> ns = root.sub("run1")
        >>> ns.put("a", b"1")
        True
        >>> list(root.keys())
        ['run1/a']
        """
        return SubLocation(self, check_location_key(prefix.strip("/")))

    # -- identity ---------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return type(self) is type(other) and self.url == other.url

    def __hash__(self) -> int:
        return hash((type(self), self.url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- helpers for subclasses ---------------------------------------------------------------

    def _refuse_read_only(self, key: str) -> None:
        """Raise :class:`ReadOnlyError` for destructive calls on a read-only location."""
        if self.read_only:
            raise ReadOnlyError(f"{self.url}: cannot delete {key!r}, the location is read-only")


class SubLocation(Location):
    """The keys of ``parent`` under ``prefix/``, seen without the prefix.

    Parameters
    ----------
    parent
        The location holding the keys.
    prefix
        A valid key (``"a"`` or ``"a/b"``); keys of this view are stored as
        ``prefix + "/" + key`` in ``parent``.
    """

    def __init__(self, parent: Location, prefix: str) -> None:
        self.parent = parent
        self.prefix = check_location_key(prefix)
        self.read_only = parent.read_only
        self.max_value_bytes = parent.max_value_bytes
        self.persistent = parent.persistent  # type: ignore[misc]  # instance mirrors parent
        self.protocol = parent.protocol  # type: ignore[misc]
        self.supports_locking = parent.supports_locking

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{check_location_key(key)}"

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read`."""
        return self.parent.read(self._full(key))

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        return self.parent.write(self._full(key), data)

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        return self.parent.delete(self._full(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys`."""
        cut = len(self.prefix) + 1
        for key in self.parent.keys(f"{self.prefix}/{prefix}"):
            yield key[cut:]

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (delegates to the parent's batched form)."""
        keys = list(keys)
        values = self.parent.read_many([self._full(key) for key in keys])
        return {key: values[self._full(key)] for key in keys}

    def write_many(self, items: Mapping[str, Data]) -> dict[str, bool]:
        """See :meth:`Location.write_many` (delegates to the parent's batched form)."""
        stored = self.parent.write_many({self._full(key): data for key, data in items.items()})
        return {key: stored[self._full(key)] for key in items}

    def lock(self, name: str = "writer", timeout: float | None = 0) -> LocationLock:
        """See :meth:`Location.lock`: the parent's lock ``<prefix>/<name>``."""
        return self.parent.lock(self._full(name), timeout)

    def sub(self, prefix: str) -> Location:
        """See :meth:`Location.sub` (nested views flatten to one prefix)."""
        return SubLocation(self.parent, f"{self.prefix}/{check_location_key(prefix.strip('/'))}")

    @property
    def url(self) -> str:
        """The parent's URL with the prefix appended to its path."""
        return _join_url(self.parent.url, self.prefix)

    def close(self) -> None:
        """A view owns nothing: closing it leaves the parent open."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubLocation):
            return NotImplemented
        return self.parent == other.parent and self.prefix == other.prefix

    def __hash__(self) -> int:
        return hash((SubLocation, self.parent, self.prefix))


class BatchLocation(Location):
    """A location that stores every write as a batch committed at once (an index
    commit, a transaction): :meth:`write` is a batch of one.

    Subclasses implement :meth:`_commit_batch`; this class checks keys and data,
    declines when read-only and rewinds the streams of a declined batch.
    """

    supports_atomic_batch: ClassVar[bool] = True

    def _check(self, key: str) -> str:
        """Return ``key`` if this location can hold it (override to add rules)."""
        return check_location_key(key)

    @abc.abstractmethod
    def _commit_batch(self, items: Mapping[str, Data]) -> bool:
        """Store all of ``items`` or none; ``False`` when declined (full)."""

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        return self.write_many({key: data})[key]

    def write_many(self, items: Mapping[str, Data]) -> dict[str, bool]:
        """See :meth:`Location.write_many` (one commit: all land or none)."""
        for key, data in items.items():
            check_data(self, self._check(key), data)
        if self.read_only or not items:
            return dict.fromkeys(items, False)
        positions = stream_positions(items)
        if not self._commit_batch(items):
            rewind_streams(items, positions)
            return dict.fromkeys(items, False)
        return dict.fromkeys(items, True)


def _join_url(url: str, prefix: str) -> str:
    """Append ``prefix`` to the path of ``url`` (before any ``?query``)."""
    base, sep, query = url.partition("?")
    return f"{base.rstrip('/')}/{prefix}{sep}{query}"


@contextmanager
def bytes_stream(value: bytes | None) -> Iterator[IO[bytes] | None]:
    """Context manager yielding a stream over ``value`` (``None`` stays ``None``)."""
    yield None if value is None else io.BytesIO(value)
