"""SIGKILL the writer at random moments: every flushed sample must survive, bit-exact.

20 kills per backend here; `pytest -m slow tests/test_crash.py` runs 100 per backend.
"""

from __future__ import annotations

import os

import pytest

from simrecorder.errors import InvalidArgumentError, KeyNotFoundError
from simrecorder.testing.crash import crash_once, expected, open_store

BACKENDS = ["hdf5", "zarr", "zarr-raw", "zarr-lmdb", "zarr-lmdb-raw", "redis"]


def _location(backend, tmp_path, redis_server, kill):
    if backend == "redis":
        return f"redis://127.0.0.1:{redis_server.port}/0?prefix=crash-{os.getpid()}-{tmp_path.name}-{kill}"
    suffix = {"hdf5": ".h5", "zarr-lmdb": ".mdb", "zarr-lmdb-raw": ".mdb"}.get(backend, ".zarr")
    return str(tmp_path / f"kill{kill}{suffix}")


def _run(backend, tmp_path, redis_server, kills, seed):
    failures = []
    for kill in range(kills):
        result = crash_once(backend, _location(backend, tmp_path, redis_server, kill), seed + kill)
        if not result:
            failures.append((kill, result.flushed_steps, result.problems))
    assert not failures, f"{len(failures)}/{kills} kills lost data: {failures[:3]}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_twenty_kills(backend, tmp_path, redis_server):
    _run(backend, tmp_path, redis_server, kills=20, seed=100)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_hundred_kills(backend, tmp_path, redis_server):
    _run(backend, tmp_path, redis_server, kills=100, seed=10_000)


def test_unknown_backends_and_keys_raise_named_errors(tmp_path):
    with pytest.raises(InvalidArgumentError, match="'tape'"):
        open_store("tape", str(tmp_path / "x"))
    with pytest.raises(KeyNotFoundError, match="'nope'"):
        expected("nope", 0)
