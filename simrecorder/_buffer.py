"""Per-series buffers: the hot path of :meth:`Recorder.record`.

A buffer collects samples of one series until it holds a block worth writing, then
hands the whole block over (:meth:`take`). Every buffer has

``values``
    for scalar series with a Python fast type, the list the recorder appends to
    directly (see ``Recorder.record``); for array series the :class:`ArrayBlock` it
    appends ``np.ndarray`` samples to;
``fast_type``
    the Python type whose samples need no check (``float`` for a float series),
    or ``None`` when every sample goes through :meth:`append`;
``limit``
    the sample count at which the recorder calls :meth:`SeriesBuffer.compact` (and
    writes the block if that says the buffer is full). The recorder's flush timer
    sets it to 0 to make the next sample trigger a flush, so the hot path never reads
    a clock; after a flush it goes back to ``full_at``.
``rejected``
    samples the hot path took but the block conversion found out of the range of the
    series' dtype (``1e300`` into float32): they are left out of the block and kept
    here until the recorder reports them (see :class:`ScalarBuffer`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import _codec
from ._schema import (
    BYTES,
    DENSE,
    OBJECT,
    STR,
    SeriesSpec,
    check_dense_sample,
    check_kind_sample,
)
from .errors import InvalidArgumentError, SchemaError

__all__ = ["SeriesBuffer", "SlowPath", "aligned_rows", "make_buffer", "one_sample_block"]


class SeriesBuffer:
    """Base of all buffers; see the module docstring for the shared attributes."""

    __slots__ = (
        "capacity",
        "fast_type",
        "full_at",
        "key",
        "limit",
        "nbytes",
        "rejected",
        "spec",
        "values",
    )

    def __init__(self, key: str, spec: SeriesSpec, capacity: int) -> None:
        self.key = key
        self.spec = spec
        self.capacity = capacity
        self.full_at = capacity
        self.limit = capacity
        self.fast_type: type | None = None
        self.values: list[Any] = []
        self.nbytes = 0
        self.rejected: list[Any] = []

    def append(self, value: Any) -> bool:
        """Check and add one sample; return True when ``limit`` is reached."""
        raise NotImplementedError

    def compact(self) -> bool:
        """Tidy up after ``limit`` was reached; return True if the block is full."""
        return True

    def retire(self) -> None:
        """Make every later fast-path append reach the recorder's checks (which then
        raise, e.g. ``StoreClosedError``): the recorder drops this buffer, and a thread
        that looked it up just before must not append to it silently."""
        self.limit = -1  # the next length check calls the recorder's _on_full

    def revive(self) -> None:
        """Undo :meth:`retire` (a close that failed keeps the recorder open)."""
        self.limit = self.full_at

    def take(self) -> Any:
        """Return the buffered block and empty the buffer (None when empty)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.values)


_FAST_TYPES = {"f": float, "c": complex, "b": bool}


#: Scalars collected as Python objects before they are packed into a numpy part.
SCALAR_PART = 8192


class ScalarBuffer(SeriesBuffer):
    """Dense series of scalars.

    The recorder appends Python scalars to ``values`` (the fastest thing Python can
    do); every :data:`SCALAR_PART` samples they are packed into a numpy part, so a
    large block costs 8 bytes per sample, not a 32-byte Python object each.

    Samples of the fast type are not checked one by one. For a dtype narrower than
    the fast type (float16/float32 series of Python floats, complex64 of Python
    complex) the packing checks the part: a finite sample that would become ``inf``
    is left out of the part and put in ``rejected`` (the recorder then raises
    :class:`~simrecorder.errors.ValueOutOfRangeError`); every other sample keeps its
    place, in order.
    """

    __slots__ = ("narrow", "parts", "rows")

    def __init__(self, key: str, spec: SeriesSpec, capacity: int) -> None:
        super().__init__(key, spec, capacity)
        # complex64 takes Python complex, float16/32 take float: same_kind allows both
        self.fast_type = _FAST_TYPES.get(spec.dense_dtype.kind)
        self.narrow = self.fast_type is not None and not np.can_cast(
            np.dtype(self.fast_type), spec.dense_dtype, casting="safe"
        )
        self.full_at = self.limit = min(capacity, SCALAR_PART)
        self.parts: list[np.ndarray] = []
        self.rows = 0

    def compact(self) -> bool:
        # docstring inherited
        values = self.values
        count = len(values)
        if count:
            # copy, then delete in place: another thread's record() may append to this
            # very list meanwhile (the fast path takes no lock), and must not be lost
            chunk = values[:count]
            part = self._narrowed(chunk) if self.narrow else np.array(chunk, dtype=self.spec.dtype)
            del values[:count]
            if len(part):
                self.parts.append(part)
                self.rows += len(part)
        return self.rows >= self.capacity or self.limit < self.full_at

    def _narrowed(self, chunk: list[Any]) -> np.ndarray:
        """``chunk`` as the series' narrow dtype, without the finite samples that
        would become ``inf`` (those go to ``rejected``)."""
        dtype = self.spec.dense_dtype
        with np.errstate(over="ignore"):
            part = np.array(chunk, dtype=dtype)
        if np.isfinite(part).all():  # the usual case: one cheap pass
            return part
        wide = np.array(chunk, dtype=np.complex128 if dtype.kind == "c" else np.float64)
        bad = np.isinf(part) & np.isfinite(wide)
        if not bad.any():  # inf or nan recorded as such
            return part
        self.rejected.extend(chunk[i] for i in np.flatnonzero(bad))
        return part[~bad]

    def append(self, value: Any) -> bool:
        # docstring inherited
        check_dense_sample(self.key, self.spec, value)
        if isinstance(value, np.ndarray):
            value = value[()]  # a 0-d array may be changed in place later: keep the scalar
        values = self.values
        values.append(value)
        return len(values) >= self.limit

    def take(self) -> np.ndarray | None:
        # docstring inherited
        self.compact()
        if not self.parts:
            return None
        block = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        self.parts = []
        self.rows = 0
        return block

    def __len__(self) -> int:
        return self.rows + len(self.values)


class SlowPath(SchemaError):
    """Raised by the fast path of an :class:`ArrayBuffer` for a sample it does not
    take as is (another dtype or shape): the recorder then records it through
    ``ArrayBuffer.append``, which checks it. Never leaves the recorder."""


#: A series that keeps filling its blocks gets them cut from an arena at least this
#: large when the stores keep the blocks (see :class:`ArrayBlock`) ...
ARENA_BYTES = 8 << 20
#: ... if that takes at most this many blocks: small blocks (a small ``max_records``
#: or ``max_bytes``) get no arena, whose huge pages could outweigh their data.
ARENA_BLOCKS_MAX = 16
#: The block of an array series that has not filled one yet holds at most this many
#: bytes (rows aligned as the block's): it grows (4x at a time) towards the full
#: ``max_bytes`` as it fills. Thousands of quiet series then cost what they hold, not ``max_bytes``
#: each (numpy backs blocks of 4 MiB and more with huge pages, which the first rows
#: written would make resident).
FIRST_BLOCK_BYTES = 1 << 20


class ArrayBlock:
    """The preallocated block of an :class:`ArrayBuffer` and its fast path.

    ``Recorder.record`` calls :meth:`append` for every ``np.ndarray`` sample of the
    series (its ``values``): a sample of the series' exact dtype and shape is copied
    into the next row under the recorder's lock (the copy and the count must move
    together when several threads record); any other sample raises
    :class:`SlowPath`.

    ``room`` is the number of rows of the current block, or 0 when the fast path must
    not copy into it (no block yet, or the buffer was dropped): one comparison on the
    hot path covers all three cases.

    With ``arena`` (the stores keep every block, as the memory store does), a series
    whose last block was handed over full gets its next blocks as slices of one
    arena of at least :data:`ARENA_BYTES`: numpy backs allocations of 4 MiB and more
    with huge pages, so filling the blocks costs a few page faults instead of one
    per 4 KiB. A block handed over stays a view of its arena, which lives as long as
    any of its blocks; a series that never fills a block never gets an arena, nor
    does one whose blocks are small (see :data:`ARENA_BLOCKS_MAX`).

    A series that is not busy gets blocks of ``first`` rows (see
    :data:`FIRST_BLOCK_BYTES`); one that fills such a block grows it (4x at a time, up
    to ``capacity`` rows; a copy of what it holds), and one that hands a block over full
    is busy: its next blocks have ``capacity`` rows.
    """

    __slots__ = (
        "arena",
        "arena_next",
        "block",
        "block_nbytes",
        "busy",
        "capacity",
        "count",
        "dead",
        "dtype",
        "first",
        "lock",
        "room",
        "row_shape",
        "shape",
    )

    def __init__(
        self,
        spec: SeriesSpec,
        capacity: int,
        lock: Any,
        arena: bool = False,
        first: int | None = None,
    ) -> None:
        self.dtype = spec.dtype
        self.shape = spec.shape
        self.row_shape = spec.dense_shape
        self.capacity = capacity
        self.first = capacity if first is None else max(1, min(first, capacity))
        self.lock = lock
        self.block: np.ndarray | None = None
        self.count = 0
        self.room = 0
        self.dead = False  # set (under the lock) when the recorder drops the buffer
        self.busy = False  # the last block was handed over full
        self.block_nbytes = spec.sample_nbytes * capacity
        # an empty arena: arenas are on (the first is made when the series gets busy)
        big = self.block_nbytes * ARENA_BLOCKS_MAX >= ARENA_BYTES
        self.arena: np.ndarray | None = np.empty(0) if arena and big else None
        self.arena_next = 0

    def append(self, value: np.ndarray) -> None:
        """Copy ``value`` into the block, or raise :class:`SlowPath`."""
        dtype = value.dtype
        if (dtype is not self.dtype and dtype != self.dtype) or value.shape != self.shape:
            raise SlowPath("not the series' dtype and shape: the checked path takes it")
        lock = self.lock
        lock.acquire()  # put(), inlined: this is the hot path (cheaper than `with`)
        try:
            count = self.count
            if count < self.room:
                # the copy into the block is the snapshot: later in-place changes don't leak in
                self.block[count] = value  # type: ignore[index]
                self.count = count + 1
                return
            if self.dead:  # the recorder closed meanwhile: its checks say so
                raise SlowPath("the buffer was dropped: the checked path reports why")
            self.put(value)
        finally:
            lock.release()

    def put(self, value: Any) -> None:
        """Copy a checked sample into the next row (the caller holds the lock)."""
        block = self.block
        if block is None:
            block = self.block = self._new_block()
        elif self.count == len(block):
            # a first block that filled grows towards a full one (4x at a time: a huge
            # max_bytes is not allocated at once); a full one only grows if an earlier
            # flush of it failed
            more = len(block)
            if len(block) < self.capacity:
                more = min(self.capacity - len(block), 3 * len(block))
            grown = np.empty((len(block) + more, *self.row_shape), dtype=self.dtype)
            grown[: len(block)] = block
            block = self.block = grown
        # the copy into the block is the snapshot: later in-place changes don't leak in
        block[self.count] = value
        self.count += 1
        self.update_room()

    def _new_block(self) -> np.ndarray:
        if not self.busy:
            return np.empty((self.first, *self.row_shape), dtype=self.dtype)
        if self.arena is None:
            return np.empty((self.capacity, *self.row_shape), dtype=self.dtype)
        start = self.arena_next
        if start + self.capacity > len(self.arena):
            blocks = -(-ARENA_BYTES // self.block_nbytes)  # at most ARENA_BLOCKS_MAX
            self.arena = np.empty((blocks * self.capacity, *self.row_shape), dtype=self.dtype)
            start = 0
        self.arena_next = start + self.capacity
        return self.arena[start : self.arena_next]

    def update_room(self) -> None:
        """Set ``room`` from the block and ``dead`` (the caller holds the lock)."""
        self.room = 0 if self.block is None or self.dead else len(self.block)

    def __len__(self) -> int:
        return self.count


class ArrayBuffer(SeriesBuffer):
    """Dense series of arrays: samples are copied into a preallocated block.

    That copy is the only one: the block (or, at least half full, a view of it) is
    what :meth:`take` hands to the stores. ``values`` is the :class:`ArrayBlock`
    that ``Recorder.record`` appends ``np.ndarray`` samples to directly.
    """

    __slots__ = ("rows",)

    def __init__(
        self,
        key: str,
        spec: SeriesSpec,
        capacity: int,
        lock: Any = None,
        arena: bool = False,
        first: int | None = None,
    ) -> None:
        super().__init__(key, spec, capacity)
        self.fast_type = np.ndarray
        lock = threading.RLock() if lock is None else lock
        self.rows = ArrayBlock(spec, capacity, lock, arena, first)
        self.values = self.rows  # type: ignore[assignment]

    def append(self, value: Any) -> bool:
        # docstring inherited; the recorder holds its lock
        spec = self.spec
        if not (
            type(value) is np.ndarray and value.dtype == spec.dtype and value.shape == spec.shape
        ):
            check_dense_sample(self.key, spec, value)
        rows = self.rows
        rows.put(value)
        return rows.count >= self.limit or rows.count >= self.capacity

    def retire(self) -> None:
        # docstring inherited; the recorder holds its lock
        super().retire()
        self.rows.dead = True
        self.rows.update_room()

    def revive(self) -> None:
        # docstring inherited; the recorder holds its lock
        super().revive()
        self.rows.dead = False
        self.rows.update_room()

    def take(self) -> np.ndarray | None:
        # docstring inherited; the recorder holds its lock
        rows = self.rows
        count = rows.count
        if not count:
            return None
        block = rows.block
        assert block is not None  # count > 0: put() made it
        rows.busy = count >= len(block)
        if count * 2 < len(block):
            block = block[:count].copy()  # a store may keep it: not twice its size
        elif count != len(block):
            block = block[:count]  # the buffer lets go of it: no second copy
        rows.block = None
        rows.count = 0
        rows.update_room()
        return block

    def __len__(self) -> int:
        return self.rows.count


class LargeSampleBuffer(SeriesBuffer):
    """Dense samples at least one block large: each is written on its own."""

    __slots__ = ("copy", "pending")

    def __init__(self, key: str, spec: SeriesSpec, copy: bool) -> None:
        super().__init__(key, spec, 1)
        self.copy = copy
        self.pending: list[np.ndarray] = []

    def append(self, value: Any) -> bool:
        # docstring inherited
        spec = self.spec
        if not (
            type(value) is np.ndarray and value.dtype == spec.dtype and value.shape == spec.shape
        ):
            check_dense_sample(self.key, spec, value)
            value = np.asarray(value, dtype=spec.dtype)
        elif self.copy:
            value = value.copy()
        # without a copy the block is a view of the caller's array: safe only because it
        # is written before record() returns (the recorder flushes this buffer at once)
        self.pending.append(value[np.newaxis])
        return True

    def take(self) -> np.ndarray | None:
        # docstring inherited
        if not self.pending:
            return None
        if len(self.pending) == 1:
            block = self.pending[0]
        else:
            block = np.concatenate(self.pending)
        self.pending = []
        return block

    def __len__(self) -> int:
        return len(self.pending)


class ListBuffer(SeriesBuffer):
    """str, bytes and object series: a list of items, bounded by count and bytes."""

    __slots__ = ("max_bytes", "nul_free")

    def __init__(
        self, key: str, spec: SeriesSpec, capacity: int, max_bytes: int, nul_free: bool = False
    ) -> None:
        super().__init__(key, spec, capacity)
        self.max_bytes = max_bytes
        self.nul_free = nul_free and spec.kind == STR

    def append(self, value: Any) -> bool:
        # docstring inherited
        kind = self.spec.kind
        item: bytes | str
        if kind == OBJECT:
            item = _codec.encode_for(self.key, value)
            self.nbytes += len(item)
        else:
            check_kind_sample(self.key, self.spec, value)
            if kind == BYTES:
                item = bytes(value)
            else:  # STR
                text = str(value)
                if not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise SchemaError(
                            f"key {self.key!r}: a str series holds valid Unicode text; this "
                            f"sample has an unpaired surrogate ({exc.reason}). Record bytes, "
                            "or the string inside a list (object series)"
                        ) from None
                if self.nul_free and "\x00" in text:
                    raise SchemaError(
                        f"key {self.key!r}: a string with a NUL character cannot be stored by "
                        "every data store of this recorder (HDF5 strings end at NUL); "
                        "record it as bytes, or inside a list/dict (object series)"
                    )
                item = text
            self.nbytes += len(item)
        self.values.append(item)
        return len(self.values) >= self.limit or self.nbytes >= self.max_bytes

    def take(self) -> list[Any] | None:
        # docstring inherited
        if not self.values:
            return None
        block = self.values
        self.values = []
        self.nbytes = 0
        return block


def make_buffer(
    key: str,
    spec: SeriesSpec,
    *,
    max_records: int,
    max_bytes: int,
    copy_large: bool,
    nul_free_str: bool = False,
    lock: Any = None,
) -> SeriesBuffer:
    """Create the buffer that suits ``spec``.

    Parameters
    ----------
    key
        The series key (for error messages).
    spec
        The series' spec.
    max_records
        Samples per block at most.
    max_bytes
        Bytes per block at most; a dense sample at least this large is written alone.
    copy_large
        A store keeps references to blocks: copy large samples, and cut the blocks
        of busy array series from arenas (see :class:`ArrayBlock`).
    nul_free_str
        Refuse str samples containing NUL (a store cannot keep them).
    lock
        The recorder's lock, taken by the fast path of array series (a new lock by
        default).
    """
    if spec.kind == DENSE:
        nbytes = max(spec.sample_nbytes, 1)
        if nbytes >= max_bytes:
            return LargeSampleBuffer(key, spec, copy=copy_large)
        capacity = max(1, min(max_records, aligned_rows(max_bytes // nbytes)))
        if spec.shape == ():
            return ScalarBuffer(key, spec, capacity)
        first = aligned_rows(max(1, FIRST_BLOCK_BYTES // nbytes))
        return ArrayBuffer(key, spec, capacity, lock, arena=copy_large, first=first)
    if spec.kind in (STR, BYTES, OBJECT):
        return ListBuffer(key, spec, max_records, max_bytes, nul_free_str)
    raise InvalidArgumentError(f"key {key!r}: unknown series kind {spec.kind!r}")


def aligned_rows(rows: int) -> int:
    """``rows`` cut down to a multiple of a power of two at least a quarter of it
    (by at most a fifth).

    Blocks of this many rows are whole numbers of the stores' chunks, whose rows are
    aligned the same way or powers of two no larger (see
    :func:`~simrecorder.datastores.chunk_rows`): a block is written as whole chunks,
    never as a part of a chunk to be read back and completed by the next block.

    >>> aligned_rows(131), aligned_rows(131072), aligned_rows(43690), aligned_rows(10)
    (128, 131072, 40960, 10)
    """
    if rows < 8:
        return rows
    step = 1 << (rows.bit_length() - 3)
    return rows - rows % step


def one_sample_block(key: str, spec: SeriesSpec, value: Any, *, nul_free_str: bool) -> Any:
    """Check ``value`` against ``spec`` and return it as a block of one sample (a
    snapshot: the caller's array may change afterwards)."""
    buffer = make_buffer(
        key, spec, max_records=1, max_bytes=1 << 62, copy_large=True, nul_free_str=nul_free_str
    )
    buffer.append(value)
    return buffer.take()
