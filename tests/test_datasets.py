"""Bundled observations are found and labelled."""

from __future__ import annotations

import numpy as np

import bayesbridge as bb


def test_observed_indices_labelled():
    ds = bb.datasets.observed_indices()
    assert {"nino3", "nino34", "nino4", "h_w", "u", "walker_i"} <= set(ds.data_vars)
    assert ds["nino3"].attrs["units"] == "degC" and ds["h_w"].attrs["units"] == "m"
    assert ds["time"].values[0].year == 1870 and ds["time"].values[0].month == 1
    # records as documented in PROVENANCE.md: GODAS h_W 1980-2019 only
    hw = ds["h_w"].dropna("time")
    assert hw["time"].values[0].year == 1980 and hw["time"].values[-1].year == 2019
    # GODAS h_W: std 13.2 m, skewness -0.57 (PROVENANCE.md)
    from scipy import stats

    assert abs(float(hw.std()) - 13.2) < 0.3
    assert abs(stats.skew(hw.values) - (-0.57)) < 0.05


def test_wind_bursts_and_regression():
    wb = bb.datasets.wind_bursts()
    assert wb["tau"].attrs["units"] == "m s-1" and wb.sizes["time"] > 13000
    assert wb["time"].values[0].calendar == "noleap"
    reg = bb.datasets.equatorial_regression()
    assert reg.sizes["lon"] == 170
    np.testing.assert_allclose(reg["lon"].values[[0, -1]], [119.5, 288.5])
    # Nino 3 region (210-270E) loads on T_E more than on T_C; the west is the opposite
    east = reg.sel(lon=slice(210, 270))
    assert float(east["b_e"].mean()) > float(east["b_c"].mean())


def test_provenance_bundled():
    text = bb.datasets.provenance()
    assert "ERSST" in text and "GODAS" in text
