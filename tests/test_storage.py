"""save/load/info/compact, version policies, failure atomicity and recorder integration."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import struct
import time
import tracemalloc
import warnings

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, InMemoryDataStore, Recorder, ZarrDataStore
from simrecorder.errors import StoreFormatError
from simrecorder.storage import (
    EnvironmentMismatch,
    JSONStorage,
    UnstorableValueError,
    browse,
    compact,
    info,
    load,
    open_storage,
    save,
)
from simrecorder.testing.storage import VALUES, Counter, Particle, assert_same

SUFFIXES = [".h5", ".json", ".zarr"]


def _data():
    return {
        "params": {"dt": 0.1, "n": 100, "name": "run"},
        "state": {"x": np.linspace(0, 1, 10_000), "v": np.zeros(3)},
        "particle": Particle("p", np.arange(3.0)),
        "values": dict(VALUES),
    }


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_load_round_trip(tmp_path, suffix):
    data = _data()
    path = save(data, tmp_path / f"run{suffix}", metadata={"author": "me"})
    assert path == str(tmp_path / f"run{suffix}")
    loaded = load(path)
    assert_same(loaded["values"], data["values"])
    assert isinstance(loaded["particle"], Particle)
    assert load(tmp_path / f"run{suffix}", "params/dt") == 0.1  # partial load
    assert load(path, "params") == {"dt": 0.1, "n": 100, "name": "run"}
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_partial_update_through_open_storage(tmp_path, suffix):
    path = save(_data(), tmp_path / f"run{suffix}")
    with open_storage(path) as root:
        root["params/dt"] = 0.05
        del root["state/v"]
    loaded = load(path)
    assert loaded["params"]["dt"] == 0.05
    assert list(loaded["state"]) == ["x"]


def test_save_adds_suffix_and_load_takes_the_name(tmp_path):
    path = save({"a": 1}, tmp_path / "run", backend="json")
    assert path.endswith("run.json")
    assert load(tmp_path / "run") == {"a": 1}


def test_plain_libraries_read_the_files(tmp_path):
    h5 = save({"a": 1, "arr": np.arange(5000)}, tmp_path / "x.h5")
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["arr"][()], np.arange(5000))
        index = json.loads(f.attrs["simrecorder_storage"])
        assert index["@g"]["a"] == 1
    js = save({"a": 1, "s": "x"}, tmp_path / "x.json")
    with open(js) as f:
        doc = json.load(f)
    assert doc["@g"] == {"a": 1, "s": "x"}
    with open(js, "rb") as f:
        assert b"pickle" not in f.read().lower()


def test_many_small_leaves_make_few_datasets(tmp_path):
    data = {f"g{i}": {f"k{j}": float(j) for j in range(10)} for i in range(100)}
    path = save(data, tmp_path / "x.h5")
    with h5py.File(path, "r") as f:
        assert len(f) == 0  # one index attribute, no dataset per leaf
    assert load(path) == data


def test_backend_list_falls_back(tmp_path):
    class Opaque:
        __slots__ = ("x",)

    value = {"obj": Opaque()}
    with pytest.raises(TypeError, match=r"obj.*\['json', 'hdf5'\]|\['json', 'hdf5'\].*obj"):
        save(value, tmp_path / "x", backend=["json", "hdf5"])
    assert os.listdir(tmp_path) == []
    path = save({"c": Counter(2)}, tmp_path / "y", backend=["json", "pickle"])
    assert path.endswith(".json")
    path = save([1, {2: 3}], tmp_path / "z", backend=["json", "pickle"])
    assert path.endswith(".pickle")  # non-str dict keys: only pickle can
    assert load(path) == [1, {2: 3}]


def test_pickle_is_an_explicit_last_resort(tmp_path):
    value = {"f": lambda: 1}
    with pytest.raises(UnstorableValueError):
        save(value, tmp_path / "x", backend=["json", "hdf5"])
    path = save({"s": {1, 2}}, tmp_path / "x", backend=["json", "pickle"], metadata={"m": 1})
    assert path.endswith(".pickle")
    assert load(path) == {"s": {1, 2}}
    assert info(path)["metadata"] == {"m": 1}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_metadata_filter_and_info(tmp_path, suffix):
    data = {"keep": 1, "secret": 2, "inner": {"secret_too": 3, "big": np.zeros((100, 50))}}
    path = save(data, tmp_path / f"x{suffix}", metadata={"who": "me", "n": [1, 2]},
                data_filter_regex="secret")  # fmt: skip
    loaded = load(path)
    assert list(loaded) == ["keep", "inner"] and list(loaded["inner"]) == ["big"]
    described = info(path)
    assert described["metadata"] == {"who": "me", "n": [1, 2]}
    assert described["tree"]["inner"] == {"type": "group"}
    assert described["tree"]["inner/big"]["shape"] == (100, 50)
    assert described["tree"]["inner/big"]["dtype"] == "float64"
    versions = described["versions"]
    for name in ("python", "numpy", "simrecorder", "git"):
        assert name in versions
    assert versions["git"] is None or len(versions["git"]["commit"]) == 40
    assert "inner" in browse(path)


def test_versions_name_stored_class_packages(tmp_path):
    @dataclasses.dataclass
    class Holder:
        value: np.ndarray

    Holder.__module__ = "h5py.not_a_module"  # a class of a package with a version
    path = save({"h": Holder(np.zeros(1))}, tmp_path / "x.h5")
    versions = info(path)["versions"]
    assert versions["h5py"] == h5py.__version__
    assert versions["simrecorder"] and versions["python"] and versions["numpy"]
    with pytest.warns(UserWarning, match="h5py.not_a_module"):
        assert load(path, version_policy="strict")["h"]["value"] == np.zeros(1)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_version_policies(tmp_path, suffix):
    path = save({"a": 1}, tmp_path / f"x{suffix}")
    with open_storage(path) as root:
        tree = root._tree  # a file written by another numpy
        tree.index(())["@versions"]["numpy"] = "0.0.1"
        tree.touch(())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(path, version_policy="ignore") == {"a": 1}
    with pytest.warns(UserWarning, match=r"numpy.*0\.0\.1.*" + np.__version__):
        assert load(path) == {"a": 1}
    with pytest.raises(EnvironmentMismatch, match="numpy") as caught:
        load(path, version_policy="strict")
    assert ("numpy", "0.0.1", np.__version__) in caught.value.differences
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="version_policy"):
        load(path, version_policy="sometimes")


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing.h5")
    with pytest.raises(ValueError, match="cannot tell"):
        open_storage(tmp_path / "x.unknown")
    path = save({"a": np.arange(10_000), "b": 1}, tmp_path / "x.h5")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises((OSError, ValueError), match=r"x\.h5"):
        load(path)
    js = save({"a": 1}, tmp_path / "x.json")
    with open(js, "w") as f:
        f.write('{"@g": {"a": ')
    with pytest.raises(StoreFormatError, match=r"x\.json"):
        load(js)
    with open(js, "w") as f:
        f.write('{"@g": {"a": {"@zz": 1}}}')
    with pytest.raises((OSError, ValueError), match=r"x\.json"):
        load(js)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_save_keeps_the_old_file(tmp_path, suffix):
    path = save({"a": 1}, tmp_path / f"x{suffix}")
    with pytest.raises(TypeError, match="bad"):
        save({"b": 2, "bad": object()}, path)
    assert load(path) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == [f"x{suffix}"]
    with pytest.raises(TypeError):
        save({"bad": object()}, tmp_path / f"new{suffix}")
    assert sorted(os.listdir(tmp_path)) == [f"x{suffix}"]


def test_hdf5_updates_do_not_grow_the_file(tmp_path):
    path = save({"a": np.zeros(100_000), "b": {"c": 1}}, tmp_path / "x.h5")
    sizes = []
    for i in range(20):
        with open_storage(path) as root:
            root["a"] = np.full(100_000 + i % 2, float(i))  # new shape every other time
            root["b/c"] = i
        sizes.append(os.path.getsize(path))
    assert sizes[-1] < 3 * sizes[0]
    assert load(path, "b/c") == 19
    with open_storage(path) as root:
        del root["a"]
    reclaimed = compact(path)
    assert reclaimed > 500_000
    assert load(path) == {"b": {"c": 19}}


def test_one_leaf_of_a_100_mb_file(tmp_path):
    path = save({"big": np.ones(13_000_000), "small": {"x": 1.5}}, tmp_path / "x.h5")
    load(path, "small/x")  # warm up imports
    tracemalloc.start()
    start = time.perf_counter()
    assert load(path, "small/x", version_policy="ignore") == 1.5
    elapsed = time.perf_counter() - start
    described = info(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert described["tree"]["big"]["size"] == 104_000_000
    assert peak < 10 << 20
    assert elapsed < 0.05  # a generous bound for a loaded CI machine; typically ~1 ms


RUN_STORES = {"hdf5": ("run.h5", HDF5DataStore), "zarr": ("run.zarr", ZarrDataStore)}


@pytest.mark.parametrize("kind", sorted(RUN_STORES))
def test_recorder_storage_shares_the_run_file(tmp_path, kind):
    name, store_class = RUN_STORES[kind]
    path = tmp_path / name
    with Recorder(store_class(path)) as rec:
        rec.record("x", 1.0)
        rec.attrs["note"] = "kept"
        rec.storage["params"] = {"dt": 0.1, "table": np.arange(10_000)}
        rec.storage["final"] = Particle("end", np.ones(2))
        rec.storage["top"] = np.arange(5000.0)  # an array of its own at the root
        assert rec.keys() == ["x"]
        rec.flush()
        assert load(path, "params/dt") == 0.1  # written at each flush
        rec.record("x", 2.0)
    assert load(path, "params/dt") == 0.1
    assert isinstance(load(path, "final"), Particle)
    with open_storage(path) as root:
        assert list(root) == ["params", "final", "top"]
        root["params/dt"] = 0.2
    store = store_class(path, mode="r")
    try:
        assert store.keys() == ["x"]
        assert list(store.get_all("x")) == [1.0, 2.0]
        assert "simrecorder_storage" not in store.attrs
        assert store.attrs["note"] == "kept"
    finally:
        store.close()
    assert load(path, "params/dt") == 0.2
    np.testing.assert_array_equal(load(path, "top"), np.arange(5000.0))


def test_recorder_storage_needs_a_file_store():
    with Recorder(InMemoryDataStore()) as rec, pytest.raises(TypeError, match="storage"):
        rec.storage  # noqa: B018


def test_memory_storage_keeps_data_across_with_blocks():
    storage = open_storage("memory://")
    with storage as root:
        root["a"] = [1, 2]
    with storage as root:
        assert root["a"] == [1, 2]


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    b: tuple


@dataclasses.dataclass(slots=True)
class Slotted:
    a: float
    b: str


class Root:
    """A Storable saved as the whole file."""

    def __init__(self, table: np.ndarray, note: str) -> None:
        self.table = table
        self.note = note

    def _store(self, group):
        group["table"] = self.table
        group.attrs["note"] = self.note

    @classmethod
    def _restore(cls, group):
        return cls(group["table"], group.attrs["note"])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_whole_file_objects(tmp_path, suffix):
    path = save(Root(np.arange(9000), "n"), tmp_path / f"r{suffix}")
    root = load(path)
    assert isinstance(root, Root) and root.note == "n"
    np.testing.assert_array_equal(root.table, np.arange(9000))
    path = save(Particle("a", np.ones(2)), tmp_path / f"p{suffix}")
    assert load(path, "name") == "a"
    assert isinstance(load(path), Particle)
    path = save([1, (2, 3)], tmp_path / f"v{suffix}")
    assert load(path) == [1, (2, 3)]
    values = [Frozen(1, (2,)), Frozen(3, ()), Slotted(1.5, "x"), Slotted(2.5, "y")]
    path = save({"objects": values, "one": Frozen(5, (6,))}, tmp_path / f"o{suffix}")
    loaded = load(path)
    assert loaded["objects"] == values and loaded["one"] == Frozen(5, (6,))
    assert Frozen.__module__.split(".")[0] in info(path)["versions"]  # its top-level package


def test_lists_of_objects_are_stored_by_column(tmp_path):
    particles = [Particle(f"p{i}", np.arange(2.0) + i, i * 0.5) for i in range(500)]
    path = save({"particles": particles}, tmp_path / "x.json")
    with open(path) as f:
        text = f.read()
    assert text.count("Particle") == 1  # the class and field names once, not per object
    loaded = load(path)["particles"]
    assert len(loaded) == 500 and loaded[7].name == "p7" and loaded[7].charge == 3.5
    np.testing.assert_array_equal(loaded[7].position, np.arange(2.0) + 7)


def test_redis_storage_by_url(redis_server, redis_prefix):
    url = f"{redis_server.url}/0/{redis_prefix}"
    with open_storage(url) as root:
        root["params"] = {"dt": 0.1, "table": np.arange(100_000)}
    with open_storage(url, mode="r") as root:
        assert root["params/dt"] == 0.1
        np.testing.assert_array_equal(root["params/table"], np.arange(100_000))


def test_zarr_files_open_in_plain_zarr(tmp_path):
    import zarr

    path = save({"a": 1, "g": {"arr": np.arange(5000)}}, tmp_path / "x.zarr")
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["g/arr"][...], np.arange(5000))
    assert group.attrs["simrecorder_storage"]["@g"]["a"] == 1  # a JSON object


def test_a_zarr_index_written_as_json_text_still_loads(tmp_path):
    """Earlier versions kept a zarr group's index as JSON text in its attribute."""
    path = save({"a": 1, "f": {"x": 0.5, "y": 1.5}}, tmp_path / "x.zarr")
    meta_path = os.path.join(path, "zarr.json")
    with open(meta_path) as stream:
        meta = json.load(stream)
    meta["attributes"]["simrecorder_storage"] = json.dumps(
        meta["attributes"]["simrecorder_storage"]
    )
    with open(meta_path, "w") as stream:
        json.dump(meta, stream)
    assert load(path, version_policy="ignore") == {"a": 1, "f": {"x": 0.5, "y": 1.5}}


def test_compact_keeps_the_recorders_series(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        rec.record("x", 1.0)
        rec.storage["big"] = np.zeros(200_000)
        rec.storage["small"] = 1
    with open_storage(path) as root:
        del root["big"]
    assert compact(path) > 1_000_000
    store = HDF5DataStore(path, mode="r")
    try:
        assert list(store.get_all("x")[:]) == [1.0]
    finally:
        store.close()
    assert load(path) == {"small": 1}


@pytest.mark.parametrize("kind", sorted(RUN_STORES))
def test_open_storage_goes_through_the_recorder_writing_the_file(tmp_path, kind):
    name, store_class = RUN_STORES[kind]
    path = tmp_path / name
    with Recorder(store_class(path)) as rec:
        rec.storage["a"] = 1
        with open_storage(path) as root:  # no second writer: shares the recorder's
            assert root["a"] == 1
            root["b"] = np.arange(10_000)
        assert rec.storage["b"].shape == (10_000,)
        rec.record("x", 2.0)
    assert list(load(path)) == ["a", "b"]


def test_zarr_stores_that_are_not_local_directories_hold_no_storage(tmp_path):
    store = ZarrDataStore(tmp_path / "run.zip", datastore_type="zip")
    with Recorder(store) as rec, pytest.raises(TypeError, match="storage"):
        rec.storage  # noqa: B018


@pytest.mark.parametrize("kind", sorted(RUN_STORES))
def test_save_refuses_to_replace_a_file_being_recorded(tmp_path, kind):
    name, store_class = RUN_STORES[kind]
    path = tmp_path / name
    with Recorder(store_class(path)) as rec:
        rec.record("x", 1.0)
        with pytest.raises(OSError, match="writing it"):
            save({"a": 1}, path)
        if kind == "hdf5":  # (compacting a zarr directory is a no-op)
            with pytest.raises(OSError, match="writing it"):
                compact(path)
    store = store_class(path, mode="r")
    try:
        assert store.keys() == ["x"]
    finally:
        store.close()


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_small_arrays_share_one_pack(tmp_path, suffix):
    data = {f"a{i}": np.arange(100, dtype=np.float64) + i for i in range(50)}
    path = save(data, tmp_path / f"x{suffix}")
    if suffix == ".h5":
        with h5py.File(path, "r") as f:
            assert list(f) == [".simrecorder_pack"]  # 50 arrays, one dataset
            assert f[".simrecorder_pack"].shape == (50 * 800,)
    np.testing.assert_array_equal(load(path, "a7"), np.arange(100.0) + 7)
    for i in range(40):  # rewrites leave waste behind, then the pack is rewritten
        with open_storage(path) as root:
            root[f"a{i % 5}"] = np.full(100, float(i))
    with open_storage(path) as root:
        assert root._tree._pack_base(()) < 2 * 50 * 800 + (64 << 10)
        np.testing.assert_array_equal(root["a4"], np.full(100, 39.0))
        np.testing.assert_array_equal(root["a10"], np.arange(100.0) + 10)
        root["a10"] = np.arange(5000)  # now large: its own dataset
        root["g/small"] = np.ones(3)
        root["g/big"] = np.ones(10_000)  # makes g physical: its packed array moves
        del root["a11"]
    loaded = load(path)
    np.testing.assert_array_equal(loaded["g"]["small"], np.ones(3))
    np.testing.assert_array_equal(loaded["a10"], np.arange(5000))
    assert "a11" not in loaded and len(loaded) == 50


def test_assigning_a_group_copies_it():
    with open_storage("memory://") as root:
        root["a"] = {"x": 1, "y": {"z": [2]}}
        root["b"] = root["a"]
        root["a/x"] = 5
        assert root.load("b") == {"x": 1, "y": {"z": [2]}}


def test_redis_truncate_needs_a_prefix(redis_server):
    with pytest.raises(ValueError, match="prefix"):
        open_storage(f"{redis_server.url}/0", mode="w")


def test_json_files_are_strict_json(tmp_path):
    path = save({"nan": float("nan"), "inf": [float("inf")]}, tmp_path / "x.json")

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    with open(path) as f:
        json.loads(f.read(), parse_constant=refuse)
    loaded = load(path)
    assert np.isnan(loaded["nan"]) and loaded["inf"] == [float("inf")]


@pytest.mark.parametrize("what", ["dataset", "pack", "index"])
def test_damaged_hdf5_parts_are_named(tmp_path, what):
    path = save({"big": np.zeros(10_000), "small": np.ones(3), "x": 1}, tmp_path / "x.h5")
    with h5py.File(path, "r+") as f:
        if what == "dataset":
            del f["big"]
        elif what == "pack":
            del f[".simrecorder_pack"]  # a pack shorter than its index says
            f[".simrecorder_pack"] = np.zeros(1, dtype=np.uint8)
        else:
            f.attrs["simrecorder_storage"] = '{"@g": {"x": '
    with pytest.raises(StoreFormatError, match=r"x\.h5"):
        load(path)


def test_newer_format_is_refused(tmp_path):
    path = save({"a": 1}, tmp_path / "x.json")
    with open(path) as f:
        doc = json.load(f)
    doc["@format"] = 99
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(StoreFormatError, match="upgrade"):
        load(path)


def test_versions_record_the_git_state_of_stored_classes(tmp_path):
    path = save({"p": Particle("a", np.zeros(1))}, tmp_path / "x.json")
    versions = info(path)["versions"]
    package = Particle.__module__.split(".")[0]  # simrecorder: this checkout
    if package not in versions["package_git"]:
        pytest.skip("simrecorder is not imported from a git checkout here")
    state = versions["package_git"][package]
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)


_SAVER = """
import sys
import numpy as np
from simrecorder.storage import save
i = 0
while True:
    i += 1
    save({"i": i, "arrays": [np.full(200_000, float(i)) for _ in range(20)]}, sys.argv[1])
    print(i, flush=True)
"""


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_killed_save_leaves_the_old_file(tmp_path, suffix):
    import signal
    import subprocess
    import sys

    path = str(tmp_path / f"x{suffix}")
    child = subprocess.Popen([sys.executable, "-c", _SAVER, path], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # one complete save, then kill it during another
        time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    loaded = load(path)
    assert loaded["i"] >= 1
    assert all(array[0] == loaded["i"] for array in loaded["arrays"])
    assert [name for name in os.listdir(tmp_path) if not name.startswith(".")] == [f"x{suffix}"]


def test_recorder_timer_flushes_while_the_storage_is_written(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(HDF5DataStore(path), max_seconds=0.001) as rec:
        storage = rec.storage
        for i in range(300):
            rec.record("x", float(i))
            storage[f"g{i % 7}/k{i}"] = {"a": i, "b": [i] * 3}
            if i % 50 == 0:
                del storage[f"g{i % 7}"]
    loaded = load(path)
    assert loaded["g5"]["k299"] == {"a": 299, "b": [299, 299, 299]}


# -- the fast paths (issue 16 benchmarks): files stay readable by the plain libraries -----


def test_zarr_direct_files_match_zarr_python(tmp_path):
    import zarr

    data = {
        "b": np.ones((100, 50), bool),
        "h": np.arange(5000, dtype=np.float16).reshape(50, 100),
        "u": np.arange(5000, dtype=np.uint8),
        "g": {"arr": np.arange(5000.0), "small": np.arange(3), "x": 1},
    }
    path = save(data, tmp_path / "x.zarr")
    group = zarr.open_group(path, mode="r")
    for name in ("b", "h", "u", "g/arr"):
        expected = data["g"]["arr"] if name == "g/arr" else data[name]
        assert group[name].dtype == expected.dtype
        np.testing.assert_array_equal(group[name][...], expected)
    assert_same(load(path, version_policy="ignore"), data)
    # a partial update of another shape, and pack appends across sessions
    with open_storage(path) as root:
        root["h"] = np.arange(6000.0)
        root["g/more"] = np.arange(5)
    with open_storage(path) as root:
        root["g/more2"] = np.arange(7)
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["h"][...], np.arange(6000.0))
    back = load(path, version_policy="ignore")
    np.testing.assert_array_equal(back["g"]["more2"], np.arange(7))
    np.testing.assert_array_equal(back["g"]["small"], np.arange(3))


def test_zarr_chunks_left_out_read_as_fill_values(tmp_path):
    # zarr-python does not write a chunk of fill values (files of earlier versions)
    path = save({"z": np.zeros(10_000), "g": {"a": np.ones(10_000)}}, tmp_path / "x.zarr")
    os.unlink(os.path.join(path, "z", "0"))
    np.testing.assert_array_equal(load(path, "z", version_policy="ignore"), np.zeros(10_000))


def test_zarr_arrays_of_another_layout_are_read_by_zarr(tmp_path):
    import zarr

    path = save({"a": np.arange(10_000.0)}, tmp_path / "x.zarr")
    group = zarr.open_group(path, mode="r+")
    del group["a"]
    group.create_array("a", data=np.arange(10_000.0), chunks=(1000,))
    np.testing.assert_array_equal(load(path, "a", version_policy="ignore"), np.arange(10_000.0))
    # one chunk under zarr-python's default chunk keys (c/0/0): files of earlier versions
    path = save({"m": np.ones((100, 80))}, tmp_path / "y.zarr")
    group = zarr.open_group(path, mode="r+")
    del group["m"]
    group.create_array("m", data=np.arange(8000.0).reshape(100, 80), chunks=(100, 80))
    assert os.path.exists(os.path.join(path, "m", "c", "0", "0"))
    np.testing.assert_array_equal(
        load(path, "m", version_policy="ignore"), np.arange(8000.0).reshape(100, 80)
    )


def test_zarr_damaged_chunk_is_named(tmp_path):
    path = save({"a": np.arange(10_000.0)}, tmp_path / "x.zarr")
    with open(os.path.join(path, "a", "0"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(StoreFormatError, match=r"x\.zarr"):
        load(path)


def test_json_arrays_go_to_a_sidecar(tmp_path):
    data = {"big": np.arange(10_000.0), "small": np.arange(3), "x": 1.5}
    path = save(data, tmp_path / "x.json")
    with open(path) as f:
        doc = json.load(f)
    assert doc["@g"]["big"] == {"@p": ["<f8", [10_000], 0]}
    assert doc["@g"]["small"] == {"@p": ["<i8", [3], 80_000]}
    assert os.path.getsize(path + ".bin") == 80_024 + 37  # header + raw bytes
    assert os.path.getsize(path) < 2_000
    assert_same(load(path, version_policy="ignore"), data)
    assert info(path)["tree"]["big"]["shape"] == (10_000,)


def test_json_sidecar_of_another_save_is_refused(tmp_path):
    path = save({"big": np.arange(10_000.0)}, tmp_path / "x.json")
    with open(path + ".bin", "rb") as f:
        first = f.read()
    save({"big": np.arange(10_000.0) + 1}, tmp_path / "x.json")
    with open(path + ".bin", "wb") as f:
        f.write(first)  # the pair a crash between the two renames would leave
    with pytest.raises(StoreFormatError, match=r"x\.json.*another save"):
        load(path)
    os.unlink(path + ".bin")
    with pytest.raises(StoreFormatError, match=r"x\.json.*missing"):
        load(path)


def test_json_save_without_large_arrays_drops_the_old_sidecar(tmp_path):
    path = save({"big": np.arange(10_000.0)}, tmp_path / "x.json")
    assert os.path.exists(path + ".bin")
    save({"a": 1}, tmp_path / "x.json")
    assert not os.path.exists(path + ".bin")
    assert load(path, version_policy="ignore") == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_json_sidecar_partial_updates(tmp_path):
    path = save({"big": np.arange(10_000.0), "x": 1}, tmp_path / "x.json")
    with open_storage(path) as root:
        root["more"] = np.ones(5000)
    with open_storage(path) as root:
        root["x"] = 2
        np.testing.assert_array_equal(root["big"], np.arange(10_000.0))
    back = load(path, version_policy="ignore")
    np.testing.assert_array_equal(back["more"], np.ones(5000))
    assert back["x"] == 2
    for _ in range(5):  # overwrites are repacked: the sidecar does not grow without bound
        with open_storage(path) as root:
            root["big"] = np.arange(10_000.0) + 1
    assert os.path.getsize(path + ".bin") < 3 * 120_000
    np.testing.assert_array_equal(
        load(path, "big", version_policy="ignore"), np.arange(10_000.0) + 1
    )


def test_json_failed_save_leaves_no_sidecar(tmp_path):
    with pytest.raises(TypeError):
        save({"big": np.arange(10_000.0), "bad": {1, 2}}, tmp_path / "x.json")
    assert os.listdir(tmp_path) == []


def test_hdf5_fast_datasets_are_plain_and_marked(tmp_path):
    data = {
        "a": np.arange(10_000.0),
        "s": np.array(["héllo"] * 2000),
        "é": np.ones((100, 80), bool),
    }
    path = save(data, tmp_path / "x.h5")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["a"][()], data["a"])
        assert f["é"].dtype == bool
        for name in ("a", "s", "é"):
            assert f[name].attrs["simrecorder_storage_array"] == 1
    assert_same(load(path, version_policy="ignore"), data)
    with open_storage(path) as root:  # overwritten in a reopened file
        root["a"] = np.arange(20_000)
    np.testing.assert_array_equal(load(path, "a", version_policy="ignore"), np.arange(20_000))


@dataclasses.dataclass
class _Counted:
    """A dataclass whose __post_init__ must not run again on load."""

    n: int
    calls = 0

    def __post_init__(self):
        type(self).calls += 1


@dataclasses.dataclass
class _KwOnly:
    a: int
    b: float = dataclasses.field(kw_only=True, default=1.0)


@dataclasses.dataclass(frozen=True)
class _Frozen:
    a: int
    b: str


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_lists_of_dataclasses_rebuild_as_saved(tmp_path, suffix):
    # lists of one dataclass are stored by column; rebuilding calls the generated
    # __init__ only when it does nothing but set the fields
    data = {
        "counted": [_Counted(i) for i in range(3)],
        "kw": [_KwOnly(i, b=i / 2) for i in range(3)],
        "frozen": [_Frozen(i, str(i)) for i in range(3)],
    }
    path = save(data, tmp_path / f"x{suffix}")
    before = _Counted.calls
    back = load(path, version_policy="ignore")
    assert _Counted.calls == before
    assert back == data


# -- float columns (issue 16, workload b): groups of floats as float64 bytes -------------


def _float_groups():
    return {
        "sub": {"a": 0.1, "b": -0.0, "c": 1e308, "d": 5e-324, "e": 1 / 3},
        "mixed": {"a": 0.5, "n": 1, "s": "x"},
        "one": {"a": 0.25},
        "nonfinite": {"a": float("nan"), "b": 2.0},
        "overflowing": {"a": 1e308, "b": 1e308, "c": -float("inf")},
        "huge": {"a": 1e308, "b": 1e308},  # finite, though their sum is not
        "outer": {"inner": {"x": 1.5, "y": 2.5}, "arr": np.arange(3.0)},
    }


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_float_groups_round_trip_bit_exactly(tmp_path, suffix):
    data = _float_groups()
    path = save(data, tmp_path / f"f{suffix}")
    back = load(path)
    for key in ("sub", "mixed", "one", "outer", "overflowing", "huge"):
        assert_same(back[key], data[key])
    assert np.float64(back["sub"]["b"]).tobytes() == np.float64(-0.0).tobytes()
    assert math.isnan(back["nonfinite"]["a"]) and back["nonfinite"]["b"] == 2.0
    with open_storage(path, "r+") as root:  # partial update of a column group
        root["sub/a"] = "now a str"
        root["outer/inner/z"] = 3.5
    back = load(path)
    assert back["sub"] == {**data["sub"], "a": "now a str"}
    assert back["outer"]["inner"] == {"x": 1.5, "y": 2.5, "z": 3.5}


def test_float_columns_are_plain_json(tmp_path):
    path = save(_float_groups(), tmp_path / "f.json")
    with open(path) as f:
        doc = json.load(f)
    names, start = doc["@g"]["sub"]["@gF"]
    block = base64.b64decode(doc["@gv"])
    values = struct.unpack(f"<{len(block) // 8}d", block)[start : start + len(names)]
    assert dict(zip(names, values, strict=True)) == _float_groups()["sub"]
    assert doc["@g"]["mixed"] == {"@g": {"a": 0.5, "n": 1, "s": "x"}}  # not all floats
    assert doc["@g"]["one"] == {"@g": {"a": 0.25}}  # too few to pay
    assert "@gF" in doc["@g"]["outer"]["@g"]["inner"]


def test_damaged_float_columns_raise_naming_the_file(tmp_path):
    path = save({"g": {"a": 1.0, "b": 2.0}}, tmp_path / "f.json")
    with open(path) as f:
        doc = json.load(f)
    for damage in ({"@gv": "%%%"}, {"@gv": 7}, {"@gv": doc["@gv"][:-8]}):
        with open(path, "w") as f:
            json.dump({**doc, **damage}, f)
        with pytest.raises(StoreFormatError, match=r"f\.json"):
            load(path)
    for body in ([["a", "b"], 1], [["a", "b"], -1], ["ab", 0], [["a", "b"]], 7, [["a"], "0"]):
        bad = {**doc, "@g": {"g": {"@gF": body}}}
        with open(path, "w") as f:
            json.dump(bad, f)
        with pytest.raises(StoreFormatError, match=r"f\.json.*float column"):
            load(path)  # the whole read
        with pytest.raises(StoreFormatError, match=r"f\.json.*float column"):
            load(path, "g")  # the read of one member


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_whole_loads_of_plain_data_and_of_objects_agree_with_member_loads(tmp_path, suffix):
    data = {
        "floats": {"a": 1.0, "b": 2.0},
        "arrays": {"small": np.arange(4), "big": np.arange(2000.0)},
        "deep": {"x": {"y": {"z": [1, (2, 3)], "w": b"raw"}}},
        "obj": Particle(name="p", position=np.arange(3.0), charge=2.5),
    }
    path = save(data, tmp_path / f"w{suffix}")
    whole = load(path)
    for key in ("floats", "arrays", "deep"):
        assert_same(whole[key], load(path, key))
    obj = whole["obj"]
    assert isinstance(obj, Particle) and (obj.name, obj.charge) == ("p", 2.5)
    np.testing.assert_array_equal(obj.position, np.arange(3.0))
    del data["obj"]
    path = save(data, tmp_path / f"plain{suffix}")
    assert_same(load(path), {key: load(path, key) for key in data})


# -- one-pass saves of plain data (issue 16, workload b) ----------------------------------


def _plain_tree():
    from simrecorder.testing.storage import VALUES

    values = {name: value for name, value in VALUES if not isinstance(value, np.ndarray)}
    arrays = {name: value for name, value in VALUES if isinstance(value, np.ndarray)}
    return {
        **_float_groups(),
        "values": values,
        "arrays": {name: value for name, value in arrays.items() if value.nbytes < 4096},
        "empty": {},
        "deep": {"a": {"b": {"c": {"d": {"e": 1.0, "f": 2.0}}}}},
        "last": 1,
    }


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_one_pass_saves_write_what_the_general_path_writes(tmp_path, suffix):
    from simrecorder.storage._onepass import dump_plain

    data = _plain_tree()
    fast = open_storage(tmp_path / f"fast{suffix}", "w")
    assert dump_plain(fast, data, {"run": 1})  # the one pass takes this tree
    fast.close()
    slow = open_storage(tmp_path / f"slow{suffix}", "w")
    slow.dump(data, {"run": 1})
    slow.close()
    documents = []
    for name in ("fast", "slow"):
        storage = open_storage(tmp_path / f"{name}{suffix}", "r")
        document = storage._tree.backend.load_document(())
        storage.close()
        for volatile in ("@versions", "@bin"):
            document.pop(volatile, None)
        documents.append(document)
    assert documents[0] == documents[1]
    assert_same(load(tmp_path / f"fast{suffix}"), load(tmp_path / f"slow{suffix}"))
    with open_storage(tmp_path / f"fast{suffix}") as root:  # a one-pass file updates
        root["deep/a/b/c/d/e"] = "changed"
        root["arrays/more"] = np.arange(7)
    back = load(tmp_path / f"fast{suffix}")
    assert back["deep"]["a"]["b"]["c"]["d"] == {"e": "changed", "f": 2.0}
    np.testing.assert_array_equal(back["arrays"]["more"], np.arange(7))
    np.testing.assert_array_equal(back["arrays"]["arr_int8"], data["arrays"]["arr_int8"])


@pytest.mark.parametrize("key", ["a\x7fb", "x" * 2000, "a\ud800"])
def test_saves_refuse_root_keys_that_are_not_valid_keys(tmp_path, key):
    """The one-pass save checks root keys as root[key] = value does (a review found
    it took them)."""
    for value in (1, np.zeros(1000)):  # one pass, and the general path
        with pytest.raises(ValueError, match="key"):
            save({key: value}, tmp_path / "x.h5")
    assert os.listdir(tmp_path) == []


def test_hdf5_updates_of_a_saved_pack_do_not_double_the_file(tmp_path):
    path = save({f"a{i}": np.full(480, float(i)) for i in range(1500)}, tmp_path / "x.h5")
    before = os.path.getsize(path)
    with open_storage(path) as root:
        root["tiny"] = np.arange(3)
    assert os.path.getsize(path) < before * 1.1
    np.testing.assert_array_equal(load(path, "a7"), np.full(480, 7.0))


@pytest.mark.parametrize(
    "value",
    [np.zeros(10_000), Particle("p", np.arange(3.0)), object(), np.ma.masked_array([1.0])],
    ids=["big-array", "object", "unstorable", "array-subclass"],
)
def test_one_pass_saves_leave_other_values_to_the_general_path(tmp_path, value):
    from simrecorder.storage._onepass import dump_plain

    storage = open_storage(tmp_path / "x.h5", "w")
    try:
        assert not dump_plain(storage, {"a": 1.0, "g": {"v": value}}, {})
        assert list(storage) == []  # nothing written
    finally:
        storage.close()


# -- JSON sidecars across crashes ----------------------------------------------------------


def test_json_crash_after_a_repacked_sidecar_keeps_the_old_documents_data(tmp_path):
    path = save({"big": np.arange(10_000.0), "x": 1}, tmp_path / "x.json")
    storage = open_storage(path)
    assert storage["x"] == 1  # the document is read (its sidecar's token)
    storage._tree.backend.write_pack((), 0, b"repacked")  # a repack's first step...
    # ... and the process dies before the document naming the new sidecar is written
    back = load(path)  # read-only: reads the old sidecar's copy
    assert back["x"] == 1
    np.testing.assert_array_equal(back["big"], np.arange(10_000.0))
    with open_storage(path) as root:  # a writer puts the old sidecar back
        np.testing.assert_array_equal(root["big"], np.arange(10_000.0))
        root["x"] = 2
    assert sorted(os.listdir(tmp_path)) == ["x.json", "x.json.bin"]
    assert load(path)["x"] == 2


def test_json_crash_between_a_saves_two_renames_keeps_the_old_file(tmp_path):
    from simrecorder.storage._location import keep_old_sidecar

    path = save({"big": np.arange(10_000.0)}, tmp_path / "x.json")
    other = save({"big": np.arange(10_000.0) + 1}, tmp_path / "new.json")
    keep_old_sidecar(path + ".bin")  # what save() does before its renames, then
    os.replace(other + ".bin", path + ".bin")  # the sidecar's rename; the crash comes
    np.testing.assert_array_equal(load(path, "big"), np.arange(10_000.0))
    save({"big": np.arange(5.0)}, tmp_path / "x.json")  # the next save tidies up
    assert sorted(os.listdir(tmp_path)) == ["new.json", "x.json", "x.json.bin"]


_UPDATER = """
import sys
import numpy as np
from simrecorder.storage import open_storage
i = 0
while True:
    i += 1
    with open_storage(sys.argv[1]) as root:  # each overwrite repacks the sidecar
        root["big"] = np.full(20_000, float(i))
        root["i"] = i
    print(i, flush=True)
"""


def test_json_killed_updates_never_lose_the_sidecar(tmp_path):
    import random
    import signal
    import subprocess
    import sys

    path = save({"big": np.zeros(20_000), "i": 0}, tmp_path / "x.json")
    rng = random.Random(16)
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", _UPDATER, path], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            child.stdout.readline()
            time.sleep(rng.uniform(0, 0.03))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        back = load(path, version_policy="ignore")
        np.testing.assert_array_equal(back["big"], np.full(20_000, float(back["i"])))


def test_json_reader_between_a_saves_two_renames_changes_nothing(tmp_path):
    """A storage open in mode 'a' that reads while another process's save() is between
    its renames reads its own data and leaves the new save whole (a review found it
    put the old sidecar back over the new one)."""
    from simrecorder.storage._api import _temp_beside
    from simrecorder.storage._location import (
        SIDECAR_SUFFIX,
        drop_kept_sidecars,
        keep_old_sidecar,
    )

    path = save({"w": np.arange(5.0)}, tmp_path / "x.json")
    reader = JSONStorage(path)  # mode 'a', the default
    assert list(reader.root) == ["w"]  # its document is read
    temp = _temp_beside(path)
    new = JSONStorage(temp, "w")
    new.root["w"] = np.arange(100.0, 105.0)
    new.close()
    keep_old_sidecar(path + SIDECAR_SUFFIX)  # the save's first steps: its sidecar is in
    os.replace(temp + SIDECAR_SUFFIX, path + SIDECAR_SUFFIX)
    np.testing.assert_array_equal(reader.root["w"], np.arange(5.0))  # its own data
    os.replace(temp, path)  # the save's document is in, and the kept copy goes
    drop_kept_sidecars(path + SIDECAR_SUFFIX)
    np.testing.assert_array_equal(reader.root["w"], np.arange(5.0))  # still readable
    reader.close()
    np.testing.assert_array_equal(load(path, "w"), np.arange(100.0, 105.0))


def test_json_reader_keeps_reading_its_sidecar_after_a_save_replaces_it(tmp_path):
    path = save({"w": np.arange(5.0), "x": 1}, tmp_path / "x.json")
    with open_storage(path, "r") as root:
        np.testing.assert_array_equal(root["w"], np.arange(5.0))
        save({"w": np.arange(100.0, 105.0), "x": 2}, path)  # another writer
        np.testing.assert_array_equal(root["w"], np.arange(5.0))  # not the new bytes
    np.testing.assert_array_equal(load(path, "w"), np.arange(100.0, 105.0))


class _CountingStorable:
    """A Storable that counts its ``_store`` calls."""

    stored = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def _store(self, group):
        type(self).stored += 1
        group["value"] = self.value

    @classmethod
    def _restore(cls, group):
        return cls(group["value"])


def test_a_storable_inside_a_list_is_stored_once(tmp_path):
    """The one-pass save leaves objects in lists to the general path before encoding
    any (a review found ``_store`` called twice when it fell back)."""
    _CountingStorable.stored = 0
    path = save(
        {"a": 1.0, "items": [_CountingStorable(3)], "big": np.zeros(1000)}, tmp_path / "x.h5"
    )
    assert _CountingStorable.stored == 1
    (back,) = load(path, "items")
    assert isinstance(back, _CountingStorable) and back.value == 3
