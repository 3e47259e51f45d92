"""HDF5 store under faults: full disk, Ctrl-C mid-append, crashes between commits,
many series, files written by other tools and damaged files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, KeyConflictError, StoreFormatError
from simrecorder._schema import infer_spec
from simrecorder.datastores import _hdf5
from simrecorder.errors import StoreFullError


def fill(directory, leave):
    """Fill the file system of ``directory`` up to ``leave`` free bytes."""
    st = os.statvfs(directory)
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return directory / "filler"


def test_disk_full_keeps_every_row_and_takes_the_block_later(small_disk):
    path = small_disk / "run.h5"
    store = HDF5DataStore(path)
    a, b, s = infer_spec(1.0), infer_spec(np.zeros(1024)), infer_spec("x")
    store.append_block("a", a, np.array([-1.0]))
    store.append_block("b", b, np.full((1, 1024), -1.0))
    store.append_block("s", s, ["-1"])
    store.flush()
    filler = fill(small_disk, 3 << 20)
    blocks = []  # the blocks of one step, as the recorder would hand them
    error, step = None, 0
    while error is None and step < 2000:
        steps = range(step, step + 25)
        blocks = [
            ("a", a, np.array(steps, dtype=float)),
            ("b", b, np.repeat(np.array(steps, dtype=float)[:, None], 1024, axis=1)),
            ("s", s, [str(i) for i in steps]),
        ]
        while blocks:
            try:
                store.append_block(*blocks[0])
            except StoreFullError as exc:
                error = exc
                break
            blocks.pop(0)
        else:
            try:
                store.flush()
            except StoreFullError as exc:
                error = exc
            step += 25
        if step % 100 == 0 and error is None:
            store.append(f"k/s{step}", {"step": step})
    assert isinstance(error, StoreFullError) and "no room" in str(error)
    with HDF5DataStore(path, mode="r") as reader:  # readable while the disk is full
        assert len(reader.get_all("a")) >= step - 24
    filler.unlink()
    for block in blocks:  # the blocks that were not taken, handed again
        store.append_block(*block)
    store.flush()
    store.close()
    with h5py.File(path, "r") as f:
        want = np.arange(-1.0, step + 25)
        np.testing.assert_array_equal(f["a"][()], want)
        np.testing.assert_array_equal(f["b"][()], np.repeat(want[:, None], 1024, axis=1))
        assert f["s/offsets"].shape == (len(want),)
    with HDF5DataStore(path, mode="r") as reader:
        assert reader.get_all("s") == [str(int(i)) for i in want]


def _blocks(steps):
    """Deterministic blocks of three kinds of series."""
    rng = random.Random(7)
    big, scalar, text = infer_spec(np.zeros(8192)), infer_spec(1.0), infer_spec("x")
    for n in range(steps):
        yield [  # 64 KiB samples: whole chunks are written the direct way
            ("big", big, np.full((rng.randint(1, 9), 8192), float(n))),
            ("scalar", scalar, np.full(rng.randint(1, 50), float(n))),
            ("text", text, [f"{n}-{i}" for i in range(rng.randint(1, 5))]),
        ]


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # an interrupt may land in a gc callback
def test_ctrl_c_in_the_middle_of_appends_takes_nothing(tmp_path):
    """KeyboardInterrupt at random moments inside append_block/flush: the store takes
    a block whole or not at all, so handing it again gives every sample exactly once."""
    path = tmp_path / "ctrlc.h5"
    timer = random.Random(3)
    interrupted = 0

    def inside_store(frame):
        while frame is not None:
            code = frame.f_code
            if code.co_filename == _hdf5.__file__ and code.co_name in ("append_block", "flush"):
                return True
            frame = frame.f_back
        return False

    def on_alarm(signum, frame):
        # a Ctrl-C between two calls of the caller is the caller's business, and one
        # in a weakref callback is not raised at all
        if inside_store(frame) and not frame.f_code.co_filename.endswith("weakref.py"):
            raise KeyboardInterrupt
        signal.setitimer(signal.ITIMER_REAL, timer.uniform(1e-4, 2e-3))

    def arm():
        signal.setitimer(signal.ITIMER_REAL, timer.uniform(1e-4, 2e-3))

    store = HDF5DataStore(path)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for blocks in _blocks(300):
            arm()
            for block in blocks:
                while True:
                    try:
                        store.append_block(*block)
                        break
                    except KeyboardInterrupt:
                        interrupted += 1
                        arm()
            while True:
                try:
                    store.flush()
                    break
                except KeyboardInterrupt:
                    interrupted += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    store.close()
    assert interrupted > 20  # the test did interrupt appends
    want = {"big": [], "scalar": [], "text": []}
    for blocks in _blocks(300):
        for key, _, block in blocks:
            want[key].extend(block)
    with HDF5DataStore(path, mode="r") as reader:
        np.testing.assert_array_equal(np.asarray(reader.get_all("big")), np.array(want["big"]))
        np.testing.assert_array_equal(np.asarray(reader.get_all("scalar")), want["scalar"])
        assert reader.get_all("text") == want["text"]


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_many_short_series_do_not_keep_memory_or_padding(tmp_path):
    # before: ~95 kB of RSS per series (every dataset stayed open) and 10.7 kB of
    # file per one-sample series (8 KiB minimum chunks); now 4 KiB chunks, which keep
    # a series that grows long after a small first flush within 1.2x (issue 18)
    path = tmp_path / "many.h5"
    n = 4000
    store = HDF5DataStore(path)
    spec = infer_spec(1.0)
    store.append_block("warm/up", spec, np.array([0.0]))
    before = _rss()
    for i in range(n):
        store.append_block(f"g{i % 50}/s{i}", spec, np.array([float(i)]))
        if i % 500 == 499:
            store.flush()
    grown = _rss() - before
    store.close()
    assert grown < 60e6, f"RSS grew by {grown / 1e6:.0f} MB for {n} series"
    assert path.stat().st_size / n < 7000
    with h5py.File(path, "r") as f:
        for i in range(0, n, 97):
            assert f[f"g{i % 50}/s{i}"][()].tolist() == [float(i)]


@pytest.fixture
def foreign_file(tmp_path):
    """A file written by another tool, with datasets simrecorder cannot append to."""
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["contiguous"] = np.arange(3.0)
        f.create_dataset("fixed", shape=(3,), maxshape=(10,), chunks=(2,), dtype="f8")
        f["scalar"] = 1.0
        f.create_dataset("vlen", data=["a", "b"], maxshape=(None,), dtype=h5py.string_dtype())
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["external"] = h5py.ExternalLink("other.h5", "/x")
        f.create_dataset("good", data=np.arange(3.0), maxshape=(None,), chunks=(4,))
    return path


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("contiguous", "contiguous"),
        ("fixed", "fixed maximum shape"),
        ("scalar", "scalar"),
        ("vlen", "variable-length"),
        ("dangling", "dangling soft link"),
        ("external", "external link"),
    ],
)
def test_datasets_that_cannot_grow_are_refused_when_first_recorded(foreign_file, key, why):
    with HDF5DataStore(foreign_file, mode="a") as store:
        with pytest.raises(KeyConflictError, match=f"{key}.*{why}"):
            store.series_spec(key)
        with pytest.raises(KeyConflictError, match=why):
            store.append(key, 1.0)
        store.append("good", 3.0)  # the rest of the file is usable
        np.testing.assert_array_equal(np.asarray(store.get_all("good")), np.arange(4.0))


def test_keys_skip_links_that_dangle_or_leave_the_file(foreign_file):
    with HDF5DataStore(foreign_file, mode="r") as store:
        assert store.keys() == ["contiguous", "fixed", "good", "scalar", "vlen"]
        assert "dangling" not in store and "external" not in store


def test_damaged_files_give_store_format_error_naming_file_and_problem(tmp_path):
    path = tmp_path / "damaged.h5"
    with HDF5DataStore(path, mode="a") as store:
        store.append("text", "hello")
        store.append("x", 1.0)
    with h5py.File(path, "a") as f:
        f.attrs["simrecorder_format"] = "one"
    with pytest.raises(StoreFormatError, match="simrecorder_format is 'one'"):
        HDF5DataStore(path)
    with h5py.File(path, "a") as f:
        f.attrs["simrecorder_format"] = 1
        f["x"].attrs["simrecorder_kind"] = "tensor"
        del f["text/offsets"]
    with HDF5DataStore(path, mode="r") as store:
        with pytest.raises(StoreFormatError, match=r"damaged\.h5.*'x'.*unknown kind 'tensor'"):
            store.get_all("x")
        with pytest.raises(StoreFormatError, match=r"damaged\.h5.*'text'.*offsets"):
            store.get_all("text")
    with HDF5DataStore(path, mode="a") as store:
        with pytest.raises(StoreFormatError, match="has no 'offsets' dataset"):
            store.series_spec("text")


def test_fuzzed_files_raise_only_store_format_error(tmp_path):
    path = tmp_path / "seed.h5"
    with HDF5DataStore(path, mode="a") as store:
        for i in range(5):
            store.append("x", np.full(3, float(i)))
            store.append("g/text", f"t{i}")
            store.append("g/obj", {"i": i})
    good = path.read_bytes()
    rng = random.Random(11)
    for trial in range(40):
        data = bytearray(good)
        for _ in range(8):
            data[rng.randrange(len(data))] = rng.randrange(256)
        fuzzed = tmp_path / f"fuzz{trial}.h5"
        fuzzed.write_bytes(bytes(data))
        try:
            with HDF5DataStore(fuzzed, mode="r") as store:
                for key in store.keys():
                    store.get(key)
                    np.asarray(store.get_all(key)) if store.node_type(key) == "series" else None
        except StoreFormatError:
            pass


WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from simrecorder import HDF5DataStore
    from simrecorder._schema import infer_spec
    store = HDF5DataStore(sys.argv[1])
    spec, text = infer_spec(1.0), infer_spec("x")
    for epoch in range(3):
        store.append_block("a", spec, np.arange(10.0) + 10 * epoch)
        store.append_block("t", text, [f"{epoch}"])
        store.flush()
        store.commit()
    store.append_block("a", spec, np.arange(5.0) + 30)  # flushed, never committed
    store.append_block("b", spec, np.arange(5.0))
    store.flush()
    if sys.argv[2] == "torn-commit":
        # a commit that wrote the series' attributes but not the root epoch
        store.file["a"].attrs["simrecorder_commit"] = [4, 35, 3, 30]
        store.flush()
    os._exit(0)  # like SIGKILL: no close
    """
)


@pytest.mark.parametrize("how", ["killed", "torn-commit"])
def test_a_writer_reopening_after_a_crash_cuts_series_to_the_last_commit(tmp_path, how):
    path = tmp_path / "crash.h5"
    subprocess.run([sys.executable, "-c", WRITER, str(path), how], check=True)
    with HDF5DataStore(path, mode="r") as reader:  # readers never truncate
        assert len(reader.get_all("a")) == 35
    with HDF5DataStore(path, mode="a") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("a")), np.arange(30.0))
        assert store.get_all("t") == ["0", "1", "2"]
        assert len(store.get_all("b")) == 0  # born after the last commit: cut back too
        store.append_block("a", infer_spec(1.0), np.array([30.0]))
    with h5py.File(path, "r") as f:  # a clean close: plain h5py sees the same lengths
        np.testing.assert_array_equal(f["a"][()], np.arange(31.0))
    with HDF5DataStore(path, mode="a") as store:
        assert len(store.get_all("a")) == 31


# -- the plain-h5py `text` copy of str series, written at a clean close ----------------


def _labels(start, stop):
    return [f"{i}-é" * (i % 4) for i in range(start, stop)]


def _text_state(path):
    """(rows of `s/text`, its valid rows, the rows it holds if all are valid)."""
    with h5py.File(path, "r", locking=False) as f:
        return _text_of(f)


def _text_of(f):
    text = f["s/text"]
    valid = int(text.attrs["simrecorder_text_rows"])
    rows = text.asstr()[:valid].tolist() if valid == len(text) else None
    return len(text), valid, rows


RESUMED_WRITER = textwrap.dedent(
    """
    import os, sys
    from simrecorder import HDF5DataStore
    from simrecorder._schema import infer_spec
    store = HDF5DataStore(sys.argv[1], mode="a")
    store.append_block("s", infer_spec("x"), [f"{i}-é" * (i % 4) for i in range(5, 9)])
    store.flush()
    store.commit()
    os._exit(0)  # like SIGKILL: no close
    """
)


def test_an_unclean_end_of_a_resumed_run_keeps_text_and_the_next_close_completes_it(tmp_path):
    path = tmp_path / "run.h5"
    with HDF5DataStore(path) as store:
        store.append_block("s", infer_spec("x"), _labels(0, 5))
    subprocess.run([sys.executable, "-c", RESUMED_WRITER, str(path)], check=True)
    assert _text_state(path) == (5, 5, _labels(0, 5))  # as of the last clean close
    with HDF5DataStore(path, mode="a") as store:
        assert store.get_all("s") == _labels(0, 9)  # all 9 were committed
    assert _text_state(path) == (9, 9, _labels(0, 9))


def _forge(path, text_rows=None, shape=None, commit_rows=None):
    """Leave ``path`` as a crash would: unclean, with ``s/text`` changed."""
    with h5py.File(path, "r+") as f:
        f.attrs["simrecorder_clean"] = 0
        text = f["s/text"]
        if shape is not None:
            text.resize(shape, axis=0)
            text[-1] = "junk"
        if text_rows is not None:
            text.attrs["simrecorder_text_rows"] = text_rows
        if commit_rows is not None:
            commit = f["s"].attrs["simrecorder_commit"]
            f["s"].attrs["simrecorder_commit"] = [commit[0], commit_rows, 0, 0]


@pytest.mark.parametrize(
    "crash",
    [
        {"text_rows": 0, "shape": 8},  # killed while a close extended text
        {"text_rows": 0},  # killed after the mark, before the rows
        {"commit_rows": 3},  # text longer than the committed series
    ],
)
def test_a_writer_reopening_after_a_crash_empties_text_never_beyond_the_commit(tmp_path, crash):
    path = tmp_path / "run.h5"
    with HDF5DataStore(path) as store:
        store.append_block("s", infer_spec("x"), _labels(0, 5))
    _forge(path, **crash)
    rows = crash.get("commit_rows", 5)
    with HDF5DataStore(path, mode="a") as store:
        assert _text_of(store.file) == (0, 0, [])  # emptied at once on reopen
        assert store.get_all("s") == _labels(0, rows)
    assert _text_state(path) == (rows, rows, _labels(0, rows))  # rewritten at close


KILLED_AT_CLOSE = textwrap.dedent(
    """
    import sys, time
    from simrecorder import HDF5DataStore
    from simrecorder._schema import infer_spec
    path, first, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = HDF5DataStore(path, mode="a")
    for start in range(first, stop, 5000):
        labels = [f"{i}-é" * (i % 4) for i in range(start, min(stop, start + 5000))]
        store.append_block("s", infer_spec("x"), labels)
    store.flush()
    store.commit()  # every row is committed: only `text` is left to write
    print("closing", flush=True)
    start = time.perf_counter()
    store.close()
    print(time.perf_counter() - start, flush=True)
    """
)


def test_sigkill_while_close_writes_text_never_shows_wrong_rows(tmp_path):
    """Kill the writer at random moments of a close that writes or extends `text`:
    its valid rows are always right, and the next writer repairs it."""
    n = 40_000
    rng = random.Random(5)

    def run(path, first, stop):
        return subprocess.Popen([sys.executable, "-c", KILLED_AT_CLOSE, str(path), str(first),
                                 str(stop)], stdout=subprocess.PIPE, text=True)  # fmt: skip

    probe = run(tmp_path / "probe.h5", 0, n)
    duration = float(probe.communicate()[0].split()[-1])  # of a close left alone
    for kill in range(6):
        path = tmp_path / f"kill{kill}.h5"
        resumed = kill % 2
        if resumed:
            first = run(path, 0, n)
            first.communicate()
            assert first.returncode == 0
        child = run(path, resumed * n, (resumed + 1) * n)
        assert child.stdout.readline() == "closing\n"
        time.sleep(rng.uniform(0, 1.5 * duration))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        total = (resumed + 1) * n
        _, valid, rows = _text_state(path)
        if rows is not None:
            assert rows == _labels(0, valid), f"kill {kill}: wrong text rows"
        with HDF5DataStore(path, mode="a") as store:
            assert store.get_all("s") == _labels(0, total)
        assert _text_state(path) == (total, total, _labels(0, total))


def test_a_full_disk_while_close_writes_text_loses_no_row(small_disk):
    path = small_disk / "run.h5"
    store = HDF5DataStore(path)
    labels = [str(i) for i in range(200_000)]  # 1 MiB of data, about 8 MiB as `text`
    store.append_block("s", infer_spec("x"), labels)
    store.commit()
    filler = fill(small_disk, 2 << 20)
    with pytest.raises(StoreFullError, match=r"s/text.*committed and safe"):
        store.close()
    filler.unlink()
    with HDF5DataStore(path, mode="a") as store:
        assert store.get_all("s") == labels
    with h5py.File(path, "r") as f:
        assert f["s/text"].asstr()[:].tolist() == labels


def test_offsets_claiming_more_rows_than_stored_give_store_format_error(tmp_path):
    path = tmp_path / "run.h5"
    with HDF5DataStore(path) as store:
        store.append_block("s", infer_spec("x"), ["a", "b"])
    with h5py.File(path, "r+") as f:  # a damaged shape: reading it needs 8 PB
        f["s/offsets"].resize(10**15, axis=0)
    with HDF5DataStore(path, mode="r") as store:
        with pytest.raises(StoreFormatError, match=r"run\.h5.*'s'.*claims"):
            store.get_all("s")
