"""InMemoryDataStore: the contract suite plus what is special to memory."""

from __future__ import annotations

import numpy as np
import pytest

from simrecorder import InMemoryDataStore, Recorder
from simrecorder.testing.datastore import DataStoreTests


class TestInMemoryDataStore(DataStoreTests):
    def make_store(self, tmp_path):
        return InMemoryDataStore()


def test_returned_arrays_are_read_only():
    store = InMemoryDataStore()
    store.append("x", np.zeros(3))
    got = store.get_all("x")
    with pytest.raises(ValueError):
        got[0, 0] = 1.0


def test_data_survives_close_for_the_next_recorder():
    # SimRecorder's tests hand a closed in-memory store to a new Recorder
    store = InMemoryDataStore()
    rec = Recorder(store)
    rec.record("k", 1.0)
    rec.close()
    rec = Recorder(store)
    np.testing.assert_array_equal(rec.get_all("k"), [1.0])
    rec.close()


def test_set_value_is_a_snapshot():
    store = InMemoryDataStore()
    value = {"a": [1, 2]}
    store.set("v", value)
    value["a"].append(3)
    assert store.get("v") == {"a": [1, 2]}
    store.get("v")["a"].append(4)
    assert store.get("v") == {"a": [1, 2]}


def test_recorded_arrays_are_snapshots_kept_in_blocks():
    """Arrays are copied once (into the buffer's block, which the store keeps: a
    whole block, or a view of one at least half full); reads join them lazily."""
    store = InMemoryDataStore()
    rec = Recorder(store, max_records=10, max_seconds=None)
    state = np.zeros(1000)
    for i in range(37):  # 3 full blocks, then 7 rows of a block of 10
        state[:] = i
        rec.record("state", state)  # the same array, changed in place: a snapshot each
    rec.flush()
    got = rec.get_all("state")
    np.testing.assert_array_equal(got, np.repeat(np.arange(37.0), 1000).reshape(37, 1000))
    assert not got.flags.writeable
    state[:] = -1
    rec.record("state", state)
    rec.flush()
    np.testing.assert_array_equal(got[:, 0], np.arange(37.0))  # the earlier read is intact
    assert rec.get_all("state")[-1, 0] == -1
    rec.close()


def test_a_partial_block_read_is_not_changed_by_later_rows():
    """A block less than half full is copied at a flush: the copy the store keeps
    must not see the rows recorded next."""
    store = InMemoryDataStore()
    rec = Recorder(store, max_records=10, max_seconds=None)
    for i in range(3):
        rec.record("v", np.full(4, float(i)))
    first = rec.get_all("v")  # flushes 3 rows of a block of 10
    for i in range(3, 9):
        rec.record("v", np.full(4, float(i)))
    second = rec.get_all("v")
    np.testing.assert_array_equal(first[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(second, np.repeat(np.arange(9.0), 4).reshape(9, 4))
    rec.close()


def test_views_read_between_records_stay_right_across_arenas():
    """A busy series fills blocks cut from arenas of several blocks: reads before,
    between and after arena boundaries see every row once, in order, and an earlier
    read is not changed by later rows or reads."""
    store = InMemoryDataStore()
    # a first block of 128 rows grows to 512 (4 MiB), then arenas of 3 such blocks
    rec = Recorder(store, max_seconds=None)
    state = np.empty(1000)
    reads = {}
    for i in range(2600):  # 6 blocks: 2 arenas
        state[:] = i
        rec.record("state", state)
        if i in (0, 127, 128, 511, 512, 2047, 2048, 2500):
            reads[i] = rec.get_all("state")
    state[:] = -1  # the caller changes its array after recording it
    got = rec.get_all("state")
    np.testing.assert_array_equal(got, np.repeat(np.arange(2600.0), 1000).reshape(2600, 1000))
    rec.close()
    for i, view in reads.items():
        np.testing.assert_array_equal(view[:, 0], np.arange(i + 1.0))
        np.testing.assert_array_equal(view[:, -1], np.arange(i + 1.0))
        assert not view.flags.writeable


def test_blocks_of_a_busy_series_share_an_arena():
    """The memory store keeps the blocks of a series that fills them as they are:
    from the second one on, views of one arena, not copied at flush."""
    store = InMemoryDataStore()
    rec = Recorder(store, max_records=100, max_seconds=None)  # blocks of 800 kB
    for i in range(350):
        rec.record("busy", np.full(1000, float(i)))
    rec.flush()
    busy = store._series["busy"].blocks  # what the store keeps
    assert [len(b) for b in busy] == [100, 100, 100, 50]
    assert busy[1].base is not None and busy[1].base is busy[2].base  # one arena
    np.testing.assert_array_equal(rec.get_all("busy")[:, 3], np.arange(350.0))
    rec.close()


def test_series_flushed_before_their_blocks_fill_or_with_small_blocks_get_no_arena():
    rec = Recorder(InMemoryDataStore(), max_records=100, max_seconds=None)
    for i in range(500):
        rec.record("slow", np.full(1000, float(i)))  # blocks of 800 kB, never full
        rec.record("small", np.full(10, float(i)))  # full blocks of 8 kB
        if i % 60 == 59:
            rec.flush()
    assert rec._buffers["slow"].rows.arena.size == 0  # arenas on, but never busy
    assert rec._buffers["small"].rows.arena is None  # 8 kB blocks: arenas off
    np.testing.assert_array_equal(rec.get_all("slow")[:, 9], np.arange(500.0))
    np.testing.assert_array_equal(rec.get_all("small")[:, 9], np.arange(500.0))
    rec.close()


def test_quiet_array_series_start_with_small_blocks_that_grow_when_filled():
    """An array series holds a first block of at most 1 MiB; one that fills it grows
    it to a full max_bytes block (the rows so far kept, in order) and, once it hands
    a block over full, gets full blocks; one flushed before its block fills keeps
    small blocks. Thousands of quiet series so cost what they hold."""
    rec = Recorder(InMemoryDataStore(), max_seconds=None, max_bytes=4 << 20)
    for i in range(200):
        rec.record("busy", np.full(1000, float(i)))  # 8000 bytes: 128-row first block
        if i < 10:
            rec.record("quiet", np.full(1000, float(i)))
    assert len(rec._buffers["quiet"].rows.block) == 128
    assert len(rec._buffers["busy"].rows.block) == 512  # grew when it filled
    rec.flush()
    for i in range(200, 800):  # a 128-row block grown to 512, handed over full
        rec.record("busy", np.full(1000, float(i)))
        if i < 230:
            rec.record("quiet", np.full(1000, float(i)))
    assert len(rec._buffers["busy"].rows.block) == 512  # busy: full blocks from now on
    assert len(rec._buffers["quiet"].rows.block) == 128  # flushed before it filled
    np.testing.assert_array_equal(rec.get_all("busy")[:, 7], np.arange(800.0))
    np.testing.assert_array_equal(
        rec.get_all("quiet")[:, 0], np.r_[np.arange(10.0), np.arange(200.0, 230.0)]
    )
    rec.close()


def test_a_store_that_keeps_no_blocks_gets_no_arena(tmp_path):
    from simrecorder import HDF5DataStore

    rec = Recorder(HDF5DataStore(str(tmp_path / "a.h5"), "w"), max_records=100, max_seconds=None)
    for i in range(350):
        rec.record("v", np.full(1000, float(i)))
    assert rec._buffers["v"].rows.arena is None  # written, not kept
    np.testing.assert_array_equal(rec.get_all("v")[:, 2], np.arange(350.0))
    rec.close()


def test_reads_after_every_record_each_see_the_series_so_far():
    """Reads join only the rows recorded since the last read into an array that
    grows by doubling; every view returned stays as it was read."""
    store = InMemoryDataStore()
    rec = Recorder(store, max_records=7, max_seconds=None)
    row = np.empty((2, 3))
    views = []
    for i in range(100):
        row[:] = i
        rec.record("m", row)
        views.append(rec.get_all("m"))
        if i % 9 == 0:
            store.append("m", np.full((2, 3), -1.0))  # a block straight into the store
    expected = []
    for i in range(100):
        expected.append(float(i))
        if i % 9 == 0:
            expected.append(-1.0)
    final = rec.get_all("m")
    np.testing.assert_array_equal(final[:, 1, 2], expected)
    for view in views:
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, final[: len(view)])
    assert [len(v) for v in views] == sorted(len(v) for v in views)
    rec.close()


def test_a_huge_max_bytes_grows_the_block_step_by_step():
    """A first block that fills grows 4x at a time, not to max_bytes at once (a huge
    max_bytes would otherwise allocate terabytes at the 129th sample)."""
    rec = Recorder(InMemoryDataStore(), max_seconds=None, max_bytes=1 << 40, max_records=1 << 30)
    for i in range(600):
        rec.record("v", np.full(1000, float(i)))
    assert len(rec._buffers["v"].rows.block) == 2048  # 128 -> 512 -> 2048
    np.testing.assert_array_equal(rec.get_all("v")[:, 5], np.arange(600.0))
    rec.close()
