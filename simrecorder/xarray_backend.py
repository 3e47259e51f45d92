"""A run as an :class:`xarray.Dataset` or a :class:`pandas.DataFrame`.

:func:`to_xarray` works on every store (any :func:`~simrecorder.open_datastore` URL
or an open :class:`~simrecorder.DataStore`): dense series become lazy variables
backed by the store's own lazy views (no dask); dims and coordinates come from
:meth:`Recorder.describe <simrecorder.Recorder.describe>`; the run's attributes are
``Dataset.attrs``. ``xr.open_dataset(url, engine="simrecorder")`` does the same
through xarray's backend entry point. xarray and pandas are optional extras
(``pip install 'simrecorder[xarray]'``), imported when used.

Dimensions
    The sample axis of a series described with ``time='t'`` is the dimension ``t``
    (the series ``t`` is its coordinate); otherwise it is ``step`` (the sample index).
    Series whose length differs from the most common one among the ``step`` series
    get their own ``<key>_step``. Sample axes are named by ``dims=`` (default
    ``<key>_dim1``, ...). A series whose time series is shorter (a run still being
    written) is cut to its length, and so is the time series to the shortest of them.
Variables
    Named by their key (``neurons/v``). str series become object arrays; bytes and
    object series are left out (listed in ``attrs['simrecorder_left_out']``); single
    values that are numbers or text are attributes ``value:<key>``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._inspect import Node, iter_nodes, run_attrs
from ._registry import import_backend
from ._schema import DENSE, STR
from .datastores.base import DataStore
from .datastores.registry import open_datastore
from .errors import KeyNotFoundError

__all__ = ["SimRecorderBackendEntrypoint", "to_pandas", "to_xarray"]

try:  # the bases xarray documents for backends; without xarray, to_xarray says so
    from xarray.backends import BackendArray as _ArrayBase
    from xarray.backends import BackendEntrypoint as _EntrypointBase
except ImportError:  # pragma: no cover - the xarray extra is missing
    _ArrayBase = object  # type: ignore[assignment,misc]
    _EntrypointBase = object  # type: ignore[assignment,misc]

STEP = "step"


def _xarray() -> Any:
    return import_backend("xarray", "xarray", what="to_xarray")


def _open(store_or_url: DataStore | str | os.PathLike[str]) -> tuple[DataStore, bool]:
    """The store, and whether it was opened here (and is to be closed by the caller)."""
    if isinstance(store_or_url, DataStore):
        return store_or_url, False
    return open_datastore(store_or_url, mode="r"), True


def to_xarray(
    store_or_url: DataStore | str | os.PathLike[str], keys: Iterable[str] | None = None
) -> Any:
    """The run as an :class:`xarray.Dataset` of lazy variables (see the module docs).

    Parameters
    ----------
    store_or_url
        An open store (left open) or a URL/path (opened read-only; ``ds.close()``
        closes it).
    keys
        The series to include (default: all); a group key takes every series below it.

    Raises
    ------
    KeyNotFoundError
        A key in ``keys`` names nothing in the store.
    MissingDependencyError
        xarray is not installed.
    """
    xr = _xarray()
    store, opened = _open(store_or_url)
    try:
        dataset = _build(xr, store, None if keys is None else list(keys))
    except BaseException:
        if opened:
            store.close()
        raise
    if opened:
        dataset.set_close(store.close)
    return dataset


def _selected(store: DataStore, keys: list[str] | None) -> list[str] | None:
    if keys is None:
        return None
    found: list[str] = []
    for key in keys:
        below = store.keys(key)
        if not below:
            raise KeyNotFoundError(f"no key {key!r} in {store!r}")
        found.extend(k for k in below if k not in found)
    return found


def _build(xr: Any, store: DataStore, keys: list[str] | None) -> Any:
    nodes = list(iter_nodes(store, _selected(store, keys)))
    series = {n.key: n for n in nodes if n.spec is not None}
    attrs = {n: _attr_value(v) for n, v in run_attrs(store).items()}
    left_out = [n.key for n in nodes if n.kind not in (DENSE, STR, "value")]
    for node in nodes:
        if node.kind == "value":
            value = store.get(node.key)
            if isinstance(value, (str, int, float, bool, np.generic)):
                attrs[f"value:{node.key}"] = _attr_value(value)
    if left_out:
        attrs["simrecorder_left_out"] = left_out
    wanted = {k: n for k, n in series.items() if n.kind in (DENSE, STR)}
    # a time series used by a selected series is part of the Dataset
    for node in list(wanted.values()):
        time = node.description.time
        if time and time not in wanted:
            extra = next(iter(iter_nodes(store, [time])), None)
            if extra is not None and extra.kind == DENSE:
                wanted[time] = extra
    axis0, rows = _time_axes(wanted)
    variables = {
        key: _variable(xr, store, node, axis0[key], rows[key]) for key, node in wanted.items()
    }
    coords = _sample_coords(wanted)
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _time_axes(nodes: dict[str, Node]) -> tuple[dict[str, str], dict[str, int]]:
    """The name of each series' first dimension and the rows it shows."""
    axis0: dict[str, str] = {}
    rows: dict[str, int] = {}
    timed = {k: n.description.time for k, n in nodes.items() if n.description.time in nodes}
    time_keys = set(timed.values())
    for key in time_keys:
        group = [key, *(k for k, t in timed.items() if t == key)]
        length = min(int(nodes[k].count or 0) for k in group)
        for member in group:
            axis0[member], rows[member] = key, length
    plain = [k for k in nodes if k not in axis0]
    common = Counter(int(nodes[k].count or 0) for k in plain).most_common(1)
    for key in plain:
        count = int(nodes[key].count or 0)
        axis0[key] = STEP if common and count == common[0][0] else f"{key}_{STEP}"
        rows[key] = count
    return axis0, rows


def _sample_dims(node: Node) -> tuple[str, ...]:
    ndim = len(node.spec.shape or ()) if node.spec is not None and node.kind == DENSE else 0
    dims = node.description.dims
    if dims is not None and len(dims) == ndim:
        return tuple(dims)
    return tuple(f"{node.key}_dim{axis}" for axis in range(1, ndim + 1))


def _sample_coords(nodes: dict[str, Node]) -> dict[str, Any]:
    coords: dict[str, Any] = {}
    for node in nodes.values():
        for name, values in node.description.coords.items():
            coords.setdefault(name, values)
    return coords


def _variable(xr: Any, store: DataStore, node: Node, axis0: str, rows: int) -> Any:
    dims = (axis0, *_sample_dims(node))
    attrs = {n: _attr_value(v) for n, v in node.description.cf_attrs().items()}
    if node.kind == STR:
        items = store.get_all(node.key)[:rows]
        return xr.Variable(dims, np.asarray(items, dtype=object), attrs=attrs)
    from xarray.core import indexing  # documented for backend authors

    array = indexing.LazilyIndexedArray(_ViewArray(store, node, rows))
    return xr.Variable(dims, array, attrs=attrs)


def _attr_value(value: Any) -> Any:
    """A run attribute as xarray/NetCDF keep it: nested data as JSON text."""
    import json

    if isinstance(value, (str, int, float, bool, np.generic, np.ndarray)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return json.dumps(value, default=str)


class _ViewArray(_ArrayBase):
    """The first ``rows`` samples of a dense series, read through the store's view
    on each indexing (an xarray ``BackendArray``)."""

    def __init__(self, store: DataStore, node: Node, rows: int) -> None:
        spec = node.spec
        assert spec is not None
        self._store = store
        self._key = node.key
        self.shape = (rows, *(spec.shape or ()))
        self.dtype = np.dtype(spec.dtype)

    def __getitem__(self, key: Any) -> Any:
        from xarray.core import indexing

        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, index: tuple[Any, ...]) -> np.ndarray:
        first, rest = index[0], index[1:]
        if isinstance(first, slice):
            start, stop, step = first.indices(self.shape[0])
            first = slice(start, max(start, stop), step)
        view = self._store.get_all(self._key)
        return np.asarray(view[(first, *rest)])


def to_pandas(
    store_or_url: DataStore | str | os.PathLike[str], keys: Iterable[str] | None = None
) -> Any:
    """A :class:`pandas.DataFrame` of the scalar series (one number per sample), one
    column each, rows aligned by sample index (``step``); when the series share one
    time coordinate (``describe(..., time='t')``) it is the index instead.

    Shorter series end in NaN. Reads the series into memory.
    """
    pd = import_backend("pandas", "xarray", what="to_pandas")
    store, opened = _open(store_or_url)
    try:
        nodes = list(iter_nodes(store, _selected(store, None if keys is None else list(keys))))
        scalar = {
            n.key: n for n in nodes if n.kind == DENSE and n.spec is not None and not n.spec.shape
        }
        times = {n.description.time for n in scalar.values() if n.description.time}
        for time in times - set(scalar):
            extra = next(iter(iter_nodes(store, [time])), None)
            if extra is not None and extra.kind == DENSE and extra.spec and not extra.spec.shape:
                scalar[time] = extra
        columns = {
            key: pd.Series(np.asarray(store.get_all(key)[: int(n.count or 0)]))
            for key, n in scalar.items()
        }
        frame = pd.DataFrame(columns)
        frame.index.name = STEP
        if len(times) == 1 and next(iter(times)) in frame.columns:
            frame = frame.set_index(next(iter(times)))
        return frame
    finally:
        if opened:
            store.close()


class SimRecorderBackendEntrypoint(_EntrypointBase):
    """``xr.open_dataset(url, engine="simrecorder")`` for every store URL
    (registered as the ``xarray.backends`` entry point ``simrecorder``)."""

    description = "simrecorder runs (HDF5, zarr, LMDB, Redis, block stores) via to_xarray"
    url = "https://github.com/simrecorder/simrecorder"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "keys")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: Iterable[str] | None = None,
        keys: Iterable[str] | None = None,
    ) -> Any:
        """Open the run ``filename_or_obj`` (a URL, a path or a DataStore)."""
        dataset = to_xarray(filename_or_obj, keys)
        if drop_variables:
            dataset = dataset.drop_vars(list(drop_variables), errors="ignore")
        return dataset

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for URLs only simrecorder opens (``redis://``, ``zarr+lmdb://``,
        ``blocks+...``); plain ``.h5``/``.zarr`` paths are left to xarray's own
        engines unless ``engine='simrecorder'`` is given."""
        if isinstance(filename_or_obj, DataStore):
            return True
        if not isinstance(filename_or_obj, str) or "://" not in filename_or_obj:
            return False
        scheme = filename_or_obj.split("://", 1)[0].lower()
        return scheme.startswith(("redis", "rediss", "blocks+", "zarr+", "mummi+", "memory"))
