"""The :class:`Recorder`: buffered fan-out of samples to one or more data stores."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from ._buffer import LargeSampleBuffer, SeriesBuffer, SlowPath, make_buffer, one_sample_block
from ._keys import parent_keys, validate_key
from ._schema import SeriesSpec, infer_spec, merge_specs, stored_schema_error
from ._signals import deferred_signals
from .datastores.base import DataStore, check_key_free, check_sample_size
from .deadletter import default_dead_letter_dir, write_dead_letter
from .errors import (
    ArgumentTypeError,
    BlocksQuarantinedError,
    ForkedRecorderError,
    InvalidArgumentError,
    KeyConflictError,
    KeyNotFoundError,
    SchemaError,
    StoreClosedError,
    StoreWriteError,
    ValueOutOfRangeError,
    is_transient,
)

__all__ = ["Recorder"]

_open_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _close_open_recorders() -> None:
    # interpreter exit flushes and closes whatever the user left open
    for recorder in list(_open_recorders):
        recorder._final_close()


def _flush_open_recorders() -> None:
    # Runs when the main thread ends, before concurrent.futures shuts its thread pools
    # down (which happens before atexit hooks): zarr writes through such a pool, so an
    # open recorder's buffers must reach its stores now. Closing waits for atexit, as
    # non-daemon threads may still be recording.
    for recorder in list(_open_recorders):
        with recorder._lock:
            if recorder._closed or recorder._forked:
                continue
            try:
                recorder._epoch(retry=True)
            except Exception:  # noqa: BLE001 - the atexit close reports and quarantines
                pass


def _hook_thread_shutdown() -> None:
    """Have :func:`_flush_open_recorders` run at interpreter shutdown before the thread
    pools stop. The hook list is CPython's ``threading._register_atexit`` (the one
    concurrent.futures uses itself); it runs last-registered-first, so registering once
    concurrent.futures is imported puts the flush ahead of the pools' shutdown."""
    global _thread_hook_after_futures
    register = getattr(threading, "_register_atexit", None)
    if register is None or _thread_hook_after_futures:
        return
    try:
        register(_flush_open_recorders)
    except RuntimeError:  # already shutting down
        return
    _thread_hook_after_futures = "concurrent.futures.thread" in sys.modules


_thread_hook_after_futures = False


def _forget_inherited_recorders() -> None:
    # after os.fork(), in the child: the buffers hold the parent's samples and the
    # stores the parent's handles; writing either would duplicate or corrupt the
    # parent's data, so the child's copies go quiet (see ForkedRecorderError)
    for recorder in list(_open_recorders):
        recorder._forget_after_fork()
    _open_recorders.clear()


os.register_at_fork(after_in_child=_forget_inherited_recorders)


class _Backlog:
    """What the recorder keeps for one failing store: blocks in order, the last error.

    The recorder is the one layer that retries: a block a store did not take waits
    here until the store takes it, or until it is quarantined (see
    :mod:`simrecorder.deadletter`).
    """

    __slots__ = ("error", "items", "last_try", "nbytes")

    def __init__(self) -> None:
        self.items: deque[tuple[str, SeriesSpec, Any, float, int]] = deque()
        self.nbytes = 0
        self.error: BaseException | None = None
        self.last_try = 0.0

    def keep(self, key: str, spec: SeriesSpec, block: Any) -> None:
        size = block.nbytes if isinstance(block, np.ndarray) else sum(map(len, block))
        self.items.append((key, spec, _owned(block), time.monotonic(), size))
        self.nbytes += size

    def pop(self) -> tuple[str, SeriesSpec, Any]:
        key, spec, block, _, size = self.items.popleft()
        self.nbytes -= size
        return key, spec, block


class Recorder:
    """Record simulation data into one or more data stores.

    ``record(key, value)`` appends one sample to the series ``key``. Samples are
    buffered per series and handed to every store as whole blocks, when a block is
    full (``max_records`` samples or ``max_bytes`` bytes), when its oldest sample is
    about ``max_seconds`` old, and on :meth:`get_all`, :meth:`flush`, :meth:`close`
    and interpreter exit. The stores commit what they hold (an *epoch*) about every
    ``max_seconds``, after every ``epoch_bytes`` of full blocks, and at
    :meth:`flush`/:meth:`close`: a crash loses at most what was recorded since the
    last epoch.

    Parameters
    ----------
    *datastores
        :class:`~simrecorder.datastores.DataStore` objects, or URLs for
        :func:`~simrecorder.open_datastore`. Reads use the first one.
    max_records
        Samples per block at most (per series).
    max_bytes
        Bytes per block at most (per series). The rows of a block of dense samples are
        cut down to a multiple of a power of two (by less than a fifth: 524 samples of
        8000 bytes become 512), so that blocks are whole chunks of the stores. An
        array series starts with blocks of at most 1 MiB and gets full ones once it
        fills one (quiet series cost what they hold). A dense sample at least this
        large is written directly, without buffering.
    max_seconds
        Flush buffered samples about this many seconds after they were recorded;
        ``None`` disables the time limit. The check costs nothing per record: a
        background timer arms the next ``record`` call to flush.
    epoch_bytes
        Run an epoch (every buffer written, every store flushed and committed) once
        full blocks of this many bytes were written since the last one. Each commit
        costs a store a flush and a metadata write; smaller values bound what a
        crash can lose more tightly (``0``: an epoch after every full block).
    attrs
        Run metadata written to every store (see :attr:`attrs`).
    dead_letter_dir
        Where blocks a store cannot take are quarantined (see
        :mod:`simrecorder.deadletter`); by default ``<store path>.dead-letter`` beside
        a store on disk, ``./simrecorder-dead-letter/<store>`` otherwise.
    give_up_seconds
        How long blocks are kept in memory and retried for a store that fails
        transiently (server away, disk full) before they are quarantined.
    retry_seconds
        While a store fails, a ``record`` call retries it at most this often (each
        failed try may wait for a network time-out); ``flush()`` and ``close()``
        always retry.
    max_kept_bytes
        Bytes kept in memory for one failing store at most; older blocks beyond it
        are quarantined.
    blobs
        Where :meth:`record_blob` stores files and snapshots: a
        :class:`~simrecorder.blobs.HashKeyStorage`, or what it takes (a folder path, a
        location). Default: the folder ``<store path>.blobs`` beside the first store on
        disk, memory for an in-memory store (see :attr:`blobs`).

    Notes
    -----
    Failures never lose or duplicate data silently (README, "What happens when things
    fail"): a store that fails transiently keeps receiving its blocks in order once it
    is back, and every ``record`` that writes, every ``flush`` and ``close`` raise
    :class:`~simrecorder.errors.StoreWriteError` until it is; blocks a store can never
    take go to the dead-letter directory and are reported with
    :class:`~simrecorder.errors.BlocksQuarantinedError`. Buffers are written in
    *epochs* (every series at once), after which each store commits, so a crash leaves
    series that a resumed run sees aligned. ``record`` may be called from several
    threads. Ctrl-C during a flush is held back until the flush is complete. A
    recorder that is garbage-collected or still open at exit is flushed and closed;
    after ``os.fork()`` the child's copy raises
    :class:`~simrecorder.errors.ForkedRecorderError`.

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
        max_bytes: int = 4 << 20,
        max_seconds: float | None = 1.0,
        epoch_bytes: int = 8 << 20,
        attrs: Mapping[str, Any] | None = None,
        dead_letter_dir: str | os.PathLike[str] | None = None,
        give_up_seconds: float = 600.0,
        retry_seconds: float = 1.0,
        max_kept_bytes: int = 1 << 30,
        blobs: Any = None,
    ) -> None:
        if not datastores:
            raise ArgumentTypeError(
                "Recorder needs at least one DataStore (e.g. InMemoryDataStore())"
            )
        for name, number in (
            ("max_records", max_records),
            ("max_bytes", max_bytes),
            ("epoch_bytes", epoch_bytes),
        ):
            if not isinstance(number, int) or isinstance(number, bool):
                raise ArgumentTypeError(f"{name} must be an int, got {number!r}")
        if max_records < 1 or max_bytes < 1:
            raise InvalidArgumentError("max_records and max_bytes must be at least 1")
        if max_seconds is not None and max_seconds <= 0:
            raise InvalidArgumentError("max_seconds must be positive or None")
        if epoch_bytes < 0:
            raise InvalidArgumentError(f"epoch_bytes must be 0 or more, got {epoch_bytes}")
        from .datastores.registry import open_datastore

        stores = []
        self._opened_here: list[DataStore] = []  # created from URLs: ours to close
        for store in datastores:
            if isinstance(store, str):
                store = open_datastore(store)
                self._opened_here.append(store)
            elif not isinstance(store, DataStore):
                raise ArgumentTypeError(
                    f"expected a DataStore or a URL, got {type(store).__name__}"
                )
            store.open()
            stores.append(store)
        self.datastores: tuple[DataStore, ...] = tuple(stores)
        self.max_records = int(max_records)
        self.max_bytes = int(max_bytes)
        self.max_seconds = max_seconds
        self.epoch_bytes = int(epoch_bytes)
        self._handed = 0  # bytes of full blocks handed to the stores since the last epoch
        self._background_error: Exception | None = None  # of an epoch the timer ran
        self._buffers: dict[str, SeriesBuffer] = {}
        self._buffer_groups: set[str] = set()
        self._stored_in: dict[str, str] = {}  # series continued from a store: its repr
        # out-of-range samples the buffers left out, not reported yet: key -> (dtype, values)
        self._rejected: dict[str, tuple[str, list[Any]]] = {}
        self._backlogs: dict[DataStore, _Backlog] = {}
        self._dirty: set[DataStore] = set()
        self._quarantined: list[tuple[DataStore, str, str]] = []  # (store, key, file)
        self._reported = 0  # quarantined blocks already reported
        self._dead_letter_dir = None if dead_letter_dir is None else os.fspath(dead_letter_dir)
        self.give_up_seconds = float(give_up_seconds)
        self.retry_seconds = float(retry_seconds)
        self.max_kept_bytes = int(max_kept_bytes)
        self._blobs: Any = blobs  # made a HashKeyStorage on first use (see the blobs property)
        self._lock = threading.RLock()
        self._pivot: SeriesBuffer | None = None  # see _arm_epoch
        self._pivot_fast_type: type | None = None
        self._forced = False  # the armed epoch waited too long: run it at any record
        self._forked = False
        self._due = False
        self._closed = False
        self._closing = False  # close() is flushing: buffers are retired (see close)
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
        _hook_thread_shutdown()

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
            recorded before is touched. When the series already exists in a store
            (an earlier run), the message names that store and both schemas.
        ValueOutOfRangeError
            A number outside the range of the series' dtype (``1e300`` into float32,
            ``300`` into uint8, ``2**70`` into int64); a :class:`SchemaError` and a
            ``ValueError``. Such a sample is never recorded (never wrapped around or
            turned into ``inf``); every other sample is, in order. Samples that
            need a check are refused by their own ``record`` call. Python floats
            into a float16/float32 series (and complex into complex64) take the fast
            path unchecked: they are checked when the buffer packs them (every
            8192 samples of the key, and at every flush, also the timer's or a
            read's), and the error is raised by that ``record`` call (whose own
            sample is recorded), else by the next ``record`` that writes or the next
            :meth:`flush` or :meth:`close`; it names the key and lists the refused
            values (``error.values``).
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
        try:
            values.append(value)  # a list, or an array series' ArrayBlock (takes the lock)
        except SlowPath:  # an array of another dtype or shape: checked there
            return self._record_slow(key, value, datastore)
        if len(values) >= buf.limit:
            self._on_full(buf)

    def _record_slow(self, key: str, value: Any, datastore: DataStore | int | None) -> None:
        with self._lock:
            self._record_locked(key, value, datastore)

    def _record_locked(self, key: str, value: Any, datastore: DataStore | int | None) -> None:
        self._check_open(key)
        if datastore is not None:
            self._record_to(key, value, self._resolve(datastore))
            return
        error = None
        if self._pivot is not None and self._pivot.key == key:
            try:  # the armed epoch, at the step boundary (see _arm_epoch)
                self._epoch(retry=False)
            except StoreWriteError as exc:
                error = exc  # raised after the sample is recorded: it is not lost
        self._append_locked(key, value)
        if error is not None:
            raise error
        if self._rejected:
            self._raise_rejected()

    def _append_locked(self, key: str, value: Any) -> None:
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
            try:
                full = buf.append(value)
            except SchemaError as exc:
                where = self._stored_in.get(key)
                if where is None:
                    raise
                raise stored_schema_error(exc, key, buf.spec, value, where) from None
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
            store.check_key(key)
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
            lock=self._lock,
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
                merge_specs(key, existing, value, where=repr(store))
                if spec is None:
                    spec = existing
                    self._stored_in[key] = repr(store)
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
        with deferred_signals():
            if shared is not None:
                self._flush_buffer(shared)
            self._write(key, spec, block, (store,))
            self._finish(commit=False)
        self._raise_for(self.datastores)

    def _on_full(self, buf: SeriesBuffer) -> None:
        with self._lock:
            if self._closed or self._forked:
                self._check_open(buf.key)
            if self._forced:
                self._epoch(retry=False)
                self._raise_rejected()
                return
            large = type(buf) is LargeSampleBuffer
            full = large or buf.compact()
            if buf.rejected:
                self._note_rejected(buf)
            epoch = self._due
            if full:  # an epoch every epoch_bytes of full blocks (each, while a store
                # fails: its epochs retry it and bound what is kept for it)
                self._handed += max(buf.nbytes, len(buf) * buf.spec.sample_nbytes)
                epoch = epoch or self._handed >= self.epoch_bytes or bool(self._backlogs)
            if epoch and self._pivot is None:
                self._arm_epoch(buf)
            if full:
                # a full block is handed over at once, alone; an armed epoch (every
                # epoch_bytes of them, or when due) writes the rest, then flushes and
                # commits at the step boundary (a store that queues, like Redis, sends
                # it with the epoch). A large sample may be a view of the caller's
                # array: it is flushed at once.
                with deferred_signals():
                    self._flush_buffer(buf)
                    if large:
                        self._finish(commit=False)
                self._raise_for(self.datastores)
            if self._rejected:
                self._raise_rejected()

    def _arm_epoch(self, buf: SeriesBuffer) -> None:
        """Run an epoch just before ``buf``'s next sample.

        A buffer fills (or the timer fires) in the middle of a simulation step; the
        next sample of the same key starts the next step, so an epoch run then writes
        every series up to the same step, and the store commits aligned lengths. If
        that key does not come back within a timer tick, the timer forces the epoch
        at the next record of any key (``max_seconds`` still bounds a sample's wait).
        """
        self._pivot = buf
        self._pivot_fast_type = buf.fast_type
        buf.fast_type = None  # the key's next record takes the slow path, which runs it

    def _disarm_epoch(self) -> None:
        if self._pivot is not None:
            self._pivot.fast_type = self._pivot_fast_type
            self._pivot = None

    # -- flushing -----------------------------------------------------------------------
    # Every write happens in an epoch: each buffered series is handed to each store,
    # then each store flushes and commits. A store that fails gets a _Backlog: its
    # blocks wait there in order (every other store keeps receiving blocks) and are
    # retried by later epochs; blocks it can never take are quarantined to disk.
    def _epoch(self, *, retry: bool, raise_for: tuple[DataStore, ...] | None = None) -> None:
        """Write every buffered series to every store, then flush and commit them.

        Raises the first failure of a store in ``raise_for`` (all stores by default).
        ``retry`` retries failing stores now, instead of at most every
        ``retry_seconds``.
        """
        self._run_epoch(retry=retry)
        self._raise_for(self.datastores if raise_for is None else raise_for)

    def _run_epoch(self, *, retry: bool) -> None:
        """:meth:`_epoch` without raising what failed (the caller holds the lock)."""
        self._due = self._forced = False
        self._handed = 0
        self._disarm_epoch()
        with deferred_signals():
            self._retry_backlogs(force=retry)
            for buf in list(self._buffers.values()):
                self._flush_buffer(buf)
            self._finish(commit=True)

    def _flush_buffer(self, buf: SeriesBuffer) -> None:
        buf.limit = -1 if self._closing else buf.full_at
        block = buf.take()
        if buf.rejected:
            self._note_rejected(buf)
        if block is not None:
            self._write(buf.key, buf.spec, block, self.datastores)

    def _note_rejected(self, buf: SeriesBuffer) -> None:
        """Move the out-of-range samples ``buf`` left out of its blocks to the list
        :meth:`_raise_rejected` reports."""
        _, values = self._rejected.setdefault(buf.key, (str(buf.spec.dtype), []))
        values.extend(buf.rejected)
        buf.rejected = []

    def _take_rejected(self) -> ValueOutOfRangeError | None:
        """The error that reports the out-of-range samples of one key not reported yet
        (and forget them), or None. Other keys' wait for the next call."""
        if not self._rejected:
            return None
        key = next(iter(self._rejected))
        dtype, values = self._rejected.pop(key)
        shown = ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
        more = ""
        if key in self._stored_in:
            more = f" (the series continues the one in {self._stored_in[key]})"
        if self._rejected:
            more += f"; keys {', '.join(map(repr, self._rejected))} have some too"
        return ValueOutOfRangeError(
            f"key {key!r}: {len(values)} sample(s) recorded since the last check are out of "
            f"the range of the series' dtype {dtype} ({shown}) and were not recorded; every "
            f"other sample was, in order{more}. Record such numbers into a series of a "
            "wider dtype (e.g. float64), or clip them first",
            key=key,
            values=tuple(values[:100]),
            dtype=dtype,
        )

    def _raise_rejected(self) -> None:
        """Raise :class:`ValueOutOfRangeError` for samples the buffers left out (one
        key per call: the next call raises the next key's)."""
        error = self._take_rejected()
        if error is not None:
            raise error

    def _take_all_rejected(self) -> list[ValueOutOfRangeError]:
        """Every error :meth:`_take_rejected` has left (at close: nobody calls again)."""
        errors = []
        while (error := self._take_rejected()) is not None:
            errors.append(error)
        return errors

    def _write(self, key: str, spec: SeriesSpec, block: Any, stores: tuple[DataStore, ...]) -> None:
        for store in stores:
            backlog = self._backlogs.get(store)
            if backlog is not None:
                backlog.keep(key, spec, block)  # behind the blocks it has not taken yet
            else:
                self._deliver(store, key, spec, block)

    def _deliver(self, store: DataStore, key: str, spec: SeriesSpec, block: Any) -> None:
        """Hand one block to ``store``; keep or quarantine it when the store fails."""
        try:
            store.append_block(key, spec, block)
        except BaseException as exc:
            # the store took nothing (DataStore contract): the block is still ours
            if isinstance(exc, Exception) and not is_transient(exc):
                self._quarantine(store, [(key, spec, block)], exc)
                return
            self._mark_failing(store, exc).keep(key, spec, block)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the block is kept, the signal wins
            return
        self._dirty.add(store)

    def _mark_failing(self, store: DataStore, error: BaseException) -> _Backlog:
        """Record that ``store`` failed now; return its backlog (created if new)."""
        backlog = self._backlogs.setdefault(store, _Backlog())
        backlog.error = error
        backlog.last_try = time.monotonic()
        return backlog

    def _retry_backlogs(self, *, force: bool) -> None:
        now = time.monotonic()
        for store, backlog in list(self._backlogs.items()):
            self._give_up_old(store, backlog, now)
            if not force and now - backlog.last_try < self.retry_seconds:
                continue
            backlog.last_try = now
            while backlog.items:
                key, spec, block, _, _ = backlog.items[0]
                try:
                    store.append_block(key, spec, block)
                except Exception as exc:  # noqa: BLE001 - kept, reported by _raise_for
                    if is_transient(exc):
                        backlog.error = exc
                        break
                    backlog.pop()
                    self._quarantine(store, [(key, spec, block)], exc)
                    continue
                backlog.pop()
                self._dirty.add(store)
            else:
                if self._flush_store(store, commit=False):
                    del self._backlogs[store]

    def _give_up_old(self, store: DataStore, backlog: _Backlog, now: float) -> None:
        """Quarantine kept blocks older than give_up_seconds or beyond max_kept_bytes."""
        old = []
        while backlog.items and (
            now - backlog.items[0][3] > self.give_up_seconds or backlog.nbytes > self.max_kept_bytes
        ):
            old.append(backlog.pop())
        if old:
            self._quarantine(store, old, backlog.error)

    def _finish(self, *, commit: bool) -> None:
        """Flush (and, after an epoch, commit) every store that received blocks."""
        dirty, self._dirty = self._dirty, set()
        for store in dirty:
            if store in self._backlogs:
                self._dirty.add(store)  # flushed once its backlog is written
            else:
                self._flush_store(store, commit=commit)

    def _flush_store(self, store: DataStore, *, commit: bool) -> bool:
        try:
            store.flush()
            if commit:
                store.commit()
        except Exception as exc:  # noqa: BLE001 - kept, reported by _raise_for
            self._dirty.add(store)
            if not is_transient(exc):
                # the store cannot deliver what it holds: take it back, keep it on disk
                self._quarantine(store, store.surrender(), exc)
            self._mark_failing(store, exc)
            return False
        return True

    def _quarantine(
        self, store: DataStore, blocks: list[tuple[str, SeriesSpec, Any]], error: Any
    ) -> None:
        """Write ``blocks`` to ``store``'s dead-letter directory (kept in memory if even
        that fails, and retried by the next epoch)."""
        directory = self._dead_letter_dir or default_dead_letter_dir(store)
        for i, (key, spec, block) in enumerate(blocks):
            try:
                path = write_dead_letter(directory, store.url, key, spec, block, str(error))
            except Exception as exc:  # noqa: BLE001 - the block stays in memory
                backlog = self._mark_failing(
                    store,
                    StoreWriteError(f"cannot quarantine blocks of {store!r} in {directory}: {exc}"),
                )
                for key, spec, block in reversed(blocks[i:]):
                    backlog.keep(key, spec, block)
                    backlog.items.rotate(1)  # back to the front, in order
                return
            self._quarantined.append((store, key, path))

    def _raise_for(self, stores: tuple[DataStore, ...]) -> None:
        """Raise the first failure of ``stores``: a store still failing, else blocks
        quarantined since the last report."""
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error
        for store in stores:
            backlog = self._backlogs.get(store)
            if backlog is not None and backlog.error is not None:
                kept = len(backlog.items)
                error = StoreWriteError(
                    f"{store!r} failed: {backlog.error}. {kept} block(s) are kept in memory "
                    f"and written again by the next flush() (for up to "
                    f"{self.give_up_seconds:g} s, then quarantined to disk)"
                )
                raise error from backlog.error
        fresh = self._quarantined[self._reported :]
        if fresh:
            self._reported = len(self._quarantined)
            raise self._quarantine_error(fresh)

    @staticmethod
    def _quarantine_error(entries: list[tuple[DataStore, str, str]]) -> BlocksQuarantinedError:
        store, _, path = entries[0]
        keys = tuple(dict.fromkeys(key for _, key, _ in entries))
        directory = os.path.dirname(path)
        return BlocksQuarantinedError(
            f"{len(entries)} block(s) of key(s) {', '.join(map(repr, keys[:5]))}"
            f"{' ...' if len(keys) > 5 else ''} could not be written to {store!r} and were "
            f"saved in {directory} (simrecorder.deadletter.replay_dead_letters writes them "
            "to a store)",
            directory=directory,
            keys=keys,
        )

    def flush(self) -> None:
        """Write every buffered sample to every store and flush and commit the stores.

        A failing store does not hold the others back: they receive every block, and
        the failing store's blocks are kept, in order, for the next ``flush()``.

        Raises
        ------
        StoreWriteError
            A store is failing (raised by every flush until it is back).
        BlocksQuarantinedError
            Blocks a store could not take were saved in its dead-letter directory.
        ValueOutOfRangeError
            Samples taken by the fast path were out of the range of their series'
            dtype and were left out (see :meth:`record`).
        """
        with self._lock:
            self._check_open()
            self._epoch(retry=True)
            self._raise_rejected()

    def _tick(self) -> None:
        """Called by the flush timer (another thread) every ``max_seconds / 2``: make
        the next record run an epoch, or, when a whole tick went by without one (the
        simulation paused or ended without close), run it here, so what was recorded
        is committed about ``max_seconds`` later even if the process is then killed."""
        idle = self._due and (
            self._handed > 0 or bool(self._dirty) or any(map(len, self._buffers.values()))
        )
        if not idle:
            self._mark_due()
            return
        if not self._lock.acquire(blocking=False):
            return  # a record or a flush is writing: it runs the epoch
        try:
            if not (self._closed or self._closing or self._forked):
                self._run_epoch(retry=False)  # failures are kept: a later call raises them
        except Exception as exc:  # noqa: BLE001 - raised by the next record/flush/close
            self._background_error = exc
        finally:
            self._lock.release()

    def _mark_due(self) -> None:
        """Make the next record flush (see :meth:`_tick`)."""
        if self._pivot is not None:
            self._forced = True  # armed a tick ago and its key has not come back
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
        raise ArgumentTypeError(f"datastore must be a DataStore or an index, got {datastore!r}")

    def _flush_for_read(self, store: DataStore) -> None:
        """Write everything buffered before ``store`` is read; only a failure of that
        store (which would hide data from the read) is raised."""
        self._epoch(retry=True, raise_for=(store,))

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
        with self._lock:
            self._check_open(key)
            validate_key(key)
            store = self._resolve(datastore)
            self._flush_for_read(store)
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
        with self._lock:
            self._check_open(key)
            stores = self.datastores if datastore is None else (self._resolve(datastore),)
            self._check_key_usable(key, "value", stores)
            for store in stores:
                store.set(key, value)

    def describe(
        self,
        key: str,
        *,
        units: str | None = None,
        long_name: str | None = None,
        dims: Sequence[str] | None = None,
        coords: Mapping[str, Any] | None = None,
        time: str | None = None,
        **attrs: Any,
    ) -> None:
        """Store metadata on the series ``key`` in every store (merged with earlier
        calls): CF ``units`` and ``long_name``, names of the sample axes, their
        coordinate values and the series that is its time coordinate.

        Record a first sample of ``key`` before describing it (buffered samples of
        ``key`` are written first). Plain h5py/zarr see ``units``/``long_name`` as
        attributes of the series (the layout: :mod:`simrecorder._describe`);
        :func:`simrecorder.to_xarray` and the ``simrecorder`` command use them.

        Parameters
        ----------
        key
            A recorded series.
        units, long_name
            CF attributes, e.g. ``units='mV'``.
        dims
            Names of the sample axes (``('neuron',)`` for samples of shape ``(n,)``).
        coords
            Values along named axes: ``{'neuron': ids}``.
        time
            Key of a series holding the time of each sample (default: the sample
            index ``step``).
        **attrs
            More attributes (str, int, float or bool).

        Raises
        ------
        KeyNotFoundError
            ``key`` was never recorded.
        SeriesAttrsNotSupportedError
            A store keeps no series attributes (nothing is written to any store).
        InvalidArgumentError
            ``dims``/``coords`` do not fit the samples' shape.

        Examples
        --------
        >>> import numpy as np
        >>> from simrecorder import Recorder, InMemoryDataStore
        >>> rec = Recorder(InMemoryDataStore())
        >>> rec.record("v", np.array([0.1, 0.2]))
        >>> rec.describe("v", units="mV", dims=("neuron",), coords={"neuron": [7, 9]})
        >>> rec.datastores[0].series_attrs("v")["units"]
        'mV'
        >>> rec.close()
        """
        from ._describe import encode_description
        from .errors import SeriesAttrsNotSupportedError

        with self._lock:
            self._check_open(key)
            validate_key(key)
            lacking = [s for s in self.datastores if not s.supports_series_attrs]
            if lacking:
                raise SeriesAttrsNotSupportedError(
                    f"describe {key!r}: series attributes are not supported by this store: "
                    f"{lacking[0]!r}"
                )
            if key in self._buffers:
                self._epoch(retry=True, raise_for=self.datastores)
            first = self.datastores[0]
            spec = first.series_spec(key) if first.node_type(key) == "series" else None
            if spec is None:
                raise KeyNotFoundError(
                    f"describe {key!r}: no series {key!r} in {first!r}: record a sample first"
                )
            encoded = encode_description(
                key, spec, units=units, long_name=long_name, dims=dims, coords=coords,
                time=time, extra=attrs,
            )  # fmt: skip
            for store in self.datastores:
                store.set_series_attrs(key, encoded)

    def get(self, key: str, datastore: DataStore | int | None = None) -> Any:
        """Return the value stored by :meth:`set` under ``key``, or None when absent."""
        with self._lock:
            self._check_open(key)
            validate_key(key)
            store = self._resolve(datastore)
            if key in self._buffers:
                self._flush_for_read(store)
            return store.get(key)

    def keys(self, prefix: str = "", datastore: DataStore | int | None = None) -> list[str]:
        """Sorted keys of all series and values (below the key path ``prefix``)."""
        with self._lock:
            self._check_open()
            if prefix:
                validate_key(prefix)
            store = self._resolve(datastore)
            self._flush_for_read(store)
            return store.keys(prefix)

    def record_blob(self, key: str, value: Any, datastore: DataStore | int | None = None) -> str:
        """Store a file or a snapshot once in :attr:`blobs`; append its digest to ``key``.

        Parameters
        ----------
        key
            A str series: each call appends the blob's sha256 hex digest.
        value
            Bytes, a file path, or a readable binary stream (streamed in blocks).
        datastore
            As for :meth:`record`.

        Returns
        -------
        str
            The hex digest; read the blob back with ``rec.blobs.read(digest)``.
            Identical content is stored once and gets the same digest.

        Examples
        --------
        >>> from simrecorder import InMemoryDataStore, Recorder
        >>> with Recorder(InMemoryDataStore()) as rec:
        ...     digest = rec.record_blob("frames", b"frame-0")
        ...     with rec.blobs.read(rec.get_all("frames")[0]) as blob:
        ...         blob.read()
        b'frame-0'
        """
        self._check_open(key)
        validate_key(key)
        digest = self.blobs.write(value)
        self.record(key, digest.hex(), datastore)
        return str(digest.hex())

    @property
    def blobs(self) -> Any:
        """The :class:`~simrecorder.blobs.HashKeyStorage` of :meth:`record_blob`
        (``Recorder(blobs=)``, else ``<store path>.blobs`` beside the first store on disk,
        memory for an in-memory store; a Redis store alone needs ``blobs=``)."""
        from .blobs import recorder_blobs

        self._blobs = recorder_blobs(self._blobs, self.datastores)
        return self._blobs

    @property
    def attrs(self) -> RecorderAttrs:
        """Run metadata: reads from the first store, writes go to every store."""
        return RecorderAttrs(self)

    @property
    def storage(self) -> Any:
        """A :class:`~simrecorder.storage.StorageGroup` in the first persistent store
        that can hold one (an HDF5 file: it shares the store's open file; a zarr
        directory on local disk), for what a run keeps beside its series:
        ``rec.storage['params'] = params``. Written at each flush and at close; read
        with ``simrecorder.storage.load(path, 'params')``.

        Raises
        ------
        ArgumentTypeError
            No store of this recorder can hold a storage.
        """
        self._check_open()
        for store in self.datastores:
            if store.persistent and store.storage_kind() is not None:
                from .storage import storage_beside  # the storage layer beside this one

                return storage_beside(store).root
        raise ArgumentTypeError(
            f"none of this recorder's stores ({', '.join(map(repr, self.datastores))}) can "
            "hold a storage: rec.storage needs an HDF5 file or a zarr directory store"
        )

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self, key: str | None = None) -> None:
        where = f" (key {key!r})" if key is not None else ""
        if self._forked:
            raise ForkedRecorderError(
                f"this Recorder was inherited through os.fork(){where}: its buffered samples "
                "belong to the parent process. Create a new Recorder in the child"
            )
        if self._closed:
            raise StoreClosedError(f"the Recorder is closed{where}")

    def close(self) -> None:
        """Flush everything, commit and close every store. Closing twice is a no-op.

        If a store fails transiently (server away, disk full), every other store has
        still received everything, and ``close()`` raises :class:`StoreWriteError` and
        leaves the recorder open, so that ``close()`` (or ``flush()``) can be called
        again once the store is back. Blocks quarantined during the run do not keep
        the recorder open: it closes, then raises :class:`BlocksQuarantinedError`
        naming them and their dead-letter directory. Likewise, out-of-range samples
        found by the last packing close the recorder, then raise
        :class:`~simrecorder.errors.ValueOutOfRangeError` (see :meth:`record`).
        """
        with self._lock:
            if self._closed or self._forked:
                return
            # from here on a record() in another thread (the fast paths take no lock or
            # only the buffer's) reaches the checks, which wait for this close and then
            # raise StoreClosedError: none returns normally with its sample left behind
            self._closing = True
            for buf in self._buffers.values():
                buf.retire()
            try:
                self._epoch(retry=True)
            except BlocksQuarantinedError:
                pass  # saved on disk: close, then report every quarantined block below
            except BaseException:
                self._closing = False  # still open: close() can be called again
                for buf in self._buffers.values():
                    buf.revive()
                raise
            self._shutdown()
            errors: list[Exception] = list(self._take_all_rejected())
            if self._quarantined:
                errors.insert(0, self._quarantine_error(self._quarantined))
            if errors:  # closed all the same; the first error carries the others as notes
                for other in errors[1:]:
                    errors[0].add_note(f"also: {other}")
                raise errors[0]

    def _shutdown(self, stores: tuple[DataStore, ...] | None = None) -> None:
        """Stop the timer and close ``stores`` (all by default; the buffers are empty)."""
        if self._timer is not None:
            self._timer.stop()
        self._closed = True
        self._closing = False
        for buf in self._buffers.values():
            buf.retire()  # a record() that looked a buffer up just before must not use it
        self._buffers = {}  # makes the hot path fall through to the closed check
        _open_recorders.discard(self)
        error = None
        for store in self.datastores if stores is None else stores:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report
                error = error or exc
        if error is not None:
            # a store that could not close (e.g. a zip that cannot be packed on a full
            # disk) keeps the recorder open, so close() can be called again
            self._closed = False
            _open_recorders.add(self)
            if isinstance(error, StoreWriteError):
                raise error
            raise StoreWriteError(f"closing a store failed: {error}") from error

    def _final_close(self, *, collected: bool = False) -> None:
        """Close at interpreter exit or garbage collection, where no caller can retry:
        whatever a store still cannot take goes to its dead-letter directory.

        A recorder that is garbage-collected (``collected``) closes only the stores it
        opened from URLs: stores the caller passed in stay theirs to use and close.
        """
        with self._lock:
            if self._closed or self._forked:
                return
            stores = tuple(self._opened_here) if collected else None
            try:
                self._epoch(retry=True)
            except BlocksQuarantinedError:
                pass  # reported below
            except Exception:  # noqa: BLE001 - handled below, nobody left to raise to
                for buf in list(self._buffers.values()):
                    block = buf.take()
                    if buf.rejected:
                        self._note_rejected(buf)
                    if block is not None:
                        self._write(buf.key, buf.spec, block, self.datastores)
            for store, backlog in list(self._backlogs.items()):
                self._quarantine(store, [backlog.pop() for _ in range(len(backlog.items))],
                                 backlog.error)  # fmt: skip
                self._quarantine(store, store.surrender(), backlog.error)
            try:
                self._shutdown(stores)
            except Exception:  # noqa: BLE001 - nobody left to retry: done all the same
                self._closed = True
                _open_recorders.discard(self)
            if self._quarantined:
                error = self._quarantine_error(self._quarantined)
                print(f"simrecorder: {error}", file=sys.stderr)
            for rejected in self._take_all_rejected():
                print(f"simrecorder: {rejected}", file=sys.stderr)

    def _forget_after_fork(self) -> None:
        self._forked = True
        self._lock = threading.RLock()  # another thread may have held it at the fork
        self._buffers = {}
        self._backlogs = {}
        self._dirty = set()
        self._timer = None

    def __del__(self) -> None:
        # a recorder dropped without close() is flushed, not lost (D7)
        if getattr(self, "_closed", True) or getattr(self, "_forked", True):
            return
        self._final_close(collected=True)

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
        raise ArgumentTypeError("recorder attrs cannot be deleted")

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
            recorder._tick()
            del recorder

    def stop(self) -> None:
        self._stopped.set()
