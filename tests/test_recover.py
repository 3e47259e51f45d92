"""Recovering stores whose writer was killed."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from simrecorder import DatastoreType, HDF5DataStore, StoreFormatError, ZarrDataStore
from simrecorder.cli import main
from simrecorder.errors import StoreNotFoundError
from simrecorder.recover import clear_hdf5_consistency_flags, lookup3, recover

WRITER = (
    "import sys, time, h5py, numpy as np\n"
    "f = h5py.File(sys.argv[1], 'w', libver='latest')\n"
    "f.create_dataset('x', data=np.arange(10.0))\n"
    "f.flush()\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def killed_latest_writer(path):
    """A file left by an h5py writer with libver='latest' that was SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")


def test_lookup3_matches_hdf5_checksums(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w", libver="latest"):
        pass
    block = (tmp_path / "s.h5").read_bytes()[:48]
    assert lookup3(block[:44]) == int.from_bytes(block[44:48], "little")
    assert lookup3(b"") == 0xDEADBEEF
    assert clear_hdf5_consistency_flags(tmp_path / "s.h5") is False  # closed cleanly


def test_recover_command(tmp_path, capsys):
    path = tmp_path / "killed.h5"
    killed_latest_writer(path)
    assert main(["recover", str(path)]) == 0
    assert "cleared" in capsys.readouterr().out
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(10.0))
    assert main(["recover", str(path)]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def test_a_writer_reopens_a_killed_writers_file_by_itself(tmp_path):
    path = tmp_path / "auto.h5"
    killed_latest_writer(path)
    with pytest.raises(StoreFormatError, match="simrecorder recover"):
        HDF5DataStore(path, mode="r")  # readers never modify files
    with HDF5DataStore(path, mode="a") as store:  # a writer sees no live writer and clears the flag
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(10.0))
        store.append("y", 1.0)
        assert len(store.get_all("y")) == 1


def test_recover_rejects_what_is_not_hdf5(tmp_path, capsys):
    path = tmp_path / "x.h5"
    path.write_bytes(b"hello")
    assert main(["recover", str(path)]) == 1
    assert "cannot recover" in capsys.readouterr().err


ZIP_WRITER = (
    "import sys, time\n"
    "import numpy as np\n"
    "from simrecorder import Recorder, ZarrDataStore\n"
    "from simrecorder.options import DatastoreType\n"
    "from simrecorder._schema import SeriesSpec\n"
    "kind = DatastoreType.ZIP if sys.argv[1].endswith('.zip') else DatastoreType.DIRECTORY\n"
    "store = ZarrDataStore(sys.argv[1], datastore_type=kind, mode=sys.argv[2])\n"
    "rec = Recorder(store, max_seconds=None)\n"
    "for i in range(10):\n"
    "    rec.record('x', float(i))\n"
    "    rec.record('o', {'i': i})\n"
    "rec.flush()  # committed: 10 samples each\n"
    "store.append_block('x', SeriesSpec('dense', np.dtype('float64'), ()), np.arange(5.0))\n"
    "store.flush()  # the rows reach zarr.json; the epoch's commit never comes\n"
    "print('ready', flush=True)  # 5 samples of x written but never committed\n"
    "time.sleep(60)\n"
)


def killed_zarr_writer(path, kill=True, mode="w"):
    """A zarr store (zip or directory) whose writer committed 10 samples of 'x' and
    'o', wrote 5 more of 'x' without committing them, and was SIGKILLed (``kill``) or
    still runs (the process is returned)."""
    command = [sys.executable, "-c", ZIP_WRITER, str(path), mode]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    if kill:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return proc


def test_info_and_recover_find_the_partial_directory_of_a_killed_zip_writer(tmp_path, capsys):
    path = tmp_path / "run.zip"
    killed_zarr_writer(path)
    assert not path.exists() and (tmp_path / "run.zip.partial").is_dir()
    assert main(["info", str(path)]) == 0  # reads run.zip.partial, says so
    out, err = capsys.readouterr()
    assert "x " in out and "run.zip.partial" in err and "simrecorder recover" in err
    assert main(["recover", str(path)]) == 0
    report = capsys.readouterr().out
    assert "packed" in report and "5 uncommitted samples dropped" in report
    assert path.is_file() and not (tmp_path / "run.zip.partial").exists()
    with ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(10.0))
        assert store.get_all("o") == [{"i": i} for i in range(10)]
    assert main(["recover", str(path)]) == 0  # once packed: complete
    assert "nothing to recover" in capsys.readouterr().out


def test_recover_resumes_a_zip_writer_that_was_killed_after_resuming_an_older_zip(tmp_path):
    path = tmp_path / "run.zip"
    with ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="w") as store:
        store.append("old", 1.0)
    killed_zarr_writer(path, mode="a")  # unpacked the zip into run.zip.partial, then died
    assert path.is_file() and (tmp_path / "run.zip.partial").is_dir()
    assert main(["recover", str(path)]) == 0
    with ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="r") as store:
        assert sorted(store.keys()) == ["o", "old", "x"] and len(store.get_all("x")) == 10


def test_recover_a_packed_zip_is_complete(tmp_path, capsys):
    path = tmp_path / "run.zip"
    assert main(["demo", "--out", str(path), "--steps", "20", "--neurons", "5", "--quiet"]) == 0
    capsys.readouterr()
    stale = tmp_path / f"run.zip.{'ab' * 16}.tmp"  # a temporary zip of a killed close()
    stale.write_bytes(b"PK")
    assert main(["recover", str(path)]) == 0  # was taken for HDF5: "cannot recover"
    out = capsys.readouterr().out
    assert "complete" in out and "nothing to recover" in out and "1 leftover" in out
    assert not stale.exists()


def test_recover_leaves_a_live_zip_writer_alone(tmp_path, capsys):
    path = tmp_path / "run.zip"
    proc = killed_zarr_writer(path, kill=False)
    try:
        before = sorted(p.name for p in (tmp_path / "run.zip.partial").rglob("*"))
        assert main(["recover", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "StoreLockedError" in err and "run.zip" in err
        assert sorted(p.name for p in (tmp_path / "run.zip.partial").rglob("*")) == before
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_recover_cuts_a_killed_zarr_directory_back_to_its_last_commit(tmp_path, capsys):
    path = tmp_path / "run.zarr"
    killed_zarr_writer(path)
    stray = path / "x" / f"c.0.{'cd' * 16}.tmp"
    stray.write_bytes(b"torn")
    assert main(["recover", str(path)]) == 0
    out = capsys.readouterr().out
    assert "5 uncommitted samples dropped" in out and "removed 1 stray" in out
    assert not stray.exists()
    with ZarrDataStore(path, mode="r") as store:
        assert len(store.get_all("x")) == 10
        assert store.attrs["simrecorder_clean"] is True
    assert main(["recover", str(path)]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def test_recover_names_what_it_cannot_recover(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    assert main(["recover", str(tmp_path / "d")]) == 1
    assert "not a zarr store" in capsys.readouterr().err
    assert main(["recover", str(tmp_path / "none.zip")]) == 2
    with pytest.raises(StoreNotFoundError):
        recover(tmp_path / "none.h5")
