"""Many writer processes, each with its own Recorder, into one server or cluster."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from simrecorder import RedisClusterDataStore, RedisDataStore

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from simrecorder import Recorder, open_datastore
    url, writer, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rec = Recorder(open_datastore(url, mode="a"), max_records=4096)  # concurrent writers
    for i in range(n):
        rec.record(f"writers/w{writer}", float(i))
        rec.record("shared", np.array([writer, i], dtype=np.int64))
    rec.close()
    """
)


def run_writers(url: str, writers: int, n: int) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(n)])
        for w in range(writers)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    return time.perf_counter() - start


def check(store, writers: int, n: int) -> None:
    for w in range(writers):
        np.testing.assert_array_equal(np.asarray(store.get_all(f"writers/w{w}")), np.arange(n))
    shared = np.asarray(store.get_all("shared"))
    assert shared.shape == (writers * n, 2)  # nothing lost
    for w in range(writers):
        mine = shared[shared[:, 0] == w, 1]
        np.testing.assert_array_equal(mine, np.arange(n))  # each writer's order kept


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_eight_writers(topology, redis_server, redis_cluster, redis_prefix):
    writers, n = 8, 100_000
    if topology == "standalone":
        url = f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
        store_cls, port = RedisDataStore, redis_server.port
    else:
        url = f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}?prefix={redis_prefix}"
        store_cls, port = RedisClusterDataStore, redis_cluster.ports[0]
    seconds = run_writers(url, writers, n)
    store = store_cls("127.0.0.1", port, prefix=redis_prefix)
    check(store, writers, n)
    store.close()
    print(
        f"{topology}: {writers} writers x {2 * n} records in {seconds:.2f} s = "
        f"{writers * 2 * n / seconds:,.0f} records/s (process start-up included)"
    )
