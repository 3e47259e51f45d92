"""Single values (``set``/``get``) as arrays and bytes, shared by the file stores."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _codec
from .._schema import BYTES, DENSE, STR, infer_spec

__all__ = ["PYTYPE_ATTR", "decode_value", "encode_value", "jsonable", "python_scalar"]

#: Attribute that remembers a value was a Python scalar (so ``get`` returns ``1``, not
#: ``np.int64(1)``).
PYTYPE_ATTR = "simrecorder_pytype"
_PY_SCALARS = {cls.__name__: cls for cls in (bool, int, float, complex)}


def encode_value(key: str, value: Any) -> tuple[str, np.ndarray, dict[str, str]]:
    """``(kind, data, attrs)`` for storing ``value``: dense values as themselves, the
    rest as uint8 bytes (UTF-8 for str, the object codec for objects)."""
    kind = infer_spec(value).kind
    attrs = {PYTYPE_ATTR: type(value).__name__} if type(value).__name__ in _PY_SCALARS else {}
    if kind == DENSE:
        return kind, np.asarray(value), attrs
    if kind == STR:
        raw = value.encode("utf-8", "surrogatepass")
    elif kind == BYTES:
        raw = bytes(value)
    else:
        raw = _codec.encode_for(key, value)
    return kind, np.frombuffer(raw, dtype=np.uint8), attrs


def decode_value(kind: str, data: np.ndarray, pytype: str | None) -> Any:
    """Inverse of :func:`encode_value`."""
    if kind == DENSE:
        if pytype:
            return python_scalar(pytype, data)
        return data[()] if data.ndim == 0 else data
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    if kind == STR:
        return raw.decode("utf-8", "surrogatepass")
    return raw if kind == BYTES else _codec.decode(raw)


def python_scalar(pytype: str, data: np.ndarray) -> Any:
    """The Python scalar of type name ``pytype`` held in the 0-d ``data``."""
    return _PY_SCALARS[pytype](np.asarray(data)[()].item())


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values (for JSON metadata)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
