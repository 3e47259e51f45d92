"""The bad-input battery: every bad input is a specific error raised by record/set, and
the store stays valid with everything recorded before intact. Runs on every backend."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

import simrecorder
from simrecorder import (
    HDF5DataStore,
    InMemoryDataStore,
    InvalidKeyError,
    KeyConflictError,
    Recorder,
    RedisDataStore,
    SchemaError,
    StoreClosedError,
    StoreFormatError,
    ValueTooLargeError,
    ZarrDataStore,
)
from simrecorder.errors import ValueOutOfRangeError


@pytest.fixture(params=["memory", "hdf5", "zarr", "redis"])
def rec(request, tmp_path, redis_server, redis_prefix):
    if request.param == "memory":
        store = InMemoryDataStore()
    elif request.param == "hdf5":
        store = HDF5DataStore(tmp_path / "b.h5")
    elif request.param == "zarr":
        store = ZarrDataStore(tmp_path / "b.zarr")
    else:
        store = RedisDataStore("127.0.0.1", redis_server.port, prefix=redis_prefix)
    recorder = Recorder(store, max_seconds=None)
    recorder.record("x", 1.5)
    recorder.record("v", np.arange(3.0))
    recorder.flush()
    yield recorder
    if not recorder.closed:
        recorder.close()


def intact(rec):
    np.testing.assert_array_equal(np.asarray(rec.get_all("x")), [1.5])
    np.testing.assert_array_equal(np.asarray(rec.get_all("v")), [np.arange(3.0)])


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("x", "text", SchemaError),  # dtype (kind) change
        ("x", 1 + 2j, SchemaError),  # complex into a float series
        ("v", np.arange(4.0), SchemaError),  # shape change
        ("v", 1.0, SchemaError),  # scalar after array
        ("x", [1, 2], SchemaError),  # object in a dense series
        ("", 1.0, InvalidKeyError),  # empty key
        ("../x", 1.0, InvalidKeyError),
        ("/etc/x", 1.0, InvalidKeyError),  # absolute path key
        ("a\x00b", 1.0, InvalidKeyError),  # NUL in key
        ("k" * 2000, 1.0, InvalidKeyError),  # 2,000-character key
        (42, 1.0, InvalidKeyError),  # non-string key
        ("x/child", 1.0, KeyConflictError),  # a series under a series
    ],
    ids=["dtype", "complex", "shape", "scalar-after-array", "object-in-dense", "empty-key",
         "dotdot", "absolute", "nul", "2000-chars", "non-str", "under-series"],
)  # fmt: skip
def test_bad_record_is_refused_and_nothing_is_lost(rec, key, value, error):
    with pytest.raises(error):
        rec.record(key, value)
    with pytest.raises((error, SchemaError, InvalidKeyError, KeyConflictError)):
        rec.set(key if key != "x/child" else "x", value)
    intact(rec)
    rec.record("x", 2.5)  # and the store still takes good data
    assert len(rec.get_all("x")) == 2


def test_nan_and_inf_are_accepted(rec):
    rec.record("x", float("nan"))
    rec.record("x", float("inf"))
    got = np.asarray(rec.get_all("x"))
    assert np.isnan(got[1]) and got[2] == np.inf


def test_record_after_close(rec):
    rec.close()
    with pytest.raises(StoreClosedError):
        rec.record("x", 1.0)
    with pytest.raises(StoreClosedError):
        rec.set("y", 1.0)


def test_value_larger_than_the_backend_allows(tmp_path):
    # 5 GiB that take no memory: a broadcast view, refused before anything is copied
    huge = np.broadcast_to(np.zeros(1, dtype=np.uint8), (5 << 30,))
    with Recorder(HDF5DataStore(tmp_path / "huge.h5")) as rec:
        rec.record("x", 1.0)
        with pytest.raises(ValueTooLargeError, match="4,294,967,295"):
            rec.record("huge", huge)
        assert len(rec.get_all("x")) == 1 and "huge" not in rec.datastores[0]


def test_reopening_files_of_other_formats(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(StoreFormatError):
        HDF5DataStore(text)
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "data.txt").write_text("x")
    with pytest.raises(StoreFormatError):
        ZarrDataStore(tmp_path / "plain.zarr")
    assert text.read_text() == "not hdf5"


def test_files_of_a_future_format_version(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.attrs["simrecorder_format"] = 2
    with pytest.raises(StoreFormatError, match="upgrade"):
        HDF5DataStore(tmp_path / "f.h5")
    zarr.open_group(tmp_path / "f.zarr", mode="w").attrs["simrecorder_format"] = 2
    with pytest.raises(StoreFormatError, match="upgrade"):
        ZarrDataStore(tmp_path / "f.zarr")


# -- numbers out of the range of the series' dtype (issue 13, item 2) ----------------------
@pytest.mark.parametrize(
    ("first", "bad"),
    [
        (np.float32(1.0), 1e300),  # fast path: checked when the buffer packs its part
        (np.float32(1.0), np.float64(-1e300)),
        (np.float16(1.0), 70000.0),
        (np.float16(1.0), 70000),  # a Python int into a float16 series
        (np.complex64(1.0), 1e300 + 0j),
        (np.zeros(2, dtype=np.float32), np.array([1.0, 1e300])),
        (np.uint8(1), 300),
        (np.uint8(1), -1),
        (np.uint32(1), -1),
        (1, 2**70),  # a Python int beyond int64
        (np.int8(1), np.int64(-129)),
    ],
    ids=["1e300-f32", "np-f64-f32", "f16", "int-f16", "c64", "array-f32", "300-u8", "-1-u8",
         "-1-u32", "2**70-i64", "i64-i8"],
)  # fmt: skip
def test_out_of_range_numbers_are_refused_and_the_rest_is_kept(rec, first, bad):
    rec.record("n", first)
    rec.record("n", first)
    errors = []
    for step in (lambda: rec.record("n", bad), lambda: rec.record("n", first), rec.flush):
        try:
            step()
        except ValueOutOfRangeError as exc:
            errors.append(exc)
    assert len(errors) == 1, "raised once, by record() or by flush()"
    error = errors[0]
    assert isinstance(error, ValueError) and isinstance(error, SchemaError)
    first_dtype = np.asarray(first).dtype
    message = str(error)
    assert "'n'" in message and str(first_dtype) in message and "range" in message
    assert error.key == "n" and error.dtype == str(first_dtype)
    shown = bad if np.ndim(bad) == 0 else bad[1]
    assert np.asarray(shown).item() in [np.asarray(v).item() for v in error.values]
    got = np.asarray(rec.get_all("n"))
    np.testing.assert_array_equal(got, np.asarray([first] * 3))  # nothing lost, no inf/wrap
    intact(rec)
    rec.record("x", 2.5)  # and the recorder goes on
    rec.flush()
    assert len(rec.get_all("x")) == 2


def test_nan_into_an_int_series_names_key_value_and_dtype(rec):
    rec.record("i", 1)
    with pytest.raises(SchemaError) as info:
        rec.record("i", float("nan"))
    assert "'i'" in str(info.value) and "nan" in str(info.value) and "int64" in str(info.value)
    np.testing.assert_array_equal(np.asarray(rec.get_all("i")), [1])


# -- no bare builtin raises (issue 13, item 2) ---------------------------------------------
PACKAGE = Path(simrecorder.__file__).parent

#: Files allowed to raise bare builtins: none (every module raises from simrecorder.errors).
ALLOWED_BARE_RAISES: set[str] = set()

#: Builtins whose bare raise is the protocol, not an error report: AttributeError
#: from ``__getattr__``, NotImplementedError of an abstract method, AssertionError
#: of an "unreachable" line. BaseException-only ones (KeyboardInterrupt) are re-raised
#: signals.
_PROTOCOL = {"NotImplementedError", "AssertionError"}


class _RaiseScanner(ast.NodeVisitor):
    """Collects ``raise <builtin>`` lines, knowing the function each is in."""

    def __init__(self) -> None:
        self.function = ""
        self.found: list[tuple[int, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc
        target = exc.func if isinstance(exc, ast.Call) else exc
        if isinstance(target, ast.Name):
            builtin = getattr(builtins, target.id, None)
            protocol = target.id in _PROTOCOL or (
                target.id == "AttributeError" and self.function == "__getattr__"
            )
            if isinstance(builtin, type) and issubclass(builtin, Exception) and not protocol:
                self.found.append((node.lineno, target.id))
        self.generic_visit(node)


def bare_builtin_raises(source: str) -> list[str]:
    """``'<line>: raise <Builtin>'`` for every bare builtin raise in ``source``."""
    scanner = _RaiseScanner()
    scanner.visit(ast.parse(source))
    return [f"{line}: raise {name}" for line, name in sorted(scanner.found)]


def test_every_raise_uses_the_error_tree():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "errors.py" or relative in ALLOWED_BARE_RAISES:
            continue
        found += [f"simrecorder/{relative}:{hit}" for hit in bare_builtin_raises(path.read_text())]
    assert not found, (
        "raise a class from simrecorder.errors (it derives from the builtin too):\n"
        + "\n".join(found)
    )


def test_the_raise_scanner_finds_bare_raises():
    source = (
        "def f(x):\n    if x:\n        raise ValueError(x)\n    raise KeyError\n"
        "def __getattr__(name):\n    raise AttributeError(name)\n"
        "def g():\n    raise NotImplementedError\n"
        "def h():\n    raise AttributeError('h')\n"
        "def i():\n    raise KeyboardInterrupt\n"
        "def j(exc):\n    raise SchemaError('x') from exc\n"
    )
    assert bare_builtin_raises(source) == [
        "3: raise ValueError",
        "4: raise KeyError",
        "10: raise AttributeError",
    ]
