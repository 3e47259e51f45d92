"""A zarr v3 store over LMDB: every zarr key is a key of one LMDB environment.

zarr-python 3 ships no LMDB store (zarr v2's ``LMDBStore`` is gone); this is one for
:class:`~simrecorder.ZarrDataStore` (``DatastoreType.LMDB``) and for plain zarr::

    import zarr
    from simrecorder.datastores import LMDBStore

    group = zarr.open_group(LMDBStore("run.mdb", read_only=True), mode="r")

The store is a directory (``run.mdb/``) holding LMDB's ``data.mdb`` and ``lock.mdb``,
as zarr v2's ``LMDBStore`` made it. Keys are the zarr keys, UTF-8 encoded
(``zarr.json``, ``train/loss/zarr.json``, ``train/loss/c.0``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import lmdb
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ReadOnlyError,
    StoreClosedError,
    StoreFormatError,
    StoreFullError,
    StoreNotFoundError,
    StoreWriteError,
)

__all__ = ["DATA_FILE", "LMDBStore", "holds_lmdb"]

#: the file that holds an LMDB environment's data, inside the store's directory
DATA_FILE = "data.mdb"
#: LMDB's lock file (reader slots), beside :data:`DATA_FILE`
LOCK_FILE = "lock.mdb"
#: the first map size of a new environment; it doubles whenever it is full
DEFAULT_MAP_SIZE = 1 << 30


def holds_lmdb(path: str) -> bool:
    """True when the directory ``path`` holds an LMDB environment (``data.mdb``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, DATA_FILE))


class _Env:
    """One open LMDB environment, shared by every store of this process on its path
    (LMDB forbids opening an environment twice in one process; see :meth:`acquire`).

    Every transaction runs under one lock and ends before the lock is released, so
    the map can grow and the environment can be reopened for writing (neither is
    allowed while a transaction of this process is live).
    """

    _open: ClassVar[dict[str, _Env]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.read_only = True
        self.durable = False
        self.users = 0
        self.lock = threading.RLock()
        self.pending: dict[bytes, bytes | None] | None = None  # a batch: key -> value/None
        self.env: Any = None
        self.identity: tuple[int, int] | None = None  # (device, inode) of data.mdb

    @classmethod
    def acquire(cls, path: str, read_only: bool, map_size: int, durable: bool) -> _Env:
        """The environment at ``path``, opened (or reopened for writing) as needed."""
        key = os.path.realpath(path)
        with cls._registry_lock:
            env = cls._open.get(key)
            if env is None or env.identity != _identity(path):
                env = cls(path)  # new, or the files were replaced under an open one
            with env.lock:
                if env.env is None or (env.read_only and not read_only):
                    env._reopen(read_only, map_size, durable)
                env.users += 1
            cls._open[key] = env
        return env

    def _reopen(self, read_only: bool, map_size: int, durable: bool) -> None:
        if self.env is not None:
            map_size = max(map_size, self.env.info()["map_size"])
            self.env.close()
            self.env = None

        def open_env(lock: bool) -> Any:
            return lmdb.open(self.path, map_size=map_size, subdir=True, readonly=read_only,
                             create=not read_only, sync=durable, metasync=durable,
                             readahead=False, lock=lock)  # fmt: skip

        try:
            try:
                self.env = open_env(lock=True)
            except lmdb.Error:
                if not read_only:
                    raise
                # e.g. a read-only directory: no lock.mdb to register in (no writer)
                self.env = open_env(lock=False)
        except lmdb.Error as exc:
            raise _lmdb_error(exc, self.path, "opening") from exc
        self.read_only, self.durable = read_only, durable
        self.identity = _identity(self.path)
        if not read_only:
            self.env.reader_check()  # free the reader slots of killed processes

    def _check_open(self) -> None:
        if self.env is None:
            raise StoreClosedError(f"the LMDB store {self.path!r} is closed")

    def release(self) -> None:
        """One user fewer; the last one closes the environment."""
        with self._registry_lock, self.lock:
            self.users -= 1
            if self.users > 0 or self.env is None:
                return
            self.env.close()
            self.env = None
            for key, env in list(self._open.items()):
                if env is self:
                    del self._open[key]

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A read transaction; adopts a map that another process grew."""
        with self.lock:
            self._check_open()
            try:
                txn = self.env.begin(buffers=False)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)  # the writer grew the map: take its size
                txn = self.env.begin(buffers=False)
            try:
                yield txn
            finally:
                txn.abort()

    def get(self, key: bytes) -> bytes | None:
        with self.lock:
            if self.pending is not None and key in self.pending:
                return self.pending[key]
            with self.reading() as txn:
                value: bytes | None = txn.get(key)
            return value

    def keys(self, prefix: bytes = b"") -> list[bytes]:
        """Every key starting with ``prefix``, sorted, batch included."""
        with self.lock, self.reading() as txn:
            cursor = txn.cursor()
            found = set()
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    found.add(bytes(key))
            for key, value in (self.pending or {}).items():
                if key.startswith(prefix):
                    if value is None:
                        found.discard(key)
                    else:
                        found.add(key)
        return sorted(found)

    def write(self, items: Mapping[bytes, bytes | None]) -> None:
        """Put (or delete, value None) ``items`` in one transaction, or into the batch."""
        with self.lock:
            if self.pending is not None:
                self.pending.update(items)
                return
            self._commit(items)

    def _commit(self, items: Mapping[bytes, bytes | None], clear: bool = False) -> None:
        if not items and not clear:
            return
        self._check_open()
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    if clear:
                        txn.drop(self.env.open_db(txn=txn), delete=False)
                    for key, value in items.items():
                        if value is None:
                            txn.delete(key)
                        else:
                            txn.put(key, value)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(2 * self.env.info()["map_size"])
            except lmdb.Error as exc:
                needed = sum(len(value or b"") for value in items.values())
                raise _lmdb_error(exc, self.path, "writing to", needed) from exc

    def clear(self) -> None:
        """Delete every key, in one transaction."""
        with self.lock:
            if self.pending is not None:
                self.pending = dict.fromkeys(self.keys())
            else:
                self._commit({}, clear=True)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the writes of the block in memory and commit them in one transaction
        when it ends without an exception (discard them when it raises). Nested
        batches join the outer one."""
        owner = False
        try:
            with self.lock:
                if self.pending is None:
                    owner = True  # first: an interrupt after it still clears the batch
                    self.pending = {}
            yield
            if owner:
                with self.lock:
                    items = self.pending or {}
                    self._commit(items)
        finally:
            if owner:
                self.pending = None

    def sync(self) -> None:
        with self.lock:
            if not self.read_only:
                try:
                    self.env.sync(True)
                except lmdb.Error as exc:
                    raise _lmdb_error(exc, self.path, "syncing") from exc


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the environment's data file, or None if there is none."""
    try:
        info = os.stat(os.path.join(path, DATA_FILE))
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _lmdb_error(exc: lmdb.Error, path: str, doing: str, needed: int = 0) -> Exception:
    """The simrecorder error for an LMDB failure of the environment at ``path``.

    LMDB reports a disk that fills up in the middle of a page write as ``EIO`` (a
    short write): with less free space than the transaction needed (twice its values,
    for the copied B-tree pages, plus 1 MiB) that is a full disk too.
    """
    text = str(exc)
    full = isinstance(exc, lmdb.DiskError) or "No space left" in text
    if not full and "Input/output error" in text:
        with contextlib.suppress(OSError):
            info = os.statvfs(path)
            full = info.f_bavail * info.f_frsize < 2 * needed + (1 << 20)
    if full:
        return StoreFullError(
            f"{doing} the LMDB store {path!r}: the disk is full ({exc}); the failed "
            "transaction wrote nothing: free space and write again"
        )
    if isinstance(exc, lmdb.InvalidError | lmdb.VersionMismatchError | lmdb.CorruptedError):
        return StoreFormatError(f"{path!r} is not a readable LMDB environment: {exc}")
    return StoreWriteError(f"{doing} the LMDB store {path!r} failed: {exc}")


class LMDBStore(Store):
    """A zarr v3 store in an LMDB environment (a directory with ``data.mdb``).

    Parameters
    ----------
    path
        The environment's directory, created (for writing) if missing.
    read_only
        Open the environment read-only: nothing is ever written to ``data.mdb``.
    map_size
        The first size of LMDB's memory map in bytes; a write that does not fit
        doubles it (and retries), so a small value only costs a few retries.
    durable
        Sync every transaction to disk on commit (LMDB's ``sync``). Without it a
        crash of the process loses nothing committed; a power loss may.

    Raises
    ------
    StoreNotFoundError
        ``read_only`` and no LMDB environment at ``path``.

    Notes
    -----
    Writes made inside :meth:`batch` are committed together in one LMDB transaction.
    Readers in other processes see each committed transaction whole.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        durable: bool = False,
        _env: _Env | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        self.path = os.path.abspath(os.fspath(path))
        if _env is None:
            if int(map_size) <= 0:
                raise InvalidArgumentError(f"map_size must be > 0 bytes, got {map_size!r}")
            if read_only and not holds_lmdb(self.path):
                raise StoreNotFoundError(f"no LMDB store ({DATA_FILE}) at {self.path!r}")
            _env = _Env.acquire(self.path, read_only, int(map_size), durable)
        else:
            with _Env._registry_lock, _env.lock:
                _env.users += 1
        self._env = _env
        self._is_open = True
        # a store dropped without close() gives its environment back when collected
        self._release = weakref.finalize(self, _env.release)

    # -- identity -----------------------------------------------------------------------
    def with_read_only(self, read_only: bool = False) -> LMDBStore:
        # docstring inherited: a view of the same open environment
        if not read_only and self._env.read_only:
            raise ReadOnlyError(f"the LMDB store {self.path!r} was opened read-only")
        return type(self)(self.path, read_only=read_only, _env=self._env)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LMDBStore)
            and other.path == self.path
            and other.read_only == self.read_only
        )

    def __hash__(self) -> int:
        return hash((self.path, self.read_only))

    def __str__(self) -> str:
        return f"zarr+lmdb://{self.path}"

    def __repr__(self) -> str:
        return f"LMDBStore({self.path!r}, read_only={self.read_only})"

    def close(self) -> None:
        # docstring inherited: closes the environment (shared with with_read_only views)
        if self._is_open:
            super().close()
        self._release()  # once only

    # -- synchronous access (simrecorder's own, no event loop) ---------------------------
    def get_bytes(self, key: str) -> bytes | None:
        """The value of ``key``, or None."""
        return self._env.get(key.encode())

    def set_bytes(self, key: str, value: bytes | memoryview | None) -> None:
        """Put ``value`` at ``key`` (delete it for None)."""
        self._check_writable()
        self._env.write({key.encode(): None if value is None else bytes(value)})

    def keys_with_prefix(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""
        return [key.decode() for key in self._env.keys(prefix.encode())]

    def clear_keys(self) -> None:
        """Delete every key, in one transaction."""
        self._check_writable()
        self._env.clear()

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Commit the writes made inside the block in one transaction, or none of
        them if it raises."""
        return self._env.batch()

    def sync(self) -> None:
        """Flush the environment to disk (``fsync``)."""
        self._env.sync()

    # -- zarr's Store API ---------------------------------------------------------------
    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if prototype is None:
            prototype = default_buffer_prototype()
        value = self._env.get(key.encode())
        if value is None:
            return None
        return prototype.buffer.from_bytes(_slice(value, byte_range))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return self._env.get(key.encode()) is not None

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        if not isinstance(value, Buffer):
            raise ArgumentTypeError(
                f"LMDBStore.set({key!r}) on {self.path!r}: value must be a zarr Buffer, "
                f"got {type(value).__name__}"
            )
        self._env.write({key.encode(): value.to_bytes()})

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        with self._env.lock:
            if self._env.get(key.encode()) is None:
                await self.set(key, value)

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        self._env.write({key.encode(): None})

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited: one transaction
        self._check_writable()
        prefix = prefix.rstrip("/")
        start = f"{prefix}/".encode() if prefix else b""
        if start:
            self._env.write(dict.fromkeys(self._env.keys(start)))
        else:
            self._env.clear()

    async def clear(self) -> None:
        # docstring inherited: one transaction
        self._check_writable()
        self._env.clear()

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys_with_prefix(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys_with_prefix(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        seen = set()
        for key in self.keys_with_prefix(start):
            name = key[len(start) :].split("/", 1)[0]
            if name not in seen:
                seen.add(name)
                yield name


def _slice(value: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return value
    if isinstance(byte_range, RangeByteRequest):
        return value[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return value[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return value[-byte_range.suffix :] if byte_range.suffix else b""
    raise ArgumentTypeError(f"unknown zarr byte range {byte_range!r}")
