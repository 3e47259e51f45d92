"""MuMMI-style namespace I/O: one contract for simple, taridx and redis, plus specifics."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from simrecorder import InvalidKeyError, Recorder, get_io, open_datastore
from simrecorder.adapters._mummi_store import (
    RedisNamespaceDataStore,
    SimpleDataStore,
    TaridxDataStore,
)
from simrecorder.adapters.mummi import read_npz, tar_names
from simrecorder.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    KeyNotFoundError,
    StoreConnectionError,
)
from simrecorder.testing.datastore import DataStoreTests

KEYS = ["a/x", "b/x", "x", "x.npz", "data-1.npz", "data-2.npz", "sub/deep/y.npz", "ünï.npz"]
PATTERNS = {
    "*": sorted(KEYS),
    "*x": ["a/x", "b/x", "x"],
    "?/x": ["a/x", "b/x"],
    "[ab]/x": ["a/x", "b/x"],
    "data-*.npz": ["data-1.npz", "data-2.npz"],
    "*.npz": ["data-1.npz", "data-2.npz", "sub/deep/y.npz", "x.npz", "ünï.npz"],
    "sub/*": ["sub/deep/y.npz"],
    "nothing*": [],
}


@pytest.fixture(params=["simple", "taridx", "redis"])
def io_ns(request, tmp_path, redis_server, redis_prefix):
    if request.param == "redis":
        io = get_io("redis", url=f"redis://127.0.0.1:{redis_server.port}/0")
        return io, redis_prefix
    suffix = ".tar" if request.param == "taridx" else ""
    return get_io(request.param), str(tmp_path / f"ns{suffix}")


def test_save_load_and_missing_keys(io_ns):
    io, ns = io_ns
    assert io.check_environment() and not io.namespace_exists(ns)
    io.save_files(ns, "one", b"\x00\x01")
    io.save_files(ns, ["two", "dir/three"], [b"2", "drei ✓"])
    assert io.namespace_exists(ns)
    assert io.load_files(ns, "one") == b"\x00\x01"
    assert io.load_files(ns, ["dir/three", "missing", "two"]) == ["drei ✓".encode(), None, b"2"]
    with pytest.raises(KeyError, match="missing"):
        io.load_files(ns, "missing")
    assert io.file_exists(ns, "two") and not io.file_exists(ns, "missing")
    assert io.files_exist(ns, ["one", "nope"]) == [True, False]
    with pytest.raises(ValueError):
        io.save_files(ns, ["a", "b"], [b"1"])
    io.save_files(ns, "one", b"rewritten")
    assert io.load_files(ns, "one") == b"rewritten"


def test_list_keys_is_one_dialect_everywhere(io_ns):
    io, ns = io_ns
    io.save_files(ns, KEYS, [k.encode() for k in KEYS])
    for pattern, expected in PATTERNS.items():
        assert io.list_keys(ns, pattern) == expected, pattern


def test_remove_and_move(io_ns):
    io, ns = io_ns
    io.save_files(ns, ["job1.npz", "d/job2.npz", "keep"], [b"1", b"2", b"3"])
    assert io.remove_files(ns, "keep") is True
    with pytest.raises(KeyError):
        io.remove_files(ns, "keep")
    assert io.remove_files(ns, ["keep", "job1.npz"]) == [False, True]
    io.save_files(ns, "job1.npz", b"1")
    assert io.move_key(ns, "job1") == "done-job1.npz"
    assert io.move_key(ns, "d/job2.npz", prefix="fail") == "d/fail-job2.npz"
    assert io.list_keys(ns, "*") == ["d/fail-job2.npz", "done-job1.npz"]
    assert io.load_files(ns, "done-job1.npz") == b"1"
    with pytest.raises(KeyError):
        io.move_key(ns, "job1")


def test_npz(io_ns):
    io, ns = io_ns
    data = {"pos": np.arange(6.0).reshape(2, 3), "ids": np.arange(3)}
    io.save_npz(ns, "frame", data)
    io.save_npz(ns, ["f1.npz", "f2"], [data, data])
    assert io.file_exists(ns, "frame.npz")
    got = io.load_npz(ns, "frame")
    np.testing.assert_array_equal(got["pos"], data["pos"])
    assert [g is None for g in io.load_npz(ns, ["f1", "f2.npz", "f3"])] == [False, False, True]
    io.save_npz(ns, "pickled", {"o": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        io.load_npz(ns, "pickled")
    unsafe = functools.partial(read_npz, allow_pickle=True)
    assert io.load_npz(ns, "pickled", reader_func=unsafe)["o"][0] == {"a": 1}


@pytest.mark.parametrize("key", ["../evil", "/etc/x", "a/../../x", "", "a\x00b", "a//b"])
def test_keys_never_escape(io_ns, tmp_path, key):
    io, ns = io_ns
    with pytest.raises(InvalidKeyError):
        io.save_files(ns, key, b"x")
    with pytest.raises(InvalidKeyError):
        io.load_files(ns, key)
    assert not (tmp_path / "evil").exists() and not os.path.exists("/etc/x")


def test_symlinks_do_not_lead_out(tmp_path):
    io = get_io("simple")
    ns = tmp_path / "ns"
    ns.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", ns / "link")
    with pytest.raises(InvalidKeyError, match="leaves"):
        io.save_files(str(ns), "link/x", b"x")
    assert not (tmp_path / "outside" / "x").exists()


def test_missing_keys_and_bad_arguments_are_named_errors_and_builtins(io_ns):
    io, ns = io_ns
    io.save_files(ns, "here", b"1")
    for call in (
        lambda: io.load_files(ns, "gone"),
        lambda: io.remove_files(ns, "gone"),
        lambda: io.move_key(ns, "gone"),
    ):
        with pytest.raises(KeyNotFoundError, match=r"'gone.*' not in namespace") as caught:
            call()
        assert isinstance(caught.value, KeyError)  # MuMMI code catches KeyError
    with pytest.raises(InvalidArgumentError, match="save_files") as caught:
        io.save_files(ns, ["a", "b"], [b"1"])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidArgumentError, match="load_files"):
        io.load_files(ns, ("a", "b"))
    with pytest.raises(ArgumentTypeError, match=r"'a'.*int") as caught:
        io.save_files(ns, "a", 3)
    assert isinstance(caught.value, TypeError)


def test_redis_io_without_a_server_raises_store_connection_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    io = get_io("redis", url=f"redis://127.0.0.1:{port}/0")
    for call in (
        io.check_environment,
        lambda: io.file_exists("ns", "k"),
        lambda: io.list_keys("ns"),
        lambda: io.save_files("ns", "k", b"1"),
        lambda: io.load_files("ns", ["k"]),
        lambda: io.remove_files("ns", ["k"]),
        lambda: io.namespace_exists("ns"),
    ):
        with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}") as caught:
            call()
        assert isinstance(caught.value, ConnectionError)  # the builtin, not redis-py's


def _tar_xf(archive, into):
    """Extract ``archive`` with the real ``tar`` binary; return {name: bytes}."""
    into.mkdir()
    done = subprocess.run(["tar", "xf", str(archive), "-C", str(into)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stderr == ""  # no "unknown extended header keyword" warnings either
    found = {}
    for root, _dirs, files in os.walk(into):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), into)] = f.read()
    return found


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_tar_xf_of_a_taridx_archive_gives_exactly_the_live_keys(tmp_path):
    io, ns = get_io("taridx"), str(tmp_path / "runs" / "ns1.tar")
    frames = [{"pos": np.arange(3.0)}, {"pos": np.arange(4.0)}]
    io.save_npz(ns, ["frame1", "frame2"], frames)  # the README's example
    assert io.move_key(ns, "frame1") == "done-frame1.npz"
    io.save_files(ns, ["gone", "twice", "deep/" + "n" * 150], [b"g1", b"t1", b"long"])
    io.save_files(ns, ["gone", "twice"], [b"g2", b"t2"])
    io.remove_files(ns, "gone")  # both of its versions must stay deleted
    live = {key: io.load_files(ns, key) for key in io.list_keys(ns)}
    assert sorted(live) == ["deep/" + "n" * 150, "done-frame1.npz", "frame2.npz", "twice"]
    assert _tar_xf(ns, tmp_path / "x") == live  # no 0-byte frame1.npz, no stale 'gone'
    assert io.load_npz(ns, "done-frame1")["pos"].tolist() == [0.0, 1.0, 2.0]
    assert sorted(tar_names(ns)) == sorted([*live, "twice"])  # 'twice' twice: 2 versions
    assert get_io("taridx").reindex(ns) == 4  # the tar alone still says what is deleted
    assert get_io("taridx").list_keys(ns) == sorted(live)
    io.save_files(ns, "gone", b"back")  # a deleted key can come back
    assert _tar_xf(ns, tmp_path / "y")["gone"] == b"back"
    assert io.compact(ns) == 5
    assert _tar_xf(ns, tmp_path / "z") == {**live, "gone": b"back"}


# -- taridx --------------------------------------------------------------------------------
def test_taridx_is_a_standard_tar_with_long_and_unicode_names(tmp_path):
    io, ns = get_io("taridx"), str(tmp_path / "arch.tar")
    long_key = "deep/" + "n" * 150 + "/ünïcødé-" + "x" * 120 + ".bin"
    io.save_files(ns, [long_key, "small"], [b"payload-long", b"s"])
    assert io.load_files(ns, long_key) == b"payload-long"  # the offset after PAX headers
    with tarfile.open(ns) as tar:  # tarfile (and tar tf) read it
        assert tar.extractfile(long_key).read() == b"payload-long"
    assert sorted(tar_names(ns)) == sorted([long_key, "small"])


def test_taridx_rewrite_delete_compact_reindex(tmp_path):
    io, ns = get_io("taridx"), str(tmp_path / "c.tar")
    io.save_files(ns, ["a", "b", "c"], [b"1", b"2", b"3"])
    io.save_files(ns, "a", b"new")
    io.remove_files(ns, "b")
    assert io.list_keys(ns) == ["a", "c"] and io.load_files(ns, "a") == b"new"
    assert io.reindex(ns) == 2  # from the tar alone
    assert io.load_files(ns, ["a", "b", "c"]) == [b"new", None, b"3"]
    size = os.path.getsize(ns)
    assert io.compact(ns) == 2
    assert sorted(tar_names(ns)) == ["a", "c"] and os.path.getsize(ns) < size
    assert io.load_files(ns, ["a", "c"]) == [b"new", b"3"]


def test_taridx_torn_append_is_invisible_and_overwritten(tmp_path):
    io, ns = get_io("taridx"), str(tmp_path / "t.tar")
    io.save_files(ns, "a", b"1")
    with open(ns, "ab") as f:  # a crash after writing data, before the index line
        f.write(b"garbage" * 100)
    with open(ns + ".idx", "ab") as f:
        f.write(b'{"key": "torn"')  # and a torn index line
    io2 = get_io("taridx")
    assert io2.list_keys(ns) == ["a"]
    io2.save_files(ns, "b", b"2")
    assert io2.load_files(ns, ["a", "b"]) == [b"1", b"2"]


WRITER = (
    "import sys\nfrom simrecorder import get_io\n"
    "io = get_io('taridx')\n"
    "for i in range(300):\n"
    "    io.save_files(sys.argv[1], f'w{sys.argv[2]}/k{i}', f'{sys.argv[2]}-{i}'.encode())\n"
)


def test_taridx_two_writer_processes(tmp_path):
    ns = str(tmp_path / "shared.tar")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, ns, str(w)]) for w in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    io = get_io("taridx")
    keys = io.list_keys(ns, "*")
    assert len(keys) == 600
    assert io.load_files(ns, "w1/k299") == b"1-299" and io.load_files(ns, "w0/k0") == b"0-0"
    assert len(tar_names(ns)) == 600


def test_taridx_many_keys_and_cached_index(tmp_path):
    io, ns = get_io("taridx"), str(tmp_path / "big.tar")
    keys = [f"k{i:06d}" for i in range(100_000)]
    io.save_files(ns, keys, [b"x"] * len(keys))
    fresh = get_io("taridx")
    start = time.perf_counter()
    found = fresh.list_keys(ns, "k0999*")
    seconds = time.perf_counter() - start
    print(f"list_keys over 1e5 keys (index loaded from disk): {seconds * 1e3:.0f} ms")
    assert len(found) == 100
    index = fresh._index(ns)
    read_upto = index._read_upto
    assert all(fresh.file_exists(ns, k) for k in keys[:1000])
    assert fresh._index(ns) is index and index._read_upto == read_upto  # not reread


# -- checkpoints and signals ------------------------------------------------------------------
def test_checkpoints(tmp_path):
    io = get_io("simple")
    path = str(tmp_path / "ckpt.yaml")
    state = {"step": 1, "jobs": ["a"]}
    io.save_checkpoint(path, state)
    assert state == {"step": 1, "jobs": ["a"]}  # the caller's dict is not changed
    io.save_checkpoint(path, {"step": 2})
    assert io.load_checkpoint(path)["step"] == 2
    with open(path + ".bak") as f:
        assert json.load(f)["step"] == 1  # a copy of the previous checkpoint
    # a kill between the backup and the write leaves a torn live file
    with open(path, "w") as f:
        f.write('{"step": 3, "jo')
    assert io.load_checkpoint(path)["step"] == 1
    os.remove(path)
    assert io.load_checkpoint(path)["step"] == 1
    assert io.load_checkpoint(str(tmp_path / "none.yaml")) == {}


def test_timestamped_checkpoints_are_cleaned_up(tmp_path):
    io = get_io("simple")
    path = str(tmp_path / "c.json")
    for step in range(5):
        io.save_checkpoint(path, {"step": step}, use_tstamp=True, cleanup=True,
                           keep_checkpoint=2)  # fmt: skip
    backups = sorted(p for p in os.listdir(tmp_path) if ".bak." in p)
    assert len(backups) == 2 and io.load_checkpoint(path)["step"] == 4


def test_signals(tmp_path):
    io = get_io("simple")
    assert not io.test_signal(str(tmp_path), "stop")
    io.send_signal(str(tmp_path), "stop")
    assert io.test_signal(str(tmp_path), "stop") and not io.test_signal(str(tmp_path), "")


# -- as Recorder data stores ------------------------------------------------------------------
class TestSimpleDataStore(DataStoreTests):
    def make_store(self, tmp_path):
        return SimpleDataStore(str(tmp_path / "ns"))

    def reopen_store(self, store):
        store.close()
        return SimpleDataStore(store.namespace, mode="a")


class TestTaridxDataStore(DataStoreTests):
    def make_store(self, tmp_path):
        return TaridxDataStore(str(tmp_path / "ns.tar"))

    def reopen_store(self, store):
        store.close()
        return TaridxDataStore(store.namespace, mode="a")


class TestRedisNamespaceDataStore(DataStoreTests):
    """``mummi+redis://``: the contract on a MuMMI Redis namespace (a real server)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_server, redis_prefix):
        self.redis_url = f"{redis_server.url}/0"
        self.namespace = f"{redis_prefix}/ns"

    def make_store(self, tmp_path):
        return RedisNamespaceDataStore(self.namespace, url=self.redis_url)

    def reopen_store(self, store):
        store.close()
        return open_datastore(store.url, mode="a")


@pytest.mark.parametrize("scheme", ["mummi+simple", "mummi+taridx", "mummi+redis"])
def test_recording_through_a_namespace(scheme, tmp_path, redis_server, redis_prefix):
    if scheme == "mummi+redis":
        url = f"{scheme}://{redis_prefix}?url=redis://127.0.0.1:{redis_server.port}/0"
    else:
        url = f"{scheme}://{tmp_path}/ns" + (".tar" if "taridx" in scheme else "")
    arrays = np.random.default_rng(0).random((10, 10, 5, 2, 6))
    with Recorder(url, max_records=3) as rec:
        for a in arrays:
            rec.record("train/what", a)
            rec.record("events", [a[0, 0], {"n": 1}])
    with Recorder(open_datastore(url)) as rec:
        np.testing.assert_array_equal(np.asarray(rec.get_all("train/what")), arrays)
        events = rec.get_all("events")
        assert len(events) == 10 and events[0][1] == {"n": 1}
        np.testing.assert_array_equal(events[3][0], arrays[3, 0, 0])


# -- on the Location layer --------------------------------------------------------------------
def test_glob_characters_in_keys_never_give_false_matches(io_ns):
    """D13 at the I/O level: an escaped pattern matches only its literal key."""
    import glob

    io, ns = io_ns
    io.save_files(ns, ["ab/c", "a?/d", "[a]b/e", "a*/f"], [b"1", b"2", b"3", b"4"])
    assert io.list_keys(ns, glob.escape("a?") + "/*") == ["a?/d"]
    assert io.list_keys(ns, glob.escape("[a]b") + "/*") == ["[a]b/e"]
    assert io.list_keys(ns, glob.escape("a*") + "/*") == ["a*/f"]
    assert io.list_keys(ns, "a?/*") == ["a*/f", "a?/d", "ab/c"]  # a pattern stays one


def test_redis_namespaces_are_folders_of_one_location(redis_server, redis_prefix):
    from urllib.parse import quote

    from simrecorder.locations import RedisLocation

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    io = get_io("redis", url=url)
    spaces = [f"/runs/{redis_prefix}/ns", f"{redis_prefix}:x", "..", "."]
    for n, ns in enumerate(spaces):
        io.save_files(ns, "a/b", str(n).encode())
    root = RedisLocation(url, prefix="mummi")
    try:
        assert root.get(quote(spaces[0], safe="") + "/a/b") == b"0"
        assert [io.load_files(ns, "a/b") for ns in spaces] == [b"0", b"1", b"2", b"3"]
        assert io.list_keys(spaces[2]) == ["a/b"]
        assert io.remove_files(spaces[2], ["a/b"]) == [True] and not io.namespace_exists("..")
    finally:
        for ns in spaces:
            io.remove_files(ns, io.list_keys(ns))
        root.close()


def test_a_missing_simple_namespace_is_not_created_by_reads(tmp_path):
    io, ns = get_io("simple"), str(tmp_path / "none")
    assert io.load_files(ns, ["a"]) == [None] and io.list_keys(ns) == []
    assert io.remove_files(ns, ["a"]) == [False] and not io.file_exists(ns, "a")
    assert not os.path.exists(ns)
    with pytest.raises(InvalidKeyError):
        io.load_files(ns, ["../a"])
