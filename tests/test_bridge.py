"""The bridge end to end on a small twin experiment, and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesbridge import errors, io, regions
from bayesbridge.apps.demo import DemoConfig, run_demo
from bayesbridge.apps.scoring import STATS, field_statistics
from bayesbridge.bridge import Bridge, BridgeConfig, observations_from
from bayesbridge.datasets import make_twin_experiment


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin_experiment(years=16, seed=3, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fitted(twin):
    ops = io.open_operational(twin.operational, region=None).load()
    return Bridge(BridgeConfig(latent_dim=10, members=30)).fit(ops)


def test_bridge_tracks_assimilated_and_withheld_indices(twin, fitted):
    out = fitted.assimilate(twin.idealized_observations, ["nino3", "nino4", "h_w"], seed=2)
    summary = out.posterior.summary()
    truth = regions.indices(io.open_operational(twin.truth, region=None).load())
    obs = twin.idealized_observations
    # assimilated indices are followed closely; Nino 3.4 is never observed
    assert np.corrcoef(summary["nino3_mean"], obs["nino3"])[0, 1] > 0.97
    assert np.corrcoef(summary["nino34_mean"], truth["nino34"])[0, 1] > 0.9
    # observation error = floor (+) codec structural error of that box
    floor = fitted.config.obs_error_floor["nino3"]
    assert out.obs_error["nino3"] == pytest.approx(np.hypot(floor, fitted.box_residual_std["nino3"]))
    # the h_w operator is in metres of thermocline: 150 x the zos box mean
    z = out.result.smoothed_mean[0:1]
    hw = out.model.observe(z)[..., 2]
    zos_box = regions.box_index(fitted.codec.decode(z.numpy())["zos"], "h_w")
    assert float(hw.squeeze()) == pytest.approx(150.0 * float(zos_box.squeeze()), rel=1e-4)


def test_representation_noise_has_codec_residual_box_variance(twin, fitted):
    out = fitted.assimilate(twin.idealized_observations, ["nino3", "nino4"], seed=5)
    post = out.posterior
    draws = post.index_draws("nino12").values  # (draw, time)
    # spread across draws = posterior latent spread (+) residual variance of that box
    quiet = Bridge(BridgeConfig(latent_dim=10, members=30, representation_error=False))
    quiet.codec, quiet.dynamics, quiet.latent_train = fitted.codec, fitted.dynamics, fitted.latent_train
    quiet.residual_points, quiet.box_residual_std = fitted.residual_points, fitted.box_residual_std
    base = quiet.assimilate(twin.idealized_observations, ["nino3", "nino4"], seed=5).posterior
    extra = draws.var(0).mean() - base.index_draws("nino12").values.var(0).mean()
    assert extra == pytest.approx(fitted.box_residual_std["nino12"] ** 2, rel=0.35)


def test_observations_from_csv_frame_and_errors(twin):
    frame = twin.idealized_observations[["nino3", "nino4"]].to_dataframe().reset_index()
    ds = observations_from(frame)
    assert list(ds.data_vars) == ["nino3", "nino4"]
    with pytest.raises(errors.VariableNotFoundError, match="known indices are nino12, nino3"):
        observations_from(twin.idealized_observations, ["nino3", "sst"])
    gap = twin.idealized_observations.isel(time=[0, 1, 3])
    with pytest.raises(errors.TimeAxisError, match="consecutive monthly"):
        observations_from(gap, ["nino3"])


def test_operational_without_thermocline_cannot_observe_h_w(twin):
    ops = io.open_operational(twin.operational, variables="tos", region=None).load()
    bridge = Bridge(latent_dim=6, members=10).fit(ops)
    assert "h_w" not in bridge.observables
    with pytest.raises(errors.VariableNotFoundError, match="needs variable zos"):
        bridge.assimilate(twin.idealized_observations, ["nino3", "h_w"])


def test_config_validation():
    with pytest.raises(errors.ParameterError, match="expected one of 'eof', 'autoencoder', 'vae'"):
        BridgeConfig(codec="pca")
    with pytest.raises(errors.ParameterError, match="method"):
        BridgeConfig(method="3dvar")
    with pytest.raises(errors.NotFittedError):
        Bridge().assimilate(xr.Dataset())


def test_field_statistics_against_scipy():
    from scipy import stats

    x = np.random.default_rng(0).gamma(2.0, size=(300, 3, 4))
    x[:, 0, 0] = np.nan
    da = xr.DataArray(x, dims=("time", "lat", "lon"), coords={"lat": [0.0, 1, 2], "lon": [0.0, 1, 2, 3]})
    m = field_statistics(da)
    np.testing.assert_allclose(m["skew"].values[1:], stats.skew(x[:, 1:], axis=0), rtol=1e-12)
    np.testing.assert_allclose(m["std"].values[1:], x[:, 1:].std(0), rtol=1e-12)
    assert np.isnan(m["skew"].values[0, 0])


def test_demo_quick_cli_writes_contract_outputs(tmp_path):
    """``bayesbridge demo --quick`` (the README's main command, small) honours the output contract."""
    from typer.testing import CliRunner

    from bayesbridge.cli import app

    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--seed", "4"], terminal_width=200)
    assert run.exit_code == 0, run.output
    twin = make_twin_experiment(years=DemoConfig(quick=True).years, seed=4)
    metrics = json.loads((out / "metrics.json").read_text())
    for stat in STATS:
        for src in ("truth", "operational", "bridged"):
            assert isinstance(metrics[f"twin.{stat}.{src}"], float)
    for key in ("crps", "coverage90", "spread_skill"):
        assert np.isfinite(metrics[f"twin.uq.{key}"])
    for stat in ("std", "skew"):
        assert metrics[f"twin.map_rmse.{stat}.operational"] > 0
        # structural bound: operational patterns driven by the truth's indices, recomputed here
        assert metrics[f"twin.map_rmse.{stat}.pattern_bound"] == pytest.approx(
            _pattern_bound_oracle(twin, seed=4)[stat], rel=1e-4)
    assert not any(k.startswith("twin.param_uq.") for k in metrics)  # K = 0 by default
    assert any(k.startswith("timing.") for k in metrics)
    # the truth statistics are those of the truth's own Nino 3 box
    truth = regions.indices(io.open_operational(twin.truth, region=None).load())
    from scipy import stats

    assert metrics["twin.nino3_skew.truth"] == pytest.approx(stats.skew(truth["nino3"].values))
    post = xr.open_dataset(out / "posterior.nc")
    for var in ("tos", "zos"):
        for s in ("mean", "std", "q05", "q50", "q95"):
            assert post[f"{var}_{s}"].dims == ("time", "lat", "lon")
            assert "units" in post[f"{var}_{s}"].attrs
    for box in ("nino12", "nino3", "nino34", "nino4", "h_w"):
        for s in ("mean", "q05", "q95"):
            assert post[f"{box}_{s}"].dims == ("time",)
    # h_w coverage: the truth's thermocline index inside the posterior's 5-95 % band
    inside = ((truth["h_w"].values >= post["h_w_q05"].values) & (truth["h_w"].values <= post["h_w_q95"].values)).mean()
    assert metrics["twin.uq.coverage90_h_w"] == pytest.approx(inside, abs=0.02)
    post.close()
    assert (out / "inference_data.nc").exists() and (out / "report.md").exists()
    assert len(list((out / "figures").glob("*.png"))) >= 5
    assert not list(out.glob(".bayesbridge-staging-*"))


def _pattern_bound_oracle(twin, seed):
    """Independent recomputation of ``twin.map_rmse.{std,skew}.pattern_bound`` in numpy/scipy."""
    from scipy import stats

    from bayesbridge.datasets import twin as tw

    drivers = {v: twin.truth_driver[v].values for v in ("nino3", "nino4", "h_w")}
    rng = np.random.default_rng([seed, 9])  # the oracle's documented noise stream
    oracle = tw.assemble_fields(drivers, rng, 1850, tw.COLD_TONGUE_SHIFT_DEG, 0.0)["tos"].values.astype(float)
    truth = twin.truth["tos"].values.astype(float)
    month = np.arange(truth.shape[0]) % 12

    def anomalies(x):
        return x - np.stack([x[month == k].mean(0) for k in range(12)])[month]

    a, b = anomalies(oracle), anomalies(truth)
    w = np.broadcast_to(np.cos(np.deg2rad(twin.truth["lat"].values))[:, None], a.shape[1:])
    ocean = np.isfinite(b).all(0)
    out = {}
    for stat, f in (("std", lambda x: x.std(0)), ("skew", lambda x: stats.skew(x, axis=0))):
        d2 = (f(a) - f(b))[ocean] ** 2
        out[stat] = float(np.sqrt((d2 * w[ocean]).sum() / w[ocean].sum()))
    return out


def test_demo_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    import bayesbridge.apps.demo as demo

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "write_report", boom)
    cfg = DemoConfig(quick=True, years=10, members=10, latent_dim=6, stat_draws=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(RuntimeError, match="disk full"):
        run_demo(tmp_path / "out", cfg)
    assert list((tmp_path / "out").iterdir()) == []


def test_demo_figure_failure_in_background_is_reported(tmp_path, monkeypatch):
    import bayesbridge.apps.demo as demo
    from bayesbridge.apps.rendering import RenderingError

    def jobs(*args, **kwargs):
        def broken():
            raise ValueError("no such colormap")

        return {"statistic_maps": broken}

    monkeypatch.setattr(demo, "report_figure_jobs", jobs)
    cfg = DemoConfig(quick=True, years=10, members=10, latent_dim=6, stat_draws=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(RenderingError, match="no such colormap"):
        run_demo(tmp_path / "out", cfg)
    assert list((tmp_path / "out").iterdir()) == []


def test_frame_with_time_index(twin):
    frame = pd.DataFrame({"nino3": twin.idealized_observations["nino3"].values},
                         index=pd.Index(twin.idealized_observations["time"].values, name="time"))
    assert observations_from(frame).sizes["time"] == twin.idealized_observations.sizes["time"]


# ---------------------------------------------------------------- several runs in one batch
def _variant(fitted, **options):
    """The fitted bridge with another configuration (same codec, dynamics and residuals)."""
    import copy

    out = copy.copy(fitted)
    out.config = BridgeConfig(latent_dim=10, **options)
    return out


def _box_functional(codec, box):
    """``(a, w)`` with box index = ``a + w . z`` for the affine EOF decoder (probed, not read)."""
    d = codec.latent_dim
    probe = codec.decode(np.vstack([np.zeros((1, d)), np.eye(d)]))[regions.get_region(box).variable]
    values = regions.box_index(probe, box).values
    return values[0], values[1:] - values[0]


def test_batched_identical_runs_reproduce_the_single_run(twin, fitted):
    exact = _variant(fitted, method="kalman", members=40, representation_error=False)
    obs = twin.idealized_observations[["nino3", "nino4", "h_w"]].isel(time=slice(0, 120))
    single = exact.assimilate(obs, seed=1)
    batch = exact.assimilate(xr.concat([obs] * 3, dim="run"), seed=1)
    # the exact smoother is deterministic: every run of the batch is the single-series posterior
    assert tuple(batch.result.smoothed_mean.shape) == (3, *single.result.smoothed_mean.shape)
    np.testing.assert_allclose(batch.result.smoothed_mean.numpy(),
                               np.broadcast_to(single.result.smoothed_mean.numpy(), (3, 120, 10)), atol=1e-10)
    np.testing.assert_allclose(batch.result.smoothed_cov[1].numpy(), single.result.smoothed_cov.numpy(), atol=1e-10)
    # pooled draws (3 x 40) estimate the same mean as the single run's 40 draws: Monte Carlo error only
    s1, s3 = single.posterior.summary(), batch.posterior.summary()
    assert batch.posterior.n_draws == 120
    z = (s3["nino3_mean"] - s1["nino3_mean"]) / (s1["nino3_std"] * np.sqrt(1 / 40 + 1 / 120))
    assert float(np.abs(z).max()) < 5.0
    assert abs(float(z.mean())) < 0.5
    assert batch.observations["nino3"].dims == ("run", "time")


def test_batched_runs_pool_by_the_law_of_total_variance(twin, fitted):
    from bayesbridge.idealized import MultiscaleENSO

    exact = _variant(fitted, method="kalman", members=100, representation_error=False)
    runs = MultiscaleENSO().simulate(years=10, members=3, seed=11)[["nino3", "nino4", "h_w"]]
    pooled = exact.assimilate(runs, seed=4)  # `member` is the run dimension here
    assert pooled.posterior.n_draws == 300
    a, w = _box_functional(fitted.codec, "nino3")
    # independent per-run posteriors: exact Gaussian moments of three separate calls
    means, variances = [], []
    for k in range(3):
        one = exact.assimilate(runs.isel(member=k), seed=k).result
        means.append(a + one.smoothed_mean.numpy() @ w)
        variances.append(np.einsum("i,tij,j->t", w, one.smoothed_cov.numpy(), w))
    means, variances = np.array(means), np.array(variances)
    total = variances.mean(0) + means.var(0)  # E[Var | run] + Var[E | run]
    draws = pooled.posterior.index_draws("nino3").values  # (draw, time), draw = run * 100 + member
    assert np.mean(draws.var(0) / total) == pytest.approx(1.0, abs=0.06)
    np.testing.assert_allclose(draws.mean(0), means.mean(0), atol=4.5 * np.sqrt(total.max() / 300))
    # draws are grouped by run: the first 100 follow run 0
    assert np.corrcoef(draws[:100].mean(0), means[0])[0, 1] > 0.99
    # pooled 90 % intervals are wider than any single run's (Gaussian: 2 x 1.645 sd)
    s = pooled.posterior.summary()
    single_width = 2 * 1.6449 * np.sqrt(variances).mean(1)
    assert float((s["nino3_q95"] - s["nino3_q05"]).mean()) > 1.05 * single_width.max()


def test_run_dimension_errors(twin, fitted):
    obs = twin.idealized_observations[["nino3", "nino4"]]
    two = xr.concat([obs, obs], dim="run")
    with pytest.raises(errors.ShapeMismatchError, match="time only"):
        observations_from(two)
    with pytest.raises(errors.ShapeMismatchError, match="run, member, draw"):
        fitted.assimilate(two.rename(run="ensemble"))
    with pytest.raises(errors.ShapeMismatchError, match="at most one run dimension"):
        fitted.assimilate(xr.concat([two, two], dim="draw"))
    assert observations_from(two, runs=True)["nino3"].dims == ("run", "time")
