"""What kind of series a sample starts, and whether a later sample fits it.

The first sample of a series fixes its :class:`SeriesSpec`:

* a numeric scalar or a numeric ``ndarray`` (bool, int, uint, float, complex) starts a
  **dense** series of shape ``(n, *sample.shape)`` and the sample's dtype
  (Python ``int`` → int64, ``float`` → float64, ``complex`` → complex128);
* ``str`` starts a **str** series, ``bytes`` a **bytes** series;
* anything else (lists, tuples, dicts, ragged data, arrays of other dtypes, ``None``)
  starts an **object** series whose samples are encoded by :mod:`simrecorder._codec`.

Later samples of a dense series are cast to its dtype when numpy's ``same_kind``
rule allows it; anything else raises :class:`~simrecorder.errors.SchemaError`.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ArgumentTypeError, InvalidArgumentError, SchemaError, ValueOutOfRangeError

__all__ = ["BYTES", "DENSE", "KINDS", "OBJECT", "STR", "SeriesSpec", "infer_spec"]

DENSE = "dense"
STR = "str"
BYTES = "bytes"
OBJECT = "object"
KINDS = (DENSE, STR, BYTES, OBJECT)

_NUMERIC_KINDS = frozenset("biufc")
_PY_SCALAR_DTYPES = {
    bool: np.dtype(np.bool_),
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
}


@dataclass(frozen=True)
class SeriesSpec:
    """The fixed description of a series.

    Parameters
    ----------
    kind
        One of ``'dense'``, ``'str'``, ``'bytes'``, ``'object'``.
    dtype
        numpy dtype of a dense series' samples; ``None`` for other kinds.
    shape
        Shape of one sample of a dense series (``()`` for scalars); ``None`` otherwise.
    """

    kind: str
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgumentError(
                f"unknown series kind {self.kind!r}; a SeriesSpec kind is one of {KINDS}"
            )
        if self.kind == DENSE:
            if self.shape is None:
                raise ArgumentTypeError("a dense SeriesSpec needs a shape (() for scalars)")
            object.__setattr__(self, "dtype", np.dtype(self.dtype))
            object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def dense_dtype(self) -> np.dtype:
        """``dtype`` of a dense series, typed as never None (for dense specs only)."""
        assert self.dtype is not None, f"{self.describe()} have no dtype"
        return self.dtype

    @property
    def dense_shape(self) -> tuple[int, ...]:
        """``shape`` of a dense series, typed as never None (for dense specs only)."""
        assert self.shape is not None, f"{self.describe()} have no shape"
        return self.shape

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one dense sample (an estimate of 64 for other kinds)."""
        if self.kind != DENSE:
            return 64
        return int(self.dense_dtype.itemsize * math.prod(self.dense_shape))

    def describe(self) -> str:
        """Short human-readable form used in error messages."""
        if self.kind == DENSE:
            return f"dense {self.dtype} samples of shape {self.shape}"
        return f"{self.kind} samples"

    def to_attrs(self) -> dict[str, Any]:
        """Encode as plain JSON-able attributes (for file and server metadata)."""
        attrs: dict[str, Any] = {"kind": self.kind}
        if self.kind == DENSE:
            attrs["dtype"] = self.dense_dtype.str
            attrs["shape"] = list(self.dense_shape)
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SeriesSpec:
        """Inverse of :meth:`to_attrs`."""
        kind = str(attrs["kind"])
        if kind == DENSE:
            return cls(DENSE, np.dtype(str(attrs["dtype"])), tuple(attrs["shape"]))
        return cls(kind)


def infer_spec(value: Any) -> SeriesSpec:
    """Return the :class:`SeriesSpec` a series starting with ``value`` gets.

    Examples
    --------
    >>> infer_spec(1.5)
    SeriesSpec(kind='dense', dtype=dtype('float64'), shape=())
    >>> infer_spec("hello").kind
    'str'
    >>> infer_spec([1, 2]).kind
    'object'
    """
    cls = type(value)
    if cls in _PY_SCALAR_DTYPES:
        return SeriesSpec(DENSE, _PY_SCALAR_DTYPES[cls], ())
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in _NUMERIC_KINDS:
        return SeriesSpec(DENSE, value.dtype, value.shape)
    if isinstance(value, str):
        return SeriesSpec(STR)

    if isinstance(value, (bytes, bytearray)):
        return SeriesSpec(BYTES)
    return SeriesSpec(OBJECT)


def sample_dtype_and_shape(value: Any) -> tuple[np.dtype, tuple[int, ...]] | None:
    """dtype and shape of a dense-compatible sample, or None for other values."""
    cls = type(value)
    if cls in _PY_SCALAR_DTYPES:
        return _PY_SCALAR_DTYPES[cls], ()
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in _NUMERIC_KINDS:
        return value.dtype, value.shape
    if isinstance(value, (bool, int, float, complex)):  # subclasses, e.g. IntEnum
        return _PY_SCALAR_DTYPES[_scalar_base(value)], ()
    return None


def _scalar_base(value: Any) -> type:
    for base in (bool, int, float, complex):
        if isinstance(value, base):
            return base
    raise ArgumentTypeError(f"{value!r} is no bool, int, float or complex")


def check_dense_sample(key: str, spec: SeriesSpec, value: Any) -> None:
    """Raise :class:`SchemaError` unless ``value`` fits the dense series ``spec``.

    A fitting sample has the series' shape and a dtype that numpy's ``same_kind``
    rule casts to the series' dtype, and its numbers are in the range of that dtype: a
    Python ``int`` fits any integer, float or complex series that holds its value
    (numpy's rule for Python scalars), a number that would wrap around or become
    ``inf`` raises :class:`ValueOutOfRangeError` (``nan`` and ``inf`` themselves fit
    any float series).
    """
    found = sample_dtype_and_shape(value)
    if found is None:
        raise SchemaError(f"key {key!r}: expected {spec.describe()}, got {_describe_value(value)}")
    dtype, shape = found
    want_dtype, want_shape = spec.dense_dtype, spec.dense_shape
    if shape != want_shape:
        hint = ""
        if len(shape) == len(want_shape) and shape:
            hint = (
                " (for samples whose length varies, record a list or dict, e.g. "
                "[array], to get an object series)"
            )
        raise SchemaError(
            f"key {key!r}: expected {spec.describe()}, got shape {shape} ({dtype}){hint}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and want_dtype.kind in "iufc":
        _check_python_int(key, spec, value)  # int64 or not: its value decides
        return
    if dtype == want_dtype:
        return
    rule = _cast_rule(dtype, want_dtype)
    if rule == _NO_CAST:
        raise SchemaError(
            f"key {key!r}: expected {spec.describe()}, got {_describe_value(value)}, "
            f"whose dtype {dtype} does not cast to {want_dtype} under numpy's 'same_kind' rule"
        )
    if rule == _INT_RANGE:
        # same_kind lets int64 into int8 (and uint64 into int64) wrap around: check values
        least, most = _int_range(want_dtype)
        if isinstance(value, np.ndarray):
            low, high = (int(value.min()), int(value.max())) if value.size else (0, 0)
        else:
            low = high = int(value)
        if low < least or high > most:
            _refuse(key, spec, low if low < least else high)
    elif rule == _FLOAT_RANGE:
        bad = _first_overflow(value, want_dtype)
        if bad is not None:
            _refuse(key, spec, bad)


def _check_python_int(key: str, spec: SeriesSpec, value: int) -> None:
    """A Python int fits an integer, float or complex series that holds its value."""
    want = spec.dense_dtype
    if want.kind in "iu":
        low, high = _int_range(want)
        if not low <= value <= high:
            _refuse(key, spec, value)
    elif not -_float_limit(want) < value < _float_limit(want):
        _refuse(key, spec, value)


_SAFE, _NO_CAST, _INT_RANGE, _FLOAT_RANGE = "safe", "no cast", "int range", "float range"


@functools.cache
def _cast_rule(dtype: np.dtype, want: np.dtype) -> str:
    """How a sample of ``dtype`` goes into a series of ``want``: safely, not at all
    (not ``same_kind``), or after a check of its values (integer wrap-around, ``inf``)."""
    if not np.can_cast(dtype, want, casting="same_kind"):
        return _NO_CAST
    if np.can_cast(dtype, want, casting="safe"):
        return _SAFE
    if want.kind in "iu" and dtype.kind in "iu":
        return _INT_RANGE
    if want.kind in "fc":
        return _FLOAT_RANGE
    return _SAFE  # not reached: nothing else narrows under same_kind


@functools.cache
def _int_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@functools.cache
def _float_limit(dtype: np.dtype) -> int:
    """The smallest magnitude that rounds to ``inf`` in the float (or complex) ``dtype``:
    halfway between its largest finite value and the next power of two."""
    info = np.finfo(dtype)
    return 2 ** int(info.maxexp) - 2 ** (int(info.maxexp) - int(info.nmant) - 2)


@functools.cache
def _float_limit_as_float(dtype: np.dtype) -> float:
    """:func:`_float_limit` as a float (exact for float16/32; ``inf`` for wider)."""
    try:
        return float(_float_limit(dtype))
    except OverflowError:
        return float("inf")


def _first_overflow(value: Any, want: np.dtype) -> Any:
    """The first finite number in ``value`` that becomes ``inf`` as ``want``, or None."""
    if isinstance(value, float) or not isinstance(
        value, (np.ndarray, complex, np.complexfloating, np.longdouble)
    ):
        # a real scalar: an exact comparison (Python compares int and float exactly)
        limit = _float_limit_as_float(want)
        number = float(value) if isinstance(value, float) else value.item()
        if -limit < number < limit or number != number or number in (np.inf, -np.inf):
            return None
        return value
    data = np.asarray(value)
    if data.dtype.kind == "f" and data.size:
        # one cheap pass for the usual case (nan, inf or a number near the limit: the
        # exact check below)
        if np.maximum.reduce(np.abs(data), axis=None) < _float_limit_as_float(want):
            return None
    with np.errstate(over="ignore", invalid="ignore"):
        cast = data.astype(want)
    bad = np.isinf(cast) & np.isfinite(data)
    if not bad.any():
        return None
    first = np.argwhere(bad)[0]
    return data[tuple(first)] if data.ndim else data[()]


def _refuse(key: str, spec: SeriesSpec, bad: Any) -> None:
    """Raise :class:`ValueOutOfRangeError` for the number ``bad`` of a sample of ``key``."""
    shown = bad.item() if isinstance(bad, np.generic) else bad
    raise ValueOutOfRangeError(
        f"key {key!r}: expected {spec.describe()}, got {shown!r}, out of the range of "
        f"{spec.dtype}; the sample is not recorded (record such numbers into a series of a "
        "wider dtype, or inside a list (object series), or clip them first)",
        key=key,
        values=(shown,),
        dtype=str(spec.dtype),
    )


def check_kind_sample(key: str, spec: SeriesSpec, value: Any) -> None:
    """Raise :class:`SchemaError` unless ``value`` fits a str or bytes series."""
    if spec.kind == STR and isinstance(value, str):
        return
    if spec.kind == BYTES and isinstance(value, (bytes, bytearray)):
        return
    raise SchemaError(f"key {key!r}: expected {spec.describe()}, got {_describe_value(value)}")


def merge_specs(key: str, existing: SeriesSpec, value: Any, where: str | None = None) -> SeriesSpec:
    """Check that ``value`` may continue a stored series described by ``existing``.

    Returns the spec the series keeps (always ``existing``). ``where`` names the store
    that holds the series (an earlier run, another writer): a :class:`SchemaError`
    then says so (see :func:`stored_schema_error`).
    """
    try:
        if existing.kind == DENSE:
            check_dense_sample(key, existing, value)
        elif existing.kind in (STR, BYTES):
            check_kind_sample(key, existing, value)
    except SchemaError as exc:
        if where is None:
            raise
        raise stored_schema_error(exc, key, existing, value, where) from None
    # an object series takes any value the codec can encode; the codec says otherwise
    return existing


def stored_schema_error(
    exc: SchemaError, key: str, existing: SeriesSpec, value: Any, where: str
) -> SchemaError:
    """``exc`` (same class and attributes) with a message that also names the store
    ``where`` holding the series ``key`` and both schemas: the stored one and the one
    ``value`` would start."""
    try:
        new = infer_spec(value).describe()
    except Exception:  # noqa: BLE001 - only for the message
        new = _describe_value(value)
    error = copy.copy(exc)
    error.args = (
        f"{exc}. The series {key!r} already exists in {where} with {existing.describe()}; "
        f"this sample would start a series of {new}. Record it under another key, or into "
        "a new store",
    )
    return error


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, np.generic) and value.dtype.kind in _NUMERIC_KINDS:
        return f"the {type(value).__name__} {value.item()!r}"
    if isinstance(value, np.generic):
        return f"{type(value).__name__} of dtype {value.dtype}"
    if isinstance(value, (bool, int, float, complex)):
        return f"the {type(value).__name__} {value!r}"
    return f"a {type(value).__name__}"
