"""simrecorder runs as xarray Datasets and pandas DataFrames, on every backend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from simrecorder import KeyNotFoundError, Recorder, open_datastore
from simrecorder.xarray_backend import SimRecorderBackendEntrypoint, to_pandas, to_xarray

N = 40


def _urls(tmp_path, redis_server=None, redis_prefix="p"):
    urls = {
        "hdf5": f"{tmp_path}/r.h5",
        "zarr": f"{tmp_path}/r.zarr",
        "lmdb": f"{tmp_path}/r.mdb",
        "zip": f"{tmp_path}/r.zip",
        "blocks": f"blocks+file://{tmp_path}/blocks",
        "mummi+simple": f"mummi+simple://{tmp_path}/ns",
    }
    if redis_server is not None:
        urls["redis"] = f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    return urls


def write_run(url, n=N, describe=True):
    """A small run: time t, a vector series described on t, two scalar series."""
    store = open_datastore(url, mode="w")
    with Recorder(store, max_seconds=None, attrs={"model": "LIF", "seed": 7}) as rec:
        for i in range(n):
            rec.record("t", 0.5 * i)
            rec.record("neurons/v", np.arange(3.0) + i)
            rec.record("rate", float(i % 5))
            rec.record("count", i)
            rec.record("label", f"s{i}")
            rec.record("spikes", {"ids": np.arange(i % 3)})
        rec.set("params/dt", 0.5)
        if describe and store.supports_series_attrs:
            rec.describe("neurons/v", units="mV", long_name="membrane potential",
                         dims=("neuron",), coords={"neuron": [10, 20, 30]}, time="t")  # fmt: skip
            rec.describe("rate", units="Hz", time="t")
            rec.describe("t", units="ms", long_name="time")
    return store


@pytest.mark.parametrize(
    "backend", ["hdf5", "zarr", "lmdb", "zip", "blocks", "mummi+simple", "redis"]
)
def test_to_xarray_on_every_backend(backend, tmp_path, redis_server, redis_prefix):
    url = _urls(tmp_path, redis_server, redis_prefix)[backend]
    store = write_run(url)
    described = store.supports_series_attrs
    with to_xarray(url) as ds:
        v = ds["neurons/v"]
        assert v.shape == (N, 3) and v.dtype == np.float64
        assert not v.variable._in_memory  # lazy: backed by the store's view
        assert v[5, 1].item() == 6.0 and v.isel({v.dims[0]: slice(-2, None)}).values[0, 0] == N - 2
        assert ds.attrs["model"] == "LIF" and ds.attrs["seed"] == 7
        assert ds.attrs["value:params/dt"] == 0.5
        assert ds["label"].values[3] == "s3"
        assert "spikes" in ds.attrs["simrecorder_left_out"]
        if described:
            assert v.dims == ("t", "neuron") and v.attrs["units"] == "mV"
            assert ds["neuron"].values.tolist() == [10, 20, 30]
            assert ds["t"].values[2] == 1.0 and ds["t"].attrs["long_name"] == "time"
            assert ds["rate"].dims == ("t",) and ds["count"].dims == ("step",)
        else:
            assert v.dims == ("step", "neurons/v_dim1")


def test_open_dataset_engine_and_guess(tmp_path, redis_server, redis_prefix):
    path = f"{tmp_path}/r.zarr"
    write_run(path)
    with xr.open_dataset(path, engine="simrecorder") as ds:
        assert ds["neurons/v"].attrs["long_name"] == "membrane potential"
    with xr.open_dataset(
        path, engine="simrecorder", drop_variables=["label"], keys=["neurons", "t"]
    ) as ds:
        assert set(ds.data_vars) == {"neurons/v"} and "t" in ds.coords
    url = _urls(tmp_path, redis_server, redis_prefix)["redis"]
    write_run(url)
    with xr.open_dataset(url) as ds:  # redis:// is only simrecorder's: no engine needed
        assert ds["count"].values.sum() == sum(range(N))
    entry = SimRecorderBackendEntrypoint()
    assert not entry.guess_can_open(f"{tmp_path}/x.h5")  # left to h5netcdf unless asked
    assert entry.guess_can_open("zarr+lmdb:///x.mdb")


def test_to_pandas_indexes_by_the_time_coordinate(tmp_path):
    path = f"{tmp_path}/r.zarr"
    write_run(path)
    frame = to_pandas(path)
    assert isinstance(frame, pd.DataFrame)
    assert set(frame.columns) == {"rate", "count"}
    assert frame["rate"].loc[1.0] == 2.0  # t = 1.0 at step 2
    by_step = to_pandas(path, keys=["count"])
    assert by_step.index.name == "step" and by_step["count"].tolist() == list(range(N))


def test_a_series_longer_than_its_time_is_cut_to_it():
    store = open_datastore("memory://")
    rec = Recorder(store, max_seconds=None)
    for i in range(10):
        rec.record("t", float(i))
        rec.record("x", float(i))
    rec.record("x", 99.0)  # one more than t: a writer mid-step
    rec.describe("x", time="t")
    rec.flush()
    ds = to_xarray(store)
    assert ds.sizes["t"] == 10 and ds["x"].values[-1] == 9.0
    rec.close()


def test_series_of_other_lengths_get_their_own_step_dimension():
    store = open_datastore("memory://")
    with Recorder(store, max_seconds=None) as rec:
        for i in range(10):
            rec.record("a", i)
            rec.record("b", i)
        rec.record("c", 1)
    store.open()  # the data outlives close()
    ds = to_xarray(store)
    assert ds["a"].dims == ("step",) and ds["c"].dims == ("c_step",)


def test_to_xarray_names_a_missing_key(tmp_path):
    path = f"{tmp_path}/r.h5"
    write_run(path)
    with pytest.raises(KeyNotFoundError, match="'nope'"):
        to_xarray(path, keys=["nope"])
