"""simrecorder: record simulation data fast, into the backend that suits the job.

>>> from simrecorder import Recorder, InMemoryDataStore
>>> rec = Recorder(InMemoryDataStore())
>>> rec.record("a/b", 1.0)
>>> rec.get_all("a/b")
array([1.])
>>> rec.close()
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .datastores import DataStore, InMemoryDataStore, SeriesView, open_datastore
from .errors import (
    AuthenticationFailedError,
    BlocksQuarantinedError,
    ForkedRecorderError,
    InvalidKeyError,
    KeyConflictError,
    KeyNotFoundError,
    MissingDependencyError,
    NotBuiltYetError,
    ReadOnlyError,
    SchemaError,
    ServerStartError,
    SimRecorderError,
    StoreClosedError,
    StoreConnectionError,
    StoreFormatError,
    StoreFullError,
    StoreLockedError,
    StoreWriteError,
    ValueTooLargeError,
)
from .options import CompressionType, DatastoreType, Serialization
from .plain import decode, decode_series
from .recorder import Recorder

__all__ = [
    "AuthenticationFailedError",
    "BlocksQuarantinedError",
    "ForkedRecorderError",
    "StoreFullError",
    "RedisClusterDataStore",
    "RedisClusterServer",
    "ServerStartError",
    "StoreConnectionError",
    "CompressionType",
    "DataStore",
    "DatastoreType",
    "HDF5DataStore",
    "HDFView",
    "InMemoryDataStore",
    "InvalidKeyError",
    "KeyConflictError",
    "KeyNotFoundError",
    "MissingDependencyError",
    "NotBuiltYetError",
    "ReadOnlyError",
    "Recorder",
    "RedisDataStore",
    "RedisServer",
    "SchemaError",
    "Serialization",
    "SeriesView",
    "SimRecorderError",
    "StoreClosedError",
    "StoreFormatError",
    "StoreLockedError",
    "StoreWriteError",
    "ValueTooLargeError",
    "ZarrDataStore",
    "__version__",
    "decode",
    "delete_redis_run",
    "list_redis_runs",
    "decode_series",
    "get_io",
    "open_datastore",
]


def __getattr__(name: str) -> Any:
    # backends import their library on first use, so `import simrecorder` stays light
    if name in ("list_redis_runs", "delete_redis_run"):
        from .datastores import _redis

        return getattr(_redis, name)
    if name == "get_io":
        from .adapters.mummi import get_io

        return get_io
    from . import datastores

    if name in datastores.__all__ or name in datastores._LAZY:
        return getattr(datastores, name)
    raise AttributeError(f"module 'simrecorder' has no attribute {name!r}")
