"""The workloads, each run through simrecorder and through hand-written baselines.

Each function returns a list of result rows (dicts) with at least ``workload``,
``subject`` (``simrecorder/<backend>`` or ``baseline/<name>``) and one figure.
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simrecorder import Recorder

from ._timing import median_time
from .backends import make_store

__all__ = ["append_flatness", "large_arrays", "scalar_records"]

Row = dict[str, Any]


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scalar_records(backends: list[str], tmp: Path, n: int, repeats: int) -> list[Row]:
    """1 scalar float per record into one series: ``n`` records, then read all."""
    values = [float(i) for i in range(n)]
    rows: list[Row] = []

    def dict_of_lists() -> None:
        data: dict[str, list[float]] = {}
        for value in values:
            data.setdefault("loss", []).append(value)

    base = median_time(dict_of_lists, repeats) / n * 1e6
    rows.append({"workload": "scalar", "subject": "baseline/dict-of-lists", "us_per_record": base})

    for backend in backends:
        holder: dict[str, Any] = {}

        def setup(backend: str = backend) -> Recorder:
            holder["store"] = make_store(backend, tmp, "scalar")
            return Recorder(holder["store"])

        def run(rec: Recorder) -> None:
            record = rec.record
            for value in values:
                record("loss", value)
            rec.flush()

        def teardown(rec: Recorder) -> None:
            holder["read_s"] = median_time(lambda: np.asarray(rec.get_all("loss")), 1)
            rec.close()

        us = median_time(run, repeats, setup, teardown) / n * 1e6
        rows.append(
            {
                "workload": "scalar",
                "subject": f"simrecorder/{backend}",
                "us_per_record": us,
                "vs": "dict-of-lists",
                "ratio": us / base,
                "read_all_s": holder["read_s"],
            }
        )

    if "hdf5" in backends:
        rows += _h5py_scalar_baselines(tmp, min(n, 20_000), repeats)
    return rows


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


def large_arrays(backends: list[str], tmp: Path, count: int, repeats: int) -> list[Row]:
    """``count`` samples of 8 MiB each (float64 1024×1024); MB/s against plain writes."""
    rng = np.random.default_rng(0)
    arrays = [rng.random((1024, 1024)) for _ in range(count)]
    payload = count * arrays[0].nbytes
    rows: list[Row] = []
    plain = (
        payload / median_time(lambda: _plain_write(tmp / "plain.bin", arrays, False), repeats) / 1e6
    )
    plain_sync = (
        payload / median_time(lambda: _plain_write(tmp / "plain.bin", arrays, True), repeats) / 1e6
    )
    copy = payload / median_time(lambda: [a.copy() for a in arrays], repeats) / 1e6
    rows.append({"workload": "8 MiB arrays", "subject": "limit/numpy copy", "mb_per_s": copy})
    rows.append({"workload": "8 MiB arrays", "subject": "limit/plain write", "mb_per_s": plain})
    rows.append(
        {"workload": "8 MiB arrays", "subject": "limit/plain write+fsync", "mb_per_s": plain_sync}
    )
    for backend in backends:
        if backend == "memory":
            continue
        holder: dict[str, Any] = {}

        def setup(backend: str = backend) -> Recorder:
            store = make_store(backend, tmp, "large")
            holder["path"] = Path(getattr(store, "path", tmp))
            return Recorder(store)

        def run(rec: Recorder) -> None:
            for array in arrays:
                rec.record("big", array)
            rec.close()

        seconds = median_time(run, repeats, setup)
        size = _disk_bytes(holder["path"])
        rows.append(
            {
                "workload": "8 MiB arrays",
                "subject": f"simrecorder/{backend}",
                "mb_per_s": payload / seconds / 1e6,
                "vs": "plain write",
                "ratio": payload / seconds / 1e6 / plain,
                "disk_over_payload": size / payload,
            }
        )
        shutil.rmtree(tmp / "large.zarr", ignore_errors=True)
    return rows
