"""``simrecorder info`` on damaged stores: one line naming the store, never a traceback;
and it lists a store without reading (or decoding) its samples."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import h5py
import pytest

from simrecorder import Recorder, open_datastore
from simrecorder.cli import main

FORMATS = {
    "hdf5": "{d}/s.h5",
    "zarr": "zarr://{d}/s.zarr",
    "zip": "{d}/s.zip",
    "mummi+simple": "mummi+simple://{d}/ns",
    "mummi+taridx": "mummi+taridx://{d}/ns.tar",
    "fs": "fs://{d}/fs",
}

#: for each format, the files ``info`` must read (damage there must be reported)
READ_BY_INFO = {
    "hdf5": ("s.h5",),
    "zarr": ("zarr.json",),
    "zip": ("s.zip",),
    "mummi+simple": (".series.json", ".attrs.json"),
    "mummi+taridx": ("ns.tar.idx",),
    "fs": (".series.json.data", ".attrs.json.data"),
}


def _build(url: str) -> None:
    with Recorder(open_datastore(url, mode="w"), max_seconds=None) as rec:
        for i in range(20):
            rec.record("a/x", float(i))
            rec.record("o", {"i": i})
            rec.record("s", f"t{i}")
        rec.set("v", 3)


def _files(directory: str) -> list[str]:
    found = (os.path.join(r, n) for r, _, names in os.walk(directory) for n in names)
    return sorted(f for f in found if not f.endswith(".lock"))


def _damage(path: str, how: str, rng: random.Random) -> None:
    size = os.path.getsize(path)
    if how == "truncate":
        os.truncate(path, size // 3)
    elif how == "flip":
        with open(path, "r+b") as f:
            for _ in range(16):
                at = rng.randrange(max(size, 1))
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([(byte[0] if byte else 0) ^ 0xFF]))
    else:  # garbage JSON, as a complete line (a torn last line is a killed writer's)
        with open(path, "wb") as f:
            f.write(rng.choice([b'{"garbage": \n', b"[1, 2, 3]\n", b"\xff\xfe not json\n"]))


def _info(url: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["info", url])
    out, err = capsys.readouterr()
    return status, out, err


def _check_one_line(status: int, err: str, url: str) -> None:
    assert "Traceback" not in err
    if status == 0:
        assert err == ""  # damage in what info does not read (sample data)
    else:
        assert err.count("\n") == 1 and url in err, err


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("how", ["truncate", "flip", "json"])
def test_info_on_damaged_files_is_one_line_naming_the_store(tmp_path, capsys, fmt, how):
    rng = random.Random(f"{fmt}-{how}")
    for attempt in range(4):
        directory = tmp_path / str(attempt)
        directory.mkdir()
        url = FORMATS[fmt].format(d=directory)
        _build(url)
        files = _files(str(directory))
        must_fail = [f for f in files if f.endswith(READ_BY_INFO[fmt])]
        if fmt == "mummi+taridx" and how == "truncate":
            # a shorter index is what a writer killed before its commit leaves: the
            # store reads as of an earlier commit; a truncated archive is damage
            must_fail = [f for f in files if f.endswith("ns.tar")]
        target = must_fail[attempt % len(must_fail)] if attempt < 2 else rng.choice(files)
        _damage(target, how, rng)
        status, _, err = _info(url, capsys)
        _check_one_line(status, err, url)
        if target in must_fail and how != "flip":  # a flip may miss what is parsed
            assert status == 1, f"{target}: {how} went unnoticed"


def test_info_in_a_process_prints_one_line_for_a_damaged_zip(tmp_path):
    path = tmp_path / "s.zip"
    _build(str(path))
    _damage(str(path), "flip", random.Random(2))  # zarr reads many members at once
    done = subprocess.run([sys.executable, "-m", "simrecorder", "info", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        assert done.stderr.count("\n") == 1 and str(path) in done.stderr
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr


def test_info_on_a_corrupt_taridx_index_line_hints_at_reindex(tmp_path, capsys):
    url = f"mummi+taridx://{tmp_path}/ns.tar"
    _build(url)
    with open(tmp_path / "ns.tar.idx", "ab") as f:
        f.write(b"{not json}\n")
    status, _, err = _info(url, capsys)
    assert status == 1 and err.count("\n") == 1 and "reindex(" in err and "ns.tar" in err


def test_info_counts_samples_without_decoding_them(tmp_path, capsys):
    """Damaged sample bytes do not stop ``info``: it reads lengths, not samples."""
    path = tmp_path / "s.h5"
    _build(str(path))
    with h5py.File(path, "r+") as f:
        data = f["o/data"]
        data[...] = 0xFF  # every object sample is now undecodable
    ns = tmp_path / "ns"
    _build(f"mummi+simple://{ns}")
    (ns / "o" / ".block-0").write_bytes(b"\xff" * 40)
    for url in (str(path), f"mummi+simple://{ns}"):
        status, out, err = _info(url, capsys)
        assert (status, err) == (0, "")
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
        assert rows["o"][1:3] == ["object", "20"] and rows["s"][1:3] == ["str", "20"]
        assert rows["a/x"][1:3] == ["dense", "20"]


def test_info_lists_a_namespace_mummi_wrote_without_simrecorder_attrs(tmp_path, capsys):
    from simrecorder import get_io

    get_io("simple").save_files(str(tmp_path / "ns"), "frame.npz", b"x")
    # holds MuMMI's files but no recorded run: one line naming it (was a KeyError)
    status, out, err = _info(f"mummi+simple://{tmp_path / 'ns'}", capsys)
    assert status != 0 and out == "" and err.count("\n") == 1 and str(tmp_path / "ns") in err
