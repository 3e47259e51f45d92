"""An appendable tar archive with an index for O(1) lookups (the ``taridx`` backend).

``ns.tar`` is a standard (PAX) tar file; ``ns.tar.idx`` has one JSON line per member:
``{"key", "offset", "size"}`` (offset of the data actually written, after any PAX
header blocks) or ``{"key", "deleted": true}``. A rewrite appends a new member and
the index points at the newest (``tar xf`` extracts the newest too: a later member of
the same name overwrites). A delete (and the old name of ``move_key``) appends a
zero-size tombstone member of type ``V`` (a GNU volume header, which ``tar xf`` skips),
then, once the index line is written, turns every earlier member of that key into a
``V`` member in place (its header's type flag; the data stays). So ``tar xf`` of the
archive gives exactly the live keys with their newest data, and :func:`reindex`
rebuilds the index from the tar alone (a ``V`` member deletes its name; archives of
older versions mark tombstones with the PAX header ``SIMRECORDER.deleted``). Index
lines are written after their data, so a crash never exposes a torn value; data past
the last indexed member is overwritten by the next append. A crash between a delete's
index line and the rewriting of the old headers leaves the key deleted for the index
and for :func:`reindex`, but ``tar xf`` extracts its old data; :func:`compact`
rewrites only the live members.
"""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
import time
import warnings
from contextlib import contextmanager
from typing import Any

from ..errors import StoreFormatError

__all__ = ["TarIndex", "compact", "reindex"]

_BLOCK = 512
_TOMBSTONE = "SIMRECORDER.deleted"  # PAX header of the tombstones of older versions
#: the type of tombstones and deleted members: a GNU volume header, skipped by ``tar xf``
_DELETED = b"V"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


class TarIndex:
    """The in-memory index of one archive, refreshed from the index file's new lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.index_path = path + ".idx"
        self.entries: dict[str, tuple[int, int]] = {}
        #: data offsets of every member of a key since it was last deleted
        self.versions: dict[str, list[int]] = {}
        self.end = 0  # where the next member's header goes
        self._read_upto = 0
        self._index_ino: int | None = None

    def refresh(self) -> None:
        """Read index lines written since the last refresh (by any process)."""
        try:
            info = os.stat(self.index_path)
        except FileNotFoundError:
            self._reset()
            return
        if info.st_ino != self._index_ino or info.st_size < self._read_upto:
            self._reset()  # replaced by compact() or reindex()
            self._index_ino = info.st_ino
        if info.st_size == self._read_upto:
            return
        with open(self.index_path, "rb") as f:
            f.seek(self._read_upto)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a torn last line is ignored
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StoreFormatError(
                    f"{self.index_path!r}: index line {number} after byte {self._read_upto} "
                    f"is corrupt ({type(exc).__name__}: {exc}); rebuild the index from the "
                    f"archive with reindex({self.path!r})"
                ) from None
        self._read_upto += len(complete)

    def _reset(self) -> None:
        self.entries, self.versions, self.end, self._read_upto = {}, {}, 0, 0

    def _apply(self, entry: dict[str, Any]) -> None:
        key = entry["key"]
        if entry.get("deleted"):
            self.entries.pop(key, None)
            self.versions.pop(key, None)
        else:
            self.entries[key] = (entry["offset"], entry["size"])
            self.versions.setdefault(key, []).append(entry["offset"])
        self.end = max(self.end, entry["end"])

    def read(self, key: str) -> bytes | None:
        found = self.entries.get(key)
        if found is None:
            return None
        offset, size = found
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise StoreFormatError(
                f"{self.path!r}: the data of key {key!r} runs past the end of the archive "
                f"({len(data)} of {size} bytes; truncated?); reindex({self.path!r}) drops "
                "the members that are cut off"
            )
        return data

    @contextmanager
    def writing(self):
        """Hold the archive's exclusive lock (a second writer waits) and refresh."""
        lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            self.refresh()
            yield
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    def append(self, items: list[tuple[str, bytes | None]]) -> None:
        """Append members (``None`` data = tombstone); call inside :meth:`writing`."""
        mode = "r+b" if os.path.exists(self.path) else "w+b"
        lines = []
        doomed = [o for key, data in items if data is None for o in self.versions.get(key, [])]
        with open(self.path, mode) as f:
            position = self.end
            for key, data in items:
                info = tarfile.TarInfo(key)
                info.size = 0 if data is None else len(data)
                info.mtime = int(time.time())
                info.mode = 0o644
                if data is None:
                    info.type = _DELETED
                header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")
                f.seek(position)
                f.write(header)
                offset = position + len(header)  # the data offset actually written
                if data:
                    f.write(data)
                    f.write(b"\0" * (-len(data) % _BLOCK))
                position = offset + info.size + (-info.size % _BLOCK)
                if data is None:
                    lines.append({"key": key, "deleted": True, "end": position})
                else:
                    lines.append({"key": key, "offset": offset, "size": info.size,
                                  "end": position})  # fmt: skip
            f.write(b"\0" * (2 * _BLOCK))  # end-of-archive marker, overwritten next time
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        with open(self.index_path, "ab") as f:  # the commit point: after the data
            f.truncate(self._read_upto)  # drop a torn line a killed writer left
            f.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        self.refresh()
        if doomed:
            self._mark_deleted(doomed)

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
            os.fsync(f.fileno())


def _checksum(header: bytes | bytearray) -> int:
    """The ustar header checksum: the byte sum with the checksum field as spaces."""
    return sum(header[:148]) + 8 * 32 + sum(header[156:_BLOCK])


def _stored_checksum(header: bytes | bytearray) -> int | None:
    try:
        return int(bytes(header[148:156]).split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return None


def _members(path: str):
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
    parts = name.split("/")
    if not member.isreg():
        return "not a regular file (link, directory or device)"
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return "its name leaves the namespace (absolute, '..' or empty parts)"
    if any(ord(c) < 32 for c in name):
        return "its name has control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if member.offset_data + member.size > size:
        return "its data runs past the end of the archive (truncated)"
    return None


def reindex(path: str) -> int:
    """Rebuild ``path + '.idx'`` from the tar alone; return the number of live keys.

    Members that cannot be keys are left out, with a warning naming them: links and
    other non-files, names that would leave the namespace (``../x``, ``/abs``, also
    through a PAX ``path`` header) and members cut off by a truncated archive.
    """
    lines = []
    skipped = []
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
    tmp = f"{path}.idx.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path + ".idx")
    if skipped:
        warnings.warn(
            f"reindex({path!r}) left out {len(skipped)} member(s): " + "; ".join(skipped),
            stacklevel=2,
        )
    index = TarIndex(path)
    index.refresh()
    return len(index.entries)


def compact(path: str) -> int:
    """Rewrite the archive with only its live members; return how many remain."""
    index = TarIndex(path)
    with index.writing():
        live = [(key, index.read(key)) for key in sorted(index.entries)]
        tmp = f"{path}.{os.getpid()}.compact"
        for suffix in ("", ".idx"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
        fresh = TarIndex(tmp)
        fresh.append(live)
        os.replace(tmp, path)  # data first, then its index
        os.replace(tmp + ".idx", path + ".idx")
    return len(live)


def tar_names(path: str) -> list[str]:
    """Names of the members ``tar xf`` extracts, in archive order (deleted members and
    tombstones left out; a name appears once per version)."""
    with tarfile.open(path, "r:") as tar:
        return [m.name for m in tar.getmembers() if m.type != _DELETED]
