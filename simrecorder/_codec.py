"""Encoding of object samples to bytes, numpy-aware and without pickle.

The format is a small tagged binary encoding. An encoded sample starts with the magic
``b"SRO"`` and a format version byte, then one tagged item. Supported: ``None``,
``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict`` (keys of any supported type), ``set``/``frozenset``, numpy scalars
and numpy arrays of any non-object dtype (structured dtypes included); arrays of dtype
``object`` are encoded element by element. Anything else raises
:class:`~simrecorder.errors.SchemaError`: arbitrary classes are never pickled, so
reading a file never runs code from it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .errors import SchemaError, StoreFormatError

__all__ = ["FORMAT_VERSION", "decode", "encode", "encode_for"]

MAGIC = b"SRO"
FORMAT_VERSION = 1
_HEADER = MAGIC + bytes([FORMAT_VERSION])

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 200
_COLLECTION_TAGS: dict[type, bytes] = {list: b"l", tuple: b"t", set: b"e", frozenset: b"z"}
#: builtin bases a subclass (IntEnum, OrderedDict, namedtuple...) is stored as
_BUILTIN_BASES: tuple[type[Any], ...] = (
    bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset,
)  # fmt: skip


def encode(value: Any) -> bytes:
    """Encode one object sample to bytes.

    Parameters
    ----------
    value
        The sample; see the module docstring for what is supported.

    Returns
    -------
    bytes

    Raises
    ------
    SchemaError
        If ``value`` contains something that cannot be encoded.

    Examples
    --------
    >>> decode(encode({"a": [1, 2.5, None]}))
    {'a': [1, 2.5, None]}
    """
    out: list[bytes] = [_HEADER]
    _encode_into(value, out, 0)
    return b"".join(out)


def encode_for(key: str, value: Any) -> bytes:
    """:func:`encode`, with the key named in the :class:`SchemaError` it may raise."""
    try:
        return encode(value)
    except SchemaError as exc:
        raise SchemaError(f"key {key!r}: {exc}") from None


def _dtype_descr(dtype: np.dtype) -> bytes:
    if dtype.fields is not None or dtype.subdtype is not None:
        return json.dumps(np.lib.format.dtype_to_descr(dtype)).encode()
    return dtype.str.encode()


def _encode_into(value: Any, out: list[bytes], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"object nested deeper than {_MAX_DEPTH} levels cannot be encoded")
    cls = type(value)
    if value is None:
        out.append(b"n")
    elif cls is bool:
        out.append(b"T" if value else b"F")
    elif cls is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            out.append(b"q" + _I64.pack(value))
        else:  # two's complement bytes: no limit on digits, unlike str(int)
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            out.append(b"I" + _U32.pack(len(data)) + data)
    elif cls is float:
        out.append(b"d" + _F64.pack(value))
    elif cls is complex:
        out.append(b"c" + _C128.pack(value.real, value.imag))
    elif cls is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s" + _U32.pack(len(data)) + data)
    elif cls is bytes or cls is bytearray:
        out.append((b"b" if cls is bytes else b"B") + _U32.pack(len(value)) + bytes(value))
    elif cls in (list, tuple, set, frozenset):
        tag = _COLLECTION_TAGS[cls]
        out.append(tag + _U32.pack(len(value)))
        for item in value:
            _encode_into(item, out, depth + 1)
    elif cls is dict:
        out.append(b"m" + _U32.pack(len(value)))
        for k, v in value.items():
            _encode_into(k, out, depth + 1)
            _encode_into(v, out, depth + 1)
    elif isinstance(value, np.ndarray):
        _encode_array(value, out, depth)
    elif isinstance(value, np.generic):
        if value.dtype.kind == "O":
            _encode_into(value.item(), out, depth + 1)
            return
        _check_plain_dtype(value.dtype)
        descr = _dtype_descr(value.dtype)
        data = np.asarray(value).tobytes()
        out.append(b"g" + _U32.pack(len(descr)) + descr + _U32.pack(len(data)) + data)
    elif isinstance(value, (bool, int, float, complex, str, bytes, list, tuple, dict, set)):
        # subclasses (IntEnum, OrderedDict, namedtuple...) are stored as their base type
        for base in _BUILTIN_BASES:
            if isinstance(value, base):
                _encode_into(base(value), out, depth)
                return
    else:
        raise SchemaError(
            f"cannot encode a {cls.__module__}.{cls.__qualname__} in an object series: "
            "supported are None, bool, int, float, complex, str, bytes, list, tuple, dict, "
            "set and numpy arrays/scalars (convert the value, e.g. to a dict of arrays)"
        )


def _check_plain_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise SchemaError(
            f"cannot encode numpy data of dtype {dtype}: structured fields of dtype object "
            "hold Python objects, not bytes (use a dict of arrays instead)"
        )


def _encode_array(value: np.ndarray, out: list[bytes], depth: int) -> None:
    shape = value.shape
    head = _U32.pack(len(shape)) + b"".join(_I64.pack(n) for n in shape)
    if value.dtype.kind == "O":
        out.append(b"o" + head)
        for item in value.ravel(order="C"):
            _encode_into(item, out, depth + 1)
        return
    _check_plain_dtype(value.dtype)
    descr = _dtype_descr(value.dtype)
    data = np.ascontiguousarray(value).tobytes()
    out.append(b"a" + _U32.pack(len(descr)) + descr + head + _I64.pack(len(data)) + data)


def decode(data: bytes | bytearray | memoryview | np.ndarray) -> Any:
    """Decode bytes made by :func:`encode`.

    Raises
    ------
    StoreFormatError
        If the bytes are not an encoded sample or come from a newer format version.
    """
    buf = np.ascontiguousarray(data).data if isinstance(data, np.ndarray) else memoryview(data)
    buf = buf.cast("B")
    if bytes(buf[:3]) != MAGIC:
        raise StoreFormatError("not an encoded simrecorder object sample (bad magic)")
    if buf[3] > FORMAT_VERSION:
        raise StoreFormatError(
            f"object sample has format version {buf[3]}, this simrecorder reads up to "
            f"{FORMAT_VERSION}: upgrade simrecorder"
        )
    value, pos = _decode_at(buf, 4)
    if pos != len(buf):
        raise StoreFormatError("trailing bytes after an encoded object sample")
    return value


def _dtype_from(descr: bytes) -> np.dtype:
    text = descr.decode()
    if text.startswith("[") or text.startswith('"'):
        return np.lib.format.descr_to_dtype(_tuplify(json.loads(text)))
    return np.dtype(text)


def _tuplify(descr: Any) -> Any:
    """Undo what JSON did to a numpy descr: fields ``(name, type[, shape])`` and titled
    names ``(title, name)`` came back as lists; a nested type is itself a descr list."""
    if not isinstance(descr, list):
        return descr
    fields = []
    for name, kind, *shape in descr:
        name = tuple(name) if isinstance(name, list) else name
        kind = _tuplify(kind) if isinstance(kind, list) else kind
        fields.append((name, kind, *(tuple(s) for s in shape)))
    return fields


def _decode_at(buf: memoryview, pos: int) -> tuple[Any, int]:
    tag = buf[pos : pos + 1].tobytes()
    pos += 1
    if tag == b"n":
        return None, pos
    if tag == b"T":
        return True, pos
    if tag == b"F":
        return False, pos
    if tag == b"q":
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if tag == b"d":
        return _F64.unpack_from(buf, pos)[0], pos + 8
    if tag == b"c":
        re, im = _C128.unpack_from(buf, pos)
        return complex(re, im), pos + 16
    if tag in (b"I", b"s", b"b", b"B"):
        (n,) = _U32.unpack_from(buf, pos)
        raw = buf[pos + 4 : pos + 4 + n].tobytes()
        pos += 4 + n
        if tag == b"I":
            return int.from_bytes(raw, "little", signed=True), pos
        if tag == b"s":
            return raw.decode("utf-8", "surrogatepass"), pos
        return (raw if tag == b"b" else bytearray(raw)), pos
    if tag in (b"l", b"t", b"e", b"z"):
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode_at(buf, pos)
            items.append(item)
        container = {b"l": list, b"t": tuple, b"e": set, b"z": frozenset}[tag]
        return (items if tag == b"l" else container(items)), pos
    if tag == b"m":
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        result = {}
        for _ in range(n):
            k, pos = _decode_at(buf, pos)
            v, pos = _decode_at(buf, pos)
            result[k] = v
        return result, pos
    if tag == b"g":
        (n,) = _U32.unpack_from(buf, pos)
        dtype = _dtype_from(buf[pos + 4 : pos + 4 + n].tobytes())
        pos += 4 + n
        (m,) = _U32.unpack_from(buf, pos)
        if dtype.itemsize == 0:  # np.str_("") and np.bytes_(b""): nothing to read
            return np.zeros((), dtype=dtype)[()], pos + 4 + m
        arr = np.frombuffer(buf[pos + 4 : pos + 4 + m].tobytes(), dtype=dtype)
        return arr[0], pos + 4 + m
    if tag == b"a":
        (n,) = _U32.unpack_from(buf, pos)
        dtype = _dtype_from(buf[pos + 4 : pos + 4 + n].tobytes())
        pos += 4 + n
        shape, pos = _decode_shape(buf, pos)
        (m,) = _I64.unpack_from(buf, pos)
        pos += 8
        if dtype.itemsize == 0:
            return np.zeros(shape, dtype=dtype), pos + m
        # copy: the caller owns the array and may write to it
        arr = np.frombuffer(buf[pos : pos + m], dtype=dtype).reshape(shape).copy()
        return arr, pos + m
    if tag == b"o":
        shape, pos = _decode_shape(buf, pos)
        count = int(np.prod(shape, dtype=np.int64))
        arr = np.empty(count, dtype=object)
        for i in range(count):
            arr[i], pos = _decode_at(buf, pos)
        return arr.reshape(shape), pos
    raise StoreFormatError(f"unknown tag {tag!r} in an encoded object sample")


def _decode_shape(buf: memoryview, pos: int) -> tuple[tuple[int, ...], int]:
    (ndim,) = _U32.unpack_from(buf, pos)
    pos += 4
    shape = tuple(_I64.unpack_from(buf, pos + 8 * i)[0] for i in range(ndim))
    return shape, pos + 8 * ndim
