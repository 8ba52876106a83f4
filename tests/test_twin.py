"""Tests of the synthetic twin experiment (bayesbridge.datasets.twin, DESIGN section 6).

The oracles are independent of the generator: box indices come from bayesbridge.regions, the
regression coefficients from the bundled observational file, skewness and regressions from
scipy/numpy, the spectral centroid of a damped oscillator from its analytic spectrum.
"""

from __future__ import annotations

import time

import cftime
import numpy as np
import pytest
import xarray as xr
from scipy import signal, stats

from bayesbridge import errors
from bayesbridge.datasets import equatorial_regression
from bayesbridge.datasets import twin as tw
from bayesbridge.io import open_operational
from bayesbridge.regions import box_index


def toy_driver(years: int, seed: int) -> xr.Dataset:
    """A simple skewed, phase-locked stochastic ENSO: damped oscillator plus a T_E^2 term."""
    rng = np.random.default_rng(seed)
    n = 12 * years
    lam = np.exp(-1 / 9 + 2j * np.pi / 48)
    z = signal.lfilter([1], [1, -lam], rng.standard_normal(n + 120) + 1j * rng.standard_normal(n + 120))[120:]
    x, h = z.real / z.real.std(), -z.imag / z.imag.std()
    lock = 1 + 0.3 * np.cos(2 * np.pi * (np.arange(n) % 12 - 11) / 12)
    te = 0.6 * x * lock + 0.2 * np.maximum(x * lock, 0) ** 2
    tc = 0.45 * x - 0.12 * np.maximum(x, 0) ** 2 + 0.35 * rng.standard_normal(n)
    return xr.Dataset({"nino3": ("time", te - te.mean()), "nino4": ("time", tc - tc.mean()),
                       "h_w": ("time", 13 * h)})


def anomalies(ds: xr.Dataset) -> xr.Dataset:
    return ds.groupby("time.month") - ds.groupby("time.month").mean()


def djf(index: xr.DataArray) -> np.ndarray:
    """DJF means Dec(y), Jan(y+1), Feb(y+1)."""
    v = index.values[11:]  # starts at the first December
    n = v.size // 12
    return v[: 12 * n].reshape(n, 12)[:, :3].mean(axis=1)


def westward_extent(anom: xr.Dataset) -> float:
    """Westernmost longitude where the 5S-5N SST anomaly std reaches half its maximum."""
    sd = anom.tos.sel(lat=slice(-5, 5)).weighted(np.cos(np.deg2rad(anom.lat))).mean("lat").std("time")
    return float(sd.lon.values[np.argmax(sd.values >= 0.5 * sd.values.max())])


@pytest.fixture(scope="module")
def twin100():
    t0 = time.perf_counter()
    twin = tw.twin_from_drivers(toy_driver(100, 1), toy_driver(100, 2), seed=7)
    return twin, time.perf_counter() - t0


def test_generation_is_fast(twin100):
    assert twin100[1] < 20.0


def test_same_seed_same_arrays_other_seed_differs():
    drv, obs = toy_driver(6, 3), toy_driver(6, 4)
    a, b = tw.twin_from_drivers(drv, obs, seed=5), tw.twin_from_drivers(drv, obs, seed=5)
    c = tw.twin_from_drivers(drv, obs, seed=6)
    for part in ("truth", "operational"):
        np.testing.assert_array_equal(getattr(a, part).tos.values, getattr(b, part).tos.values)
        np.testing.assert_array_equal(getattr(a, part).zos.values, getattr(b, part).zos.values)
        assert not np.allclose(getattr(a, part).tos.values, getattr(c, part).tos.values, equal_nan=True)
    # the truth's noise does not depend on the operational model and vice versa: the truth
    # with seed 5 differs from seed 6 only through its noise, which is uncorrelated with the
    # operational model's
    dn = (a.truth.tos - c.truth.tos).values.ravel()
    dop = (a.operational.tos - c.operational.tos).values.ravel()
    ok = np.isfinite(dn)
    assert abs(np.corrcoef(dn[ok], dop[ok])[0, 1]) < 0.1


def test_grid_calendar_and_cf_attributes(twin100):
    twin = twin100[0]
    for ds in (twin.truth, twin.operational):
        assert ds.tos.shape == (1200, 21, 81) and ds.zos.shape == (1200, 21, 81)
        assert ds.tos.dtype == np.float32
        np.testing.assert_allclose(ds.lat, np.arange(-20, 21, 2))
        np.testing.assert_allclose(ds.lon, np.arange(120, 281, 2))
        t = ds.time.values
        assert isinstance(t[0], cftime.DatetimeNoLeap)
        assert (t[0].year, t[0].month, t[-1].year, t[-1].month) == (1850, 1, 1949, 12)
        assert ds.tos.attrs["standard_name"] == "sea_surface_temperature"
        assert ds.tos.attrs["units"] == "degC"
        assert ds.zos.attrs["standard_name"] == "sea_surface_height_above_geoid"
        assert ds.zos.attrs["units"] == "m"
        assert "time: mean" in ds.tos.attrs["cell_methods"]
        # land: NaN for all times, ocean finite everywhere; small but present at both corners
        land = np.isnan(ds.tos.values[0])
        assert np.array_equal(land, np.isnan(ds.tos.values).all(0))
        assert np.isfinite(ds.tos.values[:, ~land]).all()
        assert 0 < land.sum() < 0.1 * land.size
        assert land[ds.lat.values >= 10][:, ds.lon.values >= 276].all()
        assert land[:, ds.lon.values <= 124].any()
    assert any(k.startswith("bayesbridge_bias_") for k in twin.operational.attrs)
    # absolute SST: warm pool warmer than the cold tongue
    clim = twin.truth.tos.sel(lat=0).mean("time")
    assert float(clim.sel(lon=150)) > float(clim.sel(lon=260)) + 3.0


def test_truth_indices_follow_driver(twin100):
    twin = twin100[0]
    anom = anomalies(twin.truth)
    drv = twin.truth_driver
    n3, n4 = box_index(anom.tos, "nino3"), box_index(anom.tos, "nino4")
    hw = box_index(anom.zos, "h_w") * tw.THERMOCLINE_PER_ZOS
    for field, name in ((n3, "nino3"), (n4, "nino4"), (hw, "h_w")):
        assert np.corrcoef(field, drv[name])[0, 1] > 0.95
        assert abs(float(field.std()) / float(drv[name].std()) - 1) < 0.1


def test_documented_biases_measurable(twin100):
    twin = twin100[0]
    n3_truth = box_index(anomalies(twin.truth).tos, "nino3")
    n3_op = box_index(anomalies(twin.operational).tos, "nino3")
    assert stats.skew(twin.truth_driver.nino3) > 0.5 and stats.skew(n3_truth) > 0.5
    assert abs(stats.skew(twin.operational_driver.nino3)) < 0.2 and abs(stats.skew(n3_op)) < 0.2
    assert float(n3_truth.max()) > 2.5  # the truth has extreme El Ninos (DESIGN definition) ...
    assert djf(n3_op).max() < 2.5 and float(n3_op.max()) < 2.5  # ... the operational model none
    # matched variance, stronger Nino3-Nino4 correlation, weak phase locking
    assert abs(float(n3_op.std()) / float(n3_truth.std()) - 1) < 0.1
    assert np.corrcoef(twin.operational_driver.nino3, twin.operational_driver.nino4)[0, 1] == pytest.approx(
        tw.OPERATIONAL_NINO_CORR, abs=0.05)
    month = n3_op.time.dt.month.values
    ratio = {name: max(s) / min(s) for name, s in (
        ("truth", [n3_truth.values[month == m].std() for m in range(1, 13)]),
        ("op", [n3_op.values[month == m].std() for m in range(1, 13)]))}
    assert ratio["op"] < 1.4 < ratio["truth"]
    # patterns extend too far west in the operational model
    assert westward_extent(anomalies(twin.operational)) <= westward_extent(anomalies(twin.truth)) - 10.0


def test_truth_reproduces_observed_regression(twin100):
    twin = twin100[0]
    anom = anomalies(twin.truth).tos.sel(lat=slice(-5, 5))
    eq = anom.weighted(np.cos(np.deg2rad(anom.lat))).mean("lat").values
    drv = twin.truth_driver
    x = np.column_stack([np.ones(drv.sizes["time"]), drv.nino3, drv.nino4])
    coef = np.linalg.lstsq(x, eq, rcond=None)[0]
    obs = equatorial_regression().interp(lon=anom.lon)
    assert np.corrcoef(coef[1], obs.b_e)[0, 1] > 0.9
    assert np.corrcoef(coef[2], obs.b_c)[0, 1] > 0.9
    # meridional trapping: the ENSO signal at 16-20 degrees is much weaker than on the equator
    sd = anomalies(twin.truth).tos.std("time")
    assert float(sd.sel(lat=0, lon=250)) > 2.5 * float(sd.sel(lat=18, lon=250))


def nonlinear_ep_residual(twin) -> xr.DataArray:
    """Composite over strong El Nino months (T_E > 2.5) of the equatorial SST anomaly left after
    a linear regression on (1, T_E, T_C)."""
    anom = anomalies(twin.truth).tos.sel(lat=slice(-5, 5))
    eq = anom.weighted(np.cos(np.deg2rad(anom.lat))).mean("lat")
    drv = twin.truth_driver
    x = np.column_stack([np.ones(drv.sizes["time"]), drv.nino3, drv.nino4])
    resid = eq.values - x @ np.linalg.lstsq(x, eq.values, rcond=None)[0]
    strong = drv.nino3.values > 2.5
    assert strong.sum() >= 3
    return xr.DataArray(resid[strong].mean(0), coords={"lon": eq.lon})


def test_strong_ep_events_peak_further_east(twin100):
    # beyond the linear response to (T_E, T_C), strong El Ninos add warming in the far east and
    # cooling in the central Pacific
    comp = nonlinear_ep_residual(twin100[0])
    assert float(comp.sel(lon=slice(256, 280)).mean()) > 0.2
    assert float(comp.sel(lon=slice(200, 230)).mean()) < 0.0


def test_centroid_period_matches_analytic_oscillator():
    rng = np.random.default_rng(0)
    for period, tau in ((48.0, 8.0), (40.0, 15.0)):
        lam = np.exp(-1 / tau + 2j * np.pi / period)
        z = signal.lfilter([1], [1, -lam], rng.standard_normal(24000) + 1j * rng.standard_normal(24000))
        # analytic centroid of S(w) = |1 - lam e^-iw|^-2 + |1 - conj(lam) e^-iw|^-2 over 18..120 months
        f = np.linspace(1 / 120, 1 / 18, 2000)
        e = np.exp(-2j * np.pi * f)
        s = 1 / np.abs(1 - lam * e) ** 2 + 1 / np.abs(1 - np.conj(lam) * e) ** 2
        assert tw.centroid_period(z.real) == pytest.approx(np.sum(s) / np.sum(f * s), rel=0.05)


def test_operational_matches_truth_period(twin100):
    twin = twin100[0]
    truth_c = tw.centroid_period(twin.truth_driver.nino3.values)
    op_c = tw.centroid_period(twin.operational_driver.nino3.values)
    assert op_c == pytest.approx(truth_c, rel=0.15)


def test_write_cmip6_multifile_roundtrip(tmp_path):
    ds = tw.synthetic_operational(4, seed=1, out_dir=tmp_path, years_per_file=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{v}_Omon_SYNTH_piControl_r1i1p1f1_gn_{a}-{b}.nc" for v in ("tos", "zos")
                           for a, b in (("185001", "185112"), ("185201", "185312")))
    back = xr.open_mfdataset(sorted(tmp_path.glob("tos_*.nc")), combine="by_coords", data_vars="minimal",
                             coords="minimal", compat="override")
    np.testing.assert_array_equal(back.tos.values, ds.tos.values)
    assert back.time.values[0] == ds.time.values[0] and back.time.encoding["calendar"] == "noleap"
    assert "time_bnds" in back and back.tos.attrs["standard_name"] == "sea_surface_temperature"
    back.close()
    # the package's CMIP6 reader gives the same anomalies from the files as from the Dataset
    from_files = open_operational(str(tmp_path / "*.nc")).load()
    from_memory = open_operational(ds).load()
    xr.testing.assert_allclose(from_files[["tos", "zos"]], from_memory[["tos", "zos"]], rtol=0, atol=1e-6)


def test_bad_input_errors():
    good = toy_driver(3, 0)
    with pytest.raises(errors.VariableNotFoundError, match="h_w"):
        tw.twin_from_drivers(good.drop_vars("h_w"), good, seed=0)
    with pytest.raises(errors.InputValueError, match="one member"):
        tw.synthetic_truth(xr.concat([good, good], "member"), seed=0)
    with pytest.raises(errors.InputValueError, match="NaN"):
        tw.synthetic_truth(good.where(good.time > 3), seed=0)
    with pytest.raises(errors.InputValueError, match="months"):
        tw.twin_from_drivers(good, good.isel(time=slice(0, 30)), seed=0)
    with pytest.raises(errors.InputValueError, match="years"):
        tw.synthetic_operational(1, seed=0)
    with pytest.raises(errors.InputTypeError, match="seed"):
        tw.synthetic_operational(3, seed=1.5)
    with pytest.raises(errors.ParameterError, match="nino3_std"):
        tw.OscillatorTarget(nino3_std=2.5)


@pytest.fixture(scope="module")
def idealized_twin(tmp_path_factory):
    cache = tmp_path_factory.mktemp("twincache")
    t0 = time.perf_counter()
    twin = tw.make_twin_experiment(years=100, seed=3, cache_dir=cache)
    return twin, time.perf_counter() - t0, cache


def test_make_twin_experiment_with_idealized_model(idealized_twin):
    twin, seconds, _ = idealized_twin
    assert seconds < 30.0
    n3_truth = box_index(anomalies(twin.truth).tos, "nino3")
    n3_op = box_index(anomalies(twin.operational).tos, "nino3")
    assert stats.skew(n3_truth) > 0.5 and abs(stats.skew(n3_op)) < 0.2
    assert djf(n3_op).max() < 2.5
    comp = nonlinear_ep_residual(twin)
    assert float(comp.sel(lon=slice(256, 280)).mean()) > 0.2 > float(comp.sel(lon=slice(200, 230)).mean())
    assert westward_extent(anomalies(twin.operational)) <= westward_extent(anomalies(twin.truth)) - 10.0
    # the assimilated sparse output is the run that drives the truth ...
    np.testing.assert_array_equal(twin.idealized_observations.nino3.values, twin.truth_driver.nino3.values)
    # ... and is independent of the operational model
    assert abs(np.corrcoef(twin.idealized_observations.nino3, twin.operational_driver.nino3)[0, 1]) < 0.2
    assert set(tw.OBSERVED_VARIABLES) <= set(twin.idealized_observations.data_vars)


def test_cache_roundtrip_is_identical(idealized_twin, monkeypatch):
    twin, _, cache = idealized_twin
    import bayesbridge.idealized as idealized

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(idealized, "MultiscaleENSO", fail)
    again = tw.make_twin_experiment(years=100, seed=3, cache_dir=cache)
    for part in ("truth", "operational", "idealized_observations", "truth_driver", "operational_driver"):
        xr.testing.assert_identical(getattr(again, part), getattr(twin, part))
    assert again.metadata == twin.metadata
    assert not list(cache.rglob("*.tmp"))
