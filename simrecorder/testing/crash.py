"""A SIGKILL harness: record in a child process, kill it at a random moment, check.

The child records several series (scalars, arrays, a series that starts late, an
object series), calls ``flush()`` every few steps and reports each completed flush
on stdout. The parent kills it with SIGKILL after a random number of reported
flushes plus a random delay, reopens the store for writing (as a resumed run would)
and checks that every sample flushed before the kill reads back bit-exact, that the
series are aligned (the store truncates to its last committed epoch, see
``DataStore.commit``) and that the store accepts new appends.

Run it from a test (``tests/test_crash.py``) or by hand::

    python -m simrecorder.testing.crash hdf5 /tmp/crash.h5 --kills 100
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, KeyNotFoundError

__all__ = ["BACKENDS", "CrashResult", "crash_once", "expected", "open_store"]

LATE_START = 37  # the step at which series "late" first appears
#: the backends :func:`open_store` knows
BACKENDS = ["hdf5", "zarr", "zarr-raw", "zarr-lmdb", "zarr-lmdb-raw", "redis"]


def expected(key: str, step: int) -> Any:
    """The sample the child records under ``key`` at ``step`` (deterministic)."""
    if key == "scalar":
        return float(step) * 0.5
    if key == "array":
        return np.arange(4, dtype=np.float32) + step
    if key == "late":
        return np.int64(step * 3)
    if key == "events":
        return {"step": step, "ids": np.arange(step % 5)}
    raise KeyNotFoundError(f"the crash harness records no key {key!r}")


def keys_at(step: int) -> list[str]:
    """The keys recorded at ``step``."""
    keys = ["scalar", "array", "events"]
    return [*keys, "late"] if step >= LATE_START else keys


def open_store(backend: str, location: str, **kwargs: Any) -> Any:
    """The store the harness uses for ``backend`` at ``location``."""
    from simrecorder import open_datastore

    if backend == "hdf5":
        return open_datastore(f"hdf5://{location}", **kwargs)
    if backend == "zarr":
        return open_datastore(f"zarr://{location}", **kwargs)
    if backend == "zarr-raw":  # uncompressed: chunk files written by simrecorder itself
        from simrecorder import CompressionType

        return open_datastore(f"zarr://{location}", compression_type=CompressionType.NONE,
                              **kwargs)  # fmt: skip
    if backend == "zarr-lmdb":  # one LMDB environment, chunks written through zarr
        return open_datastore(f"zarr+lmdb://{location}", **kwargs)
    if backend == "zarr-lmdb-raw":  # uncompressed: chunk keys written by simrecorder
        from simrecorder import CompressionType

        return open_datastore(f"zarr+lmdb://{location}", compression_type=CompressionType.NONE,
                              **kwargs)  # fmt: skip
    if backend == "redis":
        return open_datastore(location, **kwargs)
    raise InvalidArgumentError(f"unknown crash harness backend {backend!r}; known: {BACKENDS}")


def _child(backend: str, location: str, seed: int) -> None:
    from simrecorder import Recorder

    rng = random.Random(seed)
    rec = Recorder(open_store(backend, location), max_records=rng.choice([3, 16, 100]),
                   max_seconds=None)  # fmt: skip
    flush_every = rng.choice([1, 5, 20])
    step = 0
    while True:
        for key in keys_at(step):
            rec.record(key, expected(key, step))
        step += 1
        if step % flush_every == 0:
            rec.flush()
            print(step, flush=True)


class CrashResult:
    """What one kill left behind."""

    def __init__(self, flushed_steps: int, problems: list[str]) -> None:
        self.flushed_steps = flushed_steps
        self.problems = problems

    def __bool__(self) -> bool:
        return not self.problems


def _check(backend: str, location: str, flushed: int) -> list[str]:
    from simrecorder import Recorder

    problems = []
    try:
        store = open_store(backend, location, mode="a")  # resume the run
    except Exception as exc:  # noqa: BLE001 - reported as the finding
        return [f"store does not open after the kill: {type(exc).__name__}: {exc}"]
    rec = Recorder(store, max_seconds=None)
    for key in ("scalar", "array", "late", "events"):
        first = LATE_START if key == "late" else 0
        need = max(0, flushed - first)
        if need == 0 and key not in store:
            continue
        try:
            data = rec.get_all(key)
            rows = len(data)
            if rows < need:
                problems.append(f"{key}: {rows} samples, {need} were flushed")
                continue
            if key == "events":
                for i, got in enumerate(data):
                    want = expected(key, first + i)
                    if got["step"] != want["step"] or not np.array_equal(got["ids"], want["ids"]):
                        problems.append(f"{key}[{i}] differs")
                        break
            else:
                got = np.asarray(data)
                want = np.array([expected(key, first + i) for i in range(rows)])
                if got.tobytes() != want.astype(got.dtype).tobytes():
                    problems.append(f"{key}: samples differ from what was recorded")
        except Exception as exc:  # noqa: BLE001 - reported as the finding
            problems.append(f"{key}: cannot read: {type(exc).__name__}: {exc}")
    lengths = {}
    for key in ("scalar", "array", "late", "events"):
        try:
            lengths[key] = len(rec.get_all(key)) if key in store else 0
        except Exception:  # noqa: BLE001 - reported above
            pass
    if len(lengths) == 4:  # every series recorded at every step ends at the same step
        steps = {lengths["scalar"], lengths["array"], lengths["events"]}
        if lengths["late"]:
            steps.add(lengths["late"] + LATE_START)
        if len(steps) > 1:
            problems.append(f"series are not aligned after the crash: {lengths}")
    try:  # the store must take new appends after the crash
        rec.record("after_crash", 1.0)
        rec.record("scalar", 0.5)
        rec.flush()
        if len(rec.get_all("after_crash")) != 1:
            problems.append("a new series after the crash did not read back")
    except Exception as exc:  # noqa: BLE001 - reported as the finding
        problems.append(f"appending after the crash failed: {type(exc).__name__}: {exc}")
    try:
        rec.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"closing after the crash failed: {exc}")
    return problems


def crash_once(backend: str, location: str, seed: int) -> CrashResult:
    """Record into ``location``, SIGKILL the writer at a random moment, then check."""
    rng = random.Random(seed)
    child = subprocess.Popen(
        [sys.executable, "-m", "simrecorder.testing.crash", "--child", backend, location,
         str(seed)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stdout = child.stdout
    assert stdout is not None  # stdout=PIPE
    flushed = 0
    try:
        wanted = rng.randint(1, 40)
        for line in stdout:
            flushed = int(line)
            wanted -= 1
            if wanted <= 0:
                break
        time.sleep(rng.random() * 0.05)  # somewhere inside a later record or flush
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        # flushes reported after the kill decision are flushed too: count them
        for line in stdout.read().splitlines():
            if line.strip():
                flushed = int(line)
        stdout.close()
    if child.returncode != -signal.SIGKILL:
        return CrashResult(flushed, [f"the writer exited by itself (code {child.returncode})"])
    return CrashResult(flushed, _check(backend, location, flushed))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m simrecorder.testing.crash BACKEND LOCATION --kills N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("location", help="file, directory or redis:// URL with ?prefix=")
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.backend, args.location, args.seed)
        return 0
    failures = 0
    for kill in range(args.kills):
        location = args.location
        if args.backend != "redis":
            location = f"{args.location}.{kill}"
        else:
            location = (
                f"{args.location}{'&' if '?' in location else '?'}prefix=crash{kill}-{os.getpid()}"
            )
        result = crash_once(args.backend, location, seed=args.seed + kill)
        status = "ok" if result else "FAILED: " + "; ".join(result.problems)
        print(f"kill {kill + 1}/{args.kills}: {result.flushed_steps} steps flushed: {status}")
        failures += not result
    print(f"{args.kills - failures}/{args.kills} kills recovered")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
