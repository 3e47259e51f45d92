"""zarr v3 runs recorded straight into S3 (issue 17, item 4): ``s3://bucket/run.zarr``,
against the real S3-compatible server (moto_server) the fixtures start on loopback."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest

from simrecorder import Recorder, open_datastore
from simrecorder.datastores import ZarrDataStore
from simrecorder.errors import (
    InvalidArgumentError,
    SimRecorderError,
    StoreConnectionError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from simrecorder.options import CompressionType, DatastoreType
from tests.test_cli_run import _same_run, cli
from tests.test_xarray import N, write_run

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
zarr = pytest.importorskip("zarr")

BUCKET = "simrecorder-zarr"


@pytest.fixture(scope="module")
def bucket(moto_server):
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return BUCKET


@pytest.fixture
def s3_url(request, moto_server, bucket):
    """A fresh ``s3://`` store URL per test (its own prefix in the bucket)."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"s3://{bucket}/{name}/run.zarr?endpoint_url={moto_server.url}"


def _fs(moto_server):
    return fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)


def _prefix(url):
    return url.split("://", 1)[1].split("?", 1)[0]


@pytest.mark.parametrize("compression", [CompressionType.BLOSC, CompressionType.NONE])
def test_record_then_reopen_read_only(s3_url, compression):
    store = open_datastore(s3_url, mode="w", compression_type=compression)
    assert isinstance(store, ZarrDataStore) and store.local_path is None
    with Recorder(store, max_seconds=None, attrs={"model": "LIF"}) as rec:
        for i in range(50):
            rec.record("t", 0.5 * i)
            rec.record("neurons/v", np.arange(3.0) + i)
            rec.record("label", f"s{i}")
        rec.set("params/dt", 0.5)
    with open_datastore(s3_url, mode="r") as reader:
        assert sorted(reader.keys()) == ["label", "neurons/v", "params/dt", "t"]
        np.testing.assert_array_equal(np.asarray(reader.get_all("t")), 0.5 * np.arange(50))
        v = np.asarray(reader.get_all("neurons/v"))
        np.testing.assert_array_equal(v, np.arange(3.0)[None, :] + np.arange(50)[:, None])
        assert reader.get_all("label") == [f"s{i}" for i in range(50)]
        assert reader.get("params/dt") == 0.5
        assert reader.attrs["model"] == "LIF"


def test_str_of_the_store_reopens_it(s3_url):
    with open_datastore(s3_url, mode="w") as store:
        store.append("a", 1.0)
        url = str(store)
    assert url.startswith("s3://") and "endpoint_url=" in url
    with open_datastore(url, mode="r") as again:
        assert again.get_all("a").tolist() == [1.0]
    zarr_s3 = "zarr+" + s3_url
    with open_datastore(zarr_s3, mode="r") as again:
        assert again.get_all("a").tolist() == [1.0]


def test_plain_zarr_and_xarray_read_it(s3_url, moto_server):
    write_run(s3_url)
    store = zarr.storage.FsspecStore.from_url(
        "s3://" + _prefix(s3_url),
        storage_options={"endpoint_url": moto_server.url},
        read_only=True,
    )
    group = zarr.open_group(store, mode="r", zarr_format=3)
    np.testing.assert_array_equal(group["t"][:], 0.5 * np.arange(N))
    assert group["neurons/v"].shape == (N, 3)
    np.testing.assert_array_equal(group["count"][:], np.arange(N))
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(store, consolidated=False)
    np.testing.assert_array_equal(ds["count"].values, np.arange(N))


def test_copy_an_h5_run_to_s3_zarr_and_back(tmp_path, s3_url):
    local, back = f"{tmp_path}/run.h5", f"{tmp_path}/back.h5"
    write_run(local)
    cli("copy", local, s3_url)
    _same_run(local, s3_url)
    cli("copy", s3_url, back)
    _same_run(local, back)
    with open_datastore(back, mode="r") as store:
        assert store.attrs["simrecorder_copied_from"].startswith("s3://")


@pytest.mark.parametrize("compression", [CompressionType.BLOSC, CompressionType.NONE])
def test_a_writer_dying_uncleanly_leaves_a_store_cut_back_to_the_commit(s3_url, compression):
    store = ZarrDataStore(s3_url, compression_type=compression)
    for i in range(10):
        store.append("a", float(i))
        store.append("s", f"s{i}")
    store.commit()
    spec = store.series_spec("a")
    store.append_block("a", spec, np.arange(10.0, 15.0))  # never committed
    store.append_block("late", spec, np.array([1.0]))
    store.flush()  # written and shown to readers, but not committed
    del store  # an unclean end: no close()
    gc.collect()
    with ZarrDataStore(s3_url, mode="r") as reader:  # readers see all
        assert len(reader.get_all("a")) == 15
    store = ZarrDataStore(s3_url, compression_type=compression, mode="a")
    np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(10.0))
    assert store.get_all("s") == [f"s{i}" for i in range(10)]
    assert len(store.get_all("late")) == 0
    store.append("a", 10.0)  # resumes at the committed length
    store.close()
    with ZarrDataStore(s3_url, mode="r") as reader:
        np.testing.assert_array_equal(np.asarray(reader.get_all("a")), np.arange(11.0))


def test_a_process_killed_mid_epoch_leaves_the_last_commit(s3_url):
    script = f"""
import os
import numpy as np
from simrecorder import Recorder, open_datastore
rec = Recorder(open_datastore({s3_url!r}), max_seconds=None)
for i in range(100):
    rec.record("a", float(i))
    rec.record("b", np.full(3, i))
rec.flush()  # an epoch: every series written, flushed, committed
store = rec.datastores[0]
store.append_block("a", store.series_spec("a"), np.arange(100.0, 120.0))  # half an epoch
store.flush()  # shown to readers, not committed
os._exit(0)  # then the process dies
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with open_datastore(s3_url, mode="r") as reader:
        assert len(reader.get_all("a")) == 120
    with open_datastore(s3_url, mode="a") as store:  # a writer cuts back to the commit
        assert len(store.get_all("a")) == len(store.get_all("b")) == 100


def test_modes(s3_url, moto_server):
    with pytest.raises(StoreNotFoundError, match=r"run\.zarr"):
        ZarrDataStore(s3_url, mode="r")
    assert not _fs(moto_server).exists(_prefix(s3_url))  # 'r' created nothing
    with ZarrDataStore(s3_url) as store:
        store.append("a", 1.0)
    with ZarrDataStore(s3_url) as store, pytest.raises(StoreExistsError):
        store.append("a", 9.0)  # an existing store opens read-only by default
    with ZarrDataStore(s3_url, mode="a") as store:
        store.append("a", 2.0)
    with ZarrDataStore(s3_url, mode="r") as store:
        assert store.get_all("a").tolist() == [1.0, 2.0]
    with ZarrDataStore(s3_url, mode="w") as store:
        store.append("b", 3.0)
    with ZarrDataStore(s3_url, mode="r") as store:
        assert store.keys() == ["b"]


def test_a_prefix_of_other_objects_is_left_alone(s3_url, moto_server):
    fs = _fs(moto_server)
    other = f"{_prefix(s3_url)}/notes.txt"
    fs.pipe(other, b"mine")
    for mode in ("w", "a", None):
        with pytest.raises(StoreFormatError, match=r"no zarr\.json"):
            ZarrDataStore(s3_url, mode=mode)
    assert fs.cat(other) == b"mine"


def test_only_directory_stores_live_in_s3(s3_url):
    with pytest.raises(InvalidArgumentError, match="DIRECTORY"):
        ZarrDataStore(s3_url, datastore_type=DatastoreType.ZIP)


def test_an_unreachable_endpoint_names_it():
    url = "s3://nobucket/run.zarr?endpoint_url=http://127.0.0.1:1&timeout=2"
    with pytest.raises(SimRecorderError, match=r"127\.0\.0\.1:1") as info:
        ZarrDataStore(url, mode="r")
    assert isinstance(info.value, StoreConnectionError | StoreNotFoundError)
