"""Object, str and bytes series read back with plain h5py and zarr (issue 13, item 4)."""

from __future__ import annotations

import h5py
import numpy as np
import zarr

import simrecorder
from simrecorder import Recorder


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
