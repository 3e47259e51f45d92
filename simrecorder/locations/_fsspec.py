"""A location on any fsspec file system: S3, SFTP, HTTP, GCS, Azure, local...

Only fsspec's synchronous API is called (s3fs and the HTTP file system run their own
event loop thread behind it), and every file system is created with
``skip_instance_cache=True`` so that two locations never share a client or a listing
cache by accident.
"""

from __future__ import annotations

import io
import stat
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, ClassVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import (
    ArgumentTypeError,
    AuthenticationFailedError,
    InvalidArgumentError,
    MissingDependencyError,
    SimRecorderError,
    StoreConnectionError,
    StoreFullError,
    StoreNotFoundError,
    StoreWriteError,
)
from .base import COPY_CHUNK_BYTES, Data, Location, check_location_key, iter_chunks

__all__ = ["FsspecLocation"]

#: Seconds allowed to connect (and, for SFTP, for the banner and authentication).
DEFAULT_TIMEOUT = 10.0

#: Bytes buffered per request when streaming a value (S3 parts are at least 5 MiB).
BLOCK_BYTES = 8 << 20

#: File systems with an atomic rename: values are written under a temp name, then moved.
_RENAME_PROTOCOLS = frozenset({"sftp", "ssh", "file", "local"})

#: File systems that serve files and cannot store them.
_READ_ONLY_PROTOCOLS = frozenset({"http", "https"})

#: Storage options that never appear in :attr:`FsspecLocation.url`.
_SECRET_OPTIONS = frozenset(
    {"password", "secret", "key", "token", "passphrase", "pkey", "session", "client_kwargs",
     "config_kwargs", "storage_options", "ssh_kwargs", "username", "host", "port"}
)  # fmt: skip

_INSTALL_HINTS = {
    "s3": "pip install 'simrecorder[s3]' (s3fs)",
    "sftp": "pip install 'simrecorder[sftp]' (paramiko)",
    "http": "pip install 'simrecorder[http]' (aiohttp)",
}

_TEMP_MARK = ".simrecorder-tmp-"


def _coerce(value: str) -> Any:
    """A query-string value as Python: ``true``/``false``, integers, floats, else text."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _fsspec() -> Any:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError(
            "fsspec locations need fsspec: pip install 'simrecorder[fsspec]'"
        ) from exc
    return fsspec


class FsspecLocation(Location):
    """Values as files under ``root`` on an fsspec file system.

    Parameters
    ----------
    url_or_fs
        A URL (``s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000``,
        ``sftp://user@host:22/path?key_filename=/home/me/.ssh/id_ed25519``,
        ``http://host/path``), a protocol name (``"s3"``, ``"memory"``) with the path in
        ``root``, or an ``fsspec.AbstractFileSystem`` instance.
    root
        The directory (or bucket and prefix) holding the values; appended to the URL's
        path when both are given.
    read_only
        Decline every write. HTTP locations are always read-only.
    timeout
        Seconds allowed to connect (S3, SFTP, HTTP), so that an unreachable server
        fails with :class:`~simrecorder.errors.StoreConnectionError` in bounded time.
    **storage_options
        Passed to the file system (``key``/``secret``/``endpoint_url`` for S3,
        ``username``/``key_filename``/``password`` for SFTP...). Query parameters of
        the URL are storage options too.

    Notes
    -----
    Writes are atomic: on file systems with a rename (SFTP, local) a value is written
    to a temporary name in the same directory and renamed over the key; on object
    stores (S3, GCS) an object appears whole when its upload completes, and a failed
    upload is aborted. Reads and writes stream in blocks of :data:`BLOCK_BYTES`, so a
    100 MiB value never sits in memory whole.

    Examples
    --------
    >>> location = FsspecLocation("memory://doctest-root")
    >>> location.put("a/b", b"123")
    True
    >>> location.get("a/b"), location.get("missing")
    (b'123', None)
    >>> list(location.keys())
    ['a/b']
    """

    protocol: ClassVar[str] = "fsspec"
    persistent: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True

    def __init__(
        self,
        url_or_fs: Any,
        root: str = "",
        *,
        read_only: bool | None = None,
        timeout: float | None = None,
        **storage_options: Any,
    ) -> None:
        self._fs: Any = None
        self._given_fs: Any = None
        options: dict[str, Any] = {}
        if isinstance(url_or_fs, str):
            scheme, options, path = _parse(url_or_fs)
            self.fs_protocol = scheme
            self.storage_options = {**options, **storage_options}
            self.root = _join(path, root)
        elif hasattr(url_or_fs, "open") and hasattr(url_or_fs, "protocol"):
            kinds = url_or_fs.protocol
            self.fs_protocol = kinds if isinstance(kinds, str) else kinds[0]
            self.storage_options = dict(getattr(url_or_fs, "storage_options", {}))
            self.root = root.rstrip("/")
            self._given_fs = url_or_fs
        else:
            raise InvalidArgumentError(
                f"FsspecLocation takes a URL, a protocol name or an fsspec file system, "
                f"got {type(url_or_fs).__name__}"
            )
        if self.fs_protocol in ("sftp", "ssh") and not self.root.startswith("/"):
            self.root = "/" + self.root
        # the location's own options, from the arguments or else the URL's query
        url_timeout = self.storage_options.pop("timeout", DEFAULT_TIMEOUT)
        url_read_only = self.storage_options.pop("read_only", False)
        self.timeout = float(url_timeout if timeout is None else timeout)
        self.read_only = bool(url_read_only if read_only is None else read_only)
        self.read_only = self.read_only or self.fs_protocol in _READ_ONLY_PROTOCOLS
        self.protocol = self.fs_protocol  # type: ignore[misc]  # the URL scheme, per instance

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FsspecLocation:
        """Open the location a URL names; ``options`` add to its query parameters.

        Examples
        --------
        >>> FsspecLocation.from_url("s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000").url
        's3://bucket/prefix?endpoint_url=http%3A%2F%2F127.0.0.1%3A9000'
        """
        return cls(url, **options)

    # -- identity ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``protocol://[user@host:port]root?public-options`` (no secrets)."""
        base = self._base_url()
        public = {
            name: value
            for name, value in sorted(self.storage_options.items())
            if name not in _SECRET_OPTIONS and isinstance(value, (str, int, float, bool))
        }
        if self.timeout != DEFAULT_TIMEOUT:
            public["timeout"] = self.timeout
        if self.read_only and self.fs_protocol not in _READ_ONLY_PROTOCOLS:
            public["read_only"] = "true"
        return f"{base}?{urlencode(public)}" if public else base

    def _base_url(self) -> str:
        if "://" in self.root:  # HTTP keeps whole URLs as paths
            return self.root
        if self.fs_protocol in ("sftp", "ssh"):
            user = self.storage_options.get("username")
            port = self.storage_options.get("port")
            host = self.storage_options.get("host", "")
            netloc = f"{user + '@' if user else ''}{host}{f':{port}' if port else ''}"
            return f"{self.fs_protocol}://{netloc}{quote(self.root, safe='/')}"
        return f"{self.fs_protocol}://{quote(self.root, safe='/')}"

    @property
    def endpoint(self) -> str:
        """The server this location talks to (for error messages)."""
        options = self.storage_options
        if "endpoint_url" in options:
            return str(options["endpoint_url"])
        if "host" in options:
            return f"{options['host']}:{options.get('port', 22)}"
        return self._base_url()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None  # a client is not shared across processes: made again there
        return state

    # -- the file system --------------------------------------------------------------------

    @property
    def fs(self) -> Any:
        """The fsspec file system (created, and connected, on first use)."""
        if self._fs is None:
            self._fs = self._given_fs if self._given_fs is not None else self._make_fs()
        return self._fs

    def _make_fs(self) -> Any:
        fsspec = _fsspec()
        options = {**self._default_options(), **self.storage_options}
        try:
            fs = fsspec.filesystem(self.fs_protocol, skip_instance_cache=True, **options)
        except ImportError as exc:
            hint = _INSTALL_HINTS.get(self.fs_protocol, f"install fsspec's {self.fs_protocol}")
            raise MissingDependencyError(f"{self._base_url()}: {hint} ({exc})") from exc
        except Exception as exc:  # SFTP connects here
            raise self._translate(exc, "connect") from exc
        if self.fs_protocol in ("s3", "s3a"):
            fs.retries = 2  # s3fs retries 5 times with backoff by default: bound the time
        return fs

    def _default_options(self) -> dict[str, Any]:
        """Time-outs and no listing caches, per kind of file system."""
        if self.fs_protocol in ("s3", "s3a"):
            return {
                "use_listings_cache": False,
                "config_kwargs": {
                    "connect_timeout": self.timeout,
                    "read_timeout": max(self.timeout, 60.0),
                    "retries": {"max_attempts": 2, "mode": "standard"},
                },
            }
        if self.fs_protocol in ("sftp", "ssh"):
            explicit = any(k in self.storage_options for k in ("key_filename", "password", "pkey"))
            return {
                "timeout": self.timeout,
                "banner_timeout": self.timeout,
                "auth_timeout": self.timeout,
                "look_for_keys": not explicit,
                "allow_agent": not explicit,
            }
        if self.fs_protocol in ("http", "https"):
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=60.0)
            return {"client_kwargs": {"timeout": timeout}}
        return {}

    def close(self) -> None:
        """Drop the file system (an SFTP connection is closed)."""
        fs, self._fs = self._fs, None
        if fs is None or fs is self._given_fs:
            return
        client = getattr(fs, "client", None)  # paramiko's SSH client (SFTP)
        if client is not None and hasattr(client, "close"):
            client.close()

    # -- paths ------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        key = check_location_key(key)
        if "://" in self.root:  # HTTP: "?", "#", "%", " " are not literal in a URL
            key = quote(key, safe="/")
        return f"{self.root}/{key}" if self.root else key

    def _relative(self, path: str) -> str | None:
        """The key of a listed path, or ``None`` when it is not under the root."""
        if "://" in self.root:  # HTTP lists whole, quoted URLs
            root, path = self.root.rstrip("/") + "/", unquote(path)
        else:  # some file systems list "/a/b", others "a/b", for the same root
            root, path = self.root.strip("/") + "/", path.lstrip("/")
        if root == "/":
            return path
        return path[len(root) :] if path.startswith(root) else None

    # -- primitives -------------------------------------------------------------------------

    @contextmanager
    def read(self, key: str) -> Iterator[IO[bytes] | None]:
        """See :meth:`Location.read` (the stream reads from the server in blocks)."""
        stream = self._open(key)
        if stream is None:
            yield None
            return
        with stream:
            yield cast(IO[bytes], _Translating(_windowed(stream), self, key))

    def _open(self, key: str) -> Any:
        """The open file under ``key``, or ``None`` when absent (errors translated)."""
        path = self._path(key)
        try:
            if "://" in self.root and _redirects_to_folder(self.fs, path):
                return None
            return _not_a_folder(self.fs.open(path, "rb", block_size=BLOCK_BYTES))
        except SimRecorderError:
            raise
        except Exception as exc:
            if not _absent(exc):
                raise self._translate(exc, "read", key) from exc
            return None

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists` (one metadata request)."""
        if "://" in self.root:  # HTTP cannot tell a folder from a file without a request
            stream = self._open(key)
            if stream is not None:
                stream.close()
            return stream is not None
        path = self._path(key)
        try:
            return bool(self.fs.isfile(path))
        except SimRecorderError:
            raise
        except Exception as exc:
            if not _absent(exc):
                raise self._translate(exc, "check", key) from exc
            return False

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write` (streamed; atomic per key)."""
        path = self._path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
            raise ArgumentTypeError(
                f"cannot write {key!r} to {self.url}: a location stores bytes or a binary "
                f"stream, got {type(data).__name__}"
            )
        if self.read_only:
            return False
        try:
            if self.fs_protocol in _RENAME_PROTOCOLS:
                self._write_renamed(path, data)
            elif isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= BLOCK_BYTES:
                self.fs.pipe_file(path, bytes(data))  # one request
            else:
                self._write_upload(path, data)
        except SimRecorderError:
            raise
        except Exception as exc:
            raise self._translate(exc, "write", key) from exc
        return True

    def _write_renamed(self, path: str, data: Data) -> None:
        parent, _, name = path.rpartition("/")
        temp = f"{parent}/.{name}{_TEMP_MARK}{uuid.uuid4().hex}"
        try:
            out = self.fs.open(temp, "wb", block_size=BLOCK_BYTES)
        except FileNotFoundError:
            self._make_parent(parent)
            out = self.fs.open(temp, "wb", block_size=BLOCK_BYTES)
        try:
            if hasattr(out, "set_pipelined"):  # paramiko: don't wait for each write's reply
                out.set_pipelined(True)
            with out:
                for chunk in iter_chunks(data, COPY_CHUNK_BYTES):
                    out.write(chunk)
            self.fs.mv(temp, path)
        except BaseException:
            self._remove_quietly(temp)
            raise

    def _make_parent(self, parent: str) -> None:
        """``makedirs(parent, exist_ok=True)``, also when another process makes it at
        the same time (fsspec's SFTP checks, then creates: the loser of that race
        gets the server's generic "Failure")."""
        for attempt in range(4):  # each retry gets past a folder another made meanwhile
            try:
                self.fs.makedirs(parent, exist_ok=True)
                return
            except OSError:
                if self.fs.isdir(parent):
                    return
                if attempt == 3:
                    raise

    def _write_upload(self, path: str, data: Data) -> None:
        # autocommit=False: the object appears only on commit(); discard() aborts the upload
        out = self.fs.open(path, "wb", block_size=BLOCK_BYTES, autocommit=False)
        try:
            for chunk in iter_chunks(data, COPY_CHUNK_BYTES):
                out.write(chunk)
            out.close()
        except BaseException:
            try:
                out.discard()
            finally:
                out.closed = True
            raise
        out.commit()

    def _remove_quietly(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except OSError:  # the write's own error is what the caller must see
            pass

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        path = self._path(key)
        self._refuse_read_only(key)
        try:
            if not self.fs.info(path).get("type") == "file":
                return False
            self.fs.rm_file(path)
        except SimRecorderError:
            raise
        except Exception as exc:
            if not _absent(exc):
                raise self._translate(exc, "delete", key) from exc
            return False
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (one recursive listing under the prefix's folder)."""
        folder = prefix.rpartition("/")[0]
        start = f"{self.root}/{folder}".rstrip("/") if folder else self.root
        try:
            found = self.fs.find(start or "/")
        except SimRecorderError:
            raise
        except Exception as exc:
            if not _absent(exc, NotADirectoryError):
                raise self._translate(exc, f"list keys under {prefix!r} of") from exc
            found = []
        if not found:
            self._check_reachable(start, prefix)
        keys = []
        for path in found:
            key = self._relative(path)
            if key is None or not key.startswith(prefix) or _TEMP_MARK in key:
                continue
            try:
                keys.append(check_location_key(key))
            except ValueError:  # a file no key can name (e.g. served by HTTP): not ours
                continue
        yield from sorted(keys)

    def _check_reachable(self, folder: str, prefix: str) -> None:
        """Raise if the server is down (fsspec's ``find`` reports that as "no files")."""
        try:
            self.fs.ls(folder or "/")
        except SimRecorderError:
            raise
        except Exception as exc:
            if not _absent(exc, NotADirectoryError):
                raise self._translate(exc, f"list keys under {prefix!r} of") from exc

    # -- errors -----------------------------------------------------------------------------

    def _translate(self, exc: BaseException, action: str, key: str | None = None) -> Exception:
        """The named simrecorder error for a client library's exception."""
        where = f"{action} {key!r} in {self.url}" if key else f"{action} {self.url}"
        kind, exc = _diagnose(exc)
        if kind == "auth":
            return AuthenticationFailedError(
                f"cannot {where}: {self.endpoint} refused the credentials or access ({exc})"
            )
        if kind == "connection":
            return StoreConnectionError(f"cannot {where}: {self.endpoint} unreachable ({exc})")
        if kind == "missing":
            return StoreNotFoundError(f"cannot {where}: not found on {self.endpoint} ({exc})")
        if kind == "full":
            return StoreFullError(f"cannot {where}: {self.endpoint} is full ({exc})")
        if action == "write":
            return StoreWriteError(f"cannot {where}: {type(exc).__name__}: {exc}")
        return StoreConnectionError(f"cannot {where}: {type(exc).__name__}: {exc}")


def _absent(exc: BaseException, *also: type[BaseException]) -> bool:
    """Whether ``exc`` says "no such value" (not a server that could not be reached).

    fsspec's HTTP file system reports a refused connection as ``FileNotFoundError``
    from the connection error: the cause decides.
    """
    if not isinstance(exc, (FileNotFoundError, IsADirectoryError, *also)):
        return False
    cause = exc.__cause__ or exc.__context__
    return cause is None or _classify(cause) not in ("connection", "auth")


def _classes(module: str, *names: str) -> tuple[type, ...]:
    """Exception classes of a client library, if that library is loaded at all."""
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names if hasattr(loaded, name))


def _classify(exc: BaseException) -> str | None:
    """``"auth"``, ``"connection"``, ``"missing"``, ``"full"`` or ``None``."""
    return _diagnose(exc)[0]


def _diagnose(exc: BaseException) -> tuple[str | None, BaseException]:
    """The kind of failure (see :func:`_classify`) and the exception in the chain that says it.

    The whole chain of causes is read, and a refused login or connection anywhere in
    it wins over "not found" (fsspec's HTTP file system reports an unreachable server
    as a missing file).
    """
    kinds = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kinds.append((_classify_one(current), current))
        current = current.__cause__ or current.__context__
    for kind in ("auth", "connection", "missing", "full"):
        for found, cause in kinds:
            if found == kind:
                return kind, cause
    return None, exc


def _classify_one(exc: BaseException) -> str | None:
    auth = (
        PermissionError,
        *_classes("paramiko.ssh_exception", "AuthenticationException"),
        *_classes("botocore.exceptions", "NoCredentialsError", "PartialCredentialsError"),
    )
    connection = (
        ConnectionError,
        TimeoutError,
        *_classes("paramiko.ssh_exception", "NoValidConnectionsError", "SSHException"),
        *_classes("botocore.exceptions", "ConnectionError", "HTTPClientError"),
        *_classes("aiohttp", "ClientConnectionError", "ServerTimeoutError"),
        *_classes("fsspec.exceptions", "FSTimeoutError"),
    )
    status = getattr(exc, "status", None)
    if isinstance(exc, auth) or status in (401, 403):
        return "auth"
    if isinstance(exc, connection):
        return "connection"
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return "full"
    return None


def _redirects_to_folder(fs: Any, url: str) -> bool:
    """Whether an HTTP server redirects ``url`` to a folder listing (``dir`` -> ``dir/``)."""
    return str(fs.info(url).get("url", "")).endswith("/")


def _not_a_folder(stream: Any) -> Any:
    """``stream``, or ``None`` (closed) when it opened a folder rather than a value.

    S3 opens a "folder" (a prefix of other keys) as an empty object; an SFTP server
    opens a directory and fails its reads.
    """
    details = getattr(stream, "details", None) or {}
    is_folder = details.get("type") == "directory"
    if not is_folder and hasattr(stream, "stat") and hasattr(stream, "readv"):  # paramiko
        is_folder = stat.S_ISDIR(stream.stat().st_mode or 0)
    if is_folder:
        stream.close()
        return None
    return stream


def _windowed(stream: Any) -> Any:
    """Read paramiko's SFTP files a window at a time, many requests in flight.

    paramiko otherwise waits for each 32 KiB reply in turn (20 MiB took 5 s here, 0.2 s
    windowed); its ``prefetch()`` would hold the whole value in memory.
    """
    if hasattr(stream, "readv") and hasattr(stream, "stat"):
        return _SftpReader(stream)
    return stream


class _SftpReader(io.RawIOBase):
    """A readable, seekable stream over a paramiko file, one window in memory at most."""

    def __init__(self, file: Any, window: int = 4 << 20) -> None:
        super().__init__()
        self._file = file
        self._size = int(file.stat().st_size or 0)
        self._window = window
        self._position = 0
        self._buffer = b""
        self._buffer_start = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._position
        pieces = []
        while size > 0 and self._position < self._size:
            start = self._position - self._buffer_start
            if not 0 <= start < len(self._buffer):
                self._fill()
                start = 0
            piece = self._buffer[start : start + size]
            pieces.append(piece)
            self._position += len(piece)
            size -= len(piece)
        return b"".join(pieces)

    def _fill(self) -> None:
        length = min(self._window, self._size - self._position)
        self._buffer = b"".join(self._file.readv([(self._position, length)]))
        self._buffer_start = self._position

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _Translating:
    """A read stream whose client-library errors become simrecorder errors."""

    def __init__(self, stream: IO[bytes], location: FsspecLocation, key: str) -> None:
        self._stream = stream
        self._location = location
        self._key = key

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except SimRecorderError:
            raise
        except Exception as exc:
            raise self._location._translate(exc, "read", self._key) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def __enter__(self) -> _Translating:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stream.close()


def _parse(url: str) -> tuple[str, dict[str, Any], str]:
    """``(protocol, storage options, root)`` of a URL, or of a bare protocol name."""
    if "://" not in url:
        return url, {}, ""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = {name: _coerce(value) for name, value in parse_qsl(parts.query)}
    path = parts.path.rstrip("/")
    if scheme in ("http", "https"):  # the path stays quoted: it is a URL
        return scheme, options, f"{scheme}://{parts.netloc}{path}"
    if scheme in ("sftp", "ssh"):
        if parts.hostname:
            options.setdefault("host", parts.hostname)
        if parts.port:
            options.setdefault("port", parts.port)
        if parts.username:
            options.setdefault("username", parts.username)
        if parts.password:
            options.setdefault("password", parts.password)
        return scheme, options, unquote(path) or "/"
    return scheme, options, unquote(f"{parts.netloc}{path}")


def _join(path: str, root: str) -> str:
    root = root.strip("/")
    if not root:
        return path
    return f"{path.rstrip('/')}/{root}" if path else root
