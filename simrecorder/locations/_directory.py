"""A location in a directory: one file per key."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .._fs import (
    AtomicFile,
    FileLock,
    contained_path,
    is_temp_name,
    locking_enabled,
    translate_os_error,
)
from .._keys import check_path_parts, validate_key
from ..errors import (
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    StoreFormatError,
    StoreFullError,
    StoreNotFoundError,
    StoreWriteError,
)
from .base import (
    Data,
    Location,
    LocationLock,
    acquire_within,
    check_data,
    is_lock_name,
    iter_chunks,
    lock_key,
    rewind,
    stream_position,
)

__all__ = ["DirectoryLocation"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OPTIONS = ("durable", "max_size", "free_disk_size", "read_only", "create", "locking")


class DirectoryLocation(Location):
    """Values as files under a directory: key ``a/b/c`` is the file ``root/a/b/c``.

    Writes are atomic (a temp file in the destination's directory renamed over it, see
    :mod:`simrecorder._fs`), so a reader or a process killed mid-write sees the old
    value or the new one; streams are copied in 1 MiB pieces and reads hand out the open
    file, so large values never sit in memory.

    Parameters
    ----------
    root
        The directory (created when missing and ``create`` is true).
    durable
        ``fsync`` each file and its directory (survives a power cut; slower).
    max_size
        Total bytes of values this location accepts; a write that would go over is
        declined (``False``). The size is computed once by walking the directory when
        the location is opened, then tracked on every write and delete made through
        this object: writes by other processes or other objects are seen only after
        :meth:`refresh_size` or on reopening.
    free_disk_size
        Bytes to keep free on the disk: a write that would leave less is declined.
    read_only
        Decline every write; :meth:`delete` raises :class:`ReadOnlyError`.
    create
        Create ``root`` when it is missing (else :class:`StoreNotFoundError`).
    locking
        Whether :meth:`lock` takes ``flock`` locks. ``False`` makes locks no-ops, for
        file systems where ``flock`` fails (Lustre without ``-o flock``, DVS, some
        NFS), like h5py's ``locking=False``: the caller then promises one writer at a
        time. ``None`` (default) reads ``SIMRECORDER_FILE_LOCKING`` (``FALSE`` turns
        locks off).

    Notes
    -----
    A disk that fills up *during* a write (``ENOSPC``, ``EDQUOT``) makes the write
    decline, like a configured limit: the temp file is removed and a seekable stream is
    rewound, so a :class:`~simrecorder.locations.Fanout` spills to its next location.
    Any other file-system failure raises (:class:`StoreWriteError`,
    :class:`ReadOnlyError` for a refused permission). A key whose folder is a file (or
    whose file is a folder) raises :class:`KeyConflictError`.

    Temp files are named ``.simrecorder-tmp-*`` and never listed; a process killed
    mid-write leaves its temp file behind (no key refers to it; see
    :meth:`remove_stale_temp_files`). Key parts with that prefix are refused.

    :meth:`lock` ``"writer"`` is an ``flock`` on the file ``root/.simrecorder-lock-writer``
    (``"a/writer"``: ``root/a/.simrecorder-lock-writer``, so a view's lock is the lock of
    a location rooted at its folder). The file stays (it is never a key); the lock
    goes with its holder's process, so a killed writer never leaves a stale lock.
    Key parts starting with ``.simrecorder-lock-`` are refused.

    Examples
    --------
    >>> import tempfile
    >>> loc = DirectoryLocation(tempfile.mkdtemp())
    >>> loc.put("a/b", b"value")
    True
    >>> list(loc.keys())
    ['a/b']
    """

    protocol: ClassVar[str] = "file"
    persistent: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
    supports_locking = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        durable: bool = False,
        max_size: int | None = None,
        free_disk_size: int | None = None,
        read_only: bool = False,
        create: bool = True,
        locking: bool | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.durable = bool(durable)
        self.max_size = _check_size("max_size", max_size)
        self.free_disk_size = _check_size("free_disk_size", free_disk_size)
        self.read_only = bool(read_only)
        self.create = bool(create)
        self.locking = None if locking is None else bool(locking)
        self._lock = threading.Lock()
        self._open_root()
        self._size: int | None = None
        if self.max_size is not None:
            self.refresh_size()

    def _open_root(self) -> None:
        if os.path.isdir(self.root):
            return
        if os.path.exists(self.root):
            raise StoreNotFoundError(
                f"{self.root} is not a directory: cannot open a location there"
            )
        if not self.create or self.read_only:
            raise StoreNotFoundError(f"no directory {self.root} (pass create=True to make it)")
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, self.root, "create the directory") from exc

    # -- identity ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``file:///abs/path`` plus ``?option=value`` for options that are not default."""
        query = {name: _format(getattr(self, name)) for name in _OPTIONS[:4] if getattr(self, name)}
        if self.locking is False:
            query["locking"] = "0"
        base = "file://" + quote(self.root)
        return f"{base}?{urlencode(query)}" if query else base

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DirectoryLocation:
        """Open ``file:///abs/path?durable=1&max_size=N&free_disk_size=N&read_only=1&
        locking=0`` (``options`` override the URL's).

        Raises
        ------
        InvalidArgumentError
            Another scheme, a remote host, or an unknown or malformed option.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "file":
            raise InvalidArgumentError(f"{cls.__name__} takes file:// URLs; got {url!r}")
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgumentError(
                f"file URL {url!r} names the host {parts.netloc!r}: only local paths "
                "(file:///abs/path) are directory locations"
            )
        settings: dict[str, Any] = {}
        for name, text in parse_qsl(parts.query, keep_blank_values=True):
            settings[name] = _parse_option(name, text, url)
        settings.update(options)
        return cls(unquote(parts.path), **settings)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.root, self.durable, self.max_size, self.free_disk_size, self.read_only,
             self.create, self.locking),
        )  # fmt: skip

    # -- size -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes held in values (tracked when ``max_size`` is set, else walked now)."""
        if self._size is None:
            return self._walk_size()
        return self._size

    def refresh_size(self) -> int:
        """Walk the directory again to learn writes made by others; return the size."""
        size = self._walk_size()
        with self._lock:
            self._size = size
        return size

    def _walk_size(self) -> int:
        total = 0
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [name for name in dirnames if not is_temp_name(name)]
            for name in filenames:
                if not (is_temp_name(name) or is_lock_name(name)):
                    total += _file_size(os.path.join(directory, name))
        return total

    def remove_stale_temp_files(self, older_than: float = 3600.0) -> int:
        """Remove temp files that writers killed mid-write left behind; return how many.

        Only temp files not modified for ``older_than`` seconds are removed, so the
        temp file of a write in progress (in any process) is left alone.
        """
        cutoff = time.time() - older_than
        removed = 0
        for directory, _, filenames in os.walk(self.root):
            for name in filenames:
                path = os.path.join(directory, name)
                try:
                    if is_temp_name(name) and os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise translate_os_error(exc, path, "remove the temp file") from exc
        return removed

    # -- primitives -------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        check_path_parts(key, repr(self))
        if any(is_temp_name(part) or is_lock_name(part) for part in key.split("/")):
            raise InvalidKeyError(
                f"invalid key {key!r} for {self!r}: a part starting with '.simrecorder-tmp-' "
                "or '.simrecorder-lock-' is the name of a temp file or a lock"
            )
        return contained_path(self.root, key)

    # -- locks ------------------------------------------------------------------------------

    def lock(self, name: str = "writer", timeout: float | None = 0) -> LocationLock:
        """See :meth:`Location.lock`: an ``flock`` on ``root/.simrecorder-lock-<name>``
        (a no-op with ``locking=False``).

        Raises
        ------
        StoreLockedError
            Another writer holds it (in this process or another).
        StoreWriteError
            The file system refuses ``flock``: open the location with
            ``locking=False`` (``?locking=0``).
        """
        stored = lock_key(name)
        path = contained_path(self.root, stored)
        return acquire_within(lambda: self._take(name, path), timeout)

    def _take(self, name: str, path: str) -> LocationLock:
        what = f"{self!r} (lock {name!r}, file {path})"
        if locking_enabled(self.locking):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                raise translate_os_error(
                    exc, os.path.dirname(path), "create the directory"
                ) from exc
        held = FileLock(path, locking=self.locking, blocking=False, what=what).acquire()
        return _DirectoryLock(self, name, held)

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read` (yields the open file)."""
        return _open_file(self._path(key))

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return os.path.isfile(self._path(key))

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        path = self._path(key)
        check_data(self, key, data)
        if self.read_only:
            return False
        position = None if isinstance(data, (bytes, bytearray, memoryview)) else (
            stream_position(data))  # fmt: skip
        known = _known_size(data, position)
        if known is not None and not self._has_room(path, known, temp_written=False):
            return False
        try:
            stored = self._write_file(key, path, data)
        except StoreFullError:
            stored = False
        except BaseException:
            self._prune(path)  # folders made for a write that failed
            raise
        if not stored:
            if position is not None:
                rewind(data, position)  # type: ignore[arg-type]
            self._prune(path)
        return stored

    def _write_file(self, key: str, path: str, data: Data) -> bool:
        for attempt in range(3):  # a concurrent delete may remove the folder just made
            self._make_parents(key, path)
            try:
                out = AtomicFile(path, durable=self.durable)
            except StoreWriteError as exc:
                if attempt < 2 and isinstance(exc.__cause__, FileNotFoundError):
                    continue
                raise
            break
        with out:
            budget = None if self.max_size is None else self.max_size - self.size + _file_size(
                path)  # fmt: skip
            for chunk in iter_chunks(data):
                out.write(chunk)
                if budget is not None and out.size > budget:
                    return False
            with self._lock:
                if not self._has_room(path, out.size, temp_written=True):
                    return False
                old = _file_size(path)
                if os.path.isdir(path):
                    raise self._conflict(key, f"{key!r} is a folder of other keys")
                out.commit()
                if self._size is not None:
                    self._size += out.size - old
        return True

    def _has_room(self, path: str, size: int, temp_written: bool) -> bool:
        if self.max_size is not None and self.size - _file_size(path) + size > self.max_size:
            return False
        if self.free_disk_size is not None:
            free = shutil.disk_usage(self.root).free
            if free - (0 if temp_written else size) < self.free_disk_size:
                return False
        return True

    def _make_parents(self, key: str, path: str) -> None:
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._conflict(key, "a part of its folder is a value") from None
        except OSError as exc:
            raise translate_os_error(exc, parent, "create the directory") from exc

    def _conflict(self, key: str, why: str) -> KeyConflictError:
        return KeyConflictError(f"{self!r}: cannot write {key!r}: {why}")

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete` (empty folders left behind are removed)."""
        path = self._path(key)
        self._refuse_read_only(key)
        with self._lock:
            size = _file_size(path)
            if os.path.isdir(path):
                return False
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            except OSError as exc:
                raise translate_os_error(exc, path, "delete") from exc
            if self._size is not None:
                self._size -= size
        self._prune(path)
        return True

    def _prune(self, path: str) -> None:
        """Remove the empty folders above ``path`` (never the root)."""
        directory = os.path.dirname(path)
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (a walk in key order; temp files are skipped)."""
        folder, _, start = prefix.rpartition("/")
        if folder:
            try:
                validate_key(folder)
            except InvalidKeyError:
                return  # no valid key starts with an invalid folder ("../", "a//")
            base = os.path.join(self.root, *folder.split("/"))
            yield from _walk(base, folder + "/", start)
        else:
            yield from _walk(self.root, "", start)


class _DirectoryLock(LocationLock):
    """An ``flock`` held on a directory location (see :meth:`DirectoryLocation.lock`)."""

    def __init__(self, location: Location, name: str, held: FileLock) -> None:
        super().__init__(location, name)
        self._file = held

    def _release(self) -> None:
        self._file.release()


def _walk(directory: str, key_prefix: str, start: str) -> Iterator[str]:
    """Keys under ``directory`` whose first part starts with ``start``, in key order.

    Sorting a folder ``a`` as ``"a/"`` puts its keys where they fall among the keys
    next to it (``"a-c" < "a/b" < "a0"``), so the walk is sorted without collecting.
    """
    try:
        with os.scandir(directory) as found:
            entries = []
            for entry in found:
                if not entry.name.startswith(start) or is_temp_name(entry.name):
                    continue
                if is_lock_name(entry.name):
                    continue
                folder = entry.is_dir(follow_symlinks=False)
                entries.append((entry.name + "/" if folder else entry.name, folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise StoreFormatError(f"cannot list {directory}: {exc.strerror or exc}") from exc
    for name, folder in sorted(entries):
        if folder:
            yield from _walk(os.path.join(directory, name[:-1]), key_prefix + name, "")
        elif _valid_text(name):
            yield key_prefix + name


def _valid_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes on disk: not a key simrecorder wrote
        return False
    return True


@contextmanager
def _open_file(path: str) -> Iterator[IO[bytes] | None]:
    try:
        stream = open(path, "rb")  # closed below, after the consumer
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        stream = None
    except OSError as exc:
        raise StoreFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stream is None:
        yield None
        return
    with stream:
        yield stream


def _file_size(path: str) -> int:
    try:
        stat = os.stat(path)
    except OSError:
        return 0
    return stat.st_size if not os.path.isdir(path) else 0


def _known_size(data: Data, position: int | None) -> int | None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).nbytes
    if position is None:
        return None
    stream: IO[bytes] = data
    try:
        end = stream.seek(0, os.SEEK_END)
    finally:
        stream.seek(position)
    return max(end - position, 0)


def _check_size(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{name} must be a number of bytes >= 0 or None; got {value!r}")
    return value


def _format(value: object) -> str:
    return "1" if value is True else str(value)


def _parse_option(name: str, text: str, url: str) -> object:
    if name in ("durable", "read_only", "create", "locking"):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif name in ("max_size", "free_disk_size") and text.isdigit():
        return int(text)
    elif name not in _OPTIONS:
        raise InvalidArgumentError(
            f"unknown option {name!r} in {url!r}; a file:// location takes {', '.join(_OPTIONS)}"
        )
    raise InvalidArgumentError(f"bad value {text!r} for option {name!r} in {url!r}")
