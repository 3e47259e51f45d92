"""A save of plain data in one pass: the root index document (float columns included)
and the pack are built straight from the value and written, without the in-memory
index, its settling and its later conversion to a document (three more passes over a
tree of many small leaves, which is what made such saves slow).

Anything else (objects, arrays large enough to be datasets of their own, values that
cannot be stored) is left to :meth:`GenericStorage.dump`, which also names the key of
a bad value.
"""

from __future__ import annotations

import binascii
import math
import struct
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps uses
from typing import Any, cast

import numpy as np

from .._keys import validate_key
from ..errors import InvalidKeyError
from . import _encoding as enc
from ._base import JSONIndexBackend
from ._core import PACKED, G, GenericStorage, encode_metadata, names_valid
from ._errors import UnstorableValueError
from ._index import FLOAT_BLOCK, FLOAT_COLUMN, FLOAT_COLUMN_MIN
from ._index import encoder as _encoder
from ._versions import FORMAT_VERSION, current_versions

__all__ = ["dump_plain"]

#: values stored as JSON by the value encoding (no group, no array of their own)
_ENCODED = frozenset({list, tuple, bytes, bytearray, complex})
_CONSTANTS = {True: "true", False: "false", None: "null"}


def _valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKeyError:
        return False
    return True


class _NotPlain(Exception):
    """The value holds what only :meth:`GenericStorage.dump` stores."""


def _no_objects(value: Any) -> Any:
    """Objects inside lists go to the general path: encoding one here would call a
    Storable's ``_store`` a second time if the general path then wrote the value."""
    raise _NotPlain


def dump_plain(storage: GenericStorage, obj: Any, metadata: dict[str, Any]) -> bool:
    """Write ``obj`` into ``storage``, created empty just before, in one pass when it
    is a dict of plain data whose arrays all fit its group's pack.

    Returns
    -------
    bool
        Whether it was written (``False``: nothing was written; use ``storage.dump``).
    """
    tree = storage._tree
    backend = tree.backend
    if (
        obj.__class__ is not dict
        or not isinstance(backend, JSONIndexBackend)
        or not backend.packs
        or backend.raw_arrays
        or backend.read_only
        or tree._indexes.get(()) != {G: {}}
        or tree._dirty
        or not names_valid(obj)
        or not all(_valid_key(key) for key in obj)  # as root[key] = value checks them
    ):
        return False
    if backend.writes_text:
        return _dump_text(storage, obj, metadata)
    writer = _Writer(backend)
    try:
        members = writer.members(obj)
    except (_NotPlain, UnstorableValueError):
        return False
    document: dict[str, Any] = {
        G: members,
        "@format": FORMAT_VERSION,
        "@versions": current_versions(set()),  # no classes: objects take the other path
        "@meta": encode_metadata(metadata),
    }
    if writer.floats:
        document[FLOAT_BLOCK] = _float_block(writer.floats)
    pack = writer.pack
    with tree.lock:
        if pack:
            backend.write_pack((), 0, pack)
        backend.save_document((), document)
        # what the storage holds now: read back (and expanded) when it is used again
        del tree._indexes[()]
        tree._documents[()] = document
        tree._pack_length[()] = len(pack)
    return True


def _float_block(floats: list[float]) -> str:
    """The float block of an index (see :data:`FLOAT_BLOCK`)."""
    data = struct.pack(f"<{len(floats)}d", *floats)
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _dump_text(storage: GenericStorage, obj: dict[str, Any], metadata: dict[str, Any]) -> bool:
    """:func:`dump_plain` for a backend that writes the index as JSON text: the text
    is written during the walk (no document to encode after it)."""
    tree = storage._tree
    backend = cast(JSONIndexBackend, tree.backend)
    writer = _TextWriter(backend)
    out = ['{"@g":']
    try:
        writer.members(obj, out)
    except (_NotPlain, UnstorableValueError):
        return False
    out.append(f',"@format":{FORMAT_VERSION},"@versions":')
    out.append(_encoder.encode(current_versions(set())))  # no classes: see dump_plain
    out.append(',"@meta":')
    out.append(_encoder.encode(encode_metadata(metadata)))
    if writer.floats:
        out.append(f',"{FLOAT_BLOCK}":"{_float_block(writer.floats)}"}}')
    else:
        out.append("}")
    pack = writer.pack
    with tree.lock:
        if pack:
            backend.write_pack((), 0, pack)
        backend.save_text((), "".join(out))
        del tree._indexes[()]  # read back from the backend when it is used again
        tree._pack_length[()] = len(pack)
    return True


class _Writer:
    """Builds the members of the root document, its float block and its pack."""

    def __init__(self, backend: JSONIndexBackend) -> None:
        self.external = backend.external
        #: arrays of fewer bytes are never external (what ``inline_limit`` promises):
        #: their checks are made once per dtype
        self.small = backend.inline_limit or 0
        self.floats: list[float] = []
        self.pack = bytearray()  # the bytes of each array in turn
        self.dtype_texts: dict[np.dtype, str] = {}

    def members(self, mapping: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        isfinite = math.isfinite
        texts = self.dtype_texts
        for key, item in mapping.items():
            cls = item.__class__
            if cls is float:
                out[key] = item if isfinite(item) else {"@f": repr(item)}
            elif cls is str or cls is int or cls is bool or item is None:
                out[key] = item
            elif cls is dict:
                out[key] = self.group(item)
            elif cls is np.ndarray:  # packed (the common case inline: many are small)
                text = texts.get(item.dtype)
                if text is None or item.nbytes >= self.small:
                    text = self.checked(item)
                out[key] = {PACKED: [text, list(item.shape), len(self.pack)]}
                self.pack += item.tobytes()
            elif cls in _ENCODED or isinstance(item, np.generic):
                out[key] = enc.encode_value(item, _no_objects)
            else:
                raise _NotPlain
        return out

    def group(self, mapping: dict[Any, Any]) -> Any:
        """The entry of a dict: a group (a float column when it holds only floats), or
        an encoded dict when its keys are not names."""
        if not names_valid(mapping):
            return enc.encode_value(mapping, _no_objects)
        start = self.float_column(mapping)
        if start is not None:
            return {FLOAT_COLUMN: [list(mapping), start]}
        return {G: self.members(mapping)}

    def float_column(self, mapping: dict[str, Any]) -> int | None:
        """Where the values of ``mapping`` start in :attr:`floats`, when it is a float
        column (only finite floats, enough of them; they are added), else None."""
        values = mapping.values()
        if len(mapping) < FLOAT_COLUMN_MIN:
            return None
        for value in values:
            if value.__class__ is not float:
                return None
        isfinite = math.isfinite
        if not (isfinite(sum(values)) or all(isfinite(value) for value in values)):
            return None
        start = len(self.floats)
        self.floats.extend(values)
        return start

    def checked(self, array: np.ndarray) -> str:
        """The dtype text of an array to pack (:class:`_NotPlain` when it is to be
        external; :class:`UnstorableValueError` for a dtype that cannot be stored)."""
        enc.check_dtype(array.dtype)
        if self.external(array):
            raise _NotPlain
        text = self.dtype_texts[array.dtype] = array.dtype.str
        return text


class _TextWriter(_Writer):
    """Builds the JSON text of the root document's members (as
    :func:`~simrecorder.storage._index.encode` would write what :class:`_Writer`
    builds), its float block and its pack."""

    def __init__(self, backend: JSONIndexBackend) -> None:
        super().__init__(backend)
        self.entry_heads: dict[np.dtype, str] = {}  # '{"@p":["<f8",' by dtype
        self.shape_texts: dict[tuple[int, ...], str] = {}  # '[100],' by shape

    def members(self, mapping: dict[str, Any], out: list[str]) -> None:  # type: ignore[override]
        """Append the JSON object of the members of ``mapping`` to ``out``."""
        isfinite = math.isfinite
        heads = self.entry_heads
        shapes = self.shape_texts
        sep = "{"
        for key, item in mapping.items():
            cls = item.__class__
            if cls is float:
                text = repr(item) if isfinite(item) else f'{{"@f":"{item!r}"}}'
                out.append(f"{sep}{_quote(key)}:{text}")
            elif cls is str:
                out.append(f"{sep}{_quote(key)}:{_quote(item)}")
            elif cls is bool or item is None:
                out.append(f"{sep}{_quote(key)}:{_CONSTANTS[item]}")
            elif cls is int:
                out.append(f"{sep}{_quote(key)}:{int.__repr__(item)}")
            elif cls is dict:
                out.append(f"{sep}{_quote(key)}:")
                self.group_text(item, out)
            elif cls is np.ndarray:  # packed (the common case inline: many are small)
                head = heads.get(item.dtype)
                if head is None or item.nbytes >= self.small:
                    head = heads[item.dtype] = f'{{"{PACKED}":["{self.checked(item)}",'
                shape = item.shape
                shape_text = shapes.get(shape)
                if shape_text is None:
                    shape_text = shapes[shape] = "[" + ",".join(map(str, shape)) + "],"
                out.append(f"{sep}{_quote(key)}:{head}{shape_text}{len(self.pack)}]}}")
                self.pack += item.tobytes()
            elif cls in _ENCODED or isinstance(item, np.generic):
                value = _encoder.encode(enc.encode_value(item, _no_objects))
                out.append(f"{sep}{_quote(key)}:{value}")
            else:
                raise _NotPlain
            sep = ","
        out.append("{}" if sep == "{" else "}")

    def group_text(self, mapping: dict[Any, Any], out: list[str]) -> None:
        """Append the JSON of the entry of a dict to ``out`` (as :meth:`group`)."""
        if not names_valid(mapping):
            out.append(_encoder.encode(enc.encode_value(mapping, _no_objects)))
            return
        start = self.float_column(mapping)
        if start is not None:
            names = ",".join(map(_quote, mapping))
            out.append(f'{{"{FLOAT_COLUMN}":[[{names}],{start}]}}')
            return
        out.append('{"@g":')
        self.members(mapping, out)
        out.append("}")
