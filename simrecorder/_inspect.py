"""Reading what a store holds without reading its samples: what ``simrecorder ls``,
``copy`` and :func:`simrecorder.to_xarray` share. Works on every backend through the
DataStore contract (``get_all`` gives lazy views for dense series)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._describe import Description
from ._schema import DENSE, SeriesSpec
from .datastores.base import DataStore

__all__ = ["Node", "describe_of", "iter_nodes", "sample_count"]

#: run attributes that are a store's bookkeeping, not the run's metadata
INTERNAL_ATTRS = frozenset(
    {"simrecorder_format", "simrecorder_epoch", "simrecorder_clean", "simrecorder_commit"}
)


@dataclass(frozen=True)
class Node:
    """One key of a store: a series (``spec`` set) or a single value.

    Attributes
    ----------
    key
        The key path.
    kind
        ``'dense'``, ``'str'``, ``'bytes'``, ``'object'`` or ``'value'``.
    spec
        The series' spec, None for a value.
    count
        Samples in the series (None for a value).
    nbytes
        Bytes of the samples once read (dense series), else None.
    description
        The series' :class:`~simrecorder._describe.Description`.
    """

    key: str
    kind: str
    spec: SeriesSpec | None
    count: int | None
    nbytes: int | None
    description: Description

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (``simrecorder ls --json``)."""
        spec = self.spec
        dense = spec is not None and spec.kind == DENSE
        return {
            "key": self.key,
            "kind": self.kind,
            "dtype": str(spec.dtype) if dense and spec is not None else None,
            "sample_shape": list(spec.shape or ()) if dense and spec is not None else None,
            "count": self.count,
            "bytes": self.nbytes,
            "attrs": {
                **self.description.cf_attrs(),
                **({"dims": list(self.description.dims)} if self.description.dims else {}),
                **({"time": self.description.time} if self.description.time else {}),
            },
        }


def sample_count(store: DataStore, key: str, kind: str) -> int:
    """Samples in the series ``key`` without reading (or decoding) them: from the
    store's ``series_length`` when it has one, else from the array's shape; the store's
    own reading path (``get_all``) when neither gives an answer."""
    length = getattr(store, "series_length", None)
    if callable(length):
        return int(length(key))
    if kind == DENSE and store.supports_lazy_views:
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


def describe_of(store: DataStore, key: str) -> Description:
    """The description of the series ``key``; empty where the store keeps none."""
    if not store.supports_series_attrs:
        return Description()
    return Description.from_attrs(store.series_attrs(key))


def iter_nodes(store: DataStore, keys: list[str] | None = None) -> Iterator[Node]:
    """A :class:`Node` per key of ``store`` (or of ``keys``), in key order; keys removed
    while listing are left out."""
    for key in store.keys() if keys is None else keys:
        node = store.node_type(key)
        if node == "value":
            yield Node(key, "value", None, None, None, Description())
            continue
        spec = store.series_spec(key) if node == "series" else None
        if spec is None:
            continue
        count = sample_count(store, key, spec.kind)
        nbytes = count * spec.sample_nbytes if spec.kind == DENSE else None
        yield Node(key, spec.kind, spec, count, nbytes, describe_of(store, key))


def run_attrs(store: DataStore) -> dict[str, Any]:
    """The run's attributes without the store's bookkeeping."""
    return {name: v for name, v in store.attrs.items() if name not in INTERNAL_ATTRS}


def scalar_summary(data: Any) -> dict[str, float]:
    """count, mean, std, min, max of numeric ``data`` (NaNs ignored)."""
    array = np.asarray(data)
    if array.size == 0 or not np.issubdtype(array.dtype, np.number):
        return {"count": float(array.shape[0]) if array.ndim else 0.0}
    values = array.astype(np.float64, copy=False)
    return {
        "count": float(array.shape[0]),
        "mean": float(np.nanmean(values)),
        "std": float(np.nanstd(values)),
        "min": float(np.nanmin(values)),
        "max": float(np.nanmax(values)),
    }
