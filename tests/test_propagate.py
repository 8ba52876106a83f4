"""Idealized-model parameter uncertainty through the bridge (bayesbridge.apps.propagate), small sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from bayesbridge import errors, io
from bayesbridge.apps.propagate import (
    parameter_table,
    propagate_parameter_uncertainty,
    thin_indices,
)
from bayesbridge.bridge import Bridge, BridgeConfig
from bayesbridge.datasets import make_twin_experiment
from bayesbridge.idealized import ENSOParameters, MultiscaleENSO

K, YEARS = 4, 20
# ten draws around the published values (f = 0.65, wind_amp = 0.9): the posterior to thin
DRAWS = {"f": np.linspace(0.55, 0.75, 10), "wind_amp": np.linspace(0.7, 1.1, 10)}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    twin = make_twin_experiment(years=YEARS, seed=2, cache_dir=tmp_path_factory.mktemp("cache"))
    ops = io.open_operational(twin.operational, region=None).load()
    # exact smoother (deterministic given the observations) and no representation noise: cheap
    return Bridge(BridgeConfig(latent_dim=6, members=20, method="kalman", representation_error=False)).fit(ops)


@pytest.fixture(scope="module")
def propagated(bridge):
    return propagate_parameter_uncertainty(bridge, DRAWS, YEARS, seed=7, start=1850, draws=K, burn_in_years=5,
                                           stat_draws=5)


def test_runs_are_reproducible_simulations_at_the_thinned_draws(propagated):
    rows = [0, 3, 6, 9]  # evenly spaced over ten draws, first and last included
    np.testing.assert_array_equal(propagated.parameters["f"].values, DRAWS["f"][rows])
    np.testing.assert_array_equal(propagated.parameters["wind_amp"].values, DRAWS["wind_amp"][rows])
    children = np.random.SeedSequence(7).spawn(K)
    for k in range(K):
        params = ENSOParameters(f=DRAWS["f"][rows[k]], wind_amp=DRAWS["wind_amp"][rows[k]])
        own = MultiscaleENSO(params).simulate(YEARS, members=1, seed=children[k], burn_in_years=5, start_year=1850)
        for v in ("nino3", "nino4", "h_w"):
            np.testing.assert_array_equal(propagated.runs[v].isel(run=k).values, own[v].isel(member=0).values)
    assert propagated.runs["nino3"].dims == ("run", "time")
    assert propagated.runs["time"].values[0].year == 1850 and propagated.runs["time"].values[0].month == 1
    # per-draw statistics are those of each simulated run (scipy oracle)
    np.testing.assert_allclose(propagated.statistics["nino3_skew"].values,
                               stats.skew(propagated.runs["nino3"].values, axis=1), rtol=1e-12)
    np.testing.assert_allclose(propagated.statistics["nino3_std"].values,
                               propagated.runs["nino3"].values.std(axis=1), rtol=1e-12)


def test_one_batched_assimilation_equals_the_separate_runs(bridge, propagated):
    res = propagated.bridge_result
    assert tuple(res.result.smoothed_mean.shape[:2]) == (K, 12 * YEARS)
    assert propagated.posterior.n_draws == K * 20
    for k in (0, K - 1):
        alone = bridge.assimilate(propagated.runs.isel(run=k), seed=0).result
        np.testing.assert_allclose(res.result.smoothed_mean[k].numpy(), alone.smoothed_mean.numpy(), atol=1e-9)
    # bridged per-run statistics come from that run's own draws: Nino 3 std follows the run's
    corr = np.corrcoef(propagated.bridged_statistics["nino3_std"], propagated.statistics["nino3_std"])[0, 1]
    assert corr > 0.8
    spread = propagated.spread()
    assert list(spread.columns) == ["mean", "q05", "q95"]
    assert (spread["q05"] <= spread["mean"]).all() and (spread["mean"] <= spread["q95"]).all()
    np.testing.assert_allclose(spread.loc["nino3_skew", "mean"], propagated.bridged_statistics["nino3_skew"].mean())


def test_parameter_table_reads_the_calibration_formats():
    from bayesbridge.io import arviz_compat

    chains = {"f": DRAWS["f"].reshape(2, 5), "m": np.linspace(1.8, 2.2, 10).reshape(2, 5)}
    expected = pd.DataFrame({k: v.reshape(-1) for k, v in chains.items()})  # chain-major
    idata = arviz_compat.from_dict(posterior=chains)
    pd.testing.assert_frame_equal(parameter_table(idata), expected, check_names=False, check_index_type=False)
    dataset = xr.Dataset({k: (("chain", "draw"), v) for k, v in chains.items()})
    pd.testing.assert_frame_equal(parameter_table(dataset), expected, check_names=False, check_index_type=False)
    pd.testing.assert_frame_equal(parameter_table(expected), expected, check_names=False, check_index_type=False)
    np.testing.assert_array_equal(thin_indices(10, 1), [0])
    np.testing.assert_array_equal(thin_indices(7, 7), np.arange(7))


def test_bad_parameter_draws_are_named(bridge):
    with pytest.raises(errors.ParameterError, match="valid names are f, b0"):
        parameter_table({"f": [0.6], "gamma": [1.0]})
    with pytest.raises(errors.ShapeMismatchError, match="one length"):
        parameter_table({"f": [0.6, 0.7], "m": [2.0]})
    with pytest.raises(errors.InputTypeError, match="CalibrationResult"):
        parameter_table([0.6, 0.7])
    with pytest.raises(errors.ParameterError, match="draws: expected an integer in 1..2"):
        propagate_parameter_uncertainty(bridge, {"f": [0.6, 0.7]}, YEARS, seed=0, draws=3)
    with pytest.raises(errors.ParameterError, match="draw 1 is not a valid parameter set"):
        propagate_parameter_uncertainty(bridge, {"f": [0.6, -0.7]}, YEARS, seed=0, burn_in_years=0)


def test_prior_parameter_draws_are_centred_on_the_published_values():
    from bayesbridge.apps.propagate import prior_parameter_draws
    from bayesbridge.idealized.calibrate import DEFAULT_PRIORS

    draws = prior_parameter_draws(4000, seed=1)
    published = ENSOParameters()
    for name in draws.columns:
        lo, hi = DEFAULT_PRIORS[name]
        assert (lo + hi) / 2 == pytest.approx(getattr(published, name))
        assert draws[name].between(lo, hi).all()
        # uniform on [lo, hi]: Kolmogorov-Smirnov against scipy's uniform law
        assert stats.kstest(draws[name], "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    pd.testing.assert_frame_equal(prior_parameter_draws(3, seed=1), prior_parameter_draws(3, seed=1))


_SMALL_DEMO = {"quick": True, "years": 10, "members": 10, "latent_dim": 6, "stat_draws": 2}


def _check_param_uq(result, out):
    from bayesbridge.apps.scoring import PARAM_UQ_STATS

    prop = result.propagation
    assert len(prop.parameters) == 2 and prop.posterior.n_draws == 2 * 10
    for stat in PARAM_UQ_STATS:
        values = prop.bridged_statistics[stat]
        assert result.metrics[f"twin.param_uq.{stat}.mean"] == pytest.approx(values.mean())
        assert result.metrics[f"twin.param_uq.{stat}.q05"] == pytest.approx(np.quantile(values, 0.05))
        assert result.metrics[f"twin.param_uq.{stat}.q95"] == pytest.approx(np.quantile(values, 0.95))
        split = prop.variance_split().loc[stat]
        for col in ("between", "within", "between_fraction"):
            assert result.metrics[f"twin.param_uq.{stat}.var_{col}"] == pytest.approx(split[col])
    report = (out / "report.md").read_text()
    assert "## Idealized-model parameter uncertainty" in report and "calibration posterior" in report
    assert "var between" in report


def test_demo_parameter_draws_add_metrics_and_a_report_section(tmp_path):
    from bayesbridge.apps.demo import DemoConfig, run_demo

    result = run_demo(tmp_path / "k2", DemoConfig(**_SMALL_DEMO, parameter_draws=2, cache_dir=str(tmp_path / "c")))
    _check_param_uq(result, tmp_path / "k2")
    # the default experiment's own posterior is untouched: its Nino 3 statistics are recomputed here
    from bayesbridge.apps.scoring import index_statistics

    post = result.bridge_result.posterior
    n3, n4 = post.index_draws("nino3").values, post.index_draws("nino4").values
    time = result.bridge_result.observations["time"].values
    skew = np.mean([index_statistics(n3[i], n4[i], time)["nino3_skew"] for i in range(2)])
    assert result.metrics["twin.nino3_skew.bridged"] == pytest.approx(skew)


@pytest.mark.slow
def test_demo_parameter_draws_leave_the_default_outputs_unchanged(tmp_path):
    from bayesbridge.apps.demo import DemoConfig, run_demo

    base = run_demo(tmp_path / "k0", DemoConfig(**_SMALL_DEMO, cache_dir=str(tmp_path / "c")))
    with_uq = run_demo(tmp_path / "k2", DemoConfig(**_SMALL_DEMO, parameter_draws=2, cache_dir=str(tmp_path / "c")))
    _check_param_uq(with_uq, tmp_path / "k2")
    shared = {k: v for k, v in base.metrics.items() if not k.startswith("timing.")}
    assert {k: with_uq.metrics[k] for k in shared} == shared
    assert not any(k.startswith("twin.param_uq") for k in base.metrics)
    assert "parameter uncertainty" not in (tmp_path / "k0" / "report.md").read_text()


def test_variance_split_is_the_law_of_total_variance(propagated):
    draws = propagated.bridged_draw_statistics
    split = propagated.variance_split()
    # population variance of all draws = between + within, computed here from the raw table
    for stat in draws.columns:
        values = draws[stat].unstack("draw").to_numpy()  # (run, draw)
        assert split.loc[stat, "total"] == pytest.approx(values.var())
        assert split.loc[stat, "between"] == pytest.approx(values.mean(axis=1).var())
        assert split.loc[stat, "within"] == pytest.approx(values.var(axis=1).mean())
        assert 0.0 <= split.loc[stat, "between_fraction"] <= 1.0
    # the draw table holds the statistics of the first 5 (stat_draws) posterior draws of each run,
    # recomputed here from the pooled posterior (draw i of run k is pooled draw k * members + i)
    from bayesbridge.apps.scoring import STATS, index_statistics

    post, time = propagated.posterior, propagated.runs["time"].values
    n3, n4 = post.index_draws("nino3").values, post.index_draws("nino4").values
    members = post.n_draws // K
    for (k, i), row in draws.iterrows():
        expected = index_statistics(n3[k * members + i], n4[k * members + i], time)
        np.testing.assert_allclose(row[list(STATS)].to_numpy(float), [expected[s] for s in STATS])
    assert sorted(set(draws.index.get_level_values("draw"))) == list(range(5))


def test_bundled_calibration_posterior_is_inside_the_prior_box_and_records_its_provenance():
    from bayesbridge.apps.propagate import parameter_draws
    from bayesbridge.idealized.calibrate import CalibrationConfig
    from bayesbridge.idealized.calibrated import calibration_posterior

    post = calibration_posterior()
    config = CalibrationConfig()
    assert post.parameters == config.parameters
    assert int(post.provenance["seed"]) == 0 and int(post.provenance["record_years"]) == 70
    assert int(post.provenance["design_points"]) == config.design_points
    for name, (lo, hi) in config.priors.items():
        assert post.draws[name].between(lo, hi).all()
    # a posterior, not the prior: narrower than the uniform box (sd (hi - lo) / sqrt(12))
    assert (post.draws.std() < 0.9 * pd.Series({n: (hi - lo) / 12**0.5 for n, (lo, hi) in config.priors.items()})).all()
    draws = parameter_draws(50, seed=3)
    pd.testing.assert_frame_equal(draws, parameter_draws(50, seed=3))
    assert not draws.equals(parameter_draws(50, seed=4))
    assert draws.merge(post.draws, how="left", indicator=True)["_merge"].eq("both").all()  # stored draws only
    with pytest.raises(errors.ParameterError, match="source"):
        parameter_draws(2, seed=0, source="uniform")
    from bayesbridge.apps.demo import DemoConfig

    with pytest.raises(errors.ParameterError, match="parameter_source.*'posterior', 'prior'"):
        DemoConfig(quick=True, parameter_source="uniform")


@pytest.mark.slow
def test_bundled_calibration_posterior_is_reproduced_by_its_command():
    from bayesbridge.datasets import observed_indices
    from bayesbridge.idealized.calibrate import CalibrationConfig, calibrate, calibration_statistics
    from bayesbridge.idealized.calibrated import calibration_posterior

    stored = calibration_posterior()
    obs = calibration_statistics(observed_indices(), start="1950-01", end="2019-12")
    result = calibrate(obs, CalibrationConfig(seed=int(stored.provenance["seed"])))
    np.testing.assert_allclose(result.posterior.to_numpy(), stored.draws.to_numpy(), rtol=1e-6)
