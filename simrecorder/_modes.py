"""Open modes: one vocabulary for every data store, parsed in one place.

=========  ========================================================================
mode       meaning
=========  ========================================================================
``None``   the default (SimRecorder's rule): a store that does not exist is created
           for writing; one that exists opens for reading, and writing to it raises
           :class:`~simrecorder.errors.StoreExistsError` saying how to resume
           (``mode='a'``) or overwrite (``mode='w'``). Re-running a script never
           appends to the last run's data by accident.
``'r'``    read only; the store must exist. Never writes a byte, never takes the
           writer lock, never creates anything.
``'r+'``   read and write; the store must exist.
``'a'``    read and write, created if missing (resume a run).
``'w'``    create, replacing what exists (overwrite a run).
``'w-'``   create; the store must not exist (``'x'`` is the same).
=========  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidModeError, StoreExistsError, StoreNotFoundError

__all__ = ["MODES", "OpenPlan", "check_mode", "plan_open"]

MODES = (None, "r", "r+", "a", "w", "w-", "x")


def check_mode(mode: object) -> str | None:
    """Return ``mode`` normalised (``'x'`` -> ``'w-'``) or raise :class:`InvalidModeError`.

    >>> check_mode("x")
    'w-'
    >>> check_mode("rw")
    Traceback (most recent call last):
    ...
    simrecorder.errors.InvalidModeError: mode must be one of None, 'r', ...; got 'rw'
    """
    if mode not in MODES:
        choices = ", ".join(repr(m) for m in MODES)
        raise InvalidModeError(f"mode must be one of {choices}; got {mode!r}")
    return "w-" if mode == "x" else mode


@dataclass(frozen=True)
class OpenPlan:
    """What a store does at open, decided from its mode and whether it exists.

    Attributes
    ----------
    create
        Create the store (it does not exist, or it is being replaced).
    replace
        Delete what exists first (``mode='w'``).
    read_only
        Open without writing anything.
    existed_readonly
        Read-only because the default mode found an existing store: writes raise
        :class:`~simrecorder.errors.StoreExistsError` (with the resume hint), not
        :class:`~simrecorder.errors.ReadOnlyError`.
    resume
        An existing store is opened for writing: a new provenance entry is added.
    """

    create: bool
    replace: bool
    read_only: bool
    existed_readonly: bool
    resume: bool


def plan_open(mode: str | None, exists: bool, where: str) -> OpenPlan:
    """Decide how to open the store ``where`` (for messages) in ``mode``.

    Raises
    ------
    StoreNotFoundError
        ``'r'`` or ``'r+'`` and the store does not exist.
    StoreExistsError
        ``'w-'`` and the store exists.
    """
    mode = check_mode(mode)
    if mode in ("r", "r+") and not exists:
        raise StoreNotFoundError(f"{where} does not exist (mode {mode!r} opens existing stores)")
    if mode == "w-" and exists:
        raise StoreExistsError(f"{where} exists; mode 'w-' only creates new stores")
    if mode is None:
        return OpenPlan(not exists, False, exists, exists, False)
    if mode == "r":
        return OpenPlan(False, False, True, False, False)
    if mode == "w":
        return OpenPlan(True, exists, False, False, False)
    if mode == "w-":
        return OpenPlan(True, False, False, False, False)
    return OpenPlan(not exists, False, False, False, exists)  # 'r+' and 'a'
