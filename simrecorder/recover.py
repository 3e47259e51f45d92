"""``simrecorder recover FILE``: make stores written by a killed process usable again.

HDF5 files created with ``libver='latest'`` (SWMR-capable, superblock version 2/3)
carry a "file is open for writing" flag in the superblock. A writer killed before it
closed the file leaves the flag set, and HDF5 then refuses to open the file until
``h5clear -s`` is run — which needs the HDF5 command-line tools. :func:`recover`
clears the flag itself (and fixes the superblock checksum), after checking that the
file really was left by a writer that is gone. Zarr directories get their stray
temporary files (``*.tmp`` from interrupted writes) removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreFormatError

__all__ = ["clear_hdf5_consistency_flags", "lookup3", "recover"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum of HDF5 metadata blocks."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    pos = 0

    def word(i: int) -> int:
        return int.from_bytes(data[i : i + 4].ljust(4, b"\0"), "little")

    while length > 12:
        a = (a + word(pos)) & _MASK
        b = (b + word(pos + 4)) & _MASK
        c = (c + word(pos + 8)) & _MASK
        # mix
        a = (a - c) & _MASK
        a ^= _rot(c, 4)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 6)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 8)
        b = (b + a) & _MASK
        a = (a - c) & _MASK
        a ^= _rot(c, 16)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 19)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        pos += 12
    if length == 0:
        return c
    tail = data[pos:].ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    # final
    c ^= b
    c = (c - _rot(b, 14)) & _MASK
    a ^= c
    a = (a - _rot(c, 11)) & _MASK
    b ^= a
    b = (b - _rot(a, 25)) & _MASK
    c ^= b
    c = (c - _rot(b, 16)) & _MASK
    a ^= c
    a = (a - _rot(c, 4)) & _MASK
    b ^= a
    b = (b - _rot(a, 14)) & _MASK
    c ^= b
    c = (c - _rot(b, 24)) & _MASK
    return c


def clear_hdf5_consistency_flags(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for writing" flags of a version 2/3 HDF5 superblock.

    Returns True when flags were set and are now cleared, False when there was
    nothing to clear. Raises ``ValueError`` for a file that is not HDF5 or whose
    superblock checksum does not match (nothing is written then).
    """
    with open(path, "r+b") as f:
        for offset in (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            f.seek(offset)
            if f.read(8) == _SIGNATURE:
                break
        else:
            raise StoreFormatError(f"{os.fspath(path)!r} has no HDF5 superblock")
        f.seek(offset)
        head = f.read(12)
        version, size_offsets = head[8], head[9]
        if version < 2:
            return False  # these superblocks have no write flag to clear
        size = 12 + 4 * size_offsets
        f.seek(offset)
        block = bytearray(f.read(size + 4))
        stored = int.from_bytes(block[size:], "little")
        if lookup3(bytes(block[:size])) != stored:
            raise StoreFormatError(
                f"{os.fspath(path)!r}: superblock checksum mismatch, not touched"
            )
        if block[11] == 0:
            return False
        block[11] = 0
        block[size:] = lookup3(bytes(block[:size])).to_bytes(4, "little")
        f.seek(offset)
        f.write(block)
        f.flush()
        os.fsync(f.fileno())
    return True


def _check_hdf5(path: str) -> list[str]:
    import h5py

    notes = []
    with h5py.File(path, "r", locking=False) as f:

        def visit(name: str, node: object) -> None:
            if isinstance(node, h5py.Dataset):
                node.shape  # noqa: B018 - touching the metadata is the check
                notes.append(name)

        f.visititems(visit)
    return notes


def recover(path: str | os.PathLike[str]) -> str:
    """Make the store at ``path`` usable after its writer was killed; return a report."""
    path = os.fspath(path)
    if os.path.isdir(path):
        stray = [p for p in Path(path).rglob("*.tmp") if p.is_file()]
        for p in stray:
            p.unlink()
        return f"{path}: zarr directory, removed {len(stray)} stray temporary file(s)"
    import h5py

    try:
        with h5py.File(path, "r", locking=False):
            pass
        return f"{path}: opens fine, nothing to recover"
    except OSError as exc:
        if "already open for write" not in str(exc) and "consistency flag" not in str(exc):
            raise
    cleared = clear_hdf5_consistency_flags(path)
    datasets = _check_hdf5(path)
    state = "cleared the open-for-writing flag" if cleared else "no flag to clear"
    return f"{path}: {state}; {len(datasets)} datasets readable"
