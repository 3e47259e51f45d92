"""Runs on object storage (issue 17, item 4): a run copied into S3 as a block store
(``blocks+s3://bucket/run?endpoint_url=...``), listed, read by xarray, copied back, against
the real S3-compatible server the fixtures start on loopback."""

from __future__ import annotations

import pytest

from simrecorder import open_datastore
from simrecorder.xarray_backend import to_xarray
from tests.test_cli_run import _same_run, cli, one_line_error
from tests.test_xarray import N, write_run

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")

BUCKET = "simrecorder-cli"


@pytest.fixture(scope="module")
def bucket(moto_server):
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.url, skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return BUCKET


def test_copy_a_run_to_s3_and_back(tmp_path, moto_server, bucket):
    local, back = f"{tmp_path}/run.zarr", f"{tmp_path}/back.h5"
    s3 = f"blocks+s3://{bucket}/{tmp_path.name}/run1?endpoint_url={moto_server.url}"
    write_run(local)
    cli("copy", local, s3)
    _same_run(local, s3)
    assert "neurons/" in cli("ls", s3).stdout
    with to_xarray(s3) as ds:
        assert ds["neurons/v"].shape == (N, 3) and float(ds["count"][-1]) == N - 1
    one_line_error(cli("copy", local, s3, rc=None), "not empty")
    cli("copy", s3, back)
    _same_run(local, back)
    with open_datastore(back, mode="r") as store:
        assert store.attrs["simrecorder_copied_from"].startswith("blocks+s3://")


def test_s3_server_down_is_one_line(tmp_path):
    local = f"{tmp_path}/run.h5"
    write_run(local)
    down = "blocks+s3://nobucket/run?endpoint_url=http://127.0.0.1:1"
    one_line_error(cli("copy", local, down, rc=None, timeout=120), "127.0.0.1:1")
    one_line_error(cli("ls", down, rc=None, timeout=120), "127.0.0.1:1")
