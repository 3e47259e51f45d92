"""URL → data store class, imported lazily (as fsspec's registry).

``import simrecorder`` imports no backend library; a store's module is imported when
a URL first needs it, and a missing optional dependency becomes an ``ImportError``
naming the extra to install.
"""

from __future__ import annotations

import os
from typing import Any

from .._registry import Entry, import_backend
from ..errors import UnknownDataStoreError
from .base import DataStore

__all__ = ["import_backend", "known_protocols", "open_datastore", "store_class"]


_REGISTRY: dict[str, Entry] = {
    "memory": Entry("simrecorder.datastores._memory:InMemoryDataStore", None),
    "hdf5": Entry("simrecorder.datastores._hdf5:HDF5DataStore", None),
    "zarr": Entry("simrecorder.datastores._zarr:ZarrDataStore", "zarr"),
    "zarr+zip": Entry("simrecorder.datastores._zarr:ZarrDataStore", "zarr"),
    # the lmdb package is imported (MissingDependencyError naming the extra) when the
    # store opens, so the class imports without it
    "zarr+lmdb": Entry("simrecorder.datastores._zarr:ZarrDataStore", "zarr"),
    # a zarr v3 store in S3 (s3://bucket/run.zarr?endpoint_url=...); needs s3fs too
    "s3": Entry("simrecorder.datastores._zarr:ZarrDataStore", "zarr"),
    "zarr+s3": Entry("simrecorder.datastores._zarr:ZarrDataStore", "zarr"),
    "redis": Entry("simrecorder.datastores._redis:RedisDataStore", "redis"),
    "rediss": Entry("simrecorder.datastores._redis:RedisDataStore", "redis"),
    "redis+cluster": Entry("simrecorder.datastores._redis:RedisClusterDataStore", "redis"),
    "rediss+cluster": Entry("simrecorder.datastores._redis:RedisClusterDataStore", "redis"),
    "fs": Entry("simrecorder.adapters._mummi_store:FileSystemDataStore", None),
    "mummi+simple": Entry("simrecorder.adapters._mummi_store:SimpleDataStore", None),
    "mummi+taridx": Entry("simrecorder.adapters._mummi_store:TaridxDataStore", None),
    "mummi+redis": Entry("simrecorder.adapters._mummi_store:RedisNamespaceDataStore", "redis"),
}
#: ``blocks+<location URL>``: a block store over any location ``open_location`` opens
#: (``blocks+file:///dir``, ``blocks+redis://host/0/run1``, ``blocks+s3://bucket/run1``)
_BLOCKS = Entry("simrecorder.datastores._blocks:BlockDataStore", None)
_ALIASES = {"h5": "hdf5", "file": "hdf5"}
_SUFFIXES = {
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".he5": "hdf5",
    ".hdf": "hdf5",
    ".zarr": "zarr",
    ".zip": "zarr",
    ".mdb": "zarr+lmdb",
}


def known_protocols() -> list[str]:
    """All URL schemes the registry knows (``blocks+*`` takes any location scheme)."""
    return sorted([*_REGISTRY, "blocks+*"])


def store_class(protocol: str) -> type[DataStore]:
    """Import and return the store class registered for ``protocol``.

    Raises
    ------
    UnknownDataStoreError
        Unknown protocol (a ``ValueError``).
    MissingDependencyError
        The backend's optional dependency is missing (an ``ImportError``).
    """
    protocol = _ALIASES.get(protocol, protocol)
    entry = _BLOCKS if protocol.startswith("blocks+") else _REGISTRY.get(protocol)
    if entry is None:
        raise UnknownDataStoreError(
            f"unknown data store protocol {protocol!r}; known: {known_protocols()}"
        )
    found: type[DataStore] = entry.load(what=f"the {protocol!r} data store")
    return found


def _protocol_of(url: str) -> tuple[str, str]:
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        return _ALIASES.get(scheme, scheme), url
    suffix = os.path.splitext(url.rstrip("/\\"))[1].lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix], url
    raise UnknownDataStoreError(
        f"cannot tell the data store of {url!r}: use a URL scheme ({known_protocols()}) "
        f"or a path ending in one of {sorted(_SUFFIXES)}"
    )


def open_datastore(url: str | os.PathLike[str], **kwargs: Any) -> DataStore:
    """Open the data store a URL or path names.

    Parameters
    ----------
    url
        ``memory://``, ``run.h5`` / ``hdf5://path``, ``run.zarr`` / ``zarr://path``,
        ``run.zip`` / ``zarr+zip://path``, ``run.mdb`` / ``zarr+lmdb://path`` (LMDB),
        ``s3://bucket/run.zarr?endpoint_url=...`` / ``zarr+s3://...`` (zarr in S3),
        ``redis://host:port/db?prefix=run1``, ``redis+cluster://host:port``,
        ``fs://dir``, ``mummi+simple://dir``, ``mummi+taridx://file.tar``,
        ``mummi+redis://namespace``, ``blocks+<location URL>`` (a block store on any
        location: ``blocks+file:///dir``, ``blocks+redis://host:6379/0/run1``,
        ``blocks+s3://bucket/run1?endpoint_url=...``). ``str(store)`` of any store is
        such a URL.
    **kwargs
        Passed to the store's constructor (e.g. ``mode='r'``).

    Examples
    --------
    >>> open_datastore("memory://")
    InMemoryDataStore() <...>
    """
    url = os.fspath(url)
    protocol, url = _protocol_of(url)
    return store_class(protocol).from_url(url, **kwargs)
