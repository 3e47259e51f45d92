"""The Location contract for Redis (TCP with a prefix, a whole database, a unix
socket), plus what is special to Redis: URLs, a given client, a server that is down,
a full server, long streams sent in pieces."""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import time
import tracemalloc
import uuid

import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from simrecorder import RedisServer
from simrecorder.datastores._redis_server import free_port
from simrecorder.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    SimRecorderError,
    StoreConnectionError,
    StoreLockedError,
    ValueChangedError,
)
from simrecorder.locations import Location, open_location
from simrecorder.locations._redis import RedisLocation
from simrecorder.locations.registry import known_location_schemes
from simrecorder.testing.location import LocationTests

MIB = 1 << 20


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A redis-server of this module only (its memory limit and databases are changed),
    also listening on a unix socket."""
    directory = tmp_path_factory.mktemp("redis-loc")
    socket = directory / "redis.sock"
    server = RedisServer(directory, redis_port="random",
                         extra_args=["--unixsocket", str(socket), "--unixsocketperm", "700",
                                     "--appendonly", "no", "--save", ""])  # fmt: skip
    server.start()
    server.socket = str(socket)
    yield server
    server.stop(save=False)


class TestRedisLocation(LocationTests):
    crash_safe_writes = True
    lock_expiry_seconds = 1.0

    @pytest.fixture
    def location(self, redis_server, redis_prefix):
        with RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix, lock_ttl=1) as location:
            yield location

    def declining_location(self, location: Location) -> Location:
        return RedisLocation(location.url, max_value_bytes=3)


class TestRedisLocationWholeDatabase(LocationTests):
    """Prefix '': every key of database 3 is a key of the location."""

    crash_safe_writes = True
    lock_expiry_seconds = 1.0

    @pytest.fixture
    def location(self, own_server):
        client = redis.Redis(port=own_server.port, db=3)
        client.flushdb()
        client.close()
        with RedisLocation(f"{own_server.url}/3?lock_ttl=1") as location:
            yield location

    def declining_location(self, location: Location) -> Location:
        return RedisLocation(location.url, read_only=True)


class TestRedisLocationUnixSocket(LocationTests):
    crash_safe_writes = True
    lock_expiry_seconds = 1.0

    @pytest.fixture
    def location(self, own_server):
        prefix = f"unix-{uuid.uuid4().hex[:8]}"
        url = f"unix://{own_server.socket}?db=1"
        with RedisLocation(url, prefix=prefix, lock_ttl=1) as location:
            yield location

    def declining_location(self, location: Location) -> Location:
        return RedisLocation(location.url, max_value_bytes=3)


def test_url_layout(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/2/{redis_prefix}/a%20b")
    assert location.prefix == f"{redis_prefix}/a b"
    assert location.url == f"{redis_server.url}/2/{redis_prefix}/a%20b"
    assert open_location(location.url) == location
    assert RedisLocation(f"{redis_server.url}/2?prefix={redis_prefix}/a%20b") == location
    location.put("k", b"v")
    raw = redis.Redis(port=redis_server.port, db=2)
    assert raw.get(f"{redis_prefix}/a b/k") == b"v"
    assert location.sub("s").url == f"{redis_server.url}/2/{redis_prefix}/a%20b/s"
    assert open_location(location.sub("s").url).prefix == f"{redis_prefix}/a b/s"
    raw.close()


def test_url_own_options(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix, read_only=True,
                             max_value_bytes=100)  # fmt: skip
    assert location.url == (f"{redis_server.url}/0/{redis_prefix}?read_only=1&max_value_bytes=100")
    again = open_location(location.url)
    assert again == location and again.read_only and again.max_value_bytes == 100
    assert open_location(location.url, read_only=False).read_only is False
    assert location != RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    with pytest.raises(InvalidArgumentError, match="read_only"):
        RedisLocation(f"{redis_server.url}/0?read_only=maybe")


def test_url_without_db_is_db_0(redis_server):
    assert RedisLocation(redis_server.url).url == f"{redis_server.url}/0"


def test_url_options(redis_server):
    location = RedisLocation(f"{redis_server.url}/0/p?socket_timeout=7")
    assert location._client.connection_pool.connection_kwargs["socket_timeout"] == 7.0
    assert "socket_timeout=7" in location.url
    with pytest.raises(InvalidArgumentError, match="no mode"):
        RedisLocation(f"{redis_server.url}/0?mode=r")
    with pytest.raises(InvalidArgumentError, match="bogus"):
        RedisLocation(f"{redis_server.url}/0?bogus=1")


def test_glob_characters_in_prefix(redis_server, redis_prefix):
    odd = RedisLocation(f"{redis_server.url}/0", prefix=f"{redis_prefix}/p[1]*")
    near = RedisLocation(f"{redis_server.url}/0", prefix=f"{redis_prefix}/p1x")
    odd.put("k", b"1")
    near.put("k", b"2")
    assert list(odd.keys()) == ["k"]
    assert odd.get("k") == b"1"


def test_given_client_is_shared_not_closed(redis_server, redis_prefix):
    client = redis.Redis(port=redis_server.port, db=0)
    location = RedisLocation(client, prefix=redis_prefix)
    assert location.url == f"redis://localhost:{redis_server.port}/0/{redis_prefix}"
    assert location.put("k", b"v")
    location.close()
    assert client.get(f"{redis_prefix}/k") == b"v"  # still usable
    again = pickle.loads(pickle.dumps(location))
    assert again == location and again.get("k") == b"v"
    client.close()


def test_password_is_kept_out_of_url_but_pickled(tmp_path):
    with RedisServer(tmp_path, redis_port="random", password="s3cret") as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0/p"
        location = open_location(url)
        assert "s3cret" not in location.url and "s3cret" not in repr(location)
        assert location.put("k", b"v")
        again = pickle.loads(pickle.dumps(location))
        assert again.get("k") == b"v"


def test_server_down_raises_connection_error_quickly():
    location = RedisLocation(f"redis://127.0.0.1:{free_port()}/0", prefix="p")
    for call in (lambda: location.get("k"), lambda: location.put("k", b"v"),
                 lambda: list(location.keys()), lambda: location.read_many(["k"])):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(StoreConnectionError, match=r"127\.0\.0\.1"):
            call()
        assert time.monotonic() - started < 10


def test_full_server_declines_and_rewinds(own_server):
    admin = redis.Redis(port=own_server.port)
    location = RedisLocation(f"{own_server.url}/4", prefix="full")
    assert location.put("before", b"kept")
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # below what an empty server uses: every write is OOM
        assert location.put("k", b"value") is False
        stream = io.BytesIO(b"h" + b"x" * 200_000)
        stream.seek(1)
        assert location.write("k", stream) is False
        assert stream.tell() == 1, "a declined stream is rewound"
        long = io.BytesIO(b"y" * (3 * MIB))  # sent in pieces
        assert location.write("long", long) is False
        assert long.tell() == 0
        assert location.write_many({"a": b"1", "b": io.BytesIO(b"2")}) == {"a": False, "b": False}
        assert list(location.keys()) == ["before"]
        assert location.get("before") == b"kept"  # reads still work
    finally:
        admin.config_set("maxmemory", 0)
    assert location.put("after", b"room again")
    assert not list(admin.scan_iter(match=".simrecorder-tmp-*"))
    admin.flushdb()
    admin.close()


def test_long_stream_sent_in_pieces(redis_server, redis_prefix, tmp_path):
    source = tmp_path / "big"
    value = bytes(range(256)) * (20 * MIB // 256)
    source.write_bytes(value)
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    raw = redis.Redis(port=redis_server.port)
    temps = set(raw.scan_iter(match=".simrecorder-tmp-*"))  # left by the SIGKILL tests
    tracemalloc.start()
    try:
        with open(source, "rb") as stream:
            assert location.write("big", stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"writing 20 MiB from a file held {peak:,} bytes"
    assert location.get("big") == value
    assert raw.ttl(f"{redis_prefix}/big") == -1  # the temp key's expiry is not inherited
    assert set(raw.scan_iter(match=".simrecorder-tmp-*")) == temps
    assert all(0 < raw.ttl(temp) <= 3600 for temp in temps)  # a killed writer's temp expires
    raw.close()


def test_failing_stream_leaves_no_temp_key(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    raw = redis.Redis(port=redis_server.port)
    temps = set(raw.scan_iter(match=".simrecorder-tmp-*"))
    location.put("k", b"old")
    with pytest.raises(OSError, match="disk gone"):
        location.write("k", _Failing(3 * MIB))
    assert location.get("k") == b"old"
    assert set(raw.scan_iter(match=".simrecorder-tmp-*")) == temps
    raw.close()


def test_max_value_bytes(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix, max_value_bytes=10)
    assert location.put("ok", b"0123456789")
    assert location.put("big", b"01234567890") is False
    assert location.write("pipe-like", _Unseekable(b"x" * (2 * MIB))) is False
    assert location.write_many({"a": b"1", "b": b"x" * 11}) == {"a": True, "b": False}
    assert sorted(location.keys()) == ["a", "ok"]
    with pytest.raises(InvalidArgumentError):
        RedisLocation(f"{redis_server.url}/0", max_value_bytes=(512 << 20) + 1)


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._stream.readinto(buffer)


class _Failing(io.RawIOBase):
    """A stream that fails after ``size`` bytes (a file on a dying disk)."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            raise OSError("disk gone")
        size = min(len(buffer), self._left)
        buffer[:size] = b"f" * size
        self._left -= size
        return size


# -- locks ----------------------------------------------------------------------------------------


def test_lock_is_renewed_while_held(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}?lock_ttl=0.3")
    with location.lock():
        time.sleep(1.0)  # three times the ttl: the lease lives on
        with pytest.raises(StoreLockedError, match="held by another writer"):
            location.lock()
    location.lock().release()


def test_lock_lost_after_a_stall_is_reported(redis_server, redis_prefix):
    """The lease ran out while its holder stalled and another writer took it: the
    holder's check() raises, and its release leaves the new holder's lock alone."""
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}", lock_ttl=0.3)
    held = location.lock()
    raw = redis.Redis(port=redis_server.port)
    name = f"{redis_prefix}/.simrecorder-lock-writer"
    raw.set(name, b"another-writer", px=5000)  # what the next writer does after expiry
    time.sleep(0.5)
    with pytest.raises(StoreLockedError, match="lost the lock"):
        held.check()
    held.release()
    assert raw.get(name) == b"another-writer"
    raw.close()


def test_lock_ttl_in_url_and_pickle(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}?lock_ttl=2.5")
    assert location.lock_ttl == 2.5 and location.url.endswith("?lock_ttl=2.5")
    assert pickle.loads(pickle.dumps(location)).lock_ttl == 2.5
    assert RedisLocation(f"{redis_server.url}/0/{redis_prefix}").lock_ttl == 30.0
    for bad in ("0", "x", "-1"):
        with pytest.raises(InvalidArgumentError, match="lock_ttl"):
            RedisLocation(f"{redis_server.url}/0/{redis_prefix}?lock_ttl={bad}")


def test_lock_key_is_no_key(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}")
    with location.lock():
        assert list(location.keys()) == []
        with pytest.raises(InvalidKeyError, match="lock"):
            location.put(".simrecorder-lock-writer", b"x")


# -- Redis Cluster --------------------------------------------------------------------------------


def _cluster_client(redis_cluster) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])


class TestRedisClusterLocation(LocationTests):
    """The contract on a real 3-node Redis Cluster (keys spread over the slots)."""

    crash_safe_writes = True
    lock_expiry_seconds = 1.0
    # open_location() knows redis+cluster:// once the registry lists the scheme
    reopens_by_url = "redis+cluster" in known_location_schemes()

    @pytest.fixture
    def location(self, redis_cluster, redis_prefix):
        with RedisLocation(f"{redis_cluster.url}/{redis_prefix}", lock_ttl=1) as location:
            yield location

    def declining_location(self, location: Location) -> Location:
        return RedisLocation(location.url, max_value_bytes=3)


def test_cluster_url_layout_and_given_client(redis_cluster, redis_prefix):
    location = RedisLocation(f"{redis_cluster.url}/{redis_prefix}/a%20b")
    assert location.cluster and location.supports_atomic_batch is False
    assert RedisLocation.supports_atomic_batch is True  # the single-server class keeps it
    assert location.prefix == f"{redis_prefix}/a b"
    assert location.url == f"{redis_cluster.url}/{redis_prefix}/a%20b"
    for url in (location.url, f"{redis_cluster.url}/0/{redis_prefix}/a%20b",
                f"{redis_cluster.url}?prefix={redis_prefix}/a%20b"):  # fmt: skip
        with RedisLocation(url) as again:
            assert again == location
    assert location.put("k", b"v")
    raw = _cluster_client(redis_cluster)
    assert raw.get(f"{{{redis_prefix}/a b/k}}") == b"v"  # the key is its own hash tag
    assert location.sub("s").url == f"{redis_cluster.url}/{redis_prefix}/a%20b/s"
    digits = RedisLocation(redis_cluster.url, prefix=f"7/{redis_prefix}")
    assert digits.url == f"{redis_cluster.url}/0/7/{redis_prefix}"  # not read as db 7
    with RedisLocation(digits.url) as again:
        assert again.prefix == f"7/{redis_prefix}"
    digits.close()
    with pytest.raises(InvalidArgumentError, match="only database 0"):
        RedisLocation(f"{redis_cluster.url}/3/{redis_prefix}")
    given = RedisLocation(raw, prefix=f"{redis_prefix}/a b")  # was an ArgumentTypeError
    assert given == location and given.get("k") == b"v"
    given.close()
    assert raw.get(f"{{{redis_prefix}/a b/k}}") == b"v"  # a given client stays open
    again = pickle.loads(pickle.dumps(given))
    assert again == location and again.get("k") == b"v"
    for opened in (again, location):
        opened.close()
    raw.close()


def test_cluster_batches_span_every_node(redis_cluster, redis_prefix):
    """read_many/write_many/delete_many/keys reach keys on all three primaries (a
    MGET or MULTI/EXEC over them is CROSSSLOT)."""
    location = RedisLocation(redis_cluster.url, prefix=redis_prefix)
    raw = _cluster_client(redis_cluster)
    items = {f"k{i}": f"v{i}".encode() for i in range(40)}
    nodes = {raw.get_node_from_key(f"{{{redis_prefix}/{key}}}").name for key in items}
    assert len(nodes) == 3, "the keys should land on every primary"
    assert location.write_many(items) == dict.fromkeys(items, True)
    assert location.read_many([*items, "missing"]) == {**items, "missing": None}
    assert list(location.keys()) == sorted(items)
    assert list(location.keys("k1")) == sorted(key for key in items if key.startswith("k1"))
    assert location.delete_many([*items, "missing"]) == len(items)
    assert list(location.keys()) == []
    location.close()
    raw.close()


def test_cluster_streamed_value_renamed_within_its_slot(redis_cluster, redis_prefix):
    """A value longer than 1 MiB goes to a temp key in its final key's slot and is
    renamed into place without the temp key's expiry."""
    location = RedisLocation(redis_cluster.url, prefix=redis_prefix)
    raw = _cluster_client(redis_cluster)
    value = bytes(range(256)) * (3 * MIB // 256)
    assert location.write("a/big", io.BytesIO(value))
    assert location.get("a/big") == value
    assert raw.ttl(f"{{{redis_prefix}/a/big}}") == -1
    temp = location._temp_name(f"{{{redis_prefix}/a/big}}")
    assert key_slot(temp.encode()) == key_slot(f"{{{redis_prefix}/a/big}}".encode())
    # a key whose tag would be empty ('{}...': Redis hashes the whole name) still works
    whole = RedisLocation(redis_cluster.url)
    odd = f"}}{redis_prefix}"
    assert whole.write(odd, io.BytesIO(value))
    assert whole.get(odd) == value
    assert whole.delete(odd)
    temp = whole._temp_name(f"{{{odd}}}")
    assert key_slot(temp.encode()) == key_slot(f"{{{odd}}}".encode())
    with pytest.raises(OSError, match="disk gone"):
        location.write("k", _Failing(3 * MIB))
    assert location.get("k") is None
    for opened in (whole, location):
        opened.close()
    raw.close()


def test_cluster_lock_lost_after_a_stall(redis_cluster, redis_prefix):
    """The lock's Lua scripts run on the lock key's slot: renewal, loss, release."""
    location = RedisLocation(redis_cluster.url, prefix=redis_prefix, lock_ttl=0.3)
    with location.lock():
        time.sleep(1.0)  # renewed by its thread
        with pytest.raises(StoreLockedError, match="held by another writer"):
            location.lock()
    held = location.lock()
    raw = _cluster_client(redis_cluster)
    name = f"{{{redis_prefix}/.simrecorder-lock-writer}}"
    raw.set(name, b"another-writer", px=5000)
    time.sleep(0.5)
    with pytest.raises(StoreLockedError, match="lost the lock"):
        held.check()
    held.release()
    assert raw.get(name) == b"another-writer"
    raw.delete(name)
    location.close()
    raw.close()


def test_cluster_down_raises_connection_error():
    with pytest.raises(StoreConnectionError, match=r"127\.0\.0\.1"):
        RedisLocation(f"redis+cluster://127.0.0.1:{free_port()}/p")


# -- reading long values as streams --------------------------------------------------------


class _Pattern(io.RawIOBase):
    """``size`` bytes made on the fly (piece ``i`` of 1 MiB is byte ``i % 251``
    repeated, then a counter), never held whole; ``digest`` hashes what was read."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size
        self.index = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MIB:
            size = MIB
        size = min(size, self.left)
        piece = (bytes([self.index % 251]) * size)[: max(0, size - 8)]
        piece += self.index.to_bytes(8, "big")[: size - len(piece)]
        self.index += 1
        self.left -= size
        self.digest.update(piece)
        return piece


class _CountingConnection(redis.Connection):
    """A real connection that counts its round trips (packed sends)."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def test_large_value_is_read_as_a_stream_in_bounded_memory(redis_server, redis_prefix):
    size = 64 * MIB
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    source = _Pattern(size)
    assert location.write("big", source)
    tracemalloc.start()
    try:
        digest = hashlib.sha256()
        read = 0
        with location.read("big") as stream:
            assert stream is not None
            while chunk := stream.read(256 * 1024):
                digest.update(chunk)
                read += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == size and digest.digest() == source.digest.digest()
    assert peak < 8 * MIB, f"reading 64 MiB held {peak:,} bytes"
    with location.read("big") as stream:  # reads of any size and seeks, like a file
        assert stream.read(10) == bytes(10)
        assert len(stream.read(3 * MIB)) == 3 * MIB
        assert stream.read(0) == b""
        assert stream.seekable() and stream.tell() == 3 * MIB + 10
        assert stream.seek(-8, io.SEEK_END) == size - 8
        assert stream.read() == (size // MIB - 1).to_bytes(8, "big")
        assert stream.read(5) == b""
        assert stream.seek(MIB - 4) == MIB - 4
        assert stream.read(12) == bytes(4) + bytes([1]) * 8
        assert stream.seek(-2, io.SEEK_CUR) == MIB + 6 and stream.read(2) == bytes([1, 1])
        buffered = io.BufferedReader(stream)  # a raw stream: readinto
        buffered.seek(0)
        assert buffered.read(3) == bytes(3)
    assert location.delete("big")
    for size in (MIB, MIB + 1, 2 * MIB, 2 * MIB + 1):  # the piece boundaries
        value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert location.put("edge", value)
        with location.read("edge") as stream:
            assert stream.read() == value
    location.close()


def test_read_is_one_round_trip_for_small_values(redis_server, redis_prefix):
    pool = redis.ConnectionPool(port=redis_server.port, connection_class=_CountingConnection)
    client = redis.Redis(connection_pool=pool)
    location = RedisLocation(client, prefix=redis_prefix)
    location.put("small", b"x" * 1024)
    location.put("empty", b"")
    location.put("piece", b"p" * MIB)  # exactly one piece
    with location.read("absent") as stream:  # the script is loaded by now
        assert stream is None
    for key, value in [("small", b"x" * 1024), ("empty", b""), ("piece", b"p" * MIB),
                       ("absent", None)]:  # fmt: skip
        before = _CountingConnection.sends
        with location.read(key) as stream:
            assert (None if stream is None else stream.read()) == value
        assert location.get(key) == value
        assert _CountingConnection.sends - before == 2, key  # read: 1, get: 1
    pool.disconnect()


def test_value_replaced_while_streamed_raises_never_mixes(redis_server, redis_prefix):
    """Replaced by a streamed write (RENAME), by a small SET, or deleted after the
    first piece: the stream raises ValueChangedError instead of going on with the
    other value's bytes; a new read gets the new value whole."""
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    old = b"a" * (4 * MIB)
    replacements = [lambda: location.write("k", io.BytesIO(b"b" * (4 * MIB))),
                    lambda: location.put("k", b"small"),
                    lambda: location.delete("k")]  # fmt: skip
    for replace in replacements:
        location.put("k", old)
        with location.read("k") as stream:
            assert stream.read(MIB) == old[:MIB]
            replace()
            with pytest.raises(ValueChangedError, match=rf"{redis_prefix}.*'k' was replaced"):
                stream.read()
    assert issubclass(ValueChangedError, SimRecorderError)
    assert issubclass(ValueChangedError, OSError)
    location.put("k", old)
    with location.read("k") as stream:
        assert stream.read() == old
    location.close()


def test_stream_left_early_gives_its_connection_back_unwatched(redis_server, redis_prefix):
    """A stream closed before its end sends UNWATCH before its connection goes back
    to the pool: a later MULTI/EXEC on that connection is not aborted by the key."""
    client = redis.Redis(port=redis_server.port, max_connections=1)
    location = RedisLocation(client, prefix=redis_prefix)
    for _ in range(2):
        location.put("big", b"a" * (3 * MIB))
        with location.read("big") as stream:
            assert stream.read(10) == b"aaaaaaaaaa"
        assert location.put("big", b"b" * (3 * MIB))  # modifies the key it watched
        assert location.write_many({"x": b"1", "y": b"2"}) == {"x": True, "y": True}
    assert location.get("x") == b"1"
    client.close()


def test_concurrent_writer_never_mixes_values(redis_server, redis_prefix):
    """A writer replaces a 3 MiB value again and again while slow readers read it:
    every read is one value whole, or ValueChangedError."""
    location = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
    size = 3 * MIB
    location.put("k", b"@" * size)
    stop = threading.Event()

    def write() -> None:
        writer = RedisLocation(f"{redis_server.url}/0", prefix=redis_prefix)
        letter = 0
        while not stop.is_set():
            writer.write("k", io.BytesIO(bytes([65 + letter % 26]) * size))
            letter += 1
            time.sleep(0.05)
        writer.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    whole = changed = 0
    deadline = time.monotonic() + 20
    try:
        while (whole < 3 or changed < 3) and time.monotonic() < deadline:
            seen = set()
            length = 0
            try:
                with location.read("k") as stream:
                    while chunk := stream.read(256 * 1024):
                        seen.update(set(chunk))
                        length += len(chunk)
                        time.sleep(0.002 if whole < 3 else 0.02)  # a slow reader
            except ValueChangedError:
                changed += 1
                assert len(seen) == 1, f"a mix of {sorted(seen)} before the error"
                continue
            assert len(seen) == 1 and length == size, f"a mix of {sorted(seen)}"
            whole += 1
    finally:
        stop.set()
        thread.join()
    assert whole >= 3 and changed >= 3, (whole, changed)
    location.close()


def test_cluster_large_value_streamed_and_change_detected(redis_cluster, redis_prefix):
    location = RedisLocation(redis_cluster.url, prefix=redis_prefix)
    value = bytes(range(256)) * (3 * MIB // 256)
    for key in ("a", "b/c", "d"):  # keys on several nodes
        assert location.write(key, io.BytesIO(value))
        with location.read(key) as stream:
            assert stream.read() == value
        with location.read(key) as stream:
            assert stream.read(MIB) == value[:MIB]
            location.put(key, b"new")
            with pytest.raises(ValueChangedError):
                stream.read()
        with location.read(key) as stream:
            assert stream.read() == b"new"
        with location.read(key + "-absent") as stream:
            assert stream is None
    location.close()
