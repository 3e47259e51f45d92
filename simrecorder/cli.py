"""The ``simrecorder`` command: ``demo`` runs a simulation, ``info`` lists a store,
``recover`` makes a store whose writer was killed usable."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
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
    """Samples in the series ``key`` without reading (or decoding) them: from the
    store's ``series_length`` when it has one, else from the array's shape; the store's
    own reading path (``get_all``) when neither gives an answer."""
    length = getattr(store, "series_length", None)
    if callable(length):
        return int(length(key))
    if kind == "dense" and store.supports_lazy_views:
        return len(store.get_all(key))  # a lazy view: its length is the dataset's shape
    try:
        found = _length_from_layout(store, key)
    except (OSError, KeyError, RuntimeError, AttributeError):
        found = None  # e.g. a writer changed the file: the store's own path retries
    return len(store.get_all(key)) if found is None else found


def _length_from_layout(store: Any, key: str) -> int | None:
    """The length of a str/bytes/object series from the HDF5 or zarr layout (README:
    an HDF5 group of ``data`` + ``offsets``, one zarr array), None for other stores."""
    if store.protocol == "hdf5":
        return int(store.file[key]["offsets"].shape[0])
    if store.protocol == "zarr":
        return int(store.group[key].shape[0])
    return None  # memory and Redis: no cheaper way from here


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
    return parser


@contextlib.contextmanager
def _no_async_leftovers() -> Iterator[None]:
    """Keep zarr's event loop from logging "Task exception was never retrieved" (with a
    traceback) for the sibling reads of one that failed: the command reports the
    failure in one line."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # the unretrieved tasks are logged when they are collected
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simrecorder`` command; returns the exit status.

    Failures print one line on stderr (the command, the store, the error's type and
    message) and exit with 1; a missing file exits with 2.
    """
    args = _parser().parse_args(argv)
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
        where = next(getattr(args, n) for n in ("url", "path", "out") if hasattr(args, n))
        print(
            f"simrecorder {args.command}: {where}: {type(exc).__name__}: {_one_line(exc)}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
