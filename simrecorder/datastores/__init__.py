"""Data stores: the places a :class:`~simrecorder.Recorder` writes to.

Backend libraries are imported only when their store is used: ``HDF5DataStore`` is
resolved on first access from this package.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotBuiltYetError
from ._memory import InMemoryDataStore
from ._view import SeriesView
from .base import DataStore
from .registry import open_datastore, store_class

__all__ = [
    "DataStore",
    "HDF5DataStore",
    "HDFView",
    "InMemoryDataStore",
    "RedisClusterDataStore",
    "RedisDataStore",
    "RedisServer",
    "RedisClusterServer",
    "SeriesView",
    "ZarrDataStore",
    "open_datastore",
    "store_class",
]

_LAZY = {
    "HDF5DataStore": "_hdf5",
    "HDFView": "_hdf5",
    "ZarrDataStore": "_zarr",
    "RedisDataStore": "_redis",
    "RedisClusterDataStore": "_redis",
    "RedisServer": "_redis_server",
    "RedisClusterServer": "_redis_server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{_LAZY[name]}":
                raise
            return _not_built(name)  # importable, so SimRecorder's import lines work
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _not_built(name: str) -> type:
    """A placeholder class for a backend of a later release: using it raises."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotBuiltYetError(f"{name} is not built yet in this simrecorder release")

    return type(name, (), {"__init__": __init__, "__doc__": f"{name} (not built yet)."})
