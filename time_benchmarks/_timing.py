"""Timing helpers."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["disk_bytes", "median_time"]


def median_time(
    run: Callable[[], Any],
    repeats: int,
    setup: Callable[[], Any] | None = None,
    teardown: Callable[[Any], None] | None = None,
) -> float:
    """Median wall time in seconds of ``run(setup())`` over ``repeats`` runs.

    ``setup`` and ``teardown`` are not timed; garbage collection is paused while a
    run is timed, as :mod:`timeit` does.
    """
    times = []
    for _ in range(repeats):
        state = setup() if setup is not None else None
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(state) if setup is not None else run()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
            if teardown is not None:
                teardown(state)
    return statistics.median(times)


def disk_bytes(path: Any) -> int:
    """Bytes a file or directory takes on disk: its allocated blocks, so the holes of
    sparse files (an uncompressed zarr chunk's zero padding) do not count."""
    from pathlib import Path

    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(_allocated(p) for p in files)


def _allocated(path: Any) -> int:
    stat = path.stat()
    blocks = getattr(stat, "st_blocks", None)
    return stat.st_size if blocks is None else blocks * 512
