"""Figures for ``docs/scaling.md``: a 3-node Redis Cluster on this machine (issue 18).

``python -m time_benchmarks.scaling [--writers 1,2,4,8] [--steps 10000] [--json FILE]``

One :class:`~simrecorder.RedisClusterServer` (3 masters, append-only files on, as
users get it) is started on 127.0.0.1, and four things are measured:

- **writers**: N writer processes at once, each recording ``--series`` float64
  scalar series plus one (1000,) float64 array series per step, ``--steps`` steps,
  unthrottled, into one run (``mode='a'``). Per N: the writers' wall time, the
  records and MB they stored per second in all, and each master's CPU seconds
  (``/proc/<pid>/stat``), from which the master CPU per million records and per GB
  follows: a master saturates when its one main thread reaches one core.
- **memory**: ``used_memory`` (``INFO memory``, summed over the masters) before and
  after storing blocks of 1 and of 1,000 samples in 300 series, so the bytes per
  block (the per-flush overhead) and per sample can be told apart.
- **sharding**: how the series of the run spread over the masters (``SCAN`` on each
  node), and whether every key of a series sits on one node (its hash tag).
- **drain**: ``simrecorder copy`` (a subprocess) of the writers' run from the cluster
  to HDF5, to zarr and to ``blocks+s3://`` on a moto S3 server: MB/s and records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import redis

from simrecorder import RedisClusterServer, delete_redis_run, open_datastore
from simrecorder._schema import SeriesSpec

__all__ = ["main", "run"]

_WRITER = """
import sys, time
import numpy as np
from simrecorder import Recorder, open_datastore
url, index, steps, series = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keys = [f"w{index:04d}/s{s:03d}" for s in range(series)]
array = np.arange(1000, dtype=np.float64)
rec = Recorder(open_datastore(url, mode="a"))
start = time.perf_counter()
for step in range(steps):
    value = float(step)
    for key in keys:
        rec.record(key, value)
    rec.record(f"w{index:04d}/state", array)
rec.close()
print(time.perf_counter() - start)
"""


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node_cpus(cluster: RedisClusterServer) -> list[float]:
    return [_cpu(server.process.pid) for server in cluster.servers if server.process]


def _used_memory(cluster: RedisClusterServer) -> int:
    total = 0
    for port in cluster.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        total += int(client.info("memory")["used_memory"])
        client.close()
    return total


def writers(cluster: RedisClusterServer, counts: list[int], steps: int,
            series: int) -> list[dict[str, Any]]:  # fmt: skip
    """N writer processes at once for each N in ``counts``; one row per N."""
    rows = []
    for n in counts:
        url = f"{cluster.url}?prefix=scaling-w{n}"
        before = _node_cpus(cluster)
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, url, str(i), str(steps), str(series)],
                stdout=subprocess.PIPE, text=True,
            )
            for i in range(n)
        ]  # fmt: skip
        own = [float(p.communicate(timeout=300)[0].split()[-1]) for p in procs]
        cpus = [after - b for after, b in zip(_node_cpus(cluster), before, strict=True)]
        wall = max(own)  # the writers' own recording time (interpreter start left out)
        records = n * steps * (series + 1)
        nbytes = n * steps * (series + 1000) * 8
        blocks = _blocks(cluster, f"scaling-w{n}")
        rows.append(
            {
                "writers": n,
                "steps": steps,
                "series_per_writer": series + 1,
                "wall_s": wall,
                "with_start_s": time.perf_counter() - start,
                "writer_s": own,
                "blocks": blocks,
                "master_cpu_us_per_block": sum(cpus) / blocks * 1e6,
                "records_per_s": records / wall,
                "mb_per_s": nbytes / wall / 1e6,
                "master_cpu_s": cpus,
                "master_busy": [c / wall for c in cpus],
                "master_cpu_s_per_million_records": sum(cpus) / records * 1e6,
                "master_cpu_s_per_gb": sum(cpus) / nbytes * 1e9,
            }
        )
        busy = [round(c / wall, 2) for c in cpus]
        print(f"writers={n}: {records / wall:.0f} records/s, {nbytes / wall / 1e6:.1f} MB/s, "
              f"masters busy {busy}", flush=True)  # fmt: skip
    return rows


def _blocks(cluster: RedisClusterServer, prefix: str) -> int:
    """Blocks stored in the run at ``prefix`` (the lengths of its series' ends lists)."""
    total = 0
    for port in cluster.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        names = list(client.scan_iter(match=f"sr2:{{{len(prefix)}:{prefix}/*:e", count=1000))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        total += sum(pipe.execute())
        client.close()
    return total


def memory(cluster: RedisClusterServer, series: int = 300, blocks: int = 40) -> dict[str, Any]:
    """Bytes per block and per sample of scalar float64 series (``used_memory``)."""
    spec = SeriesSpec("dense", np.dtype(np.float64), ())
    out: dict[str, Any] = {"series": series, "blocks_per_series": blocks}
    for rows in (1, 1000):
        url = f"{cluster.url}?prefix=scaling-mem{rows}"
        before, cpu = _used_memory(cluster), sum(_node_cpus(cluster))
        with open_datastore(url, mode="w") as store:
            block = np.arange(rows, dtype=np.float64)
            for _ in range(blocks):  # one flush per block round, as a recorder epoch
                for s in range(series):
                    store.append_block(f"m/s{s:04d}", spec, block)
                store.flush()
        cpu = sum(_node_cpus(cluster)) - cpu
        out[f"bytes_per_block_of_{rows}"] = (_used_memory(cluster) - before) / (series * blocks)
        out[f"master_cpu_us_per_block_of_{rows}"] = cpu / (series * blocks) * 1e6
    per_sample = (out["bytes_per_block_of_1000"] - out["bytes_per_block_of_1"]) / 999
    out["bytes_per_sample"] = per_sample
    out["bytes_per_block_overhead"] = out["bytes_per_block_of_1"] - per_sample
    print(f"memory: {out['bytes_per_block_overhead']:.0f} B per block + "
          f"{per_sample:.2f} B per float64 sample; master CPU "
          f"{out['master_cpu_us_per_block_of_1']:.1f} us per block of 1, "
          f"{out['master_cpu_us_per_block_of_1000']:.1f} of 1000", flush=True)  # fmt: skip
    return out


_TAG = re.compile(rb"^(sr2:\{[^}]*\})")


def sharding(cluster: RedisClusterServer, prefix: str) -> dict[str, Any]:
    """Series per master, and the number of hash tags found on more than one node."""
    nodes_of: dict[bytes, set[int]] = defaultdict(set)
    series: Counter[int] = Counter()
    keys: Counter[int] = Counter()
    base = f"sr2:{{{len(prefix)}:{prefix}".encode()
    for i, port in enumerate(cluster.ports):
        client = redis.Redis(host="127.0.0.1", port=port)
        for name in client.scan_iter(match=f"sr2:{{{len(prefix)}:{prefix}*", count=1000):
            if not name.startswith(base):
                continue
            keys[i] += 1
            found = _TAG.match(name)
            if found:
                nodes_of[found.group(1)].add(i)
            if name.endswith(b":m"):
                series[i] += 1
        client.close()
    out = {
        "series_per_master": [series[i] for i in range(len(cluster.ports))],
        "keys_per_master": [keys[i] for i in range(len(cluster.ports))],
        "tags": len(nodes_of),
        "tags_on_several_nodes": sum(len(n) > 1 for n in nodes_of.values()),
    }
    print(f"sharding: {out}", flush=True)
    return out


def _copy(src: str, dst: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "simrecorder", "copy", src, dst, "--quiet"],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - start


def drain(cluster: RedisClusterServer, prefix: str, records: int, nbytes: int,
          directory: Path, s3: bool) -> list[dict[str, Any]]:  # fmt: skip
    """``simrecorder copy`` of the run at ``prefix`` to HDF5, zarr and S3."""
    src = f"{cluster.url}?prefix={prefix}"
    targets = {"hdf5": str(directory / "drain.h5"), "zarr": str(directory / "drain.zarr")}
    server = None
    if s3:
        from simrecorder.testing.servers import MotoServer

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        server = MotoServer(directory / "moto")
        server.start()
        import fsspec  # type: ignore[import-untyped]

        fsspec.filesystem("s3", endpoint_url=server.url, skip_instance_cache=True).mkdir("drain")
        targets["s3 (moto)"] = f"blocks+s3://drain/run?endpoint_url={server.url}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simrecorder", "--help"], capture_output=True)
    rows = [{"to": "interpreter start (python -m simrecorder --help)",
             "seconds": time.perf_counter() - start}]  # fmt: skip
    try:
        for name, dst in targets.items():
            seconds = _copy(src, dst)
            rows.append({"to": name, "seconds": seconds, "mb_per_s": nbytes / seconds / 1e6,
                         "records_per_s": records / seconds})  # fmt: skip
            print(f"drain to {name}: {rows[-1]['mb_per_s']:.1f} MB/s, "
                  f"{rows[-1]['records_per_s']:.0f} records/s", flush=True)  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return rows


def run(counts: list[int], steps: int, series: int, directory: Path, s3: bool) -> dict[str, Any]:
    """Start the cluster, measure everything, stop it."""
    cluster = RedisClusterServer(directory / "cluster", nodes=3).start()
    try:
        result: dict[str, Any] = {"cores": os.cpu_count(), "masters": 3}
        result["writers"] = writers(cluster, counts, steps, series)
        for n in counts[:-1]:  # keep the last run (drained below), bound the memory
            delete_redis_run(f"{cluster.url}?prefix=scaling-w{n}")
        result["memory"] = memory(cluster)
        last = max(counts)
        result["sharding"] = sharding(cluster, f"scaling-w{last}")
        records = last * steps * (series + 1)
        nbytes = last * steps * (series + 1000) * 8
        result["drain"] = drain(cluster, f"scaling-w{last}", records, nbytes, directory, s3)
    finally:
        cluster.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--series", type=int, default=50, help="scalar series per writer")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.writers.split(",")]
    with tempfile.TemporaryDirectory(prefix="sr-scaling-") as tmp:
        result = run(counts, args.steps, args.series, Path(tmp), not args.no_s3)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
