"""One mechanism behind the URL tables (data stores, locations, object storage).

Each table maps a scheme or name to an :class:`Entry` — ``"module:Attribute"`` plus the
pip extra that installs what the module imports — and imports the module only when a
URL first needs it, so ``import simrecorder`` stays light and a missing optional
dependency becomes a :class:`~simrecorder.errors.MissingDependencyError` naming the
extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .errors import MissingDependencyError

__all__ = ["Entry", "import_backend"]


@dataclass(frozen=True)
class Entry:
    """Where a backend lives: ``target`` is ``"package.module:Attribute"``, ``extra`` the
    pip extra that installs its dependencies (``None``: no optional dependency)."""

    target: str
    extra: str | None = None

    def load(self, what: str) -> Any:
        """Import the module and return the attribute (``what`` names the backend in
        a :class:`MissingDependencyError`)."""
        module_name, attribute = self.target.split(":")
        return getattr(import_backend(module_name, self.extra, what), attribute)


def import_backend(module_name: str, extra: str | None, what: str) -> Any:
    """Import a backend module; a missing third-party package becomes a
    :class:`MissingDependencyError` naming the pip extra that installs it.

    A missing module of simrecorder itself is a bug and propagates as is.

    Examples
    --------
    >>> import_backend("no_such_package_xyz", "zarr", what="the zarr store")
    Traceback (most recent call last):
    ...
    simrecorder.errors.MissingDependencyError: the zarr store needs the package 'no_such_package_xyz': pip install 'simrecorder[zarr]'
    """  # noqa: E501
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "simrecorder":
            raise
        hint = f"pip install 'simrecorder[{extra}]'" if extra else "reinstall simrecorder"
        raise MissingDependencyError(f"{what} needs the package {exc.name!r}: {hint}") from exc
