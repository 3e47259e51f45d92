"""Version information written with every save, and the checks of ``load``."""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import os
import platform
import socket
import sys
import warnings
from typing import Any

import numpy as np

from .._provenance import git_state
from .._version import __version__
from ..errors import InvalidArgumentError
from ._errors import EnvironmentMismatch

__all__ = ["FORMAT_VERSION", "POLICIES", "check_versions", "current_versions", "differences"]

#: Version of the storage layout (root key ``@format``).
FORMAT_VERSION = 1
#: The values of ``version_policy``.
POLICIES = ("ignore", "warn", "strict")
_NOT_PACKAGES = frozenset({"format", "git", "host", "time", "package_git"})


def _package_version(package: str) -> str | None:
    module = sys.modules.get(package)
    if module is None:
        try:
            module = importlib.import_module(package)
        except Exception:  # noqa: BLE001 - any import failure means "not installed"
            return None
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _package_directory(package: str) -> str | None:
    """The directory of an imported package's source, if any."""
    module = sys.modules.get(package)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if isinstance(path, str) else None


def current_versions(packages: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The version information written with every save.

    Returns
    -------
    dict
        ``format``, ``simrecorder``, ``python``, ``numpy``, one entry per top-level
        package of the stored classes (its ``__version__`` or distribution version),
        ``git`` (``{'commit', 'dirty'}`` of the working directory's checkout, or
        ``None``), ``package_git`` (``{package: {'commit', 'dirty'}}`` for the stored
        classes' packages that are git checkouts), ``host`` and ``time``.
    """
    versions: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "simrecorder": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for package in sorted(packages):
        if package not in versions and package not in _NOT_PACKAGES:
            versions[package] = _package_version(package) or "unknown"
    versions["git"] = git_state(os.getcwd())
    package_git = {}
    for package in sorted(packages):
        directory = _package_directory(package)
        state = git_state(directory) if directory else None
        if state is not None:
            package_git[package] = state
    versions["package_git"] = package_git
    versions["host"] = socket.gethostname()
    versions["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return versions


def differences(saved: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(package, saved version, current version)`` for each package that differs."""
    diffs = []
    for package, version in saved.items():
        if package in _NOT_PACKAGES or not isinstance(version, str):
            continue
        if package == "python":
            now: str | None = platform.python_version()
        elif package == "simrecorder":
            now = __version__
        elif package == "numpy":
            now = np.__version__
        else:
            now = _package_version(package)
        if now != version:
            diffs.append((package, version, now or "not installed"))
    return diffs


def check_versions(saved: dict[str, Any], policy: str, where: str) -> None:
    """Apply ``policy`` (``'ignore'``, ``'warn'``, ``'strict'``) to the differences
    between the versions ``saved`` and this environment."""
    if policy not in POLICIES:
        raise InvalidArgumentError(f"version_policy must be one of {POLICIES}, got {policy!r}")
    if policy == "ignore":
        return
    diffs = differences(saved)
    if not diffs:
        return
    text = "; ".join(f"{pkg}: saved with {old}, now {new}" for pkg, old, new in diffs)
    if policy == "strict":
        raise EnvironmentMismatch(f"{where} was saved in another environment: {text}", tuple(diffs))
    warnings.warn(f"{where} was saved in another environment: {text}", UserWarning, stacklevel=3)
