"""``open_storage``, ``save``, ``load``, ``info``, ``browse``, ``compact``: the free functions."""

from __future__ import annotations

import os
import pickle
import re
import secrets
import shutil
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .._registry import Entry
from .._writers import writer_of
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SimRecorderError,
    StoreFormatError,
    StoreLockedError,
    StoreNotFoundError,
    UnknownDataStoreError,
)
from . import _core
from . import _encoding as enc
from ._core import EA, PG, GenericStorage, _Group, _kind, filtered
from ._errors import DamagedValueError, UnstorableValueError
from ._location import SIDECAR_SUFFIX, drop_kept_sidecars, keep_old_sidecar
from ._onepass import dump_plain
from ._versions import FORMAT_VERSION, POLICIES, check_versions, current_versions

__all__ = [
    "FORMAT_VERSION",
    "browse",
    "compact",
    "current_versions",
    "info",
    "load",
    "open_storage",
    "save",
]

#: Version of the storage layout (root key ``@format``).
_SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".json": "json", ".zarr": "zarr",
             ".pickle": "pickle", ".pkl": "pickle"}  # fmt: skip
_DEFAULT_SUFFIX = {"hdf5": ".h5", "json": ".json", "zarr": ".zarr", "pickle": ".pickle"}
#: backend name -> where it lives (imported when first used; the extra names what
#: installs its dependencies)
_REGISTRY = {
    "hdf5": Entry("simrecorder.storage._hdf5:HDF5Storage"),
    "zarr": Entry("simrecorder.storage._zarr:ZarrStorage", "zarr"),
    "json": Entry("simrecorder.storage._location:JSONStorage"),
    "memory": Entry("simrecorder.storage._memory:MemoryStorage"),
    "redis": Entry("simrecorder.storage._location:RedisStorage", "redis"),
}
_SCHEMES = {"hdf5": "hdf5", "h5": "hdf5", "zarr": "zarr", "json": "json", "memory": "memory",
            "redis": "redis", "rediss": "redis", "unix": "redis"}  # fmt: skip
_PICKLE_MAGIC = b"SIMRECORDER-STORAGE-PICKLE\n"
#: name prefix of the files a save writes before renaming them into place
_SAVE_PREFIX = ".simrecorder-save-"


def _storage_class(name: str) -> Callable[..., GenericStorage]:
    found: Callable[..., GenericStorage] = _REGISTRY[name].load(what=f"the {name} storage")
    return found


def _backend_of(text: str) -> tuple[str, str]:
    """``(backend, path or url)`` for a URL or path, by scheme or suffix."""
    if "://" in text:
        scheme, rest = text.split("://", 1)
        name = _SCHEMES.get(scheme.lower())
        if name is None:
            raise UnknownDataStoreError(
                f"unknown storage scheme {scheme!r} in {text!r}: use one of "
                f"{sorted(_SCHEMES)} or a path ending in {sorted(_SUFFIXES)}"
            )
        return name, (text if name == "redis" else rest)
    suffix = os.path.splitext(text.rstrip("/"))[1].lower()
    name = _SUFFIXES.get(suffix)
    if name is None or name == "pickle":
        raise UnknownDataStoreError(
            f"cannot tell the storage backend of {text!r}: use a path ending in .h5, "
            ".hdf5, .json or .zarr, or memory:// or redis://host:port/db"
        )
    return name, text


def storage_beside(store: Any) -> GenericStorage:
    """The storage that lives beside the series of ``store`` and shares its file or
    directory (``rec.storage`` is its root): see
    :meth:`~simrecorder.datastores.DataStore.storage_kind`.

    Raises
    ------
    ArgumentTypeError
        The store cannot hold one.
    """
    kind = store.storage_kind()
    if kind is None:
        raise ArgumentTypeError(f"{store!r} cannot hold a storage beside its series")
    opener: Any = _storage_class(kind)
    return cast(GenericStorage, opener.of_store(store))


def open_storage(
    url_or_path: str | os.PathLike[str], mode: str = "a", **options: Any
) -> GenericStorage:
    """Open a storage by path suffix (``.h5``/``.hdf5``, ``.json``, ``.zarr``) or URL
    (``memory://``, ``redis://host:port/db[/prefix]``, ``hdf5://path``...).

    Parameters
    ----------
    url_or_path
        Where the storage is.
    mode
        ``'r'``, ``'r+'``, ``'a'`` (default: create or update) or ``'w'`` (truncate).
    **options
        Passed to the backend (e.g. ``prefix=`` for Redis).

    Raises
    ------
    UnknownDataStoreError
        An unknown suffix or scheme (a ``ValueError``).

    Examples
    --------
    >>> with open_storage("memory://") as root:
    ...     root["a/b"] = (1, 2.5)
    ...     root["a"]["b"]
    (1, 2.5)
    """
    name, where = _backend_of(os.fspath(url_or_path))
    cls = _storage_class(name)
    if name == "memory":
        return cls(**options)
    return cls(where, mode, **options)


# -- save ---------------------------------------------------------------------------------


def _backends_for(filename: str, backend: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if backend is None:
        suffix = os.path.splitext(filename.rstrip("/"))[1].lower()
        if suffix not in _SUFFIXES:
            raise UnknownDataStoreError(
                f"cannot tell the backend of {filename!r} from its suffix: pass backend= "
                f"('hdf5', 'json', 'zarr', 'pickle') or use one of {sorted(_SUFFIXES)}"
            )
        return [_SUFFIXES[suffix]]
    names = [backend] if isinstance(backend, str) else list(backend)
    for name in names:
        if name not in _DEFAULT_SUFFIX:
            raise InvalidArgumentError(
                f"unknown storage backend {name!r}: use 'hdf5', 'json', 'zarr' or 'pickle'"
            )
    if not names:
        raise InvalidArgumentError("backend= lists no backend")
    return names


def _target(filename: str, name: str) -> str:
    stem, suffix = os.path.splitext(filename.rstrip("/"))
    if _SUFFIXES.get(suffix.lower()) == name:
        return filename.rstrip("/")
    if suffix.lower() in _SUFFIXES:
        return stem + _DEFAULT_SUFFIX[name]
    return filename.rstrip("/") + _DEFAULT_SUFFIX[name]


def save(
    obj: Any,
    filename: str | os.PathLike[str],
    backend: str | list[str] | tuple[str, ...] | None = None,
    metadata: dict[str, Any] | None = None,
    data_filter_regex: str | None = None,
) -> str:
    """Save ``obj`` to a file; return the path written.

    Parameters
    ----------
    obj
        A dict (its keys become the root keys), an object (dataclass, Storable,
        ``__getstate__``) or any storable value.
    filename
        The file; without the backend's suffix, the suffix is added.
    backend
        ``None`` (by suffix), ``'hdf5'``, ``'json'``, ``'zarr'``, ``'pickle'``, or a list
        tried in order (the first that can store ``obj`` wins; ``'pickle'`` is used only
        when named).
    metadata
        Plain data stored beside ``obj``, readable without loading it (:func:`info`).
    data_filter_regex
        Dict members whose ``/``-joined path matches (``re.search``) are left out.

    Raises
    ------
    UnstorableValueError
        No backend can store a value (a ``TypeError`` naming the key and the backends).

    Notes
    -----
    The file is written beside the target under a temp name and renamed over it:
    a failed save leaves no file behind, and an existing file as it was.
    """
    filename = os.fspath(filename)
    names = _backends_for(filename, backend)
    pattern = re.compile(data_filter_regex) if data_filter_regex else None
    obj = filtered(obj, pattern)
    errors: list[str] = []
    for name in names:
        path = os.path.abspath(_target(filename, name))
        try:
            _save_atomically(obj, path, name, metadata or {})
        except UnstorableValueError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return path
    raise UnstorableValueError(
        f"cannot save to {filename!r} with backends {names}: " + "; ".join(errors)
    )


def _temp_beside(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{_SAVE_PREFIX}{secrets.token_hex(6)}-{name}")


def _refuse_open_writer(path: str, action: str) -> None:
    """A file a recorder of this process writes must not be replaced under it."""
    writer = writer_of(path)
    if writer is not None:
        raise StoreLockedError(
            f"cannot {action} {path!r}: {writer!r} of this process is writing it "
            "(use the recorder's rec.storage, or close it first)"
        )


def _save_atomically(obj: Any, path: str, name: str, metadata: dict[str, Any]) -> None:
    _refuse_open_writer(path, "save to")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = _temp_beside(path)
    try:
        if name == "pickle":
            _save_pickle(obj, temp, metadata)
        else:
            storage = _storage_class(name)(temp, "w")
            try:
                if not dump_plain(storage, obj, metadata):
                    storage.dump(obj, metadata)
            finally:
                storage.close()
        _replace(temp, path, sidecar=name == "json")
    except BaseException:
        _remove(temp)
        _remove(temp + SIDECAR_SUFFIX)
        raise


def _save_pickle(obj: Any, path: str, metadata: dict[str, Any]) -> None:
    header = {"format": FORMAT_VERSION, "versions": current_versions(), "metadata": metadata}
    with open(path, "wb") as out:
        out.write(_PICKLE_MAGIC)
        try:
            pickle.dump(header, out, protocol=5)
            pickle.dump(obj, out, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UnstorableValueError(f"pickle cannot store the object: {exc}") from None


def _replace(temp: str, path: str, sidecar: bool = False) -> None:
    """Rename ``temp`` over ``path`` (with a JSON document's sidecar: the sidecar
    first, the old one kept until the new document is in; the document names its
    sidecar's token, so a crash between the two renames leaves the old document,
    which reads the old sidecar's copy)."""
    if not os.path.isdir(temp):
        if os.path.isdir(path):
            shutil.rmtree(path)
        stale = False
        if sidecar and os.path.exists(temp + SIDECAR_SUFFIX):
            keep_old_sidecar(path + SIDECAR_SUFFIX)  # the old document's, until
            os.replace(temp + SIDECAR_SUFFIX, path + SIDECAR_SUFFIX)  # the new one is in
        elif sidecar:
            stale = os.path.exists(path + SIDECAR_SUFFIX)
        os.replace(temp, path)
        if stale:
            _remove(path + SIDECAR_SUFFIX)
        if sidecar:
            drop_kept_sidecars(path + SIDECAR_SUFFIX)  # this one's, and a crashed save's
        return
    old = None
    if os.path.lexists(path):
        old = _temp_beside(path)
        os.replace(path, old)
    try:
        os.replace(temp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        _remove(old)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


# -- load, info ---------------------------------------------------------------------------


def _resolve(filename: str | os.PathLike[str]) -> str:
    """The file :func:`save` wrote for ``filename`` (as given, or with a suffix)."""
    text = os.path.abspath(os.fspath(filename))
    if os.path.exists(text):
        return text
    stem, suffix = os.path.splitext(text)
    for name in _DEFAULT_SUFFIX.values():
        for candidate in (text + name, stem + name if suffix.lower() in _SUFFIXES else None):
            if candidate and os.path.exists(candidate):
                return candidate
    raise StoreNotFoundError(f"no saved storage at {os.fspath(filename)!r}")


def _kind_of_file(path: str) -> str:
    if os.path.isdir(path):
        return "zarr"
    with open(path, "rb") as stream:
        head = stream.read(len(_PICKLE_MAGIC))
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head == _PICKLE_MAGIC:
        return "pickle"
    return "json"


def _open_read(path: str, name: str | None = None) -> GenericStorage:
    """The storage at ``path`` opened read-only (``name``: its kind, when known)."""
    name = name or _kind_of_file(path)
    try:
        return _storage_class(name)(path, "r")
    except SimRecorderError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise StoreFormatError(f"cannot open {path!r} as a {name} storage: {exc}") from exc


def _read_pickle(path: str, whole: bool) -> tuple[dict[str, Any], Any]:
    try:
        with open(path, "rb") as stream:
            stream.read(len(_PICKLE_MAGIC))
            header = pickle.load(stream)
            data = pickle.load(stream) if whole else None
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise StoreFormatError(f"{path!r}: the pickle file is damaged ({exc})") from exc
    return header, data


def load(
    filename: str | os.PathLike[str], key: str | None = None, version_policy: str = "warn"
) -> Any:
    """Load what :func:`save` wrote (or one member ``key``, e.g. ``'a/b'``).

    Parameters
    ----------
    filename
        The path :func:`save` returned, or the name given to it.
    key
        Load only this member (partial load).
    version_policy
        ``'ignore'``, ``'warn'`` (a ``UserWarning`` naming each package whose version
        differs) or ``'strict'`` (:class:`EnvironmentMismatch`).

    Returns
    -------
    Any
        Plain Python objects (dicts, not groups); objects whose class cannot be imported
        come back as dicts with a ``UserWarning``.

    Raises
    ------
    StoreNotFoundError
        No such file (a ``FileNotFoundError``).
    StoreFormatError
        A damaged file (an ``OSError`` naming it).
    """
    if version_policy not in POLICIES:
        raise InvalidArgumentError(
            f"version_policy must be one of {POLICIES}, got {version_policy!r}"
        )
    path = _resolve(filename)
    kind = _kind_of_file(path)
    if kind == "pickle":
        header, data = _read_pickle(path, whole=True)
        check_versions(header.get("versions", {}), version_policy, repr(path))
        return data if key is None else _pickle_member(data, key, path)
    storage = _open_read(path, kind)
    with storage:
        check_versions(storage.versions, version_policy, repr(path))
        try:
            return storage.root.load(key)
        except DamagedValueError as exc:
            raise StoreFormatError(f"{path!r}: damaged data ({exc})") from exc
        except (SimRecorderError, KeyError, UnstorableValueError):
            raise
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreFormatError(f"{path!r}: damaged data ({type(exc).__name__}: {exc})") from exc


def _pickle_member(data: Any, key: str, path: str) -> Any:
    from ..errors import KeyNotFoundError

    for part in key.strip("/").split("/"):
        try:
            data = data[part]
        except (KeyError, TypeError, IndexError):
            raise KeyNotFoundError(f"no key {key!r} in {path!r}") from None
    return data


def _describe(entry: Any) -> dict[str, Any]:
    tag = _kind(entry)
    if tag == EA:
        dtype, shape = entry[EA]
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return {"type": "array", "shape": tuple(shape), "dtype": str(np.dtype(dtype)), "size": size}
    if tag == "@a":
        dtype, shape = entry["@a"][:2]
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return {"type": "array", "shape": tuple(shape), "dtype": str(np.dtype(dtype)), "size": size}
    if tag == enc.RAW_ARRAY:
        array = entry[tag]
        return {
            "type": "array",
            "shape": array.shape,
            "dtype": str(array.dtype),
            "size": array.nbytes,
        }
    if tag == _core.PACKED:
        dtype, shape = entry[tag][:2]
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return {"type": "array", "shape": tuple(shape), "dtype": str(np.dtype(dtype)), "size": size}
    if tag == "@s":
        return {"type": "numpy scalar", "dtype": str(np.dtype(entry["@s"][0]))}
    names = {"@f": "float", "@t": "tuple", "@d": "dict", "@b": "bytes", "@ba": "bytearray",
             "@j": "complex", "@o": "object"}  # fmt: skip
    if tag is not None:
        return {"type": names.get(tag, tag)}
    return {"type": "None" if entry is None else type(entry).__name__}


def _walk_info(group: _Group, prefix: str, tree: dict[str, Any]) -> None:
    node = group._node()
    for name, entry in node[_core.G].items():
        path = f"{prefix}/{name}" if prefix else name
        tag = _kind(entry)
        if tag in (_core.G, PG):
            child = group._get(name)
            child_node = child._node()
            item: dict[str, Any] = {"type": "group"}
            if "@c" in child_node:
                item["class"] = child_node["@c"].replace(":", ".")
            tree[path] = item
            _walk_info(child, path, tree)
        else:
            tree[path] = _describe(entry)


def info(filename: str | os.PathLike[str]) -> dict[str, Any]:
    """The tree, metadata and versions of a saved file, without reading array contents.

    Returns
    -------
    dict
        ``{'tree': {path: {'type', 'shape', 'dtype', 'size'}}, 'metadata': {...},
        'versions': {...}}`` (``'type': 'group'`` for groups).
    """
    path = _resolve(filename)
    if _kind_of_file(path) == "pickle":
        header, _ = _read_pickle(path, whole=False)
        return {"tree": {}, "metadata": header.get("metadata", {}),
                "versions": header.get("versions", {})}  # fmt: skip
    storage = _open_read(path)
    try:
        tree: dict[str, Any] = {}
        _walk_info(storage.root, "", tree)  # type: ignore[arg-type]
        return {"tree": tree, "metadata": storage.metadata, "versions": storage.versions}
    finally:
        storage.close()


def browse(filename: str | os.PathLike[str]) -> str:
    """:func:`info` as an indented text tree (what ``print`` shows)."""
    data = info(filename)
    lines = [os.fspath(filename)]
    for path, item in data["tree"].items():
        depth = path.count("/")
        detail = item["type"]
        if "shape" in item:
            detail += f" {item['dtype']}{list(item['shape'])} ({item['size']:,} bytes)"
        if "class" in item:
            detail += f" <{item['class']}>"
        lines.append(f"{'  ' * (depth + 1)}{path.rsplit('/', 1)[-1]}: {detail}")
    if data["metadata"]:
        lines.append(f"metadata: {data['metadata']}")
    return "\n".join(lines)


# -- compact ------------------------------------------------------------------------------


def _copy_hdf5(source: str, target: str) -> None:
    """Copy every object and root attribute of an HDF5 file into a new file (the
    recorder's series too, when the storage shares a run file)."""
    import h5py

    with (
        h5py.File(source, "r") as src,
        h5py.File(target, "w", fs_strategy="fsm", fs_persist=True) as dst,
    ):
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        for name in src:
            src.copy(src[name], dst, name=name)


def compact(filename: str | os.PathLike[str]) -> int:
    """Rewrite a storage file without the space freed by overwrites and deletes.

    The copy (of everything in the file: a run file keeps its series) is written
    beside the file and renamed over it. Returns the bytes
    reclaimed (JSON documents are rewritten whole at every change, their sidecar is
    repacked once half of it is unused, and zarr frees space at once, so for them this
    is a no-op returning 0).
    """
    path = _resolve(filename)
    name = _kind_of_file(path)
    if name != "hdf5":
        return 0
    _refuse_open_writer(path, "compact")
    before = os.path.getsize(path)
    temp = _temp_beside(path)
    try:
        _copy_hdf5(path, temp)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
    return before - os.path.getsize(path)
