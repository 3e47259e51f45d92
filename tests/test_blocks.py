"""BlockDataStore: the DataStore contract over memory, directory and Redis locations,
plus what is special to it: flat append cost, crash safety (SIGKILL mid-flush),
commit/truncate, lazy range reads, readers of a live store, declined writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from simrecorder import Recorder, _codec, open_datastore
from simrecorder._schema import SeriesSpec
from simrecorder.datastores import registry
from simrecorder.datastores._blocks import PAGE_BLOCKS, BlockDataStore, BlockView
from simrecorder.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    ReadOnlyError,
    StoreConnectionError,
    StoreFullError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
    ValueTooLargeError,
)
from simrecorder.locations import DirectoryLocation, Location, MemoryLocation
from simrecorder.locations._redis import RedisLocation
from simrecorder.testing.crash import expected
from simrecorder.testing.datastore import DataStoreTests

# -- the contract ------------------------------------------------------------------------------


def _read_with_numpy(location: Location, key: str) -> Any:
    """A series read with numpy and the location alone: the metadata says dtype, shape
    and block count, the blocks are raw little-endian rows."""
    meta = json.loads(location.get(f"{key}/.series.json") or b"null")
    names = [f"{key}/.blocks/{n:09d}" for n in range(meta["blocks"])]
    data = b"".join(location.get(name) or b"" for name in names)
    return np.frombuffer(data, dtype=meta["dtype"]).reshape(-1, *meta["shape"])


class TestBlocksOnMemory(DataStoreTests):
    def make_store(self, tmp_path: Path) -> BlockDataStore:
        return BlockDataStore(MemoryLocation())

    def read_native(self, store: Any, key: str) -> Any:
        return _read_with_numpy(store.location, key)


class TestBlocksOnDirectory(DataStoreTests):
    def make_store(self, tmp_path: Path) -> BlockDataStore:
        return BlockDataStore(DirectoryLocation(tmp_path / "store"))

    def reopen_store(self, store: Any) -> BlockDataStore:
        store.close()
        return BlockDataStore.from_url(store.url, mode="a")

    def read_native(self, store: Any, key: str) -> Any:
        """numpy alone: the metadata says dtype and shape, the blocks are raw rows."""
        root = Path(store.local_path) / key
        meta = json.loads((root / ".series.json").read_text())
        data = b"".join((root / ".blocks" / f"{n:09d}").read_bytes() for n in range(meta["blocks"]))
        return np.frombuffer(data, dtype=meta["dtype"]).reshape(-1, *meta["shape"])


class TestBlocksOnRedis(DataStoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server, redis_prefix):
        self.location_url = f"{redis_server.url}/0/{redis_prefix}"

    def make_store(self, tmp_path: Path) -> BlockDataStore:
        return BlockDataStore(RedisLocation(self.location_url))

    def read_native(self, store: Any, key: str) -> Any:
        return _read_with_numpy(store.location, key)

    def reopen_store(self, store: Any) -> BlockDataStore:
        store.close()
        return BlockDataStore.from_url(store.url, mode="a")


# -- flat append cost --------------------------------------------------------------------------


class CountingLocation(MemoryLocation):
    """A memory location that counts the keys and bytes of every batch written and the
    keys read (to show what a flush and a slice cost, independent of timing)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []
        self.reads: list[str] = []

    def write_many(self, items: Mapping[str, Any]) -> dict[str, bool]:
        self.batches.append((len(items), sum(len(v) for v in items.values())))
        return super().write_many(items)

    def read_many(self, keys: Any) -> dict[str, bytes | None]:
        keys = list(keys)
        self.reads.extend(keys)
        return super().read_many(keys)


def _one_block_flushes(store: BlockDataStore, location: CountingLocation, n: int) -> list[int]:
    """Append ``n`` one-row blocks, each flushed and committed; the bytes each wrote."""
    rec = Recorder(store, max_records=1, max_seconds=None)
    costs = []
    for i in range(n):
        before = len(location.batches)
        rec.record("x", float(i))
        rec.flush()
        costs.append(sum(size for _, size in location.batches[before:]))
    return costs


def test_a_flush_writes_the_same_whatever_the_length():
    """The 5,000th block writes as many keys and (up to one index page) as many bytes
    as the 10th: nothing is rewritten that grows with the series (the namespace store
    rewrote its whole block list on every append)."""
    location = CountingLocation()
    store = BlockDataStore(location)
    costs = _one_block_flushes(store, location, 2 * PAGE_BLOCKS + 900)
    keys_per_batch = [count for count, _ in location.batches[-60:]]
    assert keys_per_batch == [2, 1, 1] * 20  # block + index page, metadata, commit record
    assert max(costs[-100:]) <= costs[10] + 8 * PAGE_BLOCKS
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(len(costs)))


def test_a_slice_reads_only_the_blocks_it_spans():
    location = CountingLocation()
    store = BlockDataStore(location)
    rec = Recorder(store, max_records=10, max_seconds=None)
    for i in range(5000):
        rec.record("x", np.full(2, i, dtype=np.int32))
    rec.flush()
    view = store.get_all("x")
    assert isinstance(view, BlockView)
    location.reads.clear()
    np.testing.assert_array_equal(view[4995:4998, 0], [4995, 4996, 4997])
    assert location.reads == ["x/.blocks/000000499"]
    location.reads.clear()
    np.testing.assert_array_equal(view[15:31][:, 1], np.arange(15, 31))
    assert location.reads == ["x/.blocks/000000001", "x/.blocks/000000002",
                              "x/.blocks/000000003"]  # fmt: skip


def test_the_index_is_read_once_from_pages():
    location = CountingLocation()
    store = BlockDataStore(location)
    rec = Recorder(store, max_records=1, max_seconds=None)
    for i in range(PAGE_BLOCKS + 5):
        rec.record("x", i)
    rec.close()
    location.reads.clear()
    reader = BlockDataStore(location, mode="r")
    view = reader.get_all("x")
    assert view[PAGE_BLOCKS + 4] == PAGE_BLOCKS + 4 and view[3] == 3
    np.testing.assert_array_equal(np.asarray(view), np.arange(PAGE_BLOCKS + 5))
    assert [key for key in location.reads if "/.index/" in key] == [
        "x/.index/000000000", "x/.index/000000001"]  # fmt: skip


# -- commits, crashes, truncation --------------------------------------------------------------


class FailingLocation(DirectoryLocation):
    """A directory location whose writes of keys matching ``fail_on`` raise (a server or
    disk failing at that moment)."""

    fail_on: str | None = None

    def write_many(self, items: Mapping[str, Any]) -> dict[str, bool]:
        if self.fail_on and any(self.fail_on in name for name in items):
            raise StoreWriteError(f"{self!r}: injected failure writing {next(iter(items))!r}")
        return super().write_many(items)


def _killed(store: BlockDataStore) -> None:
    """Abandon ``store`` as a killed writer does: its lock goes (the OS drops a dead
    process's flock), nothing else happens."""
    store._unlock()


@pytest.mark.parametrize("stage", [".blocks", ".index", ".series.json"])
def test_a_flush_cut_short_exposes_nothing(tmp_path, stage):
    """The location fails while a flush writes its blocks, its index pages or its
    metadata: readers see the series as before, a retry writes the block once, and a
    writer that gives up (a crash) leaves what a reopening writer cuts away."""
    for retry in (True, False):
        location = FailingLocation(tmp_path / f"s{retry}")
        store = BlockDataStore(location)
        store.append("x", 1.0)  # committed
        location.fail_on = stage
        store.append_block("x", store.series_spec("x"), np.array([2.0, 3.0]))
        with pytest.raises(StoreWriteError, match="injected"):
            store.flush()
        reader = BlockDataStore(location.root, mode="r")
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), [1.0])
        location.fail_on = None
        if retry:
            store.flush()
            np.testing.assert_array_equal(np.asarray(store.get_all("x")), [1.0, 2.0, 3.0])
            store.close()
            want = [1.0, 2.0, 3.0]
        else:
            want = [1.0]  # the writer is gone: nothing of the flush was committed
            _killed(store)
        again = BlockDataStore(location.root, mode="a")
        np.testing.assert_array_equal(np.asarray(again.get_all("x")), want)
        assert len(os.listdir(Path(location.root) / "x" / ".blocks")) == len(want) - retry
        again.append("x", 4.0)
        np.testing.assert_array_equal(np.asarray(again.get_all("x")), [*want, 4.0])
        again.close()


def test_a_writer_reopening_cuts_back_to_the_last_commit(tmp_path):
    store = BlockDataStore(tmp_path / "s")
    rec = Recorder(store, max_records=1, max_seconds=None)
    for i in range(5):
        rec.record("a", float(i))
        rec.record("b", i)
    rec.flush()  # an epoch: committed
    spec_a, spec_b = store.series_spec("a"), store.series_spec("b")
    store.append_block("a", spec_a, np.array([5.0, 6.0]))
    store.flush()  # flushed but never committed: the writer is "killed" here
    store.append_block("new", spec_a, np.array([1.0]))
    store.flush()
    store.append_block("b", spec_b, np.array([5]))  # queued only
    reader = BlockDataStore(tmp_path / "s", mode="r")  # a reader sees what was flushed
    assert len(reader.get_all("a")) == 7 and reader.keys() == ["a", "b", "new"]
    blocks = tmp_path / "s" / "a" / ".blocks"
    assert len(os.listdir(blocks)) == 6
    _killed(store)
    again = BlockDataStore(tmp_path / "s", mode="a")
    np.testing.assert_array_equal(np.asarray(again.get_all("a")), np.arange(5.0))
    np.testing.assert_array_equal(np.asarray(again.get_all("b")), np.arange(5))
    assert len(again.get_all("new")) == 0  # born after the commit: empty
    assert len(os.listdir(blocks)) == 5  # the uncommitted block is deleted
    again.append("a", 5.0)
    np.testing.assert_array_equal(np.asarray(again.get_all("a")), np.arange(6.0))
    again.close()


_CHILD = """
import sys
import numpy as np
from simrecorder import Recorder
from simrecorder.datastores._blocks import BlockDataStore
from simrecorder.testing.crash import expected, keys_at

store = BlockDataStore.from_url(sys.argv[1], mode="a")
rec = Recorder(store, max_records=int(sys.argv[2]), max_seconds=None)
step = 0
while True:
    for key in keys_at(step):
        rec.record(key, expected(key, step))
    step += 1
    if step % int(sys.argv[3]) == 0:
        rec.flush()
        print(step, flush=True)
"""


def _kill_while_recording(url: str, seed: int) -> int:
    """Record into ``url`` in a child, SIGKILL it at a random moment; the steps flushed."""
    rng = random.Random(seed)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(rng.choice([1, 3, 16])),
         str(rng.choice([1, 4]))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    flushed = 0
    try:
        for _ in range(rng.randint(1, 30)):
            line = child.stdout.readline()
            if not line:
                break
            flushed = int(line)
        time.sleep(rng.random() * 0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            flushed = int(line) if line.strip() else flushed
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return flushed


def _check_committed_prefix(url: str, flushed: int) -> None:
    """Every series holds exactly the samples of steps 0..n-1 (one n for all: the
    series are aligned), n at least the steps flushed, and the store takes appends."""
    store = BlockDataStore.from_url(url, mode="a", lock_timeout=10)
    steps = set()
    for key in ("scalar", "array", "events", "late"):
        first = 37 if key == "late" else 0
        if key not in store:
            assert flushed <= first, f"{key} is missing"
            continue
        data = store.get_all(key)
        for i in range(len(data)):
            want, got = expected(key, first + i), data[i]
            if key == "events":
                assert got["step"] == want["step"] and np.array_equal(got["ids"], want["ids"])
            else:
                assert np.asarray(got).tobytes() == np.asarray(want).astype(
                    np.asarray(got).dtype).tobytes(), (key, i)  # fmt: skip
        if len(data) or key != "late":
            steps.add(first + len(data))
    assert len(steps) == 1, f"series not aligned: {steps}"
    assert steps.pop() >= flushed
    rec = Recorder(store, max_seconds=None)
    rec.record("scalar", 0.5)
    rec.record("after", 1.0)
    rec.close()


@pytest.mark.parametrize("where", ["directory", "redis"])
def test_sigkill_leaves_a_committed_prefix(where, tmp_path, redis_server, redis_prefix):
    for kill in range(8):
        if where == "directory":
            url = f"blocks+file://{tmp_path}/kill{kill}"
        else:
            # the killed writer's lease runs out after lock_ttl: the next one waits
            url = f"blocks+{redis_server.url}/0/{redis_prefix}-{kill}?lock_ttl=0.5"
        flushed = _kill_while_recording(url, seed=kill)
        _check_committed_prefix(url, flushed)


# -- modes, readers, URLs, keys, limits ----------------------------------------------------------


def test_mode_r_writes_nothing_to_redis(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}")
    with pytest.raises(StoreNotFoundError, match="blocks\\+redis"):
        BlockDataStore(location, mode="r")
    assert list(location.keys()) == []
    store = BlockDataStore(location)
    store.append("x", 1.0)
    store.close()
    before = {key: location.get(key) for key in location.keys()}
    reader = BlockDataStore(location, mode="r")
    assert np.asarray(reader.get_all("x")).tolist() == [1.0] and reader.keys() == ["x"]
    reader.close()
    assert {key: location.get(key) for key in location.keys()} == before


def test_a_reader_sees_what_the_writer_flushes(tmp_path):
    writer = BlockDataStore(tmp_path / "s")
    writer.append("x", 1.0)
    reader = BlockDataStore(tmp_path / "s", mode="r")
    view = reader.get_all("x")
    assert len(view) == 1
    writer.append("x", 2.0)
    writer.append("g/y", "text")
    assert len(reader.get_all("x")) == 2 and reader.node_type("g") == "group"
    assert reader.keys() == ["g/y", "x"] and reader.get_all("g/y") == ["text"]
    writer.close()


def test_urls(tmp_path):
    store = BlockDataStore(tmp_path / "s")
    assert store.url == f"blocks+file://{tmp_path}/s" and store.local_path == str(tmp_path / "s")
    store.close()
    again = open_datastore(store.url, mode="r")
    assert isinstance(again, BlockDataStore) and again.url == store.url
    assert "blocks+*" in registry.known_protocols()
    with pytest.raises(InvalidArgumentError, match="blocks\\+"):
        BlockDataStore.from_url(f"file://{tmp_path}/s")
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        BlockDataStore.from_url(f"blocks+file://{tmp_path}/missing", mode="r")
    assert not (tmp_path / "missing").exists()


def test_layout_names_are_refused_as_key_parts():
    store = BlockDataStore(MemoryLocation())
    for key in ("a/.blocks", ".attrs.json", "x/.series.json/y", "v/.value"):
        with pytest.raises(InvalidKeyError, match="reserves"):
            store.append(key, 1.0)
        with pytest.raises(InvalidKeyError, match="reserves"):
            store.set(key, 1.0)
    rec = Recorder(store)
    with pytest.raises(InvalidKeyError, match="reserves"):
        rec.record("a/.index", 1.0)
    assert store.keys() == []


def test_blocks_over_the_location_limit_are_split(redis_server, redis_prefix):
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}", max_value_bytes=1000)
    store = BlockDataStore(location)
    assert store.max_value_bytes == 1000
    data = np.arange(900.0)
    rec = Recorder(store, max_records=900, max_seconds=None)
    for value in data:
        rec.record("x", value)
    rec.flush()
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), data)
    assert all(len(location.get(key)) <= 1000 for key in location.keys())
    with pytest.raises(ValueTooLargeError, match="'big'"):
        store.append("big", np.zeros(200))
    with pytest.raises(ValueTooLargeError, match="'v'"):
        store.set("v", b"x" * 2000)
    store.close()


def test_a_full_location_keeps_the_blocks_queued(tmp_path):
    location = DirectoryLocation(tmp_path / "s", max_size=20_000)
    store = BlockDataStore(location)
    store.append("x", np.zeros(10))
    store.append_block("x", store.series_spec("x"), np.ones((5, 10)))
    store.append_block("x", store.series_spec("x"), np.ones((300, 10)))
    with pytest.raises(StoreFullError, match="declined"):
        store.flush()
    assert len(BlockDataStore(tmp_path / "s", mode="r").get_all("x")) == 1
    location.max_size = None
    store.flush()
    assert len(store.get_all("x")) == 306
    store.close()


def test_surrender_hands_back_the_queued_blocks(tmp_path):
    location = DirectoryLocation(tmp_path / "s", max_size=3000)
    store = BlockDataStore(location)
    store.append("x", np.zeros(3, dtype=np.int16))
    store.append_block("x", store.series_spec("x"), np.ones((300, 3), dtype=np.int16))
    events = [_codec.encode({"a": 1}), _codec.encode([b"2"] * 300)]
    object_spec = SeriesSpec("object")
    store.append_block("e/v", object_spec, events)
    with pytest.raises(StoreFullError):
        store.flush()
    given = store.surrender()
    assert [(key, spec) for key, spec, _ in given] == [("x", store.series_spec("x")),
                                                       ("e/v", object_spec)]  # fmt: skip
    np.testing.assert_array_equal(given[0][2], np.ones((300, 3), dtype=np.int16))
    assert given[0][2].dtype == np.int16 and given[1][2] == events
    assert store.surrender() == [] and store.keys() == ["x"] and store.node_type("e") is None
    store.close()  # nothing left to write
    assert len(BlockDataStore(tmp_path / "s", mode="r").get_all("x")) == 1


def test_mode_w_deletes_the_store_keys(tmp_path):
    store = BlockDataStore(tmp_path / "s")
    store.append("x", 1.0)
    store.set("v", 2)
    store.close()
    again = BlockDataStore(tmp_path / "s", mode="w")
    assert again.keys() == [] and again.get("v") is None
    again.close()
    assert sorted(os.listdir(tmp_path / "s")) == [".attrs.json", ".simrecorder-lock-writer"]


def test_location_given_as_object_stays_open(redis_server, redis_prefix):
    location: Location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}")
    with BlockDataStore(location) as store:
        store.append("x", 1.0)
    assert location.exists(".attrs.json")  # still usable: the store did not close it


def test_a_read_only_location(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadOnlyError, match="read-only"):
        BlockDataStore(DirectoryLocation(tmp_path / "empty", read_only=True))
    store = BlockDataStore(tmp_path / "s")
    store.append("x", 1.0)
    store.close()
    reader = BlockDataStore(DirectoryLocation(tmp_path / "s", read_only=True), mode="r")
    assert np.asarray(reader.get_all("x")).tolist() == [1.0]


def test_an_owned_location_is_closed_and_reopened(redis_server, redis_prefix):
    store = BlockDataStore(f"{redis_server.url}/0/{redis_prefix}")
    store.append("x", 1.0)
    store.close()
    store.open()
    store.append("x", 2.0)
    assert np.asarray(store.get_all("x")).tolist() == [1.0, 2.0]
    store.close()


# -- one writer at a time ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "directory", "redis"])
def lockable(request, tmp_path, redis_server, redis_prefix) -> Location:
    """A location of each kind with writer locks (a short Redis lease)."""
    if request.param == "memory":
        return MemoryLocation()
    if request.param == "directory":
        return DirectoryLocation(tmp_path / "s")
    return RedisLocation(f"{redis_server.url}/0/{redis_prefix}?lock_ttl=1")


def test_a_second_writer_is_refused(lockable):
    writer = BlockDataStore(lockable, mode="a")
    writer.append("x", 1.0)
    writer.flush()
    for mode in ("a", "r+", "w", "w-"):
        with pytest.raises(StoreLockedError, match="another writer"):
            BlockDataStore(lockable, mode=mode)
    np.testing.assert_array_equal(np.asarray(writer.get_all("x")), [1.0])  # 'w' deleted nothing
    if lockable.persistent:  # readers take no lock
        reader = BlockDataStore(lockable, mode="r")
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), [1.0])
        default = BlockDataStore(lockable)  # an existing store: opened read-only
        assert default.read_only
        default.close()
        reader.close()
    writer.close()
    again = BlockDataStore(lockable, mode="a")  # released on close
    again.append("x", 2.0)
    with pytest.raises(StoreLockedError):
        writer.open()  # reopening a writer takes the lock again
    again.close()
    writer.open()  # and sees what the other writer did meanwhile
    np.testing.assert_array_equal(np.asarray(writer.get_all("x")), [1.0, 2.0])
    writer.append("x", 3.0)
    writer.close()
    assert len(BlockDataStore(lockable, mode="r").get_all("x")) == 3 or not lockable.persistent


def test_a_new_store_being_created_is_locked(tmp_path):
    """``mode=None`` on a location a writer is creating a store in: no store yet, so
    it would create one: refused."""
    location = DirectoryLocation(tmp_path / "s")
    held = location.lock()
    with pytest.raises(StoreLockedError, match="another writer"):
        BlockDataStore(location)
    held.release()
    BlockDataStore(location).close()


_WRITER = """
import sys, time
from simrecorder.datastores._blocks import BlockDataStore
from simrecorder.errors import StoreLockedError
try:
    store = BlockDataStore.from_url(sys.argv[1], mode="a")
except StoreLockedError as exc:
    print("locked:", exc, flush=True)
    sys.exit(0)
store.append("x", 1.0)
store.flush()
print("writing", flush=True)
time.sleep(120)
"""


def _writer_process(url: str) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen([sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert child.stdout is not None
    return child, child.stdout.readline()


@pytest.mark.parametrize("where", ["directory", "redis"])
def test_writers_in_two_processes_exclude_each_other(where, tmp_path, redis_server, redis_prefix):
    if where == "directory":
        url, expiry = f"blocks+file://{tmp_path}/s", 0.0
    else:
        url, expiry = f"blocks+{redis_server.url}/0/{redis_prefix}?lock_ttl=1", 1.0
    child, said = _writer_process(url)
    try:
        assert said == "writing\n"
        with pytest.raises(StoreLockedError, match="another writer"):
            BlockDataStore.from_url(url, mode="a")
        reader = BlockDataStore.from_url(url, mode="r")  # readers are not locked out
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), [1.0])
        reader.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    # the killed writer's lock goes with it (Redis: when its lease runs out)
    start = time.monotonic()
    store = BlockDataStore.from_url(url, mode="a", lock_timeout=expiry + 10)
    assert time.monotonic() - start <= expiry + 2
    child, said = _writer_process(url)  # and this writer locks the child out
    child.wait(timeout=60)
    assert said.startswith("locked: ") and "another writer" in said
    assert child.stdout is not None
    child.stdout.close()
    store.close()


def test_a_writer_that_lost_its_lease_writes_nothing(redis_server, redis_prefix):
    """Redis: the lease ran out while the writer stalled and another writer took it:
    the stalled writer's next flush raises and writes nothing."""
    location = RedisLocation(f"{redis_server.url}/0/{redis_prefix}", lock_ttl=0.3)
    store = BlockDataStore(location, mode="a")
    store.append("x", 1.0)
    store.flush()
    raw = redis.Redis(port=redis_server.port)
    raw.set(f"{redis_prefix}/.simrecorder-lock-writer", b"another-writer", px=5000)
    time.sleep(0.5)
    with pytest.raises(StoreLockedError, match="lost the lock"):
        store.append("x", 2.0)  # append() flushes and commits
    with pytest.raises(StoreLockedError, match="lost the lock"):
        store.flush()  # and raises until the writer is closed
    assert len(BlockDataStore(location, mode="r").get_all("x")) == 1
    raw.close()


def test_locations_without_locks_are_not_protected(tmp_path):
    """A location without locks (fsspec, composites): the store opens, and a second
    writer is the caller's business (documented)."""
    from simrecorder.locations import Fanout

    location = Fanout(DirectoryLocation(tmp_path / "a"))
    assert not location.supports_locking
    store = BlockDataStore(location, mode="a")
    store.append("x", 1.0)
    store.close()
    assert len(BlockDataStore(location, mode="r").get_all("x")) == 1


def test_series_attrs_live_in_the_series_metadata(tmp_path):
    """Attributes are JSON in ``K/.series.json`` (one document, replaced whole) and a
    reader sees later ones (the cut back after a crash: test_series_attrs.py)."""
    location = DirectoryLocation(tmp_path / "b", create=True)
    store = BlockDataStore(location)
    store.append("n/v", np.zeros(3))
    reader = BlockDataStore(DirectoryLocation(tmp_path / "b"), mode="r")
    assert reader.series_attrs("n/v") == {}
    store.set_series_attrs("n/v", {"units": "mV", "simrecorder_dims": ["neuron"]})
    meta = json.loads((tmp_path / "b" / "n" / "v" / ".series.json").read_bytes())
    assert meta["attrs"] == {"units": "mV", "simrecorder_dims": ["neuron"]}
    assert meta["count"] == 1
    assert reader.series_attrs("n/v")["units"] == "mV"
    store.set_series_attrs("n/v", {"units": "V"})
    store.close()
    assert reader.series_attrs("n/v") == {"units": "V", "simrecorder_dims": ["neuron"]}
    reader.close()


def test_a_commit_whose_reply_is_lost_still_ends_its_epoch(redis_server, redis_prefix):
    """The server applies a commit but the client times out waiting for the reply (a
    busy server): the next flush must not stamp its rows with the committed epoch, or a
    writer reopening after a crash keeps them and the series are no longer aligned."""
    import threading

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from simrecorder._schema import infer_spec

    url = f"{redis_server.url}/0/{redis_prefix}"
    location = RedisLocation(url, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    store = BlockDataStore(location)
    spec = infer_spec(np.zeros(2))

    def put(rows: int, value: float, keys: tuple[str, ...] = ("a", "b")) -> None:
        for key in keys:
            store.append_block(key, spec, np.full((rows, 2), value))

    put(10, 1.0)
    store.commit()
    put(5, 2.0)
    store.flush()
    busy = "local t = redis.call('TIME')[1] + 0 while redis.call('TIME')[1] + 0 < t + 2 do end"
    blocker = threading.Thread(target=redis.Redis.from_url(redis_server.url).eval, args=(busy, 0))
    blocker.start()
    time.sleep(0.2)
    with pytest.raises(StoreConnectionError):
        store.commit()  # applied by the server once the script ends; the reply is lost
    blocker.join()
    put(5, 3.0, keys=("a",))
    store.flush()  # never committed: a crash follows
    _killed(store)
    again = BlockDataStore(url, mode="a")
    assert (len(again.get_all("a")), len(again.get_all("b"))) == (15, 15)
    again.close()
