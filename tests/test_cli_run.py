"""The commands that read a run (ls, show, copy, export, plot, tail, runs), driven as a
user does: the real ``simrecorder`` command in a subprocess, on every backend."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from simrecorder import open_datastore
from simrecorder._schema import infer_spec
from tests.test_xarray import N, write_run

COMMANDS = ("demo", "recover", "info", "ls", "show", "copy", "export", "plot", "tail", "runs")


def cli(*args: str, rc: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m simrecorder ARGS``; check the exit status when ``rc`` is given."""
    done = subprocess.run(
        [sys.executable, "-m", "simrecorder", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if rc is not None:
        assert done.returncode == rc, (done.returncode, done.stdout, done.stderr)
    return done


def one_line_error(done: subprocess.CompletedProcess, *names: str) -> None:
    """A failure: exit status not 0, one line on stderr naming ``names``, no traceback."""
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for name in names:
        assert name in done.stderr, (name, done.stderr)


@pytest.fixture
def urls(tmp_path, redis_server, redis_cluster, redis_prefix):
    return {
        "hdf5": f"{tmp_path}/r.h5",
        "zarr": f"{tmp_path}/r.zarr",
        "lmdb": f"{tmp_path}/r.mdb",
        "zip": f"{tmp_path}/r.zip",
        "blocks": f"blocks+file://{tmp_path}/blocks",
        "mummi+simple": f"mummi+simple://{tmp_path}/ns",
        "redis": f"redis://127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}",
        "redis+cluster": f"{redis_cluster.url}?prefix={redis_prefix}",
    }


BACKENDS = ["hdf5", "zarr", "lmdb", "zip", "blocks", "mummi+simple", "redis", "redis+cluster"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    done = cli(command, "--help")
    assert done.stdout.startswith("usage: simrecorder " + command)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ls_lists_the_tree(backend, urls):
    url = urls[backend]
    store = write_run(url)
    text = cli("ls", url).stdout
    assert "neurons/" in text and "(40, 3)" in text and "float64" in text
    assert "model: LIF" in text
    if store.supports_series_attrs:
        assert "units=mV" in text and "time=t" in text
    doc = json.loads(cli("ls", url, "neurons", "--json").stdout)
    assert [k["key"] for k in doc["keys"]] == ["neurons/v"]
    (v,) = doc["keys"]
    assert v["count"] == N and v["sample_shape"] == [3] and v["bytes"] == N * 3 * 8
    assert doc["attrs"]["seed"] == 7


@pytest.mark.parametrize("backend", BACKENDS)
def test_show_prints_values_and_statistics(backend, urls):
    url = urls[backend]
    write_run(url)
    text = cli("show", url, "count", "--tail", "2").stdout
    lines = text.splitlines()
    assert lines[1].split() == ["38", "38"] and lines[2].split() == ["39", "39"]
    assert f"samples={N} mean=19.5" in lines[-1] and "min=0 max=39" in lines[-1]
    text = cli("show", url, "neurons/v", "--slice", "3:5").stdout
    assert [line.split()[0] for line in text.splitlines()[1:3]] == ["3", "4"]
    assert "[3. 4. 5.]" in text
    assert "'s0'" in cli("show", url, "label", "--head", "1").stdout
    assert "0.5" in cli("show", url, "params/dt").stdout
    one_line_error(cli("show", url, "nope", rc=None), "'nope'", "KeyNotFoundError")


def _same_run(src_url: str, dst_url: str, keys=None) -> None:
    with open_datastore(src_url, mode="r") as src, open_datastore(dst_url, mode="r") as dst:
        assert dst.keys() == (keys or src.keys())
        for key in dst.keys():
            if src.node_type(key) == "value":
                assert dst.get(key) == src.get(key)
                continue
            a, b = src.get_all(key), dst.get_all(key)
            if isinstance(a, list):
                assert [repr(x) for x in b] == [repr(x) for x in a]
            else:
                np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
            if src.supports_series_attrs and dst.supports_series_attrs:
                assert dst.series_attrs(key) == src.series_attrs(key)
        assert dst.attrs["model"] == "LIF"
        assert dst.attrs["simrecorder_copied_from"]


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        ("redis+cluster", "hdf5"),
        ("redis", "zarr"),
        ("zarr", "redis"),
        ("hdf5", "lmdb"),
        ("lmdb", "blocks"),
        ("zip", "mummi+simple"),
    ],
)
def test_copy_between_backends(source, destination, urls):
    write_run(urls[source])
    done = cli("copy", urls[source], urls[destination])
    assert f"copied 6 series ({6 * N:,} samples" in done.stdout
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    _same_run(urls[source], urls[destination])


def test_copy_keys_append_force_and_refusal(urls):
    src, dst = urls["zarr"], urls["hdf5"]
    write_run(src)
    cli("copy", src, dst, "--keys", "neurons/*", "--keys", "t")
    _same_run(src, dst, keys=["neurons/v", "t"])
    before = os.stat(dst).st_mtime_ns
    one_line_error(cli("copy", src, dst, rc=None), dst, "not empty", "--append")
    assert os.stat(dst).st_mtime_ns == before  # the refusal wrote nothing
    cli("copy", src, dst, "--keys", "t", "--append")
    with open_datastore(dst, mode="r") as store:
        assert len(store.get_all("t")) == 2 * N and len(store.get_all("neurons/v")) == N
    cli("copy", src, dst, "--force")
    _same_run(src, dst)
    one_line_error(cli("copy", src, src, "--force", rc=None), "onto itself")
    one_line_error(cli("copy", src, f"zarr://{src}", "--append", rc=None), "onto itself")
    _same_run(src, dst)  # the source is intact


def test_copy_streams_block_by_block(urls, tmp_path):
    # a series many copy blocks long (4 MiB each) arrives whole and in order
    src, dst = urls["redis"], f"{tmp_path}/big.h5"
    rows = 1_500_000
    with open_datastore(src, mode="w") as store:
        spec = infer_spec(1.0)
        for start in range(0, rows, 100_000):
            store.append_block("x", spec, np.arange(start, start + 100_000, dtype=np.float64))
    cli("copy", src, dst)
    with open_datastore(dst, mode="r") as store:
        x = np.asarray(store.get_all("x"))
    assert len(x) == rows and (x == np.arange(rows)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_netcdf_is_read_by_ncdump(backend, urls, tmp_path):
    url, out = urls[backend], tmp_path / "run.nc"
    store = write_run(url)
    cli("export", url, out)
    header = subprocess.run(
        ["ncdump", "-h", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "neurons.v(" in header and 'model = "LIF"' in header
    assert "count(step)" in header
    if store.supports_series_attrs:
        assert 'neurons.v:units = "mV"' in header and "neurons.v(t, neuron)" in header
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["neurons.v"].values[:, 0], np.arange(N, dtype=float))
    assert not os.path.exists(f"{out}.partial")


def test_export_csv_and_parquet(urls, tmp_path):
    url = urls["zarr"]
    write_run(url)
    cli("export", url, tmp_path / "run.csv")
    lines = (tmp_path / "run.csv").read_text().splitlines()
    assert lines[0].split(",") == ["t", "count", "rate"]  # indexed by the time series
    assert lines[3].split(",") == ["1.0", "2", "2.0"] and len(lines) == N + 1
    done = cli("export", url, tmp_path / "run.parquet", rc=None)
    if importlib.util.find_spec("pyarrow") is not None:
        import pandas as pd

        assert len(pd.read_parquet(tmp_path / "run.parquet")) == N
    else:  # without pyarrow: a one-line error naming it
        one_line_error(done, "pyarrow", "parquet")
        assert not (tmp_path / "run.parquet").exists()


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("backend", ["zarr", "hdf5", "blocks", "redis+cluster"])
def test_plot_draws_a_png_of_the_requested_size(backend, urls, tmp_path):
    url, out = urls[backend], tmp_path / "p.png"
    write_run(url)
    cli("plot", url, "rate", "neurons/v", "spikes", "-o", out, "--size", "640x900")
    assert _png_size(out) == (640, 900) and out.stat().st_size > 10_000
    one_line_error(cli("plot", url, "label", "-o", out, rc=None), "label")


WRITER = textwrap.dedent(
    """
    import sys, time
    from simrecorder import Recorder
    with Recorder(sys.argv[1], max_seconds=0.05) as rec:
        for i in range(60):
            rec.record("clock", float(i))
            time.sleep(0.02)
            if i == 0:
                rec.flush()
                print("ready", flush=True)
    """
)


@pytest.mark.parametrize("backend", ["zarr", "hdf5", "lmdb", "blocks", "redis", "redis+cluster"])
def test_tail_follows_a_run_being_written(backend, urls):
    url = urls[backend]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        done = cli("tail", "-f", url, "clock", "--interval", "0.05", "--timeout", "1.5")
    finally:
        writer.wait(timeout=60)
        writer.stdout.close()
    indices = [int(line.split()[0]) for line in done.stdout.splitlines()]
    assert indices == list(range(indices[0], 60)) and indices[0] <= 10


def test_runs_lists_a_sweep(tmp_path, redis_server, redis_prefix):
    for i, rate in enumerate([1.0, 2.0, 4.0]):
        store = write_run(f"{tmp_path}/sweep/run{i}.h5", n=10 + i)
        with open_datastore(store.url, mode="a") as again:
            again.update_attrs({"rate": rate})
    (tmp_path / "sweep" / "notes.txt").write_text("not a run")
    text = cli("runs", f"{tmp_path}/sweep/*").stdout
    assert text.count("run") >= 3 and "rate=4.0" in text and "model=LIF" in text
    rows = json.loads(cli("runs", f"{tmp_path}/sweep/*.h5", "--json").stdout)
    assert [r["attrs"]["rate"] for r in rows] == [1.0, 2.0, 4.0]
    assert [r["samples"] for r in rows] == [6 * n for n in (10, 11, 12)]
    assert {r["series"] for r in rows} == {6}
    base = f"redis://127.0.0.1:{redis_server.port}/0"
    write_run(f"{base}?prefix={redis_prefix}-a")
    rows = json.loads(cli("runs", f"{base}?prefix={redis_prefix}-*", "--json").stdout)
    assert [r["url"] for r in rows] == [f"{base}?prefix={redis_prefix}-a"]
    one_line_error(cli("runs", f"{tmp_path}/none-*.h5", rc=None), "none-*")


def test_bad_input_is_one_line_without_a_traceback(urls, tmp_path):
    src = urls["zarr"]
    write_run(src)
    one_line_error(cli("ls", "nosuch://x", rc=None), "nosuch")
    one_line_error(cli("ls", tmp_path / "missing.h5", rc=2), "missing.h5")
    one_line_error(cli("show", src, "no/such", rc=1), "no/such")
    (tmp_path / "afile").write_text("")
    one_line_error(cli("copy", src, tmp_path / "afile" / "out.h5", rc=None), "out.h5")
    one_line_error(cli("export", src, tmp_path / "nodir" / "out.nc", rc=None), "out.nc")
    one_line_error(cli("export", src, tmp_path / "out.txt", rc=None), "out.txt", "suffix")
    one_line_error(cli("copy", src, "redis://127.0.0.1:1/0?prefix=x", rc=None), "127.0.0.1:1")
    done = cli("--debug", "show", src, "no/such", rc=1)
    assert "Traceback" in done.stderr and "KeyNotFoundError" in done.stderr.splitlines()[-1]
    done = cli("show", src, "no/such", "--debug", rc=1)
    assert "Traceback" in done.stderr


def _stderr_on_a_terminal(args: list[str]) -> str:
    """Run ``args`` with stderr on a pseudo-terminal of 100 columns; what it showed."""
    import fcntl
    import pty
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the terminal's other end is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(parent)
    assert proc.wait(timeout=60) == 0
    return seen.decode(errors="replace")


def test_copy_shows_a_progress_bar_on_a_terminal(urls, tmp_path):
    src = urls["zarr"]
    write_run(src)
    command = [sys.executable, "-m", "simrecorder", "copy", src]
    assert "samples/s" in _stderr_on_a_terminal([*command, f"{tmp_path}/a.h5"])
    assert _stderr_on_a_terminal([*command, f"{tmp_path}/b.h5", "--quiet"]) == ""
