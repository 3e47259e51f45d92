"""Timing helpers."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["median_time"]


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
