"""simrecorder._fs (locks, retry, containment, temp names) and simrecorder._url."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

from simrecorder._fs import (
    TEMP_PREFIX,
    FileLock,
    atomic_write,
    contained_path,
    is_temp_name,
    locking_enabled,
    retry,
    temp_path,
)
from simrecorder._url import parse_url
from simrecorder.deadletter import read_dead_letters, write_dead_letter
from simrecorder.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    SimRecorderError,
    StoreLockedError,
)

# -- FileLock --------------------------------------------------------------------------------


def test_lock_excludes_a_second_holder_in_the_same_process(tmp_path):
    path = tmp_path / "lock"
    with FileLock(path) as lock:
        assert lock.held and FileLock.is_held_elsewhere(path)
        with pytest.raises(StoreLockedError, match=r"lock.*another writer") as caught:
            FileLock(path, blocking=False, what="store 'x'").acquire()
        assert "store 'x'" in str(caught.value)
        assert isinstance(caught.value, OSError) and isinstance(caught.value, SimRecorderError)
    assert not lock.held and not FileLock.is_held_elsewhere(path)
    with FileLock(path, blocking=False):
        pass


def test_blocking_lock_waits_for_the_holder(tmp_path):
    path = tmp_path / "lock"
    order = []
    first = FileLock(path).acquire()

    def second() -> None:
        with FileLock(path):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    order.append("first done")
    first.release()
    thread.join(timeout=10)
    assert order == ["first done", "second"]


HOLD = (
    "import sys, time\nfrom simrecorder._fs import FileLock\n"
    "lock = FileLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
)


def test_lock_held_by_another_process_and_freed_by_its_death(tmp_path):
    path = str(tmp_path / "lock")
    child = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        with pytest.raises(StoreLockedError):
            FileLock(path, blocking=False).acquire()
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    with FileLock(path, blocking=False):  # a killed holder leaves no stale lock
        pass


def test_lock_on_a_directory(tmp_path):
    with FileLock(tmp_path, blocking=False):
        with pytest.raises(StoreLockedError):
            FileLock(tmp_path, blocking=False).acquire()
    assert os.listdir(tmp_path) == []  # no lock file made inside


def test_locking_opt_out(tmp_path, monkeypatch):
    path = tmp_path / "lock"
    with FileLock(path), FileLock(path, locking=False, blocking=False) as free:
        assert not free.held
    assert not os.path.exists(tmp_path / "never")
    with FileLock(tmp_path / "never", locking=False):
        pass
    assert not os.path.exists(tmp_path / "never")  # no lock file either
    monkeypatch.setenv("SIMRECORDER_FILE_LOCKING", "FALSE")
    assert locking_enabled() is False and locking_enabled(True) is True
    with FileLock(path), FileLock(path, blocking=False):
        pass
    monkeypatch.setenv("SIMRECORDER_FILE_LOCKING", "1")
    assert locking_enabled() is True


# -- retry -----------------------------------------------------------------------------------


def test_retry_backs_off_and_gives_up_with_the_last_error():
    times = []

    def always() -> None:
        times.append(time.monotonic())
        raise TimeoutError(f"attempt {len(times)}")

    with pytest.raises(TimeoutError, match="attempt 4"):
        retry(always, TimeoutError, attempts=4, delay=0.01, backoff=2.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and gaps[0] >= 0.009 and gaps[2] >= 0.035  # 10, 20, 40 ms


def test_retry_lets_other_errors_through_at_once():
    calls = []

    def wrong() -> None:
        calls.append(1)
        raise KeyError("not retried")

    with pytest.raises(KeyError):
        retry(wrong, OSError)
    assert calls == [1]
    with pytest.raises(InvalidArgumentError, match="attempts"):
        retry(lambda: 1, attempts=0)


# -- containment and temp names --------------------------------------------------------------


def test_contained_path_refuses_symlinks_out_and_allows_them_in(tmp_path):
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "out")
    os.symlink(root / "inside", root / "in")
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", root / "leaf")
    assert contained_path(root, "in/x") == str(root / "in" / "x")
    for key in ("out/x", "out", "leaf"):
        with pytest.raises(InvalidKeyError, match="symlink"):
            contained_path(root, key)
    linked_root = tmp_path / "alias"
    os.symlink(root, linked_root)  # a root reached through a link is fine
    assert contained_path(linked_root, "a/b") == str(linked_root / "a" / "b")


def test_temp_names(tmp_path):
    name = temp_path(tmp_path / "value")
    assert os.path.dirname(name) == str(tmp_path)
    assert is_temp_name(os.path.basename(name)) and TEMP_PREFIX in name
    assert temp_path(tmp_path / "value") != name


def test_dead_letters_are_written_with_the_one_atomic_write(tmp_path):
    from simrecorder._schema import infer_spec

    path = write_dead_letter(str(tmp_path / "d"), "memory://", "k", infer_spec(1.0), [1.0], "x")
    assert [letter.path for letter in read_dead_letters(str(tmp_path / "d"))] == [path]
    assert [n for n in os.listdir(tmp_path / "d") if is_temp_name(n)] == []


def _append_under_lock(path: str, tag: str, barrier) -> None:
    barrier.wait(timeout=30)
    for _ in range(50):
        with FileLock(path + ".lock"):
            with open(path, "ab") as f:
                for char in tag * 20:
                    f.write(char.encode())
                    f.flush()


def test_lock_serialises_processes(tmp_path):
    path = str(tmp_path / "log")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [
        context.Process(target=_append_under_lock, args=(path, tag, barrier)) for tag in "abc"
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    with open(path, "rb") as f:
        data = f.read()
    runs = [data[i : i + 20] for i in range(0, len(data), 20)]
    assert len(runs) == 150 and all(len(set(run)) == 1 for run in runs)  # never interleaved


def test_atomic_write_from_a_stream_of_chunks(tmp_path):
    assert atomic_write(tmp_path / "a" / "v", iter([b"1", b"23"]), make_dirs=True) == 3
    assert (tmp_path / "a" / "v").read_bytes() == b"123"


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("mummi+taridx:///a/b.tar", ("mummi", "taridx", "/a/b.tar", {})),
        ("ZARR+Zip://run.zip?mode=r", ("zarr", "zip", "run.zip", {"mode": "r"})),
        ("redis://h:1/0/p?prefix=x&prefix=y", ("redis", "", "h:1/0/p", {"prefix": "y"})),
        ("plain/path.h5", ("", "", "plain/path.h5", {})),
        ("dir with space://x", ("", "", "dir with space://x", {})),
        ("1http://x", ("", "", "1http://x", {})),
        ("file:///p?flag=", ("file", "", "/p", {"flag": ""})),
    ],
)
def test_parse_url(url, parts):
    parsed = parse_url(url)
    assert tuple(parsed) == parts
    assert parsed.full_scheme == "+".join(p for p in parts[:2] if p)
