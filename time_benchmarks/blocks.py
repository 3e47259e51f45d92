"""Per-block append cost of the block store, early and late in a long series.

``python -m time_benchmarks.blocks [--blocks 100000] [--window 100] [--dir DIR] [--json FILE]``

Each step appends one block of one sample (16 float64) to one series, flushes and
commits it -- a recorder's epoch with one series, the worst case for a store whose
per-block work grows with the series. The cost *at n blocks* is the median step time
over ``rounds`` windows of ``window`` steps, the windows at 10 blocks (each in a new
store) alternating with those at the end of the long store, so that the load of
other processes hits both alike. Acceptance (issue 14): the cost at
100,000 blocks is within 20 % of the cost at 10 blocks, on a directory location (and
in memory). The store it replaces (``mummi+simple``) rewrote its whole block list on
every append: 1.5 ms per block at first, 11.4 ms after 10,000 blocks.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from simrecorder._schema import SeriesSpec
from simrecorder.datastores._blocks import BlockDataStore
from simrecorder.locations import DirectoryLocation, Location, MemoryLocation

__all__ = ["main", "step_costs"]

#: Acceptance: cost at the end over cost at the start.
LIMIT = 1.20
_SPEC = SeriesSpec("dense", np.dtype(np.float64), (16,))


def step_costs(store: BlockDataStore, first: int, count: int) -> list[float]:
    """Seconds of each of ``count`` append + flush + commit steps (blocks ``first``...)."""
    costs = []
    gc.disable()
    try:
        for i in range(first, first + count):
            block = np.full((1, 16), float(i))
            start = time.perf_counter()
            store.append_block("x", _SPEC, block)
            store.commit()
            costs.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return costs


def _fill(store: BlockDataStore, first: int, stop: int) -> None:
    """Append blocks ``first..stop-1`` untimed (a flush and commit each, as timed)."""
    for i in range(first, stop):
        store.append_block("x", _SPEC, np.full((1, 16), float(i)))
        store.commit()


def measure(make: Callable[[], Location], blocks: int, window: int, rounds: int) -> dict[str, Any]:
    """Cost at 10 blocks and at ``blocks`` blocks, measured in alternating rounds (a
    new store filled to 10 blocks, then the long store), so that the load of other
    processes hits both alike."""
    long = BlockDataStore(make())
    started = time.perf_counter()
    _fill(long, 0, blocks)
    fill_s = time.perf_counter() - started
    early: list[float] = []
    late: list[float] = []
    done = blocks
    for _ in range(rounds):
        short = BlockDataStore(make())
        _fill(short, 0, 10)
        early.extend(step_costs(short, 10, window))
        short.close()
        late.extend(step_costs(long, done, window))
        done += window
    assert len(long.get_all("x")) == done
    long.close()
    at_start, at_end = statistics.median(early), statistics.median(late)
    return {
        "us_at_10": at_start * 1e6,
        "us_at_end": at_end * 1e6,
        "ratio": at_end / at_start,
        "fill_s": fill_s,
        "ok": at_end / at_start <= LIMIT,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 1 when a location misses the acceptance."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=100, help="steps per round")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    parser.add_argument(
        "--dir", default=None, help="parent of the directory location (default: the temp dir)"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="blocks-bench-", dir=args.dir)
    counter = iter(range(1_000_000))
    try:
        kinds: dict[str, Callable[[], Location]] = {
            "memory": MemoryLocation,
            "directory": lambda: DirectoryLocation(f"{scratch}/s{next(counter)}"),
        }
        results = {}
        for name, make in kinds.items():
            row = measure(make, args.blocks, args.window, args.rounds)
            results[name] = row
            print(
                f"{name:10s} {row['us_at_10']:8.1f} µs/block at 10 blocks, "
                f"{row['us_at_end']:8.1f} µs/block at {args.blocks:,} blocks: "
                f"ratio {row['ratio']:.2f} ({'ok' if row['ok'] else 'OVER'} the {LIMIT:.2f} "
                f"limit; filling took {row['fill_s']:.1f} s)",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as out:
            setup = {"blocks": args.blocks, "window": args.window, "rounds": args.rounds}
            json.dump({**setup, "results": results}, out, indent=2)
    return 0 if all(row["ok"] for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
