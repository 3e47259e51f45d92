"""HDF5 file plumbing shared by :mod:`simrecorder.datastores` and :mod:`simrecorder.storage`.

One place opens HDF5 files (:func:`open_h5`: h5py's errors as simrecorder's, a stale
"open for write" flag of a killed writer cleared; :func:`create_h5_quickly` and
:func:`open_h5_quickly` are its fast paths for small storages, which fall back to it),
knows which files a store of this
process writes (:data:`WRITERS`, the registry of :mod:`simrecorder._writers`; HDF5
allows one writer handle per file, so a storage on such a file goes through the
store's handle), and clears a superblock's
write flag (:func:`clear_hdf5_consistency_flags`, as ``h5clear -s`` would).
"""

from __future__ import annotations

import os
from typing import Any

import h5py

from ._fs import FileLock
from ._writers import WRITERS
from .errors import StoreFormatError, StoreLockedError

__all__ = [
    "SUFFIXES",
    "WRITERS",
    "clear_hdf5_consistency_flags",
    "create_h5_quickly",
    "lookup3",
    "open_h5",
    "open_h5_quickly",
]

#: File name suffixes of HDF5 files (the ``.h5`` of a URL or path picks HDF5).
SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf")

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: where an HDF5 superblock may start (a user block of 512 * 2**n bytes before it)
_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
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
    nothing to clear.

    Raises
    ------
    StoreFormatError
        The file is not HDF5, or its superblock checksum does not match (nothing is
        written then).
    """
    with open(path, "r+b") as f:
        for offset in _SUPERBLOCK_OFFSETS:
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


def writer_is_gone(path: str) -> bool:
    """True when no process holds the flock HDF5 writers take on the file."""
    return not FileLock.is_held_elsewhere(path)


#: ``(fapl, fcpl)`` of :func:`create_h5_quickly` and :func:`open_h5_quickly`, made once
_plists: tuple[Any, Any] | None = None


def _quick_plists() -> tuple[Any, Any]:
    """The property lists ``h5py.File(path, 'w', fs_strategy='fsm', fs_persist=True)``
    makes (HDF5 copies a property list where it is used, so one pair serves all)."""
    global _plists
    if _plists is None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        fcpl.set_obj_track_times(False)
        fcpl.set_file_space_strategy(h5py.h5f.FSPACE_STRATEGY_FSM_AGGR, True, 1)
        _plists = (fapl, fcpl)
    return _plists


def create_h5_quickly(path: str) -> h5py.File | None:
    """A new (truncated) HDF5 file at ``path`` that tracks its free space across
    sessions, as ``open_h5(path, 'w', fs_strategy='fsm', fs_persist=True)`` makes it,
    through h5py's low-level API (the high-level one builds its property lists anew:
    a third of the time of a small save); ``None`` when that fails (:func:`open_h5`
    then says why)."""
    fapl, fcpl = _quick_plists()
    try:
        fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    except (OSError, ValueError, TypeError):
        return None
    return h5py.File(fid)


def open_h5_quickly(path: str, read_only: bool) -> h5py.File | None:
    """The existing HDF5 file ``path`` as ``open_h5(path, 'r' or 'r+')`` opens it,
    through h5py's low-level API (see :func:`create_h5_quickly`); ``None`` when that
    fails (:func:`open_h5` then clears a stale write flag, or names the problem)."""
    flags = h5py.h5f.ACC_RDONLY if read_only else h5py.h5f.ACC_RDWR
    try:
        fid = h5py.h5f.open(os.fsencode(path), flags, fapl=_quick_plists()[0])
    except (OSError, ValueError, TypeError):
        return None
    return h5py.File(fid)


def open_h5(path: str, mode: str, **options: Any) -> h5py.File:
    """Open an HDF5 file with h5py, failures as simrecorder's errors (the one place
    that does it: :class:`~simrecorder.datastores.HDF5DataStore` and
    :class:`~simrecorder.storage.HDF5Storage`).

    A stale "open for write" flag left by a killed ``libver='latest'`` writer is
    cleared (as ``h5clear -s`` would) when no process holds the file's lock any more.

    Raises
    ------
    StoreLockedError
        Another process holds HDF5's file lock.
    StoreFormatError
        The file cannot be opened as HDF5 (the message names it).
    """
    try:
        return h5py.File(path, mode, **options)
    except OSError as exc:
        if "unable to lock file" in str(exc).lower():
            raise StoreLockedError(
                f"{path!r} is open for writing elsewhere (HDF5 file lock): {exc}"
            ) from exc
        if "already open for write" in str(exc) and mode != "r" and writer_is_gone(path):
            clear_hdf5_consistency_flags(path)
            return open_h5(path, mode, **options)
        hint = ""
        if "already open for write" in str(exc):
            hint = " (if its writer was killed, run `simrecorder recover FILE`)"
        raise StoreFormatError(f"cannot open {path!r} as HDF5: {exc}{hint}") from exc
