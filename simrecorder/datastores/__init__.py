"""Data stores: the places a :class:`~simrecorder.Recorder` writes to.

Backend libraries are imported only when their store is used: ``HDF5DataStore`` is
resolved on first access from this package. ``LMDBStore`` is the zarr v3 store over
LMDB that ``ZarrDataStore(..., datastore_type=DatastoreType.LMDB)`` uses; plain zarr
opens such a store with ``zarr.open_group(LMDBStore(path, read_only=True), mode="r")``.
"""

from __future__ import annotations

from typing import Any

from .._registry import import_backend
from ._blocks import BlockDataStore
from ._memory import InMemoryDataStore
from ._view import SeriesView
from .base import DataStore
from .registry import open_datastore, store_class

__all__ = [
    "BlockDataStore",
    "DataStore",
    "HDF5DataStore",
    "HDFView",
    "InMemoryDataStore",
    "LMDBStore",
    "RedisClusterDataStore",
    "RedisClusterServer",
    "RedisDataStore",
    "RedisServer",
    "SeriesView",
    "ZarrDataStore",
    "open_datastore",
    "store_class",
]

_LAZY = {
    "HDF5DataStore": "_hdf5",
    "HDFView": "_hdf5",
    "ZarrDataStore": "_zarr",
    "LMDBStore": "_zarr_lmdb",
    "RedisDataStore": "_redis",
    "RedisClusterDataStore": "_redis",
    "RedisServer": "_redis_server",
    "RedisClusterServer": "_redis_server",
}


_EXTRAS = {"_zarr": "zarr", "_zarr_lmdb": "lmdb", "_redis": "redis", "_redis_server": "redis"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = _LAZY[name]
        backend = import_backend(f"{__name__}.{module}", _EXTRAS.get(module), what=name)
        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
