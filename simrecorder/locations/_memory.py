"""A location in this process's memory."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import IO, ClassVar

from ..errors import StoreLockedError
from .base import (
    Data,
    Location,
    LocationLock,
    acquire_within,
    as_bytes,
    bytes_stream,
    check_location_key,
    rewind,
    stream_position,
)

__all__ = ["MemoryLocation"]

_names = itertools.count()


class MemoryLocation(Location):
    """Values kept in a dict in this process (tests, caches, scratch space).

    Parameters
    ----------
    max_size
        Total bytes this location accepts; writes that would go over are declined.
        ``None`` (default) for no limit.
    read_only
        Decline every write.

    Notes
    -----
    A pickled memory location carries its values with it (a copy, not a shared dict),
    and none of its locks. :meth:`lock` is an in-process lock of this object (and of
    its views): a second ``lock()`` of the same name raises until the first is
    released, from any thread.
    """

    protocol: ClassVar[str] = "memory"
    persistent: ClassVar[bool] = False
    supports_locking = True

    def __init__(self, max_size: int | None = None, read_only: bool = False) -> None:
        self._values: dict[str, bytes] = {}
        self._sorted: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._held: set[str] = set()  # names of the locks taken (see lock())
        self.max_size = max_size
        self.read_only = read_only
        self._name = f"m{next(_names)}"

    @property
    def url(self) -> str:
        """``memory://<name>``: unique per instance (memory is not shared by URL)."""
        return f"memory://{self._name}"

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read`."""
        return bytes_stream(self._values.get(check_location_key(key)))

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get` (no stream in between)."""
        return self._values.get(check_location_key(key))

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return check_location_key(key) in self._values

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        check_location_key(key)
        if self.read_only:
            return False
        stream = None if isinstance(data, (bytes, bytearray, memoryview)) else data
        position = (
            stream_position(stream) if stream is not None and hasattr(stream, "read") else None
        )
        value = as_bytes(data)
        with self._lock:
            old = len(self._values.get(key, b""))
            if self.max_size is not None and self._size - old + len(value) > self.max_size:
                if stream is not None and position is not None:
                    rewind(stream, position)
                return False
            if key not in self._values:
                bisect.insort(self._sorted, key)
            self._values[key] = value
            self._size += len(value) - old
        return True

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        check_location_key(key)
        self._refuse_read_only(key)
        with self._lock:
            value = self._values.pop(key, None)
            if value is None:
                return False
            del self._sorted[bisect.bisect_left(self._sorted, key)]
            self._size -= len(value)
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys`."""
        with self._lock:
            start = bisect.bisect_left(self._sorted, prefix)
            found = []
            for key in itertools.islice(self._sorted, start, None):
                if not key.startswith(prefix):
                    break
                found.append(key)
        yield from found

    def lock(self, name: str = "writer", timeout: float | None = 0) -> LocationLock:
        """See :meth:`Location.lock` (an in-process lock of this object)."""
        check_location_key(name)
        return acquire_within(lambda: self._take(name), timeout)

    def _take(self, name: str) -> LocationLock:
        with self._lock:
            if name in self._held:
                raise StoreLockedError(
                    f"{self!r}: the lock {name!r} is held by another writer in this process"
                )
            self._held.add(name)
        return _MemoryLock(self, name)

    def _give_back(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_held"] = set()  # locks stay with the process that took them
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_held", set())
        self._lock = threading.Lock()


class _MemoryLock(LocationLock):
    """A lock of a :class:`MemoryLocation` (see :meth:`MemoryLocation.lock`)."""

    location: MemoryLocation

    def _release(self) -> None:
        self.location._give_back(self.name)
