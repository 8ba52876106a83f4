"""UQ scores against independent oracles: closed-form Gaussian CRPS, brute-force CRPS sums,
order-statistic coverage, analytic spread-skill ratios, rank-histogram shapes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from bayesbridge.diagnostics import uq
from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    ParameterError,
    ShapeMismatchError,
)


def gaussian_case(n_cases, members, spread=1.0, seed=0, dim="member"):
    """Truth y ~ N(mu, 1), members ~ N(mu, spread^2), mu varying per case."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n_cases) * 2.0
    truth = mu + rng.normal(size=n_cases)
    ens = mu[:, None] + spread * rng.normal(size=(n_cases, members))
    return (xr.DataArray(ens, dims=("case", dim), coords={"case": np.arange(n_cases)}),
            xr.DataArray(truth, dims="case", coords={"case": np.arange(n_cases)}), mu)


def gaussian_crps(y, mu, sigma):
    """Gneiting & Raftery (2007) eq. 21: closed-form CRPS of N(mu, sigma^2)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_crps_matches_closed_form_gaussian_within_monte_carlo_error():
    m, sigma = 400, 1.3
    ens, truth, mu = gaussian_case(300, m, spread=sigma, seed=1)
    got = uq.crps(ens, truth).values
    exact = gaussian_crps(truth.values, mu, sigma)
    diff = got - exact
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert abs(diff.mean()) < 4 * se
    # per case: both terms are means of M (pairs of) draws with sd <= sigma, so |error| is a few
    # sigma / sqrt(M); a wrong formula (e.g. missing the 1/2) is off by ~0.4 sigma
    assert np.abs(diff).max() < 6 * sigma / np.sqrt(m)


def test_crps_estimators_match_brute_force_pair_sums():
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, size=(7, 11))
    y = rng.normal(size=7) + 2.0
    ens = xr.DataArray(x, dims=("time", "draw"))
    truth = xr.DataArray(y, dims="time")
    m = x.shape[1]
    e_xy = np.abs(x - y[:, None]).mean(1)
    pair = np.abs(x[:, :, None] - x[:, None, :]).sum((1, 2))
    np.testing.assert_allclose(uq.crps(ens, truth, estimator="nrg").values, e_xy - 0.5 * pair / m**2, rtol=1e-10)
    np.testing.assert_allclose(uq.crps(ens, truth, estimator="fair").values,
                               e_xy - 0.5 * pair / (m * (m - 1)), rtol=1e-10)


def test_coverage_of_calibrated_draws_matches_order_statistics():
    # M = 21, level 0.9: the 5 % and 95 % quantiles are exactly order statistics 2 and 20
    # (1-based), which bracket an exchangeable truth with probability (20 - 2) / 22.
    ens, truth, _ = gaussian_case(20000, 21, seed=3)
    cov = uq.interval_coverage(ens, truth, 0.9)
    assert abs(cov - 18 / 22) < 4 * np.sqrt(0.18 * 0.82 / 20000)
    # a large ensemble covers ~0.90
    ens, truth, _ = gaussian_case(4000, 399, seed=4)
    assert abs(uq.interval_coverage(ens, truth) - 0.9 * 398 / 400) < 0.02
    # an underdispersed one covers far less: P(|Z| < 1.645 * 0.5)
    ens, truth, _ = gaussian_case(4000, 399, spread=0.5, seed=5)
    expected = 2 * stats.norm.cdf(1.645 * 0.5) - 1
    assert abs(uq.interval_coverage(ens, truth) - expected) < 0.025


def test_coverage_from_bounds_equals_interval_coverage():
    ens, truth, _ = gaussian_case(500, 50, seed=6)
    q = ens.quantile([0.05, 0.95], dim="member")
    got = uq.coverage_from_bounds(q.sel(quantile=0.05, drop=True), q.sel(quantile=0.95, drop=True), truth)
    assert got == pytest.approx(uq.interval_coverage(ens, truth))


def test_spread_skill_ratio_with_small_ensemble_correction():
    m = 5
    ens, truth, _ = gaussian_case(40000, m, seed=7)
    ss = uq.spread_skill(ens, truth)
    assert ss.ratio == pytest.approx(1.0, abs=0.02)
    # without the (M+1)/M factor a calibrated 5-member ensemble would score sqrt(5/6) = 0.913
    assert ss.spread / ss.rmse == pytest.approx(np.sqrt(m / (m + 1)), abs=0.02)
    ens, truth, _ = gaussian_case(40000, m, spread=0.5, seed=8)
    expected = np.sqrt((m + 1) / m) * 0.5 / np.sqrt(1 + 0.25 / m)
    assert uq.spread_skill(ens, truth).ratio == pytest.approx(expected, abs=0.02)


def test_rank_histogram_uniform_when_calibrated_u_shaped_when_underdispersed():
    ens, truth, _ = gaussian_case(5000, 19, seed=9)
    rh = uq.rank_histogram(ens, truth)
    assert rh.counts.shape == (20,) and rh.n_cases == 5000
    assert rh.pvalue > 0.01
    ens, truth, _ = gaussian_case(5000, 19, spread=0.6, seed=10)
    rh = uq.rank_histogram(ens, truth)
    assert rh.pvalue < 1e-6
    edges, middle = rh.counts[[0, -1]].mean(), rh.counts[5:15].mean()
    assert edges > 2 * middle  # U shape
    # overdispersed: dome, extremes under-populated
    ens, truth, _ = gaussian_case(5000, 19, spread=2.0, seed=11)
    rh = uq.rank_histogram(ens, truth, n_bins=5)
    assert rh.pvalue < 1e-6 and rh.counts[2] > rh.counts[0] and rh.counts.size == 5
    np.testing.assert_allclose(rh.expected, 1000.0)


def test_rank_histogram_breaks_ties_at_random():
    rng = np.random.default_rng(12)
    x = rng.integers(0, 3, size=(6000, 9)).astype(float)  # heavy ties, truth exchangeable
    y = rng.integers(0, 3, size=6000).astype(float)
    rh = uq.rank_histogram(xr.DataArray(x, dims=("t", "member")), xr.DataArray(y, dims="t"), seed=1)
    assert rh.pvalue > 0.001
    with_min_rank = np.bincount((x < y[:, None]).sum(1), minlength=10)
    assert stats.chisquare(with_min_rank).pvalue < 1e-6  # without tie-breaking: not uniform


def test_uq_scores_on_fields_with_land_and_weights():
    rng = np.random.default_rng(13)
    lat, lon, t, m = np.arange(-4.0, 5.0, 2.0), np.arange(150.0, 200.0, 10.0), 40, 30
    truth = xr.DataArray(rng.normal(size=(t, lat.size, lon.size)), dims=("time", "lat", "lon"),
                         coords={"time": np.arange(t), "lat": lat, "lon": lon})
    ens = xr.DataArray(rng.normal(size=(m, t, lat.size, lon.size)), dims=("draw", "time", "lat", "lon"),
                       coords={"time": np.arange(t), "lat": lat, "lon": lon})
    truth = truth.where(~((truth.lat > 2) & (truth.lon > 170)))  # land corner
    ens = ens.where(~((ens.lat > 2) & (ens.lon > 170)))
    w = np.cos(np.deg2rad(truth.lat))
    scores = uq.uq_scores(ens, truth, weights=w)
    assert scores.n_members == m and scores.n_cases == t * (lat.size * lon.size - 2)
    d = scores.to_dict()
    assert set(d) >= {"twin.uq.crps", "twin.uq.coverage90", "twin.uq.spread_skill"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in d.values())
    # E_y CRPS(N(0,1), y) for y ~ N(0,1) = E|X-Y| - E|X-X'|/2 = 1/sqrt(pi)
    assert d["twin.uq.crps"] == pytest.approx(1 / np.sqrt(np.pi), rel=0.05)
    assert 0.8 < d["twin.uq.coverage90"] < 0.95 and 0.9 < d["twin.uq.spread_skill"] < 1.1
    per_case = uq.crps(ens, truth)
    assert per_case.dims == ("time", "lat", "lon") and bool(per_case.isel(lat=-1, lon=-1).isnull().all())


def test_bad_input():
    ens, truth, _ = gaussian_case(10, 5)
    with pytest.raises(InputTypeError, match="DataArray"):
        uq.crps(ens.values, truth)
    with pytest.raises(ShapeMismatchError, match="member"):
        uq.crps(ens.rename(member="ens"), truth)
    with pytest.raises(ShapeMismatchError, match="member dimension"):
        uq.crps(ens, truth.expand_dims(member=[0]))
    with pytest.raises(ShapeMismatchError, match="coordinates differ"):
        uq.crps(ens, truth.assign_coords(case=truth.case + 100))
    with pytest.raises(ParameterError, match="level"):
        uq.interval_coverage(ens, truth, level=90)
    with pytest.raises(ParameterError, match="estimator"):
        uq.crps(ens, truth, estimator="magic")
    with pytest.raises(AllMissingError):
        uq.crps(ens, truth * np.nan)
