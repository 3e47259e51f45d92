"""Redis (issue 13): open modes on a prefix, runs listed and deleted on a server, URLs
parsed by redis-py, one client factory, clear errors. Real servers throughout."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from simrecorder import (
    Recorder,
    RedisClusterDataStore,
    RedisClusterServer,
    RedisDataStore,
    RedisServer,
    StoreConnectionError,
    open_datastore,
)
from simrecorder._redis_client import make_client, parse_redis_url
from simrecorder._schema import infer_spec
from simrecorder.datastores._redis import delete_redis_run, list_redis_runs
from simrecorder.errors import (
    InvalidArgumentError,
    InvalidModeError,
    ReadOnlyError,
    StoreExistsError,
    StoreNotFoundError,
)

SCALAR = infer_spec(0.0)


def all_keys(port: int) -> set[bytes]:
    client = redis.Redis(port=port)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def run_keys(port: int, prefix: str) -> set[bytes]:
    """Every key of the (format 2) run at ``prefix``."""
    tag = f"sr2:{{{len(prefix)}:{prefix}".encode()
    return {k for k in all_keys(port) if k.startswith(tag + b"}") or k.startswith(tag + b"/")}


def make_run(port: int, prefix: str, n: int = 3, **kwargs) -> None:
    store = RedisDataStore("127.0.0.1", port, prefix=prefix, mode="w", **kwargs)
    store.update_attrs({"run": prefix})
    store.append_block("x", SCALAR, np.arange(float(n)))
    store.set("cfg/dt", 0.5)
    store.close()


# -- 1. open modes ----------------------------------------------------------------------------
def test_default_mode_creates_a_new_prefix_and_reads_an_existing_one(redis_server, redis_prefix):
    port = redis_server.port
    first = RedisDataStore("127.0.0.1", port, prefix=redis_prefix)
    assert not first.read_only
    first.append("x", 1.0)
    first.close()
    before = run_keys(port, redis_prefix)
    again = RedisDataStore("127.0.0.1", port, prefix=redis_prefix)  # the script run again
    assert again.read_only
    np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0])
    for write in (
        lambda: again.append("x", 2.0),
        lambda: again.set("y", 1),
        lambda: again.update_attrs({"a": 1}),
    ):
        with pytest.raises(StoreExistsError) as info:
            write()
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and redis_prefix in message
        assert "mode='a'" in message and "mode='w'" in message
    again.close()
    assert run_keys(port, redis_prefix) == before  # nothing was written


def test_default_mode_recorder_run_twice_does_not_append(redis_server, redis_prefix):
    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    rec = Recorder(open_datastore(url))
    for i in range(5):
        rec.record("x", float(i))
    rec.close()
    with pytest.raises(StoreExistsError):
        rec = Recorder(open_datastore(url))
        rec.record("x", 9.0)
        rec.close()
    store = open_datastore(url, mode="r")
    assert len(store.get_all("x")) == 5
    store.close()


def test_mode_r_never_creates_or_writes(redis_server, redis_prefix):
    port = redis_server.port
    with pytest.raises(StoreNotFoundError, match=f"127.0.0.1:{port}") as info:
        RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="r")
    assert isinstance(info.value, FileNotFoundError) and redis_prefix in str(info.value)
    assert run_keys(port, redis_prefix) == set()  # no provenance, no index
    make_run(port, redis_prefix)
    before = run_keys(port, redis_prefix)
    attrs = redis.Redis(port=port).hgetall(f"sr2:{{{len(redis_prefix)}:{redis_prefix}}}:attrs")
    reader = open_datastore(f"redis://127.0.0.1:{port}/0?prefix={redis_prefix}&mode=r")
    assert reader.read_only and reader.keys() == ["cfg/dt", "x"]
    with pytest.raises(ReadOnlyError) as refused:
        reader.append("x", 1.0)
    assert not isinstance(refused.value, StoreExistsError)
    reader.flush()
    reader.close()
    reader.open()  # a reopen stays read-only
    assert reader.read_only
    reader.close()
    assert run_keys(port, redis_prefix) == before
    client = redis.Redis(port=port)
    assert client.hgetall(f"sr2:{{{len(redis_prefix)}:{redis_prefix}}}:attrs") == attrs
    client.close()


def test_mode_a_resumes_with_a_provenance_entry_per_resume(redis_server, redis_prefix):
    port = redis_server.port
    new = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="a")  # created
    new.append("x", 0.0)
    created = new.attrs["created"]
    assert "simrecorder_resumes" not in new.attrs
    new.close()
    for i in (1, 2):
        store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="a")
        store.append("x", float(i))
        store.close()
    store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="r+")
    resumes = store.attrs["simrecorder_resumes"]
    assert len(resumes) == 3 and "command" in resumes[0]
    assert store.attrs["created"] == created  # the first run's provenance stays
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), [0.0, 1.0, 2.0])
    store.close()
    with pytest.raises(StoreNotFoundError):
        RedisDataStore("127.0.0.1", port, prefix=redis_prefix + "-none", mode="r+")


def test_mode_w_minus_and_x_only_create(redis_server, redis_prefix):
    port = redis_server.port
    store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="x")
    store.append("x", 1.0)
    store.close()
    for mode in ("w-", "x"):
        with pytest.raises(StoreExistsError, match=f"127.0.0.1:{port}"):
            RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode=mode)
    with pytest.raises(InvalidModeError, match="'rw'"):
        RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="rw")


def test_mode_w_replaces_only_its_own_run(redis_server, redis_prefix):
    """'exp' is overwritten; 'exp/b' (nested), 'expx' (longer), 'ex?' / 'exa' (a glob
    character in a prefix of the same length) and a foreign key stay."""
    port = redis_server.port
    exp = redis_prefix
    others = [f"{exp}/b", f"{exp}x", f"{exp[:-1]}?"]
    for prefix in [exp, *others]:
        make_run(port, prefix)
    client = redis.Redis(port=port)
    client.set(f"{exp}:foreign", b"keep")
    kept = {prefix: run_keys(port, prefix) for prefix in others}
    store = RedisDataStore("127.0.0.1", port, prefix=exp, mode="w")
    assert store.keys() == [] and "run" not in store.attrs and "x" not in store
    store.append("y", 1.0)
    store.close()
    assert {prefix: run_keys(port, prefix) for prefix in others} == kept
    assert client.get(f"{exp}:foreign") == b"keep"
    reader = RedisDataStore("127.0.0.1", port, prefix=exp, mode="r")
    assert reader.keys() == ["y"]
    reader.close()
    # the glob character is a literal: "ex?" replaced leaves a same-length "exa" alone
    glob, plain = f"{exp[:-1]}?", f"{exp[:-1]}a"
    make_run(port, plain)
    before = run_keys(port, plain)
    RedisDataStore("127.0.0.1", port, prefix=glob, mode="w").close()
    assert run_keys(port, plain) == before
    client.close()


def test_mode_w_deletes_in_batches_and_a_reopen_does_not_delete_again(redis_server, redis_prefix):
    port = redis_server.port
    store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="w")
    store.max_piece_bytes = 8  # one piece per row: 2,500 piece keys, more than one batch
    store.append_block("x", SCALAR, np.arange(2500.0))
    store.close()
    assert len(run_keys(port, redis_prefix)) > 2500
    store = RedisDataStore("127.0.0.1", port, prefix=redis_prefix, mode="w")
    assert len(run_keys(port, redis_prefix)) < 10  # the fresh run's attrs only
    store.append("x", 1.0)
    store.close()
    store.open()  # reopening the same store resumes what it wrote
    store.append("x", 2.0)
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0, 2.0])
    store.close()


def test_mode_w_on_a_format_1_run_leaves_the_nested_run(redis_server, redis_prefix):
    client = redis.Redis(port=redis_server.port)
    for prefix, key in ((redis_prefix, "x"), (f"{redis_prefix}/b", "y")):
        client.hset(f"sr:{{{prefix}}}:attrs", "simrecorder_format", "1")
        client.sadd(f"sr:{{{prefix}}}:index", key)
        client.hset(f"sr:{{{prefix}/{key}}}:m", "node", "series")
    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix, mode="w")
    store.close()
    assert client.exists(f"sr:{{{redis_prefix}}}:attrs", f"sr:{{{redis_prefix}/x}}:m") == 0
    nested = f"sr:{{{redis_prefix}/b}}"
    assert client.exists(f"{nested}:attrs", f"{nested}:index", f"sr:{{{redis_prefix}/b/y}}:m") == 3
    assert (
        RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix).attrs[
            "simrecorder_format"
        ]
        == 2
    )
    client.close()


def test_cluster_modes(redis_cluster, redis_prefix):
    port = redis_cluster.port
    store = RedisClusterDataStore("127.0.0.1", port, prefix=redis_prefix)
    for i in range(20):  # series spread over the nodes
        store.append(f"s{i}", float(i))
    store.close()
    again = RedisClusterDataStore("127.0.0.1", port, prefix=redis_prefix)
    with pytest.raises(StoreExistsError, match="mode='a'"):
        again.append("s0", 1.0)
    again.close()
    store = RedisClusterDataStore("127.0.0.1", port, prefix=redis_prefix, mode="w")
    assert store.keys() == []
    store.close()
    client = RedisCluster(host="127.0.0.1", port=port)
    tag = f"sr2:{{{len(redis_prefix)}:{redis_prefix}/".encode()
    assert not [k for k in client.scan_iter(count=1000) if k.startswith(tag)]
    client.close()


# -- 2. runs on a server ------------------------------------------------------------------------
def test_list_and_delete_runs(redis_server, redis_prefix):
    port = redis_server.port
    url = f"redis://127.0.0.1:{port}/0"
    mine = [redis_prefix, f"{redis_prefix}/b", f"{redis_prefix}:c d"]
    for prefix in mine:
        make_run(port, prefix)
    client = redis.Redis(port=port)
    client.hset(f"sr:{{{redis_prefix}-v1}}:attrs", "simrecorder_format", "1")  # format 1
    client.hset(f"sr2:{{3:abc}}:attrs-{redis_prefix}", "x", "1")  # not a run
    client.hset(f"sr2:{{2:{redis_prefix}}}:attrs", "x", "1")  # length does not match
    runs = [run for run in list_redis_runs(url) if run.startswith(redis_prefix)]
    assert runs == sorted([*mine, f"{redis_prefix}-v1"])
    nested_keys = run_keys(port, f"{redis_prefix}/b")
    assert delete_redis_run(f"{url}?prefix={redis_prefix}") > 0
    assert run_keys(port, redis_prefix) == set()
    assert run_keys(port, f"{redis_prefix}/b") == nested_keys
    assert redis_prefix not in list_redis_runs(url)
    with pytest.raises(StoreNotFoundError, match=f"127.0.0.1:{port}"):
        delete_redis_run(f"{url}?prefix={redis_prefix}")
    with pytest.raises(InvalidArgumentError, match="prefix"):
        delete_redis_run(url)
    delete_redis_run(f"{url}?prefix={redis_prefix}-v1")
    assert client.exists(f"sr:{{{redis_prefix}-v1}}:attrs") == 0
    client.close()


def test_list_and_delete_runs_on_a_cluster(redis_cluster, redis_prefix):
    url = f"{redis_cluster.url}?prefix={redis_prefix}"
    store = RedisClusterDataStore.from_url(url)
    for i in range(10):
        store.append(f"s{i}", float(i))
    store.close()
    assert redis_prefix in list_redis_runs(redis_cluster.url)
    delete_redis_run(url)
    assert redis_prefix not in list_redis_runs(redis_cluster.url)


def test_listing_an_unreachable_server_names_it():
    with pytest.raises(StoreConnectionError, match=r"127\.0\.0\.1:1\b"):
        list_redis_runs("redis://127.0.0.1:1/0?socket_connect_timeout=0.5")


# -- 3. URLs parsed by redis-py --------------------------------------------------------------
def test_url_options_reach_redis_py_with_their_types(redis_server, redis_prefix):
    port = redis_server.port
    url = (
        f"redis://127.0.0.1:{port}/0?prefix={redis_prefix}&socket_timeout=5"
        "&socket_keepalive=yes&health_check_interval=7"
    )
    store = open_datastore(url)
    kwargs = store._redis.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 5 and kwargs["socket_keepalive"] is True
    assert kwargs["health_check_interval"] == 7
    assert kwargs["socket_connect_timeout"] == 5  # simrecorder's default stays
    assert str(store) == f"redis://127.0.0.1:{port}/0?prefix={redis_prefix}"
    store.close()
    override = open_datastore(url, socket_timeout=9)
    assert override._redis.connection_pool.connection_kwargs["socket_timeout"] == 9
    override.close()
    with pytest.raises(InvalidArgumentError, match="socket_timeout"):
        open_datastore(f"redis://127.0.0.1:{port}/0?socket_timeout=soon")
    with pytest.raises(InvalidArgumentError, match="'bogus'") as info:
        open_datastore(f"redis://127.0.0.1:{port}/0?bogus=1")
    assert isinstance(info.value, ValueError) and "prefix" in str(info.value)


def test_url_credentials_and_db(redis_server):
    parsed = parse_redis_url("rediss://al%40ice:p%3Ass@host.example:6400/3?prefix=a%2Fb&mode=a")
    assert (parsed.host, parsed.port, parsed.db, parsed.ssl) == ("host.example", 6400, 3, True)
    assert (parsed.username, parsed.password) == ("al@ice", "p:ss")
    assert (parsed.prefix, parsed.mode, parsed.options) == ("a/b", "a", {})


def test_cluster_url_options_reach_every_node(redis_cluster, redis_prefix):
    store = open_datastore(f"{redis_cluster.url}?prefix={redis_prefix}&socket_timeout=5")
    nodes = store._redis.get_nodes()
    assert nodes and all(
        node.redis_connection.connection_pool.connection_kwargs["socket_timeout"] == 5
        for node in nodes
    )
    store.close()


# -- 4. one client factory, clear argument errors ------------------------------------------
@pytest.mark.parametrize("port", ["abc", 70000, -1, 0, True, 6379.5])
def test_bad_ports_raise_a_named_error(port):
    with pytest.raises(InvalidArgumentError, match="port") as info:
        RedisDataStore("127.0.0.1", port)
    assert isinstance(info.value, ValueError) and repr(port) in str(info.value)


@pytest.mark.parametrize("port", ["abc", "70000"])
def test_bad_ports_in_urls_raise_a_named_error(port):
    with pytest.raises(InvalidArgumentError, match="port"):
        open_datastore(f"redis://127.0.0.1:{port}/0?prefix=p")
    with pytest.raises(InvalidArgumentError, match="port"):
        RedisServer("/tmp/unused", redis_port=int(port) if port.isdigit() else port)


def test_a_cluster_has_only_database_0(redis_cluster):
    with pytest.raises(InvalidArgumentError, match="database 0"):
        RedisClusterDataStore("127.0.0.1", redis_cluster.port, db=1)
    with pytest.raises(InvalidArgumentError, match="database 0"):
        open_datastore(f"redis+cluster://127.0.0.1:{redis_cluster.port}/1")
    with pytest.raises(InvalidArgumentError, match="database 0"):
        make_client("127.0.0.1", redis_cluster.port, cluster=True, db=2)


def test_one_client_factory_for_both_stores(redis_server, redis_cluster, redis_prefix):
    standalone = make_client("127.0.0.1", redis_server.port)
    cluster = make_client("127.0.0.1", redis_cluster.port, cluster=True)
    for pool in [standalone.connection_pool] + [
        node.redis_connection.connection_pool for node in cluster.get_nodes()
    ]:
        assert pool.connection_kwargs["socket_connect_timeout"] == 5
    # redis-py retries on the cluster client, not on its nodes' connections
    assert standalone.get_retry().get_retries() == 3 and cluster.retry.get_retries() == 3
    assert standalone.ping() and cluster.ping()
    standalone.close()
    cluster.close()
    store = RedisClusterDataStore("127.0.0.1", redis_cluster.port, prefix=redis_prefix)
    node = store._redis.get_nodes()[0]
    assert node.redis_connection.connection_pool.connection_kwargs["socket_connect_timeout"] == 5
    store.close()


# -- 5. RedisClusterServer.port --------------------------------------------------------------
def test_cluster_server_port_and_url(redis_cluster, redis_prefix):
    assert isinstance(redis_cluster, RedisClusterServer)
    assert redis_cluster.port == redis_cluster.ports[0] and redis_cluster.host == "127.0.0.1"
    assert redis_cluster.url == f"redis+cluster://127.0.0.1:{redis_cluster.port}"
    store = RedisClusterDataStore(redis_cluster.host, redis_cluster.port, prefix=redis_prefix)
    store.append("x", 1.0)
    store.close()


# -- 6. Redis' limits and clear messages -----------------------------------------------------
def test_samples_over_the_servers_string_limit_are_stored_in_pieces(tmp_path):
    """The server refuses strings over 1 MiB here (as it refuses them over 512 MB by
    default): a 3 MiB sample and a 3 MiB value never reach it as one string."""
    big = np.random.default_rng(1).random(3 * (1 << 17))  # 3 MiB
    with RedisServer(
        tmp_path, redis_port="random", extra_args=["--proto-max-bulk-len", "1mb"]
    ) as server:
        store = RedisDataStore("127.0.0.1", server.port, prefix="big")
        rec = Recorder(store, max_seconds=None)
        rec.record("x", big)
        rec.set("v", big.tobytes())
        rec.close()
        reader = RedisDataStore("127.0.0.1", server.port, prefix="big", mode="r")
        np.testing.assert_array_equal(np.asarray(reader.get_all("x"))[0], big)
        assert reader.get("v") == big.tobytes()
        reader.close()


def test_damaged_series_is_a_named_format_error(redis_server, redis_prefix):
    from simrecorder.errors import StoreFormatError

    store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    store.append_block("x", SCALAR, np.arange(4.0))
    store.flush()
    client = redis.Redis(port=redis_server.port)
    tag = f"sr2:{{{len(redis_prefix)}:{redis_prefix}/x}}"
    (piece,) = client.lrange(f"{tag}:b", 0, -1)
    client.append(piece, b"\0" * 8)  # one row too many
    with pytest.raises(StoreFormatError, match=f"'x'.*127.0.0.1:{redis_server.port}"):
        np.asarray(store.get_all("x"))
    store.close()
    client.close()
