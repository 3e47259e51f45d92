"""Shared fixtures: real redis-server processes on free loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
from hypothesis import settings

from simrecorder import RedisClusterServer, RedisServer

# CI runs are reproducible (a fixed example sequence); local runs explore new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _require_redis() -> None:
    # A missing server fails the run: the Redis suite must never pass by being skipped.
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed: run ./scripts/test (it installs it as root) "
            "or `apt-get install redis-server`"
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session, on a free port, data in a temp dir."""
    _require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"), redis_port="random")
    server.start()
    yield server
    server.stop(save=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real 3-node Redis Cluster for the session."""
    _require_redis()
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster"), nodes=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A fresh key namespace, so tests sharing a server never see each other's data."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def small_disk(tmp_path):
    """A real 20 MiB tmpfs to fill up (disk-full tests; they run as root in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:  # said in the skip reason, never silent
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# -- servers for the fsspec locations (S3, SFTP, HTTP) -------------------------------------


def _start_server(kind, directory):
    """Start a server from simrecorder.testing.servers; a missing program fails in CI."""
    from simrecorder.testing.servers import MissingServerError

    server = kind(directory)
    try:
        server.start()
    except MissingServerError as exc:
        if os.environ.get("CI"):  # the suite must never pass in CI by being skipped
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real S3-compatible server (moto_server) on a free port; any credentials work.

    Sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for the session (and the
    processes it starts), so that ``s3://`` URLs open without credentials in them.
    """
    from simrecorder.testing.servers import MotoServer

    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server = _start_server(MotoServer, tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    """A real OpenSSH sshd (SFTP) on a free port, for the current user with its own key."""
    from simrecorder.testing.servers import SshServer

    server = _start_server(SshServer, tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory):
    """A real nginx serving ``nginx_server.root`` (autoindex on) on a free port."""
    from simrecorder.testing.servers import NginxServer

    server = _start_server(NginxServer, tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()
