"""Errors and warnings of :mod:`simrecorder.storage` (all rooted in :mod:`simrecorder.errors`)."""

from __future__ import annotations

from ..errors import ArgumentTypeError, SimRecorderError

__all__ = [
    "ClassNotFoundWarning",
    "DamagedValueError",
    "EnvironmentMismatch",
    "GroupExistsError",
    "UnstorableValueError",
]


class EnvironmentMismatch(SimRecorderError, ValueError):
    """``load(..., version_policy='strict')`` found versions that differ from the saving
    environment; ``differences`` lists ``(package, saved, current)``."""

    def __init__(self, message: str, differences: tuple[tuple[str, str, str], ...] = ()) -> None:
        super().__init__(message)
        self.differences = differences


class GroupExistsError(SimRecorderError, ValueError):
    """``create_group`` on a name that already exists (h5py raises ``ValueError`` too)."""


class UnstorableValueError(ArgumentTypeError):
    """A value that no storage backend (of those tried) can hold; names the key path."""


class DamagedValueError(SimRecorderError, ValueError):
    """A stored value's encoding is not one this version writes (a damaged file)."""


class ClassNotFoundWarning(UserWarning):
    """A stored object's class cannot be imported: its data is returned as a dict."""
