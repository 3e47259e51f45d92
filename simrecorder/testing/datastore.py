"""The contract every :class:`~simrecorder.datastores.DataStore` must meet.

Each backend's test module subclasses :class:`DataStoreTests`, says how to make and
reopen a store, optionally how to read a series with the backend's own library (the
back door that proves users can open the data without simrecorder), and adds only what
is special to that backend::

    class TestMyStore(DataStoreTests):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "data")

        def reopen_store(self, store):
            store.close()
            return MyStore(store.path)

Requires pytest (``pip install 'simrecorder[test]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simrecorder import (
    InvalidKeyError,
    KeyConflictError,
    KeyNotFoundError,
    Recorder,
    SchemaError,
    SeriesView,
    StoreClosedError,
    open_datastore,
)
from simrecorder.datastores import DataStore
from simrecorder.errors import (
    InvalidModeError,
    ReadOnlyError,
    SeriesIndexError,
    StoreExistsError,
    StoreNotFoundError,
    ValueOutOfRangeError,
)

__all__ = ["DataStoreTests"]

DENSE_DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


def _assert_object_equal(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for k in want:
            _assert_object_equal(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_object_equal(g, w)
    else:
        assert got == want and type(got) is type(want)


class DataStoreTests:
    """Contract tests; subclass and implement :meth:`make_store` and :meth:`reopen_store`."""

    # -- what a subclass provides -------------------------------------------------------
    def make_store(self, tmp_path: Path) -> DataStore:
        """Return a new, empty, open store that keeps its data under ``tmp_path``."""
        raise NotImplementedError

    def reopen_store(self, store: DataStore) -> DataStore:
        """Close ``store`` and return a store on the same data (may be the same object)."""
        store.close()
        store.open()
        return store

    def open_again(self, store: DataStore, mode: str | None) -> DataStore:
        """Close ``store`` and return a new store object on the same data, opened with
        ``mode`` (for a non-persistent store: a new, empty one)."""
        store.close()
        return open_datastore(store.url, mode=mode)

    def read_native(self, store: DataStore, key: str) -> Any:
        """Read the series ``key`` with the backend's own library (after ``store`` is
        closed); return None when the backend has no native reader to check against."""
        return None

    # -- fixtures -----------------------------------------------------------------------
    @pytest.fixture
    def store(self, tmp_path: Path):
        store = self.make_store(tmp_path)
        yield store
        store.close()

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def append_many(store: DataStore, key: str, samples: list[Any], block: int = 7) -> None:
        """Record ``samples`` through a recorder with small blocks (several appends)."""
        rec = Recorder(store, max_records=block, max_seconds=None)
        for sample in samples:
            rec.record(key, sample)
        rec.flush()

    # -- round trips --------------------------------------------------------------------
    @pytest.mark.parametrize("dtype", DENSE_DTYPES)
    def test_dense_scalars_round_trip(self, store: DataStore, dtype: str) -> None:
        rng = np.random.default_rng(0)
        data = (rng.random(50) * 100).astype(dtype)
        self.append_many(store, "x", list(data))
        got = np.asarray(store.get_all("x"))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, data)

    def test_dense_arrays_round_trip(self, store: DataStore) -> None:
        data = np.random.default_rng(1).random((23, 4, 3)).astype("float32")
        self.append_many(store, "grid/u", list(data))
        got = store.get_all("grid/u")
        assert len(got) == 23 and got.shape == (23, 4, 3) and got.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(got), data)

    def test_python_scalars_get_numpy_dtypes(self, store: DataStore) -> None:
        self.append_many(store, "f", [1.5, 2, True])
        self.append_many(store, "i", [1, 2, 3])
        self.append_many(store, "c", [1 + 2j])
        assert np.asarray(store.get_all("f")).dtype == np.float64
        assert np.asarray(store.get_all("i")).dtype == np.int64
        assert np.asarray(store.get_all("c")).dtype == np.complex128
        np.testing.assert_array_equal(np.asarray(store.get_all("f")), [1.5, 2.0, 1.0])

    def test_nan_and_inf_round_trip(self, store: DataStore) -> None:
        self.append_many(store, "x", [np.nan, np.inf, -np.inf, 0.0, -0.0])
        got = np.asarray(store.get_all("x"))
        assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
        assert np.signbit(got[4])

    def test_str_series_round_trip(self, store: DataStore) -> None:
        samples = ["alpha", "", "ünïcødé ✓", "x" * 10_000, "tab\tnew\nline"]
        self.append_many(store, "log/msg", samples, block=2)
        assert store.get_all("log/msg") == samples

    def test_str_with_nul(self, store: DataStore) -> None:
        store.set("v", "a\x00b")
        assert store.get("v") == "a\x00b"
        if store.supports_nul_in_str:
            self.append_many(store, "s", ["a\x00b", "c"])
            assert store.get_all("s") == ["a\x00b", "c"]
            return
        self.append_many(store, "s", ["ok"])
        with pytest.raises(SchemaError, match="NUL"):
            store.append("s", "a\x00b")
        rec = Recorder(store)
        with pytest.raises(SchemaError, match="NUL"):
            rec.record("s", "a\x00b")
        rec.record("t", ["a\x00b"])  # inside an object series it is fine
        assert rec.get_all("s") == ["ok"] and rec.get_all("t") == [["a\x00b"]]

    def test_bytes_series_round_trip(self, store: DataStore) -> None:
        samples = [b"\x00\x01", b"", bytes(range(256)), b"abc"]
        self.append_many(store, "raw", samples, block=3)
        assert store.get_all("raw") == samples

    def test_object_series_round_trip(self, store: DataStore) -> None:
        rng = np.random.default_rng(2)
        samples = [
            [rng.random((3, 1)), rng.random((4, 1)), np.array([])],
            {"spikes": np.array([1, 5, 7], dtype=np.int32), "t": 0.1, "tag": "x"},
            None,
            (1, 2**80, "three", b"four"),
            [np.arange(6).reshape(2, 3), [np.float32(1.5), {"nested": [True, False]}]],
        ]
        self.append_many(store, "events", samples, block=2)
        got = store.get_all("events")
        assert isinstance(got, list) and len(got) == len(samples)
        for g, w in zip(got, samples, strict=True):
            _assert_object_equal(g, w)

    def test_samples_keep_order_across_blocks(self, store: DataStore) -> None:
        self.append_many(store, "n", list(range(1000)), block=33)
        np.testing.assert_array_equal(np.asarray(store.get_all("n")), np.arange(1000))

    # -- hierarchy and listing ----------------------------------------------------------
    def test_hierarchy(self, store: DataStore) -> None:
        self.append_many(store, "a/b/c", [1.0])
        self.append_many(store, "a/d", [2.0])
        store.set("a/e", 3)
        self.append_many(store, "ab", [4.0])
        assert store.keys() == ["a/b/c", "a/d", "a/e", "ab"]
        assert store.keys("a") == ["a/b/c", "a/d", "a/e"]
        assert store.keys("a/b") == ["a/b/c"]
        assert store.node_type("a") == "group"
        assert store.node_type("a/b") == "group"
        assert store.node_type("a/b/c") == "series"
        assert store.node_type("a/e") == "value"
        assert store.node_type("nope") is None
        assert "a/d" in store and "a/e" in store and "zz" not in store

    def test_many_keys(self, store: DataStore) -> None:
        rec = Recorder(store, max_seconds=None)
        for i in range(300):
            rec.record(f"group{i % 7}/series{i}", float(i))
        rec.flush()
        assert len(store.keys()) == 300
        assert np.asarray(store.get_all("group3/series10"))[0] == 10.0

    # -- single values ------------------------------------------------------------------
    @pytest.mark.parametrize(
        "value",
        [
            3.5,
            7,
            np.arange(12.0).reshape(3, 4),
            "text ✓",
            b"\x00bytes",
            {"lr": 0.1, "layers": [3, 4]},
            [1, "two", None],
        ],
        ids=["float", "int", "array", "str", "bytes", "dict", "list"],
    )
    def test_set_twice_then_get(self, store: DataStore, value: Any) -> None:
        store.set("params/v", "first")
        store.set("params/v", value)
        got = store.get("params/v")
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value

    def test_get_missing_is_none(self, store: DataStore) -> None:
        assert store.get("missing/key") is None

    def test_get_all_missing_raises_key_error(self, store: DataStore) -> None:
        with pytest.raises(KeyNotFoundError, match="missing") as info:
            store.get_all("missing")
        assert isinstance(info.value, KeyError)

    # -- persistence --------------------------------------------------------------------
    def test_data_survives_reopen(self, store: DataStore) -> None:
        arrays = np.random.default_rng(3).random((10, 10, 5, 2, 6))
        self.append_many(store, "train/what", list(arrays))
        self.append_many(store, "log", ["a", "b"])
        store.set("params/dt", 0.1)
        store = self.reopen_store(store)
        try:
            np.testing.assert_array_equal(np.asarray(store.get_all("train/what")), arrays)
            assert store.get_all("log") == ["a", "b"]
            assert store.get("params/dt") == 0.1
            # and a reopened store appends
            self.append_many(store, "train/what", [arrays[0]])
            assert len(store.get_all("train/what")) == 11
        finally:
            store.close()

    def test_series_spec_after_reopen(self, store: DataStore) -> None:
        self.append_many(store, "v", [np.zeros(3, dtype=np.int16)])
        store = self.reopen_store(store)
        try:
            spec = store.series_spec("v")
            assert spec is not None
            assert spec.kind == "dense" and spec.dtype == np.int16 and spec.shape == (3,)
            assert store.series_spec("nope") is None
        finally:
            store.close()

    # -- open modes ---------------------------------------------------------------------
    @staticmethod
    def _need_persistence(store: DataStore) -> None:
        if not store.persistent:
            pytest.skip("the store's data does not outlive it: no earlier run to open")

    @staticmethod
    def _files_under(path: str) -> dict[str, tuple[int, int]]:
        """Every file and directory under ``path``: (size, mtime in ns)."""
        found = {}
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                full = os.path.join(root, name)
                info = os.lstat(full)
                found[os.path.relpath(full, path)] = (info.st_size, info.st_mtime_ns)
        return found

    def _write_run(self, store: DataStore) -> None:
        self.append_many(store, "x", [1.0, 2.0, 3.0])
        store.set("params/dt", 0.1)
        store.update_attrs({"run": "first"})

    def test_mode_r_reads_and_refuses_writes(self, store: DataStore) -> None:
        self._write_run(store)
        again = self.open_again(store, "r")
        try:
            assert again.read_only
            if store.persistent:
                np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0, 2.0, 3.0])
                assert again.get("params/dt") == 0.1 and again.attrs["run"] == "first"
            for write in (
                lambda: again.append("x", 4.0),
                lambda: again.append("new", 4.0),
                lambda: again.set("params/dt", 0.2),
                lambda: again.update_attrs({"run": "second"}),
            ):
                with pytest.raises(ReadOnlyError) as info:
                    write()
                assert type(info.value) is not StoreExistsError  # 'r' asked for reading
            if store.persistent:
                assert len(again.get_all("x")) == 3
        finally:
            again.close()

    def test_mode_r_changes_nothing_on_disk(self, store: DataStore) -> None:
        self._write_run(store)
        store.close()
        if store.local_path is None:
            pytest.skip("the store keeps no files of its own (server or memory)")
        parent = os.path.dirname(store.local_path)
        before = self._files_under(parent)
        again = self.open_again(store, "r")
        try:
            for key in again.keys():
                if again.node_type(key) == "series":
                    np.asarray(again.get_all(key))
                else:
                    again.get(key)
            assert again.attrs["run"] == "first"
        finally:
            again.close()
        assert self._files_under(parent) == before
        missing = os.path.join(parent, "missing")
        with pytest.raises(StoreNotFoundError):
            open_datastore(store.url.replace(parent, missing, 1), mode="r")
        assert not os.path.exists(missing)
        assert self._files_under(parent) == before

    def test_default_mode_reads_an_existing_store_and_refuses_writes(
        self, store: DataStore
    ) -> None:
        self._need_persistence(store)
        self._write_run(store)
        again = self.open_again(store, None)
        try:
            np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0, 2.0, 3.0])
            for write in (
                lambda: again.append("x", 4.0),
                lambda: again.set("params/dt", 0.2),
                lambda: again.update_attrs({"run": "second"}),
            ):
                with pytest.raises(StoreExistsError, match="mode='a'"):
                    write()
            assert len(again.get_all("x")) == 3 and again.attrs["run"] == "first"
        finally:
            again.close()

    def test_mode_a_resumes_and_records_each_resume(self, store: DataStore) -> None:
        self._need_persistence(store)
        self._write_run(store)
        assert "simrecorder_resumes" not in store.attrs
        again = self.open_again(store, "a")
        try:
            assert not again.read_only
            self.append_many(again, "x", [4.0])
            np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0, 2.0, 3.0, 4.0])
            resumes = again.attrs["simrecorder_resumes"]
            assert len(resumes) == 1 and "created" in resumes[0]
            assert again.attrs["run"] == "first"  # the first run's record stays
        finally:
            again.close()
        third = self.open_again(again, "a")
        try:
            assert len(third.attrs["simrecorder_resumes"]) == 2
            assert len(third.get_all("x")) == 4
        finally:
            third.close()

    def test_mode_w_replaces(self, store: DataStore) -> None:
        self._need_persistence(store)
        self._write_run(store)
        again = self.open_again(store, "w")
        try:
            assert again.keys() == [] and "run" not in again.attrs
            self.append_many(again, "x", [9.0])
            np.testing.assert_array_equal(np.asarray(again.get_all("x")), [9.0])
        finally:
            again.close()

    @pytest.mark.parametrize("mode", ["w-", "x"])
    def test_mode_w_dash_refuses_an_existing_store(self, store: DataStore, mode: str) -> None:
        self._need_persistence(store)
        self._write_run(store)
        with pytest.raises(StoreExistsError):
            self.open_again(store, mode)
        again = self.open_again(store, "r")  # and left it as it was
        try:
            np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0, 2.0, 3.0])
        finally:
            again.close()

    def test_invalid_mode_is_refused(self, store: DataStore) -> None:
        with pytest.raises(InvalidModeError, match="'rw'"):
            self.open_again(store, "rw")

    def test_native_back_door(self, store: DataStore) -> None:
        data = np.arange(20.0).reshape(10, 2)
        self.append_many(store, "deep/path/x", list(data))
        store.close()
        native = self.read_native(store, "deep/path/x")
        if native is None:
            pytest.skip("this store has no native reader")
        np.testing.assert_array_equal(np.asarray(native), data)

    # -- errors -------------------------------------------------------------------------
    def test_wrong_sample_raises_and_keeps_data(self, store: DataStore) -> None:
        store.append("x", np.zeros(3))
        with pytest.raises(SchemaError, match="'x'"):
            store.append("x", np.zeros(4))
        with pytest.raises(SchemaError, match="'x'"):
            store.append("x", "text")
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.zeros((1, 3)))

    def test_numbers_out_of_the_dtype_range_are_refused(self, store: DataStore) -> None:
        store.append("f", np.float32(1.0))
        store.append("u", np.uint8(1))
        store.append("i", 1)
        for key, bad in (
            ("f", 1e300),
            ("f", np.float64(-1e300)),
            ("u", 300),
            ("u", -1),
            ("u", np.uint16(256)),
            ("i", 2**70),
        ):
            with pytest.raises(ValueOutOfRangeError, match=f"'{key}'") as info:
                store.append(key, bad)
            assert isinstance(info.value, ValueError) and info.value.key == key
        store.append("u", 255)  # a Python int in range fits an unsigned series
        store.append("f", 3e38)  # a Python float in range fits a float32 series
        np.testing.assert_array_equal(np.asarray(store.get_all("u")), [1, 255])
        np.testing.assert_array_equal(
            np.asarray(store.get_all("f")), np.array([1, 3e38], dtype=np.float32)
        )
        np.testing.assert_array_equal(np.asarray(store.get_all("i")), [1])

    def test_view_index_out_of_range_is_an_index_error(self, store: DataStore) -> None:
        self.append_many(store, "v", list(np.arange(20.0).reshape(10, 2)))
        view = store.get_all("v")
        for index in (10, -11, (0, 2), (slice(None), -3), [3, 10], np.int64(99)):
            with pytest.raises(IndexError):
                np.asarray(view)[index]  # numpy's behaviour ...
            with pytest.raises(IndexError) as info:
                view[index]  # ... is the view's
            if isinstance(view, SeriesView):
                assert isinstance(info.value, SeriesIndexError), index

    def test_key_conflicts(self, store: DataStore) -> None:
        store.append("a", 1.0)
        with pytest.raises(KeyConflictError):
            store.append("a/b", 1.0)
        store.set("v", 1)
        with pytest.raises(KeyConflictError):
            store.append("v", 1.0)
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), [1.0])

    @pytest.mark.parametrize("key", ["", "a//b", "../x", "a/./b", "/abs", "a/", "nul\x00", 5])
    def test_invalid_keys(self, store: DataStore, key: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store.append(key, 1.0)
        with pytest.raises(InvalidKeyError):
            store.set(key, 1.0)

    def test_closed_store_raises(self, store: DataStore) -> None:
        store.append("x", 1.0)
        store.close()
        for call in (
            lambda: store.append("x", 2.0),
            lambda: store.get_all("x"),
            lambda: store.set("y", 1),
            lambda: store.keys(),
            lambda: store.flush(),
        ):
            with pytest.raises(StoreClosedError, match="closed"):
                call()
        store.close()  # closing twice is fine

    # -- larger values ------------------------------------------------------------------
    def test_large_samples(self, store: DataStore) -> None:
        big = np.random.default_rng(4).random((1024, 1024))  # 8 MiB
        rec = Recorder(store, max_seconds=None)
        rec.record("big", big)
        rec.record("big", big * 2)
        rec.flush()
        got = store.get_all("big")
        assert got.shape == (2, 1024, 1024)
        np.testing.assert_array_equal(np.asarray(got[1]), big * 2)

    # -- identity and metadata ----------------------------------------------------------
    def test_url_round_trip(self, store: DataStore) -> None:
        url = str(store)
        assert repr(store).startswith(type(store).__name__ + "(")
        assert url.startswith(store.protocol + "://") or "://" not in url
        if store.persistent:
            store.close()
            again = open_datastore(url)
            try:
                assert type(again) is type(store) and str(again) == url
            finally:
                again.close()

    def test_attrs(self, store: DataStore) -> None:
        store.update_attrs({"run": "r1", "seed": 42})
        attrs = store.attrs
        assert attrs["run"] == "r1" and attrs["seed"] == 42
        if store.persistent:
            for name in ("simrecorder_version", "hostname", "created", "numpy_version"):
                assert name in attrs

    def test_lazy_view(self, store: DataStore) -> None:
        data = np.arange(3000.0).reshape(1000, 3)
        self.append_many(store, "v", list(data), block=100)
        view = store.get_all("v")
        if not store.supports_lazy_views:
            assert isinstance(view, np.ndarray)
            return
        assert isinstance(view, SeriesView)
        assert len(view) == 1000 and view.shape == (1000, 3) and view.dtype == np.float64
        np.testing.assert_array_equal(view[10:20], data[10:20])
        np.testing.assert_array_equal(view[-1], data[-1])
        np.testing.assert_array_equal(np.asarray(view), data)
        np.testing.assert_array_equal(np.array([row for row in view]), data)

    # -- edge cases found in review -------------------------------------------------------
    def test_equal_length_variable_items(self, store: DataStore) -> None:
        self.append_many(store, "o", [[], [], [1], [2]], block=2)
        self.append_many(store, "b", [b"ab", b"cd", b"ef"], block=3)
        assert store.get_all("o") == [[], [], [1], [2]]
        assert store.get_all("b") == [b"ab", b"cd", b"ef"]

    def test_zero_size_samples(self, store: DataStore) -> None:
        self.append_many(store, "e", [np.zeros(0), np.zeros(0)])
        self.append_many(store, "m", [np.zeros((2, 0), dtype=np.int8)])
        assert np.asarray(store.get_all("e")).shape == (2, 0)
        assert np.asarray(store.get_all("m")).shape == (1, 2, 0)

    def test_set_over_a_series_or_group_is_refused(self, store: DataStore) -> None:
        self.append_many(store, "x", [1.0])
        self.append_many(store, "g/a", [1.0])
        for key in ("x", "g", "x/y"):
            with pytest.raises(KeyConflictError):
                store.set(key, 5)
        assert store.node_type("x") == "series" and store.node_type("g") == "group"
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0])

    @pytest.mark.parametrize(
        "value", [1, 2.5, True, 1 + 2j], ids=["int", "float", "bool", "complex"]
    )
    def test_python_scalars_keep_their_type(self, store: DataStore, value: Any) -> None:
        store.set("v", value)
        got = store.get("v")
        assert got == value and type(got) is type(value)

    def test_view_indexing_like_numpy(self, store: DataStore) -> None:
        data = np.arange(20.0).reshape(10, 2)
        self.append_many(store, "v", list(data))
        view = store.get_all("v")
        for index in (
            slice(None, None, -1),
            slice(8, 2, -2),
            [3, 1, 3],
            np.array([0, 9]),
            (slice(None), 1),
            -1,
            (slice(1, 4), slice(None, None, -1)),
        ):
            np.testing.assert_array_equal(view[index], data[index])

    # -- faults (issue 12): nothing lost, nothing duplicated ------------------------------
    # an interrupt may land in a gc callback, where Python can only print it
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    def test_keyboard_interrupts_lose_nothing(self, store: DataStore) -> None:
        """Ctrl-C at random moments (a SIGALRM handler raising KeyboardInterrupt): every
        sample whose ``record`` returned is stored once, in order; the interrupted
        call's sample may or may not be."""
        import random
        import signal

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        rng = random.Random(7)
        rec = Recorder(store, max_records=16, max_seconds=None)
        returned: list[float] = []
        attempted = 0
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            for _ in range(12):
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0005, 0.01))
                try:
                    for _ in range(20_000):  # bounded: an interrupt swallowed in C code
                        attempted += 1
                        value = float(attempted)
                        rec.record("a", value)
                        rec.record("c", np.full(32, value))
                        returned.append(value)
                        if attempted % 50 == 0:
                            rec.flush()
                except KeyboardInterrupt:
                    pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        rec.flush()
        for key in ("a", "c"):
            got = np.asarray(store.get_all(key))
            got = got if got.ndim == 1 else got[:, 0]
            assert np.all(np.diff(got) > 0), f"{key}: a sample is duplicated or out of order"
            assert set(returned) <= set(got.tolist()), f"{key}: a recorded sample was lost"
            assert len(got) <= len(returned) + 12

    def test_threads_lose_nothing(self, store: DataStore) -> None:
        """Several threads record into one recorder: every sample once, each thread's
        samples in its order."""
        import threading

        rec = Recorder(store, max_records=1000, max_seconds=0.01)
        threads = 8
        per_thread = 10_000

        def work(t: int) -> None:
            for i in range(per_thread):
                rec.record("shared", float(t * 1_000_000 + i))
                rec.record(f"own/t{t}", i)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rec.flush()
        shared = np.asarray(store.get_all("shared"))
        assert len(shared) == threads * per_thread
        for t in range(threads):
            mine = shared[(shared >= t * 1_000_000) & (shared < (t + 1) * 1_000_000)]
            np.testing.assert_array_equal(mine, t * 1_000_000 + np.arange(per_thread))
            np.testing.assert_array_equal(np.asarray(store.get_all(f"own/t{t}")),
                                          np.arange(per_thread))  # fmt: skip

    def test_dropped_recorder_is_flushed(self, store: DataStore) -> None:
        """A recorder that goes out of scope without close() loses nothing."""
        import gc

        def simulate() -> None:
            rec = Recorder(store, max_seconds=None)
            for i in range(1000):
                rec.record("a", float(i))
                rec.record("b", np.full(3, i))

        simulate()
        gc.collect()
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(1000.0))
        assert len(store.get_all("b")) == 1000

    def test_forked_child_leaves_the_parents_data_alone(self, store: DataStore) -> None:
        """A child forked with samples buffered exits normally (its exit hooks run);
        the parent's series stays exact, and the child's copy refuses to record."""
        import atexit
        import os

        from simrecorder.errors import ForkedRecorderError

        rec = Recorder(store, max_seconds=None)
        for i in range(100):
            rec.record("a", float(i))
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 0
            try:
                rec.record("a", -1.0)
                code = 3
            except ForkedRecorderError:
                pass
            except BaseException:  # noqa: BLE001
                code = 4
            try:
                atexit._run_exitfuncs()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for i in range(100, 200):
            rec.record("a", float(i))
        rec.flush()
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(200.0))

    # -- views act like arrays (issue 13) --------------------------------------------------
    def test_analysis_code_runs_on_what_get_all_returns(self, store: DataStore) -> None:
        """The same analysis snippet gives numpy's answers on every store."""
        data = np.random.default_rng(3).random((40, 3))
        self.append_many(store, "x", list(data))
        v = store.get_all("x")
        checks: dict[str, tuple[Any, Any]] = {
            "mean": (v.mean(), data.mean()),
            "times two": (v * 2, data * 2),
            "reflected": (1.0 - v, 1.0 - data),
            "np.mean axis": (np.mean(v, axis=0), data.mean(axis=0)),
            "view + view": (v + v, data + data),
            "ufunc": (np.sqrt(v), np.sqrt(data)),
            "max axis": (v.max(axis=1), data.max(axis=1)),
            "count": ((v > 0.5).sum(), (data > 0.5).sum()),
            "concatenate": (np.concatenate([v, v]), np.concatenate([data, data])),
            "astype": (v.astype(np.float32), data.astype(np.float32)),
            "transpose": (v.T, data.T),
            "slice sum": (v[::2].sum(axis=0), data[::2].sum(axis=0)),
            "std": (np.std(v), np.std(data)),
            "equal": (v == data, np.ones_like(data, dtype=bool)),
        }
        for name, (got, want) in checks.items():
            assert isinstance(got, (np.ndarray, np.generic)), name
            np.testing.assert_allclose(np.asanyarray(got), want, err_msg=name)
        assert len(v) == 40 and v.shape == (40, 3) and v.ndim == 2
