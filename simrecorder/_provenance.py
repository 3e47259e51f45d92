"""Provenance recorded in every persistent store at creation."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys

import numpy as np

from ._version import __version__

__all__ = ["provenance"]


def _git_state(directory: str) -> dict[str, object]:
    """Commit and dirty flag of the git work tree at ``directory``, if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


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
    info.update(_git_state(os.getcwd()))
    return info
