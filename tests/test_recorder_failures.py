"""Failures and bad input found in review: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from simrecorder import (
    HDF5DataStore,
    InMemoryDataStore,
    KeyConflictError,
    Recorder,
    SchemaError,
    StoreWriteError,
)
from simrecorder._schema import infer_spec


@pytest.fixture
def pair(tmp_path):
    """A healthy memory store and an HDF5 store the test can pull away (real failure)."""
    mem, h5 = InMemoryDataStore(), HDF5DataStore(tmp_path / "gone.h5")
    yield mem, h5
    mem.close()
    h5.close()


def test_a_failing_store_does_not_hold_back_the_others(pair):
    mem, h5 = pair
    rec = Recorder(mem, h5, max_records=4, max_seconds=None)
    rec.record("x", 1.0)
    h5.close()
    with pytest.raises(StoreWriteError):
        rec.flush()
    rec.record("x", 2.0)
    rec.record("y", np.arange(3))
    with pytest.raises(StoreWriteError):
        rec.flush()
    np.testing.assert_array_equal(rec.get_all("x", datastore=mem), [1.0, 2.0])
    np.testing.assert_array_equal(rec.get_all("y", datastore=mem), [np.arange(3)])
    with pytest.raises(StoreWriteError):
        rec.close()  # the recorder stays open so close() can be retried
    assert not rec.closed
    h5.open()
    rec.close()
    with HDF5DataStore(h5.path, mode="r") as again:
        np.testing.assert_array_equal(np.asarray(again.get_all("x")), [1.0, 2.0])
        np.testing.assert_array_equal(np.asarray(again.get_all("y")), [np.arange(3)])


def test_full_array_buffers_survive_a_failed_flush(pair):
    mem, h5 = pair
    rec = Recorder(mem, h5, max_records=2, max_seconds=None)
    h5.close()
    for i in range(6):  # every second record fills the block; each write to h5 fails
        try:
            rec.record("a", np.full(3, i))
        except StoreWriteError:
            pass
    np.testing.assert_array_equal(rec.get_all("a", datastore=mem)[:, 0], np.arange(6))
    h5.open()
    rec.flush()
    np.testing.assert_array_equal(np.asarray(rec.get_all("a", datastore=h5))[:, 0], np.arange(6))
    rec.close()


def test_kept_large_samples_are_snapshots(pair):
    _, h5 = pair
    rec = Recorder(h5, max_bytes=64, max_seconds=None)  # 100 floats bypass the buffer
    h5.close()
    big = np.zeros(100)
    with pytest.raises(StoreWriteError):
        rec.record("big", big)
    big[:] = 99.0  # the simulation goes on changing its state in place
    h5.open()
    rec.flush()
    np.testing.assert_array_equal(np.asarray(rec.get_all("big"))[0], np.zeros(100))
    rec.close()


@pytest.mark.parametrize(
    ("first", "bad"),
    [
        (np.int8(1), np.int64(300)),
        (np.int64(1), np.uint64(2**64 - 1)),
        (np.zeros(2, dtype=np.uint8), np.array([7, 256], dtype=np.uint16)),
        (np.int16(1), -40000),
    ],
    ids=["int64-into-int8", "uint64-into-int64", "uint16-array-into-uint8", "py-int-into-int16"],
)
def test_out_of_range_integers_are_refused_at_record(pair, first, bad):
    mem, _ = pair
    rec = Recorder(mem, max_seconds=None)
    rec.record("i", first)
    rec.record("other", 1.0)
    with pytest.raises(SchemaError, match="out of the range"):
        rec.record("i", bad)
    rec.record("i", first)
    rec.flush()
    assert len(rec.get_all("i")) == 2 and len(rec.get_all("other")) == 1


def test_in_range_wider_integers_are_accepted(pair):
    mem, _ = pair
    rec = Recorder(mem)
    rec.record("i", np.int8(1))
    rec.record("i", np.int64(100))
    rec.record("a", np.zeros(2, dtype=np.uint8))
    rec.record("a", np.array([7, 255], dtype=np.uint16))
    np.testing.assert_array_equal(rec.get_all("i"), [1, 100])
    np.testing.assert_array_equal(rec.get_all("a"), [[0, 0], [7, 255]])


def test_unpaired_surrogates_are_refused_in_str_series(pair):
    mem, h5 = pair
    rec = Recorder(mem, h5)
    rec.record("s", "ok")
    with pytest.raises(SchemaError, match="surrogate"):
        rec.record("s", "bad\ud800")
    rec.record("o", ["bad\ud800"])  # fine inside an object series
    rec.flush()
    assert rec.get_all("s", datastore=h5) == ["ok"]
    assert rec.get_all("o", datastore=h5) == [["bad\ud800"]]
    rec.close()


def test_conflicts_with_buffered_series_are_caught_on_every_path(pair):
    mem, h5 = pair
    rec = Recorder(mem, h5, max_seconds=None)
    rec.record("a", 1.0)  # still buffered: no store knows it yet
    with pytest.raises(KeyConflictError):
        rec.record("a/b", 2.0, datastore=h5)
    with pytest.raises(KeyConflictError):
        rec.set("a/c", 5)
    with pytest.raises(KeyConflictError):
        rec.set("a", 5)
    rec.record("g/x", 1.0)
    with pytest.raises(KeyConflictError):
        rec.record("g", 1.0, datastore=0)
    rec.flush()
    np.testing.assert_array_equal(np.asarray(rec.get_all("a", datastore=h5)), [1.0])
    rec.close()


def test_a_rejected_first_sample_does_not_fix_the_series(pair):
    mem, h5 = pair
    rec = Recorder(mem, h5)
    with pytest.raises(SchemaError, match="surrogate"):
        rec.record("s", "a\ud800b")
    rec.record("s", b"a\x00b")  # as the error message suggests
    with pytest.raises(SchemaError):
        rec.record("o", object())
    rec.record("o", 1.5)
    assert infer_spec(1.5).kind == "dense"
    with pytest.raises(SchemaError):
        rec.record("p/q", object())
    rec.set("p", 1)  # 'p' did not become a group
    assert rec.get_all("s", datastore=h5) == [b"a\x00b"]
    np.testing.assert_array_equal(np.asarray(rec.get_all("o", datastore=h5)), [1.5])
    rec.close()


def test_hdf5_failed_block_leaves_no_rows(tmp_path):
    store = HDF5DataStore(tmp_path / "rb.h5")
    spec = infer_spec(np.zeros(3))
    store.append_block("x", spec, np.zeros((2, 3)))
    with pytest.raises((TypeError, ValueError)):
        store.append_block("x", spec, np.zeros((2, 4)))  # a block h5py cannot write
    assert store.get_all("x").shape == (2, 3)
    store.close()


# -- numbers out of the series' dtype range on the fast path (issue 13, item 2) ------------
def test_fast_path_out_of_range_floats_are_left_out_where_the_part_is_packed():
    from simrecorder._buffer import SCALAR_PART
    from simrecorder.errors import ValueOutOfRangeError

    store = InMemoryDataStore()
    rec = Recorder(store, max_seconds=None)
    rec.record("f", np.float32(0.0))  # a float32 series; Python floats take the fast path
    rec.record("other", 1.0)
    raised_at = []
    for i in range(1, 3 * SCALAR_PART):
        value = 1e300 if i in (100, 101, SCALAR_PART + 5) else float(i)
        try:
            rec.record("f", value)
        except ValueOutOfRangeError as exc:
            raised_at.append((i, exc.values))
    rec.flush()
    # raised by the record() that filled the part holding the bad samples (its own
    # sample is kept), naming what was left out
    assert raised_at == [(SCALAR_PART - 1, (1e300, 1e300)), (2 * SCALAR_PART - 1, (1e300,))]
    want = np.array(
        [0.0] + [i for i in range(1, 3 * SCALAR_PART) if i not in (100, 101, SCALAR_PART + 5)]
    )
    got = rec.get_all("f")
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_array_equal(got, want.astype(np.float32))  # the rest, in order
    np.testing.assert_array_equal(rec.get_all("other"), [1.0])
    rec.record("f", float("inf"))  # inf and nan themselves are fine
    rec.record("f", float("nan"))
    rec.flush()
    assert np.isinf(rec.get_all("f")[-2]) and np.isnan(rec.get_all("f")[-1])
    rec.close()


def test_close_reports_out_of_range_floats_and_closes(tmp_path):
    from simrecorder.errors import ValueOutOfRangeError

    rec = Recorder(HDF5DataStore(tmp_path / "c.h5"), max_seconds=None)
    rec.record("f", np.float16(1.0))
    rec.record("f", 2.0)
    rec.record("f", 1e6)  # beyond float16's 65504
    rec.record("f", 3.0)
    with pytest.raises(ValueOutOfRangeError, match=r"'f'.*float16.*1000000\.0"):
        rec.close()
    assert rec.closed
    with HDF5DataStore(tmp_path / "c.h5", mode="r") as again:
        np.testing.assert_array_equal(np.asarray(again.get_all("f")), np.float16([1, 2, 3]))


def test_python_ints_fit_unsigned_and_narrow_series_when_in_range(pair):
    mem, _ = pair
    rec = Recorder(mem, max_seconds=None)
    rec.record("u", np.uint8(1))
    rec.record("u", 255)  # was refused: a Python int is int64, which is not same_kind
    rec.record("u64", np.uint64(1))
    rec.record("u64", 2**64 - 1)
    rec.record("h", np.float16(1))
    rec.record("h", 65504)
    rec.flush()
    np.testing.assert_array_equal(rec.get_all("u"), np.uint8([1, 255]))
    np.testing.assert_array_equal(rec.get_all("u64"), np.uint64([1, 2**64 - 1]))
    np.testing.assert_array_equal(rec.get_all("h"), np.float16([1, 65504]))


def test_out_of_range_floats_of_several_keys_are_each_reported():
    from simrecorder.errors import ValueOutOfRangeError

    store = InMemoryDataStore()
    rec = Recorder(store, max_seconds=None)
    for key in ("a", "b", "c"):
        rec.record(key, np.float32(0.0))
        rec.record(key, -1e300)
    with pytest.raises(ValueOutOfRangeError) as first:
        rec.flush()  # one key per call, naming the others
    assert first.value.key == "a" and first.value.values == (-1e300,)
    assert "'b', 'c' have some too" in str(first.value)
    with pytest.raises(ValueOutOfRangeError) as second:
        rec.flush()
    assert second.value.key == "b"
    with pytest.raises(ValueOutOfRangeError) as last:
        rec.close()  # the recorder closes; nothing is left unreported
    assert last.value.key == "c" and rec.closed
    store.open()
    for key in ("a", "b", "c"):
        np.testing.assert_array_equal(store.get_all(key), np.float32([0.0]))
