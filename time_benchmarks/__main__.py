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

from . import workloads
from .backends import BACKENDS, Servers


def _format_rows(rows: list[dict]) -> str:
    header = ("workload", "subject", "µs/record", "MB/s", "ratio", "vs")
    table = [header]
    for row in rows:
        us = row.get("us_per_record")
        mb = row.get("mb_per_s")
        ratio = row.get("ratio")
        table.append(
            (
                row["workload"],
                row["subject"],
                f"{us:.3f}" if us is not None else "",
                f"{mb:,.0f}" if mb is not None else "",
                f"{ratio:.2f}" if ratio is not None else "",
                row.get("vs", ""),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _run_all(backends: list[str], tmp: Path, quick: bool, repeats: int, n_scalar: int) -> list:
    rows: list = []
    for name, run in [
        ("scalar", lambda: workloads.scalar_records(backends, tmp, n_scalar, repeats)),
        (
            "append flatness",
            lambda: workloads.append_flatness(
                [b for b in backends if b != "memory"],
                tmp,
                prefill=1_000_000,
                n=100_000 if quick else 300_000,
                repeats=repeats,
            ),
        ),
        (
            "8 MiB arrays",
            lambda: workloads.large_arrays(
                backends,
                tmp,
                count=20 if quick else 100,
                repeats=repeats,
                settle=0.5 if quick else 2.0,
            ),
        ),
    ]:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += run()
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
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {sorted(BACKENDS)}")

    quick = args.quick
    repeats = 3 if quick else 5
    n_scalar = 200_000 if quick else 1_000_000
    if any(b.startswith("redis") for b in backends) and not shutil.which("redis-server"):
        print("redis-server is not installed: leaving out the Redis backends", file=sys.stderr)
        backends = [b for b in backends if not b.startswith("redis")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        Servers.start(backends, tmp)
        try:
            rows = _run_all(backends, tmp, quick, repeats, n_scalar)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
