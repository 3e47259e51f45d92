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
from typing import Any

import numpy as np

from .._keys import validate_key
from ..errors import InvalidKeyError
from . import _encoding as enc
from ._base import JSONIndexBackend
from ._core import PACKED, G, GenericStorage, encode_metadata, names_valid
from ._errors import UnstorableValueError
from ._index import FLOAT_BLOCK, FLOAT_COLUMN, FLOAT_COLUMN_MIN
from ._versions import FORMAT_VERSION, current_versions

__all__ = ["dump_plain"]

#: values stored as JSON by the value encoding (no group, no array of their own)
_ENCODED = frozenset({list, tuple, bytes, bytearray, complex})


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
        data = struct.pack(f"<{len(writer.floats)}d", *writer.floats)
        document[FLOAT_BLOCK] = binascii.b2a_base64(data, newline=False).decode("ascii")
    with tree.lock:
        if writer.pack:
            backend.write_pack((), 0, writer.pack)
        backend.save_document((), document)
        # what the storage holds now: read back (and expanded) when it is used again
        del tree._indexes[()]
        tree._documents[()] = document
        tree._pack_length[()] = len(writer.pack)
    return True


class _Writer:
    """Builds the members of the root document, its float block and its pack."""

    def __init__(self, backend: JSONIndexBackend) -> None:
        self.external = backend.external
        self.floats: list[float] = []
        self.pack = bytearray()
        self.dtype_texts: dict[np.dtype, str] = {}

    def members(self, mapping: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        isfinite = math.isfinite
        for key, item in mapping.items():
            cls = item.__class__
            if cls is float:
                out[key] = item if isfinite(item) else {"@f": repr(item)}
            elif cls is str or cls is int or cls is bool or item is None:
                out[key] = item
            elif cls is dict:
                out[key] = self.group(item)
            elif cls is np.ndarray:
                out[key] = self.packed(item)
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
        values = mapping.values()
        if len(mapping) >= FLOAT_COLUMN_MIN:
            for value in values:
                if value.__class__ is not float:
                    break
            else:
                isfinite = math.isfinite
                if isfinite(sum(values)) or all(isfinite(value) for value in values):
                    start = len(self.floats)
                    self.floats.extend(values)
                    return {FLOAT_COLUMN: [list(mapping), start]}
        return {G: self.members(mapping)}

    def packed(self, array: np.ndarray) -> dict[str, Any]:
        enc.check_dtype(array.dtype)
        if self.external(array):
            raise _NotPlain
        dtype = array.dtype
        text = self.dtype_texts.get(dtype)
        if text is None:
            text = self.dtype_texts[dtype] = dtype.str
        entry = {PACKED: [text, list(array.shape), len(self.pack)]}
        self.pack += array.tobytes()
        return entry
