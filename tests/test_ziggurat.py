"""The particle filter's float32 normal generator against the normal distribution (scipy)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayesbridge.infer._ziggurat import _KI, _R, _V, _WI, ZigguratNormals


def draws(n: int, seed: int = 0) -> np.ndarray:
    return ZigguratNormals(torch.Generator().manual_seed(seed)).fill(np.empty(n, np.float32))


def test_layer_constants_are_consistent():
    # every layer has area V; the base layer is the rectangle R f(R) plus the tail beyond R
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    tail = math.sqrt(2.0 * math.pi) * stats.norm.sf(_R)
    assert abs(_R * f(_R) + tail - _V) < 1e-9
    assert _WI[255] * 2**23 == pytest.approx(_R, rel=1e-6)
    # acceptance without the wedge test is about 98.8 % for 256 layers (Marsaglia & Tsang 2000)
    r = np.random.default_rng(0).integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    fast = ((r >> 9) & 0x7FFFFF) < _KI[r & 0xFF]
    assert 0.98 < fast.mean() < 0.995


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distribution_matches_the_standard_normal(seed):
    x = draws(4_000_000, seed).astype(np.float64)
    edges = stats.norm.ppf(np.linspace(0.0, 1.0, 201))  # 200 equiprobable bins
    assert stats.chisquare(np.histogram(x, edges)[0]).pvalue > 1e-3
    assert stats.kstest(x[:1_000_000], "norm").pvalue > 1e-3
    n = x.size
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs(x.var() - 1.0) < 5 * math.sqrt(2.0 / n)
    assert abs(stats.skew(x)) < 5 * math.sqrt(6.0 / n)
    assert abs(stats.kurtosis(x)) < 5 * math.sqrt(24.0 / n)


@pytest.mark.parametrize("threshold", [2.0, _R, 4.5])
def test_tail_frequencies_match_the_normal(threshold):
    # beyond R every number comes from the exact tail algorithm; below it from the wedges
    x = draws(20_000_000, seed=3)
    p = 2.0 * stats.norm.sf(threshold)
    k = int((np.abs(x) > threshold).sum())
    assert abs(k - p * x.size) < 5.0 * math.sqrt(x.size * p * (1.0 - p))


def test_consecutive_numbers_are_uncorrelated():
    x = draws(2_000_000, seed=4).astype(np.float64)
    n = x.size - 1
    for a, b in [(x[:-1], x[1:]), (x[:-1] ** 2, x[1:] ** 2), (x[:-2], x[2:])]:  # both halves of a word, next word
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)


def test_stream_is_reproducible_and_independent_of_how_it_is_cut():
    whole = draws(1001, seed=5)
    z = ZigguratNormals(torch.Generator().manual_seed(5))
    pieces = [z.fill(np.empty(k, np.float32)) for k in (1, 3, 0, 500, 497)]  # odd sizes keep a spare word
    assert np.array_equal(np.concatenate(pieces), whole)
    assert np.array_equal(draws(1001, seed=5), whole)
    other = draws(1001, seed=6)
    assert not np.array_equal(other, whole)
    assert abs(np.corrcoef(other, whole)[0, 1]) < 0.15


def test_fills_arrays_of_any_shape_in_place():
    out = np.empty((3, 4, 5), np.float32)
    z = ZigguratNormals(torch.Generator().manual_seed(7))
    assert z.fill(out) is out
    assert np.array_equal(out.reshape(-1), draws(60, seed=7))
