"""In-memory data store: numpy blocks, no per-sample Python objects for dense series."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _codec
from .._keys import parent_keys, validate_key
from .._modes import check_mode, plan_open
from .._schema import DENSE, OBJECT, SeriesSpec
from ..errors import KeyNotFoundError
from .base import DataStore, NodeType, check_key_free

__all__ = ["InMemoryDataStore"]


class _Series:
    """Blocks of one series; dense blocks are joined lazily, on read.

    The store keeps every block as it is handed over (the recorder's buffer lets go
    of it: no copy at flush). A read joins the blocks recorded since the last read
    into ``joined``, whose first ``rows`` rows are the series; the array grows by
    doubling when it is re-allocated, so reading after every few records costs the
    new rows, not the whole series each time. Rows once joined never change: views
    returned by earlier reads stay right.
    """

    __slots__ = ("attrs", "blocks", "joined", "rows", "spec")

    def __init__(self, spec: SeriesSpec) -> None:
        self.spec = spec
        self.blocks: list[Any] = []
        self.attrs: dict[str, Any] = {}  # set_series_attrs
        self.joined: np.ndarray | None = None  # dense series only
        self.rows = 0

    def dense(self) -> np.ndarray:
        if self.blocks:
            self._join()
        if self.joined is None:
            view = np.empty((0, *self.spec.dense_shape), dtype=self.spec.dense_dtype)
        else:
            view = self.joined[: self.rows]
        view.flags.writeable = False  # callers must not change recorded data in place
        return view

    def _join(self) -> None:
        blocks, self.blocks = self.blocks, []
        if self.joined is None and len(blocks) == 1:
            self.joined = blocks[0]  # one block: read as it is
            self.rows = len(blocks[0])
            return
        rows = self.rows
        total = rows + sum(len(block) for block in blocks)
        if self.joined is None or total > len(self.joined):
            grown = np.empty(
                (max(total, 2 * rows), *self.spec.dense_shape), dtype=self.spec.dense_dtype
            )
            if self.joined is not None:
                grown[:rows] = self.joined[:rows]
            self.joined = grown  # earlier views keep the old array alive, unchanged
        for block in blocks:  # only rows beyond every earlier view are written
            self.joined[rows : rows + len(block)] = block
            rows += len(block)
        self.rows = rows

    def items(self) -> list[Any]:
        if len(self.blocks) > 1:
            self.blocks = [[item for block in self.blocks for item in block]]
        return list(self.blocks[0]) if self.blocks else []


class InMemoryDataStore(DataStore):
    """Keep everything in this process' memory.

    Data survives :meth:`close`: a store closed by one recorder can be handed to the
    next one (``Recorder(store)`` reopens it), as with SimRecorder. Dense series are
    returned as read-only numpy arrays (copy them to modify).

    Parameters
    ----------
    mode
        See :mod:`simrecorder._modes`. A new memory store has no name, so it never
        holds an earlier run: every mode but ``'r'`` gives a writable, empty store;
        ``'r'`` gives a read-only one.

    Examples
    --------
    >>> store = InMemoryDataStore()
    >>> store.append("x", 1.5)
    >>> store.get_all("x")
    array([1.5])
    """

    protocol = "memory"
    retains_blocks = True
    supports_series_attrs = True

    def __init__(self, mode: str | None = None) -> None:
        mode = check_mode(mode)
        super().__init__()
        self.mode = mode
        # the new object is the whole store: 'r' and 'r+' find it (empty), the other
        # modes create it; no earlier run exists, so there is nothing to resume
        plan = plan_open(mode, mode in ("r", "r+"), "memory://")
        self._apply_open_plan(plan)
        self._series: dict[str, _Series] = {}
        self._values: dict[str, Any] = {}
        self._groups: dict[str, int] = {}  # group key -> number of nodes below it
        self._attrs: dict[str, Any] = {}

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> InMemoryDataStore:
        # docstring inherited
        return cls(**kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return "memory://"

    def __repr__(self) -> str:
        return f"InMemoryDataStore() <{len(self._series)} series at {id(self):#x}>"

    def _close(self) -> None:
        # docstring inherited; nothing to release, the data stays for the next open()
        pass

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        if key in self._series:
            return "series"
        if key in self._values:
            return "value"
        if key in self._groups:
            return "group"
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        series = self._series.get(key)
        return series.spec if series is not None else None

    def _add_node(self, key: str) -> None:
        for parent in parent_keys(key):
            self._groups[parent] = self._groups.get(parent, 0) + 1

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        self._check_writable(key)
        series = self._series.get(key)
        if series is not None:
            series.blocks.append(block)  # one step: taken, or not at all
            return
        series = _Series(spec)
        series.blocks.append(block)
        self._add_node(key)  # counts only need to be > 0: a retry may count twice
        self._series[key] = series  # the commit point: the new series appears whole

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        series = self._series.get(key)
        if series is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        if series.spec.kind == DENSE:
            return series.dense()
        items = series.items()
        if series.spec.kind == OBJECT:
            return [_codec.decode(item) for item in items]
        return items

    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        if key not in self._values:
            self._add_node(key)
        self._values[key] = copy.deepcopy(value)

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        return copy.deepcopy(self._values[key])

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        names = list(self._series) + list(self._values)
        if prefix:
            names = [k for k in names if k == prefix or k.startswith(prefix + "/")]
        return sorted(names)

    def flush(self) -> None:
        # docstring inherited
        self._check_open()

    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        return dict(self._attrs)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        self._attrs.update(copy.deepcopy(dict(attrs)))

    # -- series attributes --------------------------------------------------------------
    def _described(self, key: str) -> _Series:
        series = self._series.get(key)
        if series is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        return series

    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable(key)
        self._described(key).attrs.update(copy.deepcopy(dict(attrs)))

    def series_attrs(self, key: str) -> dict[str, Any]:
        # docstring inherited
        self._check_open(key)
        return copy.deepcopy(self._described(key).attrs)
