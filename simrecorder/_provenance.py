"""Provenance recorded in every persistent store at creation."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

from ._version import __version__

__all__ = ["git_state", "provenance"]


#: seconds a git state is reused: two ``git`` runs cost milliseconds, and every store
#: made and every storage saved asks
GIT_CACHE_SECONDS = 10.0
_git_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}


def git_state(directory: str) -> dict[str, Any] | None:
    """``{'commit': <40 hex>, 'dirty': bool}`` of the git work tree at ``directory``
    (``None`` outside one, or without git); asked again after
    :data:`GIT_CACHE_SECONDS`."""
    now = time.monotonic()
    cached = _git_cache.get(directory)
    if cached is not None and now - cached[0] < GIT_CACHE_SECONDS:
        return None if cached[1] is None else dict(cached[1])
    state: dict[str, Any] | None = None
    try:
        commit = _git(directory, "rev-parse", "HEAD").strip()
        dirty = _git(directory, "status", "--porcelain", "--untracked-files=no").strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            state = {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        state = None
    _git_cache[directory] = (now, state)
    return None if state is None else dict(state)


def _git(directory: str, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
    ).stdout


def provenance(**library_versions: str) -> dict[str, object]:
    """Describe who created a store: versions, host, time and the git state of the cwd.

    Parameters
    ----------
    **library_versions
        Extra ``name=version`` pairs of the backend library (``h5py_version=...``).

    Returns
    -------
    dict
        JSON-able mapping, stored as attributes of the store's root.
    """
    info: dict[str, object] = {
        "simrecorder_version": __version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "hostname": socket.gethostname(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:1000],
        "working_directory": os.getcwd(),
    }
    info.update(library_versions)
    state = git_state(os.getcwd())
    if state is not None:
        info.update(git_commit=state["commit"], git_dirty=state["dirty"])
    return info
