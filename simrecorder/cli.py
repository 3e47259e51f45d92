"""The ``simrecorder`` command: ``demo`` runs a simulation, ``info``/``ls`` list a
store, ``show``/``tail`` print a series, ``copy`` moves a run between stores,
``export`` writes NetCDF/CSV/Parquet, ``plot`` draws series, ``runs`` summarises a
sweep, ``recover`` makes a store whose writer was killed usable.

Exit status: 0 on success, 1 on an error (one line on stderr naming the store or key;
``--debug`` adds the traceback), 2 for a missing store or file and for bad usage,
130 on Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._version import __version__

__all__ = ["info_table", "main"]


def _open(url: str, mode: str):
    from .datastores.registry import open_datastore

    return open_datastore(url, mode=mode)


def _demo(args: argparse.Namespace) -> int:
    from .demo import LIFParameters, run_demo, summary_table
    from .recorder import Recorder

    store = _open(args.out, "w")  # the demo writes a fresh store each run, on every backend
    params = LIFParameters(n_neurons=args.neurons, seed=args.seed)
    print(
        f"simrecorder {__version__} demo: {args.neurons} LIF neurons, {args.steps} steps "
        f"of {params.dt} ms -> {store}"
    )
    with Recorder(store) as recorder:
        stats = run_demo(
            recorder, steps=args.steps, params=params, progress=None if args.quiet else sys.stderr
        )
        print()
        print(summary_table(recorder))
    print()
    print(f"mean population rate: {stats['mean_rate_hz']:.1f} Hz")
    print(
        f"recorded {stats['records']:,} samples in {stats['seconds']:.2f} s of simulation "
        f"({stats['records_per_s']:,.0f} samples/s, simulation included)"
    )
    if store.persistent:
        print(f"data: {store}  (open it with h5py, or `simrecorder info {store}`)")
    return 0


def _sample_count(store: Any, key: str, kind: str) -> int:
    """Samples in the series ``key`` without reading them (see
    :func:`simrecorder._inspect.sample_count`)."""
    from ._inspect import sample_count

    return sample_count(store, key, kind)


def info_table(store: Any) -> str:
    """A text table of every key of ``store``: kind, samples, sample shape, dtype.

    Series are counted without reading their samples (see :func:`_sample_count`).
    """
    rows = [("key", "kind", "samples", "sample shape", "dtype")]
    for key in store.keys():
        if store.node_type(key) == "value":
            value = store.get(key)
            rows.append((key, "value", "-", str(np.shape(value)), type(value).__name__))
            continue
        spec = store.series_spec(key)
        if spec is None:
            continue  # removed while we listed
        count = str(_sample_count(store, key, spec.kind))
        if spec.kind == "dense":
            rows.append((key, "dense", count, str(spec.shape), str(spec.dtype)))
        else:
            rows.append((key, spec.kind, count, "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _unpacked_zip(url: str) -> str | None:
    """The ``.partial`` directory ``info`` reads for a zip store that was not packed."""
    path = url[len("zarr://") :] if url.startswith("zarr://") else url
    if "://" in path or not path.lower().endswith(".zip") or os.path.exists(path):
        return None
    partial = path + ".partial"
    return partial if os.path.isdir(partial) else None


def _info(args: argparse.Namespace) -> int:
    unpacked = _unpacked_zip(args.url)
    with _open(args.url, "r") as store:
        print(info_table(store))
        attrs = store.attrs
        if attrs:
            print()
            for name in sorted(attrs):
                print(f"{name}: {attrs[name]}")
    if unpacked is not None:
        print(
            f"simrecorder info: note: {args.url} was never packed; this is {unpacked}, "
            "left by a writer that did not close (killed, or still running): "
            f"`simrecorder recover {args.url}` packs it",
            file=sys.stderr,
        )
    return 0


def _recover(args: argparse.Namespace) -> int:
    from .recover import recover

    path = args.path[len("zarr://") :] if args.path.startswith("zarr://") else args.path
    if not os.path.lexists(path) and not os.path.isdir(path + ".partial"):
        print(f"simrecorder recover: no such file: {args.path}", file=sys.stderr)
        return 2
    try:
        print(recover(path))
    except (OSError, ValueError) as exc:
        print(
            f"simrecorder recover: cannot recover {args.path}: {type(exc).__name__}: "
            f"{_one_line(exc)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line."""
    return " ".join(str(exc).split()) or repr(exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrecorder", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simrecorder {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure too")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a spiking-network simulation and record it")
    demo.add_argument(
        "--out",
        default="run.h5",
        help="where to record: a path or any open_datastore URL (default run.h5)",
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=20000,
        help="simulation steps of 0.1 ms (default 20000: 2 s of network time)",
    )
    demo.add_argument("--neurons", type=int, default=1000, help="network size")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    recover = commands.add_parser(
        "recover",
        help="make a store usable after its writer was killed (HDF5 flag, zarr commit, "
        "packs a zip store's .partial directory)",
    )
    recover.add_argument(
        "path", help="an HDF5 file, a zarr directory or a zarr zip store (run.zip)"
    )
    recover.set_defaults(run=_recover)

    info = commands.add_parser("info", help="list the series and values of a store")
    info.add_argument("url", help="a path or URL, e.g. run.h5")
    info.set_defaults(run=_info)
    _add_reading_commands(commands)
    return parser


def _add_reading_commands(commands: Any) -> None:
    """``ls``, ``show``, ``copy``, ``export``, ``plot``, ``tail`` and ``runs``."""
    from . import _cli_commands as c

    url_help = "a path or any open_datastore URL (run.h5, run.zarr, redis://host:port/0?prefix=p)"
    ls = commands.add_parser(
        "ls", help="the tree of a run: kind, dtype, shape, count, bytes, attrs"
    )
    ls.add_argument("url", help=url_help)
    ls.add_argument("prefix", nargs="?", default="", help="only keys under this key path")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=c.cmd_ls)

    show = commands.add_parser("show", help="values and summary statistics of one series")
    show.add_argument("url", help=url_help)
    show.add_argument("key", help="a series or value key")
    rows = show.add_mutually_exclusive_group()
    rows.add_argument("--head", type=int, metavar="N", help="the first N samples (default 10)")
    rows.add_argument("--tail", type=int, metavar="N", help="the last N samples")
    rows.add_argument("--slice", metavar="A:B", help="samples A to B (python slice, A:B:STEP)")
    show.set_defaults(run=c.cmd_show)

    copy = commands.add_parser(
        "copy", help="copy a run from any store to any store, block by block"
    )
    copy.add_argument("src", help="the run to read: " + url_help)
    copy.add_argument("dst", help="where to write it (refused if it holds keys, see --append)")
    copy.add_argument(
        "--keys", action="append", metavar="GLOB", help="only keys matching GLOB (repeatable)"
    )
    mode = copy.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to a non-empty destination")
    mode.add_argument("--force", action="store_true", help="replace the destination's run")
    copy.add_argument("--quiet", action="store_true", help="no progress bar")
    copy.set_defaults(run=c.cmd_copy, url=None)

    export = commands.add_parser(
        "export", help="write a run to NetCDF (.nc), CSV (.csv, scalar series) or .parquet"
    )
    export.add_argument("url", help=url_help)
    export.add_argument("out", help="the file to write: its suffix picks the format")
    export.add_argument(
        "--keys", action="append", metavar="KEY", help="only this key or group (repeatable)"
    )
    export.set_defaults(run=c.cmd_export)

    plot = commands.add_parser(
        "plot", help="draw series into a PNG: lines, heatmaps (vectors), rasters (spikes)"
    )
    plot.add_argument("url", help=url_help)
    plot.add_argument("keys", nargs="+", metavar="KEY", help="series to draw, one panel each")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.add_argument("--size", default="800x600", help="WIDTHxHEIGHT in pixels (800x600)")
    plot.add_argument("--dpi", type=int, default=100, help="dots per inch (100)")
    plot.set_defaults(run=c.cmd_plot)

    tail = commands.add_parser("tail", help="the last samples of a series; -f follows a run")
    tail.add_argument("url", help=url_help)
    tail.add_argument("key", help="a series key")
    tail.add_argument("-f", "--follow", action="store_true", help="print new samples as they come")
    tail.add_argument("-n", "--lines", type=int, default=10, help="samples shown first (10)")
    tail.add_argument("--interval", type=float, default=0.5, help="seconds between looks (0.5)")
    tail.add_argument(
        "--timeout", type=float, help="with -f: stop after this many seconds without new samples"
    )
    tail.set_defaults(run=c.cmd_tail)

    runs = commands.add_parser("runs", help="one row per run of a sweep (attrs, series, sizes)")
    runs.add_argument(
        "pattern", help="a glob of run paths ('sweep/*.h5'), or redis://host:port/0?prefix=GLOB"
    )
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(run=c.cmd_runs)


@contextlib.contextmanager
def _no_async_leftovers() -> Iterator[None]:
    """Keep zarr's event loop from logging "Task exception was never retrieved" (with a
    traceback) for the sibling reads of one that failed: the command reports the
    failure in one line."""
    # the level is not restored: the failed tasks may stay referenced by the exception
    # the command reports (its __cause__ chain) and be collected only at exit
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # the unretrieved tasks are logged when they are collected


def _where(args: argparse.Namespace) -> str:
    """What a failed command worked on, for its one-line message."""
    if args.command == "copy":
        return f"{args.src} -> {args.dst}"
    if args.command == "export":
        return f"{args.url} -> {args.out}"
    names = ("url", "path", "out", "pattern")
    return next((str(getattr(args, n)) for n in names if getattr(args, n, None)), "")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simrecorder`` command; returns the exit status.

    Failures print one line on stderr (the command, the store, the error's type and
    message) and exit with 1; a missing store or file exits with 2. ``--debug``
    prints the traceback too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere: before or after the command
    args = _parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if args.command == "info" and "://" not in args.url and not os.path.lexists(args.url):
        if _unpacked_zip(args.url) is None:
            print(f"simrecorder info: no such file: {args.url}", file=sys.stderr)
            return 2
    try:
        with _no_async_leftovers():
            return int(args.run(args))
    except BrokenPipeError:
        # `simrecorder info run.h5 | head`: the reader left; exit quietly like cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a command prints one line, never a traceback
        if args.debug:
            traceback.print_exc()
        where = _where(args)
        print(
            f"simrecorder {args.command}: {where}: {type(exc).__name__}: {_one_line(exc)}",
            file=sys.stderr,
        )
        return 2 if isinstance(exc, FileNotFoundError) and args.command != "info" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
