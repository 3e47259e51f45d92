"""Digests laid out in folders as tarn lays them out, and tarn's on-disk ``DiskDict``."""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

from .._fs import TEMP_PREFIX
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ReadOnlyError,
    SimRecorderError,
    StoreFormatError,
    StoreNotFoundError,
    StoreWriteError,
)
from ..locations import DirectoryLocation, Location
from ..locations.base import Data, check_location_key, stream_position
from ._config import CONFIG_NAME, DiskConfig, load_config, parse_config, write_config
from ._digest import BLOCK_BYTES, Hasher, digest_file, resolve_algorithm
from ._errors import CollisionError, InvalidDigestError

__all__ = ["DiskDict", "HashLayout", "check_levels"]

_HEX = re.compile(r"[0-9a-f]+")
_LEGACY_DATA = "data"  # tarn < 0.4 kept a value in a folder: <key>/data


def check_levels(levels: object) -> tuple[int, ...]:
    """Validate tarn levels: positive byte counts per folder level, the last may be -1.

    Examples
    --------
    >>> check_levels([1, -1])
    (1, -1)
    """
    if (
        not isinstance(levels, (list, tuple))
        or not levels
        or not all(isinstance(level, int) and not isinstance(level, bool) for level in levels)
        or any(level <= 0 for level in levels[:-1])
        or (levels[-1] <= 0 and levels[-1] != -1)
    ):
        raise InvalidArgumentError(
            f"levels are bytes of the digest per folder level, each > 0 (the last may be "
            f"-1 for the rest), e.g. [1, -1]; got {levels!r}"
        )
    return tuple(levels)


class HashLayout(Location):
    """The keys of a location, digests laid out in folders by ``levels`` (tarn's layout).

    The key of a digest is its hex text with or without ``/`` (blob storage passes
    ``"ab/cdef..."``); in the wrapped location it is stored split by ``levels``: ``[1,
    -1]`` gives ``ab/cdef...``, ``[2, -1]`` (tarn's S3 layout) ``abcd/ef...``. Listing
    shows only the wrapped keys that are digests in this layout.

    Parameters
    ----------
    location
        Where the values are.
    levels
        Bytes of the digest per folder level, the last ``-1`` for "the rest"; ``None``
        reads them from the location's ``config.yml`` on first use (``[1, -1]`` when it
        has none).
    """

    protocol: ClassVar[str] = "hashlayout"
    supports_streaming: ClassVar[bool] = True

    def __init__(self, location: Location, levels: Sequence[int] | None = (1, -1)) -> None:
        self.location = location
        self._levels = None if levels is None else check_levels(levels)
        self.read_only = location.read_only
        self.max_value_bytes = location.max_value_bytes
        self.persistent = location.persistent  # type: ignore[misc]  # mirrors the wrapped one

    # -- identity ---------------------------------------------------------------------------

    @property
    def levels(self) -> tuple[int, ...]:
        """The layout (read from the location's ``config.yml`` when not given)."""
        if self._levels is None:
            self._levels = self._levels_from_config()
        return self._levels

    def _levels_from_config(self) -> tuple[int, ...]:
        text = self.location.get(CONFIG_NAME)
        if text is None:
            return (1, -1)
        return parse_config(
            text.decode("utf-8", "replace"), f"{self.location.url}/{CONFIG_NAME}"
        ).levels

    @property
    def url(self) -> str:
        """The wrapped location's URL with ``#levels=...``."""
        levels = "auto" if self._levels is None else ",".join(map(str, self._levels))
        return f"{self.location.url}#levels={levels}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- keys -------------------------------------------------------------------------------

    def inner_key(self, key: str) -> str:
        """The key of the wrapped location that holds ``key``.

        Raises
        ------
        InvalidDigestError
            ``key`` is not a hex digest (``/`` allowed anywhere) fitting the levels.
        """
        check_location_key(key)
        text = key.replace("/", "")
        if not _HEX.fullmatch(text) or len(text) % 2:
            raise InvalidDigestError(
                f"{self!r}: key {key!r} is not a lowercase hex digest (even number of digits)"
            )
        parts = []
        start = 0
        for level in self.levels:
            stop = len(text) if level == -1 else start + 2 * level
            parts.append(text[start:stop])
            start = stop
        if start != len(text) or not all(parts):
            raise InvalidDigestError(
                f"{self!r}: key {key!r} does not fit the levels {list(self.levels)} "
                f"({len(text) // 2} bytes)"
            )
        return "/".join(parts)

    def outer_key(self, inner: str) -> str | None:
        """The digest key (``"ab/cdef..."``) of a wrapped key, or ``None`` when it is none."""
        parts = inner.split("/")
        if len(parts) == len(self.levels) + 1 and parts[-1] == _LEGACY_DATA:
            parts = parts[:-1]
        if len(parts) != len(self.levels):
            return None
        for part, level in zip(parts, self.levels, strict=True):
            if not _HEX.fullmatch(part) or (level != -1 and len(part) != 2 * level):
                return None
        text = "".join(parts)
        if len(text) < 3:
            return None
        return f"{text[:2]}/{text[2:]}"

    # -- primitives -------------------------------------------------------------------------

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read`."""
        return self.location.read(self.inner_key(key))

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        return self.location.get(self.inner_key(key))

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return self.location.exists(self.inner_key(key))

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        return self.location.write(self.inner_key(key), data)

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        return self.location.delete(self.inner_key(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (only the digests of this layout are listed)."""
        found = []
        for inner in self.location.keys():
            key = self.outer_key(inner)
            if key is not None and key.startswith(prefix):
                found.append(key)
        yield from sorted(set(found))

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (the wrapped location's batch)."""
        keys = list(keys)
        inner = {key: self.inner_key(key) for key in keys}
        values = self.location.read_many(list(inner.values()))
        return {key: values[inner[key]] for key in keys}

    def write_many(self, items: Mapping[str, Data]) -> dict[str, bool]:
        """See :meth:`Location.write_many` (the wrapped location's batch)."""
        inner = {key: self.inner_key(key) for key in items}
        stored = self.location.write_many({inner[key]: data for key, data in items.items()})
        return {key: stored[inner[key]] for key in items}

    def close(self) -> None:
        """Close the wrapped location."""
        self.location.close()


class DiskDict(HashLayout):
    """tarn's on-disk blob folder: ``config.yml`` and one read-only file per digest.

    A folder written by tarn opens as it is (its ``config.yml`` says the hash and the
    levels); a new folder gets a ``config.yml`` tarn reads. Files live at
    ``ab/cdef...`` for the default levels ``[1, -1]``.

    Parameters
    ----------
    root
        The folder (created with its ``config.yml`` when missing).
    levels
        Bytes of the digest per folder level; must match an existing folder's config.
        Default: the config's, ``[1, -1]`` for a new folder.
    max_size
        Bytes of blobs this folder accepts (tracked on every write and delete); a
        write that would go over declines, so a ``Fanout`` spills to its next location.
        Default: the config's ``max_size``, else no limit.
    free_disk_size
        Bytes to keep free on the disk: a write that would leave less declines.
        Default: the config's ``free_disk_size``.
    algorithm
        The hash of a new folder (``"sha256"`` by default); must match an existing one.
    durable
        ``fsync`` every blob and its folder.

    Notes
    -----
    Writes go to a temp file renamed into place (see
    :class:`~simrecorder.locations.DirectoryLocation`): a writer killed mid-write never
    leaves a partial blob under its key. Files are made read-only. Writing a key that
    exists compares the contents: equal is a no-op, different raises
    :class:`CollisionError` unless the stored file is corrupted (it no longer hashes to
    its key), in which case it is replaced. :meth:`verify` checks a blob on demand.

    Examples
    --------
    >>> import tempfile
    >>> disk = DiskDict(tempfile.mkdtemp())
    >>> disk.inner_key("ab" + "0" * 62) == "ab/" + "0" * 62
    True
    """

    protocol: ClassVar[str] = "diskdict"

    def __init__(
        self,
        root: str | os.PathLike[str],
        levels: Sequence[int] | None = None,
        max_size: int | None = None,
        free_disk_size: int | None = None,
        algorithm: str | Hasher | None = None,
        durable: bool = False,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        config = self._open_config(levels, algorithm)
        if algorithm is not None and resolve_algorithm(algorithm)[0] != config.hash_name:
            raise InvalidArgumentError(
                f"{self.root} holds {config.hash_name} digests (its {CONFIG_NAME}); "
                f"got algorithm={resolve_algorithm(algorithm)[0]!r}"
            )
        self.config = config
        self.algorithm = config.hasher()
        self.algorithm_name = config.hash_name
        self.max_size = config.max_size if max_size is None else max_size
        self.free_disk_size = config.free_disk_size if free_disk_size is None else free_disk_size
        self.durable = bool(durable)
        files = DirectoryLocation(self.root, durable=durable, create=False)
        super().__init__(files, config.levels)
        self._mode = (os.stat(self.root).st_mode & 0o444) | 0o400
        self._lock = threading.Lock()
        self._size: int | None = None
        if self.max_size is not None:
            self.refresh_size()

    def _open_config(
        self, levels: Sequence[int] | None, algorithm: str | Hasher | None
    ) -> DiskConfig:
        if os.path.isfile(os.path.join(self.root, CONFIG_NAME)):
            config = load_config(self.root)
            if levels is not None and tuple(config.levels) != tuple(levels):
                raise InvalidArgumentError(
                    f"levels {list(levels)} do not match {list(config.levels)} of "
                    f"{os.path.join(self.root, CONFIG_NAME)}"
                )
            return config
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise StoreNotFoundError(f"{self.root} is not a folder: cannot open a DiskDict there")
        name = resolve_algorithm(algorithm or "sha256")[0]
        config = DiskConfig(name, (), check_levels(levels or (1, -1)), None, None)
        try:
            os.makedirs(self.root, exist_ok=True)
            write_config(self.root, config)
        except OSError as exc:
            raise StoreFormatError(
                f"cannot create the blob folder {self.root}: {exc.strerror or exc}"
            ) from exc
        return config

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.root, self.levels, self.max_size, self.free_disk_size, None, self.durable),
        )

    @property
    def url(self) -> str:
        """``file:///root`` (the folder)."""
        return self.location.url

    @property
    def size(self) -> int:
        """Bytes of blobs held (tracked when ``max_size`` is set, else walked now)."""
        return self.refresh_size() if self._size is None else self._size

    def refresh_size(self) -> int:
        """Walk the folder again (to learn blobs written by other processes)."""
        total = 0
        for key in self.keys():
            path = self.local_path(key)
            try:
                total += os.stat(path).st_size if path is not None else 0
            except FileNotFoundError:
                continue
        if self.max_size is not None:
            with self._lock:
                self._size = total
        return total

    # -- paths ------------------------------------------------------------------------------

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key``, or ``None`` when absent."""
        path = os.path.join(self.root, self.inner_key(key))
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISREG(mode):
            return Path(path)
        legacy = os.path.join(path, _LEGACY_DATA)
        if stat.S_ISDIR(mode) and os.path.isfile(legacy):
            return Path(legacy)
        return None

    # -- primitives -------------------------------------------------------------------------

    @contextmanager
    def read(self, key: str) -> Iterator[IO[bytes] | None]:
        """See :meth:`Location.read` (yields the open file)."""
        path = self.local_path(key)
        if path is None:
            yield None
            return
        try:
            stream = open(path, "rb")  # closed below, after the consumer
        except FileNotFoundError:  # deleted in between
            yield None
            return
        with stream:
            yield stream

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        with self.read(key) as stream:
            return None if stream is None else stream.read()

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        return self.local_path(key) is not None

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`; an existing key is compared, not rewritten.

        Raises
        ------
        CollisionError
            The key holds a valid blob whose content differs from ``data``.
        """
        path = self.local_path(key)
        if path is None:
            return self._put(key, data)
        if not isinstance(data, (bytes, bytearray, memoryview)) and stream_position(data) is None:
            # a pipe: keep what is read, to write it if it differs
            with tempfile.SpooledTemporaryFile(max_size=8 * BLOCK_BYTES) as spool:
                while piece := data.read(BLOCK_BYTES):
                    spool.write(piece)
                spool.seek(0)
                return self._rewrite(key, path, spool)
        return self._rewrite(key, path, data)

    def _rewrite(self, key: str, path: Path, data: Data) -> bool:
        if _same(path, data):
            return True
        if self.verify(key):
            raise CollisionError(
                f"{self!r}: key {key!r} holds a valid blob that differs from the value "
                "written (the value does not hash to its key)"
            )
        return self._put(key, data)  # the stored copy was corrupted: replace it

    def _put(self, key: str, data: Data) -> bool:
        """Write a new blob: a temp file beside it, made read-only, renamed into place."""
        if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
            raise ArgumentTypeError(
                f"{self!r}: cannot write {key!r}: a location stores bytes or a binary stream, "
                f"got {type(data).__name__}"
            )
        if self.read_only:
            return False
        path = os.path.join(self.root, self.inner_key(key))
        position = None if isinstance(data, (bytes, bytearray, memoryview)) else (
            stream_position(data))  # fmt: skip
        if not self._has_room(_known_size(data, position)):
            return False
        try:
            written = self._write_file(path, data)
        except SimRecorderError:
            raise  # e.g. StorageCorruption from a checked stream: the write is abandoned
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise _write_error(exc, path) from exc
            written = None  # the disk filled up: decline, as a configured limit does
        if written is None:
            if position is not None:
                data.seek(position)  # type: ignore[union-attr]
            return False
        if self._size is not None:
            with self._lock:
                self._size += written
        return True

    def _has_room(self, size: int | None) -> bool:
        if size is None:
            size = 0  # a pipe: checked again once its size is known
        if self.max_size is not None and self.size + size > self.max_size:
            return False
        if self.free_disk_size is not None:
            if shutil.disk_usage(self.root).free - size < self.free_disk_size:
                return False
        return True

    def _write_file(self, path: str, data: Data) -> int | None:
        """Write ``data`` to ``path`` atomically; its size, or ``None`` when over a limit."""
        parent = os.path.dirname(path)
        temp = os.path.join(parent, TEMP_PREFIX + secrets.token_hex(8))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(temp, flags, 0o600)
        except FileNotFoundError:  # the first blob of this folder
            os.makedirs(parent, exist_ok=True)
            fd = os.open(temp, flags, 0o600)
        try:
            try:
                size = _copy_into(fd, data)
                os.fchmod(fd, self._mode)  # read-only before it has its name
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if not self._has_room_after(size):
                os.unlink(temp)
                return None
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        if self.durable:
            _fsync_folder(parent)
        return size

    def _has_room_after(self, size: int) -> bool:
        if self.max_size is not None and self.size + size > self.max_size:
            return False
        if self.free_disk_size is not None:
            return shutil.disk_usage(self.root).free >= self.free_disk_size
        return True

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        inner = self.inner_key(key)
        if self.read_only:
            raise ReadOnlyError(f"{self!r}: cannot delete {key!r}, the location is read-only")
        path = os.path.join(self.root, inner)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            return True
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _write_error(exc, path) from exc
        if self._size is not None:
            with self._lock:
                self._size -= size
        try:
            os.rmdir(os.path.dirname(path))  # an emptied folder (fails when not empty)
        except OSError:
            pass
        return True

    def store_file(self, source: str | os.PathLike[str], hasher: Hasher) -> tuple[str, bool]:
        """Copy a file in while hashing it, both at once; return ``(hex digest, stored)``.

        The copy (by the kernel) and the hash (in a thread: hashlib releases the GIL)
        overlap, so a large file costs about its hash time. The copy lands in a temp file
        renamed to the digest's place; a blob already there is kept (``stored`` is
        ``True``), and a full folder declines (``False``, nothing left behind).

        Raises
        ------
        FileNotFoundError
            ``source`` does not exist.
        """
        source = os.fspath(source)
        with open(source, "rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            hashing = _HashThread(source, hasher)
            hashing.start()
            temp = os.path.join(self.root, TEMP_PREFIX + secrets.token_hex(8))
            try:
                copied = self._copy_to_temp(file, temp, size)
            finally:
                hashing.join()
        try:
            hexdigest = hashing.result()
            if self.local_path(f"{hexdigest[:2]}/{hexdigest[2:]}") is not None:
                return hexdigest, True  # stored already: the same content has the same key
            if copied is None or not self._has_room_after(copied):
                return hexdigest, False
            return hexdigest, self._place(temp, hexdigest, copied)
        finally:
            _remove_quietly(temp)

    def _copy_to_temp(self, file: IO[bytes], temp: str, size: int) -> int | None:
        if self.read_only or not self._has_room(size):
            return None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temp, flags, 0o600)
        try:
            copied = _copy_into(fd, file)
            os.fchmod(fd, self._mode)
            if self.durable:
                os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return None
            raise _write_error(exc, temp) from exc
        finally:
            os.close(fd)
        return copied

    def _place(self, temp: str, hexdigest: str, size: int) -> bool:
        path = os.path.join(self.root, self.inner_key(f"{hexdigest[:2]}/{hexdigest[2:]}"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(temp, path)
        if self.durable:
            _fsync_folder(os.path.dirname(path))
        if self._size is not None:
            with self._lock:
                self._size += size
        return True

    def verify(self, key: str) -> bool:
        """Whether the blob under ``key`` hashes to its key (``False`` when absent)."""
        path = self.local_path(key)
        if path is None:
            return False
        try:
            found = digest_file(path, self.algorithm)
        except FileNotFoundError:
            return False
        return found == key.replace("/", "")


def _same(path: Path, data: Data) -> bool:
    """Whether ``data`` (bytes or a seekable stream, left where it was) equals the file."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        if os.path.getsize(path) != view.nbytes:
            return False
        with open(path, "rb") as file:
            return _same_stream(file, io.BytesIO(view))
    position = data.seek(0, io.SEEK_CUR)
    try:
        with open(path, "rb") as file:
            return _same_stream(file, data)
    finally:
        data.seek(position)


def _same_stream(first: IO[bytes], second: IO[bytes]) -> bool:
    while True:
        left = first.read(BLOCK_BYTES)
        right = _read_exactly(second, len(left) if left else 1)
        if left != right:
            return False
        if not left:
            return True


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    pieces = []
    while size > 0:
        piece = stream.read(size)
        if not piece:
            break
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def _copy_into(fd: int, data: Data) -> int:
    """Write ``data`` to ``fd``; return the bytes written (files are copied by the kernel)."""
    source = _regular_file(data)
    if source is not None:
        size = 0
        while count := os.copy_file_range(source, fd, 64 * BLOCK_BYTES):
            size += count
        data.seek(0, io.SEEK_END)  # type: ignore[union-attr]  # the reader's buffer agrees
        return size
    size = 0
    for piece in _pieces(data):
        view = memoryview(piece)
        size += len(view)
        while view:
            view = view[os.write(fd, view) :]
    return size


def _regular_file(data: Data) -> int | None:
    """The descriptor of an unbuffered-safe regular file stream, else ``None``."""
    if not hasattr(os, "copy_file_range") or type(data) not in (io.BufferedReader, io.FileIO):
        return None
    try:
        fd = data.fileno()  # type: ignore[union-attr]
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        position = data.tell()  # type: ignore[union-attr]
        os.lseek(fd, position, os.SEEK_SET)  # the buffered position, for the kernel copy
    except (OSError, ValueError):
        return None
    return fd


def _pieces(data: Data) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield data
        return
    while piece := data.read(BLOCK_BYTES):
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise ArgumentTypeError(f"a blob stream must yield bytes, got {type(piece).__name__}")
        yield piece


def _known_size(data: Data, position: int | None) -> int | None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).nbytes
    if position is None:
        return None
    end = data.seek(0, io.SEEK_END)
    data.seek(position)
    return max(end - position, 0)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(exc: OSError, path: str) -> Exception:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ReadOnlyError(f"cannot write {path}: {exc.strerror or exc}")
    return StoreWriteError(f"cannot write {path}: {exc.strerror or exc}")


class _HashThread(threading.Thread):
    """Hash a file in a thread (hashlib and file reads release the GIL)."""

    def __init__(self, path: str, hasher: Hasher) -> None:
        super().__init__(name="simrecorder-blob-hash", daemon=True)
        self._path, self._hasher = path, hasher
        self._digest: str | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._digest = digest_file(self._path, self._hasher)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def result(self) -> str:
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
