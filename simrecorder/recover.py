"""``simrecorder recover PATH``: make stores written by a killed process usable again.

HDF5 files created with ``libver='latest'`` (SWMR-capable, superblock version 2/3)
carry a "file is open for writing" flag in the superblock. A writer killed before it
closed the file leaves the flag set, and HDF5 then refuses to open the file until
``h5clear -s`` is run — which needs the HDF5 command-line tools. :func:`recover`
clears the flag itself (and fixes the superblock checksum), after checking that the
file really was left by a writer that is gone.

A zarr store that was not closed is opened for writing (which fails with
:class:`~simrecorder.errors.StoreLockedError` while its writer still runs), so every
series is cut back to its last commit, the temporary files of interrupted writes are
removed and the store is closed cleanly. A zarr zip store is written in the directory
``<path>.partial`` and packed into ``<path>`` by ``close()``: a packed zip is complete,
and a ``.partial`` directory that a killed writer left is recovered and packed into
the zip (replacing an older zip the writer had resumed).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import zipfile
from typing import Any

from ._h5 import clear_hdf5_consistency_flags, lookup3
from .errors import StoreFormatError, StoreNotFoundError
from .options import DatastoreType

__all__ = ["clear_hdf5_consistency_flags", "lookup3", "recover"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: where an HDF5 superblock may start (a user block of 512 * 2**n bytes before it)
_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
#: temporary files of the zarr store's atomic writes: its own (``<name>.<hex>.tmp``)
#: and zarr's LocalStore's (``<stem>.<hex>.partial``)
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.(tmp|partial)$")
#: the root attribute a zarr store sets to true when it is closed cleanly
_ZARR_CLEAN = "simrecorder_clean"


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


def _recover_hdf5(path: str) -> str:
    import h5py

    with open(path, "rb") as f:
        head = f.read(_SUPERBLOCK_OFFSETS[-1] + len(_SIGNATURE))
    if not any(head[o : o + len(_SIGNATURE)] == _SIGNATURE for o in _SUPERBLOCK_OFFSETS):
        raise StoreFormatError(
            f"{path!r} is neither an HDF5 file, a zarr directory nor a zarr zip store"
        )
    try:
        with h5py.File(path, "r", locking=False):
            pass
        return f"{path}: opens fine, nothing to recover"
    except OSError as exc:
        if "already open for write" not in str(exc) and "consistency flag" not in str(exc):
            raise StoreFormatError(f"{path!r}: HDF5 cannot open it: {exc}") from exc
    cleared = clear_hdf5_consistency_flags(path)
    datasets = _check_hdf5(path)
    state = "cleared the open-for-writing flag" if cleared else "no flag to clear"
    return f"{path}: {state}; {len(datasets)} datasets readable"


def _zarr_lengths(directory: str) -> dict[str, int]:
    """Samples of every series of the zarr directory store at ``directory`` (read-only)."""
    from .datastores import ZarrDataStore

    with ZarrDataStore(directory, mode="r") as store:
        return {
            key: int(store.group[key].shape[0])
            for key in store.keys()
            if store.node_type(key) == "series"
        }


def _zarr_is_clean(directory: str) -> bool:
    from .datastores import ZarrDataStore

    with ZarrDataStore(directory, mode="r") as store:
        return store.attrs.get(_ZARR_CLEAN) is True


def _zarr_temp_files(directory: str) -> list[str]:
    return [
        os.path.join(root, name)
        for root, _dirs, files in os.walk(directory)
        for name in files
        if _ZARR_TEMP.search(name)
    ]


def _cut_report(before: dict[str, int], after: dict[str, int]) -> str:
    cut = {
        key: before[key] - after.get(key, 0) for key in before if before[key] > after.get(key, 0)
    }
    if not cut:
        return "every series was committed in full"
    dropped = sum(cut.values())
    return (
        f"cut {len(cut)} series back to the last commit ({dropped} uncommitted samples "
        f"dropped: {', '.join(sorted(cut))})"
    )


def _resume_zarr(path: str, is_zip: bool) -> tuple[int, int]:
    """Open the zarr store at ``path`` for writing (its recovery cuts the series back to
    the last commit), remove temporary files, close it (a zip store is packed).
    Returns (series, removed temporary files)."""
    from .datastores import ZarrDataStore

    kind = DatastoreType.ZIP if is_zip else DatastoreType.DIRECTORY
    workdir = path + ".partial" if is_zip else path
    store = ZarrDataStore(path, datastore_type=kind, mode="a")  # StoreLockedError if live
    try:
        stray = _zarr_temp_files(workdir)  # safe: we hold the writer lock
        for name in stray:
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
        series = sum(1 for key in store.keys() if store.node_type(key) == "series")
    finally:
        store.close()  # commits, marks the store clean; a zip store is packed
    return series, len(stray)


def _recover_zarr_directory(path: str) -> str:
    if not os.path.isfile(os.path.join(path, "zarr.json")):
        raise StoreFormatError(f"{path!r} is a directory but not a zarr store (no zarr.json)")
    if _zarr_is_clean(path) and not _zarr_temp_files(path):
        return f"{path}: zarr directory closed cleanly, nothing to recover"
    before = _zarr_lengths(path)
    series, stray = _resume_zarr(path, is_zip=False)
    after = _zarr_lengths(path)
    return (
        f"{path}: zarr directory left by a writer that did not close; "
        f"{_cut_report(before, after)}; removed {stray} stray temporary file(s); "
        f"closed cleanly; {series} series readable"
    )


def _remove_stale_packing(path: str) -> int:
    """Remove what a killed ``close()`` of a zip store left beside a complete zip: its
    temporary zip (``<path>.<hex>.tmp``) and the directory it was deleting. Only called
    when no ``<path>.partial`` exists, so no writer is packing."""
    stale = [
        p for p in glob.glob(glob.escape(path) + ".*.tmp") if _ZARR_TEMP.search(p[len(path) :])
    ]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    removing = path + ".partial.removing"
    if os.path.isdir(removing):
        shutil.rmtree(removing, ignore_errors=True)
        stale.append(removing)
    return len(stale)


def _recover_zip(path: str) -> str:
    partial = path + ".partial"
    if os.path.isdir(partial) and not os.listdir(partial):
        os.rmdir(partial)  # the writer was killed before it wrote anything
    if os.path.isdir(partial):
        if not os.path.isfile(os.path.join(partial, "zarr.json")):
            raise StoreFormatError(
                f"{partial!r} (the unpacked data of zip store {path!r}) is not a zarr store "
                "(no zarr.json); nothing was changed"
            )
        before = _zarr_lengths(partial)
        series, stray = _resume_zarr(path, is_zip=True)
        with _zip_store(path) as store:
            after = {k: int(store.group[k].shape[0]) for k in before if k in store}
        return (
            f"{path}: recovered {partial} (left by a writer that did not close: killed, "
            f"or its close() failed); {_cut_report(before, after)}; removed {stray} stray "
            f"temporary file(s); packed it into {path}; {series} series readable"
        )
    if not os.path.isfile(path):
        raise StoreNotFoundError(f"no zarr zip store at {path!r} and no {partial!r}")
    with _zip_store(path) as store:
        series = sum(1 for key in store.keys() if store.node_type(key) == "series")
    stale = _remove_stale_packing(path)
    extra = f"; removed {stale} leftover(s) of an interrupted packing" if stale else ""
    return (
        f"{path}: packed zip store, complete (close() packs it after the last commit); "
        f"nothing to recover{extra}; {series} series readable"
    )


def _zip_store(path: str) -> Any:
    """The zip store at ``path``, opened read-only (a ``ZarrDataStore``)."""
    from .datastores import ZarrDataStore

    return ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="r")


def _is_zip_store(path: str) -> bool:
    if os.path.isdir(path):
        return False
    if path.lower().endswith(".zip") or os.path.isdir(path + ".partial"):
        return True
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def recover(path: str | os.PathLike[str]) -> str:
    """Make the store at ``path`` usable after its writer was killed; return a report.

    Parameters
    ----------
    path
        An HDF5 file, a zarr directory (``zarr://`` optional) or a zarr zip store
        (its ``<path>.partial`` directory is found when the zip was never packed).

    Returns
    -------
    str
        One line: what was found and what was done.

    Raises
    ------
    StoreNotFoundError
        Nothing is at ``path``.
    StoreFormatError
        ``path`` is not a store simrecorder can recover (nothing was changed).
    StoreLockedError
        A zarr store's writer is still running.
    """
    path = os.fspath(path)
    if path.startswith("zarr://"):
        path = path[len("zarr://") :]
    if _is_zip_store(path):
        return _recover_zip(path)
    if not os.path.lexists(path):
        raise StoreNotFoundError(f"nothing to recover at {path!r}: no such file or directory")
    if os.path.isdir(path):
        return _recover_zarr_directory(path)
    return _recover_hdf5(path)
