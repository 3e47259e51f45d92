"""Property tests: any nested data of storable values round-trips through every file
backend and memory, and partial updates agree with a dict model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simrecorder.storage import HDF5Storage, JSONStorage, MemoryStorage, ZarrStorage
from simrecorder.testing.storage import assert_same

NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/@"),
    min_size=1,
    max_size=8,
).filter(lambda name: name not in (".", "..") and not name.startswith(".simrecorder"))

ARRAYS = hnp.arrays(
    dtype=st.sampled_from(
        ["bool", "int8", "uint16", "int64", "float32", "float64", "complex64", "<U3", "S2"]
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=10),
)

VALUES = st.recursive(
    st.one_of(SCALARS, ARRAYS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(lambda d: [d]),
    ),
    max_leaves=8,
)

TREES = st.recursive(
    st.dictionaries(NAMES, VALUES, max_size=4),
    lambda inner: st.dictionaries(NAMES, st.one_of(VALUES, inner), max_size=4),
    max_leaves=12,
)

MAKERS = {
    "memory": lambda tmp: MemoryStorage(),
    "hdf5": lambda tmp: HDF5Storage(tmp / "p.h5", "w"),
    "json": lambda tmp: JSONStorage(tmp / "p.json", "w"),
    "zarr": lambda tmp: ZarrStorage(tmp / "p.zarr", "w"),
}
REOPEN = {
    "hdf5": lambda tmp: HDF5Storage(tmp / "p.h5", "r"),
    "json": lambda tmp: JSONStorage(tmp / "p.json", "r"),
    "zarr": lambda tmp: ZarrStorage(tmp / "p.zarr", "r"),
}


@pytest.mark.parametrize("backend", list(MAKERS))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES)
def test_any_tree_round_trips(tmp_path, backend, tree):
    storage = MAKERS[backend](tmp_path)
    storage.dump(tree)
    if backend in REOPEN:
        storage.close()
        storage = REOPEN[backend](tmp_path)
    try:
        assert_same(storage.load(version_policy="ignore"), tree)
    finally:
        storage.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
            st.one_of(st.none(), st.integers(), hnp.arrays("float64", st.integers(0, 700))),
        ),
        max_size=25,
    )
)
def test_updates_agree_with_a_dict_model(tmp_path, steps):
    """Set, overwrite and delete paths (``None`` deletes) in an HDF5 storage, small and
    large arrays mixed, reopening between steps; the content always equals a dict model."""
    path = tmp_path / "m.h5"
    HDF5Storage(path, "w").close()
    model: dict = {}
    for parts, value in steps:
        storage = HDF5Storage(path)
        root = storage.root
        key = "/".join(parts)
        try:
            if value is None:
                if _model_get(model, parts) is not _MISSING:
                    del root[key]
                    _model_del(model, parts)
            elif _model_blocks(model, parts):
                with pytest.raises(TypeError):
                    root[key] = value
            else:
                root[key] = value
                _model_set(model, parts, value)
        finally:
            storage.close()
    storage = HDF5Storage(path, "r")
    try:
        assert_same(storage.root.load(), model)
    finally:
        storage.close()


_MISSING = object()


def _model_get(model, parts):
    node = model
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _model_blocks(model, parts):
    """Whether a value lies on the path above the key (the store refuses, TypeError)."""
    node = model
    for part in parts[:-1]:
        if part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return False


def _model_set(model, parts, value):
    node = model
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _model_del(model, parts):
    node = model
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
