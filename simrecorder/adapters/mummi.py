"""MuMMI-style namespace I/O: files in a namespace, on three backends.

A namespace is a location (:mod:`simrecorder.locations`): a directory (``simple``,
:class:`~simrecorder.locations.DirectoryLocation`), a tar archive with an index
(``taridx``, :class:`~simrecorder.locations.TaridxLocation`) or a folder
``mummi/<namespace>/`` of a :class:`~simrecorder.locations.RedisLocation` (``redis``);
this module is MuMMI's vocabulary over it and stores nothing itself. In a
namespace, a key is a file name (``/`` makes subdirectories) and a value its bytes.
``get_io(name)`` returns an object with MuMMI core's I/O functions and argument
conventions, with the original's rough edges fixed: a missing key is ``KeyError`` (one
key) or ``None`` in its place (a list); failures raise instead of returning False;
``list_keys`` returns full keys relative to the namespace, sorted, matched with one
``fnmatch`` dialect everywhere (glob characters in keys are characters); delete and
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

import copy
import datetime as _dt
import fnmatch
import glob
import io
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote

from .._fs import atomic_write, contained_path
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    StoreFullError,
    ValueTooLargeError,
)
from ..locations import DirectoryLocation, Location, TaridxLocation
from ..locations.base import check_location_key
from ._npz import read_npz, write_npz

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
        case-sensitive, ``*`` also matches ``/``).

        Only the keys that start with the pattern's literal head are listed (``[?]``
        counts as the character ``?``), then matched: glob characters in keys are
        characters, and ``a[?]/*`` never finds ``ab/c``.
        """
        keys = self._list(_check_namespace(namespace), literal_prefix(keypattern))
        return sorted(k for k in keys if fnmatch.fnmatchcase(k, keypattern))

    def _list(self, namespace: str, prefix: str) -> list[str]:
        """The keys of ``namespace`` that start with ``prefix`` (backends may list
        fewer than all keys to find them)."""
        return [key for key in self._keys(namespace) if key.startswith(prefix)]

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
            _atomic_write(backup, f)
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
        _atomic_write(contained_path(path, check_key(key)), b"1")

    @staticmethod
    def test_signal(path: str, key: str) -> bool:
        """Whether the signal ``key`` was sent in ``path``."""
        return bool(key) and os.path.isfile(os.path.join(path, check_key(key)))


def _atomic_write(path: str, data: Any) -> None:
    """Write a workflow file atomically and durably (see :func:`simrecorder._fs.atomic_write`)."""
    atomic_write(path, data, durable=True, make_dirs=True)


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


def literal_prefix(pattern: str) -> str:
    """The characters every key matching the fnmatch ``pattern`` starts with.

    Examples
    --------
    >>> literal_prefix("sub/data-*.npz")
    'sub/data-'
    >>> literal_prefix("a[?]/*")  # glob.escape("a?") + "/*"
    'a?/'
    >>> literal_prefix("[ab]/x")
    ''
    """
    head = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char in "*?":
            break
        if char == "[":
            if i + 2 < len(pattern) and pattern[i + 2] == "]" and pattern[i + 1] != "!":
                head.append(pattern[i + 1])  # a class of one character: that character
                i += 3
                continue
            break
        head.append(char)
        i += 1
    return "".join(head)


class LocationIO(NamespaceIO):
    """The MuMMI API over one :class:`~simrecorder.locations.Location` per namespace.

    Backends say which location a namespace is (:meth:`location`); keys, atomic
    writes, locks, listing and errors are the location's.
    """

    @abstractmethod
    def location(self, namespace: str, create: bool = False) -> Location | None:
        """The location of ``namespace`` (``None`` when it does not exist and
        ``create`` is false)."""

    def _writable(self, namespace: str) -> Location:
        return cast(Location, self.location(namespace, create=True))

    def _exists(self, namespace: str, key: str) -> bool:
        found = self.location(namespace)
        return found is not None and found.exists(key)

    def _namespace_exists(self, namespace: str) -> bool:
        found = self.location(namespace)
        return found is not None and next(iter(found.keys()), None) is not None

    def _keys(self, namespace: str) -> list[str]:
        return self._list(namespace, "")

    def _list(self, namespace: str, prefix: str) -> list[str]:
        found = self.location(namespace)
        return [] if found is None else list(found.keys(prefix))

    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        found = self.location(namespace)
        if found is None:
            for key in keys:
                check_location_key(key)  # a bad key fails alike with or without the namespace
            return [None] * len(keys)
        values = found.read_many(keys)
        return [values[key] for key in keys]

    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None:
        target = self._writable(namespace)
        limit = target.max_value_bytes
        for key, data in items:
            if limit is not None and len(data) > limit:
                raise ValueTooLargeError(
                    f"key {key!r} in namespace {namespace!r}: {len(data):,} bytes; "
                    f"{target!r} holds at most {limit:,} per value"
                )
        stored = target.write_many(dict(items))
        declined = [key for key, ok in stored.items() if not ok]
        if declined:
            raise StoreFullError(
                f"cannot save {', '.join(map(repr, declined))} in namespace {namespace!r}: "
                f"{target!r} declined (disk or server full, or read-only); nothing of "
                "these keys was written"
            )

    def _delete(self, namespace: str, keys: list[str]) -> list[bool]:
        found = self.location(namespace)
        if found is None:
            for key in keys:
                check_location_key(key)  # a bad key fails alike with or without the namespace
            return [False] * len(keys)
        return [found.delete(key) for key in keys]

    def _move(self, namespace: str, old: str, new: str) -> None:
        target = self._writable(namespace)
        rename = getattr(target, "rename", None)
        if rename is not None:
            moved = rename(old, new)
        else:
            data = target.get(old)
            moved = data is not None
            if data is not None:
                self._write(namespace, [(new, data)])
                target.delete(old)
        if not moved:
            raise KeyNotFoundError(f"key {old!r} not in namespace {namespace!r}")


class SimpleIO(LocationIO):
    """A namespace is a directory; a key is a file path inside it (a
    :class:`~simrecorder.locations.DirectoryLocation`: atomic, durable writes; keys
    never lead out of the directory, symlinks included)."""

    name = "simple"

    def location(self, namespace: str, create: bool = False) -> Location | None:
        # docstring inherited
        if not create and not os.path.isdir(namespace):
            return None
        return DirectoryLocation(namespace, durable=True)


class TaridxIO(LocationIO):
    """A namespace is a tar file (``ns`` or ``ns.tar``) with an index beside it (a
    :class:`~simrecorder.locations.TaridxLocation`)."""

    name = "taridx"

    def __init__(self) -> None:
        self._locations: dict[str, TaridxLocation] = {}

    @staticmethod
    def archive(namespace: str) -> str:
        """The archive of ``namespace``: itself when it ends with ``.tar``."""
        path = namespace if namespace.endswith(".tar") else namespace + ".tar"
        return os.path.abspath(path)

    def location(self, namespace: str, create: bool = False) -> TaridxLocation:
        # docstring inherited (an archive not written yet is an empty location)
        path = self.archive(namespace)
        found = self._locations.get(path)
        if found is None:
            found = self._locations[path] = TaridxLocation(path)
        return found

    def _index(self, namespace: str) -> Any:
        """The archive's index, refreshed (reads only lines appended since)."""
        return self.location(namespace).refresh()

    def _namespace_exists(self, namespace: str) -> bool:
        return os.path.isfile(self.archive(namespace))

    def compact(self, namespace: str) -> int:
        """Rewrite the archive with its live keys only (drops old versions, tombstones)."""
        return self.location(namespace).compact()

    def reindex(self, namespace: str) -> int:
        """Rebuild the index from the tar file alone."""
        return self.location(namespace).reindex()


class RedisIO(LocationIO):
    """A namespace is a folder of Redis keys: ``mummi/<namespace>/<key>``, the
    namespace %-quoted into one part (``/`` is ``%2F``), so namespace and key can never
    be confused. Listing uses SCAN, never KEYS."""

    name = "redis"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get("SIMRECORDER_REDIS_URL", "redis://localhost:6379/0")
        self._root: Location | None = None
        self._namespaces: dict[str, Location] = {}

    @property
    def root(self) -> Location:
        """The :class:`~simrecorder.locations.RedisLocation` of every namespace."""
        if self._root is None:
            from ..locations import RedisLocation

            self._root = RedisLocation(self.url, prefix="mummi")
        return self._root

    def check_environment(self) -> bool:
        # docstring inherited: the server must answer (one EXISTS round trip)
        self.root.exists("check-environment")
        return True

    def location(self, namespace: str, create: bool = False) -> Location:
        # docstring inherited
        found = self._namespaces.get(namespace)
        if found is None:
            part = quote(namespace, safe="")
            if part in (".", ".."):
                part = part.replace(".", "%2E")
            found = self._namespaces[namespace] = self.root.sub(part)
        return found


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


def compact(path: str) -> int:
    """Rewrite the taridx archive ``path`` with only its live members; return how many."""
    return TaridxLocation(path).compact()


def reindex(path: str) -> int:
    """Rebuild the index of the taridx archive ``path`` from the tar alone; return the
    number of live keys (members that cannot be keys are left out, with a warning)."""
    return TaridxLocation(path).reindex()


def tar_names(path: str) -> list[str]:
    """Names of the members ``tar xf`` extracts from ``path``, in archive order."""
    return TaridxLocation(path).tar_names()
