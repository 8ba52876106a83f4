"""Suite-wide settings."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("BAYESBRIDGE_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op torch thread per test process.

    The suite runs in two pytest-xdist workers on a two-core machine; torch's default of one
    thread per core would oversubscribe it, and small tensors run many times slower when the
    OpenMP threads spin against each other.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
