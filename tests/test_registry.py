"""open_datastore and the lazy registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simrecorder import (
    HDF5DataStore,
    InMemoryDataStore,
    MissingDependencyError,
    open_datastore,
)
from simrecorder._registry import Entry
from simrecorder.datastores.registry import known_protocols


def test_memory_url():
    store = open_datastore("memory://")
    assert isinstance(store, InMemoryDataStore) and str(store) == "memory://"


@pytest.mark.parametrize("name", ["run.h5", "run.hdf5", "RUN.H5"])
def test_hdf5_by_suffix(tmp_path, name):
    store = open_datastore(tmp_path / name)
    assert isinstance(store, HDF5DataStore)
    assert str(store) == str(tmp_path / name)
    store.close()


def test_hdf5_by_scheme_round_trips(tmp_path):
    url = f"hdf5://{tmp_path}/run.data"
    store = open_datastore(url)
    assert isinstance(store, HDF5DataStore) and str(store) == url
    assert repr(store) == f"HDF5DataStore({url!r})"
    store.close()


def test_kwargs_reach_the_store(tmp_path):
    path = tmp_path / "r.h5"
    HDF5DataStore(path).close()
    store = open_datastore(str(path), mode="r")
    assert store.read_only
    store.close()


def test_unknown_urls():
    with pytest.raises(ValueError, match="unknown data store protocol"):
        open_datastore("ftp://x")
    with pytest.raises(ValueError, match="cannot tell"):
        open_datastore("run.csv")


def test_every_design_protocol_is_known():
    for scheme in [
        "memory",
        "hdf5",
        "zarr",
        "zarr+zip",
        "zarr+lmdb",
        "redis",
        "redis+cluster",
        "fs",
        "mummi+simple",
        "mummi+taridx",
        "mummi+redis",
    ]:
        assert scheme in known_protocols()


def test_a_missing_module_of_our_own_is_not_masked(monkeypatch):
    from simrecorder.datastores import registry

    monkeypatch.setitem(registry._REGISTRY, "later", Entry("simrecorder.nope:X", None))
    with pytest.raises(ModuleNotFoundError, match=r"simrecorder\.nope"):
        open_datastore("later://x")


def test_a_missing_third_party_package_names_the_extra(monkeypatch):
    from simrecorder.datastores import registry

    monkeypatch.setitem(registry._REGISTRY, "ext", Entry("no_such_pkg_xyz:X", "zarr"))
    with pytest.raises(MissingDependencyError, match=r"simrecorder\[zarr\]"):
        open_datastore("ext://x")


def test_importing_a_backend_without_its_extra_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['zarr'] = None  # as if zarr were not installed\n"
        "import simrecorder\n"
        "try:\n"
        "    simrecorder.ZarrDataStore\n"
        "except simrecorder.MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "simrecorder[zarr]" in out.stdout


def test_unknown_urls_are_named_errors():
    from simrecorder.errors import UnknownDataStoreError

    with pytest.raises(UnknownDataStoreError):
        open_datastore("ftp://x")


def test_missing_dependency_names_the_extra():
    assert issubclass(MissingDependencyError, ImportError)


def test_import_is_light():
    code = (
        "import sys, simrecorder\n"
        "from simrecorder import Recorder, InMemoryDataStore, open_datastore\n"
        "heavy = [m for m in ('h5py', 'zarr', 'redis', 'lmdb') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "kind"),
    [("run.mdb", "lmdb"), ("zarr+lmdb://{tmp}/plain", "lmdb"), ("zarr://{tmp}/d.mdb", "directory"),
     ("run.zip", "zip"), ("zarr+zip://{tmp}/plain-zip", "zip"), ("run.zarr", "directory")],
)  # fmt: skip
def test_zarr_urls_pick_the_store_kind_and_round_trip(tmp_path, url, kind):
    url = url.format(tmp=tmp_path) if "{tmp}" in url else str(tmp_path / url)
    store = open_datastore(url)
    assert store.datastore_type.value == kind and str(store) == url
    store.close()
    with open_datastore(str(store), mode="r") as again:
        assert again.datastore_type.value == kind
