"""``python -m time_benchmarks.storage [--repeats N] [--json FILE]``: simrecorder.storage
against pickle (protocol 5, to a file) in the same run.

Workloads (issue 16):

(a) 10 arrays of 100,000 float64 and 10 scalars;
(b) 200 arrays of 100 elements and 1,000 scalars in nested dicts;
(c) a dataclass tree of 10,000 small objects;

plus the time to read one small leaf of a file that also holds a 100 MB array.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pickle
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from simrecorder.storage import load, save

from ._timing import median_time

BACKENDS = ("hdf5", "zarr", "json")
SUFFIX = {"hdf5": ".h5", "zarr": ".zarr", "json": ".json"}
SIDECAR = ".bin"  # the sidecar of a JSON storage's large arrays: x.json.bin


@dataclasses.dataclass
class Leaf:
    """A small object of workload (c)."""

    id: int
    x: float
    y: float
    label: str


@dataclasses.dataclass
class Branch:
    """A node of workload (c) holding leaves."""

    name: str
    weight: float
    leaves: list[Leaf]


@dataclasses.dataclass
class Forest:
    """The root of workload (c)."""

    title: str
    branches: list[Branch]


def workload_a() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    data: dict[str, Any] = {f"array{i}": rng.random(100_000) for i in range(10)}
    data.update({f"scalar{i}": float(i) * 0.5 for i in range(10)})
    return data


def workload_b() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    data: dict[str, Any] = {}
    for i in range(10):
        group: dict[str, Any] = {}
        for j in range(10):
            group[f"sub{j}"] = {f"s{k}": float(rng.random()) for k in range(10)}
        for j in range(20):
            group[f"array{j}"] = rng.random(100)
        data[f"group{i}"] = group
    return data


def workload_c() -> Forest:
    rng = np.random.default_rng(2)
    branches = []
    for i in range(100):
        leaves = [
            Leaf(i * 1000 + j, float(rng.random()), float(rng.random()), f"leaf{i}-{j}")
            for j in range(99)
        ]
        branches.append(Branch(f"branch{i}", float(i), leaves))
    return Forest("forest", branches)


WORKLOADS = {"a": workload_a, "b": workload_b, "c": workload_c}


def _size(path: str) -> int:
    """Bytes of a saved file (a zarr directory's files; a JSON document's sidecar too)."""
    if os.path.exists(path + SIDECAR):
        return _size(path + SIDECAR) + os.path.getsize(path)
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


def _pickle_save(obj: Any, path: str) -> None:
    with open(path, "wb") as out:
        pickle.dump(obj, out, protocol=5)


def _pickle_load(path: str) -> Any:
    with open(path, "rb") as stream:
        return pickle.load(stream)


def _timed(run: Any) -> float:
    return median_time(run, 1)


def _save_load(obj: Any, directory: str, backend: str) -> tuple[str, float, float]:
    """One save and one load of ``obj``: ``(path, save seconds, load seconds)``.

    Both sides write a new file: the previous run's file is removed first, untimed
    (ext4 flushes a file's data when it is truncated, as pickle's ``open(path, 'wb')``
    does, or renamed over, as an atomic save does: either would time the disk, not
    the code). Neither side calls fsync.
    """
    if backend == "pickle":
        path = os.path.join(directory, "w.pickle")
        _discard(path)
        return path, _timed(lambda: _pickle_save(obj, path)), _timed(lambda: _pickle_load(path))
    path = os.path.join(directory, "w" + SUFFIX[backend])
    _discard(path)
    save_s = _timed(lambda: save(obj, path))
    return path, save_s, _timed(lambda: load(path, version_policy="ignore"))


def _discard(path: str) -> None:
    for name in (path, path + SIDECAR):
        if os.path.lexists(name):
            _remove(name)


def run_workloads(directory: str, repeats: int) -> list[dict[str, Any]]:
    """Every workload on pickle and each backend, interleaved run by run (a busy machine
    slows both sides of a ratio alike); medians of times and of per-run ratios."""
    rows = []
    names = ("pickle", *BACKENDS)
    for workload, make in WORKLOADS.items():
        obj = make()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        sizes = {}
        for _ in range(repeats):
            for name in names:
                path, save_s, load_s = _save_load(obj, directory, name)
                times[name].append((save_s, load_s))
                sizes[name] = _size(path)
        base = times["pickle"]
        for name in names:
            row: dict[str, Any] = {
                "workload": workload,
                "backend": name,
                "save_s": statistics.median(t[0] for t in times[name]),
                "load_s": statistics.median(t[1] for t in times[name]),
                "bytes": sizes[name],
            }
            if name != "pickle":
                pairs = list(zip(times[name], base, strict=True))
                row["save_ratio"] = statistics.median(a[0] / b[0] for a, b in pairs)
                row["load_ratio"] = statistics.median(a[1] / b[1] for a, b in pairs)
                row["size_ratio"] = sizes[name] / sizes["pickle"]
            rows.append(row)
    return rows


def one_leaf(directory: str, repeats: int) -> list[dict[str, Any]]:
    """Time to load one small leaf of a file that also holds a 100 MB array."""
    rows = []
    data = {"big": np.ones(13_107_200), "params": {"dt": 0.1, "n": 3}}
    for backend in BACKENDS:
        path = save(data, os.path.join(directory, "big" + SUFFIX[backend]))
        read = functools.partial(load, path, "params/dt", version_policy="ignore")
        seconds = median_time(read, repeats)
        rows.append({"backend": backend, "file_mb": _size(path) / 1e6, "leaf_ms": seconds * 1e3})
        _discard(path)
    return rows


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _table(rows: list[dict[str, Any]], leaves: list[dict[str, Any]]) -> str:
    lines = [
        "workload | backend | save ms | load ms | size KB | save/pickle | load/pickle | size/pickle"
    ]
    for row in rows:
        ratios = " | ".join(
            f"{row[key]:.2f}" if key in row else "-"
            for key in ("save_ratio", "load_ratio", "size_ratio")
        )
        lines.append(
            f"{row['workload']} | {row['backend']} | {row['save_s'] * 1e3:.2f} | "
            f"{row['load_s'] * 1e3:.2f} | {row['bytes'] / 1e3:,.0f} | {ratios}"
        )
    lines.append("")
    lines.append("one leaf of a 100 MB file: backend | file MB | load ms")
    for row in leaves:
        lines.append(f"{row['backend']} | {row['file_mb']:.0f} | {row['leaf_ms']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the storage benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--dir", help="directory for the files (default: a temp dir)")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir)
    try:
        started = time.time()
        rows = run_workloads(directory, args.repeats)
        leaves = one_leaf(directory, args.repeats)
        print(_table(rows, leaves))
        print(f"({time.time() - started:.1f} s, files in {args.dir or tempfile.gettempdir()})")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"workloads": rows, "one_leaf": leaves}, out, indent=1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
