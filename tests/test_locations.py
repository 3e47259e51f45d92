"""The Location contract for memory and directory locations, plus what is special to
each, ``simrecorder._fs`` and ``open_location``."""

from __future__ import annotations

import filecmp
import io
import os
import pickle
import shutil
import subprocess
import tracemalloc

import pytest

from simrecorder._fs import AtomicFile, atomic_write, contained_path
from simrecorder.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    ReadOnlyError,
    StoreFullError,
    StoreLockedError,
    StoreNotFoundError,
    UnknownDataStoreError,
    is_transient,
)
from simrecorder.locations import DirectoryLocation, Location, MemoryLocation, open_location
from simrecorder.locations.registry import known_location_schemes, location_class
from simrecorder.testing.location import LocationTests, UnseekableStream


class TestMemoryLocation(LocationTests):
    @pytest.fixture
    def location(self):
        return MemoryLocation()

    def declining_location(self, location: Location) -> Location:
        return MemoryLocation(read_only=True)


class TestFullMemoryLocation(LocationTests):
    @pytest.fixture
    def location(self):
        return MemoryLocation(max_size=100 * 1024 * 1024)

    def declining_location(self, location: Location) -> Location:
        return MemoryLocation(max_size=3)


class TestDirectoryLocation(LocationTests):
    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return DirectoryLocation(tmp_path / "loc")

    def declining_location(self, location: Location) -> Location:
        return DirectoryLocation(location.root, read_only=True)


class TestDurableFullDirectoryLocation(LocationTests):
    """fsync on, a size limit far away; declines when asked to keep more disk free
    than the disk has."""

    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return DirectoryLocation(tmp_path / "loc", durable=True, max_size=1 << 30)

    def declining_location(self, location: Location) -> Location:
        total = shutil.disk_usage(location.root).total
        return DirectoryLocation(location.root, free_disk_size=total + 1)


# -- DirectoryLocation specifics -----------------------------------------------------------


def test_directory_layout_and_temp_files(tmp_path):
    location = DirectoryLocation(tmp_path)
    assert location.put("a/b/c", b"1")
    assert (tmp_path / "a" / "b" / "c").read_bytes() == b"1"
    (tmp_path / "a" / ".simrecorder-tmp-0123").write_bytes(b"partial")
    assert list(location.keys()) == ["a/b/c"]
    with pytest.raises(InvalidKeyError, match="temp file"):
        location.put("a/.simrecorder-tmp-x", b"")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_directory_delete_prunes_empty_folders_not_root(tmp_path):
    root = tmp_path / "root"
    location = DirectoryLocation(root)
    location.put("a/b/c", b"1")
    location.put("a/x", b"2")
    assert location.delete("a/b/c")
    assert not (root / "a" / "b").exists() and (root / "a").is_dir()
    assert location.delete("a/x")
    assert list(root.iterdir()) == [] and root.is_dir()


def test_directory_key_conflicts(tmp_path):
    location = DirectoryLocation(tmp_path)
    location.put("a/b", b"1")
    with pytest.raises(KeyConflictError, match="'a/b/c'"):
        location.put("a/b/c", b"2")
    with pytest.raises(KeyConflictError, match="'a'"):
        location.put("a", b"3")
    assert list(location.keys()) == ["a/b"]
    assert location.get("a/b") == b"1"


def test_directory_part_too_long(tmp_path):
    with pytest.raises(InvalidKeyError):
        DirectoryLocation(tmp_path).put("x" * 256, b"")


def test_directory_max_size_is_tracked(tmp_path):
    location = DirectoryLocation(tmp_path, max_size=10)
    assert location.put("a", b"123456")
    assert location.size == 6
    assert location.put("b", b"12345") is False
    assert location.put("a", b"1234567890")  # replacing frees the old value
    assert location.size == 10
    stream = UnseekableStream(b"x" * 5000, piece=100)
    assert location.write("c", stream) is False  # stopped once over the budget
    assert location.delete("a")
    assert location.size == 0
    assert location.put("b", b"12345")
    # a write by someone else is seen after refresh_size() (or on reopening)
    (tmp_path / "other").write_bytes(b"12345")
    assert location.put("c", b"1")
    assert location.refresh_size() == 11
    assert location.put("d", b"1") is False
    assert DirectoryLocation(tmp_path, max_size=10).size == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c", "other"]


def test_directory_free_disk_size(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    roomy = DirectoryLocation(tmp_path, free_disk_size=free // 2)
    assert roomy.put("a", b"x" * 1000)
    tight = DirectoryLocation(tmp_path, free_disk_size=free - 500)
    stream = io.BytesIO(b"y" * 100_000)
    assert tight.write("b", stream) is False
    assert stream.tell() == 0
    assert tight.write("b", UnseekableStream(b"y" * 100_000)) is False  # size known late
    assert list(tight.keys()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_directory_disk_full_declines_and_leaves_no_temp(small_disk):
    location = DirectoryLocation(small_disk / "loc")
    assert location.put("small", b"kept")
    stream = io.BytesIO(b"z" * (30 << 20))  # more than the 20 MiB disk
    assert location.write("big/value", stream) is False
    assert stream.tell() == 0
    assert list(location.keys()) == ["small"]
    assert sorted(os.listdir(small_disk / "loc")) == ["small"]  # no temp, no empty folder
    assert location.put("small2", b"fits")


def test_atomic_write_disk_full_raises_and_leaves_no_temp(small_disk):
    target = small_disk / "value"
    target.write_bytes(b"old")
    with pytest.raises(StoreFullError, match="value") as caught:
        atomic_write(target, iter([b"z" * (1 << 20)] * 30))
    assert isinstance(caught.value, OSError) and is_transient(caught.value)
    assert sorted(os.listdir(small_disk)) == ["value"]
    assert target.read_bytes() == b"old"


def test_atomic_write_read_only_file_system(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(ReadOnlyError, match="value") as caught:
            atomic_write(small_disk / "value", b"x")
        assert isinstance(caught.value, PermissionError)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


def test_atomic_write_durable_and_chunks(tmp_path):
    target = tmp_path / "d" / "value"
    assert atomic_write(target, io.BytesIO(b"abc" * 1000), durable=True, make_dirs=True) == 3000
    assert target.read_bytes() == b"abc" * 1000
    assert atomic_write(target, [b"a", bytearray(b"b"), memoryview(b"c")]) == 3
    assert target.read_bytes() == b"abc"
    with pytest.raises(TypeError):
        atomic_write(target, ["text"])  # type: ignore[list-item]
    assert target.read_bytes() == b"abc"
    assert sorted(os.listdir(tmp_path / "d")) == ["value"]


def test_atomic_file_without_commit_leaves_old_value(tmp_path):
    target = tmp_path / "value"
    target.write_bytes(b"old")
    with AtomicFile(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"old"
    with pytest.raises(RuntimeError), AtomicFile(target) as out:
        out.write(b"new")
        raise RuntimeError("consumer")
    assert os.listdir(tmp_path) == ["value"]


def test_contained_path(tmp_path):
    assert contained_path(tmp_path, "a/b") == str(tmp_path / "a" / "b")
    for bad in ["../x", "/etc/passwd", "a/../../x", "", "a//b"]:
        with pytest.raises(InvalidKeyError):
            contained_path(tmp_path, bad)


def test_directory_streams_100_mib_in_bounded_memory(tmp_path):
    source = tmp_path / "source"
    with open(source, "wb") as out:
        for _ in range(100):
            out.write(os.urandom(1 << 20))
    location = DirectoryLocation(tmp_path / "loc")
    tracemalloc.start()
    try:
        with open(source, "rb") as stream:
            assert location.write("big", stream)
        with location.read("big") as stream:
            assert stream is not None
            while stream.read(1 << 20):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"100 MiB through a directory location held {peak:,} bytes"
    assert filecmp.cmp(source, tmp_path / "loc" / "big", shallow=False)


def test_directory_url_and_options(tmp_path):
    root = tmp_path / "with space"
    location = DirectoryLocation(root, durable=True, max_size=100, free_disk_size=5)
    assert location.url == (
        f"file://{str(root).replace(' ', '%20')}?durable=1&max_size=100&free_disk_size=5"
    )
    again = open_location(location.url)
    assert again == location
    assert (again.durable, again.max_size, again.free_disk_size) == (True, 100, 5)
    assert open_location(str(root)) == DirectoryLocation(root)
    assert open_location(root) == DirectoryLocation(root)
    assert open_location(f"file://{root}", read_only=True).read_only
    assert DirectoryLocation.from_url(f"file://localhost{root}").root == str(root)
    with pytest.raises(InvalidArgumentError, match="host"):
        open_location(f"file://elsewhere{root}")
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        open_location(f"file://{root}?nope=1")
    with pytest.raises(InvalidArgumentError, match="max_size"):
        open_location(f"file://{root}?max_size=lots")


def test_directory_missing_root(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no directory"):
        DirectoryLocation(tmp_path / "missing", create=False)
    with pytest.raises(StoreNotFoundError):
        DirectoryLocation(tmp_path / "missing", read_only=True)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreNotFoundError, match="not a directory"):
        DirectoryLocation(tmp_path / "file")
    with pytest.raises(InvalidArgumentError, match="max_size"):
        DirectoryLocation(tmp_path, max_size=-1)


def test_directory_read_only_delete_raises(tmp_path):
    DirectoryLocation(tmp_path).put("k", b"v")
    location = DirectoryLocation(tmp_path, read_only=True)
    with pytest.raises(ReadOnlyError, match="'k'"):
        location.delete("k")
    assert location.get("k") == b"v"


def test_directory_skips_undecodable_names(tmp_path):
    (tmp_path / os.fsdecode(b"bad\xff")).write_bytes(b"")
    DirectoryLocation(tmp_path).put("good", b"")
    assert list(DirectoryLocation(tmp_path).keys()) == ["good"]


# -- open_location ---------------------------------------------------------------------------


def test_open_location_memory():
    first = open_location("memory://")
    assert isinstance(first, MemoryLocation)
    assert open_location("memory://", max_size=3).put("k", b"1234") is False
    assert first != open_location("memory://")  # memory is not shared by URL


def test_open_location_unknown_scheme_lists_known():
    with pytest.raises(UnknownDataStoreError, match="file, memory, redis") as caught:
        open_location("nosuchscheme://x")
    assert isinstance(caught.value, ValueError)


def test_location_class():
    assert location_class("s3").__name__ == "FsspecLocation"
    assert location_class("REDIS").__name__ == "RedisLocation"
    schemes = known_location_schemes()
    assert schemes == sorted(schemes)  # H10 adds encore and taridx
    assert {"file", "memory", "redis", "rediss", "unix"} <= set(schemes)


def test_directory_failing_stream_leaves_nothing(tmp_path):
    class Failing(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError("disk gone")

    location = DirectoryLocation(tmp_path)
    with pytest.raises(OSError, match="disk gone"):
        location.write("a/b", Failing())
    assert list(tmp_path.iterdir()) == []


def test_directory_remove_stale_temp_files(tmp_path):
    location = DirectoryLocation(tmp_path)
    location.put("a/k", b"v")
    old = tmp_path / "a" / ".simrecorder-tmp-old"
    fresh = tmp_path / ".simrecorder-tmp-fresh"
    old.write_bytes(b"left by a killed writer")
    fresh.write_bytes(b"a write in progress")
    os.utime(old, (0, 0))
    assert location.remove_stale_temp_files(older_than=60) == 1
    assert not old.exists() and fresh.exists()
    assert location.get("a/k") == b"v"


# -- directory locks ----------------------------------------------------------------------------


def test_directory_lock_file_is_no_key(tmp_path):
    location = DirectoryLocation(tmp_path / "d")
    with location.lock():
        assert (tmp_path / "d" / ".simrecorder-lock-writer").is_file()
        assert list(location.keys()) == []
        assert location.size == 0
        with pytest.raises(InvalidKeyError, match="lock"):
            location.put(".simrecorder-lock-writer", b"x")
        with pytest.raises(InvalidKeyError, match="lock"):
            location.put("a/.simrecorder-lock-x", b"x")
    with pytest.raises(InvalidArgumentError, match="lock name"):
        location.lock(".simrecorder-lock-writer")


def test_directory_lock_of_a_view_is_the_lock_of_its_folder(tmp_path):
    root = DirectoryLocation(tmp_path / "d")
    with root.sub("run").lock():
        assert (tmp_path / "d" / "run" / ".simrecorder-lock-writer").is_file()
        with pytest.raises(StoreLockedError):
            DirectoryLocation(tmp_path / "d" / "run").lock()


@pytest.mark.parametrize("how", ["argument", "url", "environment"])
def test_directory_locking_off_makes_locks_no_ops(tmp_path, monkeypatch, how):
    """``locking=False`` (h5py's opt-out, for file systems without flock): every lock
    is granted, no lock file is made."""
    if how == "argument":
        location = DirectoryLocation(tmp_path / "d", locking=False)
        assert location.url.endswith("?locking=0")
        assert open_location(location.url).locking is False
        assert pickle.loads(pickle.dumps(location)).locking is False
    elif how == "url":
        location = open_location(f"file://{tmp_path}/d?locking=0")
    else:
        monkeypatch.setenv("SIMRECORDER_FILE_LOCKING", "FALSE")
        location = DirectoryLocation(tmp_path / "d")
    with location.lock(), location.lock():
        pass
    assert not (tmp_path / "d" / ".simrecorder-lock-writer").exists()
    with pytest.raises(InvalidArgumentError, match="locking"):
        open_location(f"file://{tmp_path}/d?locking=maybe")


def test_memory_lock_is_not_pickled():
    location = MemoryLocation()
    with location.lock():
        again = pickle.loads(pickle.dumps(location))
        again.lock().release()  # a copy is another storage with its own locks
