"""Validation of series keys (``a/b/c`` paths)."""

from __future__ import annotations

import re

from .errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "MAX_PART_BYTES", "check_path_parts", "parent_keys", "validate_key"]

#: Longest file or directory name most file systems take (ext4, xfs, btrfs, tmpfs), in
#: UTF-8 bytes: stores that turn key parts into path names check parts against it.
MAX_PART_BYTES = 255

#: Longest key accepted, in characters. HDF5, zarr and Redis all take longer names, but
#: keys longer than this are almost always a bug (a value passed as key) and make file
#: systems unhappy once a key becomes a path.
MAX_KEY_LENGTH = 1024

_valid_cache: set[str] = set()

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_DOT_PART = re.compile(r"(?:^|/)(\.\.?)(?:/|$)")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid key path, else raise :class:`InvalidKeyError`.

    A key is a non-empty ``str`` of at most :data:`MAX_KEY_LENGTH` characters, made of
    ``/``-separated parts; no part is empty (so no leading, trailing or double ``/``),
    ``.`` or ``..``, no character is NUL or another ASCII control character, and the
    key is valid Unicode (no unpaired surrogates).

    Parameters
    ----------
    key
        The candidate key.

    Returns
    -------
    str
        The key, unchanged.

    Examples
    --------
    >>> validate_key("neurons/v")
    'neurons/v'
    >>> validate_key("../x")
    Traceback (most recent call last):
    ...
    simrecorder.errors.InvalidKeyError: invalid key '../x': part '..' is not allowed
    """
    if key.__class__ is str and key in _valid_cache:
        return key
    if not isinstance(key, str):
        raise InvalidKeyError(f"invalid key {key!r}: keys are str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("invalid key '': a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"invalid key {key[:40]!r}...: {len(key)} characters, at most {MAX_KEY_LENGTH}"
        )
    if key.startswith("/"):
        raise InvalidKeyError(f"invalid key {key!r}: absolute keys are not allowed")
    control = _CONTROL.search(key)
    if control is not None:
        raise InvalidKeyError(f"invalid key {key!r}: control character {control.group()!r}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"invalid key {key!r}: an unpaired surrogate is not valid Unicode text"
            ) from None
    if "//" in key or key.endswith("/"):
        raise InvalidKeyError(f"invalid key {key!r}: empty part (leading, trailing or '//')")
    dots = _DOT_PART.search(key)
    if dots is not None:
        raise InvalidKeyError(f"invalid key {key!r}: part {dots.group(1)!r} is not allowed")
    if len(_valid_cache) < 100_000:
        _valid_cache.add(key)
    return key


def parent_keys(key: str) -> list[str]:
    """Return the group keys above ``key``, outermost first.

    >>> parent_keys("a/b/c")
    ['a', 'a/b']
    """
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def check_path_parts(key: str, where: str, reserved: tuple[str, ...] = (), extra: int = 0) -> None:
    """Raise :class:`InvalidKeyError` unless every part of ``key`` can be a file name.

    For stores that turn key parts into file or directory names: each part must fit
    in :data:`MAX_PART_BYTES` UTF-8 bytes (less ``extra`` bytes the store appends, such
    as a suffix) and must not be one of the ``reserved`` names of the format.

    Parameters
    ----------
    key
        A valid key path.
    where
        The store, for the message (its ``repr``).
    reserved
        Names a part may not take (e.g. ``('zarr.json',)``).
    extra
        Bytes the store adds to a part's name on disk.

    Examples
    --------
    >>> check_path_parts("a/zarr.json", "Z('run.zarr')", reserved=("zarr.json",))
    Traceback (most recent call last):
    ...
    simrecorder.errors.InvalidKeyError: invalid key 'a/zarr.json' for Z('run.zarr'): ...
    """
    limit = MAX_PART_BYTES - extra
    for part in key.split("/"):
        if part in reserved:
            raise InvalidKeyError(
                f"invalid key {key!r} for {where}: part {part!r} is a name the format reserves"
            )
        size = len(part.encode("utf-8"))
        if size > limit:
            raise InvalidKeyError(
                f"invalid key {key[:60]!r} for {where}: part {part[:20]!r}... is {size} bytes "
                f"in UTF-8; file names take at most {limit} here"
            )
