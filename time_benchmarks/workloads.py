"""The workloads, each run through simrecorder and through hand-written baselines.

Each function returns a list of result rows (dicts) with at least ``workload``,
``subject`` (``simrecorder/<backend>`` or ``baseline/<name>``) and one figure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simrecorder import Recorder

from ._timing import disk_bytes, median_time
from .backends import make_store

__all__ = [
    "append_flatness",
    "large_arrays",
    "many_series",
    "scalar_baselines",
    "small_first_flush",
    "vectors",
]

Row = dict[str, Any]


def _disk_bytes(path: Path) -> int:
    return disk_bytes(path)


def scalar_baselines(backends: list[str], tmp: Path, n: int, repeats: int) -> list[Row]:
    """Hand-written ways to keep 1 scalar float per step: dict-of-lists always, and the
    raw library code of each backend that is benchmarked."""
    values = [float(i) for i in range(n)]

    def dict_of_lists() -> None:
        data: dict[str, list[float]] = {}
        for value in values:
            data.setdefault("loss", []).append(value)

    base = median_time(dict_of_lists, repeats) / n * 1e6
    rows = [{"workload": "scalar", "subject": "baseline/dict-of-lists", "us_per_record": base}]
    if "hdf5" in backends:
        rows += _h5py_scalar_baselines(tmp, min(n, 20_000), repeats)
    if "zarr" in backends:
        rows += _zarr_scalar_baselines(tmp, repeats)
    if "redis" in backends:
        rows += _redis_scalar_baselines(repeats)
    return rows


def _redis_scalar_baselines(repeats: int) -> list[Row]:
    import redis

    from .backends import Servers, reset

    client = redis.Redis(port=Servers.server.port)

    def per_sample(n: int) -> None:
        reset("redis")
        for i in range(n):
            client.rpush("loss", float(i))

    def pipelined(n: int, batch: int = 1000) -> None:
        reset("redis")
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            pipe.rpush("loss", float(i))
            if (i + 1) % batch == 0:
                pipe.execute()
        pipe.execute()

    rows = [
        {"workload": "scalar", "subject": "baseline/redis-py RPUSH per sample",
         "us_per_record": median_time(lambda: per_sample(5000), repeats) / 5000 * 1e6,
         "samples": 5000},
        {"workload": "scalar", "subject": "baseline/redis-py RPUSH pipelined (1000)",
         "us_per_record": median_time(lambda: pipelined(100_000), repeats) / 100_000 * 1e6,
         "samples": 100_000},
    ]  # fmt: skip
    client.close()
    return rows


def _zarr_scalar_baselines(tmp: Path, repeats: int) -> list[Row]:
    import zarr

    def run(n: int, block: int) -> None:
        shutil.rmtree(tmp / "raw.zarr", ignore_errors=True)
        array = zarr.create_array(
            tmp / "raw.zarr",
            shape=(0,),
            chunks=(131072,),
            dtype="f8",
            compressors=None,
            fill_value=0,
        )
        buf: list[float] = []
        for i in range(n):
            buf.append(float(i))
            if len(buf) == block:
                array.append(np.array(buf))
                buf = []
        if buf:
            array.append(np.array(buf))

    per_sample_n, buffered_n = 500, 200_000
    return [
        {
            "workload": "scalar",
            "subject": "baseline/zarr Array.append per sample",
            "us_per_record": median_time(lambda: run(per_sample_n, 1), repeats)
            / per_sample_n
            * 1e6,
            "samples": per_sample_n,
        },
        {
            "workload": "scalar",
            "subject": "baseline/zarr hand-buffered 1024",
            "us_per_record": median_time(lambda: run(buffered_n, 1024), repeats) / buffered_n * 1e6,
            "samples": buffered_n,
        },
    ]


def _h5py_scalar_baselines(tmp: Path, n: int, repeats: int) -> list[Row]:
    path = tmp / "raw.h5"
    values = [float(i) for i in range(n)]

    def per_sample() -> None:
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("loss", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
            for i, value in enumerate(values):
                ds.resize(i + 1, axis=0)
                ds[i] = value

    def hand_buffered(block: int = 1024) -> None:
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("loss", shape=(0,), maxshape=(None,), dtype="f8", chunks=(32768,))
            buf: list[float] = []
            for value in values:
                buf.append(value)
                if len(buf) == block:
                    start = ds.shape[0]
                    ds.resize(start + block, axis=0)
                    ds[start:] = buf
                    buf = []
            if buf:
                start = ds.shape[0]
                ds.resize(start + len(buf), axis=0)
                ds[start:] = buf

    return [
        {
            "workload": "scalar",
            "subject": "baseline/h5py resize+write per sample",
            "us_per_record": median_time(per_sample, repeats) / n * 1e6,
            "samples": n,
        },
        {
            "workload": "scalar",
            "subject": "baseline/h5py hand-buffered 1024",
            "us_per_record": median_time(hand_buffered, repeats) / n * 1e6,
            "samples": n,
        },
    ]


def append_flatness(
    backends: list[str], tmp: Path, prefill: int, n: int, repeats: int
) -> list[Row]:
    """Cost per append into a series of 1e3 rows vs one of ``prefill`` rows."""
    rows: list[Row] = []
    values = [float(i) for i in range(n)]

    def run(rec: Recorder) -> None:
        record = rec.record
        for value in values:
            record("x", value)
        rec.flush()

    for backend in backends:
        samples: dict[int, list[float]] = {1000: [], prefill: []}
        for _ in range(repeats):  # alternate the sizes so drift hits both alike
            for size in samples:
                rec = Recorder(make_store(backend, tmp, f"flat{size}"), max_seconds=None)
                rec.record("x", 0.0)
                rec.flush()
                rec.datastores[0].append_block("x", rec._buffers["x"].spec, np.zeros(size))
                rec.datastores[0].flush()  # the prefill is not part of the timed appends
                samples[size].append(median_time(lambda rec=rec: run(rec), 1) / n * 1e6)
                rec.close()
        costs = {size: statistics.median(times) for size, times in samples.items()}
        rows.append(
            {
                "workload": "append flatness",
                "subject": f"simrecorder/{backend}",
                "us_per_record": costs[prefill],
                "us_at_1e3_rows": costs[1000],
                "vs": "same at 1e3 rows",
                "ratio": costs[prefill] / costs[1000],
                "prefill_rows": prefill,
            }
        )
    return rows


def _plain_write(path: Path, arrays: list[np.ndarray], fsync: bool) -> None:
    path.unlink(missing_ok=True)  # a new file each time, as the stores write
    with open(path, "wb") as f:
        for array in arrays:
            f.write(memoryview(array).cast("B"))
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def large_arrays(
    backends: list[str], tmp: Path, count: int, repeats: int, settle: float = 2.0
) -> list[Row]:
    """``count`` samples of 8 MiB each (float64 1024x1024); MB/s against plain writes.

    The subjects take turns within each repeat, each starting after ``os.sync()`` with
    its previous output deleted, so page-cache writeback of one run does not slow the
    next; ratios are medians of the per-repeat ratios.
    """
    rng = np.random.default_rng(0)
    arrays = [rng.random((1024, 1024)) for _ in range(count)]
    payload = count * arrays[0].nbytes
    disk: dict[str, int] = {}

    def recorder_run(backend: str) -> float:
        store = make_store(backend, tmp, "large")
        path = Path(store.path) if hasattr(store, "path") else None
        rec = Recorder(store)
        start = time.perf_counter()
        for array in arrays:
            rec.record("big", array)
        rec.close()
        seconds = time.perf_counter() - start
        disk[backend] = _disk_bytes(path) if path is not None else None
        return seconds

    def plain_run(fsync: bool) -> float:
        start = time.perf_counter()
        _plain_write(tmp / "plain.bin", arrays, fsync)
        return time.perf_counter() - start

    def h5py_run(direct: bool) -> float:
        start = time.perf_counter()
        with h5py.File(tmp / "large_raw.h5", "w") as f:
            shape = arrays[0].shape
            ds = f.create_dataset(
                "x",
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=arrays[0].dtype,
                chunks=(1, *shape),
            )
            for i, array in enumerate(arrays):
                ds.resize(i + 1, axis=0)
                if direct:
                    ds.id.write_direct_chunk((i, 0, 0), array)
                else:
                    ds[i] = array
        return time.perf_counter() - start

    subjects: dict[str, Any] = {
        "limit/plain write": lambda: plain_run(False),
        "limit/plain write+fsync": lambda: plain_run(True),
    }

    def zarr_run() -> float:
        import zarr

        start = time.perf_counter()
        shape = arrays[0].shape
        array = zarr.create_array(
            tmp / "large_raw.zarr",
            shape=(0, *shape),
            chunks=(1, *shape),
            dtype=arrays[0].dtype,
            compressors=None,
            fill_value=0,
        )
        for a in arrays:
            array.append(a[np.newaxis])
        return time.perf_counter() - start

    if "hdf5" in backends:
        subjects["baseline/h5py resize+write"] = lambda: h5py_run(False)
        subjects["baseline/h5py write_direct_chunk"] = lambda: h5py_run(True)
    if "zarr" in backends:
        subjects["baseline/zarr Array.append"] = zarr_run
    for backend in backends:
        if backend != "memory":
            subjects[f"simrecorder/{backend}"] = lambda backend=backend: recorder_run(backend)
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, run in subjects.items():
            (tmp / "plain.bin").unlink(missing_ok=True)
            for leftover in tmp.glob("large*"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            os.sync()
            # the disk is mounted with 'discard': freeing the last run's files trims
            # blocks in the background and would slow whichever run comes next
            time.sleep(settle)
            times[name].append(run())
    copy = payload / median_time(lambda: [a.copy() for a in arrays], repeats) / 1e6
    rows: list[Row] = [
        {"workload": "8 MiB arrays", "subject": "limit/numpy copy", "mb_per_s": copy}
    ]
    plain = statistics.median(times["limit/plain write"])
    redis_set = None
    if any(b.startswith("redis") for b in backends):
        from .backends import Servers, redis_benchmark_set_mb_s, reset

        runs = []
        for _ in range(repeats):
            reset("redis")
            runs.append(redis_benchmark_set_mb_s(Servers.server.port))
        if None not in runs:
            redis_set = statistics.median(runs)
            rows.append(
                {
                    "workload": "8 MiB arrays",
                    "subject": "limit/redis-benchmark SET 1 MiB",
                    "mb_per_s": redis_set,
                    "all_mb_per_s": [round(r) for r in runs],
                }
            )
    for name, seconds in times.items():
        median = statistics.median(seconds)
        row: Row = {
            "workload": "8 MiB arrays",
            "subject": name,
            "mb_per_s": payload / median / 1e6,
            "all_mb_per_s": [round(payload / s / 1e6) for s in seconds],
        }
        if name.startswith("simrecorder/redis"):
            if redis_set:
                row.update(vs="redis-benchmark SET 1 MiB", ratio=payload / median / 1e6 / redis_set)
        elif name.endswith("-durable"):
            fsynced = statistics.median(times["limit/plain write+fsync"])
            row.update(vs="plain write+fsync", ratio=fsynced / median)
        elif not name.startswith("limit/"):
            row.update(vs="plain write", ratio=plain / median)
        if name.startswith("simrecorder/") and disk.get(name.split("/", 1)[1]):
            row["disk_over_payload"] = disk[name.split("/", 1)[1]] / payload
        rows.append(row)
    return rows


def many_series(
    backends: list[str], tmp: Path, series: int = 10_000, records: int = 10, repeats: int = 1
) -> list[Row]:
    """``series`` series of ``records`` scalars each, recorded step by step (a network
    with thousands of recorded populations): µs/record including ``close()``, and the
    seconds of ``close()`` alone; the ratio is to HDF5 in the same run."""
    keys = [f"pop{i // 100:03d}/n{i:05d}" for i in range(series)]
    steps = [float(i) for i in range(records)]
    times: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    for _ in range(repeats):  # the backends take turns, so drift hits all alike
        for backend in backends:
            store = make_store(backend, tmp, "many")
            rec = Recorder(store, max_seconds=None)
            start = time.perf_counter()
            for value in steps:
                for key in keys:
                    rec.record(key, value)
            closing = time.perf_counter()
            rec.close()
            end = time.perf_counter()
            times[backend].append((end - start, end - closing))
            _remove_store(store)
    rows: list[Row] = []
    total = series * records
    hdf5 = statistics.median(t for t, _ in times["hdf5"]) if "hdf5" in times else None
    for backend, runs in times.items():
        seconds = statistics.median(t for t, _ in runs)
        row: Row = {
            "workload": f"{series:,} series x {records}",
            "subject": f"simrecorder/{backend}",
            "us_per_record": seconds / total * 1e6,
            "close_s": statistics.median(c for _, c in runs),
        }
        if hdf5:
            row.update(vs="hdf5 µs/record", ratio=seconds / hdf5)
        rows.append(row)
    return rows


def _remove_store(store: Any) -> None:
    path = getattr(store, "path", None)
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def vectors(
    backends: list[str], tmp: Path, count: int = 1000, size: int = 1000, repeats: int = 3
) -> list[Row]:
    """``count`` float64 vectors of ``size`` (a state vector per step), recorded one by
    one; MB/s against a plain write of the same bytes (write + flush, no fsync), the
    memory store's time against a list of copies; the subjects take turns.

    Each run starts after ``os.sync()``, and the files are deleted only at the end:
    the writeback of the previous run's bytes, and the discards that deleting its
    files makes on this disk (mounted with ``discard``), would slow whichever run comes
    next (see :func:`large_arrays`)."""
    rng = np.random.default_rng(0)
    arrays = list(rng.random((count, size)))
    payload = count * size * 8
    runs = itertools.count()
    scratch = tmp / "vectors"
    scratch.mkdir(exist_ok=True)

    def recorder_run(backend: str) -> float:
        store = make_store(backend, scratch, f"vectors{next(runs)}")
        rec = Recorder(store, max_seconds=None)
        start = time.perf_counter()
        for array in arrays:
            rec.record("state", array)
        rec.close()
        return time.perf_counter() - start

    def plain_run() -> float:
        start = time.perf_counter()
        _plain_write(scratch / f"plain{next(runs)}.bin", arrays, False)
        return time.perf_counter() - start

    def copies_run() -> float:
        start = time.perf_counter()
        kept = [array.copy() for array in arrays]
        seconds = time.perf_counter() - start
        del kept
        return seconds

    subjects: dict[str, Any] = {"limit/plain write": plain_run, "limit/list of copies": copies_run}
    for backend in backends:
        subjects[f"simrecorder/{backend}"] = lambda backend=backend: recorder_run(backend)
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, run in subjects.items():
            os.sync()
            times[name].append(run())
    shutil.rmtree(scratch)
    plain = statistics.median(times["limit/plain write"])
    copies = statistics.median(times["limit/list of copies"])
    rows = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        row: Row = {
            "workload": f"{count:,} x ({size},) float64",
            "subject": name,
            "us_per_record": median / count * 1e6,
            "mb_per_s": payload / median / 1e6,
        }
        if name == "simrecorder/memory":  # a ratio of times: <= 1.1 is the target
            row.update(vs="list of copies (time)", ratio=median / copies)
        elif not name.startswith("limit/"):
            row.update(vs="plain write", ratio=plain / median)
        rows.append(row)
    return rows


def small_first_flush(
    backends: list[str], tmp: Path, first: tuple[int, int] = (100, 100_000),
    n: int = 1_000_000, repeats: int = 3,
) -> list[Row]:  # fmt: skip
    """Cost of appending ``n`` scalars to a series whose first flush held ``first[0]``
    samples, as a ratio to one whose first flush held ``first[1]``; also whether the
    two got the same chunk shape."""
    values = [float(i) for i in range(n)]
    rows: list[Row] = []
    for backend in backends:
        samples: dict[int, list[float]] = {size: [] for size in first}
        chunks: dict[int, Any] = {}
        for _ in range(repeats):
            for size in first:
                store = make_store(backend, tmp, f"first{size}")
                rec = Recorder(store, max_seconds=None)
                for i in range(size):
                    rec.record("x", float(i))
                rec.flush()
                record = rec.record
                start = time.perf_counter()
                for value in values:
                    record("x", value)
                rec.close()
                samples[size].append(time.perf_counter() - start)
                chunks[size] = _chunk_shape(store)
                _remove_store(store)
        small, big = (statistics.median(samples[size]) / n * 1e6 for size in first)
        rows.append(
            {
                "workload": f"first flush {first[0]:,} vs {first[1]:,}",
                "subject": f"simrecorder/{backend}",
                "us_per_record": small,
                "us_big_first": big,
                "vs": f"first flush of {first[1]:,}",
                "ratio": small / big,
                "same_chunks": chunks[first[0]] == chunks[first[1]],
            }
        )
    return rows


def _chunk_shape(store: Any) -> Any:
    """The chunk shape of series ``x`` of a (closed) zarr or HDF5 store, else None."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    meta = Path(path) / "x" / "zarr.json"
    if meta.is_file():
        import json

        return json.loads(meta.read_text())["chunk_grid"]["configuration"]["chunk_shape"]
    if str(path).endswith(".h5"):
        with h5py.File(path, "r") as f:
            return f["x"].chunks
    return None
