"""Content-addressed blob storage with composable locations (tarn's design and names).

tarn code switches by changing its import line::

    from simrecorder.blobs import HashKeyStorage, Levels, Level, Fanout, Small, RedisLocation

A blob's key is the sha256 digest of its bytes; :class:`HashKeyStorage` writes blobs
into a location and reads them back. Locations are simrecorder's location layer
(:mod:`simrecorder.locations`): :class:`DiskDict` is tarn's folder layout over a
directory location, :class:`RedisLocation` the layer's Redis location, :class:`S3`,
:class:`SFTP`, :class:`SCP` and :class:`Nginx` the layer's fsspec location in tarn's
layouts, and :class:`Levels`, :class:`Level`, :class:`Fanout`, :class:`Small` the
layer's composites, which here also take plain folder paths wherever a location goes.

Examples
--------
>>> import tempfile
>>> storage = HashKeyStorage(Levels(tempfile.mkdtemp(), tempfile.mkdtemp()))
>>> key = storage.write(b"hello")
>>> key.hex()[:12]
'2cf24dba5fb0'
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..locations import Fanout as _Fanout
from ..locations import Level, Location
from ..locations import Levels as _Levels
from ..locations import Small as _Small
from ._cache import (
    cache_key,
    key_material,
    mark_module_unstable,
    mark_stable,
    mark_unstable,
    smart_cache,
)
from ._errors import (
    CollisionError,
    InvalidDigestError,
    ReadError,
    SourceNotFoundError,
    StorageCorruption,
    WriteError,
)
from ._layout import DiskDict, HashLayout
from ._recorder import recorder_blobs
from ._storage import HashKeyStorage

__all__ = [
    "S3",
    "SCP",
    "SFTP",
    "CollisionError",
    "DiskDict",
    "Fanout",
    "HashKeyStorage",
    "HashLayout",
    "InvalidDigestError",
    "Level",
    "Levels",
    "Nginx",
    "ReadError",
    "RedisLocation",
    "Small",
    "SmallLocation",
    "SourceNotFoundError",
    "StorageCorruption",
    "WriteError",
    "cache_key",
    "key_material",
    "mark_module_unstable",
    "mark_stable",
    "mark_unstable",
    "recorder_blobs",
    "smart_cache",
]


def _location(value: Any) -> Any:
    """A folder path becomes a :class:`DiskDict`, a list a :class:`Fanout`; the rest stays."""
    if isinstance(value, (str, os.PathLike)):
        return DiskDict(value)
    if isinstance(value, (list, tuple)) and not isinstance(value, Level):
        return Fanout(*value)
    return value


class Levels(_Levels):
    """The layer's :class:`~simrecorder.locations.Levels`, taking folder paths too.

    Examples
    --------
    >>> import tempfile
    >>> Levels(Level(tempfile.mkdtemp(), write=False), tempfile.mkdtemp()).protocol
    'levels'
    """

    def __init__(self, *levels: Any) -> None:
        super().__init__(*(
            level._replace(location=_location(level.location)) if isinstance(level, Level)
            else _location(level)
            for level in levels
        ))  # fmt: skip


class Fanout(_Fanout):
    """The layer's :class:`~simrecorder.locations.Fanout`, taking folder paths too."""

    def __init__(self, *locations: Location | str | os.PathLike[str]) -> None:
        super().__init__(*(_location(location) for location in locations))


class Small(_Small):
    """The layer's :class:`~simrecorder.locations.Small`, taking a folder path too."""

    def __init__(self, location: Location | str | os.PathLike[str], max_size: int) -> None:
        super().__init__(_location(location), max_size)


#: tarn's older name of :class:`Small`.
SmallLocation = Small

# locations whose module imports an optional library are resolved on first access
_LAZY = {"RedisLocation": "_redis", "S3": "_remote", "SFTP": "_remote", "SCP": "_remote",
         "Nginx": "_remote"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
