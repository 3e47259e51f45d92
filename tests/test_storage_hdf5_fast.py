"""The HDF5 storage's fast paths (issue 16, workload b): files made and opened through
h5py's low-level API, packs that grow, whole loads
whose small arrays are views of one copy of the pack, and files of the earlier layout."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from simrecorder.errors import StoreFormatError
from simrecorder.storage import HDF5Storage, load, open_storage, save

PACK = ".simrecorder_pack"


def _small_arrays(n: int, size: int = 100) -> dict[str, np.ndarray]:
    return {f"a{i}": np.full(size, float(i)) for i in range(n)}


def test_a_saved_pack_is_chunked_and_reads_in_plain_h5py(tmp_path):
    """Chunked, so that any simrecorder (older ones too) can grow it in an update."""
    path = save({"g": _small_arrays(3), "x": 1.5}, tmp_path / "x.h5")
    with h5py.File(path, "r") as f:
        pack = f[PACK]
        assert pack.chunks is not None and pack.maxshape == (None,)
        assert pack.shape == (3 * 800,)
        assert isinstance(f.attrs["simrecorder_storage"], str)  # JSON text, as before
        assert np.frombuffer(pack[800:1600].tobytes(), "<f8")[0] == 1.0


def test_growing_a_pack_keeps_every_array(tmp_path):
    path = save(_small_arrays(50), tmp_path / "x.h5")
    with open_storage(path) as root:
        root["new"] = np.arange(5)
    with h5py.File(path, "r") as f:
        assert f[PACK].chunks is not None
        assert f[PACK].maxshape == (None,)
    data = load(path)
    for i in range(50):
        np.testing.assert_array_equal(data[f"a{i}"], np.full(100, float(i)))
    np.testing.assert_array_equal(data["new"], np.arange(5))
    with open_storage(path) as root:  # and it grows again, now by resizing
        root["more"] = np.arange(7.0)
    np.testing.assert_array_equal(load(path, "more"), np.arange(7.0))
    np.testing.assert_array_equal(load(path, "a49"), np.full(100, 49.0))


def test_growing_a_large_pack_grows_the_file_by_little(tmp_path):
    path = save(_small_arrays(1500, 480), tmp_path / "x.h5")
    before = os.path.getsize(path)
    with open_storage(path) as root:
        root["tiny"] = np.arange(3)
    assert os.path.getsize(path) < before + (64 << 10) + (32 << 10)  # a chunk + metadata
    np.testing.assert_array_equal(load(path, "a7"), np.full(480, 7.0))


def test_a_pack_rewritten_to_its_own_length_keeps_its_length(tmp_path):
    path = save({"a": np.arange(10.0), "b": np.arange(10.0) + 1}, tmp_path / "x.h5")
    with HDF5Storage(path) as root:
        backend = root._tree.backend
        backend.write_pack((), 80, np.arange(10.0).tobytes())  # b's bytes, now 0..9
    with h5py.File(path, "r") as f:
        assert f[PACK].shape == (160,)
    np.testing.assert_array_equal(load(path, "b"), np.arange(10.0))


def test_whole_loads_give_writable_aligned_arrays_that_share_nothing_with_the_file(tmp_path):
    data = {"flags": np.array([True, False, True]), "x": np.arange(3.0), "y": np.arange(4)}
    path = save(data, tmp_path / "x.h5")  # x lies at byte 3 of the pack: unaligned
    with HDF5Storage(path, "r+") as root:
        whole = root.load()
        for name, array in whole.items():
            np.testing.assert_array_equal(array, data[name])
            assert array.flags.writeable and array.flags.aligned, name
        whole["y"][:] = -1  # the storage's own view of the pack is not changed
        np.testing.assert_array_equal(root["y"], np.arange(4))
        np.testing.assert_array_equal(root.load()["y"], np.arange(4))


def test_an_empty_array_without_a_pack_loads_on_every_backend(tmp_path):
    for suffix in (".h5", ".zarr", ".json"):
        path = save({"e": np.array([], dtype=bool)}, tmp_path / f"x{suffix}")
        got = load(path, version_policy="ignore")["e"]
        assert got.dtype == bool and got.shape == (0,)


def test_a_fixed_length_index_attribute_still_loads(tmp_path):
    """An index h5py did not write as ``str`` (another tool rewrote it as bytes) is read
    through h5py's high-level conversion."""
    path = save({"a": 1, "v": np.arange(3.0)}, tmp_path / "x.h5")
    with h5py.File(path, "r+") as f:
        text = f.attrs["simrecorder_storage"].encode("utf-8")
        del f.attrs["simrecorder_storage"]
        f.attrs.create("simrecorder_storage", np.bytes_(text))
        assert f.attrs["simrecorder_storage"].__class__ is np.bytes_
    assert load(path, version_policy="ignore")["a"] == 1
    np.testing.assert_array_equal(load(path, "v"), np.arange(3.0))


def _rewrite_as_earlier_layout(path: str) -> None:
    """The pack as the earlier code wrote it: chunked, growable."""
    with h5py.File(path, "r+") as f:
        data = f[PACK][()]
        del f[PACK]
        ds = f.create_dataset(PACK, data=data, maxshape=(None,), chunks=(max(len(data), 1),))
        ds.attrs["simrecorder_storage_array"] = 1


def test_files_of_the_earlier_chunked_layout_load_and_update(tmp_path):
    path = save({"g": _small_arrays(4), "s": "x"}, tmp_path / "x.h5")
    _rewrite_as_earlier_layout(path)
    assert load(path)["g"]["a3"][0] == 3.0
    with open_storage(path) as root:
        root["g/a9"] = np.arange(2.0)
        root["g/a0"] = np.zeros(100)
    data = load(path)
    np.testing.assert_array_equal(data["g"]["a9"], np.arange(2.0))
    np.testing.assert_array_equal(data["g"]["a0"], np.zeros(100))
    np.testing.assert_array_equal(data["g"]["a2"], np.full(100, 2.0))


def test_a_file_that_is_not_hdf5_is_named_in_the_error(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"not an HDF5 file at all")
    with pytest.raises(StoreFormatError, match=r"x\.h5.*not an HDF5 file"):
        HDF5Storage(path, "r")
    with pytest.raises(StoreFormatError, match=r"x\.h5.*not an HDF5 file"):
        HDF5Storage(path, "r+")


def test_a_damaged_pack_is_a_store_format_error_naming_the_file(tmp_path):
    path = save({"v": np.arange(3.0), "w": np.arange(2.0)}, tmp_path / "x.h5")
    with h5py.File(path, "r+") as f:
        del f[PACK]
    with pytest.raises(StoreFormatError, match=r"x\.h5"):
        load(path)


def test_a_new_file_made_through_the_low_level_api_tracks_free_space(tmp_path):
    path = save({"v": np.arange(3.0)}, tmp_path / "x.h5")
    with h5py.File(path, "r") as f:
        strategy, persist, threshold = f.id.get_create_plist().get_file_space_strategy()
    assert (strategy, persist, threshold) == (h5py.h5f.FSPACE_STRATEGY_FSM_AGGR, True, 1)


def _tree_of_every_value() -> dict[str, object]:
    from simrecorder.testing.storage import VALUES

    plain = {name: value for name, value in VALUES if _plain(value)}
    return {
        **plain,
        "nested": {"deeper": dict(plain), "floats": {"a": 1.0, "b": -2.5, "c": 1e300}},
        "nonfinite": {"a": float("nan"), "b": float("inf")},
        "one float": {"only": 0.5},
        "mixed": {"x": 1.0, "y": 2},
        "odd keys": {"a/b": 1, "": 2},
        "empty": {},
        'quote"and\\back': "é\u2028\n",
        "shapes": {"0d": np.float32(1.5), "2d": np.ones((2, 3), dtype=">i4"), "e": np.zeros(0)},
    }


def _plain(value: object) -> bool:
    """No objects and no arrays large enough to be datasets of their own."""
    if isinstance(value, np.ndarray):
        return value.nbytes < 4096 and value.dtype != object
    if isinstance(value, dict):
        return all(_plain(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic))


def test_the_text_writer_writes_what_the_document_writer_builds(tmp_path):
    import json

    from simrecorder.storage._onepass import _TextWriter, _Writer

    tree = _tree_of_every_value()
    with HDF5Storage(tmp_path / "x.h5", "w") as root:
        backend = root._tree.backend
        by_document = _Writer(backend)
        members = by_document.members(tree)
        by_text = _TextWriter(backend)
        out: list[str] = []
        by_text.members(tree, out)
    assert json.loads("".join(out)) == json.loads(json.dumps(members))
    assert by_text.floats == by_document.floats or np.allclose(
        by_text.floats, by_document.floats, equal_nan=True
    )
    assert by_text.pack == by_document.pack


def test_a_tree_of_every_value_round_trips_through_the_one_pass_save(tmp_path):
    from simrecorder.storage._onepass import dump_plain
    from simrecorder.testing.storage import assert_same

    tree = _tree_of_every_value()
    path = str(tmp_path / "x.h5")
    storage = HDF5Storage(path, "w")
    try:
        assert dump_plain(storage, tree, {"m": 1})  # the text writer took it all
        assert_same(storage.load(version_policy="ignore"), tree)  # the same storage
    finally:
        storage.close()
    assert_same(load(path, version_policy="ignore"), tree)
    reader = open_storage(path, "r")
    try:
        assert reader.metadata == {"m": 1}
    finally:
        reader.close()


@pytest.mark.parametrize("suffix", [".h5", ".zarr", ".json"])
def test_whole_loads_of_a_pack_above_the_view_limit_copy_each_array(tmp_path, suffix):
    from simrecorder.storage._core import VIEW_PACK_LIMIT

    n = VIEW_PACK_LIMIT // 800 + 10  # arrays of 800 bytes: a pack above the limit
    data = _small_arrays(n)
    path = save(data, tmp_path / f"x{suffix}")
    whole = load(path, version_policy="ignore")
    for name, array in data.items():
        np.testing.assert_array_equal(whole[name], array)
    assert whole["a0"].flags.owndata and whole["a0"].flags.writeable


def test_a_recorders_storage_pack_grows_across_flushes_of_a_shared_file(tmp_path):
    from simrecorder import HDF5DataStore, Recorder

    path = tmp_path / "run.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        rec.record("x", 1.0)
        rec.storage["a"] = np.arange(4.0)  # the pack is made at this flush
        rec.flush()
        rec.storage["b"] = np.arange(3)  # and becomes chunked at this one
        rec.flush()
        rec.record("x", 2.0)
        rec.storage["c"] = {"v": np.ones(2), "s": 1.0}
    with h5py.File(path, "r") as f:
        assert f[PACK].chunks is not None
    data = load(path, version_policy="ignore")
    np.testing.assert_array_equal(data["a"], np.arange(4.0))
    np.testing.assert_array_equal(data["b"], np.arange(3))
    np.testing.assert_array_equal(data["c"]["v"], np.ones(2))
    with HDF5DataStore(path, "r") as store:
        assert store.keys() == ["x"]  # the pack is not a series


def test_a_pack_repacked_after_deletes_keeps_the_rest(tmp_path):
    path = save(_small_arrays(400), tmp_path / "x.h5")  # a pack of 320 kB
    before = os.path.getsize(path)
    with open_storage(path) as root:
        for i in range(300):  # 240 kB wasted: the pack is rewritten on close
            del root[f"a{i}"]
    with h5py.File(path, "r") as f:
        assert f[PACK].shape[0] == 100 * 800
    data = load(path)
    assert sorted(data) == sorted(f"a{i}" for i in range(300, 400))
    np.testing.assert_array_equal(data["a399"], np.full(100, 399.0))
    assert os.path.getsize(path) <= before + (64 << 10)
