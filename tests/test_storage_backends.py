"""The storage conformance suite, run against every backend."""

from __future__ import annotations

import pytest

from simrecorder.storage import (
    HDF5Storage,
    JSONStorage,
    MemoryStorage,
    RedisStorage,
    ZarrStorage,
)
from simrecorder.testing.storage import StorageTests


class TestHDF5Storage(StorageTests):
    def make_storage(self, tmp_path):
        return HDF5Storage(tmp_path / "s.h5")

    def reopen(self, storage, mode="a"):
        storage.close()
        return HDF5Storage(storage.path, mode)


class TestZarrStorage(StorageTests):
    def make_storage(self, tmp_path):
        return ZarrStorage(tmp_path / "s.zarr")

    def reopen(self, storage, mode="a"):
        storage.close()
        return ZarrStorage(storage.path, mode)


class TestJSONStorage(StorageTests):
    def make_storage(self, tmp_path):
        return JSONStorage(tmp_path / "s.json")

    def reopen(self, storage, mode="a"):
        storage.close()
        return JSONStorage(storage.path, mode)


class TestMemoryStorage(StorageTests):
    persistent = False

    def make_storage(self, tmp_path):
        return MemoryStorage()


class TestRedisStorage(StorageTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server, redis_prefix):
        self.url = f"{redis_server.url}/0/{redis_prefix}"

    def make_storage(self, tmp_path):
        return RedisStorage(self.url)

    def reopen(self, storage, mode="a"):
        storage.close()
        return RedisStorage(self.url, mode)
