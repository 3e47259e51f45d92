"""The zarr v3 storage backend (zarr-python): groups, arrays, and JSON text attributes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._keys import check_path_parts
from ..errors import StoreFormatError, StoreNotFoundError
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

__all__ = ["ZarrBackend", "ZarrStorage"]


class ZarrBackend(Backend):
    """Physical groups are zarr groups (index in the attribute ``simrecorder_storage``),
    large arrays are zarr arrays."""

    name = "zarr"
    inline_limit = INLINE_LIMIT
    packs = True

    def __init__(self, group: Any, path: str, read_only: bool = False) -> None:
        self.root = group
        self.path = path
        self.read_only = read_only

    def describe(self) -> str:
        return f"zarr storage {self.path!r}"

    def _node(self, path: Path) -> Any:
        return self.root["/".join(path)] if path else self.root

    def load_index(self, path: Path) -> dict[str, Any] | None:
        raw = self._node(path).attrs.get(INDEX_NAME)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise StoreFormatError(f"{self.describe()}: the index of /{'/'.join(path)} is damaged")
        return loads(raw, f"{self.describe()} group /{'/'.join(path)}")

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        # JSON text in one attribute: zarr writes attributes indented, by a slow encoder
        self._node(path).attrs[INDEX_NAME] = dumps(node)

    def pack_length(self, path: Path) -> int:
        node = self._node(path)
        return int(node[PACK_NAME].shape[0]) if PACK_NAME in node else 0

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        return read_node(
            self,
            (*path, PACK_NAME),
            lambda: np.asarray(self._node(path)[PACK_NAME][start:stop]).tobytes(),
        )

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        node = self._node(path)
        if PACK_NAME in node:
            pack = node[PACK_NAME]
            pack.resize((start + len(data),))
        else:
            pack = node.create_array(
                PACK_NAME, shape=(len(data),), dtype="uint8", chunks=(pack_chunk(len(data)),),
                compressors=None, fill_value=0,
            )  # fmt: skip
        if data:
            pack[start:] = np.frombuffer(data, dtype=np.uint8)

    def make_group(self, path: Path) -> None:
        check_path_parts("/".join(path), self.describe(), reserved=("zarr.json",))
        self._node(path[:-1]).create_group(path[-1])

    def delete_node(self, path: Path) -> None:
        parent = self._node(path[:-1])
        if path[-1] in parent:
            del parent[path[-1]]

    def external(self, array: np.ndarray) -> bool:
        return (
            array.nbytes >= INLINE_LIMIT
            and array.dtype.kind in "biuf"
            and array.dtype.itemsize > 0
            and array.dtype.isnative
        )

    def write_array(self, path: Path, array: np.ndarray) -> None:
        check_path_parts("/".join(path), self.describe(), reserved=("zarr.json",))
        parent = self._node(path[:-1])
        if path[-1] in parent:
            old = parent[path[-1]]
            if getattr(old, "shape", None) == array.shape and old.dtype == array.dtype:
                old[...] = array
                return
            del parent[path[-1]]
        parent.create_array(
            path[-1], data=np.ascontiguousarray(array), chunks=array.shape or None,
            compressors=None,
        )  # fmt: skip

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        data = read_node(self, path, lambda: self._node(path)[...])
        return np.asarray(data, dtype=dtype).reshape(shape)


class ZarrStorage(GenericStorage):
    """Storage in a zarr v3 directory (plain zarr reads it: groups, arrays, JSON attributes).

    Parameters
    ----------
    path
        The directory (``.zarr``).
    mode
        ``'r'``, ``'r+'``, ``'a'`` (default) or ``'w'``.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        import zarr

        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        exists = os.path.exists(self.path)
        if not exists and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no zarr storage at {self.path!r}")
        try:
            group = zarr.open_group(
                self.path, mode="w" if truncate else ("r" if read_only else "a"), zarr_format=3
            )
        except (ValueError, OSError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"cannot open {self.path!r} as a zarr group: {exc}") from exc
        super().__init__(ZarrBackend(group, self.path, read_only=read_only), created=truncate)
