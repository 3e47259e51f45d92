"""SimRecorder users switch without edits: its README quickstart and its tests."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from simrecorder import (
    HDF5DataStore,
    InMemoryDataStore,
    Recorder,
    RedisDataStore,
    SimRecorderError,
)

# SimRecorder's README quickstart, in-memory and HDF5 parts, verbatim
QUICKSTART = textwrap.dedent(
    """
    from simrecorder import Recorder, InMemoryDataStore, RedisDataStore, HDF5DataStore

    in_memory_datastore = InMemoryDataStore()

    hdf5_datastore = HDF5DataStore('~/output/data.h5')

    # To use only in-memory datastore
    recorder = Recorder(in_memory_datastore)

    # To use only the hdf5 datastore
    recorder = Recorder(hdf5_datastore)

    # This appends some_value to a list with key 'a/b'
    recorder.record('a/b', some_value1)
    recorder.record('a/b', some_value2)
    # This appends some_value to a list with key 'a/c'
    recorder.record('a/c', some_value2)

    # This gives you a list of values your recorded [some_value1, some_value2] (Retrieved from the first datastore)
    recorder.get_all('a')
    # You can also re-intialize recorder with the same parameters in other scripts and access the keys

    ## After everything
    recorder.close()
    """
)


def test_readme_quickstart_runs_unmodified(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    namespace = {"some_value1": np.arange(3.0), "some_value2": np.ones(3)}
    exec(compile(QUICKSTART, "SimRecorder-README", "exec"), namespace)
    # and the data is where the README says
    with HDF5DataStore(tmp_path / "output" / "data.h5", mode="r") as store:
        np.testing.assert_array_equal(
            np.asarray(store.get_all("a/b")), [np.arange(3.0), np.ones(3)]
        )
    recorder = Recorder(HDF5DataStore("~/output/data.h5"))
    group = recorder.get_all("a")
    np.testing.assert_array_equal(np.asarray(group["c"]), [np.ones(3)])
    recorder.close()


def test_redis_store_is_importable_and_says_when_unavailable():
    try:
        store = RedisDataStore(server_host="localhost", redis_port=1)
    except SimRecorderError as exc:  # a built Redis backend names the unreachable server
        assert "localhost" in str(exc)
    else:
        store.close()


# SimRecorder's tests/test_datastores.py, memory and HDF5 cases
N_ARRAYS = 10
KEY = "train/what"


@pytest.fixture
def arrays():
    return np.random.rand(N_ARRAYS, 10, 5, 2, 6)


def test_hdf5datastore_list(tmp_path, arrays):
    path = str(tmp_path / "data.h5")
    recorder = Recorder(HDF5DataStore(path))
    for i in range(N_ARRAYS):
        recorder.record(KEY, arrays[i])
    recorder.close()
    recorder = Recorder(HDF5DataStore(path))
    got = np.array(recorder.get_all(KEY))
    assert (arrays == got).all()
    recorder.close()


def test_hdf5datastore_single_value(tmp_path, arrays):
    path = str(tmp_path / "data.h5")
    recorder = Recorder(HDF5DataStore(path))
    recorder.set(KEY, arrays[1])
    recorder.set(KEY, arrays[0])
    recorder.close()
    recorder = Recorder(HDF5DataStore(path))
    assert (arrays[0] == np.array(recorder.get(KEY))).all()
    recorder.close()


def test_inmemorydatastore_list(arrays):
    store = InMemoryDataStore()
    recorder = Recorder(store)
    for i in range(N_ARRAYS):
        recorder.record(KEY, arrays[i])
    recorder.close()
    recorder = Recorder(store)
    assert (arrays == np.array(recorder.get_all(KEY))).all()
    recorder.close()


def test_inmemorydatastore_single_value(arrays):
    store = InMemoryDataStore()
    recorder = Recorder(store)
    recorder.set(KEY, arrays[1])
    recorder.set(KEY, arrays[0])
    recorder.close()
    recorder = Recorder(store)
    assert (arrays[0] == np.array(recorder.get(KEY))).all()
    recorder.close()


def test_store_level_api(tmp_path):
    # SimRecorder's DataStore methods: connect, append, get_all, get, set, close
    store = HDF5DataStore(tmp_path / "s.h5")
    store.connect()
    store.append("x", np.zeros(2))
    store.append("x", np.ones(2))
    store.set("p", 1.0)
    assert len(store.get_all("x")) == 2 and store.get("p") == 1.0
    store.close()
