"""The value encoding of :mod:`simrecorder.storage`: Python values as JSON values.

Plain JSON types stay themselves (``None``, ``bool``, ``int`` of any size, finite
``float``, ``str``, ``list``); everything else is a one-key JSON object whose key names
the type (a *tag*), so a stored file reads in ``json.load`` and decodes back to the same
types and values:

========================  =============================================
``{"@f": "nan"}``         a non-finite float (``nan``, ``inf``, ``-inf``)
``{"@t": [...]}``         a tuple
``{"@d": {...}}``         a dict that is a value (inside a list, or with keys
                          that cannot be group names)
``{"@b": "base64"}``      bytes (``@ba``: bytearray)
``{"@j": [re, im]}``      a complex
``{"@s": [dtype, b64]}``  a numpy scalar (its raw bytes)
``{"@a": [dtype, shape, b64]}``  a numpy array (raw C-order bytes)
``{"@o": node}``          an object inside a list (its group node)
========================  =============================================

A *group node* is ``{"@g": {name: entry}, "@a": attrs, "@c": "module:qualname",
"@k": kind}`` (``@a``, ``@c``, ``@k`` only when present). No pickle is ever involved:
objects are stored as the plain data of their fields and rebuilt from it.

In the index *text* (what a backend writes; ``_index.dumps``/``loads``), an inline group
holding only floats (two or more) is a *float column* ``{"@gF": [[name, ...], start]}``:
its values are the float64 values ``start:start + len(names)`` of the index's *float
block*, the top-level key ``"@gv"`` holding the base64 text of little-endian float64
bytes. Plain ``json.load`` still reads the file; the values are
``struct.unpack('<%dd' % n, base64.b64decode(doc['@gv']))[start:start + len(names)]``.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import importlib
import itertools
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._errors import DamagedValueError, UnstorableValueError

__all__ = [
    "Storable",
    "class_path",
    "decode_value",
    "encode_value",
    "import_class",
    "object_kind",
    "object_state",
    "restore_object",
]

#: Entry tags that are not values: group nodes and the backends' own markers.
GROUP = "@g"
PHYSICAL_GROUP = "@G"
EXTERNAL_ARRAY = "@A"
RAW_ARRAY = "@n"  # an array held as itself (memory storage only)
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
#: types that are never stored as objects (a list of them is encoded item by item)
_PLAIN = frozenset({str, int, float, bool, type(None), list, tuple, dict, bytes, bytearray,
                    complex, np.ndarray})  # fmt: skip
_INT64 = (-(2**63), 2**63 - 1)
_local = threading.local()


@contextmanager
def collecting_classes() -> Iterator[set[str]]:
    """Collect the class paths of the objects encoded in this thread meanwhile."""
    seen: set[str] = set()
    previous = getattr(_local, "classes", None)
    _local.classes = seen
    try:
        yield seen
    finally:
        _local.classes = previous


def note_class(path: str) -> None:
    """Record a stored class (see :func:`collecting_classes`)."""
    seen = getattr(_local, "classes", None)
    if seen is not None:
        seen.add(path)


@runtime_checkable
class Storable(Protocol):
    """An object that stores itself into a :class:`~simrecorder.storage.StorageGroup`.

    ``_store(group)`` writes the object's data into an empty group; the classmethod
    ``_restore(group)`` builds the object back from that group.
    """

    def _store(self, group: Any) -> None: ...

    @classmethod
    def _restore(cls, group: Any) -> Any: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def encode_array(value: np.ndarray) -> dict[str, Any]:
    """``{"@a": [dtype, shape, base64]}`` for a numpy array of a plain dtype."""
    check_dtype(value.dtype)
    return {"@a": [value.dtype.str, list(value.shape), _b64(np.ascontiguousarray(value).tobytes())]}


def check_dtype(dtype: np.dtype) -> None:
    """Raise :class:`UnstorableValueError` for dtypes the encoding cannot hold."""
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UnstorableValueError(
            f"numpy arrays of dtype {dtype} cannot be stored (object and structured dtypes "
            "hold no plain data; use a dict of arrays)"
        )


def decode_array(spec: list[Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    dtype = np.dtype(spec[0])
    shape = tuple(spec[1])
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(_unb64(spec[2]), dtype=dtype).reshape(shape).copy()


def encode_value(value: Any, encode_object: Any = None) -> Any:
    """Encode a value as JSON data (see the module docstring).

    Parameters
    ----------
    value
        The value.
    encode_object
        ``f(obj) -> group node`` for dataclasses, Storables and objects with
        ``__getstate__``; ``None`` refuses objects.

    Raises
    ------
    UnstorableValueError
        For a value of a type the encoding cannot hold.
    """
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return value if math.isfinite(value) else {"@f": repr(value)}
    if cls is list:
        if len(value) > 1 and encode_object is not None and value[0].__class__ not in _PLAIN:
            packed = _encode_columns(value, encode_object)
            if packed is not None:
                return packed
        return [encode_value(item, encode_object) for item in value]
    if cls is tuple:
        return {"@t": [encode_value(item, encode_object) for item in value]}
    if cls is dict:
        return {"@d": _encode_dict(value, encode_object)}
    if cls is bytes:
        return {"@b": _b64(value)}
    if cls is bytearray:
        return {"@ba": _b64(bytes(value))}
    if cls is complex:
        return {"@j": [encode_value(value.real), encode_value(value.imag)]}
    if cls is np.ndarray:
        return encode_array(value)
    if isinstance(value, np.generic):
        check_dtype(value.dtype)
        return {"@s": [value.dtype.str, _b64(np.asarray(value).tobytes())]}
    if encode_object is not None and object_kind(value) is not None:
        return {"@o": encode_object(value)}
    raise UnstorableValueError(
        f"cannot store a {cls.__module__}.{cls.__qualname__}: storable are None, bool, int, "
        "float, complex, str, bytes, list, tuple, dict, numpy arrays and scalars, "
        "dataclasses, Storable objects and objects with __getstate__/__setstate__"
    )


def _encode_dict(value: dict[Any, Any], encode_object: Any) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        if key.__class__ is not str:
            raise UnstorableValueError(
                f"dict keys must be str to be stored, got {key!r} ({type(key).__name__})"
            )
        out[key] = encode_value(item, encode_object)
    return out


def decode_value(data: Any, decode_object: Any = None) -> Any:
    """Inverse of :func:`encode_value` (``decode_object(node)`` rebuilds objects)."""
    cls = data.__class__
    if cls is list:
        return [decode_value(item, decode_object) for item in data]
    if cls is not dict:
        return data
    if len(data) != 1:
        raise DamagedValueError(
            f"a JSON object with {len(data)} keys where a tagged value was expected"
        )
    ((tag, body),) = data.items()
    if tag == "@a":
        return decode_array(body)
    if tag == "@t":
        return tuple(decode_value(item, decode_object) for item in body)
    if tag == "@d":
        return {key: decode_value(item, decode_object) for key, item in body.items()}
    if tag == "@f":
        return _NONFINITE[body]
    if tag == "@b":
        return _unb64(body)
    if tag == "@ba":
        return bytearray(_unb64(body))
    if tag == "@j":
        return complex(decode_value(body[0]), decode_value(body[1]))
    if tag == "@s":
        dtype = np.dtype(body[0])
        if dtype.itemsize == 0:
            return np.zeros((), dtype=dtype)[()]
        return np.frombuffer(_unb64(body[1]), dtype=dtype)[0]
    if tag == RAW_ARRAY:
        return body.copy()
    if tag == "@O":
        return _decode_columns(body, decode_object)
    if tag == "@P":  # a list of plain ints or strs: nothing to decode
        return list(body)
    if tag == "@F":
        return np.frombuffer(_unb64(body), dtype="<f8").tolist()
    if tag == "@o":
        if decode_object is None:
            raise DamagedValueError("an object value where none can be rebuilt")
        return decode_object(body)
    raise DamagedValueError(f"unknown tag {tag!r} in a stored value")


# -- lists of objects of one class, stored by column ------------------------------------


def _encode_columns(items: list[Any], encode_object: Any) -> dict[str, Any] | None:
    """``{"@O": [class, kind, names, columns]}`` for a list of objects of one class
    (dataclasses, or ``__getstate__`` dicts with the same keys), else ``None``.

    The field names and the class are written once, and a column of floats is packed
    as float64 bytes: a list of 10,000 small objects stays about as small as pickle.
    """
    cls = items[0].__class__
    for item in items:
        if item.__class__ is not cls:
            return None
    kind = object_kind(items[0])
    if kind == "dataclass":
        names = list(object_state(items[0], kind))
        columns = [[getattr(item, name) for item in items] for name in names]
    elif kind == "state":
        states = [object_state(item, kind) for item in items]
        first = states[0]
        if first.__class__ is not dict:
            return None
        names = list(first)
        for state in states:
            if state.__class__ is not dict or list(state) != names:
                return None
        columns = [[state[name] for state in states] for name in names]
    else:
        return None
    path = class_path(cls)
    note_class(path)
    return {"@O": [path, kind, names, [_encode_column(col, encode_object) for col in columns]]}


def _encode_column(column: list[Any], encode_object: Any) -> Any:
    head = column[0].__class__
    if head is float and all(value.__class__ is float for value in column):
        return {"@F": _b64(np.array(column, dtype="<f8").tobytes())}
    if head is str and all(value.__class__ is str for value in column):
        return {"@P": column}
    if head is int and all(
        value.__class__ is int and _INT64[0] <= value <= _INT64[1] for value in column
    ):
        return {"@P": column}
    return encode_value(column, encode_object)


_PLAIN_INIT: dict[tuple[type, tuple[str, ...]], bool] = {}


def _plain_init(cls: type, names: tuple[str, ...]) -> bool:
    """Whether ``cls(*values)`` builds the same object as setting its fields ``names``
    in a new instance's ``__dict__``: a dataclass whose ``__init__`` is the generated
    one taking exactly these fields, with no ``__post_init__``, no ``__setattr__`` of
    its own and no descriptors on the fields. Calling it is 4x faster (C loops)."""
    known = _PLAIN_INIT.get((cls, names))
    if known is not None:
        return known
    plain = False
    try:
        fields = dataclasses.fields(cls)
        init: Any = getattr(cls, "__init__", None)
        params = getattr(cls, "__dataclass_params__", None)
        plain = (
            tuple(field.name for field in fields) == names
            and all(field.init for field in fields)
            and not hasattr(cls, "__post_init__")
            and getattr(init, "__code__", None) is not None
            and init.__code__.co_filename == "<string>"  # made by dataclasses
            and init.__code__.co_argcount == len(names) + 1  # no InitVar, no kw_only
            and init.__code__.co_kwonlyargcount == 0
            and init.__qualname__ == f"{cls.__qualname__}.__init__"
            and (cls.__setattr__ is object.__setattr__ or bool(getattr(params, "frozen", False)))
            and not any(hasattr(type(getattr(cls, name, None)), "__set__") for name in names)
        )
    except (TypeError, AttributeError):
        plain = False
    if len(_PLAIN_INIT) < 10_000:
        _PLAIN_INIT[(cls, names)] = plain
    return plain


def _decode_columns(body: list[Any], decode_object: Any) -> list[Any]:
    path, kind, names, columns = body
    values = [decode_value(column, decode_object) for column in columns]
    cls: Any = import_class(path)
    if (
        cls is not None
        and kind == "dataclass"
        and "__slots__" not in vars(cls)
        and "__setstate__" not in vars(cls)
    ):
        count = len(values[0]) if values else 0
        if len(names) != len(values) or any(len(column) != count for column in values):
            raise DamagedValueError(f"the columns of the objects of {path} do not match")
        if _plain_init(cls, tuple(names)):  # its __init__ only sets the fields
            return list(map(cls, *values))
        # every loop in C (map), as pickle's: one dict per object, set as its __dict__
        objects = list(map(cls.__new__, itertools.repeat(cls, count)))
        states = map(dict, map(zip, itertools.repeat(names), zip(*values, strict=True)))
        collections.deque(
            map(object.__setattr__, objects, itertools.repeat("__dict__"), states), maxlen=0
        )
        return objects
    rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
    if cls is None:
        import warnings

        from ._errors import ClassNotFoundWarning

        warnings.warn(
            f"the class {path.replace(':', '.')} cannot be imported; {len(rows)} objects "
            "of it are returned as dicts",
            ClassNotFoundWarning,
            stacklevel=2,
        )
        return rows
    return [restore_object(cls, kind, row) for row in rows]


# -- objects ----------------------------------------------------------------------------

_DATACLASS_FIELDS: dict[type, tuple[str, ...]] = {}


def object_kind(value: Any) -> str | None:
    """``'storable'``, ``'dataclass'``, ``'state'`` or ``None`` (not an object we store)."""
    cls = value.__class__
    if hasattr(cls, "_store") and hasattr(cls, "_restore"):
        return "storable"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if hasattr(cls, "__setstate__") or getattr(cls, "__getstate__", None) not in (
        None,
        object.__getstate__,
    ):
        return "state"
    return None


def object_state(value: Any, kind: str) -> Any:
    """The data of an object: a dict of fields (dataclass), or ``__getstate__()``."""
    if kind == "dataclass":
        cls = value.__class__
        names = _DATACLASS_FIELDS.get(cls)
        if names is None:
            names = tuple(field.name for field in dataclasses.fields(cls))
            _DATACLASS_FIELDS[cls] = names
        return {name: getattr(value, name) for name in names}
    state = value.__getstate__()
    if state is None:
        state = {}
    return state


def class_path(cls: type) -> str:
    """``module:qualname`` of a class (what :func:`import_class` takes)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type | None:
    """The class a :func:`class_path` names, or ``None`` when it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def restore_object(cls: Any, kind: str, state: Any) -> Any:
    """Build an object of ``cls`` from its stored ``state`` (a dataclass or getstate)."""
    obj = cls.__new__(cls)
    if kind == "dataclass":
        if "__slots__" not in vars(cls):
            obj.__dict__.update(state)
            return obj
        for name, value in state.items():
            object.__setattr__(obj, name, value)
        return obj  # fields are restored as saved; __post_init__ is not run again
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    elif isinstance(state, dict):
        obj.__dict__.update(state)
    return obj
