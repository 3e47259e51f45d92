"""The storage interface (:class:`StorageGroup`, :class:`GenericStorage`) and the one
implementation of it that every backend shares.

A backend stores *physical groups*: each has an *index*, one JSON document holding its
small leaves, its attributes and the order of its keys, plus large arrays as the
backend's own datasets. Groups without large arrays live inside their parent's index
(*inline groups*) and become physical when a large array is stored below them, so a
thousand small leaves cost one write, not a thousand, and one leaf still reads without
its siblings' arrays.
"""

from __future__ import annotations

import abc
import math
import re
import threading
import warnings
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from .._keys import validate_key
from ..errors import (
    InvalidKeyError,
    KeyConflictError,
    KeyNotFoundError,
    ReadOnlyError,
    SimRecorderError,
    StoreClosedError,
    StoreFormatError,
)
from . import _encoding as enc
from ._errors import ClassNotFoundWarning, GroupExistsError, UnstorableValueError
from ._index import FLOAT_BLOCK, FLOAT_COLUMN, float_block, from_document, read_column
from ._versions import FORMAT_VERSION, check_versions, current_versions

__all__ = ["Backend", "GenericStorage", "StorageGroup"]

Path = tuple[str, ...]
G, PG, EA = enc.GROUP, enc.PHYSICAL_GROUP, enc.EXTERNAL_ARRAY
PACKED = "@p"  # a small array as raw bytes in its physical group's pack: [dtype, shape, offset]
_WASTE = "@pw"  # bytes of a pack no entry refers to any more (index key)
#: a pack is rewritten at flush when this much of it, and more than half, is waste
REPACK_BYTES = 64 << 10
#: whole loads make the arrays of a pack up to this size views of one copy of it
VIEW_PACK_LIMIT = 1 << 20


class Backend(abc.ABC):
    """What a storage backend does: keep physical groups' indexes and large arrays.

    Attributes
    ----------
    name
        ``'hdf5'``, ``'zarr'``, ``'json'``, ``'memory'``, ``'redis'``.
    inline_limit
        Arrays of at least this many bytes, stored directly in a group, become the
        backend's own datasets; ``None`` keeps every array in the index.
    raw_arrays
        Keep arrays as numpy arrays in the index (memory only: nothing is serialised).
    packs
        Small arrays of a physical group go, as raw bytes, into one *pack* dataset of
        that group (else they are base64 text in the index).
    read_only
        Refuse writes.
    """

    name = ""
    inline_limit: int | None = None
    raw_arrays = False
    packs = False
    read_only = False

    @abc.abstractmethod
    def load_index(self, path: Path) -> dict[str, Any] | None:
        """The index of the physical group ``path`` (``None``: no storage there yet)."""

    def load_document(self, path: Path) -> dict[str, Any] | None:
        """The index of ``path`` as stored (a backend writing JSON keeps its float
        columns; see :mod:`~simrecorder.storage._index`); by default, the index."""
        return self.load_index(path)

    @abc.abstractmethod
    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        """Write the index of the physical group ``path``."""

    def make_group(self, path: Path) -> None:
        """Create the physical group ``path`` (its parent exists)."""
        raise NotImplementedError

    def delete_node(self, path: Path) -> None:
        """Delete the physical group or array ``path`` with everything below it."""
        raise NotImplementedError

    def write_array(self, path: Path, array: np.ndarray) -> None:
        """Store ``array`` as the dataset ``path`` (replacing one already there)."""
        raise NotImplementedError

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Read the dataset ``path`` whole."""
        raise NotImplementedError

    def read_whole_pack(self, path: Path) -> bytes | bytearray:
        """All the bytes of the pack of ``path`` (``b""`` when it has none)."""
        length = self.pack_length(path)
        return self.read_pack(path, 0, length) if length else b""

    def pack_length(self, path: Path) -> int:
        """Bytes in the pack of the physical group ``path`` (0 when it has none)."""
        return 0

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the pack of ``path``."""
        raise NotImplementedError

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        """Write ``data`` at ``start`` of the pack of ``path``; the pack ends after it."""
        raise NotImplementedError

    def external(self, array: np.ndarray) -> bool:
        """Whether ``array`` becomes its own dataset."""
        return self.inline_limit is not None and array.nbytes >= self.inline_limit

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make written data durable in the backend."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file or connection."""

    def describe(self) -> str:
        """The storage, for messages."""
        return self.name


class _Raw:
    """An array on its way into a group (where it goes is decided when it lands)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class _DetachedBackend(Backend):
    """Holds one index in memory: objects inside lists are built and read through it."""

    name = "detached"

    def __init__(self, root: dict[str, Any] | None = None) -> None:
        self.root = root

    def load_index(self, path: Path) -> dict[str, Any] | None:
        return self.root if not path else None

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        self.root = node


class _Tree:
    """The cached, decoded indexes of one storage; written back by :meth:`flush`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._indexes: dict[Path, dict[str, Any]] = {}
        self._dirty: set[Path] = set()
        self.closed = False
        self._pack_length: dict[Path, int] = {}  # bytes of each pack in the backend
        self._pack_new: dict[Path, bytearray] = {}  # bytes appended since, not written
        #: packs read whole (by whole loads)
        self._pack_whole: dict[Path, bytes | bytearray] = {}
        #: indexes as stored, not yet expanded (read by a whole load: see _fast_python)
        self._documents: dict[Path, dict[str, Any]] = {}
        #: held by every change and by flush: a recorder's timer thread flushes the
        #: storage of its HDF5 file while the user's thread writes to it
        self.lock = threading.RLock()

    # -- packs ------------------------------------------------------------------------------
    def new_group(self, phys: Path) -> None:
        """``phys`` was just created: it has no pack yet (no need to look)."""
        self._pack_length[phys] = 0

    def _pack_base(self, phys: Path) -> int:
        length = self._pack_length.get(phys)
        if length is None:
            length = self._pack_length[phys] = self.backend.pack_length(phys)
        return length

    def pack_cursor(self, phys: Path) -> tuple[bytearray, int]:
        """``(pending, base)`` of the pack of ``phys``, to append arrays to: an array
        appended to ``pending`` is at offset ``base + len(pending)`` (as :meth:`pack_put`)."""
        pending = self._pack_new.get(phys)
        if pending is None:
            pending = self._pack_new[phys] = bytearray()
        base = self._pack_length.get(phys)
        if base is None:
            base = self._pack_base(phys)
        self._dirty.add(phys)
        return pending, base

    def pack_put(self, phys: Path, array: np.ndarray) -> dict[str, Any]:
        """Append ``array``'s bytes to the pack of ``phys``; return its entry."""
        pending = self._pack_new.get(phys)
        if pending is None:
            pending = self._pack_new[phys] = bytearray()
        base = self._pack_length.get(phys)
        offset = (self._pack_base(phys) if base is None else base) + len(pending)
        # small arrays: tobytes (C order) is cheaper than a view; large: one copy fewer
        pending += array.tobytes() if array.nbytes < 65536 else _raw_bytes(array)
        self._dirty.add(phys)
        dtype = array.dtype
        text = _DTYPE_TEXTS.get(dtype) or _dtype_text(dtype)
        return {PACKED: [text, list(array.shape), offset]}

    def pack_get(self, phys: Path, entry: list[Any], whole: bool = False) -> np.ndarray:
        """The array of a packed entry (``whole``: read and keep the whole pack)."""
        pack = self._pack_whole.get(phys)
        if pack is not None:  # a whole load: one call per array (many are small)
            fast = _from_pack(pack, entry)
            if fast is not None:
                return fast
        dtype, shape, offset = _dtype(entry[0]), tuple(entry[1]), int(entry[2])
        if dtype.itemsize == 0:
            return np.zeros(shape, dtype=dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        base = self._pack_length.get(phys)
        if base is None:
            base = self._pack_base(phys)
        if offset >= base:
            start = offset - base
            data: Any = memoryview(self._pack_new.get(phys, b""))[start : start + nbytes]
        elif whole or phys in self._pack_whole:
            pack = self._pack_whole.get(phys)
            if pack is None:
                pack = self._pack_whole[phys] = self.backend.read_pack(phys, 0, base)
            data = memoryview(pack)[offset : offset + nbytes]
        else:
            data = self.backend.read_pack(phys, offset, offset + nbytes)
        if len(data) != nbytes:
            raise StoreFormatError(
                f"{self.backend.describe()}: the pack of /{'/'.join(phys)} is shorter than "
                "its index says"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # owned, writable

    def private_pack(self, phys: Path) -> bytearray | None:
        """A copy of the pack of ``phys`` as stored, for one whole load's arrays to be
        views of (read straight into it when it is not cached: one copy, not one per
        array); ``None`` for a pack above :data:`VIEW_PACK_LIMIT`, then kept whole for
        :meth:`pack_get` to copy each array from (a fresh copy of many megabytes costs
        more than copies of its arrays)."""
        pack: bytes | bytearray | None = self._pack_whole.get(phys)
        if pack is None:
            length = self._pack_length.get(phys)
            if length is None:  # one read for its length and bytes
                pack = self.backend.read_whole_pack(phys)
                self._pack_length[phys] = len(pack)
            else:
                pack = self.backend.read_pack(phys, 0, length) if length else b""
            if len(pack) > VIEW_PACK_LIMIT:
                self._pack_whole[phys] = pack
                return None
            return pack if isinstance(pack, bytearray) else bytearray(pack)
        return bytearray(pack) if len(pack) <= VIEW_PACK_LIMIT else None

    def waste(self, phys: Path, entry: Any) -> None:
        """Count the packed bytes an entry being dropped leaves behind in ``phys``."""
        wasted = _packed_bytes(entry)
        if wasted:
            node = self.index(phys)
            node[_WASTE] = node.get(_WASTE, 0) + wasted

    def _write_pack(self, phys: Path) -> None:
        node = self._indexes.get(phys)
        base = self._pack_base(phys)
        pending = self._pack_new.pop(phys, None)
        total = base + len(pending or b"")
        if node is not None and node.get(_WASTE, 0) > max(REPACK_BYTES, total // 2):
            self._repack(phys, node, pending)
            return
        if pending:
            self.backend.write_pack(phys, base, pending)
            self._pack_length[phys] = base + len(pending)
            self._pack_whole.pop(phys, None)

    def _repack(self, phys: Path, node: dict[str, Any], pending: bytearray | None) -> None:
        """Rewrite the pack of ``phys`` with only the bytes its entries use."""
        if pending:
            self._pack_new[phys] = pending
        out = bytearray()
        for entry in _packed_entries(node):
            array = self.pack_get(phys, entry, whole=True)
            entry[2] = len(out)
            out += array.tobytes()
        self._pack_new.pop(phys, None)
        self.backend.write_pack(phys, 0, out)
        self._pack_length[phys] = len(out)
        self._pack_whole.pop(phys, None)
        node.pop(_WASTE, None)

    def index(self, phys: Path) -> dict[str, Any]:
        node = self._indexes.get(phys)
        if node is None:
            self.check_open()
            document = self._documents.pop(phys, None)
            if document is None:
                node = self.backend.load_index(phys)
            else:
                node = from_document(document, self.where(phys))
            if node is None:
                if phys:
                    raise StoreFormatError(
                        f"{self.backend.describe()}: group /{'/'.join(phys)} has no index"
                    )
                node = {G: {}}
            else:
                self.check_node(phys, node)
            self._indexes[phys] = node
        return node

    def document(self, phys: Path) -> dict[str, Any] | None:
        """The index of ``phys`` as stored, float columns not expanded (checked as
        :meth:`index` does); ``None`` once :meth:`index` has it, or when it is missing."""
        if phys in self._indexes:
            return None
        document = self._documents.get(phys)
        if document is None:
            self.check_open()
            document = self.backend.load_document(phys)
            if document is None:
                return None
            self.check_node(phys, document)
            self._documents[phys] = document
        return document

    def root_field(self, name: str) -> Any:
        """The field ``name`` (``'@versions'``, ``'@meta'``) of the root index, without
        expanding a root index not read yet."""
        node = self._indexes.get(())
        if node is None:
            node = self.document(()) or self.index(())
        return node.get(name)

    def where(self, phys: Path) -> str:
        return f"{self.backend.describe()} group /{'/'.join(phys)}"

    def check_node(self, phys: Path, node: Any) -> None:
        """Raise :class:`StoreFormatError` unless ``node`` looks like an index."""
        if not isinstance(node, dict) or not isinstance(node.get(G), dict):
            raise StoreFormatError(
                f"{self.backend.describe()}: the index of /{'/'.join(phys)} is damaged"
            )
        if phys:
            return
        version = node.get("@format", 1)
        if not isinstance(version, int):
            raise StoreFormatError(f"{self.backend.describe()}: its @format is damaged")
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.backend.describe()} has storage format {version}; this "
                f"simrecorder reads up to {FORMAT_VERSION}: upgrade simrecorder"
            )

    def set_index(self, phys: Path, node: dict[str, Any]) -> None:
        self._indexes[phys] = node
        self._dirty.add(phys)

    def touch(self, phys: Path) -> None:
        if self.backend.read_only:
            raise ReadOnlyError(f"{self.backend.describe()} is open read-only")
        self._dirty.add(phys)

    def forget(self, phys: Path) -> None:
        n = len(phys)
        for cached in [p for p in self._indexes if p[:n] == phys]:
            del self._indexes[cached]
            self._dirty.discard(cached)
        packs: dict[Path, Any]
        for packs in (self._pack_length, self._pack_new, self._pack_whole, self._documents):
            for cached in [p for p in packs if p[:n] == phys]:
                del packs[cached]

    def check_open(self) -> None:
        if self.closed:
            raise StoreClosedError(f"{self.backend.describe()} is closed")

    def check_writable(self) -> None:
        self.check_open()
        if self.backend.read_only:
            raise ReadOnlyError(f"{self.backend.describe()} is open read-only")

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self, closing: bool = False) -> None:
        if self.closed:
            return
        for phys in sorted(self._dirty, key=len):
            if phys in self._indexes:
                if self.backend.packs:
                    self._write_pack(phys)
                self.backend.save_index(phys, self._indexes[phys])
        self._dirty.clear()
        if not closing:  # closing the backend writes what it holds
            self.backend.flush()


_DTYPES: dict[str, np.dtype] = {}


def _dtype(text: str) -> np.dtype:
    """``np.dtype(text)``, cached (parsing it is most of the cost of a small array)."""
    dtype = _DTYPES.get(text)
    if dtype is None:
        dtype = np.dtype(text)
        if len(_DTYPES) < 1000:
            _DTYPES[text] = dtype
    return dtype


_DTYPE_TEXTS: dict[np.dtype, str] = {}


def _dtype_text(dtype: np.dtype) -> str:
    """``dtype.str``, cached (numpy builds the string at each call)."""
    text = _DTYPE_TEXTS.get(dtype)
    if text is None:
        text = dtype.str
        if len(_DTYPE_TEXTS) < 1000:
            _DTYPE_TEXTS[dtype] = text
    return text


def _from_pack(pack: bytes | bytearray, entry: list[Any]) -> np.ndarray | None:
    """The array of a packed entry within the bytes ``pack`` read whole, as an owned
    writable copy (``None`` when it does not lie within them, or is of an odd dtype:
    :meth:`_Tree.pack_get` then reads it, or says what is wrong)."""
    dtype = _DTYPES.get(entry[0])
    offset = entry[2]
    if dtype is None or dtype.itemsize == 0 or offset.__class__ is not int or offset < 0:
        return None
    try:
        return np.ndarray(tuple(entry[1]), dtype, pack, offset).copy()
    except (TypeError, ValueError):
        return None


def _raw_bytes(array: np.ndarray) -> Any:
    """The C-order bytes of ``array``: a view when it is contiguous (one copy fewer)."""
    if array.flags.c_contiguous and array.size:
        try:
            return array.data.cast("B")
        except (TypeError, ValueError):  # dtypes the buffer protocol does not know
            pass
    return np.ascontiguousarray(array).tobytes()


def _kind(entry: Any) -> str | None:
    """The tag of a dict entry (``None`` for plain JSON values)."""
    if entry.__class__ is dict:
        for tag in entry:
            return tag
    return None


_valid_names: set[str] = set()  # names seen valid (bounded; fine under the GIL)


def valid_name(name: object) -> bool:
    """Whether ``name`` can be a key of a group (a str, no ``/``, not reserved)."""
    if name in _valid_names:
        return True
    valid = (
        name.__class__ is str
        and bool(name)
        and "/" not in name
        and not name.startswith(("@", ".simrecorder"))
        and name not in (".", "..")
        and not any(ord(char) < 32 for char in name)
    )
    if valid and len(_valid_names) < 100_000:
        _valid_names.add(name)  # type: ignore[arg-type]
    return valid


def names_valid(mapping: dict[Any, Any]) -> bool:
    """Whether every key of ``mapping`` can be a group member's name."""
    return _valid_names.issuperset(mapping) or all(valid_name(key) for key in mapping)


def _group_like(value: Any) -> bool:
    """Whether assigning ``value`` makes a group (a dict with name keys, or an object)."""
    if value.__class__ is dict:
        return names_valid(value)
    return (
        not isinstance(value, (np.ndarray, np.generic, list, tuple, str, bytes, int, float))
        and enc.object_kind(value) is not None
    )


class StorageGroup(MutableMapping[str, Any], abc.ABC):
    """A dict-like, h5py-style group of a storage.

    Keys are names or ``'a/b/c'`` paths (``g['a/b/c'] = 1`` creates ``a`` and ``a/b``);
    assigning a dict or an object creates a group, reading a group gives a
    :class:`StorageGroup`, reading a leaf gives the stored value (the same type and
    value). Iteration is in insertion order.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """``'/'`` for the root, ``'/a/b'`` below."""

    @property
    @abc.abstractmethod
    def attrs(self) -> MutableMapping[str, Any]:
        """The group's attributes (small plain values)."""

    @abc.abstractmethod
    def create_group(self, key: str) -> StorageGroup:
        """Create and return a new group; ``GroupExistsError`` (``ValueError``) if
        ``key`` exists."""

    @abc.abstractmethod
    def require_group(self, key: str) -> StorageGroup:
        """Return the group ``key``, creating it when missing (``TypeError`` on a leaf)."""

    @abc.abstractmethod
    def load(self, key: str | None = None) -> Any:
        """The group (or its member ``key``) as plain Python objects, classes restored."""


class _Group(StorageGroup):
    """The :class:`StorageGroup` of every backend: a place in a :class:`_Tree`."""

    __slots__ = ("_inner", "_phys", "_tree")

    def __init__(self, tree: _Tree, phys: Path, inner: Path = ()) -> None:
        self._tree = tree
        self._phys = phys
        self._inner = inner

    # -- paths and nodes ----------------------------------------------------------------
    @property
    def _path(self) -> Path:
        return self._phys + self._inner

    @property
    def name(self) -> str:
        return "/" + "/".join(self._path)

    def _where(self, key: str = "") -> str:
        path = "/".join((*self._path, key)) if key else "/".join(self._path)
        return f"key {'/' + path!r} of {self._tree.backend.describe()}"

    def _node(self) -> dict[str, Any]:
        tree = self._tree
        node = tree.index(self._phys)
        for i, part in enumerate(self._inner):
            entry = node[G].get(part)
            tag = _kind(entry)
            if tag == G:
                node = entry
            elif tag == PG:  # promoted since this object was made
                self._phys, self._inner = self._phys + self._inner[: i + 1], self._inner[i + 1 :]
                return self._node()
            else:
                raise KeyNotFoundError(f"{self._where()}: the group was deleted")
        return node

    def _split(self, key: object) -> list[str]:
        if key.__class__ is not str:
            raise UnstorableValueError(
                f"storage keys are str, got {key!r} ({type(key).__name__}) in {self._where()}"
            )
        parts = validate_key(key).split("/")
        for part in parts:
            if not valid_name(part):
                raise InvalidKeyError(
                    f"invalid key {key!r} in {self._where()}: names starting with '@' or "
                    "'.simrecorder' are reserved"
                )
        return parts

    def _walk(self, parts: list[str], create: bool) -> _Group:
        group = self
        for part in parts:
            group = group._child(part, create)
        return group

    def _child(self, name: str, create: bool) -> _Group:
        node = self._node()
        entry = node[G].get(name)
        tag = _kind(entry)
        if tag == G:
            return _Group(self._tree, self._phys, (*self._inner, name))
        if tag == PG:
            return _Group(self._tree, (*self._path, name))
        if entry is None and name not in node[G]:
            if not create:
                raise KeyNotFoundError(f"no {self._where(name)}")
            self._tree.check_writable()
            node[G][name] = {G: {}}
            self._tree.touch(self._phys)
            return _Group(self._tree, self._phys, (*self._inner, name))
        if not create:
            raise KeyNotFoundError(f"no {self._where(name)}/...: {name!r} is a value, not a group")
        raise KeyConflictError(f"{self._where(name)} is a value, not a group")

    # -- mapping ------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        self._tree.check_open()
        parts = self._split(key)
        with self._tree.lock:  # not while a recorder's timer thread flushes (repacks)
            parent = self._walk(parts[:-1], create=False)
            return parent._get(parts[-1])

    def _get(self, name: str) -> Any:
        entries = self._node()[G]
        if name not in entries:
            raise KeyNotFoundError(f"no {self._where(name)}")
        entry = entries[name]
        tag = _kind(entry)
        if tag == G:
            return _Group(self._tree, self._phys, (*self._inner, name))
        if tag == PG:
            return _Group(self._tree, (*self._path, name))
        if tag == EA:
            dtype, shape = entry[EA]
            return self._tree.backend.read_array((*self._path, name), np.dtype(dtype), tuple(shape))
        if tag == PACKED:
            return self._tree.pack_get(self._phys, entry[PACKED])
        return enc.decode_value(entry, _load_detached)

    def get(self, key: str, default: Any = None) -> Any:
        """The value or group ``key``, or ``default`` when missing."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if key.__class__ is not str:
            return False
        try:
            parts = self._split(key)
            parent = self._walk(parts[:-1], create=False)
        except (KeyError, TypeError, ValueError):
            return False
        return parts[-1] in parent._node()[G]

    def __setitem__(self, key: str, value: Any) -> None:
        self._tree.check_writable()
        parts = self._split(key)
        with self._tree.lock:
            parent = self._walk(parts[:-1], create=True)
            try:
                parent._set(parts[-1], value)
            except UnstorableValueError as exc:
                raise UnstorableValueError(f"{parent._where(parts[-1])}: {exc}") from None

    def _set(self, name: str, value: Any) -> None:
        kind = (
            enc.object_kind(value) if _group_like(value) and value.__class__ is not dict else None
        )
        if kind == "storable":
            enc.note_class(enc.class_path(type(value)))
            self._set_entry(name, {G: {}, "@c": enc.class_path(type(value)), "@k": kind})
            value._store(self._child(name, create=False))
            return
        self._set_entry(name, _build_entry(value))

    def _set_entry(self, name: str, entry: Any) -> None:
        node = self._node()
        old = node[G].get(name)
        old_tag = _kind(old)
        if old is not None:
            self._tree.waste(self._phys, old)
        physical = _needs_physical(entry, self._tree.backend)
        if old_tag == PG or (old_tag == EA and not (physical and isinstance(entry, _Raw))):
            self._drop_physical(name)
            node = self._node()
        if physical:
            self._make_physical()
            node = self._node()
            entry = _settle_physical(self._tree, self._path, name, entry)
        else:
            entry = _settle_inline(entry, self._tree, self._phys)
        node[G][name] = entry
        self._tree.touch(self._phys)

    def _drop_physical(self, name: str) -> None:
        path = (*self._path, name)
        self._tree.backend.delete_node(path)
        self._tree.forget(path)

    def _make_physical(self) -> None:
        """Turn this group (and its inline ancestors) into physical groups."""
        tree = self._tree
        while self._inner:
            name = self._inner[0]
            parent = tree.index(self._phys)
            node = parent[G][name]
            path = (*self._phys, name)
            tree.backend.make_group(path)
            tree.new_group(path)
            if tree.backend.packs:
                _move_packed(tree, self._phys, path, node)
            tree.set_index(path, node)
            parent[G][name] = {PG: 1}
            tree.touch(self._phys)
            self._phys, self._inner = path, self._inner[1:]

    def __delitem__(self, key: str) -> None:
        self._tree.check_writable()
        with self._tree.lock:
            self._delete(self._split(key))

    def _delete(self, parts: list[str]) -> None:
        parent = self._walk(parts[:-1], create=False)
        node = parent._node()
        name = parts[-1]
        if name not in node[G]:
            raise KeyNotFoundError(f"no {parent._where(name)} to delete")
        if _kind(node[G][name]) in (PG, EA):
            parent._drop_physical(name)
        else:
            self._tree.waste(parent._phys, node[G][name])
        del parent._node()[G][name]
        self._tree.touch(parent._phys)

    def __iter__(self) -> Iterator[str]:
        self._tree.check_open()
        return iter(list(self._node()[G]))

    def __len__(self) -> int:
        self._tree.check_open()
        return len(self._node()[G])

    def __repr__(self) -> str:
        return f"<StorageGroup {self.name!r} of {self._tree.backend.describe()}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Group):
            return self._tree is other._tree and self._path == other._path
        return NotImplemented

    def __hash__(self) -> int:
        return hash((id(self._tree), self._path))

    # -- groups -------------------------------------------------------------------------
    def create_group(self, key: str) -> StorageGroup:
        self._tree.check_writable()
        parts = self._split(key)
        with self._tree.lock:
            parent = self._walk(parts[:-1], create=True)
            if parts[-1] in parent._node()[G]:
                raise GroupExistsError(f"{parent._where(parts[-1])} already exists")
            return parent._child(parts[-1], create=True)

    def require_group(self, key: str) -> StorageGroup:
        self._tree.check_open()
        parts = self._split(key)
        with self._tree.lock:
            return self._walk(parts, create=True)

    @property
    def attrs(self) -> MutableMapping[str, Any]:
        return _Attrs(self)

    @property
    def class_path(self) -> str | None:
        """``module:qualname`` of the object stored as this group, or ``None``."""
        return self._node().get("@c")

    # -- whole-group reads --------------------------------------------------------------
    def load(self, key: str | None = None) -> Any:
        self._tree.check_open()
        with self._tree.lock:  # not while a recorder's timer thread flushes (repacks)
            if key is not None and key not in ("", "/"):
                value = self[key]
                return value.load() if isinstance(value, _Group) else value
            if not self._phys and not self._inner:
                try:
                    return _fast_python(self._tree, ())
                except _Fallback:
                    pass
            return _to_python(self)


class _Attrs(MutableMapping[str, Any]):
    """The attributes of a group (encoded like values, kept in the group's index)."""

    def __init__(self, group: _Group) -> None:
        self._group = group

    def _attrs(self) -> dict[str, Any]:
        return self._group._node().get("@a", {})

    def __getitem__(self, name: str) -> Any:
        attrs = self._attrs()
        if name not in attrs:
            raise KeyNotFoundError(f"no attribute {name!r} on {self._group._where()}")
        return enc.decode_value(attrs[name], _load_detached)

    def __setitem__(self, name: str, value: Any) -> None:
        group = self._group
        group._tree.check_writable()
        if name.__class__ is not str:
            raise UnstorableValueError(f"attribute names are str, got {name!r}")
        try:
            encoded = enc.encode_value(value, object_value)
        except UnstorableValueError as exc:
            raise UnstorableValueError(f"attribute {name!r} of {group._where()}: {exc}") from None
        with group._tree.lock:
            group._node().setdefault("@a", {})[name] = encoded
            group._tree.touch(group._phys)

    def __delitem__(self, name: str) -> None:
        group = self._group
        group._tree.check_writable()
        with group._tree.lock:
            attrs = self._attrs()
            if name not in attrs:
                raise KeyNotFoundError(f"no attribute {name!r} on {group._where()}")
            del attrs[name]
            group._tree.touch(group._phys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._attrs()))

    def __len__(self) -> int:
        return len(self._attrs())

    def __repr__(self) -> str:
        return f"<attributes of {self._group.name!r}: {dict(self)!r}>"


# -- building and settling entries --------------------------------------------------------


_RAW = "@r"  # set on a node under construction that holds arrays (removed on settling)


def _build_node(value: Any) -> dict[str, Any]:
    """The group node of a dict with name keys, or of an object (arrays as ``_Raw``)."""
    if value.__class__ is dict:
        isfinite = math.isfinite
        for item in value.values():  # a group of floats only: checked in C, copied in C
            if item.__class__ is not float:
                break
        else:  # a sum is finite only when every term is
            if isfinite(sum(value.values())):
                return {G: dict(value)}
        items = {}
        raw = False
        for key, item in value.items():
            cls = item.__class__
            if cls is float:  # the common leaves inline (a call per leaf is the cost)
                items[key] = item if isfinite(item) else {"@f": repr(item)}
                continue
            if cls is str or cls is int or cls is bool or item is None:
                items[key] = item
                continue
            if cls is np.ndarray:  # as _build_entry does, without the call
                enc.check_dtype(item.dtype)
                items[key] = _Raw(item)
                raw = True
                continue
            entry: Any = _build_entry(item)
            items[key] = entry
            if not raw and (entry.__class__ is _Raw or (entry.__class__ is dict and _RAW in entry)):
                raw = True
        return {G: items, _RAW: True} if raw else {G: items}
    kind = enc.object_kind(value)
    assert kind is not None
    path = enc.class_path(type(value))
    enc.note_class(path)
    if kind == "storable":
        return object_value(value)
    state = enc.object_state(value, kind)
    if state.__class__ is dict and names_valid(state):
        node = _build_node(state)
    else:
        node = _build_node({"state": state})
        kind = "statev"
    node["@c"] = path
    node["@k"] = kind
    return node


def _build_entry(value: Any) -> Any:
    cls = value.__class__
    if cls is float:  # the common leaves first: no isinstance on an ABC for them
        return value if math.isfinite(value) else {"@f": repr(value)}
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is np.ndarray:
        enc.check_dtype(value.dtype)
        return _Raw(value)
    if cls is dict:
        if names_valid(value):
            return _build_node(value)
    elif isinstance(value, StorageGroup):  # a copy of the group's data (objects too)
        return _build_entry(value.load())
    elif cls not in _PLAIN and not isinstance(value, np.generic):
        if isinstance(value, np.ndarray):
            enc.check_dtype(value.dtype)
            return _Raw(np.asarray(value))
        if enc.object_kind(value) is not None:
            return _build_node(value)
    return enc.encode_value(value, object_value)


_PLAIN = frozenset({str, int, float, bool, type(None), list, tuple, bytes, complex})


def object_value(value: Any) -> dict[str, Any]:
    """The node of an object that sits inside a value (a list): arrays kept inline."""
    if enc.object_kind(value) == "storable":
        tree = _Tree(_DetachedBackend())
        root = _Group(tree, ())
        tree.index(())["@c"] = enc.class_path(type(value))
        tree.index(())["@k"] = "storable"
        value._store(root)
        return tree.index(())
    return _settle_inline(_build_node(value), _Tree(_DetachedBackend()), ())


def _needs_physical(entry: Any, backend: Backend) -> bool:
    if entry.__class__ is _Raw:
        return backend.external(entry.array)
    if backend.inline_limit is None or entry.__class__ is not dict or _RAW not in entry:
        return False
    external = backend.external
    for item in entry[G].values():  # only arrays and nodes holding arrays can need it
        cls = item.__class__
        if cls is _Raw:
            if external(item.array):
                return True
        elif cls is dict and _RAW in item and _needs_physical(item, backend):
            return True
    return False


def _settle_inline(entry: Any, tree: _Tree, phys: Path) -> Any:
    """Turn the ``_Raw`` arrays of an entry into inline (or packed) arrays of ``phys``."""
    if entry.__class__ is _Raw:
        backend = tree.backend
        if backend.raw_arrays:
            return {enc.RAW_ARRAY: np.array(entry.array, copy=True)}
        if backend.packs:
            return tree.pack_put(phys, entry.array)
        return enc.encode_array(entry.array)
    if entry.__class__ is dict and entry.pop(_RAW, False):
        items = entry[G]
        backend = tree.backend
        packs = backend.packs and not backend.raw_arrays
        pending: bytearray | None = None
        base = 0
        for key, item in items.items():
            cls = item.__class__
            if cls is _Raw and packs:  # the common case: pack_put's work, without a call
                if pending is None:
                    pending, base = tree.pack_cursor(phys)
                array = item.array
                dtype = array.dtype
                text = _DTYPE_TEXTS.get(dtype) or _dtype_text(dtype)
                items[key] = {PACKED: [text, list(array.shape), base + len(pending)]}
                pending += array.tobytes() if array.nbytes < 65536 else _raw_bytes(array)
            elif cls is _Raw or (cls is dict and _RAW in item):
                items[key] = _settle_inline(item, tree, phys)
    return entry


def _packed_entries(node: dict[str, Any]) -> Iterator[list[Any]]:
    """The ``[dtype, shape, offset]`` lists of the packed arrays of a node (inline
    groups included)."""
    for entry in node[G].values():
        if entry.__class__ is dict:
            tag = next(iter(entry), None)
            if tag == PACKED:
                yield entry[PACKED]
            elif tag == G:
                yield from _packed_entries(entry)


def _packed_bytes(entry: Any) -> int:
    """Bytes of the packed arrays an entry refers to."""
    tag = _kind(entry)
    if tag == PACKED:
        dtype, shape, _ = entry[PACKED]
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if tag == G:
        return sum(_packed_bytes(item) for item in entry[G].values())
    return 0


def _move_packed(tree: _Tree, source: Path, target: Path, node: dict[str, Any]) -> None:
    """Copy the packed arrays of a group that became physical into its own pack."""
    tree.waste(source, node)
    for spec in list(_packed_entries(node)):
        array = tree.pack_get(source, spec)
        spec[:] = tree.pack_put(target, array)[PACKED]


def _settle_physical(tree: _Tree, parent: Path, name: str, entry: Any) -> Any:
    """Store an entry that needs datasets under the physical group ``parent``."""
    backend = tree.backend
    path = (*parent, name)
    if isinstance(entry, _Raw):
        array = entry.array
        backend.write_array(path, array)
        return {EA: [array.dtype.str, list(array.shape)]}
    backend.make_group(path)
    tree.new_group(path)
    entry.pop(_RAW, None)
    items = entry[G]
    for key, item in items.items():
        if _needs_physical(item, backend):
            items[key] = _settle_physical(tree, path, key, item)
        elif item.__class__ is _Raw or (item.__class__ is dict and _RAW in item):
            items[key] = _settle_inline(item, tree, path)
    tree.set_index(path, entry)
    return {PG: 1}


# -- reading whole groups -----------------------------------------------------------------


def _load_detached(node: dict[str, Any]) -> Any:
    """Rebuild an object stored inside a value."""
    return _to_python(_Group(_Tree(_DetachedBackend(node)), ()))


def _to_python(group: _Group) -> Any:
    return _node_python(group._tree, group._phys, group._inner, group._node())


_SCALAR_TYPES = frozenset({float, str, int, bool, type(None)})


def _scalars_only(members: dict[str, Any]) -> bool:
    """Whether every entry of a group is a plain JSON scalar (it is its own value)."""
    scalar = _SCALAR_TYPES
    for entry in members.values():
        if entry.__class__ not in scalar:
            return False
    return True


def _node_python(tree: _Tree, phys: Path, inner: Path, node: dict[str, Any]) -> Any:
    """A group node as Python data (objects rebuilt), reading only what it holds."""
    kind = node.get("@k")
    if kind == "storable" and enc.import_class(node.get("@c", "")) is not None:
        cls = enc.import_class(node["@c"])
        return cls._restore(_Group(tree, phys, inner))  # type: ignore[union-attr]
    data = {}
    for name, entry in node[G].items():
        cls = entry.__class__
        if cls is float or cls is str or cls is int or cls is bool or entry is None:
            data[name] = entry
        elif cls is dict:
            tag = next(iter(entry), None)
            if tag == G:
                members = entry[G]
                if len(entry) == 1 and _scalars_only(members):  # a plain group of scalars
                    data[name] = dict(members)
                else:
                    data[name] = _node_python(tree, phys, (*inner, name), entry)
            elif tag == PG:
                path = (*phys, *inner, name)
                data[name] = _node_python(tree, path, (), tree.index(path))
            elif tag == EA:
                dtype, shape = entry[EA]
                data[name] = tree.backend.read_array(
                    (*phys, *inner, name), np.dtype(dtype), tuple(shape)
                )
            elif tag == PACKED:
                data[name] = tree.pack_get(phys, entry[PACKED], whole=True)
            else:
                data[name] = enc.decode_value(entry, _load_detached)
        elif cls is list:
            data[name] = enc.decode_value(entry, _load_detached)
        else:
            data[name] = entry
    if "@k" not in node and "@c" not in node:  # a plain group
        return data
    return _restored(_Group(tree, phys, inner), node, data)


class _Fallback(Exception):
    """A whole load met what only :func:`_node_python` reads (objects, damage)."""


def _fast_python(tree: _Tree, phys: Path) -> Any:
    """The physical group ``phys`` as Python data, read in one pass over its index as
    stored (float columns and packed arrays turned into values directly, not through
    the expanded index); :class:`_Fallback` when it holds objects or anything odd.

    Its packed arrays are views of one copy of the pack made for this load (writable,
    and shared with nothing else: not a copy each)."""
    document = tree.document(phys)
    if document is None or "@c" in document or "@k" in document:
        raise _Fallback
    floats = float_block(document, tree.where(phys)) if FLOAT_BLOCK in document else []
    try:
        return _fast_members(tree, phys, (), document[G], floats, [])
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, SimRecorderError):
            raise
        raise _Fallback from exc  # damage: the general reader names it


def _pack_view(
    tree: _Tree, phys: Path, spec: Any, pack: list[bytearray | None]
) -> np.ndarray | None:
    """The packed array ``spec`` of ``phys`` as a view of this load's copy of the pack
    (``pack``: ``[]`` until it is read), or a copy when it is not aligned; ``None``
    when the pack is large (each array is then copied) or the entry is odd."""
    try:
        dtype = _DTYPES.get(spec[0])
        if dtype is None or not dtype.itemsize or spec[2].__class__ is not int or spec[2] < 0:
            return None
        if not pack:
            pack.append(tree.private_pack(phys))
        if pack[0] is None:  # a large pack: a copy of each array
            return None
        array = np.ndarray(tuple(spec[1]), dtype, pack[0], spec[2])
    except (TypeError, ValueError, IndexError):  # odd: the general read says what is wrong
        return None
    # a view when aligned (numpy's routines expect it), else a copy
    return array if not spec[2] % dtype.alignment else array.copy()


def _fast_members(
    tree: _Tree,
    phys: Path,
    inner: Path,
    members: dict[str, Any],
    floats: list[float],
    pack: list[bytearray | None],
) -> dict[str, Any]:
    """The members of a group of the document of ``phys`` (``pack``: ``[]``, or the
    copy of its pack the arrays read so far are views of)."""
    data = {}
    for name, entry in members.items():
        cls = entry.__class__
        if cls is float or cls is str or cls is int or cls is bool or entry is None:
            data[name] = entry
        elif cls is dict:
            tag = next(iter(entry), None)
            if tag == FLOAT_COLUMN:
                names, start = entry[tag]
                stop = start + len(names)
                if len(entry) != 1 or names.__class__ is not list or not 0 <= start <= stop:
                    raise _Fallback
                data[name] = dict(zip(names, floats[start:stop]))  # noqa: B905
                if stop > len(floats):
                    read_column(entry[tag], floats, tree.where(phys), (*inner, name))
            elif tag == PACKED:
                spec = entry[PACKED]
                array = _pack_view(tree, phys, spec, pack)
                # the general read copies, or says what is wrong
                data[name] = tree.pack_get(phys, spec, whole=True) if array is None else array
            elif tag == G:
                if "@c" in entry or "@k" in entry or entry[G].__class__ is not dict:
                    raise _Fallback
                data[name] = _fast_members(tree, phys, (*inner, name), entry[G], floats, pack)
            elif tag == PG:
                data[name] = _fast_python(tree, (*phys, *inner, name))
            elif tag == EA:
                dtype, shape = entry[EA]
                data[name] = tree.backend.read_array(
                    (*phys, *inner, name), np.dtype(dtype), tuple(shape)
                )
            else:
                data[name] = enc.decode_value(entry, _load_detached)
        elif cls is list:
            data[name] = enc.decode_value(entry, _load_detached)
        else:
            data[name] = entry
    return data


def _restored(group: _Group, node: dict[str, Any], data: dict[str, Any]) -> Any:
    kind = node.get("@k")
    if kind == "wrapped":
        return data.get("value")
    path = node.get("@c")
    if path is None:
        return data
    cls = enc.import_class(path)
    if cls is None:
        warnings.warn(
            f"{group._where()}: the class {path.replace(':', '.')} cannot be imported; "
            "its data is returned as a dict",
            ClassNotFoundWarning,
            stacklevel=3,
        )
        return data
    if kind == "storable":
        return cls._restore(group)  # type: ignore[attr-defined]
    if kind == "statev":
        return enc.restore_object(cls, "state", data.get("state"))
    return enc.restore_object(cls, kind or "state", data)


def filtered(value: Any, pattern: re.Pattern[str] | None, path: str = "") -> Any:
    """``value`` with the dict members whose ``/``-joined path matches ``pattern`` left out."""
    if pattern is None or value.__class__ is not dict:
        return value
    out = {}
    for key, item in value.items():
        full = f"{path}/{key}" if path else str(key)
        if pattern.search(full):
            continue
        out[key] = filtered(item, pattern, full)
    return out


# -- the storage object -------------------------------------------------------------------


def _fill(storage: GenericStorage, obj: Any, metadata: dict[str, Any]) -> None:
    with enc.collecting_classes() as classes:
        _fill_data(storage, obj)
    packages = {path.split(":")[0].split(".")[0] for path in classes}
    tree = storage._tree
    node = tree.index(())
    node["@format"] = FORMAT_VERSION
    node["@versions"] = current_versions(packages)
    node["@meta"] = encode_metadata(metadata)
    tree.touch(())


def encode_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``@meta`` field of a root index (plain data only: no objects)."""
    try:
        return enc._encode_dict(dict(metadata), None)
    except UnstorableValueError as exc:
        raise UnstorableValueError(f"metadata: {exc}") from None


def _fill_data(storage: GenericStorage, obj: Any) -> None:
    root = _Group(storage._tree, ())
    tree = storage._tree
    node = tree.index(())
    if obj.__class__ is dict and all(valid_name(key) for key in obj):
        for key, value in obj.items():
            root[key] = value
    elif enc.object_kind(obj) == "storable":
        node["@c"], node["@k"] = enc.class_path(type(obj)), "storable"
        enc.note_class(node["@c"])
        obj._store(root)
    elif enc.object_kind(obj) is not None and not isinstance(obj, (np.ndarray, np.generic)):
        kind = enc.object_kind(obj)
        state = enc.object_state(obj, kind)  # type: ignore[arg-type]
        if state.__class__ is dict and all(valid_name(key) for key in state):
            for key, value in state.items():
                root[key] = value
        else:
            root["state"] = state
            kind = "statev"
        node = tree.index(())
        node["@c"], node["@k"] = enc.class_path(type(obj)), kind
        enc.note_class(node["@c"])
    else:
        root["value"] = obj
        tree.index(())["@k"] = "wrapped"


class GenericStorage:
    """A storage: owns the file or connection; ``with`` gives the root group.

    Changes are kept in memory per group index and written by :meth:`flush` and
    :meth:`close` (large arrays are written at once).
    """

    def __init__(self, backend: Backend, created: bool = False) -> None:
        self._tree = _Tree(backend)
        if created:  # empty: no index to read
            self._tree.new_group(())
            self._tree._indexes[()] = {G: {}}

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._tree.backend.name

    @property
    def root(self) -> StorageGroup:
        """The root group."""
        self._tree.check_open()
        return _Group(self._tree, ())

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._tree.closed

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata given to :func:`~simrecorder.storage.save` (readable without
        loading the data)."""
        raw = self._tree.root_field("@meta") or {}
        return {key: enc.decode_value(value) for key, value in raw.items()}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the metadata."""
        self._tree.check_writable()
        self._tree.index(())["@meta"] = encode_metadata(metadata)
        self._tree.touch(())

    @property
    def versions(self) -> dict[str, Any]:
        """The version information written with the data."""
        return dict(self._tree.root_field("@versions") or {})

    def dump(
        self,
        obj: Any,
        metadata: dict[str, Any] | None = None,
        data_filter_regex: str | None = None,
    ) -> None:
        """Replace the whole content with ``obj`` (what :func:`~simrecorder.storage.save`
        writes into a new file), with ``metadata`` and the version information.

        A dict's keys become the root keys; an object's fields do (its class is
        recorded); any other value is stored as the key ``value``.
        ``data_filter_regex`` leaves out the dict members whose ``/``-joined path it
        matches (``re.search``).
        """
        self._tree.check_writable()
        pattern = re.compile(data_filter_regex) if data_filter_regex else None
        with self._tree.lock:
            root = _Group(self._tree, ())
            for key in list(root):
                del root[key]
            node = self._tree.index(())
            for name in ("@c", "@k", "@a"):
                node.pop(name, None)
            _fill(self, filtered(obj, pattern), metadata or {})

    def load(self, key: str | None = None, version_policy: str = "warn") -> Any:
        """The content (or the member ``key``) as plain Python objects, after checking
        the saved versions against this environment with ``version_policy``
        (``'ignore'``, ``'warn'``: a ``UserWarning``, ``'strict'``:
        :class:`~simrecorder.storage.EnvironmentMismatch`)."""
        check_versions(self.versions, version_policy, self._tree.backend.describe())
        return _Group(self._tree, ()).load(key)

    def flush(self) -> None:
        """Write every changed group index."""
        self._tree.flush()

    #: the file or directory belongs to a data store this storage shares it with
    #: (``HDF5Storage.of_store``, ``ZarrStorage.of_store``): closing only writes changes
    _shared = False

    def _share(self, shared: GenericStorage) -> None:
        """Become another handle on ``shared``, the storage of a data store of this
        process that writes the same file (its cached indexes are this storage's)."""
        self._shared = True
        self._tree = shared._tree

    def close(self) -> None:
        """Write changes and release the file or connection (idempotent); a storage
        sharing a data store's file leaves it open to the store."""
        tree = self._tree
        if self._shared:
            if not tree.closed:
                tree.flush()
            return
        if tree.closed:
            return
        try:
            with tree.lock:
                tree._flush(closing=True)
        finally:
            tree.closed = True
            tree.backend.close()

    def __enter__(self) -> StorageGroup:
        return self.root

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._tree.backend.describe()}>"

    # -- delegation to the root, so a storage can be used like its root group ------------
    def __getitem__(self, key: str) -> Any:
        return self.root[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.root[key] = value

    def __delitem__(self, key: str) -> None:
        del self.root[key]

    def __contains__(self, key: object) -> bool:
        return key in self.root

    def __iter__(self) -> Iterator[str]:
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)
