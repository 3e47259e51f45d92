"""MuMMI-style namespace I/O: files in a namespace, on three backends.

A namespace is a directory (``simple``), a tar archive with an index (``taridx``) or
a key prefix in Redis (``redis``); in it, a key is a file name (``/`` makes
subdirectories) and a value its bytes. ``get_io(name)`` returns an object with MuMMI
core's I/O functions and argument conventions, with the original's rough edges
fixed: a missing key is ``KeyError`` (one key) or ``None`` in its place (a list);
failures raise instead of returning False; ``list_keys`` returns full keys relative to
the namespace, sorted, matched with one ``fnmatch`` dialect everywhere; delete and
move work on every backend; keys never leave their namespace; npz reading refuses
pickles unless asked; checkpoints are atomic and fall back to the newest valid backup.

>>> import tempfile
>>> io = get_io("simple")
>>> ns = tempfile.mkdtemp()
>>> io.save_files(ns, ["a/x", "b/x"], [b"1", b"2"])
>>> io.list_keys(ns, "*x")
['a/x', 'b/x']
>>> io.load_files(ns, ["a/x", "nope"])
[b'1', None]
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fnmatch
import glob
import io
import json
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    ValueTooLargeError,
)
from ._npz import read_npz, write_npz
from ._taridx import TarIndex, compact, reindex, tar_names

__all__ = [
    "NamespaceIO",
    "RedisIO",
    "SimpleIO",
    "TaridxIO",
    "compact",
    "get_io",
    "read_npz",
    "reindex",
    "tar_names",
    "write_npz",
]


def check_key(key: Any) -> str:
    """A key relative to its namespace: no ``..``, not absolute, no NUL, no empty parts."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"invalid key {key!r}: keys are non-empty str")
    if "\x00" in key:
        raise InvalidKeyError(f"invalid key {key!r}: NUL character")
    if key.startswith("/") or os.path.isabs(key):
        raise InvalidKeyError(f"invalid key {key!r}: absolute keys leave the namespace")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKeyError(f"invalid key {key!r}: empty, '.' or '..' parts")
    return key


def _check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str) or not namespace or "\x00" in namespace:
        raise InvalidKeyError(f"invalid namespace {namespace!r}")
    return namespace


def _as_bytes(value: Any, key: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ArgumentTypeError(f"key {key!r}: values are bytes or str, got {type(value).__name__}")


def _with_suffix(key: str, suffix: str) -> str:
    return key if os.path.splitext(key)[1] == suffix else key + suffix


class NamespaceIO(ABC):
    """The MuMMI I/O API; backends implement the ``_`` primitives."""

    name = ""

    # -- primitives ---------------------------------------------------------------------
    @abstractmethod
    def _exists(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def _namespace_exists(self, namespace: str) -> bool: ...

    @abstractmethod
    def _keys(self, namespace: str) -> list[str]: ...

    @abstractmethod
    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None: ...

    @abstractmethod
    def _delete(self, namespace: str, keys: list[str]) -> list[bool]: ...

    @abstractmethod
    def _move(self, namespace: str, old: str, new: str) -> None: ...

    # -- MuMMI's API --------------------------------------------------------------------
    def get_type(self) -> str:
        """``'simple'``, ``'taridx'`` or ``'redis'``."""
        return self.name

    def check_environment(self) -> bool:
        """True when the backend can be used (raises with the reason otherwise)."""
        return True

    def file_exists(self, namespace: str, key: str) -> bool:
        """Whether ``key`` exists in ``namespace``."""
        return self._exists(_check_namespace(namespace), check_key(key))

    def files_exist(self, namespace: str, keys: list[str]) -> list[bool]:
        """:meth:`file_exists` for each key."""
        return [self.file_exists(namespace, key) for key in keys]

    def namespace_exists(self, namespace: str) -> bool:
        """Whether the namespace exists (holds or held keys)."""
        return self._namespace_exists(_check_namespace(namespace))

    def list_keys(self, namespace: str, keypattern: str = "*") -> list[str]:
        """Sorted keys (relative to the namespace) matching ``keypattern`` (fnmatch,
        case-sensitive, ``*`` also matches ``/``)."""
        keys = self._keys(_check_namespace(namespace))
        return sorted(k for k in keys if fnmatch.fnmatchcase(k, keypattern))

    def move_key(self, namespace: str, key: str, prefix: str = "done", suffix: str = ".npz") -> str:
        """Rename ``key`` (``suffix`` appended if missing) to ``<prefix>-<name>`` in the
        same directory of the namespace; return the new key."""
        old = check_key(_with_suffix(key, suffix))
        head, base = os.path.split(old)
        new = check_key(f"{head}/{prefix}-{base}" if head else f"{prefix}-{base}")
        if not self._exists(_check_namespace(namespace), old):
            raise KeyNotFoundError(f"key {old!r} not in namespace {namespace!r}")
        self._move(namespace, old, new)
        return new

    def save_files(self, namespace: str, keys: str | list[str], data: Any) -> None:
        """Save one value (``str`` key) or several (lists of equal length)."""
        _check_namespace(namespace)
        if isinstance(keys, str):
            keys, data = [keys], [data]
        elif not isinstance(keys, list) or not isinstance(data, list) or len(keys) != len(data):
            raise InvalidArgumentError(
                f"save_files({namespace!r}, ...) takes a key and a value, or two lists of "
                f"equal length; got keys of type {type(keys).__name__} and data of type "
                f"{type(data).__name__}"
            )
        items = [(check_key(k), _as_bytes(d, k)) for k, d in zip(keys, data, strict=True)]
        self._write(namespace, items)

    def load_files(self, namespace: str, keys: str | list[str]) -> Any:
        """Bytes of one key (``KeyError`` if missing) or a list (``None`` if missing)."""
        _check_namespace(namespace)
        if isinstance(keys, str):
            found = self._read(namespace, [check_key(keys)])[0]
            if found is None:
                raise KeyNotFoundError(f"key {keys!r} not in namespace {namespace!r}")
            return found
        if not isinstance(keys, list):
            raise InvalidArgumentError(
                f"load_files({namespace!r}, ...) takes a key or a list of keys, got "
                f"{type(keys).__name__}"
            )
        return self._read(namespace, [check_key(k) for k in keys])

    def remove_files(self, namespace: str, keys: str | list[str]) -> Any:
        """Remove one key (``KeyError`` if missing) or several (a list of removed flags)."""
        _check_namespace(namespace)
        if isinstance(keys, str):
            if not self._delete(namespace, [check_key(keys)])[0]:
                raise KeyNotFoundError(f"key {keys!r} not in namespace {namespace!r}")
            return True
        return self._delete(namespace, [check_key(k) for k in keys])

    def save_npz(
        self,
        namespace: str,
        keys: str | list[str],
        data: Any,
        writer_func: Callable[[io.BytesIO, Any], io.BytesIO] = write_npz,
    ) -> None:
        """Save dicts of arrays as npz (``.npz`` appended to keys that lack it)."""
        if isinstance(keys, str):
            keys, data = _with_suffix(keys, ".npz"), writer_func(io.BytesIO(), data).getvalue()
        else:
            keys = [_with_suffix(k, ".npz") for k in keys]
            data = [writer_func(io.BytesIO(), d).getvalue() for d in data]
        self.save_files(namespace, keys, data)

    def load_npz(
        self,
        namespace: str,
        keys: str | list[str],
        reader_func: Callable[[io.BytesIO], Any] = read_npz,
    ) -> Any:
        """Load npz values (``None`` for missing keys in the list form)."""
        if isinstance(keys, str):
            return reader_func(io.BytesIO(self.load_files(namespace, _with_suffix(keys, ".npz"))))
        raw = self.load_files(namespace, [_with_suffix(k, ".npz") for k in keys])
        return [None if r is None else reader_func(io.BytesIO(r)) for r in raw]

    # -- files of the workflow (not in a namespace) -------------------------------------
    @staticmethod
    def take_backup(filename: str, suffix: str | None = None) -> str | None:
        """Copy ``filename`` to ``filename.bak[.suffix]`` (atomically; the live file
        stays where it is). Returns the backup's name, or None without a file."""
        if not os.path.isfile(filename):
            return None
        backup = f"{filename}.bak" if suffix is None else f"{filename}.bak.{suffix}"
        with open(filename, "rb") as f:
            _atomic_write(backup, f.read())
        return backup

    def save_checkpoint(
        self,
        filename: str,
        data: dict[str, Any],
        use_tstamp: bool = False,
        cleanup: bool = False,
        keep_checkpoint: int = 2,
    ) -> None:
        """Write ``data`` (plus ``ts``) atomically to ``filename`` (JSON, which YAML
        readers also read); the previous checkpoint is kept as a ``.bak`` copy
        (timestamped with ``use_tstamp``; ``cleanup`` keeps the newest
        ``keep_checkpoint`` of those). The caller's dict is not changed."""
        now = _dt.datetime.now()
        suffix = now.strftime("%Y%m%d_%H%M%S_%f") if use_tstamp else None
        self.take_backup(filename, suffix)
        payload = copy.deepcopy(data)
        payload["ts"] = now.strftime("%Y-%m-%d %H:%M:%S")
        _atomic_write(filename, json.dumps(payload, indent=1, default=repr).encode())
        if use_tstamp and cleanup:
            for old in _backups(filename)[keep_checkpoint:]:
                os.remove(old)

    @staticmethod
    def load_checkpoint(filename: str) -> dict[str, Any]:
        """The checkpoint in ``filename``, else the newest readable backup, else ``{}``."""
        for candidate in [filename, *_backups(filename)]:
            data = _read_checkpoint(candidate)
            if data:
                return data
        return {}

    @staticmethod
    def send_signal(path: str, key: str) -> None:
        """Create the signal file ``key`` in the directory ``path``."""
        os.makedirs(path, exist_ok=True)
        _atomic_write(os.path.join(path, check_key(key)), b"1")

    @staticmethod
    def test_signal(path: str, key: str) -> bool:
        """Whether the signal ``key`` was sent in ``path``."""
        return bool(key) and os.path.isfile(os.path.join(path, check_key(key)))


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # a full disk must not leave the partial copy behind
        raise


def _backups(filename: str) -> list[str]:
    """Backups of a checkpoint, newest first."""
    found = glob.glob(glob.escape(filename) + ".bak*")
    return sorted((f for f in found if not f.endswith(".tmp")), key=os.path.getmtime,
                  reverse=True)  # fmt: skip


def _read_checkpoint(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            import yaml  # MuMMI wrote YAML; read it when PyYAML is there
        except ImportError:
            return None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    return data if isinstance(data, dict) and data else None


class SimpleIO(NamespaceIO):
    """A namespace is a directory; a key is a file path inside it."""

    name = "simple"

    def _path(self, namespace: str, key: str) -> str:
        root = os.path.realpath(namespace)
        path = os.path.realpath(os.path.join(root, key))
        if os.path.commonpath([root, path]) != root or path == root:
            raise InvalidKeyError(f"key {key!r} leaves namespace {namespace!r} (symlink?)")
        return path

    def _exists(self, namespace: str, key: str) -> bool:
        return os.path.isfile(self._path(namespace, key))

    def _namespace_exists(self, namespace: str) -> bool:
        return os.path.isdir(namespace)

    def _keys(self, namespace: str) -> list[str]:
        keys = []
        for root, _dirs, files in os.walk(namespace):
            for name in files:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    rel = os.path.relpath(os.path.join(root, name), namespace)
                    keys.append(rel.replace(os.sep, "/"))
        return keys

    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            try:
                with open(self._path(namespace, key), "rb") as f:
                    out.append(f.read())
            except (FileNotFoundError, IsADirectoryError):
                out.append(None)
        return out

    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None:
        os.makedirs(namespace, exist_ok=True)
        for key, data in items:
            _atomic_write(self._path(namespace, key), data)

    def _delete(self, namespace: str, keys: list[str]) -> list[bool]:
        removed = []
        for key in keys:
            try:
                os.remove(self._path(namespace, key))
                removed.append(True)
            except FileNotFoundError:
                removed.append(False)
        return removed

    def _move(self, namespace: str, old: str, new: str) -> None:
        target = self._path(namespace, new)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(self._path(namespace, old), target)


class TaridxIO(NamespaceIO):
    """A namespace is a tar file (``ns`` or ``ns.tar``) with an index beside it."""

    name = "taridx"

    def __init__(self) -> None:
        self._indexes: dict[str, TarIndex] = {}

    def _index(self, namespace: str) -> TarIndex:
        path = namespace if namespace.endswith(".tar") else namespace + ".tar"
        index = self._indexes.get(path)
        if index is None:
            index = self._indexes[path] = TarIndex(path)
        index.refresh()  # reads only index lines other writers appended since
        return index

    def _exists(self, namespace: str, key: str) -> bool:
        return key in self._index(namespace).entries

    def _namespace_exists(self, namespace: str) -> bool:
        return os.path.isfile(self._index(namespace).path)

    def _keys(self, namespace: str) -> list[str]:
        return list(self._index(namespace).entries)

    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        index = self._index(namespace)
        return [index.read(key) for key in keys]

    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None:
        index = self._index(namespace)
        os.makedirs(os.path.dirname(os.path.abspath(index.path)), exist_ok=True)
        with index.writing():
            index.append(list(items))

    def _delete(self, namespace: str, keys: list[str]) -> list[bool]:
        index = self._index(namespace)
        with index.writing():
            present = [key in index.entries for key in keys]
            tombstones: list[tuple[str, bytes | None]] = [
                (k, None) for k, p in zip(keys, present, strict=True) if p
            ]
            if tombstones:
                index.append(tombstones)
        return present

    def _move(self, namespace: str, old: str, new: str) -> None:
        index = self._index(namespace)
        with index.writing():
            data = index.read(old)
            if data is None:
                raise KeyNotFoundError(f"key {old!r} not in namespace {namespace!r}")
            index.append([(new, data), (old, None)])

    def compact(self, namespace: str) -> int:
        """Rewrite the archive with its live keys only (drops old versions, tombstones)."""
        index = self._index(namespace)
        count = compact(index.path)
        self._indexes.pop(index.path, None)
        return count

    def reindex(self, namespace: str) -> int:
        """Rebuild the index from the tar file alone."""
        index = self._index(namespace)
        count = reindex(index.path)
        self._indexes.pop(index.path, None)
        return count


#: Redis' largest string (``proto-max-bulk-len``, 512 MB by default).
MAX_REDIS_STRING = 512 * 1024 * 1024


class RedisIO(NamespaceIO):
    """A namespace is a key prefix in Redis: ``mummi:<len>:<namespace>:<key>``, so
    namespace and key can never be confused. Listing uses SCAN, never KEYS."""

    name = "redis"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get("SIMRECORDER_REDIS_URL", "redis://localhost:6379/0")
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The redis-py client (created on first use)."""
        if self._client is None:
            from .._redis_client import client_from_url

            self._client = client_from_url(self.url)
        return self._client

    def check_environment(self) -> bool:
        # docstring inherited: the server must answer
        with self._translated():
            self.client.ping()
        return True

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """redis-py's errors as simrecorder's, naming the server (password hidden)."""
        from redis.exceptions import RedisError

        from .._redis_client import redact, translate

        try:
            yield
        except RedisError as exc:
            raise translate(exc, redact(self.url)) from exc

    @staticmethod
    def _prefix(namespace: str) -> str:
        return f"mummi:{len(namespace)}:{namespace}:"

    def _exists(self, namespace: str, key: str) -> bool:
        with self._translated():
            return bool(self.client.exists(self._prefix(namespace) + key))

    def _scan(self, namespace: str):
        prefix = self._prefix(namespace)
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        for raw in self.client.scan_iter(match=pattern, count=1000):
            yield raw.decode()[len(prefix) :]

    def _namespace_exists(self, namespace: str) -> bool:
        with self._translated():
            return next(iter(self._scan(namespace)), None) is not None

    def _keys(self, namespace: str) -> list[str]:
        with self._translated():
            return list(self._scan(namespace))

    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        with self._translated():
            return self.client.mget([self._prefix(namespace) + k for k in keys])

    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None:
        for key, data in items:
            if len(data) > MAX_REDIS_STRING:
                raise ValueTooLargeError(
                    f"key {key!r} in namespace {namespace!r}: {len(data):,} bytes; a Redis "
                    f"string holds at most {MAX_REDIS_STRING:,} (512 MB)"
                )
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            for key, data in items:
                pipe.set(self._prefix(namespace) + key, data)
            pipe.execute()

    def _delete(self, namespace: str, keys: list[str]) -> list[bool]:
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(self._prefix(namespace) + key)
            return [bool(n) for n in pipe.execute()]

    def _move(self, namespace: str, old: str, new: str) -> None:
        prefix = self._prefix(namespace)
        with self._translated():
            self.client.rename(prefix + old, prefix + new)


def get_io(name: str, **options: Any) -> NamespaceIO:
    """The namespace I/O of backend ``name``: ``'simple'``, ``'taridx'`` or ``'redis'``
    (``url='redis://host:port/db'``, default ``$SIMRECORDER_REDIS_URL``)."""
    if name == "simple":
        return SimpleIO()
    if name == "taridx":
        return TaridxIO()
    if name == "redis":
        return RedisIO(**options)
    raise InvalidArgumentError(f"unknown I/O backend {name!r}: use 'simple', 'taridx' or 'redis'")
