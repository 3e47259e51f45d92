"""The ``simrecorder`` commands that read a finished (or running) run: ``ls``,
``show``, ``copy``, ``export``, ``plot``, ``tail`` and ``runs``
(:mod:`simrecorder.cli` parses the arguments and reports errors)."""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._inspect import Node, describe_of, iter_nodes, run_attrs, sample_count
from ._schema import DENSE
from .datastores.base import DataStore
from .datastores.registry import open_datastore
from .errors import (
    InvalidArgumentError,
    KeyNotFoundError,
    MissingDependencyError,
    StoreExistsError,
    StoreNotFoundError,
    UnknownDataStoreError,
)

__all__ = ["cmd_copy", "cmd_export", "cmd_ls", "cmd_plot", "cmd_runs", "cmd_show", "cmd_tail"]

#: provenance attributes ``runs`` leaves out of its rows (they are the same per machine)
_PROVENANCE = frozenset(
    "simrecorder_version python_version numpy_version h5py_version hdf5_version "
    "zarr_version redis_version hostname created command working_directory git_commit "
    "git_dirty simrecorder_resumes simrecorder_copied_from".split()
)
_READ_ROWS = 1 << 16


def _read(url: str) -> DataStore:
    return open_datastore(url, mode="r")


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{nbytes} B"  # pragma: no cover


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# -- ls ---------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace) -> int:
    """``simrecorder ls URL [PREFIX] [--json]``."""
    with _read(args.url) as store:
        keys = store.keys(args.prefix) if args.prefix else None
        if args.prefix and not keys:
            raise KeyNotFoundError(f"no key {args.prefix!r} in {store!r}")
        nodes = list(iter_nodes(store, keys))
        attrs = run_attrs(store)
    if args.json:
        doc = {"url": args.url, "attrs": attrs, "keys": [n.as_dict() for n in nodes]}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(_ls_table(nodes))
    if attrs:
        print()
    for name in sorted(attrs):
        print(f"{name}: {attrs[name]}")
    return 0


def _ls_table(nodes: list[Node]) -> str:
    rows: list[tuple[str, ...]] = [("key", "kind", "dtype", "shape", "count", "bytes", "attrs")]
    shown: set[str] = set()
    for node in nodes:
        parts = node.key.split("/")
        for depth in range(1, len(parts)):
            group = "/".join(parts[:depth])
            if group not in shown:
                shown.add(group)
                rows.append(("  " * (depth - 1) + parts[depth - 1] + "/", "group", *["-"] * 5))
        rows.append(_ls_row(node, "  " * (len(parts) - 1) + parts[-1]))
    return _table(rows)


def _ls_row(node: Node, name: str) -> tuple[str, ...]:
    spec = node.spec
    if spec is None:
        return (name, "value", "-", "-", "-", "-", "")
    dense = spec.kind == DENSE
    shape = str((node.count, *(spec.shape or ()))) if dense else f"({node.count},)"
    attrs = " ".join(f"{k}={v}" for k, v in node.description.cf_attrs().items())
    if node.description.dims:
        attrs += f" dims={','.join(node.description.dims)}"
    if node.description.time:
        attrs += f" time={node.description.time}"
    return (
        name,
        spec.kind,
        str(spec.dtype) if dense else "-",
        shape,
        str(node.count),
        _size(node.nbytes),
        attrs.strip(),
    )


# -- show -------------------------------------------------------------------------------
def _rows_wanted(args: argparse.Namespace, length: int) -> slice:
    if args.head is not None:
        return slice(0, max(0, args.head))
    if args.tail is not None:
        return slice(max(0, length - max(0, args.tail)), length)
    if args.slice is not None:
        try:
            parts = [int(p) if p.strip() else None for p in args.slice.split(":")]
        except ValueError:
            raise InvalidArgumentError(f"--slice {args.slice!r}: expected a:b or a:b:c") from None
        if not 1 <= len(parts) <= 3 or (len(parts) == 1 and parts[0] is None):
            raise InvalidArgumentError(f"--slice {args.slice!r}: expected a:b or a:b:c")
        if len(parts) == 1:
            return slice(parts[0], None if parts[0] == -1 else (parts[0] or 0) + 1 or None)
        return slice(*parts)
    return slice(0, 10)


def cmd_show(args: argparse.Namespace) -> int:
    """``simrecorder show URL KEY [--head N | --tail N | --slice a:b]``."""
    with _read(args.url) as store:
        node = store.node_type(args.key)
        if node == "value":
            print(f"{args.key} (value): {store.get(args.key)!r}")
            return 0
        spec = store.series_spec(args.key) if node == "series" else None
        if spec is None:
            raise KeyNotFoundError(f"no series or value {args.key!r} in {store!r}")
        data = store.get_all(args.key)
        length = len(data)
        rows = _rows_wanted(args, length)
        start, stop, step = rows.indices(length)
        description = describe_of(store, args.key)
        kind = (
            f"{spec.kind} {spec.dtype} {tuple(spec.shape or ())}"
            if spec.kind == DENSE
            else spec.kind
        )
        print(f"{args.key}: {kind}, {length} samples  {description.label(args.key)}")
        np.set_printoptions(threshold=20, edgeitems=3, linewidth=100)
        chunk = data[rows]
        for index, value in zip(range(start, stop, step), chunk, strict=False):
            print(f"{index:>10}  {value!r}" if spec.kind != DENSE else f"{index:>10}  {value}")
        if spec.kind == DENSE and np.issubdtype(np.dtype(spec.dtype), np.number):
            print(_summary_line(_summary(data, length)))
    return 0


def _blocks(data: Any, length: int) -> Iterator[np.ndarray]:
    for start in range(0, length, _READ_ROWS):
        yield np.asarray(data[start : min(length, start + _READ_ROWS)])


def _summary(data: Any, length: int) -> dict[str, float]:
    """count/mean/std/min/max over every sample, read block by block."""
    total, total_sq, count = 0.0, 0.0, 0
    low, high = np.inf, -np.inf
    for block in _blocks(data, length):
        values = block.astype(np.float64, copy=False).ravel()
        values = values[~np.isnan(values)]
        if values.size:
            total += float(values.sum())
            total_sq += float(np.square(values).sum())
            count += values.size
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if not count:
        return {"samples": float(length)}
    mean = total / count
    return {
        "samples": float(length),
        "mean": mean,
        "std": max(0.0, total_sq / count - mean * mean) ** 0.5,
        "min": low,
        "max": high,
    }


def _summary_line(summary: dict[str, float]) -> str:
    parts = [f"samples={int(summary['samples'])}"]
    parts += [
        f"{name}={summary[name]:.6g}" for name in ("mean", "std", "min", "max") if name in summary
    ]
    return "summary: " + " ".join(parts)


# -- copy -------------------------------------------------------------------------------
def cmd_copy(args: argparse.Namespace) -> int:
    """``simrecorder copy SRC DST [--keys GLOB] [--append | --force]``."""
    from ._copy import copy_store, select_keys

    with _read(args.src) as source:
        chosen = select_keys(source, args.keys)
        _check_destination(source, args.dst, append=args.append or args.force)
        destination = open_datastore(args.dst, mode="w" if args.force else "a")
        with destination, _progress(source, chosen, args.quiet) as bar:
            report = copy_store(
                source,
                destination,
                keys=args.keys,
                append=args.append or args.force,
                progress=bar.update,
            )
    print(
        f"copied {len(report.series)} series ({report.samples:,} samples, "
        f"{_size(report.nbytes)}) and {len(report.values)} values: {args.src} -> {args.dst}"
    )
    return 0


def _check_destination(source: DataStore, url: str, *, append: bool) -> None:
    """Refuse a destination that is the source, or holds keys (unless ``append``);
    looks without writing (a read-only open)."""
    try:
        with _read(url) as store:
            keys = store.keys()
            same = store.url == source.url or (
                store.local_path is not None
                and source.local_path is not None
                and os.path.realpath(store.local_path) == os.path.realpath(source.local_path)
            )
    except StoreNotFoundError:
        return
    if same:
        raise InvalidArgumentError(f"cannot copy {source.url} onto itself ({url})")
    if keys and not append:
        raise StoreExistsError(
            f"destination {url} is not empty ({len(keys)} keys, e.g. {keys[0]!r}): pass "
            "--append to add to it or --force to replace it"
        )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(source: DataStore, keys: list[str], quiet: bool) -> Any:
    """A tqdm bar over the samples to copy; none when quiet or stderr is no terminal."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    total = 0
    for key in keys:
        spec = source.series_spec(key) if source.node_type(key) == "series" else None
        if spec is not None:
            total += sample_count(source, key, spec.kind)
    return tqdm(total=total, unit="samples", unit_scale=True, file=sys.stderr, leave=False)


# -- export -----------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    """``simrecorder export URL OUT`` (``.nc``, ``.csv``, ``.parquet``)."""
    suffix = os.path.splitext(args.out)[1].lower()
    writers = {".nc": _write_netcdf, ".csv": _write_csv, ".parquet": _write_parquet}
    if suffix not in writers:
        raise InvalidArgumentError(
            f"cannot export to {args.out}: the suffix must be one of {sorted(writers)}"
        )
    directory = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(directory):
        raise StoreNotFoundError(f"cannot write {args.out}: no such directory {directory}")
    partial = f"{args.out}.partial"
    with _read(args.url) as store:
        try:
            writers[suffix](store, partial, args.keys)
            os.replace(partial, args.out)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    print(f"exported {args.url} -> {args.out}")
    return 0


def _nc_name(name: str) -> str:
    """A NetCDF name for a key (``/`` separates groups in NetCDF-4): ``a/b`` -> ``a.b``."""
    return name.replace("/", ".")


def _nc_attr(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.number, np.ndarray)):
        return value
    return json.dumps(value, default=str)


def _write_netcdf(store: DataStore, out: str, keys: list[str] | None) -> None:
    from .xarray_backend import to_xarray

    _need("h5netcdf", "xarray")
    dataset = to_xarray(store, keys)
    names = {name: _nc_name(str(name)) for name in [*dataset.variables, *dataset.dims]}
    dataset = dataset.rename({old: new for old, new in names.items() if old != new})
    dataset.attrs = {
        _nc_name(k.replace("value:", "value.")): _nc_attr(v)
        for k, v in dataset.attrs.items()
        if v is not None
    }
    for variable in dataset.variables.values():
        variable.attrs = {k: _nc_attr(v) for k, v in variable.attrs.items() if v is not None}
    dataset.to_netcdf(out, engine="h5netcdf")


def _write_csv(store: DataStore, out: str, keys: list[str] | None) -> None:
    from .xarray_backend import to_pandas

    to_pandas(store, keys).to_csv(out)


def _write_parquet(store: DataStore, out: str, keys: list[str] | None) -> None:
    from .xarray_backend import to_pandas

    _need("pyarrow", "parquet")
    frame = to_pandas(store, keys)
    frame.columns = [str(c) for c in frame.columns]
    frame.to_parquet(out)


def _need(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"this export needs the package {module!r}: pip install 'simrecorder[{extra}]'"
        )


# -- plot -------------------------------------------------------------------------------
def cmd_plot(args: argparse.Namespace) -> int:
    """``simrecorder plot URL KEY... -o out.png``."""
    from ._plot import plot_series

    try:
        width, height = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        raise InvalidArgumentError(
            f"--size {args.size!r}: expected WIDTHxHEIGHT in pixels"
        ) from None
    with _read(args.url) as store:
        for key in args.keys:
            if store.node_type(key) != "series":
                raise KeyNotFoundError(f"no series {key!r} in {store!r}")
        plot_series(store, args.keys, args.output, width=width, height=height, dpi=args.dpi)
    print(f"plotted {', '.join(args.keys)} -> {args.output}")
    return 0


# -- tail -------------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    """``simrecorder tail [-f] URL KEY``: the last samples, then new ones as they come."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _read(args.url) as store:
        spec = _wait_for_series(store, args.key, deadline if args.follow else time.monotonic())
        shown = max(0, sample_count(store, args.key, spec.kind) - args.lines)
        while True:
            data = store.get_all(args.key)
            length = len(data)
            if length > shown:
                for index, value in zip(range(shown, length), data[shown:length], strict=False):
                    print(f"{index:>10}  {value}", flush=True)
                shown = length
                if deadline is not None:
                    deadline = time.monotonic() + args.timeout
            if not args.follow or (deadline is not None and time.monotonic() > deadline):
                return 0
            time.sleep(args.interval)


def _wait_for_series(store: DataStore, key: str, deadline: float | None) -> Any:
    while True:
        spec = store.series_spec(key) if store.node_type(key) == "series" else None
        if spec is not None:
            return spec
        if deadline is not None and time.monotonic() >= deadline:
            raise KeyNotFoundError(f"no series {key!r} in {store!r}")
        time.sleep(0.1)


# -- runs -------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    """``simrecorder runs GLOB [--json]``: one row per run of a sweep."""
    urls = _run_urls(args.pattern)
    if not urls:
        raise StoreNotFoundError(f"no run matches {args.pattern}")
    rows = [row for row in map(_run_row, urls) if row is not None]
    if not rows:
        raise StoreNotFoundError(f"no run matches {args.pattern} (no store among {urls[:3]})")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table: list[tuple[str, ...]] = [("run", "series", "samples", "size", "attrs")]
    for row in rows:
        attrs = " ".join(f"{k}={v}" for k, v in row["attrs"].items())
        table.append(
            (row["url"], str(row["series"]), f"{row['samples']:,}", _size(row["bytes"]), attrs)
        )
    print(_table(table))
    return 0


def _run_urls(pattern: str) -> list[str]:
    if "://" in pattern and pattern.split("://", 1)[0].startswith(("redis", "rediss")):
        from . import list_redis_runs  # needs redis-py

        base, _, query = pattern.partition("?")
        wanted = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("prefix", "*")
        prefixes = [p for p in list_redis_runs(base) if fnmatch.fnmatchcase(p, wanted)]
        return [f"{base}?prefix={p}" for p in prefixes]
    scheme, sep, path = pattern.rpartition("://")
    head = f"{scheme}{sep}"
    return [f"{head}{p}" for p in sorted(glob.glob(path if sep else pattern))]


def _run_row(url: str) -> dict[str, Any] | None:
    """The row of one run; None for a matched file that is no store (by its name)."""
    try:
        store = _read(url)
    except UnknownDataStoreError:
        return None
    with store:
        nodes = list(iter_nodes(store))
        attrs = run_attrs(store)
        local = store.local_path
    series = [n for n in nodes if n.spec is not None]
    return {
        "url": url,
        "series": len(series),
        "samples": sum(int(n.count or 0) for n in series),
        "bytes": _disk_bytes(local) if local else sum(int(n.nbytes or 0) for n in series),
        "attrs": {k: v for k, v in attrs.items() if k not in _PROVENANCE},
    }


def _disk_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
