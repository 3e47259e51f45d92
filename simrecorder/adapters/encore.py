"""An encore-style filesystem key-value store (``FileSystemStore``).

Compatible with the API and on-disk layout of Enthought encore's
``encore.storage.filesystem_store.FileSystemStore``: each key is ``<key>.data`` plus a
``<key>.metadata`` JSON file under the store root, which holds a magic file. What it
adds, each tested:

* every write is atomic with a defined commit point: data and metadata go to
  temporary files, the data is renamed into place first and the metadata last; a
  stream that fails midway leaves the old value. Both files of a write carry the same
  modification time (a per-write token), so a reader that finds different times
  retries and never returns new data with old metadata;
* ``update_metadata`` merges; a missing key raises ``KeyNotFoundError`` (a
  ``KeyError``) everywhere; a ``.metadata`` file that is not a JSON object raises
  ``StoreFormatError`` naming the key and the file (``query`` included);
* ``transaction()`` stages every write and commits them together on success (events
  are emitted after the commit) or discards them all;
* keys may contain ``/`` (nested directories, listed by ``glob``/``query_keys``);
  ``..``, absolute, NUL and reserved-suffix keys are refused, and nothing is written
  outside the root, symlinks included;
* large values stream in ``buffer_size`` pieces (``to_file`` of any size needs one
  buffer of memory);
* commits serialise with a file lock that ``locking=False`` turns off (file systems
  without ``flock``).

:class:`EncoreLocation` is the store's directory as a
:class:`~simrecorder.locations.Location` (key → ``<key>.data``, its metadata kept), so
block stores and composites can sit on an encore store and encore reads what they write.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import IO, Any, BinaryIO, ClassVar
from urllib.parse import quote, unquote

from .._fs import FileLock, contained_path, temp_path, translate_os_error
from .._url import parse_url
from ..errors import (
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    StoreFormatError,
    StoreFullError,
    StoreNotFoundError,
)
from ..locations.base import BatchLocation, Data, check_location_key

__all__ = [
    "EncoreLocation",
    "FileSystemStore",
    "SimpleEventManager",
    "StoreDeleteEvent",
    "StoreProgressEndEvent",
    "StoreProgressStartEvent",
    "StoreProgressStepEvent",
    "StoreSetEvent",
    "StoreUpdateEvent",
    "StoreValue",
    "init_shared_store",
]

_DATA, _META, _TMP = ".data", ".metadata", ".tmp"
_BUFFER = 1 << 20


_last_token = 0


def _token() -> int:
    """A modification time (ns) no other write of this process uses."""
    global _last_token
    _last_token = max(time.time_ns(), _last_token + 1)
    return _last_token


def _parse_metadata(raw: bytes, key: str, path: str) -> dict[str, Any]:
    """The metadata of ``key`` from the bytes of its ``.metadata`` file at ``path``.

    Raises
    ------
    StoreFormatError
        The file is not a JSON object (damaged, or written by another tool); the
        message names the key and the file.
    """
    try:
        metadata = json.loads(raw or b"{}")
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError of bad bytes
        raise StoreFormatError(
            f"key {key!r}: its metadata file {path!r} is not valid JSON ({exc}); "
            "rewrite it with set_metadata() or delete the key"
        ) from None
    if not isinstance(metadata, dict):
        raise StoreFormatError(
            f"key {key!r}: its metadata file {path!r} holds a JSON "
            f"{type(metadata).__name__}, not an object; rewrite it with set_metadata() "
            "or delete the key"
        )
    return metadata


def _read_json(path: str, key: str) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY)  # os-level: a query reads 1e5 of these
    try:
        raw = b""
        while piece := os.read(fd, 1 << 16):
            raw += piece
    finally:
        os.close(fd)
    return _parse_metadata(raw, key, path)


def init_shared_store(path: str, magic_fname: str = ".FSStore") -> None:
    """Create (or mark) ``path`` as a store by writing its magic file."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, magic_fname), "wb") as f:
        f.write(b"__version__ = 0\n")


# -- events ----------------------------------------------------------------------------------
class StoreEvent:
    """Base of store events: ``source`` (the store) and ``key``."""

    def __init__(self, source: Any, key: str, **attributes: Any) -> None:
        self.source = source
        self.key = key
        self.__dict__.update(attributes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r})"


class StoreSetEvent(StoreEvent):
    """A key was set (``metadata`` is the new metadata)."""


class StoreUpdateEvent(StoreEvent):
    """A key's metadata was updated (``metadata`` holds the changes)."""


class StoreDeleteEvent(StoreEvent):
    """A key was deleted (``metadata`` is what it had)."""


class StoreProgressStartEvent(StoreEvent):
    """A buffered copy starts (``steps``: expected bytes, or -1 if unknown)."""


class StoreProgressStepEvent(StoreEvent):
    """A buffer was copied (``step``: bytes so far)."""


class StoreProgressEndEvent(StoreEvent):
    """A buffered copy ended (``exit_state``: 'normal' or 'error')."""


class SimpleEventManager:
    """A minimal event manager: ``connect(event_class, callback)``, ``emit(event)``.

    Any object with an ``emit(event)`` method (encore's ``EventManager`` included) can
    be passed to :class:`FileSystemStore` instead.
    """

    def __init__(self) -> None:
        self._listeners: list[tuple[type, Any]] = []

    def connect(self, cls: type, func: Any) -> None:
        """Call ``func(event)`` for every emitted event of class ``cls``."""
        self._listeners.append((cls, func))

    def emit(self, event: StoreEvent, block: bool = True) -> None:
        """Deliver ``event`` to the listeners of its class."""
        for cls, func in list(self._listeners):
            if isinstance(event, cls):
                func(event)


# -- values ----------------------------------------------------------------------------------
class StoreValue:
    """A value read from the store: ``data`` (a readable stream, opened on first use),
    ``metadata`` (a fresh copy each time), ``size``, ``created``, ``modified``; it
    unpacks as ``(data, metadata)`` and closes its stream as a context manager.

    Data and metadata always come from one write: if the key was rewritten between
    ``get()`` and the first use of ``data``, both are taken from the newer write.
    """

    def __init__(self, store: FileSystemStore, key: str, metadata: dict[str, Any],
                 stat: os.stat_result) -> None:  # fmt: skip
        self._store = store
        self._key = key
        self._path = store._paths(key)[0]
        self._stream: BinaryIO | None = None
        self._set(metadata, stat)
        self.permissions: dict[str, Any] | None = None

    def _set(self, metadata: dict[str, Any], stat: os.stat_result) -> None:
        self._metadata = metadata
        self._token = stat.st_mtime_ns
        self.size = stat.st_size
        self.created = stat.st_ctime
        self.modified = stat.st_mtime

    @property
    def data(self) -> BinaryIO:
        """The value's bytes as a readable stream."""
        if self._stream is None:
            stream: BinaryIO = open(self._path, "rb")
            if os.fstat(stream.fileno()).st_mtime_ns != self._token:
                stream.close()  # rewritten since get(): take data and metadata anew
                stream, metadata, stat = self._store._open_pair(self._key)
                self._set(metadata, stat)
            self._stream = stream
        return self._stream

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata."""
        return copy.deepcopy(self._metadata)

    def range(self, start: int | None = None, end: int | None = None) -> BinaryIO:
        """A stream of bytes ``start:end`` (end exclusive)."""
        with open(self._path, "rb") as f:
            start = start or 0
            f.seek(start)
            return io.BytesIO(f.read(-1 if end is None else max(0, end - start)))

    def iterdata(self, buffer_size: int = _BUFFER) -> Iterator[bytes]:
        """The bytes in pieces of ``buffer_size``."""
        with open(self._path, "rb") as f:
            while piece := f.read(buffer_size):
                yield piece

    def close(self) -> None:
        """Close the data stream, if it was opened."""
        if self._stream is not None:
            self._stream.close()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.data, self.metadata))

    def __enter__(self) -> StoreValue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the store -------------------------------------------------------------------------------
class FileSystemStore:
    """A key-value store in a directory: ``<key>.data`` + ``<key>.metadata`` (JSON).

    Parameters
    ----------
    path
        The store's root directory (made a store with :func:`init_shared_store`).
    magic_fname
        Name of the magic file that marks the root.
    event_manager
        Receives store events (``emit(event)``); a :class:`SimpleEventManager` by default.
    locking
        Serialise commits with a ``flock`` (default); ``False`` for file systems
        without ``flock`` (then one process may write at a time). ``None`` reads
        ``SIMRECORDER_FILE_LOCKING``.
    """

    def __init__(self, path: str, magic_fname: str = ".FSStore",
                 event_manager: Any = None, locking: bool | None = None) -> None:  # fmt: skip
        self.path = os.path.abspath(path)
        self.magic_fname = magic_fname
        self.locking = locking
        self.event_manager = event_manager if event_manager is not None else SimpleEventManager()
        self._connected = False
        self._staged: list[list[Any]] = []  # one list of actions per open transaction

    # -- connection ---------------------------------------------------------------------
    def connect(self, credentials: Any = None) -> None:
        """Open the store (``credentials`` are not used).

        Raises
        ------
        StoreNotFoundError
            ``path`` is not a store (no magic file); a ``FileNotFoundError``.
        """
        if not os.path.isfile(os.path.join(self.path, self.magic_fname)):
            raise StoreNotFoundError(
                f"{self.path!r} is not a FileSystemStore (no {self.magic_fname!r}): "
                "create one with init_shared_store(path)"
            )
        self._connected = True

    def disconnect(self) -> None:
        """Close the store."""
        self._connected = False

    def is_connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""
        return self._connected

    @property
    def info(self) -> dict[str, Any]:
        """What kind of store this is."""
        return {"type": "simrecorder.FileSystemStore", "path": self.path, "readonly": False}

    # -- keys and paths -----------------------------------------------------------------
    def _paths(self, key: Any) -> tuple[str, str]:
        if not isinstance(key, str) or not key:
            raise InvalidKeyError(f"invalid key {key!r}: keys are non-empty str")
        if "\x00" in key or key.startswith("/") or os.path.isabs(key):
            raise InvalidKeyError(f"invalid key {key!r}: NUL or absolute path")
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise InvalidKeyError(f"invalid key {key!r}: empty, '.' or '..' parts")
        if key.endswith((_DATA, _META, _TMP)) or key.split("/")[-1] == self.magic_fname:
            raise InvalidKeyError(f"invalid key {key!r}: reserved name or suffix")
        base = contained_path(self.path, key)  # never out of the root, symlinks included
        return base + _DATA, base + _META

    def _keys(self) -> Iterator[str]:
        for key, _ in self._walk():
            yield key

    def _walk(self) -> Iterator[tuple[str, str]]:
        """``(key, metadata path)`` of every key under the root (not following links)."""
        stack = [(self.path, "")]
        while stack:
            directory, prefix = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    name = entry.name
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{prefix}{name}/"))
                    elif name.endswith(_META):
                        yield prefix + name[: -len(_META)], entry.path

    # -- reading ------------------------------------------------------------------------
    def _missing(self, key: str) -> KeyNotFoundError:
        """The error for a key this store does not hold (a ``KeyError``)."""
        return KeyNotFoundError(f"key {key!r} not in FileSystemStore {self.path!r}")

    def _open_pair(self, key: str) -> tuple[BinaryIO, dict[str, Any], os.stat_result]:
        """The open data stream and the metadata of one write (same mtime token).

        The data file is opened first: the open stream keeps those bytes even if a
        writer replaces the file, and the token check rejects metadata of another write.
        A pair whose times differ but are older than 1 s, or stay unchanged for 0.1 s,
        was written by another tool (no token) and is taken as it is.
        """
        data_path, meta_path = self._paths(key)
        seen, since = None, time.monotonic()
        while True:
            try:
                stream = open(data_path, "rb")
            except FileNotFoundError:
                raise self._missing(key) from None
            try:
                data_stat = os.fstat(stream.fileno())
                with open(meta_path, "rb") as f:
                    meta_stat = os.fstat(f.fileno())
                    raw = f.read()
            except FileNotFoundError:
                stream.close()
                raise self._missing(key) from None
            signature = (data_stat.st_ino, data_stat.st_mtime_ns, meta_stat.st_ino,
                         meta_stat.st_mtime_ns)  # fmt: skip
            if signature != seen:
                seen, since = signature, time.monotonic()
            newest = max(meta_stat.st_mtime_ns, data_stat.st_mtime_ns)
            if (
                meta_stat.st_mtime_ns == data_stat.st_mtime_ns
                or time.time_ns() - newest > 1_000_000_000  # not being written now
                or time.monotonic() - since > 0.1  # unchanged for a while
            ):
                try:
                    return stream, _parse_metadata(raw, key, meta_path), data_stat
                except StoreFormatError:
                    stream.close()
                    raise
            stream.close()  # a writer is between its two renames
            time.sleep(0.0005)

    def _read(self, key: str) -> tuple[str, dict[str, Any], os.stat_result]:
        stream, metadata, stat = self._open_pair(key)
        stream.close()
        return self._paths(key)[0], metadata, stat

    def get(self, key: str) -> StoreValue:
        """The value of ``key`` (``KeyError`` if missing)."""
        _, metadata, stat = self._read(key)
        return StoreValue(self, key, metadata, stat)

    def get_data(self, key: str) -> BinaryIO:
        """A readable stream of the data of ``key``."""
        data_path, _ = self._paths(key)
        try:
            return open(data_path, "rb")
        except FileNotFoundError:
            raise self._missing(key) from None

    def get_data_range(self, key: str, start: int | None = None,
                       end: int | None = None) -> BinaryIO:  # fmt: skip
        """Bytes ``start:end`` of the data (end exclusive) as a stream."""
        return self.get(key).range(start, end)

    def get_metadata(self, key: str, select: Iterable[str] | None = None) -> dict[str, Any]:
        """A copy of the metadata of ``key``, only the ``select`` keys if given."""
        _, metadata, _ = self._read(key)
        if select is not None:
            metadata = {k: metadata[k] for k in select if k in metadata}
        return metadata

    def exists(self, key: str) -> bool:
        """Whether ``key`` has data and metadata."""
        data_path, meta_path = self._paths(key)
        return os.path.isfile(data_path) and os.path.isfile(meta_path)

    def multiget(self, keys: Iterable[str]) -> list[StoreValue]:
        """:meth:`get` for each key."""
        return [self.get(key) for key in keys]

    def multiget_data(self, keys: Iterable[str]) -> list[BinaryIO]:
        """:meth:`get_data` for each key."""
        return [self.get_data(key) for key in keys]

    def multiget_metadata(self, keys: Iterable[str],
                          select: Iterable[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """:meth:`get_metadata` for each key."""
        select = None if select is None else list(select)
        return [self.get_metadata(key, select) for key in keys]

    def query(self, select: Iterable[str] | None = None,
              **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:  # fmt: skip
        """``(key, metadata)`` of every key whose metadata has all ``kwargs`` items."""
        select = None if select is None else list(select)
        for key, meta_path in self._walk():
            try:
                metadata = _read_json(meta_path, key)
            except FileNotFoundError:
                continue  # deleted while we walked
            if all(k in metadata and metadata[k] == v for k, v in kwargs.items()):
                if select is not None:
                    metadata = {k: metadata[k] for k in select if k in metadata}
                yield key, metadata

    def query_keys(self, **kwargs: Any) -> Iterator[str]:
        """Keys whose metadata has all ``kwargs`` items."""
        for key, _ in self.query([], **kwargs):
            yield key

    def glob(self, pattern: str) -> Iterator[str]:
        """Keys matching the fnmatch ``pattern`` (``*`` also matches ``/``)."""
        return (key for key in self._keys() if fnmatch.fnmatchcase(key, pattern))

    def to_file(self, key: str, path: str, buffer_size: int = _BUFFER) -> None:
        """Copy the data of ``key`` into the file ``path``, a buffer at a time."""
        with self.get_data(key) as source, open(path, "wb") as target:
            while piece := source.read(buffer_size):
                target.write(piece)

    def to_bytes(self, key: str, buffer_size: int = _BUFFER) -> bytes:
        """The data of ``key`` as bytes."""
        with self.get_data(key) as source:
            return source.read()

    # -- writing ------------------------------------------------------------------------
    def _tmp(self, path: str) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return temp_path(path)  # simrecorder's one temp-name convention

    def _copy_stream(self, key: str, stream: Any, target: str, buffer_size: int) -> None:
        emit = self.event_manager.emit
        emit(StoreProgressStartEvent(self, key, steps=-1, operation_id=id(stream)))
        done, state = 0, "error"
        try:
            with open(target, "wb") as f:
                while piece := stream.read(buffer_size):
                    f.write(piece)
                    done += len(piece)
                    emit(StoreProgressStepEvent(self, key, step=done, operation_id=id(stream)))
            state = "normal"
        finally:
            emit(StoreProgressEndEvent(self, key, exit_state=state, operation_id=id(stream)))

    def _stage(self, key: str, stream: Any | None, metadata: dict[str, Any] | None,
               buffer_size: int, event: StoreEvent) -> None:  # fmt: skip
        """Write temporaries for a new value and commit them (now, or with the
        transaction). ``stream`` None keeps the data, ``metadata`` None keeps it."""
        data_path, meta_path = self._paths(key)
        temps: list[str] = []
        try:
            data_tmp = None
            if stream is not None:
                data_tmp = self._tmp(data_path)
                temps.append(data_tmp)
                self._copy_stream(key, stream, data_tmp, buffer_size)
            elif not os.path.isfile(data_path):
                data_tmp = self._tmp(data_path)  # metadata for a new key: empty data
                temps.append(data_tmp)
                open(data_tmp, "wb").close()
            if metadata is None:
                metadata = self._read(key)[1] if os.path.isfile(meta_path) else {}
            meta_tmp = self._tmp(meta_path)
            temps.append(meta_tmp)
            with open(meta_tmp, "wb") as f:
                f.write(json.dumps(metadata).encode("utf-8"))
        except BaseException:
            for tmp in temps:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            raise
        action = ("write", key, data_tmp, meta_tmp, event)
        if self._staged:
            self._staged[-1].append(action)
        else:
            self._commit([action])

    def _commit(self, actions: list[Any]) -> None:
        # Commits are serialised store-wide (flock on a file of our own, opened per
        # commit so threads exclude each other too): two writers of one key could
        # otherwise leave one's data beside the other's metadata.
        lock = os.path.join(self.path, ".simrecorder-commit.lock")
        with FileLock(lock, locking=self.locking, what=f"FileSystemStore {self.path!r}"):
            self._apply(actions)
        for action in actions:
            self.event_manager.emit(action[-1])

    def _apply(self, actions: list[Any]) -> None:
        for action in actions:
            if action[0] == "write":
                _, key, data_tmp, meta_tmp, _ = action
                data_path, meta_path = self._paths(key)
                token = _token()  # both files of this write carry the same mtime
                if data_tmp is None:
                    os.utime(data_path, ns=(token, token))
                else:
                    os.utime(data_tmp, ns=(token, token))
                    os.replace(data_tmp, data_path)  # data first ...
                os.utime(meta_tmp, ns=(token, token))
                os.replace(meta_tmp, meta_path)  # ... metadata last: the commit point
            else:
                _, key, _ = action
                data_path, meta_path = self._paths(key)
                os.remove(meta_path)  # metadata first: the key is gone at once
                with contextlib.suppress(FileNotFoundError):
                    os.remove(data_path)

    def set(self, key: str, value: Any, buffer_size: int = _BUFFER) -> None:
        """Set ``value``: a ``(stream, metadata)`` pair or an object with ``data`` and
        ``metadata`` (e.g. a :class:`StoreValue` from another store)."""
        if isinstance(value, tuple):
            stream, metadata = value
        else:
            stream, metadata = value.data, value.metadata
        metadata = copy.deepcopy(dict(metadata))
        self._stage(key, stream, metadata, buffer_size,
                    StoreSetEvent(self, key, metadata=copy.deepcopy(metadata)))  # fmt: skip

    def set_data(self, key: str, data: Any, buffer_size: int = _BUFFER) -> None:
        """Replace the data of ``key`` (metadata kept; ``{}`` for a new key)."""
        metadata = self.get_metadata(key) if self.exists(key) else {}
        self._stage(key, data, metadata, buffer_size,
                    StoreSetEvent(self, key, metadata=copy.deepcopy(metadata)))  # fmt: skip

    def set_metadata(self, key: str, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of ``key`` (empty data for a new key)."""
        fresh = copy.deepcopy(dict(metadata))
        self._stage(key, None, fresh, _BUFFER,
                    StoreSetEvent(self, key, metadata=copy.deepcopy(fresh)))  # fmt: skip

    def update_metadata(self, key: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into that of ``key`` (``KeyError`` if missing)."""
        merged = self.get_metadata(key)
        merged.update(copy.deepcopy(dict(metadata)))
        event = StoreUpdateEvent(self, key, metadata=copy.deepcopy(dict(metadata)))
        self._stage(key, None, merged, _BUFFER, event)

    def delete(self, key: str) -> None:
        """Delete ``key`` (``KeyError`` if missing)."""
        metadata = self.get_metadata(key)
        action = ("delete", key, StoreDeleteEvent(self, key, metadata=metadata))
        if self._staged:
            self._staged[-1].append(action)
        else:
            self._commit([action])

    def multiset(self, keys: Iterable[str], values: Iterable[Any],
                 buffer_size: int = _BUFFER) -> None:  # fmt: skip
        """:meth:`set` for each pair."""
        for key, value in zip(keys, values, strict=True):
            self.set(key, value, buffer_size)

    def multiset_data(self, keys: Iterable[str], datas: Iterable[Any],
                      buffer_size: int = _BUFFER) -> None:  # fmt: skip
        """:meth:`set_data` for each pair."""
        for key, data in zip(keys, datas, strict=True):
            self.set_data(key, data, buffer_size)

    def multiset_metadata(self, keys: Iterable[str], metadatas: Iterable[Any]) -> None:
        """:meth:`set_metadata` for each pair."""
        for key, metadata in zip(keys, metadatas, strict=True):
            self.set_metadata(key, metadata)

    def multiupdate_metadata(self, keys: Iterable[str], metadatas: Iterable[Any]) -> None:
        """:meth:`update_metadata` for each pair."""
        for key, metadata in zip(keys, metadatas, strict=True):
            self.update_metadata(key, metadata)

    def from_file(self, key: str, path: str, buffer_size: int = _BUFFER) -> None:
        """Set the data of ``key`` from the file ``path`` (streamed)."""
        with open(path, "rb") as f:
            self.set_data(key, f, buffer_size)

    def from_bytes(self, key: str, data: bytes, buffer_size: int = _BUFFER) -> None:
        """Set the data of ``key`` from bytes."""
        self.set_data(key, io.BytesIO(data), buffer_size)

    @contextlib.contextmanager
    def transaction(self, notes: str = "") -> Iterator[FileSystemStore]:
        """Stage every write inside; commit them together when the block succeeds
        (events follow the commit), discard them all when it raises."""
        self._staged.append([])
        try:
            yield self
        except BaseException:
            for action in self._staged.pop():
                if action[0] == "write":
                    for tmp in action[2:4]:
                        if tmp:
                            with contextlib.suppress(FileNotFoundError):
                                os.remove(tmp)
            raise
        actions = self._staged.pop()
        if self._staged:
            self._staged[-1].extend(actions)  # a nested transaction joins its parent
        else:
            self._commit(actions)


# -- the store's directory as a location ------------------------------------------------------
class EncoreLocation(BatchLocation):
    """An encore :class:`FileSystemStore` directory as a byte location.

    Key ``a/b`` is the data file ``a/b.data`` with its ``a/b.metadata`` beside it, the
    layout encore's own ``FileSystemStore`` reads; a write keeps the key's metadata
    (``{}`` for a new key). Writes are the store's atomic commits (data, then metadata,
    under its lock); :meth:`write_many` is one store transaction (all or none).

    Parameters
    ----------
    path
        The store's root (made a store with :func:`init_shared_store` when missing and
        ``create`` is true).
    magic_fname
        The magic file that marks the root.
    read_only
        Decline every write; :meth:`delete` raises :class:`ReadOnlyError`.
    create
        Create the store when ``path`` is none (else :class:`StoreNotFoundError`).
    locking
        See :class:`FileSystemStore`.

    Notes
    -----
    Keys ending in ``.data``, ``.metadata`` or ``.tmp`` and the magic file's name are
    refused (:class:`InvalidKeyError`): they are the store's own files. A full disk
    makes a write decline (``False``).

    Examples
    --------
    >>> import tempfile
    >>> loc = EncoreLocation(tempfile.mkdtemp())
    >>> loc.put("a/b", b"value")
    True
    >>> loc.store.get_metadata("a/b")
    {}
    """

    protocol: ClassVar[str] = "encore"
    persistent: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        magic_fname: str = ".FSStore",
        read_only: bool = False,
        create: bool = True,
        locking: bool | None = None,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.magic_fname = magic_fname
        self.read_only = bool(read_only)
        self.create = bool(create)
        self.locking = locking
        if create and not read_only and not os.path.isfile(os.path.join(self.path, magic_fname)):
            try:
                init_shared_store(self.path, magic_fname)
            except OSError as exc:
                raise translate_os_error(exc, self.path, "create the store") from exc
        self.store = FileSystemStore(self.path, magic_fname, locking=locking)
        self.store.connect()

    # -- identity ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``encore:///abs/path`` (plus ``?read_only=1``)."""
        base = "encore://" + quote(self.path)
        return base + "?read_only=1" if self.read_only else base

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EncoreLocation:
        """Open ``encore:///abs/path?read_only=1``.

        Raises
        ------
        InvalidArgumentError
            Another scheme, or an unknown option.
        """
        parsed = parse_url(url)
        if parsed.full_scheme != "encore":
            raise InvalidArgumentError(f"{cls.__name__} takes encore:// URLs; got {url!r}")
        settings: dict[str, Any] = {}
        for name, text in parsed.query.items():
            if name != "read_only":
                raise InvalidArgumentError(
                    f"unknown option {name!r} in {url!r}; an encore:// location takes read_only"
                )
            settings["read_only"] = text.lower() in ("1", "true", "yes")
        settings.update(options)
        return cls(unquote(parsed.location), **settings)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.path, self.magic_fname, self.read_only, self.create, self.locking),
        )

    # -- primitives -------------------------------------------------------------------------

    def _check(self, key: str) -> str:
        check_location_key(key)
        self.store._paths(key)  # the store's own rules (reserved names, containment)
        return key

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read` (yields the open data file)."""
        self._check(key)
        return self._open(key)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[IO[bytes] | None]:
        try:
            stream, _, _ = self.store._open_pair(key)
        except KeyNotFoundError:
            yield None
            return
        with stream:
            yield stream

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return self.store.exists(self._check(key))

    def _commit_batch(self, items: Mapping[str, Data]) -> bool:
        # docstring inherited: one store transaction; a full disk declines
        try:
            with self.store.transaction("simrecorder location write"):
                for key, data in items.items():
                    self.store.set_data(key, _as_stream(data))
        except OSError as exc:
            error = translate_os_error(exc, self.path)
            if not isinstance(error, StoreFullError):
                raise error from exc
            return False
        return True

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete` (data and metadata)."""
        self._check(key)
        self._refuse_read_only(key)
        try:
            self.store.delete(key)
        except KeyNotFoundError:
            return False
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (a walk of the folder the prefix names, sorted)."""
        folder = prefix.rpartition("/")[0]
        if folder:
            try:
                check_location_key(folder)
            except InvalidKeyError:
                return
        yield from sorted(key for key in self._walk(folder) if key.startswith(prefix))

    def _walk(self, folder: str) -> Iterator[str]:
        start = os.path.join(self.path, *folder.split("/")) if folder else self.path
        stack = [(start, f"{folder}/" if folder else "")]
        while stack:
            directory, head = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{head}{entry.name}/"))
                elif entry.name.endswith(_META):
                    yield head + entry.name[: -len(_META)]


def _as_stream(data: Data) -> IO[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(data)
    return data
