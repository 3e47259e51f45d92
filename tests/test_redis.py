"""RedisDataStore and RedisClusterDataStore: the contract suite on real servers, plus
what only Redis does."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from simrecorder import (
    AuthenticationFailedError,
    RedisClusterDataStore,
    RedisDataStore,
    StoreConnectionError,
    open_datastore,
)
from simrecorder.datastores._redis import RedisView
from simrecorder.testing.datastore import DataStoreTests


def read_native(client, prefix, key):
    """Read a dense series with plain redis-py + numpy (no simrecorder)."""
    meta = client.hgetall(f"sr:{{{prefix}/{key}}}:m")
    shape = tuple(int(n) for n in meta[b"shape"].decode().strip("[]").split(",") if n.strip())
    data = b"".join(client.lrange(f"sr:{{{prefix}/{key}}}:b", 0, -1))
    return np.frombuffer(data, dtype=meta[b"dtype"].decode()).reshape(-1, *shape)


class TestRedisDataStore(DataStoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server, redis_prefix):
        self.server, self.prefix = redis_server, redis_prefix

    def make_store(self, tmp_path):
        return RedisDataStore("127.0.0.1", self.server.port, prefix=self.prefix)

    def reopen_store(self, store):
        store.close()
        return RedisDataStore("127.0.0.1", self.server.port, prefix=self.prefix)

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
        return RedisClusterDataStore("127.0.0.1", self.cluster.ports[1], prefix=self.prefix)

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
    client = redis.Redis(port=redis_server.port)
    assert client.llen(f"sr:{{{redis_prefix}/big}}:b") == 16
    np.testing.assert_array_equal(np.asarray(store.get_all("big")), [big, big + 1])
    np.testing.assert_array_equal(store.get_all("big")[1, 10:20], big[10:20] + 1)
    assert store.get("value") == {"blob": b"x" * 5000}
    assert not client.keys(f"sr:{{{redis_prefix}/big}}:t:*")  # staging lists are gone
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
    with pytest.raises(StoreConnectionError, match="127.0.0.1:1") as info:
        RedisDataStore("127.0.0.1", 1)
    assert isinstance(info.value, ConnectionError)
    assert "redis-server" in str(info.value)
