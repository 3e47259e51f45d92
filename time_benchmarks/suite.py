"""The five recording workloads, measured the same way on every backend.

For each workload and backend: write (µs per record and MB/s, median of repeats,
including the final flush and close), read everything back, read a 1 % slice, bytes
on disk over payload, and peak memory of the recording run (in a fresh process).
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simrecorder import Recorder

from ._timing import disk_bytes
from .backends import Servers, make_store

__all__ = ["WORKLOADS", "Workload", "make_workloads", "measure", "peak_memory"]

Row = dict[str, Any]


@dataclass
class Workload:
    """A recording run: what it writes and how much."""

    name: str
    keys: list[str]
    records: int
    payload: int  # bytes of sample data
    write: Callable[[Recorder], None]
    dense: bool = True


def _scalar(quick: bool, rng: np.random.Generator) -> Workload:
    n = 200_000 if quick else 1_000_000
    values = [float(i) for i in range(n)]

    def write(rec: Recorder) -> None:
        record = rec.record
        for value in values:
            record("loss", value)

    return Workload("scalar", ["loss"], n, 8 * n, write)


def _interleaved(quick: bool, rng: np.random.Generator) -> Workload:
    series, steps = 100, 2_000 if quick else 10_000
    keys = [f"neurons/n{i:03d}" for i in range(series)]
    step_values = [float(i) for i in range(steps)]

    def write(rec: Recorder) -> None:
        record = rec.record
        for value in step_values:
            for key in keys:
                record(key, value)

    return Workload("interleaved", keys, series * steps, 8 * series * steps, write)


def _arrays(quick: bool, rng: np.random.Generator) -> Workload:
    vectors = list(rng.random((1000, 1000)))

    def write(rec: Recorder) -> None:
        for vector in vectors:
            rec.record("state", vector)

    return Workload("arrays", ["state"], 1000, 8 * 1000 * 1000, write)


def _large(quick: bool, rng: np.random.Generator) -> Workload:
    count = 20 if quick else 100
    arrays = [rng.random((1024, 1024)) for _ in range(count)]

    def write(rec: Recorder) -> None:
        for array in arrays:
            rec.record("big", array)

    return Workload("large", ["big"], count, count * (8 << 20), write)


def _objects(quick: bool, rng: np.random.Generator) -> Workload:
    m = 2_000 if quick else 10_000
    objects = [[rng.random(3), rng.random((2, 2)), rng.random((5, 1))] for _ in range(m)]

    def write(rec: Recorder) -> None:
        for value in objects:
            rec.record("events", value)

    return Workload("objects", ["events"], m, m * 8 * (3 + 4 + 5), write, dense=False)


_BUILDERS = {
    "scalar": _scalar,
    "interleaved": _interleaved,
    "arrays": _arrays,
    "large": _large,
    "objects": _objects,
}


def make_workloads(quick: bool, only: str | None = None) -> dict[str, Workload]:
    """The workloads of the benchmarks issue (smaller with ``quick``); ``only`` builds
    just one (its data alone is in memory, for peak-memory measurements)."""
    names = [only] if only else list(_BUILDERS)
    return {name: _BUILDERS[name](quick, np.random.default_rng(0)) for name in names}


WORKLOADS = ["scalar", "interleaved", "arrays", "large", "objects"]


def _disk_bytes(store: Any) -> int | None:
    path = getattr(store, "path", None)
    if path is None:
        return None
    return disk_bytes(path)


def _remove(store: Any) -> None:
    path = getattr(store, "path", None)
    if path is None:
        return
    if Path(path).is_dir():
        shutil.rmtree(path)
    else:
        Path(path).unlink(missing_ok=True)


def measure(workload: Workload, backend: str, tmp: Path, repeats: int) -> Row:
    """Write ``workload`` ``repeats`` times into fresh stores, then read the last one."""
    times = []
    store = None
    for _ in range(repeats):
        if store is not None:
            _remove(store)
        store = make_store(backend, tmp, workload.name)
        rec = Recorder(store)
        start = time.perf_counter()
        workload.write(rec)
        rec.close()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    disk = _disk_bytes(store)
    store.open()
    rec = Recorder(store, max_seconds=None)
    start = time.perf_counter()
    for key in workload.keys:
        data = rec.get_all(key)
        if workload.dense:
            np.asarray(data)
    read_all = time.perf_counter() - start
    view = rec.get_all(workload.keys[0])
    length = len(view)
    start = time.perf_counter()
    part = view[length // 2 : length // 2 + max(1, length // 100)]
    if workload.dense:
        np.asarray(part)
    read_slice = time.perf_counter() - start
    rec.close()
    _remove(store)
    return {
        "workload": workload.name,
        "subject": f"simrecorder/{backend}",
        "us_per_record": seconds / workload.records * 1e6,
        "mb_per_s": workload.payload / seconds / 1e6,
        "read_all_s": read_all,
        "read_1pct_ms": read_slice * 1e3,
        "disk_over_payload": disk / workload.payload if disk else None,
        "all_write_s": [round(t, 4) for t in times],
    }


def peak_memory(workload: str, backend: str, tmp: Path, quick: bool) -> float | None:
    """Peak resident memory (MB) a recording run adds, measured in a fresh process."""
    args = [sys.executable, "-m", "time_benchmarks.suite", workload, backend, str(tmp),
            "quick" if quick else "full", json.dumps(Servers.describe())]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def _peak_child(workload: str, backend: str, tmp: str, size: str, servers: str) -> None:
    Servers.adopt(json.loads(servers))
    work = make_workloads(size == "quick", only=workload)[workload]  # before the baseline
    store = make_store(backend, Path(tmp), f"peak-{workload}")
    baseline = _reset_peak()
    rec = Recorder(store)
    work.write(rec)
    rec.close()
    peak = _status_kib("VmHWM")
    _remove(store)
    print((peak - baseline) / 1024)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> int:
    """Reset the peak-RSS mark (a child inherits its parent's through fork) and return
    the current RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


if __name__ == "__main__":
    _peak_child(*sys.argv[1:6])
