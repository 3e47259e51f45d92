"""File-system plumbing shared by everything that writes files: atomic writes (temp file
+ rename, optional fsync), the naming of temp files, key containment, advisory file
locks (with an opt-out) and retry with backoff.

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
  ``OSError`` :class:`~simrecorder.errors.StoreWriteError`; each message names the path;
- a key never leads out of its directory, through ``..`` or through a symbolic link
  (:func:`contained_path`);
- writers serialise with :class:`FileLock` (``flock``), which ``locking=False`` (or the
  environment variable ``SIMRECORDER_FILE_LOCKING=FALSE``) turns off for file systems
  where ``flock`` fails (Lustre without ``-o flock``, DVS, some NFS), as h5py's
  ``File(locking=...)``/``HDF5_USE_FILE_LOCKING`` do;
- :func:`retry` is the one sleep-and-retry loop (exponential backoff).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import secrets
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import IO, Any, TypeVar

from ._keys import validate_key
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    ReadOnlyError,
    StoreFullError,
    StoreLockedError,
    StoreWriteError,
)

__all__ = [
    "COPY_CHUNK_BYTES",
    "TEMP_PREFIX",
    "AtomicFile",
    "FileLock",
    "atomic_write",
    "contained_path",
    "fsync_path",
    "is_temp_name",
    "locking_enabled",
    "retry",
    "temp_path",
    "translate_os_error",
]

_T = TypeVar("_T")

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


def temp_path(path: str | os.PathLike[str]) -> str:
    """A fresh temp file name in the directory of ``path`` (listings skip it).

    Examples
    --------
    >>> temp_path("/d/value").startswith("/d/" + TEMP_PREFIX)
    True
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))


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
    absolute keys, no empty parts) and the joined path must stay under ``root``, also
    once symbolic links inside ``root`` are followed (a link to a place outside is
    refused, so nothing is read or written there).

    Raises
    ------
    InvalidKeyError
        The key is invalid or would leave ``root`` (by its name or through a link).

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
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if real != path and os.path.commonpath([real_base, real]) != real_base:
        raise InvalidKeyError(
            f"invalid key {key!r}: it leaves the directory {base} through a symlink "
            f"(it leads to {real})"
        )
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
    temp
        The temp file's path (default: a :data:`TEMP_PREFIX` name beside ``path``), for
        a store whose recovery and listings know another naming. It must be in the
        directory of ``path``.
    translate
        Raise file-system failures as simrecorder's errors (default; see
        :func:`translate_os_error`), or, ``False``, as the ``OSError`` itself, for a
        caller that names the failure in its own terms. Either way the temp file is
        removed.

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

    A temp name of the caller's, padding by a hole, and the raw ``OSError``:

    >>> with AtomicFile(target, temp=target + ".1.tmp", translate=False) as out:
    ...     _ = out.write(b"ab")
    ...     out.extend(4)
    ...     out.commit()
    >>> Path(target).read_bytes()
    b'ab\\x00\\x00'
    >>> AtomicFile(os.path.join(target + "-missing", "x"), translate=False)
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        durable: bool = False,
        temp: str | None = None,
        translate: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self.durable = durable
        self.size = 0
        self.translate = translate
        self.committed = False
        directory = os.path.dirname(os.path.abspath(self.path))
        self.temp = temp or os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
        try:
            # a file object, not a raw descriptor: an interrupt that lands as open()
            # returns drops the object, which closes its descriptor (a raw fd would leak)
            self._file: io.FileIO | None = io.FileIO(self.temp, "xb")
        except OSError as exc:
            if not self.translate:
                raise
            raise translate_os_error(exc, self.path) from exc

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (written whole); return its length."""
        if self._file is None:
            raise StoreWriteError(f"cannot write {self.path}: the temp file is closed")
        view = memoryview(data).cast("B")
        size = view.nbytes
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except OSError as exc:
            self.discard()
            if not self.translate:
                raise
            raise translate_os_error(exc, self.path) from exc
        self.size += size
        return self.size

    def extend(self, size: int) -> None:
        """Make the file ``size`` bytes long if it is shorter: a hole that reads as
        zeros (padding that costs no disk where the file system has sparse files)."""
        if self._file is None:
            raise StoreWriteError(f"cannot write {self.path}: the temp file is closed")
        if size <= self.size:
            return
        try:
            os.ftruncate(self._file.fileno(), size)
        except OSError as exc:
            self.discard()
            if not self.translate:
                raise
            raise translate_os_error(exc, self.path) from exc
        self.size = size

    def commit(self) -> None:
        """Close the temp file and rename it over the destination."""
        if self._file is None:
            raise StoreWriteError(f"cannot commit {self.path}: the temp file is closed")
        try:
            if self.durable:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self.temp, self.path)
            self.committed = True
            if self.durable:
                fsync_path(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            if not self.committed:
                self.discard()
            if not self.translate:
                raise
            raise translate_os_error(exc, self.path) from exc

    def discard(self) -> None:
        """Close and remove the temp file (the destination is untouched)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
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
    data: bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes | bytearray | memoryview],
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


# -- locks --------------------------------------------------------------------------------------

_NO_LOCKS = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, 524}
)  # 524: ENOTSUPP of Lustre without -o flock and of DVS


def locking_enabled(locking: bool | None = None) -> bool:
    """Whether to take file locks: ``locking`` when given, else the environment.

    ``None`` reads ``SIMRECORDER_FILE_LOCKING`` (``FALSE``/``0``/``no``/``off`` turn
    locks off, as ``HDF5_USE_FILE_LOCKING=FALSE`` does for HDF5).

    Examples
    --------
    >>> locking_enabled(False)
    False
    """
    if locking is not None:
        return bool(locking)
    value = os.environ.get("SIMRECORDER_FILE_LOCKING", "").strip().lower()
    return value not in ("false", "0", "no", "off")


class FileLock:
    """An exclusive advisory lock (``flock``) on a file or directory, with an opt-out.

    The lock belongs to one open file description, so two ``FileLock`` objects exclude
    each other in one process (threads) as in two; it goes away with the process, so a
    killed holder never leaves a stale lock.

    Parameters
    ----------
    path
        The lock file (created when missing) or an existing directory.
    locking
        ``False`` makes the lock a no-op, for file systems where ``flock`` fails
        (Lustre without ``-o flock``, DVS, some NFS): the caller then promises one
        writer at a time. ``None`` (default) reads ``SIMRECORDER_FILE_LOCKING``.
    blocking
        Wait for the lock (default), or raise :class:`StoreLockedError` at once when
        another holder has it.
    what
        What the lock protects, for error messages (default: ``path``).

    Raises
    ------
    StoreLockedError
        ``blocking=False`` and another holder has the lock.
    StoreWriteError
        The file system refuses ``flock`` (the message names ``locking=False``).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "lock")
    >>> with FileLock(path):
    ...     FileLock(path, blocking=False).acquire()
    Traceback (most recent call last):
    ...
    simrecorder.errors.StoreLockedError: ... is locked by another writer ...
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        locking: bool | None = None,
        blocking: bool = True,
        what: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.locking = locking_enabled(locking)
        self.blocking = blocking
        self.what = what or self.path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (always ``False`` with ``locking=False``)."""
        return self._fd is not None

    def acquire(self) -> FileLock:
        """Take the lock (see the class); return ``self``."""
        if not self.locking or self._fd is not None:
            return self
        fd = _open_for_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.what} is locked by another writer (this or another process); "
                "wait for it to finish or open for reading only"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise _lock_error(exc, self.path) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (nothing happens when it is not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @staticmethod
    def is_held_elsewhere(path: str | os.PathLike[str]) -> bool:
        """Whether another open file description holds a ``flock`` on ``path`` now."""
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False


def _open_for_lock(path: str) -> int:
    flags = getattr(os, "O_CLOEXEC", 0)
    try:
        if os.path.isdir(path):
            return os.open(path, os.O_RDONLY | flags)
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except OSError as exc:
        raise translate_os_error(exc, path, "open the lock file") from exc


def _lock_error(exc: OSError, path: str) -> OSError:
    if exc.errno in _NO_LOCKS:
        return StoreWriteError(
            f"cannot lock {path}: this file system does not support flock "
            f"({exc.strerror or exc}); pass locking=False (or set "
            "SIMRECORDER_FILE_LOCKING=FALSE) and make sure one process writes at a time"
        )
    return translate_os_error(exc, path, "lock")


# -- retry --------------------------------------------------------------------------------------


def retry(
    action: Callable[[], _T],
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = OSError,
    attempts: int = 5,
    delay: float = 0.005,
    backoff: float = 2.0,
    max_delay: float = 1.0,
) -> _T:
    """Call ``action`` until it returns, sleeping with exponential backoff in between.

    Parameters
    ----------
    action
        What to try.
    retry_on
        The exceptions that mean "try again"; any other propagates at once.
    attempts
        How many calls at most; the last failure propagates.
    delay
        Seconds to sleep after the first failure; each further sleep is ``backoff``
        times longer, at most ``max_delay``.

    Examples
    --------
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise TimeoutError("not yet")
    ...     return "done"
    >>> retry(flaky, TimeoutError, delay=0.001)
    'done'
    >>> len(calls)
    3
    """
    if attempts < 1:
        raise InvalidArgumentError(f"retry needs attempts >= 1; got {attempts!r}")
    pause = delay
    for _ in range(attempts - 1):
        try:
            return action()
        except retry_on:
            pass
        time.sleep(pause)
        pause = min(pause * backoff, max_delay)
    return action()
