"""The memory storage backend: indexes and arrays as Python objects."""

from __future__ import annotations

from typing import Any

from ._core import Backend, GenericStorage, Path

__all__ = ["MemoryStorage"]


class _MemoryBackend(Backend):
    name = "memory"
    raw_arrays = True

    def __init__(self) -> None:
        self.root: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"memory storage at {id(self):#x}"

    def load_index(self, path: Path) -> dict[str, Any] | None:
        return self.root if not path else None

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        self.root = node


class MemoryStorage(GenericStorage):
    """Storage in memory; keeps its data for its lifetime (closing it keeps it too).

    Examples
    --------
    >>> storage = MemoryStorage()
    >>> with storage as root:
    ...     root["x"] = [1, (2, 3)]
    >>> with storage as root:
    ...     root["x"]
    [1, (2, 3)]
    """

    def __init__(self) -> None:
        super().__init__(_MemoryBackend())

    def close(self) -> None:
        """Nothing to release: the data stays for the object's lifetime."""
        self._tree.flush()
