"""The MuMMI namespace backends as Recorder DataStores (``mummi+simple://dir``, ...).

Layout inside the namespace, for a series ``K``: ``K/.series.json`` (kind, dtype,
shape, count and rows per block) and one key per block, ``K/.block-<n>`` (raw
little-endian rows for dense series, a codec-encoded list otherwise); a value from
``set`` is ``K/.value`` (codec-encoded); store metadata ``.simrecorder-attrs.json``.
Blocks are written before the metadata that counts them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import numpy as np

from .. import _codec
from .._keys import check_path_parts, validate_key
from .._modes import check_mode, plan_open
from .._provenance import provenance
from .._schema import DENSE, SeriesSpec
from ..datastores.base import DataStore, NodeType, check_key_free
from ..errors import (
    KeyNotFoundError,
    SimRecorderError,
    StoreFormatError,
    StoreFullError,
    StoreWriteError,
)
from .mummi import NamespaceIO, RedisIO, SimpleIO, TaridxIO

__all__ = [
    "FileSystemDataStore",
    "NamespaceDataStore",
    "RedisNamespaceDataStore",
    "SimpleDataStore",
    "TaridxDataStore",
]

_META = ".series.json"
_VALUE = ".value"
_ATTRS = ".simrecorder-attrs.json"
_FS_META = ".series"  # FileSystemStore: the series' description is this key's metadata


def _parse_json(raw: bytes, name: str, store: DataStore) -> dict[str, Any]:
    """The JSON object in ``raw``, the bytes of key ``name`` of ``store``.

    Raises
    ------
    StoreFormatError
        ``raw`` is not a JSON object (the key is damaged); the message names it.
    """
    try:
        found = json.loads(raw)
    except ValueError as exc:
        raise StoreFormatError(f"{store!r}: key {name!r} is not valid JSON ({exc})") from None
    if not isinstance(found, dict):
        raise StoreFormatError(
            f"{store!r}: key {name!r} holds a JSON {type(found).__name__}, not an object"
        )
    return found


class NamespaceDataStore(DataStore):
    """A DataStore on a MuMMI namespace (any :class:`NamespaceIO`).

    Parameters
    ----------
    io
        The namespace backend.
    namespace
        The namespace's name.
    mode
        See :mod:`simrecorder._modes`. ``None`` (default): a namespace that does not
        exist is created for writing; an existing one opens for reading, and writing
        to it raises :class:`~simrecorder.errors.StoreExistsError` (resume it with
        ``'a'``, overwrite it with ``'w'``). ``'r'`` never writes anything.
    """

    persistent = True

    def __init__(self, io: NamespaceIO, namespace: str, mode: str | None = None) -> None:
        mode = check_mode(mode)
        super().__init__()
        self.io = io
        self.namespace = namespace
        self.mode = mode
        self._meta: dict[str, dict[str, Any]] = {}
        plan = plan_open(mode, self._exists(), f"{self.protocol} store {namespace!r}")
        self._apply_open_plan(plan)
        if plan.replace:
            self._replace()
        self._connect_io()
        if not plan.read_only and not self.io.file_exists(namespace, _ATTRS):
            info = provenance()
            info["simrecorder_format"] = 1
            self.io.save_files(namespace, _ATTRS, json.dumps(info).encode())
        if plan.resume:
            self._note_resume()

    def _exists(self) -> bool:
        """Whether the namespace holds anything (backend hook)."""
        return self.io.namespace_exists(self.namespace)

    def _replace(self) -> None:
        """Delete what the namespace holds, for ``mode='w'`` (backend hook)."""
        self.io.remove_files(self.namespace, self.io.list_keys(self.namespace))

    def _connect_io(self) -> None:
        """Make ``self.io`` usable once the store exists or is to be created."""

    def _close(self) -> None:
        self._meta.clear()

    def flush(self) -> None:
        # docstring inherited: every append is written at once
        self._check_open()

    def _load_meta(self, key: str) -> dict[str, Any] | None:
        name = f"{key}/{_META}"
        raw = self.io.load_files(self.namespace, [name])[0]
        return None if raw is None else _parse_json(raw, name, self)

    def _save_meta(self, key: str, meta: dict[str, Any]) -> None:
        self.io.save_files(self.namespace, f"{key}/{_META}", json.dumps(meta).encode())

    def _series_meta(self, key: str) -> dict[str, Any] | None:
        meta = self._meta.get(key)
        if meta is None:
            meta = self._load_meta(key)
            if meta is None:
                return None
            self._meta[key] = meta
        return meta

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        if self._series_meta(key) is not None:
            return "series"
        if self.io.file_exists(self.namespace, f"{key}/{_VALUE}"):
            return "value"
        # escaped: '?', '*' and '[' in a key are characters, not a pattern
        if self.io.list_keys(self.namespace, glob.escape(key) + "/*"):
            return "group"
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        meta = self._series_meta(key)
        return None if meta is None else SeriesSpec.from_attrs(meta)

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        self._check_writable(key)
        if not len(block):
            return
        meta = self._series_meta(key) or {**spec.to_attrs(), "count": 0, "blocks": []}
        if spec.kind == DENSE:
            little = spec.dense_dtype.newbyteorder("<")
            payload = np.ascontiguousarray(block, dtype=little).tobytes()
        else:
            payload = _codec.encode(list(block))
        n = len(meta["blocks"])
        try:
            self.io.save_files(self.namespace, f"{key}/.block-{n}", payload)
        except OSError as exc:
            if isinstance(exc, SimRecorderError):
                raise
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFullError(
                    f"appending to key {key!r} of {self!r}: the disk is full ({exc}); "
                    "nothing was written: free space and write again"
                ) from exc
            raise StoreWriteError(f"appending to key {key!r} of {self!r} failed: {exc}") from exc
        meta = {
            **meta,
            "count": meta["count"] + len(block),
            "blocks": [*meta["blocks"], len(block)],
        }
        self._save_meta(key, meta)
        self._meta[key] = meta

    def series_length(self, key: str) -> int:
        """Samples in the series ``key``, from its metadata (no block is read).

        Raises
        ------
        KeyNotFoundError
            ``key`` is not a series of this store.
        """
        self._check_open(key)
        meta = self._series_meta(key)
        if meta is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        count = meta.get("count")
        if not isinstance(count, int) or count < 0:
            raise StoreFormatError(
                f"{self!r}: the metadata of series {key!r} has no valid 'count' ({count!r})"
            )
        return count

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        meta = self._series_meta(key)
        if meta is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        spec = SeriesSpec.from_attrs(meta)
        names = [f"{key}/.block-{i}" for i in range(len(meta["blocks"]))]
        blocks = self.io.load_files(self.namespace, names)
        if spec.kind == DENSE:
            data = b"".join(blocks)
            little = spec.dense_dtype.newbyteorder("<")
            flat = np.frombuffer(data, dtype=little).astype(spec.dense_dtype)
            return flat.reshape(meta["count"], *spec.dense_shape)
        items = [item for block in blocks for item in _codec.decode(block)]
        return items if spec.kind != "object" else [_codec.decode(i) for i in items]

    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        payload = _codec.encode_for(key, value)
        self.io.save_files(self.namespace, f"{key}/{_VALUE}", payload)

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        return _codec.decode(self.io.load_files(self.namespace, f"{key}/{_VALUE}"))

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        found = set()
        for name in self.io.list_keys(self.namespace, "*"):
            for marker in (f"/{_META}", f"/{_VALUE}", f"/{_FS_META}"):
                if name.endswith(marker):
                    found.add(name[: -len(marker)])
        if prefix:
            found = {k for k in found if k == prefix or k.startswith(prefix + "/")}
        return sorted(found)

    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        raw = self.io.load_files(self.namespace, [_ATTRS])[0]
        return {} if raw is None else _parse_json(raw, _ATTRS, self)  # None: MuMMI wrote it

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        merged = {**self.attrs, **dict(attrs)}
        self.io.save_files(self.namespace, _ATTRS, json.dumps(merged, default=repr).encode())


class _PathDataStore(NamespaceDataStore):
    """A namespace named by a local path: ``<protocol>://<absolute path>``."""

    io_class: type[NamespaceIO]

    def __init__(self, path: str, mode: str | None = None) -> None:
        super().__init__(self.io_class(), os.path.abspath(path), mode)

    def _replace(self) -> None:
        # deletes only what simrecorder wrote: a path is too easily mistyped
        if not self.io.file_exists(self.namespace, _ATTRS):
            raise StoreFormatError(
                f"{self!r}: mode='w' replaces only a store simrecorder wrote, and "
                f"{self.local_path!r} has no {_ATTRS}; remove it yourself to replace it"
            )
        self._remove_paths()

    def _remove_paths(self) -> None:
        shutil.rmtree(self.namespace)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> NamespaceDataStore:
        # docstring inherited
        return cls(url.split("://", 1)[1], **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"{self.protocol}://{self.namespace}"

    @property
    def local_path(self) -> str:
        # docstring inherited
        return self.namespace

    def check_key(self, key: str) -> None:
        # docstring inherited: every part of a key is a directory name on disk (the
        # series' files sit inside it), in a tar archive too when it is extracted
        check_path_parts(key, repr(self))


class SimpleDataStore(_PathDataStore):
    """``mummi+simple://dir``: a namespace directory."""

    protocol = "mummi+simple"
    io_class = SimpleIO

    def _exists(self) -> bool:
        # an empty directory (made for the store) holds no store yet
        return os.path.isdir(self.namespace) and bool(os.listdir(self.namespace))


class TaridxDataStore(_PathDataStore):
    """``mummi+taridx://file.tar``: a tar archive with an index."""

    protocol = "mummi+taridx"
    io_class = TaridxIO

    @property
    def local_path(self) -> str:
        # docstring inherited: the archive (the index is beside it)
        return self.namespace if self.namespace.endswith(".tar") else self.namespace + ".tar"

    def _remove_paths(self) -> None:
        for path in (self.local_path + ".idx", self.local_path):  # the index first
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


class RedisNamespaceDataStore(NamespaceDataStore):
    """``mummi+redis://namespace?url=redis://host:port/db``."""

    protocol = "mummi+redis"

    def __init__(self, namespace: str, url: str | None = None, mode: str | None = None) -> None:
        self.redis_io = RedisIO(url)
        super().__init__(self.redis_io, namespace, mode)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisNamespaceDataStore:
        # docstring inherited
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        namespace = (parsed.netloc + parsed.path).strip("/")
        return cls(namespace, url=query.get("url"), **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"mummi+redis://{self.namespace}?url={quote(self.redis_io.url, safe='')}"


class _FileSystemStoreIO(NamespaceIO):
    """The namespace API over an encore-style FileSystemStore (its root is the one
    namespace)."""

    name = "fs"

    def __init__(self, store: Any) -> None:
        self.store = store

    def _exists(self, namespace: str, key: str) -> bool:
        return self.store.exists(key)

    def _namespace_exists(self, namespace: str) -> bool:
        return True

    def _keys(self, namespace: str) -> list[str]:
        return list(self.store.glob("*"))

    def _read(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        return [self.store.to_bytes(k) if self.store.exists(k) else None for k in keys]

    def _write(self, namespace: str, items: list[tuple[str, bytes]]) -> None:
        import io

        with self.store.transaction("simrecorder block"):
            for key, data in items:
                self.store.set(key, (io.BytesIO(data), {}))

    def _delete(self, namespace: str, keys: list[str]) -> list[bool]:
        present = [self.store.exists(k) for k in keys]
        for key, there in zip(keys, present, strict=True):
            if there:
                self.store.delete(key)
        return present

    def _move(self, namespace: str, old: str, new: str) -> None:
        self._write(namespace, [(new, self.store.to_bytes(old))])
        self.store.delete(old)


class FileSystemDataStore(_PathDataStore):
    """``fs://dir``: series in an encore-style FileSystemStore. Each block is a key
    ``K/.block-<n>`` (its ``.data`` the block's bytes); the series' kind, dtype, shape,
    count and block sizes are the metadata of ``K/.series``."""

    protocol = "fs"

    def __init__(self, directory: str, mode: str | None = None) -> None:
        self.store: Any = None  # connected by _connect_io, once the store exists
        self.fs_io = _FileSystemStoreIO(None)
        NamespaceDataStore.__init__(self, self.fs_io, os.path.abspath(directory), mode)

    def _exists(self) -> bool:
        return os.path.isfile(os.path.join(self.namespace, ".FSStore"))

    def _replace(self) -> None:
        # _exists found the store's magic file: the directory is a store
        self._remove_paths()

    def _connect_io(self) -> None:
        from .encore import FileSystemStore, init_shared_store

        if not self._exists():
            init_shared_store(self.namespace)
        self.store = FileSystemStore(self.namespace)
        self.store.connect()
        self.fs_io.store = self.store

    def _load_meta(self, key: str) -> dict[str, Any] | None:
        name = f"{key}/{_FS_META}"
        return self.store.get_metadata(name) if self.store.exists(name) else None

    def _save_meta(self, key: str, meta: dict[str, Any]) -> None:
        import io

        self.store.set(f"{key}/{_FS_META}", (io.BytesIO(b""), meta))
