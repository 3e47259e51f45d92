"""Lazy, sliceable views of dense series stored on disk or on a server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from ..errors import ArgumentTypeError, SeriesIndexError

__all__ = ["RowRangeView", "SeriesView"]

#: ndarray methods a view offers by reading the series first (``view.mean()``, ...).
ARRAY_METHODS = frozenset(
    "all any argmax argmin argsort astype clip conj copy cumprod cumsum diagonal dot "
    "flatten max mean min nonzero prod ptp ravel repeat reshape round searchsorted sort "
    "squeeze std sum swapaxes take tobytes tolist trace transpose var view".split()
)


class SeriesView(NDArrayOperatorsMixin, ABC):
    """A read-only, lazy view of a dense series of shape ``(n, *sample_shape)``.

    Indexing reads only what it needs and returns numpy data; ``np.asarray(view)``
    reads everything. A view takes part in numpy like an array: operators
    (``view * 2``), ufuncs (``np.sqrt(view)``), numpy functions (``np.mean(view,
    axis=0)``, ``np.concatenate([view, view])``) and the common ndarray methods
    (``view.mean()``, ``view.max(axis=1)``, ``view.astype(...)``, ``view.T``) all read
    the series and return plain numpy results, so analysis code written against
    ``memory://`` runs unchanged on disk and server stores. Writing through a view is
    refused (``out=view``). Backends subclass it and implement :meth:`_read` and
    :attr:`shape`.
    """

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Current shape ``(n, *sample_shape)``."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """dtype of the samples."""

    @abstractmethod
    def _read(self, index: Any) -> Any:
        """Read ``index`` (anything numpy basic indexing takes) from the backend."""

    @property
    def ndim(self) -> int:
        """Number of dimensions, the sample axis included."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes the whole series takes in memory once read."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> Any:
        self._check_bounds(index)
        if _is_basic(index):
            return self._read(index)
        return self._read_general(index)

    def _check_bounds(self, index: Any) -> None:
        """Raise :class:`SeriesIndexError` for an int index outside its axis (as
        numpy does, whatever the backend would do with it)."""
        parts = index if isinstance(index, tuple) else (index,)
        shape: tuple[int, ...] | None = None
        for axis, part in enumerate(parts):
            if isinstance(part, slice):
                continue
            if isinstance(part, bool) or not isinstance(part, (int, np.integer)):
                return  # Ellipsis, newaxis, masks: the later parts' axes are numpy's business
            if shape is None:
                shape = self.shape
            if axis >= len(shape):
                raise SeriesIndexError(
                    f"too many indices for {self!r}: it has {len(shape)} axes, got index {index!r}"
                )
            size = shape[axis]
            if not -size <= int(part) < size:
                raise SeriesIndexError(
                    f"index {int(part)} is out of bounds for axis {axis} with size {size} "
                    f"({self!r})"
                )

    def _read_general(self, index: Any) -> Any:
        """Indexing the backends lack (negative steps, lists, masks), done in numpy on
        the smallest run of rows that covers the request."""
        parts = index if isinstance(index, tuple) else (index,)
        first, rest = (parts[0], parts[1:]) if parts else (slice(None), ())
        try:
            rows = np.arange(len(self))[first]
        except IndexError as exc:
            raise SeriesIndexError(f"{self!r}: {exc} (index {index!r})") from None
        if np.ndim(rows) == 0:  # an int first index with fancy indexing after it
            return np.asarray(self._read(int(rows)))[rest]
        if rows.size == 0:
            return np.asarray(self._read(slice(0, 0)))[(slice(None), *rest)]
        low, high = int(rows.min()), int(rows.max()) + 1
        data = np.asarray(self._read(slice(low, high)))
        return data[(rows - low, *rest)]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = np.asarray(self._read(slice(None)))
        return data if dtype is None else data.astype(dtype, copy=False)

    # -- numpy protocols: a view reads itself and lets numpy do the rest ----------------
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        outputs = kwargs.get("out", ())
        if any(isinstance(x, SeriesView) for x in outputs):
            raise ArgumentTypeError(
                f"{self!r} is read-only: it cannot be the out= of {ufunc.__name__}"
            )
        inputs = tuple(_materialized(x) for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return func(*_materialized(args), **_materialized(kwargs))

    def __getattr__(self, name: str) -> Any:
        if name in ARRAY_METHODS:
            return getattr(np.asarray(self), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def T(self) -> np.ndarray:
        """The series read and transposed (``np.asarray(view).T``)."""
        return np.asarray(self).T

    def __float__(self) -> float:
        return float(np.asarray(self))

    def __int__(self) -> int:
        return int(np.asarray(self))

    def __bool__(self) -> bool:
        return bool(np.asarray(self))

    def __iter__(self) -> Iterator[Any]:
        step = max(1, (1 << 22) // max(1, self.nbytes // max(1, len(self))))
        for start in range(0, len(self), step):
            yield from self._read(slice(start, start + step))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>"


class RowRangeView(SeriesView):
    """A lazy view of a dense series whose backend reads runs of rows.

    A subclass implements :meth:`_length` and :meth:`_read_rows`; this class turns
    every basic index (an int, a forward slice with a step, ``...``, more axes) into
    one read of the rows it spans.

    Parameters
    ----------
    dtype, sample_shape
        The series' dtype and the shape of one sample.
    """

    def __init__(self, dtype: np.dtype, sample_shape: tuple[int, ...]) -> None:
        self._dtype = dtype
        self._sample_shape = sample_shape

    @abstractmethod
    def _length(self) -> int:
        """Samples in the series now."""

    @abstractmethod
    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (``0 <= start <= stop``; ``stop`` may pass the end) as
        a new array of shape ``(rows, *sample_shape)``."""

    @property
    def shape(self) -> tuple[int, ...]:
        # docstring inherited
        return (self._length(), *self._sample_shape)

    @property
    def dtype(self) -> np.dtype:
        # docstring inherited
        return self._dtype

    def _read(self, index: Any) -> Any:
        # docstring inherited
        parts = index if isinstance(index, tuple) else (index,)
        first, rest = (parts[0], parts[1:]) if parts else (slice(None), ())
        length = len(self)
        if isinstance(first, slice):
            start, stop, step = first.indices(length)
            data = self._read_rows(start, max(start, stop))
            return data[(slice(None, None, step), *rest)]
        if first is Ellipsis:
            return self._read_rows(0, length)[index]
        row = int(first)
        if row < 0:
            row += length
        if not 0 <= row < length:
            raise SeriesIndexError(
                f"index {first} is out of bounds for {self._describe()} of {length} samples"
            )
        return self._read_rows(row, row + 1)[(0, *rest)]

    def _describe(self) -> str:
        """What the view shows, for messages (subclasses name the series and store)."""
        return repr(self)


def _materialized(value: Any) -> Any:
    """``value`` with every view in it (also inside lists, tuples, dicts) read."""
    if isinstance(value, SeriesView):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialized(item) for item in value)
    if isinstance(value, dict):
        return {name: _materialized(item) for name, item in value.items()}
    return value


def _is_basic(index: Any) -> bool:
    """True for indices every backend reads directly: ints and forward slices."""
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:
        if isinstance(part, slice):
            if part.step is not None and part.step < 1:
                return False
        elif not (part is Ellipsis or isinstance(part, (int, np.integer))):
            return False
    return True
