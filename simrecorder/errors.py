"""Exception hierarchy of simrecorder.

Every exception raised on purpose by simrecorder derives from :class:`SimRecorderError`
and also from the builtin exception a caller would naturally catch (``TypeError`` for
a schema mismatch, ``KeyError`` for a missing key, ...), the way zarr's
``NodeNotFoundError`` also is a ``FileNotFoundError``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailedError",
    "ServerStartError",
    "StoreConnectionError",
    "InvalidKeyError",
    "KeyConflictError",
    "KeyNotFoundError",
    "MissingDependencyError",
    "NotBuiltYetError",
    "ReadOnlyError",
    "SchemaError",
    "SimRecorderError",
    "StoreClosedError",
    "StoreFormatError",
    "StoreLockedError",
    "StoreWriteError",
    "ValueTooLargeError",
]


class SimRecorderError(Exception):
    """Root of every error simrecorder raises on purpose."""


class SchemaError(SimRecorderError, TypeError):
    """A sample does not fit the series it is recorded into (kind, dtype or shape)."""


class KeyConflictError(SchemaError):
    """A key is already used by another kind of node (series, single value or group)."""


class InvalidKeyError(SimRecorderError, ValueError):
    """A key is not a valid ``a/b/c`` path (empty part, ``.``/``..``, NUL, too long, ...)."""


class KeyNotFoundError(SimRecorderError, KeyError):
    """A key holds no data in the store that was asked."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class StoreClosedError(SimRecorderError, ValueError):
    """A recorder or data store is used after ``close()``."""


class ReadOnlyError(SimRecorderError, PermissionError):
    """A write was attempted on a store opened read-only."""


class StoreLockedError(SimRecorderError, OSError):
    """Another writer holds the store."""


class StoreFormatError(SimRecorderError, OSError):
    """A file exists but is not a store simrecorder can open (wrong format or version)."""


class StoreWriteError(SimRecorderError, OSError):
    """A data store failed while a block was handed to it.

    The block is kept by the recorder and written again by the next ``flush()``.
    """


class ValueTooLargeError(SimRecorderError, ValueError):
    """A value exceeds what the backend can store in one piece."""


class StoreConnectionError(SimRecorderError, ConnectionError):
    """A store's server cannot be reached (the message names host:port)."""


class AuthenticationFailedError(SimRecorderError, PermissionError):
    """A server refused the credentials (missing or wrong password / ACL user)."""


class ServerStartError(SimRecorderError, OSError):
    """A server process could not be started (not installed, port taken, crashed)."""


class MissingDependencyError(SimRecorderError, ImportError):
    """An optional dependency of a backend is not installed."""


class NotBuiltYetError(SimRecorderError, NotImplementedError):
    """A backend that the registry knows of is not part of this release yet."""
