"""The ``simrecorder`` command: ``demo`` runs a simulation, ``info`` lists a store."""

from __future__ import annotations

import argparse
import os
import sys

from ._version import __version__
from .errors import SimRecorderError

__all__ = ["main"]


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


def _info(args: argparse.Namespace) -> int:
    from .demo import summary_table
    from .recorder import Recorder

    store = _open(args.url, "r")
    with Recorder(store, max_seconds=None) as recorder:
        print(summary_table(recorder))
        attrs = store.attrs
        if attrs:
            print()
            for name in sorted(attrs):
                print(f"{name}: {attrs[name]}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from .recover import recover

    if not os.path.exists(args.path):
        print(f"simrecorder recover: no such file: {args.path}", file=sys.stderr)
        return 2
    try:
        print(recover(args.path))
    except (OSError, ValueError) as exc:
        print(f"simrecorder recover: cannot recover {args.path}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simrecorder`` command."""
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
        "recover", help="make a store usable after its writer was killed (HDF5 flags, zarr)"
    )
    recover.add_argument("path", help="an HDF5 file or a zarr directory")
    recover.set_defaults(run=_recover)

    info = commands.add_parser("info", help="list the series and values of a store")
    info.add_argument("url", help="a path or URL, e.g. run.h5")
    info.set_defaults(run=_info)

    args = parser.parse_args(argv)
    if args.command == "info" and "://" not in args.url and not os.path.exists(args.url):
        print(f"simrecorder info: no such file: {args.url}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:
        # `simrecorder info run.h5 | head`: the reader left; exit quietly like cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except SimRecorderError as exc:
        print(f"simrecorder {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
