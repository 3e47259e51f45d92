"""The blob storage of a :class:`~simrecorder.Recorder` (``rec.record_blob``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidArgumentError
from ..locations import MemoryLocation
from ._storage import HashKeyStorage

__all__ = ["BLOBS_SUFFIX", "recorder_blobs"]

#: The default blob folder of a file-backed store is ``<store path>.blobs``.
BLOBS_SUFFIX = ".blobs"


def recorder_blobs(given: Any, datastores: Sequence[Any]) -> HashKeyStorage:
    """The blob storage a recorder uses.

    Parameters
    ----------
    given
        What ``Recorder(..., blobs=)`` was given: a :class:`HashKeyStorage`, what it
        takes (a location, a folder path, a list), or ``None`` for the default.
    datastores
        The recorder's stores. Default storage: a :class:`DiskDict` at ``<path>.blobs``
        beside the first store on disk (``run.h5`` -> ``run.h5.blobs/``, a zarr folder
        ``run.zarr`` -> ``run.zarr.blobs/``, so the store's own folder is left alone),
        else memory when the first store is in memory.

    Raises
    ------
    InvalidArgumentError
        No default fits (a Redis store alone): pass ``blobs=``.
    """
    if isinstance(given, HashKeyStorage):
        return given
    if given is not None:
        return HashKeyStorage(given)
    for store in datastores:
        path = store.local_path
        if path:
            return HashKeyStorage(str(path).rstrip("/\\") + BLOBS_SUFFIX)
    if datastores and datastores[0].protocol == "memory":
        return HashKeyStorage(MemoryLocation())
    raise InvalidArgumentError(
        f"no default blob storage for {', '.join(map(repr, datastores))}: pass "
        "Recorder(..., blobs=HashKeyStorage(...)) (a folder, a RedisLocation, an S3, ...)"
    )
