"""Series as blocks over any :class:`~simrecorder.locations.Location` (``blocks+<url>``).

A :class:`BlockDataStore` keeps every series as a small metadata record, an
appendable index of block end offsets and the blocks themselves, each under a key of
one location: a directory, Redis, memory, or any fsspec file system (S3, SFTP...).
So a block store on S3 or a MuMMI namespace on SFTP costs no code of its own.

Layout, for a series ``K`` (every name is a location key)::

    .attrs.json             store metadata: provenance, simrecorder_format (the
                            store exists when this key does)
    .commit.json            {"epoch": C}: the last committed epoch (the commit point)
    .keys/000000007         one segment of the key log: {"epoch": E, "keys": {K: node}}
                            for the series and values first written by one flush
    K/.series.json          kind, dtype, shape, count, blocks, epoch, base, page,
                            attrs (the series' attributes, ``Recorder.describe``)
    K/.index/000000003      end offsets (cumulative rows, little-endian int64) of
                            blocks 3*page ... 3*page + page - 1
    K/.blocks/000000042     block 42: dense rows as raw little-endian C-ordered bytes,
                            other kinds one codec-encoded list (as the Redis store)
    K/.value                a value from ``set``, codec-encoded

**Append cost is flat.** ``append_block`` encodes the block (a copy: the store keeps
no reference to the caller's array) and queues it; :meth:`BlockDataStore.flush`
writes, with one :meth:`~simrecorder.locations.Location.write_many` per step, (1)
the queued blocks, the index pages they touch and a key-log segment naming the
series new in this flush, (2) the metadata of every changed series. An index page
holds at most :data:`PAGE_BLOCKS` end offsets, so no write grows with the length of
a series: the 100,000th block costs what the 10th does. Reading a series' index
reads ``blocks / PAGE_BLOCKS`` pages once and caches them.

**Crash safety.** Every location write is atomic per key (the Location contract), and
each step above is written only after the one before it succeeded, so a series'
metadata never counts a block or an offset that is not stored: a process killed at
any moment leaves every series readable, ending at a flush. :meth:`commit` then
writes ``.commit.json`` with the epoch number: that one write commits every series
at once. The metadata of a series written in an epoch that was never committed also
carries its ``base`` (its state at the last committed epoch); a writer that opens the
store again cuts every such series back to its base, so a resumed run continues from
aligned series, and deletes blocks that no metadata counts.

**One writer.** A writer takes the location's ``"writer"`` lock (a
:meth:`~simrecorder.locations.Location.lock`) until it closes: a second writer raises
:class:`~simrecorder.errors.StoreLockedError`; readers (``mode='r'``) take no lock.
Locations without locks (fsspec file systems, composites) leave this to the caller.

**Reads.** ``get_all`` of a dense series returns a lazy :class:`BlockView` that reads
only the blocks a slice spans (binary search over the block end offsets); other
kinds come back as lists. A store opened read-only sees what was flushed.
"""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _codec
from .._keys import check_path_parts, parent_keys, validate_key
from .._modes import check_mode, plan_open
from .._provenance import provenance
from .._schema import DENSE, SeriesSpec
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    ReadOnlyError,
    StoreFormatError,
    StoreFullError,
    StoreLockedError,
    StoreNotFoundError,
    ValueTooLargeError,
)
from ..locations import DirectoryLocation, Location, SubLocation, open_location
from ..locations.base import LocationLock
from ._blockformat import block_span, decode_block, encode_block, join_dense_blocks
from ._values import jsonable
from ._view import RowRangeView
from .base import DataStore, NodeType, check_key_free

__all__ = [
    "FORMAT_VERSION",
    "PAGE_BLOCKS",
    "RESERVED_PARTS",
    "SCHEME_PREFIX",
    "BlockDataStore",
    "BlockView",
]

#: Version of the layout above (``simrecorder_format`` of ``.attrs.json``).
FORMAT_VERSION = 1
#: Block end offsets per index page: a flush rewrites at most one page per series
#: (8 KiB), and reading an index of n blocks reads n / PAGE_BLOCKS pages.
PAGE_BLOCKS = 1024
#: URL scheme prefix: ``blocks+`` followed by the location's URL.
SCHEME_PREFIX = "blocks+"

_ATTRS = ".attrs.json"
_COMMIT = ".commit.json"
_KEYLOG = ".keys"
_META = ".series.json"
_INDEX = ".index"
_BLOCKS = ".blocks"
_VALUE = ".value"
#: Key parts the layout uses: a series key may not contain them.
RESERVED_PARTS = (_ATTRS, _COMMIT, _KEYLOG, _META, _INDEX, _BLOCKS, _VALUE)
#: Blocks read per ``read_many`` (bounded replies and memory).
_READ_BATCH = 256


# -- per-series state ------------------------------------------------------------------------


class _Series:
    """One series: its committed/flushed state, cached index and queued blocks."""

    __slots__ = ("attrs", "base", "blocks", "count", "ends", "epoch", "logged", "queue", "spec")

    def __init__(self, spec: SeriesSpec) -> None:
        self.spec = spec
        self.count = 0  # rows the stored metadata counts
        self.blocks = 0  # blocks the stored metadata counts
        self.epoch = 0  # epoch of the stored metadata
        self.base = (0, 0, 0)  # (epoch, count, blocks) at the last committed epoch
        self.ends: array[int] | None = array("q")  # cumulative rows per block (or unloaded)
        self.queue: list[tuple[bytes, int]] = []  # (payload, rows) not yet flushed
        self.logged = True  # named in the key log
        self.attrs: dict[str, Any] = {}  # set_series_attrs (JSON values)

    def meta(self, epoch: int, base: tuple[int, int, int], count: int, blocks: int) -> bytes:
        record = {
            "format": FORMAT_VERSION,
            **self.spec.to_attrs(),
            "count": count,
            "blocks": blocks,
            "epoch": epoch,
            "base": list(base),
            "page": PAGE_BLOCKS,
        }
        if self.attrs:
            record["attrs"] = self.attrs
        return json.dumps(record).encode()


def _block_key(key: str, n: int) -> str:
    return f"{key}/{_BLOCKS}/{n:09d}"


def _page_key(key: str, page: int) -> str:
    return f"{key}/{_INDEX}/{page:09d}"


def _pack(ends: array[int]) -> bytes:
    if sys.byteorder == "little":
        return ends.tobytes()
    packed = array("q", ends)
    packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes, where: str) -> array[int]:
    if len(data) % 8:
        raise StoreFormatError(f"{where} is damaged: {len(data)} bytes is no int64 array")
    values = array("q")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


class BlockView(RowRangeView):
    """Lazy view of a dense series of a :class:`BlockDataStore`: a slice reads only the
    blocks it spans."""

    def __init__(self, store: BlockDataStore, key: str, spec: SeriesSpec) -> None:
        super().__init__(spec.dense_dtype, spec.dense_shape)
        self._store = store
        self._key = key
        self._spec = spec

    def _length(self) -> int:
        return self._store.series_length(self._key)

    def _read_rows(self, start: int, stop: int) -> Any:
        return self._store._read_rows(self._key, start, stop)

    def _describe(self) -> str:
        return f"the series {self._key!r} in {self._store!r}"


class BlockDataStore(DataStore):
    """Series as metadata + an appendable block index + blocks over a location.

    Parameters
    ----------
    location
        Where the keys go: a :class:`~simrecorder.locations.Location`, or a location
        URL or path for :func:`~simrecorder.locations.open_location`. A location
        given as an object stays the caller's (closing the store leaves it open).
    mode
        See :mod:`simrecorder._modes`. ``None`` (default): a location that holds no
        store gets one; an existing store opens for reading, and writing to it raises
        :class:`~simrecorder.errors.StoreExistsError` (resume with ``'a'``, overwrite
        with ``'w'``). ``'r'`` never writes a byte. ``'w'`` deletes every key of the
        location (the store's metadata last) before writing.
    lock_timeout
        Seconds a writer waits for another writer's lock (see the notes): ``0``
        (default) raises :class:`~simrecorder.errors.StoreLockedError` at once,
        ``None`` waits for ever. A writer restarted right after a killed one on Redis
        waits up to the location's ``lock_ttl`` for the old lease to run out.

    Notes
    -----
    See the module documentation for the layout, the flush and commit protocol and
    what a crash leaves.

    **One writer at a time.** A store opened to write (every mode but ``'r'``) takes
    the location's ``"writer"`` lock (:meth:`~simrecorder.locations.Location.lock`)
    and keeps it until :meth:`close`; a second writer, in this process or another,
    raises :class:`~simrecorder.errors.StoreLockedError` (``mode=None`` on an
    existing store opens it read-only instead). Readers take no lock. On a directory
    the lock is an ``flock``, gone with a killed writer (``locking=False`` on the
    location turns it off where ``flock`` fails); on Redis a lease renewed in the
    background, free ``ttl`` (30 s) after a killed writer's last renewal; in memory
    an in-process lock. Locations without locks (fsspec file systems such as S3 or
    SFTP, composites) cannot be protected: the caller must make sure one process
    writes at a time.

    Examples
    --------
    >>> from simrecorder.locations import MemoryLocation
    >>> store = BlockDataStore(MemoryLocation())
    >>> store.append("x", 1.5)
    >>> store.get_all("x")[:]
    array([1.5])
    """

    protocol = "blocks"
    persistent = True
    supports_lazy_views = True
    supports_series_attrs = True  # see set_series_attrs

    def __init__(
        self,
        location: Location | str | os.PathLike[str],
        mode: str | None = None,
        lock_timeout: float | None = 0,
    ) -> None:
        mode = check_mode(mode)
        self._lock_timeout = lock_timeout
        super().__init__()
        self._owns_location = not isinstance(location, Location)
        if not isinstance(location, Location):
            if not isinstance(location, (str, os.PathLike)):
                raise ArgumentTypeError(
                    "BlockDataStore takes a Location, a location URL or a path; got "
                    f"{type(location).__name__}"
                )
            location = _open_location(os.fspath(location), mode)
        self.location = location
        self.mode = mode
        self.persistent = location.persistent  # type: ignore[misc]  # per location
        self.protocol = self.url.split("://", 1)[0]  # type: ignore[misc]  # blocks+<scheme>
        self.max_value_bytes = location.max_value_bytes  # type: ignore[misc]
        self._reset()
        self._writer_lock: LocationLock | None = None
        locked_out = None if mode == "r" else self._lock(required=mode is not None)
        try:
            found = self._get(_ATTRS) is not None
            # a new memory location holds no earlier run: 'r' and 'r+' find it empty
            exists = found or (not location.persistent and mode in ("r", "r+"))
            plan = plan_open(mode, exists, f"block store {self.url}")
            if plan.read_only:
                self._unlock()
            elif locked_out is not None:
                raise locked_out
            self._apply_open_plan(plan)
            if plan.replace:
                self._delete_everything()
            if plan.create and not plan.read_only:
                self._create()
            else:
                self._load(check_format=found)
                if not plan.read_only:
                    self._truncate_to_commit()
        except BaseException:
            self._unlock()
            raise
        if plan.resume:
            self._note_resume()

    def _reset(self) -> None:
        self._series: dict[str, _Series] = {}
        self._values: set[str] = set()
        self._groups: set[str] = set()  # keys above a series or value
        self._unconfirmed: set[str] = set()  # logged as series, no metadata found (yet)
        self._segments = 0  # key-log segments written
        self._epoch = 1  # the epoch in progress (last committed + 1)
        self._changed = False  # flushed since the last commit
        self._commit_unsure = False  # a commit write failed: did it land? (_settle_commit)

    # -- identity -------------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BlockDataStore:
        """Open ``blocks+<location URL>`` (``blocks+file:///dir``, ``blocks+redis://host:
        port/0/prefix``, ``blocks+s3://bucket/prefix?...``); ``kwargs`` go to the
        constructor (``mode=``)."""
        if not url.lower().startswith(SCHEME_PREFIX):
            raise InvalidArgumentError(
                f"a block store URL is {SCHEME_PREFIX!r} + a location URL; got {url!r}"
            )
        return cls(url[len(SCHEME_PREFIX) :], **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return SCHEME_PREFIX + self.location.url

    @property
    def local_path(self) -> str | None:
        # docstring inherited: the directory of a directory location
        return _local_path(self.location)

    def check_key(self, key: str) -> None:
        # docstring inherited: the layout's names may not be key parts, and on a
        # directory every part is a file name
        if self.local_path is not None:
            check_path_parts(key, repr(self), reserved=RESERVED_PARTS)
            return
        for part in key.split("/"):
            if part in RESERVED_PARTS:
                raise InvalidKeyError(
                    f"invalid key {key!r} for {self!r}: part {part!r} is a name the "
                    "block layout reserves"
                )

    # -- the writer lock ------------------------------------------------------------------
    def _lock(self, required: bool) -> StoreLockedError | None:
        """Take the location's ``"writer"`` lock (when it has locks). Another writer
        holding it raises :class:`StoreLockedError`, or, unless ``required``, returns
        the error (``mode=None`` then reads an existing store)."""
        location = self.location
        if not location.supports_locking or location.read_only:
            return None
        try:
            self._writer_lock = location.lock("writer", self._lock_timeout)
        except StoreLockedError as exc:
            error = StoreLockedError(
                f"block store {self.url} has another writer ({exc}); open it with "
                "mode='r' to read it meanwhile"
            )
            error.__cause__ = exc
            if required:
                raise error from exc
            return error
        return None

    def _unlock(self) -> None:
        held, self._writer_lock = self._writer_lock, None
        if held is not None:
            held.release()

    # -- location access ------------------------------------------------------------------
    def _get(self, name: str) -> bytes | None:
        return self.location.get(name)

    def _json(self, name: str) -> dict[str, Any] | None:
        raw = self._get(name)
        return None if raw is None else self._parse(raw, name)

    def _parse(self, raw: bytes, name: str) -> dict[str, Any]:
        try:
            found = json.loads(raw)
        except ValueError as exc:
            raise StoreFormatError(f"{self!r}: key {name!r} is not valid JSON ({exc})") from None
        if not isinstance(found, dict):
            raise StoreFormatError(f"{self!r}: key {name!r} holds no JSON object")
        return found

    def _write_all(self, items: Mapping[str, bytes], what: str) -> None:
        """Write ``items`` with one ``write_many``; a declined write raises
        :class:`StoreFullError` (nothing is counted until every step is written)."""
        if not items:
            return
        if self._writer_lock is not None:
            self._writer_lock.check()  # a lease that ran out: another writer may hold it
        stored = self.location.write_many(items)
        declined = [name for name, ok in stored.items() if not ok]
        if declined and self.location.read_only:
            raise ReadOnlyError(
                f"{self!r}: cannot write {what} ({declined[0]!r}...): {self.location!r} is "
                "read-only"
            )
        if declined:
            raise StoreFullError(
                f"{self!r}: {self.location!r} declined {len(declined)} key(s) ({declined[0]!r}"
                f"...) writing {what}: it is full or the value is too large; nothing new is "
                "counted yet, flush() again when there is room"
            )

    # -- opening --------------------------------------------------------------------------
    def _create(self) -> None:
        info = provenance()
        info["simrecorder_format"] = FORMAT_VERSION
        info["simrecorder_store"] = "blocks"
        self._write_all({_ATTRS: json.dumps(info, default=repr).encode()}, "the store metadata")

    def _delete_everything(self) -> None:
        """``mode='w'``: delete every key of the location, the store metadata last (a
        deletion cut short leaves a store that the next try deletes)."""
        names = [name for name in self.location.keys() if name != _ATTRS]
        self.location.delete_many(names)
        self.location.delete(_ATTRS)

    def _load(self, check_format: bool) -> None:
        """Read the commit record and the key log."""
        if check_format:
            attrs = self._json(_ATTRS) or {}
            found = attrs.get("simrecorder_format")
            if not isinstance(found, int) or found > FORMAT_VERSION:
                raise StoreFormatError(
                    f"{self!r} has simrecorder format {found!r}; this version reads block "
                    f"stores up to format {FORMAT_VERSION}"
                )
        commit = self._json(_COMMIT) or {}
        self._epoch = int(commit.get("epoch", 0)) + 1
        self._read_key_log()

    def _read_key_log(self) -> None:
        """Read the key-log segments not read yet."""
        names = list(self.location.keys(f"{_KEYLOG}/"))[self._segments :]
        if not names:
            return
        for name, raw in self.location.read_many(names).items():
            if raw is None:
                continue
            nodes = self._parse(raw, name).get("keys", {})
            for key, node in nodes.items():
                if node == "value":
                    self._known(key)
                    self._values.add(key)
                    self._unconfirmed.discard(key)
                elif key not in self._series:
                    self._unconfirmed.add(key)
        self._segments += len(names)
        self._confirm(list(self._unconfirmed))

    def _known(self, key: str) -> None:
        """Note the groups above a series or value ``key``."""
        self._groups.update(parent_keys(key))

    def _confirm(self, keys: list[str]) -> None:
        """Load the metadata of the logged series ``keys`` that have it (a key logged
        by a flush cut short before its metadata was written is no series)."""
        self._load_metas([key for key in keys if key not in self._values])
        self._unconfirmed.difference_update(self._series)

    def _load_metas(self, keys: list[str]) -> None:
        """Read the metadata of the series ``keys`` (those without are not series)."""
        keys = [key for key in keys if key not in self._series]
        for start in range(0, len(keys), _READ_BATCH):
            chunk = keys[start : start + _READ_BATCH]
            found = self.location.read_many([f"{key}/{_META}" for key in chunk])
            for key in chunk:
                raw = found[f"{key}/{_META}"]
                if raw is not None:
                    self._series[key] = self._series_from(key, self._parse(raw, f"{key}/{_META}"))
                    self._known(key)

    def _series_from(self, key: str, meta: dict[str, Any]) -> _Series:
        try:
            series = _Series(SeriesSpec.from_attrs(meta))
            series.count, series.blocks = int(meta["count"]), int(meta["blocks"])
            series.epoch = int(meta["epoch"])
            epoch, count, blocks = (int(v) for v in meta["base"])
            series.base = (epoch, count, blocks)
            page = int(meta.get("page", PAGE_BLOCKS))
            series.attrs = dict(meta.get("attrs") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreFormatError(
                f"{self!r}: the metadata of series {key!r} is damaged ({exc!r})"
            ) from None
        if page != PAGE_BLOCKS or int(meta.get("format", 1)) > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self!r}: series {key!r} has format {meta.get('format')} with pages of "
                f"{page} blocks; this version reads format {FORMAT_VERSION}, {PAGE_BLOCKS}"
            )
        series.ends = None  # loaded on first need
        return series

    def _truncate_to_commit(self) -> None:
        """A writer opens the store: cut every series written in an epoch that was
        never committed back to its state at the last commit, and delete the blocks
        no metadata counts (left by a crash in the middle of a flush)."""
        committed = self._epoch - 1
        metas = {}
        for key, series in self._series.items():
            if series.epoch > committed:
                epoch, count, blocks = series.base
                series.epoch, series.count, series.blocks = epoch, count, blocks
                metas[f"{key}/{_META}"] = series.meta(epoch, series.base, count, blocks)
        self._write_all(metas, "the metadata of series cut back to the last commit")
        for key, series in self._series.items():
            self._drop_orphans(key, series.blocks)

    def _drop_orphans(self, key: str, blocks: int) -> None:
        """Delete the blocks and index pages past ``blocks`` (they run contiguously)."""
        n = blocks
        while self.location.delete(_block_key(key, n)):
            n += 1
        page = -(-blocks // PAGE_BLOCKS)
        while self.location.delete(_page_key(key, page)):
            page += 1

    # -- lifecycle ------------------------------------------------------------------------
    def _open(self) -> None:
        if self.read_only:  # see what was written since
            self._reset()
            self._load(check_format=False)
            return
        self._lock(required=True)
        if any(series.queue for series in self._series.values()):
            return  # kept by a close that failed: continue where it stopped
        try:  # see what another writer did while the lock was free
            self._reset()
            self._load(check_format=True)
            self._truncate_to_commit()
        except BaseException:
            self._unlock()
            raise

    def _close(self) -> None:
        try:
            if not self.read_only:
                self.commit()
        finally:
            try:
                self._unlock()
            finally:
                if self._owns_location:
                    self.location.close()

    def flush(self) -> None:
        """Write the queued blocks, then the index pages, the key log and the metadata.

        Raises
        ------
        StoreFullError
            The location declined a write (full): every queued block stays queued;
            ``flush()`` again.
        StoreConnectionError, StoreWriteError
            The location failed; every queued block stays queued.
        """
        self._check_open()
        if self.read_only:
            return
        self._settle_commit()
        dirty = {key: s for key, s in self._series.items() if s.queue or not s.logged}
        if not dirty:
            return
        blocks: dict[str, bytes] = {}
        pages: dict[str, bytes] = {}
        metas: dict[str, bytes] = {}
        updates = []
        for key, series in dirty.items():
            ends = self._ends(key, series)
            del ends[series.blocks :]  # a flush interrupted after its writes
            new_ends = array("q", ends[-1:] or [0])
            for n, (payload, rows) in enumerate(series.queue, start=series.blocks):
                blocks[_block_key(key, n)] = payload
                new_ends.append(new_ends[-1] + rows)
            new_ends = new_ends[1:]
            count = new_ends[-1] if new_ends else series.count
            total = series.blocks + len(series.queue)
            for page in range(series.blocks // PAGE_BLOCKS, -(-total // PAGE_BLOCKS)):
                lo, hi = page * PAGE_BLOCKS, (page + 1) * PAGE_BLOCKS
                fresh = new_ends[max(0, lo - series.blocks) : hi - series.blocks]
                entries = ends[lo:hi] + fresh if lo < series.blocks else fresh
                pages[_page_key(key, page)] = _pack(entries)
            base = series.base if series.epoch >= self._epoch else (
                series.epoch, series.count, series.blocks)  # fmt: skip
            metas[f"{key}/{_META}"] = series.meta(self._epoch, base, count, total)
            updates.append((series, new_ends, count, total, base, len(series.queue)))
        new_keys = {key: "series" for key, s in dirty.items() if not s.logged}
        if new_keys:
            blocks[self._log_name()] = self._log_record(new_keys)
        # what no metadata counts yet goes first, in one batch (a Redis transaction)
        self._write_all({**blocks, **pages}, "blocks, index pages and the key log")
        self._segments += bool(new_keys)
        self._write_all(metas, "series metadata")
        for series, new_ends, count, total, base, taken in updates:
            assert series.ends is not None
            series.ends.extend(new_ends)
            series.count, series.blocks, series.base, series.epoch = count, total, base, self._epoch
            del series.queue[:taken]
            series.logged = True
        self._changed = True

    def _log_name(self) -> str:
        """The key of the next key-log segment."""
        return f"{_KEYLOG}/{self._segments:09d}"

    def _log_record(self, nodes: dict[str, str]) -> bytes:
        """A key-log segment naming ``nodes`` (``{key: 'series' | 'value'}``)."""
        return json.dumps({"epoch": self._epoch, "keys": nodes}).encode()

    def commit(self) -> None:
        """Flush, then record the epoch: every series is committed at its current length.

        ``.commit.json`` is one atomic write, the commit point of every series at once
        (see the module documentation).
        """
        self._check_writable()
        self.flush()
        self._settle_commit()
        if not self._changed:
            return
        record = json.dumps({"epoch": self._epoch}).encode()
        try:
            self._write_all({_COMMIT: record}, "the commit record")
        except BaseException:
            # the write may have reached the location with only its reply lost: until
            # the record is read back, no metadata may be stamped with this epoch
            self._commit_unsure = True
            raise
        self._epoch += 1
        self._changed = False

    def _settle_commit(self) -> None:
        """After a commit whose outcome is unknown, read the commit record back: if it
        holds the epoch in progress, that epoch is committed and the next one begins
        (else a later flush would stamp rows with an epoch already committed, and a
        cut-back after a crash would keep them)."""
        if not self._commit_unsure:
            return
        committed = (self._json(_COMMIT) or {}).get("epoch")
        if committed == self._epoch:
            self._epoch += 1
            self._changed = False
        self._commit_unsure = False

    def surrender(self) -> list[tuple[str, SeriesSpec, Any]]:
        """Give back every block queued and not yet written, and forget them (the
        recorder puts them in its dead-letter directory when flushing keeps failing).

        Each block comes back as :meth:`append_block` took it (a dense block as a new
        array); a series that never reached the location is forgotten too.
        """
        blocks: list[tuple[str, SeriesSpec, Any]] = []
        for key, series in list(self._series.items()):
            for payload, rows in series.queue:
                blocks.append((key, series.spec, _unqueue(series.spec, payload, rows, key)))
            series.queue.clear()
            if not series.logged and not series.blocks:
                del self._series[key]
        self._groups = {group for key in (*self._series, *self._values)
                        for group in parent_keys(key)}  # fmt: skip
        return blocks

    # -- nodes ----------------------------------------------------------------------------
    def _refresh(self, key: str | None = None) -> None:
        """A reader looks for keys written since it last looked (the writer knows)."""
        if self.read_only:
            self._read_key_log()
            if key is not None and key not in self._series:
                self._confirm([key])

    def _node(self, key: str) -> NodeType | None:
        if key in self._series:
            return "series"
        if key in self._values:
            return "value"
        if key in self._groups:
            return "group"
        return None

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        node = self._node(key)
        if node is None and self.read_only:
            self._refresh(key)
            node = self._node(key)
        return node

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        if key not in self._series:
            self._refresh(key)
        series = self._series.get(key)
        return None if series is None else series.spec

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        self._refresh()
        if self.read_only and self._unconfirmed:
            self._confirm(list(self._unconfirmed))
        names = [*self._series, *self._values]
        if prefix:
            names = [k for k in names if k == prefix or k.startswith(prefix + "/")]
        return sorted(names)

    # -- series ---------------------------------------------------------------------------
    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        self._check_writable(key)
        if not len(block):
            return
        series = self._series.get(key)
        if series is None:
            self.check_key(key)
        pieces = self._encode(key, spec, block)
        if series is None:
            series = _Series(spec)
            series.logged = False
            series.queue.extend(pieces)
            self._known(key)  # groups only need to exist once a node is below them
            self._series[key] = series  # the commit point: the new series appears whole
            return
        series.queue.extend(pieces)  # one step: taken, or not at all

    def _encode(self, key: str, spec: SeriesSpec, block: Any) -> list[tuple[bytes, int]]:
        """The block's stored bytes, split by rows while over the location's limit."""
        payload = encode_block(spec, block)
        limit = self.location.max_value_bytes
        if limit is None or len(payload) <= limit:
            return [(payload, len(block))]
        if len(block) == 1:
            raise ValueTooLargeError(
                f"key {key!r}: one sample takes {len(payload):,} bytes; {self.location!r} "
                f"holds values of at most {limit:,} bytes"
            )
        half = len(block) // 2
        return self._encode(key, spec, block[:half]) + self._encode(key, spec, block[half:])

    def _ends(self, key: str, series: _Series) -> array[int]:
        """The block end offsets of ``key`` (read once, then cached)."""
        if series.ends is None:
            ends = array("q")
            pages = [_page_key(key, p) for p in range(-(-series.blocks // PAGE_BLOCKS))]
            for start in range(0, len(pages), _READ_BATCH):
                found = self.location.read_many(pages[start : start + _READ_BATCH])
                for name in pages[start : start + _READ_BATCH]:
                    raw = found[name]
                    if raw is None:
                        raise StoreFormatError(f"{self!r}: index page {name!r} is missing")
                    ends.extend(_unpack(raw, f"{self!r}: index page {name!r}"))
            if len(ends) < series.blocks or (
                series.blocks and ends[series.blocks - 1] != series.count
            ):
                raise StoreFormatError(
                    f"{self!r}: the index of series {key!r} does not match its metadata "
                    f"({series.blocks} blocks, {series.count} rows)"
                )
            del ends[series.blocks :]
            series.ends = ends
        return series.ends

    def _readable(self, key: str) -> _Series:
        """The series ``key`` with everything queued for it written (or, read-only,
        its metadata read again to see what was flushed since)."""
        self._check_open(key)
        series = self._series.get(key)
        if series is None:
            self._refresh(key)
            series = self._series.get(key)
            if series is None:
                raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        if series.queue:
            self.flush()
        elif self.read_only:
            meta = self._json(f"{key}/{_META}")
            if meta is not None and int(meta.get("blocks", 0)) != series.blocks:
                self._series[key] = series = self._series_from(key, meta)
        return series

    def series_length(self, key: str) -> int:
        """Samples in the series ``key``, from its metadata (no block is read).

        Raises
        ------
        KeyNotFoundError
            ``key`` is not a series of this store.
        """
        return self._readable(key).count

    def _read_rows(self, key: str, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of a dense series, reading only the blocks they span."""
        series = self._readable(key)
        spec = series.spec
        stop = min(stop, series.count)
        if stop <= start:
            return np.empty((0, *spec.dense_shape), dtype=spec.dense_dtype)
        ends = self._ends(key, series)
        first, last, lo = block_span(ends, start, stop)
        data = self._read_blocks(key, range(first, last + 1))
        where = f"series {key!r} (blocks {first}..{last}) in {self!r}"
        out = join_dense_blocks(data, ends[last] - lo, spec, where)
        return out[start - lo : stop - lo]

    def _read_blocks(self, key: str, numbers: range) -> list[bytes]:
        names = [_block_key(key, n) for n in numbers]
        data: list[bytes] = []
        for start in range(0, len(names), _READ_BATCH):
            found = self.location.read_many(names[start : start + _READ_BATCH])
            for name in names[start : start + _READ_BATCH]:
                raw = found[name]
                if raw is None:
                    raise StoreFormatError(f"{self!r}: block {name!r} is missing")
                data.append(raw)
        return data

    def get_all(self, key: str) -> Any:
        # docstring inherited
        series = self._readable(key)
        if series.spec.kind == DENSE:
            return BlockView(self, key, series.spec)
        items: list[Any] = []
        numbers = range(series.blocks)
        for n, raw in zip(numbers, self._read_blocks(key, numbers), strict=True):
            items.extend(
                decode_block(series.spec, raw, f"block {_block_key(key, n)!r} of {self!r}")
            )
        if len(items) != series.count:
            raise StoreFormatError(
                f"{self!r}: series {key!r} counts {series.count} samples, its blocks hold "
                f"{len(items)}"
            )
        return items

    # -- single values --------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        self.check_key(key)
        check_key_free(self, key, "value")
        payload = _codec.encode_for(key, value)
        limit = self.location.max_value_bytes
        if limit is not None and len(payload) > limit:
            raise ValueTooLargeError(
                f"key {key!r}: the value takes {len(payload):,} bytes; {self.location!r} "
                f"holds values of at most {limit:,} bytes"
            )
        self._write_all({f"{key}/{_VALUE}": payload}, f"the value {key!r}")
        if key not in self._values:
            self._write_all({self._log_name(): self._log_record({key: "value"})}, "the key log")
            self._segments += 1
            self._known(key)
            self._values.add(key)

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        raw = self._get(f"{key}/{_VALUE}")
        if raw is None:
            raise KeyNotFoundError(f"no value {key!r} in {self!r}")
        return _codec.decode(raw)

    # -- series attributes (Recorder.describe) ------------------------------------------
    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the ``attrs`` of the series' metadata ``K/.series.json``
        (written first if queued), replacing that one document atomically; a cut back
        to the last commit keeps them."""
        self._check_writable(key)
        series = self._readable(key)
        if not series.logged:
            self.flush()  # the key log names the series before its metadata is rewritten
        merged = {**series.attrs, **{name: jsonable(v) for name, v in attrs.items()}}
        before, series.attrs = series.attrs, merged
        try:
            record = series.meta(series.epoch, series.base, series.count, series.blocks)
            self._write_all({f"{key}/{_META}": record}, f"the attributes of series {key!r}")
        except BaseException:
            series.attrs = before
            raise

    def series_attrs(self, key: str) -> dict[str, Any]:
        # docstring inherited
        series = self._readable(key)
        if self.read_only:  # the writer may have described it since
            meta = self._json(f"{key}/{_META}")
            if meta is not None:
                series.attrs = dict(meta.get("attrs") or {})
        return json.loads(json.dumps(series.attrs))  # a deep copy

    # -- metadata -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        return self._json(_ATTRS) or {}

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        merged = {**self.attrs, **{name: jsonable(v) for name, v in attrs.items()}}
        self._write_all({_ATTRS: json.dumps(merged, default=repr).encode()}, "the store metadata")


def _unqueue(spec: SeriesSpec, payload: bytes, rows: int, key: str) -> Any:
    """A queued block as :meth:`BlockDataStore.append_block` took it."""
    if spec.kind == DENSE:
        return join_dense_blocks([payload], rows, spec, f"queued block of {key!r}")
    return _codec.decode(payload)


def _open_location(url: str, mode: str | None) -> Location:
    """Open the location ``url`` for a store opened in ``mode``: a store that must
    exist never creates its directory."""
    options: dict[str, Any] = {}
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme in ("file", "encore") and mode in ("r", "r+"):
        options["create"] = False
    try:
        return open_location(url, **options)
    except StoreNotFoundError as exc:
        raise StoreNotFoundError(
            f"block store {SCHEME_PREFIX}{url} does not exist (mode {mode!r} opens existing "
            f"stores): {exc}"
        ) from exc


def _local_path(location: Location) -> str | None:
    """The directory of a directory location (or of a view into one), else None."""
    if isinstance(location, DirectoryLocation):
        return location.root
    if isinstance(location, SubLocation):
        parent = _local_path(location.parent)
        return None if parent is None else os.path.join(parent, *location.prefix.split("/"))
    return None
