"""How the harness creates each backend's store (and its servers) in a scratch dir."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simrecorder import CompressionType, HDF5DataStore, InMemoryDataStore
from simrecorder.datastores import DataStore

__all__ = ["BACKENDS", "Servers", "make_store", "reset"]


class Servers:
    """The Redis server and cluster the Redis backends talk to, started on demand."""

    server: Any = None
    cluster: Any = None

    @classmethod
    def start(cls, backends: list[str], tmp: Path) -> None:
        from simrecorder import RedisClusterServer, RedisServer

        if "redis" in backends and cls.server is None:
            cls.server = RedisServer(tmp / "redis-server", redis_port="random").start()
        if "redis-cluster" in backends and cls.cluster is None:
            cls.cluster = RedisClusterServer(tmp / "redis-cluster").start()

    @classmethod
    def stop(cls) -> None:
        if cls.server is not None:
            cls.server.stop(save=False)
            cls.server = None
        if cls.cluster is not None:
            for node in cls.cluster.servers:
                node.stop(save=False)
            cls.cluster = None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Ports of the running servers (for a child process)."""
        return {
            "server": cls.server.port if cls.server is not None else None,
            "cluster": cls.cluster.ports if cls.cluster is not None else None,
        }

    @classmethod
    def adopt(cls, described: dict[str, Any]) -> None:
        """Use servers another process started (see :meth:`describe`)."""
        from types import SimpleNamespace

        if described.get("server"):
            cls.server = SimpleNamespace(port=described["server"])
        if described.get("cluster"):
            cls.cluster = SimpleNamespace(ports=described["cluster"])


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


def _zarr_lmdb(tmp: Path, name: str) -> DataStore:
    from simrecorder import DatastoreType, ZarrDataStore

    # uncompressed, as "zarr": the two differ only in where the chunks go
    return ZarrDataStore(
        tmp / f"{name}.mdb", mode="w", datastore_type=DatastoreType.LMDB,
        compression_type=CompressionType.NONE,
    )  # fmt: skip


def _zarr_lmdb_blosc(tmp: Path, name: str) -> DataStore:
    from simrecorder import DatastoreType, ZarrDataStore

    return ZarrDataStore(tmp / f"{name}-blosc.mdb", mode="w", datastore_type=DatastoreType.LMDB)


def _hdf5_durable(tmp: Path, name: str) -> DataStore:
    return HDF5DataStore(tmp / f"{name}-durable.h5", mode="w", durable=True)


def _zarr_durable(tmp: Path, name: str) -> DataStore:
    from simrecorder import ZarrDataStore

    return ZarrDataStore(
        tmp / f"{name}-durable.zarr", mode="w", compression_type=CompressionType.NONE,
        durable=True,
    )  # fmt: skip


def _redis(tmp: Path, name: str) -> DataStore:
    from simrecorder import RedisDataStore

    return RedisDataStore("127.0.0.1", Servers.server.port, prefix=name)


def _redis_cluster(tmp: Path, name: str) -> DataStore:
    from simrecorder import RedisClusterDataStore

    return RedisClusterDataStore("127.0.0.1", Servers.cluster.ports[0], prefix=name)


BACKENDS: dict[str, Callable[[Path, str], DataStore]] = {
    "memory": _memory,
    "hdf5": _hdf5,
    "zarr": _zarr,
    "zarr-blosc": _zarr_blosc,
    "zarr-lmdb": _zarr_lmdb,
    "zarr-lmdb-blosc": _zarr_lmdb_blosc,
    "hdf5-durable": _hdf5_durable,
    "zarr-durable": _zarr_durable,
    "redis": _redis,
    "redis-cluster": _redis_cluster,
}


def make_store(backend: str, tmp: Path, name: str) -> DataStore:
    """A fresh store of ``backend`` named ``name`` under ``tmp``."""
    if backend.startswith("redis"):
        reset(backend)
    return BACKENDS[backend](tmp, name)


def reset(backend: str) -> None:
    """Empty the Redis server(s) a backend uses (the runs do not accumulate data)."""
    import redis

    ports = []
    if backend == "redis" and Servers.server is not None:
        ports = [Servers.server.port]
    elif backend == "redis-cluster" and Servers.cluster is not None:
        ports = Servers.cluster.ports
    for port in ports:
        client = redis.Redis(port=port)
        client.flushall()
        client.close()


def redis_benchmark_set_mb_s(port: int, size: int = 1 << 20, requests: int = 300) -> float | None:
    """MB/s of ``redis-benchmark -t set -d 1MiB`` against the server, or None."""
    if shutil.which("redis-benchmark") is None:
        return None
    done = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "set", "-d", str(size), "-n", str(requests),
         "-c", "1", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    for line in done.stdout.replace("\r", "\n").splitlines():
        if line.startswith("SET:") and "requests per second" in line:
            rps = float(line.split()[1])
            return rps * size / 1e6
    return None
