"""TaridxLocation: the Location contract, plus what the archive adds (one commit per
batch, truncated members, hostile member names, ``tar xf`` giving the live keys)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from simrecorder.errors import InvalidKeyError, ReadOnlyError, StoreFormatError
from simrecorder.locations import Location, TaridxLocation, open_location
from simrecorder.testing.location import LocationTests


class TestTaridxLocation(LocationTests):
    crash_safe_writes = True

    @pytest.fixture
    def location(self, tmp_path):
        return TaridxLocation(tmp_path / "loc.tar")

    def declining_location(self, location: Location) -> Location:
        assert isinstance(location, TaridxLocation)
        return TaridxLocation(location.path, read_only=True)


class TestTaridxLocationWithoutLocks(LocationTests):
    """``locking=False`` (file systems without flock): one writer, same contract."""

    crash_safe_writes = True
    shared_between_processes = False  # no lock: concurrent writers are not supported

    @pytest.fixture
    def location(self, tmp_path):
        return TaridxLocation(tmp_path / "loc.tar", locking=False, durable=False)

    def declining_location(self, location: Location) -> Location:
        assert isinstance(location, TaridxLocation)
        return TaridxLocation(location.path, read_only=True, locking=False)


def _index_lines(location: TaridxLocation) -> list[dict]:
    with open(location.index_path, "rb") as f:
        return [json.loads(line) for line in f]


def test_one_index_commit_per_batch(tmp_path):
    location = TaridxLocation(tmp_path / "b.tar")
    assert location.write_many({"a": b"1", "b": io.BytesIO(b"2"), "c": b"3"}) == dict.fromkeys(
        "abc", True
    )
    lines = _index_lines(location)
    assert [line.get("batch", False) for line in lines] == [True, True, False]
    assert location.supports_atomic_batch


def test_a_batch_without_its_last_line_is_not_committed(tmp_path):
    location = TaridxLocation(tmp_path / "b.tar")
    location.put("old", b"0")
    location.write_many({"a": b"1", "b": b"2"})
    with open(location.index_path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(location.index_path, "wb") as f:  # a writer killed between the two lines
        f.write(b"".join(lines[:2]))
    fresh = TaridxLocation(location.path)
    assert list(fresh.keys()) == ["old"]
    assert fresh.get("a") is None
    assert fresh.put("c", b"3")  # the next writer cuts the uncommitted line off
    assert list(TaridxLocation(location.path).keys()) == ["c", "old"]


def test_truncated_member_raises_instead_of_a_short_value(tmp_path):
    """D14: an interrupted copy cut the archive inside a member's data."""
    location = TaridxLocation(tmp_path / "t.tar")
    location.write_many({"a": b"A" * 1000, "b": b"B" * 5000})
    os.truncate(location.path, 2500)
    fresh = TaridxLocation(location.path)
    assert fresh.get("a") == b"A" * 1000
    with pytest.raises(StoreFormatError, match=r"t\.tar.*'b'.*truncated.*reindex"):
        fresh.get("b")
    with pytest.raises(StoreFormatError, match="'b'"):
        fresh.read_many(["a", "b"])
    with pytest.warns(UserWarning, match=r"'b'.*truncated"):
        assert fresh.reindex() == 1
    assert list(fresh.keys()) == ["a"]


def test_reindex_refuses_names_that_are_no_keys(tmp_path):
    """D17 at the layer (tests/test_namespace_faults.py has '..', absolute and PAX
    names): names a location could not hold stay out of the index and of compact()."""
    path = tmp_path / "odd.tar"
    names = ["good", "ctl\x01name", "a//b", "./dot", "dir/", "x" * 1100]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            member = tarfile.TarInfo(name)
            member.size = 1
            tar.addfile(member, io.BytesIO(b"1"))
    location = TaridxLocation(path)
    with pytest.warns(UserWarning, match="left out") as caught:
        assert location.reindex() == 1
    assert all(repr(name) in str(caught[0].message) for name in names[1:3])
    assert list(location.keys()) == ["good"]
    assert location.compact() == 1
    assert location.tar_names() == ["good"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_tar_xf_gives_the_live_keys(tmp_path):
    location = TaridxLocation(tmp_path / "x.tar")
    location.write_many({"a/1": b"one", "b": b"two", "gone": b"g"})
    location.put("b", b"TWO")
    assert location.delete("gone")
    assert location.rename("a/1", "a/2")
    into = tmp_path / "out"
    into.mkdir()
    subprocess.run(["tar", "xf", location.path, "-C", str(into)], check=True)
    found = sorted(
        os.path.relpath(os.path.join(root, name), into)
        for root, _, names in os.walk(into)
        for name in names
    )
    assert found == ["a/2", "b"] == list(location.keys())
    assert (into / "b").read_bytes() == b"TWO"


def test_read_only_and_bad_keys(tmp_path):
    location = TaridxLocation(tmp_path / "r.tar")
    location.put("k", b"v")
    reader = TaridxLocation(location.path, read_only=True)
    assert reader.get("k") == b"v"
    assert reader.put("k", b"w") is False
    with pytest.raises(ReadOnlyError):
        reader.delete("k")
    with pytest.raises(InvalidKeyError, match="255"):
        location.put("p" * 256, b"x")


def test_url_and_registry(tmp_path):
    location = TaridxLocation(tmp_path / "u.tar", locking=False, durable=False)
    assert location.url.startswith("taridx://") and "locking=0" in location.url
    again = open_location(location.url)
    assert again == location and isinstance(again, TaridxLocation)
    assert again.locking is False and again.durable is False
    with pytest.raises(ValueError, match="unknown option"):
        open_location(f"taridx://{tmp_path}/u.tar?colour=red")


def test_full_disk_declines_and_gives_the_space_back(small_disk):
    """D17 for taridx: a write the disk cannot hold leaves no partial member behind."""
    location = TaridxLocation(small_disk / "f.tar")
    assert location.put("small", b"s" * 1000)
    size = os.path.getsize(location.path)
    big = io.BytesIO(b"b" * (30 << 20))  # 30 MiB on a 20 MiB disk
    big.seek(5)
    assert location.write("big", big) is False
    assert big.tell() == 5  # rewound for the next location
    assert os.path.getsize(location.path) == size
    assert list(location.keys()) == ["small"]
    assert location.put("after", b"a" * 1000)
    with tarfile.open(location.path) as tar:
        assert sorted(tar.getnames()) == ["after", "small"]


def test_a_large_value_is_read_as_a_stream_with_bounded_memory(tmp_path):
    import tracemalloc

    location = TaridxLocation(tmp_path / "big.tar")
    value = os.urandom(1 << 20) * 64  # 64 MiB
    assert location.write("big", io.BytesIO(value))
    del value
    tracemalloc.start()
    try:
        with location.read("big") as stream:
            total = 0
            while piece := stream.read(1 << 20):
                total += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 64 << 20
    assert peak < 8 << 20  # was the whole value (64 MiB) before
