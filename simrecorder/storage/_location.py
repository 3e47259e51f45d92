"""Storage backends on a :class:`~simrecorder.locations.Location`: JSON files and Redis."""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Any, BinaryIO, cast

import numpy as np

from .._fs import atomic_write
from ..errors import InvalidArgumentError, StoreFormatError, StoreNotFoundError
from ..locations.base import Location
from ._base import JSONIndexBackend, encode, index_where, mode_flags, parse
from ._core import GenericStorage, Path

__all__ = ["JSONBackend", "JSONStorage", "LocationBackend", "RedisStorage"]


class LocationBackend(JSONIndexBackend):
    """Indexes as JSON documents in a :class:`~simrecorder.locations.Location` (written
    atomically by it), large arrays as raw bytes under their path.

    Parameters
    ----------
    location
        Where the documents go.
    root_key
        The key of the root index; a physical group ``a/b`` has its index at
        ``a/b/@index``.
    inline_limit
        See :class:`~simrecorder.storage._core.Backend` (``None``: one document holds all).
    """

    name = "json"

    def __init__(
        self,
        location: Location,
        root_key: str,
        inline_limit: int | None = None,
        read_only: bool = False,
        name: str = "json",
        where: str = "",
    ) -> None:
        self.location = location
        self.root_key = root_key
        self.inline_limit = inline_limit
        self.read_only = read_only
        self.name = name
        self._where = where or repr(location)

    def describe(self) -> str:
        return f"{self.name} storage {self._where}"

    def _index_key(self, path: Path) -> str:
        return "/".join((*path, "@index")) if path else self.root_key

    def load_document(self, path: Path) -> dict[str, Any] | None:
        raw = self.location.get(self._index_key(path))
        if raw is None:
            return None
        return cast(dict[str, Any], parse(raw, index_where(self, path)))

    def save_document(self, path: Path, document: dict[str, Any]) -> None:
        if not self.location.put(self._index_key(path), encode(document).encode("utf-8")):
            raise StoreFormatError(f"{self.describe()}: the location declined the index")

    def make_group(self, path: Path) -> None:
        """Groups need no object of their own in a location."""

    def delete_node(self, path: Path) -> None:
        key = "/".join(path)
        self.location.delete(key)
        self.location.delete_many(list(self.location.keys(key + "/")))

    def write_array(self, path: Path, array: np.ndarray) -> None:
        self.location.put("/".join(path), np.ascontiguousarray(array).tobytes())

    def read_array(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        raw = self.location.get("/".join(path))
        if raw is None:
            raise StoreFormatError(f"{self.describe()}: the array /{'/'.join(path)} is missing")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def close(self) -> None:
        self.location.close()


#: first bytes of a JSON storage's sidecar; the token after them is the one its
#: document names (``@bin``): a document and a sidecar of different saves do not pair
SIDECAR_MAGIC = b"SIMRECORDER-SIDECAR\n"
_TOKEN_BYTES = 16  # hex characters
SIDECAR_HEADER = len(SIDECAR_MAGIC) + _TOKEN_BYTES + 1
#: the suffix of the sidecar file beside a JSON document (``x.json`` -> ``x.json.bin``)
SIDECAR_SUFFIX = ".bin"


def sidecar_token(sidecar: str) -> str | None:
    """The token in the header of the sidecar file ``sidecar`` (``None``: no such
    file, or no header)."""
    try:
        with open(sidecar, "rb") as stream:
            header = stream.read(SIDECAR_HEADER)
    except OSError:
        return None
    if len(header) != SIDECAR_HEADER or not header.startswith(SIDECAR_MAGIC):
        return None
    return header[len(SIDECAR_MAGIC) : -1].decode("ascii", "replace")


def _kept_dir(sidecar: str) -> str:
    directory, name = os.path.split(sidecar)
    return os.path.join(directory, f".{name}.kept")


def old_sidecar_path(sidecar: str, token: str) -> str:
    """Where the sidecar of token ``token`` is kept while a new one replaces it (a
    directory of its own: seeing whether there is any costs one ``stat``, whatever
    else the document's directory holds)."""
    return os.path.join(_kept_dir(sidecar), token)


def keep_old_sidecar(sidecar: str) -> str | None:
    """Keep the sidecar file ``sidecar`` under :func:`old_sidecar_path` (a hard link)
    before a new one is renamed over it, and return that path (``None``: there is
    none). Until the document naming the new sidecar is in place, a crash leaves the
    old document, which then reads this copy (see :meth:`JSONBackend.read_pack`)."""
    token = sidecar_token(sidecar)
    if token is None:
        return None
    kept = old_sidecar_path(sidecar, token)
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    try:
        os.link(sidecar, kept)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        shutil.copyfile(sidecar, kept)
    return kept


def drop_kept_sidecars(sidecar: str) -> None:
    """Remove the copies :func:`keep_old_sidecar` made of ``sidecar`` (once the document
    names the sidecar now in place, nothing new reads them; a reader that opened one
    keeps reading it)."""
    directory = _kept_dir(sidecar)
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        _unlink(os.path.join(directory, name))
    try:
        os.rmdir(directory)
    except OSError:  # another save keeps a copy there meanwhile
        pass


class JSONBackend(LocationBackend):
    """One JSON document (all groups inline) plus, when it holds arrays, a *sidecar*
    file of their raw bytes beside it (``<document>.bin``; the *pack* of the HDF5 and
    zarr backends), which the document refers to by offset: as base64 text in the
    document, arrays cost 4x the time of writing their bytes and 10x that of reading
    them back.

    Parameters
    ----------
    location
        The directory holding the document.
    name
        The document's file name (its key in ``location``).
    path
        The document's full path.
    read_only
        Refuse writes.
    """

    packs = True

    def __init__(self, location: Location, name: str, path: str, read_only: bool = False) -> None:
        super().__init__(location, name, None, read_only, "json", repr(path))
        self.sidecar = path + SIDECAR_SUFFIX
        self.token: str | None = None  # of the sidecar the document pairs with
        #: that sidecar, open for reading once checked (a rename over its path, by a
        #: save of another process, does not change what this document reads)
        self._handle: BinaryIO | None = None
        self._handle_path = ""  # the sidecar, or the kept copy a crash left (_check)
        self._kept: str | None = None  # the old sidecar, until the new document is in
        self._replaced = False  # a new sidecar since the document was written

    def load_document(self, path: Path) -> dict[str, Any] | None:
        node = super().load_document(path)
        if isinstance(node, dict) and not path:
            token = node.get("@bin")
            self.token = token if isinstance(token, str) else None
            self._close_handle()
        return node

    def save_document(self, path: Path, document: dict[str, Any]) -> None:
        if not path and self.token is not None and not self._replaced:
            self._check()
            if self._handle_path != self.sidecar:  # a crash left the sidecar beside: a
                # writer puts a sidecar of the document's arrays back in its place
                self.write_pack((), 0, self.read_pack((), 0, self.pack_length(())))
        if not path:
            if self.token is None:
                document.pop("@bin", None)
            else:
                document["@bin"] = self.token
        super().save_document(path, document)
        if not path and self._replaced:  # the document names the new sidecar: the
            drop_kept_sidecars(self.sidecar)  # copies kept for crashes are done with
            self._kept, self._replaced = None, False

    def _damaged(self, problem: str) -> StoreFormatError:
        return StoreFormatError(f"{self.describe()}: its sidecar {self.sidecar!r} {problem}")

    def _check(self) -> BinaryIO:
        """Open the sidecar the document was written with: the sidecar file, or the
        copy of it kept while a new one replaced it when a crash (or a save of
        another process, in progress) left the old document; raise if neither."""
        if self._handle is not None:
            return self._handle
        expected = SIDECAR_MAGIC + (self.token or "").encode("ascii") + b"\n"
        candidates = [self.sidecar]
        if self.token is not None:
            candidates.append(old_sidecar_path(self.sidecar, self.token))
        for candidate in candidates:
            try:
                handle = open(candidate, "rb")  # kept open until close()
            except FileNotFoundError:
                continue
            if handle.read(SIDECAR_HEADER) == expected:
                self._handle, self._handle_path = handle, candidate
                return handle
            handle.close()
        if not os.path.exists(self.sidecar):
            raise self._damaged("is missing")
        raise self._damaged("belongs to another save of the document (or is damaged)")

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _appendable(self) -> bool:
        """Whether the sidecar file is the one the document reads (not a copy kept
        for a crash, nor a file that replaced it since)."""
        handle = self._check()
        if self._handle_path != self.sidecar:
            return False
        try:
            return os.fstat(handle.fileno()).st_ino == os.stat(self.sidecar).st_ino
        except FileNotFoundError:
            return False

    def pack_length(self, path: Path) -> int:
        if self.token is None:
            return 0
        return os.fstat(self._check().fileno()).st_size - SIDECAR_HEADER

    def read_pack(self, path: Path, start: int, stop: int) -> bytes:
        handle = self._check()
        return os.pread(handle.fileno(), max(0, stop - start), SIDECAR_HEADER + start)

    def write_pack(self, path: Path, start: int, data: bytes | bytearray) -> None:
        if self.token is not None and start:  # append (the document refers to what is there)
            if self._appendable():
                with open(self.sidecar, "r+b") as stream:
                    stream.seek(SIDECAR_HEADER + start)
                    stream.write(data)
                    stream.truncate()
                return
            data = self.read_pack(path, 0, start) + bytes(data)  # a new sidecar of both
        # a new sidecar (first arrays, or repacked), with a new token, switched atomically;
        # the old one is kept until the document names the new one
        if self.token is not None and self._kept is None:
            self._kept = keep_old_sidecar(self.sidecar)
        token = secrets.token_hex(_TOKEN_BYTES // 2)
        atomic_write(self.sidecar, [SIDECAR_MAGIC + token.encode("ascii") + b"\n", data])
        self.token = token
        self._replaced = True
        self._close_handle()

    def close(self) -> None:
        self._close_handle()
        super().close()


def _unlink(path: str) -> None:
    """Remove a file, if there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class JSONStorage(GenericStorage):
    """Storage in one JSON document (``json.load`` reads it), its arrays as raw bytes
    in a sidecar file beside it (``x.json.bin``, only when there are arrays; arrays
    inside lists and tuples stay base64 text in the document).

    The document is rewritten atomically (temp file + rename) at
    :meth:`flush`/:meth:`close`; it names the sidecar's token, so a document and a
    sidecar of different saves are refused, never mixed. A sidecar being replaced is
    kept (``.x.json.bin.kept/<token>``) until the document naming the new one is in
    place: a crash between the two leaves the old document with its sidecar.

    Parameters
    ----------
    path
        The file (``.json``).
    mode
        ``'r'``, ``'r+'``, ``'a'`` (default) or ``'w'``.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        from ..locations import DirectoryLocation

        read_only, truncate = mode_flags(mode)
        self.path = os.path.abspath(os.fspath(path))
        if os.path.isdir(self.path):
            raise StoreFormatError(f"{self.path!r} is a directory, not a JSON storage file")
        if not os.path.exists(self.path) and mode in ("r", "r+"):
            raise StoreNotFoundError(f"no JSON storage at {self.path!r}")
        directory, name = os.path.split(self.path)
        location = DirectoryLocation(directory, read_only=read_only)
        if truncate:
            location.delete(name)
            if os.path.exists(self.path + SIDECAR_SUFFIX):
                os.unlink(self.path + SIDECAR_SUFFIX)
        super().__init__(JSONBackend(location, name, self.path, read_only), created=truncate)


class RedisStorage(GenericStorage):
    """Storage in Redis: one JSON document per physical group, large arrays as raw
    bytes (through :class:`~simrecorder.locations.RedisLocation`).

    Parameters
    ----------
    url
        ``redis://host:port/db[/prefix]``.
    mode
        ``'r'``, ``'a'`` (default) or ``'w'`` (deletes what is under the prefix).
    **options
        Passed to :class:`~simrecorder.locations.RedisLocation` (``prefix=...``).
    """

    def __init__(self, url: str, mode: str = "a", **options: Any) -> None:
        from ..locations import RedisLocation

        read_only, truncate = mode_flags(mode)
        location = RedisLocation(url, read_only=read_only or None, **options)
        if truncate and not location.prefix:
            location.close()
            raise InvalidArgumentError(
                f"mode='w' on {location.url} would delete every key of the database: "
                "give the storage a prefix (redis://host:port/db/prefix)"
            )
        if truncate:
            location.delete_many(list(location.keys()))
        super().__init__(
            LocationBackend(location, "@index", 64 << 10, read_only, "redis", location.url)
        )
