"""Exception hierarchy of simrecorder.

Every exception raised on purpose by simrecorder derives from :class:`SimRecorderError`
and also from the builtin exception a caller would naturally catch (``TypeError`` for
a schema mismatch, ``KeyError`` for a missing key, ...), the way zarr's
``NodeNotFoundError`` also is a ``FileNotFoundError``.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "ArgumentTypeError",
    "AuthenticationFailedError",
    "BlocksQuarantinedError",
    "DataLostError",
    "ForkedRecorderError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidModeError",
    "KeyConflictError",
    "KeyNotFoundError",
    "MissingDependencyError",
    "ReadOnlyError",
    "SchemaError",
    "SeriesAttrsNotSupportedError",
    "SeriesIndexError",
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
    "is_transient",
]


class SimRecorderError(Exception):
    """Root of every error simrecorder raises on purpose."""


class SchemaError(SimRecorderError, TypeError):
    """A sample does not fit the series it is recorded into (kind, dtype or shape)."""


class ValueOutOfRangeError(SchemaError, ValueError):
    """A number is outside the range of the series' dtype (``1e300`` into float32,
    ``300`` into uint8, ``-1`` into uint32, ``2**70`` into int64).

    The out-of-range samples are not recorded (never silently wrapped or turned into
    ``inf``); every other sample is. Also a ``ValueError``, and a :class:`SchemaError`
    (so ``except SchemaError`` catches every sample that does not fit).

    Attributes
    ----------
    key
        The series.
    values
        The refused samples (the first few when there were many).
    dtype
        The series' dtype, as a string.

    Examples
    --------
    >>> import numpy as np
    >>> from simrecorder import InMemoryDataStore, Recorder
    >>> rec = Recorder(InMemoryDataStore())
    >>> rec.record("n", np.uint8(7))
    >>> rec.record("n", 300)
    Traceback (most recent call last):
    ...
    simrecorder.errors.ValueOutOfRangeError: key 'n': ... got 300, out of the range of uint8; ...
    >>> rec.get_all("n")
    array([7], dtype=uint8)
    >>> rec.close()
    """

    def __init__(
        self, message: str, key: str = "", values: tuple[object, ...] = (), dtype: str = ""
    ) -> None:
        super().__init__(message)
        self.key = key
        self.values = values
        self.dtype = dtype


class KeyConflictError(SchemaError):
    """A key is already used by another kind of node (series, single value or group)."""


class InvalidKeyError(SimRecorderError, ValueError):
    """A key is not a valid ``a/b/c`` path (empty part, ``.``/``..``, NUL, too long, ...)."""


class KeyNotFoundError(SimRecorderError, KeyError):
    """A key holds no data in the store that was asked."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class SeriesIndexError(SimRecorderError, IndexError):
    """An index outside a series read through a view (``view[n]`` for a series of
    ``n`` samples), as numpy raises ``IndexError`` for an array."""


class StoreClosedError(SimRecorderError, ValueError):
    """A recorder or data store is used after ``close()``."""


class ReadOnlyError(SimRecorderError, PermissionError):
    """A write was attempted on a store opened read-only."""


class InvalidArgumentError(SimRecorderError, ValueError):
    """An argument has a value simrecorder cannot use (a bad port, a negative size,
    an unknown option); the message names the argument and what is accepted."""


class UnknownDataStoreError(InvalidArgumentError):
    """A URL or path names no data store simrecorder knows (the message lists them)."""


class ArgumentTypeError(SimRecorderError, TypeError):
    """An argument has a type simrecorder cannot use (the message says what it takes)."""


class InvalidModeError(InvalidArgumentError):
    """An open mode outside ``None, 'r', 'r+', 'a', 'w', 'w-', 'x'``."""


class StoreNotFoundError(SimRecorderError, FileNotFoundError):
    """A store opened with ``mode='r'`` or ``'r+'`` does not exist."""


class StoreExistsError(ReadOnlyError, FileExistsError):
    """A store exists where a new one was to be written.

    Raised by ``mode='w-'`` at open, and by the first write to an existing store opened
    with the default mode (the message says how to resume or overwrite it).
    """


class StoreLockedError(SimRecorderError, OSError):
    """Another writer holds the store."""


class StoreFormatError(SimRecorderError, OSError):
    """A file exists but is not a store simrecorder can open (wrong format or version)."""


class DataLostError(StoreFormatError):
    """Data a store had acknowledged is gone (e.g. a Redis server restarted without
    persistence). ``keys`` names the series and values that lost earlier data."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class StoreWriteError(SimRecorderError, OSError):
    """A data store failed while a block was handed to it.

    The block is kept by the recorder and written again by the next ``flush()``.
    """


class StoreFullError(StoreWriteError):
    """A store has no room left (disk full, quota, Redis ``maxmemory``).

    Transient: the recorder keeps the blocks and writes them once room is made.
    """


class BlocksQuarantinedError(StoreWriteError):
    """Blocks a store could not take were set aside in a dead-letter directory.

    Attributes
    ----------
    directory
        Where the blocks are (read them with :func:`simrecorder.read_dead_letters`).
    keys
        The keys of the quarantined blocks.
    """

    def __init__(self, message: str, directory: str = "", keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.directory = directory
        self.keys = keys


class ForkedRecorderError(SimRecorderError, RuntimeError):
    """A recorder inherited through ``os.fork()`` was used in the child process.

    The buffered samples belong to the parent; the child must create its own recorder.
    """


class SeriesAttrsNotSupportedError(SimRecorderError, NotImplementedError):
    """A store cannot keep attributes on a series (``DataStore.set_series_attrs``); the
    message names the store. Check ``store.supports_series_attrs`` first."""


class ValueChangedError(SimRecorderError, OSError):
    """A value streamed from a location was replaced or deleted while it was read: the
    reader got a part of it (never a part of another value) and may read it again."""


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


_TRANSIENT_ERRNOS = frozenset(
    getattr(_errno, name)
    for name in ("ENOSPC", "EDQUOT", "EAGAIN", "EINTR", "EBUSY", "ETIMEDOUT", "EIO")
    if hasattr(_errno, name)
)


def is_transient(exc: BaseException) -> bool:
    """True when a store failure may go away by itself (retry), False when it is permanent.

    Transient: a server that cannot be reached or answers "try again" (
    :class:`StoreConnectionError`), a full store (:class:`StoreFullError`, ``ENOSPC``),
    time-outs and interrupted system calls, a store closed under the recorder (it may be
    opened again). Everything else (a key or value the store
    cannot hold, a format error, a schema conflict) is permanent: retrying cannot help,
    so the recorder quarantines such blocks at once.
    """
    if isinstance(
        exc,
        (StoreConnectionError, StoreFullError, StoreClosedError, ConnectionError, TimeoutError),
    ):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, SimRecorderError):
        return exc.errno in _TRANSIENT_ERRNOS
    cause = exc.__cause__
    if isinstance(exc, StoreWriteError) and cause is not None and cause is not exc:
        return is_transient(cause)
    return False
