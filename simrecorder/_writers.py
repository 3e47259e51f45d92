"""The data stores of this process that write a file or directory (HDF5, zarr): a
storage opened on the same path goes through the store's, so one process has one
writer of it (HDF5 allows only one handle anyway)."""

from __future__ import annotations

import os
import weakref
from typing import Any

__all__ = ["WRITERS", "register_writer", "unregister_writer", "writer_of"]

#: the writer stores open in this process, by absolute path
WRITERS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def register_writer(path: str | os.PathLike[str], store: Any) -> None:
    """Note that ``store`` writes ``path``."""
    WRITERS[_key(path)] = store


def unregister_writer(path: str | os.PathLike[str], store: Any) -> None:
    """Forget ``store`` as the writer of ``path`` (if it is)."""
    key = _key(path)
    if WRITERS.get(key) is store:
        del WRITERS[key]


def writer_of(path: str | os.PathLike[str]) -> Any | None:
    """The open store of this process that writes ``path``, or ``None``."""
    store = WRITERS.get(_key(path))
    return store if store is not None and not store.closed else None
