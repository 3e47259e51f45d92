"""Every location, small and large values, against plain baselines in the same run.

``python -m time_benchmarks.locations [--quick] [--dir DIR] [--json FILE]``

Issue 14 acceptance: 1 KiB and 100 MiB values through every location, including S3
(moto_server) and SFTP (sshd), with memory bounded for the large values.

Subjects: ``MemoryLocation``; ``DirectoryLocation`` (``durable=False`` and ``True``);
``TaridxLocation`` (``durable=False`` and ``True``); ``RedisLocation`` (a real
redis-server, no persistence); ``FsspecLocation`` on S3 (moto_server), SFTP (sshd)
and HTTP (nginx, read-only: values are placed in its served folder, untimed);
``Levels(Small(Redis, 64 KiB), Directory)`` and ``Fanout(Small(Redis, 64 KiB),
Directory)``. Every server listens on 127.0.0.1, lives in the run's temp folder and is
stopped by its pid at the end; the temp folder is removed.

Workloads:

- ``small``: distinct 1 KiB values, ``put`` then ``get`` each, every call timed on its
  own; the figure is the median µs per call. The keys are written in rounds, the
  subjects' order rotating from round to round, so that the load of other processes
  hits all alike. Baselines in the same rounds: redis-py ``SET``/``GET`` on the same
  server, and a plain file write (open, write, close) and read of 1 KiB.
- ``large``: one value of ``--large-mib`` MiB written from an open file
  (``write(key, file)``) and read into a file (``read(key)`` copied in 1 MiB pieces),
  so the value never has to sit in memory; MB/s (median over rounds, subjects
  interleaved as above). Baselines in the same rounds: ``cp`` of the same file, and
  ``shutil.copyfileobj`` file to file in 1 MiB pieces.
- ``memory``: for one more large write and read per subject (not timed), the peak of
  Python allocations (``tracemalloc``) and the peak RSS growth (``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``, minus ``VmRSS`` before), in MiB.
  "bounded" in the table: both peaks of Python allocations under half the value's
  size. MemoryLocation keeps values in the process, RedisLocation reads a value whole
  (one ``GET``) and TaridxLocation reads a member whole (its length checked), by design.

The source file and every output live in the temp folder (the page cache holds them:
the figures are of the code and the servers, not the disk, except for the durable
subjects, which ``fsync``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

KIB = 1 << 10
MIB = 1 << 20
#: Small values of at most this size stay on Redis in the composites.
SMALL_BYTES = 64 * KIB


@dataclass
class Subject:
    """One location under test.

    Attributes
    ----------
    name
        Its row in the table.
    location
        The location.
    keys
        How many 1 KiB values it gets in the ``small`` workload (fewer on slow servers).
    writable
        Whether it can be written (HTTP is read-only; values are placed beforehand).
    served
        For a read-only subject: the folder its server serves (values are copied there).
    """

    name: str
    location: Any
    keys: int
    writable: bool = True
    served: Path | None = None
    small: dict[str, list[float]] = field(default_factory=lambda: {"put": [], "get": []})
    large: dict[str, list[float]] = field(default_factory=lambda: {"write": [], "read": []})
    memory: dict[str, float] = field(default_factory=dict)


class Servers:
    """redis-server, moto_server, sshd and nginx for the run, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        from simrecorder.datastores._redis_server import RedisServer
        from simrecorder.testing.servers import MotoServer, NginxServer, SshServer

        self.started: list[Any] = []
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        self.redis = RedisServer(directory / "redis", redis_port="random",
                                 extra_args=["--save", "", "--appendonly", "no"])  # fmt: skip
        self.moto = MotoServer(directory / "moto")
        self.ssh = SshServer(directory / "sshd")
        self.nginx = NginxServer(directory / "nginx")

    def start(self) -> None:
        """Start every server (those started are stopped by :meth:`stop` even if one fails)."""
        for server in (self.redis, self.moto, self.ssh, self.nginx):
            server.start()
            self.started.append(server)
        import fsspec  # type: ignore[import-untyped]

        fsspec.filesystem("s3", endpoint_url=self.moto.url, skip_instance_cache=True).mkdir("bench")

    def pids(self) -> list[int]:
        """The pids of the servers started (while they run)."""
        pids = []
        for server in self.started:
            process = getattr(server, "process", None)
            if process is not None:
                pids.append(process.pid)
        return pids

    def stop(self) -> None:
        """Stop each started server by its pid."""
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                if server is self.redis:
                    server.stop(save=False)
                else:
                    server.stop()


def make_subjects(directory: Path, servers: Servers, quick: bool) -> list[Subject]:
    """The locations under test, each on a fresh folder, prefix or bucket path."""
    import redis

    from simrecorder.locations import (
        DirectoryLocation,
        Fanout,
        FsspecLocation,
        Levels,
        MemoryLocation,
        RedisLocation,
        Small,
        TaridxLocation,
    )

    many, few = (400, 60) if quick else (2000, 200)
    durable = 100 if quick else 500
    ssh = servers.ssh
    sftp_root = directory / "sftp"
    sftp_root.mkdir()
    www = servers.nginx.root / "bench"
    www.mkdir()

    def redis_on(prefix: str) -> Any:
        return RedisLocation(servers.redis.url, prefix=prefix)

    return [
        Subject("Memory", MemoryLocation(), many),
        Subject("Directory", DirectoryLocation(directory / "dir"), many),
        Subject("Directory durable", DirectoryLocation(directory / "dird", durable=True), durable),
        Subject("Taridx", TaridxLocation(directory / "t.tar", durable=False), many),
        Subject("Taridx durable", TaridxLocation(directory / "td.tar"), durable),
        Subject("Redis", redis_on("loc"), many),
        Subject(
            "S3 (moto)", FsspecLocation(f"s3://bench/loc?endpoint_url={servers.moto.url}"), few
        ),
        Subject(
            "SFTP (sshd)",
            FsspecLocation(f"{ssh.url}{sftp_root}?key_filename={ssh.key_filename}"),
            few,
        ),
        Subject(
            "HTTP (nginx, read)",
            FsspecLocation(f"{servers.nginx.url}/bench"),
            few,
            writable=False,
            served=www,
        ),
        Subject(
            "Levels(Small(Redis), Dir)",
            Levels(Small(redis_on("lev"), SMALL_BYTES), DirectoryLocation(directory / "lev")),
            many,
        ),
        Subject(
            "Fanout(Small(Redis), Dir)",
            Fanout(Small(redis_on("fan"), SMALL_BYTES), DirectoryLocation(directory / "fan")),
            many,
        ),
        Subject("_redis_client", redis.Redis.from_url(servers.redis.url), many),
    ]


# -- small values --------------------------------------------------------------------------


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _time_each(call: Callable[..., Any], *columns: list[Any]) -> list[float]:
    """Seconds of ``call(*args)`` for each row of ``columns``, each call timed alone."""
    return [_timed(functools.partial(call, *args)) for args in zip(*columns, strict=True)]


def small_round(subject: Subject, round_number: int, count: int, scratch: Path) -> None:
    """Put and get ``count`` new 1 KiB values, each call timed (seconds appended)."""
    keys = [f"r{round_number}/k{i:05d}" for i in range(count)]
    values = [os.urandom(KIB - 8) + i.to_bytes(8, "little") for i in range(count)]
    location = subject.location
    gc.collect()
    gc.disable()
    try:
        if subject.name == "_redis_client":  # the raw redis-py baseline
            names = [f"raw/{key}" for key in keys]
            puts = _time_each(location.set, names, values)
            gets = _time_each(location.get, names)
        elif subject.name == "_file":  # a plain file write and read
            folder = scratch / "files" / f"r{round_number}"
            folder.mkdir(parents=True)
            paths = [folder / f"k{i:05d}" for i in range(count)]
            puts = _time_each(Path.write_bytes, paths, values)
            gets = _time_each(Path.read_bytes, paths)
        else:
            puts = _put_all(subject, keys, values, scratch)
            gets = _time_each(location.get, keys)
    finally:
        gc.enable()
    subject.small["put"].extend(puts)
    subject.small["get"].extend(gets)


def _put_all(subject: Subject, keys: list[str], values: list[bytes], scratch: Path) -> list[float]:
    """Put each value, timed; a read-only subject's values are placed, untimed."""
    if subject.writable:
        return _time_each(subject.location.put, keys, values)
    source = scratch / "small.bin"
    for key, value in zip(keys, values, strict=True):
        source.write_bytes(value)
        _place(subject, key, source)
    return []


# -- large values --------------------------------------------------------------------------


def _copy_out(stream: Any, target: Path) -> None:
    with open(target, "wb") as out:
        shutil.copyfileobj(stream, out, MIB)


def _place(subject: Subject, key: str, source: Path) -> None:
    """Copy ``source`` where the read-only ``subject``'s server serves ``key``."""
    assert subject.served is not None
    target = subject.served / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _remove_big(subject: Subject) -> None:
    """Remove the large value (the servers and the disk hold one at a time)."""
    if subject.writable:
        subject.location.delete("big")
    else:
        assert subject.served is not None
        (subject.served / "big").unlink()


def large_write(subject: Subject, source: Path) -> None:
    """Store ``source`` under ``"big"`` from the open file."""
    if subject.writable:
        with open(source, "rb") as file:
            if not subject.location.write("big", file):
                raise RuntimeError(f"{subject.name} declined the large value")
    else:
        _place(subject, "big", source)


def large_read(subject: Subject, target: Path) -> None:
    """Copy the value under ``"big"`` into ``target`` in 1 MiB pieces."""
    with subject.location.read("big") as stream:
        if stream is None:
            raise RuntimeError(f"{subject.name}: the large value is missing")
        _copy_out(stream, target)


def large_round(subject: Subject, source: Path, scratch: Path) -> None:
    """One timed large write and read (seconds appended), then the value removed."""
    size_mib = source.stat().st_size / MIB
    target = scratch / "out.bin"
    gc.collect()
    if subject.writable:
        subject.large["write"].append(size_mib / _timed(lambda: large_write(subject, source)))
    else:
        large_write(subject, source)
    subject.large["read"].append(size_mib / _timed(lambda: large_read(subject, target)))
    target.unlink()
    _remove_big(subject)


def baseline_round(results: dict[str, list[float]], source: Path, scratch: Path) -> None:
    """``cp`` and ``shutil.copyfileobj`` of ``source`` (MB/s appended)."""
    size_mib = source.stat().st_size / MIB
    target = scratch / "cp.bin"
    seconds = _timed(lambda: subprocess.run(["cp", str(source), str(target)], check=True))
    results["cp"].append(size_mib / seconds)
    target.unlink()

    def python_copy() -> None:
        with open(source, "rb") as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, MIB)

    results["copyfileobj"].append(size_mib / _timed(python_copy))
    target.unlink()


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measured_memory(into: dict[str, float], name: str) -> Iterator[None]:
    """Record the peak Python allocations and peak RSS growth (MiB) of the block."""
    gc.collect()
    before = _status_kib("VmRSS")
    resettable = _reset_peak_rss()
    tracemalloc.start()
    try:
        yield
        into[f"{name}_py_mib"] = tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()
    if resettable:
        into[f"{name}_rss_mib"] = max(0, _status_kib("VmHWM") - before) / KIB


def memory_of(subject: Subject, source: Path, scratch: Path) -> None:
    """Peak memory of one large write and one large read (untimed)."""
    target = scratch / "out.bin"
    with measured_memory(subject.memory, "write"):
        large_write(subject, source)
    with measured_memory(subject.memory, "read"):
        large_read(subject, target)
    target.unlink()
    _remove_big(subject)


# -- the run -------------------------------------------------------------------------------


def _rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def run(directory: Path, quick: bool = False, large_mib: int = 100) -> dict[str, Any]:
    """Run every workload; return the figures (µs, MB/s, MiB) and the ratios."""
    started = time.perf_counter()
    servers = Servers(directory)
    result: dict[str, Any] = {}
    try:
        servers.start()
        subjects = make_subjects(directory, servers, quick)
        subjects.append(Subject("_file", None, subjects[1].keys))
        scratch = directory / "scratch"
        scratch.mkdir()
        rounds = 5 if quick else 10
        for number in range(rounds):
            for subject in _rotated(subjects, number):
                small_round(subject, number, subject.keys // rounds, scratch)
        result["small_s"] = time.perf_counter() - started
        source = scratch / "source.bin"
        with open(source, "wb") as file:
            for _ in range(large_mib):
                file.write(os.urandom(MIB))
        locations = [subject for subject in subjects if not subject.name.startswith("_")]
        baselines: dict[str, list[float]] = {"cp": [], "copyfileobj": []}
        large_rounds = 1 if quick else 5
        for number in range(large_rounds):
            for item in _rotated([*locations, None], number):
                if item is None:
                    baseline_round(baselines, source, scratch)
                else:
                    large_round(item, source, scratch)
        for subject in locations:
            memory_of(subject, source, scratch)
        result.update(summarise(subjects, baselines, large_mib, quick, rounds, large_rounds))
        for subject in subjects:
            if subject.name == "_redis_client":
                subject.location.close()
            elif subject.location is not None:
                subject.location.close()
    finally:
        pids = servers.pids()
        servers.stop()
        result["servers_alive_after_stop"] = [pid for pid in pids if _alive(pid)]
    result["total_s"] = time.perf_counter() - started
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def summarise(
    subjects: list[Subject],
    baselines: dict[str, list[float]],
    large_mib: int,
    quick: bool,
    rounds: int,
    large_rounds: int,
) -> dict[str, Any]:
    """Medians per subject and their ratios to the baselines."""

    def median_us(values: list[float]) -> float | None:
        return 1e6 * statistics.median(values) if values else None

    by_name = {subject.name: subject for subject in subjects}
    raw = by_name["_redis_client"]
    file = by_name["_file"]
    base: dict[str, float] = {
        "redis_set_us": 1e6 * statistics.median(raw.small["put"]),
        "redis_get_us": 1e6 * statistics.median(raw.small["get"]),
        "file_write_us": 1e6 * statistics.median(file.small["put"]),
        "file_read_us": 1e6 * statistics.median(file.small["get"]),
        "cp_mb_s": statistics.median(baselines["cp"]),
        "copyfileobj_mb_s": statistics.median(baselines["copyfileobj"]),
    }
    rows = []
    for subject in subjects:
        if subject.name.startswith("_"):
            continue
        put, get = median_us(subject.small["put"]), median_us(subject.small["get"])
        write = statistics.median(subject.large["write"]) if subject.large["write"] else None
        read = statistics.median(subject.large["read"])
        rows.append(
            {
                "location": subject.name,
                "keys": subject.keys,
                "put_us": put,
                "get_us": get,
                "put_vs_redis_set": put / base["redis_set_us"] if put else None,
                "get_vs_redis_get": get / base["redis_get_us"] if get else None,
                "write_mb_s": write,
                "read_mb_s": read,
                "write_vs_cp": write / base["cp_mb_s"] if write else None,
                "read_vs_cp": read / base["cp_mb_s"],
                **subject.memory,
                "bounded": max(
                    subject.memory.get("write_py_mib", 0.0), subject.memory.get("read_py_mib", 0.0)
                )
                < large_mib / 2,
            }
        )
    return {
        "settings": {
            "quick": quick,
            "small_rounds": rounds,
            "large_rounds": large_rounds,
            "large_mib": large_mib,
            "small_bytes": KIB,
        },
        "baselines": base,
        "rows": rows,
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    """The figures as a markdown table."""
    base = result["baselines"]
    lines = [
        "| location | 1 KiB put µs | get µs | put / SET | get / GET | 100 MiB write MB/s "
        "| read MB/s | write / cp | read / cp | write peak py / RSS MiB "
        "| read peak py / RSS MiB | bounded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['location']} ({row['keys']} keys) | {_fmt(row['put_us'])} "
            f"| {_fmt(row['get_us'])} | {_fmt(row['put_vs_redis_set'], 2)} "
            f"| {_fmt(row['get_vs_redis_get'], 2)} | {_fmt(row['write_mb_s'])} "
            f"| {_fmt(row['read_mb_s'])} | {_fmt(row['write_vs_cp'], 2)} "
            f"| {_fmt(row['read_vs_cp'], 2)} "
            f"| {_fmt(row.get('write_py_mib'), 1)} / {_fmt(row.get('write_rss_mib'), 1)} "
            f"| {_fmt(row.get('read_py_mib'), 1)} / {_fmt(row.get('read_rss_mib'), 1)} "
            f"| {'yes' if row['bounded'] else 'no'} |"
        )
    lines.append(
        f"\nBaselines (same run): redis-py SET {_fmt(base['redis_set_us'])} µs, "
        f"GET {_fmt(base['redis_get_us'])} µs; plain 1 KiB file write "
        f"{_fmt(base['file_write_us'])} µs, read {_fmt(base['file_read_us'])} µs; "
        f"`cp` {_fmt(base['cp_mb_s'])} MB/s, copyfileobj {_fmt(base['copyfileobj_mb_s'])} MB/s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer keys and rounds")
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp folder")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="simrecorder-locations-", dir=args.dir))
    try:
        result = run(directory, quick=args.quick, large_mib=args.large_mib)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result["temp_removed"] = not directory.exists()
    print(table(result))
    print(f"\ntotal {result['total_s']:.0f} s; servers alive after stop: "
          f"{result['servers_alive_after_stop'] or 'none'}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
