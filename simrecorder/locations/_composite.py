"""Locations made of locations: cache levels, spill-over and a size filter.

The semantics are tarn's (``tarn.location.Levels``, ``Fanout``, ``SmallLocation``),
for a key-value store whose values may change:

- :class:`Levels` reads from the first level holding the key and copies the value into
  the earlier (faster) levels marked ``replicate``; a write goes to the first level
  marked ``write`` that accepts it.
- :class:`Fanout` writes to the first location that accepts (spilling to the next when
  one declines) and reads from whichever holds the key.
- :class:`Small` declines values larger than ``max_size``, so ``Fanout(Small(fast,
  4096), big)`` keeps small values on the fast location.

Declining is not failing: a composite offers a value to the next location only when
one *declines* (``write`` returns ``False``); an error raised by a location propagates
unchanged, never swallowed (diskcache's ``FanoutCache`` lesson). A stream is rewound
before it is offered again; a non-seekable stream is spooled (in memory up to
:data:`SPOOL_BYTES`, then on disk) once, so it can be offered to several locations.

Because values may change, a write that lands in one location deletes the key from
the other writable locations, so no stale copy shadows the new value (tarn stores
content-addressed values and needs no such step).
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, ClassVar, NamedTuple

from ..errors import ArgumentTypeError, InvalidArgumentError, ReadOnlyError
from .base import (
    COPY_CHUNK_BYTES,
    Data,
    Location,
    check_location_key,
    iter_chunks,
    rewind,
    stream_position,
)

__all__ = ["Fanout", "Level", "Levels", "Small"]

#: Bytes of a non-seekable stream kept in memory while offering it; more goes to disk.
SPOOL_BYTES = 8 << 20


@contextmanager
def replayable(data: Data, offers: int = 2) -> Iterator[tuple[Data, Callable[[], None]]]:
    """``data`` in a form that can be offered to several locations, and how to rewind it.

    Bytes need no rewinding; a seekable stream is sought back to where it was; a
    non-seekable stream is spooled once (unless it is offered to one location only).

    Raises
    ------
    ArgumentTypeError
        ``data`` is neither bytes-like nor a readable stream.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield data, lambda: None
        return
    if not hasattr(data, "read"):
        raise ArgumentTypeError(
            f"a location stores bytes or a binary stream, got {type(data).__name__}"
        )
    position = stream_position(data)
    if position is not None:
        yield data, lambda: rewind(data, position)
        return
    if offers <= 1:
        yield data, lambda: None
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        for chunk in iter_chunks(data, COPY_CHUNK_BYTES):
            spool.write(chunk)
        spool.seek(0)
        yield spool, lambda: spool.seek(0)  # type: ignore[misc]


def _merge_sorted(sources: Iterable[Iterator[str]]) -> Iterator[str]:
    """The union of sorted key streams, sorted, each key once."""
    last = None
    for key in heapq.merge(*sources):
        if key != last:
            yield key
            last = key


class _Composite(Location):
    """What Levels and Fanout share: children, capabilities, delete, keys, close."""

    protocol: ClassVar[str] = "composite"
    supports_streaming: ClassVar[bool] = True

    def __init__(self, children: list[Location]) -> None:
        if not children:
            raise InvalidArgumentError(f"{type(self).__name__} needs at least one location")
        for child in children:
            if not isinstance(child, Location):
                raise ArgumentTypeError(
                    f"{type(self).__name__} takes locations, got {type(child).__name__}"
                )
        self._children = children
        self.persistent = all(child.persistent for child in children)  # type: ignore[misc]

    @property
    def url(self) -> str:
        """``kind://(url, url, ...)``: names the parts (not reopened by ``open_location``)."""
        return f"{self.protocol}://({', '.join(child.url for child in self._children)})"

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (the union over all parts)."""
        yield from _merge_sorted(child.keys(prefix) for child in self._children)

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists` (no copy-on-read)."""
        check_location_key(key)
        return any(child.exists(key) for child in self._children)

    def delete(self, key: str) -> bool:
        """Delete ``key`` everywhere it can be deleted; return whether it existed.

        Raises
        ------
        ReadOnlyError
            A read-only part still holds ``key`` (it would be read again).
        """
        check_location_key(key)
        self._refuse_read_only(key)
        deleted = False
        for child in self._children:
            if not child.read_only:
                deleted = child.delete(key) or deleted
        for child in self._children:
            if child.read_only and child.exists(key):
                raise ReadOnlyError(
                    f"{self.url}: cannot delete {key!r}, the read-only {child.url} holds it"
                )
        return deleted

    def _drop_stale(self, key: str, keep: Location) -> None:
        """Delete ``key`` from every writable part except ``keep`` (no stale copies)."""
        for child in self._children:
            if child is not keep and not child.read_only:
                child.delete(key)

    def _offer(self, key: str, data: Data, targets: list[Location]) -> bool:
        """Offer ``data`` to ``targets`` in turn; the first that accepts keeps it."""
        check_location_key(key)
        with replayable(data, offers=len(targets)) as (payload, again):
            for target in targets:
                if target.write(key, payload):
                    self._drop_stale(key, target)
                    return True
                again()
        return False

    def close(self) -> None:
        """Close every part."""
        for child in self._children:
            child.close()


class Fanout(_Composite):
    """Several locations seen as one: writes spill to the next when one declines.

    Parameters
    ----------
    *locations
        In order of preference: a write goes to the first that accepts, a read to the
        first that holds the key.

    Examples
    --------
    >>> from simrecorder.locations import MemoryLocation
    >>> small, large = MemoryLocation(max_size=10), MemoryLocation()
    >>> both = Fanout(small, large)
    >>> both.put("a", b"tiny"), both.put("b", b"larger than ten bytes")
    (True, True)
    >>> list(small.keys()), list(large.keys()), list(both.keys())
    (['a'], ['b'], ['a', 'b'])
    """

    protocol: ClassVar[str] = "fanout"

    def __init__(self, *locations: Location) -> None:
        super().__init__(list(locations))
        self.locations = tuple(locations)
        self.read_only = all(location.read_only for location in locations)

    @contextmanager
    def read(self, key: str) -> Iterator[IO[bytes] | None]:
        """See :meth:`Location.read` (from the first location holding the key)."""
        check_location_key(key)
        for location in self.locations:
            with location.read(key) as stream:
                if stream is not None:
                    yield stream
                    return
        yield None

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        check_location_key(key)
        for location in self.locations:
            value = location.get(key)
            if value is not None:
                return value
        return None

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (one batch per location for the keys left)."""
        keys = list(keys)
        found: dict[str, bytes | None] = dict.fromkeys(keys)
        missing = list(dict.fromkeys(keys))
        for location in self.locations:
            if not missing:
                break
            got = location.read_many(missing)
            found.update((key, value) for key, value in got.items() if value is not None)
            missing = [key for key in missing if got.get(key) is None]
        return found

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write` (the first location that accepts keeps the value)."""
        targets = [location for location in self.locations if not location.read_only]
        return self._offer(key, data, targets)


class Level(NamedTuple):
    """One level of :class:`Levels`.

    Attributes
    ----------
    location
        The location of this level.
    write
        Writes may land here.
    replicate
        Values read from a later level are copied here (copy-on-read).
    """

    location: Location
    write: bool = True
    replicate: bool = True


class Levels(_Composite):
    """Levels of storage, fastest first: reads fill the faster levels.

    Parameters
    ----------
    *levels
        :class:`Level` s (a bare location is ``Level(location)``), fastest first.

    Notes
    -----
    A read takes the value from the first level holding the key and copies it into the
    earlier levels marked ``replicate`` (each may decline, e.g. when full; an error
    propagates). A write goes to the first level marked ``write`` that accepts it and
    removes the key from the other levels. A typical set-up keeps a local cache that is
    filled by reads only: ``Levels(Level(disk_cache, write=False), Level(s3))``.

    Examples
    --------
    >>> from simrecorder.locations import MemoryLocation
    >>> cache, store = MemoryLocation(), MemoryLocation()
    >>> levels = Levels(Level(cache, write=False), store)
    >>> levels.put("k", b"v")
    True
    >>> list(cache.keys()), list(store.keys())
    ([], ['k'])
    >>> levels.get("k"), list(cache.keys())
    (b'v', ['k'])
    """

    protocol: ClassVar[str] = "levels"

    def __init__(self, *levels: Level | Location) -> None:
        self.levels = tuple(level if isinstance(level, Level) else Level(level) for level in levels)
        super().__init__([level.location for level in self.levels])
        self.read_only = not any(
            level.write and not level.location.read_only for level in self.levels
        )

    @contextmanager
    def read(self, key: str) -> Iterator[IO[bytes] | None]:
        """See :meth:`Location.read` (copies the value into earlier ``replicate`` levels)."""
        check_location_key(key)
        for index, level in enumerate(self.levels):
            with level.location.read(key) as stream:
                if stream is None:
                    continue
                targets = self._replicas(index)
                if not targets:
                    yield stream
                    return
                with replayable(stream, offers=len(targets) + 1) as (payload, again):
                    for target in targets:
                        target.write(key, payload)  # a declining (full) level is fine
                        again()
                    yield payload  # type: ignore[misc]  # a stream: bytes never reach here
                return
        yield None

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (one batch per level, copies into earlier ones)."""
        keys = list(keys)
        found: dict[str, bytes | None] = dict.fromkeys(keys)
        missing = list(dict.fromkeys(keys))
        for index, level in enumerate(self.levels):
            if not missing:
                break
            got = {key: value for key, value in level.location.read_many(missing).items()
                   if value is not None}  # fmt: skip
            for target in self._replicas(index):
                target.write_many(got)
            found.update(got)
            missing = [key for key in missing if key not in got]
        return found

    def _replicas(self, index: int) -> list[Location]:
        """The earlier levels a value found at level ``index`` is copied into."""
        return [
            level.location
            for level in self.levels[:index]
            if level.replicate and not level.location.read_only
        ]

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write` (the first ``write`` level that accepts keeps it)."""
        targets = [
            level.location for level in self.levels if level.write and not level.location.read_only
        ]
        return self._offer(key, data, targets)


class Small(Location):
    """A location that declines values larger than ``max_size`` bytes.

    Parameters
    ----------
    location
        Where accepted values go (reads, listing and deletes go there too).
    max_size
        The largest value accepted, in bytes.

    Notes
    -----
    The size of a seekable stream is measured without reading it; a non-seekable stream
    is read up to ``max_size + 1`` bytes, so a declined one has been consumed (offer it
    through :class:`Fanout`, which spools such streams first).

    Examples
    --------
    >>> from simrecorder.locations import MemoryLocation
    >>> small = Small(MemoryLocation(), max_size=4)
    >>> small.put("a", b"1234"), small.put("b", b"12345")
    (True, False)
    """

    protocol: ClassVar[str] = "small"
    supports_streaming: ClassVar[bool] = True

    def __init__(self, location: Location, max_size: int) -> None:
        if not isinstance(location, Location):
            raise ArgumentTypeError(f"Small wraps a location, got {type(location).__name__}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise InvalidArgumentError(f"Small: max_size must be an int >= 0, got {max_size!r}")
        self.location = location
        self.max_size = max_size
        self.max_value_bytes = max_size
        self.read_only = location.read_only
        self.persistent = location.persistent  # type: ignore[misc]  # mirrors the wrapped one

    @property
    def url(self) -> str:
        """``small+<wrapped url>`` with ``max_size`` in the query."""
        base, sep, query = self.location.url.partition("?")
        extra = f"max_size={self.max_size}"
        return f"small+{base}?{query + '&' if sep and query else ''}{extra}"

    def read(self, key: str) -> Any:
        """See :meth:`Location.read`."""
        return self.location.read(key)

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        return self.location.get(key)

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return self.location.exists(key)

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many`."""
        return self.location.read_many(keys)

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        return self.location.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys`."""
        return self.location.keys(prefix)

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write` (declines values over ``max_size``)."""
        check_location_key(key)
        if isinstance(data, (bytes, bytearray, memoryview)):
            size = memoryview(data).nbytes
            return size <= self.max_size and self.location.write(key, data)
        if not hasattr(data, "read"):
            raise ArgumentTypeError(
                f"a location stores bytes or a binary stream, got {type(data).__name__}"
            )
        position = stream_position(data)
        if position is None:  # read just past the limit to know
            head = _read_at_most(data, self.max_size + 1)
            return len(head) <= self.max_size and self.location.write(key, head)
        end = data.seek(0, 2)
        rewind(data, position)
        return end - position <= self.max_size and self.location.write(key, data)

    def close(self) -> None:
        """Close the wrapped location."""
        self.location.close()


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream`` (``read`` may return fewer than asked)."""
    pieces: list[bytes] = []
    size = 0
    while size < limit:
        piece = stream.read(min(limit - size, COPY_CHUNK_BYTES))
        if not piece:
            break
        pieces.append(bytes(piece))
        size += len(piece)
    return b"".join(pieces)
