"""``smart_cache``: memoise a function's results into blob storage.

What goes into a call's key (:func:`key_material` shows it, :func:`cache_key` hashes it)
-------------------------------------------------------------------------------------
1. ``"format"``: the version of this scheme (``simrecorder.smart_cache/1``).
2. ``"function"``: the function's ``module:qualname``.
3. ``"arguments"``: every parameter by name, bound as the call binds them, defaults
   applied (``f(1)`` and ``f(x=1)`` share a key), each value encoded canonically:
   ``None``/``bool``/``int``/``str`` as they are, ``float`` by its exact hex form,
   ``bytes`` as hex, tuples and lists item by item, dicts sorted by encoded key, sets
   sorted, paths as text, numpy arrays by dtype, shape and the sha256 of their bytes,
   enums by name, dataclasses field by field, functions by ``module:qualname``; any
   other object by the sha256 of its pickle (so it must pickle the same way each time).
4. ``"code"``: for the function if it is marked with :func:`mark_unstable` (or its
   module with :func:`mark_module_unstable`), and for
   every marked function it reaches (called by name from its module's globals, as
   ``module.name``, from its closure, or passed as an argument), the sha256 of its
   bytecode, constants, names and defaults. Editing a marked function (or a marked
   function it calls) changes its key; comments, blank lines and moves do not.

Not in the key: global variables (tarn hashed mutable globals, so its cache never
hit), unmarked functions' code (mark them, or accept that editing them keeps old
results), the Python version (bytecode differs between versions, so marked functions
get new keys after an upgrade).

Results are pickled (or ``serializer.dumps``) into the blob storage; a small index
maps each call's key to the digest of its result, so equal results are stored once.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import os
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ArgumentTypeError, InvalidArgumentError
from ..locations import DirectoryLocation, Location
from ._digest import location_key
from ._errors import ReadError, StorageCorruption
from ._layout import DiskDict, HashLayout
from ._storage import HashKeyStorage, LocationLike, walk_locations

__all__ = [
    "cache_key",
    "key_material",
    "mark_module_unstable",
    "mark_stable",
    "mark_unstable",
    "smart_cache",
]

FORMAT = "simrecorder.smart_cache/1"
_MARK = "__simrecorder_unstable__"

F = TypeVar("F", bound=Callable[..., Any])


def mark_unstable(func: F) -> F:
    """Mark a function as likely to change: its code goes into the cache keys.

    Examples
    --------
    >>> @mark_unstable
    ... def f(x):
    ...     return x + 1
    >>> "code" in key_material(f, 1) and "f" in next(iter(key_material(f, 1)["code"]))
    True
    """
    _set_mark(func, True)
    return func


def mark_stable(func: F) -> F:
    """Mark a function as stable: only its name goes into the cache keys (the default
    for unmarked functions; use it to undo :func:`mark_unstable`)."""
    _set_mark(func, False)
    return func


def _set_mark(func: Any, unstable: bool) -> None:
    if not callable(func):
        raise ArgumentTypeError(f"only functions can be marked, got {type(func).__name__}")
    for target in {func, inspect.unwrap(func)}:
        try:
            setattr(target, _MARK, unstable)
        except (AttributeError, TypeError) as exc:
            raise ArgumentTypeError(f"cannot mark {func!r}: {exc}") from exc


def mark_module_unstable(module: types.ModuleType | str) -> None:
    """Mark every function of a module as unstable (tarn's ``mark_module_unstable``).

    The mark is an attribute of the module object (no global registry); a function
    marked with :func:`mark_stable` stays stable.
    """
    found = sys.modules.get(module) if isinstance(module, str) else module
    if not isinstance(found, types.ModuleType):
        raise ArgumentTypeError(f"mark_module_unstable takes a module or an imported one's name, "
                                f"got {module!r}")  # fmt: skip
    setattr(found, _MARK, True)


def _is_unstable(func: Any) -> bool:
    target = inspect.unwrap(func)
    for candidate in (func, target):
        mark = getattr(candidate, _MARK, None)
        if mark is not None:
            return bool(mark)
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    return bool(getattr(module, _MARK, False)) and isinstance(target, types.FunctionType)


def _name(func: Any) -> str:
    func = inspect.unwrap(func)
    return f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"


# -- the key --------------------------------------------------------------------------------


def key_material(func: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Exactly what :func:`cache_key` hashes for ``func(*args, **kwargs)`` (see the module).

    Raises
    ------
    ArgumentTypeError
        The arguments do not fit the function's signature.
    """
    target = inspect.unwrap(func)
    try:
        bound = inspect.signature(target).bind(*args, **kwargs)
    except TypeError as exc:
        raise ArgumentTypeError(f"{_name(func)}: {exc}") from exc
    bound.apply_defaults()
    code: dict[str, str] = {}
    arguments = {name: _encode(value, code) for name, value in bound.arguments.items()}
    if _is_unstable(func):
        _add_code(target, code)
    return {
        "format": FORMAT,
        "function": _name(func),
        "arguments": arguments,
        "code": dict(sorted(code.items())),
    }


def cache_key(func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The hex sha256 key of the call ``func(*args, **kwargs)`` (see :func:`key_material`).

    Examples
    --------
    >>> def area(width, height=2):
    ...     return width * height
    >>> cache_key(area, 3) == cache_key(area, width=3, height=2)
    True
    """
    text = json.dumps(key_material(func, *args, **kwargs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode(value: Any, code: dict[str, str]) -> Any:
    """A canonical JSON-able form of an argument; marked functions add their code."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return ["enum", _name(type(value)), value.name]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [_encode(item, code) for item in value]]
    if isinstance(value, dict):
        pairs = [[_encode(k, code), _encode(v, code)] for k, v in value.items()]
        return ["dict", sorted(pairs, key=_sort_key)]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted((_encode(item, code) for item in value), key=_sort_key)]
    if isinstance(value, os.PathLike):
        return ["path", os.fspath(value)]
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, functools.partial)):
        return _encode_callable(value, code)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name), code) for f in dataclasses.fields(value)}
        return ["dataclass", _name(type(value)), fields]
    numpy_form = _encode_numpy(value)
    if numpy_form is not None:
        return numpy_form
    try:
        pickled = pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise ArgumentTypeError(
            f"smart_cache cannot key an argument of type {type(value).__name__}: {exc}"
        ) from exc
    return ["pickle", _name(type(value)), hashlib.sha256(pickled).hexdigest()]


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


def _encode_callable(value: Any, code: dict[str, str]) -> list[Any]:
    if isinstance(value, functools.partial):
        return ["partial", _encode_callable(value.func, code),
                [_encode(a, code) for a in value.args],
                _encode(dict(value.keywords), code)]  # fmt: skip
    if _is_unstable(value):
        _add_code(inspect.unwrap(value), code)
    return ["function", _name(value)]


def _encode_numpy(value: Any) -> list[Any] | None:
    module = type(value).__module__
    if not module.startswith("numpy"):
        return None
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return None
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        return ["ndarray", data.dtype.str, list(data.shape), digest]
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return ["numpy", np.asarray(value).dtype.str, np.asarray(value).tobytes().hex()]
    return None


def _add_code(func: Any, code: dict[str, str]) -> None:
    """Add the code digest of an unstable function and of the unstable ones it reaches."""
    name = _name(func)
    if name in code or not isinstance(func, types.FunctionType):
        return
    code[name] = ""  # placeholder: recursion stops here
    reached: list[Any] = []
    material = {
        "code": _code_material(func.__code__),
        "defaults": _encode(func.__defaults__, code),
        "kwdefaults": _encode(func.__kwdefaults__, code),
    }
    for other in _reached_functions(func):
        if _is_unstable(other):
            reached.append(inspect.unwrap(other))
    text = json.dumps(material, sort_keys=True, separators=(",", ":"))
    code[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    for other in reached:
        _add_code(other, code)


def _code_material(code: types.CodeType) -> list[Any]:
    consts = [
        _code_material(const) if isinstance(const, types.CodeType) else repr(const)
        for const in code.co_consts
    ]
    return [code.co_code.hex(), consts, list(code.co_names), list(code.co_varnames),
            list(code.co_freevars), list(code.co_cellvars)]  # fmt: skip


def _all_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _reached_functions(func: types.FunctionType) -> list[Any]:
    """Functions ``func`` may call: globals it names, attributes of modules it names,
    and its closure's contents."""
    names = _all_names(func.__code__)
    found = []
    for name in sorted(names):
        value = func.__globals__.get(name)
        if callable(value):
            found.append(value)
        elif isinstance(value, types.ModuleType):
            found.extend(
                getattr(value, attribute)
                for attribute in sorted(names)
                if callable(getattr(value, attribute, None))
            )
    for cell in func.__closure__ or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(content):
            found.append(content)
    return found


# -- the decorator --------------------------------------------------------------------------


class _Pickle:
    """The default serializer."""

    @staticmethod
    def dumps(value: Any) -> bytes:
        return pickle.dumps(value, protocol=5)

    @staticmethod
    def loads(data: bytes) -> Any:
        return pickle.loads(data)


def smart_cache(
    index: HashKeyStorage | LocationLike,
    storage: HashKeyStorage | LocationLike | None = None,
    serializer: Any = None,
    algorithm: str | None = None,
) -> Callable[[F], F]:
    """Memoise a function's results into blob storage (see the module for the key).

    The arguments are tarn's: ``smart_cache('/path')`` keeps the call index in
    ``/path/index`` and the results in the blob folder ``/path/storage``;
    ``smart_cache(index, storage)`` takes both. simrecorder also takes
    ``smart_cache(HashKeyStorage(...))`` (or a blob location): results go there and the
    index beside them (the ``tools/smart_cache`` folder of its first :class:`DiskDict`,
    else ``smart-cache/`` in a plain, non-composite location).

    Parameters
    ----------
    index
        A folder path (tarn's layout, see above), a location for the index when
        ``storage`` is given, else a :class:`HashKeyStorage` or a blob location.
    storage
        Where results are stored: a :class:`HashKeyStorage` or what it takes.
    serializer
        An object with ``dumps(value) -> bytes`` and ``loads(bytes)``; pickle by default.
    algorithm
        The hash of a new results folder (``"sha256"`` by default).

    Returns
    -------
    decorator
        The decorated function has ``cache_key(*args, **kwargs)`` and
        ``key_material(*args, **kwargs)`` attributes, and ``storage`` and ``index``.

    Raises
    ------
    InvalidArgumentError
        No default index can be chosen (pass ``smart_cache(index, storage)``).

    Examples
    --------
    >>> import tempfile
    >>> calls = []
    >>> @smart_cache(tempfile.mkdtemp())
    ... def square(x):
    ...     calls.append(x)
    ...     return x * x
    >>> square(4), square(4), calls
    (16, 16, [4])
    """
    blobs, table = _resolve_cache(index, storage, algorithm)
    codec = serializer if serializer is not None else _Pickle()

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def cached(*args: Any, **kwargs: Any) -> Any:
            key = location_key(cache_key(func, *args, **kwargs))
            digest = table.get(key)
            if digest is not None:
                try:
                    return codec.loads(blobs.read(_read_all, digest))
                except (ReadError, StorageCorruption, ValueError):
                    pass  # the result is gone or damaged: compute it again
            result = func(*args, **kwargs)
            stored = blobs.write(codec.dumps(result))
            assert stored is not None  # error=True raised otherwise
            table.put(key, stored)
            return result

        cached.cache_key = functools.partial(cache_key, func)  # type: ignore[attr-defined]
        cached.key_material = functools.partial(key_material, func)  # type: ignore[attr-defined]
        cached.storage = blobs  # type: ignore[attr-defined]
        cached.index = table  # type: ignore[attr-defined]
        return cached  # type: ignore[return-value]

    return decorate


def _resolve_cache(
    index: Any, storage: Any, algorithm: str | None
) -> tuple[HashKeyStorage, Location]:
    """The result storage and the index of :func:`smart_cache`'s arguments."""
    if storage is not None:
        blobs = storage if isinstance(storage, HashKeyStorage) else HashKeyStorage(storage)
        return blobs, _index_location(index)
    if isinstance(index, (str, os.PathLike)):  # tarn's layout: <root>/index, <root>/storage
        root = os.fspath(index)
        blobs = HashKeyStorage(DiskDict(os.path.join(root, "storage"), algorithm=algorithm))
        return blobs, DirectoryLocation(os.path.join(root, "index"))
    blobs = index if isinstance(index, HashKeyStorage) else HashKeyStorage(index)
    return blobs, default_index(blobs)


def _index_location(index: Any) -> Location:
    if isinstance(index, Location):
        return index
    if isinstance(index, (str, os.PathLike)):
        return DirectoryLocation(index)
    raise ArgumentTypeError(
        f"smart_cache: an index is a location or a folder path, got {type(index).__name__}"
    )


def _read_all(value: Any) -> bytes:
    if hasattr(value, "read_bytes"):
        return bytes(value.read_bytes())
    return bytes(value.read())


def default_index(storage: HashKeyStorage) -> Location:
    """The index location :func:`smart_cache` uses for ``storage`` by default."""
    for location in walk_locations(storage.local):
        if isinstance(location, DiskDict):
            return DirectoryLocation(os.path.join(location.root, "tools", "smart_cache"))
    local = storage.local
    if not isinstance(local, HashLayout) and local.protocol not in ("levels", "fanout", "small"):
        return local.sub("smart-cache")
    raise InvalidArgumentError(
        f"smart_cache: pass an index, smart_cache(index, storage) (a location for the call "
        f"keys); {local.url} has no folder of its own"
    )
