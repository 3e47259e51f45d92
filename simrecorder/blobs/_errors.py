"""Errors of :mod:`simrecorder.blobs`: tarn's names, rooted in simrecorder's tree.

Each class keeps the name tarn code catches (``ReadError``, ``WriteError``,
``CollisionError``, ``StorageCorruption``) and also derives from the simrecorder error a
caller of the rest of the library would catch, and from the natural builtin.
"""

from __future__ import annotations

from ..errors import (
    InvalidKeyError,
    KeyNotFoundError,
    SimRecorderError,
    StoreFormatError,
    StoreWriteError,
)

__all__ = [
    "CollisionError",
    "InvalidDigestError",
    "ReadError",
    "SourceNotFoundError",
    "StorageCorruption",
    "WriteError",
]


class ReadError(KeyNotFoundError):
    """No location holds the blob (also a ``KeyError``); the message names the hex
    digest and the locations searched."""


class WriteError(StoreWriteError):
    """No location accepted the blob (every one declined: full, too small, read-only);
    the message names them. Also an ``OSError``."""


class CollisionError(WriteError):
    """A key already holds a valid value that differs from the one being written.

    With content-addressed keys this means the value offered does not hash to its key
    (or a real hash collision). A stored value that no longer hashes to its key is
    corruption, not a collision: it is replaced.
    """


class StorageCorruption(StoreFormatError):
    """A stored blob does not hash to its key (also an ``OSError``).

    Raise it from inside ``with storage.read(key) as value:`` when the content is
    unusable: the storage evicts the blob (from every writable location that held it)
    and lets the exception propagate, so the next read fetches it again.
    """


class InvalidDigestError(InvalidKeyError):
    """A key is not a digest of the storage's algorithm: wrong length, not hex, wrong
    type (also a ``ValueError``)."""


class SourceNotFoundError(SimRecorderError, FileNotFoundError):
    """The file given to :meth:`HashKeyStorage.write` does not exist."""
