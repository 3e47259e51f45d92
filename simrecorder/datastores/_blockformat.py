"""The block format shared by the block store (``blocks+<url>``) and the Redis store.

A series is stored as consecutive *blocks*, each the samples of one
:meth:`~simrecorder.datastores.DataStore.append_block`:

- a dense block is the raw bytes of its rows, C-ordered and little-endian, so the
  blocks of a series joined end to end are the series' array
  (``np.frombuffer(b"".join(blocks), dtype).reshape(-1, *shape)``);
- a block of any other kind is one codec-encoded list of its samples (object samples
  each codec-encoded once more).

An *ends index* (the cumulative rows at the end of each block) lets a reader find
the blocks that hold rows ``start:stop`` by binary search (:func:`block_span`) and
read only those.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .. import _codec
from .._schema import DENSE, OBJECT, SeriesSpec
from ..errors import StoreFormatError

__all__ = [
    "block_span",
    "decode_block",
    "dense_view",
    "encode_block",
    "join_dense_blocks",
    "stored_dtype",
]


def stored_dtype(spec: SeriesSpec) -> np.dtype:
    """The dtype dense blocks are stored in: the series' dtype, little-endian.

    Examples
    --------
    >>> stored_dtype(SeriesSpec("dense", np.dtype(">f8"), ())).str
    '<f8'
    """
    return spec.dense_dtype.newbyteorder("<")


def dense_view(spec: SeriesSpec, block: Any) -> memoryview:
    """The stored bytes of a dense block *without a copy* when ``block`` already is a
    C-contiguous little-endian array of the series' dtype (else of a converted copy).

    The view shares memory with the caller's array: whoever keeps it past the
    caller's next step must copy it (the Redis store does, when a send fails).

    Examples
    --------
    >>> spec = SeriesSpec("dense", np.dtype("<i2"), ())
    >>> bytes(dense_view(spec, np.array([1, 2], dtype=np.int16)))
    b'\\x01\\x00\\x02\\x00'
    """
    array = np.ascontiguousarray(block, dtype=stored_dtype(spec))
    if not array.nbytes:
        return memoryview(b"")
    try:
        return array.data.cast("B")
    except (TypeError, ValueError):  # a format memoryview cannot cast (structured dtypes)
        return array.reshape(-1).view(np.uint8).data


def encode_block(spec: SeriesSpec, block: Any) -> bytes:
    """The stored bytes of one block (a copy): dense rows as raw little-endian
    C-ordered bytes, other kinds one codec-encoded list of the block's items.

    Examples
    --------
    >>> spec = SeriesSpec("dense", np.dtype("<i2"), ())
    >>> encode_block(spec, np.array([1, 2], dtype=np.int16))
    b'\\x01\\x00\\x02\\x00'
    """
    if spec.kind == DENSE:
        return np.ascontiguousarray(block, dtype=stored_dtype(spec)).tobytes()
    return _codec.encode(list(block))


def decode_block(spec: SeriesSpec, data: bytes, where: str) -> list[Any]:
    """The items of a non-dense block (``str``/``bytes`` as stored, object samples
    decoded); ``where`` names the block in the :class:`StoreFormatError` raised for
    damaged bytes.

    Examples
    --------
    >>> spec = SeriesSpec("str")
    >>> decode_block(spec, encode_block(spec, ["a", "b"]), "block 0")
    ['a', 'b']
    """
    try:
        items = _codec.decode(data)
        if not isinstance(items, list):
            raise StoreFormatError("it holds no list of samples")
        if spec.kind == OBJECT:
            return [_codec.decode(item) for item in items]
    except StoreFormatError as exc:
        raise StoreFormatError(f"{where} is damaged: {exc}") from None
    return items


def join_dense_blocks(pieces: Iterable[bytes], rows: int, spec: SeriesSpec, where: str) -> Any:
    """Copy the bytes of consecutive dense blocks (or of pieces of them) into one new
    ``ndarray`` of ``rows`` samples in the series' dtype; ``where`` names the series
    in messages.

    Raises
    ------
    StoreFormatError
        The pieces do not hold ``rows`` samples' worth of bytes.

    Examples
    --------
    >>> spec = SeriesSpec("dense", np.dtype("<i2"), ())
    >>> join_dense_blocks([b"\\x01\\x00", b"\\x02\\x00"], 2, spec, "x")
    array([1, 2], dtype=int16)
    """
    dtype, sample = spec.dense_dtype, spec.dense_shape
    little = stored_dtype(spec)
    out = np.empty((rows, *sample), dtype=little)
    pieces = list(pieces)
    size = sum(len(piece) for piece in pieces)
    if size != out.nbytes:
        raise StoreFormatError(
            f"{where} is damaged: {rows} rows of {dtype} {sample} need {out.nbytes} bytes, "
            f"its blocks hold {size}"
        )
    if out.nbytes:
        target = out.reshape(-1).view(np.uint8)
        position = 0
        for piece in pieces:
            target[position : position + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            position += len(piece)
    return out if little == dtype else out.astype(dtype)


def block_span(ends: Sequence[int], start: int, stop: int) -> tuple[int, int, int]:
    """The blocks holding rows ``start:stop`` (``0 <= start < stop <= ends[-1]``).

    Parameters
    ----------
    ends
        Cumulative rows at the end of each block (the block index).

    Returns
    -------
    tuple of int
        ``(first, last, row)``: blocks ``first..last`` (inclusive) hold the rows, and
        block ``first`` starts at row ``row``.

    Examples
    --------
    >>> block_span([3, 5, 9], 4, 7)
    (1, 2, 3)
    """
    first = bisect_right(ends, start)
    last = bisect_left(ends, stop)
    return first, last, ends[first - 1] if first else 0
