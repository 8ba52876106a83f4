"""ENSO diagnostics against the published ERSST statistics (data/PROVENANCE.md), scipy and
hand-built series with known answers."""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from bayesbridge.diagnostics import enso
from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ShapeMismatchError,
    TimeAxisError,
    VariableNotFoundError,
)


@pytest.fixture(scope="module")
def ersst():
    from bayesbridge.datasets import observed_indices

    ds = observed_indices()[["nino3", "nino4", "nino34"]].sel(time=slice("1950-01", "2019-12"))
    return enso.recentre(ds, "1950-01", "2019-12")


def _monthly(values, start_year=1950, member=False):
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    time = [cftime.DatetimeNoLeap(start_year + k // 12, k % 12 + 1, 1) for k in range(n)]
    dims = ("member", "time") if member else ("time",)
    return xr.DataArray(values, dims=dims, coords={"time": time})


def test_reproduces_provenance_table(ersst):
    s = enso.summary_statistics(ersst, ["nino3", "nino4"])
    assert s.loc["nino3", "variance"] == pytest.approx(0.744, abs=5e-4)
    assert s.loc["nino3", "skewness"] == pytest.approx(0.81, abs=5e-3)
    assert s.loc["nino3", "kurtosis"] == pytest.approx(4.31, abs=5e-3)
    assert s.loc["nino4", "variance"] == pytest.approx(0.393, abs=1.5e-3)
    assert s.loc["nino4", "skewness"] == pytest.approx(-0.33, abs=6e-3)
    assert s.loc["nino4", "kurtosis"] == pytest.approx(2.70, abs=5e-3)
    assert enso.correlation(ersst["nino3"], ersst["nino4"]) == pytest.approx(0.77, abs=5e-3)
    table3 = [1.02, .78, .64, .60, .71, .73, .78, .83, .88, .99, 1.11, 1.14]
    table4 = [.76, .70, .61, .51, .48, .47, .50, .54, .60, .71, .78, .78]
    np.testing.assert_allclose(enso.monthly_std(ersst["nino3"]).values, table3, atol=5.1e-3)
    np.testing.assert_allclose(enso.monthly_std(ersst["nino4"]).values, table4, atol=5.1e-3)
    events = enso.classify_events(ersst["nino3"], ersst["nino4"])
    counts = enso.event_counts(events)
    assert (counts["ep"], counts["cp"], counts["la_nina"], counts["extreme_ep"]) == (12, 9, 27, 3)
    assert list(events.index[events["label"] == "extreme_ep"]) == [1982, 1997, 2015]
    assert len(events) == 69  # complete DJF windows: event years 1950..2018
    rates = enso.event_rates_per_70yr(events)
    assert rates["ep"] == pytest.approx(12 * 70 / 69)


def test_summary_statistics_match_scipy_pooled_and_per_member():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=(3, 240))
    x[0, 5] = np.nan
    ds = xr.Dataset({"a": _monthly(x, member=True)})
    pooled = enso.summary_statistics(ds)
    flat = x.ravel()[np.isfinite(x.ravel())]
    assert pooled.loc["a", "variance"] == pytest.approx(np.var(flat))
    assert pooled.loc["a", "skewness"] == pytest.approx(stats.skew(flat))
    assert pooled.loc["a", "kurtosis"] == pytest.approx(stats.kurtosis(flat, fisher=False))
    per = enso.summary_statistics(ds, per_member=True)
    assert per.index.names == ["variable", "member"] and len(per) == 3
    assert per.loc[("a", 2), "skewness"] == pytest.approx(stats.skew(x[2]))


def test_monthly_std_recovers_known_seasonal_amplitude():
    rng = np.random.default_rng(1)
    amp = np.linspace(0.5, 2.0, 12)
    x = (rng.standard_normal((400, 12)) * amp).ravel()
    ms = enso.monthly_std(_monthly(x))
    assert list(ms["month"].values) == list(range(1, 13))
    np.testing.assert_allclose(ms.values, amp, rtol=0.1)


def _events_fixture():
    # three years: DJF of event year 2000 = Dec 2000, Jan-Feb 2001, etc.
    n3 = np.zeros(48)
    n4 = np.zeros(48)
    n3[11:14], n4[11:14] = 1.0, 0.6  # event year 2000: EP (T_E > T_C > 0.5)
    n3[23:26], n4[23:26] = 0.6, 0.9  # 2001: CP
    n3[30] = 2.6  # Jul 2002 above 2.5 -> extreme EP year 2002 despite neutral DJF
    n3[35:38], n4[35:38] = -0.2, -0.7  # 2002 DJF La Nina, but extreme has priority
    return _monthly(n3, 2000), _monthly(n4, 2000)


def test_classify_events_priority_rules():
    n3, n4 = _events_fixture()
    ev = enso.classify_events(n3, n4)
    assert list(ev.index) == [2000, 2001, 2002]  # 2003 has no complete DJF
    assert list(ev["label"]) == ["ep", "cp", "extreme_ep"]
    assert ev.loc[2000, "nino3_djf"] == pytest.approx(1.0)
    n3b = n3.copy()
    n3b[30] = 0.0
    assert enso.classify_events(n3b, n4).loc[2002, "label"] == "la_nina"
    counts = enso.event_counts(ev)
    assert counts.to_dict() == {"extreme_ep": 1, "ep": 1, "cp": 1, "la_nina": 0, "neutral": 0}


def test_classify_events_per_member_and_multi_year():
    n3, n4 = _events_fixture()
    # member 1: La Nina every DJF, plus the extreme July 2002
    both3 = xr.concat([n3, xr.where(n3 > 2.5, n3, -1.0)], "member")
    both4 = xr.concat([n4, n4 * 0 - 1.0], "member")
    ev = enso.classify_events(both3, both4)
    assert ev.index.names == ["member", "year"]
    assert list(ev.loc[1, "label"]) == ["la_nina", "la_nina", "extreme_ep"]
    multi = enso.multi_year_events(ev)
    assert multi.to_dict("records") == [
        {"kind": "el_nino", "start": 2000, "end": 2002, "length": 3, "member": 0},
        {"kind": "la_nina", "start": 2000, "end": 2001, "length": 2, "member": 1},
    ]


def test_autocorrelation_of_ar1_and_spectrum_peak():
    rng = np.random.default_rng(2)
    phi = 0.8
    x = np.zeros(6000)
    for t in range(1, len(x)):
        x[t] = phi * x[t - 1] + rng.standard_normal()
    acf = enso.autocorrelation(_monthly(x), max_lag=4)
    np.testing.assert_allclose(acf.values, phi ** np.arange(5), atol=0.04)
    t = np.arange(1200)
    sine = np.sin(2 * np.pi * t / 48.0) + 0.1 * rng.standard_normal(1200)  # 4-year period
    spec = enso.power_spectrum(_monthly(sine))
    assert spec.dominant_period == pytest.approx(4.0, rel=0.1)
    assert spec.power.dims == ("frequency",)


def test_equatorial_hovmoller_and_nino34(ersst):
    from bayesbridge.datasets import equatorial_regression
    from bayesbridge.idealized import profiles

    coeffs = equatorial_regression()
    h = profiles.equatorial_hovmoller(ersst["nino3"], ersst["nino4"])
    assert h.dims == ("time", "lon") and h.dtype == np.float32
    k = 100
    expected = coeffs["b0"][k] + coeffs["b_e"][k] * ersst["nino3"][5] + coeffs["b_c"][k] * ersst["nino4"][5]
    assert float(h[5, k]) == pytest.approx(float(expected), rel=1e-5)
    n34 = profiles.nino34_from_indices(ersst["nino3"], ersst["nino4"])
    assert enso.correlation(n34, ersst["nino34"]) > 0.95  # the observed Nino 3.4


def test_recentre_zeroes_base_period_climatology():
    rng = np.random.default_rng(3)
    x = _monthly(rng.standard_normal(240) + np.tile(np.arange(12.0), 20), 1990)
    r = enso.recentre(x, "1995-01", "2004-12")
    clim = r.sel(time=slice("1995-01", "2004-12")).groupby("time.month").mean()
    np.testing.assert_allclose(clim.values, 0.0, atol=1e-12)
    assert r.sizes["time"] == 240


def test_bad_inputs_raise_clear_errors():
    good = _monthly(np.zeros(36))
    with pytest.raises(InputTypeError, match="DataArray"):
        enso.monthly_std(np.zeros(36))
    with pytest.raises(TimeAxisError, match="time"):
        enso.monthly_std(xr.DataArray(np.zeros(3), dims=("x",)))
    with pytest.raises(AllMissingError):
        enso.monthly_std(_monthly(np.full(36, np.nan)))
    with pytest.raises(ShapeMismatchError):
        enso.classify_events(good, _monthly(np.zeros(24)))
    with pytest.raises(VariableNotFoundError, match="available"):
        enso.summary_statistics(xr.Dataset({"a": good}), ["nino3"])
    gap = good.isel(time=[i for i in range(36) if i != 7])
    with pytest.raises(TimeAxisError, match="contiguous"):
        enso.classify_events(gap, gap)
    with pytest.raises(InputValueError, match="base period"):
        enso.recentre(good, "2100-01", "2101-12")
    with pytest.raises(InputTypeError, match="classify_events"):
        enso.event_counts(pd.DataFrame({"x": [1]}))
