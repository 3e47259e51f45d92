"""Namespace stores (mummi+simple, mummi+taridx, fs://) under faults and odd input."""

from __future__ import annotations

import glob
import io
import os
import tarfile

import numpy as np
import pytest

from simrecorder import InvalidKeyError, Recorder, open_datastore
from simrecorder.adapters.mummi import get_io, reindex
from simrecorder.errors import StoreFormatError, StoreFullError

SCHEMES = ["mummi+simple", "mummi+taridx", "fs"]


def _url(scheme, tmp_path):
    return f"{scheme}://{tmp_path}/ns" + (".tar" if scheme == "mummi+taridx" else "")


# -- D13: glob characters are characters ----------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_glob_characters_in_keys_are_not_patterns(scheme, tmp_path):
    rec = Recorder(_url(scheme, tmp_path), max_seconds=None)
    rec.record("ab/c", 1.0)
    rec.flush()
    for i, key in enumerate(["a?", "a*", "[a]b", "a[b]"]):
        rec.record(key, float(i))
    rec.close()
    store = open_datastore(_url(scheme, tmp_path))
    assert store.keys() == sorted(["ab/c", "a?", "a*", "[a]b", "a[b]"])
    assert store.node_type("a?") == "series" and store.node_type("ab") == "group"
    np.testing.assert_array_equal(np.asarray(store.get_all("[a]b")), [2.0])
    store.close()


# -- D2/D16: keys a file system cannot hold fail at record time -----------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_overlong_key_parts_fail_at_record_time(scheme, tmp_path):
    rec = Recorder(_url(scheme, tmp_path), max_seconds=None)
    for key in ("p" * 300, "g/" + "p" * 256):
        with pytest.raises(InvalidKeyError, match="255"):
            rec.record(key, 1.0)
    rec.record("g/" + "p" * 255, 1.0)
    rec.close()
    store = open_datastore(_url(scheme, tmp_path))
    assert store.keys() == ["g/" + "p" * 255]
    assert store.local_path is not None and os.path.exists(store.local_path)
    store.close()


# -- D14: a truncated archive ---------------------------------------------------------------
def test_taridx_truncated_member_is_an_error_and_reindex_drops_it(tmp_path):
    path = str(tmp_path / "t.tar")
    taridx = get_io("taridx")
    taridx.save_files(path, ["a", "b"], [b"A" * 1000, b"B" * 5000])
    os.truncate(path, 2500)  # an interrupted copy
    assert get_io("taridx").load_files(path, ["a"]) == [b"A" * 1000]
    with pytest.raises(StoreFormatError, match=r"t\.tar.*'b'.*reindex"):
        get_io("taridx").load_files(path, ["a", "b"])
    with pytest.warns(UserWarning, match=r"'b'.*truncated"):
        assert reindex(path) == 1
    fresh = get_io("taridx")
    assert fresh.list_keys(path) == ["a"]
    fresh.save_files(path, "c", b"C" * 10)  # appends after 'a', over the cut-off member
    assert fresh.load_files(path, ["a", "c"]) == [b"A" * 1000, b"C" * 10]


def test_taridx_corrupt_index_line_names_reindex(tmp_path):
    path = str(tmp_path / "c.tar")
    get_io("taridx").save_files(path, ["a", "b"], [b"1", b"2"])
    with open(path + ".idx", "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(path + ".idx", "wb") as f:
        f.write(lines[0] + b'{"key": "b", "offs\n')
    with pytest.raises(StoreFormatError, match=r"c\.tar\.idx.*line 2.*reindex"):
        get_io("taridx").load_files(path, ["a"])
    assert reindex(path) == 2
    assert get_io("taridx").load_files(path, ["a", "b"]) == [b"1", b"2"]


# -- D17: crafted archives ------------------------------------------------------------------
def test_taridx_reindex_refuses_members_that_cannot_be_keys(tmp_path):
    path = str(tmp_path / "evil.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("good", "../evil", "/abs/evil", "pax"):
            info = tarfile.TarInfo(name)
            info.size = 4
            if name == "pax":
                info.pax_headers = {"path": "../pax"}
            tar.addfile(info, io.BytesIO(b"data"))
        link = tarfile.TarInfo("sym")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "good"
        tar.addfile(hard)
    with pytest.warns(UserWarning) as caught:
        assert reindex(path) == 1
    message = str(caught[0].message)
    for name in ("../evil", "/abs/evil", "../pax", "sym", "hard"):
        assert repr(name) in message
    taridx = get_io("taridx")
    assert taridx.list_keys(path) == ["good"]
    assert taridx.load_files(path, "good") == b"data"


# -- D17: a full disk leaves no temporary files ---------------------------------------------
def test_simple_full_disk_leaves_no_temp_files(small_disk):
    store = open_datastore(f"mummi+simple://{small_disk}/ns")
    store.append("x", np.zeros(1000))
    # the block store takes the block (queued) and its flush is declined: StoreFullError
    # names the store, the queued block stays queued (the contract's ownership rule)
    store.append_block("x", store.series_spec("x"), np.zeros((3000, 1000)))  # 24 MB
    with pytest.raises(StoreFullError, match="mummi\\+simple"):
        store.flush()
    assert glob.glob(f"{small_disk}/**/.*.tmp", recursive=True) == []
    assert glob.glob(f"{small_disk}/**/.simrecorder-tmp-*", recursive=True) == []
    reader = open_datastore(f"mummi+simple://{small_disk}/ns", mode="r")
    assert len(reader.get_all("x")) == 1  # what was flushed before stays readable
    reader.close()
    returned = store.surrender()  # a recorder would quarantine these
    assert sum(len(block) for _, _, block in returned) == 3000
    store.append("x", np.ones(1000))
    np.testing.assert_array_equal(np.asarray(store.get_all("x"))[:, 0], [0.0, 1.0])
    store.close()
