"""Review of 2026-12-06 (commits 7d1d7ba "Blocks of 4 MiB ..." and c031a56 "Storage HDF5
fast paths"): the bugs found, each with the test that failed before its fix, and checks
of the risky cases that held."""

from __future__ import annotations

import os
import threading

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, InMemoryDataStore, Recorder
from simrecorder.errors import SimRecorderError, StoreFormatError
from simrecorder.storage import HDF5Storage, load, save


# -- HDF5 storage: an index that went to a dataset, then shrank ----------------------------
def test_a_new_groups_index_that_shrinks_after_a_large_save_is_written(tmp_path):
    """A new group's first index above the attribute limit goes to a dataset (the
    attribute then says "@dataset"); a later small index must overwrite that attribute,
    not create it again (HDF5: "attribute already exists")."""
    path = tmp_path / "x.h5"
    storage = HDF5Storage(path, "w")
    root = storage.root
    for i in range(5000):  # an index of about 60 KiB: above the 48 KiB attribute limit
        root[f"k{i}"] = f"v{i}"
    storage.flush()
    for i in range(1, 5000):
        del root[f"k{i}"]
    storage.flush()
    storage.close()
    assert load(path) == {"k0": "v0"}
    with h5py.File(path, "r") as f:
        assert ".simrecorder_storage" not in f  # the dataset of the large index is gone


def test_a_new_subgroups_index_that_shrinks_after_a_large_save_is_written(tmp_path):
    path = tmp_path / "x.h5"
    with HDF5Storage(path, "w") as root:
        root["g"] = {"x": np.arange(5000.0)}  # a group of its own (an external array)
        group = root["g"]
        for i in range(5000):
            group[f"k{i}"] = f"v{i}"
        root._tree.flush()
        for i in range(5000):
            del group[f"k{i}"]
    np.testing.assert_array_equal(load(path, "g/x"), np.arange(5000.0))
    assert sorted(load(path, "g")) == ["x"]


# -- HDF5 storage: an empty file is not an HDF5 file ---------------------------------------
@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_an_empty_file_is_refused_not_turned_into_an_hdf5_file(tmp_path, mode):
    """HDF5 2.0 opens an empty file for writing as a new one: the low-level open made
    'a' and 'r+' write into a file that is not HDF5 (the earlier code refused it)."""
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    with pytest.raises(StoreFormatError, match="not an HDF5 file") as info:
        HDF5Storage(path, mode)
    assert isinstance(info.value, OSError) and str(path) in str(info.value)
    assert path.read_bytes() == b""  # untouched


def test_an_empty_file_is_truncated_by_mode_w(tmp_path):
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    with HDF5Storage(path, "w") as root:
        root["a"] = 1
    assert load(path) == {"a": 1}


@pytest.mark.parametrize("content", [b"hello", b"\0" * 100])
def test_a_file_that_is_not_hdf5_is_refused_in_every_mode(tmp_path, content):
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    for mode in ("r", "r+", "a"):
        with pytest.raises(StoreFormatError, match="not an HDF5 file"):
            HDF5Storage(path, mode)
    assert path.read_bytes() == content


def test_a_directory_at_the_path_is_refused(tmp_path):
    path = tmp_path / "d.h5"
    path.mkdir()
    for mode in ("r", "r+", "a", "w"):
        with pytest.raises(StoreFormatError) as info:
            HDF5Storage(path, mode)
        assert isinstance(info.value, SimRecorderError) and str(path) in str(info.value)


# -- checks that held: one-pass index text, whole-load views, files of the earlier code ----
_VALUES = [
    1.5,
    float("inf"),
    float("nan"),
    -0.0,
    'é\u2028"\\\x00',
    "",
    True,
    None,
    -5,
    10**40,
    {},
    {"a": 1.0},
    {"a": 1.0, "b": 2.0},
    {"a": 1.0, "b": float("inf")},
    {"a b": 1},
    {"x": {"y": {}}},
    np.float32(np.nan),
    np.int64(3),
    np.str_("s"),
    np.array(3.0),
    np.array([], dtype=np.int8),
    np.zeros((2, 0, 3)),
    np.array([1, 2], dtype=">i4"),
    np.array(["ab", "c"]),
    [1, 2.5, "x"],
    b"\x00\xff",
    1 + 2j,
]


@pytest.mark.parametrize("value", _VALUES, ids=[repr(v)[:30] for v in _VALUES])
def test_one_pass_saves_keep_every_plain_value(tmp_path, value):
    obj = {"v": value, "g": {"v": value, "h": 2.0}, "e": {}}
    path = save(obj, tmp_path / "x.h5")
    got = load(path)
    for name in ("v",):
        for have, want in ((got[name], value), (got["g"][name], value)):
            if isinstance(want, np.ndarray):
                np.testing.assert_array_equal(have, want)
                assert have.dtype == want.dtype and have.shape == want.shape
            elif want != want:  # nan
                assert have != have and type(have) is type(want)
            else:
                assert have == want and type(have) is type(want)
    assert got["e"] == {} and got["g"]["h"] == 2.0


def test_whole_load_views_share_nothing_with_later_updates(tmp_path):
    path = save({"a": np.arange(10.0), "b": np.arange(5, dtype=np.int32)}, tmp_path / "x.h5")
    with HDF5Storage(path) as root:
        whole = root.load()
        whole["a"][:] = -1
        whole["b"][:] = -1
        root["c"] = np.arange(4.0)  # in the pack's pending bytes: not in the copy
        again = root.load()
        np.testing.assert_array_equal(again["a"], np.arange(10.0))
        np.testing.assert_array_equal(again["c"], np.arange(4.0))
        again["c"][:] = 7
        np.testing.assert_array_equal(root["c"], np.arange(4.0))
        root["a"] = np.arange(3.0)
    np.testing.assert_array_equal(load(path, "a"), np.arange(3.0))
    np.testing.assert_array_equal(load(path, "b"), np.arange(5))


# -- buffers: first blocks, threads, copies of samples between 1 and 4 MiB ----------------
def test_threads_recording_one_series_through_first_blocks_lose_nothing():
    rec = Recorder(InMemoryDataStore(), max_seconds=0.05)
    count = 1500

    def work(t: int) -> None:
        sample = np.empty(1000)
        for i in range(count):
            sample[:] = t * 100000 + i
            rec.record("s", sample)
            sample[:] = -1  # changed after record: not what was recorded

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = rec.get_all("s")
    rec.close()
    assert got.shape == (3 * count, 1000)
    assert (got == got[:, :1]).all()
    for t in range(3):
        mine = got[(got[:, 0] >= t * 100000) & (got[:, 0] < (t + 1) * 100000), 0]
        np.testing.assert_array_equal(mine, t * 100000 + np.arange(count))


@pytest.mark.parametrize("kind", ["memory", "hdf5"])
def test_samples_between_1_and_4_mib_are_copied_when_recorded(tmp_path, kind):
    store = InMemoryDataStore() if kind == "memory" else HDF5DataStore(str(tmp_path / "x.h5"))
    rec = Recorder(store, max_seconds=None)
    sample = np.empty(300_000)  # 2.4 MB: buffered now (blocks of 4 MiB)
    for i in range(5):
        sample[:] = i
        rec.record("big", sample)
        sample[:] = -1
    rec.flush()
    got = np.asarray(rec.get_all("big"))
    rec.close()
    np.testing.assert_array_equal(got.min(axis=1), np.arange(5.0))
    np.testing.assert_array_equal(got.max(axis=1), np.arange(5.0))
    assert os.path.exists(tmp_path / "x.h5") == (kind == "hdf5")


def test_reads_wait_for_a_flush_of_the_same_storage_in_another_thread(tmp_path):
    """A recorder's timer thread flushes (and may repack) its storage under the
    storage's lock: a load or a read in the user's thread waits for it, instead of
    reading a pack being rewritten."""
    import time

    from simrecorder.storage import open_storage

    path = save({"a": np.arange(10.0), "g": {"b": 1.5}}, tmp_path / "x.h5")
    with open_storage(path) as storage:
        tree = storage._tree
        held = threading.Event()

        def flush_slowly() -> None:
            with tree.lock:
                held.set()
                time.sleep(0.3)

        worker = threading.Thread(target=flush_slowly)
        worker.start()
        held.wait()
        start = time.perf_counter()
        np.testing.assert_array_equal(storage.load()["a"], np.arange(10.0))
        assert time.perf_counter() - start > 0.2
        worker.join()
        worker = threading.Thread(target=flush_slowly)
        held.clear()
        worker.start()
        held.wait()
        start = time.perf_counter()
        assert storage["g/b"] == 1.5
        assert time.perf_counter() - start > 0.2
        worker.join()
