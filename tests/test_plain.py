"""Object, str and bytes series read back with plain h5py and zarr (issue 13, item 4)."""

from __future__ import annotations

import h5py
import numpy as np
import zarr

import simrecorder
from simrecorder import HDF5DataStore, Recorder
from simrecorder._schema import infer_spec


def _record(url: str) -> None:
    with Recorder(url) as rec:
        for i in range(5):
            rec.record("events", {"step": i, "ids": np.arange(i)})
            rec.record("label", f"step {i} ✓")
            rec.record("raw", bytes([i]) * i)


def test_plain_h5py_reader_during_a_run_and_after(tmp_path):
    path = tmp_path / "run.h5"
    _record(str(path))
    with h5py.File(path, "r", locking=False) as f:
        events = simrecorder.decode_series(f["events"])
        labels = simrecorder.decode_series(f["label"])
        raw = simrecorder.decode_series(f["raw"])
    assert [e["step"] for e in events] == list(range(5))
    np.testing.assert_array_equal(events[3]["ids"], np.arange(3))
    assert labels == [f"step {i} ✓" for i in range(5)]
    assert raw == [bytes([i]) * i for i in range(5)]


def test_plain_zarr_reader(tmp_path):
    path = tmp_path / "run.zarr"
    _record(str(path))
    group = zarr.open_group(str(path), mode="r")
    events = simrecorder.decode_series(group["events"][:], kind="object")
    assert [e["step"] for e in events] == list(range(5))
    assert list(group["label"][:]) == [f"step {i} ✓" for i in range(5)]


STRINGS = ["", "step ✓", "Grüße, 世界", "x" * 3000, "\t\n"]


def test_str_series_read_as_text_by_plain_h5py_across_resumed_runs(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(HDF5DataStore(path)) as rec:
        for item in STRINGS:
            rec.record("log/label", item)
    with h5py.File(path, "r") as f:
        text = f["log/label/text"]
        assert text.dtype == h5py.string_dtype("utf-8")
        assert text.asstr()[:].tolist() == STRINGS
        assert text.attrs["simrecorder_text_rows"] == len(STRINGS)
    with Recorder(HDF5DataStore(path, mode="a")) as rec:  # a resumed run appends
        for item in ["more", ""]:
            rec.record("log/label", item)
    with h5py.File(path, "r") as f:
        assert f["log/label/text"].asstr()[:].tolist() == [*STRINGS, "more", ""]
        assert f["log/label/text"].attrs["simrecorder_text_rows"] == len(STRINGS) + 2
    with HDF5DataStore(path, mode="r") as store:  # simrecorder itself ignores `text`
        assert store.keys() == ["log/label"]
        assert store.get_all("log/label") == [*STRINGS, "more", ""]


def test_text_of_a_resumed_run_extends_the_rows_written_before(tmp_path):
    path = tmp_path / "run.h5"
    spec = infer_spec("x")
    with HDF5DataStore(path) as store:
        store.append_block("s", spec, [str(i) for i in range(3000)])
    with h5py.File(path, "r") as f:
        chunks = f["s/text"].chunks
        first = f["s/text"].id.get_chunk_info(0)  # the first chunk, as written
    with HDF5DataStore(path, mode="a") as store:
        store.append_block("s", spec, [str(i) for i in range(3000, 3500)])
    with h5py.File(path, "r") as f:
        assert f["s/text"].asstr()[:].tolist() == [str(i) for i in range(3500)]
        assert f["s/text"].chunks == chunks and chunks[0] >= 1024  # extended, not rebuilt
        assert f["s/text"].id.get_chunk_info(0) == first


def test_str_series_with_a_nul_character_get_no_text(tmp_path):
    path = tmp_path / "run.h5"
    spec = infer_spec("x")
    with HDF5DataStore(path) as store:
        store.append_block("nul", spec, ["a", "b\x00c", "d"])
        store.append_block("ok", spec, ["a"])
    with h5py.File(path, "r") as f:
        assert f["nul"].attrs["simrecorder_text_nul_row"] == 1
        assert len(f["nul/text"]) == 0 and f["nul/text"].attrs["simrecorder_text_rows"] == 0
        assert simrecorder.decode_series(f["nul"]) == ["a", "b\x00c", "d"]
        assert f["ok/text"].asstr()[:].tolist() == ["a"]
    with HDF5DataStore(path, mode="a") as store:
        store.append_block("nul", spec, ["e"])  # (no rescan of the whole series)
        assert store.get_all("nul") == ["a", "b\x00c", "d", "e"]


def test_plain_text_false_writes_no_text_and_bytes_series_have_none(tmp_path):
    path = tmp_path / "run.h5"
    with HDF5DataStore(path, plain_text=False) as store:
        store.append_block("s", infer_spec("x"), ["a"])
    with HDF5DataStore(path, mode="a") as store:
        store.append_block("b", infer_spec(b"x"), [b"a"])
    with h5py.File(path, "r") as f:
        assert "text" not in f["s"] and "text" not in f["b"]
