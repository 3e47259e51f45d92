"""tarn's remote locations as thin constructors over simrecorder's location layer.

``S3``, ``SFTP``, ``SCP`` and ``Nginx`` are :class:`~simrecorder.locations.FsspecLocation` s
seen through tarn's folder layout (:class:`~simrecorder.blobs.HashLayout`).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import quote

from ..errors import ArgumentTypeError, StoreConnectionError
from ..locations import FsspecLocation
from ..locations.base import check_location_key
from ._layout import HashLayout

__all__ = ["S3", "SCP", "SFTP", "Nginx"]

#: Seconds allowed to connect to a server (then the error names it).
TIMEOUT = 10.0


class S3(HashLayout):
    """Blobs as objects of an S3 bucket, in tarn's S3 layout (``abcd/ef...``).

    Parameters
    ----------
    endpoint_url
        The S3 endpoint (``http://127.0.0.1:9000``), ``None`` for AWS, or a boto3 S3
        client (its endpoint is used; credentials come from the environment).
    bucket
        The bucket, optionally with a folder (``"bucket/blobs"``).
    levels
        Bytes of the digest per folder level (tarn's S3 uses ``[2, -1]``).
    **storage_options
        s3fs options (``key``, ``secret``, ``client_kwargs``...).
    """

    protocol: ClassVar[str] = "s3"

    def __init__(
        self,
        endpoint_url: Any,
        bucket: str,
        levels: tuple[int, ...] = (2, -1),
        timeout: float = TIMEOUT,
        **storage_options: Any,
    ) -> None:
        if endpoint_url is not None and not isinstance(endpoint_url, str):
            endpoint_url = getattr(getattr(endpoint_url, "meta", None), "endpoint_url", None)
            if endpoint_url is None:
                raise ArgumentTypeError(
                    "S3 takes an endpoint URL or a boto3 S3 client as its first argument"
                )
        if endpoint_url is not None:
            storage_options["endpoint_url"] = endpoint_url
        location = FsspecLocation("s3", root=bucket, timeout=timeout, **storage_options)
        super().__init__(location, levels)


class SFTP(HashLayout):
    """A tarn folder on a server reached over SSH (read-only, one connection reused).

    The folder's ``config.yml`` gives the layout (read on first use).

    Parameters
    ----------
    host
        The server.
    root
        The tarn folder on the server.
    port
        The SSH port.
    username
        The user (default: paramiko's, i.e. the local user).
    key
        A private key file (path), or a ``paramiko.PKey``.
    password
        A password, when no key is used.
    timeout
        Seconds allowed to connect and authenticate.
    """

    protocol: ClassVar[str] = "sftp"

    def __init__(
        self,
        host: str,
        root: str | os.PathLike[str],
        port: int = 22,
        username: str | None = None,
        key: Any = None,
        password: str | None = None,
        timeout: float = TIMEOUT,
        **options: Any,
    ) -> None:
        settings: dict[str, Any] = {"host": host, "port": int(port), **options}
        if username is not None:
            settings["username"] = username
        if isinstance(key, (str, os.PathLike)):
            settings["key_filename"] = os.fspath(key)
        elif key is not None:
            settings["pkey"] = key
        if password is not None:
            settings["password"] = password
        location = FsspecLocation(
            "sftp", root=os.fspath(root), read_only=True, timeout=timeout, **settings
        )
        super().__init__(location, None)


class SCP(SFTP):
    """A tarn folder on a server reached over SSH, as tarn's ``SCP`` (read-only).

    Same arguments as :class:`SFTP`; files are transferred with the SFTP subsystem of
    the same SSH connection (no ``scp`` binary or package is needed).
    """

    protocol: ClassVar[str] = "scp"


class Nginx(HashLayout):
    """A tarn folder served over HTTP(S) by nginx (read-only).

    Parameters
    ----------
    url
        The folder's URL; its ``config.yml`` gives the layout (read on first use).
    timeout
        Seconds allowed to connect.

    Notes
    -----
    Listing reads nginx's ``autoindex_format json`` folder listings (HTML listings
    are read through fsspec).
    """

    protocol: ClassVar[str] = "nginx"

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.base_url = url.rstrip("/") + "/"
        self.timeout = float(timeout)
        super().__init__(FsspecLocation(url.rstrip("/"), timeout=timeout), None)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (walks the JSON listings of the folders)."""
        try:
            inner = list(self._walk(""))
        except _NotJson:
            yield from super().keys(prefix)
            return
        found = {key for key in map(self.outer_key, inner) if key and key.startswith(prefix)}
        yield from sorted(found)

    def _walk(self, folder: str) -> Iterator[str]:
        for entry in self._listing(folder):
            name, kind = entry.get("name"), entry.get("type")
            if not isinstance(name, str):
                continue
            if kind == "directory":
                yield from self._walk(f"{folder}{name}/")
            elif kind == "file":
                try:
                    yield check_location_key(f"{folder}{name}")
                except ValueError:
                    continue

    def _listing(self, folder: str) -> list[dict[str, Any]]:
        url = self.base_url + quote(folder)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise StoreConnectionError(f"cannot list {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreConnectionError(
                f"cannot list {url}: {self.base_url} unreachable ({exc})"
            ) from exc
        try:
            listing = json.loads(body)
        except ValueError:
            raise _NotJson from None
        if not isinstance(listing, list):
            raise _NotJson
        return listing


class _NotJson(Exception):
    """The server lists folders in HTML, not nginx's JSON."""
