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
