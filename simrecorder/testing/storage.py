"""The contract every :mod:`simrecorder.storage` backend must meet.

Each backend's test class subclasses :class:`StorageTests` and says how to make an
empty storage and how to reopen it (``None`` when the data does not outlive the
object, as for memory)::

    class TestHDF5Storage(StorageTests):
        def make_storage(self, tmp_path):
            return HDF5Storage(tmp_path / "s.h5")

        def reopen(self, storage, mode="a"):
            storage.close()
            return HDF5Storage(storage.path, mode)

Requires pytest (``pip install 'simrecorder[test]'``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simrecorder.errors import KeyNotFoundError, ReadOnlyError, StoreClosedError
from simrecorder.storage import (
    ClassNotFoundWarning,
    EnvironmentMismatch,
    GenericStorage,
    GroupExistsError,
    StorageGroup,
)

__all__ = ["VALUES", "StorageTests", "assert_same"]


@dataclasses.dataclass
class Particle:
    """A dataclass the suite stores."""

    name: str
    position: np.ndarray
    charge: float = 0.0


class Counter:
    """An object with ``__getstate__``/``__setstate__``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.cache = "not stored"

    def __getstate__(self) -> dict[str, Any]:
        return {"count": self.count}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
        self.cache = "rebuilt"


class Model:
    """A :class:`~simrecorder.storage.Storable` object."""

    def __init__(self, weights: np.ndarray, label: str) -> None:
        self.weights = weights
        self.label = label

    def _store(self, group: StorageGroup) -> None:
        group["weights"] = self.weights
        group["label"] = self.label

    @classmethod
    def _restore(cls, group: StorageGroup) -> Model:
        return cls(group["weights"], group["label"])


def _array(spec: str) -> np.ndarray:
    return np.arange(12).astype(spec).reshape(3, 4)


#: ``(id, value)``: every kind of value the storage round-trips.
VALUES: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("int", 42),
    ("negative", -7),
    ("huge_int", 2**200 + 1),
    ("float", 2.5),
    ("nan", math.nan),
    ("inf", math.inf),
    ("minus_inf", -math.inf),
    ("complex", 1.5 - 2j),
    ("str", "hé 𝄞 \x00 end"),
    ("empty_str", ""),
    ("bytes", b"\x00\xffabc"),
    ("empty_list", []),
    ("list", [1, 2.5, "x", None, [True, (1, 2)]]),
    ("tuple", (1, "a", (2.0, [3]))),
    ("list_of_dicts", [{"a": 1}, {"b": [np.arange(3)]}]),
    ("list_of_arrays", [np.arange(3), np.ones((2, 2))]),
    ("dict_odd_keys", {"a/b": 1, "": 2, "@x": 3}),
    ("np_bool", np.bool_(True)),
    ("np_int8", np.int8(-3)),
    ("np_uint64", np.uint64(2**64 - 1)),
    ("np_float16", np.float16(1.5)),
    ("np_float64", np.float64(0.1)),
    ("np_complex64", np.complex64(1 + 2j)),
    ("np_str", np.str_("abc")),
    ("np_bytes", np.bytes_(b"ab")),
    ("arr_bool", np.array([True, False])),
    ("arr_int8", _array("int8")),
    ("arr_uint32", _array("uint32")),
    ("arr_int64", _array("int64")),
    ("arr_float32", _array("float32")),
    ("arr_float64", _array("float64")),
    ("arr_complex128", _array("complex128")),
    ("arr_str", np.array(["a", "bcd", ""])),
    ("arr_bytes", np.array([b"a", b"bc"])),
    ("arr_0d", np.array(3.5)),
    ("arr_empty", np.zeros((0, 3))),
    ("arr_big_endian", np.arange(5, dtype=">i4")),
    ("arr_noncontiguous", np.arange(40.0).reshape(5, 8)[::2, ::3]),
    ("arr_large", np.linspace(0, 1, 100_000)),
    ("arr_large_int", np.arange(20_000, dtype=np.int32).reshape(100, 200)),
    ("arr_large_str", np.array(["abc", "de"] * 2000)),
    ("arr_large_bool", np.ones(10_000, dtype=bool)),
    ("arr_large_big_endian", np.arange(10_000, dtype=">f8")),
    ("arr_large_float16", np.arange(10_000, dtype=np.float16)),
    ("arr_large_complex", np.arange(10_000) * (1 + 1j)),
    ("arr_large_bytes", np.array([b"ab", b"c"] * 3000)),
    ("lone_surrogate", "a\ud800b"),
    ("np_datetime64", np.datetime64("2026-12-06T17:00:00")),
    ("arr_datetime64", np.array(["2026-01-01", "2026-06-01"], dtype="datetime64[D]")),
]


def assert_same(got: Any, want: Any) -> None:
    """``got`` has the type and value of ``want`` (recursively; nan equals nan)."""
    assert type(got) is type(want), f"{type(got)} != {type(want)}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, (float, np.floating, complex, np.complexfloating)):
        assert (got == want) or (np.isnan(got) and np.isnan(want))
        if isinstance(want, np.generic):
            assert got.dtype == want.dtype
    else:
        assert got == want
        if isinstance(want, np.generic):
            assert got.dtype == want.dtype


class StorageTests:
    """Subclass per backend; override :meth:`make_storage` and :meth:`reopen`."""

    #: Whether data outlives the storage object (reopen gives it back).
    persistent = True

    def make_storage(self, tmp_path: Path) -> GenericStorage:
        """An empty, writable storage."""
        raise NotImplementedError

    def reopen(self, storage: GenericStorage, mode: str = "a") -> GenericStorage:
        """Close ``storage`` and open its data again."""
        raise NotImplementedError

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        storage = self.make_storage(tmp_path)
        yield storage
        storage.close()

    def _roundtrip(self, storage: GenericStorage) -> GenericStorage:
        return self.reopen(storage) if self.persistent else storage

    # -- values -------------------------------------------------------------------------
    @pytest.mark.parametrize(("kind", "value"), VALUES, ids=[kind for kind, _ in VALUES])
    def test_value_round_trip(self, storage: GenericStorage, kind: str, value: Any) -> None:
        storage.root[kind] = value
        assert_same(storage.root[kind], value)
        storage = self._roundtrip(storage)
        try:
            assert_same(storage.root[kind], value)
            assert_same(storage.root.load()[kind], value)
        finally:
            storage.close()

    def test_all_values_in_one_group(self, storage: GenericStorage) -> None:
        group = storage.root.create_group("all")
        for kind, value in VALUES:
            group[kind] = value
        storage = self._roundtrip(storage)
        try:
            assert list(storage.root["all"]) == [kind for kind, _ in VALUES]
            loaded = storage.root.load("all")
            for kind, value in VALUES:
                assert_same(loaded[kind], value)
        finally:
            storage.close()

    def test_stored_array_is_a_copy(self, storage: GenericStorage) -> None:
        for name, size in (("small", 3), ("large", 10_000)):
            array = np.zeros(size)
            storage.root[name] = array
            array[0] = 1
            assert storage.root[name][0] == 0
            storage.root[name][0] = 2
            assert storage.root[name][0] == 0

    # -- groups and paths ---------------------------------------------------------------
    def test_paths(self, storage: GenericStorage) -> None:
        root = storage.root
        root["a/b/c"] = 1
        assert root["a"]["b"]["c"] == 1
        assert root["a/b"]["c"] == 1
        assert root.name == "/"
        assert root["a/b"].name == "/a/b"
        assert "a/b/c" in root and "a/x" not in root and "a/b/c/d" not in root
        assert isinstance(root["a"], StorageGroup)

    def test_dict_makes_a_group(self, storage: GenericStorage) -> None:
        storage.root["params"] = {"dt": 0.1, "inner": {"n": 3}}
        group = storage.root["params"]
        assert isinstance(group, StorageGroup)
        assert group["inner/n"] == 3
        assert storage.root.load("params") == {"dt": 0.1, "inner": {"n": 3}}

    def test_five_deep(self, storage: GenericStorage) -> None:
        storage.root["a/b/c/d/e"] = {"leaf": np.arange(5), "big": np.arange(5000)}
        storage.root["a/b/c/d/e/f"] = "deep"
        storage = self._roundtrip(storage)
        try:
            group = storage.root["a"]["b"]["c"]["d"]["e"]
            assert group.name == "/a/b/c/d/e"
            assert group["f"] == "deep"
            np.testing.assert_array_equal(group["big"], np.arange(5000))
            assert list(group) == ["leaf", "big", "f"]
        finally:
            storage.close()

    def test_create_require_delete(self, storage: GenericStorage) -> None:
        root = storage.root
        group = root.create_group("g")
        with pytest.raises(GroupExistsError):
            root.create_group("g")
        with pytest.raises(ValueError, match="g"):
            root.create_group("g")
        assert root.require_group("g") == group
        root["leaf"] = 1
        with pytest.raises(TypeError, match="leaf"):
            root.require_group("leaf")
        with pytest.raises(TypeError):
            root.require_group("leaf/below")
        assert root.require_group("new/deeper").name == "/new/deeper"
        del root["g"]
        assert "g" not in root
        with pytest.raises(KeyError, match="g"):
            del root["g"]
        with pytest.raises(KeyError, match="missing"):
            root["missing"]
        with pytest.raises(KeyError):
            root["leaf/x"]
        assert root.get("missing") is None
        assert root.get("missing", 5) == 5

    def test_insertion_order_and_len(self, storage: GenericStorage) -> None:
        root = storage.root
        names = ["z", "a", "m", "big", "b"]
        for name in names:
            root[name] = np.arange(5000) if name == "big" else name
        root["a"] = "again"  # overwriting keeps the place
        storage = self._roundtrip(storage)
        try:
            assert list(storage.root) == names
            assert len(storage.root) == 5
        finally:
            storage.close()

    def test_overwrite_changes_kind(self, storage: GenericStorage) -> None:
        root = storage.root
        root["x"] = np.arange(10_000)
        root["x"] = 1
        root["y"] = {"a": np.arange(10_000)}
        root["y"] = "value"
        root["z"] = 1
        root["z"] = {"q": np.arange(10_000.0)}
        storage = self._roundtrip(storage)
        try:
            assert storage.root["x"] == 1
            assert storage.root["y"] == "value"
            np.testing.assert_array_equal(storage.root["z/q"], np.arange(10_000.0))
        finally:
            storage.close()

    def test_attrs(self, storage: GenericStorage) -> None:
        group = storage.root.require_group("g")
        group.attrs["units"] = "nm"
        group.attrs["scale"] = (1, 2.5)
        storage.root.attrs["run"] = 7
        storage = self._roundtrip(storage)
        try:
            group = storage.root["g"]
            assert dict(group.attrs) == {"units": "nm", "scale": (1, 2.5)}
            assert storage.root.attrs["run"] == 7
            del group.attrs["units"]
            assert "units" not in group.attrs
            with pytest.raises(KeyError):
                group.attrs["units"]
        finally:
            storage.close()

    # -- objects ------------------------------------------------------------------------
    def test_objects(self, storage: GenericStorage) -> None:
        root = storage.root
        root["particle"] = Particle("p", np.arange(3.0), 1.5)
        root["counter"] = Counter(3)
        root["model"] = Model(np.arange(6000.0), "m")
        root["many"] = [Particle("q", np.zeros(2)), Counter(1), Model(np.ones(2), "x")]
        storage = self._roundtrip(storage)
        try:
            root = storage.root
            assert isinstance(root["particle"], StorageGroup)
            assert root["particle/charge"] == 1.5  # fields browse as keys
            particle = root.load("particle")
            assert isinstance(particle, Particle)
            assert particle.name == "p" and particle.charge == 1.5
            np.testing.assert_array_equal(particle.position, np.arange(3.0))
            counter = root.load("counter")
            assert isinstance(counter, Counter) and counter.count == 3
            assert counter.cache == "rebuilt"
            model = root.load("model")
            assert isinstance(model, Model) and model.label == "m"
            np.testing.assert_array_equal(model.weights, np.arange(6000.0))
            many = root["many"]
            assert [type(item) for item in many] == [Particle, Counter, Model]
        finally:
            storage.close()

    def test_class_gone_loads_as_dict(self, storage: GenericStorage) -> None:
        module = types.ModuleType("simrecorder_vanishing_module")
        cls = dataclasses.make_dataclass("Gone", [("x", int), ("y", list)])
        cls.__module__ = module.__name__
        module.Gone = cls  # type: ignore[attr-defined]
        sys.modules[module.__name__] = module
        try:
            storage.root["obj"] = cls(1, [2, 3])
            storage.root["inside"] = [cls(4, [])]
        finally:
            del sys.modules[module.__name__]
        storage = self._roundtrip(storage)
        try:
            with pytest.warns(ClassNotFoundWarning, match="Gone"):
                assert storage.root.load("obj") == {"x": 1, "y": [2, 3]}
            with pytest.warns(UserWarning, match="simrecorder_vanishing_module.Gone"):
                assert storage.root["inside"] == [{"x": 4, "y": []}]
        finally:
            storage.close()

    # -- partial update -----------------------------------------------------------------
    def test_partial_update(self, storage: GenericStorage) -> None:
        storage.root["keep"] = {"a": np.arange(10_000), "b": "text"}
        storage.root["change"] = 1
        storage = self._roundtrip(storage)
        storage.root["change"] = 2
        storage = self._roundtrip(storage)
        try:
            assert storage.root["change"] == 2
            assert storage.root["keep/b"] == "text"
            np.testing.assert_array_equal(storage.root["keep/a"], np.arange(10_000))
        finally:
            storage.close()

    # -- bad input ----------------------------------------------------------------------
    def test_bad_input(self, storage: GenericStorage) -> None:
        root = storage.root
        with pytest.raises(TypeError, match="1"):
            root[1] = "x"  # type: ignore[index]
        with pytest.raises(TypeError, match="bad/key"):
            root["bad/key"] = object()
        with pytest.raises(TypeError, match="nested"):
            root["nested"] = {"x": [1, {2: 3}]}
        with pytest.raises(TypeError):
            root["objects"] = np.array([object()])
        with pytest.raises(ValueError):
            root["a//b"] = 1
        with pytest.raises(ValueError):
            root["@reserved"] = 1
        assert "bad" not in root or "key" not in root["bad"]

    def test_closed_or_read_only(self, storage: GenericStorage) -> None:
        storage.root["x"] = 1
        if not self.persistent:
            return
        storage = self.reopen(storage, "r")
        try:
            assert storage.root["x"] == 1
            with pytest.raises(ReadOnlyError):
                storage.root["x"] = 2
        finally:
            storage.close()
        with pytest.raises(StoreClosedError):
            storage.root["x"]

    def test_missing_group_after_delete(self, storage: GenericStorage) -> None:
        group = storage.root.require_group("g")
        del storage.root["g"]
        with pytest.raises(KeyNotFoundError):
            group["x"] = 1

    def test_no_warnings_on_plain_use(self, storage: GenericStorage) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            storage.root["x"] = {"a": [1, 2]}
            assert storage.root.load() == {"x": {"a": [1, 2]}}

    # -- dump/load: metadata, filter, versions ------------------------------------------
    def test_dump_metadata_filter(self, storage: GenericStorage) -> None:
        storage.root["old"] = 1
        data = {"keep": 1, "secret": 2, "inner": {"secret_too": 3, "big": np.zeros((100, 50))}}
        storage.dump(data, metadata={"who": "me", "n": (1, 2)}, data_filter_regex="secret")
        storage = self._roundtrip(storage)
        try:
            assert storage.metadata == {"who": "me", "n": (1, 2)}
            loaded = storage.load(version_policy="strict")
            assert list(loaded) == ["keep", "inner"] and list(loaded["inner"]) == ["big"]
            assert storage.load("inner/big", version_policy="ignore").shape == (100, 50)
            versions = storage.versions
            for name in ("python", "numpy", "simrecorder", "git", "format"):
                assert name in versions
        finally:
            storage.close()

    def test_dump_objects_and_values(self, storage: GenericStorage) -> None:
        storage.dump(Particle("whole", np.arange(3.0)))
        assert isinstance(storage.load(), Particle)
        assert storage.root["name"] == "whole"
        storage.dump([1, (2, "x")])
        assert storage.load() == [1, (2, "x")]
        versions = storage.versions
        assert Particle.__module__.split(".")[0] in versions or "simrecorder" in versions

    def test_version_policies(self, storage: GenericStorage) -> None:
        storage.dump({"a": 1})
        storage._tree.index(())["@versions"]["numpy"] = "0.0.1"
        storage._tree.touch(())
        storage = self._roundtrip(storage)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert storage.load(version_policy="ignore") == {"a": 1}
            with pytest.warns(UserWarning, match=r"numpy.*0\.0\.1.*" + np.__version__):
                assert storage.load() == {"a": 1}
            with pytest.raises(EnvironmentMismatch, match="numpy") as caught:
                storage.load(version_policy="strict")
            assert ("numpy", "0.0.1", np.__version__) in caught.value.differences
            with pytest.raises(ValueError, match="version_policy"):
                storage.load(version_policy="sometimes")
        finally:
            storage.close()
