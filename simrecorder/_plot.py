"""``simrecorder plot``: lines for scalar series, a heatmap for series of vectors, a
raster for spike-like ragged series (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._describe import Description
from ._inspect import describe_of
from ._registry import import_backend
from ._schema import DENSE, OBJECT
from .datastores.base import DataStore
from .errors import InvalidArgumentError

__all__ = ["plot_series"]

#: rows drawn per series at most (longer series are strided)
MAX_ROWS = 20000


def plot_series(
    store: DataStore,
    keys: Sequence[str],
    out: str,
    *,
    width: int = 800,
    height: int = 600,
    dpi: int = 100,
) -> None:
    """Draw each series of ``keys`` in its own panel into the PNG ``out`` of exactly
    ``width`` x ``height`` pixels; labels come from the series' descriptions."""
    import_backend("matplotlib", "plot", what="simrecorder plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width < 50 or height < 50 or dpi < 10:
        raise InvalidArgumentError(f"plot size {width}x{height} at {dpi} dpi is too small")
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        _panel(ax, store, key)
    figure.savefig(out, dpi=dpi, format="png")


def _time_axis(
    store: DataStore, description: Description, rows: slice, length: int
) -> tuple[Any, str]:
    """x values and label: the time series when described with ``time=``, else the index."""
    if description.time and store.node_type(description.time) == "series":
        times = store.get_all(description.time)
        if len(times) >= length:
            return np.asarray(times[rows]), describe_of(store, description.time).label(
                description.time
            )
    return np.arange(length)[rows], "step"


def _panel(ax: Any, store: DataStore, key: str) -> None:
    spec = store.series_spec(key)
    description = describe_of(store, key)
    data = store.get_all(key)
    length = len(data)
    rows = slice(0, length, max(1, -(-length // MAX_ROWS)))
    x, xlabel = _time_axis(store, description, rows, length)
    ax.set_title(description.long_name or key)
    ax.set_xlabel(xlabel)
    if spec is not None and spec.kind == DENSE and len(spec.shape or ()) == 0:
        ax.plot(x, np.asarray(data[rows]))
        ax.set_ylabel(description.label(key))
    elif spec is not None and spec.kind == DENSE:
        _heatmap(ax, np.asarray(data[rows]), x, description)
    elif spec is not None and spec.kind == OBJECT:
        when = _raster(ax, data, rows, x)
        ax.set_ylabel("id")
        if when is not None:
            ax.set_xlabel(when)
    else:
        raise InvalidArgumentError(f"cannot plot {key!r}: a {spec.kind if spec else '?'} series")


def _heatmap(ax: Any, values: np.ndarray, x: Any, description: Description) -> None:
    values = values.reshape(len(values), -1).astype(np.float64)
    extent = None
    if len(x) > 1:
        extent = (float(x[0]), float(x[-1]), values.shape[1] - 0.5, -0.5)
    image = ax.imshow(values.T, aspect="auto", interpolation="nearest", extent=extent)
    ax.figure.colorbar(image, ax=ax, label=description.label("value"))
    ax.set_ylabel(description.dims[0] if description.dims else "index")


_TIME_FIELDS = ("t", "t_ms", "time")


def _raster(ax: Any, data: Any, rows: slice, x: Any) -> str | None:
    """Spikes: each sample is ids (a list/array) or a dict with ``ids`` (and a time
    field, which is then the x axis: its name is returned for the label)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    field = None
    for position, sample in zip(x, data[rows], strict=False):
        ids, when, field = _spikes_of(sample, position)
        xs.append(np.broadcast_to(when, ids.shape))
        ys.append(ids)
    if xs:
        ax.scatter(np.concatenate(xs), np.concatenate(ys), s=1, marker="|")
    return field


def _spikes_of(sample: Any, position: Any) -> tuple[np.ndarray, Any, str | None]:
    if isinstance(sample, dict):
        ids = sample.get("ids", next(iter(sample.values()), []))
        field = next((k for k in _TIME_FIELDS if k in sample), None)
        when = position if field is None else sample[field]
        return np.atleast_1d(np.asarray(ids, dtype=np.float64)).ravel(), when, field
    return np.atleast_1d(np.asarray(sample, dtype=np.float64)).ravel(), position, None
