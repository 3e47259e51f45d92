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
