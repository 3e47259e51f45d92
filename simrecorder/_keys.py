"""Validation of series keys (``a/b/c`` paths)."""

from __future__ import annotations

from .errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "parent_keys", "validate_key"]

#: Longest key accepted, in characters. HDF5, zarr and Redis all take longer names, but
#: keys longer than this are almost always a bug (a value passed as key) and make file
#: systems unhappy once a key becomes a path.
MAX_KEY_LENGTH = 1024

_valid_cache: set[str] = set()


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid key path, else raise :class:`InvalidKeyError`.

    A key is a non-empty ``str`` of at most :data:`MAX_KEY_LENGTH` characters, made of
    ``/``-separated parts; no part is empty (so no leading, trailing or double ``/``),
    ``.`` or ``..``, and no character is NUL or another ASCII control character.

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
    for char in key:
        if ord(char) < 32 or char == "\x7f":
            raise InvalidKeyError(f"invalid key {key!r}: control character {char!r}")
    for part in key.split("/"):
        if part == "":
            raise InvalidKeyError(f"invalid key {key!r}: empty part (leading, trailing or '//')")
        if part in (".", ".."):
            raise InvalidKeyError(f"invalid key {key!r}: part {part!r} is not allowed")
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
