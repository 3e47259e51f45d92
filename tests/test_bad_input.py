"""The bad-input battery: every bad input is a specific error raised by record/set, and
the store stays valid with everything recorded before intact. Runs on every backend."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

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
