"""The HDF5 storage backend (h5py): groups, datasets, and JSON text attributes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import KeyConflictError, StoreFormatError, StoreNotFoundError
from ._base import (
    INDEX_NAME,
    INLINE_LIMIT,
    PACK_NAME,
    dumps,
    loads,
    mode_flags,
    pack_chunk,
    read_node,
)
from ._core import Backend, GenericStorage, Path

__all__ = ["HDF5Backend", "HDF5Storage"]

_INDEX_DATASET = ".simrecorder_storage"
_ATTR_LIMIT = 48 << 10  # HDF5 object headers hold at most 64 KiB of attributes
_NATIVE_KINDS = frozenset("biufcSU")


class HDF5Backend(Backend):
    """Physical groups are HDF5 groups (index in the attribute ``simrecorder_storage``),
    large arrays are HDF5 datasets.

    Parameters
    ----------
    file
        An open ``h5py.File``.
    owned
        Close the file in :meth:`close` (``False`` when an
        :class:`~simrecorder.HDF5DataStore` shares its file).
    read_only
        Refuse writes.
    """

    name = "hdf5"
    inline_limit = INLINE_LIMIT
    packs = True

    def __init__(self, file: Any, owned: bool = True, read_only: bool = False) -> None:
        self.file = file
        self.owned = owned
        self.read_only = read_only
        self.path = file.filename
        #: called with a byte count before each write (an HDF5DataStore sharing the
        #: file reserves disk space and takes its writer lock there)
        self.before_write: Any = None

    def _reserve(self, nbytes: int) -> None:
        if self.before_write is not None:
            self.before_write(nbytes + (64 << 10))

    def describe(self) -> str:
        return f"HDF5 storage {self.path!r}"

    def _group(self, path: Path) -> Any:
        return self.file["/" + "/".join(path)] if path else self.file

    def load_index(self, path: Path) -> dict[str, Any] | None:
        group = self._group(path)
        raw = group.attrs.get(INDEX_NAME)
        if raw is None:
            return None
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        if raw == "@dataset":
            raw = group[_INDEX_DATASET][()].tobytes()
        return loads(raw, f"{self.describe()} group /{'/'.join(path)}")

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        group = self._group(path)
        text = dumps(node)
        self._reserve(len(text))
        if len(text) <= _ATTR_LIMIT:
            group.attrs[INDEX_NAME] = text
            if _INDEX_DATASET in group:
                del group[_INDEX_DATASET]
            return
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        ds = group.get(_INDEX_DATASET)
        if ds is None:
            ds = group.create_dataset(_INDEX_DATASET, data=data, maxshape=(None,), chunks=True)
            ds.attrs["simrecorder_storage_array"] = 1
        else:  # rewritten in place: the file does not grow with each update
            ds.resize(data.shape)
            ds[...] = data
        group.attrs[INDEX_NAME] = "@dataset"

    def pack_length(self, path: Path) -> int:
        ds = self._group(path).get(PACK_NAME)
        return 0 if ds is None else int(ds.shape[0])

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        return read_node(
            self, (*path, PACK_NAME), lambda: self._group(path)[PACK_NAME][start:stop].tobytes()
        )

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        self._reserve(len(data))
        group = self._group(path)
        array = np.frombuffer(data, dtype=np.uint8)
        ds = group.get(PACK_NAME) if start else None
        if ds is None and PACK_NAME in group:
            ds = group[PACK_NAME]
        if ds is None:
            ds = group.create_dataset(
                PACK_NAME, data=array, maxshape=(None,), chunks=(pack_chunk(len(data)),)
            )
            ds.attrs["simrecorder_storage_array"] = 1
            return
        ds.resize((start + len(data),))
        if len(data):
            ds[start:] = array

    def make_group(self, path: Path) -> None:
        self._reserve(0)
        parent = self._group(path[:-1])
        if path[-1] in parent:
            raise KeyConflictError(
                f"{self.describe()}: /{'/'.join(path)} exists in the file outside the storage"
            )
        parent.create_group(path[-1])

    def delete_node(self, path: Path) -> None:
        parent = self._group(path[:-1])
        if path[-1] in parent:
            del parent[path[-1]]

    def external(self, array: np.ndarray) -> bool:
        return (
            array.nbytes >= INLINE_LIMIT
            and array.dtype.kind in _NATIVE_KINDS
            and array.dtype.itemsize > 0
        )

    def write_array(self, path: Path, array: np.ndarray) -> None:
        data = _native(array)
        self._reserve(data.nbytes)
        parent = self._group(path[:-1])
        old = parent.get(path[-1])
        if old is not None and old.shape == data.shape and old.dtype == data.dtype:
            old[...] = data  # same size: overwrite in place
            return
        if old is not None:
            if "simrecorder_storage_array" not in old.attrs:
                raise KeyConflictError(
                    f"{self.describe()}: /{'/'.join(path)} exists in the file outside the storage"
                )
            del parent[path[-1]]
        ds = parent.create_dataset(path[-1], data=data)
        ds.attrs["simrecorder_storage_array"] = 1

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        data = read_node(self, path, lambda: self._group(path)[()])
        if dtype.kind == "U":
            return np.ascontiguousarray(data).view(dtype).reshape(shape)
        return np.asarray(data, dtype=dtype).reshape(shape)

    def flush(self) -> None:
        if not self.read_only:
            self.file.flush()

    def close(self) -> None:
        if self.owned:
            self.file.close()


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` as data h5py stores natively (str arrays as their UCS-4 code points)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "U":
        return array.view(np.dtype(array.dtype.byteorder + "u4")).reshape(
            (*array.shape, array.dtype.itemsize // 4)
        )
    return array


class HDF5Storage(GenericStorage):
    """Storage in an HDF5 file (plain h5py reads it: groups, datasets, JSON attributes).

    Parameters
    ----------
    path
        The file (``.h5``/``.hdf5``).
    mode
        ``'r'`` read-only, ``'r+'`` existing file, ``'a'`` (default) create or update,
        ``'w'`` truncate.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with HDF5Storage(path) as root:
    ...     root["a/b"] = 1
    >>> with HDF5Storage(path, "r") as root:
    ...     root["a"]["b"]
    1
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        import h5py

        from ..datastores._hdf5 import open_h5, open_writer

        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        self._shared = False
        writer = open_writer(self.path)
        if writer is not None and not truncate:
            # a recorder of this process writes the file: HDF5 allows one handle
            self._shared = True
            self._tree = writer.shared_storage()._tree
            return
        exists = os.path.exists(self.path)
        if not exists and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no HDF5 storage at {self.path!r}")
        if exists and not truncate and not h5py.is_hdf5(self.path):
            raise StoreFormatError(f"{self.path!r} exists but is not an HDF5 file")
        created = truncate or not exists
        if created:  # free space is tracked across sessions: updates reuse it
            file = open_h5(self.path, "w", fs_strategy="fsm", fs_persist=True)
        else:
            file = open_h5(self.path, "r" if read_only else "r+")
        super().__init__(HDF5Backend(file, owned=True, read_only=read_only), created=created)

    def close(self) -> None:
        """Write changes; release the file (unless an HDF5DataStore shares it)."""
        if self._shared:
            if not self._tree.closed:
                self._tree.flush()
            return
        super().close()
