"""How the harness creates each backend's store in a scratch directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simrecorder import CompressionType, HDF5DataStore, InMemoryDataStore
from simrecorder.datastores import DataStore

__all__ = ["BACKENDS", "make_store"]


def _memory(tmp: Path, name: str) -> DataStore:
    return InMemoryDataStore()


def _hdf5(tmp: Path, name: str) -> DataStore:
    return HDF5DataStore(tmp / f"{name}.h5", mode="w")


def _zarr(tmp: Path, name: str) -> DataStore:
    from simrecorder import ZarrDataStore

    # uncompressed, so bandwidth and size compare with plain writes of the same bytes
    return ZarrDataStore(tmp / f"{name}.zarr", mode="w", compression_type=CompressionType.NONE)


def _zarr_blosc(tmp: Path, name: str) -> DataStore:
    from simrecorder import ZarrDataStore

    return ZarrDataStore(tmp / f"{name}-blosc.zarr", mode="w")


BACKENDS: dict[str, Callable[[Path, str], DataStore]] = {
    "memory": _memory,
    "hdf5": _hdf5,
    "zarr": _zarr,
    "zarr-blosc": _zarr_blosc,
}


def make_store(backend: str, tmp: Path, name: str) -> DataStore:
    """A fresh store of ``backend`` named ``name`` under ``tmp``."""
    return BACKENDS[backend](tmp, name)
