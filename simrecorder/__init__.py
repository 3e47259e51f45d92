"""simrecorder: record simulation data fast, into the backend that suits the job.

>>> from simrecorder import Recorder, InMemoryDataStore
>>> rec = Recorder(InMemoryDataStore())
>>> rec.record("a/b", 1.0)
>>> rec.get_all("a/b")
array([1.])
>>> rec.close()
"""

from __future__ import annotations

import importlib
from typing import Any

from . import datastores
from ._version import __version__
from .datastores import DataStore, InMemoryDataStore, SeriesView, open_datastore
from .errors import (
    ArgumentTypeError,
    AuthenticationFailedError,
    BlocksQuarantinedError,
    DataLostError,
    ForkedRecorderError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidModeError,
    KeyConflictError,
    KeyNotFoundError,
    MissingDependencyError,
    ReadOnlyError,
    SchemaError,
    SeriesAttrsNotSupportedError,
    SeriesIndexError,
    ServerStartError,
    SimRecorderError,
    StoreClosedError,
    StoreConnectionError,
    StoreExistsError,
    StoreFormatError,
    StoreFullError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownDataStoreError,
    ValueChangedError,
    ValueOutOfRangeError,
    ValueTooLargeError,
)
from .options import CompressionType, DatastoreType, Serialization
from .plain import decode, decode_series
from .recorder import Recorder

# names resolved on first use, so `import simrecorder` does not import h5py's
# neighbours (zarr, redis-py, lmdb) that a run may not need: name -> (module, attribute)
_LAZY_NAMES = {
    "list_redis_runs": ("simrecorder.datastores._redis", "list_redis_runs"),
    "delete_redis_run": ("simrecorder.datastores._redis", "delete_redis_run"),
    "get_io": ("simrecorder.adapters.mummi", "get_io"),
    "open_location": ("simrecorder.locations", "open_location"),
    "to_pandas": ("simrecorder.xarray_backend", "to_pandas"),
    "to_xarray": ("simrecorder.xarray_backend", "to_xarray"),
}
_LAZY_STORES = (
    "HDF5DataStore",
    "HDFView",
    "LMDBStore",
    "RedisClusterDataStore",
    "RedisClusterServer",
    "RedisDataStore",
    "RedisServer",
    "ZarrDataStore",
)

__all__ = [
    "ArgumentTypeError",
    "AuthenticationFailedError",
    "BlocksQuarantinedError",
    "CompressionType",
    "DataLostError",
    "DataStore",
    "DatastoreType",
    "ForkedRecorderError",
    "HDF5DataStore",
    "HDFView",
    "InMemoryDataStore",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidModeError",
    "KeyConflictError",
    "KeyNotFoundError",
    "LMDBStore",
    "MissingDependencyError",
    "ReadOnlyError",
    "Recorder",
    "RedisClusterDataStore",
    "RedisClusterServer",
    "RedisDataStore",
    "RedisServer",
    "SchemaError",
    "Serialization",
    "SeriesAttrsNotSupportedError",
    "SeriesIndexError",
    "SeriesView",
    "ServerStartError",
    "SimRecorderError",
    "StoreClosedError",
    "StoreConnectionError",
    "StoreExistsError",
    "StoreFormatError",
    "StoreFullError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnknownDataStoreError",
    "ValueChangedError",
    "ValueOutOfRangeError",
    "ValueTooLargeError",
    "ZarrDataStore",
    "__version__",
    "decode",
    "decode_series",
    "delete_redis_run",
    "get_io",
    "list_redis_runs",
    "open_datastore",
    "open_location",
    "to_pandas",
    "to_xarray",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        module, attribute = _LAZY_NAMES[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _LAZY_STORES:
        return getattr(datastores, name)
    raise AttributeError(f"module 'simrecorder' has no attribute {name!r}")
