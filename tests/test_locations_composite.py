"""Composite locations (Levels, Fanout, Small): the contract, and what composing adds."""

from __future__ import annotations

import io
import os
import pickle

import pytest

from simrecorder.errors import ReadOnlyError, StoreConnectionError
from simrecorder.locations import (
    DirectoryLocation,
    Fanout,
    FsspecLocation,
    Level,
    Levels,
    MemoryLocation,
    Small,
)
from simrecorder.testing.location import LocationTests, UnseekableStream

KIB = 1024
MIB = 1024 * KIB


def full() -> Fanout:
    """A composite that declines every (non-empty) write: all its parts are full."""
    return Fanout(MemoryLocation(max_size=10), Small(MemoryLocation(), 10))


class CompositeTests(LocationTests):
    reopens_by_url = False  # a composite is built in code, not named by a URL

    def declining_location(self, location):
        return full()


class TestLevelsMemory(CompositeTests):
    @pytest.fixture
    def location(self):
        return Levels(MemoryLocation(), MemoryLocation())


class TestLevelsDirectory(CompositeTests):
    """A cache filled by reads only, over a directory."""

    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return Levels(Level(DirectoryLocation(tmp_path / "cache"), write=False),
                      DirectoryLocation(tmp_path / "store"))  # fmt: skip


class TestFanout(CompositeTests):
    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return Fanout(DirectoryLocation(tmp_path / "a", max_size=64 * KIB),
                      DirectoryLocation(tmp_path / "b"))  # fmt: skip


class TestLevelsOfFanout(CompositeTests):
    @pytest.fixture
    def location(self, tmp_path):
        disks = Fanout(DirectoryLocation(tmp_path / "a", max_size=64 * KIB),
                       DirectoryLocation(tmp_path / "b"))  # fmt: skip
        return Levels(Level(MemoryLocation(max_size=MIB), write=False), disks)


class TestFanoutOfLevels(CompositeTests):
    @pytest.fixture
    def location(self, tmp_path):
        cached = Levels(MemoryLocation(), DirectoryLocation(tmp_path / "a", max_size=64 * KIB))
        return Fanout(cached, DirectoryLocation(tmp_path / "b"))


class TestReadOnlyLevel(CompositeTests):
    """An archive level that is never written, between a cache and the store."""

    crash_safe_writes = True

    def test_reads_from_the_archive_fill_the_cache(self, location):
        cache, archive, _ = (level.location for level in location.levels)
        with open(os.path.join(archive.root, "old"), "wb") as file:
            file.write(b"archived")
        assert location.get("old") == b"archived"
        assert cache.get("old") == b"archived"
        with pytest.raises(ReadOnlyError, match="'old'"):
            location.delete("old")

    @pytest.fixture
    def location(self, tmp_path):
        (tmp_path / "archive").mkdir()
        archive = DirectoryLocation(tmp_path / "archive", read_only=True)
        cache = DirectoryLocation(tmp_path / "cache")
        store = DirectoryLocation(tmp_path / "store")
        return Levels(Level(cache, write=False), Level(archive, write=False), store)


class TestSmallMemory(CompositeTests):
    @pytest.fixture
    def location(self):
        return Small(MemoryLocation(), 2 * MIB)

    def declining_location(self, location):
        return Small(MemoryLocation(), 10)


class TestSmallDirectory(CompositeTests):
    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return Small(DirectoryLocation(tmp_path / "d"), 8 * MIB)

    def declining_location(self, location):
        return Small(location.location, 10)


class TestSmallInFrontOfDirectory(CompositeTests):
    """Small values in memory, the others on disk."""

    @pytest.fixture
    def location(self, tmp_path):
        return Fanout(Small(MemoryLocation(), KIB), DirectoryLocation(tmp_path / "d"))


# -- behaviour --------------------------------------------------------------------------------


def test_levels_copy_on_read(tmp_path):
    cache, store = MemoryLocation(), DirectoryLocation(tmp_path / "store")
    levels = Levels(Level(cache, write=False), store)
    value = os.urandom(3 * MIB)
    assert levels.write("k", io.BytesIO(value))
    assert list(cache.keys()) == [] and store.get("k") == value
    with levels.read("k") as stream:
        assert stream.read(5) == value[:5]  # the stream is rewound after the copy
        assert stream.read() == value[5:]
    assert cache.get("k") == value
    store.delete("k")
    assert levels.get("k") == value  # now served by the cache


def test_levels_copy_into_every_earlier_replicate_level():
    first, second, third, source = (MemoryLocation() for _ in range(4))
    levels = Levels(Level(first, write=False), Level(second, write=False, replicate=False),
                    Level(third, write=False), Level(source))  # fmt: skip
    source.put("k", b"v")
    assert levels.get("k") == b"v"
    assert first.get("k") == b"v" and third.get("k") == b"v"
    assert second.get("k") is None


def test_levels_full_cache_declines_and_the_read_still_works():
    cache, store = MemoryLocation(max_size=10), MemoryLocation()
    levels = Levels(Level(cache, write=False), store)
    store.put("big", b"x" * 100)
    store.put("small", b"y")
    assert levels.get("big") == b"x" * 100
    assert levels.get("small") == b"y"
    assert list(cache.keys()) == ["small"]


def test_levels_read_many_copies():
    cache, store = MemoryLocation(), MemoryLocation()
    levels = Levels(Level(cache, write=False), store)
    store.put("a", b"1")
    cache.put("b", b"2")
    assert levels.read_many(["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": None}
    assert cache.get("a") == b"1"


def test_levels_write_goes_to_the_first_write_level_and_drops_stale_copies():
    cache, store, backup = MemoryLocation(), MemoryLocation(), MemoryLocation()
    levels = Levels(Level(cache, write=False), store, backup)
    store.put("k", b"old")
    assert levels.get("k") == b"old" and cache.get("k") == b"old"
    assert levels.put("k", b"new")
    assert store.get("k") == b"new" and backup.get("k") is None
    assert cache.get("k") is None  # no stale copy shadows the new value
    assert levels.get("k") == b"new"


def test_levels_without_write_levels_is_read_only():
    levels = Levels(Level(MemoryLocation(), write=False), MemoryLocation(read_only=True))
    assert levels.read_only
    assert levels.put("k", b"v") is False
    with pytest.raises(ReadOnlyError):
        levels.delete("k")


def test_fanout_spills_on_decline():
    small, large = MemoryLocation(max_size=100), MemoryLocation()
    fanout = Fanout(small, large)
    assert fanout.put("a", b"1" * 60)
    assert fanout.put("b", b"2" * 60)  # the first is full now
    assert list(small.keys()) == ["a"] and list(large.keys()) == ["b"]
    assert fanout.read_many(["a", "b", "c"]) == {"a": b"1" * 60, "b": b"2" * 60, "c": None}
    assert list(fanout.keys()) == ["a", "b"]


def test_fanout_spools_a_non_seekable_stream_once():
    fanout = Fanout(MemoryLocation(max_size=100), Small(MemoryLocation(), 1000), MemoryLocation())
    value = os.urandom(5000)
    assert fanout.write("k", UnseekableStream(value, piece=333))
    assert fanout.get("k") == value
    assert fanout.locations[2].get("k") == value


def test_fanout_rewinds_a_seekable_stream_for_the_next_location():
    fanout = Fanout(MemoryLocation(max_size=10), MemoryLocation())
    stream = io.BytesIO(b"headerBODY" * 10)
    stream.seek(6)
    assert fanout.write("k", stream)
    assert fanout.get("k") == (b"headerBODY" * 10)[6:]


def test_fanout_overwrite_in_another_location_leaves_no_stale_value():
    small, large = MemoryLocation(max_size=10), MemoryLocation()
    fanout = Fanout(small, large)
    assert fanout.put("k", b"tiny")
    assert fanout.put("k", b"now larger than ten")
    assert small.get("k") is None
    assert fanout.get("k") == b"now larger than ten"
    assert fanout.put("k", b"tiny again")
    assert large.get("k") is None and fanout.get("k") == b"tiny again"


def test_fanout_does_not_swallow_write_errors(tmp_path):
    from simrecorder.testing.servers import free_port

    pytest.importorskip("paramiko")
    down = FsspecLocation(f"sftp://nobody@127.0.0.1:{free_port()}/x", timeout=5)
    spare = MemoryLocation()
    fanout = Fanout(down, spare)
    with pytest.raises(StoreConnectionError):
        fanout.put("k", b"v")
    assert spare.get("k") is None  # an error is not a decline: nothing spilled


def test_fanout_delete_refuses_when_a_read_only_part_holds_the_key():
    archive = MemoryLocation()
    archive.put("k", b"old")
    archive.read_only = True
    fanout = Fanout(MemoryLocation(), archive)
    with pytest.raises(ReadOnlyError, match="'k'"):
        fanout.delete("k")
    assert fanout.put("j", b"1") and fanout.delete("j") is True


def test_small_declines_large_values_without_reading_them():
    inner = MemoryLocation()
    small = Small(inner, 10)
    assert small.max_value_bytes == 10
    assert small.put("ok", b"0123456789")
    assert small.put("big", b"0123456789!") is False
    stream = io.BytesIO(b"head" + b"x" * 11)
    stream.seek(4)
    assert small.write("big", stream) is False
    assert stream.tell() == 4
    stream.seek(5)
    assert small.write("fits", stream)
    assert inner.get("fits") == b"x" * 10
    assert small.write("pipe", UnseekableStream(b"y" * 11, piece=3)) is False
    assert small.write("pipe", UnseekableStream(b"y" * 10, piece=3))
    assert list(small.keys()) == ["fits", "ok", "pipe"]


def test_small_url_and_pickle():
    small = Small(MemoryLocation(), 100)
    assert small.url.startswith("small+memory://") and small.url.endswith("?max_size=100")
    small.put("k", b"v")
    again = pickle.loads(pickle.dumps(small))
    assert again.get("k") == b"v" and again.max_size == 100


def test_composite_urls_name_their_parts(tmp_path):
    a, b = MemoryLocation(), DirectoryLocation(tmp_path)
    assert Fanout(a, b).url == f"fanout://({a.url}, {b.url})"
    assert Levels(a, b).url == f"levels://({a.url}, {b.url})"
    assert Levels(a, b) == Levels(a, b) and Levels(a, b) != Fanout(a, b)


def test_composites_need_locations():
    with pytest.raises(ValueError):
        Fanout()
    with pytest.raises(TypeError):
        Levels("not a location")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Small(MemoryLocation(), -1)
