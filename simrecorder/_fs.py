"""File-system plumbing shared by everything that writes files: atomic writes (temp file
+ rename, optional fsync), the naming of temp files, and key containment.

One home for these rules, so every store writes the same way:

- a value is written to a temp file in the destination's directory and renamed over
  the destination, so a reader (or a process killed mid-write) sees the old file or
  the new one, never a part;
- temp files are named :data:`TEMP_PREFIX` + random hex, hidden, and every listing
  skips them (:func:`is_temp_name`); a write that fails removes its temp file;
- ``durable=True`` also ``fsync``\\ s the file before the rename and the directory
  after it (survives a power cut, not only a crash of the process);
- ``ENOSPC``/``EDQUOT`` become :class:`~simrecorder.errors.StoreFullError`,
  ``EACCES``/``EPERM``/``EROFS`` :class:`~simrecorder.errors.ReadOnlyError`, any other
  ``OSError`` :class:`~simrecorder.errors.StoreWriteError`; each message names the path.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any

from ._keys import validate_key
from .errors import (
    ArgumentTypeError,
    InvalidKeyError,
    ReadOnlyError,
    StoreFullError,
    StoreWriteError,
)

__all__ = [
    "COPY_CHUNK_BYTES",
    "TEMP_PREFIX",
    "AtomicFile",
    "atomic_write",
    "contained_path",
    "fsync_path",
    "is_temp_name",
    "translate_os_error",
]

#: Name prefix of temp files (listings skip names that start with it).
TEMP_PREFIX = ".simrecorder-tmp-"

#: Size of the pieces streams are copied in (large values never sit in memory whole).
COPY_CHUNK_BYTES = 1 << 20

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :class:`AtomicFile`'s temp files.

    Examples
    --------
    >>> is_temp_name(".simrecorder-tmp-3f2a")
    True
    >>> is_temp_name("data.bin")
    False
    """
    return name.startswith(TEMP_PREFIX)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or directory by name (the page cache survives a crash of the
    process, not of the machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def translate_os_error(
    exc: OSError, path: str | os.PathLike[str], action: str = "write"
) -> OSError:
    """An ``OSError`` from the file system as simrecorder's error naming ``path``.

    Returns :class:`StoreFullError` for a full disk or quota, :class:`ReadOnlyError` for
    a refused permission or a read-only file system, :class:`StoreWriteError` else.
    simrecorder's own errors are returned unchanged.

    Examples
    --------
    >>> import errno
    >>> translate_os_error(OSError(errno.ENOSPC, "No space left on device"), "/d/x")
    StoreFullError('cannot write /d/x: the disk is full (No space left on device)')
    """
    if isinstance(exc, (StoreWriteError, ReadOnlyError)):
        return exc
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return StoreFullError(f"cannot {action} {os.fspath(path)}: the disk is full ({reason})")
    if exc.errno in _DENIED:
        return ReadOnlyError(f"cannot {action} {os.fspath(path)}: permission denied ({reason})")
    return StoreWriteError(f"cannot {action} {os.fspath(path)}: {reason}")


def contained_path(root: str | os.PathLike[str], key: str) -> str:
    """The path of ``key`` (``a/b/c``) under the directory ``root``.

    The key is checked with :func:`~simrecorder._keys.validate_key` (no ``..``, no
    absolute keys, no empty parts) and the joined path must stay under ``root``.

    Raises
    ------
    InvalidKeyError
        The key is invalid or would leave ``root``.

    Examples
    --------
    >>> contained_path("/data", "a/b")
    '/data/a/b'
    >>> contained_path("/data", "../etc/passwd")
    Traceback (most recent call last):
    ...
    simrecorder.errors.InvalidKeyError: invalid key '../etc/passwd': part '..' is not allowed
    """
    validate_key(key)
    base = os.path.abspath(os.fspath(root))
    path = os.path.normpath(os.path.join(base, *key.split("/")))
    if os.path.commonpath([base, path]) != base or path == base:
        raise InvalidKeyError(f"invalid key {key!r}: it leaves the directory {base}")
    return path


class AtomicFile:
    """A file written under a temp name and renamed into place by :meth:`commit`.

    Leaving the ``with`` block without :meth:`commit` (or on an exception) removes the
    temp file; the destination keeps its old content.

    Parameters
    ----------
    path
        The destination. Its directory must exist.
    durable
        ``fsync`` the file before the rename and the directory after it.

    Examples
    --------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "value")
    >>> with AtomicFile(target) as out:
    ...     _ = out.write(b"hello")
    ...     out.commit()
    >>> from pathlib import Path
    >>> Path(target).read_bytes()
    b'hello'
    """

    def __init__(self, path: str | os.PathLike[str], durable: bool = False) -> None:
        self.path = os.fspath(path)
        self.durable = durable
        self.size = 0
        directory = os.path.dirname(os.path.abspath(self.path))
        self.temp = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
        try:
            self._fd: int | None = os.open(
                self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666
            )
        except OSError as exc:
            raise translate_os_error(exc, self.path) from exc
        self.committed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (written whole); return its length."""
        if self._fd is None:
            raise StoreWriteError(f"cannot write {self.path}: the temp file is closed")
        view = memoryview(data).cast("B")
        size = view.nbytes
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.discard()
            raise translate_os_error(exc, self.path) from exc
        self.size += size
        return self.size

    def commit(self) -> None:
        """Close the temp file and rename it over the destination."""
        if self._fd is None:
            raise StoreWriteError(f"cannot commit {self.path}: the temp file is closed")
        try:
            if self.durable:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self.temp, self.path)
            self.committed = True
            if self.durable:
                fsync_path(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            if not self.committed:
                self.discard()
            raise translate_os_error(exc, self.path) from exc

    def discard(self) -> None:
        """Close and remove the temp file (the destination is untouched)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if not self.committed:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.discard()


def _chunks(data: Any) -> Iterable[Any]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (data,)
    if hasattr(data, "read"):
        stream: IO[bytes] = data
        return iter(lambda: stream.read(COPY_CHUNK_BYTES), b"")
    return data  # an iterable of bytes-like chunks


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes],
    durable: bool = False,
    make_dirs: bool = False,
) -> int:
    """Write ``data`` to ``path`` atomically (temp file + rename); return the size.

    Parameters
    ----------
    path
        The destination file.
    data
        Bytes-like, a readable binary stream (copied in :data:`COPY_CHUNK_BYTES`
        pieces) or an iterable of bytes-like chunks.
    durable
        ``fsync`` the file and its directory (see :class:`AtomicFile`).
    make_dirs
        Create missing parent directories.

    Raises
    ------
    StoreFullError
        The disk or quota is full (the temp file is removed).
    ReadOnlyError
        Permission denied or read-only file system.
    StoreWriteError
        Any other ``OSError``.

    Examples
    --------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "sub", "value")
    >>> atomic_write(target, [b"ab", b"cd"], make_dirs=True)
    4
    """
    if make_dirs:
        parent = os.path.dirname(os.path.abspath(os.fspath(path)))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, parent, "create the directory") from exc
    with AtomicFile(path, durable=durable) as out:
        for chunk in _chunks(data):
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise ArgumentTypeError(
                    f"cannot write {os.fspath(path)}: got a {type(chunk).__name__}, not bytes"
                )
            out.write(chunk)
        out.commit()
        return out.size
