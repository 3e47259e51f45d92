"""Large values into Redis against ``redis-benchmark`` (issue 18).

``python -m time_benchmarks.redis_large [--rounds 5] [--no-persist] [--json FILE]``

One ``RedisServer`` is started (by default as users get it: append-only file on,
RDB snapshots on; ``--no-persist`` turns both off), and these subjects take turns in
each round, the server emptied (``FLUSHALL``) before each, so that the load of other
processes hits all alike (medians over rounds):

- ``redis-benchmark -t set -d 1048576 -n 200 -P p -c c`` for p in 1, 16 and c in 1, 4:
  every request overwrites the same key, so the server reuses the freed megabyte;
- the same at ``-P 1 -c 1`` with ``-r 1000000``: 200 distinct keys, so the server
  allocates new memory for each, as a recording does;
- ``redis-py SET``: a loop of ``SET k<i> <1 MiB>`` from Python, one round trip each;
- ``simrecorder 1 MiB``: ``Recorder.record`` of 200 samples of (131072,) float64
  (one flush, so one ``MULTI``/``EXEC`` round trip, per sample);
- ``simrecorder 1 MiB, flush per 8``: the same with ``Recorder(max_bytes=8 MiB)``
  (8 samples, so 8 pieces, per round trip: what pipelining gains);
- ``simrecorder 8 MiB``: 25 samples of (1024, 1024) float64 (8 pieces per block),
  also with 256 KiB and 8 MiB pieces (``max_piece_bytes``: what the piece size does);
- ``..., pieces in MULTI``: ``presend_bytes`` off, so every piece is sent inside the
  ``MULTI``/``EXEC`` of its flush (the store before issue 18).

For each subject: MB/s (1 MB = 1e6 bytes), the server's CPU seconds per GB
(``/proc/<pid>/stat``: less sensitive to other processes than wall time) and the
client's (this process, or the redis-benchmark child). The
ratio of each simrecorder subject is to ``redis-benchmark -P 1 -c 1`` of the same
round (the issue's target: >= 0.7) and to its ``-r`` variant (the same work: new keys).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis

from simrecorder import Recorder, RedisDataStore, RedisServer

__all__ = ["main", "measure"]

MIB = 1 << 20
#: The issue's target: simrecorder's MB/s over redis-benchmark's (-P 1 -c 1).
TARGET = 0.70
_REQUESTS = 200


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_cpu() -> float:
    """CPU seconds of this process and of its finished children (redis-benchmark)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _redis_benchmark(port: int, pipeline: int, clients: int, keyspace: bool) -> float:
    """Wall seconds of ``redis-benchmark`` SETting 200 values of 1 MiB."""
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-d", str(MIB),
            "-n", str(_REQUESTS), "-P", str(pipeline), "-c", str(clients), "-q"]  # fmt: skip
    if keyspace:
        args += ["-r", "1000000"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    for line in done.stdout.replace("\r", "\n").splitlines():
        if line.startswith("SET:") and "requests per second" in line:
            return _REQUESTS / float(line.split()[1])
    raise RuntimeError(f"redis-benchmark printed no SET rate: {done.stdout}{done.stderr}")


def _redis_py(port: int) -> float:
    client = redis.Redis(host="127.0.0.1", port=port)
    value = np.random.default_rng(1).bytes(MIB)
    start = time.perf_counter()
    for i in range(_REQUESTS):
        client.set(f"k{i}", value)
    seconds = time.perf_counter() - start
    client.close()
    return seconds


def _simrecorder(port: int, shape: tuple[int, ...], count: int, piece: int = MIB,
                 max_bytes: int = MIB, presend: bool = True) -> float:  # fmt: skip
    rng = np.random.default_rng(2)
    arrays = [rng.random(shape) for _ in range(4)]
    store = RedisDataStore("127.0.0.1", port, prefix=f"large{time.monotonic_ns()}")
    store.max_piece_bytes = piece
    if not presend:  # every piece inside the MULTI/EXEC, as before issue 18
        store.presend_bytes = 1 << 62
    rec = Recorder(store, max_bytes=max_bytes)
    start = time.perf_counter()
    for i in range(count):
        rec.record("big", arrays[i % 4])
    rec.close()
    return time.perf_counter() - start


def _subjects(port: int) -> dict[str, tuple[Callable[[], float], int]]:
    """Name -> (run returning wall seconds, bytes it sends)."""
    subjects: dict[str, tuple[Callable[[], float], int]] = {}
    if shutil.which("redis-benchmark"):
        for p in (1, 16):
            for c in (1, 4):
                run: Callable[[], float] = partial(_redis_benchmark, port, p, c, False)
                subjects[f"redis-benchmark -P {p} -c {c}"] = (run, _REQUESTS * MIB)
        subjects["redis-benchmark -P 1 -c 1 -r (new keys)"] = (
            lambda: _redis_benchmark(port, 1, 1, True),
            _REQUESTS * MIB,
        )
        subjects["redis-benchmark -P 1 -c 4 -r (new keys)"] = (
            lambda: _redis_benchmark(port, 1, 4, True),
            _REQUESTS * MIB,
        )
    subjects["redis-py SET loop (new keys)"] = (lambda: _redis_py(port), _REQUESTS * MIB)
    subjects["simrecorder 1 MiB samples"] = (
        lambda: _simrecorder(port, (MIB // 8,), _REQUESTS),
        _REQUESTS * MIB,
    )
    subjects["simrecorder 1 MiB samples, flush per 8"] = (
        lambda: _simrecorder(port, (MIB // 8,), _REQUESTS, max_bytes=8 * MIB),
        _REQUESTS * MIB,
    )
    subjects["simrecorder 8 MiB samples"] = (
        lambda: _simrecorder(port, (1024, 1024), 25),
        25 * 8 * MIB,
    )
    subjects["simrecorder 1 MiB samples, pieces in MULTI"] = (
        lambda: _simrecorder(port, (MIB // 8,), _REQUESTS, presend=False),
        _REQUESTS * MIB,
    )
    subjects["simrecorder 8 MiB samples, pieces in MULTI"] = (
        lambda: _simrecorder(port, (1024, 1024), 25, presend=False),
        25 * 8 * MIB,
    )
    for piece in (256 << 10, 8 * MIB):
        run = partial(_simrecorder, port, (1024, 1024), 25, piece)
        subjects[f"simrecorder 8 MiB samples, {piece >> 10} KiB pieces"] = (run, 25 * 8 * MIB)
    return subjects


def measure(rounds: int, persist: bool, directory: Path) -> list[dict[str, Any]]:
    """Run every subject ``rounds`` times in turns; one row per subject."""
    extra = [] if persist else ["--appendonly", "no", "--save", ""]
    server = RedisServer(directory / "redis", redis_port="random", extra_args=extra).start()
    try:
        assert server.port is not None and server.process is not None
        client = redis.Redis(host="127.0.0.1", port=server.port)
        subjects = _subjects(server.port)
        walls: dict[str, list[float]] = {name: [] for name in subjects}
        cpus: dict[str, list[float]] = {name: [] for name in subjects}
        clients: dict[str, list[float]] = {name: [] for name in subjects}
        for _ in range(rounds):
            for name, (run, nbytes) in subjects.items():
                client.flushall()
                time.sleep(0.3)  # let lazy frees and AOF writes settle
                before, own = _server_cpu(server.process.pid), _client_cpu()
                walls[name].append(nbytes / run() / 1e6)
                cpus[name].append((_server_cpu(server.process.pid) - before) / nbytes * 1e9)
                clients[name].append((_client_cpu() - own) / nbytes * 1e9)
        client.close()
    finally:
        server.stop(save=False)
    return _rows(walls, cpus, clients, persist)


def _rows(walls: dict[str, list[float]], cpus: dict[str, list[float]],
          clients: dict[str, list[float]], persist: bool) -> list[dict[str, Any]]:  # fmt: skip
    base = walls.get("redis-benchmark -P 1 -c 1")
    fresh = walls.get("redis-benchmark -P 1 -c 1 -r (new keys)")
    rows = []
    for name, runs in walls.items():
        row: dict[str, Any] = {
            "subject": name,
            "persist": persist,
            "mb_per_s": statistics.median(runs),
            "all_mb_per_s": [round(r) for r in runs],
            "server_cpu_s_per_gb": statistics.median(cpus[name]),
            "client_cpu_s_per_gb": statistics.median(clients[name]),
        }
        if name.startswith("simrecorder") and base:
            row["ratio"] = statistics.median(r / b for r, b in zip(runs, base, strict=True))
            if fresh:
                row["ratio_new_keys"] = statistics.median(
                    r / b for r, b in zip(runs, fresh, strict=True)
                )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-persist", action="store_true", help="AOF and RDB off")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sr-redis-large-") as tmp:
        rows = measure(args.rounds, not args.no_persist, Path(tmp))
    print(f"{'subject':42s} {'MB/s':>7s} {'srv CPU s/GB':>12s} {'client':>6s} {'ratio':>6s} "
          f"{'new keys':>8s}")  # fmt: skip
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else ""
        fresh = f"{row['ratio_new_keys']:.2f}" if "ratio_new_keys" in row else ""
        print(f"{row['subject']:42s} {row['mb_per_s']:7.0f} {row['server_cpu_s_per_gb']:12.2f} "
              f"{row['client_cpu_s_per_gb']:6.2f} {ratio:>6s} {fresh:>8s}  "
              f"{row['all_mb_per_s']}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
