"""Reading simrecorder data with plain h5py or zarr, without a simrecorder store.

Dense series are ordinary datasets and arrays: nothing to decode. Object series hold
each sample encoded by simrecorder's pickle-free codec, and in HDF5 the str, bytes and
object series are a group with ``data`` (all samples' bytes, one after the other) and
``offsets`` (where each sample ends). :func:`decode` turns one encoded sample back into
the object; :func:`decode_series` a whole series as read by plain h5py or zarr::

    import h5py, zarr, simrecorder
    with h5py.File("run.h5", "r", locking=False) as f:    # also while a run writes
        spikes = simrecorder.decode_series(f["spikes"])   # a list of the samples
    group = zarr.open_group("run.zarr", mode="r")
    spikes = simrecorder.decode_series(group["spikes"][:], kind="object")
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._codec import decode

__all__ = ["decode", "decode_series"]

_KIND_ATTR = "simrecorder_kind"


def decode_series(data: Any, offsets: Any = None, kind: str | None = None) -> list[Any]:
    """Decode a str, bytes or object series read with plain h5py or zarr.

    Parameters
    ----------
    data
        An HDF5 group of such a series (``f["spikes"]``: its kind, ``data`` and
        ``offsets`` are read from it), the ``data`` byte array with ``offsets``, or
        a sequence of encoded samples (a zarr bytes/string array read with ``[:]``).
    offsets
        End offset of each sample in ``data`` (HDF5 layout), if ``data`` is bytes.
    kind
        ``'object'``, ``'str'`` or ``'bytes'``; read from the group when ``data`` is
        one, else ``'object'``.

    Returns
    -------
    list
        The samples, in order.

    Examples
    --------
    >>> from simrecorder._codec import encode
    >>> items = [encode({"a": 1}), encode([1.5, None])]
    >>> decode_series(np.frombuffer(b"".join(items), np.uint8), np.cumsum([len(i) for i in items]))
    [{'a': 1}, [1.5, None]]
    >>> decode_series([b"x", b"yz"], kind="bytes")
    [b'x', b'yz']
    """
    if hasattr(data, "attrs") and hasattr(data, "keys") and "offsets" in data:
        kind = kind or str(data.attrs.get(_KIND_ATTR, "object"))
        data, offsets = data["data"][()], data["offsets"][()]
    kind = kind or "object"
    if offsets is not None:
        ends = np.asarray(offsets, dtype=np.int64).tolist()
        buffer = np.asarray(data, dtype=np.uint8).tobytes()[: ends[-1] if ends else 0]
        starts = [0, *ends[:-1]]
        items: list[Any] = [buffer[a:b] for a, b in zip(starts, ends, strict=True)]
    else:
        items = list(data)
    if kind == "object":
        return [decode(item) for item in items]
    if kind == "str":
        return [item if isinstance(item, str) else bytes(item).decode("utf-8") for item in items]
    return [bytes(item) for item in items]
