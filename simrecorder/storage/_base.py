"""What the storage backends share: the index as JSON text, the names of the storage's
own nodes, the open modes."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidModeError, StoreFormatError
from ._core import Backend, Path
from ._index import dumps, encode, from_document, loads, parse, to_document

__all__ = [
    "INDEX_NAME",
    "INLINE_LIMIT",
    "PACK_NAME",
    "JSONIndexBackend",
    "dumps",
    "encode",
    "from_document",
    "index_where",
    "loads",
    "mode_flags",
    "pack_chunk",
    "parse",
    "read_node",
    "to_document",
]

#: Arrays of at least this many bytes become datasets of their own (smaller ones go to
#: their group's pack, or into its index).
INLINE_LIMIT = 4096
#: Name of the attribute (and, when large, the dataset) holding a group's index.
INDEX_NAME = "simrecorder_storage"
#: Name of the dataset holding a group's small arrays as raw bytes, one after the other.
PACK_NAME = ".simrecorder_pack"


def pack_chunk(first: int) -> int:
    """Chunk size of a new pack: its first content in one chunk (no padding), within
    4 KiB..1 MiB, so that one leaf reads at most a MiB."""
    return min(max(first, 4096), 1 << 20)


class JSONIndexBackend(Backend):
    """A backend that stores each index as JSON (:func:`to_document`): it implements
    :meth:`load_document`; the index is that document with its float columns
    expanded."""

    def load_index(self, path: Path) -> dict[str, Any] | None:
        document = self.load_document(path)
        if document is None:
            return None
        return from_document(document, index_where(self, path))

    def load_document(self, path: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    def save_index(self, path: Path, node: dict[str, Any]) -> None:
        self.save_document(path, to_document(node))

    def save_document(self, path: Path, document: dict[str, Any]) -> None:
        """Write the index document of the physical group ``path`` (:func:`to_document`)."""
        raise NotImplementedError

    #: :meth:`save_text` takes the index as JSON text (made while walking a value,
    #: without a document to encode)
    writes_text = False

    def save_text(self, path: Path, text: str) -> None:
        """Write the index of ``path`` given as the JSON text of its document."""
        self.save_document(path, parse(text, index_where(self, path)))


def index_where(backend: Backend, path: Path) -> str:
    """The index of ``path`` in ``backend``, for messages."""
    return f"{backend.describe()} group /{'/'.join(path)}"


def mode_flags(mode: str) -> tuple[bool, bool]:
    """``(read_only, truncate)`` for ``'r'``, ``'r+'``, ``'a'``, ``'w'``."""
    if mode not in ("r", "r+", "a", "w"):
        raise InvalidModeError(f"storage mode must be 'r', 'r+', 'a' or 'w', got {mode!r}")
    return mode == "r", mode == "w"


def read_node(backend: Backend, path: Path, read: Any) -> Any:
    """``read()``, with a missing or unreadable dataset as a :class:`StoreFormatError`
    naming the file and the dataset (the index refers to it: the file is damaged)."""
    try:
        return read()
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise StoreFormatError(
            f"{backend.describe()}: cannot read /{'/'.join(path)} "
            f"({type(exc).__name__}: {exc}); the file is damaged"
        ) from exc
