"""``python -m time_benchmarks.copy [--samples N] [--series K] [--json FILE]``:
``simrecorder copy`` from a 3-node Redis Cluster to HDF5 (issue 17).

Measured in the same run, on the same data (``--series`` float64 scalar series of
``--samples`` samples in all; default 1e7 in 100):

- ``get_all``: reading every series from the cluster (``np.asarray(store.get_all(k))``);
- ``record``: ``Recorder.record`` of every sample into a fresh HDF5 file;
- ``copy``: the ``simrecorder copy`` command (a subprocess, interpreter start included)
  into a fresh HDF5 file, with its peak resident memory (``VmHWM``).

The acceptance: copy at >= 50 % of the speed of the slower of ``get_all`` and
``record``, peak memory under 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from simrecorder import Recorder, open_datastore
from simrecorder._schema import infer_spec
from simrecorder.datastores import RedisClusterServer

FILL_ROWS = 1 << 18


def _fill(url: str, samples: int, series: int) -> None:
    per = samples // series
    spec = infer_spec(1.0)
    with open_datastore(url, mode="w") as store:
        for s in range(series):
            for start in range(0, per, FILL_ROWS):
                stop = min(per, start + FILL_ROWS)
                store.append_block(f"s{s:03d}", spec, np.arange(start, stop, dtype=np.float64))
            store.flush()


def _time_get_all(url: str) -> float:
    start = time.perf_counter()
    with open_datastore(url, mode="r") as store:
        for key in store.keys():
            np.asarray(store.get_all(key))
    return time.perf_counter() - start


def _time_record(url: str, path: str) -> float:
    with open_datastore(url, mode="r") as store:
        data = {key: np.asarray(store.get_all(key)) for key in store.keys()}
    start = time.perf_counter()
    with Recorder(path, max_seconds=None) as rec:
        for key, values in data.items():
            record = rec.record
            for value in values.tolist():
                record(key, value)
    return time.perf_counter() - start


#: runs the command's main() and prints the peak resident memory of this process
#: (VmHWM: the high-water mark of the address space exec made, so it leaves out the
#: memory of the parent it was forked from, which ru_maxrss counts on Linux)
_PROBE = """
import sys
from simrecorder.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
sys.exit(status)
"""


def _time_copy(url: str, path: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of the ``simrecorder copy`` command in a new process
    (interpreter start included)."""
    command = [sys.executable, "-c", _PROBE, "copy", url, path, "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, float(done.stdout.split()[-1]) / 1024


def _baseline_rss() -> float:
    """Peak RSS (MB) of a process that only imports what the copy command imports."""
    probe = (
        "import simrecorder.cli, simrecorder._cli_commands, simrecorder._copy, h5py, redis, "
        "tqdm; print(next(l.split()[1] for l in open('/proc/self/status') "
        "if l.startswith('VmHWM:')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return float(done.stdout.strip()) / 1024


def run(samples: int, series: int, directory: str) -> dict[str, Any]:
    """Start a cluster, fill it, time the three ways; the results as a dict."""
    cluster = RedisClusterServer(os.path.join(directory, "cluster"), nodes=3)
    cluster.start()
    try:
        url = f"{cluster.url}?prefix=bench-copy"
        _fill(url, samples, series)
        get_all = _time_get_all(url)
        record = _time_record(url, os.path.join(directory, "record.h5"))
        copy, peak = _time_copy(url, os.path.join(directory, "copy.h5"))
        with open_datastore(os.path.join(directory, "copy.h5"), mode="r") as store:
            copied = sum(len(store.get_all(k)) for k in store.keys())
    finally:
        cluster.stop()
    slower = max(get_all, record)
    return {
        "samples": samples,
        "series": series,
        "copied_samples": copied,
        "get_all_s": round(get_all, 3),
        "record_s": round(record, 3),
        "copy_s": round(copy, 3),
        "copy_vs_slower": round(slower / copy, 3),
        "copy_peak_rss_mb": round(peak, 1),
        "import_baseline_rss_mb": round(_baseline_rss(), 1),
        "ok": copied == samples and slower / copy >= 0.5 and peak < 100,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", default=None, help="save the results here")
    args = parser.parse_args(argv)
    directory = args.dir or tempfile.mkdtemp(prefix="simrecorder-copy-")
    try:
        result = run(args.samples, args.series, directory)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
