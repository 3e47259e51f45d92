"""HDF5 data store (h5py): one chunked, resizable dataset per series."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import h5py
import numpy as np

from .. import _codec
from .._fs import translate_os_error
from .._h5 import SUFFIXES, WRITERS, open_h5
from .._keys import validate_key
from .._modes import check_mode, plan_open
from .._provenance import provenance
from .._schema import DENSE, KINDS, OBJECT, STR, SeriesSpec
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    KeyConflictError,
    KeyNotFoundError,
    SimRecorderError,
    StoreClosedError,
    StoreFormatError,
    StoreFullError,
    StoreNotFoundError,
    StoreWriteError,
)
from ._chunks import chunk_rows as _chunk_rows
from ._values import PYTYPE_ATTR, decode_value, encode_value
from ._view import SeriesView
from .base import DataStore, NodeType, check_key_free

__all__ = ["HDF5DataStore", "HDFView"]

#: Version of the layout this module writes (root attribute ``simrecorder_format``).
FORMAT_VERSION = 1
#: Target bytes per chunk; chunks of small samples hold many rows (never one row).
CHUNK_TARGET_BYTES = 256 << 10
#: Smallest chunk of a series whose first block is small. An HDF5 chunk is one entry
#: of the dataset's chunk index (no file per chunk, unlike zarr), so small chunks are
#: cheap and a short series carries at most this much padding; below 4 KiB, a series
#: that grows long after a small first flush pays for its many chunks (1 KiB: 1.35x
#: the append cost of one whose first flush was large; 4 KiB: 1.12x).
MIN_CHUNK_BYTES = 4 << 10
_KIND_ATTR = "simrecorder_kind"
_JSON_ATTRS = "simrecorder_json_attrs"  # root attributes stored as JSON text
_VALUE_ATTR = "simrecorder_value"
_FORMAT_ATTR = "simrecorder_format"
#: Per series: ``[epoch, rows, previous_epoch, previous_rows]`` (see ``commit``).
_COMMIT_ATTR = "simrecorder_commit"
#: Root: the last committed epoch, written after every series' commit attribute.
_EPOCH_ATTR = "simrecorder_epoch"
#: Root: 0 while a writer has the file open, 1 after a clean close.
_CLEAN_ATTR = "simrecorder_clean"
#: On a str series' ``text`` dataset: how many of its rows are valid (see _mark_text).
_TEXT_ROWS_ATTR = "simrecorder_text_rows"
#: On a str series group: the first row holding a NUL character, which a
#: variable-length HDF5 string cannot hold; such a series gets no ``text``.
_TEXT_NUL_ATTR = "simrecorder_text_nul_row"
#: ``text`` is written in slices of at most this many rows and bytes (bounded memory).
_TEXT_SLICE_ROWS = 1 << 16
_TEXT_SLICE_BYTES = 16 << 20
#: Bytes a variable-length string costs beside its characters: its heap ID in the
#: dataset (16) and its global heap object header and padding (up to 24).
_TEXT_ROW_OVERHEAD = 40
#: Open datasets kept per store, the most recently used (each holds HDF5's state and
#: up to ``CHUNK_CACHE_BYTES`` of cached chunks while open; closing one writes them).
MAX_OPEN_DATASETS = 64
#: HDF5's chunk cache per open dataset. Its default, 1 MiB, kept the chunks of every
#: open dataset after they were written (a copy of 300 series of 80 kB samples,
#: HDF5 to HDF5, peaked at +359 MB). One chunk of :func:`chunk_rows` fits, so small
#: appends and row-by-row reads still hit the cache; a store holds at most
#: ``MAX_OPEN_DATASETS`` x this (16 MiB). Larger chunks (one big sample, files of
#: other tools) are read and written straight from the file, as with the default.
CHUNK_CACHE_BYTES = CHUNK_TARGET_BYTES
# Disk space is reserved (fallocate, keeping the file size) before HDF5 writes:
# HDF5 does not survive a failed write of its own (seen: a zeroed row that was
# flushed earlier, and a segfault at the next flush), so it must never meet ENOSPC.
_RESERVE_SLACK = 512 << 10  # metadata HDF5 may allocate beside the data
_RESERVE_STEP = 1 << 20
_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
# Readers and the writer coordinate with an open-file-description lock on one byte far
# past the end of the file: the writer holds it exclusively from its first change
# until the end of the next flush, readers share it while they read, so a reader
# never sees the file between a change and the flush that makes it consistent.
_LOCK_OFFSET = 1 << 62
_READER_WAIT = 2.0  # seconds; then read without the lock (a writer that never flushes)
_WRITER_WAIT = 5.0
_T = TypeVar("_T")
_C = TypeVar("_C")  # the companion of shared()
#: Attributes that mark the nodes of a :mod:`simrecorder.storage` sharing the file (its
#: group indexes and its arrays): series listings skip them.
_STORAGE_ATTRS = ("simrecorder_storage", "simrecorder_storage_array")
_STR_DTYPE = h5py.string_dtype("utf-8")
#: Attributes of a series node that are simrecorder's bookkeeping, not its description.
_INTERNAL_SERIES_ATTRS = frozenset(
    {_KIND_ATTR, _COMMIT_ATTR, _TEXT_NUL_ATTR, _TEXT_ROWS_ATTR, _VALUE_ATTR, PYTYPE_ATTR,
     *_STORAGE_ATTRS}
)  # fmt: skip


def chunk_rows(sample_nbytes: int, first_rows: int | None = None) -> int:
    """Rows per chunk of an HDF5 series (see :func:`._chunks.chunk_rows`): chunks of
    up to ``CHUNK_TARGET_BYTES``, one sample per chunk above that, smaller for a
    series whose first block is small; a power of two, so the recorder's blocks
    (:func:`~simrecorder._buffer.aligned_rows`) are whole chunks, written directly."""
    rows = _chunk_rows(sample_nbytes, CHUNK_TARGET_BYTES, first_rows, MIN_CHUNK_BYTES)
    return 1 << (rows.bit_length() - 1)


def _translated(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn h5py's errors about a damaged or foreign file into :class:`StoreFormatError`
    naming the file and the key, and a full disk into :class:`StoreFullError`."""

    @functools.wraps(method)
    def wrapper(self: HDF5DataStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            key = next((a for a in args if isinstance(a, str)), None)
            error = _store_error(self, exc, key, method.__name__ in _WRITES)
            if error is None:
                raise
            raise error from exc

    return wrapper


def _store_error(
    store: HDF5DataStore, exc: BaseException, key: str | None, writing: bool
) -> SimRecorderError | None:
    """The error to raise instead of ``exc`` (None: raise ``exc`` as it is). The one
    translation point of this module."""
    if isinstance(exc, SimRecorderError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return StoreFullError(f"{store!r}: the disk is full: {exc}")
    if writing and isinstance(exc, (ValueError, TypeError)):
        return None  # a value this store cannot hold: the caller's mistake, as it is
    if not isinstance(exc, (RuntimeError, KeyError, ValueError, TypeError, AttributeError,
                            OSError)):  # fmt: skip
        return None
    where = f" (key {key!r})" if key is not None else ""
    return StoreFormatError(
        f"{store.path!r}: damaged or unexpected HDF5 content{where}: {type(exc).__name__}: {exc}"
    )


_WRITES = frozenset({"append_block", "set", "set_series_attrs", "update_attrs"})


class HDFView(SeriesView):
    """Lazy view of a dense series in an HDF5 file (wraps an ``h5py.Dataset``).

    Slicing reads only the requested rows, so series larger than memory can be
    processed piece by piece; ``np.asarray(view)`` reads it all. The view follows the
    series: rows appended later (also by another process, for a read-only store) are
    visible. ``view.dataset`` is the h5py dataset.
    """

    def __init__(self, store: HDF5DataStore, key: str) -> None:
        self._store = store
        self._key = key

    @property
    def dataset(self) -> h5py.Dataset:
        """The underlying ``h5py.Dataset`` (as of now)."""
        self._store._check_open(self._key)
        ds = self._store._dataset(self._key)
        if ds is None or not ds.id.valid:
            raise StoreClosedError(f"HDFView of {self._store!r}: the file is closed")
        return ds

    @property
    def shape(self) -> tuple[int, ...]:
        # docstring inherited
        return self._store._retry(lambda: self.dataset.shape, self._key)

    @property
    def dtype(self) -> np.dtype:
        # docstring inherited
        return self.dataset.dtype

    def _read(self, index: Any) -> Any:
        # docstring inherited
        return self._store._retry(lambda: self.dataset[index], self._key)


class HDF5DataStore(DataStore):
    """Store series in an HDF5 file, one chunked resizable dataset per series.

    The key ``a/b/c`` is the dataset ``c`` in group ``/a/b``: any HDF5 tool finds the
    data where the key says. Values from ``set`` are datasets too. Root attributes
    hold provenance and run metadata.

    Reading with plain h5py: dense series are ordinary datasets. A str, bytes or
    object series is a group holding ``data`` (the samples' bytes, one after the
    other) and ``offsets`` (where each sample ends), an append-only layout that
    survives a crash mid-write. At a clean close a str series also gets ``text``, the
    same samples as a variable-length UTF-8 dataset (``plain_text``)::

        with h5py.File("run.h5", "r") as f:            # after the run closed
            labels = f["label/text"].asstr()[:]         # numpy array of str
        with h5py.File("run.h5", "r", locking=False) as f:  # while a run writes
            events = simrecorder.decode_series(f["events"])   # any kind, decoded

    During a run open the file with ``locking=False`` (the writer holds HDF5's file
    lock); ``text`` then holds the samples as of the last clean close: its attribute
    ``simrecorder_text_rows`` says how many of its rows are valid (0 while a close
    extends it). Object series hold simrecorder's pickle-free encoding:
    :func:`simrecorder.decode` decodes one sample, :func:`simrecorder.decode_series`
    a whole series. A str series with a NUL character in a sample gets no ``text``
    (HDF5 strings end at NUL).

    Parameters
    ----------
    path
        File path (``~`` is expanded; missing parent directories are created).
    mode
        See :mod:`simrecorder._modes`: ``None`` (default) creates a new file and opens
        an existing one read-only (writing to it raises
        :class:`~simrecorder.errors.StoreExistsError`: pass ``'a'`` to resume the run
        or ``'w'`` to overwrite it); ``'r'`` read-only, ``'r+'`` existing file,
        ``'a'`` create or append, ``'w'`` truncate, ``'w-'`` new file only.
    compression
        h5py compression filter for new series (``None``, ``'gzip'``, ``'lzf'``).
    compression_opts
        Options of the filter (e.g. gzip level).
    durable
        ``fsync`` the file at every flush (the recorder flushes after each block), so
        flushed data survives a power loss, not just a crash of this process. Costs a
        disk round trip per flush: see the benchmarks in the README.
    plain_text
        At a clean close, bring each str series' ``text`` dataset (variable-length
        UTF-8, for plain h5py) up to date with the series: only rows added since the
        last clean close are written. Measured: 0.5 s and 34 MB more per million
        10-character strings, 0.25 s and 104 MB per 100,000 1 KiB strings (the
        characters are stored twice). ``False`` skips it (an existing ``text`` then
        keeps its ``simrecorder_text_rows`` valid rows).
    """

    protocol = "hdf5"
    persistent = True
    supports_lazy_views = True
    supports_series_attrs = True  # see set_series_attrs
    #: A sample is one chunk, and HDF5 chunks must stay below 4 GiB.
    max_value_bytes = (1 << 32) - 1

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str | None = None,
        *,
        compression: str | None = None,
        compression_opts: Any = None,
        durable: bool = False,
        plain_text: bool = True,
    ) -> None:
        mode = check_mode(mode)
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.mode = mode
        self.compression = compression
        self.compression_opts = compression_opts
        self.durable = durable
        self.plain_text = plain_text
        self._datasets: OrderedDict[str, h5py.Dataset | h5py.Group] = OrderedDict()
        self._file: h5py.File | None = None
        self._fd: int | None = None  # for the reader/writer lock and space reservation
        self._dirty = False  # a writer holds the lock: changes since the last flush
        self._reserved_to = 0  # disk space is reserved up to this offset
        self._unflushed = 0  # bytes HDF5 may still allocate for unflushed changes
        self._changed: dict[str, tuple[int, int]] = {}  # key: (rows, rows at first change)
        self._stale_text: set[str] = set()  # str series whose `text` is behind
        self._mtime_ns = 0
        self._storage: Any = None  # the companion sharing this file, see shared()
        plan = plan_open(mode, os.path.exists(self.path), f"HDF5 file {self.path!r}")
        self._apply_open_plan(plan)
        self._open_file("r" if plan.read_only else "w" if plan.replace else "a")
        if plan.resume:
            self._note_resume()

    # -- identity -----------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> HDF5DataStore:
        # docstring inherited
        for scheme in ("hdf5://", "h5://", "file://"):
            if url.startswith(scheme):
                url = url[len(scheme) :]
        return cls(url, **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        if self.path.lower().endswith(SUFFIXES):
            return self.path
        return "hdf5://" + self.path

    @property
    def local_path(self) -> str | None:
        # docstring inherited
        return self.path

    # -- lifecycle ----------------------------------------------------------------------
    def _open_file(self, mode: str) -> None:
        if mode == "r":
            if not os.path.exists(self.path):
                raise StoreNotFoundError(f"no HDF5 file at {self.path!r} to open read-only")
            self._fd = os.open(self.path, os.O_RDONLY)
            try:
                with self._shared_lock():
                    self._open_reader()
            except BaseException:
                os.close(self._fd)
                self._fd = None
                raise
            return
        self._make_folder()
        creating = mode == "w" or not os.path.exists(self.path)
        if not creating and not h5py.is_hdf5(self.path):
            raise StoreFormatError(f"{self.path!r} exists but is not an HDF5 file")
        self._file = self._h5open(mode)
        try:
            self._fd = os.open(self.path, os.O_RDWR)
            WRITERS[self.path] = self
            self._reserved_to = os.fstat(self._fd).st_size
            self._begin_write(_RESERVE_SLACK)
            root = self._file.attrs
            if creating:
                root[_FORMAT_ATTR] = FORMAT_VERSION
                info = provenance(
                    h5py_version=h5py.version.version, hdf5_version=h5py.version.hdf5_version
                )
                for name, value in info.items():
                    root[name] = value
            else:
                self._check_format()
                if _CLEAN_ATTR in root and not root[_CLEAN_ATTR]:
                    self._truncate_to_commits()
            root[_CLEAN_ATTR] = 0
            self._flush_file()  # (also while open() reopens a closed store)
        except BaseException:
            self._release()
            raise

    def _make_folder(self) -> None:
        """Create the missing folders of the file's path (a file among them: a
        :class:`StoreWriteError` naming the store's path and that file)."""
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            blocker = folder  # the nearest existing part of the path: not a folder
            while not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
                blocker = os.path.dirname(blocker)
            raise StoreWriteError(
                f"cannot create the HDF5 file {self.path!r}: {blocker!r} on its path is "
                "a file, not a folder"
            ) from exc
        except OSError as exc:
            raise translate_os_error(exc, self.path, "create the folder of the HDF5 file") from exc

    def _h5open(self, mode: str) -> h5py.File:
        # readers take no HDF5 file lock, so they neither block nor wait for the
        # writer; they reopen when the file changed (see _reading)
        if mode == "r":
            # (a writer in this process shares its HDF5 file: same locking flag)
            locking = None if self.path in WRITERS else False
            return open_h5(self.path, "r", locking=locking, rdcc_nbytes=CHUNK_CACHE_BYTES)
        return open_h5(self.path, mode, rdcc_nbytes=CHUNK_CACHE_BYTES)

    def _open_reader(self) -> None:
        """Open read-only, retrying while a writer that takes no lock (or one that
        holds it too long) is midway through a flush and the file looks truncated."""
        for attempt in range(40):
            try:
                if not h5py.is_hdf5(self.path):
                    raise StoreFormatError(f"{self.path!r} exists but is not an HDF5 file")
                self._stamp = _stamp(self.path)
                self._file = self._h5open("r")
                break
            except OSError:  # StoreFormatError included
                if attempt == 39:
                    raise
                time.sleep(0.005)
        try:
            self._check_format()
        except BaseException:
            self._h5.close()
            raise

    def _check_format(self) -> None:
        raw = self._h5.attrs.get(_FORMAT_ATTR, FORMAT_VERSION)
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise StoreFormatError(
                f"{self.path!r}: root attribute {_FORMAT_ATTR} is {raw!r}, not a version number"
            ) from None
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.path!r} has simrecorder format {version}; this version reads up "
                f"to {FORMAT_VERSION}: upgrade simrecorder"
            )

    def _open(self) -> None:
        # a store reopened after close() appends; it never truncates again
        self._open_file("r" if self._read_only else "a")

    @contextmanager
    def _shared_lock(self) -> Iterator[None]:
        """A reader holds the lock shared while it reads (see ``_LOCK_OFFSET``); a
        writer of the file in this process shares HDF5's file object instead."""
        if self._fd is None or not self._read_only or self.path in WRITERS:
            yield
            return
        locked = _lock(self._fd, _RDLCK, _READER_WAIT)
        try:
            yield
        finally:
            if locked:
                _lock(self._fd, _UNLCK, 0)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Run reads of a read-only store under the shared lock, after catching up
        with a writer that changed the file since."""
        if not self._read_only:
            yield
            return
        with self._shared_lock():
            if _stamp(self.path) != self._stamp:
                self._reopen()
            yield

    def _reopen(self) -> None:
        """A read-only store catches up with a writer in another process."""
        self._datasets.clear()
        self._close_storage()  # its groups held the old file: shared() builds a new one
        self._h5.close()
        self._open_reader()

    def _retry(self, read: Callable[[], _T], key: str | None = None) -> _T:
        """Run ``read``; a read-only store retries it on a fresh open if the file
        changed under it anyway (a writer that takes no lock)."""
        for attempt in range(20):
            try:
                with self._reading():
                    return read()
            except OSError as exc:
                if isinstance(exc, SimRecorderError):
                    raise
                if not self._read_only or attempt == 19:
                    where = f" (key {key!r})" if key is not None else ""
                    raise StoreFormatError(
                        f"{self.path!r}: cannot read{where}: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(0.005)
                self._stamp = (-1, -1)  # reopen
        raise AssertionError("unreachable")

    def _begin_write(self, nbytes: int) -> None:
        """Reserve disk space for ``nbytes`` more bytes, then take the writer's lock."""
        self._reserve(nbytes)
        if not self._dirty:
            _lock(self._open_fd, _WRLCK, _WRITER_WAIT)
            self._dirty = True

    def _end_write(self) -> None:
        """After a flush: a new mtime (strictly increasing, so readers always notice),
        then readers may look again."""
        if self._dirty and self._fd is not None:
            ns = max(time.time_ns(), self._mtime_ns + 1)
            os.utime(self._fd, ns=(ns, ns))
            self._mtime_ns = ns
            _lock(self._fd, _UNLCK, 0)
        self._dirty = False

    def _reserve(self, nbytes: int) -> None:
        """Make sure the file system has room for what HDF5 may write next (raise
        :class:`StoreFullError` before HDF5 writes anything, otherwise)."""
        if self._fd is None or _fallocate is None:
            return
        end = self._h5.id.get_filesize() + self._unflushed + nbytes + _RESERVE_SLACK
        if end <= self._reserved_to:
            return
        start, end = self._reserved_to, end + _RESERVE_STEP
        if _fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, start, end - start) != 0:
            err = ctypes.get_errno()
            if err in _FULL_ERRNOS:
                raise StoreFullError(
                    f"{self!r}: no room for {nbytes:,} more bytes: {os.strerror(err)}"
                )
            return  # a file system that cannot reserve (EOPNOTSUPP, ...)
        self._reserved_to = end

    def _close(self) -> None:
        try:
            self._close_storage()
            if self._file is not None and not self._read_only:
                self.commit()
                if self.plain_text:
                    self._write_texts()
                self._begin_write(0)
                self._file.attrs[_CLEAN_ATTR] = 1
        finally:
            self._stale_text.clear()
            self._release()

    def _write_texts(self) -> None:
        """Bring the ``text`` dataset of every str series changed in this session up
        to date (see ``_mark_text``); three flushes in all, however many series."""
        texts = []
        for key in sorted(self._stale_text):
            node = self._dataset(key)
            if isinstance(node, h5py.Group) and _kind_of(node, self.path, key) == STR:
                marked = self._mark_text(node)
                if marked is not None:
                    texts.append((key, node, *marked))
        if not texts:
            return
        self._flush_file()  # the marks reach the file before any row changes
        for key, group, text, done in texts:
            try:
                self._fill_text(group, text, done)
            except StoreFullError as exc:
                raise StoreFullError(
                    f"{self!r}: no room for the plain-h5py copy {key}/text of str "
                    f"series {key!r}; every series is committed and safe ({exc})"
                ) from exc
        self._flush_file()  # the rows reach the file before they are declared valid
        for _, group, text, _ in texts:
            if _TEXT_NUL_ATTR not in group.attrs:
                text.attrs[_TEXT_ROWS_ATTR] = text.shape[0]
        self._flush_file()  # before the clean flag, which vouches for them

    def _mark_text(self, group: h5py.Group) -> tuple[h5py.Dataset, int] | None:
        """Prepare ``group/text`` (variable-length UTF-8) of the str series ``group``
        to be extended: return it and its rows that stay, None if it is up to date.

        Crash safety: the ``simrecorder_text_rows`` attribute says how many rows are
        valid. It is set to 0 (and flushed) before ``text`` changes and to the new row
        count only after the rows are flushed, so a crash while writing leaves ``text``
        marked invalid (HDF5 writes variable-length strings into global heap
        collections, which a crash can leave inconsistent with the rows); a writer that
        reopens the file after that unclean end empties it (``_check_text``) and the
        next clean close writes it again.
        """
        if _TEXT_NUL_ATTR in group.attrs:
            return None
        rows = group["offsets"].shape[0]
        text = group.get("text")
        if text is not None and not _is_text(text):
            return None  # something else under that name: not ours to change
        done = _valid_text_rows(text)
        if text is not None and done == rows:
            return None
        self._begin_write(64 << 10)
        self._unflushed += 64 << 10
        if text is None:
            # the rows are heap IDs (the characters live in the global heap); they
            # count up, so shuffle+gzip shrinks them 9x at no measurable cost
            text = group.create_dataset(
                "text", shape=(0,), maxshape=(None,), dtype=_STR_DTYPE,
                chunks=(chunk_rows(16, max(rows, 1024)),),
                shuffle=True, compression="gzip", compression_opts=1,
            )  # fmt: skip
        text.attrs[_TEXT_ROWS_ATTR] = 0  # nothing valid while it changes
        return text, done if done is not None and done <= rows else 0

    def _fill_text(self, group: h5py.Group, text: h5py.Dataset, done: int) -> None:
        """Write rows ``done:`` of ``text`` from the series' ``data`` and ``offsets``,
        in slices (bounded memory)."""
        if text.shape[0] != done:
            text.resize(done, axis=0)
        offsets = group["offsets"]
        for start, items in _text_slices(offsets, group["data"], done, offsets.shape[0]):
            if any(b"\x00" in item for item in items):
                text.resize(0, axis=0)
                first = next(i for i, item in enumerate(items) if b"\x00" in item)
                group.attrs[_TEXT_NUL_ATTR] = start + first
                return
            nbytes = sum(map(len, items)) + _TEXT_ROW_OVERHEAD * len(items)
            self._begin_write(nbytes)
            self._unflushed += nbytes
            text.resize(start + len(items), axis=0)
            # UTF-8 bytes as they are: h5py stores bytes in a UTF-8 string dataset
            # without decoding them (they were encoded from str by append_block)
            text[start:] = np.array(items, dtype=object)

    def _release(self) -> None:
        self._datasets.clear()
        self._storage = None
        try:
            if self._file is not None:
                self._file.close()
        finally:
            self._file = None
            if self._fd is not None:
                if not self._read_only:
                    # give back the space reserved past the end of the file
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size)
                    self._end_write()
                    if WRITERS.get(self.path) is self:
                        del WRITERS[self.path]
                os.close(self._fd)
                self._fd = None

    @property
    def file(self) -> h5py.File:
        """The open ``h5py.File``."""
        self._check_open()
        return self._file

    @property
    def _h5(self) -> h5py.File:
        # the open file, for code that runs only while it is open (typed as not None)
        assert self._file is not None, "HDF5 file used while closed"
        return self._file

    @property
    def _open_fd(self) -> int:
        # the lock descriptor, for code that runs only while the file is open
        assert self._fd is not None, "HDF5 file descriptor used while closed"
        return self._fd

    @_translated
    def flush(self) -> None:
        # docstring inherited
        self._check_open()
        self._flush_file()

    def _flush_file(self) -> None:
        if self._read_only:
            return
        if self._storage is not None:
            self._storage.flush()
        self._h5.flush()
        if self.durable:  # the OS page cache survives a crash of this process, not
            os.fsync(self._open_fd)  # of the machine: fsync for power-loss safety
        self._unflushed = 0
        self._reserved_to = os.fstat(self._open_fd).st_size  # HDF5 may have truncated
        self._end_write()

    @_translated
    def commit(self) -> None:
        """Record the current length of every series changed since the last commit.

        Each changed series gets ``simrecorder_commit = [epoch, rows, previous_epoch,
        previous_rows]``; after a flush, the root attribute ``simrecorder_epoch``
        becomes ``epoch``, then the file is flushed again. That last write is the
        commit point: a writer that opens the file after an unclean end cuts every
        series back to its rows of the newest epoch not above the root's.
        """
        self._check_writable()
        if not self._changed:
            return
        self._begin_write(_RESERVE_SLACK)
        epoch = int(self._h5.attrs.get(_EPOCH_ATTR, 0)) + 1
        for key, (rows, first) in self._changed.items():
            node = self._dataset(key)
            if node is None:
                continue
            old = node.attrs.get(_COMMIT_ATTR)
            if old is None:
                prev = (0, first)
            elif int(old[0]) == epoch:  # a retry of a commit that did not complete
                prev = (int(old[2]), int(old[3]))
            else:
                prev = (int(old[0]), int(old[1]))
            node.attrs[_COMMIT_ATTR] = np.array([epoch, rows, *prev], dtype=np.int64)
        self._h5.flush()
        self._h5.attrs[_EPOCH_ATTR] = epoch
        self.flush()
        self._changed.clear()

    def _truncate_to_commits(self) -> None:
        """After an unclean end: cut every series back to its committed length."""
        epoch = int(self._h5.attrs.get(_EPOCH_ATTR, 0))
        for key in self.keys():
            node = self._h5.get(key)
            info = node.attrs.get(_COMMIT_ATTR) if node is not None else None
            if info is None or len(info) != 4:
                continue  # never committed (e.g. written before commits existed)
            e, rows, pe, prows = (int(v) for v in info)
            if e > epoch:  # written by a commit that did not complete
                e, rows = (pe, prows) if pe <= epoch else (0, 0)
                node.attrs[_COMMIT_ATTR] = np.array([e, rows, e, rows], dtype=np.int64)
            ds = node["offsets"] if isinstance(node, h5py.Group) else node
            if ds.shape[0] > rows:
                ds.resize(rows, axis=0)
            if isinstance(node, h5py.Group) and _kind_of(node, self.path, key) == STR:
                if not _check_text(node, rows):
                    self._stale_text.add(key)

    # -- a companion sharing the file ---------------------------------------------------
    def storage_kind(self) -> str | None:
        # docstring inherited
        return "hdf5"

    def shared(self, build: Callable[[h5py.File, bool, Callable[[int], None] | None], _C]) -> _C:
        """The one companion object over this store's open ``h5py.File``, built on first
        use as ``build(file, read_only, before_write)``.

        HDF5 lets one writer open a file, so what a run keeps beside its series (a
        :class:`~simrecorder.storage.GenericStorage`: ``rec.storage``) goes through this
        handle. The companion's ``flush()`` runs at each :meth:`flush`, its ``close()``
        (which leaves the file open) at :meth:`close` and before a reader reopens the
        file; the next call then builds a new one. ``before_write(nbytes)`` (``None``
        for a read-only store) must be called before the companion changes the file.
        """
        self._check_open()
        if self._storage is None:
            before_write = None if self._read_only else self._begin_write
            self._storage = build(self._h5, self._read_only, before_write)
        return cast(_C, self._storage)

    def _close_storage(self) -> None:
        storage, self._storage = self._storage, None
        if storage is not None and self._file is not None:
            storage.close()  # writes its indexes; the file stays open (not its own)

    # -- nodes --------------------------------------------------------------------------
    @_translated
    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        if key in self._datasets:
            return "series"
        with self._reading():
            node = self._h5.get(key)
            if node is None:
                return None
            if isinstance(node, h5py.Group):
                return "series" if _KIND_ATTR in node.attrs else "group"
            if isinstance(node, h5py.Dataset):
                return "value" if _VALUE_ATTR in node.attrs else "series"
            return None

    def _dataset(self, key: str) -> h5py.Dataset | h5py.Group | None:
        """The node of the series ``key``: a dataset (dense) or a group holding
        ``data`` and ``offsets`` (str, bytes and object series)."""
        ds = self._datasets.get(key)
        if ds is not None:
            self._datasets.move_to_end(key)
            return ds
        node = self._h5.get(key)
        if isinstance(node, h5py.Group):
            if _KIND_ATTR not in node.attrs:
                return None
        elif not isinstance(node, h5py.Dataset) or _VALUE_ATTR in node.attrs:
            return None
        self._remember(key, node)
        return node

    def _remember(self, key: str, node: h5py.Dataset | h5py.Group) -> None:
        # An open dataset costs HDF5 tens of kB: keep the most recently used ones
        # (dropping one closes it; HDF5 then writes its cached chunks, into space
        # that _reserve set aside).
        self._datasets[key] = node
        while len(self._datasets) > MAX_OPEN_DATASETS:
            self._datasets.popitem(last=False)

    @_translated
    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        with self._reading():
            if key not in self._datasets:
                self._check_appendable(key)
            ds = self._dataset(key)
            if ds is None:
                return None
            return _spec_of(ds, self.path, key)

    def _check_appendable(self, key: str) -> None:
        """Raise :class:`KeyConflictError` if ``key`` names something in the file that
        simrecorder cannot append to (written by another tool, typically), so that
        ``record`` refuses the key at once instead of the store failing at flush."""
        link = self._h5.get(key, getlink=True)
        if link is None:
            return
        why = None
        node = None
        if isinstance(link, h5py.ExternalLink):
            why = f"an external link to {link.filename}:{link.path}"
        else:
            node = self._h5.get(key)
            if node is None:
                why = f"a dangling soft link to {getattr(link, 'path', '?')}"
        if isinstance(node, h5py.Dataset) and _VALUE_ATTR not in node.attrs:
            why = _not_growable(node)
        elif isinstance(node, h5py.Group) and _KIND_ATTR in node.attrs:
            for part in ("data", "offsets"):
                child = node.get(part)
                if not isinstance(child, h5py.Dataset):
                    raise StoreFormatError(f"{self.path!r}: series {key!r} has no {part!r} dataset")
                problem = _not_growable(child)
                if problem:
                    why = f"a series whose {part!r} is {problem}"
        if why:
            raise KeyConflictError(
                f"key {key!r} in {self!r} is {why}: simrecorder cannot append to it "
                "(record under another key)"
            )

    # -- series -------------------------------------------------------------------------
    def _create(self, key: str, spec: SeriesSpec, first_rows: int | None) -> h5py.Dataset:
        try:
            return self._create_node(key, spec, first_rows)
        except BaseException:
            # a half-made node (no kind attribute yet, say) would block the key
            for attempt in range(5):
                try:
                    self._datasets.pop(key, None)
                    if self._h5.get(key, getlink=True) is not None:
                        del self._h5[key]
                    break
                except BaseException:
                    if attempt == 4:
                        raise
            raise

    def _create_node(self, key: str, spec: SeriesSpec, first_rows: int | None) -> h5py.Dataset:
        if spec.kind == DENSE:
            rows = chunk_rows(spec.sample_nbytes, first_rows)
            # HDF5 chunks need positive sizes: a zero-length axis gets chunk size 1
            shape = spec.dense_shape
            chunk_dims = tuple(max(1, n) for n in shape)
            ds = self._h5.create_dataset(
                key,
                shape=(0, *shape),
                maxshape=(None, *(n if n else None for n in shape)),
                dtype=spec.dtype,
                chunks=(rows, *chunk_dims),
                compression=self.compression,
                compression_opts=self.compression_opts,
            )
        else:
            # Variable-length samples are one byte stream plus end offsets, both plain
            # append-only datasets: HDF5's vlen types keep their bytes in global heap
            # collections that are rewritten in place, and a SIGKILL during that write
            # made a whole series unreadable in our crash tests (1 in 100 kills).
            ds = self._h5.create_group(key)
            options = {"compression": self.compression, "compression_opts": self.compression_opts}
            ds.create_dataset(
                "data", shape=(0,), maxshape=(None,), dtype=np.uint8,
                chunks=(chunk_rows(1, first_rows),), **options,
            )  # fmt: skip
            ds.create_dataset(
                "offsets", shape=(0,), maxshape=(None,), dtype=np.int64,
                chunks=(chunk_rows(8, first_rows),), **options,
            )  # fmt: skip
        ds.attrs[_KIND_ATTR] = spec.kind
        # a series born after the last commit holds no committed rows: an unclean end
        # cuts it back to empty, like every other series recorded in that epoch
        ds.attrs[_COMMIT_ATTR] = np.zeros(4, dtype=np.int64)
        self._remember(key, ds)
        return ds

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        # Takes the block or, on any exception (KeyboardInterrupt included), shrinks
        # the series back to its length before the call: the shrink only drops rows
        # past that length (HDF5 rewrites a shared edge chunk with its stored rows
        # unchanged). Space is reserved first, so HDF5 itself never meets a full disk.
        # Everything happens in this one frame, the commit (_took) last: a
        # KeyboardInterrupt after any call here still lands inside the try.
        undo: list[tuple[h5py.Dataset, int]] = []
        before = self._changed.get(key)
        try:
            self._check_writable(key)
            if not len(block):
                return
            node = self._dataset(key)
            if spec.kind != DENSE:
                if spec.kind == STR:
                    block = [item.encode("utf-8") for item in block]
                nbytes = sum(map(len, block))
                self._begin_write(nbytes + 8 * len(block) + (128 << 10))
                node = node or self._create(key, spec, max(len(block), nbytes))
                rows = _append_items(node, block, undo)
                self._took(key, rows - len(block), rows, nbytes + 8 * len(block))
                if spec.kind == STR:
                    self._stale_text.add(key)
                return
            count = len(block)
            chunk = node.chunks[0] if node is not None and node.chunks else None
            chunk = chunk or chunk_rows(spec.sample_nbytes, count)
            self._begin_write(block.nbytes + 2 * chunk * spec.sample_nbytes + (16 << 10))
            ds = node or self._create(key, spec, count)
            start = ds.shape[0]
            undo.append((ds, start))
            ds.resize(start + count, axis=0)
            self._write_dense(ds, start, block)
            self._took(key, start, start + count, block.nbytes)
        except BaseException as exc:
            _shrink_back(undo)
            self._untook(key, before)
            error = _store_error(self, exc, key, writing=True)
            if error is None:
                raise
            raise error from exc

    def _took(self, key: str, old_rows: int, rows: int, nbytes: int) -> None:
        first = self._changed.get(key, (0, old_rows))[1]
        self._changed[key] = (rows, first)
        self._unflushed += nbytes

    def _untook(self, key: str, before: tuple[int, int] | None) -> None:
        if before is None:
            self._changed.pop(key, None)
        else:
            self._changed[key] = before

    def _write_dense(self, ds: h5py.Dataset, start: int, block: np.ndarray) -> None:
        """Write rows ``start:`` of ``ds``; whole chunks go straight to the file.

        ``write_direct_chunk`` skips HDF5's selection and chunk-cache machinery and
        writes at close to plain ``write`` speed (measured: 4.2 vs 2.5 GB/s for 8 MiB
        samples). It needs unfiltered data and chunks that span whole samples, which
        is how :meth:`_create` lays datasets out.
        """
        rows = ds.chunks[0] if ds.chunks else 0
        count = len(block)
        direct = (
            rows
            and not ds.compression
            and not ds._filters
            and ds.chunks[1:] == ds.shape[1:]
            and count >= rows
        )
        if not direct:
            ds[start : start + count] = block
            return
        head = (-start) % rows  # rows up to the next chunk boundary
        if head:
            ds[start : start + head] = block[:head]
        full_end = head + (count - head) // rows * rows
        zeros = (0,) * (ds.ndim - 1)
        for offset in range(head, full_end, rows):
            chunk = np.ascontiguousarray(block[offset : offset + rows], dtype=ds.dtype)
            ds.id.write_direct_chunk((start + offset, *zeros), chunk)
        if full_end < count:
            ds[start + full_end : start + count] = block[full_end:]

    @_translated
    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        with self._reading():
            ds = self._dataset(key)
            if ds is None:
                raise KeyNotFoundError(f"no series {key!r} in {self!r}")
            kind = _kind_of(ds, self.path, key)
        if kind == DENSE:
            return HDFView(self, key)
        items = self._retry(lambda: _read_items(self._dataset(key)), key)
        if kind == STR:
            return [item.decode("utf-8") for item in items]
        if kind == OBJECT:
            return [_codec.decode(item) for item in items]
        return items

    # -- single values ------------------------------------------------------------------
    @_translated
    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        kind, data, extra = encode_value(key, value)
        dtype = None
        if kind == STR and "\x00" not in value:
            data, dtype = value, _STR_DTYPE  # a string h5py users read as a string
        link = self._h5.get(key, getlink=True)
        if link is not None and not isinstance(link, h5py.HardLink):
            raise KeyConflictError(
                f"key {key!r} in {self!r} is a {type(link).__name__}: cannot set a value there"
            )
        self._begin_write(getattr(data, "nbytes", len(str(data))) + (64 << 10))
        if link is not None:
            del self._h5[key]
        self._datasets.pop(key, None)
        ds = self._h5.create_dataset(key, data=data, dtype=dtype)
        ds.attrs[_VALUE_ATTR] = kind
        ds.attrs.update(extra)

    @_translated
    def _get_value(self, key: str) -> Any:
        # docstring inherited
        with self._reading():
            ds = self._h5[key]
            kind = ds.attrs[_VALUE_ATTR]
            if kind == STR and ds.dtype.kind != "u":
                return ds.asstr()[()]
            return decode_value(kind, ds[()], ds.attrs.get(PYTYPE_ATTR))

    @_translated
    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        # Soft and external links are not followed (they may dangle, loop or leave
        # the file); series are what the file itself holds.
        self._check_open()
        with self._reading():
            root = self._h5
            if prefix:
                link = root.get(prefix, getlink=True)
                if link is None or not isinstance(link, h5py.HardLink):
                    return []
                node = root.get(prefix)
                if isinstance(node, h5py.Dataset):
                    return [prefix]
                root = node
            if _KIND_ATTR in root.attrs and prefix:
                return [prefix]  # a str/bytes/object series is a group
            found: list[str] = []

            def walk(group: h5py.Group, path: str) -> None:
                for name in group:
                    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                        continue
                    node = group.get(name)
                    full = f"{path}/{name}" if path else name
                    if any(attr in node.attrs for attr in _STORAGE_ATTRS):
                        continue  # a node of simrecorder.storage, not a series
                    if isinstance(node, h5py.Dataset) or _KIND_ATTR in node.attrs:
                        found.append(full)
                    elif isinstance(node, h5py.Group):
                        walk(node, full)

            walk(root, prefix)
        return sorted(found)

    # -- series attributes (Recorder.describe) ------------------------------------------
    @_translated
    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the HDF5 attributes of the series' dataset (of its
        group for a str, bytes or object series), then flush. str values are
        variable-length UTF-8 and lists of str arrays of them, so plain h5py reads
        ``units`` as text; int, float and bool are HDF5 numbers."""
        self._check_writable(key)
        node = self._dataset(key)
        if node is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        values = {name: _attr_value(self, key, name, value) for name, value in attrs.items()}
        self._begin_write(sum(len(repr(v)) for v in values.values()) + (64 << 10))
        self._unflushed += 64 << 10
        for name, (value, dtype) in values.items():
            node.attrs.create(name, value, dtype=dtype)
        self._flush_file()

    @_translated
    def series_attrs(self, key: str) -> dict[str, Any]:
        # docstring inherited
        self._check_open(key)

        def read() -> dict[str, Any]:
            node = self._dataset(key)
            if node is None:
                raise KeyNotFoundError(f"no series {key!r} in {self!r}")
            return {
                name: _attr_plain(value)
                for name, value in node.attrs.items()
                if name not in _INTERNAL_SERIES_ATTRS
            }

        return self._retry(read, key)

    # -- metadata -----------------------------------------------------------------------
    @property
    @_translated
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        with self._reading():
            raw = {
                name: _plain(value)
                for name, value in self._h5.attrs.items()
                if name not in _STORAGE_ATTRS
            }
        for name in _names(raw.pop(_JSON_ATTRS, [])):
            if isinstance(raw.get(name), str):
                raw[name] = json.loads(raw[name])
        return raw

    @_translated
    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        self._begin_write(sum(len(repr(v)) for v in attrs.values()) + (64 << 10))
        as_json = set(_names(self._h5.attrs.get(_JSON_ATTRS, [])))
        for name, value in attrs.items():
            as_json.discard(name)
            try:
                self._h5.attrs[name] = value
            except (TypeError, ValueError):
                # dicts, None, mixed lists: HDF5 attributes cannot hold them, JSON can
                # (readable as text by plain h5py; listed so that attrs decodes them)
                self._h5.attrs[name] = json.dumps(value, default=repr)
                as_json.add(name)
        if as_json:
            self._h5.attrs[_JSON_ATTRS] = sorted(as_json)
        elif _JSON_ATTRS in self._h5.attrs:
            del self._h5.attrs[_JSON_ATTRS]


def _append_items(
    group: h5py.Group, items: list[bytes], undo: list[tuple[h5py.Dataset, int]]
) -> int:
    """Append variable-length items, bytes first, then the offsets that make them
    visible; return the new row count. ``undo`` gets each dataset's size before."""
    data, offsets = group["data"], group["offsets"]
    count = offsets.shape[0]
    base = int(offsets[count - 1]) if count else 0  # bytes past it are leftovers
    payload = np.frombuffer(b"".join(items), dtype=np.uint8)
    ends = base + np.cumsum([len(item) for item in items], dtype=np.int64)
    undo += [(offsets, count), (data, data.shape[0])]
    data.resize(base + len(payload), axis=0)
    if len(payload):
        data[base:] = payload
    offsets.resize(count + len(items), axis=0)
    offsets[count:] = ends
    return count + len(items)


def _valid_text_rows(text: h5py.Dataset | None) -> int | None:
    """How many rows of a ``text`` dataset are valid; None when it is marked invalid."""
    if text is None:
        return None
    valid = text.attrs.get(_TEXT_ROWS_ATTR)
    if valid is None or int(valid) != text.shape[0]:
        return None
    return int(valid)


def _is_text(node: Any) -> bool:
    """True for a dataset ``_mark_text`` may have made (1-D growable strings)."""
    return (
        isinstance(node, h5py.Dataset)
        and node.ndim == 1
        and node.maxshape[0] is None
        and h5py.check_string_dtype(node.dtype) is not None
    )


def _check_text(group: h5py.Group, rows: int) -> bool:
    """After an unclean end: empty the ``text`` of the str series ``group`` if a crash
    left it marked invalid or longer than the series' committed ``rows``; True when it
    holds exactly the series (or the series has none: a NUL in a sample)."""
    nul = group.attrs.get(_TEXT_NUL_ATTR)
    if nul is not None:
        if int(nul) < rows:
            return True
        del group.attrs[_TEXT_NUL_ATTR]  # that row was cut off
    text = group.get("text")
    if text is None:
        return rows == 0
    if not _is_text(text):
        return True  # not ours (see _mark_text)
    valid = _valid_text_rows(text)
    if valid is None or valid > rows:
        # (rows of an invalid text may point into damaged heap collections: all go)
        text.attrs[_TEXT_ROWS_ATTR] = 0
        text.resize(0, axis=0)
        valid = 0
    return valid == rows


def _text_slices(
    offsets: h5py.Dataset, data: h5py.Dataset, start: int, stop: int
) -> Iterator[tuple[int, list[bytes]]]:
    """Rows ``start:stop`` of a str/bytes/object series (its ``offsets`` and
    ``data``) as ``(first row, samples)`` slices of at most ``_TEXT_SLICE_ROWS`` rows
    and about ``_TEXT_SLICE_BYTES``."""
    while start < stop:
        end = min(stop, start + _TEXT_SLICE_ROWS)
        ends = offsets[start:end]
        base = int(offsets[start - 1]) if start else 0
        fits = int(np.searchsorted(ends, base + _TEXT_SLICE_BYTES, side="right"))
        ends = ends[: max(1, fits)]
        payload = data[base : int(ends[-1])].tobytes()
        cuts = (ends - base).tolist()
        yield start, [payload[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
        start += len(cuts)


def _shrink_back(sizes: list[tuple[h5py.Dataset, int]]) -> None:
    """Shrink datasets back to their lengths before a failed append. Idempotent, so
    it is run again when another exception (a second Ctrl-C) lands in the middle."""
    for attempt in range(5):
        try:
            for ds, size in sizes:
                if ds.shape[0] != size:
                    ds.resize(size, axis=0)
            return
        except BaseException:
            if attempt == 4:
                raise


def _not_growable(ds: h5py.Dataset) -> str | None:
    """Why simrecorder cannot append to ``ds``, or None when it can."""
    if ds.ndim == 0:
        return "a scalar dataset"
    if ds.chunks is None:
        return "a contiguous (not chunked) dataset"
    if ds.maxshape[0] is not None:
        return f"a dataset of fixed maximum shape {ds.maxshape}"
    if ds.dtype.kind == "O" or h5py.check_vlen_dtype(ds.dtype) is not None:
        return f"a dataset of variable-length type {ds.dtype}"
    return None


def _read_items(group: h5py.Group) -> list[bytes]:
    _check_stored(group["offsets"])
    offsets = group["offsets"][:]
    if not len(offsets):
        return []
    data = group["data"][: int(offsets[-1])].tobytes()
    starts = np.concatenate([[0], offsets[:-1]])
    return [data[a:b] for a, b in zip(starts.tolist(), offsets.tolist(), strict=True)]


def _check_stored(ds: h5py.Dataset) -> None:
    """Raise StoreFormatError if an unfiltered dataset claims more rows than it stores:
    simrecorder writes every row, so only a damaged shape does that (and reading it
    would try to allocate memory for the rows it claims)."""
    if ds.chunks and ds.id.get_create_plist().get_nfilters() == 0:
        claimed = ds.shape[0] * ds.dtype.itemsize
        if claimed > ds.id.get_storage_size() + ds.chunks[0] * ds.dtype.itemsize:
            key = ds.parent.name.lstrip("/")
            raise StoreFormatError(
                f"{ds.file.filename!r}: cannot read (key {key!r}): {ds.name} claims "
                f"{ds.shape[0]:,} rows but stores fewer: the file is damaged"
            )


_RDLCK, _WRLCK, _UNLCK = 0, 1, 2  # fcntl.F_RDLCK etc. on Linux


def _lock(fd: int, kind: int, wait: float) -> bool:
    """Take (or, with ``_UNLCK``, drop) the reader/writer lock; give up after
    ``wait`` seconds or where the file system has no such locks."""
    import fcntl

    command = getattr(fcntl, "F_OFD_SETLK", None)
    if command is None:
        return False
    arg = struct.pack("hhqqixxxx", kind, os.SEEK_SET, _LOCK_OFFSET, 1, 0)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.fcntl(fd, command, arg)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                return False
            time.sleep(0.001)


def _load_fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOC_FL_KEEP_SIZE = 1
_fallocate = _load_fallocate()


def _stamp(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def _kind_of(node: h5py.Dataset | h5py.Group, path: str, key: str) -> str:
    kind = node.attrs.get(_KIND_ATTR, DENSE)
    if isinstance(kind, bytes):
        kind = kind.decode("utf-8", "replace")
    if kind not in KINDS or (kind == DENSE) != isinstance(node, h5py.Dataset):
        raise StoreFormatError(f"{path!r}: series {key!r} has unknown kind {kind!r}")
    return kind


def _spec_of(ds: h5py.Dataset | h5py.Group, path: str, key: str) -> SeriesSpec:
    kind = _kind_of(ds, path, key)
    if kind == DENSE:
        return SeriesSpec(DENSE, ds.dtype, ds.shape[1:])
    return SeriesSpec(kind)


def _attr_value(store: HDF5DataStore, key: str, name: str, value: Any) -> tuple[Any, Any]:
    """``(value, dtype)`` to store the series attribute ``name`` as (checked first, so
    that a bad value changes nothing)."""
    where = f"{store!r}: series {key!r}: attribute {name!r}"
    if name in _INTERNAL_SERIES_ATTRS:
        raise InvalidArgumentError(f"{where} is simrecorder's own: choose another name")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgumentError(f"{where}: HDF5 text cannot hold a NUL character")
        return value, _STR_DTYPE
    if isinstance(value, (bool, int, float)) and _fits_hdf5(value):
        return value, None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if any("\x00" in v for v in value):
            raise InvalidArgumentError(f"{where}: HDF5 text cannot hold a NUL character")
        return np.array(list(value), dtype=_STR_DTYPE), _STR_DTYPE
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if numbers and all(_fits_hdf5(v) for v in value):
        return np.asarray(value), None
    if numbers or isinstance(value, int):
        raise InvalidArgumentError(f"{where}: {value!r} holds an integer beyond 64 bits")
    raise ArgumentTypeError(
        f"{where} must be str, int, float, bool or a list of str or of numbers, "
        f"got {type(value).__name__}"
    )


def _fits_hdf5(value: bool | int | float) -> bool:
    """False for an int that no HDF5 integer type holds."""
    return not isinstance(value, int) or -(1 << 63) <= value < (1 << 64)


def _attr_plain(value: Any) -> Any:
    """A series attribute as :meth:`HDF5DataStore.set_series_attrs` was given it:
    arrays as lists, text as str, numbers as Python numbers."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    return _plain(value)


def _names(value: Any) -> list[str]:
    """A list of str attribute (h5py gives an array of str or bytes) as a list."""
    if isinstance(value, (str, bytes)):
        value = [value]
    return [item.decode() if isinstance(item, bytes) else str(item) for item in value]


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python values where that is lossless."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
