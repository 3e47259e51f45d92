"""simrecorder._copy.copy_store, the engine of ``simrecorder copy``, in process:
bounded memory, every kind of series, appending, verification."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from simrecorder import Recorder, SchemaError, StoreExistsError, StoreWriteError, open_datastore
from simrecorder._copy import BLOCK_BYTES, _verify, copy_store, select_keys
from simrecorder._schema import infer_spec


def test_copy_memory_stays_a_few_blocks(tmp_path):
    src = open_datastore(f"{tmp_path}/big.zarr", mode="w")
    spec = infer_spec(np.zeros(16))
    for start in range(0, 400_000, 50_000):  # 51 MB of samples
        src.append_block("x", spec, np.full((50_000, 16), start, dtype=np.float64))
    src.close()
    with open_datastore(f"{tmp_path}/big.zarr", mode="r") as source:
        destination = open_datastore(f"{tmp_path}/big.h5", mode="w")
        tracemalloc.start()
        try:
            copy_store(source, destination)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        destination.close()
    assert peak < 6 * BLOCK_BYTES, f"peak {peak / 1e6:.1f} MB"
    with open_datastore(f"{tmp_path}/big.h5", mode="r") as store:
        x = store.get_all("x")
        assert x.shape == (400_000, 16) and x[-1, 0] == 350_000 and x[49_999, 3] == 0


def test_copy_every_kind_of_series_and_values(tmp_path):
    source = open_datastore("memory://")
    with Recorder(source, max_seconds=None, attrs={"run": "a"}) as rec:
        for i in range(5000):
            rec.record("dense", np.arange(3, dtype=np.int16) + i)
            rec.record("text", f"row {i}")
            rec.record("raw", bytes([i % 256]) * 3)
            rec.record("obj", {"i": i, "ids": np.arange(i % 4)})
        rec.set("param", {"a": [1, 2]})
        rec.describe("dense", units="count", dims=("axis",))
    source.open()
    destination = open_datastore(f"{tmp_path}/all.zarr", mode="w")
    report = copy_store(source, destination)
    assert report.series == {"dense": 5000, "obj": 5000, "raw": 5000, "text": 5000}
    assert report.values == ["param"] and report.nbytes == 5000 * 6
    assert destination.get_all("text")[4321] == "row 4321"
    assert destination.get_all("raw")[300] == bytes([300 % 256]) * 3
    assert destination.get_all("obj")[7]["ids"].tolist() == [0, 1, 2]
    assert destination.get("param") == {"a": [1, 2]}
    assert destination.series_attrs("dense") == source.series_attrs("dense")
    assert destination.attrs["run"] == "a" and destination.attrs["simrecorder_copied_from"]
    destination.close()


def test_copy_refuses_appends_and_checks_specs(tmp_path):
    source = open_datastore("memory://")
    source.append("x", 1.0)
    destination = open_datastore(f"{tmp_path}/d.h5", mode="w")
    copy_store(source, destination)
    with pytest.raises(StoreExistsError, match="not empty"):
        copy_store(source, destination)
    copy_store(source, destination, append=True)
    assert len(destination.get_all("x")) == 2
    other = open_datastore("memory://")
    other.append("x", 1)  # int64, not float64
    with pytest.raises(SchemaError, match=r"'x'.*cannot append"):
        copy_store(other, destination, append=True)
    destination.close()


def test_copy_selects_keys_by_glob():
    source = open_datastore("memory://")
    for key in ("a/x", "a/y", "b/x", "c"):
        source.append(key, 1.0)
    assert select_keys(source, ["a"]) == ["a/x", "a/y"]
    assert select_keys(source, ["*/x"]) == ["a/x", "b/x"]
    with pytest.raises(KeyError, match="nothing"):
        select_keys(source, ["nothing"])


def test_verify_names_the_series_that_came_out_short():
    store = open_datastore("memory://")
    store.append("x", 1.0)
    with pytest.raises(StoreWriteError, match="'x' has 1 samples, expected 3"):
        _verify(store, {"x": 3})


def test_copy_of_many_series_into_hdf5_reopens_it_without_a_trace(tmp_path):
    source = open_datastore("memory://")
    with Recorder(source, max_seconds=None) as rec:
        for i in range(40):  # more than REOPEN_SERIES: the destination is reopened twice
            rec.record(f"s{i:02d}", float(i))
            rec.describe(f"s{i:02d}", units="V")
    source.open()
    with open_datastore(f"{tmp_path}/many.h5", mode="w") as destination:
        report = copy_store(source, destination)
    assert report.samples == 40
    with open_datastore(f"{tmp_path}/many.h5", mode="r") as store:
        assert [float(np.asarray(store.get_all(k))[0]) for k in store.keys()] == list(range(40))
        assert "simrecorder_resumes" not in store.attrs  # reopening is no resumed run
