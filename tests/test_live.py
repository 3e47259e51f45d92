"""Live reading: another process reads a store while a recorder writes to it."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from simrecorder import HDF5DataStore, KeyNotFoundError, open_datastore
from simrecorder._schema import infer_spec

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from simrecorder import Recorder, open_datastore
    url, max_seconds, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    rec = Recorder(open_datastore(url), max_seconds=max_seconds)
    print("ready", flush=True)
    start = time.time()
    i = 0
    while time.time() - start < seconds:
        rec.record("clock", time.time())
        rec.record("state", np.full(4, i))
        if time.time() - start > seconds / 3:
            rec.record("late/series", float(i))  # created after the reader opened
        i += 1
        time.sleep(0.0005)
    rec.close()
    """
)


def _url(backend, tmp_path, redis_server, redis_prefix):
    if backend == "hdf5":
        return str(tmp_path / "live.h5")
    if backend == "zarr":
        return str(tmp_path / "live.zarr")
    return f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"


@pytest.mark.parametrize("max_seconds", [1.0, 0.05])
@pytest.mark.parametrize("backend", ["hdf5", "zarr", "redis"])
def test_reader_sees_flushed_data_while_the_writer_runs(
    backend, max_seconds, tmp_path, redis_server, redis_prefix
):
    url = _url(backend, tmp_path, redis_server, redis_prefix)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, str(max_seconds), "4"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(max_seconds + 0.3)  # the first flush
        reader = open_datastore(url, mode="r")
        lags, saw_late = [], False
        while writer.poll() is None:
            try:
                clock = reader.get_all("clock")
                now = time.time()
                if len(clock):
                    lags.append(now - float(np.asarray(clock[-1])))
                state = np.asarray(reader.get_all("state"))
                assert (state[:, 0] == np.arange(len(state))).all()  # never torn
                saw_late = saw_late or len(reader.get_all("late/series")) > 0
            except KeyNotFoundError:
                pass
            time.sleep(0.02)
        reader.close()
    finally:
        writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == 0 and lags and saw_late
    median, worst = statistics.median(lags), max(lags)
    print(
        f"{backend} max_seconds={max_seconds}: lag median {median * 1e3:.0f} ms, "
        f"max {worst * 1e3:.0f} ms over {len(lags)} reads"
    )
    assert worst < max_seconds + 1.0  # generous: the machine is shared


STRESS_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from simrecorder import Recorder, open_datastore
    rec = Recorder(open_datastore(sys.argv[1]), max_seconds=0.05)
    print("ready", flush=True)
    start, i = time.time(), 0
    while time.time() - start < float(sys.argv[2]):
        rec.record("a", float(i))
        rec.record("b", np.full(64, i, dtype=np.int64))
        rec.record("c", f"s{i}")
        i += 1
        time.sleep(0.0002)
    rec.close()
    """
)


def test_hdf5_reader_polling_a_fast_writer_sees_only_correct_prefixes(tmp_path):
    """Every 5 ms a reader opens the file and reads three series while the writer
    flushes every 50 ms: each read is a prefix of what was recorded (no zeroed rows, no
    torn tail) and no open fails because the writer is midway through a flush."""
    path = str(tmp_path / "stress.h5")
    writer = subprocess.Popen([sys.executable, "-c", STRESS_WRITER, path, "4"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    reads = 0
    try:
        assert writer.stdout.readline().strip() == "ready"
        while writer.poll() is None:
            try:
                with open_datastore(path, mode="r") as reader:
                    a = np.asarray(reader.get_all("a"))
                    b = np.asarray(reader.get_all("b"))
                    c = reader.get_all("c")
            except KeyNotFoundError:
                time.sleep(0.005)
                continue
            np.testing.assert_array_equal(a, np.arange(len(a), dtype=float))
            np.testing.assert_array_equal(b, np.repeat(np.arange(len(b))[:, None], 64, axis=1))
            assert c == [f"s{i}" for i in range(len(c))]
            reads += 1
            time.sleep(0.005)
    finally:
        writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == 0 and reads > 10


TEXT_WRITER = textwrap.dedent(
    """
    import sys, time
    from simrecorder import HDF5DataStore, Recorder
    path, first, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rec = Recorder(HDF5DataStore(path, mode="a"), max_seconds=0.05)
    print("ready", flush=True)
    start, i = time.time(), first
    while time.time() - start < seconds:
        rec.record("s", f"label {i} ✓")
        i += 1
        time.sleep(0.0005)
    rec.close()
    print(i, flush=True)
    """
)


def test_plain_h5py_reader_of_a_resumed_run_sees_only_valid_text_rows(tmp_path):
    """A plain h5py reader (``locking=False``) polls a resumed run, through its close:
    the rows ``simrecorder_text_rows`` declares valid are always the right strings."""
    path = str(tmp_path / "text.h5")
    with HDF5DataStore(path) as store:
        store.append_block("s", infer_spec("x"), [f"label {i} ✓" for i in range(1000)])
    writer = subprocess.Popen([sys.executable, "-c", TEXT_WRITER, path, "1000", "2"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    seen = set()
    try:
        assert writer.stdout.readline().strip() == "ready"
        while writer.poll() is None:
            try:
                with h5py.File(path, "r", locking=False) as f:
                    text = f["s/text"]
                    valid = int(text.attrs["simrecorder_text_rows"])
                    rows = text.asstr()[:valid].tolist() if valid == len(text) else None
            except (OSError, KeyError):  # the writer is midway through a flush
                continue
            if rows is not None:
                assert rows == [f"label {i} ✓" for i in range(valid)]
                seen.add(valid)
            time.sleep(0.005)
        total = int(writer.stdout.read())
    finally:
        writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == 0 and 1000 in seen
    with h5py.File(path, "r") as f:
        assert f["s/text"].asstr()[:].tolist() == [f"label {i} ✓" for i in range(total)]
