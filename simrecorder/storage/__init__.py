"""Hierarchical, dict-like storage of parameters, states and objects (pyiron style).

``save``/``load`` whole objects, or open a storage and use it like a dict of groups::

    from simrecorder.storage import save, load, open_storage

    path = save({"params": {"dt": 0.1, "n": 100}, "state": state}, "run.h5")
    params = load(path, "params")               # partial load
    with open_storage(path) as root:            # partial update
        root["params/dt"] = 0.05

Backends: :class:`HDF5Storage` (``.h5``), :class:`ZarrStorage` (``.zarr``),
:class:`JSONStorage` (``.json``), :class:`MemoryStorage` (``memory://``) and
:class:`RedisStorage` (``redis://``); a recorder writing an HDF5 file offers its own
storage as ``rec.storage`` (one HDF5 handle for the series and the stored objects).

Layout (no pickle anywhere, except the explicit ``backend='pickle'`` of :func:`save`):

- each *physical* group (the root, and any group holding an array of 4 KiB or more)
  has one JSON *index*: its small leaves, attributes, key order and the objects'
  classes; groups without large arrays live inside their parent's index, so a thousand
  small leaves cost one write, not a thousand datasets;
- arrays of 4 KiB or more are datasets of their own (HDF5 datasets, zarr arrays;
  64 KiB or more: Redis keys); smaller ones are raw bytes in one ``.simrecorder_pack``
  dataset per physical group (HDF5, zarr) or base64 text in the index (Redis); a JSON
  storage is one document (all groups inline) plus, when it holds arrays, a sidecar
  ``x.json.bin`` of their raw bytes (its pack), which the document refers to by
  offset (``{"@p": [dtype, shape, offset]}``) and pairs with by a token (a document
  and a sidecar of different saves are refused);
- zarr arrays are written by this package itself (one uncompressed chunk per array,
  the ``zarr.json`` zarr-python writes, ``v2`` chunk keys: the chunk file is ``0``),
  so a save does not pay zarr-python's per-call event-loop round trips;
- a list of objects of one class is stored by column (class and field names once,
  floats as float64 bytes).

In plain h5py the index is the JSON text attribute ``simrecorder_storage`` of each
group (a dataset ``.simrecorder_storage`` when larger than 48 KiB); in plain zarr it is
the group attribute of that name; a JSON storage document is the index itself.

Changes are kept in memory and written at ``flush()``/``close()`` (large arrays at
once). A storage object is not thread-safe: use one per thread, or a lock.
"""

from __future__ import annotations

from ._api import (
    FORMAT_VERSION,
    browse,
    compact,
    current_versions,
    info,
    load,
    open_storage,
    save,
    storage_beside,
)
from ._core import GenericStorage, StorageGroup
from ._encoding import Storable
from ._errors import (
    ClassNotFoundWarning,
    EnvironmentMismatch,
    GroupExistsError,
    UnstorableValueError,
)
from ._hdf5 import HDF5Storage
from ._location import JSONStorage, RedisStorage
from ._memory import MemoryStorage
from ._zarr import ZarrStorage

__all__ = [
    "FORMAT_VERSION",
    "ClassNotFoundWarning",
    "EnvironmentMismatch",
    "GenericStorage",
    "GroupExistsError",
    "HDF5Storage",
    "JSONStorage",
    "MemoryStorage",
    "RedisStorage",
    "Storable",
    "StorageGroup",
    "UnstorableValueError",
    "ZarrStorage",
    "browse",
    "compact",
    "current_versions",
    "info",
    "load",
    "open_storage",
    "save",
    "storage_beside",
]
