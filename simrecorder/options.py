"""SimRecorder's option enums, kept importable under their old names."""

from __future__ import annotations

from enum import Enum

__all__ = ["CompressionType", "DatastoreType", "Serialization"]


class DatastoreType(Enum):
    """Where a :class:`~simrecorder.ZarrDataStore` keeps its data."""

    DIRECTORY = "directory"  #: a local directory (zarr v3 ``LocalStore``)
    ZIP = "zip"  #: a zip file (zarr v3 ``ZipStore``)
    LMDB = "lmdb"  #: an LMDB environment (needs the ``lmdb`` package)


class CompressionType(Enum):
    """Compression codec of new zarr arrays."""

    NONE = "none"
    BLOSC = "blosc"
    LZMA = "lzma"
    ZSTD = "zstd"


class Serialization(Enum):
    """How samples are serialised for byte-oriented backends.

    simrecorder picks the encoding per series kind (raw numpy blocks for dense series,
    its own pickle-free codec for object series); the names remain for code written
    against SimRecorder.
    """

    NUMPY = "numpy"
    OBJECT = "object"
    PICKLE = "pickle"
