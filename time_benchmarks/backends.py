"""How the harness creates each backend's store in a scratch directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simrecorder import HDF5DataStore, InMemoryDataStore
from simrecorder.datastores import DataStore

__all__ = ["BACKENDS", "make_store"]


def _memory(tmp: Path, name: str) -> DataStore:
    return InMemoryDataStore()


def _hdf5(tmp: Path, name: str) -> DataStore:
    return HDF5DataStore(tmp / f"{name}.h5", mode="w")


BACKENDS: dict[str, Callable[[Path, str], DataStore]] = {"memory": _memory, "hdf5": _hdf5}


def make_store(backend: str, tmp: Path, name: str) -> DataStore:
    """A fresh store of ``backend`` named ``name`` under ``tmp``."""
    return BACKENDS[backend](tmp, name)
