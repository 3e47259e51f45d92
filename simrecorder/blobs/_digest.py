"""Digests: hash algorithms, keys given as raw bytes or hex, hashing while streaming."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from typing import IO, Any

from ..errors import ArgumentTypeError, InvalidArgumentError
from ._errors import InvalidDigestError

__all__ = [
    "BLOCK_BYTES",
    "Hasher",
    "VerifyingReader",
    "digest_of",
    "location_key",
    "resolve_algorithm",
    "to_hex",
]

#: Size of the pieces values are hashed and copied in (a 10 GiB file never sits in memory).
BLOCK_BYTES = 1 << 20

_HEX = re.compile(r"[0-9a-fA-F]*")

#: Makes a new hash object (``hashlib.sha256``, ``functools.partial(hashlib.blake2b, ...)``).
Hasher = Callable[[], Any]


def resolve_algorithm(algorithm: str | Hasher) -> tuple[str, Hasher]:
    """``(name, factory)`` of a hash algorithm given by name or as a hashlib constructor.

    Raises
    ------
    InvalidArgumentError
        hashlib does not know the name.

    Examples
    --------
    >>> resolve_algorithm("sha256")[0]
    'sha256'
    >>> resolve_algorithm(hashlib.blake2b)[0]
    'blake2b'
    """
    if isinstance(algorithm, str):
        name = algorithm.lower()
        try:
            hashlib.new(name)
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(
                f"unknown hash algorithm {algorithm!r}: use one of hashlib's "
                f"({', '.join(sorted(hashlib.algorithms_guaranteed))})"
            ) from exc
        constructor = getattr(hashlib, name, None)
        return name, constructor if constructor is not None else (lambda: hashlib.new(name))
    if callable(algorithm):
        try:
            sample = algorithm()
            name = str(sample.name)
            sample.update(b"")
            sample.digest()
        except Exception as exc:
            raise InvalidArgumentError(
                f"algorithm must be a hashlib name or constructor; {algorithm!r} is neither"
            ) from exc
        return name, algorithm
    raise ArgumentTypeError(
        f"algorithm must be a hashlib name or constructor, got {type(algorithm).__name__}"
    )


def to_hex(key: object, digest_size: int) -> str:
    """The lowercase hex form of a digest given as raw bytes or as hex text.

    Raises
    ------
    InvalidDigestError
        ``key`` is not ``digest_size`` raw bytes nor ``2 * digest_size`` hex digits.

    Examples
    --------
    >>> to_hex(bytes(range(4)), 4)
    '00010203'
    >>> to_hex("00010203", 4)
    '00010203'
    """
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        if len(raw) == digest_size:
            return raw.hex()
        raise InvalidDigestError(
            f"a blob key is a {digest_size}-byte digest (or {2 * digest_size} hex digits); "
            f"got {len(raw)} bytes: {raw[:40]!r}"
        )
    if isinstance(key, str):
        if len(key) == 2 * digest_size and _HEX.fullmatch(key):
            return key.lower()
        raise InvalidDigestError(
            f"a blob key is {2 * digest_size} hex digits (or {digest_size} raw bytes); "
            f"got {len(key)} characters: {key[:80]!r}"
        )
    raise InvalidDigestError(
        f"a blob key is a digest (bytes or hex text), got {type(key).__name__}: {key!r:.80}"
    )


def location_key(hexdigest: str) -> str:
    """The key a digest has in a location: ``"ab/cdef..."`` (tarn's default layout)."""
    return f"{hexdigest[:2]}/{hexdigest[2:]}"


def digest_of(data: bytes | bytearray | memoryview, factory: Hasher) -> str:
    """The hex digest of bytes."""
    hasher = factory()
    hasher.update(data)
    return str(hasher.hexdigest())


def digest_file(path: str | os.PathLike[str], factory: Hasher) -> str:
    """The hex digest of a file, read in :data:`BLOCK_BYTES` pieces."""
    hasher = factory()
    with open(path, "rb", buffering=0) as file:
        buffer = bytearray(BLOCK_BYTES)
        view = memoryview(buffer)
        while count := file.readinto(buffer):
            hasher.update(view[:count])
    return str(hasher.hexdigest())


def digest_stream(stream: IO[bytes], factory: Hasher) -> str:
    """The hex digest of a stream, read from where it is to its end."""
    hasher = factory()
    while piece := stream.read(BLOCK_BYTES):
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise ArgumentTypeError(
                f"a blob stream must yield bytes, got {type(piece).__name__} (open files in 'rb')"
            )
        hasher.update(piece)
    return str(hasher.hexdigest())


class VerifyingReader(io.RawIOBase):
    """A stream that hashes what it hands out and checks the digest at its end.

    When the consumer reads the value to its end in order, the last read raises
    (through ``on_mismatch``) instead of returning end-of-file if the content does not
    hash to ``expected``: a corrupted blob is never read whole as valid. A consumer
    that seeks switches the check off (the content is then checked on demand only).

    Parameters
    ----------
    stream
        The value as a location yields it.
    factory
        The hash algorithm.
    expected
        The hex digest the content must have.
    on_mismatch
        Called with the digest found when it differs; must raise.
    """

    def __init__(
        self,
        stream: IO[bytes],
        factory: Hasher,
        expected: str,
        on_mismatch: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._stream = stream
        self._hasher = factory()
        self._expected = expected
        self._on_mismatch = on_mismatch
        self._checking = True
        self._hashed = 0  # bytes hashed so far: the position reads must continue from
        self._on_track = True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        try:
            return bool(self._stream.seekable())
        except (AttributeError, OSError, ValueError):
            return False

    def tell(self) -> int:
        return int(self._stream.tell())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # a location may measure a stream (seek to its end and back) before reading it:
        # the check goes on as long as reads continue where hashing stopped
        position = int(self._stream.seek(offset, whence))
        self._on_track = position == self._hashed
        return position

    def read(self, size: int | None = -1) -> bytes:
        whole = size is None or size < 0
        piece = self._stream.read(-1 if size is None or size < 0 else size)
        self._seen(piece)
        if whole and piece:
            self._seen(b"")  # read to the end: check now
        return piece

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        piece = self.read(len(view))
        view[: len(piece)] = piece
        return len(piece)

    def _seen(self, piece: bytes) -> None:
        if not self._checking:
            return
        if not self._on_track:
            self._checking = False  # read out of order: the running digest means nothing
            return
        if piece:
            self._hasher.update(piece)
            self._hashed += len(piece)
            return
        self._checking = False
        found = self._hasher.hexdigest()
        if found != self._expected:
            self._on_mismatch(found)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
