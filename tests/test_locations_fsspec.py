"""FsspecLocation against real servers: S3 (moto_server), SFTP (sshd) and HTTP (nginx)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import time
import tracemalloc
import uuid
from typing import Any

import pytest

from simrecorder.errors import (
    AuthenticationFailedError,
    ReadOnlyError,
    ServerStartError,
    SimRecorderError,
    StoreConnectionError,
    StoreNotFoundError,
)
from simrecorder.locations import FsspecLocation, open_location
from simrecorder.testing.location import GLOB_KEYS, LocationTests
from simrecorder.testing.servers import (
    MissingServerError,
    NginxServer,
    find_program,
    free_port,
)

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("paramiko")

MIB = 1 << 20
BUCKET = "simrecorder-test"


@pytest.fixture(scope="session")
def s3_bucket(moto_server):
    """One bucket on the session's moto server."""
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)
    fs.mkdir(BUCKET)
    return BUCKET


def s3_url(moto_server, bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}?endpoint_url={moto_server.url}"


def sftp_url(sshd_server, path) -> str:
    return f"{sshd_server.url}{path}?key_filename={sshd_server.key_filename}"


# -- the contract -----------------------------------------------------------------------------


class TestS3Location(LocationTests):
    crash_safe_writes = True  # an unfinished multipart upload never becomes an object

    @pytest.fixture
    def location(self, moto_server, s3_bucket):
        location = open_location(s3_url(moto_server, s3_bucket, f"t-{uuid.uuid4().hex[:12]}"))
        yield location
        location.close()

    def declining_location(self, location):
        return FsspecLocation(location.url, read_only=True)


class TestSftpLocation(LocationTests):
    crash_safe_writes = True  # temp name + rename

    @pytest.fixture
    def location(self, sshd_server, tmp_path):
        location = open_location(sftp_url(sshd_server, tmp_path / "sftp"))
        yield location
        location.close()

    def declining_location(self, location):
        return FsspecLocation(location.url, read_only=True)


# -- acceptance of issue 14: open_location('s3://bucket/prefix?endpoint_url=...') -------------


def test_s3_acceptance_round_trips_1kib_and_20mib(moto_server, s3_bucket):
    location = open_location(s3_url(moto_server, s3_bucket, "acceptance"))
    assert isinstance(location, FsspecLocation)
    small, large = os.urandom(1024), os.urandom(20 * MIB)
    assert location.put("run/small", small)
    assert location.write("run/large", io.BytesIO(large))
    assert location.get("run/small") == small
    assert location.get("run/large") == large
    assert list(location.keys("run/")) == ["run/large", "run/small"]
    assert location.get("run/missing") is None
    with location.read("run/missing") as stream:
        assert stream is None


class Repeat(io.RawIOBase):
    """A non-seekable stream yielding ``piece`` ``count`` times (never whole in memory)."""

    def __init__(self, piece: bytes, count: int) -> None:
        self.piece, self.left = piece, count

    def readable(self):
        return True

    def read(self, size=-1):
        if self.left == 0:
            return b""
        self.left -= 1
        return self.piece


@pytest.mark.parametrize("server", ["s3", "sftp"])
def test_large_values_stream_with_bounded_memory(server, request, tmp_path):
    if server == "s3":
        url = s3_url(request.getfixturevalue("moto_server"),
                     request.getfixturevalue("s3_bucket"), "bounded")  # fmt: skip
    else:
        url = sftp_url(request.getfixturevalue("sshd_server"), tmp_path / "bounded")
    location = open_location(url)
    size = 64 * MIB
    piece = os.urandom(MIB)
    location.exists("warm-up")  # the client's first request loads its models: not traced
    tracemalloc.start()
    try:
        assert location.write("big", Repeat(piece, 64))
        seen = 0
        with location.read("big") as stream:
            while chunk := stream.read(MIB):
                assert chunk == piece
                seen += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        location.close()
    assert seen == size
    assert peak < 48 * MIB, f"{server}: {peak / MIB:.1f} MiB held for a 64 MiB value"


# -- S3 details -------------------------------------------------------------------------------


def test_s3_url_and_pickle(moto_server, s3_bucket):
    url = s3_url(moto_server, s3_bucket, "ident")
    location = FsspecLocation.from_url(url)
    assert location.url.startswith(f"s3://{s3_bucket}/ident?endpoint_url=")
    assert open_location(location.url) == location
    location.put("k", b"v")
    again = pickle.loads(pickle.dumps(location))
    assert again.get("k") == b"v"
    assert FsspecLocation("s3", f"{s3_bucket}/ident", endpoint_url=moto_server.url) == location


def test_s3_url_carries_the_location_options(moto_server, s3_bucket):
    location = FsspecLocation(s3_url(moto_server, s3_bucket, "opts"), read_only=True, timeout=3)
    assert "read_only=true" in location.url and "timeout=3.0" in location.url
    again = open_location(location.url)
    assert again == location
    assert again.read_only and again.timeout == 3.0
    assert again.put("k", b"v") is False
    assert FsspecLocation(location.url, read_only=False).put("k", b"v")


def test_s3_secrets_stay_out_of_the_url(moto_server, s3_bucket):
    location = FsspecLocation.from_url(
        s3_url(moto_server, s3_bucket, "secret"), key="testing", secret="hush"
    )
    assert "hush" not in location.url and "testing" not in location.url
    assert location.put("k", b"v")


def test_s3_instances_share_no_cache(moto_server, s3_bucket):
    url = s3_url(moto_server, s3_bucket, "nocache")
    first, second = open_location(url), open_location(url)
    assert first.fs is not second.fs
    assert list(first.keys()) == []
    second.put("new", b"1")
    assert list(first.keys()) == ["new"]  # no stale listing cache


def test_s3_missing_bucket(moto_server):
    location = open_location(s3_url(moto_server, "no-such-bucket", "p"))
    assert location.get("k") is None
    assert list(location.keys()) == []
    with pytest.raises(StoreNotFoundError, match="no-such-bucket"):
        location.put("k", b"v")


def test_s3_failed_stream_leaves_no_object(moto_server, s3_bucket):
    location = open_location(s3_url(moto_server, s3_bucket, "failed"))

    class Broken(io.RawIOBase):
        sent = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent > 12 * MIB:
                raise OSError("the producer died")
            buffer[:] = b"x" * len(buffer)
            self.sent += len(buffer)
            return len(buffer)

    with pytest.raises(OSError, match="producer died"):
        location.write("k", Broken())
    assert location.get("k") is None
    assert list(location.keys()) == []


# -- SFTP details -----------------------------------------------------------------------------


def test_sftp_url_names_user_host_port_and_key(sshd_server, tmp_path):
    location = open_location(sftp_url(sshd_server, tmp_path / "u"))
    assert location.url.startswith(f"sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}/")
    assert "key_filename=" in location.url
    assert open_location(location.url) == location


def test_sftp_path_with_spaces_and_percent(sshd_server, tmp_path):
    folder = tmp_path / "a b%20c"
    location = FsspecLocation(sshd_server.url, str(folder), key_filename=sshd_server.key_filename)
    assert location.put("k", b"v")
    assert (folder / "k").read_bytes() == b"v"
    assert open_location(location.url).get("k") == b"v"


def test_sftp_leaves_no_temp_files(sshd_server, tmp_path):
    location = open_location(sftp_url(sshd_server, tmp_path / "t"))
    location.put("a/b", b"1" * 1000)
    location.write("a/b", io.BytesIO(b"2" * 1000))
    assert sorted(os.listdir(tmp_path / "t" / "a")) == ["b"]
    assert (tmp_path / "t" / "a" / "b").read_bytes() == b"2" * 1000


def test_sftp_wrong_key_is_authentication_failed(sshd_server, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)  # fmt: skip
    location = FsspecLocation(f"{sshd_server.url}{tmp_path}", key_filename=str(other))
    started = time.monotonic()
    with pytest.raises(AuthenticationFailedError, match=f"127.0.0.1:{sshd_server.port}"):
        location.get("k")
    assert time.monotonic() - started < 15


# -- errors in bounded time -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["s3", "sftp", "http"])
@pytest.mark.parametrize("operation", ["get", "put", "keys"])
def test_refused_connection_is_store_connection_error(scheme, operation):
    port = free_port()  # nothing listens there
    url = {
        "s3": f"s3://bucket/p?endpoint_url=http://127.0.0.1:{port}",
        "sftp": f"sftp://nobody@127.0.0.1:{port}/data",
        "http": f"http://127.0.0.1:{port}/data",
    }[scheme]
    location = FsspecLocation.from_url(
        url, **({"key": "k", "secret": "s"} if scheme == "s3" else {})
    )
    if scheme == "http" and operation == "put":
        assert location.put("k", b"v") is False  # read-only: declined before any request
        return
    calls = {"get": lambda: location.get("k"), "put": lambda: location.put("k", b"v"),
             "keys": lambda: list(location.keys())}  # fmt: skip
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}") as caught:
        calls[operation]()
    assert time.monotonic() - started < 20
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, SimRecorderError)


# -- HTTP (read-only): values placed in the directory nginx serves ----------------------------


@pytest.fixture
def served(nginx_server):
    """A fresh folder under nginx's root, and an HTTP location on it."""
    folder = nginx_server.root / uuid.uuid4().hex[:12]
    folder.mkdir()
    location = open_location(f"{nginx_server.url}/{folder.name}")
    yield folder, location
    location.close()


def _place(folder, key: str, value: bytes) -> None:
    path = folder / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value)


def test_http_reads_served_files(served):
    folder, location = served
    value = os.urandom(3 * MIB + 5)
    _place(folder, "a/b/c", value)
    _place(folder, "top", b"1")
    assert location.read_only is True
    assert location.get("a/b/c") == value
    with location.read("a/b/c") as stream:
        assert stream.read(10) == value[:10]
        assert stream.read() == value[10:]
    assert location.get("top") == b"1"
    assert location.exists("top") and not location.exists("nope")
    assert not location.exists("a")
    assert location.get("nope") is None
    assert location.get("a") is None  # a folder is not a value
    assert list(location.keys()) == ["a/b/c", "top"]
    assert list(location.keys("a/")) == ["a/b/c"]
    assert list(location.keys("zz")) == []


def test_http_glob_and_unicode_names(served):
    folder, location = served
    for name in GLOB_KEYS:
        _place(folder, name, name.encode())
    for name in GLOB_KEYS:
        assert location.get(name) == name.encode(), name
    assert list(location.keys()) == sorted(GLOB_KEYS)


def test_http_is_read_only(served):
    folder, location = served
    _place(folder, "k", b"old")
    stream = io.BytesIO(b"headerBODY")
    stream.seek(6)
    assert location.write("k", stream) is False
    assert stream.tell() == 6
    assert location.put("k", b"new") is False
    with pytest.raises(ReadOnlyError, match="k"):
        location.delete("k")
    assert location.get("k") == b"old"


def test_http_url_and_pickle(served, nginx_server):
    folder, location = served
    _place(folder, "k", b"v")
    assert location.url == f"{nginx_server.url}/{folder.name}"
    assert open_location(location.url) == location
    again = pickle.loads(pickle.dumps(location))
    assert again.get("k") == b"v"
    assert location.sub("x").url == f"{nginx_server.url}/{folder.name}/x"


# -- the server helpers -----------------------------------------------------------------------


def test_missing_server_program_names_the_package():
    with pytest.raises(MissingServerError, match="apt-get install no-such-package"):
        find_program("no-such-server-program", "no-such-package")


def test_server_on_a_taken_port_fails_with_its_log(nginx_server, tmp_path):
    clash = NginxServer(tmp_path / "clash", port=nginx_server.port)
    with pytest.raises(ServerStartError, match=f"127.0.0.1:{nginx_server.port}.*"):
        clash.start(timeout=5)
    assert clash.process is None


def test_server_stop_ends_the_process(tmp_path):
    server = NginxServer(tmp_path / "web").start()
    pid = server.pid
    server.stop()
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _write_in_new_folders(url: str, tag: int, barrier: Any, rounds: int) -> None:
    location = open_location(url)
    for round_number in range(rounds):
        barrier.wait(timeout=60)
        assert location.write(f"r{round_number}/deep/k{tag}", b"x" * 10)


def test_sftp_processes_making_the_same_folder_at_once_all_write(sshd_server, tmp_path):
    """Writers whose keys need the same new folder race to make it: fsspec's SFTP
    checks, then creates, and the loser got the server's "Failure" (CI saw it)."""
    import multiprocessing

    url = sftp_url(sshd_server, tmp_path / "race")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [
        context.Process(target=_write_in_new_folders, args=(url, i, barrier, 15)) for i in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    location = open_location(url)
    assert sorted(location.keys()) == sorted(f"r{r}/deep/k{i}" for r in range(15) for i in range(4))
