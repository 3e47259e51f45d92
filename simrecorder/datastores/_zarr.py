"""zarr v3 data store: one array per series in a group hierarchy."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import glob
import json
import math
import os
import re
import shutil
import struct
import threading
import uuid
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard, TypeVar, cast

import numpy as np
import zarr
import zarr.codecs
from zarr.core.array import AsyncArray
from zarr.core.common import JSON
from zarr.core.dtype import VariableLengthBytes, VariableLengthUTF8
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync as zarr_sync
from zarr.storage import FsspecStore, LocalStore, ZipStore

from .. import _codec
from .._fs import AtomicFile, FileLock, fsync_path
from .._keys import check_path_parts, validate_key
from .._modes import check_mode, plan_open
from .._provenance import provenance
from .._schema import BYTES, DENSE, STR, SeriesSpec
from .._signals import deferred_signals
from .._writers import register_writer, unregister_writer
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    KeyNotFoundError,
    ReadOnlyError,
    SimRecorderError,
    StoreClosedError,
    StoreFormatError,
    StoreFullError,
    StoreNotFoundError,
    StoreWriteError,
)
from ..options import CompressionType, DatastoreType
from ._chunks import chunk_rows
from ._values import PYTYPE_ATTR, decode_value, encode_value, jsonable
from ._view import SeriesView
from .base import DataStore, NodeType, check_key_free
from .registry import import_backend

if TYPE_CHECKING:
    from ..locations import FsspecLocation
    from ._zarr_lmdb import LMDBStore

__all__ = ["ZarrDataStore", "ZarrView"]

_C = TypeVar("_C")  # the companion of shared()

#: Version of the layout this module writes (root attribute ``simrecorder_format``).
FORMAT_VERSION = 1
_KIND_ATTR = "simrecorder_kind"
_VALUE_ATTR = "simrecorder_value"
_FORMAT_ATTR = "simrecorder_format"
#: per series: ``[epoch, rows, previous epoch, previous rows]`` of its last commits
_COMMIT_ATTR = "simrecorder_commit"
#: root: the newest epoch whose series lengths were all recorded (the commit point)
_EPOCH_ATTR = "simrecorder_epoch"
#: root: True after a clean close (nothing to recover at the next open)
_CLEAN_ATTR = "simrecorder_clean"
#: the marks of a :mod:`simrecorder.storage` sharing the directory (``rec.storage``): a
#: group's index, an array's flag; series listings skip its nodes
_STORAGE_INDEX_ATTR = "simrecorder_storage"
_STORAGE_ARRAY_ATTR = "simrecorder_storage_array"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_VLEN_CHUNK_ROWS = 1024
#: zarr v3's default chunk key encoding with "." as separator: chunk files sit side by
#: side in the array's directory (c.0.0), with no directory to create per chunk
_CHUNK_KEYS: dict[str, JSON] = {"name": "default", "separator": "."}
#: temporary files of atomic writes: ours (``<name>.<hex>.tmp``) and zarr's
#: LocalStore (``<stem>.<hex>.partial``)
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.(tmp|partial)$")
#: URL schemes of stores in an object store, and the fsspec protocol of each
_REMOTE_SCHEMES = {"s3": "s3", "zarr+s3": "s3"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence zarr's notes that numcodecs codecs (LZMA) and variable-length bytes have
    no zarr v3 specification yet: the store documents that choice once, here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Zarr V3 specification", module="zarr")
        warnings.filterwarnings("ignore", message=".*Zarr version 3 specification")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


#: What zarr-python raises on a damaged ``zarr.json`` or chunk (bad JSON, bad UTF-8, a
#: document that is not zarr v3 metadata, a damaged zip member)
_DAMAGE = (ValueError, UnicodeError, zipfile.BadZipFile)


@contextlib.contextmanager
def _reading(store: ZarrDataStore, key: str) -> Iterator[None]:
    """:func:`_quiet`, and zarr-python's errors from damaged metadata or chunks turned
    into :class:`StoreFormatError` naming the store and key."""
    try:
        with _quiet():
            yield
    except SimRecorderError:
        raise
    except _DAMAGE as exc:
        raise StoreFormatError(
            f"{store!r}: cannot read {key!r}, the store is damaged: {type(exc).__name__}: {exc}"
        ) from exc


#: bytes per blosc block of a dense array's chunks (see :func:`_compressors`)
BLOSC_BLOCK_BYTES = 128 << 10


def _compressors(compression: CompressionType, itemsize: int | None = None) -> Any:
    """zarr's codec of ``compression``. A dense array of ``itemsize``-byte items gets
    blosc blocks of :data:`BLOSC_BLOCK_BYTES` (the codec's ``blocksize`` counts items
    per shuffled stream: blosc makes a block ``typesize`` times that): a chunk is then
    many blocks, which blosc's threads compress in parallel and which the store
    re-encodes one by one (see :class:`_BloscBlocks`); blosc's automatic choice makes
    a 1 MiB chunk one block, re-encoded whole for every row appended to it."""
    if compression == CompressionType.NONE:
        return None
    if compression == CompressionType.BLOSC:
        blocksize = max(1, BLOSC_BLOCK_BYTES // itemsize) if itemsize else 0
        return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", blocksize=blocksize)
    if compression == CompressionType.ZSTD:
        return zarr.codecs.ZstdCodec(level=3)
    if compression == CompressionType.LZMA:
        from zarr.codecs.numcodecs import LZMA

        return LZMA()
    raise InvalidArgumentError(f"unknown compression {compression!r}")  # pragma: no cover


def _enum_arg(enum: Any, value: Any, name: str) -> Any:
    """``enum(value)``, or :class:`InvalidArgumentError` listing the valid values."""
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(f"{enum.__name__}.{m.name} ({m.value!r})" for m in enum)
        raise InvalidArgumentError(
            f"invalid {name} {value!r} for ZarrDataStore; valid: {valid}"
        ) from None


def _dimension_names(key: str, ndim: int) -> tuple[str, ...]:
    """Per-series dimension names: ``<name>_step``, ``<name>_dim1``, ... (``name`` is
    the last part of ``key``), so series of different lengths never share a
    dimension (see :class:`ZarrDataStore`)."""
    name = key.rsplit("/", 1)[-1]
    return (f"{name}_step", *(f"{name}_dim{axis}" for axis in range(1, ndim)))


def _value_dimension_names(key: str, ndim: int) -> tuple[str, ...]:
    """Dimension names of a single value's array: ``<name>_dim0``, ``<name>_dim1``, ..."""
    name = key.rsplit("/", 1)[-1]
    return tuple(f"{name}_dim{axis}" for axis in range(ndim))


class ZarrView(SeriesView):
    """Lazy view of a dense series stored as a zarr array (``view.array``).

    The view follows the series: rows appended later are visible.
    """

    def __init__(self, store: ZarrDataStore, key: str) -> None:
        self._store = store
        self._key = key

    @property
    def array(self) -> zarr.Array:
        """The underlying ``zarr.Array`` (as of now)."""
        self._store._check_open(self._key)
        array = self._store._array(self._key)
        if array is None:
            raise KeyNotFoundError(f"no series {self._key!r} in {self._store!r} any more")
        return array

    @property
    def shape(self) -> tuple[int, ...]:
        # docstring inherited
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        # docstring inherited
        return self.array.dtype

    def _read(self, index: Any) -> Any:
        # docstring inherited
        array = self.array
        with _quiet():
            return array[index]


class ZarrDataStore(DataStore):
    """Store series in a zarr v3 hierarchy: one array per series at its key path.

    Arrays are chunked along the sample axis with chunks of about
    ``desired_chunk_size_bytes`` (one sample per chunk for larger samples), whatever
    the size of the first block; the other axes are not split. An uncompressed chunk
    that is not full yet is a sparse file in a directory store (its zero padding
    takes no disk); in ZIP and LMDB stores, where padding would be stored, an
    uncompressed series whose first block is small gets chunks of that block's size
    (at least 8 KiB). Dense series are written by the store itself, not through
    zarr-python: chunks encoded with numcodecs as the array's codecs say (blosc with
    its threads), the ``zarr.json`` documents zarr-python would write. A blosc chunk
    is made of 128 KiB blocks, compressed one by one: an append re-encodes only the
    blocks it changes (a short series costs one block, not its 1 MiB chunk of
    zeros), and the chunk is byte for byte blosc's own encoding. An append
    writes chunks only; :meth:`flush` (which the recorder calls every epoch) writes
    each changed array's ``zarr.json`` once, after its chunks: rows appended become
    visible to readers at the next flush. str, bytes and object series, and arrays
    with other codecs, go through zarr.

    Every array has zarr v3 ``dimension_names``, so ``xarray.open_zarr(path,
    consolidated=False)`` (with ``group=`` for a sub-group) opens the store: a series
    ``<group>/<name>`` has dimensions ``<name>_step`` (the sample axis),
    ``<name>_dim1``, ``<name>_dim2``, ... (the sample's axes); a single value has
    ``<name>_dim0``, ... . No two series share a dimension, so series of different
    lengths and shapes open together. (A series named like another one's dimension,
    e.g. ``loss_step`` beside ``loss``, opens as a coordinate, not a data variable.)
    Arrays written before this scheme have no dimension names.

    Parameters
    ----------
    data_dir_pth
        Directory (``DatastoreType.DIRECTORY``), zip file (``DatastoreType.ZIP``) or
        LMDB directory (``DatastoreType.LMDB``, holding ``data.mdb``).
    desired_chunk_size_bytes
        Target size of a chunk.
    datastore_type
        ``DIRECTORY`` (a zarr v3 ``LocalStore``) or ``ZIP``. While a ZIP store is open
        for writing its data lives in the directory ``<path>.partial``; ``close()``
        packs it into the zip (atomically) and removes the directory; a ``close()``
        that fails (disk full) leaves the store open, so it can be retried, and
        readers read the directory until the zip exists. ``LMDB`` (needs the ``lmdb``
        extra): every zarr key is a key of one LMDB environment (see
        :class:`~simrecorder.datastores.LMDBStore`, which also opens it with plain
        zarr); each append and each commit is one LMDB transaction, so a crash never
        leaves half of one; readers open the environment read-only.
        An ``s3://bucket/prefix?endpoint_url=...`` URL (or ``zarr+s3://...``) is a
        zarr v3 store in S3 (``DIRECTORY`` only, see Notes).
    compression_type
        Codec of new arrays: ``BLOSC`` (lz4, level 5, byte shuffle, 128 KiB blocks;
        the default), ``ZSTD``, ``LZMA`` (numcodecs'
        codec, outside the zarr v3 spec) or ``NONE``; anything else raises
        :class:`~simrecorder.errors.InvalidArgumentError`.
    mode
        See :mod:`simrecorder._modes`. ``None`` (default, SimRecorder's rule): a path
        that holds no store is created for writing; an existing store opens for
        reading, and writing to it raises :class:`~simrecorder.errors.StoreExistsError`
        (resume it with ``'a'``, overwrite it with ``'w'``). ``'r'`` reads only: it
        never writes a byte, takes no lock and creates nothing.
    durable
        ``fsync`` what each flush wrote (chunk files, then metadata, then their
        directory) so flushed data survives a power loss. Compressed arrays, which zarr
        writes itself, are synced with ``os.sync()`` at each flush. An LMDB store syncs
        every transaction (LMDB's ``sync``).
    lmdb_map_size
        First size in bytes of an LMDB store's memory map (it doubles whenever a write
        does not fit; it costs address space, not disk).

    Notes
    -----
    :meth:`commit` records every changed series' length (attribute
    ``simrecorder_commit`` of the array, then root attribute ``simrecorder_epoch``,
    the commit point). A writer that opens the store after an unclean end (no
    ``close()``) cuts every series back to its committed length, so the series are
    aligned at the last epoch; a clean ``close()`` commits. Readers never change it.

    A store in S3 (``s3://bucket/run.zarr?endpoint_url=...``) keeps the same layout
    and the same commit protocol: the store writes its chunks and metadata as
    objects through a :class:`~simrecorder.locations.FsspecLocation` (each upload
    appears whole or not at all), zarr-python reads and writes its own arrays
    through ``zarr.storage.FsspecStore`` with the same options, so plain
    ``zarr.open_group(FsspecStore.from_url(...))`` and xarray read it. Chunks are
    uploaded before the ``zarr.json`` that shows them, and an uncompressed chunk is
    uploaded with its zero padding (as in ZIP and LMDB). S3 has no locks: nothing
    stops two writers of one store, which must not happen (readers are fine).
    """

    protocol = "zarr"
    persistent = True
    supports_lazy_views = True
    supports_series_attrs = True  # see set_series_attrs

    def __init__(
        self,
        data_dir_pth: str | os.PathLike[str],
        desired_chunk_size_bytes: int = 1 << 20,
        datastore_type: DatastoreType = DatastoreType.DIRECTORY,
        compression_type: CompressionType = CompressionType.BLOSC,
        mode: str | None = None,
        durable: bool = False,
        lmdb_map_size: int = 1 << 30,
    ) -> None:
        mode = check_mode(mode)
        datastore_type = _enum_arg(DatastoreType, datastore_type, "datastore_type")
        compression_type = _enum_arg(CompressionType, compression_type, "compression_type")
        if datastore_type == DatastoreType.LMDB:
            self._lmdb: Any = import_backend(
                "simrecorder.datastores._zarr_lmdb", "lmdb", what="DatastoreType.LMDB"
            )
        super().__init__()
        #: the object-store location of a store in S3, else None
        self._location: FsspecLocation | None = _remote_location(data_dir_pth, datastore_type)
        if self._location is not None:
            self.path = self._location.url
        else:
            self.path = os.path.abspath(os.path.expanduser(os.fspath(data_dir_pth)))
        self.desired_chunk_size_bytes = int(desired_chunk_size_bytes)
        self.datastore_type: DatastoreType = datastore_type
        self.compression_type: CompressionType = compression_type
        self.mode = mode
        self.durable = durable
        self.lmdb_map_size = int(lmdb_map_size)
        self._arrays: dict[str, zarr.Array] = {}
        self._raw: dict[str, _ChunkWriter] = {}
        #: series whose writer wrote rows (or a new array) its metadata does not show
        self._unpublished: dict[str, None] = {}
        self._zarr_wrote = False
        self._lock: weakref.finalize | None = None
        self._epoch = 0  # the newest committed epoch
        self._dirty: dict[str, int] = {}  # series changed since the commit -> rows then
        self._clean_on_disk = False
        self._group_or_none: zarr.Group | None = None
        self._store: LocalStore | ZipStore | LMDBStore | FsspecStore | None = None
        self._files: _Files | None = None  # metadata and chunks of a writer, by key
        self._storage: Any = None  # the companion of shared() (rec.storage)
        #: held while the root zarr.json is read and replaced (by this store, or by
        #: the storage it shares the directory with)
        self.root_guard = threading.Lock()
        plan = plan_open(mode, self._exists(), f"zarr store {self.path!r}")
        self._apply_open_plan(plan)
        self._open_group("r" if plan.read_only else "w" if plan.replace else "a")
        if plan.resume:
            self._note_resume()

    # -- identity -----------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ZarrDataStore:
        # docstring inherited
        # ``zarr+lmdb://path`` and bare paths ending in ``.mdb`` are LMDB stores,
        # ``zarr+zip://path`` and paths ending in ``.zip`` ZIP stores
        # (``zarr://path.mdb`` is a directory, as SimRecorder's directory stores were)
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme in _REMOTE_SCHEMES:
            return cls(f"{_REMOTE_SCHEMES[scheme]}://{url.split('://', 1)[1]}", **kwargs)
        if scheme:
            url = url[len(scheme) + 3 :]
        if scheme == "zarr+lmdb" or (not scheme and url.lower().rstrip("/").endswith(".mdb")):
            kwargs.setdefault("datastore_type", DatastoreType.LMDB)
        elif scheme == "zarr+zip" or url.lower().endswith(".zip"):
            kwargs.setdefault("datastore_type", DatastoreType.ZIP)
        return cls(url, **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        if self._location is not None:
            return self.path  # s3://bucket/prefix?endpoint_url=...
        lower = self.path.lower()
        if self.datastore_type == DatastoreType.ZIP:
            return self.path if lower.endswith(".zip") else "zarr+zip://" + self.path
        if self.datastore_type == DatastoreType.LMDB:
            return self.path if lower.endswith(".mdb") else "zarr+lmdb://" + self.path
        if lower.endswith(".zarr"):
            return self.path
        return "zarr://" + self.path

    @property
    def local_path(self) -> str | None:
        # docstring inherited: the directory, or the zip file (None in S3)
        return None if self._location is not None else self.path

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def _workdir(self) -> str:
        return self.path + ".partial" if self.datastore_type == DatastoreType.ZIP else self.path

    def _exists(self) -> bool:
        """A store is here: the zip (or the directory of a writer that did not pack it
        yet), a directory with ``zarr.json``, or an LMDB directory (``data.mdb``);
        in S3, any object under the prefix."""
        if self._location is not None:
            return self._location.exists("zarr.json") or _any_key(self._location)
        if self.datastore_type == DatastoreType.ZIP and os.path.lexists(self.path):
            return True
        if os.path.isdir(self.path) and not os.listdir(self.path):
            return False  # an empty directory (made for the store) holds no store yet
        return os.path.lexists(self.path) or _looks_like_zarr(self._workdir, False)

    def _open_group(self, mode: Literal["r", "a", "w"]) -> None:
        if self.datastore_type == DatastoreType.LMDB:
            store: LocalStore | ZipStore | LMDBStore | FsspecStore = self._open_lmdb(mode)
        elif self._location is not None:
            store = self._open_remote(self._location, mode)
        else:
            store = self._open_files(mode)
        self._store = store
        try:
            creating = mode != "r" and self._files is not None and not self._files.read("zarr.json")
            with _quiet():
                group_mode: Literal["r", "a"] = "r" if mode == "r" else "a"
                group = self._group_or_none = zarr.open_group(store, mode=group_mode, zarr_format=3)
        except Exception as exc:
            self._release()
            if isinstance(exc, SimRecorderError):
                raise
            raise StoreFormatError(f"cannot open {self.path!r} as a zarr v3 group: {exc}") from exc
        if creating:
            info: dict[str, Any] = provenance(zarr_version=zarr.__version__)
            info[_FORMAT_ATTR] = FORMAT_VERSION
            group.update_attributes(info)  # one write (attrs.update writes once per key)
        else:
            version = group.attrs.get(_FORMAT_ATTR, FORMAT_VERSION)
            if isinstance(version, int | float | str) and int(version) > FORMAT_VERSION:
                self._release()
                raise StoreFormatError(
                    f"{self.path!r} has simrecorder format {int(version)}; this version reads "
                    f"up to {FORMAT_VERSION}: upgrade simrecorder"
                )
        if mode != "r":
            try:
                self._recover()
            except BaseException:
                self._release()
                raise

    def _open_files(self, mode: Literal["r", "a", "w"]) -> LocalStore | ZipStore:
        """The zarr store of a directory or zip store (and the writer's lock and files)."""
        is_zip = self.datastore_type == DatastoreType.ZIP
        if is_zip and os.path.exists(self.path) and not _looks_like_zarr(self.path, True):
            raise StoreFormatError(f"{self.path!r} exists but is not a zarr v3 zip store")
        if not is_zip and os.path.exists(self.path) and not os.path.isdir(self.path):
            raise StoreFormatError(f"{self.path!r} exists but is not a zarr v3 directory")
        workdir = self._workdir
        if os.path.isdir(workdir) and os.listdir(workdir) and not _looks_like_zarr(workdir, False):
            raise StoreFormatError(f"{workdir!r} is a non-empty directory without zarr.json")
        if mode == "w" and os.path.isdir(workdir):
            _writer_lock(workdir, self.path).acquire().release()  # never delete a live store
        if mode == "w":  # only ever deletes what was checked above to be a zarr store
            for old in {self.path, workdir}:
                if os.path.isdir(old):
                    shutil.rmtree(old)
                elif os.path.exists(old):
                    os.remove(old)
        if mode == "r":
            if is_zip and not os.path.isfile(self.path) and _looks_like_zarr(workdir, False):
                # not packed yet (a live writer, or a close that failed): the data is here
                return LocalStore(workdir, read_only=True)
            if not os.path.exists(self.path):
                raise StoreNotFoundError(f"no zarr store at {self.path!r} to open read-only")
            if is_zip:
                return ZipStore(self.path, mode="r")
            return LocalStore(self.path, read_only=True)
        if is_zip:
            shutil.rmtree(workdir + ".removing", ignore_errors=True)
        if is_zip and os.path.isfile(self.path) and not os.path.isdir(workdir):
            _unpack(self.path, workdir)  # else: resume from a crashed run's directory
        os.makedirs(workdir, exist_ok=True)
        self._take_writer_lock(workdir)
        self._files = _DirFiles(workdir, self.path, self.durable)
        if self.datastore_type == DatastoreType.DIRECTORY:
            register_writer(self.path, self)  # a storage opened on it goes through us
        return LocalStore(workdir)

    def _open_lmdb(self, mode: Literal["r", "a", "w"]) -> LMDBStore:
        """The zarr store of an LMDB directory (and the writer's lock and files)."""
        lmdb_module = self._lmdb
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreFormatError(
                f"{path!r} exists but is not an LMDB zarr store (a directory with data.mdb)"
            )
        if os.path.isdir(path) and os.listdir(path) and not lmdb_module.holds_lmdb(path):
            raise StoreFormatError(f"{path!r} is a non-empty directory without data.mdb")
        if mode == "r":
            if not lmdb_module.holds_lmdb(path):
                raise StoreNotFoundError(f"no LMDB zarr store at {path!r} to open read-only")
            store: LMDBStore = lmdb_module.LMDBStore(path, read_only=True)
            return store
        os.makedirs(path, exist_ok=True)
        self._take_writer_lock(path)
        store = lmdb_module.LMDBStore(path, map_size=self.lmdb_map_size, durable=self.durable)
        try:
            keys = store.keys_with_prefix("")
            if keys and store.get_bytes("zarr.json") is None:
                raise StoreFormatError(
                    f"{path!r} is an LMDB environment without a zarr store (no key "
                    "'zarr.json'); simrecorder does not touch it"
                )
            if mode == "w":  # one transaction: readers see the old store or none
                store.clear_keys()
        except BaseException:
            store.close()
            raise
        self._files = _LMDBFiles(store, self.durable, self.path)
        return store

    def _open_remote(self, location: FsspecLocation, mode: Literal["r", "a", "w"]) -> FsspecStore:
        """The zarr store of a store in S3 (and the writer's files); no lock."""
        has_root = location.exists("zarr.json")
        if not has_root and _any_key(location):
            raise StoreFormatError(
                f"{self.path!r} holds objects but no zarr.json: not a zarr store; "
                "simrecorder does not touch it"
            )
        if mode == "r":
            if not has_root:
                raise StoreNotFoundError(f"no zarr store at {self.path!r} to open read-only")
            return _fsspec_store(location, read_only=True)
        if mode == "w":  # only ever deletes what was checked above to be a zarr store
            location.delete_many(list(location.keys()))
        self._files = _LocationFiles(location, self.path)
        return _fsspec_store(location, read_only=False)

    def _take_writer_lock(self, directory: str) -> None:
        lock = _writer_lock(directory, self.path).acquire()
        # released by close(), or when the store is collected or the process exits
        # without close()
        self._lock = weakref.finalize(self, lock.release)

    @property
    def _group(self) -> zarr.Group:
        group = self._group_or_none
        if group is None:
            raise StoreClosedError(f"{self!r} is closed")
        return group

    @property
    def _writer_files(self) -> _Files:
        files = self._files
        if files is None:
            raise ReadOnlyError(f"{self!r} is open read-only")
        return files

    def _recover(self) -> None:
        """Cut every series back to its committed length after an unclean end."""
        files = self._writer_files
        root = _load_meta(files, "zarr.json", self.path)
        attrs = root.get("attributes", {})
        epoch = attrs.get(_EPOCH_ATTR)
        self._epoch = int(epoch) if isinstance(epoch, int) else 0
        self._dirty.clear()
        if isinstance(epoch, int) and not attrs.get(_CLEAN_ATTR, False):
            with files.batch():
                for meta_key in files.array_metas():
                    meta = _load_meta(files, meta_key, self.path)
                    fixed = _recovered(meta, epoch)
                    if fixed is not None:
                        files.write(meta_key, _dump(fixed))
        self._set_root_attrs({_CLEAN_ATTR: False})

    def _open(self) -> None:
        self._open_group("r" if self.read_only else "a")

    def _release(self) -> None:
        unregister_writer(self.path, self)
        self._arrays.clear()
        self._raw.clear()
        self._unpublished.clear()
        self._group_or_none = None
        self._files = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock()
            self._lock = None
        if self._location is not None:
            self._location.close()  # its client is made again when the store reopens

    def close(self) -> None:
        """Commit, pack a ZIP store, and release the store.

        Raises
        ------
        StoreFullError
            The disk is full (packing a ZIP store, or the final commit): the store
            stays open and holds everything; free space and call ``close()`` again.
        StoreWriteError
            Another failure of the final write; the store stays open.
        """
        if self._closed:
            return
        storage, self._storage = self._storage, None
        if storage is not None:
            storage.close()  # writes its indexes; the directory stays the store's
        if not self.read_only:
            self._commit({_CLEAN_ATTR: True})  # one write of the root
            self._clean_on_disk = True
            if self.datastore_type == DatastoreType.ZIP:
                _pack(self._workdir, self.path, self.durable, repr(self))
        super().close()

    def _close(self) -> None:
        self._release()
        if self.datastore_type == DatastoreType.ZIP and not self.read_only:
            # rename first: a crash inside rmtree must not leave a torn directory that
            # the next writer would take for the newer copy of the store
            gone = self._workdir + ".removing"
            shutil.rmtree(gone, ignore_errors=True)
            os.replace(self._workdir, gone)
            shutil.rmtree(gone, ignore_errors=True)

    def check_key(self, key: str) -> None:
        # docstring inherited: part names become directory names, 'zarr.json' is the
        # metadata file, and the zarr v3 spec reserves node names starting with '__'
        check_path_parts(key, repr(self), reserved=("zarr.json",))
        bad = next((part for part in key.split("/") if part.startswith("__")), None)
        if bad is not None and (self._closed or self.node_type(key) is None):
            raise InvalidKeyError(
                f"invalid key {key!r} for {self!r}: part {bad!r} starts with '__', which "
                "the zarr v3 specification reserves"
            )

    def commit(self) -> None:
        """Record the length of every series changed since the last commit.

        Each changed array's ``simrecorder_commit`` attribute gets ``[epoch, rows,
        previous epoch, previous rows]``, then the root's ``simrecorder_epoch``
        becomes ``epoch``: the commit point. Every file is replaced atomically; in an
        LMDB store the whole commit is one transaction.
        """
        self._commit({})

    def _commit(self, root_attrs: Mapping[str, Any]) -> None:
        """:meth:`commit`, setting ``root_attrs`` too in the write of the root."""
        self._check_open()
        if self.read_only:
            return
        if not self._dirty:
            if root_attrs:
                self._set_root_attrs(root_attrs)
            return
        files = self._writer_files
        epoch = self._epoch + 1
        try:
            self._publish()
            with files.batch():
                for key, rows_before in list(self._dirty.items()):
                    writer = self._raw.get(key)
                    if writer is not None and _stamped(writer.meta, epoch):
                        continue  # its last append wrote this commit already
                    self._update_array_meta(
                        key, functools.partial(_committed, epoch=epoch, rows_before=rows_before)
                    )
                self._set_root_attrs({_EPOCH_ATTR: epoch, **root_attrs})
        except BaseException as exc:
            for key in self._dirty:
                if key not in self._unpublished:
                    self._raw.pop(key, None)  # re-read from the store at the next append
            # the root metadata tells whether the commit point was reached
            root = _load_meta(files, "zarr.json", self.path)
            if root.get("attributes", {}).get(_EPOCH_ATTR) == epoch:
                self._epoch = epoch
                self._dirty.clear()
                if root_attrs.get(_CLEAN_ATTR):
                    self._clean_on_disk = True  # the next append marks it unclean again
            if isinstance(exc, OSError) and not isinstance(exc, SimRecorderError):
                raise _write_error(exc, self, None, "committing") from exc
            raise
        self._epoch = epoch
        self._dirty.clear()

    def _update_array_meta(self, key: str, change: Callable[[dict[str, Any]], None]) -> None:
        if key in self._unpublished:
            self._publish()
        files = self._writer_files
        raw = self._raw.get(key)
        meta_key = _meta_key(key)
        if raw is not None:
            meta = json.loads(json.dumps(raw.meta))
        else:
            meta = _load_meta(files, meta_key, self.path)
        change(meta)
        self._arrays.pop(key, None)  # a cached zarr.Array would write its old attributes
        files.write(meta_key, _dump(meta))
        if raw is not None:
            raw.meta = meta

    def _set_root_attrs(self, updates: Mapping[str, Any]) -> None:
        """Merge ``updates`` into the root attributes (one atomic replace)."""
        files = self._writer_files
        with self.root_guard:
            meta = _load_meta(files, "zarr.json", self.path)
            meta.setdefault("attributes", {}).update(updates)
            files.write("zarr.json", _dump(meta))
        self._group.metadata.attributes.update(updates)  # the open group, without I/O

    @property
    def group(self) -> zarr.Group:
        """The open root ``zarr.Group``."""
        self._check_open()
        return self._group

    def flush(self) -> None:
        # docstring inherited: chunks already went to the files; this writes the
        # metadata that shows them
        self._check_open()
        if self._storage is not None:
            self._storage.flush()
        if not self.read_only:
            self._publish()
        if self.durable and self._zarr_wrote and self._files is not None:
            self._files.sync_all()  # zarr wrote these itself: no list of them to fsync
        self._zarr_wrote = False

    # -- nodes --------------------------------------------------------------------------
    def _node(self, key: str) -> Any:
        if self._unpublished:
            self._publish()  # zarr reads what the metadata shows
        # a reader looks every time: the writer (another process) may have grown it
        array = None if self.read_only else self._arrays.get(key)
        if array is not None:
            return array
        with _reading(self, key):
            try:
                node = self._group[key]
            except KeyError:
                return None
        if isinstance(node, zarr.Array) and _VALUE_ATTR not in node.attrs:
            self._arrays[key] = node
        return node

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        meta = self._writer_meta(key)
        if meta is not None:  # a writer reads the document itself: no zarr round trip
            if not meta:
                return None
            if meta.get("node_type") == "group":
                return "group"
            return "value" if _VALUE_ATTR in (meta.get("attributes") or {}) else "series"
        node = self._node(key)
        if node is None:
            return None
        if isinstance(node, zarr.Group):
            return "group"
        return "value" if _VALUE_ATTR in node.attrs else "series"

    def _writer_meta(self, key: str) -> dict[str, Any] | None:
        """For a writer: the metadata document of ``key`` (``{}`` when there is none);
        None for a reader, or a document only zarr can judge."""
        files = self._files
        if files is None or self.read_only:
            return None
        writer = self._raw.get(key)
        if writer is not None:
            return {} if writer.new and key not in self._unpublished else writer.meta
        content = files.read(_meta_key(key))
        if content is None:
            return {}
        try:
            meta = json.loads(content)
        except ValueError:
            return None  # zarr's reading reports the damage
        if not isinstance(meta, dict) or meta.get("node_type") not in ("array", "group"):
            return None
        return meta

    def _array(self, key: str) -> zarr.Array | None:
        node = self._node(key)
        if isinstance(node, zarr.Array) and _VALUE_ATTR not in node.attrs:
            return node
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        meta = self._writer_meta(key)
        if meta is not None:  # a writer reads the document itself: no zarr round trip
            if not meta or meta.get("node_type") != "array":
                return None
            attrs = meta.get("attributes") or {}
            if _VALUE_ATTR in attrs:
                return None
            if attrs.get(_KIND_ATTR, DENSE) == DENSE and meta.get("data_type") in _NUMERIC_TYPES:
                return SeriesSpec(DENSE, np.dtype(meta["data_type"]), tuple(meta["shape"][1:]))
        array = self._array(key)
        if array is None:
            return None
        kind = array.attrs.get(_KIND_ATTR, DENSE)
        if kind == DENSE:
            return SeriesSpec(DENSE, array.dtype, array.shape[1:])
        return SeriesSpec(str(kind))

    # -- series -------------------------------------------------------------------------
    def _create(self, key: str, spec: SeriesSpec, first_rows: int | None) -> zarr.Array:
        with _quiet():
            if spec.kind == DENSE:
                rows = self._chunk_rows(spec, first_rows)
                sample = tuple(spec.shape or ())
                array = self._group.create_array(
                    key,
                    shape=(0, *sample),
                    chunks=(rows, *(max(1, n) for n in sample)),  # chunks must be > 0
                    chunk_key_encoding=_CHUNK_KEYS,
                    dtype=spec.dtype,
                    fill_value=0,
                    compressors=_compressors(self.compression_type, spec.dense_dtype.itemsize),
                    attributes={_KIND_ATTR: DENSE, _COMMIT_ATTR: [0, 0, 0, 0]},
                    dimension_names=_dimension_names(key, 1 + len(sample)),
                )
            else:
                dtype: VariableLengthUTF8 | VariableLengthBytes = (
                    VariableLengthUTF8() if spec.kind == STR else VariableLengthBytes()
                )
                array = self._group.create_array(
                    key,
                    shape=(0,),
                    chunks=(_VLEN_CHUNK_ROWS,),
                    dtype=dtype,  # type: ignore[arg-type]  # zarr's hint omits its own ZDType subclasses
                    compressors=_compressors(self.compression_type),
                    attributes={_KIND_ATTR: spec.kind, _COMMIT_ATTR: [0, 0, 0, 0]},
                    dimension_names=_dimension_names(key, 1),
                )
        self._arrays[key] = array
        return array

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited. Dense series: the chunks are written here, the
        # metadata that shows them by flush() (see _ChunkWriter); an exception
        # (KeyboardInterrupt included) leaves the writer's length as it was. Other
        # series: the array's zarr.json is the commit point, written last; any
        # exception puts the old one back. In an LMDB store the whole append is one
        # transaction.
        self._check_writable(key)
        files = self._writer_files
        writer = self._raw.get(key)
        # the store's own writer: an exception anywhere here undoes its append
        length = writer.length if writer is not None else 0
        pending = key in self._unpublished
        start = _rows_in(files, key, self.path) if files.transactional and not writer else 0
        try:
            if files.transactional:
                with files.batch():
                    self._append_block(files, key, spec, block)
            else:  # no code after the append: an interrupt there would be ambiguous
                self._append_block(files, key, spec, block)
        except BaseException as exc:
            writer = self._raw.get(key)
            if writer is not None:  # even when the append was done (a late interrupt)
                writer.rollback(length)
                if not pending:
                    self._unpublished.pop(key, None)
            if files.transactional:
                if writer is None:
                    # the transaction was dropped (or, interrupted right after it
                    # committed, is undone here): so are the cached arrays
                    self._arrays.pop(key, None)
                    _cut_back(files, key, start, self.path)
                if type(exc) in (StoreWriteError, StoreFullError):  # LMDB's: name the key
                    raise type(exc)(f"appending to key {key!r}: {exc}") from exc
            if isinstance(exc, OSError) and not isinstance(exc, SimRecorderError):
                raise _write_error(exc, self, key, "appending to") from exc
            interrupt = _interrupt_behind(exc) if isinstance(exc, Exception) else None
            if interrupt is not None:
                # Ctrl-C inside threading's lock handling while zarr's thread worked
                # surfaces as RuntimeError; the caller should see the interrupt
                raise interrupt from exc
            raise

    def _append_block(self, files: _Files, key: str, spec: SeriesSpec, block: Any) -> None:
        if self._clean_on_disk:  # a failed close() marked the store clean
            self._set_root_attrs({_CLEAN_ATTR: False})
            self._clean_on_disk = False
        writer = self._raw.get(key)
        if writer is None and spec.kind == DENSE:
            writer = self._writer(files, key, spec, len(block))
        if writer is not None:
            if len(block) or writer.new:
                self._append_raw(key, writer, block)
            return
        with deferred_signals():
            array = self._array(key) or self._zarr_guarded(self._create, key, spec, len(block))
        if len(block):
            self._append_zarr(files, key, spec, array, block)

    def _writer(
        self, files: _Files, key: str, spec: SeriesSpec, first_rows: int
    ) -> _ChunkWriter | None:
        """The :class:`_ChunkWriter` of the dense series ``key`` (of a new array,
        whose first block has ``first_rows`` rows, if there is none yet), or None when
        its array is for zarr to write."""
        content = files.read(_meta_key(key))
        if content is None:
            meta, template = self._new_array_meta(key, spec, first_rows)
            codec = _template_codec(template)
            if codec is not None:
                files.make_parents(key)  # a parent that is no group fails the append
        else:
            meta = _load_meta(files, _meta_key(key), self.path)
            attrs = meta.get("attributes") or {}
            if _VALUE_ATTR in attrs or attrs.get(_KIND_ATTR, DENSE) != DENSE:
                return None
            codec = _chunk_codec(meta)
        if codec is None:
            return None
        writer = _ChunkWriter(files, key, meta, spec, codec, self.path, new=content is None)
        self._raw[key] = writer
        return writer

    def _new_array_meta(
        self, key: str, spec: SeriesSpec, first_rows: int
    ) -> tuple[dict[str, Any], str]:
        """The ``zarr.json`` document zarr-python would write for a new, empty dense
        series ``key``, and the template it was made from (see
        :func:`_array_template`)."""
        sample = tuple(spec.shape or ())
        rows = self._chunk_rows(spec, first_rows)
        with deferred_signals():  # zarr makes it: an interrupt while it waits hangs zarr
            template = _array_template(
                spec.dense_dtype.str, sample, rows, self.compression_type.value
            )
        meta: dict[str, Any] = json.loads(template)
        meta["shape"] = [0, *sample]
        meta["attributes"] = {_KIND_ATTR: DENSE, _COMMIT_ATTR: [0, 0, 0, 0]}
        meta["dimension_names"] = list(_dimension_names(key, 1 + len(sample)))
        return meta, template

    def _chunk_rows(self, spec: SeriesSpec, first_rows: int | None) -> int:
        """Rows per chunk of a new dense series: ``desired_chunk_size_bytes`` worth,
        whatever its first block. Uncompressed chunks are padded with zeros: in a
        directory that padding is a hole in a sparse file, but ZIP and LMDB would
        store it, so there a small first block still caps the chunk size."""
        if self.compression_type != CompressionType.NONE or (
            self.datastore_type == DatastoreType.DIRECTORY and self._location is None
        ):
            first_rows = None
        return chunk_rows(spec.sample_nbytes, self.desired_chunk_size_bytes, first_rows)

    def _append_raw(self, key: str, writer: _ChunkWriter, block: np.ndarray) -> None:
        start, pending = writer.length, key in self._unpublished
        try:
            writer.append(block)
            self._unpublished[key] = None
            self._dirty.setdefault(key, writer.published)
        except BaseException:
            writer.rollback(start)
            if not pending:
                self._unpublished.pop(key, None)
            raise

    def _publish(self) -> None:
        """Write the metadata of every series with rows written since the last call
        (one write per series, whatever the number of blocks), stamped with the
        commit of the coming epoch: readers see the rows, and a writer that opens the
        store after a crash before that commit cuts them off again (see
        :func:`_recovered`). An LMDB store publishes in one transaction."""
        if not self._unpublished:
            return
        files = self._writer_files
        epoch = self._epoch + 1
        done: list[tuple[str, dict[str, Any]]] = []
        key = None
        try:
            with files.batch():
                for key in list(self._unpublished):
                    writer = self._raw[key]
                    rows_before = self._dirty.get(key, writer.published)
                    meta = writer.publish(
                        functools.partial(_committed, epoch=epoch, rows_before=rows_before)
                    )
                    if files.transactional:
                        done.append((key, meta))  # applied once it is committed
                    else:
                        self._published(key, meta)
        except OSError as exc:
            if isinstance(exc, SimRecorderError):
                raise
            raise _write_error(exc, self, key, "publishing the rows of") from exc
        for key, meta in done:
            self._published(key, meta)

    def _published(self, key: str, meta: dict[str, Any]) -> None:
        self._raw[key].published_as(meta)
        del self._unpublished[key]
        self._arrays.pop(key, None)  # the next read opens the array with its new shape

    def _append_zarr(
        self, files: _Files, key: str, spec: SeriesSpec, array: zarr.Array, block: Any
    ) -> None:
        meta_key = _meta_key(key)
        before = files.read(meta_key)
        start = array.shape[0]
        try:
            if spec.kind != DENSE:
                data = np.empty(len(block), dtype=object)
                data[:] = list(block)
                block = data
            # An exception raised by a signal handler while this thread waits for
            # zarr's I/O thread can leave a lock of that wait held, which hangs zarr
            # for good: signals wait until zarr is done, then undo the append below.
            with deferred_signals():
                _append_in_order(array, block)
            self._zarr_wrote = True
            self._dirty.setdefault(key, start)
        except BaseException:
            self._arrays.pop(key, None)  # its in-memory shape may be the new one
            _settle_zarr()  # zarr's own thread may still be writing: let it finish
            if before is not None:
                _restore(files, meta_key, before)
            raise

    def _zarr_guarded(self, func: Callable[..., zarr.Array], *args: Any) -> zarr.Array:
        """Call ``func``, which writes through zarr; when it raises, wait until zarr's
        I/O thread is idle, so no write of it lands after the caller has given up."""
        try:
            return func(*args)
        except BaseException:
            _settle_zarr()
            raise

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        array = self._array(key)
        if array is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        kind = array.attrs.get(_KIND_ATTR, DENSE)
        if kind == DENSE:
            return ZarrView(self, key)
        with _reading(self, key):
            items = np.asarray(array[:])
        if kind == STR:
            return [str(item) for item in items]
        if kind == BYTES:
            return [bytes(item) for item in items]
        return [_codec.decode(item) for item in items]

    # -- single values ------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        kind, data, extra = encode_value(key, value)
        self._arrays.pop(key, None)
        self._raw.pop(key, None)
        with self._writer_files.batch(), _quiet():  # LMDB: one transaction
            array = self._group.create_array(
                key,
                shape=data.shape,
                dtype=data.dtype,
                chunks=data.shape or (),
                compressors=None,
                fill_value=0,
                overwrite=True,
                attributes={_VALUE_ATTR: kind, **extra},
                dimension_names=_value_dimension_names(key, data.ndim),
            )
            if data.size:
                array[...] = data

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        with _reading(self, key):
            array = self._group[key]
            if not isinstance(array, zarr.Array):
                raise KeyNotFoundError(f"no value {key!r} in {self!r}")
            kind = array.attrs[_VALUE_ATTR]
            pytype = array.attrs.get(PYTYPE_ATTR)
            data = np.asarray(array[...])
        return decode_value(str(kind), data, None if pytype is None else str(pytype))

    # -- a companion sharing the directory ------------------------------------------------
    def storage_kind(self) -> str | None:
        # docstring inherited: a local directory store only
        local = self.datastore_type == DatastoreType.DIRECTORY and self._location is None
        return "zarr" if local else None

    def shared(self, build: Callable[[str, bool, threading.Lock], _C]) -> _C:
        """The one companion object over this store's directory, built on first use
        as ``build(path, read_only, root_guard)``: what a run keeps beside its series
        (a :class:`~simrecorder.storage.GenericStorage`: ``rec.storage``). Its
        ``flush()`` runs at each :meth:`flush`, its ``close()`` at :meth:`close`;
        ``root_guard`` is held while either replaces the root ``zarr.json``.

        Raises
        ------
        ArgumentTypeError
            The store is not a local directory (ZIP, LMDB, S3 stores hold no storage).
        """
        self._check_open()
        if self.storage_kind() is None:
            raise ArgumentTypeError(
                f"{self!r} cannot hold a storage beside its series: only a zarr directory "
                "store on local disk can (ZIP, LMDB and S3 stores cannot)"
            )
        if self._storage is None:
            self._storage = build(self.path, self.read_only, self.root_guard)
        return cast(_C, self._storage)

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        if self._unpublished:
            self._publish()  # new arrays exist once their metadata does
        group = self._group
        if prefix:
            node = self._node(prefix)
            if isinstance(node, zarr.Array):
                return [prefix]
            if node is None:
                return []
            group = node
        with _reading(self, prefix or "/"):
            members = list(group.members(max_depth=None))
        # the nodes of a simrecorder.storage sharing the directory are not series
        storage_groups = tuple(
            name + "/"
            for name, node in members
            if isinstance(node, zarr.Group) and _STORAGE_INDEX_ATTR in node.attrs
        )
        found = [
            f"{prefix}/{name}" if prefix else name
            for name, node in members
            if isinstance(node, zarr.Array)
            and _STORAGE_ARRAY_ATTR not in node.attrs
            and not name.startswith(storage_groups)
        ]
        return sorted(found)

    # -- metadata -----------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        attrs = dict(self._group.attrs)
        attrs.pop(_STORAGE_INDEX_ATTR, None)  # the index of a storage sharing the directory
        return attrs

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        self._set_root_attrs({name: jsonable(value) for name, value in attrs.items()})

    # -- series attributes (Recorder.describe) ------------------------------------------
    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the attributes of the series' array (one atomic
        replace of its ``zarr.json``); ``simrecorder_dims`` also renames the array's
        ``dimension_names`` (see :func:`_described_dimension_names`)."""
        self._check_writable(key)
        if self._array(key) is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        updates = {name: jsonable(value) for name, value in attrs.items()}
        with self._writer_files.batch():
            self._update_array_meta(
                key, functools.partial(_describe_meta, key=key, updates=updates)
            )
        self._zarr_wrote = True  # flush() syncs it on a durable store

    def series_attrs(self, key: str) -> dict[str, Any]:
        # docstring inherited
        self._check_open(key)
        array = self._array(key)
        if array is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        return {
            name: value
            for name, value in array.attrs.items()
            if name not in (_KIND_ATTR, _COMMIT_ATTR)
        }


def _describe_meta(meta: dict[str, Any], key: str, updates: Mapping[str, Any]) -> None:
    """Apply :meth:`ZarrDataStore.set_series_attrs` to an array's metadata document."""
    meta.setdefault("attributes", {}).update(updates)
    names = _described_dimension_names(key, len(meta["shape"]), meta["attributes"])
    if names is not None:
        meta["dimension_names"] = list(names)


def _described_dimension_names(
    key: str, ndim: int, attrs: Mapping[str, Any]
) -> tuple[str, ...] | None:
    """``dimension_names`` of a described series: the time series' key (or
    ``<name>_step``) for the sample axis, then ``simrecorder_dims``; None when the
    description names no dimension or does not fit the array."""
    dims, time = attrs.get("simrecorder_dims"), attrs.get("simrecorder_time")
    if dims is None and time is None:
        return None
    default = _dimension_names(key, ndim)
    sample = list(dims) if dims is not None else list(default[1:])
    if len(sample) != ndim - 1:
        return None
    return (str(time) if time else default[0], *(str(name) for name in sample))


def _append_in_order(array: zarr.Array, block: np.ndarray) -> None:
    """Append rows through zarr, chunks first and metadata last.

    ``zarr.Array.append`` grows the metadata before it writes the chunks; a crash in
    between leaves rows that read as fill values (or, for variable-length bytes,
    undecodable). Here the chunks are written through a copy of the array whose
    larger shape exists only in memory, and ``resize`` then publishes the new shape
    (zarr's LocalStore writes each file atomically).
    """
    start = array.shape[0]
    shape = (start + len(block), *array.shape[1:])
    metadata = array.metadata
    if not isinstance(metadata, ArrayV3Metadata):
        raise StoreFormatError(f"{array.store_path}: not a zarr v3 array")
    larger = zarr.Array(
        AsyncArray(
            metadata=metadata.update_shape(shape),
            store_path=array.store_path,
            config=array._async_array.config,
        )
    )
    with _quiet():
        larger[start:] = block
        array.resize(shape)


@functools.lru_cache(maxsize=64)
def _array_template(dtype: str, sample: tuple[int, ...], rows: int, compression: str) -> str:
    """The ``zarr.json`` document zarr-python writes for a dense series of ``dtype``
    samples of shape ``sample`` in chunks of ``rows`` (made by zarr itself, once per
    kind of array, in memory); the caller sets shape, attributes, dimension names."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    store = MemoryStore()
    with _quiet():
        zarr.create_array(
            store,
            shape=(0, *sample),
            chunks=(rows, *(max(1, n) for n in sample)),  # chunks must be > 0
            chunk_key_encoding=_CHUNK_KEYS,
            dtype=np.dtype(dtype),
            fill_value=0,
            compressors=_compressors(CompressionType(compression), np.dtype(dtype).itemsize),
            attributes={},
            dimension_names=_dimension_names("x", 1 + len(sample)),
            zarr_format=3,
        )
    document = zarr_sync(store.get("zarr.json", prototype=default_buffer_prototype()))
    assert document is not None  # just written
    return document.to_bytes().decode()


@functools.lru_cache(maxsize=64)
def _template_codec(template: str) -> _ChunkCodec | None:
    """:func:`_chunk_codec` of a document made by :func:`_array_template`."""
    return _chunk_codec(json.loads(template))


def _copy_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of an array's metadata whose shape and attributes may be changed."""
    return {**meta, "shape": list(meta["shape"]), "attributes": dict(meta.get("attributes") or {})}


def _meta_key(key: str) -> str:
    """The zarr key of the metadata document of the node ``key``."""
    return f"{key}/zarr.json"


def _as_buffer(data: np.ndarray | bytes | memoryview) -> memoryview:
    """The bytes of ``data`` (a C-contiguous array, or bytes), without a copy."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).data.cast("B")
    return memoryview(data)


#: What a file or LMDB value is written from: an array, bytes, or a list of buffers
#: written one after another
_Data = np.ndarray | bytes | memoryview | list[Any]


class _Files(Protocol):
    """What a writer reads and writes by zarr key, beside zarr: metadata documents
    and chunks, in a directory (:class:`_DirFiles`), LMDB (:class:`_LMDBFiles`) or an
    object store (:class:`_LocationFiles`)."""

    #: True when :meth:`batch` makes its writes one transaction (all or nothing)
    transactional: bool

    def read(self, key: str, prefix: int | None = None) -> bytes | None:
        """The value at ``key`` (its first ``prefix`` bytes), or None."""

    def write(self, key: str, data: _Data, size: int | None = None) -> None:
        """Replace the value at ``key`` atomically (durably for a durable store);
        ``size``: pad it with zero bytes to that size."""

    def write_fresh(self, key: str, data: _Data, size: int | None = None) -> None:
        """Write a value nobody reads yet (a chunk past the visible rows)."""

    def remove(self, key: str) -> None:
        """Remove the value at ``key`` if there is one."""

    def make_parents(self, key: str) -> None:
        """Write the group metadata of every parent of ``key`` that has none."""

    def sync(self, keys: list[str]) -> None:
        """Durable stores: make the values at ``keys`` durable."""

    def sync_all(self) -> None:
        """Durable stores: make everything written durable (what zarr wrote too)."""

    def array_metas(self) -> Iterator[str]:
        """Keys of the metadata of every array (not the root)."""

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """A block whose writes are one transaction, where the store has them."""


#: The metadata document of a group, as zarr-python writes it
_GROUP_DOC = {"attributes": {}, "zarr_format": 3, "node_type": "group"}


def _make_parents(files: _Files, key: str, known: set[str], store_path: str) -> None:
    """Write the group metadata of every parent of ``key`` that has none yet
    (``known``: parents seen before; zarr v3 has no implicit groups)."""
    parts = key.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if parent in known:
            continue
        content = files.read(_meta_key(parent))
        if content is None:
            files.write(_meta_key(parent), _dump(_GROUP_DOC))
        elif _load_meta(files, _meta_key(parent), store_path).get("node_type") != "group":
            raise KeyConflictError(
                f"key {key!r} in {store_path!r}: its parent {parent!r} is not a group"
            )
        known.add(parent)


class _DirFiles:
    """A zarr store's files in the directory ``root``."""

    transactional = False

    def __init__(self, root: str, store_path: str, durable: bool) -> None:
        self.root = root
        self.store_path = store_path
        self.durable = durable
        self.groups: set[str] = set()  # parent groups known to exist

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def read(self, key: str, prefix: int | None = None) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read() if prefix is None else f.read(prefix)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, key: str, data: _Data, size: int | None = None) -> None:
        _write_atomic(self._path(key), data, self.durable, size)

    def write_fresh(self, key: str, data: _Data, size: int | None = None) -> None:
        _write_in_place(self._path(key), data, size, self.durable)

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(key))

    def make_parents(self, key: str) -> None:
        _make_parents(self, key, self.groups, self.store_path)

    def sync(self, keys: list[str]) -> None:
        if self.durable:
            for key in keys:
                fsync_path(self._path(key))

    def sync_all(self) -> None:
        if self.durable:
            os.sync()

    def array_metas(self) -> Iterator[str]:
        for path in _array_metas(self.root):
            yield os.path.relpath(path, self.root).replace(os.sep, "/")

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class _LMDBFiles:
    """A zarr store's keys in an LMDB environment (through its :class:`LMDBStore`)."""

    transactional = True

    def __init__(self, store: LMDBStore, durable: bool, store_path: str = "") -> None:
        self.store = store
        self.durable = durable
        self.store_path = store_path
        self.groups: set[str] = set()  # parent groups known to exist

    def read(self, key: str, prefix: int | None = None) -> bytes | None:
        value = self.store.get_bytes(key)
        return value if value is None or prefix is None else value[:prefix]

    def write(self, key: str, data: _Data, size: int | None = None) -> None:
        self.store.set_bytes(key, _joined(data, size))

    def write_fresh(self, key: str, data: _Data, size: int | None = None) -> None:
        self.store.set_bytes(key, _joined(data, size))

    def remove(self, key: str) -> None:
        self.store.set_bytes(key, None)

    def make_parents(self, key: str) -> None:
        _make_parents(self, key, self.groups, self.store_path)

    def sync(self, keys: list[str]) -> None:
        pass  # each transaction is synced as it commits (durable stores)

    def sync_all(self) -> None:
        if self.durable:
            self.store.sync()

    def array_metas(self) -> Iterator[str]:
        for key in self.store.keys_with_prefix(""):
            if key.endswith("/zarr.json"):
                value = self.store.get_bytes(key)
                if value is not None and b'"array"' in value:
                    yield key

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return self.store.batch()


class _LocationFiles:
    """A zarr store's keys as objects of a location (S3): each put is atomic, an
    acknowledged upload is durable, and there are no transactions."""

    transactional = False

    def __init__(self, location: FsspecLocation, store_path: str) -> None:
        self.location = location
        self.store_path = store_path
        self.groups: set[str] = set()  # parent groups known to exist

    def read(self, key: str, prefix: int | None = None) -> bytes | None:
        value = self.location.get(key)
        return value if value is None or prefix is None else value[:prefix]

    def write(self, key: str, data: _Data, size: int | None = None) -> None:
        self.location.put(key, bytes(_joined(data, size)))

    def write_fresh(self, key: str, data: _Data, size: int | None = None) -> None:
        self.write(key, data, size)

    def remove(self, key: str) -> None:
        self.location.delete(key)

    def make_parents(self, key: str) -> None:
        _make_parents(self, key, self.groups, self.store_path)

    def sync(self, keys: list[str]) -> None:
        pass  # an upload is durable once it completes

    def sync_all(self) -> None:
        pass

    def array_metas(self) -> Iterator[str]:
        for key in list(self.location.keys()):
            if key.endswith("/zarr.json"):
                value = self.location.get(key)
                if value is not None and b'"array"' in value:
                    yield key

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


def _remote_location(
    url: str | os.PathLike[str], datastore_type: DatastoreType
) -> FsspecLocation | None:
    """The location of a store in an object store (``s3://...``), or None for a path."""
    url = os.fspath(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _REMOTE_SCHEMES:
        return None
    if datastore_type != DatastoreType.DIRECTORY:
        raise InvalidArgumentError(
            f"zarr store {url!r}: a store in S3 is a DIRECTORY store, not {datastore_type.name}"
        )
    from ..locations import FsspecLocation

    return FsspecLocation(f"{_REMOTE_SCHEMES[scheme]}://{url.split('://', 1)[1]}")


def _fsspec_store(location: FsspecLocation, read_only: bool) -> FsspecStore:
    """zarr's own store over the objects of ``location`` (same bucket, prefix, options)."""
    options: dict[str, Any] = {"use_listings_cache": False, **location.storage_options}
    options.setdefault(
        "config_kwargs",
        {
            "connect_timeout": location.timeout,
            "read_timeout": max(location.timeout, 60.0),
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
    )
    url = f"{location.fs_protocol}://{location.root}"
    return FsspecStore.from_url(url, storage_options=options, read_only=read_only)


def _any_key(location: FsspecLocation) -> bool:
    """True when ``location`` holds any key."""
    return next(iter(location.keys()), None) is not None


def _buffers(data: _Data) -> list[memoryview]:
    """The byte buffers of ``data``, without copies."""
    if isinstance(data, list):
        return [_as_buffer(part) for part in data]
    return [_as_buffer(data)]


def _joined(data: _Data, size: int | None) -> bytes | memoryview:
    """``data`` as one buffer, padded with zero bytes to ``size``."""
    parts = _buffers(data)
    length = sum(part.nbytes for part in parts)
    if len(parts) == 1 and (size is None or size <= length):
        return parts[0]
    padding = [bytes(size - length)] if size is not None and size > length else []
    return b"".join([*parts, *padding])


class _ChunkWriter:
    """Appends rows to a dense zarr v3 array by writing its chunks and ``zarr.json``
    itself, encoded as the array's metadata says (see :func:`_chunk_codec`).

    zarr-python costs several event-loop round trips per call (~1 ms each: create,
    write, resize, lookups); this writer costs a file write per chunk, and one
    metadata write per flush (:meth:`publish`), whatever the number of blocks. The
    array's ``zarr.json`` grows only after every chunk it newly covers is complete,
    so a reader (or a crash) never sees rows that were not written. A chunk that holds
    rows of earlier appends is replaced atomically; a chunk of new rows only is
    written in place (nobody reads it until the metadata grows, and a failed append
    leaves it to be overwritten). A new array's ``zarr.json`` (and its parent groups') is first
    written when it is published. The published metadata carries the commit
    attribute of the coming epoch (see :meth:`ZarrDataStore.commit`), so a commit
    needs no second write. In LMDB, the caller's batch makes each call one
    transaction.
    """

    def __init__(
        self,
        files: _Files,
        key: str,
        meta: dict[str, Any],
        spec: SeriesSpec,
        codec: _ChunkCodec,
        store_path: str,
        new: bool = False,
    ) -> None:
        self.files = files
        self.key = key
        self.spec = spec
        self.codec = codec
        self.dtype = np.dtype(meta["data_type"])
        self.sample = tuple(meta["shape"][1:])
        self.rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.row_nbytes = int(math.prod(self.sample)) * self.dtype.itemsize
        #: the size an uncompressed chunk is padded to (with zeros) by the store
        self.padded = self.rows * self.row_nbytes if codec.compressor is None else None
        self.meta_key = _meta_key(key)
        self.meta = meta  # as published (or to be, for a new array)
        self.published = int(meta["shape"][0])
        self.length = self.published  # rows written, published or not
        self.new = new  # no zarr.json written yet
        self.unsynced: list[str] = []  # chunks written since the last publish
        self.store_path = store_path
        config = meta["chunk_key_encoding"].get("configuration") or {}
        self.separator = config.get("separator", "/")

    def _chunk_key(self, index: int) -> str:
        coords = (index, *(0,) * len(self.sample))
        return f"{self.key}/c{self.separator}{self.separator.join(map(str, coords))}"

    def append(self, block: np.ndarray) -> None:
        """Write the chunks of ``block``'s rows (published by :meth:`publish`). On an
        exception the caller calls :meth:`rollback`."""
        rows, start = self.rows, self.length
        end = start + len(block)
        for first in range(start - start % rows, end, rows):
            lo, hi = max(first, start), min(first + rows, end)
            key = self._chunk_key(first // rows)
            part = block[lo - start : hi - start]
            data = self._encode(key, part, lo - first)
            if first < start:  # holds rows of earlier appends: never torn
                self.files.write(key, data, self.padded)
            else:
                self.files.write_fresh(key, data, self.padded)
            self.unsynced.append(key)
        self.length = end

    def publish(self, stamp: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Write the metadata that shows every row written (changed by ``stamp``: the
        commit attribute), chunks first; return it (the caller then calls
        :meth:`published_as`)."""
        self.files.sync(self.unsynced)  # data before the metadata that makes it visible
        meta = _copy_meta(self.meta)
        meta["shape"][0] = self.length
        stamp(meta)
        if self.new:
            self.files.make_parents(self.key)
        self.files.write(self.meta_key, _dump(meta))  # the commit point
        return meta

    def published_as(self, meta: dict[str, Any]) -> None:
        """Note that ``meta`` (from :meth:`publish`) is the array's metadata now."""
        self.meta, self.published, self.new = meta, int(meta["shape"][0]), False
        self.unsynced = []

    def _encode(self, key: str, rows: np.ndarray, at: int) -> _Data:
        """The stored form of the chunk ``key`` with ``rows`` written from its row
        ``at`` on (the rows before ``at`` as stored)."""
        blocks = self.codec.blocks
        if blocks is not None:
            stored = self.files.read(key) if at else None
            shape = (self.rows, *self.sample)
            data = blocks.encode(np.ascontiguousarray(rows, self.dtype), at, stored, shape)
            if data is not None:
                return data
            old = self._old_rows(key, at, stored) if at else None
        else:
            old = self._old_rows(key, at) if at else None
        return self.codec.encode(rows, old, self.rows, self.dtype)

    def _old_rows(self, key: str, count: int, stored: bytes | None = None) -> np.ndarray:
        """The first ``count`` rows stored in the chunk ``key`` (zeros if missing;
        ``stored``: the chunk, already read)."""
        shape = (count, *self.sample)
        if stored is None:
            stored = self.files.read(key, self.codec.prefix(count * self.row_nbytes))
        data = stored
        if data is None:
            return np.zeros(shape, dtype=self.dtype)
        values = np.frombuffer(self.codec.decode(data), dtype=self.dtype)
        old = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=self.dtype)
        n = min(old.size, values.size)
        old[:n] = values[:n]
        return old.reshape(shape)

    def rollback(self, length: int) -> None:
        """Undo an :meth:`append` that raised: ``length`` rows written again.

        Chunks may hold some of the new rows past ``length``; nobody reads them, and
        the next append overwrites them. A chunk that holds earlier rows was replaced
        atomically with the same earlier rows, so it needs no undo.
        """
        self.length = length


class _ChunkCodec:
    """The codecs of a dense array: ``bytes`` (little endian), then at most one
    bytes-to-bytes codec, applied with numcodecs (blosc with its own threads) as
    zarr-python would."""

    def __init__(self, compressor: Any, blocks: _BloscBlocks | None = None) -> None:
        self.compressor = compressor
        #: blosc: re-encodes only the blocks of a chunk that change
        self.blocks = blocks

    def prefix(self, nbytes: int) -> int | None:
        """How many bytes of a chunk to read for its first ``nbytes`` of data."""
        return nbytes if self.compressor is None else None

    def encode(
        self, rows: np.ndarray, old: np.ndarray | None, chunk_rows: int, dtype: np.dtype
    ) -> list[Any]:
        """The stored parts of a chunk whose rows are ``old`` then ``rows``; an
        uncompressed chunk is only the rows given (the store pads it with zeros)."""
        rows = np.ascontiguousarray(rows, dtype=dtype)  # no copy when it already is
        parts = [rows] if old is None else [old, rows]
        if self.compressor is None:
            return [_as_buffer(part) for part in parts if part.size]
        count = sum(len(part) for part in parts)
        if count == chunk_rows and len(parts) == 1:
            chunk = parts[0]
        else:
            chunk = np.zeros((chunk_rows, *rows.shape[1:]), dtype=rows.dtype)
            at = 0
            for part in parts:
                chunk[at : at + len(part)] = part
                at += len(part)
        return [self.compressor.encode(chunk)]

    def decode(self, data: bytes) -> Any:
        """The raw bytes of a stored chunk (or of its start, uncompressed)."""
        return data if self.compressor is None else self.compressor.decode(data)


#: zarr v3 data types the writer handles (numpy has the same names)
_NUMERIC_TYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"]
)  # fmt: skip
_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _chunk_codec(meta: dict[str, Any]) -> _ChunkCodec | None:
    """A :class:`_ChunkCodec` for a dense array's metadata document, or None when
    :class:`_ChunkWriter` cannot write it (zarr does)."""
    try:
        codecs = meta["codecs"]
        if (
            meta.get("node_type") != "array"
            or meta.get("data_type") not in _NUMERIC_TYPES
            or not np.little_endian
            or meta["chunk_grid"]["name"] != "regular"
            or meta["chunk_grid"]["configuration"]["chunk_shape"][1:] != meta["shape"][1:]
            or meta["chunk_key_encoding"]["name"] != "default"
            or meta.get("storage_transformers")
            or np.any(np.asarray(meta["fill_value"]) != 0)
            or not 1 <= len(codecs) <= 2
            or codecs[0]["name"] != "bytes"
            or (codecs[0].get("configuration") or {}).get("endian", "little") != "little"
        ):
            return None
        if len(codecs) == 1:
            return _ChunkCodec(None)
        return _compressor_codec(codecs[1]["name"], codecs[1].get("configuration") or {})
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _compressor_codec(name: str, config: dict[str, Any]) -> _ChunkCodec | None:
    import numcodecs

    if name == "blosc":
        return _blosc_codec(
            config["cname"],
            config["clevel"],
            _SHUFFLES[config["shuffle"]],
            config.get("blocksize", 0),
            config.get("typesize"),
        )
    if name == "zstd":
        return _ChunkCodec(numcodecs.Zstd(level=config["level"], checksum=config["checksum"]))
    if name.startswith("numcodecs."):
        return _ChunkCodec(numcodecs.get_codec({"id": name[len("numcodecs.") :], **config}))
    return None


#: c-blosc 1.x chunk header: version, codec version, flags, typesize, nbytes,
#: blocksize, cbytes; then one int32 start offset per block
_BLOSC_HEADER = struct.Struct("<BBBBiii")
_BLOSC_MEMCPYED = 0x2


class _BloscFrame:
    """A blosc (c-blosc 1.x) chunk cut into its blocks' compressed streams.

    blosc compresses each block of a chunk on its own (shuffle included) and records
    where each block's stream starts, so a chunk can be put together from streams
    of other chunks encoded with the same parameters: the result is the bytes blosc
    would make of the whole chunk (up to the order of the streams, which blosc's
    threads do not keep either).
    """

    def __init__(self, header: tuple[int, ...], streams: list[memoryview]) -> None:
        self.header = header
        self.streams = streams

    @classmethod
    def parse(cls, data: bytes | None) -> _BloscFrame | None:
        """The frame of the chunk ``data``, or None when it is not one this class
        splices (a chunk blosc stored uncompressed, or damaged)."""
        if data is None or len(data) < _BLOSC_HEADER.size:
            return None
        header = _BLOSC_HEADER.unpack_from(data)
        version, _lz, flags, _typesize, nbytes, blocksize, cbytes = header
        if version != 2 or flags & _BLOSC_MEMCPYED or cbytes != len(data) or blocksize <= 0:
            return None
        count = -(-nbytes // blocksize)
        table = _BLOSC_HEADER.size + 4 * count
        if count < 1 or table > cbytes:
            return None
        starts = struct.unpack_from(f"<{count}i", data, _BLOSC_HEADER.size)
        view = memoryview(data)
        streams: list[memoryview] = [view] * count
        order = sorted(range(count), key=starts.__getitem__)
        for at, index in enumerate(order):
            end = starts[order[at + 1]] if at + 1 < count else cbytes
            if not table <= starts[index] <= end:
                return None
            streams[index] = view[starts[index] : end]
        return cls(header, streams)

    @property
    def blocksize(self) -> int:
        return self.header[5]

    def same_kind(self, other: _BloscFrame) -> bool:
        """True when the blocks of ``self`` and ``other`` are interchangeable."""
        return self.header[:4] == other.header[:4] and self.blocksize == other.blocksize

    def build(self, streams: list[memoryview]) -> list[Any]:
        """The parts of a chunk like this one made of ``streams``."""
        return self._with(_BLOSC_HEADER.pack(*self.header[:6], 0), streams)

    def blocks(self, first: int, stop: int) -> bytes:
        """A chunk of the blocks ``first`` to ``stop - 1`` alone (blosc decodes no
        chunk of the short last block alone: only after another block)."""
        nbytes = min(stop * self.blocksize, self.header[4]) - first * self.blocksize
        header = _BLOSC_HEADER.pack(*self.header[:4], nbytes, self.blocksize, 0)
        return b"".join(bytes(part) for part in self._with(header, self.streams[first:stop]))

    def _with(self, header: bytes, streams: list[memoryview]) -> list[Any]:
        table = _BLOSC_HEADER.size + 4 * len(streams)
        starts, at = [], table
        for stream in streams:
            starts.append(at)
            at += stream.nbytes
        return [header[:12] + struct.pack("<i", at) + struct.pack(f"<{len(starts)}i", *starts),
                *streams]  # fmt: skip


class _BloscBlocks:
    """Encodes a chunk that changes in a few blocks by re-encoding those only: the
    blocks before the rows written are kept from the stored chunk, the blocks after
    them are those of an all-zero chunk (encoded once per chunk shape). A short
    series in 1 MiB chunks costs the encoding of one block, not of 1 MiB of zeros."""

    def __init__(self, compressor: Any) -> None:
        self.compressor = compressor
        self._zeros: dict[tuple[tuple[int, ...], str], _BloscFrame | None] = {}

    def zeros(self, shape: tuple[int, ...], dtype: np.dtype) -> _BloscFrame | None:
        """The frame of an all-zero chunk, or None when it is a single block."""
        known = (shape, dtype.str)
        if known not in self._zeros:
            frame = _BloscFrame.parse(self.compressor.encode(np.zeros(shape, dtype)))
            self._zeros[known] = frame if frame is not None and len(frame.streams) > 1 else None
        return self._zeros[known]

    def encode(
        self, rows: np.ndarray, at: int, stored: bytes | None, shape: tuple[int, ...]
    ) -> list[Any] | None:
        """The parts of the chunk of ``shape`` whose rows from ``at`` on are ``rows``
        (a C-contiguous array), the rows before ``at`` those of ``stored``; None when
        the chunk must be encoded whole."""
        if not at and len(rows) == shape[0]:
            return None  # a whole new chunk: encoded as it is, without a copy
        zero = self.zeros(shape, rows.dtype)
        if zero is None:
            return None
        row_nbytes = rows.itemsize * int(math.prod(shape[1:]))
        nbytes, size, count = shape[0] * row_nbytes, zero.blocksize, len(zero.streams)
        lo, hi = at * row_nbytes, (at + len(rows)) * row_nbytes
        first, stop = lo // size, min(-(-hi // size), count)
        if first == count - 1 and nbytes % size and first:
            first -= 1  # blosc encodes no short last block alone: take the one before too
        if not at and stop == count and not first:
            return None  # no block to keep: encoded whole, as it is
        kept, head = zero.streams[:first], memoryview(b"")
        if at and stored is not None:
            old = _BloscFrame.parse(stored)
            if old is None or old.header[:6] != zero.header[:6]:
                return None
            kept = old.streams[:first]
            if lo > first * size:
                old_blocks = self.compressor.decode(old.blocks(first, -(-lo // size)))
                head = memoryview(old_blocks)[: lo - first * size]
        region = np.zeros(min(stop * size, nbytes) - first * size, np.uint8)
        region[: len(head)] = np.frombuffer(head, np.uint8)
        region[lo - first * size : hi - first * size] = rows.reshape(-1).view(np.uint8)
        new = _BloscFrame.parse(self.compressor.encode(region))
        if new is None or not new.same_kind(zero) or len(new.streams) != stop - first:
            return None
        return zero.build([*kept, *new.streams, *zero.streams[stop:]])


@functools.lru_cache(maxsize=64)
def _blosc_codec(
    cname: str, clevel: int, shuffle: int, blocksize: int, typesize: int | None
) -> _ChunkCodec:
    """The codec of blosc arrays configured so (shared: its :class:`_BloscBlocks`
    encodes the all-zero chunk of a shape once for every array)."""
    import numcodecs

    blosc = numcodecs.Blosc(
        cname=cname, clevel=clevel, shuffle=shuffle, blocksize=blocksize, typesize=typesize
    )
    # blocks are spliced as bytes: only with the typesize the metadata fixes
    return _ChunkCodec(blosc, _BloscBlocks(blosc) if typesize else None)


def _writer_lock(directory: str, store_path: str) -> FileLock:
    """The writer's lock of a store: a ``flock`` on ``directory`` itself (no extra file
    for zarr to trip over; it goes away with the process, so a killed writer never
    leaves a stale lock). Readers take no lock and are never blocked.
    ``SIMRECORDER_FILE_LOCKING=0`` turns it off where the file system has no locks.
    :meth:`~simrecorder._fs.FileLock.acquire` raises :class:`StoreLockedError` at once
    when another writer holds it."""
    return FileLock(
        directory,
        blocking=False,
        what=f"zarr store {store_path!r} (open it with mode='r' to read while it is written)",
    )


def _write_in_place(path: str, data: _Data, size: int | None, durable: bool = False) -> None:
    try:
        f = open(path, "wb")
    except FileNotFoundError:
        _makedirs(os.path.dirname(path), durable)
        f = open(path, "wb")
    with f:
        _write_parts(f, data, size)


def _write_parts(f: Any, data: _Data, size: int | None) -> None:
    """Write ``data`` to the file ``f``; extend it to ``size`` bytes (a hole that
    reads as zeros: padding costs no disk on file systems with sparse files)."""
    written = 0
    for part in _buffers(data):
        f.write(part)
        written += part.nbytes
    if size is not None and size > written:
        f.truncate(size)


def _makedirs(directory: str, durable: bool) -> None:
    """``os.makedirs``; for a durable store, each new directory's name made durable."""
    missing = []
    at = directory
    while not os.path.isdir(at):
        missing.append(at)
        at = os.path.dirname(at)
    os.makedirs(directory, exist_ok=True)
    if durable:
        for new in missing:
            fsync_path(os.path.dirname(new))


def _write_atomic(path: str, data: _Data, durable: bool = False, size: int | None = None) -> None:
    """Replace the file ``path`` by ``data`` (padded to ``size``) through a temp file
    ``<path>.<hex>.tmp`` (the name :mod:`simrecorder.recover` and packing skip);
    durable: the file and its directory are fsynced. OSErrors propagate as they are
    (the store names the key and itself)."""
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    out: AtomicFile | None = None
    try:
        try:
            out = AtomicFile(path, durable, temp=temp, translate=False)
        except FileNotFoundError:
            _makedirs(os.path.dirname(path), durable)
            out = AtomicFile(path, durable, temp=temp, translate=False)
        with out:
            for part in _buffers(data):
                out.write(part)
            if size is not None:
                out.extend(size)
            out.commit()
    except BaseException:  # an interrupt may land before the `with` owns the temp file
        if out is not None:
            out.discard()  # closes its descriptor too
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def _restore(files: _Files, key: str, content: bytes) -> None:
    """Put ``content`` back at ``key`` unless it is still there."""
    if files.read(key) != content:
        files.write(key, content)


def _rows_in(files: _Files, key: str, store_path: str) -> int:
    """The length of the series ``key`` as stored (0 if it does not exist yet)."""
    if files.read(_meta_key(key)) is None:
        return 0
    shape = _load_meta(files, _meta_key(key), store_path).get("shape") or [0]
    return int(shape[0])


def _cut_back(files: _Files, key: str, rows: int, store_path: str) -> None:
    """Set the stored length of the series ``key`` back to ``rows`` if it is longer."""
    if files.read(_meta_key(key)) is None:
        return
    meta = _load_meta(files, _meta_key(key), store_path)
    if meta.get("shape") and int(meta["shape"][0]) > rows:
        meta["shape"][0] = rows
        files.write(_meta_key(key), _dump(meta))


def _dump(meta: dict[str, Any]) -> bytes:
    # compact: json's C encoder (an indented document takes the pure-Python one, ~20x
    # slower, which was a third of the cost of a new small series)
    return json.dumps(meta).encode()


def _load_meta(files: _Files, key: str, store_path: str) -> dict[str, Any]:
    """The metadata document at ``key``, or :class:`StoreFormatError`."""
    content = files.read(key)
    if content is None:
        raise StoreFormatError(f"{store_path!r}: no zarr metadata {key!r}")
    try:
        meta = json.loads(content)
    except ValueError as exc:
        raise StoreFormatError(f"{store_path!r}: {key!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise StoreFormatError(f"{store_path!r}: {key!r} is not a zarr v3 metadata document")
    return meta


def _array_metas(root: str) -> Iterator[str]:
    """Paths of the ``zarr.json`` of every array below the group ``root``."""
    for directory, subdirs, files in os.walk(root):
        if directory != root and "zarr.json" in files:
            path = os.path.join(directory, "zarr.json")
            with open(path, "rb") as f:
                is_array = b'"array"' in f.read()
            if is_array:
                subdirs[:] = []  # an array has no children
                yield path


def _committed(meta: dict[str, Any], epoch: int, rows_before: int) -> None:
    """Set the commit attribute of an array's metadata for ``epoch``."""
    attrs = meta.setdefault("attributes", {})
    old = attrs.get(_COMMIT_ATTR)
    if not _valid_commit(old):
        previous = [epoch - 1, rows_before]  # a series from before commits existed
    elif old[0] == epoch:
        previous = old[2:]  # a commit of this epoch was tried before: keep its base
    else:
        previous = old[:2]
    attrs[_COMMIT_ATTR] = [epoch, int(meta["shape"][0]), *previous]


def _stamped(meta: dict[str, Any], epoch: int) -> bool:
    """True when ``meta`` records a commit at ``epoch`` of its current length."""
    commit = (meta.get("attributes") or {}).get(_COMMIT_ATTR)
    return _valid_commit(commit) and commit[0] == epoch and commit[1] == meta["shape"][0]


def _valid_commit(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)


def _recovered(meta: dict[str, Any], epoch: int) -> dict[str, Any] | None:
    """The metadata of an array cut back to root epoch ``epoch``, or None if unchanged.

    Arrays without commit information keep their length (written before commits
    existed, or by another tool).
    """
    if meta.get("node_type") != "array":
        return None
    attrs = meta.get("attributes") or {}
    commit = attrs.get(_COMMIT_ATTR)
    if not _valid_commit(commit):
        return None
    at, _rows, before, before_rows = commit
    if at <= epoch:
        keep = commit
    elif before <= epoch:
        keep = [before, before_rows, before, before_rows]
    else:
        keep = [0, 0, 0, 0]
    shape = meta.get("shape") or [0]
    if keep == commit and shape[0] <= keep[1]:
        return None
    fixed = json.loads(json.dumps(meta))
    fixed["shape"][0] = min(shape[0], keep[1])
    fixed["attributes"][_COMMIT_ATTR] = keep
    return fixed


def _write_error(exc: OSError, store: Any, key: str | None, doing: str) -> StoreWriteError:
    """The simrecorder error for an ``OSError`` of ``store``: full or not."""
    what = f"{doing} key {key!r} of" if key is not None else doing
    if exc.errno in _FULL_ERRNOS:
        return StoreFullError(
            f"{what} {store!r}: the disk is full ({exc}); nothing was lost: free space "
            "and write again"
        )
    return StoreWriteError(f"{what} {store!r} failed: {exc}")


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` that ``exc`` was raised while handling, if any."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def _settle_zarr() -> None:
    """Wait until zarr's I/O event loop has finished every task it was given.

    zarr runs its I/O on a thread of its own; when the calling thread is
    interrupted (``KeyboardInterrupt``) that thread keeps writing. Undoing a write
    is only safe once it has finished. A second interrupt while waiting is kept
    waiting too (this is short: the writes are already under way).
    """

    async def _rest_done() -> None:
        me = asyncio.current_task()
        rest = [task for task in asyncio.all_tasks() if task is not me]
        if rest:
            await asyncio.wait(rest)

    for _ in range(100):
        try:
            zarr_sync(_rest_done(), timeout=30)
            return
        except KeyboardInterrupt:
            continue
        except TimeoutError:
            return  # zarr's thread is stuck (see _append_zarr): it writes nothing more


def _looks_like_zarr(path: str, is_zip: bool) -> bool:
    if is_zip:
        try:
            with zipfile.ZipFile(path) as zf:
                return "zarr.json" in zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "zarr.json"))


def _unpack(zip_path: str, directory: str) -> None:
    tmp = directory + ".unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp)  # names come from our own archives; zipfile strips '..'
    os.replace(tmp, directory)


def _pack(directory: str, zip_path: str, durable: bool, where: str) -> None:
    """Pack ``directory`` into ``zip_path`` atomically (a temporary zip, renamed).

    On failure the temporary zip is removed and :class:`StoreFullError` (disk full)
    or :class:`StoreWriteError` is raised; ``directory`` is untouched.
    """
    tmp = f"{zip_path}.{uuid.uuid4().hex}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for root, _dirs, files in os.walk(directory):
                for name in sorted(files):
                    if _TEMP_NAME.search(name):
                        continue  # a temporary file of an interrupted write
                    full = os.path.join(root, name)
                    zf.write(full, os.path.relpath(full, directory).replace(os.sep, "/"))
        if durable:
            fsync_path(tmp)
        os.replace(tmp, zip_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, SimRecorderError):
            raise _write_error(exc, where, None, f"packing {directory!r} into") from exc
        raise
    for stale in glob.glob(glob.escape(zip_path) + ".*.tmp"):  # from a killed packer
        if _TEMP_NAME.search(stale[len(zip_path) :]):
            with contextlib.suppress(OSError):
                os.remove(stale)
