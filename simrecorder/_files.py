"""Kept for imports that predate :mod:`simrecorder._fs` (its one home now)."""

from __future__ import annotations

from ._fs import fsync_path

__all__ = ["fsync_path"]
