"""RedisDataStore and RedisClusterDataStore: the contract suite on real servers, plus
what only Redis does."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

import numpy as np
import pytest
import redis

from simrecorder import (
    AuthenticationFailedError,
    RedisClusterDataStore,
    RedisDataStore,
    StoreConnectionError,
    delete_redis_run,
    open_datastore,
)
from simrecorder.datastores._redis import RedisView
from simrecorder.errors import InvalidArgumentError
from simrecorder.testing.datastore import DataStoreTests


def read_native(client, prefix, key):
    """Read a dense series with plain redis-py + numpy (no simrecorder)."""
    tag = f"sr2:{{{len(prefix)}:{prefix}/{key}}}"
    meta = client.hgetall(f"{tag}:m")
    shape = tuple(int(n) for n in meta[b"shape"].decode().strip("[]").split(",") if n.strip())
    names = client.lrange(f"{tag}:b", 0, -1)
    data = b"".join(client.mget(names))
    return np.frombuffer(data, dtype=meta[b"dtype"].decode()).reshape(-1, *shape)


class TestRedisDataStore(DataStoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server, redis_prefix):
        self.server, self.prefix = redis_server, redis_prefix

    def make_store(self, tmp_path):
        return RedisDataStore("127.0.0.1", self.server.port, prefix=self.prefix)

    def reopen_store(self, store):
        store.close()
        return RedisDataStore("127.0.0.1", self.server.port, prefix=self.prefix, mode="a")

    def read_native(self, store, key):
        return read_native(redis.Redis(port=self.server.port), self.prefix, key)


class TestRedisClusterDataStore(DataStoreTests):
    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster, redis_prefix):
        self.cluster, self.prefix = redis_cluster, redis_prefix

    def make_store(self, tmp_path):
        return RedisClusterDataStore("127.0.0.1", self.cluster.ports[0], prefix=self.prefix)

    def reopen_store(self, store):
        store.close()
        return RedisClusterDataStore(
            "127.0.0.1", self.cluster.ports[1], prefix=self.prefix, mode="a"
        )

    def read_native(self, store, key):
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=self.cluster.ports[0])
        return read_native(client, self.prefix, key)


def test_blocks_are_split_into_pieces(redis_server, redis_prefix):
    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    store.max_piece_bytes = 1000  # as if Redis' 512 MB limit were 1,000 bytes
    big = np.arange(1000.0)  # 8,000 bytes: 8 pieces
    store.append("big", big)
    store.append("big", big + 1)
    store.set("value", {"blob": b"x" * 5000})
    store.flush()
    client = redis.Redis(port=redis_server.port)
    tag = f"sr2:{{{len(redis_prefix)}:{redis_prefix}/big}}"
    assert client.llen(f"{tag}:b") == 16
    np.testing.assert_array_equal(np.asarray(store.get_all("big")), [big, big + 1])
    np.testing.assert_array_equal(store.get_all("big")[1, 10:20], big[10:20] + 1)
    assert store.get("value") == {"blob": b"x" * 5000}
    assert len(client.keys(f"{tag}:p:*")) == 16
    store.close()


def test_lazy_view_reads_only_the_needed_blocks(redis_server, redis_prefix):
    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    for i in range(10):
        store.append_block("x", store.series_spec("x") or _spec(), np.full((100, 2), i))
    view = store.get_all("x")
    assert isinstance(view, RedisView) and len(view) == 1000
    np.testing.assert_array_equal(view[250:260, 0], np.full(10, 2))
    np.testing.assert_array_equal(view[-1], [9, 9])
    np.testing.assert_array_equal(view[95:105:5, 1], [0, 1])
    store.close()


def _spec():
    from simrecorder._schema import infer_spec

    return infer_spec(np.zeros(2, dtype=np.int64))


def test_prefixes_keep_runs_apart(redis_server, redis_prefix):
    a = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix + "a")
    b = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix + "b")
    a.append("x", 1.0)
    assert b.keys() == [] and a.keys() == ["x"]
    a.close()
    b.close()


def test_url_round_trip(redis_server, redis_prefix):
    store = open_datastore(f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}")
    assert isinstance(store, RedisDataStore) and store.prefix == redis_prefix
    assert str(store) == f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    store.close()


def test_unreachable_server_names_host_and_port():
    with pytest.raises(StoreConnectionError, match=r"127\.0\.0\.1:1\b") as info:
        RedisDataStore("127.0.0.1", 1)
    assert isinstance(info.value, ConnectionError)
    assert "redis-server" in str(info.value)


# -- a bad Redis port (issue 13, item 2): a clear, named error within seconds ---------------
@pytest.mark.parametrize("port", [99999, 0, -1, "abc", 1.5])
def test_a_port_out_of_range_is_an_invalid_argument(port):
    with pytest.raises(InvalidArgumentError, match=re.escape(repr(port))) as info:
        RedisDataStore("127.0.0.1", port)
    assert isinstance(info.value, ValueError)
    if port != 1.5:
        with pytest.raises(InvalidArgumentError, match="port must be an integer from 1 to 65535"):
            open_datastore(f"redis://127.0.0.1:{port}/0?prefix=p")


@contextlib.contextmanager
def _listener(answer):
    """A real TCP server on a free loopback port that accepts connections and calls
    ``answer(connection)`` for each one (a service that is not Redis)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop, connections = threading.Event(), []

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connections.append(connection)
            answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in connections:
            connection.close()
        server.close()


def _http(connection):
    connection.recv(1024)
    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_port_where_another_service_listens():
    with _listener(_http) as port:
        start = time.monotonic()
        with pytest.raises(StoreConnectionError, match="does not answer like a Redis server"):
            open_datastore(f"redis://127.0.0.1:{port}/0?prefix=p")
        assert time.monotonic() - start < 5
        with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}.*port right"):
            RedisDataStore("127.0.0.1", port)


def test_a_port_where_nothing_answers_fails_within_the_connect_timeout():
    # the socket timeout (60 s by default, here 30 s) applies once the store is open;
    # opening waits at most the connect timeout per try (two tries)
    with _listener(lambda connection: None) as port:
        start = time.monotonic()
        with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}.*within 1 s"):
            RedisDataStore("127.0.0.1", port, socket_connect_timeout=1, socket_timeout=30)
        assert time.monotonic() - start < 5


def test_a_port_where_nothing_listens_fails_at_once():
    from simrecorder.datastores._redis_server import free_port

    port = free_port()
    start = time.monotonic()
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}.*redis-server"):
        RedisDataStore("127.0.0.1", port)
    assert time.monotonic() - start < 2


# -- SimRecorder's Redis usage, unmodified (default port 6379, default prefix) --------------
def test_simrecorder_redis_usage(tmp_path):
    from simrecorder import Recorder, RedisServer

    arrays = np.random.rand(10, 10, 5, 2, 6)
    data_dir = str(tmp_path / "redis-data")
    with RedisServer(data_directory=data_dir):
        recorder = Recorder(RedisDataStore(server_host="localhost", data_directory=data_dir))
        for i in range(10):
            recorder.record("train/what", arrays[i])
        recorder.set("train/value", arrays[1])
        recorder.set("train/value", arrays[0])
        recorder.close()
    with RedisServer(data_directory=data_dir):  # a new server process on the same directory
        recorder = Recorder(RedisDataStore(server_host="localhost", data_directory=data_dir))
        assert (np.array(recorder.get_all("train/what")) == arrays).all()
        assert (np.array(recorder.get("train/value")) == arrays[0]).all()
        recorder.close()


# -- failures ---------------------------------------------------------------------------------
def test_server_killed_mid_run_then_back(tmp_path):
    from simrecorder import Recorder, RedisServer, StoreWriteError
    from simrecorder.datastores._redis_server import free_port

    port = free_port()
    server = RedisServer(tmp_path / "data", redis_port=port).start()
    store = RedisDataStore("127.0.0.1", port, prefix="run", socket_timeout=2)
    rec = Recorder(store, max_records=100, max_seconds=None)
    for i in range(250):
        rec.record("x", float(i))
    rec.flush()
    server.kill()  # SIGKILL: the AOF holds what was written
    for i in range(250, 400):
        try:
            rec.record("x", float(i))
        except StoreWriteError as exc:
            assert f"127.0.0.1:{port}" in str(exc) and "redis-server" in str(exc)
    with pytest.raises(StoreWriteError, match=f"127.0.0.1:{port}"):
        rec.flush()
    server = RedisServer(tmp_path / "data", redis_port=port).start()
    rec.flush()  # the kept blocks go out now, each exactly once
    np.testing.assert_array_equal(np.asarray(rec.get_all("x")), np.arange(400.0))
    rec.close()
    server.stop()


def test_password_is_required_and_checked(tmp_path):
    from simrecorder import RedisServer

    with RedisServer(tmp_path / "auth", redis_port="random", password="s3cret") as server:
        with pytest.raises(AuthenticationFailedError, match="password"):
            RedisDataStore("127.0.0.1", server.port)
        with pytest.raises(AuthenticationFailedError) as info:
            RedisDataStore("127.0.0.1", server.port, password="wrong")
        assert isinstance(info.value, PermissionError)
        store = RedisDataStore("127.0.0.1", server.port, password="s3cret")
        store.append("x", 1.0)
        assert len(store.get_all("x")) == 1
        store.close()


def test_server_errors_are_clear(tmp_path, redis_server):
    from simrecorder import RedisServer, ServerStartError

    with pytest.raises(ServerStartError, match="in use"):
        RedisServer(tmp_path / "x", redis_port=redis_server.port).start()
    with pytest.raises(ServerStartError, match="not installed"):
        RedisServer(tmp_path / "y", redis_port="random", executable="no-such-redis").start()


def test_second_server_on_a_directory_serves_the_earlier_data(tmp_path):
    from simrecorder import RedisServer

    with RedisServer(tmp_path / "d", redis_port="random") as server:
        store = RedisDataStore("127.0.0.1", server.port, prefix="p")
        store.set("v", [1, 2, 3])
        store.close()
    with RedisServer(tmp_path / "d", redis_port="random") as server:
        assert server.port is not None
        store = RedisDataStore("127.0.0.1", server.port, prefix="p")
        assert store.get("v") == [1, 2, 3]
        store.close()


def test_config_file_and_acl_user(tmp_path):
    from simrecorder import RedisServer

    config = tmp_path / "redis.conf"
    config.write_text("hz 17\n")
    with RedisServer(tmp_path / "c", redis_port="random", config_file_path=config) as server:
        client = redis.Redis(port=server.port)
        assert client.config_get("hz") == {"hz": "17"}
        client.acl_setuser("alice", enabled=True, passwords=["+wonderland"], keys=["*"],
                           commands=["+@all"])  # fmt: skip
        store = RedisDataStore("127.0.0.1", server.port, username="alice", password="wonderland")
        store.append("x", 1.0)
        assert store.url.startswith("redis://alice@127.0.0.1:")
        store.close()
        with pytest.raises(AuthenticationFailedError):
            RedisDataStore("127.0.0.1", server.port, username="alice", password="nope")
        client.close()


def test_series_attrs_are_one_json_hash_in_the_series_slot(redis_cluster, redis_prefix):
    """A described series' attributes: one hash beside the series (same hash tag, so
    the same cluster slot), JSON values, never listed as a key."""
    port = redis_cluster.ports[0]
    store = RedisClusterDataStore("127.0.0.1", port, prefix=redis_prefix)
    store.append("n/v", np.zeros(3))
    store.set_series_attrs("n/v", {"units": "mV", "simrecorder_dims": ["neuron"]})
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=port)
    tag = f"sr2:{{{len(redis_prefix)}:{redis_prefix}/n/v}}"
    assert client.hgetall(f"{tag}:a") == {b"units": b'"mV"', b"simrecorder_dims": b'["neuron"]'}
    assert client.keyslot(f"{tag}:a") == client.keyslot(f"{tag}:m")
    assert store.keys() == ["n/v"]
    store.close()
    client.close()


def test_series_attrs_go_with_the_run(redis_server, redis_prefix):
    """``delete_redis_run`` and ``mode='w'`` remove the attributes hash too."""
    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    client = redis.Redis(port=redis_server.port)
    name = f"sr2:{{{len(redis_prefix)}:{redis_prefix}/x}}:a"
    for remove in ("mode='w'", "delete_redis_run"):
        with open_datastore(url, mode="a") as store:
            store.append("x", 1.0)
            store.set_series_attrs("x", {"units": "s"})
        assert client.exists(name), remove
        if remove == "delete_redis_run":
            delete_redis_run(url)
            assert not client.exists(name)
        else:
            with open_datastore(url, mode="w") as store:
                assert not client.exists(name)
                store.append("x", 2.0)
                assert store.series_attrs("x") == {}
    client.close()
