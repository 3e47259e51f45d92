"""A group's index as JSON: the text (or object) a backend writes, and back.

Inline groups of floats become *float columns* on the way out (see
:data:`FLOAT_COLUMN`); :func:`from_document` turns them back into groups.
"""

from __future__ import annotations

import binascii
import itertools
import json
import struct
from typing import Any

from ..errors import StoreFormatError

__all__ = [
    "FLOAT_BLOCK",
    "FLOAT_COLUMN",
    "dumps",
    "encode",
    "encoder",
    "float_block",
    "from_document",
    "loads",
    "parse",
    "read_column",
    "to_document",
]

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
#: the encoder of index texts (compact, strict ASCII)
encoder = _encoder


def dumps(node: dict[str, Any]) -> str:
    """An index as JSON text (non-finite floats are tagged, so the text is strict JSON;
    inline groups of floats become float columns, see :data:`FLOAT_COLUMN`)."""
    return _encoder.encode(to_document(node))


def encode(document: dict[str, Any]) -> str:
    """A document (:func:`to_document`) as JSON text."""
    return _encoder.encode(document)


def to_document(node: dict[str, Any]) -> dict[str, Any]:
    """An index as the JSON object :func:`dumps` writes (for backends that embed it in
    a JSON document of their own: encoded once, not as a string inside a string)."""
    floats: list[float] = []
    document = _with_columns(node, floats)
    if floats:
        document = dict(document)
        data = struct.pack(f"<{len(floats)}d", *floats)
        document[FLOAT_BLOCK] = binascii.b2a_base64(data, newline=False).decode("ascii")
    return document


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
                members[name] = {"@g": read_column(body, floats, where, (*path, name))}
        elif "@g" in entry:
            _without_columns(entry, floats, where, (*path, name))


def read_column(
    body: Any, floats: list[float], where: str, path: tuple[str, ...]
) -> dict[str, float]:
    """The group of floats of the float column ``body`` (checked against ``floats``)."""
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


def float_block(node: dict[str, Any], where: str) -> list[float]:
    """The values of the float block of a parsed document (``node`` is not changed)."""
    text = node[FLOAT_BLOCK]
    try:
        data = binascii.a2b_base64(text)
        return list(struct.unpack(f"<{len(data) // 8}d", data))
    except (TypeError, ValueError, binascii.Error, struct.error) as exc:
        raise StoreFormatError(f"{where}: the float block is damaged ({exc})") from None


def parse(text: str | bytes, where: str) -> Any:
    """The JSON of an index's text, or :class:`StoreFormatError` naming ``where``."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreFormatError(f"{where}: the storage index is damaged ({exc})") from None


def loads(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse an index, or raise :class:`StoreFormatError` naming ``where``."""
    return from_document(parse(text, where), where)


def from_document(node: Any, where: str) -> dict[str, Any]:
    """The index of a JSON object :func:`to_document` made (parsed; changed in place),
    or :class:`StoreFormatError` naming ``where``."""
    if not isinstance(node, dict):
        raise StoreFormatError(f"{where}: the storage index is not a JSON object")
    if FLOAT_BLOCK in node:
        floats = float_block(node, where)
        del node[FLOAT_BLOCK]
        _without_columns(node, floats, where)
    return node
