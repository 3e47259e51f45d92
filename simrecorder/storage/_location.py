"""Storage backends on a :class:`~simrecorder.locations.Location`: JSON files and Redis."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, StoreFormatError, StoreNotFoundError
from ..locations.base import Location
from ._base import dumps, loads, mode_flags
from ._core import Backend, GenericStorage, Path

__all__ = ["JSONStorage", "LocationBackend", "RedisStorage"]


class LocationBackend(Backend):
    """Indexes as JSON documents in a :class:`~simrecorder.locations.Location` (written
    atomically by it), large arrays as raw bytes under their path.

    Parameters
    ----------
    location
        Where the documents go.
    root_key
        The key of the root index; a physical group ``a/b`` has its index at
        ``a/b/@index``.
    inline_limit
        See :class:`~simrecorder.storage._core.Backend` (``None``: one document holds all).
    """

    name = "json"

    def __init__(
        self,
        location: Location,
        root_key: str,
        inline_limit: int | None = None,
        read_only: bool = False,
        name: str = "json",
        where: str = "",
    ) -> None:
        self.location = location
        self.root_key = root_key
        self.inline_limit = inline_limit
        self.read_only = read_only
        self.name = name
        self._where = where or repr(location)

    def describe(self) -> str:
        return f"{self.name} storage {self._where}"

    def _index_key(self, path: Path) -> str:
        return "/".join((*path, "@index")) if path else self.root_key

    def load_index(self, path: Path) -> dict[str, Any] | None:
        raw = self.location.get(self._index_key(path))
        if raw is None:
            return None
        return loads(raw, f"{self.describe()} group /{'/'.join(path)}")

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        if not self.location.put(self._index_key(path), dumps(node).encode("utf-8")):
            raise StoreFormatError(f"{self.describe()}: the location declined the index")

    def make_group(self, path: Path) -> None:
        """Groups need no object of their own in a location."""

    def delete_node(self, path: Path) -> None:
        key = "/".join(path)
        self.location.delete(key)
        self.location.delete_many(list(self.location.keys(key + "/")))

    def write_array(self, path: Path, array: np.ndarray) -> None:
        self.location.put("/".join(path), np.ascontiguousarray(array).tobytes())

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        raw = self.location.get("/".join(path))
        if raw is None:
            raise StoreFormatError(f"{self.describe()}: the array /{'/'.join(path)} is missing")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def close(self) -> None:
        self.location.close()


class JSONStorage(GenericStorage):
    """Storage in one JSON file (``json.load`` reads it; arrays are base64 inside).

    The file is rewritten atomically (temp file + rename) at :meth:`flush`/:meth:`close`.

    Parameters
    ----------
    path
        The file (``.json``).
    mode
        ``'r'``, ``'r+'``, ``'a'`` (default) or ``'w'``.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        from ..locations._directory import DirectoryLocation

        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        if os.path.isdir(self.path):
            raise StoreFormatError(f"{self.path!r} is a directory, not a JSON storage file")
        if not os.path.exists(self.path) and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no JSON storage at {self.path!r}")
        directory, name = os.path.split(self.path)
        location = DirectoryLocation(directory, read_only=read_only)
        if truncate:
            location.delete(name)
        super().__init__(LocationBackend(location, name, None, read_only, "json", repr(self.path)))


class RedisStorage(GenericStorage):
    """Storage in Redis: one JSON document per physical group, large arrays as raw
    bytes (through :class:`~simrecorder.locations.RedisLocation`).

    Parameters
    ----------
    url
        ``redis://host:port/db[/prefix]``.
    mode
        ``'r'``, ``'a'`` (default) or ``'w'`` (deletes what is under the prefix).
    **options
        Passed to :class:`~simrecorder.locations.RedisLocation` (``prefix=...``).
    """

    def __init__(self, url: str, mode: str = "a", **options: Any) -> None:
        from ..locations._redis import RedisLocation

        read_only, truncate = mode_flags(mode)
        location = RedisLocation(url, read_only=read_only or None, **options)
        if truncate and not location.prefix:
            location.close()
            raise InvalidArgumentError(
                f"mode='w' on {location.url} would delete every key of the database: "
                "give the storage a prefix (redis://host:port/db/prefix)"
            )
        if truncate:
            location.delete_many(list(location.keys()))
        super().__init__(
            LocationBackend(location, "@index", 64 << 10, read_only, "redis", location.url)
        )
