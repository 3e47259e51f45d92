"""URL → location, with each kind of location imported only when a URL needs it.

``memory://``, ``file://`` (and plain paths), ``taridx://``, ``redis://``,
``rediss://`` and ``unix://`` are simrecorder's own locations; every other scheme (``s3://``,
``sftp://``, ``http(s)://``, ``gcs://``...) goes to
:class:`~simrecorder.locations.FsspecLocation` when fsspec knows it.
"""

from __future__ import annotations

import os
from typing import Any

from .._registry import Entry, import_backend
from .._url import parse_url
from ..errors import MissingDependencyError, UnknownDataStoreError
from .base import Location

__all__ = ["known_location_schemes", "location_class", "open_location"]


_REGISTRY: dict[str, Entry] = {
    "memory": Entry("simrecorder.locations._memory:MemoryLocation", None),
    "file": Entry("simrecorder.locations._directory:DirectoryLocation", None),
    "redis": Entry("simrecorder.locations._redis:RedisLocation", "redis"),
    "rediss": Entry("simrecorder.locations._redis:RedisLocation", "redis"),
    "unix": Entry("simrecorder.locations._redis:RedisLocation", "redis"),
    "redis+cluster": Entry("simrecorder.locations._redis:RedisLocation", "redis"),
    "rediss+cluster": Entry("simrecorder.locations._redis:RedisLocation", "redis"),
    "taridx": Entry("simrecorder.locations._taridx:TaridxLocation", None),
    # encore's directory: the adapter owns it (locations never import adapters)
    "encore": Entry("simrecorder.adapters.encore:EncoreLocation", None),
}
_FSSPEC = "simrecorder.locations._fsspec:FsspecLocation"
#: pip extra for fsspec schemes that need more than fsspec itself
_FSSPEC_EXTRAS = {"s3": "s3", "s3a": "s3", "sftp": "sftp", "ssh": "sftp", "http": "http",
                  "https": "http"}  # fmt: skip


def known_location_schemes() -> list[str]:
    """The URL schemes of simrecorder's own locations (fsspec's come on top)."""
    return sorted(_REGISTRY)


def location_class(scheme: str) -> type[Location]:
    """Import and return the location class for a URL ``scheme``.

    Raises
    ------
    UnknownDataStoreError
        No location has this scheme (the message lists the known ones).
    MissingDependencyError
        The location's optional dependency is missing (names the pip extra).
    """
    scheme = scheme.lower()
    entry = _REGISTRY.get(scheme)
    if entry is None:
        extra = _FSSPEC_EXTRAS.get(scheme, "fsspec")
        try:
            fsspec = import_backend("fsspec", extra, what=f"the {scheme}:// location")
        except MissingDependencyError as exc:
            if scheme in _FSSPEC_EXTRAS:
                raise
            raise UnknownDataStoreError(
                f"unknown location scheme {scheme!r}: simrecorder knows "
                f"{', '.join(known_location_schemes())}, or a plain path; other schemes "
                "need fsspec (pip install 'simrecorder[fsspec]')"
            ) from exc
        if scheme not in fsspec.available_protocols():
            raise UnknownDataStoreError(
                f"unknown location scheme {scheme!r}: simrecorder knows "
                f"{', '.join(known_location_schemes())} and the fsspec protocols "
                f"({', '.join(sorted(fsspec.available_protocols())[:12])}, ...), or a plain path"
            )
        entry = Entry(_FSSPEC, extra)
    found: type[Location] = entry.load(what=f"the {scheme}:// location")
    return found


def open_location(url: str | os.PathLike[str], **options: Any) -> Location:
    """Open the location a URL or a plain path names.

    Parameters
    ----------
    url
        ``memory://``; a path or ``file:///abs/path?durable=1&max_size=N``;
        ``taridx:///abs/archive.tar``;
        ``redis://host:port/db/prefix`` (also ``rediss://``, ``unix:///socket?db=0``,
        ``redis+cluster://host:port/prefix`` for a Redis Cluster);
        any fsspec URL (``s3://bucket/prefix?endpoint_url=...``, ``sftp://host/dir``,
        ``https://host/dir``). ``location.url`` of every location is such a URL.
    **options
        Passed to the location (they override the URL's query options).

    Examples
    --------
    >>> open_location("memory://")
    MemoryLocation('memory://m...')
    >>> import tempfile
    >>> open_location(tempfile.mkdtemp()).protocol
    'file'
    """
    text = os.fspath(url)
    scheme = parse_url(text).full_scheme
    if not scheme:
        from ._directory import DirectoryLocation

        return DirectoryLocation(text, **options)
    cls = location_class(scheme)
    if cls.protocol == "memory":
        return cls(**options)  # memory is not shared by URL
    opened: Location = cls.from_url(text, **options)
    return opened
