"""Every recipe of tarn's README, with ``from simrecorder.blobs import ...``, against real
servers: Redis (redis-server), S3 (moto_server), SFTP/SCP (OpenSSH sshd) and nginx
(``autoindex_format json``); plus servers that are down."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest

from simrecorder.blobs import (
    S3,
    SCP,
    SFTP,
    DiskDict,
    Fanout,
    HashKeyStorage,
    Level,
    Levels,
    Nginx,
    ReadError,
    RedisLocation,
    Small,
    WriteError,
    mark_unstable,
    smart_cache,
)
from simrecorder.errors import SimRecorderError, StoreConnectionError
from simrecorder.testing.servers import NginxServer, free_port

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("paramiko")

KIB = 1 << 10
BUCKET = "simrecorder-blobs"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(value) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value.read()


class JsonNginx(NginxServer):
    """nginx listing folders with ``autoindex_format json`` (tarn's Nginx set-up)."""

    def _prepare(self) -> None:
        super()._prepare()
        text = self.config_path.read_text()
        self.config_path.write_text(
            text.replace("autoindex on;", "autoindex on;\n        autoindex_format json;")
        )


@pytest.fixture(scope="module")
def json_nginx(tmp_path_factory):
    server = JsonNginx(tmp_path_factory.mktemp("nginx-json"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bucket(moto_server):
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return BUCKET


@pytest.fixture
def s3(moto_server, bucket, redis_prefix):
    return S3(moto_server.url, f"{bucket}/{redis_prefix}")


@pytest.fixture
def redis_location(redis_server, redis_prefix):
    location = RedisLocation(redis_server.url, prefix=redis_prefix)
    yield location
    location.close()


def ssh_args(sshd_server) -> dict:
    return {"port": sshd_server.port, "username": sshd_server.user, "key": sshd_server.key_filename}


# -- A simple datalake ------------------------------------------------------------------------


def test_recipe_simple_datalake(tmp_path, json_nginx):
    import requests

    storage = HashKeyStorage(str(tmp_path / "folder"))
    picture = tmp_path / "file.png"
    picture.write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    key = storage.write(str(picture))  # here `key` is the sha256 digest
    with storage.read(key) as value:
        assert value.resolve() == tmp_path / "folder" / key.hex()[:2] / key.hex()[2:]
        assert value.read_bytes() == picture.read_bytes()
    key = storage.write(b"my-bytes")
    assert key == hashlib.sha256(b"my-bytes").digest()
    served = json_nginx.root / "page.html"
    served.write_bytes(b"<html>" + b"x" * (3 << 20) + b"</html>")
    response = requests.get(f"{json_nginx.url}/page.html", stream=True, timeout=10)
    key = storage.write(response.raw)  # a non-seekable HTTP body, streamed
    assert key.hex() == sha(served.read_bytes())
    with storage.read(key) as value:
        assert value.read_bytes() == served.read_bytes()


# -- Smart cache to disk ----------------------------------------------------------------------

calls: list[int] = []


@mark_unstable
def my_other_function(x, y):
    z = x * y
    return x + y + z


def test_recipe_smart_cache(tmp_path):
    @smart_cache(str(tmp_path / "storage"))
    @mark_unstable
    def my_expensive_function(x):
        calls.append(x)
        y = x**2
        return my_other_function(x, y)

    assert my_expensive_function(3) == my_expensive_function(3) == 3 + 9 + 27
    assert calls == [3]
    material = my_expensive_function.key_material(3)
    assert any(name.endswith(":my_other_function") for name in material["code"])


# -- Other storage locations ------------------------------------------------------------------


def test_recipe_s3(moto_server, bucket, redis_prefix):
    storage = HashKeyStorage(S3(moto_server.url, f"{bucket}/{redis_prefix}"))
    key = storage.write(b"in the bucket")
    with storage.read(key) as value:
        assert value.read() == b"in the bucket"
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)
    hexdigest = key.hex()  # tarn's S3 layout: 2 bytes, then the rest
    assert fs.cat(f"{bucket}/{redis_prefix}/{hexdigest[:4]}/{hexdigest[4:]}") == b"in the bucket"
    assert list(storage.keys()) == [key]
    big = bytes(range(256)) * (40 * KIB)  # 10 MiB: a multipart upload, streamed
    key = storage.write(io.BytesIO(big))
    assert storage.read(content, key) == big


def test_recipe_redis_one_round_trip_per_read(redis_server, redis_prefix):
    import redis

    storage = HashKeyStorage(RedisLocation(redis_server.url, prefix=redis_prefix))
    keys = [storage.write(bytes([i]) * KIB) for i in range(10)]
    client = redis.Redis.from_url(redis_server.url)
    before = client.info("stats")["total_commands_processed"]
    for i, key in enumerate(keys):
        with storage.read(key) as value:
            assert value.read() == bytes([i]) * KIB
    after = client.info("stats")["total_commands_processed"]
    assert after - before <= len(keys) + 1  # one GET per read (+ this INFO)
    assert sorted(storage.keys()) == sorted(keys)
    host = RedisLocation("127.0.0.1", redis_server.port, prefix=redis_prefix)
    assert HashKeyStorage(host).read(content, keys[0]) == bytes([0]) * KIB


def _remote_folder(path: Path, levels=None) -> tuple[bytes, bytes]:
    """A tarn folder with two blobs, as a remote server holds it."""
    storage = HashKeyStorage(DiskDict(path, levels=levels))
    return storage.write(b"first remote blob"), storage.write(b"second" * 1000)


@pytest.mark.parametrize("kind", [SFTP, SCP])
def test_recipe_sftp_and_scp(tmp_path, sshd_server, kind):
    first, second = _remote_folder(tmp_path / "remote", levels=[1, 31])
    remote = kind("127.0.0.1", str(tmp_path / "remote"), **ssh_args(sshd_server))
    assert remote.levels == (1, 31)  # from the server's config.yml
    storage = HashKeyStorage(str(tmp_path / "local"), remote=remote)
    with storage.read(first) as value:  # copied to local disk on read
        assert isinstance(value, Path) and value.read_bytes() == b"first remote blob"
    assert storage.read(content, second.hex()) == b"second" * 1000
    assert sorted(HashKeyStorage(remote).keys()) == sorted([first, second])
    with pytest.raises(WriteError, match="sftp://"):  # read-only: declines writes
        HashKeyStorage(remote).write(b"new")
    with pytest.raises(ReadError, match="sftp://"):
        with storage.read(sha(b"absent")):
            pass
    remote.close()


def test_recipe_nginx(tmp_path, json_nginx):
    first, second = _remote_folder(json_nginx.root / "lake")
    remote = Nginx(f"{json_nginx.url}/lake")
    assert sorted(HashKeyStorage(remote).keys()) == sorted([first, second])  # JSON listing
    storage = HashKeyStorage(str(tmp_path / "local"), remote=remote)
    with storage.read(first) as value:
        assert value.read_bytes() == b"first remote blob"
    assert DiskDict(tmp_path / "local").exists(f"{first.hex()[:2]}/{first.hex()[2:]}")
    with pytest.raises(WriteError, match="http://"):  # it's an HTTP server: read-only
        HashKeyStorage(remote).write(b"new")


def test_nginx_html_listing_also_works(nginx_server):
    first, second = _remote_folder(nginx_server.root / "html-lake")
    remote = Nginx(f"{nginx_server.url}/html-lake")
    assert sorted(HashKeyStorage(remote).keys()) == sorted([first, second])


# -- Advanced: composition --------------------------------------------------------------------


def test_recipe_fanout_of_disks_and_s3(tmp_path, s3):
    disks = [str(tmp_path / f"hdd{i}") for i in range(3)]
    storage = HashKeyStorage(Fanout(*disks))
    key = storage.write(b"on one of the disks")
    assert sum(DiskDict(disk).exists(f"{key.hex()[:2]}/{key.hex()[2:]}") for disk in disks) == 1
    small_disk = DiskDict(tmp_path / "small", max_size=2500)
    mixed = HashKeyStorage(Fanout(small_disk, s3))  # the disk first, S3 when it is full
    keys = [mixed.write(bytes([i]) * 1000) for i in range(4)]
    assert len(list(small_disk.keys())) == 2 and len(list(s3.keys())) == 2
    for i, key in enumerate(keys):
        assert mixed.read(content, key) == bytes([i]) * 1000


def test_recipe_lazy_migration(tmp_path):
    old = HashKeyStorage(str(tmp_path / "old_hdd"))
    key = old.write(b"to migrate")
    storage = HashKeyStorage(Levels(str(tmp_path / "new_hdd"), str(tmp_path / "old_hdd")))
    assert storage.read(content, key) == b"to migrate"
    assert DiskDict(tmp_path / "new_hdd").exists(f"{key.hex()[:2]}/{key.hex()[2:]}")
    new = storage.write(b"only on the new disk")
    assert not old.exists(new)


def test_recipe_cache_levels(tmp_path, s3):
    storage = HashKeyStorage(
        Levels(
            Level(str(tmp_path / "fast_ssd"), write=False),
            Level(str(tmp_path / "slow_hdd")),
            Level(s3, write=False),
        )
    )
    key = storage.write(b"written to the hdd")
    ssd, hdd = DiskDict(tmp_path / "fast_ssd"), DiskDict(tmp_path / "slow_hdd")
    where = f"{key.hex()[:2]}/{key.hex()[2:]}"
    assert hdd.exists(where) and not ssd.exists(where) and not s3.exists(where)
    assert storage.read(content, key) == b"written to the hdd"
    assert ssd.exists(where)  # the read filled the cache
    in_s3 = HashKeyStorage(s3).write(b"only in s3")
    assert storage.read(content, in_s3) == b"only in s3"


def test_recipe_small_redis_tier(tmp_path, redis_location):
    storage = HashKeyStorage(
        Fanout(Small(redis_location, max_size=100 * KIB), str(tmp_path / "hdd"))
    )
    small = storage.write(b"s" * KIB)
    large = storage.write(b"L" * (200 * KIB))
    assert redis_location.exists(f"{small.hex()[:2]}/{small.hex()[2:]}")
    assert not redis_location.exists(f"{large.hex()[:2]}/{large.hex()[2:]}")
    assert storage.read(content, large) == b"L" * (200 * KIB)


def test_recipe_big_composition(tmp_path, redis_location, s3, sshd_server):
    sftp_blob, _ = _remote_folder(tmp_path / "ssh-archive")
    storage = HashKeyStorage(
        Levels(
            Small(redis_location, max_size=10 * KIB),  # small files in Redis
            Level(Fanout(str(tmp_path / "ssd1"), str(tmp_path / "ssd2")), write=False),  # a cache
            Fanout(str(tmp_path / "hdd1"), str(tmp_path / "hdd2")),  # the main storage
            Level(s3, write=False),  # cold data
            Level(SFTP("127.0.0.1", str(tmp_path / "ssh-archive"), **ssh_args(sshd_server)),
                  write=False),  # old data, read-only
        )
    )  # fmt: skip
    small = storage.write(b"tiny")
    big = storage.write(b"B" * (50 * KIB))
    assert redis_location.exists(f"{small.hex()[:2]}/{small.hex()[2:]}")
    assert DiskDict(tmp_path / "hdd1").exists(f"{big.hex()[:2]}/{big.hex()[2:]}")
    cold = HashKeyStorage(s3).write(b"C" * (20 * KIB))
    assert storage.read(content, cold) == b"C" * (20 * KIB)
    assert DiskDict(tmp_path / "ssd1").exists(f"{cold.hex()[:2]}/{cold.hex()[2:]}")
    assert storage.read(content, sftp_blob) == b"first remote blob"
    assert redis_location.exists(f"{sftp_blob.hex()[:2]}/{sftp_blob.hex()[2:]}")


# -- servers that are down --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "sftp", "nginx", "redis"])
def test_server_down_fails_fast_naming_it(tmp_path, kind):
    port = free_port()
    started = time.monotonic()
    location = {
        "s3": lambda: S3(f"http://127.0.0.1:{port}", "bucket", timeout=2),
        "sftp": lambda: SFTP("127.0.0.1", "/data", port=port, timeout=2),
        "nginx": lambda: Nginx(f"http://127.0.0.1:{port}/lake", timeout=2),
        "redis": lambda: RedisLocation("127.0.0.1", port, socket_connect_timeout=1),
    }[kind]()
    with pytest.raises(SimRecorderError) as caught:
        with HashKeyStorage(location).read(sha(b"x")):
            pass
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert isinstance(caught.value, StoreConnectionError), repr(caught.value)
    assert time.monotonic() - started < 30


def test_remote_locations_pickle_and_compare(moto_server, bucket, sshd_server, json_nginx):
    import pickle

    made = [
        (S3(moto_server.url, bucket), S3(moto_server.url, bucket)),
        (SFTP("127.0.0.1", "/srv/lake", **ssh_args(sshd_server)),
         SFTP("127.0.0.1", "/srv/lake", **ssh_args(sshd_server))),
        (Nginx(f"{json_nginx.url}/lake"), Nginx(f"{json_nginx.url}/lake/")),
    ]  # fmt: skip
    for location, same in made:
        assert location == same
        copy = pickle.loads(pickle.dumps(location))
        assert copy == location and type(copy) is type(location)
    assert S3(moto_server.url, bucket) != S3(moto_server.url, f"{bucket}/other")
    assert SFTP("127.0.0.1", "/a", port=1) != SCP("127.0.0.1", "/a", port=1)
