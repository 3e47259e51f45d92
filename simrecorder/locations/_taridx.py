"""A location in one appendable tar archive with an index beside it (``taridx``).

``ns.tar`` is a standard (PAX) tar file; ``ns.tar.idx`` has one JSON line per member:
``{"key", "offset", "size", "end"}`` (offset of the data actually written, after any
PAX header blocks) or ``{"key", "deleted": true, "end"}``. A rewrite appends a new
member and the index points at the newest (``tar xf`` extracts the newest too: a later
member of the same name overwrites). A delete appends a zero-size tombstone member of
type ``V`` (a GNU volume header, which ``tar xf`` skips), then, once the index line is
written, turns every earlier member of that key into a ``V`` member in place (its
header's type flag; the data stays). So ``tar xf`` of the archive gives exactly the
live keys with their newest data, and :meth:`TaridxLocation.reindex` rebuilds the index
from the tar alone (a ``V`` member deletes its name; archives of older versions mark
tombstones with the PAX header ``SIMRECORDER.deleted``).

Index lines are written after their data, so a crash never exposes a torn value; data
past the last indexed member is overwritten by the next append. The lines of one
:meth:`~TaridxLocation.write_many` batch are one commit: every line but the last carries
``"batch": true`` and readers apply a batch only once its last line is complete. A
crash between a delete's index line and the rewriting of the old headers leaves the key
deleted for the index and for ``reindex``, but ``tar xf`` extracts its old data;
:meth:`~TaridxLocation.compact` rewrites only the live members.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any, ClassVar
from urllib.parse import quote, unquote, urlencode

from .._fs import FileLock, atomic_write, translate_os_error
from .._keys import check_path_parts
from .._url import parse_url
from ..errors import (
    InvalidArgumentError,
    StoreFormatError,
    StoreFullError,
)
from .base import (
    COPY_CHUNK_BYTES,
    BatchLocation,
    Data,
    Location,
    check_location_key,
    iter_chunks,
)

__all__ = ["TarIndex", "TaridxLocation"]

_BLOCK = 512
_TOMBSTONE = "SIMRECORDER.deleted"  # PAX header of the tombstones of older versions
#: the type of tombstones and deleted members: a GNU volume header, skipped by ``tar xf``
_DELETED = b"V"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_OPTIONS = ("read_only", "locking", "durable")

#: What :meth:`TarIndex.append` takes per member: bytes, a sized stream, or ``None``
#: (a tombstone).
_Source = bytes | tuple[IO[bytes], int] | None


#: One index line: key, ``(offset, size)`` of its data (``None``: deleted), end of member.
_Entry = tuple[str, tuple[int, int] | None, int]


def _load_all(lines: list[bytes]) -> list[Any] | None:
    """Every line parsed, or ``None`` when one is no JSON value (then each is parsed
    alone, to name the bad one)."""
    if not lines:
        return []
    try:
        parsed = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and len(parsed) == len(lines) else None


def _entry_problem(found: object) -> str | None:
    """Why ``found`` (a parsed index line) is no index entry, or ``None``."""
    if not isinstance(found, dict):
        return f"a JSON {type(found).__name__}, not an object"
    if not isinstance(found.get("key"), str):
        return "no str 'key'"
    needed = ("end",) if found.get("deleted") else ("offset", "size", "end")
    for name in needed:
        value = found.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name!r} is {value!r}, not a byte count"
    return None


class TarIndex:
    """The in-memory index of one archive, refreshed from the index file's new lines.

    Parameters
    ----------
    path
        The archive; its index is ``path + '.idx'`` and its lock ``path + '.lock'``.
    locking
        Take the archive's ``flock`` while appending (see :class:`~simrecorder._fs.FileLock`).
    durable
        ``fsync`` the archive and the index at each commit.
    """

    def __init__(self, path: str, locking: bool | None = None, durable: bool = True) -> None:
        self.path = path
        self.index_path = path + ".idx"
        self.locking = locking
        self.durable = durable
        self.entries: dict[str, tuple[int, int]] = {}
        #: data offsets of every member of a key since it was last deleted
        self.versions: dict[str, list[int]] = {}
        self.end = 0  # where the next member's header goes
        self._read_upto = 0
        self._index_ino: int | None = None
        self._sorted: list[str] | None = None

    def refresh(self) -> None:
        """Read index lines committed since the last refresh (by any process)."""
        try:
            info = os.stat(self.index_path)
        except FileNotFoundError:
            self._reset()
            self._index_ino = None
            return
        if info.st_ino != self._index_ino or info.st_size < self._read_upto:
            self._reset()  # replaced by compact() or reindex()
            self._index_ino = info.st_ino
        if info.st_size == self._read_upto:
            return
        with open(self.index_path, "rb") as f:
            f.seek(self._read_upto)
            chunk = f.read()
        self._read_upto += self._apply_lines(chunk)

    def _apply_lines(self, chunk: bytes) -> int:
        """Apply the committed lines of ``chunk``; return how many bytes they take.

        A torn last line and the lines of a batch whose last line is missing are left
        for later (or for the next writer to cut off).

        Raises
        ------
        StoreFormatError
            A complete line is no index entry (names the line and ``reindex``).
        """
        lines = chunk[: chunk.rfind(b"\n") + 1].split(b"\n")[:-1]
        parsed = _load_all(lines)  # one json.loads for all lines: 3x faster than each
        done = 0
        position = 0
        pending: list[_Entry] = []
        for number, line in enumerate(lines, 1):
            found = parsed[number - 1] if parsed is not None else self._load(line, number)
            entry, batch = self._entry(found, number)
            position += len(line) + 1
            pending.append(entry)
            if not batch:
                for one in pending:
                    self._apply(one)
                pending = []
                done = position
        return done

    def _load(self, line: bytes, number: int) -> object:
        try:
            return json.loads(line)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise self._corrupt(number, f"{type(exc).__name__}: {exc}") from None

    def _entry(self, found: object, number: int) -> tuple[_Entry, bool]:
        """One parsed index line as ``(key, (offset, size) or None when deleted, end)``
        and whether more lines of its batch follow."""
        why = _entry_problem(found)
        if why is not None:
            raise self._corrupt(number, why)
        assert isinstance(found, dict)
        place = None if found.get("deleted") else (found["offset"], found["size"])
        return (found["key"], place, found["end"]), bool(found.get("batch"))

    def _corrupt(self, number: int, why: str) -> StoreFormatError:
        return StoreFormatError(
            f"{self.index_path!r}: index line {number} after byte {self._read_upto} is "
            f"corrupt ({why}); rebuild the index from the archive with reindex({self.path!r})"
        )

    def _reset(self) -> None:
        self.entries, self.versions, self.end, self._read_upto = {}, {}, 0, 0
        self._sorted = None

    def _apply(self, entry: _Entry) -> None:
        key, place, end = entry
        if place is None:
            self.entries.pop(key, None)
            self.versions.pop(key, None)
        else:
            self.entries[key] = place
            self.versions.setdefault(key, []).append(place[0])
        self.end = max(self.end, end)
        self._sorted = None

    def sorted_keys(self) -> list[str]:
        """The live keys, sorted (cached until the index changes)."""
        if self._sorted is None:
            self._sorted = sorted(self.entries)
        return self._sorted

    def read(self, key: str) -> bytes | None:
        """The data of ``key`` (``None`` when absent).

        Raises
        ------
        StoreFormatError
            The archive ends before the member's data does (a truncated copy).
        """
        found = self.entries.get(key)
        if found is None:
            return None
        offset, size = found
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except FileNotFoundError:
            data = b""
        if len(data) != size:
            raise self.truncated(key, len(data), size)
        return data

    @contextmanager
    def open_member(self, key: str) -> Iterator[IO[bytes] | None]:
        """A stream over the data of ``key`` read straight from the archive (``None``
        when absent), so a large value never sits in memory; reading past what the
        archive holds raises :class:`StoreFormatError` as :meth:`read` does."""
        found = self.entries.get(key)
        if found is None:
            yield None
            return
        offset, size = found
        try:
            archive = open(self.path, "rb")
        except FileNotFoundError:
            archive = None
        try:
            member = _MemberReader(archive, offset, size, self, key)
            yield io.BufferedReader(member, buffer_size=1 << 20)
        finally:
            if archive is not None:
                archive.close()

    def truncated(self, key: str, got: int, size: int) -> StoreFormatError:
        """The error for a member whose data the archive holds only ``got`` bytes of."""
        return StoreFormatError(
            f"{self.path!r}: the data of key {key!r} runs past the end of the archive "
            f"({got} of {size} bytes; truncated?); reindex({self.path!r}) drops "
            "the members that are cut off"
        )

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the archive's exclusive lock (a second writer waits) and refresh."""
        with FileLock(self.path + ".lock", locking=self.locking, what=self.path):
            self.refresh()
            yield

    def append(self, items: list[tuple[str, _Source]]) -> None:
        """Append members (``None`` = tombstone) and commit them with one index write;
        call inside :meth:`writing`.

        Raises
        ------
        StoreFullError
            The disk is full (nothing is committed).
        StoreWriteError
            Any other failure of the file system (nothing is committed).
        """
        doomed = [o for key, data in items if data is None for o in self.versions.get(key, [])]
        try:
            lines = self._write_members(items)
        except OSError as exc:
            self._cut_back()
            raise translate_os_error(exc, self.path, "append to") from exc
        try:
            self._commit(lines)
        except OSError as exc:
            raise translate_os_error(exc, self.index_path, "append to") from exc
        self.refresh()
        if doomed:
            self._mark_deleted(doomed)

    def _write_members(self, items: list[tuple[str, _Source]]) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        mode = "r+b" if os.path.exists(self.path) else "w+b"
        with open(self.path, mode) as f:
            position = self.end
            for key, data in items:
                size = 0 if data is None else len(data) if isinstance(data, bytes) else data[1]
                info = tarfile.TarInfo(key)
                info.size = size
                info.mtime = int(time.time())
                info.mode = 0o644
                if data is None:
                    info.type = _DELETED
                header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")
                f.seek(position)
                f.write(header)
                offset = position + len(header)  # the data offset actually written
                if data is not None:
                    _copy(data, f)
                    f.write(b"\0" * (-size % _BLOCK))
                position = offset + size + (-size % _BLOCK)
                if data is None:
                    lines.append({"key": key, "deleted": True, "end": position})
                else:
                    lines.append({"key": key, "offset": offset, "size": size, "end": position})
            f.write(b"\0" * (2 * _BLOCK))  # end-of-archive marker, overwritten next time
            f.truncate()
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        return lines

    def _cut_back(self) -> None:
        """Drop the data of an append that failed (a full disk gets its space back) and
        end the archive where the index ends; best effort, the next append does it too."""
        try:
            with open(self.path, "r+b") as f:
                f.truncate(self.end)
                f.seek(self.end)
                f.write(b"\0" * (2 * _BLOCK))
        except OSError:
            pass

    def _commit(self, lines: list[dict[str, Any]]) -> None:
        """Write the index lines of one batch: the commit point, after the data."""
        for line in lines[:-1]:
            line["batch"] = True
        with open(self.index_path, "ab") as f:
            f.truncate(self._read_upto)  # drop a torn line or batch a killed writer left
            f.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
            f.flush()
            if self.durable:
                os.fsync(f.fileno())

    def _mark_deleted(self, offsets: list[int]) -> None:
        """Turn the members whose data starts at ``offsets`` into ``V`` members, which
        ``tar xf`` skips (after the index line: the index says they are deleted)."""
        with open(self.path, "r+b") as f:
            for offset in offsets:
                f.seek(offset - _BLOCK)  # the ustar header right before the data
                header = bytearray(f.read(_BLOCK))
                if len(header) != _BLOCK or header[156:157] not in _REGULAR:
                    continue
                if _checksum(header) != _stored_checksum(header):
                    continue  # not a header we wrote: never touch it
                header[156:157] = _DELETED
                header[148:156] = b"%06o\0 " % _checksum(header)
                f.seek(offset - _BLOCK)
                f.write(header)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())


def _copy(data: bytes | tuple[IO[bytes], int], out: IO[bytes]) -> None:
    if isinstance(data, bytes):
        out.write(data)
        return
    stream, _ = data
    while piece := stream.read(COPY_CHUNK_BYTES):
        out.write(piece)


def _checksum(header: bytes | bytearray) -> int:
    """The ustar header checksum: the byte sum with the checksum field as spaces."""
    return sum(header[:148]) + 8 * 32 + sum(header[156:_BLOCK])


def _stored_checksum(header: bytes | bytearray) -> int | None:
    try:
        return int(bytes(header[148:156]).split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return None


class TaridxLocation(BatchLocation):
    """Values as members of one tar archive, found through an index beside it.

    Parameters
    ----------
    path
        The archive (``.tar`` is not added); its index is ``path + '.idx'``. Both are
        created by the first write.
    read_only
        Decline every write; :meth:`delete` raises :class:`ReadOnlyError`.
    locking
        Writers serialise with a ``flock`` on ``path + '.lock'``; ``False`` turns it
        off for file systems without ``flock`` (then only one process may write).
        ``None`` (default) reads ``SIMRECORDER_FILE_LOCKING``.
    durable
        ``fsync`` the archive and the index at each commit (default ``True``).

    Notes
    -----
    Every write appends; :meth:`write_many` appends all its values and commits them
    with one index write (all land or none). Streams are spooled to a temp file first
    (tar headers hold the size), so memory stays bounded. A value whose data the
    archive cuts off (a truncated copy) raises :class:`StoreFormatError` on read, never
    a short value. A full disk makes writes decline (``False``).

    Examples
    --------
    >>> import os, tempfile
    >>> loc = TaridxLocation(os.path.join(tempfile.mkdtemp(), "ns.tar"))
    >>> loc.write_many({"a": b"1", "b/c": b"2"})
    {'a': True, 'b/c': True}
    >>> list(loc.keys())
    ['a', 'b/c']
    """

    protocol: ClassVar[str] = "taridx"
    persistent: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        read_only: bool = False,
        locking: bool | None = None,
        durable: bool = True,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.read_only = bool(read_only)
        self.locking = locking
        self.durable = bool(durable)
        self.index = TarIndex(self.path, locking=locking, durable=self.durable)

    # -- identity ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``taridx:///abs/path.tar`` plus options that are not default."""
        query = {}
        if self.read_only:
            query["read_only"] = "1"
        if self.locking is not None:
            query["locking"] = "1" if self.locking else "0"
        if not self.durable:
            query["durable"] = "0"
        base = "taridx://" + quote(self.path)
        return f"{base}?{urlencode(query)}" if query else base

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Location:
        """Open ``taridx:///abs/path.tar?read_only=1&locking=0&durable=0``.

        A path that goes on past an existing archive (``/abs/path.tar/ns``, the URL of
        ``location.sub("ns")``) opens that view of the archive.

        Raises
        ------
        InvalidArgumentError
            Another scheme, or an unknown or malformed option.
        """
        parsed = parse_url(url)
        if parsed.full_scheme != "taridx":
            raise InvalidArgumentError(f"{cls.__name__} takes taridx:// URLs; got {url!r}")
        settings: dict[str, Any] = {}
        for name, text in parsed.query.items():
            if name not in _OPTIONS:
                raise InvalidArgumentError(
                    f"unknown option {name!r} in {url!r}; a taridx:// location takes "
                    f"{', '.join(_OPTIONS)}"
                )
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise InvalidArgumentError(f"bad value {text!r} for option {name!r} in {url!r}")
            settings[name] = text.lower() in ("1", "true", "yes")
        settings.update(options)
        archive, prefix = _split_archive(unquote(parsed.location))
        found = cls(archive, **settings)
        return found.sub(prefix) if prefix else found

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.read_only, self.locking, self.durable))

    # -- primitives -------------------------------------------------------------------------

    def _check(self, key: str) -> str:
        check_location_key(key)
        check_path_parts(key, repr(self))  # `tar xf` makes every part a file name
        return key

    def refresh(self) -> TarIndex:
        """Read what other writers committed since; return the index."""
        self.index.refresh()
        return self.index

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read`: a stream over the member's bytes in the archive
        (a truncated archive raises :class:`StoreFormatError` when the read gets there)."""
        self._check(key)
        return self.refresh().open_member(key)

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        self._check(key)
        return self.refresh().read(key)

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists` (from the index alone)."""
        self._check(key)
        return key in self.refresh().entries

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (one refresh of the index)."""
        keys = [self._check(key) for key in keys]
        index = self.refresh()
        return {key: index.read(key) for key in keys}

    def _commit_batch(self, items: Mapping[str, Data]) -> bool:
        # docstring inherited: one append, one index commit; a full disk declines
        spools: list[IO[bytes]] = []
        try:
            self._append([(key, _source(data, spools)) for key, data in items.items()])
        except StoreFullError:
            return False
        finally:
            for spool in spools:
                spool.close()
        return True

    def _append(self, batch: list[tuple[str, _Source]]) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, os.path.dirname(self.path), "create") from exc
        with self.index.writing():
            self.index.append(batch)

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete` (appends a tombstone)."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[str]) -> int:
        """See :meth:`Location.delete_many` (one commit)."""
        keys = [self._check(key) for key in keys]
        if not keys:
            return 0
        self._refuse_read_only(keys[0])
        if not any(key in self.refresh().entries for key in keys):
            return 0
        with self.index.writing():
            present = sorted({key for key in keys if key in self.index.entries})
            if present:
                self.index.append([(key, None) for key in present])
        return len(present)

    def rename(self, old: str, new: str) -> bool:
        """Move the value of ``old`` to ``new`` in one commit; return whether ``old``
        existed."""
        self._check(old)
        self._check(new)
        self._refuse_read_only(old)
        with self.index.writing():
            data = self.index.read(old)
            if data is None:
                return False
            self.index.append([(new, data), (old, None)])
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (from the index, sorted)."""
        ordered = self.refresh().sorted_keys()
        start = bisect.bisect_left(ordered, prefix)
        found = []
        for key in ordered[start:]:
            if not key.startswith(prefix):
                break
            found.append(key)
        yield from found

    # -- archive maintenance ----------------------------------------------------------------

    def reindex(self) -> int:
        """Rebuild the index from the tar alone; return the number of live keys.

        Members that cannot be keys are left out, with a warning naming them: links
        and other non-files, names that would leave the archive (``../x``, ``/abs``,
        also through a PAX ``path`` header), names that are no valid keys, and members
        cut off by a truncated archive.
        """
        lines, skipped = _scan(self.path)
        atomic_write(self.index_path, _lines(lines), durable=self.durable)
        if skipped:
            warnings.warn(
                f"reindex({self.path!r}) left out {len(skipped)} member(s): " + "; ".join(skipped),
                stacklevel=2,
            )
        return len(self.refresh().entries)

    def compact(self) -> int:
        """Rewrite the archive with only its live members; return how many remain."""
        with self.index.writing():
            live: list[tuple[str, _Source]] = [
                (key, self.index.read(key)) for key in self.index.sorted_keys()
            ]
            tmp = f"{self.path}.{os.getpid()}.compact"
            for suffix in ("", ".idx"):
                if os.path.exists(tmp + suffix):
                    os.remove(tmp + suffix)
            fresh = TarIndex(tmp, locking=False, durable=self.durable)
            fresh.append(live)
            os.replace(tmp, self.path)  # data first, then its index
            os.replace(tmp + ".idx", self.index_path)
        self.refresh()
        return len(live)

    def tar_names(self) -> list[str]:
        """Names of the members ``tar xf`` extracts, in archive order (deleted members
        and tombstones left out; a name appears once per version)."""
        with tarfile.open(self.path, "r:") as tar:
            return [m.name for m in tar.getmembers() if m.type != _DELETED]

    @property
    def index_path(self) -> str:
        """The index file beside the archive."""
        return self.path + ".idx"


def _split_archive(path: str) -> tuple[str, str]:
    """Split ``/abs/a.tar/ns/x`` into an existing archive and the key prefix after it."""
    parts = path.split("/")
    for end in range(len(parts) - 1, 1, -1):
        candidate = "/".join(parts[:end])
        if os.path.isfile(candidate):
            return candidate, "/".join(parts[end:])
    return path, ""


def _source(data: Data, spools: list[IO[bytes]]) -> _Source:
    """Bytes as bytes; a stream spooled to a temp file (tar headers need the size)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=COPY_CHUNK_BYTES)
    spools.append(spool)
    for chunk in iter_chunks(data):
        spool.write(chunk)
    size = spool.tell()
    spool.seek(0)
    return (spool, size)


def _lines(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _members(path: str) -> Iterator[tuple[tarfile.TarInfo, int]]:
    with tarfile.open(path, "r:", ignore_zeros=False) as tar:
        while True:
            try:
                member = tar.next()
            except tarfile.ReadError:
                return  # a torn member at the end: stop at the last complete one
            if member is None:
                return
            end = member.offset_data + member.size + (-member.size % _BLOCK)
            yield member, end


def _refusal(member: tarfile.TarInfo, size: int) -> str | None:
    """Why ``reindex`` must not index ``member`` (None: it may)."""
    name = member.name
    if not member.isreg():
        return "not a regular file (link, directory or device)"
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        return "its name leaves the archive (absolute, '..' or empty parts)"
    try:
        check_location_key(name)
        name.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        return f"its name is no valid key ({exc})"
    if member.offset_data + member.size > size:
        return "its data runs past the end of the archive (truncated)"
    return None


def _scan(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The index lines of the members of ``path``, and the members left out (why)."""
    lines: list[dict[str, Any]] = []
    skipped: list[str] = []
    size = os.path.getsize(path)
    for member, end in _members(path):
        if member.type == _DELETED:
            lines.append({"key": member.name, "deleted": True, "end": end})
            continue
        why = _refusal(member, size)
        if why is not None:
            skipped.append(f"{member.name!r}: {why}")
            continue
        if member.pax_headers.get(_TOMBSTONE):
            lines.append({"key": member.name, "deleted": True, "end": end})
        else:
            lines.append({"key": member.name, "offset": member.offset_data,
                          "size": member.size, "end": end})  # fmt: skip
    return lines, skipped


class _MemberReader(io.RawIOBase):
    """The ``size`` bytes at ``offset`` of an open archive, as a raw stream."""

    def __init__(
        self, archive: io.BufferedReader | None, offset: int, size: int, index: Any, key: str
    ) -> None:
        self._archive = archive
        self._position = offset
        self._left = size
        self._size = size
        self._index = index
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left == 0:
            return 0
        want = min(len(buffer), self._left)
        got = 0
        if self._archive is not None:
            self._archive.seek(self._position)
            got = self._archive.readinto(memoryview(buffer)[:want]) or 0
        if got == 0:
            raise self._index.truncated(self._key, self._size - self._left, self._size)
        self._position += got
        self._left -= got
        return got
