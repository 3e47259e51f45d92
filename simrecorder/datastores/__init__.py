"""Data stores: the places a :class:`~simrecorder.Recorder` writes to.

Backend libraries are imported only when their store is used: ``HDF5DataStore`` is
resolved on first access from this package.
"""

from __future__ import annotations

from typing import Any

from ._memory import InMemoryDataStore
from ._view import SeriesView
from .base import DataStore
from .registry import open_datastore, store_class

__all__ = [
    "DataStore",
    "HDF5DataStore",
    "HDFView",
    "InMemoryDataStore",
    "SeriesView",
    "open_datastore",
    "store_class",
]

_LAZY = {"HDF5DataStore": "_hdf5", "HDFView": "_hdf5"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
