"""encore-style FileSystemStore: encore 0.8.0's own test mixins, and what we add."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

# encore 0.8.0 is a test dependency (setup.cfg `test` extra): a missing one fails the run
from encore.storage.tests import filesystem_store_test as encore_tests

from simrecorder import InvalidKeyError, Recorder, open_datastore
from simrecorder.adapters._mummi_store import FileSystemDataStore
from simrecorder.adapters.encore import (
    EncoreLocation,
    FileSystemStore,
    SimpleEventManager,
    StoreDeleteEvent,
    StoreEvent,
    StoreProgressEndEvent,
    StoreSetEvent,
    StoreUpdateEvent,
    init_shared_store,
)
from simrecorder.errors import KeyNotFoundError, StoreFormatError, StoreNotFoundError
from simrecorder.locations import Location, open_location
from simrecorder.testing.datastore import DataStoreTests
from simrecorder.testing.location import LocationTests


class TestEncoreReadMixin(encore_tests.FileSystemStoreReadTest):
    """encore's read tests; setUp writes files in encore's layout, our store reads them."""

    def setUp(self):
        super().setUp()
        self.store = FileSystemStore(self.path)
        self.store.connect()


class TestEncoreWriteMixin(encore_tests.FileSystemStoreWriteTest):
    """encore's write tests, including its FileSystemStore-specific checks."""

    def setUp(self):
        super().setUp()
        self.store = FileSystemStore(self.path)
        self.store.connect()


@pytest.fixture
def store(tmp_path):
    init_shared_store(str(tmp_path / "store"))
    s = FileSystemStore(str(tmp_path / "store"))
    s.connect()
    return s


def test_layout_is_encores(store):
    store.set("a/b", (io.BytesIO(b"payload"), {"x": 1}))
    root = store.path
    with open(os.path.join(root, "a", "b.data"), "rb") as f:
        assert f.read() == b"payload"
    with open(os.path.join(root, "a", "b.metadata")) as f:
        assert json.load(f) == {"x": 1}
    assert os.path.isfile(os.path.join(root, ".FSStore"))


def test_update_merges_and_missing_keys_raise(store):
    store.set("k", (io.BytesIO(b"1"), {"a": 1, "b": 2}))
    store.update_metadata("k", {"b": 3, "c": 4})
    assert store.get_metadata("k") == {"a": 1, "b": 3, "c": 4}
    for call in (
        store.get,
        store.get_data,
        store.get_metadata,
        store.delete,
        store.to_bytes,
        lambda k: store.update_metadata(k, {}),
        lambda k: store.get_data_range(k, 0, 1),
    ):
        with pytest.raises(KeyNotFoundError, match="'missing' not in FileSystemStore") as caught:
            call("missing")
        assert isinstance(caught.value, KeyError)  # encore's callers catch KeyError


@pytest.mark.parametrize("damage", [b'{"x": ', b"[1, 2]", b"\xff\xfe"])
def test_a_bad_metadata_file_is_a_named_error_naming_its_key(store, damage):
    store.set("good", (io.BytesIO(b"1"), {"a": 1}))
    store.set("dir/bad", (io.BytesIO(b"2"), {"a": 2}))
    with open(os.path.join(store.path, "dir", "bad.metadata"), "wb") as f:
        f.write(damage)
    for call in (
        lambda: store.get_metadata("dir/bad"),
        lambda: store.get("dir/bad"),
        lambda: list(store.query_keys(a=1)),  # one bad file: the error names it
        lambda: store.update_metadata("dir/bad", {"b": 1}),
    ):
        with pytest.raises(StoreFormatError, match=r"key 'dir/bad'.*bad\.metadata") as caught:
            call()
        assert isinstance(caught.value, OSError)
    assert store.get_metadata("good") == {"a": 1} and store.to_bytes("dir/bad") == b"2"
    store.set_metadata("dir/bad", {"a": 3})  # the message's advice repairs it
    assert sorted(store.query_keys()) == ["dir/bad", "good"]


def test_a_failing_stream_leaves_the_old_value(store):
    store.set("k", (io.BytesIO(b"old"), {"v": 1}))

    class Broken(io.RawIOBase):
        calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError("network went away")
            return b"x" * 10

    with pytest.raises(OSError, match="network"):
        store.set("k", (Broken(), {"v": 2}), buffer_size=10)
    assert store.to_bytes("k") == b"old" and store.get_metadata("k") == {"v": 1}
    assert not [f for f in os.listdir(store.path) if f.endswith(".tmp")]


def test_transactions_commit_together_or_not_at_all(store):
    events = []
    store.event_manager.connect(StoreEvent, events.append)
    with pytest.raises(RuntimeError):
        with store.transaction("fails"):
            store.set("a", (io.BytesIO(b"1"), {}))
            store.from_bytes("b", b"2")
            raise RuntimeError("abort")
    assert not store.exists("a") and not store.exists("b")
    assert not [e for e in events if isinstance(e, StoreSetEvent)]
    with store.transaction("works"):
        store.set("a", (io.BytesIO(b"1"), {"n": 1}))
        store.set("b", (io.BytesIO(b"2"), {"n": 2}))
        assert not store.exists("a")  # staged until the block ends
        assert not [e for e in events if isinstance(e, StoreSetEvent)]
    assert store.to_bytes("a") == b"1" and store.to_bytes("b") == b"2"
    assert [e.key for e in events if isinstance(e, StoreSetEvent)] == ["a", "b"]


def test_events(store):
    manager = SimpleEventManager()
    seen = []
    manager.connect(StoreEvent, lambda e: seen.append(type(e).__name__))
    s = FileSystemStore(store.path, event_manager=manager)
    s.connect()
    s.set("k", (io.BytesIO(b"abc" * 10), {"a": 1}), buffer_size=8)
    s.update_metadata("k", {"b": 2})
    s.delete("k")
    assert seen[0] == "StoreProgressStartEvent" and seen.count("StoreProgressStepEvent") == 4
    assert "StoreProgressEndEvent" in seen and seen[-1] == "StoreDeleteEvent"
    assert {StoreUpdateEvent.__name__, StoreDeleteEvent.__name__,
            StoreProgressEndEvent.__name__} <= set(seen)  # fmt: skip


def test_nested_keys_are_listed(store):
    for key in ("top", "a/x", "a/b/y"):
        store.set(key, (io.BytesIO(b"v"), {"kind": "t"}))
    assert sorted(store.glob("*")) == ["a/b/y", "a/x", "top"]
    assert sorted(store.glob("a/*")) == ["a/b/y", "a/x"]
    assert sorted(store.query_keys(kind="t")) == ["a/b/y", "a/x", "top"]


@pytest.mark.parametrize("key", ["../evil", "/etc/x", "a/../../x", "a\x00b", "x.data",
                                 "x.metadata", ".FSStore", "", "a//b"])  # fmt: skip
def test_bad_keys_are_refused(store, tmp_path, key):
    with pytest.raises(InvalidKeyError):
        store.from_bytes(key, b"x")
    assert not (tmp_path / "evil.data").exists()


def test_symlinks_do_not_lead_out(store, tmp_path):
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", os.path.join(store.path, "link"))
    with pytest.raises(InvalidKeyError, match="symlink"):
        store.from_bytes("link/x", b"x")
    assert os.listdir(tmp_path / "outside") == []


def test_connect_needs_a_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="init_shared_store") as caught:
        FileSystemStore(str(tmp_path)).connect()
    assert isinstance(caught.value, FileNotFoundError)


def test_readers_beside_two_writers_never_see_torn_values(store):
    store.set("k", (io.BytesIO(b"0" * 1000), {"v": "0"}))
    stop = time.monotonic() + 2.0
    torn = reads = 0

    def writer(digit):
        while time.monotonic() < stop:
            store.set("k", (io.BytesIO(digit.encode() * 1000), {"v": digit}))

    threads = [threading.Thread(target=writer, args=(d,)) for d in "12"]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        value = store.get("k")
        with value:
            data = value.data.read()
        reads += 1
        torn += data != value.metadata["v"].encode() * 1000
    for t in threads:
        t.join()
    assert reads > 20 and torn == 0
    # and the stored pair is consistent: two writers never leave mixed files behind
    assert store.to_bytes("k") == store.get_metadata("k")["v"].encode() * 1000


WRITER = (
    "import io, sys\n"
    "from simrecorder.adapters.encore import FileSystemStore\n"
    "s = FileSystemStore(sys.argv[1]); s.connect()\n"
    "for i in range(200):\n"
    "    s.set(f'w{sys.argv[2]}/k{i}', (io.BytesIO(b'%d' % i), {'w': sys.argv[2], 'i': i}))\n"
)


def test_processes_writing_distinct_keys_lose_none(store):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store.path, str(w)])
             for w in range(4)]  # fmt: skip
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert len(list(store.glob("w*/k*"))) == 800
    assert sorted(store.query_keys(w="3", i=199)) == ["w3/k199"]


def test_to_file_streams_large_values(store, tmp_path):
    chunk = b"0123456789abcdef" * 65536  # 1 MiB
    with open(tmp_path / "big.bin", "wb") as f:
        for _ in range(64):
            f.write(chunk)
    store.from_file("big", str(tmp_path / "big.bin"))
    store.to_file("big", str(tmp_path / "copy.bin"), buffer_size=1 << 20)
    assert os.path.getsize(tmp_path / "copy.bin") == 64 << 20
    with open(tmp_path / "copy.bin", "rb") as f:
        assert f.read(1 << 20) == chunk


def test_query_keys_over_many_keys(store):
    root = store.path
    for i in range(100_000):  # written directly in encore's layout, as a big store would be
        base = os.path.join(root, f"k{i:06d}")
        with open(base + ".data", "wb") as f:
            f.write(b"v")
        with open(base + ".metadata", "w") as f:
            f.write(json.dumps({"group": i % 10}))
    start = time.perf_counter()
    found = list(store.query_keys(group=3))
    seconds = time.perf_counter() - start
    print(f"query_keys over 1e5 keys: {seconds:.2f} s")
    assert len(found) == 10_000


class TestFileSystemDataStore(DataStoreTests):
    def make_store(self, tmp_path):
        return FileSystemDataStore(str(tmp_path / "fs"))

    def reopen_store(self, store):
        store.close()
        return FileSystemDataStore(store.namespace, mode="a")


def test_recording_through_fs_url(tmp_path):
    arrays = np.random.default_rng(0).random((10, 10, 5, 2, 6))
    with Recorder(f"fs://{tmp_path}/run", max_records=4) as rec:
        for a in arrays:
            rec.record("train/what", a)
    store = FileSystemStore(str(tmp_path / "run"))
    store.connect()
    # the block store's layout, every piece an encore key: the series' description is
    # the JSON document train/what/.series.json, the blocks keys under train/what/.blocks
    meta = json.loads(store.to_bytes("train/what/.series.json"))
    assert meta["kind"] == "dense" and meta["count"] == 10
    assert any(key.startswith("train/what/.blocks/") for key in store.glob("train/what/*"))
    with Recorder(open_datastore(f"fs://{tmp_path}/run")) as rec:
        np.testing.assert_array_equal(np.asarray(rec.get_all("train/what")), arrays)


BIG = (
    "import os, sys\n"
    "from simrecorder.adapters.encore import FileSystemStore, init_shared_store\n"
    "root, src, dst = sys.argv[1:4]\n"
    "with open(src, 'wb') as f:\n"
    "    f.truncate(512 << 20)  # 512 MiB, sparse: cheap to create\n"
    "init_shared_store(root)\n"
    "s = FileSystemStore(root); s.connect()\n"
    "def rss(field):\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith(field + ':'):\n"
    "            return int(line.split()[1]) // 1024\n"
    "open('/proc/self/clear_refs', 'w').write('5')\n"
    "base = rss('VmRSS')\n"
    "s.from_file('big', src)\n"
    "s.to_file('big', dst)\n"
    "print(rss('VmHWM') - base, os.path.getsize(dst) >> 20)\n"
)


def test_512_mib_values_stream_without_being_held_in_memory(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", BIG, str(tmp_path / "s"), str(tmp_path / "src"),
         str(tmp_path / "dst")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    grown_mib, size_mib = int(out[0]), int(out[1])
    assert size_mib == 512 and grown_mib < 64, out


# -- the store's directory as a Location ------------------------------------------------------
class TestEncoreLocation(LocationTests):
    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return EncoreLocation(tmp_path / "enc")

    def declining_location(self, location: Location) -> Location:
        assert isinstance(location, EncoreLocation)
        return EncoreLocation(location.path, read_only=True)


def test_encore_reads_what_the_location_writes(tmp_path):
    from encore.storage.filesystem_store import FileSystemStore as EncoresOwn

    location = EncoreLocation(tmp_path / "s")
    location.store.set("a/b", (io.BytesIO(b"old"), {"unit": "nm"}))
    assert location.write_many({"a/b": b"payload", "c": io.BytesIO(b"see")}) == {
        "a/b": True,
        "c": True,
    }
    theirs = EncoresOwn(str(tmp_path / "s"))
    theirs.connect()
    with theirs.get_data("a/b") as data:
        assert data.read() == b"payload"
    assert theirs.get_metadata("a/b") == {"unit": "nm"}  # a write keeps the metadata
    assert theirs.get_metadata("c") == {}
    assert theirs.exists("a/b") and theirs.exists("c")
    assert list(location.keys()) == ["a/b", "c"]
    assert location.supports_atomic_batch


def test_encore_location_refuses_the_stores_own_names_and_reopens_by_url(tmp_path):
    location = EncoreLocation(tmp_path / "s")
    for key in ("x.data", "x.metadata", "x.tmp", ".FSStore"):
        with pytest.raises(InvalidKeyError):
            location.put(key, b"1")
    assert list(location.keys()) == []
    location.put("k", b"v")
    again = open_location(location.url)
    assert isinstance(again, EncoreLocation) and again.get("k") == b"v"
    with pytest.raises(StoreNotFoundError):
        EncoreLocation(tmp_path / "none", create=False)


def test_commits_without_locking(tmp_path):
    """``locking=False`` for file systems without flock: no lock file is taken."""
    init_shared_store(str(tmp_path / "s"))
    store = FileSystemStore(str(tmp_path / "s"), locking=False)
    store.connect()
    store.from_bytes("k", b"v")
    assert store.to_bytes("k") == b"v"
    assert not os.path.exists(tmp_path / "s" / ".simrecorder-commit.lock")
