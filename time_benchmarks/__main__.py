"""``python -m time_benchmarks [--quick] [--json FILE] [--backends memory,hdf5]``"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from . import suite, workloads
from .backends import BACKENDS, Servers

_COLUMNS = [
    ("workload", "workload", "{}"),
    ("subject", "subject", "{}"),
    ("µs/record", "us_per_record", "{:.3f}"),
    ("MB/s", "mb_per_s", "{:,.0f}"),
    ("read all s", "read_all_s", "{:.3f}"),
    ("1% slice ms", "read_1pct_ms", "{:.2f}"),
    ("disk/payload", "disk_over_payload", "{:.3f}"),
    ("peak MB", "peak_mb", "{:.0f}"),
    ("close s", "close_s", "{:.2f}"),
    ("ratio", "ratio", "{:.2f}"),
    ("vs", "vs", "{}"),
]


def _format_rows(rows: list[dict]) -> str:
    table = [tuple(title for title, _, _ in _COLUMNS)]
    for row in rows:
        table.append(tuple(
            fmt.format(row[name]) if row.get(name) is not None else ""
            for _, name, fmt in _COLUMNS
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _run_all(backends: list[str], tmp: Path, quick: bool, repeats: int) -> list:
    works = suite.make_workloads(quick)
    n_scalar = works["scalar"].records
    print("running baselines ...", file=sys.stderr, flush=True)
    rows: list = workloads.scalar_baselines(backends, tmp, n_scalar, repeats)
    base = rows[0]["us_per_record"]
    for name in suite.WORKLOADS:
        for backend in backends:
            print(f"running {name} on {backend} ...", file=sys.stderr, flush=True)
            # the large workload's write speed is measured against plain writes below
            row = suite.measure(works[name], backend, tmp, 1 if name == "large" else repeats)
            row["peak_mb"] = suite.peak_memory(name, backend, tmp, quick)
            if name == "scalar":
                row.update(vs="dict-of-lists", ratio=row["us_per_record"] / base)
            if name == "large":
                row.pop("us_per_record")
                row.pop("mb_per_s")
            rows.append(row)
    print("running append flatness ...", file=sys.stderr, flush=True)
    rows += workloads.append_flatness(
        [b for b in backends if b != "memory"], tmp, prefill=1_000_000,
        n=100_000 if quick else 300_000, repeats=repeats,
    )  # fmt: skip
    print("running 8 MiB arrays against plain writes ...", file=sys.stderr, flush=True)
    rows += workloads.large_arrays(
        backends, tmp, count=20 if quick else 100, repeats=repeats,
        settle=0.5 if quick else 2.0,
    )  # fmt: skip
    rows += _scale_workloads(backends, tmp, quick, repeats)
    return rows


def _scale_workloads(backends: list[str], tmp: Path, quick: bool, repeats: int) -> list:
    """Issue 18's workloads: many series, (1000,) vectors, 50 x 8 MiB, a small first
    flush; each row's ratio is to the same-run baseline it names."""
    print("running many series (ratio to hdf5) ...", file=sys.stderr, flush=True)
    many = [b for b in backends if b != "memory"]
    if "hdf5" not in many:
        many.insert(0, "hdf5")  # the baseline of the ratios
    rows = workloads.many_series(many, tmp, series=2_000 if quick else 10_000, repeats=1)
    print("running (1000,) vectors against plain writes ...", file=sys.stderr, flush=True)
    rows += workloads.vectors(backends, tmp, repeats=repeats)
    print("running 50 x 8 MiB against plain writes ...", file=sys.stderr, flush=True)
    for row in workloads.large_arrays(backends, tmp, count=50, repeats=repeats,
                                      settle=0.5 if quick else 2.0):  # fmt: skip
        row["workload"] = "50 x 8 MiB"
        rows.append(row)
    print("running small first flush ...", file=sys.stderr, flush=True)
    on_disk = [b for b in backends if b in ("hdf5", "zarr", "zarr-blosc")]
    rows += workloads.small_first_flush(
        on_disk, tmp, n=200_000 if quick else 1_000_000, repeats=1 if quick else 3
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print a table (and write JSON when asked)."""
    parser = argparse.ArgumentParser(prog="python -m time_benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (< 2 min)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated subset of {','.join(BACKENDS)}",
    )
    parser.add_argument("--tmp", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument(
        "--only-scale",
        action="store_true",
        help="run only issue 18's scale workloads (many series, vectors, 50 x 8 MiB, "
        "small first flush)",
    )
    parser.add_argument("--plot", type=Path, help="draw a bar chart to this PNG (matplotlib)")
    args = parser.parse_args(argv)
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # say so before the long run
            parser.error("--plot needs matplotlib: pip install 'simrecorder[plot]'")
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {sorted(BACKENDS)}")

    quick = args.quick
    repeats = 3 if quick else 5
    if any(b.startswith("redis") for b in backends) and not shutil.which("redis-server"):
        print("redis-server is not installed: leaving out the Redis backends", file=sys.stderr)
        backends = [b for b in backends if not b.startswith("redis")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        Servers.start(backends, tmp)
        try:
            if args.only_scale:
                rows = _scale_workloads(backends, tmp, quick, repeats)
            else:
                rows = _run_all(backends, tmp, quick, repeats)
        finally:
            Servers.stop()
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "command": "python -m time_benchmarks " + " ".join(argv or sys.argv[1:]),
        "repeats": repeats,
    }
    print(f"# {meta['date']} · {meta['machine']} · Python {meta['python']} · median of {repeats}")
    print(_format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.plot:
        from .plot import plot

        plot(rows, meta, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
