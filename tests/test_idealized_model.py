"""Tests of the multiscale ENSO simulator against DESIGN section 4's published statistics and
analytic properties of the I process."""

from __future__ import annotations

import cftime
import numba
import numpy as np
import pytest
from scipy import stats

from bayesbridge.diagnostics import enso
from bayesbridge.errors import BayesBridgeError, InputTypeError, InputValueError, ParameterError
from bayesbridge.idealized import DT_MAX, ENSOParameters, MultiscaleENSO
from bayesbridge.idealized.kernel import seasonal_table

# DESIGN section 4 (Chen, Fang & Yu 2022; 2024 recalibration), 1,000 model years
PUBLISHED = {
    "nino3_var": 0.785, "nino3_skew": 0.97, "nino4_var": 0.41, "nino4_skew": -0.15,
    "rates": {"ep": 10.4, "cp": 10.5, "la_nina": 28.0, "extreme_ep": 4.0},
}  # fmt: skip


def _check_published(ds):
    s = enso.summary_statistics(ds, ["nino3", "nino4"])
    assert s.loc["nino3", "skewness"] == pytest.approx(PUBLISHED["nino3_skew"], abs=0.15)
    assert s.loc["nino4", "skewness"] == pytest.approx(PUBLISHED["nino4_skew"], abs=0.12)
    assert s.loc["nino3", "variance"] == pytest.approx(PUBLISHED["nino3_var"], rel=0.15)
    assert s.loc["nino4", "variance"] == pytest.approx(PUBLISHED["nino4_var"], rel=0.15)
    peak_month = int(enso.monthly_std(ds["nino3"])["month"][enso.monthly_std(ds["nino3"]).argmax("month")])
    assert peak_month in (10, 11, 12, 1)
    rates = enso.event_rates_per_70yr(enso.classify_events(ds["nino3"], ds["nino4"]))
    for label, expected in PUBLISHED["rates"].items():
        assert rates[label] == pytest.approx(expected, rel=0.30), label
    # I uniform on [0, 4]: KS on samples 5 years apart (I decorrelates over 1/lambda = 5 years)
    i_samples = ds["walker_i"].values[:, ::60].ravel()
    assert stats.kstest(i_samples, stats.uniform(0, 4).cdf).pvalue > 0.01
    assert i_samples.min() >= 0.0 and ds["walker_i"].values.max() <= 4.0


def test_1000_year_run_reproduces_published_statistics():
    ds = MultiscaleENSO().simulate(years=1000, members=1, seed=0)
    _check_published(ds)


def test_10000_member_year_ensemble_reproduces_published_statistics():
    # a larger sample: sampling error of the skewness ~0.05 instead of ~0.15
    ds = MultiscaleENSO().simulate(years=500, members=20, seed=11)
    _check_published(ds)
    assert enso.correlation(ds["nino3"], ds["nino4"]) == pytest.approx(0.57, abs=0.08)


def test_walker_index_matches_jacobi_stationary_law():
    # dI = -lambda (I - m) dt + sqrt(lambda (4 - I) I) dW is a Jacobi diffusion: I/4 ~ Beta(m/2, 2 - m/2).
    # m = 1 gives Beta(0.5, 1.5): mean 1, variance 1 -- an independent check of the Milstein step.
    ds = MultiscaleENSO(m=1.0).simulate(years=400, members=20, seed=3, burn_in_years=30)
    i = ds["walker_i"].values[:, ::60].ravel()
    assert np.mean(i) == pytest.approx(1.0, abs=0.08)
    assert np.var(i) == pytest.approx(1.0, rel=0.12)
    assert stats.kstest(i / 4.0, stats.beta(0.5, 1.5).cdf).pvalue > 0.01


def test_dataset_layout_and_cf_attributes():
    ds = MultiscaleENSO().simulate(years=3, members=2, seed=1, start_year=1950)
    assert set(ds.data_vars) == {"nino3", "nino4", "h_w", "u", "tau", "walker_i"}
    for name in ds.data_vars:
        assert ds[name].dims == ("member", "time")
        assert "units" in ds[name].attrs and "long_name" in ds[name].attrs
    assert ds["nino3"].attrs["units"] == "degC" and ds["h_w"].attrs["units"] == "m"
    assert ds.sizes == {"member": 2, "time": 36}
    t0 = ds["time"].values[0]
    assert isinstance(t0, cftime.DatetimeNoLeap) and (t0.year, t0.month) == (1950, 1)
    assert ds["time"].values[-1].month == 12
    # anomalies relative to the run's own monthly climatology: each calendar month has mean zero
    clim = ds["nino3"].groupby("time.month").mean(...)
    np.testing.assert_allclose(clim.values, 0.0, atol=1e-12)


def test_daily_output_is_consistent_with_monthly():
    model = MultiscaleENSO()
    monthly = model.simulate(years=20, members=2, seed=5)
    daily = model.simulate(years=20, members=2, seed=5, daily=True)
    assert daily.sizes["time"] == 20 * 365
    assert daily.attrs["frequency"] == "day"
    ann_m = monthly["nino3"].groupby("time.year").mean("time")
    ann_d = daily["nino3"].groupby("time.year").mean("time")
    # both average the same steps of each year; only the weighting of the steps differs
    np.testing.assert_allclose(ann_d.values, ann_m.values, atol=0.05)


def test_deterministic_for_seed_and_independent_of_threads():
    model = MultiscaleENSO()
    n_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = model.integrate(years=5, members=6, seed=42).monthly
        numba.set_num_threads(n_threads)
        many = model.integrate(years=5, members=6, seed=42).monthly
    finally:
        numba.set_num_threads(n_threads)
    np.testing.assert_array_equal(one, many)
    # member k's stream does not depend on the ensemble size
    fewer = model.integrate(years=5, members=3, seed=42).monthly
    np.testing.assert_array_equal(fewer, one[:3])
    other = model.integrate(years=5, members=3, seed=43).monthly
    assert not np.allclose(other, fewer)


def test_seasonal_table_matches_formulas():
    f = 0.65
    tab = seasonal_table(1200, 0.005, f)
    t = 1.5  # April 1st: 2 pi t / 6 = pi / 2
    k = int(t / 0.005)
    assert tab[k, 0] == pytest.approx(1 + 0.3 * np.sin(np.pi / 2 - np.pi / 6))
    assert tab[k, 1] == pytest.approx(1.4 * f * (1 + 0.3 * np.sin(np.pi / 2 + np.pi / 3) + 0.25 * np.sin(np.pi + np.pi / 3)))
    assert tab[k, 2] == pytest.approx(1 + 0.3 * np.cos(np.pi / 2 + np.pi / 3))


def test_parameters_derive_2024_coefficients():
    p = ENSOParameters()
    f = 0.65
    assert p.delta_u == pytest.approx(0.125 * f * f / 2 * 2.5 * 0.5)
    assert p.r_e == pytest.approx(3 * 0.75 * f * 2.5 * 0.5 / 2)
    assert p.sigma_c == pytest.approx(0.04 * np.sqrt(f))
    assert p.sigma_e == 0.0
    assert ENSOParameters(variant="sigma_e").sigma_e == pytest.approx(np.sqrt(5) * 1e-2 * np.sqrt(f))
    # the sigma_E variant still runs and stays ENSO-like
    ds = MultiscaleENSO(variant="sigma_e").simulate(years=200, members=5, seed=2)
    assert 0.4 < float(ds["nino3"].var()) < 1.3


@pytest.mark.parametrize(
    "kwargs",
    [{"d_tau": -1.0}, {"lam": 0.0}, {"f": -0.65}, {"sigma_u_coef": -0.01}, {"wind_amp": -0.9},
     {"noise_scale": -1.0}, {"m": 4.5}, {"m": -0.1}, {"variant": "bogus"}, {"f": float("nan")}],
)  # fmt: skip
def test_non_physical_parameters_raise(kwargs):
    with pytest.raises(ParameterError) as info:
        MultiscaleENSO(**kwargs)
    assert list(kwargs)[0] in str(info.value)


def test_bad_simulation_arguments_raise():
    model = MultiscaleENSO()
    with pytest.raises(InputValueError, match="years"):
        model.simulate(years=0)
    with pytest.raises(InputValueError, match="members"):
        model.simulate(years=1, members=0)
    with pytest.raises(InputTypeError, match="years"):
        model.simulate(years=1.5)
    with pytest.raises(ParameterError, match="stability"):
        model.simulate(years=1, dt=DT_MAX * 2)
    with pytest.raises(ParameterError, match="divides one month"):
        model.simulate(years=1, dt=0.007)
    with pytest.raises(BayesBridgeError, match="ENSOParameters"):
        MultiscaleENSO(params={"f": 0.6})
    with pytest.raises(InputTypeError, match="f"):
        MultiscaleENSO(f="0.6")
