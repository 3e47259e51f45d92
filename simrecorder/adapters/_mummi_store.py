"""MuMMI namespaces and encore stores as Recorder DataStores (``mummi+simple://dir``, ...).

Each is a :class:`~simrecorder.datastores._blocks.BlockDataStore` — series as metadata,
an appendable block index and blocks — over the location a MuMMI namespace or an encore
store already is, so the block layout, commit, cut-back after a crash, writer lock and
lazy views are the block store's; only the URL vocabulary lives here:

- ``mummi+simple://dir``: a directory namespace (:class:`SimpleIO`'s location);
- ``mummi+taridx://file.tar``: a tar archive with an index (:class:`TaridxIO`'s);
- ``mummi+redis://namespace?url=redis://host:port/db``: the Redis keys
  ``mummi/<namespace>/...`` that :class:`RedisIO` uses for the same namespace;
- ``fs://dir``: an encore ``FileSystemStore`` directory (``key.data`` + ``key.metadata``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from .._url import parse_url
from ..datastores import BlockDataStore
from ..errors import InvalidArgumentError
from .mummi import RedisIO, TaridxIO

__all__ = [
    "FileSystemDataStore",
    "RedisNamespaceDataStore",
    "SimpleDataStore",
    "TaridxDataStore",
]


class _PathDataStore(BlockDataStore):
    """A block store on a local path, named ``<protocol>://<absolute path>``."""

    scheme = ""  # this store's URL scheme
    location_scheme = ""  # the scheme of the location URL the path becomes

    def __init__(
        self, path: str | os.PathLike[str], mode: str | None = None, **options: Any
    ) -> None:
        self.namespace = os.path.abspath(os.fspath(path))
        super().__init__(self._location_url(), mode=mode, **options)

    def _location_url(self) -> str:
        return f"{self.location_scheme}://{quote(self.namespace)}"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> _PathDataStore:
        # docstring inherited
        parsed = parse_url(url)
        if parsed.full_scheme != cls.scheme:
            raise InvalidArgumentError(f"{cls.__name__} opens {cls.scheme}:// URLs, got {url!r}")
        return cls(parsed.location, **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"{self.scheme}://{self.namespace}"

    @property
    def local_path(self) -> str | None:
        # docstring inherited
        return self.namespace


class SimpleDataStore(_PathDataStore):
    """``mummi+simple://dir``: a MuMMI directory namespace as a block store."""

    scheme = "mummi+simple"
    location_scheme = "file"


class TaridxDataStore(_PathDataStore):
    """``mummi+taridx://file.tar``: a MuMMI tar namespace (archive + index) as a block
    store; ``ns`` means ``ns.tar``, as for :class:`TaridxIO`."""

    scheme = "mummi+taridx"
    location_scheme = "taridx"

    def __init__(
        self, path: str | os.PathLike[str], mode: str | None = None, **options: Any
    ) -> None:
        super().__init__(TaridxIO.archive(os.fspath(path)), mode=mode, **options)


class FileSystemDataStore(_PathDataStore):
    """``fs://dir``: an encore ``FileSystemStore`` directory as a block store (encore's
    own package reads every block as a key)."""

    scheme = "fs"
    location_scheme = "encore"


class RedisNamespaceDataStore(BlockDataStore):
    """``mummi+redis://namespace?url=redis://host:port/db``: the keys of a MuMMI Redis
    namespace (``mummi/<namespace>/...``, as :class:`RedisIO` lays them out)."""

    def __init__(
        self, namespace: str, url: str | None = None, mode: str | None = None, **options: Any
    ) -> None:
        self.namespace = namespace
        self.redis_io = RedisIO(url)
        super().__init__(self.redis_io.location(namespace), mode=mode, **options)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisNamespaceDataStore:
        # docstring inherited
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        namespace = (parsed.netloc + parsed.path).strip("/")
        return cls(namespace, url=query.get("url"), **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"mummi+redis://{self.namespace}?url={quote(self.redis_io.url, safe='')}"

    def close(self) -> None:
        # docstring inherited: the namespace's location belongs to this store's RedisIO
        super().close()
        self.redis_io.root.close()
