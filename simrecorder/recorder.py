"""The :class:`Recorder`: buffered fan-out of samples to one or more data stores."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from ._buffer import SeriesBuffer, make_buffer, one_sample_block
from ._keys import parent_keys, validate_key
from ._schema import SeriesSpec, infer_spec, merge_specs
from .datastores.base import DataStore, check_key_free, check_sample_size
from .errors import KeyConflictError, KeyNotFoundError, StoreClosedError, StoreWriteError

__all__ = ["Recorder"]

_open_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _close_open_recorders() -> None:
    # interpreter exit flushes and closes whatever the user left open
    for recorder in list(_open_recorders):
        try:
            recorder.close()
        except Exception:  # noqa: BLE001 - nothing left to report to at exit
            pass


class Recorder:
    """Record simulation data into one or more data stores.

    ``record(key, value)`` appends one sample to the series ``key``. Samples are
    buffered per series and handed to every store as whole blocks, when a block is
    full (``max_records`` samples or ``max_bytes`` bytes), when its oldest sample is
    about ``max_seconds`` old, and on :meth:`get_all`, :meth:`flush`, :meth:`close`
    and interpreter exit. A crash loses at most the samples still in the buffers.

    Parameters
    ----------
    *datastores
        :class:`~simrecorder.datastores.DataStore` objects, or URLs for
        :func:`~simrecorder.open_datastore`. Reads use the first one.
    max_records
        Samples per block at most (per series).
    max_bytes
        Bytes per block at most (per series). A dense sample at least this large is
        written directly, without buffering.
    max_seconds
        Flush buffered samples about this many seconds after they were recorded;
        ``None`` disables the time limit. The check costs nothing per record: a
        background timer arms the next ``record`` call to flush.
    attrs
        Run metadata written to every store (see :attr:`attrs`).

    Examples
    --------
    >>> from simrecorder import Recorder, InMemoryDataStore
    >>> with Recorder(InMemoryDataStore()) as rec:
    ...     for step in range(3):
    ...         rec.record("loss", 1.0 / (step + 1))
    ...     rec.get_all("loss")
    array([1.        , 0.5       , 0.33333333])
    """

    def __init__(
        self,
        *datastores: DataStore | str,
        max_records: int = 1 << 20,
        max_bytes: int = 1 << 20,
        max_seconds: float | None = 1.0,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if not datastores:
            raise TypeError("Recorder needs at least one DataStore (e.g. InMemoryDataStore())")
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be at least 1")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError("max_seconds must be positive or None")
        from .datastores.registry import open_datastore

        stores = []
        for store in datastores:
            if isinstance(store, str):
                store = open_datastore(store)
            elif not isinstance(store, DataStore):
                raise TypeError(f"expected a DataStore or a URL, got {type(store).__name__}")
            store.open()
            stores.append(store)
        self.datastores: tuple[DataStore, ...] = tuple(stores)
        self.max_records = int(max_records)
        self.max_bytes = int(max_bytes)
        self.max_seconds = max_seconds
        self._buffers: dict[str, SeriesBuffer] = {}
        self._buffer_groups: set[str] = set()
        self._pending: dict[DataStore, list[tuple[str, SeriesSpec, Any]]] = {}
        self._dirty: set[DataStore] = set()
        self._due = False
        self._closed = False
        self._copy_large = any(store.retains_blocks for store in stores)
        self._nul_free_str = any(not store.supports_nul_in_str for store in stores)
        self._timer: _FlushTimer | None = None
        if attrs:
            self.attrs.update(attrs)
        if max_seconds is not None:
            # ticking at half the limit bounds a sample's wait at about max_seconds
            # (a tick only arms the next record call, so the extra ticks cost nothing)
            self._timer = _FlushTimer(self, max_seconds / 2)
            self._timer.start()
        _open_recorders.add(self)
        # atexit runs hooks last-registered-first: registering again after the stores'
        # libraries were imported makes our flush run before h5py closes its files
        atexit.unregister(_close_open_recorders)
        atexit.register(_close_open_recorders)

    # -- the hot path -------------------------------------------------------------------
    def record(self, key: str, value: Any, datastore: DataStore | int | None = None) -> None:
        """Append one sample to the series ``key``.

        Parameters
        ----------
        key
            ``/``-separated key path, e.g. ``'neurons/v'``.
        value
            The sample: a number, a numpy array, a str, bytes, or any object the
            object codec encodes (lists, dicts, ragged arrays, ...). The value is
            copied: changing it afterwards does not change what was recorded.
        datastore
            Record into this store only (one of :attr:`datastores`, or its index).

        Raises
        ------
        SchemaError
            The sample does not fit the series (dtype, shape or kind); nothing
            recorded before is touched.
        InvalidKeyError
            ``key`` is not a valid key path.
        StoreClosedError
            The recorder is closed.
        StoreWriteError
            A store failed while a full block was written; the block is kept and
            written again by the next :meth:`flush`.
        """
        buf = self._buffers.get(key)
        if buf is None or datastore is not None or type(value) is not buf.fast_type:
            return self._record_slow(key, value, datastore)
        values = buf.values
        values.append(value)
        if len(values) >= buf.limit:
            self._on_full(buf)

    def _record_slow(self, key: str, value: Any, datastore: DataStore | int | None) -> None:
        self._check_open(key)
        if datastore is not None:
            self._record_to(key, value, self._resolve(datastore))
            return
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._new_buffer(key, value, self.datastores)
            try:
                full = buf.append(value)
            except BaseException:
                # a rejected first sample must not fix the series' kind
                del self._buffers[key]
                self._buffer_groups = {p for k in self._buffers for p in parent_keys(k)}
                raise
        else:
            full = buf.append(value)
        if full:
            self._on_full(buf)

    def _check_key_usable(self, key: str, want: str, stores: tuple[DataStore, ...]) -> None:
        """Raise unless ``key`` can be a ``want`` (series or value) here and in ``stores``.

        Buffered series count too: they may not have reached any store yet.
        """
        validate_key(key)
        if key in self._buffer_groups:
            raise KeyConflictError(f"key {key!r} is a group of recorded series, not a {want}")
        if want == "value" and key in self._buffers:
            raise KeyConflictError(f"key {key!r} is a recorded series, cannot set a value there")
        for parent in parent_keys(key):
            if parent in self._buffers:
                raise KeyConflictError(f"key {key!r}: its parent {parent!r} is a series")
        for store in stores:
            if store.closed:
                continue  # a store that is away is checked when its blocks are written
            store._check_writable(key)
            check_key_free(store, key, want)

    def _new_buffer(self, key: str, value: Any, stores: tuple[DataStore, ...]) -> SeriesBuffer:
        spec = self._spec_for(key, value, stores)
        buf = make_buffer(
            key,
            spec,
            max_records=self.max_records,
            max_bytes=self.max_bytes,
            copy_large=self._copy_large,
            nul_free_str=self._nul_free_str,
        )
        self._buffers[key] = buf
        self._buffer_groups.update(parent_keys(key))
        return buf

    def _spec_for(self, key: str, value: Any, stores: tuple[DataStore, ...]) -> SeriesSpec:
        self._check_key_usable(key, "series", stores)
        spec = None
        for store in stores:
            existing = None if store.closed else store.series_spec(key)
            if existing is not None:
                merge_specs(key, existing, value)
                spec = spec or existing
        if spec is None:
            spec = infer_spec(value)
        merge_specs(key, spec, value)
        check_sample_size(key, spec, stores)
        return spec

    def _record_to(self, key: str, value: Any, store: DataStore) -> None:
        # Rare path: write straight through, after whatever is buffered for the key,
        # so the store sees the samples in recording order.
        validate_key(key)
        shared = self._buffers.get(key)
        if shared is not None:
            merge_specs(key, shared.spec, value)
            spec = shared.spec
        else:
            spec = self._spec_for(key, value, (store,))
        # checks the sample before anything is written
        block = one_sample_block(key, spec, value, nul_free_str=not store.supports_nul_in_str)
        if shared is not None:
            self._flush_buffer(shared)
        self._write(key, spec, block, (store,))
        self._flush_stores()

    def _on_full(self, buf: SeriesBuffer) -> None:
        if self._due:
            self.flush()
        elif buf.compact():
            self._flush_buffer(buf)
            self._flush_stores()

    # -- flushing -----------------------------------------------------------------------
    # A store that fails gets its blocks queued in self._pending (in order); every other
    # store keeps receiving blocks, and each flush() retries the queue first.
    def _flush_buffer(self, buf: SeriesBuffer) -> None:
        buf.limit = buf.full_at
        block = buf.take()
        if block is not None:
            self._write(buf.key, buf.spec, block, self.datastores)

    def _write(self, key: str, spec: SeriesSpec, block: Any, stores: tuple[DataStore, ...]) -> None:
        failures = []
        for store in stores:
            queue = self._pending.get(store)
            if queue:
                queue.append((key, spec, _owned(block)))  # keep order behind failed blocks
                continue
            try:
                store.append_block(key, spec, block)
                self._dirty.add(store)
            except Exception as exc:  # noqa: BLE001 - re-raised below, block kept
                self._pending.setdefault(store, []).append((key, spec, _owned(block)))
                failures.append((store, exc))
        if failures:
            store, exc = failures[0]
            raise StoreWriteError(
                f"writing a block of key {key!r} to {store!r} failed: {exc}. "
                "The block is kept; call flush() to write it again."
            ) from exc

    def _retry_pending(self, only: DataStore | None = None) -> StoreWriteError | None:
        """Write kept blocks, store by store; return the first error instead of raising."""
        error = None
        for store, queue in list(self._pending.items()):
            if only is not None and store is not only:
                continue
            while queue:
                key, spec, block = queue[0]
                try:
                    store.append_block(key, spec, block)
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    error = error or StoreWriteError(
                        f"writing a kept block of key {key!r} to {store!r} failed again: "
                        f"{exc}. {len(queue)} block(s) are kept for the next flush()."
                    )
                    error.__cause__ = error.__cause__ or exc
                    break
                queue.pop(0)
                self._dirty.add(store)
            if not queue:
                del self._pending[store]
        return error

    def _flush_stores(self) -> StoreWriteError | None:
        dirty, self._dirty = self._dirty, set()
        error = None
        for store in dirty:
            try:
                store.flush()
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                self._dirty.add(store)
                if error is None:
                    error = StoreWriteError(f"flushing {store!r} failed: {exc}")
                    error.__cause__ = exc
        return error

    def flush(self) -> None:
        """Write every buffered sample to every store and flush the stores.

        A failing store does not hold the others back: they receive every block, and
        the failing store's blocks are kept, in order, for the next ``flush()``.

        Raises
        ------
        StoreWriteError
            A store failed (the first failure is reported).
        """
        self._check_open()
        self._due = False
        error = self._retry_pending() if self._pending else None
        for buf in list(self._buffers.values()):
            try:
                self._flush_buffer(buf)
            except StoreWriteError as exc:
                error = error or exc
        error = error or self._flush_stores()
        if error is not None:
            raise error

    def _mark_due(self) -> None:
        """Called by the flush timer (another thread): make the next record flush."""
        self._due = True
        for buf in list(self._buffers.values()):
            if len(buf):
                buf.limit = 0

    # -- reading ------------------------------------------------------------------------
    def _resolve(self, datastore: DataStore | int | None) -> DataStore:
        if datastore is None:
            return self.datastores[0]
        if isinstance(datastore, int):
            return self.datastores[datastore]
        if isinstance(datastore, DataStore):
            return datastore
        raise TypeError(f"datastore must be a DataStore or an index, got {datastore!r}")

    def _flush_key(self, key: str, store: DataStore) -> None:
        """Write what is buffered under ``key`` before ``store`` is read."""
        error = self._retry_pending(store) if self._pending.get(store) else None
        prefix = key + "/"
        for buf_key, buf in list(self._buffers.items()):
            if buf_key == key or buf_key.startswith(prefix):
                try:
                    self._flush_buffer(buf)
                except StoreWriteError as exc:
                    # only a failure of the store being read hides data from this read
                    if self._pending.get(store):
                        error = error or exc
        error = error or self._flush_stores()
        if error is not None and self._pending.get(store):
            raise error

    def get_all(self, key: str, datastore: DataStore | int | None = None) -> Any:
        """Return every sample recorded under ``key``.

        A dense series comes back as a numpy array (a lazy, sliceable view such as
        ``HDFView`` on disk stores, which supports ``len``, slicing and
        ``np.asarray``); str, bytes and object series as lists. For a group key, a
        dict from the keys below it (relative) to their data.

        Raises
        ------
        KeyNotFoundError
            Nothing is stored under ``key``.
        """
        self._check_open(key)
        validate_key(key)
        store = self._resolve(datastore)
        self._flush_key(key, store)
        node = store.node_type(key)
        if node == "series":
            return store.get_all(key)
        if node == "group":
            prefix = key + "/"
            return {k[len(prefix) :]: store.get(k) for k in store.keys(key)}
        if node == "value":
            return store.get(key)
        raise KeyNotFoundError(f"no series {key!r} in {store!r}")

    def set(self, key: str, value: Any, datastore: DataStore | int | None = None) -> None:
        """Store a single value under ``key`` (overwriting an earlier one).

        Raises
        ------
        KeyConflictError
            ``key`` is a recorded series or a group.
        """
        self._check_open(key)
        stores = self.datastores if datastore is None else (self._resolve(datastore),)
        self._check_key_usable(key, "value", stores)
        for store in stores:
            store.set(key, value)

    def get(self, key: str, datastore: DataStore | int | None = None) -> Any:
        """Return the value stored by :meth:`set` under ``key``, or None when absent."""
        self._check_open(key)
        validate_key(key)
        store = self._resolve(datastore)
        if key in self._buffers:
            self._flush_key(key, store)
        return store.get(key)

    def keys(self, prefix: str = "", datastore: DataStore | int | None = None) -> list[str]:
        """Sorted keys of all series and values (below the key path ``prefix``)."""
        self._check_open()
        if prefix:
            validate_key(prefix)
        self.flush()
        return self._resolve(datastore).keys(prefix)

    @property
    def attrs(self) -> RecorderAttrs:
        """Run metadata: reads from the first store, writes go to every store."""
        return RecorderAttrs(self)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self, key: str | None = None) -> None:
        if self._closed:
            where = f" (key {key!r})" if key is not None else ""
            raise StoreClosedError(f"the Recorder is closed{where}")

    def close(self) -> None:
        """Flush everything and close every store. Closing twice is a no-op.

        If a store fails, every other store has still received everything, and
        ``close()`` raises :class:`StoreWriteError` and leaves the recorder open, so
        that ``close()`` (or ``flush()``) can be called again once the store is back.
        """
        if self._closed:
            return
        self.flush()
        if self._timer is not None:
            self._timer.stop()
        self._closed = True
        self._buffers = {}  # makes the hot path fall through to the closed check
        _open_recorders.discard(self)
        error = None
        for store in self.datastores:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._buffers)} series"
        return f"Recorder({', '.join(map(repr, self.datastores))}) <{state}>"


def _owned(block: Any) -> Any:
    """``block``, copied if it is a view of a caller's array (large samples are passed
    through without a copy, which is only safe while they are written at once)."""
    if isinstance(block, np.ndarray) and block.base is not None:
        return block.copy()
    return block


class RecorderAttrs(MutableMapping):
    """Mapping view of run metadata: reads the first store, writes to all stores."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def _current(self) -> dict[str, Any]:
        return self._recorder.datastores[0].attrs

    def __getitem__(self, name: str) -> Any:
        return self._current()[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # one write per store
        """Write several entries to every store at once."""
        entries = dict(other, **kwargs)
        for store in self._recorder.datastores:
            store.update_attrs(entries)

    def __delitem__(self, name: str) -> None:
        raise TypeError("recorder attrs cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"RecorderAttrs({self._current()!r})"


class _FlushTimer(threading.Thread):
    """Arms the recorder's next ``record`` to flush every ``interval`` seconds."""

    def __init__(self, recorder: Recorder, interval: float) -> None:
        super().__init__(name="simrecorder-flush-timer", daemon=True)
        self._recorder = weakref.ref(recorder)
        self._interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            recorder = self._recorder()
            if recorder is None or recorder.closed:
                return
            recorder._mark_due()
            del recorder

    def stop(self) -> None:
        self._stopped.set()
