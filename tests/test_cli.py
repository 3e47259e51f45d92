"""The simrecorder command."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, open_datastore
from simrecorder.cli import main


def test_demo_records_a_simulation(tmp_path, capsys):
    out = tmp_path / "demo.h5"
    assert main(["demo", "--out", str(out), "--steps", "300", "--neurons", "200", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "neurons/v" in text and "samples/s" in text and "Hz" in text
    with h5py.File(out, "r") as f:
        assert f["neurons/v"].shape == (300, 200)
        assert f["population/rate_hz"].shape == (300,)
        assert f.attrs["model"].startswith("LIF")
    with HDF5DataStore(out, mode="r") as store:
        spikes = store.get_all("neurons/spikes")
        assert len(spikes) == 300 and set(spikes[0]) == {"t_ms", "ids"}
        counts = np.asarray(store.get_all("population/spike_count"))
        assert [len(s["ids"]) for s in spikes] == list(counts)


def test_demo_runs_twice_on_the_same_file(tmp_path):
    out = str(tmp_path / "again.h5")
    for _ in range(2):
        assert main(["demo", "--out", out, "--steps", "50", "--neurons", "50", "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        assert f["neurons/v"].shape == (50, 50)


@pytest.mark.parametrize(
    "url",
    ["zarr://{d}/again.zarr", "{d}/again.zip", "mummi+simple://{d}/ns", "fs://{d}/fs"],
)
def test_demo_replaces_the_last_run_on_every_backend(tmp_path, url):
    out = url.format(d=tmp_path)
    for _ in range(2):
        assert main(["demo", "--out", out, "--steps", "30", "--neurons", "10", "--quiet"]) == 0
    with open_datastore(out, mode="r") as store:
        assert len(store.get_all("neurons/v")) == 30
        assert len(store.get_all("neurons/spikes")) == 30


def _tree(path):
    return {
        os.path.join(root, name): os.lstat(os.path.join(root, name)).st_mtime_ns
        for root, dirs, files in os.walk(path)
        for name in dirs + files
    }


@pytest.mark.parametrize(
    "url", ["zarr://{d}/typo", "{d}/typo.zip", "mummi+simple://{d}/typo", "fs://{d}/typo"]
)
def test_info_on_a_missing_store_is_one_line_and_creates_nothing(tmp_path, capsys, url):
    assert main(["info", url.format(d=tmp_path)]) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "typo" in err
    assert os.listdir(tmp_path) == []


def test_info_reads_a_zarr_store_without_writing(tmp_path, capsys):
    out = str(tmp_path / "run.zarr")
    assert main(["demo", "--out", out, "--steps", "20", "--neurons", "10", "--quiet"]) == 0
    before = _tree(tmp_path)
    capsys.readouterr()
    assert main(["info", f"zarr://{out}"]) == 0
    assert "neurons/v" in capsys.readouterr().out
    assert _tree(tmp_path) == before


def test_demo_into_memory(capsys):
    assert main(["demo", "--out", "memory://", "--steps", "20", "--neurons", "20", "--quiet"]) == 0
    assert "neurons/v" in capsys.readouterr().out


def test_info_and_console_script(tmp_path):
    out = tmp_path / "i.h5"
    main(["demo", "--out", str(out), "--steps", "10", "--neurons", "10", "--quiet"])
    proc = subprocess.run(
        [sys.executable, "-m", "simrecorder", "info", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "population/spike_count" in proc.stdout and "simrecorder_version" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "simrecorder", "info", str(tmp_path / "no.h5")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_info_into_a_closed_pipe_prints_no_traceback(tmp_path):
    import subprocess
    import sys

    from simrecorder import Recorder

    path = tmp_path / "many.h5"
    with Recorder(str(path)) as rec:
        for i in range(300):
            rec.set(f"k{i:03d}", i)
    command = f"{sys.executable} -m simrecorder info {path} | head -n 1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_info_on_a_damaged_store_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.h5"
    path.write_bytes(b"not hdf5 at all" * 100)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "StoreFormatError" in err
