"""The equatorial regression fitted to a gridded record (quadratic EP term, measured residual), the
twin world's historical record, and the representation error measured on a record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from synthetic_fields import make_synthetic_fields

from bayesbridge import errors
from bayesbridge.idealized.eq_sst import (
    equatorial_sst_from_indices,
    equatorial_sst_operator,
    quadratic_coefficient,
    regression_coefficients,
    regression_residual,
)
from bayesbridge.idealized.regression import (
    MIN_MONTHS,
    fit_equatorial_regression,
    quadratic_anomaly,
)
from bayesbridge.operators import BoxOperator

WEST = np.array([120.0, 130.0, 140.0])  # outside Nino 3 (210-270E) and Nino 4 (160-210E)
B_E, B_C, B_EE = np.array([0.3, -0.2, 0.5]), np.array([0.8, 0.1, -0.4]), np.array([0.25, 0.0, -0.1])


def _record(n: int = 360, noise: float = 1e-3, seed: int = 0) -> xr.DataArray:
    """Random anomalies inside the boxes; the western columns are the regression of the box means."""
    rng = np.random.default_rng(seed)
    lat, lon = np.array([-4.0, 0.0, 4.0]), np.arange(120.0, 281.0, 10.0)
    time = pd.date_range("1900-01-01", periods=n, freq="MS")
    x = rng.normal(size=(n, lat.size, lon.size))
    da = xr.DataArray(x, dims=("time", "lat", "lon"), coords={"time": time, "lat": lat, "lon": lon}, name="tos")
    te = BoxOperator("nino3", region="nino3").apply(da)
    tc = BoxOperator("nino4", region="nino4").apply(da)
    q = quadratic_anomaly(te)
    west = (B_E[None] * te.values[:, None] + B_C[None] * tc.values[:, None] + B_EE[None] * q.values[:, None]
            + 0.05 + noise * rng.normal(size=(n, WEST.size)))
    x[:, :, : WEST.size] = west[:, None, :]  # constant across the band: the band mean is the value
    return da.copy(data=x)


def test_fit_recovers_the_coefficients_and_the_residual():
    reg = fit_equatorial_regression(_record(noise=0.005), WEST)
    np.testing.assert_allclose(reg["b_e"].values, B_E, atol=0.01)
    np.testing.assert_allclose(reg["b_c"].values, B_C, atol=0.01)
    np.testing.assert_allclose(reg["b_ee"].values, B_EE, atol=0.01)
    np.testing.assert_allclose(reg["b0"].values, 0.05, atol=0.005)
    np.testing.assert_allclose(reg["residual_std"].values, 0.005, rtol=0.15)
    corr = reg["residual_corr"].values
    assert corr.shape == (3, 3) and np.allclose(np.diag(corr), 1.0) and np.abs(corr - np.eye(3)).max() < 0.2
    assert reg.attrs["months"] == 360
    lin = fit_equatorial_regression(_record(noise=0.005), WEST, quadratic=False)
    assert "b_ee" not in lin and lin["residual_std"].values.max() > 3 * reg["residual_std"].values.max()


def test_quadratic_anomaly_has_no_monthly_mean():
    time = pd.date_range("2000-01-01", periods=36, freq="MS")
    n3 = xr.DataArray(np.random.default_rng(1).normal(size=36), dims="time", coords={"time": time})
    q = quadratic_anomaly(n3)
    np.testing.assert_allclose(q.groupby("time.month").mean().values, 0.0, atol=1e-12)
    np.testing.assert_allclose(q.values - n3.values**2, np.tile(-(n3.values**2).reshape(3, 12).mean(0), 3))
    with pytest.raises(errors.BayesBridgeError, match="time"):
        quadratic_anomaly(n3.rename(time="t"))


def test_profile_with_the_quadratic_term_and_its_measured_error():
    reg = fit_equatorial_regression(_record(noise=0.02), WEST)
    time = pd.date_range("2000-01-01", periods=24, freq="MS")
    rng = np.random.default_rng(2)
    n3, n4 = (xr.DataArray(rng.normal(size=24), dims="time", coords={"time": time}) for _ in range(2))
    prof = equatorial_sst_from_indices(n3, n4, WEST, reg)
    be, bc = regression_coefficients(WEST, reg)
    bee = quadratic_coefficient(WEST, reg)
    q = n3.values**2 - np.tile((n3.values**2).reshape(2, 12).mean(0), 2)
    np.testing.assert_allclose(prof.values, np.outer(n3, be) + np.outer(n4, bc) + np.outer(q, bee), atol=1e-12)
    assert np.all(quadratic_coefficient(WEST) == 0.0)  # the bundled regression is linear
    # the measured residual: sigma_k inflated by sqrt(k / k_eff) of its own correlation
    res = regression_residual(WEST, regression=reg)
    C = reg["residual_corr"].values
    k_eff = np.trace(C) ** 2 / np.trace(C @ C)
    np.testing.assert_allclose(res.per_longitude, reg["residual_std"].values * np.sqrt(3 / k_eff))
    assert res.effective_rows == pytest.approx(k_eff) and res.months == 360
    op = equatorial_sst_operator(WEST, regression=reg)
    np.testing.assert_allclose(op.floors(), res.per_longitude)
    np.testing.assert_allclose(op.coef, np.stack([be, bc], axis=1))
    with pytest.raises(errors.BayesBridgeError, match="fitted at those longitudes"):
        regression_residual(np.array([125.0]), regression=reg)


def test_fit_refuses_bad_input():
    rec = _record()
    with pytest.raises(errors.BayesBridgeError, match=f"at least {MIN_MONTHS} months"):
        fit_equatorial_regression(rec.isel(time=slice(0, 60)), WEST)
    with pytest.raises(errors.BayesBridgeError, match="longitudes"):
        fit_equatorial_regression(rec, [])
    with pytest.raises(errors.BayesBridgeError, match=r"\(time, lat, lon\)"):
        fit_equatorial_regression(rec.isel(lat=0), WEST)


def test_historical_record_is_independent_and_precedes_the_twin(tmp_path):
    from bayesbridge.datasets.twin import historical_record, make_twin_experiment

    twin = make_twin_experiment(years=20, seed=4, cache_dir=tmp_path)
    rec = historical_record(twin, 4, years=20)
    again = historical_record(twin, 4, years=20)
    np.testing.assert_array_equal(rec["tos"].values, again["tos"].values)
    assert rec["time"].dt.year.values[0] == 1830 and rec["time"].dt.year.values[-1] == 1849
    truth = twin.anomalies("truth")
    assert rec["tos"].shape == truth["tos"].shape
    box = BoxOperator("nino3", region="nino3")
    r = np.corrcoef(box.apply(rec["tos"]).values, box.apply(truth["tos"]).values)[0, 1]
    assert abs(r) < 0.3
    with pytest.raises(errors.BayesBridgeError, match="before year 1"):
        historical_record(twin, 4, years=1900)


@pytest.fixture(scope="module")
def fitted():
    from bayesbridge.bridge import Bridge, BridgeConfig

    fields = make_synthetic_fields(n_years=8, seed=2).fields
    cfg = BridgeConfig(latent_dim=4, dynamics="linear", method="kalman", members=10)
    return fields, Bridge(cfg).fit(fields, seed=0)


def test_measure_representation_uses_the_record_residual(fitted):
    fields, bridge = fitted
    before = dict(bridge.box_residual_std)
    assert bridge.representation_source == "operational"
    other = make_synthetic_fields(n_years=8, seed=5, noise=0.3).fields
    bridge.measure_representation(other)
    try:
        assert bridge.representation_source == "record"
        resid = other["tos"] - bridge.codec.decode(bridge.codec.encode(other))["tos"]
        box = float(BoxOperator("nino3", region="nino3").apply(resid).std())
        assert bridge.box_residual_std["nino3"] == pytest.approx(box, rel=1e-5)
        assert bridge.box_residual_std["nino3"] > 2 * before["nino3"]  # noisier than the training fields
        assert bridge.residual_points.shape == (other.sizes["time"], len(bridge.codec.points))
        model = bridge.state_space_model(["nino3"], 1)
        assert float(model.obs_scale[0]) == pytest.approx(np.hypot(0.15, box), rel=1e-5)
    finally:
        bridge.measure_representation(fields)  # the training fields give back the fitted residual
    assert bridge.box_residual_std == pytest.approx(before)


def test_measure_representation_refuses_bad_records(fitted):
    fields, bridge = fitted
    with pytest.raises(errors.BayesBridgeError, match="missing"):
        bridge.measure_representation(fields.rename(tos="sst"))
    with pytest.raises(errors.BayesBridgeError, match="at least 24 months"):
        bridge.measure_representation(fields.isel(time=slice(0, 12)))
    with pytest.raises(errors.BayesBridgeError, match="regrid"):
        bridge.measure_representation(fields.isel(lon=slice(0, -1)))
    with pytest.raises(errors.BayesBridgeError, match="Dataset"):
        bridge.measure_representation(fields["tos"])


def test_quadratic_term_fit_orthogonality_and_decoding():
    import torch

    from bayesbridge.bridge.decoding import QuadraticTerm
    from bayesbridge.bridge.representation import fit_quadratic_term

    rng = np.random.default_rng(0)
    n, P = 600, 5
    te = rng.normal(size=n)
    g = np.array([0.5, -0.2, 0.0, 0.1, 0.3])
    resid = (te**2 - (te**2).mean())[:, None] * g + 0.01 * rng.normal(size=(n, P))
    w = np.array([0.5, 0.5, 0.0, 0.0, 0.0])
    term, rest = fit_quadratic_term(resid, te, w)
    np.testing.assert_allclose(term.pattern, g, atol=0.005)
    assert term.offset == pytest.approx((te**2).mean())
    assert np.abs(rest.T @ (te**2 - term.offset)).max() < 1e-3 * n  # nothing left along T_E^2
    # orthogonal to given rows, moved only within their span
    rows = np.array([[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, -1.0]])
    ortho = term.orthogonal_to(rows)
    np.testing.assert_allclose(rows @ ortho.pattern, 0.0, atol=1e-12)
    shift = ortho.pattern - term.pattern
    np.testing.assert_allclose(shift, rows.T @ np.linalg.lstsq(rows.T, shift, rcond=None)[0], atol=1e-12)
    assert term.orthogonal_to([]) is term
    # decoding adds g (T_E^2 - c) with T_E the draw's own weighted mean
    x = torch.as_tensor(rng.normal(size=(3, 2, P)), dtype=torch.float32)
    y = x.clone()
    QuadraticTerm(w, g, 0.4).add_to(y)
    t = (x.double() @ torch.as_tensor(w)).numpy()
    np.testing.assert_allclose(y.numpy() - x.numpy(), (t**2 - 0.4)[..., None] * g, atol=1e-5)
    with pytest.raises(errors.BayesBridgeError, match="shapes"):
        fit_quadratic_term(resid, te[:-1], w)


def test_bridge_quadratic_term_leaves_the_assimilated_box_alone(fitted):
    from bayesbridge.bridge import Bridge, BridgeConfig

    fields, _ = fitted
    cfg = BridgeConfig(latent_dim=4, dynamics="linear", method="kalman", members=10, representation_error=False)
    record = make_synthetic_fields(n_years=8, seed=5, noise=0.3).fields
    plain = Bridge(cfg).fit(fields, seed=0).measure_representation(record)
    quad = Bridge(cfg).fit(fields, seed=0).measure_representation(record, quadratic=True)
    assert plain.quadratic_term is None and quad.quadratic_term is not None
    assert quad.box_residual_std == pytest.approx(plain.box_residual_std)  # observation errors unchanged
    obs = xr.Dataset({"nino3": BoxOperator("nino3", region="nino3").apply(fields["tos"])})
    a = plain.assimilate(obs, ["nino3"], seed=0).posterior
    b = quad.assimilate(obs, ["nino3"], seed=0).posterior
    np.testing.assert_allclose(b.index_draws("nino3").values, a.index_draws("nino3").values, atol=1e-4)
    diff = (b.sample_fields(n_draws=2, seed=1)["tos"] - a.sample_fields(n_draws=2, seed=1)["tos"])
    assert float(np.abs(diff).max()) > 1e-3  # the term changes the fields elsewhere
