"""Series metadata: Recorder.describe and the set_series_attrs/series_attrs hooks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from simrecorder import (
    InvalidArgumentError,
    KeyNotFoundError,
    Recorder,
    SimRecorderError,
    open_datastore,
)
from simrecorder._describe import Description
from simrecorder.errors import SeriesAttrsNotSupportedError

URLS = {
    "memory": "memory://",
    "hdf5": "{d}/r.h5",
    "zarr": "{d}/r.zarr",
    "zip": "{d}/r.zip",
    "lmdb": "{d}/r.mdb",
    "blocks": "blocks+file://{d}/blocks",
    "mummi+simple": "mummi+simple://{d}/ns",
    "redis": "redis://127.0.0.1:{port}/0?prefix={prefix}",
    "redis+cluster": "redis+cluster://127.0.0.1:{port}?prefix={prefix}",
}
#: Stores that keep series attributes in a file or server of their own.
PERSISTENT = ["hdf5", "blocks", "mummi+simple", "redis", "redis+cluster", "zarr"]


def _url(backend, tmp_path, request) -> str:
    """The URL of a fresh store of ``backend`` (Redis: on the session's real server)."""
    port, prefix = 0, ""
    if backend == "redis":
        port = request.getfixturevalue("redis_server").port
    elif backend == "redis+cluster":
        port = request.getfixturevalue("redis_cluster").ports[0]
    if port:
        prefix = request.getfixturevalue("redis_prefix")
    return URLS[backend].format(d=tmp_path, port=port, prefix=prefix)


def _record(rec: Recorder, n: int = 5) -> None:
    for i in range(n):
        rec.record("t", 0.1 * i)
        rec.record("n/v", np.arange(3.0) * i)


@pytest.mark.parametrize("backend", sorted(URLS))
def test_describe_round_trips_or_says_the_store_cannot(backend, tmp_path, request):
    store = open_datastore(_url(backend, tmp_path, request), mode="w")
    rec = Recorder(store, max_seconds=None)
    _record(rec)
    if not store.supports_series_attrs:
        with pytest.raises(SeriesAttrsNotSupportedError, match="not supported by this store"):
            rec.describe("n/v", units="mV")
        with pytest.raises(NotImplementedError):
            store.series_attrs("n/v")
        rec.close()
        return
    rec.describe("n/v", units="mV", long_name="membrane potential", dims=("neuron",),
                 coords={"neuron": [4, 5, 6]}, time="t", note="raw", trial=3)  # fmt: skip
    _record(rec)  # more samples after the description keep it
    rec.close()
    if backend == "memory":
        store.open()  # the data outlives close()
    reread = store if backend == "memory" else open_datastore(store.url, mode="r")
    description = Description.from_attrs(reread.series_attrs("n/v"))
    assert description.units == "mV" and description.long_name == "membrane potential"
    assert description.dims == ("neuron",) and description.time == "t"
    assert description.coords["neuron"].tolist() == [4, 5, 6]
    assert description.extra == {"note": "raw", "trial": 3}
    assert len(reread.get_all("n/v")) == 10
    assert reread.series_attrs("t") == {}
    reread.close()


def test_zarr_attrs_are_plain_cf_attributes_and_dimension_names(tmp_path):
    path = tmp_path / "r.zarr"
    with Recorder(str(path), max_seconds=None) as rec:
        _record(rec)
        rec.describe("n/v", units="mV", long_name="v", dims=["neuron"], time="t")
    array = zarr.open_array(str(path / "n" / "v"), mode="r")
    assert array.attrs["units"] == "mV" and array.attrs["long_name"] == "v"
    assert array.metadata.dimension_names == ("t", "neuron")
    assert array.shape == (5, 3)


def test_describe_merges_later_calls(tmp_path):
    with Recorder(str(tmp_path / "r.zarr"), max_seconds=None) as rec:
        _record(rec)
        rec.describe("t", units="s")
        rec.describe("t", long_name="time")
        assert rec.datastores[0].series_attrs("t") == {"units": "s", "long_name": "time"}


def test_describe_refuses_what_does_not_fit():
    with Recorder("memory://", max_seconds=None) as rec:
        _record(rec)
        with pytest.raises(InvalidArgumentError, match=r"'n/v'.*2 axes"):
            rec.describe("n/v", dims=("a", "b"))
        with pytest.raises(InvalidArgumentError, match="coordinate 'neuron' needs 3"):
            rec.describe("n/v", dims=("neuron",), coords={"neuron": [1, 2]})
        with pytest.raises(InvalidArgumentError, match="names no dimension"):
            rec.describe("n/v", dims=("neuron",), coords={"cell": [1, 2, 3]})
        with pytest.raises(InvalidArgumentError, match="series itself"):
            rec.describe("t", time="t")
        with pytest.raises(SimRecorderError, match="must be str"):
            rec.describe("t", bad=[1, 2])
        with pytest.raises(KeyNotFoundError, match=r"'never'.*record a sample first"):
            rec.describe("never", units="s")
        assert rec.datastores[0].series_attrs("n/v") == {}


def test_describe_writes_buffered_samples_first():
    store = open_datastore("memory://")
    rec = Recorder(store, max_seconds=None)
    rec.record("x", 1.0)  # only in the recorder's buffer
    rec.describe("x", units="m")
    assert store.series_attrs("x") == {"units": "m"} and len(store.get_all("x")) == 1
    rec.close()


def test_describe_on_several_stores_checks_all_before_writing(tmp_path):
    memory = open_datastore("memory://")
    hdf5 = open_datastore(str(tmp_path / "r.h5"), mode="w")
    rec = Recorder(memory, hdf5, max_seconds=None)
    _record(rec)
    rec.flush()
    if hdf5.supports_series_attrs:
        rec.describe("t", units="s")
        assert hdf5.series_attrs("t")["units"] == "s"
    else:
        with pytest.raises(SeriesAttrsNotSupportedError, match="HDF5DataStore"):
            rec.describe("t", units="s")
        assert memory.series_attrs("t") == {}  # nothing written to any store
    rec.close()


def test_series_attrs_of_a_missing_series_and_read_only_stores(tmp_path):
    path = str(tmp_path / "r.zarr")
    with Recorder(path, max_seconds=None) as rec:
        _record(rec)
    with open_datastore(path, mode="r") as store:
        with pytest.raises(KeyNotFoundError, match="'nope'"):
            store.series_attrs("nope")
        with pytest.raises(PermissionError):
            store.set_series_attrs("t", {"units": "s"})


def test_coords_are_json_text_readable_without_simrecorder(tmp_path):
    path = tmp_path / "r.zarr"
    with Recorder(str(path), max_seconds=None) as rec:
        _record(rec)
        rec.describe("n/v", dims=("neuron",), coords={"neuron": np.array([7, 8, 9])})
    attrs = zarr.open_array(str(path / "n" / "v"), mode="r").attrs
    assert json.loads(attrs["simrecorder_coords"]) == {"neuron": [7, 8, 9]}


@pytest.mark.parametrize("backend", PERSISTENT)
def test_series_attrs_contract(backend, tmp_path, request):
    """Merge, plain values back (lists as lists), a missing series named, internal
    attributes left out (a str series too), kept by flush and by reopening."""
    url = _url(backend, tmp_path, request)
    store = open_datastore(url, mode="w")
    with Recorder(store, max_seconds=None) as rec:
        _record(rec)
        rec.record("label", "a")
        rec.flush()
        assert store.supports_series_attrs
        store.set_series_attrs("n/v", {"units": "mV", "simrecorder_dims": ["neuron"]})
        store.set_series_attrs("n/v", {"units": "V", "trial": 3, "ok": True, "gain": 0.5})
        store.set_series_attrs("label", {"long_name": "a label"})
        with pytest.raises(KeyNotFoundError, match="'nope'"):
            store.set_series_attrs("nope", {"units": "s"})
        with pytest.raises(KeyNotFoundError, match="'nope'"):
            store.series_attrs("nope")
        _record(rec)
    want = {"units": "V", "simrecorder_dims": ["neuron"], "trial": 3, "ok": True, "gain": 0.5}
    for mode in ("a", "r"):
        with open_datastore(store.url, mode=mode) as again:
            got = again.series_attrs("n/v")
            assert got == want
            assert [type(got[name]) for name in want] == [str, list, int, bool, float]
            assert again.series_attrs("label") == {"long_name": "a label"}
            assert again.series_attrs("t") == {}
            assert set(again.keys()) == {"t", "n/v", "label"}
    with open_datastore(store.url, mode="r") as reader:
        with pytest.raises(PermissionError):
            reader.set_series_attrs("t", {"units": "s"})


_CRASH = """
import os, sys
import numpy as np
from simrecorder import Recorder, open_datastore
store = open_datastore(sys.argv[1], mode="w")
rec = Recorder(store, max_seconds=None)
for i in range(5):
    rec.record("t", 0.1 * i)
    rec.record("n/v", np.arange(3.0) * i)
rec.flush()
store.commit()
rec.describe("n/v", units="mV", dims=("neuron",), coords={"neuron": [4, 5, 6]}, time="t")
rec.flush()
store.append_block("n/v", store.series_spec("n/v"), np.ones((5, 3)))
store.flush()  # flushed, never committed: a writer that reopens cuts it back
os._exit(1)
"""


@pytest.mark.parametrize("backend", ["hdf5", "blocks", "mummi+simple", "redis", "zarr"])
def test_series_attrs_survive_an_unclean_end(backend, tmp_path, request):
    url = _url(backend, tmp_path, request)
    subprocess.run([sys.executable, "-c", _CRASH, url], check=False, timeout=120)
    for mode in ("a", "r"):  # recovery first, then a reader
        with open_datastore(url, mode=mode) as store:
            description = Description.from_attrs(store.series_attrs("n/v"))
            assert description.units == "mV" and description.time == "t"
            assert description.dims == ("neuron",)
            assert description.coords["neuron"].tolist() == [4, 5, 6]
            if backend != "redis":  # (Redis applies each flush whole: nothing to cut)
                assert len(store.get_all("n/v")) == 5
