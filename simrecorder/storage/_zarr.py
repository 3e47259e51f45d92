"""The zarr v3 storage backend: groups, arrays, and JSON text attributes.

The backend writes the zarr v3 documents (``zarr.json``) and chunk files itself, with
the metadata zarr-python writes for an uncompressed array in one chunk (``bytes``
codec, ``default`` chunk keys), so ``zarr.open_group`` reads the directory; going
through zarr-python instead costs an event-loop round trip per call, which made a
save of many arrays 5-20x slower than pickle. Arrays laid out otherwise (written by
other tools) are read through zarr-python.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from typing import Any, cast

import numpy as np

from .._fs import atomic_write
from .._keys import check_path_parts
from .._writers import writer_of
from ..errors import KeyConflictError, KeyNotFoundError, StoreFormatError, StoreNotFoundError
from ._base import (
    INDEX_NAME,
    INLINE_LIMIT,
    PACK_NAME,
    JSONIndexBackend,
    index_where,
    mode_flags,
    pack_chunk,
    parse,
    read_node,
)
from ._core import GenericStorage, Path

__all__ = ["ZarrBackend", "ZarrStorage"]

_META = "zarr.json"
#: the attribute of every array this backend writes (series listings skip them)
ARRAY_MARK = "simrecorder_storage_array"
_ENDIAN = sys.byteorder  # arrays are written in native order (``external`` checks it)


def group_document(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` of a zarr v3 group (as zarr-python writes it)."""
    return {"attributes": attributes or {}, "zarr_format": 3, "node_type": "group"}


def array_document(
    dtype: np.dtype, shape: tuple[int, ...], chunks: tuple[int, ...], flat: bool = False
) -> dict[str, Any]:
    """The ``zarr.json`` of an uncompressed zarr v3 array (as zarr-python writes it).

    ``flat`` takes the ``v2`` chunk key encoding (chunk ``(0, 0)`` is the file ``0.0``,
    not ``c/0/0``): an array in one chunk then costs one directory, not two.
    """
    encoding = ("v2", ".") if flat else ("default", "/")
    codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        codec["configuration"] = {"endian": _ENDIAN}
    fill: Any = False if dtype.kind == "b" else (0.0 if dtype.kind == "f" else 0)
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": encoding[0], "configuration": {"separator": encoding[1]}},
        "fill_value": fill,
        "codecs": [codec],
        # the storage's arrays are not series of a recorder sharing the directory
        "attributes": {ARRAY_MARK: 1},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _read_json(path: str) -> Any:
    with open(path, "rb") as stream:
        return json.loads(stream.read())


def _write_bytes(path: str, data: Any) -> None:
    with open(path, "wb") as stream:
        stream.write(data)


def _write_json(path: str, doc: dict[str, Any], atomic: bool = False) -> None:
    # compact: json's C encoder (indent= takes its pure-Python one, 10x slower)
    data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if atomic:  # a document others rely on: never torn by a crash
        atomic_write(path, data)
    else:
        _write_bytes(path, data)


def _simple_layout(meta: Any, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """Whether an array's ``zarr.json`` is the one-chunk, uncompressed layout this
    backend writes (its chunk file then holds the raw bytes)."""
    try:
        chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        codecs = meta["codecs"]
        encoding = meta["chunk_key_encoding"]
    except (KeyError, TypeError):
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", _ENDIAN) if codecs else None
    return (
        list(meta.get("shape", ())) == list(shape)
        and list(chunks) == list(shape)
        and len(codecs) == 1
        and codecs[0].get("name") == "bytes"
        and (endian == _ENDIAN or dtype.itemsize == 1)
        and _chunk_key(encoding, len(shape)) is not None
        and not meta.get("storage_transformers")
        and meta.get("data_type") == dtype.name
    )


def _chunk_key(encoding: Any, ndim: int) -> str | None:
    """The key of chunk ``(0, ...)`` under ``encoding`` (``None``: unknown encoding)."""
    if not isinstance(encoding, dict):
        return None
    name = encoding.get("name")
    separator = (encoding.get("configuration") or {}).get("separator")
    if name == "default" and separator in ("/", ".", None):
        return (separator or "/").join(["c", *("0" * ndim)])
    if name == "v2" and separator in (".", "/", None):
        return (separator or ".").join("0" * ndim) if ndim else "0"
    return None


def _chunk_file(directory: str, meta: dict[str, Any], ndim: int) -> str:
    """The file of chunk ``(0, ...)`` of an array whose layout is simple."""
    key = _chunk_key(meta["chunk_key_encoding"], ndim)
    assert key is not None
    return os.path.join(directory, *key.split("/"))


class ZarrBackend(JSONIndexBackend):
    """Physical groups are zarr groups (index in the attribute ``simrecorder_storage``),
    large arrays are zarr arrays (one uncompressed chunk each), small ones share a
    ``uint8`` pack array per group.

    Parameters
    ----------
    path
        The zarr directory (its root group exists).
    read_only
        Refuse writes.
    created
        The directory was just created (an empty root group).
    """

    name = "zarr"
    inline_limit = INLINE_LIMIT
    packs = True

    def __init__(self, path: str, read_only: bool = False, created: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        #: groups this backend created (the root of a new directory): nothing is in
        #: them but what it wrote since (``_written``), so it need not look
        self._new: set[Path] = {()} if created else set()
        self._written: set[Path] = set()
        #: the root's ``zarr.json`` as the storage opening the directory read it
        #: (taken by the first read of the root index)
        self.root_meta: dict[str, Any] | None = None
        #: held while the root zarr.json is replaced (shared with a ZarrDataStore)
        self.root_guard: Any = None
        #: documents of a storage that existed before are replaced atomically (the
        #: files of one made now, e.g. by save() under a temp name, need not be)
        self._atomic = not created

    def _known_absent(self, path: Path) -> bool:
        return path[:-1] in self._new and path not in self._written

    def describe(self) -> str:
        return f"zarr storage {self.path!r}"

    def _dir(self, path: Path) -> str:
        return os.path.join(self.path, *path)

    def _meta(self, path: Path) -> dict[str, Any] | None:
        """The ``zarr.json`` of ``path`` (``None`` when there is none)."""
        try:
            meta = _read_json(os.path.join(self._dir(path), _META))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreFormatError(
                f"{self.describe()}: /{'/'.join(path)}/zarr.json is damaged ({exc})"
            ) from exc
        if not isinstance(meta, dict):
            raise StoreFormatError(f"{self.describe()}: /{'/'.join(path)}/zarr.json is damaged")
        return meta

    def load_document(self, path: Path) -> dict[str, Any] | None:
        meta = None
        if not path:
            meta, self.root_meta = self.root_meta, None
        if meta is None:
            meta = self._meta(path)
        if meta is None or meta.get("node_type") != "group":
            if not path and meta is None:
                return None
            raise StoreFormatError(f"{self.describe()}: /{'/'.join(path)} is not a zarr group")
        raw = (meta.get("attributes") or {}).get(INDEX_NAME)
        if raw is None or isinstance(raw, dict):  # a JSON object in the group's zarr.json
            return raw
        if not isinstance(raw, str):  # else JSON text (as earlier versions wrote it)
            raise StoreFormatError(f"{self.describe()}: the index of /{'/'.join(path)} is damaged")
        return cast(dict[str, Any], parse(raw, index_where(self, path)))

    def save_document(self, path: Path, document: dict[str, Any]) -> None:
        if path or self.root_guard is None:
            self._save_document(path, document)
            return
        with self.root_guard:  # a recorder sharing the directory writes the root too
            self._save_document(path, document)

    def _save_document(self, path: Path, document: dict[str, Any]) -> None:
        # the index is JSON text in one attribute: the other attributes are kept (a
        # group this backend made has none: no need to read its document back)
        meta = group_document() if path in self._new else (self._meta(path) or group_document())
        attributes = meta.get("attributes") or {}
        attributes[INDEX_NAME] = document  # an object: JSON-encoded once, with the rest
        meta["attributes"] = attributes
        _write_json(os.path.join(self._dir(path), _META), meta, self._atomic)

    # -- the pack: a uint8 array in chunks of pack_chunk(first write) bytes ----------------
    def _pack_meta(self, path: Path) -> dict[str, Any] | None:
        meta = self._meta((*path, PACK_NAME))
        return meta if meta is not None and meta.get("node_type") == "array" else None

    def pack_length(self, path: Path) -> int:
        meta = self._pack_meta(path)
        return 0 if meta is None else int(meta["shape"][0])

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        return read_node(self, (*path, PACK_NAME), lambda: self._read_pack(path, start, stop))

    def _read_pack(self, path: Path, start: int, stop: int) -> bytes:
        meta = self._pack_meta(path)
        if meta is None:
            raise KeyNotFoundError(PACK_NAME)
        size = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        stop = min(stop, int(meta["shape"][0]))
        chunks = os.path.join(self._dir(path), PACK_NAME, "c")
        out = bytearray()
        position = start
        while position < stop:
            index, offset = divmod(position, size)
            length = min(size - offset, stop - position)
            try:
                with open(os.path.join(chunks, str(index)), "rb") as stream:
                    stream.seek(offset)
                    data = stream.read(length)
            except FileNotFoundError:  # zarr-python leaves chunks of fill values out
                data = b""
            out += data.ljust(length, b"\0")
            position += length
        return bytes(out)

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        directory = os.path.join(self._dir(path), PACK_NAME)
        pack = (*path, PACK_NAME)
        meta = None if self._known_absent(pack) else self._pack_meta(path)
        end = start + len(data)
        if meta is None:
            os.makedirs(os.path.join(directory, "c"), exist_ok=True)
            size = pack_chunk(len(data))
            old_end = 0
        else:
            size = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
            old_end = int(meta["shape"][0])
        chunks = os.path.join(directory, "c")
        view = memoryview(data)
        position = start
        while position < end:
            index, offset = divmod(position, size)
            length = min(size - offset, end - position)
            chunk = os.path.join(chunks, str(index))
            if offset:  # keep the chunk's bytes before ``start``
                try:
                    with open(chunk, "rb") as stream:
                        head = stream.read(offset)
                except FileNotFoundError:
                    head = b""
                body = (
                    head.ljust(offset, b"\0") + view[position - start : position - start + length]
                )
            else:
                body = bytes(view[position - start : position - start + length])
            _write_bytes(chunk, body.ljust(size, b"\0"))  # zarr chunks are whole
            position += length
        for index in range(math.ceil(end / size), math.ceil(old_end / size)):
            try:  # shrunk (repacked): drop the chunks past the end
                os.unlink(os.path.join(chunks, str(index)))
            except FileNotFoundError:
                pass
        pack_meta = array_document(np.dtype("u1"), (end,), (size,))
        _write_json(os.path.join(directory, _META), pack_meta, self._atomic)
        self._written.add(pack)

    # -- groups and arrays ------------------------------------------------------------------
    def make_group(self, path: Path) -> None:
        check_path_parts("/".join(path), self.describe(), reserved=("zarr.json",))
        directory = self._dir(path)
        if not self._known_absent(path) and os.path.exists(os.path.join(directory, _META)):
            raise KeyConflictError(f"{self.describe()}: /{'/'.join(path)} exists already")
        os.makedirs(directory, exist_ok=True)
        _write_json(os.path.join(directory, _META), group_document())
        self._new.add(path)
        self._written.add(path)

    def delete_node(self, path: Path) -> None:
        directory = self._dir(path)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        n = len(path)
        for known in (self._new, self._written):
            known.difference_update([p for p in known if p[:n] == path])

    def external(self, array: np.ndarray) -> bool:
        return (
            array.nbytes >= INLINE_LIMIT
            and array.dtype.kind in "biuf"
            and array.dtype.itemsize > 0
            and array.dtype.isnative
        )

    def write_array(self, path: Path, array: np.ndarray) -> None:
        check_path_parts("/".join(path), self.describe(), reserved=("zarr.json",))
        directory = self._dir(path)
        data = np.ascontiguousarray(array)
        meta = None if self._known_absent(path) else self._meta(path)
        if meta is None or not _simple_layout(meta, data.dtype, data.shape):
            if meta is not None or os.path.isdir(directory):
                shutil.rmtree(directory)
            os.mkdir(directory)
            meta = array_document(data.dtype, data.shape, data.shape, flat=True)
            _write_json(os.path.join(directory, _META), meta)
        chunk = _chunk_file(directory, meta, data.ndim)
        _write_bytes(chunk, data.data.cast("B") if data.ndim else data.tobytes())
        self._written.add(path)

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        return read_node(self, path, lambda: self._read_array(path, dtype, shape))

    def _read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        meta = self._meta(path)
        if meta is None:
            raise KeyNotFoundError(f"no zarr array at /{'/'.join(path)}")
        if not _simple_layout(meta, dtype, shape):  # written by other means: ask zarr
            import zarr

            data = zarr.open_array(self._dir(path), mode="r", zarr_format=3)[...]
            return np.asarray(data, dtype=dtype).reshape(shape)
        try:
            with open(_chunk_file(self._dir(path), meta, len(shape)), "rb") as stream:
                array = np.fromfile(stream, dtype=dtype)
        except FileNotFoundError:  # zarr-python leaves a chunk of fill values out
            return np.full(shape, meta.get("fill_value") or 0, dtype=dtype)
        return array.reshape(shape)


def _shared_storage(path: str, read_only: bool, root_guard: Any) -> GenericStorage:
    """A storage in the directory of a ZarrDataStore (see ``ZarrStorage.of_store``)."""
    backend = ZarrBackend(path, read_only=read_only)
    backend.root_guard = root_guard
    return GenericStorage(backend)


class ZarrStorage(GenericStorage):
    """Storage in a zarr v3 directory (plain zarr reads it: groups, arrays, JSON attributes).

    Parameters
    ----------
    path
        The directory (``.zarr``).
    mode
        ``'r'``, ``'r+'``, ``'a'`` (default) or ``'w'``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.zarr")
    >>> with ZarrStorage(path) as root:
    ...     root["a/b"] = 1
    >>> with ZarrStorage(path, "r") as root:
    ...     root["a"]["b"]
    1
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        writer = writer_of(self.path)
        if writer is not None and not truncate:
            # a recorder of this process writes the directory: one writer of zarr.json
            self._share(ZarrStorage.of_store(writer))
            return
        exists = os.path.exists(self.path)
        if not exists and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no zarr storage at {self.path!r}")
        if exists and not os.path.isdir(self.path):
            raise StoreFormatError(f"{self.path!r} exists but is not a zarr directory")
        meta_path = os.path.join(self.path, _META)
        if truncate or not os.path.exists(meta_path):
            if read_only or (mode == "r+" and not truncate):
                raise StoreFormatError(f"{self.path!r} is not a zarr v3 group (no zarr.json)")
            if truncate and exists:
                shutil.rmtree(self.path)
            os.makedirs(self.path, exist_ok=True)
            _write_json(meta_path, group_document())
            truncate = True
            meta = None
        else:
            try:
                meta = _read_json(meta_path)
            except (OSError, ValueError) as exc:
                raise StoreFormatError(f"cannot open {self.path!r} as a zarr group: {exc}") from exc
            if not isinstance(meta, dict) or meta.get("node_type") != "group":
                raise StoreFormatError(f"{self.path!r} is not a zarr v3 group")
        backend = ZarrBackend(self.path, read_only=read_only, created=truncate)
        backend.root_meta = meta  # read once (it holds the root index)
        super().__init__(backend, created=truncate)

    @staticmethod
    def of_store(store: Any) -> GenericStorage:
        """The storage in the directory of ``store``, an open
        :class:`~simrecorder.ZarrDataStore` on local disk (one per open store). It is
        written at each ``store.flush()`` and at ``store.close()``; ``rec.storage`` is
        its root. Its arrays carry the attribute ``simrecorder_storage_array``, which
        the store's series listings skip.

        Parameters
        ----------
        store
            An open :class:`~simrecorder.ZarrDataStore` (anything with its ``shared``).
        """
        return cast(GenericStorage, store.shared(_shared_storage))
