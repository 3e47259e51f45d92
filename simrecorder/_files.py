"""Small file-system helpers shared by the stores."""

from __future__ import annotations

import os

__all__ = ["fsync_path"]


def fsync_path(path: str) -> None:
    """``fsync`` a file or directory by name (the page cache survives a crash of the
    process, not of the machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
