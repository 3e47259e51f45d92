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

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SchemaError

__all__ = ["DENSE", "KINDS", "OBJECT", "STR", "BYTES", "SeriesSpec", "infer_spec"]

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
            raise ValueError(f"unknown series kind {self.kind!r}")
        if self.kind == DENSE:
            if self.shape is None:
                raise TypeError("a dense SeriesSpec needs a shape")
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
        return int(self.dense_dtype.itemsize * int(np.prod(self.dense_shape, dtype=np.int64)))

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
    raise TypeError(value)


def check_dense_sample(key: str, spec: SeriesSpec, value: Any) -> None:
    """Raise :class:`SchemaError` unless ``value`` fits the dense series ``spec``.

    A fitting sample has the series' shape and a dtype that numpy's ``same_kind``
    rule casts to the series' dtype; Python ints into integer series must be in range.
    """
    found = sample_dtype_and_shape(value)
    if found is None:
        raise SchemaError(f"key {key!r}: expected {spec.describe()}, got {_describe_value(value)}")
    dtype, shape = found
    want_dtype, want_shape = spec.dtype, spec.shape
    assert want_dtype is not None and want_shape is not None  # a dense spec
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
    if dtype != want_dtype and not np.can_cast(dtype, want_dtype, casting="same_kind"):
        raise SchemaError(
            f"key {key!r}: expected {spec.describe()}, got dtype {dtype}, "
            f"which does not cast to {spec.dtype} under numpy's 'same_kind' rule"
        )
    if want_dtype.kind in "iu" and dtype.kind in "iu" and not np.can_cast(dtype, want_dtype):
        # same_kind lets int64 into int8 (and uint64 into int64) wrap around: check values
        info = np.iinfo(want_dtype)
        if isinstance(value, np.ndarray):
            low, high = (int(value.min()), int(value.max())) if value.size else (0, 0)
        else:
            low = high = int(value)
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise SchemaError(
                f"key {key!r}: expected {spec.describe()}, got the integer {bad}, "
                f"out of the range of {spec.dtype}"
            )


def check_kind_sample(key: str, spec: SeriesSpec, value: Any) -> None:
    """Raise :class:`SchemaError` unless ``value`` fits a str or bytes series."""
    if spec.kind == STR and isinstance(value, str):
        return
    if spec.kind == BYTES and isinstance(value, (bytes, bytearray)):
        return
    raise SchemaError(f"key {key!r}: expected {spec.describe()}, got {_describe_value(value)}")


def merge_specs(key: str, existing: SeriesSpec, value: Any) -> SeriesSpec:
    """Check that ``value`` may continue a stored series described by ``existing``.

    Returns the spec the series keeps (always ``existing``).
    """
    if existing.kind == DENSE:
        check_dense_sample(key, existing, value)
    elif existing.kind in (STR, BYTES):
        check_kind_sample(key, existing, value)
    # an object series takes any value the codec can encode; the codec says otherwise
    return existing


def _describe_value(value: Any) -> str:
    if isinstance(value, (np.ndarray, np.generic)):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {value.shape}"
    return f"a {type(value).__name__}"
