"""ZarrDataStore under faults: interrupts, a full disk, stores never closed, crashes."""

from __future__ import annotations

import gc
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from simrecorder import (
    CompressionType,
    DatastoreType,
    InMemoryDataStore,
    InvalidKeyError,
    Recorder,
    ZarrDataStore,
    open_datastore,
)
from simrecorder._schema import infer_spec
from simrecorder.errors import StoreFormatError, StoreFullError

RAW = CompressionType.NONE  # chunk files written by simrecorder itself
CODEC = CompressionType.BLOSC  # chunks written through zarr


def _fill(disk, leave: int) -> str:
    """Fill ``disk`` up to ``leave`` free bytes; return the filler's path."""
    filler = os.path.join(disk, "filler")
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\1" * max(0, free - leave))
    return filler


def _temp_files(root) -> list[str]:
    found = glob.glob(os.path.join(root, "**", "*.tmp"), recursive=True)
    return found + glob.glob(os.path.join(root, "**", "*.partial"), recursive=True)


LMDB = DatastoreType.LMDB


def _lmdb(path, **kwargs) -> ZarrDataStore:
    return ZarrDataStore(path, datastore_type=LMDB, **kwargs)


def _zip(path, **kwargs) -> ZarrDataStore:
    return ZarrDataStore(path, datastore_type=DatastoreType.ZIP, **kwargs)


# -- D7: a store dropped without close() ----------------------------------------------------
@pytest.mark.parametrize("kind", [DatastoreType.DIRECTORY, LMDB])
def test_a_store_dropped_without_close_releases_its_lock(tmp_path, kind):
    path = tmp_path / "dropped.zarr"
    for i in range(3):
        store = ZarrDataStore(path, mode="a", datastore_type=kind)
        store.append("x", float(i))
        del store
        gc.collect()
    # the same process opens it again at once
    store = ZarrDataStore(path, mode="a", datastore_type=kind)
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), [0.0, 1.0, 2.0])
    store.close()


# -- D15: packing the zip ----------------------------------------------------------------
def test_an_unpacked_zip_store_is_readable(tmp_path):
    path = tmp_path / "run.zip"
    writer = _zip(path)
    writer.append("x", 1.0)
    writer.flush()
    assert not path.exists()
    with open_datastore(str(path), mode="r") as reader:  # the data is in run.zip.partial/
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), [1.0])
    writer.close()
    assert path.is_file() and not os.path.exists(f"{path}.partial")
    assert _temp_files(tmp_path) == []


def test_packing_on_a_full_disk_keeps_the_store_and_can_be_retried(small_disk):
    path = small_disk / "run.zip"
    store = _zip(path, compression_type=RAW)
    data = np.arange(6 * 1024 * 128, dtype=np.float64).reshape(-1, 128)  # 6 MiB
    store.append_block("x", infer_spec(data[0]), data)
    store.flush()
    filler = _fill(small_disk, leave=2 << 20)
    with pytest.raises(StoreFullError, match=r"run\.zip"):
        store.close()
    assert not store.closed
    assert not glob.glob(f"{path}.*.tmp") and not path.exists()
    with open_datastore(str(path), mode="r") as reader:  # readable while the disk is full
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), data)
    with pytest.raises(StoreFullError):
        store.close()  # still full: still open
    os.remove(filler)
    store.close()
    assert store.closed and path.is_file()
    assert not os.path.exists(f"{path}.partial") and _temp_files(small_disk) == []
    with open_datastore(str(path), mode="r") as reader:
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), data)


# -- append_block is all or nothing ---------------------------------------------------------
_alarm = {"on": False}


def _append_all(store, key, blocks, rng, longest) -> int:
    """Append every block, each until it is taken, with SIGALRM raising
    KeyboardInterrupt at random moments inside ``append_block`` (up to ``longest``
    seconds after the call started); return how many interrupts landed."""
    interrupts = 0
    spec = infer_spec(blocks[0][0])
    # two blocks uninterrupted: how long an append takes here, so that the
    # interrupts land inside it at random moments and an append can still complete
    # (on a slow disk a fixed bound below its duration interrupts every try)
    store.append_block(key, spec, blocks[0])  # (the first also makes the array)
    start = time.perf_counter()
    store.append_block(key, spec, blocks[1])
    longest = max(longest, 2 * (time.perf_counter() - start))
    _alarm["on"] = True
    try:
        for block in blocks[2:]:
            while True:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.00005, longest))
                try:
                    store.append_block(key, spec, block)
                    break
                except KeyboardInterrupt:
                    interrupts += 1
    finally:
        _alarm["on"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    return interrupts


def _interrupt_inside_the_store(signum, frame):
    # Raise only inside append_block: anywhere else (this test's loop) the outcome of
    # the call would be ambiguous, so try again a moment later.
    inside = frame
    while inside is not None and inside.f_code.co_name != "append_block":
        inside = inside.f_back
    if inside is not None:
        raise KeyboardInterrupt
    if _alarm["on"]:
        signal.setitimer(signal.ITIMER_REAL, 0.0001)


@pytest.fixture
def alarm():
    previous = signal.signal(signal.SIGALRM, _interrupt_inside_the_store)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        gc.collect()  # files whose open() was interrupted before `with` took them


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # an interrupt may land in a gc callback
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("backend", "kind"),
    [("raw", "dense"), ("codec", "dense"), ("codec", "str"), ("memory", "dense"),
     ("lmdb-raw", "dense"), ("lmdb-codec", "dense"), ("lmdb-codec", "str")],
)  # fmt: skip
def test_an_interrupted_append_block_takes_nothing(tmp_path, alarm, backend, kind):
    rng = random.Random(12)
    store_type = LMDB if backend.startswith("lmdb") else DatastoreType.DIRECTORY
    if backend == "memory":
        store = InMemoryDataStore()
    else:
        compression = RAW if backend.endswith("raw") else CODEC
        store = ZarrDataStore(tmp_path / "i.zarr", compression_type=compression,
                              desired_chunk_size_bytes=4096, datastore_type=store_type)  # fmt: skip
    # zarr's own path (str series) takes ~3 ms a call and defers signals to its end:
    # longer delays; dense series, compressed or not, take the store's own writer,
    # which writes a chunk or two in well under a millisecond
    slow = backend.endswith("codec") and kind != "dense"
    count, longest = (80, 0.02) if slow else (300, 0.0003 if backend != "memory" else 0.003)
    if kind == "dense":
        blocks = [np.arange(n, n + 7 * 16, dtype=np.float64).reshape(7, 16)
                  for n in range(0, count * 7 * 16, 7 * 16)]  # fmt: skip
    else:
        blocks = [[f"s{n}-{i}" for i in range(5)] for n in range(count)]
    open_before = len(os.listdir("/proc/self/fd"))
    interrupts = _append_all(store, "x", blocks, rng, longest)
    gc.collect()
    # an interrupt as a temp file's open() returned used to leak its descriptor
    assert len(os.listdir("/proc/self/fd")) < open_before + 20
    got = store.get_all("x")
    if kind == "dense":
        np.testing.assert_array_equal(np.asarray(got), np.concatenate(blocks))
    else:
        assert got == [item for block in blocks for item in block]
    if backend != "memory":
        assert interrupts > 0, "no interrupt landed inside append_block"
        assert not _temp_files(tmp_path / "i.zarr")
        store.close()
        with ZarrDataStore(tmp_path / "i.zarr", mode="r", datastore_type=store_type) as again:
            assert len(again.get_all("x")) == sum(len(b) for b in blocks)


@pytest.mark.parametrize("kind", [DatastoreType.DIRECTORY, LMDB])
@pytest.mark.parametrize("compression", [RAW, CODEC])
def test_a_full_disk_in_append_block_takes_nothing(small_disk, compression, kind):
    path = small_disk / "full.zarr"
    store = ZarrDataStore(path, compression_type=compression, datastore_type=kind)
    rng = np.random.default_rng(0)  # random: compression cannot make it small
    first = rng.random((1000, 64))
    store.append_block("x", infer_spec(first[0]), first)
    store.flush()  # its metadata is written (an append writes chunks only)
    big = rng.random((4000, 64))  # 2 MiB
    filler = _fill(small_disk, leave=1 << 20)
    with pytest.raises(StoreFullError, match=r"'x'.*full\.zarr"):
        store.append_block("x", infer_spec(big[0]), big)
    np.testing.assert_array_equal(np.asarray(store.get_all("x")), first)
    assert not _temp_files(path)
    os.remove(filler)
    store.append_block("x", infer_spec(big[0]), big)  # the same block, taken once
    store.close()
    with ZarrDataStore(path, mode="r", datastore_type=kind) as reader:
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), np.concatenate([first, big]))


# -- D2/D16: keys zarr can never hold fail at record time -----------------------------------
@pytest.mark.parametrize("key", ["p" * 300, "g/" + "é" * 128, "a/zarr.json", "__x", "a/__b"])
def test_keys_zarr_cannot_hold_fail_at_record_time(tmp_path, key):
    store = ZarrDataStore(tmp_path / "k.zarr")
    with pytest.raises(InvalidKeyError, match=r"k\.zarr"):
        store.check_key(key)
    rec = Recorder(store, max_seconds=None)
    with pytest.raises(InvalidKeyError):
        rec.record(key, 1.0)
    rec.record("ok/" + "p" * 255, 1.0)  # the longest part a file system takes
    rec.record("a_b", 1.0)
    rec.close()
    with ZarrDataStore(tmp_path / "k.zarr", mode="r") as store:
        assert store.keys() == ["a_b", "ok/" + "p" * 255]


# -- commit(): series aligned after an unclean end ------------------------------------------
@pytest.mark.parametrize("kind", [DatastoreType.DIRECTORY, LMDB])
@pytest.mark.parametrize("compression", [RAW, CODEC])
def test_a_writer_reopening_after_an_unclean_end_cuts_back_to_the_commit(
    tmp_path, compression, kind
):
    path = tmp_path / "c.zarr"
    store = ZarrDataStore(path, compression_type=compression, datastore_type=kind)
    for i in range(10):
        store.append("a", float(i))
        store.append("s", f"s{i}")
    store.commit()
    spec = store.series_spec("a")
    store.append_block("a", spec, np.arange(10.0, 15.0))  # never committed
    store.append_block("late", spec, np.array([1.0]))
    store.flush()  # written and shown to readers, but not committed
    del store  # an unclean end: no close()
    gc.collect()
    with ZarrDataStore(path, mode="r", datastore_type=kind) as reader:  # readers see all
        assert len(reader.get_all("a")) == 15
    store = ZarrDataStore(path, compression_type=compression, mode="a", datastore_type=kind)
    np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(10.0))
    assert store.get_all("s") == [f"s{i}" for i in range(10)]
    assert len(store.get_all("late")) == 0
    store.append("a", 10.0)  # resumes at the committed length
    store.close()  # a clean close commits
    store = ZarrDataStore(path, compression_type=compression, mode="r", datastore_type=kind)
    np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(11.0))
    store.close()


@pytest.mark.parametrize("suffix", [".zarr", ".mdb"])
def test_commits_through_a_recorder_survive_a_crash_mid_epoch(tmp_path, suffix):
    path = tmp_path / f"e{suffix}"
    script = f"""
import os
import numpy as np
from simrecorder import Recorder, open_datastore
rec = Recorder(open_datastore({str(path)!r}), max_seconds=None)
for i in range(100):
    rec.record("a", float(i))
    rec.record("b", np.full(3, i))
rec.flush()  # an epoch: every series written, flushed, committed
store = rec.datastores[0]
store.append_block("a", store.series_spec("a"), np.arange(100.0, 120.0))  # half an epoch
store.flush()  # shown to readers, not committed
os._exit(0)  # then the process dies
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    with open_datastore(str(path), mode="r") as reader:
        assert len(reader.get_all("a")) == 120
    with open_datastore(str(path), mode="a") as store:  # a writer cuts back to the commit
        assert len(store.get_all("a")) == len(store.get_all("b")) == 100
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(100.0))


def test_stores_from_before_commits_keep_their_length(tmp_path):
    path = tmp_path / "old.zarr"
    with ZarrDataStore(path) as store:
        store.append("a", 1.0)
    for name in ("zarr.json", "a/zarr.json"):  # as written before commits existed
        meta = json.loads((path / name).read_text())
        for attr in ("simrecorder_commit", "simrecorder_epoch", "simrecorder_clean"):
            meta["attributes"].pop(attr, None)
        (path / name).write_text(json.dumps(meta))
    store = ZarrDataStore(path, mode="a")
    store.append("a", 2.0)
    store.append("b", 3.0)
    store.commit()
    store.append_block("a", store.series_spec("a"), np.array([4.0]))  # never committed
    del store
    gc.collect()
    with ZarrDataStore(path, mode="a") as store:  # a writer cuts back to the commit
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), [1.0, 2.0])
        np.testing.assert_array_equal(np.asarray(store.get_all("b")), [3.0])


def test_local_path(tmp_path):
    with ZarrDataStore(tmp_path / "l.zarr") as store:
        assert store.local_path == str(tmp_path / "l.zarr")
    with _zip(tmp_path / "l.zip") as store:
        assert store.local_path == str(tmp_path / "l.zip")


@pytest.mark.parametrize(
    "damage", [b'{"zarr_format": 3, "node_type": "arr', b"\xff\xfe{", b"[1, 2]"]
)
def test_damaged_array_metadata_is_a_store_format_error_naming_the_key(tmp_path, damage):
    path = tmp_path / "r.zarr"
    with Recorder(ZarrDataStore(path)) as rec:
        rec.record("a/b", 1.0)
        rec.record("s", "x")
    (path / "a" / "b" / "zarr.json").write_bytes(damage)
    store = ZarrDataStore(path, mode="r")
    with pytest.raises(StoreFormatError, match=r"r\.zarr") as caught:
        store.keys()
        store.get_all("a/b")
    assert isinstance(caught.value, OSError)
    assert list(store.get_all("s")) == ["x"]  # the rest stays readable
    store.close()
