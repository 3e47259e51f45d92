"""One parser for simrecorder's store and location URLs.

A URL is ``scheme[+variant]://location[?query]``; a text without a scheme is a plain
path. Every table that maps URLs to classes (``open_datastore``, ``open_location``)
and every class that takes a URL splits it here, so ``mummi+taridx://``,
``zarr+zip://`` and ``redis://`` are read by the same rules.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from urllib.parse import parse_qsl

__all__ = ["ParsedURL", "parse_url"]

#: RFC 3986 scheme: a letter, then letters, digits, ``+``, ``-`` or ``.``.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class ParsedURL(NamedTuple):
    """The parts of a store or location URL.

    Attributes
    ----------
    scheme
        Lower-case scheme before any ``+`` (``""`` for a plain path).
    variant
        Lower-case text after the ``+`` (``"taridx"`` of ``mummi+taridx://``), or ``""``.
    location
        What follows ``://`` up to ``?``, as written (a path, ``host:port/db``...);
        the whole text for a plain path.
    query
        The ``?name=value`` options (the last of repeated names wins).
    """

    scheme: str
    variant: str
    location: str
    query: dict[str, str]

    @property
    def full_scheme(self) -> str:
        """``scheme+variant`` (or ``scheme``) as a registry looks it up."""
        return f"{self.scheme}+{self.variant}" if self.variant else self.scheme


def parse_url(url: str | os.PathLike[str]) -> ParsedURL:
    """Split ``url`` into scheme, variant, location and query.

    Examples
    --------
    >>> parse_url("mummi+taridx:///runs/ns.tar?x=1")
    ParsedURL(scheme='mummi', variant='taridx', location='/runs/ns.tar', query={'x': '1'})
    >>> parse_url("Redis://host:6379/0/prefix")
    ParsedURL(scheme='redis', variant='', location='host:6379/0/prefix', query={})
    >>> parse_url("runs/a.h5")
    ParsedURL(scheme='', variant='', location='runs/a.h5', query={})
    >>> parse_url("my dir://x").scheme  # not a scheme: a path with '://' in it
    ''
    >>> parse_url("zarr+zip://run.zip").full_scheme
    'zarr+zip'
    """
    text = os.fspath(url)
    found = _SCHEME.match(text)
    if found is None:
        return ParsedURL("", "", text, {})
    scheme, _, variant = found.group(1).lower().partition("+")
    rest = text[found.end() :]
    location, _, query = rest.partition("?")
    return ParsedURL(scheme, variant, location, dict(parse_qsl(query, keep_blank_values=True)))
