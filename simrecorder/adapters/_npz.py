"""Default npz writer/reader for the MuMMI-style API."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["read_npz", "write_npz"]


def write_npz(file: io.BytesIO, data: dict[str, Any]) -> io.BytesIO:
    """Write a dict of arrays as a compressed npz into ``file`` and return it."""
    np.savez_compressed(file, **data)
    return file


def read_npz(file: io.BytesIO, allow_pickle: bool = False) -> dict[str, Any]:
    """Read an npz file into a dict of arrays.

    Pickled object arrays are refused unless ``allow_pickle=True`` (unpickling data
    from a shared namespace can run arbitrary code); MuMMI's reader allowed them.
    """
    with np.load(file, allow_pickle=allow_pickle) as npz:
        return {key: npz[key] for key in npz.files}
