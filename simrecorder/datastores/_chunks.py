"""Chunk sizes along the sample axis, shared by the HDF5 and zarr stores."""

from __future__ import annotations

from .._buffer import aligned_rows

__all__ = ["MIN_CHUNK_BYTES", "chunk_rows"]

#: Smallest chunk a series gets from a small first block (see :func:`chunk_rows`).
MIN_CHUNK_BYTES = 8 << 10


def chunk_rows(
    sample_nbytes: int,
    target_bytes: int,
    first_rows: int | None = None,
    min_bytes: int = MIN_CHUNK_BYTES,
) -> int:
    """Rows per chunk for samples of ``sample_nbytes`` bytes.

    Without ``first_rows``: ``target_bytes`` worth of rows (at least one; samples
    larger than the target get a chunk each). With ``first_rows``, the row count of
    the series' first block, chunks are no larger than that block (but at least
    ``min_bytes``): a series whose first block is small, because it is
    short or recorded slowly and flushed by time, does not get chunks that are mostly
    padding (a 1,000-sample scalar series in 1 MiB chunks would take 131x its size);
    a fast series' first block is full, so it gets the full target.

    The rows are cut down as the recorder cuts its blocks
    (:func:`~simrecorder._buffer.aligned_rows`), or to a power of two when the first
    block bounds them, so the recorder's blocks are whole numbers of chunks.

    >>> chunk_rows(8, 256 << 10), chunk_rows(8, 256 << 10, first_rows=1000)
    (32768, 1024)
    >>> chunk_rows(8000, 1 << 20)  # the rows of the recorder's 1 MiB blocks
    128
    """
    if sample_nbytes <= 0:
        return 4096
    # aligned as the recorder's blocks are: a block of the target size is one chunk
    rows = aligned_rows(max(1, target_bytes // sample_nbytes))
    if first_rows is not None:
        floor = max(1, min_bytes // sample_nbytes)
        bounded = max(first_rows, floor)
        if bounded < rows:  # a power of two: later blocks are whole numbers of chunks
            rows = 1 << (bounded.bit_length() - 1)
    return rows
