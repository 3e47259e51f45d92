"""Copy a run from any store to any store, block by block (``simrecorder copy``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _codec
from ._inspect import INTERNAL_ATTRS, sample_count
from ._schema import DENSE, OBJECT, SeriesSpec
from .datastores.base import DataStore
from .errors import KeyNotFoundError, SchemaError, StoreExistsError, StoreWriteError

__all__ = ["CopyReport", "copy_store", "select_keys"]

#: bytes of samples read and written per block (memory use is a few blocks)
BLOCK_BYTES = 1 << 20
#: items per block of str/bytes/object series
BLOCK_ITEMS = 4096
#: a destination that queues blocks (Redis) is flushed after this many bytes
FLUSH_BYTES = 32 << 20


@dataclass
class CopyReport:
    """What :func:`copy_store` did.

    Attributes
    ----------
    series
        Samples copied per series key.
    values
        Keys of the single values copied.
    samples, nbytes
        Samples and bytes (of dense samples) copied.
    """

    series: dict[str, int] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    samples: int = 0
    nbytes: int = 0


def select_keys(store: DataStore, patterns: Sequence[str] | None) -> list[str]:
    """The keys of ``store`` matching any of the glob ``patterns`` (all when None); a
    pattern also matches every key below a matching group (``neurons`` takes
    ``neurons/v``)."""
    keys = store.keys()
    if not patterns:
        return keys
    chosen = [
        key
        for key in keys
        if any(fnmatch.fnmatchcase(key, p) or key.startswith(p.rstrip("/") + "/") for p in patterns)
    ]
    if not chosen:
        raise KeyNotFoundError(f"no key of {store!r} matches {list(patterns)}")
    return chosen


def copy_store(
    source: DataStore,
    destination: DataStore,
    *,
    keys: Sequence[str] | None = None,
    append: bool = False,
    progress: Callable[[int], Any] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> CopyReport:
    """Copy the series, values, series attributes and run attributes of ``source``
    into ``destination``, reading and writing one block at a time (memory stays
    about ``block_bytes`` per block, whatever the run's size).

    Parameters
    ----------
    keys
        Glob patterns of the keys to copy (default: all).
    append
        Continue series that ``destination`` already holds (same kind, dtype and
        sample shape); without it a non-empty destination is refused.
    progress
        Called with the number of samples after each block.

    Raises
    ------
    StoreExistsError
        ``destination`` holds keys and ``append`` is false.
    SchemaError
        A series exists in both stores with different specs.
    StoreWriteError
        The destination's counts do not match after the copy.
    """
    chosen = select_keys(source, keys)
    existing = destination.keys()
    if existing and not append:
        raise StoreExistsError(
            f"{destination!r} is not empty ({len(existing)} keys, e.g. {existing[0]!r}): "
            "pass --append to add to it or --force to replace it"
        )
    report = CopyReport()
    expected: dict[str, int] = {}
    copier = _Copier(destination, block_bytes, progress)
    for key in chosen:
        node = source.node_type(key)
        if node == "value":
            destination.set(key, source.get(key))
            report.values.append(key)
            continue
        spec = source.series_spec(key)
        if node != "series" or spec is None:
            continue  # removed while we copied
        before = _existing_count(destination, key, spec)
        copied = copier.series(source, key, spec)
        report.series[key] = copied
        report.samples += copied
        if spec.kind == DENSE:
            report.nbytes += copied * spec.sample_nbytes
        expected[key] = before + copied
        _copy_series_attrs(source, destination, key)
    attrs = {name: v for name, v in source.attrs.items() if name not in INTERNAL_ATTRS}
    attrs["simrecorder_copied_from"] = _safe_url(source)
    destination.update_attrs(attrs)
    destination.flush()
    destination.commit()
    _verify(destination, expected)
    return report


class _Copier:
    """Moves one series at a time in blocks, flushing a queueing destination."""

    def __init__(
        self, destination: DataStore, block_bytes: int, progress: Callable[[int], Any] | None
    ) -> None:
        self.destination = destination
        self.block_bytes = max(1, int(block_bytes))
        self.progress = progress
        self.unflushed = 0

    def series(self, source: DataStore, key: str, spec: SeriesSpec) -> int:
        data = source.get_all(key)
        count = len(data)  # a lazy view: rows appended later are not copied
        if spec.kind == DENSE:
            rows = max(1, self.block_bytes // max(1, spec.sample_nbytes))
        else:
            rows = BLOCK_ITEMS
        if count == 0:
            self._put(key, spec, _empty(spec))
        for start in range(0, count, rows):
            stop = min(count, start + rows)
            self._put(key, spec, _block(spec, data, start, stop))
            if self.progress is not None:
                self.progress(stop - start)
        return count

    def _put(self, key: str, spec: SeriesSpec, block: Any) -> None:
        self.destination.append_block(key, spec, block)
        self.unflushed += block.nbytes if isinstance(block, np.ndarray) else len(block) * 64
        if self.unflushed >= FLUSH_BYTES:
            self.destination.flush()
            self.unflushed = 0


def _block(spec: SeriesSpec, data: Any, start: int, stop: int) -> Any:
    if spec.kind == DENSE:
        # a new, writable, contiguous array: the destination owns it from now on
        return np.array(data[start:stop], dtype=spec.dtype, copy=True, order="C")
    items = list(data[start:stop])
    return [_codec.encode(item) for item in items] if spec.kind == OBJECT else items


def _empty(spec: SeriesSpec) -> Any:
    if spec.kind == DENSE:
        return np.empty((0, *(spec.shape or ())), dtype=spec.dtype)
    return []


def _existing_count(destination: DataStore, key: str, spec: SeriesSpec) -> int:
    node = destination.node_type(key)
    if node is None:
        return 0
    have = destination.series_spec(key) if node == "series" else None
    if have is None or have != spec:
        raise SchemaError(
            f"key {key!r}: {destination!r} holds a {have or node} there, the source a "
            f"{spec}: cannot append"
        )
    return sample_count(destination, key, spec.kind)


def _copy_series_attrs(source: DataStore, destination: DataStore, key: str) -> None:
    if not (source.supports_series_attrs and destination.supports_series_attrs):
        return
    attrs = source.series_attrs(key)
    if attrs:
        destination.set_series_attrs(key, attrs)


def _safe_url(store: DataStore) -> str:
    """The store's URL without a password (``redis://user:secret@host``)."""
    url = store.url
    head, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        auth, _, host = rest.partition("@")
        user = auth.split(":", 1)[0]
        return f"{head}://{user}@{host}" if user else f"{head}://{host}"
    return url


def _verify(destination: DataStore, expected: dict[str, int]) -> None:
    """Raise :class:`StoreWriteError` naming the series whose count is not the one
    written."""
    wrong = []
    for key, want in expected.items():
        spec = destination.series_spec(key)
        got = -1 if spec is None else sample_count(destination, key, spec.kind)
        if got != want:
            wrong.append(f"{key!r} has {got} samples, expected {want}")
    if wrong:
        raise StoreWriteError(
            f"copy into {destination!r} did not verify: {'; '.join(wrong[:5])}"
            f"{' ...' if len(wrong) > 5 else ''}"
        )
