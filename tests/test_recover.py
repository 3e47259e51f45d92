"""Recovering stores whose writer was killed."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, StoreFormatError
from simrecorder.cli import main
from simrecorder.recover import clear_hdf5_consistency_flags, lookup3

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
