"""Byte key-value locations: the one layer under everything that stores bytes by key.

See :mod:`simrecorder.locations.base` for the contract.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._composite import Fanout, Level, Levels, Small
from ._directory import DirectoryLocation
from ._fsspec import FsspecLocation
from ._memory import MemoryLocation
from ._taridx import TaridxLocation
from .base import Location, SubLocation
from .registry import open_location

__all__ = [
    "DirectoryLocation",
    "Fanout",
    "FsspecLocation",
    "Level",
    "Levels",
    "Location",
    "MemoryLocation",
    "RedisLocation",
    "Small",
    "SubLocation",
    "TaridxLocation",
    "open_location",
]

# locations whose module imports an optional library are resolved on first access
_LAZY = {"RedisLocation": "_redis"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
