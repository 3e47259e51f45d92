"""Redis under faults (issue 12): error replies, a full server, a restart that lost the
data, nested prefixes, fork, a cluster node lost and back, a writer killed mid-flush.

Every test starts real servers; nothing is mocked. The rule checked throughout: every
block handed to the store is stored exactly once, or the store raises (and keeps it).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from simrecorder import (
    KeyConflictError,
    RedisClusterDataStore,
    RedisClusterServer,
    RedisDataStore,
    RedisServer,
    StoreConnectionError,
)
from simrecorder._schema import infer_spec
from simrecorder.datastores._redis import RedisDataLostError
from simrecorder.datastores._redis_server import free_port
from simrecorder.errors import StoreFullError

MIB = 1 << 20
SCALAR = infer_spec(0.0)
ROW_MIB = infer_spec(np.zeros(MIB // 8))  # one row of 1 MiB
NO_PERSISTENCE = ["--appendonly", "no", "--save", ""]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """A server without persistence whose maxmemory the tests change."""
    server = RedisServer(
        tmp_path_factory.mktemp("redis-faults"), redis_port="random",
        extra_args=[*NO_PERSISTENCE, "--maxmemory-policy", "noeviction"],
    ).start()  # fmt: skip
    yield server
    server.stop(save=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-node cluster of this module's own: the tests kill and starve its nodes."""
    cluster = RedisClusterServer(
        tmp_path_factory.mktemp("redis-faults-cluster"), nodes=3, node_timeout=1.0
    )
    cluster.start()
    yield cluster
    cluster.stop()


@contextlib.contextmanager
def maxmemory(port: int, headroom: int):
    """Let the server at ``port`` take only ``headroom`` more bytes, then lift the limit."""
    client = redis.Redis(port=port)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + headroom)
    try:
        yield client
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def rows(first: int, count: int) -> np.ndarray:
    return np.arange(first, first + count, dtype=np.float64)


def big_row(i: int) -> np.ndarray:
    return np.full((1, MIB // 8), float(i))


# -- D1 / item 7: error replies on one server ------------------------------------------------
def test_full_server_keeps_the_whole_flush_and_raises_until_it_is_stored(
    plain_server, redis_prefix
):
    store = RedisDataStore("127.0.0.1", plain_server.port, prefix=redis_prefix)
    reader = RedisDataStore("127.0.0.1", plain_server.port, prefix=redis_prefix, mode="r")
    store.append_block("a", SCALAR, rows(0, 10))
    store.flush()
    with maxmemory(plain_server.port, headroom=MIB):
        store.append_block("a", SCALAR, rows(10, 10))
        for i in range(6):
            store.append_block("b", ROW_MIB, big_row(i))
        for _ in range(3):  # every flush raises until the queue is stored
            with pytest.raises(StoreFullError, match=f"127.0.0.1:{plain_server.port}"):
                store.flush()
        # the flush is one transaction: "a" got none of its new rows either
        np.testing.assert_array_equal(np.asarray(reader.get_all("a")), rows(0, 10))
        assert "b" not in reader
    store.flush()
    np.testing.assert_array_equal(np.asarray(reader.get_all("a")), rows(0, 20))
    np.testing.assert_array_equal(np.asarray(reader.get_all("b"))[:, 0], np.arange(6.0))
    assert reader.keys() == ["a", "b"]
    store.close()
    reader.close()


# -- D8: the queue over its limit while the server cannot take it ----------------------------
def test_append_block_over_the_queue_limit_takes_nothing(plain_server, redis_prefix):
    store = RedisDataStore("127.0.0.1", plain_server.port, prefix=redis_prefix)
    store.max_queued_bytes = 2 * MIB
    blocks = [big_row(i) for i in range(8)]
    taken = 0
    with maxmemory(plain_server.port, headroom=MIB // 2):
        with pytest.raises(StoreFullError):
            for block in blocks:
                store.append_block("big", ROW_MIB, block)
                taken += 1
        assert taken < len(blocks)
        with pytest.raises(StoreFullError):  # the blocks taken are still held
            store.flush()
    store.flush()
    for block in blocks[taken:]:  # the caller offers the refused blocks again
        store.append_block("big", ROW_MIB, block)
    store.flush()
    np.testing.assert_array_equal(np.asarray(store.get_all("big"))[:, 0], np.arange(8.0))
    store.close()


def test_a_kept_block_does_not_follow_the_callers_array(plain_server, redis_prefix):
    """A large sample is handed over as a view of the caller's array; once a flush
    failed, the store keeps a copy, so the caller may reuse the array."""
    store = RedisDataStore("127.0.0.1", plain_server.port, prefix=redis_prefix)
    sample = big_row(1)
    with maxmemory(plain_server.port, headroom=MIB // 2):
        store.append_block("big", ROW_MIB, sample)
        with pytest.raises(StoreFullError):
            store.flush()
        sample[:] = -1.0  # the simulation's next step reuses its buffer
    store.flush()
    np.testing.assert_array_equal(np.asarray(store.get_all("big")), big_row(1))
    store.close()


def test_schema_refusal_hands_the_blocks_back(redis_server, redis_prefix):
    """Another writer stored the series as something else: the store drops nothing
    silently, flush() raises until surrender() takes the blocks back, the other series
    are stored."""
    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    other = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix, mode="a")
    store.append_block("x", SCALAR, rows(0, 5))
    store.append_block("y", SCALAR, rows(0, 5))
    other.set("x", "a value")  # races the queued block
    for _ in range(2):
        with pytest.raises(KeyConflictError, match="'x'"):
            store.flush()
    (key, _spec, block), *more = store.surrender()
    assert key == "x" and not more
    np.testing.assert_array_equal(block, rows(0, 5))
    store.flush()  # nothing else is held
    np.testing.assert_array_equal(np.asarray(store.get_all("y")), rows(0, 5))
    assert store.get("x") == "a value"
    store.close()
    other.close()


def test_surrender_hands_back_the_queue_once(tmp_path):
    """A server that stays away: surrender() returns every kept block, in order, and
    the store holds nothing afterwards; new blocks are stored after it is back."""
    port = free_port()
    server = RedisServer(tmp_path / "d", redis_port=port, extra_args=NO_PERSISTENCE).start()
    store = RedisDataStore("127.0.0.1", port, prefix="gone", socket_timeout=2)
    store.append_block("x", SCALAR, rows(0, 5))
    store.flush()
    server.kill()
    store.append_block("x", SCALAR, rows(5, 5))
    store.append_block("y", SCALAR, rows(0, 3))
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}"):
        store.flush()
    blocks = store.surrender()
    assert [key for key, _, _ in blocks] == ["x", "y"]
    np.testing.assert_array_equal(blocks[0][2], rows(5, 5))
    assert store.surrender() == []
    server = RedisServer(tmp_path / "d", redis_port=port, extra_args=NO_PERSISTENCE).start()
    try:
        store.append_block("z", SCALAR, rows(0, 2))
        with pytest.raises(RedisDataLostError, match="'x'"):
            store.flush()  # the server came back empty
        np.testing.assert_array_equal(np.asarray(store.get_all("z")), rows(0, 2))
        assert "y" not in store
        store.close()
    finally:
        server.kill()


# -- D9: nested prefixes ---------------------------------------------------------------------
def test_nested_prefixes_do_not_share_keys(redis_server, redis_prefix):
    a = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    b = RedisDataStore("127.0.0.1", redis_server.port, prefix=f"{redis_prefix}/b")
    a.append("b/x", 1.0)
    b.append("x", 10.0)
    a.flush()
    b.flush()
    np.testing.assert_array_equal(np.asarray(a.get_all("b/x")), [1.0])
    np.testing.assert_array_equal(np.asarray(b.get_all("x")), [10.0])
    assert a.keys() == ["b/x"] and b.keys() == ["x"]
    a.close()
    b.close()


def test_format_1_stores_stay_readable_and_appendable(redis_server, redis_prefix):
    client = redis.Redis(port=redis_server.port)
    tag = f"sr:{{{redis_prefix}/x}}"
    client.hset(f"sr:{{{redis_prefix}}}:attrs", "simrecorder_format", "1")
    client.sadd(f"sr:{{{redis_prefix}}}:index", "x")
    client.set(f"{tag}:p:old:1:0", rows(0, 3).tobytes())
    client.hset(f"{tag}:m", mapping={"node": "series", "kind": "dense", "dtype": "<f8",
                                     "shape": "[]", "count": 3, "pieces": 1})  # fmt: skip
    client.rpush(f"{tag}:b", f"{tag}:p:old:1:0")
    client.rpush(f"{tag}:e", "3:1")
    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix, mode="a")
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), rows(0, 3))
    store.append_block("x", SCALAR, rows(3, 2))
    store.flush()
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), rows(0, 5))
    assert store.keys() == ["x"] and store.attrs["simrecorder_format"] == 1
    store.close()
    client.close()


# -- D10: fork ---------------------------------------------------------------------------------
def test_forked_child_leaves_the_parents_queue_alone(redis_server, redis_prefix):
    port = redis_server.port
    store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix)
    store.append_block("a", SCALAR, rows(0, 10))
    store.flush()
    store.append_block("a", SCALAR, rows(10, 10))  # queued: it belongs to the parent
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 0
        try:
            store.append_block("from_child", SCALAR, rows(100, 1))
            store.close()  # what an exit hook does: must not send the parent's block
            own = RedisDataStore("127.0.0.1", port, prefix=f"{redis_prefix}-child")
            own.append_block("c", SCALAR, rows(7, 1))
            own.close()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    reader = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="r")
    assert len(reader.get_all("a")) == 10  # the child did not send the parent's block
    np.testing.assert_array_equal(np.asarray(reader.get_all("from_child")), [100.0])
    store.append_block("a", SCALAR, rows(20, 10))
    store.flush()
    np.testing.assert_array_equal(np.asarray(reader.get_all("a")), rows(0, 30))
    child = RedisDataStore("127.0.0.1", port, prefix=f"{redis_prefix}-child", mode="r")
    np.testing.assert_array_equal(np.asarray(child.get_all("c")), [7.0])
    for s in (store, reader, child):
        s.close()


# -- D12: restarted without persistence ------------------------------------------------------
def test_restart_without_persistence_is_reported_and_new_data_is_listed(tmp_path):
    port = free_port()
    server = RedisServer(tmp_path / "d", redis_port=port, extra_args=NO_PERSISTENCE).start()
    try:
        store = RedisDataStore("127.0.0.1", port, prefix="run", socket_timeout=5)
        store.update_attrs({"run": "r1"})
        store.set("cfg", {"a": 1})
        for i in range(3):
            store.append_block("x", SCALAR, rows(100 * i, 100))
            store.append_block("v", SCALAR, rows(100 * i, 100))
        store.flush()
        server.kill()
        server = RedisServer(tmp_path / "d", redis_port=port, extra_args=NO_PERSISTENCE).start()
        for i in range(3, 6):
            store.append_block("x", SCALAR, rows(100 * i, 100))
            store.append_block("v", SCALAR, rows(100 * i, 100))
        with pytest.raises(RedisDataLostError, match="'x'") as info:
            store.flush()
        assert set(info.value.keys) == {"cfg", "v", "x"}
        store.flush()  # said once; the new blocks are stored
        assert store.keys() == ["v", "x"]
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), rows(300, 300))
        np.testing.assert_array_equal(np.asarray(store.get_all("v")), rows(300, 300))
        assert store.attrs["simrecorder_format"] == 2 and store.attrs["run"] == "r1"
        store.append_block("x", SCALAR, rows(600, 1))
        store.close()
        again = RedisDataStore("127.0.0.1", port, prefix="run")
        np.testing.assert_array_equal(np.asarray(again.get_all("x")), rows(300, 301))
        again.close()
    finally:
        server.kill()


# -- item 7: a writer killed in the middle of a flush ----------------------------------------
KILLED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from simrecorder import RedisDataStore
    from simrecorder._schema import infer_spec
    store = RedisDataStore("127.0.0.1", int(sys.argv[1]), prefix=sys.argv[2])
    spec = infer_spec(np.zeros(1 << 14))
    step = 0
    while True:
        for key in ("a", "b", "c", "d"):
            store.append_block(key, spec, np.full((16, 1 << 14), float(step)))
        store.flush()
        step += 1
        print(step, flush=True)
    """
)


def test_writer_killed_mid_flush_leaves_series_aligned(redis_server, redis_prefix):
    rng = random.Random(5)
    for kill in range(6):
        prefix = f"{redis_prefix}-{kill}"
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(redis_server.port), prefix],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(rng.randint(1, 4)):
            child.stdout.readline()
        time.sleep(rng.random() * 0.03)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        store = RedisDataStore("127.0.0.1", redis_server.port, prefix=prefix, mode="r")
        lengths = {key: len(store.get_all(key)) for key in ("a", "b", "c", "d")}
        assert len(set(lengths.values())) == 1, f"kill {kill}: series not aligned: {lengths}"
        store.close()


# -- cluster: one node full, one node lost and back --------------------------------------------
def spread_keys(cluster, prefix: str, per_node: int = 3) -> dict[int, list[str]]:
    """Series keys, ``per_node`` of them on each node (by port)."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    found: dict[int, list[str]] = {port: [] for port in cluster.ports}
    for i in range(1000):
        key = f"s{i}"
        port = client.get_node_from_key(f"sr2:{{{len(prefix)}:{prefix}/{key}}}:m").port
        if len(found[port]) < per_node:
            found[port].append(key)
        if all(len(keys) == per_node for keys in found.values()):
            break
    client.close()
    return found


def test_cluster_node_full_keeps_its_blocks_and_delivers_the_others(cluster, redis_prefix):
    by_node = spread_keys(cluster, redis_prefix)
    full_port = cluster.ports[1]
    keys = sorted(k for ks in by_node.values() for k in ks)
    store = RedisClusterDataStore("127.0.0.1", cluster.ports[0], prefix=redis_prefix)
    reader = RedisClusterDataStore("127.0.0.1", cluster.ports[0], prefix=redis_prefix, mode="r")
    for key in keys:
        store.append_block(key, SCALAR, rows(0, 10))
    store.flush()
    with maxmemory(full_port, headroom=0):
        for key in keys:
            store.append_block(key, SCALAR, rows(10, 10))
        for _ in range(2):
            with pytest.raises(StoreFullError):
                store.flush()
        for port, node_keys in by_node.items():
            for key in node_keys:
                stored = len(reader.get_all(key))
                assert stored == (10 if port == full_port else 20), (key, port, stored)
    store.flush()
    for key in keys:
        np.testing.assert_array_equal(np.asarray(reader.get_all(key)), rows(0, 20))
    store.close()
    reader.close()


def test_cluster_master_killed_and_back_loses_nothing(cluster, redis_prefix):
    by_node = spread_keys(cluster, redis_prefix)
    keys = sorted(k for ks in by_node.values() for k in ks)
    store = RedisClusterDataStore(
        "127.0.0.1", cluster.ports[0], prefix=redis_prefix, socket_timeout=2,
        socket_connect_timeout=1,
    )  # fmt: skip
    step = 0

    def one_round() -> None:
        nonlocal step
        for key in keys:
            store.append_block(key, SCALAR, rows(50 * step, 50))
        step += 1

    for _ in range(3):
        one_round()
        store.flush()
    cluster.kill_node(2)  # for longer than the node timeout: the cluster goes down too
    try:
        for _ in range(4):
            one_round()
            with pytest.raises(StoreConnectionError, match=r"127\.0\.0\.1:"):
                store.flush()
            time.sleep(0.5)
    finally:
        cluster.restart_node(2, wait=False)
    deadline = time.monotonic() + 20
    while True:  # CLUSTERDOWN until the cluster has healed: the blocks stay queued
        try:
            store.flush()
            break
        except StoreConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for _ in range(2):
        one_round()
        store.flush()
    for key in keys:
        np.testing.assert_array_equal(np.asarray(store.get_all(key)), rows(0, 50 * step))
    store.close()
