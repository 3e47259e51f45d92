"""Recorder: fan-out, datastore selection, flush policy, snapshots and errors."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from simrecorder import (
    HDF5DataStore,
    InMemoryDataStore,
    InvalidKeyError,
    KeyConflictError,
    KeyNotFoundError,
    Recorder,
    SchemaError,
    StoreClosedError,
    StoreWriteError,
)
from simrecorder.errors import InvalidArgumentError, ValueOutOfRangeError


@pytest.fixture(params=["memory", "hdf5"])
def store(request, tmp_path):
    if request.param == "memory":
        store = InMemoryDataStore()
    else:
        store = HDF5DataStore(tmp_path / "rec.h5")
    yield store
    store.close()


def test_fan_out_to_two_stores(tmp_path):
    mem, h5 = InMemoryDataStore(), HDF5DataStore(tmp_path / "f.h5")
    with Recorder(mem, h5) as rec:
        for i in range(100):
            rec.record("x", float(i))
        rec.record("name", "a")
        for store in (mem, h5, 0, 1):
            np.testing.assert_array_equal(
                np.asarray(rec.get_all("x", datastore=store)), np.arange(100.0)
            )
        assert rec.get_all("name", datastore=h5) == ["a"]


def test_record_into_one_datastore_keeps_order(tmp_path):
    mem, h5 = InMemoryDataStore(), HDF5DataStore(tmp_path / "sel.h5")
    with Recorder(mem, h5, max_seconds=None) as rec:
        rec.record("k", 1.0)
        rec.record("k", 2.0, datastore=h5)
        rec.record("k", 3.0)
        rec.record("only_mem", 1, datastore=mem)
        np.testing.assert_array_equal(np.asarray(rec.get_all("k", datastore=h5)), [1, 2, 3])
        np.testing.assert_array_equal(rec.get_all("k", datastore=mem), [1, 3])
        assert "only_mem" in mem and "only_mem" not in h5


def test_get_all_sees_every_earlier_record(store):
    rec = Recorder(store, max_records=1000, max_seconds=None)
    for i in range(10):
        rec.record("x", i * 1.0)
        assert len(rec.get_all("x")) == i + 1


def test_block_is_written_when_full(store):
    rec = Recorder(store, max_records=10, max_seconds=None)
    for i in range(9):
        rec.record("x", float(i))
    assert "x" not in store  # still buffered
    rec.record("x", 9.0)
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(10.0))


def test_max_bytes_bounds_a_block(store):
    rec = Recorder(store, max_bytes=1024, max_seconds=None)  # 128 float64 scalars
    for i in range(127):
        rec.record("x", float(i))
    assert "x" not in store
    rec.record("x", 127.0)
    assert len(store.get_all("x")) == 128
    rec.record("words", "x" * 600)
    rec.record("words", "y" * 600)
    assert store.get_all("words") == ["x" * 600, "y" * 600]


def test_max_seconds_flushes_old_samples(store):
    rec = Recorder(store, max_seconds=0.05)
    rec.record("x", 1.0)
    deadline = time.monotonic() + 5
    while "x" not in store and time.monotonic() < deadline:
        time.sleep(0.06)
        rec.record("y", 2.0)  # any later record performs the armed flush
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0])
    rec.close()


def test_close_flushes(tmp_path):
    path = tmp_path / "c.h5"
    rec = Recorder(HDF5DataStore(path))
    rec.record("x", 1.0)
    rec.close()
    with HDF5DataStore(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0])


def test_interpreter_exit_flushes(tmp_path):
    path = tmp_path / "exit.h5"
    script = (
        "from simrecorder import Recorder, HDF5DataStore\n"
        f"rec = Recorder(HDF5DataStore({str(path)!r}), max_seconds=None)\n"
        "for i in range(1000):\n"
        "    rec.record('x', float(i))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with HDF5DataStore(path, mode="r") as store:
        assert len(store.get_all("x")) == 1000


def test_large_samples_bypass_the_buffer(store):
    rec = Recorder(store, max_bytes=1000, max_seconds=None)
    big = np.arange(200.0)  # 1600 bytes >= max_bytes
    rec.record("big", big)
    assert "big" in store  # written at once
    big[:] = -1  # and the record was a snapshot
    np.testing.assert_array_equal(np.asarray(store.get_all("big"))[0], np.arange(200.0))


@pytest.mark.parametrize("kind", ["array", "zero_d", "object"])
def test_record_snapshots_the_value(store, kind):
    rec = Recorder(store, max_seconds=None)
    if kind == "array":
        state = np.zeros(5)
        for i in range(3):
            state[:] = i
            rec.record("s", state)
        expected = [[0] * 5, [1] * 5, [2] * 5]
        np.testing.assert_array_equal(np.asarray(rec.get_all("s")), expected)
    elif kind == "zero_d":
        state = np.array(1.0)
        rec.record("s", state)
        state[()] = 5.0
        np.testing.assert_array_equal(np.asarray(rec.get_all("s")), [1.0])
    else:
        state = [np.zeros(2), {"a": 1}]
        rec.record("s", state)
        state[0][:] = 7
        state[1]["a"] = 2
        got = rec.get_all("s")[0]
        np.testing.assert_array_equal(got[0], np.zeros(2))
        assert got[1] == {"a": 1}


@pytest.mark.parametrize(
    ("first", "bad", "words"),
    [
        (1, 1.5, "float64"),  # float into an int series
        (1.0, "text", "str"),  # str into a float series
        (np.zeros(3), np.zeros(4), "(4,)"),  # shape change
        (np.zeros(3), 1.0, "()"),  # scalar after array
        (1.0, np.zeros(3), "(3,)"),  # array after scalar
        (1.0, [1, 2], "list"),  # object into a dense series
        (np.int8(1), 1000, "int8"),  # out of range
        (True, 1, "int64"),  # int into a bool series
        ("text", b"bytes", "bytes"),  # bytes into a str series
        (np.zeros(2), np.array(["a", "b"]), "<U1"),  # non-numeric array
    ],
)
def test_schema_errors_are_raised_by_record(store, first, bad, words):
    rec = Recorder(store, max_seconds=None)
    rec.record("k", first)
    rec.record("k", first)
    with pytest.raises(SchemaError) as info:
        rec.record("k", bad)
    message = str(info.value)
    assert "'k'" in message and "expected" in message and words in message
    assert isinstance(info.value, TypeError)
    assert len(rec.get_all("k")) == 2  # nothing recorded before is touched
    rec.record("k", first)
    assert len(rec.get_all("k")) == 3


def test_schema_is_checked_against_data_already_stored(tmp_path):
    path = tmp_path / "s.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        rec.record("x", np.zeros(3, dtype=np.int32))
    with Recorder(HDF5DataStore(path, mode="a")) as rec:
        with pytest.raises(SchemaError, match="int32"):
            rec.record("x", np.zeros(3, dtype=np.float64))
        rec.record("x", np.ones(3, dtype=np.int16))  # same_kind: fine
        assert len(rec.get_all("x")) == 2


@pytest.mark.parametrize(
    ("bad", "new_schema"),
    [("text", "str samples"), (np.zeros(2), "dense float64 samples of shape (2,)"),
     (np.float64(1e300), None)],
    ids=["str", "shape", "out-of-range"],
)  # fmt: skip
def test_schema_error_names_the_store_holding_the_older_series(tmp_path, bad, new_schema):
    path = tmp_path / "older.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        rec.record("x", np.float32(1.0))
    with Recorder(HDF5DataStore(path, mode="a"), max_seconds=None) as rec:
        for _ in range(2):  # the run's first sample of x, then a later one
            with pytest.raises(SchemaError) as info:
                rec.record("x", bad)
            message = str(info.value)
            assert "'x'" in message and str(path) in message  # the key and the store
            assert "dense float32 samples of shape ()" in message  # the stored schema
            if new_schema is not None:  # and the one the sample would start
                assert f"would start a series of {new_schema}" in message
            rec.record("x", 2.0)
        assert len(rec.get_all("x")) == 3


def test_fast_path_range_error_names_the_store_holding_the_older_series(tmp_path):
    path = tmp_path / "older.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        rec.record("x", np.float32(1.0))
    with Recorder(HDF5DataStore(path, mode="a"), max_seconds=None) as rec:
        rec.record("x", 2.0)
        rec.record("x", 1e300)  # Python floats into float32: checked at the flush
        with pytest.raises(ValueOutOfRangeError, match=r"'x'.*float32.*older\.h5"):
            rec.flush()
        np.testing.assert_array_equal(np.asarray(rec.get_all("x")), [1.0, 2.0])


def test_int_into_float_series_is_cast(store):
    rec = Recorder(store)
    rec.record("x", 1.5)
    rec.record("x", 2)
    rec.record("x", np.float32(3.5))
    rec.record("x", True)
    got = np.asarray(rec.get_all("x"))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.5, 2.0, 3.5, 1.0])
    rec.close()


@pytest.mark.parametrize(
    "key", ["", "a//b", "../x", "a/./b", "a/../b", "/abs", "tail/", "nul\x00", "x" * 2000, 3, None]
)
def test_invalid_keys(store, key):
    rec = Recorder(store)
    with pytest.raises(InvalidKeyError) as info:
        rec.record(key, 1.0)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidKeyError):
        rec.set(key, 1.0)
    with pytest.raises(InvalidKeyError):
        rec.get_all(key)
    rec.close()


def test_key_conflicts(store):
    rec = Recorder(store)
    rec.record("a", 1.0)
    with pytest.raises(KeyConflictError, match="parent 'a'"):
        rec.record("a/b", 1.0)
    rec.record("g/x", 1.0)
    with pytest.raises(KeyConflictError):
        rec.record("g", 1.0)
    with pytest.raises(KeyConflictError):
        rec.set("a", 2.0)
    rec.set("v", 1)
    with pytest.raises(KeyConflictError):
        rec.record("v", 1.0)
    assert len(rec.get_all("a")) == 1
    rec.close()


def test_closed_recorder_raises(store):
    rec = Recorder(store)
    rec.record("x", 1.0)
    rec.close()
    for call in (
        lambda: rec.record("x", 2.0),
        lambda: rec.record("new", 2.0),
        lambda: rec.get_all("x"),
        lambda: rec.get("x"),
        lambda: rec.set("y", 1),
        lambda: rec.flush(),
        lambda: rec.keys(),
    ):
        with pytest.raises(StoreClosedError, match="closed"):
            call()
    rec.close()  # twice is fine


def test_get_and_get_all_of_missing_keys(store):
    rec = Recorder(store)
    assert rec.get("nothing/here") is None
    with pytest.raises(KeyNotFoundError, match="nothing") as info:
        rec.get_all("nothing")
    assert isinstance(info.value, KeyError)
    rec.close()


def test_set_twice_then_get(store):
    rec = Recorder(store)
    rec.set("train/what", np.zeros(3))
    rec.set("train/what", np.ones(3))
    np.testing.assert_array_equal(rec.get("train/what"), np.ones(3))
    rec.close()


def test_get_all_of_a_group(store):
    rec = Recorder(store)
    rec.record("a/b", 1.0)
    rec.record("a/b", 2.0)
    rec.record("a/c", 3.0)
    group = rec.get_all("a")
    assert sorted(group) == ["b", "c"]
    np.testing.assert_array_equal(np.asarray(group["b"]), [1.0, 2.0])
    assert rec.keys() == ["a/b", "a/c"] and rec.keys("a") == ["a/b", "a/c"]
    rec.close()


def test_attrs(tmp_path):
    path = tmp_path / "attrs.h5"
    with Recorder(HDF5DataStore(path), attrs={"model": "lif", "n": 1000}) as rec:
        rec.attrs["dt"] = 0.1
        assert rec.attrs["model"] == "lif" and rec.attrs["dt"] == 0.1
        assert "simrecorder_version" in rec.attrs
    with HDF5DataStore(path, mode="r") as store:
        assert store.attrs["n"] == 1000


def test_urls_are_accepted(tmp_path):
    with Recorder("memory://", str(tmp_path / "u.h5")) as rec:
        rec.record("x", 1.0)
        assert type(rec.datastores[1]).__name__ == "HDF5DataStore"
        assert len(rec.get_all("x", datastore=1)) == 1


def test_failed_store_keeps_blocks_until_flush_succeeds(tmp_path):
    h5 = HDF5DataStore(tmp_path / "fail.h5")
    mem = InMemoryDataStore()
    rec = Recorder(mem, h5, max_records=5, max_seconds=None)
    for i in range(5):
        rec.record("x", float(i))
    h5.close()  # the store goes away under the recorder
    errors = []
    for i in range(5, 15):
        try:
            rec.record("x", float(i))  # kept behind the failed block for h5
        except StoreWriteError as exc:
            errors.append(exc)
    assert errors and all("fail.h5" in str(exc) for exc in errors)
    assert isinstance(errors[-1].__cause__, StoreClosedError)
    np.testing.assert_array_equal(rec.get_all("x", datastore=mem), np.arange(15.0))
    h5.open()
    rec.flush()
    np.testing.assert_array_equal(np.asarray(rec.get_all("x", datastore=h5)), np.arange(15.0))
    rec.close()


def test_recorder_needs_a_store():
    with pytest.raises(TypeError, match="at least one"):
        Recorder()
    with pytest.raises(TypeError):
        Recorder(object())
    with pytest.raises(ValueError):
        Recorder(InMemoryDataStore(), max_records=0)


def test_object_series_reject_unencodable_values(store):
    rec = Recorder(store)
    rec.record("o", [1, 2])

    class Custom:
        pass

    with pytest.raises(SchemaError, match=r"'o'.*Custom"):
        rec.record("o", [Custom()])
    assert rec.get_all("o") == [[1, 2]]
    rec.close()


def test_scalars_are_packed_into_numpy_parts_until_the_block_is_full():
    store = InMemoryDataStore()
    # 1 MiB blocks: 131072 float64 samples
    rec = Recorder(store, max_seconds=None, max_bytes=1 << 20)
    for i in range(20_000):
        rec.record("x", float(i))
    buf = rec._buffers["x"]
    assert "x" not in store  # not a block yet
    assert [len(p) for p in buf.parts] == [8192, 8192] and len(buf.values) == 20_000 - 16384
    np.testing.assert_array_equal(rec.get_all("x"), np.arange(20_000.0))
    for i in range(131_072):
        rec.record("y", float(i))
    assert len(store.get_all("y")) == 131_072  # written as one block when full
    rec.close()


def test_array_samples_take_a_fast_path_that_copies_and_checks(store):
    rec = Recorder(store, max_seconds=None)
    sample = np.arange(4.0)
    rec.record("v", sample)
    sample[:] = -1  # changed after record(): the recorded sample is a copy
    rec.record("v", np.arange(4, dtype=np.float32))  # another dtype: the checked path casts
    rec.record("v", np.arange(8.0)[::2])  # a strided view of the right dtype and shape
    for wrong in (np.arange(5.0), np.ones((2, 2)), np.array(["a", "b", "c", "d"])):
        with pytest.raises(SchemaError, match=r"'v'"):
            rec.record("v", wrong)
    np.testing.assert_array_equal(rec.get_all("v"), [[0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 4, 6]])
    rec.close()


def test_a_full_array_block_commits_every_series_at_the_next_step():
    store = InMemoryDataStore()
    # 10 samples of (10,) a block; an epoch after every full block
    rec = Recorder(store, max_bytes=10 * 80, max_seconds=None, epoch_bytes=0)
    for step in range(10):
        rec.record("v", np.full(10, float(step)))
        rec.record("t", float(step))
    # the full block was handed over alone; the epoch waits for the next step
    assert len(store.get_all("v")) == 10 and "t" not in store
    rec.record("v", np.full(10, 10.0))  # the next step: the epoch runs first
    assert len(store.get_all("t")) == 10 and len(store.get_all("v")) == 10
    assert len(rec.get_all("v")) == 11
    rec.close()


def test_blocks_are_whole_numbers_of_aligned_rows():
    store = InMemoryDataStore()
    rec = Recorder(store, max_bytes=1 << 20, max_seconds=None)  # 131 samples of 8000 bytes
    for step in range(128):
        rec.record("v", np.full(1000, float(step)))
    assert len(store.get_all("v")) == 128  # cut down to a multiple of 32: whole chunks
    rec.close()


def test_an_epoch_comes_after_epoch_bytes_of_full_blocks():
    store = InMemoryDataStore()
    rec = Recorder(store, max_bytes=10 * 80, max_seconds=None, epoch_bytes=3 * 800)
    for step in range(30):  # "v" fills a block every 10 steps: 800 bytes each
        rec.record("v", np.full(10, float(step)))
        rec.record("t", float(step))
    # full blocks were handed over alone; the third one armed the epoch
    assert len(store.get_all("v")) == 30 and "t" not in store
    rec.record("v", np.full(10, 30.0))  # the next step: the epoch runs first
    assert len(store.get_all("t")) == 30 and len(store.get_all("v")) == 30
    rec.close()
    with pytest.raises(InvalidArgumentError, match="epoch_bytes"):
        Recorder(InMemoryDataStore(), epoch_bytes=-1)
    for name in ("max_records", "max_bytes", "epoch_bytes"):
        with pytest.raises(TypeError, match=name):
            Recorder(InMemoryDataStore(), **{name: "8M"})


def test_array_samples_from_several_threads_are_each_stored_once():
    import threading

    store = InMemoryDataStore()
    # blocks of 50 samples, and the timer arms flushes while the threads record;
    # numpy releases the GIL while it copies 1000 numbers, so the threads interleave
    rec = Recorder(store, max_bytes=50 * 8000, max_seconds=0.01)
    count = 3000
    samples = [[np.full(1000, t * 10_000 + i, dtype=np.int64) for i in range(count)]
               for t in range(4)]  # fmt: skip

    def work(thread: int) -> None:
        for sample in samples[thread]:
            rec.record("v", sample)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    got = rec.get_all("v")
    rec.close()
    assert got.shape == (4 * count, 1000) and (got == got[:, :1]).all()
    for t in range(4):
        mine = got[got[:, 0] // 10_000 == t, 0] % 10_000
        np.testing.assert_array_equal(mine, np.arange(count))  # each once, in its order
