"""The HDF5 storage backend (h5py): groups, datasets, and JSON text attributes."""

from __future__ import annotations

import os
from stat import S_ISREG
from typing import Any, cast

import numpy as np

from .._writers import writer_of
from ..errors import KeyConflictError, StoreFormatError, StoreNotFoundError
from ._base import (
    INDEX_NAME,
    INLINE_LIMIT,
    PACK_NAME,
    JSONIndexBackend,
    encode,
    index_where,
    mode_flags,
    pack_chunk,
    parse,
    read_node,
)
from ._core import GenericStorage, Path

__all__ = ["HDF5Backend", "HDF5Storage"]

_INDEX_DATASET = ".simrecorder_storage"
_ATTR_LIMIT = 48 << 10  # HDF5 object headers hold at most 64 KiB of attributes
_NATIVE_KINDS = frozenset("biufcSU")


class HDF5Backend(JSONIndexBackend):
    """Physical groups are HDF5 groups (index in the attribute ``simrecorder_storage``),
    large arrays are HDF5 datasets.

    Parameters
    ----------
    file
        An open ``h5py.File``.
    owned
        Close the file in :meth:`close` (``False`` when an
        :class:`~simrecorder.HDF5DataStore` shares its file).
    read_only
        Refuse writes.
    created
        The file was just created (empty).
    path
        The file's path (default: asked of ``file``).
    """

    name = "hdf5"
    inline_limit = INLINE_LIMIT
    packs = True

    def __init__(
        self,
        file: Any,
        owned: bool = True,
        read_only: bool = False,
        created: bool = False,
        path: str | None = None,
    ) -> None:
        self.file = file
        self.owned = owned
        self.read_only = read_only
        self.path = file.filename if path is None else path
        #: called with a byte count before each write (an HDF5DataStore sharing the
        #: file reserves disk space and takes its writer lock there)
        self.before_write: Any = None
        #: groups this backend created (the root of a new file): nothing is in them but
        #: what it wrote since (``_written``), so it need not ask HDF5 what is there
        self._new: set[Path] = {()} if created else set()
        self._written: set[Path] = set()

    def _reserve(self, nbytes: int) -> None:
        if self.before_write is not None:
            self.before_write(nbytes + (64 << 10))

    def describe(self) -> str:
        return f"HDF5 storage {self.path!r}"

    def _group(self, path: Path) -> Any:
        return self.file["/" + "/".join(path)] if path else self.file

    def load_document(self, path: Path) -> dict[str, Any] | None:
        group = self._group(path)
        raw = _read_index_attr(group.id)
        if raw is _OTHER:  # not the scalar text attribute saves write: let h5py convert
            raw = group.attrs.get(INDEX_NAME)
        if raw is None:
            return None
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        if raw == "@dataset":
            raw = group[_INDEX_DATASET][()].tobytes()
        return cast(dict[str, Any], parse(raw, index_where(self, path)))

    writes_text = True

    def save_document(self, path: Path, document: dict[str, Any]) -> None:
        self.save_text(path, encode(document))

    def save_text(self, path: Path, text: str) -> None:
        group = self._group(path)
        self._reserve(len(text))
        if len(text) <= _ATTR_LIMIT:
            if self._known_absent((*path, INDEX_NAME)):  # a new group's first index
                _create_text_attr(group.id, INDEX_NAME, text)
                self._written.add((*path, INDEX_NAME))
                return
            group.attrs[INDEX_NAME] = text
            if not self._known_absent((*path, _INDEX_DATASET)) and _INDEX_DATASET in group:
                del group[_INDEX_DATASET]
            return
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        ds = group.get(_INDEX_DATASET)
        if ds is None:
            ds = group.create_dataset(_INDEX_DATASET, data=data, maxshape=(None,), chunks=True)
            self._written.add((*path, _INDEX_DATASET))
            ds.attrs["simrecorder_storage_array"] = 1
        else:  # rewritten in place: the file does not grow with each update
            ds.resize(data.shape)
            ds[...] = data
        group.attrs[INDEX_NAME] = "@dataset"
        self._written.add((*path, INDEX_NAME))  # there now: a later save must not create it

    def pack_length(self, path: Path) -> int:
        group = self._group(path)
        if PACK_NAME not in group:
            return 0
        return int(read_node(self, (*path, PACK_NAME), lambda: _open_pack(group).shape[0]))

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        return read_node(
            self,
            (*path, PACK_NAME),
            lambda: _read_range(_open_pack(self._group(path)), start, stop),
        )

    def read_whole_pack(self, path: Path) -> bytes | bytearray:
        return cast(
            bytearray,
            read_node(self, (*path, PACK_NAME), lambda: _read_whole(self._group(path))),
        )

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        self._reserve(len(data))
        group = self._group(path)
        array = np.frombuffer(data, dtype=np.uint8)
        ds = None
        if not self._known_absent((*path, PACK_NAME)) and PACK_NAME in group:
            ds = group[PACK_NAME]
        if ds is None:
            _create_pack(group, array)
            self._written.add((*path, PACK_NAME))
            return
        ds.resize((start + len(data),))
        if len(data):
            ds[start:] = array

    def make_group(self, path: Path) -> None:
        self._reserve(0)
        parent = self._group(path[:-1])
        if not self._known_absent(path) and path[-1] in parent:
            raise KeyConflictError(
                f"{self.describe()}: /{'/'.join(path)} exists in the file outside the storage"
            )
        parent.create_group(path[-1])
        self._written.add(path)
        self._new.add(path)

    def _known_absent(self, path: Path) -> bool:
        """Whether ``path`` is surely not in the file (its group is new, and this
        backend did not write it)."""
        return path[:-1] in self._new and path not in self._written

    def delete_node(self, path: Path) -> None:
        parent = self._group(path[:-1])
        if path[-1] in parent:
            del parent[path[-1]]
        n = len(path)
        for known in (self._new, self._written):
            known.difference_update([p for p in known if p[:n] == path])

    def external(self, array: np.ndarray) -> bool:
        return (
            array.nbytes >= INLINE_LIMIT
            and array.dtype.kind in _NATIVE_KINDS
            and array.dtype.itemsize > 0
        )

    def write_array(self, path: Path, array: np.ndarray) -> None:
        data = _native(array)
        self._reserve(data.nbytes)
        parent = self._group(path[:-1])
        old = None if self._known_absent(path) else parent.get(path[-1])
        if old is not None and old.shape == data.shape and old.dtype == data.dtype:
            old[...] = data  # same size: overwrite in place
            return
        if old is not None:
            if "simrecorder_storage_array" not in old.attrs:
                raise KeyConflictError(
                    f"{self.describe()}: /{'/'.join(path)} exists in the file outside the storage"
                )
            del parent[path[-1]]
        _create_dataset(parent, path[-1], data)
        self._written.add(path)

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        if dtype.kind != "U":
            direct = read_node(self, path, lambda: self._read_direct(path, dtype, shape))
            if direct is not None:
                return direct
        data = read_node(self, path, lambda: self._group(path)[()])
        if dtype.kind == "U":
            return np.ascontiguousarray(data).view(dtype).reshape(shape)
        return np.asarray(data, dtype=dtype).reshape(shape)

    def _read_direct(
        self, path: Path, dtype: np.dtype, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        """The dataset read into a new array by h5py's low-level API (``None`` when its
        shape is not the expected one: the high-level read then converts)."""
        import h5py

        dataset = h5py.h5d.open(self._group(path[:-1]).id, path[-1].encode("utf-8"))
        if dataset.shape != shape:
            return None
        out = np.empty(shape, dtype=dtype)
        if out.size:
            dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out

    def flush(self) -> None:
        if not self.read_only:
            self.file.flush()

    def close(self) -> None:
        if self.owned:
            self.file.close()  # writes what HDF5 holds
        elif not self.read_only:
            self.file.flush()  # the file stays open: its store closes it


_MARK = np.array(1, dtype="<i8")  # the value of each array's simrecorder_storage_array
_h5: dict[str, Any] = {}  # property lists and types made once (h5py imported lazily)


def _init_h5() -> None:
    """Make the property lists and types the low-level writes share."""
    import h5py

    lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
    lcpl.set_char_encoding(h5py.h5t.CSET_UTF8)  # as h5py names links
    scalar = h5py.h5s.create(h5py.h5s.SCALAR)
    _h5.update(lcpl=lcpl, mark_type=h5py.h5t.py_create(_MARK.dtype), scalar=scalar)


def _create_dataset(parent: Any, name: str, data: np.ndarray) -> None:
    """``parent.create_dataset(name, data=data)`` plus its ``simrecorder_storage_array``
    attribute (which series listings skip), through h5py's low-level API: the same
    contiguous dataset and attribute, without the high-level bookkeeping (a third of
    the time of a save of ten 800 kB arrays)."""
    import h5py

    if "lcpl" not in _h5:
        _init_h5()
    space = h5py.h5s.create_simple(data.shape) if data.ndim else _h5["scalar"]
    file_type = _h5.get(data.dtype.str)
    if file_type is None:
        file_type = _h5[data.dtype.str] = h5py.h5t.py_create(data.dtype, logical=True)
    dataset = h5py.h5d.create(parent.id, name.encode("utf-8"), file_type, space, lcpl=_h5["lcpl"])
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    mark = h5py.h5a.create(dataset, b"simrecorder_storage_array", _h5["mark_type"], _h5["scalar"])
    mark.write(_MARK)


def _create_text_attr(gid: Any, name: str, text: str) -> None:
    """``attrs[name] = text`` (a scalar variable-length UTF-8 string, as h5py writes a
    ``str``) for an attribute not there yet, through h5py's low-level API."""
    import h5py

    if "lcpl" not in _h5:
        _init_h5()
    string = _h5.get("str")
    if string is None:
        string = _h5["str"] = h5py.string_dtype("utf-8")
        _h5["str_type"] = h5py.h5t.py_create(string, logical=True)
    attr = h5py.h5a.create(gid, name.encode("utf-8"), _h5["str_type"], _h5["scalar"])
    attr.write(np.array(text, dtype=string))


def _create_pack(group: Any, data: np.ndarray) -> None:
    """``group.create_dataset(PACK_NAME, data=data, maxshape=(None,),
    chunks=(pack_chunk(len(data)),))`` plus its ``simrecorder_storage_array`` attribute,
    through h5py's low-level API (as :func:`_create_dataset`)."""
    import h5py

    if "lcpl" not in _h5:
        _init_h5()
    if "uint8" not in _h5:
        _h5["uint8"] = h5py.h5t.py_create(np.dtype(np.uint8), logical=True)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((pack_chunk(len(data)),))
    space = h5py.h5s.create_simple((len(data),), (h5py.h5s.UNLIMITED,))
    dataset = h5py.h5d.create(
        group.id, PACK_NAME.encode("utf-8"), _h5["uint8"], space, dcpl=dcpl, lcpl=_h5["lcpl"]
    )
    if len(data):
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    mark = h5py.h5a.create(dataset, b"simrecorder_storage_array", _h5["mark_type"], _h5["scalar"])
    mark.write(_MARK)


def _open_pack(group: Any) -> Any:
    """The low-level dataset of a group's pack (h5py's high-level objects cost more
    than the read of a pack of a few hundred arrays)."""
    import h5py

    return h5py.h5d.open(group.id, PACK_NAME.encode("utf-8"))


def _read_range(dataset: Any, start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` (clipped to its length) of a 1-d ``uint8`` dataset."""
    import h5py

    stop = min(stop, int(dataset.shape[0]))
    if stop <= start:
        return b""
    out = np.empty(stop - start, dtype=np.uint8)
    selection = dataset.get_space()
    selection.select_hyperslab((start,), (stop - start,))
    dataset.read(h5py.h5s.create_simple((stop - start,)), selection, out)
    return out.tobytes()


def _read_whole(group: Any) -> bytearray:
    """All the bytes of a group's pack (empty when it has none), one dataset open."""
    import h5py

    try:
        dataset = h5py.h5d.open(group.id, PACK_NAME.encode("utf-8"))
    except KeyError:  # no pack (one name lookup, not two)
        return bytearray()
    out = bytearray(int(dataset.shape[0]))
    if out:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, np.frombuffer(out, dtype=np.uint8))
    return out


_OTHER = object()  # an index attribute h5py's high-level API must convert


def _read_index_attr(gid: Any) -> Any:
    """The text (``bytes``) of the index attribute of the group ``gid`` through h5py's
    low-level API (``None`` when it has none; :data:`_OTHER` when it is not a scalar
    variable-length string, as a save writes it)."""
    import h5py

    try:
        attr = h5py.h5a.open(gid, INDEX_NAME.encode("utf-8"))
    except KeyError:  # none (one lookup, not two)
        return None
    dtype = attr.dtype
    if attr.shape != () or dtype.kind != "O" or h5py.check_string_dtype(dtype) is None:
        return _OTHER
    out = np.empty((), dtype=dtype)
    attr.read(out)
    raw = out[()]
    return raw if isinstance(raw, (bytes, str)) else _OTHER


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: str) -> bool:
    """Whether ``path`` is an HDF5 file: its signature at byte 0 (the common case, read
    directly), else ``h5py.is_hdf5`` (which also finds it after a user block)."""
    import h5py

    try:
        with open(path, "rb") as stream:
            if stream.read(len(_SIGNATURE)) == _SIGNATURE:
                return True
    except OSError:
        return False
    return bool(h5py.is_hdf5(path))


def _shared_storage(file: Any, read_only: bool, before_write: Any) -> GenericStorage:
    """A storage over the open ``file`` of an HDF5DataStore (see ``HDF5Storage.of_store``)."""
    backend = HDF5Backend(file, owned=False, read_only=read_only)
    backend.before_write = before_write
    return GenericStorage(backend)


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` as data h5py stores natively (str arrays as their UCS-4 code points)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "U":
        return array.view(np.dtype(array.dtype.byteorder + "u4")).reshape(
            (*array.shape, array.dtype.itemsize // 4)
        )
    return array


class HDF5Storage(GenericStorage):
    """Storage in an HDF5 file (plain h5py reads it: groups, datasets, JSON attributes).

    Parameters
    ----------
    path
        The file (``.h5``/``.hdf5``).
    mode
        ``'r'`` read-only, ``'r+'`` existing file, ``'a'`` (default) create or update,
        ``'w'`` truncate.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with HDF5Storage(path) as root:
    ...     root["a/b"] = 1
    >>> with HDF5Storage(path, "r") as root:
    ...     root["a"]["b"]
    1
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        # h5py only when an HDF5 file is opened
        from .._h5 import create_h5_quickly, open_h5, open_h5_quickly

        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        writer = writer_of(self.path)
        if writer is not None and not truncate:
            # a recorder of this process writes the file: HDF5 allows one handle
            self._share(HDF5Storage.of_store(writer))
            return
        try:  # one stat: whether it exists (as os.path.exists says) and is empty
            status: os.stat_result | None = os.stat(self.path)
        except (OSError, ValueError):
            status = None
        exists = status is not None
        if not exists and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no HDF5 storage at {self.path!r}")
        if status is not None and not status.st_size and not truncate and S_ISREG(status.st_mode):
            # HDF5 would open an empty file for writing as a new one
            raise StoreFormatError(f"{self.path!r} exists but is not an HDF5 file (it is empty)")
        created = truncate or not exists
        if created:  # free space is tracked across sessions: updates reuse it
            file = create_h5_quickly(self.path) or open_h5(
                self.path, "w", fs_strategy="fsm", fs_persist=True
            )
        else:
            file = open_h5_quickly(self.path, read_only)
            if file is None:  # say why: not HDF5, locked, a stale write flag, ...
                if not _is_hdf5(self.path):
                    raise StoreFormatError(f"{self.path!r} exists but is not an HDF5 file")
                file = open_h5(self.path, "r" if read_only else "r+")
        backend = HDF5Backend(file, True, read_only, created, self.path)
        super().__init__(backend, created=created)

    @staticmethod
    def of_store(store: Any) -> GenericStorage:
        """The storage sharing the open file of ``store``, an
        :class:`~simrecorder.HDF5DataStore` (one per open store: every view of the file
        shares its cached indexes). It is written at each ``store.flush()`` and at
        ``store.close()``; ``rec.storage`` is its root.

        Parameters
        ----------
        store
            An open :class:`~simrecorder.HDF5DataStore` (anything with its ``shared``).
        """
        return cast(GenericStorage, store.shared(_shared_storage))
