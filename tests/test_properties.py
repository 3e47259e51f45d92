"""Property test: any sequence of records reads back as a dict-of-lists model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simrecorder import HDF5DataStore, InMemoryDataStore, Recorder

KINDS = {
    "f": st.floats(allow_nan=False, width=64),
    "i": st.integers(-(2**63), 2**63 - 1),
    "a": st.lists(st.integers(-100, 100), min_size=3, max_size=3).map(
        lambda xs: np.array(xs, dtype=np.int16)
    ),
    # NUL-free: HDF5 refuses NUL in str series (tested in the contract suite)
    "s": st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8
    ),
    "o": st.lists(st.integers() | st.text(max_size=3) | st.none(), max_size=3),
}
KEYS = {"f": "x/f", "i": "x/i", "a": "arr", "s": "log/s", "o": "obj"}


@st.composite
def record_sequences(draw):
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=60))
    return [(KEYS[k], draw(KINDS[k])) for k in kinds]


def check(store_factory, sequence, max_records, flush_every):
    model: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = store_factory(Path(tmp))
        rec = Recorder(store, max_records=max_records, max_seconds=None)
        for i, (key, value) in enumerate(sequence):
            rec.record(key, value)
            model.setdefault(key, []).append(value)
            if flush_every and i % flush_every == 0:
                rec.flush()
        for key, want in model.items():
            got = rec.get_all(key)
            if key in ("x/f", "x/i", "arr"):
                np.testing.assert_array_equal(np.asarray(got), np.array(want))
            else:
                assert got == want
        assert rec.keys() == sorted(model)
        rec.close()


settings_ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(record_sequences(), st.integers(1, 8), st.integers(0, 5))
def test_memory_matches_model(sequence, max_records, flush_every):
    check(lambda tmp: InMemoryDataStore(), sequence, max_records, flush_every)


@settings_
@given(record_sequences(), st.integers(1, 8), st.integers(0, 5))
def test_hdf5_matches_model(sequence, max_records, flush_every):
    check(lambda tmp: HDF5DataStore(tmp / "p.h5"), sequence, max_records, flush_every)


# -- numbers into narrow series: kept exactly as numpy casts them, or refused --------------
NARROW = {
    "float32": st.floats(width=64) | st.sampled_from([3.4028235e38, 3.4028236e38, 3.5e38, 1e39]),
    "float16": st.floats(width=64, min_value=-1e6, max_value=1e6) | st.just(65519.0),
    "uint8": st.integers(-300, 300),
    "int8": st.integers(-(2**70), 2**70) | st.integers(-200, 200),
}


def fits(dtype, value):
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):
            cast = np.array(value).astype(dtype)
        return not (np.isinf(cast) and np.isfinite(value))
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


@settings_
@given(
    st.sampled_from(sorted(NARROW)).flatmap(
        lambda dtype: st.tuples(st.just(dtype), st.lists(NARROW[dtype], max_size=40))
    ),
    st.integers(0, 5),
)
def test_numbers_into_narrow_series_are_cast_or_refused(case, flush_every):
    from simrecorder.errors import ValueOutOfRangeError

    dtype, values = case
    rec = Recorder(InMemoryDataStore(), max_records=7, max_seconds=None)
    rec.record("n", np.zeros((), dtype=dtype)[()])
    refused = []

    def attempt(step, *args):
        try:
            step(*args)
        except ValueOutOfRangeError as exc:
            refused.extend(exc.values)

    for i, value in enumerate(values):
        attempt(rec.record, "n", value)
        if flush_every and i % flush_every == 0:
            attempt(rec.flush)
    attempt(rec.flush)
    kept = [v for v in values if fits(dtype, v)]
    assert sorted(map(repr, refused)) == sorted(repr(v) for v in values if not fits(dtype, v))
    with np.errstate(over="ignore"):
        want = np.array([0, *kept]).astype(dtype) if kept else np.zeros(1, dtype=dtype)
    np.testing.assert_array_equal(rec.get_all("n"), want)
    rec.close()
