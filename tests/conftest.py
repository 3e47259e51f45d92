"""Shared fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# CI runs are reproducible (a fixed example sequence); local runs explore new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
