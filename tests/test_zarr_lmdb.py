"""ZarrDataStore over LMDB (``DatastoreType.LMDB``): the contract suite plus LMDB specifics."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from simrecorder import (
    CompressionType,
    DatastoreType,
    ReadOnlyError,
    Recorder,
    StoreFormatError,
    StoreLockedError,
    ZarrDataStore,
    open_datastore,
)
from simrecorder.datastores import LMDBStore
from simrecorder.datastores._zarr import ZarrView
from simrecorder.errors import StoreNotFoundError
from simrecorder.testing.datastore import DataStoreTests

LMDB = DatastoreType.LMDB


def _lmdb(path, **kwargs) -> ZarrDataStore:
    return ZarrDataStore(path, datastore_type=LMDB, **kwargs)


def _read_plain(path, key):
    store = LMDBStore(path, read_only=True)
    try:
        return zarr.open_group(store, mode="r")[key][...]
    finally:
        store.close()


class TestZarrLMDB(DataStoreTests):
    def make_store(self, tmp_path):
        return _lmdb(tmp_path / "data.mdb")

    def reopen_store(self, store):
        store.close()
        return _lmdb(store.path, mode="a")

    def read_native(self, store, key):
        return _read_plain(store.path, key)

    @staticmethod
    def _files_under(path):
        """As the suite's, without LMDB's lock.mdb: a reader registers its read
        transactions in it (so the writer does not reuse the pages it reads). Readers
        never write data.mdb."""
        found = DataStoreTests._files_under(path)
        return {name: info for name, info in found.items() if not name.endswith("lock.mdb")}


class TestZarrLMDBUncompressed(TestZarrLMDB):
    """Uncompressed arrays: chunks written straight into LMDB (one transaction)."""

    def make_store(self, tmp_path):
        return _lmdb(tmp_path / "raw.mdb", compression_type=CompressionType.NONE)


# -- layout ---------------------------------------------------------------------------------
def test_the_store_is_a_directory_with_data_mdb(tmp_path):
    path = tmp_path / "run.mdb"
    with Recorder(_lmdb(path)) as rec:
        rec.record("train/loss", 1.0)
    assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb"]


def test_plain_zarr_reads_it_through_lmdbstore(tmp_path):
    path = tmp_path / "plain.mdb"
    with Recorder(_lmdb(path), attrs={"seed": 3}) as rec:
        for i in range(5):
            rec.record("train/what", np.full((4, 2), i, dtype=np.int32))
        rec.record("log", "hello")
    script = (
        "import zarr\n"
        "from simrecorder.datastores import LMDBStore\n"
        f"store = LMDBStore({str(path)!r}, read_only=True)\n"
        "g = zarr.open_group(store, mode='r')\n"
        "a = g['train']['what']\n"
        "print(a.shape, a.dtype, int(a[4, 0, 0]), g.attrs['seed'], str(g['log'][0]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "(5, 4, 2) int32 4 3 hello"


@pytest.mark.parametrize("compression", list(CompressionType))
def test_every_codec_round_trips(tmp_path, compression):
    path = tmp_path / f"{compression.value}.mdb"
    data = np.random.default_rng(0).random((50, 7))
    with Recorder(_lmdb(path, compression_type=compression), max_records=16) as rec:
        for row in data:
            rec.record("x", row)
    with _lmdb(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), data)
    np.testing.assert_array_equal(_read_plain(path, "x"), data)


def test_lazy_view_follows_the_writer(tmp_path):
    with _lmdb(tmp_path / "v.mdb") as store:
        store.append("x", np.arange(3.0))
        view = store.get_all("x")
        assert isinstance(view, ZarrView) and isinstance(view.array, zarr.Array)
        store.append("x", np.arange(3.0))
        assert len(view) == 2


# -- modes, urls ----------------------------------------------------------------------------
def test_mode_r_on_a_missing_path_creates_nothing(tmp_path):
    with pytest.raises(StoreNotFoundError, match=r"missing\.mdb"):
        _lmdb(tmp_path / "missing.mdb", mode="r")
    assert not os.path.exists(tmp_path / "missing.mdb")


def test_a_reader_never_writes_data_mdb(tmp_path):
    path = tmp_path / "ro.mdb"
    with _lmdb(path) as store:
        store.append("x", 1.0)
    data = path / "data.mdb"
    before = (data.read_bytes(), os.stat(data).st_mtime_ns)
    with _lmdb(path, mode="r") as store:
        assert len(store.get_all("x")) == 1
        with pytest.raises(ReadOnlyError):
            store.append("x", 2.0)
    assert (data.read_bytes(), os.stat(data).st_mtime_ns) == before


def test_resume_appends_to_an_existing_store(tmp_path):
    path = tmp_path / "resume.mdb"
    with Recorder(_lmdb(path)) as rec:
        for i in range(3):
            rec.record("x", float(i))
    with Recorder(_lmdb(path, mode="a")) as rec:
        for i in range(3, 5):
            rec.record("x", float(i))
    with _lmdb(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(5.0))


def test_mode_w_empties_an_lmdb_zarr_store_but_no_other_directory(tmp_path):
    path = tmp_path / "w.mdb"
    with _lmdb(path) as store:
        store.append("x", 1.0)
    with _lmdb(path, mode="w") as store:
        assert store.keys() == []
    precious = tmp_path / "precious.mdb"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreFormatError, match=r"without data\.mdb"):
        _lmdb(precious, mode="w")
    assert (precious / "thesis.tex").exists()


def test_an_lmdb_environment_of_another_program_is_left_alone(tmp_path):
    import lmdb

    path = tmp_path / "other.mdb"
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(b"mine", b"precious")
    env.close()
    with pytest.raises(StoreFormatError, match="without a zarr store"):
        _lmdb(path, mode="w")
    env = lmdb.open(str(path), readonly=True)
    with env.begin() as txn:
        assert txn.get(b"mine") == b"precious"
    env.close()


def test_urls(tmp_path):
    store = open_datastore(tmp_path / "u.mdb")
    assert store.datastore_type == LMDB and str(store) == str(tmp_path / "u.mdb")
    store.close()
    store = open_datastore(f"zarr+lmdb://{tmp_path}/plain-dir")
    assert store.datastore_type == LMDB and str(store) == f"zarr+lmdb://{tmp_path}/plain-dir"
    store.close()
    # SimRecorder wrote zarr directories named *.mdb too: zarr:// keeps them directories
    store = open_datastore(f"zarr://{tmp_path}/dir.mdb")
    assert store.datastore_type == DatastoreType.DIRECTORY
    store.close()


def test_one_writer_at_a_time_and_readers_are_not_blocked(tmp_path):
    path = tmp_path / "locked.mdb"
    writer = _lmdb(path)
    writer.append("x", 1.0)
    writer.flush()
    writer.commit()
    with pytest.raises(StoreLockedError, match=r"locked\.mdb"):
        _lmdb(path, mode="a")
    with pytest.raises(StoreLockedError):
        _lmdb(path, mode="w")
    script = (
        "from simrecorder import ZarrDataStore, StoreLockedError, DatastoreType\n"
        f"try:\n    ZarrDataStore({str(path)!r}, datastore_type=DatastoreType.LMDB, mode='a')\n"
        "except StoreLockedError:\n    print('locked')\n"
        f"r = ZarrDataStore({str(path)!r}, datastore_type=DatastoreType.LMDB, mode='r')\n"
        "print(len(r.get_all('x')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["locked", "1"]
    writer.close()
    with _lmdb(path, mode="a") as again:
        assert len(again.get_all("x")) == 1


def test_a_reader_in_the_same_process_shares_the_environment(tmp_path):
    path = tmp_path / "shared.mdb"
    with _lmdb(path) as store:
        store.append("x", 1.0)
    reader = _lmdb(path, mode="r")  # opens the environment read-only first
    writer = _lmdb(path, mode="a")  # LMDB allows one open per process: shared
    writer.append("x", 2.0)
    assert len(reader.get_all("x")) == 2
    reader.close()
    writer.append("x", 3.0)
    writer.close()
    with _lmdb(path, mode="r") as store:
        assert len(store.get_all("x")) == 3


# -- LMDB's map -----------------------------------------------------------------------------
@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.BLOSC])
def test_the_map_grows_when_it_is_full(tmp_path, compression):
    path = tmp_path / "grow.mdb"
    rng = np.random.default_rng(2)
    data = rng.random((40, 64, 64))  # 1.3 MB, incompressible; the map starts at 64 KiB
    with Recorder(_lmdb(path, lmdb_map_size=1 << 16, compression_type=compression)) as rec:
        for sample in data:
            rec.record("big", sample)
    assert os.path.getsize(path / "data.mdb") > 1 << 20
    with _lmdb(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("big")), data)


def test_a_reader_follows_a_map_the_writer_grew(tmp_path):
    path = tmp_path / "follow.mdb"
    with _lmdb(path, lmdb_map_size=1 << 16) as store:
        store.append("x", np.zeros(8))
    script = (
        "import sys, numpy as np\n"
        "from simrecorder import ZarrDataStore, DatastoreType\n"
        f"w = ZarrDataStore({str(path)!r}, datastore_type=DatastoreType.LMDB, mode='a',\n"
        "                   lmdb_map_size=1 << 16)\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "for _ in range(50):\n"
        "    w.append('big', np.random.rand(128, 128))\n"
        "w.close()\n"
        "print('done', flush=True)\n"
    )
    reader = _lmdb(path, mode="r")
    assert len(reader.get_all("x")) == 1
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:  # fmt: skip
        assert child.stdout.readline().strip() == "open"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
    assert np.asarray(reader.get_all("big")).shape == (50, 128, 128)
    reader.close()


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.ZSTD])
def test_durable_mode_round_trips(tmp_path, compression):
    path = tmp_path / "durable.mdb"
    with Recorder(_lmdb(path, compression_type=compression, durable=True), max_records=10) as rec:
        for i in range(25):
            rec.record("x", float(i))
    with _lmdb(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(25.0))


def test_without_the_lmdb_package_the_error_names_the_extra(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['lmdb'] = None  # as if the lmdb package were not installed\n"
        "from simrecorder import open_datastore, MissingDependencyError\n"
        "try:\n"
        f"    open_datastore({str(tmp_path / 'x.mdb')!r})\n"
        "except MissingDependencyError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "simrecorder[lmdb]" in out and "'lmdb'" in out
    assert not os.path.exists(tmp_path / "x.mdb")


def test_a_store_replaced_under_an_open_reader_opens_fresh(tmp_path):
    import shutil

    path = tmp_path / "replaced.mdb"
    with _lmdb(path) as store:
        store.append("x", 1.0)
    reader = _lmdb(path, mode="r")  # keeps the old environment open in this process
    shutil.rmtree(path)
    with _lmdb(path) as store:  # new files at the same path: a new environment
        store.append("y", 2.0)
        store.append("y", 3.0)
    assert len(reader.get_all("x")) == 1  # the reader still reads the files it opened
    reader.close()
    with _lmdb(path, mode="r") as store:
        assert store.keys() == ["y"] and len(store.get_all("y")) == 2


def test_writes_inside_a_batch_are_one_transaction(tmp_path):
    store = LMDBStore(tmp_path / "batch.mdb")
    group = zarr.open_group(store, mode="w", zarr_format=3)
    array = group.create_array("a", shape=(0,), chunks=(4,), dtype="i4")
    with pytest.raises(KeyboardInterrupt), store.batch():
        array.append(np.arange(10, dtype=np.int32))
        raise KeyboardInterrupt
    assert zarr.open_group(store, mode="r")["a"].shape == (0,)  # nothing of it landed
    with store.batch():
        array = zarr.open_group(store, mode="a")["a"]
        array.append(np.arange(10, dtype=np.int32))
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["a"][:], np.arange(10))
    store.close()
