"""Tests of the explanation diagnostics (gain maps, latent increments, regime composites).

Oracles: the analytic steady-state Kalman gain (scipy's discrete algebraic Riccati solver),
hand-built increments with a known dominant direction, and numpy means over hand-picked months.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
import xarray as xr

from bayesbridge.diagnostics import explain as ex
from bayesbridge.diagnostics.enso import classify_events
from bayesbridge.errors import BayesBridgeError, InputValueError, ShapeMismatchError, TimeAxisError
from bayesbridge.infer import assimilate
from bayesbridge.infer.result import AssimilationResult
from bayesbridge.model import LinearGaussianModel
from bayesbridge.plots import explain as ep


class LinearCodec:
    """Tiny linear codec: random orthonormal patterns on a 5 x 6 grid, two variables, one land point."""

    def __init__(self, d: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        lat, lon = np.arange(-4.0, 5.0, 2.0), np.arange(150.0, 174.0, 4.0)
        tuples = [(v, la, lo) for v in ("tos", "zos") for la in lat for lo in lon if not (v == "zos" and la == 0 and lo == 162)]
        self.points = pd.MultiIndex.from_tuples(tuples, names=["variable", "lat", "lon"])
        q, _ = np.linalg.qr(rng.normal(size=(len(tuples), d)))
        self.W = q.T * np.array([1.0] * (len(tuples) // 2) + [0.1] * (len(tuples) - len(tuples) // 2))
        self.latent_dim = d
        self.units = {"tos": "degC", "zos": "m"}

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return z @ torch.as_tensor(self.W, dtype=z.dtype)


def _at_points(ds: xr.Dataset, codec: LinearCodec) -> np.ndarray:
    """Values of a (..., lat, lon) map dataset at the codec points, ``(..., n_points)``."""
    cols = []
    for v, la, lo in codec.points:
        cols.append(np.asarray(ds[v].sel(lat=la, lon=lo).values))
    return np.stack(cols, axis=-1)


def _steady_problem(d=4, m=2, seed=3):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = 0.85 * U
    B = rng.normal(size=(d, d)) * 0.4
    Q = B @ B.T / d + 0.05 * np.eye(d)
    H = rng.normal(size=(m, d)) / np.sqrt(d)
    R = np.diag([0.3**2, 0.5**2][:m])
    Pf = scipy.linalg.solve_discrete_are(A.T, H.T, Q, R)  # steady-state prior covariance
    S = H @ Pf @ H.T + R
    K = Pf @ H.T @ np.linalg.inv(S)
    Pa = Pf - K @ S @ K.T
    return A, Q, H, R, Pf, Pa, K


@pytest.fixture(scope="module")
def steady():
    d, m = 4, 2
    A, Q, H, R, Pf, Pa, K = _steady_problem(d, m)
    # Starting from P0 = steady-state analysis covariance, every prior covariance is Pf.
    model = LinearGaussianModel(A, Q, H, R, np.zeros(d), Pa)
    _, y = model.simulate(24, generator=torch.Generator().manual_seed(1))
    codec = LinearCodec(d)
    return model, y, codec, codec.W.T @ K  # analytic physical gain D Pf H^T S^-1, (n_points, m)


def test_kalman_gain_map_equals_analytic(steady):
    model, y, codec, K_phys = steady
    res = assimilate(model, y, method="kalman")
    time = xr.date_range("2000-01-01", periods=24, freq="MS", use_cftime=True)
    g = ex.gain_maps(model, res, codec, index_names=["nino3", "nino4"], time=time, by_month=True)
    assert g.method == "kalman"
    got = _at_points(g.maps, codec)  # (month, index, n_points)
    np.testing.assert_allclose(got, np.broadcast_to(K_phys.T, got.shape), atol=1e-8, rtol=0)
    assert set(g.maps.data_vars) == {"tos", "zos"}
    assert g.maps["tos"].dims == ("month", "index", "lat", "lon")
    assert g.maps["tos"].attrs["units"] == "degC per observation unit"
    assert g.n_steps.sel(month=1).values.tolist() == [2, 2]
    # land point of zos is NaN, the time mean equals the analytic gain too
    assert np.isnan(g.maps["zos"].sel(lat=0, lon=162)).all()
    g2 = ex.gain_maps(model, res, codec)
    np.testing.assert_allclose(_at_points(g2.maps, codec), K_phys.T, atol=1e-8)
    np.testing.assert_allclose(g2.latent_gain.values, (K_phys.T @ np.linalg.pinv(codec.W)), atol=1e-8)


class QuadraticCodec(LinearCodec):
    """Nonlinear codec ``x = zW + 0.2 (zW)^2``: Jacobian ``diag(1 + 0.4 zW) W^T``."""

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        x = z @ torch.as_tensor(self.W, dtype=z.dtype)
        return x + 0.2 * x**2


def test_kalman_gain_nonlinear_codec_uses_jacobian_at_forecast_mean(steady):
    model, y, _, _ = steady
    A, Q, H, R, Pf, Pa, K = _steady_problem()
    codec = QuadraticCodec(4)
    y2 = torch.stack([y, 0.5 * y])  # a batch of two runs is pooled
    res = assimilate(model, y2, method="kalman")
    g = ex.gain_maps(model, res, codec)
    mean = res.filtered_mean.numpy()
    prev = np.concatenate([np.zeros((2, 1, 4)), mean[:, :-1]], axis=1)
    xf = (prev @ A.T) @ codec.W  # decoded-linear part at the forecast mean, (2, T, n)
    expect = ((1.0 + 0.4 * xf)[..., None] * (codec.W.T @ K)).mean((0, 1))  # (n, m)
    np.testing.assert_allclose(_at_points(g.maps, codec), expect.T, atol=1e-8)
    assert g.n_steps.values.tolist() == [48, 48]


def test_kalman_gain_skips_missing_observations(steady):
    model, y, codec, K_phys = steady
    y = y.clone()
    y[5:9, 1] = float("nan")
    res = assimilate(model, y, method="kalman")
    g = ex.gain_maps(model, res, codec)
    assert g.n_steps.values.tolist() == [24, 20]
    # with missing steps the prior covariance leaves steady state; the gain column of index 1
    # averages only observed steps and stays close to (but not equal to) the steady gain
    got = _at_points(g.maps, codec)
    assert np.abs(got - K_phys.T).max() < 0.5 * np.abs(K_phys).max()
    assert not np.allclose(got, K_phys.T, atol=1e-8)


def test_ensemble_gain_map_matches_analytic(steady):
    model, y, codec, K_phys = steady
    res = assimilate(model, y[:10], method="enkf", members=2000, seed=4)
    g = ex.gain_maps(model, res, codec, generator=torch.Generator().manual_seed(7))
    assert g.method == "ensemble" and g.members == 2000
    got = _at_points(g.maps, codec)
    err = np.abs(got - K_phys.T).max() / np.abs(K_phys).max()
    assert err < 0.03, err
    # the test can fail: a 20-member ensemble is far less accurate
    small = assimilate(model, y[:10], method="enkf", members=20, seed=4)
    g_small = ex.gain_maps(model, small, codec, generator=torch.Generator().manual_seed(7))
    assert np.abs(_at_points(g_small.maps, codec) - K_phys.T).max() / np.abs(K_phys).max() > err


def test_forecast_ensemble_shape_and_given_forecast(steady):
    model, y, codec, K_phys = steady
    res = assimilate(model, y[:6], method="enkf", members=50, seed=1)
    fc = ex.forecast_ensemble(model, res, generator=torch.Generator().manual_seed(0))
    assert fc.shape == res.filtered_ensemble.shape
    # forecast members are A z^a_{t-1} + noise: residual covariance ~ Q
    resid = fc[1:] - res.filtered_ensemble[:-1] @ model.A.mT
    assert torch.allclose(resid.reshape(-1, 4).T.cov(), model.Q, atol=0.1)
    g1 = ex.gain_maps(model, res, codec, forecast=fc)
    g2 = ex.gain_maps(model, res, codec, generator=torch.Generator().manual_seed(0))
    xr.testing.assert_allclose(g1.maps, g2.maps)
    with pytest.raises(ShapeMismatchError, match="forecast"):
        ex.gain_maps(model, res, codec, forecast=fc[:-1])


def _hand_result(d=5, T=400, seed=0):
    """Increments dominated by a known direction u on top of A z forecasts."""
    rng = np.random.default_rng(seed)
    A = 0.5 * np.eye(d)
    model = LinearGaussianModel(A, 0.1 * np.eye(d), np.ones((1, d)), np.eye(1), np.zeros(d), np.eye(d))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    a = rng.normal(size=T) * 2.0
    noise = rng.normal(size=(T, d)) * 0.05
    z, prev = np.zeros((T, d)), np.zeros(d)
    for t in range(T):
        z[t] = A @ prev + a[t] * u + noise[t]
        prev = z[t]
    res = AssimilationResult("kalman", torch.as_tensor(z), torch.zeros(()))
    return model, res, u, a[:, None] * u + noise


def test_latent_increments_shares_and_dominant_direction():
    model, res, u, delta = _hand_result()
    codec = LinearCodec(5, seed=2)
    inc = ex.latent_increments(model, res, codec, n_modes=5)
    np.testing.assert_allclose(inc.increments.values, delta, atol=1e-12)
    assert inc.component_share.sum() == pytest.approx(1.0, abs=1e-12)
    assert inc.direction_share.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(inc.component_share.values, (delta**2).mean(0) / (delta**2).sum(1).mean(), rtol=1e-10)
    assert inc.direction_share.values[0] > 0.99
    assert abs(inc.directions.sel(mode=1).values @ u) > 0.999
    # decoded map of direction 1 = sqrt(lambda_1) W^T e_1
    lam1 = inc.direction_share.values[0] * (delta**2).sum(1).mean()
    expect = np.sqrt(lam1) * inc.directions.sel(mode=1).values @ codec.W
    np.testing.assert_allclose(_at_points(inc.maps, codec)[0], expect, atol=1e-10)
    assert inc.maps["tos"].dims == ("mode", "lat", "lon")
    with pytest.raises(BayesBridgeError, match="n_modes"):
        ex.latent_increments(model, res, n_modes=9)


def test_decoded_increments_linear(steady):
    model, res_, u, delta = _hand_result()
    codec = LinearCodec(5)
    time = pd.date_range("1950-01-01", periods=400, freq="MS")
    ds = ex.decoded_increments(model, res_, codec, time=time)
    np.testing.assert_allclose(_at_points(ds, codec), delta @ codec.W, atol=1e-5)
    assert ds["tos"].dtype == np.float32 and ds["tos"].attrs["units"] == "degC"


def _correction(T=60, seed=0):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2000-01-01", periods=T, freq="MS")
    data = rng.normal(size=(T, 3, 4))
    ds = xr.Dataset(
        {"tos": (("time", "lat", "lon"), data, {"units": "degC"})},
        coords={"time": time, "lat": [-2.0, 0.0, 2.0], "lon": [160.0, 170.0, 180.0, 190.0]},
    )
    return ds, data, time


def test_walker_composites_equal_hand_means():
    ds, data, time = _correction()
    walker = xr.DataArray(np.linspace(0, 4, 60)[np.random.default_rng(1).permutation(60)], dims="time", coords={"time": time})
    lab = ex.walker_regimes(walker, threshold=2.0)
    comp = ex.regime_composites(ds, lab, order=["high_I", "low_I"])
    hi = walker.values > 2.0
    np.testing.assert_allclose(comp.composites["tos"].sel(regime="high_I"), data[hi].mean(0))
    np.testing.assert_allclose(comp.composites["tos"].sel(regime="low_I"), data[~hi].mean(0))
    assert comp.counts.values.tolist() == [hi.sum(), (~hi).sum()]
    np.testing.assert_allclose(comp.contrast["tos"], data[hi].mean(0) - data[~hi].mean(0))
    assert comp.composites["tos"].dims == ("regime", "lat", "lon")
    med = ex.walker_regimes(walker, "median")
    assert (med == "high_I").sum() == 30


def test_enso_composites_equal_hand_means():
    ds, data, time = _correction()
    events = pd.DataFrame({"label": ["ep", "extreme_ep", "cp", "la_nina"]}, index=pd.Index([2000, 2001, 2002, 2003], name="year"))
    lab = ex.enso_regimes(events, time)
    ep_months = [(2000, 12), (2001, 1), (2001, 2), (2001, 12), (2002, 1), (2002, 2)]
    cp_months = [(2002, 12), (2003, 1), (2003, 2)]
    key = list(zip(time.year, time.month, strict=True))
    ep_sel = np.array([k in ep_months for k in key])
    cp_sel = np.array([k in cp_months for k in key])
    comp = ex.regime_composites(ds, lab, order=["ep", "cp"])
    np.testing.assert_allclose(comp.composites["tos"].sel(regime="ep"), data[ep_sel].mean(0))
    np.testing.assert_allclose(comp.composites["tos"].sel(regime="cp"), data[cp_sel].mean(0))
    assert comp.counts.values.tolist() == [6, 3]
    no_ext = ex.enso_regimes(events, time, extreme_as_ep=False)
    assert (no_ext == "ep").sum() == 3


def test_enso_regimes_from_classify_events():
    time = pd.date_range("2000-01-01", periods=36, freq="MS")
    n3 = np.zeros(36)
    n4 = np.zeros(36)
    n3[11:14] = 1.5  # DJF 2000/01: EP
    n4[23:26] = 1.2  # DJF 2001/02: CP
    da = lambda x: xr.DataArray(x, dims="time", coords={"time": time})  # noqa: E731
    events = classify_events(da(n3), da(n4))
    lab = ex.enso_regimes(events, time)
    assert list(lab.values[11:14]) == ["ep"] * 3 and list(lab.values[23:26]) == ["cp"] * 3
    assert (lab != "").sum() == 6


def test_bad_input_raises_clear_errors(steady):
    ds, data, time = _correction()
    walker = xr.DataArray(np.arange(60.0) % 4, dims="time", coords={"time": time})
    with pytest.raises(ShapeMismatchError, match="regimes: expected 60"):
        ex.regime_composites(ds, ex.walker_regimes(walker[:50]))
    with pytest.raises(InputValueError, match="threshold.*'median', 'mean'"):
        ex.walker_regimes(walker, threshold="mode")
    with pytest.raises(InputValueError, match="no time step"):
        ex.regime_composites(ds, ex.walker_regimes(walker), order=["high_I", "ep"])
    with pytest.raises(InputValueError, match="valid labels"):
        ex.enso_regimes(pd.DataFrame({"label": ["ep"]}, index=[2000]), time, include=["el_nino"])
    shifted = walker.assign_coords(time=pd.date_range("1990-01-01", periods=60, freq="MS"))
    with pytest.raises(TimeAxisError):
        ex.regime_composites(ds, ex.walker_regimes(shifted))
    model, y, codec, _ = steady
    res = assimilate(model, y, method="kalman")
    with pytest.raises(ShapeMismatchError, match="time: expected 24"):
        ex.gain_maps(model, res, codec, time=time)
    with pytest.raises(InputValueError, match="by_month"):
        ex.gain_maps(model, res, codec, by_month=True)
    with pytest.raises(InputValueError, match="method"):
        ex.gain_maps(model, res, codec, method="exact")
    with pytest.raises(InputValueError, match="filtered_ensemble"):
        ex.gain_maps(model, res, codec, method="ensemble")


def test_figures(steady):
    model, y, codec, _ = steady
    res = assimilate(model, y, method="kalman")
    g = ex.gain_maps(model, res, codec, index_names=["nino3", "nino4"])
    fig = ep.plot_gain_maps(g)
    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(maps) == 4
    assert maps[-1].get_xlabel() == "longitude (°E)" and maps[0].get_ylabel() == "latitude (°N)"
    cbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert {cb.get_ylabel() for cb in cbars} == {"degC per observation unit", "m per observation unit"}
    norm = maps[0].collections[0].norm
    assert norm.vcenter == 0 and norm.vmin == -norm.vmax
    model2, res2, _, _ = _hand_result()
    inc = ex.latent_increments(model2, res2, LinearCodec(5), n_modes=2)
    assert len([a for a in ep.plot_increment_maps(inc).axes if a.get_label() != "<colorbar>"]) == 4
    assert len(ep.plot_increment_shares(inc).axes) == 2
    ds, _, time = _correction()
    comp = ex.regime_composites(ds, ex.walker_regimes(xr.DataArray(np.arange(60.0) % 4, dims="time", coords={"time": time})))
    fig3 = ep.plot_regime_composites(comp)
    titles = [a.get_title() for a in fig3.axes if a.get_label() != "<colorbar>"]
    assert any("n = 30" in t for t in titles) and any("minus" in t for t in titles)


def test_batched_results_keep_runs_and_pool_composites():
    model, res, u, delta = _hand_result(T=120)
    both = AssimilationResult("kalman", torch.stack([res.filtered_mean, 2 * res.filtered_mean]), torch.zeros(2))
    inc = ex.latent_increments(model, both, n_modes=1)
    assert inc.increments.dims == ("run", "time", "latent")
    np.testing.assert_allclose(inc.increments.isel(run=1).values, 2 * delta, atol=1e-12)
    assert abs(inc.directions.sel(mode=1).values @ u) > 0.999
    codec = LinearCodec(5)
    time = pd.date_range("1950-01-01", periods=120, freq="MS")
    ds = ex.decoded_increments(model, both, codec, time=time)
    assert ds["tos"].dims == ("run", "time", "lat", "lon")
    lab = ex.walker_regimes(xr.DataArray(np.arange(120.0) % 4, dims="time", coords={"time": time}), 1.5)
    comp = ex.regime_composites(ds, lab, order=["high_I", "low_I"])
    hi = np.arange(120) % 4 > 1.5
    expect = 1.5 * (delta[hi] @ codec.W).mean(0)  # mean over the two runs (1x and 2x)
    np.testing.assert_allclose(_at_points(comp.composites.sel(regime="high_I"), codec), expect, atol=1e-5)
    assert comp.counts.sel(regime="high_I") == hi.sum()


@pytest.mark.parametrize("method", ["svi"])
@pytest.mark.parametrize("profile", [False, True])
def test_engines_without_a_filter_ensemble_are_explained_with_the_filter_of_the_same_model(method, profile):
    # the demo's explanation step used to fail for svi, whose result holds no filter, and then
    # again for a profile observable (eq_sst: one row per longitude, not one series per name)
    from bayesbridge.apps.explanation import explain_assimilation
    from bayesbridge.apps.reanalysis import default_operational
    from bayesbridge.bridge import Bridge, BridgeConfig
    from bayesbridge.datasets import make_twin_experiment
    from bayesbridge.idealized.eq_sst import profile_observation

    twin = make_twin_experiment(years=10, seed=3)
    ops = default_operational(years=20)
    obs = twin.idealized_observations
    names, operators, data = ["nino3", "nino4", "h_w"], [], obs[["nino3", "nino4", "h_w"]]
    if profile:
        prof = profile_observation(obs, ops["lon"].values, assimilated=[*names, "eq_sst"], climatology=True,
                                   fields=ops)
        names, operators, data = [*names, "eq_sst"], [prof.operator], prof.observations
    options = {"svi": {"method_options": {"steps": 50}}}[method]
    results = {}
    for m in (method, "kalman"):
        b = Bridge(BridgeConfig(latent_dim=6, members=20, method=m, **(options if m == method else {}))).fit(ops, seed=0)
        res = b.assimilate(data, names, seed=0, operators=operators)
        assert res.y.shape == (obs.sizes["time"], len(res.model.obs_names))
        results[m] = explain_assimilation(res, b.codec, obs, seed=0)
    gains, exact = results[method].gains, results["kalman"].gains
    for name in gains.maps.data_vars:
        np.testing.assert_allclose(gains.maps[name].values, exact.maps[name].values, rtol=1e-6, atol=1e-9)
