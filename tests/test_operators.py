"""Observation operators against hand-computed functionals, a profile assimilation against the
exact Kalman smoother, the equatorial SST regression, and the operators' bad-input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from lg_oracle import kalman_oracle
from synthetic_fields import make_synthetic_fields

from bayesbridge import errors, regions
from bayesbridge.idealized.eq_sst import (
    equatorial_sst_from_indices,
    equatorial_sst_operator,
    regression_coefficients,
    regression_residual,
    with_equatorial_sst,
)
from bayesbridge.operators import (
    BoxOperator,
    ContrastOperator,
    LinearOperator,
    PointOperator,
    ProfileOperator,
)

LAT = np.array([-6.0, -2.0, 2.0, 6.0])
LON = np.array([180.0, 190.0, 200.0, 210.0, 220.0])
COS = np.cos(np.deg2rad(LAT))


@pytest.fixture(scope="module")
def grid():
    """A 4 x 5 field with one land point at (2N, 200E)."""
    x = np.random.default_rng(0).normal(size=(LAT.size, LON.size))
    x[2, 2] = np.nan
    return xr.DataArray(x, dims=("lat", "lon"), coords={"lat": LAT, "lon": LON}, name="tos")


def _x(grid, la, lo):
    return float(grid.sel(lat=la, lon=lo))


def test_box_is_the_cos_weighted_mean_of_its_ocean_points(grid):
    op = BoxOperator("b", region=(-4.0, 4.0, 185.0, 215.0), scale=2.0)
    num = den = 0.0
    for la in (-2.0, 2.0):
        for lo in (190.0, 200.0, 210.0):
            if (la, lo) != (2.0, 200.0):  # land
                num += np.cos(np.deg2rad(la)) * _x(grid, la, lo)
                den += np.cos(np.deg2rad(la))
    assert float(op.apply(grid)) == pytest.approx(2.0 * num / den, rel=1e-12)


def test_points_nearest_and_bilinear(grid):
    near = PointOperator("p", lats=(0.5, -5.0), lons=(193.0, -141.0))  # -141E = 219E
    np.testing.assert_allclose(near.apply(grid).values, [_x(grid, 2.0, 190.0), _x(grid, -6.0, 220.0)])
    bil = PointOperator("p", lats=(0.0, -4.0), lons=(195.0, 182.5), method="bilinear")
    # (0N, 195E): four equal corners, the land one dropped and the other three renormalised
    first = np.mean([_x(grid, -2.0, 190.0), _x(grid, -2.0, 200.0), _x(grid, 2.0, 190.0)])
    second = (0.5 * 0.75 * _x(grid, -6.0, 180.0) + 0.5 * 0.25 * _x(grid, -6.0, 190.0)
              + 0.5 * 0.75 * _x(grid, -2.0, 180.0) + 0.5 * 0.25 * _x(grid, -2.0, 190.0))
    np.testing.assert_allclose(bil.apply(grid).values, [first, second], rtol=1e-12)
    assert bil.apply(grid).dims == ("point",)


def test_zonal_and_meridional_profiles(grid):
    zonal = ProfileOperator("z", at=(195.0, 210.0), band=(-4.0, 4.0))
    col = {lo: (COS[1] * _x(grid, -2.0, lo) + COS[2] * _x(grid, 2.0, lo)) / (COS[1] + COS[2]) for lo in (190.0, 210.0)}
    col[200.0] = _x(grid, -2.0, 200.0)  # its 2N point is land
    got = zonal.apply(grid)
    np.testing.assert_allclose(got.values, [0.5 * col[190.0] + 0.5 * col[200.0], col[210.0]], rtol=1e-12)
    assert got.dims == ("lon",) and list(got["lon"].values) == [195.0, 210.0]
    merid = ProfileOperator("m", at=(0.0,), band=(185.0, 205.0), along="lat")
    row_s = 0.5 * (_x(grid, -2.0, 190.0) + _x(grid, -2.0, 200.0))
    row_n = _x(grid, 2.0, 190.0)
    np.testing.assert_allclose(merid.apply(grid).values, [0.5 * row_s + 0.5 * row_n], rtol=1e-12)


def test_linear_and_contrast_operators(grid):
    w = xr.DataArray(np.random.default_rng(1).normal(size=grid.shape), dims=("lat", "lon"), coords=grid.coords)
    w = w.where(grid.notnull(), 0.0)
    lin = LinearOperator("l", weights=w)
    assert float(lin.apply(grid)) == pytest.approx(float((w * grid.fillna(0.0)).sum()), rel=1e-12)
    prof = ProfileOperator("z", at=(210.0,), band=(-4.0, 4.0))
    box = BoxOperator("b", region=(-4.0, 4.0, 185.0, 215.0))
    con = ContrastOperator("c", base=prof, parts=(box,), coef=np.array([[0.3]]), part_names=("b",))
    assert float(con.apply(grid)[0]) == pytest.approx(float(prof.apply(grid)[0]) - 0.3 * float(box.apply(grid)), rel=1e-12)
    np.testing.assert_allclose(con.observed(np.array([[1.0]]), [np.array([2.0])]), [[1.0 - 0.6]])


def test_rows_on_stacked_points_equal_the_gridded_functional(grid):
    ocean = grid.stack(point=("lat", "lon")).dropna("point")
    points = pd.MultiIndex.from_arrays(
        [np.full(ocean.sizes["point"], "tos"), ocean["lat"].values, ocean["lon"].values], names=("variable", "lat", "lon"))
    ops = [BoxOperator("b", region=(-4.0, 4.0, 185.0, 215.0), scale=3.0),
           PointOperator("p", lats=(0.0,), lons=(195.0,), method="bilinear"),
           ProfileOperator("z", at=(185.0, 195.0), band=(-4.0, 4.0))]
    for op in ops:
        np.testing.assert_allclose(ocean.values @ op.rows(points).T, np.atleast_1d(op.apply(grid).values), rtol=1e-12)


def test_equatorial_regression_profile_and_error():
    lon = np.array([150.0, 200.0, 250.0])
    be, bc = regression_coefficients(lon)
    n3 = xr.DataArray([1.0, -0.5], dims="time")
    n4 = xr.DataArray([0.2, 0.4], dims="time")
    prof = equatorial_sst_from_indices(n3, n4, lon)
    np.testing.assert_allclose(prof.values, np.outer(n3, be) + np.outer(n4, bc))
    # the bundled 1-degree coefficients at 250E (the file holds 249.5 and 250.5): their mean
    from bayesbridge.datasets.observed import equatorial_regression

    c = equatorial_regression().sel(lon=[249.5, 250.5])
    assert be[2] == pytest.approx(float(c["b_e"].mean()), rel=1e-6)
    lons = np.arange(120.0, 281.0, 10.0)
    res = regression_residual(lons)
    assert res.n_in_box == 6 and 0.0 < res.box_std < 0.5
    np.testing.assert_allclose(res.per_longitude, res.box_std * np.sqrt(6))
    # independent rows by correlation: the same; identical rows: box mean error sigma, inflated by sqrt(k / 1)
    np.testing.assert_allclose(regression_residual(lons, np.eye(17)).per_longitude, res.box_std * np.sqrt(6))
    same = regression_residual(lons, np.ones((17, 17)))
    assert same.effective_rows == pytest.approx(1.0)
    np.testing.assert_allclose(same.per_longitude, res.box_std * np.sqrt(17))
    with pytest.raises(errors.BayesBridgeError, match="correlation"):
        regression_residual(lons, np.eye(3))
    # the run's profile uses anomalies to its own monthly climatology
    time = pd.date_range("2000-01-01", periods=24, freq="MS")
    run = xr.Dataset({k: ("time", np.random.default_rng(i).normal(size=24) + 5.0) for i, k in enumerate(("nino3", "nino4"))},
                     coords={"time": time})
    out = with_equatorial_sst(run, lon)["eq_sst"]
    a3 = run["nino3"].values - np.tile(run["nino3"].values.reshape(2, 12).mean(0), 2)
    a4 = run["nino4"].values - np.tile(run["nino4"].values.reshape(2, 12).mean(0), 2)
    np.testing.assert_allclose(out.values, np.outer(a3, be) + np.outer(a4, bc), atol=1e-12)


@pytest.fixture(scope="module")
def synthetic_bridge():
    from bayesbridge.bridge import Bridge, BridgeConfig

    fields = make_synthetic_fields(n_years=8, seed=2).fields
    cfg = BridgeConfig(latent_dim=4, dynamics="linear", method="kalman", members=10, representation_error=False)
    return fields, Bridge(cfg).fit(fields, seed=0)


def _assert_exact_kalman(bridge, out, y):
    """``out`` (a Kalman assimilation) against the numpy oracle with ``y - c = H z + e``, where the
    functional ``c + H z`` of each row is obtained by decoding the basis and applying the gridded
    operators (``y``: callable from a decoded ``tos`` field to the rows ``(sample, m)``)."""
    model, d = out.model, bridge.codec.latent_dim
    A = model.transition_mean(torch.eye(d, dtype=torch.float64)).numpy().T
    Q = model.transition_cov(0).numpy()
    m0, P0 = (v.numpy() for v in model.initial())
    rows = y(bridge.codec.decode(np.vstack([np.zeros((1, d)), np.eye(d)]))["tos"])
    c, H = rows[0], (rows[1:] - rows[0]).T
    R = np.diag(model.obs_scale.numpy() ** 2)
    _, _, ms, Ps, _ = kalman_oracle(A, Q, H, R, m0, P0, out.observed_rows - c)
    np.testing.assert_allclose(out.result.smoothed_mean.numpy(), ms, atol=1e-6)
    np.testing.assert_allclose(out.result.smoothed_cov.numpy(), Ps, atol=1e-6)


def test_profile_assimilation_is_the_exact_kalman_smoother(synthetic_bridge):
    fields, bridge = synthetic_bridge
    op = equatorial_sst_operator(np.arange(150.0, 271.0, 30.0), shape_only=False)
    sst = fields["tos"].isel(time=slice(0, 36))
    rng = np.random.default_rng(3)
    profile = op.apply(sst) + 0.1 * rng.normal(size=(36, 5))
    nino3 = regions.box_index(sst, "nino3") + 0.1 * rng.normal(size=36)
    obs = xr.Dataset({"nino3": nino3.drop_vars(["area", "mask"], errors="ignore"), "eq_sst": profile})
    obs["eq_sst"][5, 2] = np.nan  # a missing row is dropped, as in the oracle
    out = bridge.assimilate(obs, ["nino3", "eq_sst"], seed=0, operators=[op])
    out.observed_rows = np.concatenate([obs["nino3"].values[:, None], obs["eq_sst"].values], axis=1)
    _assert_exact_kalman(bridge, out, lambda f: np.concatenate(
        [regions.box_index(f, "nino3").values[:, None], op.apply(f).values], axis=1))
    # each profile row's error: the regression floor (+) the codec residual under that row
    assert np.all(out.obs_error.values[1:] >= op.floors() - 1e-12)
    assert list(out.obs_error.index) == ["nino3", *[f"eq_sst[{v:g}]" for v in op.row_coord]]


def test_point_and_custom_box_assimilation_is_the_exact_kalman_smoother(synthetic_bridge):
    fields, bridge = synthetic_bridge
    moor = PointOperator("moorings", lats=(0.0, 2.0), lons=(220.0, 250.0), method="bilinear", error_floor=0.1)
    box = BoxOperator("mybox", region=(-2.0, 2.0, 200.0, 220.0))
    sst = fields["tos"].isel(time=slice(0, 24))
    noise = 0.1 * np.random.default_rng(6).normal(size=(24, 3))
    obs = xr.Dataset({"moorings": moor.apply(sst) + noise[:, :2], "mybox": box.apply(sst) + noise[:, 2]})
    obs["nino3"] = regions.box_index(sst, "nino3").drop_vars(["area", "mask"], errors="ignore")
    out = bridge.assimilate(obs, ["mybox", "moorings"], seed=0, operators=[moor, box])
    assert list(out.obs_error.index) == ["mybox", "moorings[0]", "moorings[1]"]
    out.observed_rows = np.concatenate([obs["mybox"].values[:, None], obs["moorings"].values], axis=1)
    _assert_exact_kalman(bridge, out, lambda f: np.concatenate([box.apply(f).values[:, None], moor.apply(f).values],
                                                               axis=1))


# ---------------------------------------------------------------- bad input
def test_operator_outside_the_grid_names_the_extent(grid):
    with pytest.raises(errors.GridCoverageError, match=r"lat -6\.\.6, lon 180\.\.220"):
        PointOperator("mooring", lats=(0.0,), lons=(140.0,)).apply(grid)
    with pytest.raises(errors.GridCoverageError, match=r"lon 180\.\.220"):
        ProfileOperator("z", at=(250.0,)).apply(grid)
    with pytest.raises(errors.BayesBridgeError):
        BoxOperator("b", region=(20.0, 30.0, 185.0, 215.0)).apply(grid)


def test_profile_longitude_outside_the_regression_range():
    with pytest.raises(errors.GridCoverageError, match=r"100.*119\.5E\.\.288\.5E"):
        equatorial_sst_operator([100.0, 150.0])


def test_empty_point_list_is_refused():
    with pytest.raises(errors.BayesBridgeError, match="at least one position"):
        PointOperator("p", lats=(), lons=())
    with pytest.raises(errors.BayesBridgeError, match="2 latitudes and 1 longitudes"):
        PointOperator("p", lats=(0.0, 1.0), lons=(190.0,))
    with pytest.raises(errors.BayesBridgeError, match="method"):
        PointOperator("p", lats=(0.0,), lons=(190.0,), method="cubic")


def test_profile_observation_is_derived_from_the_indices():
    from bayesbridge.idealized.eq_sst import profile_observation

    time = pd.date_range("2000-01-01", periods=6, freq="MS")
    rng = np.random.default_rng(4)
    obs = xr.Dataset({k: ("time", rng.normal(size=6)) for k in ("nino3", "nino4")}, coords={"time": time})
    got = profile_observation(obs, np.arange(150.0, 251.0, 2.0))
    lon = np.arange(190.0, 241.0, 10.0)  # observed indices: the span where the residual is measured
    be, bc = regression_coefficients(lon)
    np.testing.assert_allclose(got.observations["eq_sst"].values, np.outer(obs["nino3"], be) + np.outer(obs["nino4"], bc))
    assert got.derived and isinstance(got.operator, ContrastOperator)
    # a derived profile is exactly on the regression: its shape rows are zero
    shape = got.operator.observed(got.observations["eq_sst"].values, got.operator.part_values(obs))
    np.testing.assert_allclose(shape, 0.0, atol=1e-12)
    alone = profile_observation(obs, np.arange(150.0, 251.0, 2.0), assimilated=("nino3",))
    assert isinstance(alone.operator, ProfileOperator)
    with pytest.raises(errors.VariableNotFoundError, match="nino4 is missing"):
        profile_observation(obs[["nino3"]], lon)


def test_statistical_twin_demo_assimilates_an_independent_run_with_its_profile(tmp_path, monkeypatch):
    import json

    import bayesbridge.apps.demo as demo
    from bayesbridge.apps.demo import DemoConfig, run_demo
    from bayesbridge.apps.explanation import Explanation
    from bayesbridge.datasets.twin import independent_idealized_run

    # figures are tested elsewhere; leaving them out keeps this test to the assimilation
    monkeypatch.setattr(demo, "report_figure_jobs", lambda *args, **kwargs: {})
    monkeypatch.setattr(Explanation, "figure_jobs", lambda self: {})

    cfg = DemoConfig(quick=True, years=10, members=10, latent_dim=6, stat_draws=2, cache_dir=str(tmp_path / "c"),
                     twin="statistical")
    result = run_demo(tmp_path / "out", cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["twin.synchronized"] == 0.0
    assert not any(k.startswith("twin.uq.") for k in metrics)  # no month-by-month scores
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**statistical**" in report and "historical record" in report
    # the assimilated run is the independent one, not the run that drives the truth
    run = independent_idealized_run(result.twin, 0)
    observed = result.bridge_result.observations
    np.testing.assert_allclose(observed["nino3"].values, run["nino3"].values)
    assert abs(np.corrcoef(run["nino3"], result.twin.idealized_observations["nino3"])[0, 1]) < 0.3
    post = xr.open_dataset(tmp_path / "out" / "posterior.nc")
    assert post["eq_sst_obs"].dims == ("time", "eq_sst_lon")
    assert list(result.bridge_result.obs_error.index[-2:]) == ["eq_sst[270]", "eq_sst[280]"]
    with pytest.raises(errors.BayesBridgeError, match="twin"):
        DemoConfig(twin="both")


def test_gain_figure_sums_the_rows_of_a_profile():
    from bayesbridge.plots.explain import _profiles_summed

    rng = np.random.default_rng(5)
    names = ["nino3", "eq_sst[150]", "eq_sst[160]"]
    tos = xr.DataArray(rng.normal(size=(3, 2, 2)), dims=("index", "lat", "lon"), coords={"index": names})
    tos[:, 0, 0] = np.nan  # land
    out, labels = _profiles_summed(xr.Dataset({"tos": tos}))
    assert list(out["index"].values) == ["nino3", "eq_sst"] and "profile" in labels[1]
    np.testing.assert_allclose(out["tos"].sel(index="eq_sst").values[1:, :].ravel(),
                               (tos[1] + tos[2]).values[1:, :].ravel())
    assert np.isnan(out["tos"].sel(index="eq_sst").values[0, 0])


def test_reconstruct_assimilates_eq_sst_derived_from_the_indices():
    from bayesbridge.apps.reanalysis import default_operational, reconstruct
    from bayesbridge.bridge import BridgeConfig
    from bayesbridge.datasets import observed_indices

    obs = observed_indices().sel(time=slice("1990-01", "1999-12"))
    fields = default_operational(years=20)
    cfg = BridgeConfig(latent_dim=6, members=20)
    rec = reconstruct(obs, ["nino3", "nino4", "eq_sst"], operational=fields, config=cfg, seed=1)
    res = rec.bridge_result
    rows = [k for k in res.obs_error.index if k.startswith("eq_sst[")]
    assert len(rows) == 6  # 190E..240E every 10 degrees: where the regression residual is measured
    # floor: the measured residual with the operational shape's row correlation (+) representation error
    from bayesbridge.idealized.eq_sst import profile_observation

    floor = profile_observation(obs, fields["lon"].values, fields=fields).operator.floors()
    assert np.all(res.obs_error[rows].values >= floor - 1e-12)
    assert np.all(floor > 0.5 * regression_residual(np.arange(190.0, 241.0, 10.0)).per_longitude)
    # derived from the indices, the profile is on the regression: its shape rows are observed as 0
    assert res.observations["eq_sst"].dims == ("time", "eq_sst_lon")
    assert "eq_sst" not in rec.validation.index and rec.validation.loc["nino34", "correlation"] > 0.9
    with pytest.raises(errors.VariableNotFoundError, match="nino4 is missing"):
        reconstruct(obs[["nino3"]], ["nino3", "eq_sst"], operational=fields, config=cfg)


def test_equatorial_section_and_hovmoller(grid):
    from bayesbridge.apps.report import equatorial_section
    from bayesbridge.plots.report import plot_equatorial_hovmoller

    time = pd.date_range("2000-01-01", periods=3, freq="MS")
    sst = xr.concat([grid * (k + 1) for k in range(3)], dim=xr.DataArray(time, dims="time", name="time"))
    sec = equatorial_section(sst)  # 5S-5N: the -2 and 2 rows
    want = (COS[1] * grid.sel(lat=-2.0) + COS[2] * grid.sel(lat=2.0)) / (COS[1] + COS[2])
    want = want.where(grid.sel(lat=2.0).notnull(), grid.sel(lat=-2.0))  # land at (2N, 200E)
    np.testing.assert_allclose(sec.isel(time=1).values, 2 * want.values, rtol=1e-12)
    fig = plot_equatorial_hovmoller({"truth": sec, "bridged": sec * 0.5})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["truth", "bridged"]
