"""HDF5DataStore: the contract suite plus HDF5 specifics."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from simrecorder import (
    HDF5DataStore,
    HDFView,
    ReadOnlyError,
    Recorder,
    StoreClosedError,
    StoreFormatError,
    StoreLockedError,
    StoreWriteError,
)
from simrecorder._schema import infer_spec
from simrecorder.datastores._hdf5 import CHUNK_CACHE_BYTES, MAX_OPEN_DATASETS, chunk_rows
from simrecorder.errors import InvalidArgumentError
from simrecorder.testing.datastore import DataStoreTests


class TestHDF5DataStore(DataStoreTests):
    def make_store(self, tmp_path):
        return HDF5DataStore(tmp_path / "data.h5")

    def reopen_store(self, store):
        store.close()
        return HDF5DataStore(store.path, mode="a")

    def read_native(self, store, key):
        with h5py.File(store.path, "r") as f:
            return f[key][()]


def test_get_all_is_an_hdfview_and_lazy(tmp_path):
    store = HDF5DataStore(tmp_path / "v.h5")
    store.append("x", np.arange(4.0))
    view = store.get_all("x")
    assert isinstance(view, HDFView)
    assert isinstance(view.dataset, h5py.Dataset)
    store.append("x", np.arange(4.0) + 1)
    assert len(view) == 2  # the view follows the dataset
    store.close()
    with pytest.raises(StoreClosedError):
        view[0]


def test_layout_is_where_a_user_looks(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(HDF5DataStore(path), attrs={"seed": 7}) as rec:
        for i in range(10):
            rec.record("train/what", np.full((10, 5, 2, 6), i, dtype=np.float32))
        rec.record("train/loss", 0.5)
        rec.record("train/phase", "warm-up ✓")
        rec.set("params/dt", 0.1)
    # a fresh interpreter without simrecorder reads the file with plain h5py
    script = (
        "import sys, h5py\n"
        f"f = h5py.File({str(path)!r}, 'r')\n"
        "assert 'simrecorder' not in sys.modules\n"
        "d = f['train']['what']\n"
        "print(d.shape, d.dtype, d[9, 0, 0, 0, 0], f['params/dt'][()], f.attrs['seed'])\n"
        "print(f['train/phase/text'].asstr()[:].tolist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["(10, 10, 5, 2, 6) float32 9.0 0.1 7", "['warm-up ✓']"]


@pytest.mark.parametrize("sample_bytes", [1, 8, 800, 8000, 80_000, 1 << 20, 8 << 20])
def test_chunks_are_sized_from_the_sample(sample_bytes):
    rows = chunk_rows(sample_bytes)
    chunk = rows * sample_bytes
    if sample_bytes <= 1 << 20:
        assert (64 << 10) <= chunk <= (1 << 20)
        assert rows > 1 or sample_bytes >= 64 << 10
    else:
        assert rows == 1  # one sample per chunk


def test_datasets_are_chunked_and_resizable(tmp_path):
    store = HDF5DataStore(tmp_path / "c.h5")
    with Recorder(store, max_seconds=None) as rec:
        for i in range(200_000):
            rec.record("fast", float(i))
        rec.record("short", 1.0)
        rec.flush()
        assert store.file["fast"].maxshape == (None,)
        assert store.file["fast"].chunks == (32768,)  # 256 KiB
        assert store.file["short"].chunks == (512,)  # a small first block: 4 KiB chunks


def test_short_series_are_not_mostly_padding(tmp_path):
    path = tmp_path / "short.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        for step in range(1000):
            for i in range(20):
                rec.record(f"s{i}", float(step))
    payload = 20 * 1000 * 8
    assert path.stat().st_size < 1.1 * payload + (64 << 10)  # data + metadata


def test_read_only_mode(tmp_path):
    path = tmp_path / "ro.h5"
    with HDF5DataStore(path) as store:
        store.append("x", 1.0)
    store = HDF5DataStore(path, mode="r")
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0])
    with pytest.raises(ReadOnlyError, match="read-only"):
        store.append("x", 2.0)
    with pytest.raises(ReadOnlyError):
        store.set("y", 2.0)
    store.close()


def test_read_only_needs_an_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        HDF5DataStore(tmp_path / "nope.h5", mode="r")


def test_mode_w_truncates(tmp_path):
    path = tmp_path / "t.h5"
    with HDF5DataStore(path) as store:
        store.append("x", 1.0)
    with HDF5DataStore(path, mode="w") as store:
        assert store.keys() == []


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(StoreFormatError, match="not an HDF5 file"):
        HDF5DataStore(path)
    assert path.read_text() == "hello"


def test_future_format_version_is_refused(tmp_path):
    path = tmp_path / "future.h5"
    with h5py.File(path, "w") as f:
        f.attrs["simrecorder_format"] = 99
    with pytest.raises(StoreFormatError, match="upgrade"):
        HDF5DataStore(path)


def test_home_is_expanded_and_parents_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = HDF5DataStore("~/output/deeper/data.h5")
    assert store.path == str(tmp_path / "output" / "deeper" / "data.h5")
    store.close()


def test_a_file_on_the_path_is_a_named_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / "file" / "deeper" / "r.h5"
    with pytest.raises(StoreWriteError, match=r"r\.h5': '[^']*/file' on its path is a file"):
        HDF5DataStore(path, mode="w")


def test_chunk_cache_per_dataset_is_bounded(tmp_path):
    """HDF5's default cache of 1 MiB per open dataset made a copy of 100 series take
    35 MB (issue 18): the store opens files with a cache of one chunk per dataset."""
    assert CHUNK_CACHE_BYTES * MAX_OPEN_DATASETS <= 16 << 20
    with Recorder(str(tmp_path / "r.h5"), max_seconds=None) as rec:
        rec.record("x", np.zeros(1000))
        rec.flush()
        store = rec.datastores[0]
        assert store.file.id.get_access_plist().get_cache()[2] == CHUNK_CACHE_BYTES
        dataset = store.get_all("x").dataset
        assert dataset.id.get_access_plist().get_chunk_cache()[1] == CHUNK_CACHE_BYTES
        assert dataset.chunks[0] * 8000 <= CHUNK_CACHE_BYTES  # one chunk fits
    with HDF5DataStore(tmp_path / "r.h5", mode="r") as reader:
        assert reader.file.id.get_access_plist().get_cache()[2] == CHUNK_CACHE_BYTES


def test_series_attrs_are_plain_hdf5_attributes(tmp_path):
    """h5py reads ``units`` as text (variable-length UTF-8) and the dims as an array
    of str, on the dataset of a dense series and the group of a str series."""
    path = tmp_path / "r.h5"
    with Recorder(str(path), max_seconds=None) as rec:
        rec.record("v", np.zeros(3))
        rec.record("label", "a")
        rec.describe("v", units="mV", long_name="Vm ü", dims=("neuron",), trial=2)
        rec.describe("label", units="1")
    with h5py.File(path, "r") as f:
        attrs = f["v"].attrs
        assert attrs["units"] == "mV" and attrs["long_name"] == "Vm ü"
        assert h5py.check_string_dtype(attrs.get_id("units").dtype).encoding == "utf-8"
        assert attrs["simrecorder_dims"].tolist() == ["neuron"]
        assert attrs["trial"] == 2
        assert f["label"].attrs["units"] == "1"


def test_series_attrs_refuse_what_hdf5_cannot_hold(tmp_path):
    with Recorder(str(tmp_path / "r.h5"), max_seconds=None) as rec:
        rec.record("v", 1.0)
        rec.flush()
        store = rec.datastores[0]
        with pytest.raises(InvalidArgumentError, match=r"'v'.*'simrecorder_kind'.*own"):
            store.set_series_attrs("v", {"simrecorder_kind": "str"})
        with pytest.raises(InvalidArgumentError, match=r"'note'.*NUL"):
            store.set_series_attrs("v", {"note": "a\x00b"})
        with pytest.raises(InvalidArgumentError, match=r"'big'.*beyond 64 bits"):
            store.set_series_attrs("v", {"dims": [], "big": 1 << 70})
        assert store.series_attrs("v") == {}  # nothing of a refused call is written
        rec.describe("v", dims=())  # a scalar series: no sample axis to name
        assert store.series_attrs("v") == {"simrecorder_dims": []}


def test_plain_h5py_files_are_readable(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["grp/x"] = np.arange(6.0).reshape(3, 2)
    with HDF5DataStore(path) as store:
        assert store.keys() == ["grp/x"]
        expected = np.arange(6.0).reshape(3, 2)
        np.testing.assert_array_equal(np.asarray(store.get_all("grp/x")), expected)


def test_compression_option(tmp_path):
    with HDF5DataStore(tmp_path / "z.h5", compression="gzip", compression_opts=4) as store:
        store.append("x", np.zeros(1000))
        assert store.file["x"].compression == "gzip"


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint16", "float16", "float64", "complex64"])
@pytest.mark.parametrize("start", [0, 3])
def test_whole_chunk_writes_match_plain_h5py(tmp_path, dtype, start):
    # samples of 64 KiB+ make chunks of a few rows, so a block spans whole chunks that
    # are written with write_direct_chunk; the head and tail take the normal path
    path = tmp_path / "direct.h5"
    sample_shape = ((64 << 10) // np.dtype(dtype).itemsize,)  # 64 KiB: 4 rows per chunk
    rng = np.random.default_rng(5)
    data = (rng.random((start + 11, *sample_shape)) * 100).astype(dtype)
    with HDF5DataStore(path) as store:
        spec = infer_spec(data[0])
        store._create("x", spec, first_rows=None)  # full-size chunks (4 rows of 64 KiB)
        for row in data[:start]:
            store.append("x", row)
        store.append_block("x", spec, data[start:])
        rows = store.file["x"].chunks[0]
        assert 1 < rows < 11
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][()], data)


def test_a_second_writer_process_gets_store_locked_error(tmp_path):
    path = tmp_path / "locked.h5"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from simrecorder import HDF5DataStore\n"
            f"store = HDF5DataStore({str(path)!r})\n"
            "store.append('x', 1.0)\n"
            "store.flush()\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "store.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=r"locked\.h5"):
            HDF5DataStore(path, mode="a")
    finally:
        holder.communicate("done\n", timeout=30)
    with HDF5DataStore(path) as store:  # free again once the writer is gone
        assert len(store.get_all("x")) == 1


def test_attrs_that_hdf5_cannot_hold_are_stored_as_json(tmp_path):
    with HDF5DataStore(tmp_path / "a.h5") as store:
        store.update_attrs({"config": {"lr": 0.1, "layers": [3, 4]}, "nothing": None})
        assert store.attrs["config"] == {"lr": 0.1, "layers": [3, 4]}  # round trip
        assert store.attrs["nothing"] is None
        assert json.loads(store.file.attrs["config"]) == {"lr": 0.1, "layers": [3, 4]}


def test_durable_mode_round_trips(tmp_path):
    path = tmp_path / "durable.h5"
    with Recorder(HDF5DataStore(path, durable=True), max_records=10) as rec:
        for i in range(25):
            rec.record("x", float(i))
    with HDF5DataStore(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(25.0))
