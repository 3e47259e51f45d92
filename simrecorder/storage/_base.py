"""What the storage backends share: the index as JSON text, the names of the storage's
own nodes, the open modes."""

from __future__ import annotations

import binascii
import itertools
import json
import struct
from typing import Any

from ..errors import InvalidModeError, StoreFormatError
from ._core import Backend, Path

__all__ = [
    "INDEX_NAME",
    "INLINE_LIMIT",
    "PACK_NAME",
    "dumps",
    "loads",
    "mode_flags",
    "pack_chunk",
    "read_node",
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


#: Tag of a *float column*: an inline group whose members are all floats is written as
#: ``{"@gF": [[name, ...], start]}`` in the index text, its values being the float64
#: values ``start:start + len(names)`` of the index's *float block*
#: ``"@gv": "<base64 of little-endian float64 values>"`` (a key of the index's top
#: level); it is read back as ``{"@g": {name: float}}``. Turning floats into decimal
#: text is most of the cost of writing an index of many scalars.
FLOAT_COLUMN = "@gF"
FLOAT_BLOCK = "@gv"
#: groups with fewer floats than this stay plain JSON
FLOAT_COLUMN_MIN = 2
_encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def dumps(node: dict[str, Any]) -> str:
    """An index as JSON text (non-finite floats are tagged, so the text is strict JSON;
    inline groups of floats become float columns, see :data:`FLOAT_COLUMN`)."""
    floats: list[float] = []
    text = _with_columns(node, floats)
    if floats:
        text = dict(text)
        data = struct.pack(f"<{len(floats)}d", *floats)
        text[FLOAT_BLOCK] = binascii.b2a_base64(data, newline=False).decode("ascii")
    return _encoder.encode(text)


def _with_columns(node: dict[str, Any], floats: list[float]) -> dict[str, Any]:
    """``node`` (a group node) with its inline float groups as float columns whose
    values are appended to ``floats`` (a copy of the nodes on the way to them; ``node``
    itself is not changed)."""
    items = node["@g"]
    out: dict[str, Any] | None = None
    for position, (name, entry) in enumerate(items.items()):
        if entry.__class__ is not dict or "@g" not in entry:
            if out is not None:
                out[name] = entry
            continue
        new = _column(entry, floats) or _with_columns(entry, floats)
        if out is None:
            if new is entry:
                continue
            out = dict(itertools.islice(items.items(), position))
        out[name] = new
    if out is None:
        return node
    copy = dict(node)
    copy["@g"] = out
    return copy


def _column(entry: dict[str, Any], floats: list[float]) -> dict[str, Any] | None:
    """The float column of an inline group of floats only (``None`` for other groups)."""
    if len(entry) != 1:
        return None
    members = entry["@g"]
    if len(members) < FLOAT_COLUMN_MIN:
        return None
    values = members.values()
    for value in values:
        if value.__class__ is not float:
            return None
    start = len(floats)
    floats.extend(values)
    return {FLOAT_COLUMN: [list(members), start]}


def _without_columns(
    node: dict[str, Any], floats: list[float], where: str, path: tuple[str, ...] = ()
) -> None:
    """Turn the float columns below ``node`` back into groups of floats (in place)."""
    members = node.get("@g")
    if members.__class__ is not dict:
        return
    for name, entry in members.items():
        if entry.__class__ is not dict:
            continue
        body = entry.get(FLOAT_COLUMN)
        if body is not None:
            if len(entry) != 1:
                continue
            # replacing a value while iterating is fine: the size stays the same
            names = body[0] if body.__class__ is list and len(body) == 2 else None
            start = body[1] if names is not None else None
            if (  # the common case inline (a call per group is a third of the cost)
                names.__class__ is list
                and start.__class__ is int
                and 0 <= start <= len(floats) - len(names)
            ):
                members[name] = {"@g": dict(zip(names, floats[start : start + len(names)]))}  # noqa: B905
            else:
                members[name] = {"@g": _read_column(body, floats, where, (*path, name))}
        elif "@g" in entry:
            _without_columns(entry, floats, where, (*path, name))


def _read_column(
    body: Any, floats: list[float], where: str, path: tuple[str, ...]
) -> dict[str, float]:
    names = start = None
    if body.__class__ is list and len(body) == 2:
        names, start = body
    if names.__class__ is not list or start.__class__ is not int or start < 0:
        raise StoreFormatError(f"{where}, /{'/'.join(path)}: the float column is damaged")
    stop = start + len(names)
    if stop > len(floats):
        raise StoreFormatError(
            f"{where}, /{'/'.join(path)}: the float column does not match the float block"
        )
    return dict(zip(names, floats[start:stop]))  # noqa: B905 - the lengths are checked


def _float_block(node: dict[str, Any], where: str) -> list[float]:
    text = node.pop(FLOAT_BLOCK)
    try:
        data = binascii.a2b_base64(text)
        return list(struct.unpack(f"<{len(data) // 8}d", data))
    except (TypeError, ValueError, binascii.Error, struct.error) as exc:
        raise StoreFormatError(f"{where}: the float block is damaged ({exc})") from None


def loads(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse an index, or raise :class:`StoreFormatError` naming ``where``."""
    try:
        node = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreFormatError(f"{where}: the storage index is damaged ({exc})") from None
    if not isinstance(node, dict):
        raise StoreFormatError(f"{where}: the storage index is not a JSON object")
    if FLOAT_BLOCK in node:
        _without_columns(node, _float_block(node, where), where)
    return node


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
