"""Dead letters: blocks a data store could not take, kept on disk instead of dropped.

When a store fails permanently for a block (a key or value it can never hold, a
broken file), or stays unreachable longer than the recorder's ``give_up_seconds``,
the :class:`~simrecorder.Recorder` writes the block to a *dead-letter directory* and
reports it with :class:`~simrecorder.errors.BlocksQuarantinedError`; every other series
keeps flowing. Nothing is dropped without a trace on disk.

The directory is ``<store path>.dead-letter/`` beside a store on the local disk, and
``./simrecorder-dead-letter/<store url, made a file name>/`` for memory and server
stores, unless ``Recorder(dead_letter_dir=...)`` names another one. Each block is one
file ``<time>-<n>.srblock``, written atomically (temp file, fsync, rename), holding a
record in the object codec of :mod:`simrecorder._codec` (no pickle)::

    {"format": 1, "store": url, "key": key, "kind": kind, "dtype": str, "shape": [...],
     "rows": n, "block": block, "error": message, "time": ISO 8601}

:func:`read_dead_letters` lists them; :func:`replay_dead_letters` appends them to a store
(for example once a server is back) and removes the files it applied.

Examples
--------
>>> import tempfile, numpy as np
>>> from simrecorder import InMemoryDataStore
>>> from simrecorder._schema import infer_spec
>>> d = tempfile.mkdtemp()
>>> path = write_dead_letter(d, "memory://", "x", infer_spec(1.0), np.array([1.0, 2.0]), "boom")
>>> [(letter.key, letter.rows) for letter in read_dead_letters(d)]
[('x', 2)]
>>> store = InMemoryDataStore()
>>> replay_dead_letters(d, store)
1
>>> store.get_all("x")
array([1., 2.])
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _codec
from ._fs import atomic_write
from ._schema import DENSE, SeriesSpec
from .errors import StoreFormatError

if TYPE_CHECKING:
    from .datastores.base import DataStore

__all__ = [
    "DeadLetter",
    "default_dead_letter_dir",
    "read_dead_letters",
    "replay_dead_letters",
    "write_dead_letter",
]

FORMAT_VERSION = 1
SUFFIX = ".srblock"
_counter = itertools.count()


@dataclass(frozen=True)
class DeadLetter:
    """One quarantined block, as read back from its file.

    Attributes
    ----------
    path
        The file holding it.
    store
        URL of the store that could not take it.
    key
        The series key.
    spec
        The series' kind, dtype and shape.
    block
        The samples: an ndarray of shape ``(rows, *shape)`` for dense series, a list
        for str/bytes series, a list of codec-encoded samples for object series.
    rows
        Number of samples.
    error
        Why the store did not take it.
    time
        When it was quarantined (ISO 8601, UTC).
    """

    path: str
    store: str
    key: str
    spec: SeriesSpec
    block: Any
    rows: int
    error: str
    time: str


def default_dead_letter_dir(store: DataStore) -> str:
    """The dead-letter directory the recorder uses for ``store`` by default."""
    if store.local_path:
        return os.path.abspath(os.fspath(store.local_path).rstrip("/\\") + ".dead-letter")
    name = re.sub(r"[^A-Za-z0-9._=-]+", "_", store.url).strip("_") or "store"
    return os.path.abspath(os.path.join("simrecorder-dead-letter", name[:200]))


def write_dead_letter(
    directory: str, store: str, key: str, spec: SeriesSpec, block: Any, error: str
) -> str:
    """Write one block to ``directory`` atomically and durably; return the file's path.

    Parameters
    ----------
    directory
        The dead-letter directory (created if missing).
    store
        URL of the store the block was meant for.
    key, spec, block
        The block as the recorder holds it.
    error
        Why it is quarantined.
    """
    record = {
        "format": FORMAT_VERSION,
        "store": store,
        "key": key,
        "kind": spec.kind,
        "dtype": spec.dense_dtype.str if spec.kind == DENSE else "",
        "shape": list(spec.dense_shape) if spec.kind == DENSE else [],
        "rows": len(block),
        "block": np.ascontiguousarray(block) if spec.kind == DENSE else list(block),
        "error": error,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    payload = _codec.encode(record)
    name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}{SUFFIX}"
    path = os.path.join(directory, name)
    atomic_write(path, payload, durable=True, make_dirs=True)
    return path


def read_dead_letters(directory: str) -> Iterator[DeadLetter]:
    """Yield the blocks quarantined in ``directory``, oldest first.

    Raises
    ------
    StoreFormatError
        A file in the directory is not a dead letter this version can read.
    """
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if not name.endswith(SUFFIX):
            continue
        path = os.path.join(directory, name)
        with open(path, "rb") as src:
            try:
                record = _codec.decode(src.read())
            except StoreFormatError as exc:
                raise StoreFormatError(f"dead letter {path} cannot be read: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
            raise StoreFormatError(f"{path} is not a simrecorder dead letter of format 1")
        kind = record["kind"]
        if kind == DENSE:
            spec = SeriesSpec(DENSE, np.dtype(record["dtype"]), tuple(record["shape"]))
        else:
            spec = SeriesSpec(kind)
        yield DeadLetter(
            path, record["store"], record["key"], spec, record["block"], record["rows"],
            record["error"], record["time"],
        )  # fmt: skip


def replay_dead_letters(directory: str, store: DataStore) -> int:
    """Append every block of ``directory`` to ``store``, in order; return how many.

    Each file is removed once its block is appended and the store flushed, so a
    replay that fails half way can be run again without duplicating anything.
    """
    count = 0
    for letter in read_dead_letters(directory):
        store.append_block(letter.key, letter.spec, letter.block)
        store.flush()
        os.unlink(letter.path)
        count += 1
    return count
