"""ZarrDataStore: the contract suite (directory and zip) plus zarr specifics."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import zarr

from simrecorder import (
    CompressionType,
    DatastoreType,
    ReadOnlyError,
    Recorder,
    StoreFormatError,
    StoreLockedError,
    ZarrDataStore,
    open_datastore,
)
from simrecorder.datastores._zarr import ZarrView
from simrecorder.errors import InvalidArgumentError
from simrecorder.testing.datastore import DataStoreTests


class TestZarrDirectory(DataStoreTests):
    def make_store(self, tmp_path):
        return ZarrDataStore(tmp_path / "data.zarr")

    def reopen_store(self, store):
        store.close()
        return ZarrDataStore(store.path, mode="a")

    def read_native(self, store, key):
        return zarr.open_group(store.path, mode="r")[key][...]


class TestZarrUncompressed(TestZarrDirectory):
    """Uncompressed arrays take the raw chunk-file path."""

    def make_store(self, tmp_path):
        return ZarrDataStore(tmp_path / "raw.zarr", compression_type=CompressionType.NONE)


class TestZarrZip(DataStoreTests):
    def make_store(self, tmp_path):
        return ZarrDataStore(tmp_path / "data.zip", datastore_type=DatastoreType.ZIP)

    def reopen_store(self, store):
        store.close()
        return ZarrDataStore(store.path, datastore_type=DatastoreType.ZIP, mode="a")

    def read_native(self, store, key):
        zstore = zarr.storage.ZipStore(store.path, mode="r")
        try:
            return zarr.open_group(zstore, mode="r")[key][...]
        finally:
            zstore.close()


# -- SimRecorder's zarr usage, unmodified ---------------------------------------------------
def test_simrecorder_zarr_list(tmp_path):
    arrays = np.random.rand(10, 10, 5, 2, 6)
    path = os.path.join(tmp_path, "test.mdb")
    store = ZarrDataStore(
        path, datastore_type=DatastoreType.DIRECTORY, compression_type=CompressionType.LZMA
    )
    recorder = Recorder(store)
    for i in range(10):
        recorder.record("train/what", arrays[i])
    recorder.close()
    recorder = Recorder(
        ZarrDataStore(
            path, datastore_type=DatastoreType.DIRECTORY, compression_type=CompressionType.LZMA
        )
    )
    assert (np.array(recorder.get_all("train/what")) == arrays).all()
    recorder.close()


def test_simrecorder_zarr_scalars_lists_and_values(tmp_path):
    path = str(tmp_path / "s.zarr")
    recorder = Recorder(ZarrDataStore(path))
    recorder.record("x", 10.0)
    recorder.record("x", 20.0)
    lists = [[np.random.rand(3, 1), np.random.rand(4, 1), np.array([])] for _ in range(2)]
    for value in lists:
        recorder.record("l", value)
    recorder.set("v", np.zeros(3))
    recorder.set("v", np.ones(3))
    recorder.close()
    recorder = Recorder(ZarrDataStore(path))
    np.testing.assert_array_equal(np.array(recorder.get_all("x")), [10.0, 20.0])
    for got, want in zip(recorder.get_all("l"), lists, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(recorder.get("v"), np.ones(3))
    recorder.close()


# -- layout ---------------------------------------------------------------------------------
def test_plain_zarr_reads_the_store_without_simrecorder(tmp_path):
    path = tmp_path / "plain.zarr"
    with Recorder(ZarrDataStore(path), attrs={"seed": 3}) as rec:
        for i in range(5):
            rec.record("train/what", np.full((4, 2), i, dtype=np.int32))
        rec.record("log", "hello")
    script = (
        "import sys, zarr\n"
        f"g = zarr.open_group({str(path)!r}, mode='r')\n"
        "assert 'simrecorder' not in sys.modules\n"
        "a = g['train']['what']\n"
        "print(a.shape, a.dtype, int(a[4, 0, 0]), g.attrs['seed'], str(g['log'][0]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "(5, 4, 2) int32 4 3 hello"


@pytest.mark.parametrize("compression", list(CompressionType))
def test_every_codec_round_trips(tmp_path, compression):
    path = tmp_path / f"{compression.value}.zarr"
    data = np.random.default_rng(0).random((50, 7))
    with Recorder(ZarrDataStore(path, compression_type=compression), max_records=16) as rec:
        for row in data:
            rec.record("x", row)
    with ZarrDataStore(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), data)


def test_chunks_follow_the_desired_size(tmp_path):
    with ZarrDataStore(tmp_path / "c.zarr", desired_chunk_size_bytes=4096) as store:
        store.append("scalars", 1.0)
        store.append("big", np.zeros(2048))
        assert store.group["scalars"].chunks == (512,)
        assert store.group["big"].chunks == (1, 2048)


def test_file_count_is_proportional_to_chunks(tmp_path):
    path = tmp_path / "n.zarr"
    with Recorder(ZarrDataStore(path, compression_type=CompressionType.NONE)) as rec:
        for i in range(1_000_000):
            rec.record("x", float(i))
    files = [f for _, _, names in os.walk(path) for f in names]
    assert len(files) <= 4 + 8  # metadata + 8 chunks of 1 MiB
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, names in os.walk(path) for f in names)
    assert size <= 1.1 * 8_000_000
    with ZarrDataStore(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(1e6))


_COMPRESSIONS = [CompressionType.NONE, CompressionType.BLOSC, CompressionType.ZSTD,
                 CompressionType.LZMA]  # fmt: skip


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint16", "float16", "float64", "complex64"])
@pytest.mark.parametrize("start", [0, 3])
@pytest.mark.parametrize("compression", _COMPRESSIONS)
def test_chunk_writes_match_zarr(tmp_path, dtype, start, compression):
    path = tmp_path / "raw.zarr"
    rng = np.random.default_rng(1)
    data = (rng.random((start + 11, 5)) * 100).astype(dtype)
    sample_bytes = 5 * np.dtype(dtype).itemsize
    with ZarrDataStore(
        path, desired_chunk_size_bytes=4 * sample_bytes, compression_type=compression
    ) as store:
        for row in data[:start]:
            store.append("x", row)
        rec = Recorder(store, max_records=11, max_seconds=None)
        for row in data[start:]:
            rec.record("x", row)
        rec.flush()
        assert store.group["x"].chunks == (4, 5)
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["x"][...], data)


@pytest.mark.filterwarnings("ignore:.*Zarr V3 specification")
@pytest.mark.filterwarnings("ignore:.*Zarr version 3 specification")
@pytest.mark.parametrize("compression", _COMPRESSIONS)
@pytest.mark.parametrize(("dtype", "shape"), [("float64", ()), ("float32", (3, 2)),
                                              ("bool", (4,)), ("complex64", ())])  # fmt: skip
def test_new_arrays_have_the_metadata_zarr_writes(tmp_path, compression, dtype, shape):
    """The store writes new arrays' zarr.json itself: the same document as zarr's."""
    path = tmp_path / "m.zarr"
    with Recorder(ZarrDataStore(path, compression_type=compression)) as rec:
        for i in range(3):
            rec.record("g/h/x", np.full(shape, i, dtype=dtype))
    group = zarr.open_group(path, mode="r")
    ours = group["g/h/x"]
    assert ours[...].shape == (3, *shape)
    ref_group = zarr.open_group(tmp_path / "ref.zarr", mode="w", zarr_format=3)
    ref = ref_group.create_array(
        "g/h/x",
        shape=ours.shape,
        chunks=ours.chunks,
        chunk_key_encoding={"name": "default", "separator": "."},
        dtype=dtype,
        fill_value=0,
        compressors=ours.compressors,
        attributes=dict(ours.attrs),
        dimension_names=ours.metadata.dimension_names,
    )
    assert ours.metadata.to_dict() == ref.metadata.to_dict()
    for parent in ("g", "g/h"):
        assert group[parent].metadata.to_dict() == ref_group[parent].metadata.to_dict()


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.BLOSC])
def test_chunk_shape_does_not_depend_on_the_first_flush(tmp_path, compression):
    chunks = []
    for first in (100, 100_000):
        path = tmp_path / f"f{first}.zarr"
        with Recorder(ZarrDataStore(path, compression_type=compression)) as rec:
            for i in range(first):
                rec.record("x", float(i))
            rec.flush()
            for i in range(1000):
                rec.record("x", float(i))
        array = zarr.open_group(path, mode="r")["x"]
        np.testing.assert_array_equal(array[:first], np.arange(first, dtype=float))
        chunks.append(array.chunks)
    assert chunks[0] == chunks[1] == ((1 << 20) // 8,)


def test_uncompressed_padding_takes_no_disk(tmp_path):
    """A short uncompressed series: its 1 MiB chunk is a sparse file (a hole)."""
    path = tmp_path / "s.zarr"
    with Recorder(ZarrDataStore(path, compression_type=CompressionType.NONE)) as rec:
        for i in range(10):
            rec.record("x", float(i))
    chunk = path / "x" / "c.0"
    assert chunk.stat().st_size == 1 << 20  # as zarr expects: a whole chunk
    if chunk.stat().st_blocks * 512 >= 1 << 20:
        pytest.skip("this file system has no sparse files")
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["x"][...], np.arange(10.0))


@pytest.mark.parametrize("kind", [DatastoreType.DIRECTORY, DatastoreType.ZIP])
@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.BLOSC])
def test_array_metadata_is_written_once_per_epoch(tmp_path, compression, kind):
    """Appends write chunks; flush() writes each array's zarr.json once, already
    holding the coming epoch's commit, so commit() writes only the root."""
    store = ZarrDataStore(tmp_path / "c.zip", compression_type=compression, datastore_type=kind)
    meta = os.path.join(store._workdir, "x", "zarr.json")
    store.append("x", 0.0)  # created, committed
    spec = store.series_spec("x")
    before = os.stat(meta).st_ino
    for i in range(1, 4):
        store.append_block("x", spec, np.full(100, float(i)))
        assert os.stat(meta).st_ino == before  # no metadata write per block
    store.flush()
    published = os.stat(meta).st_ino
    assert published != before
    assert zarr.open_group(store._workdir, mode="r")["x"].shape == (301,)
    store.commit()
    assert os.stat(meta).st_ino == published  # the commit needed no second write
    group = zarr.open_group(store._workdir, mode="r")
    assert group["x"].attrs["simrecorder_commit"][:2] == [group.attrs["simrecorder_epoch"], 301]
    store.close()


def test_lazy_view(tmp_path):
    with ZarrDataStore(tmp_path / "v.zarr") as store:
        store.append("x", np.arange(3.0))
        view = store.get_all("x")
        assert isinstance(view, ZarrView) and isinstance(view.array, zarr.Array)


# -- modes, formats, errors -----------------------------------------------------------------
def test_read_only(tmp_path):
    path = tmp_path / "ro.zarr"
    with ZarrDataStore(path) as store:
        store.append("x", 1.0)
    with ZarrDataStore(path, mode="r") as store:
        assert len(store.get_all("x")) == 1
        with pytest.raises(ReadOnlyError):
            store.append("x", 2.0)


def test_mode_w_overwrites_a_zarr_store_only(tmp_path):
    path = tmp_path / "w.zarr"
    with ZarrDataStore(path) as store:
        store.append("x", 1.0)
    with ZarrDataStore(path, mode="w") as store:
        assert store.keys() == []
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreFormatError, match=r"without zarr\.json"):
        ZarrDataStore(precious, mode="w")
    assert (precious / "thesis.tex").exists()


def test_not_a_zarr_store(tmp_path):
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreFormatError):
        ZarrDataStore(tmp_path / "file.zarr")
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(StoreFormatError):
        ZarrDataStore(tmp_path / "bad.zip", datastore_type=DatastoreType.ZIP)


def test_future_format_version_is_refused(tmp_path):
    path = tmp_path / "f.zarr"
    zarr.open_group(path, mode="w").attrs["simrecorder_format"] = 99
    with pytest.raises(StoreFormatError, match="upgrade"):
        ZarrDataStore(path)


def test_an_unknown_compression_type_lists_the_valid_ones(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"'gzip'.*BLOSC.*ZSTD") as info:
        ZarrDataStore(tmp_path / "c.zarr", compression_type="gzip")
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(tmp_path / "c.zarr")  # checked before anything is created
    with pytest.raises(InvalidArgumentError, match=r"'tape'.*LMDB"):
        ZarrDataStore(tmp_path / "c.zarr", datastore_type="tape")


def test_a_zip_store_without_a_zip_suffix_has_a_url_that_reopens_it(tmp_path):
    with ZarrDataStore(tmp_path / "plain", datastore_type=DatastoreType.ZIP) as store:
        store.append("x", 1.0)
        url = store.url  # raised ValueError before
    assert url == f"zarr+zip://{tmp_path}/plain"
    with open_datastore(url, mode="r") as again:
        assert again.datastore_type == DatastoreType.ZIP and len(again.get_all("x")) == 1


def test_zip_is_a_single_standard_file_after_close(tmp_path):
    path = tmp_path / "run.zip"
    with Recorder(ZarrDataStore(path, datastore_type=DatastoreType.ZIP)) as rec:
        rec.record("a/b", 1.0)
        assert os.path.isdir(f"{path}.partial")
    assert not os.path.exists(f"{path}.partial")
    with zipfile.ZipFile(path) as zf:
        assert "zarr.json" in zf.namelist() and "a/b/zarr.json" in zf.namelist()
    with Recorder(ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="a")) as rec:
        rec.record("a/b", 2.0)  # appending to an existing zip
    with ZarrDataStore(path, datastore_type=DatastoreType.ZIP, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("a/b")), [1.0, 2.0])


def test_urls(tmp_path):
    store = open_datastore(tmp_path / "u.zarr")
    assert isinstance(store, ZarrDataStore) and str(store) == str(tmp_path / "u.zarr")
    store.close()
    store = open_datastore(f"zarr://{tmp_path}/plain-dir")
    assert str(store) == f"zarr://{tmp_path}/plain-dir"
    store.close()
    store = open_datastore(tmp_path / "u.zip")
    assert store.datastore_type == DatastoreType.ZIP
    store.close()


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.BLOSC])
def test_metadata_is_current_after_every_flush(tmp_path, compression):
    path = tmp_path / "live.zarr"
    rec = Recorder(ZarrDataStore(path, compression_type=compression), max_seconds=None)
    for step in range(1, 4):
        for _ in range(10):
            rec.record("x", 1.5)
        rec.record("arr", np.full(3, step))
        rec.flush()
        fresh = zarr.open_group(path, mode="r")  # what another reader sees, mid-run
        assert fresh["x"].shape == (10 * step,) and fresh["arr"].shape == (step, 3)
        np.testing.assert_array_equal(fresh["arr"][-1], np.full(3, step))
    rec.close()


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.ZSTD])
def test_durable_mode_round_trips(tmp_path, compression):
    path = tmp_path / "durable.zarr"
    store = ZarrDataStore(path, compression_type=compression, durable=True)
    with Recorder(store, max_records=10) as rec:
        for i in range(25):
            rec.record("x", float(i))
    with ZarrDataStore(path, mode="r") as store:
        np.testing.assert_array_equal(np.asarray(store.get_all("x")), np.arange(25.0))


def test_one_writer_at_a_time_and_readers_are_not_blocked(tmp_path):
    path = tmp_path / "locked.zarr"
    writer = ZarrDataStore(path)
    writer.append("x", 1.0)
    with pytest.raises(StoreLockedError, match=r"locked\.zarr"):
        ZarrDataStore(path, mode="a")
    with pytest.raises(StoreLockedError):
        ZarrDataStore(path, mode="w")  # and it is not deleted under the writer
    script = (
        "from simrecorder import ZarrDataStore, StoreLockedError\n"
        f"try:\n    ZarrDataStore({str(path)!r}, mode='a')\n"
        "except StoreLockedError:\n    print('locked')\n"
        f"r = ZarrDataStore({str(path)!r}, mode='r')\nprint(len(r.get_all('x')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["locked", "1"]
    writer.close()
    with ZarrDataStore(path, mode="a") as again:  # free once the writer closed
        assert len(again.get_all("x")) == 1


# -- xarray ---------------------------------------------------------------------------------
def record_mixed_run(store) -> None:
    """Series of different lengths and shapes, a sub-group, and single values."""
    with Recorder(store) as rec:
        for i in range(5):
            rec.record("loss", float(i))
            rec.record("img", np.full((3, 4), i, dtype=np.int16))
            rec.record("log", f"step {i}")
            if i < 2:
                rec.record("train/acc", np.arange(2.0) + i)
        rec.set("param", np.arange(6.0).reshape(2, 3))
        rec.set("dt", 0.5)


def check_xarray_opens(zarr_store) -> None:
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(zarr_store, consolidated=False)
    assert ds["loss"].dims == ("loss_step",) and ds.sizes["loss_step"] == 5
    assert ds["img"].dims == ("img_step", "img_dim1", "img_dim2")
    assert ds["img"].shape == (5, 3, 4) and int(ds["img"][4, 2, 3]) == 4
    assert ds["param"].dims == ("param_dim0", "param_dim1") and float(ds["dt"]) == 0.5
    assert str(ds["log"].values[1]) == "step 1"
    train = xr.open_zarr(zarr_store, group="train", consolidated=False)
    assert train["acc"].dims == ("acc_step", "acc_dim1") and train["acc"].shape == (2, 2)
    np.testing.assert_array_equal(train["acc"].values, [[0.0, 1.0], [1.0, 2.0]])


def test_xarray_opens_a_store_of_series_of_different_lengths(tmp_path):
    path = tmp_path / "xr.zarr"
    record_mixed_run(ZarrDataStore(path))
    check_xarray_opens(str(path))


def test_xarray_opens_an_lmdb_store_through_lmdbstore(tmp_path):
    from simrecorder.datastores import LMDBStore

    path = tmp_path / "xr.mdb"
    record_mixed_run(ZarrDataStore(path, datastore_type=DatastoreType.LMDB))
    store = LMDBStore(path, read_only=True)
    try:
        check_xarray_opens(store)
    finally:
        store.close()


@pytest.mark.parametrize(("kind", "rows"), [(DatastoreType.ZIP, 1024), (DatastoreType.LMDB, 1024),
                                            (DatastoreType.DIRECTORY, 131072)])  # fmt: skip
def test_uncompressed_chunks_where_padding_would_be_stored(tmp_path, kind, rows):
    """ZIP and LMDB would store an uncompressed chunk's zero padding: there a small
    first block caps the chunk (at least 8 KiB); a directory pads with a hole."""
    if kind == DatastoreType.LMDB:
        pytest.importorskip("lmdb")
    path = tmp_path / ("s.zip" if kind == DatastoreType.ZIP else "s.zarr")
    store = ZarrDataStore(path, compression_type=CompressionType.NONE, datastore_type=kind)
    with Recorder(store) as rec:
        for i in range(10):
            rec.record("x", float(i))
    with ZarrDataStore(path, mode="r", datastore_type=kind) as reader:
        assert reader.get_all("x").array.chunks == (rows,)
        np.testing.assert_array_equal(np.asarray(reader.get_all("x")), np.arange(10.0))


def test_append_block_under_a_series_fails_at_once(tmp_path):
    from simrecorder._schema import infer_spec
    from simrecorder.errors import KeyConflictError

    with ZarrDataStore(tmp_path / "p.zarr") as store:
        store.append("a", 1.0)
        with pytest.raises(KeyConflictError, match=r"'a/b'.*p\.zarr"):
            store.append_block("a/b", infer_spec(1.0), np.zeros(3))
        store.flush()  # nothing of it is left to fail later
        assert store.keys() == ["a"]


def test_blosc_store_of_many_short_series_reads_in_plain_zarr(tmp_path):
    """The default (blosc) codec: short series keep 1 MiB chunks (from the sample
    size), made of 128 KiB blosc blocks, and plain zarr reads every one of them."""
    path = tmp_path / "many.zarr"
    lengths = {f"pop{i % 3}/n{i}": 1 + (i * 37) % 200 for i in range(60)}
    with Recorder(ZarrDataStore(path), max_seconds=None) as rec:
        for step in range(200):
            for key, length in lengths.items():
                if step < length:
                    rec.record(key, float(step) + 0.5)
            rec.record("vec", np.full(3, step, dtype=np.float32))
    group = zarr.open_group(path, mode="r")
    for key, length in lengths.items():
        array = group[key]
        np.testing.assert_array_equal(array[...], np.arange(length) + 0.5)
        assert array.chunks == ((1 << 20) // 8,)
        (blosc,) = array.compressors
        assert (blosc.cname.value, blosc.clevel, blosc.typesize, blosc.blocksize) == (
            "lz4", 5, 8, 16384,
        )  # fmt: skip
    np.testing.assert_array_equal(group["vec"][...], np.repeat(np.arange(200.0), 3).reshape(-1, 3))
    assert group["vec"].chunks == (81920, 3)  # (1 << 20) // 12 rows, aligned (see chunk_rows)


@pytest.mark.parametrize("shape", [(), (3,), (5, 7)])
def test_blosc_chunks_grown_by_many_small_flushes(tmp_path, shape):
    """Rows appended flush by flush across blosc block boundaries (rows of 24 and 280
    bytes straddle them): each append re-encodes the blocks it changes only, and the
    chunk reads back whole in plain zarr, equal to blosc's encoding of the chunk."""
    import numcodecs

    path = tmp_path / "grow.zarr"
    rng = np.random.default_rng(2)
    sizes = [1, 7, 2730, 3, 5000, 1, 9000, 640]
    data = rng.random((sum(sizes), *shape))
    with ZarrDataStore(path) as store:
        rec = Recorder(store, max_seconds=None)
        at = 0
        for size in sizes:
            for row in data[at : at + size]:
                rec.record("x", row)
            rec.flush()
            at += size
        rec.close()
    array = zarr.open_group(path, mode="r")["x"]
    np.testing.assert_array_equal(array[...], data)
    rows = array.chunks[0]
    full = np.zeros((rows, *shape))
    full[: len(data)] = data[:rows]
    (blosc,) = array.compressors
    codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1, blocksize=blosc.blocksize,
                            typesize=8)  # fmt: skip
    stored = (path / "x" / ("c" + ".0" * (1 + len(shape)))).read_bytes()
    assert np.array_equal(np.frombuffer(codec.decode(stored)).reshape(full.shape), full)
    assert len(stored) == len(codec.encode(full))  # the same blocks, maybe in other order


def test_blosc_block_splicing_is_blosc_s_own_encoding():
    """The chunk put together from re-encoded blocks, kept blocks and zero blocks is
    byte for byte blosc's encoding of the whole chunk (single-threaded blosc keeps
    the blocks in order)."""
    import numcodecs
    from numcodecs import blosc

    from simrecorder.datastores._zarr import _BloscBlocks

    threads = blosc.get_nthreads()
    blosc.set_nthreads(1)
    try:
        rng = np.random.default_rng(3)
        for dtype, shape, blocksize in [("f8", (131072,), 8192), ("c16", (5000, 3), 4096),
                                        ("i1", (300000,), 65536)]:  # fmt: skip
            dtype = np.dtype(dtype)
            codec = numcodecs.Blosc("lz4", 5, 1, blocksize=blocksize, typesize=dtype.itemsize)
            blocks = _BloscBlocks(codec)
            full, stored, at = np.zeros(shape, dtype), None, 0
            for count in [10, 1, 4000, 100, 700, 7, 20000, 3, 40000, 5, 17]:
                count = min(count, shape[0] - at)
                if not count:
                    break
                part = (rng.random((count, *shape[1:])) * 100).astype(dtype)
                full[at : at + count] = part
                parts = blocks.encode(part, at, stored, shape)
                assert parts is not None
                stored = b"".join(bytes(p) for p in parts)
                assert stored == codec.encode(full)
                at += count
    finally:
        blosc.set_nthreads(threads)


def test_blosc_arrays_of_one_block_per_chunk_are_encoded_whole(tmp_path):
    """An array whose blosc blocksize is automatic (as zarr-python and earlier
    versions write it) has one block per 1 MiB chunk: appends re-encode the chunk."""
    path = tmp_path / "auto.zarr"
    with ZarrDataStore(path) as store:
        store.append("a", 0.0)
    group = zarr.open_group(path, mode="a")
    group.create_array(
        "x", shape=(0,), chunks=(131072,), dtype="float64", fill_value=0,
        chunk_key_encoding={"name": "default", "separator": "."},
        compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )  # fmt: skip
    with Recorder(ZarrDataStore(path, mode="a"), max_seconds=None) as rec:
        for i in range(50):
            rec.record("x", float(i))
            if i % 7 == 0:
                rec.flush()
    x = zarr.open_group(path, mode="r")["x"]
    np.testing.assert_array_equal(x[...], np.arange(50.0))
    assert x.compressors[0].blocksize == 0
