"""``HashKeyStorage``: content-addressed blobs over any location of the layer."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from ..errors import ArgumentTypeError, InvalidArgumentError, ReadOnlyError
from ..locations import Fanout, Levels, Location, Small
from ..locations.base import stream_position
from ._digest import (
    BLOCK_BYTES,
    Hasher,
    VerifyingReader,
    digest_file,
    digest_of,
    digest_stream,
    location_key,
    resolve_algorithm,
    to_hex,
)
from ._errors import ReadError, SourceNotFoundError, StorageCorruption, WriteError
from ._layout import DiskDict, HashLayout

__all__ = ["HashKeyStorage", "LocationLike", "resolve_location", "walk_locations"]

#: A location, a folder path (a :class:`DiskDict`), or a list of them (a ``Fanout``).
LocationLike = Location | str | os.PathLike[str] | Sequence[Any]

#: What :meth:`HashKeyStorage.write` takes.
Value = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]

#: Blobs up to this size are written to non-streaming locations (Redis, memory) without
#: asking whether they hold them first (one round trip instead of two).
SMALL_BYTES = 64 << 10

#: Bytes of a non-seekable stream kept in memory while it is hashed (more goes to disk).
SPOOL_BYTES = 8 << 20


def resolve_location(location: Any) -> Location:
    """A location from what tarn accepts: a location, a folder path, or a list of them.

    Raises
    ------
    ArgumentTypeError
        Anything else.

    Examples
    --------
    >>> from simrecorder.locations import MemoryLocation
    >>> resolve_location([MemoryLocation(), MemoryLocation()]).protocol
    'fanout'
    """
    if isinstance(location, Location):
        return location
    if isinstance(location, (str, os.PathLike)):
        return DiskDict(location)
    if isinstance(location, (list, tuple)):
        from . import Fanout as PathFanout

        return PathFanout(*location)
    raise ArgumentTypeError(
        "a blob location is a Location, a folder path or a list of them; "
        f"got {type(location).__name__}"
    )


def walk_locations(location: Location) -> Iterator[Location]:
    """``location`` and every location it is made of (composites, layouts, views)."""
    yield location
    children: list[Location] = []
    if isinstance(location, Levels):
        children = [level.location for level in location.levels]
    elif isinstance(location, Fanout):
        children = list(location.locations)
    elif isinstance(location, (Small, HashLayout)):
        children = [location.location]
    for child in children:
        yield from walk_locations(child)


class HashKeyStorage:
    """Content-addressed blob storage: a blob's key is the digest of its bytes.

    Parameters
    ----------
    local
        Where blobs are written and read first: a location, a folder path (a
        :class:`DiskDict`), or a list of them (a :class:`Fanout`).
    remote
        Where blobs missing locally are read from (the same forms; ``()`` for none).
        A blob read from there is copied into ``local`` (copy-on-read) after its
        digest is checked.
    algorithm
        A hashlib name or constructor; ``None`` takes the one of the ``DiskDict`` s
        involved, else ``"sha256"``.
    fetch
        Default of ``read(..., fetch=)``: whether reads look in ``remote``.
    error
        Default of ``error=``: a missing blob raises :class:`ReadError` and a write
        no location accepts raises :class:`WriteError` (else they give ``None``).
    verify
        Default of ``read(..., verify=)``: hash a blob before handing it out.
    labels
        Accepted for tarn's signature and ignored (simrecorder keeps no labels).

    Notes
    -----
    Keys are the raw digest bytes (what :meth:`write` returns, as tarn does); every
    method also takes the hex text. In a location a blob's key is ``"ab/cdef..."``;
    a :class:`DiskDict` (or tarn's S3 layout) lays it out by its own levels.

    Corruption: a blob handed out as a stream is hashed as it is read, and reading it
    to its end raises :class:`StorageCorruption` if it does not match its key; a blob
    handed out as a path (on local disk) is checked when ``verify=True`` or by
    :meth:`verify`. A consumer that raises :class:`StorageCorruption` inside ``with
    storage.read(key)`` evicts the blob; the exception propagates.

    Examples
    --------
    >>> import tempfile
    >>> storage = HashKeyStorage(tempfile.mkdtemp())
    >>> key = storage.write(b"my-bytes")
    >>> with storage.read(key) as value:
    ...     value.read_bytes()
    b'my-bytes'
    >>> storage.write(b"my-bytes") == key
    True
    """

    def __init__(
        self,
        local: LocationLike,
        remote: LocationLike = (),
        algorithm: str | Hasher | None = None,
        fetch: bool = True,
        error: bool = True,
        verify: bool = False,
        labels: Any = None,
    ) -> None:
        self.local = resolve_location(local)
        has_remote = not (isinstance(remote, (list, tuple)) and not remote)
        self.remote = resolve_location(remote) if has_remote else None
        self.algorithm_name, self.algorithm = self._pick_algorithm(algorithm)
        self.digest_size = int(self.algorithm().digest_size)
        self.fetch_default = bool(fetch)
        self.error_default = bool(error)
        self.verify_default = bool(verify)

    def _pick_algorithm(self, algorithm: str | Hasher | None) -> tuple[str, Hasher]:
        disks = [
            found
            for location in (self.local, self.remote)
            if location is not None
            for found in walk_locations(location)
            if isinstance(found, DiskDict)
        ]
        names = {disk.algorithm_name for disk in disks}
        if len(names) > 1:
            raise InvalidArgumentError(
                f"the folders hold digests of different algorithms ({', '.join(sorted(names))}): "
                f"{', '.join(disk.root for disk in disks)}"
            )
        if algorithm is None:
            return (names.pop(), disks[0].algorithm) if names else resolve_algorithm("sha256")
        name, factory = resolve_algorithm(algorithm)
        if names and names != {name}:
            raise InvalidArgumentError(
                f"algorithm {name!r} differs from the {names.pop()!r} of "
                f"{', '.join(disk.root for disk in disks)}"
            )
        return name, factory

    # -- keys -------------------------------------------------------------------------------

    def hex(self, key: object) -> str:
        """The hex digest of a key given as raw bytes or hex.

        Raises
        ------
        InvalidDigestError
            Not a digest of this storage's algorithm (a ``ValueError``).
        """
        return to_hex(key, self.digest_size)

    def _where(self) -> str:
        parts = [self.local.url]
        if self.remote is not None:
            parts.append(self.remote.url)
        return ", ".join(parts)

    # -- writing ----------------------------------------------------------------------------

    def write(self, value: Value, error: bool | None = None, labels: Any = None) -> bytes | None:
        """Store ``value`` once; return its digest (raw bytes, as tarn does).

        Parameters
        ----------
        value
            Bytes, a file path (``str`` or ``PathLike``), or a readable binary stream
            (read from where it is to its end; a non-seekable one is spooled while it
            is hashed, to memory up to 8 MiB, then to a temp file).
        error
            Raise :class:`WriteError` when no location accepts (default: the
            storage's ``error``); else return ``None``.
        labels
            Accepted for tarn's signature and ignored.

        Raises
        ------
        WriteError
            Every location declined (full, too small, read-only); names them.
        SourceNotFoundError
            ``value`` is a path that does not exist.
        ArgumentTypeError
            ``value`` is none of the above.
        """
        error = self.error_default if error is None else error
        if isinstance(value, (str, os.PathLike)) and isinstance(self.local, DiskDict):
            hexdigest, stored = self._store_file(value)  # copy and hash at once
        else:
            hexdigest, payload, cleanup = self._prepare(value)
            try:
                stored = self._store(location_key(hexdigest), payload)
            finally:
                cleanup()
        if not stored:
            if error:
                raise WriteError(
                    f"no location accepted blob {hexdigest}: {self.local.url} declined "
                    "(full, value too large for it, or read-only)"
                )
            return None
        return bytes.fromhex(hexdigest)

    def _store_file(self, path: str | os.PathLike[str]) -> tuple[str, bool]:
        assert isinstance(self.local, DiskDict)
        try:
            return self.local.store_file(path, self.algorithm)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise SourceNotFoundError(f"cannot store {os.fspath(path)}: no such file") from exc

    def _store(self, key: str, payload: Any) -> bool:
        small = isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) <= SMALL_BYTES
        if small and not self.local.supports_streaming:
            # Redis, memory: sending a small blob again costs what asking first would
            return self.local.write(key, payload)
        if self.local.exists(key):
            return True  # stored once: the same content has the same key
        return self.local.write(key, payload)

    def _prepare(self, value: Value) -> tuple[str, Any, Callable[[], None]]:
        """The digest of ``value``, what to write, and how to release it."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return digest_of(value, self.algorithm), value, _nothing
        if isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            try:
                hexdigest = digest_file(path, self.algorithm)
                stream = open(path, "rb")  # closed by cleanup
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise SourceNotFoundError(f"cannot store {path}: no such file") from exc
            return hexdigest, stream, stream.close
        if not hasattr(value, "read"):
            raise ArgumentTypeError(
                "a blob is bytes, a file path or a readable binary stream; "
                f"got {type(value).__name__}"
            )
        position = stream_position(value)
        if position is not None:
            hexdigest = digest_stream(value, self.algorithm)
            value.seek(position)
            return hexdigest, value, _nothing
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        hasher = self.algorithm()
        while piece := value.read(BLOCK_BYTES):
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                spool.close()
                raise ArgumentTypeError(
                    f"a blob stream must yield bytes, got {type(piece).__name__}"
                )
            hasher.update(piece)
            spool.write(piece)
        spool.seek(0)
        return str(hasher.hexdigest()), spool, spool.close

    # -- reading ----------------------------------------------------------------------------

    def read(
        self,
        func_or_key: Any,
        *args: Any,
        fetch: bool | None = None,
        error: bool | None = None,
        verify: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Open a blob: ``with storage.read(key) as value:``, or ``storage.read(func, key)``.

        ``value`` is a :class:`pathlib.Path` when the blob is a file on a local disk,
        else a readable binary stream; ``None`` for a missing blob with ``error=False``.

        Parameters
        ----------
        func_or_key
            The key (raw digest or hex), or a function called as ``func(value, *rest,
            **kwargs)`` whose result is returned (the key is then ``args[0]``).
        fetch
            Look in ``remote`` too, copying what is found into ``local``.
        error
            Raise :class:`ReadError` for a missing blob (else yield ``None``).
        verify
            Hash the blob before handing it out (:class:`StorageCorruption` and
            eviction when it does not match).

        Raises
        ------
        ReadError
            No location holds the blob (also a ``KeyError``); names the digest and
            the locations searched.
        InvalidDigestError
            The key is not a digest of this storage's algorithm (a ``ValueError``).
        """
        if callable(func_or_key):
            if not args:
                raise ArgumentTypeError("read(func, key, ...) needs the key after the function")
            key, *rest = args
            with self._open(self.hex(key), fetch, error, verify) as value:
                return func_or_key(value, *rest, **kwargs)
        if args or kwargs:
            raise ArgumentTypeError(
                "read(key) takes no further arguments (read(func, key, ...) does)"
            )
        # the key is checked here (a bad one raises at the call, not at `with`)
        return self._open(self.hex(func_or_key), fetch, error, verify)

    @contextmanager
    def _open(
        self, hexdigest: str, fetch: bool | None, error: bool | None, verify: bool | None
    ) -> Iterator[Any]:
        lkey = f"{hexdigest[:2]}/{hexdigest[2:]}"  # location_key, inlined: the hot path
        fetch = self.fetch_default if fetch is None else fetch
        verify = self.verify_default if verify is None else verify
        if not self.local.supports_streaming:  # Redis, memory: the value comes whole
            data = self.local.get(lkey)  # one request, no existence check first
            if data is not None:
                found = digest_of(data, self.algorithm)  # cheap: checked before handed out
                if found != hexdigest:
                    self._corrupted(self.local, hexdigest, found)
                try:
                    yield io.BytesIO(data)
                except StorageCorruption:
                    self._evict(self.local, lkey)
                    raise
                return
        else:
            with _open_value(self.local, lkey) as value:
                if value is not None:
                    with self._deliver(value, hexdigest, self.local, verify) as delivered:
                        yield delivered
                    return
        copied = self._copy_in(hexdigest, lkey) if fetch and self.remote is not None else None
        if copied is not None:
            source = self.local if copied else self.remote
            assert source is not None
            with _open_value(source, lkey) as value:
                if value is None:
                    raise ReadError(f"blob {hexdigest} vanished from {source.url} while reading it")
                with self._deliver(value, hexdigest, source, verify) as delivered:
                    yield delivered
            return
        if self.error_default if error is None else error:
            searched = self._where() if fetch else self.local.url
            raise ReadError(f"blob {hexdigest} not found (searched {searched})")
        yield None

    @contextmanager
    def _deliver(
        self, value: Path | IO[bytes], hexdigest: str, source: Location, verify: bool
    ) -> Iterator[Any]:
        """Hand out a blob: checked first when asked, hashed as it is read when a stream."""
        if verify:
            self._check(value, hexdigest, source)
        if not isinstance(value, Path):
            checked = VerifyingReader(
                value, self.algorithm, hexdigest,
                lambda found: self._corrupted(source, hexdigest, found),
            )  # fmt: skip
            value = cast(IO[bytes], checked)
        try:
            yield value
        except StorageCorruption:
            self._evict(source, location_key(hexdigest))
            raise

    def _copy_in(self, hexdigest: str, lkey: str) -> bool | None:
        """Copy the blob from remote into local (checked); None when remote lacks it."""
        assert self.remote is not None
        with _open_value(self.remote, lkey) as value:
            if value is None:
                return None
            stream = open(value, "rb") if isinstance(value, Path) else value
            try:
                checked = VerifyingReader(
                    stream, self.algorithm, hexdigest,
                    lambda found: self._corrupted(self.remote, hexdigest, found),  # type: ignore[arg-type]
                )  # fmt: skip
                return bool(self.local.write(lkey, cast(IO[bytes], checked)))
            finally:
                if stream is not value:
                    stream.close()

    def _check(self, value: Any, hexdigest: str, source: Location) -> None:
        if isinstance(value, Path):
            found = digest_file(value, self.algorithm)
        else:
            position = stream_position(value)
            if position is None:
                raise ArgumentTypeError(
                    f"cannot verify blob {hexdigest} from {source.url}: its stream cannot seek"
                )
            found = digest_stream(value, self.algorithm)
            value.seek(position)
        if found != hexdigest:
            self._corrupted(source, hexdigest, found)

    def _corrupted(self, source: Location, hexdigest: str, found: str) -> None:
        evicted = self._evict(source, location_key(hexdigest))
        raise StorageCorruption(
            f"blob {hexdigest} in {source.url} is corrupted: its content hashes to {found}"
            + ("; it was evicted" if evicted else "; the location is read-only, not evicted")
        )

    def _evict(self, source: Location, lkey: str) -> bool:
        try:
            source.delete(lkey)
        except ReadOnlyError:
            return False
        return True

    # -- the rest of tarn's API -------------------------------------------------------------

    def fetch(self, keys: Iterable[object], verbose: bool = False) -> Iterator[tuple[bytes, bool]]:
        """Copy blobs from ``remote`` into ``local``; yield ``(key, found)`` per key."""
        for key in keys:
            hexdigest = self.hex(key)
            lkey = location_key(hexdigest)
            found = self.local.exists(lkey) or (
                self.remote is not None and self._copy_in(hexdigest, lkey) is not None
            )
            yield bytes.fromhex(hexdigest), found

    def exists(self, key: object, fetch: bool = False) -> bool:
        """Whether a blob is stored locally (or remotely too with ``fetch=True``; no copy)."""
        lkey = location_key(self.hex(key))
        if self.local.exists(lkey):
            return True
        return bool(fetch and self.remote is not None and self.remote.exists(lkey))

    def __contains__(self, key: object) -> bool:
        return self.exists(key)

    def verify(self, key: object) -> bool:
        """Hash the local blob; evict it and return ``False`` when it is corrupted.

        Raises
        ------
        ReadError
            The blob is not stored locally.
        """
        try:
            with self._open(self.hex(key), fetch=False, error=True, verify=True):
                return True
        except StorageCorruption:
            return False

    def keys(self) -> Iterator[bytes]:
        """The digests stored locally (raw bytes), sorted."""
        for key in self.local.keys():
            try:
                yield bytes.fromhex(to_hex(key.replace("/", ""), self.digest_size))
            except ValueError:  # not a blob (e.g. smart_cache's index)
                continue

    def close(self) -> None:
        """Close the locations."""
        self.local.close()
        if self.remote is not None:
            self.remote.close()

    def __enter__(self) -> HashKeyStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashKeyStorage):
            return NotImplemented
        return (self.local, self.remote, self.algorithm_name) == (
            other.local, other.remote, other.algorithm_name)  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.local, self.remote, self.algorithm_name))

    def __repr__(self) -> str:
        remote = "" if self.remote is None else f", remote={self.remote!r}"
        return f"HashKeyStorage({self.local!r}{remote}, algorithm={self.algorithm_name!r})"


def _nothing() -> None:
    """Nothing to release."""


@contextmanager
def _open_value(location: Location, key: str) -> Iterator[Path | IO[bytes] | None]:
    """A blob as a path when it is a file on a local disk, else as a stream."""
    local_path = getattr(location, "local_path", None)
    if local_path is not None:
        yield local_path(key)
        return
    with location.read(key) as stream:
        yield _as_path(stream)


def _as_path(stream: IO[bytes] | None) -> Path | IO[bytes] | None:
    """The path of a stream that is an open local file, else the stream."""
    if isinstance(stream, (io.BufferedReader, io.FileIO)):
        name = getattr(stream, "name", None)
        if isinstance(name, str) and os.path.isabs(name):
            return Path(name)
    return stream
