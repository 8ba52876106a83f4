"""The bridge with its error scales integrated over their posterior (``BridgeConfig.error_scales``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bayesbridge import errors, io, regions
from bayesbridge.bridge import Bridge, BridgeConfig
from bayesbridge.bridge.export import posterior_groups
from bayesbridge.bridge.scales import scale_choice
from bayesbridge.datasets import make_twin_experiment
from bayesbridge.infer import assimilate

NAMES = ["nino3", "nino4", "h_w"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    twin = make_twin_experiment(years=12, seed=5, cache_dir=tmp_path_factory.mktemp("cache"))
    ops = io.open_operational(twin.operational, region=None).load()
    bridge = Bridge(BridgeConfig(latent_dim=8, members=160, method="enks", error_scales="integrate", scale_draws=8,
                                 representation_error=False)).fit(ops)
    return twin, bridge, bridge.assimilate(twin.idealized_observations[NAMES], seed=3)


def test_integrated_posterior_is_the_mixture_of_exact_smoothers_over_scale_draws(setup):
    twin, bridge, out = setup
    draws = out.scales.draws
    assert out.scales.choice.used == "integrate" and draws.n_draws == 8
    # every observation-error draw lies above its floor, the representation error
    floor = torch.tensor(out.obs_error[NAMES].to_numpy(copy=True))
    assert bool((draws.obs_scale >= floor).all())
    assert draws.stats["importance_ess"] > 0
    hyper = out.result.hyperparameters
    assert hyper["obs_error_scale"].shape == (160, 3) and hyper["model_error_scale"].shape == (160,)
    assert out.posterior.n_draws == 160 and tuple(out.result.smoothed_ensemble.shape[:2]) == (144, 160)
    # oracle: the exact Kalman smoother at each scale draw; the pooled box-index draws have the
    # mixture's mean and variance (law of total variance over the scale draws)
    d = bridge.codec.latent_dim
    probe = bridge.codec.decode(np.vstack([np.zeros((1, d)), np.eye(d)]))["tos"]
    values = regions.box_index(probe, "nino34").values
    a, w = values[0], values[1:] - values[0]
    y = np.stack([twin.idealized_observations[n].values for n in NAMES], -1)
    means, variances = [], []
    for j in range(draws.n_draws):
        m = out.model.with_scales(draws.obs_scale[j], float(draws.model_error_scale[j]))
        exact = assimilate(m, y, method="kalman")
        means.append(a + exact.smoothed_mean.numpy() @ w)
        variances.append(np.einsum("i,tij,j->t", w, exact.smoothed_cov.numpy(), w))
    means, variances = np.array(means), np.array(variances)
    total = variances.mean(0) + means.var(0)
    idx = out.posterior.index_draws("nino34").values  # (draw, time)
    np.testing.assert_allclose(idx.mean(0), means.mean(0), atol=4.5 * np.sqrt(total.max() / 160))
    assert np.mean(idx.var(0) / total) == pytest.approx(1.0, abs=0.08)


def test_inference_data_holds_the_scale_draws(setup):
    _, _, out = setup
    post = posterior_groups(out.posterior, include_latent=False)["posterior"]
    assert post["obs_error_scale"].dims == ("chain", "draw", "index")
    assert list(post["index"].values) == NAMES
    assert post["model_error_scale"].dims == ("chain", "draw")
    np.testing.assert_allclose(post["obs_error_scale"].values[0], out.result.hyperparameters["obs_error_scale"])
    assert post.attrs["error_scale_sampler"] == out.scales.draws.sampler
    assert post.attrs["error_scale_importance_ess"] == pytest.approx(out.scales.draws.stats["importance_ess"])
    assert post.attrs["log_evidence_total"] == pytest.approx(out.scales.draws.stats["log_evidence"])


@pytest.mark.slow
def test_svi_infers_the_scales_above_their_floors():
    # svi's own log-normal priors let the observation-error scales collapse (0.01 degC here, far
    # under the representation error); under the floored priors every draw stays above the floor
    twin = make_twin_experiment(years=30, seed=5)
    ops = io.open_operational(twin.operational, region=None).load()
    bridge = Bridge(BridgeConfig(latent_dim=10, members=40, method="svi", error_scales="integrate",
                                 method_options={"steps": 300})).fit(ops)
    out = bridge.assimilate(twin.idealized_observations[["nino3", "nino4"]], seed=1)
    assert out.scales.choice.used == "infer"
    s = out.result.hyperparameters["obs_error_scale"]
    assert s.shape == (40, 2) and bool((s >= torch.tensor(out.obs_error.to_numpy(copy=True)) - 1e-9).all())
    # and the model-error scale stays at or above the operational model's own latent noise (sigma >= 1)
    sigma = out.result.hyperparameters["model_error_scale"]
    assert sigma.shape == (40,) and float(sigma.min()) >= 1.0 - 1e-9


def test_routes_that_cannot_integrate_fall_back_and_say_why():
    assert scale_choice("integrate", "pf", affine=True).used == "fixed"
    assert "pf" in scale_choice("integrate", "pf", affine=True).reason
    assert scale_choice("integrate", "enks", affine=False).used == "fixed"
    assert "affine" in scale_choice("integrate", "enks", affine=False).reason
    assert scale_choice("integrate", "svi", affine=True).used == "infer"
    fixed_svi = scale_choice("fixed", "svi", affine=True)  # svi always learns them: floored priors either way
    assert fixed_svi.used == "infer" and "floored" in fixed_svi.reason
    assert scale_choice("fixed", "enks", affine=True).used == "fixed"
    for method in ("kalman", "enks"):
        choice = scale_choice("integrate", method, affine=True)
        assert (choice.used, choice.reason) == ("integrate", "")


@pytest.mark.parametrize(("options", "match"), [
    ({"error_scales": "sample"}, "error_scales.*integrate.*fixed"),
    ({"scale_draws": 0}, "scale_draws"),
])
def test_bad_scale_options_name_the_option_and_the_choices(options, match):
    with pytest.raises(errors.BayesBridgeError, match=match):
        BridgeConfig(**options)


@pytest.mark.parametrize("command", [
    ["assimilate", "--observations", str(Path(__file__).resolve().parents[1] / "data" / "enso_observations.nc"),
     "--vars", "nino3,nino4"],
    ["demo", "--quick"],
])
def test_cli_names_the_error_scales_option_and_its_choices(command, tmp_path, capsys):
    from bayesbridge.cli import main

    with pytest.raises(SystemExit) as stop:
        main([*command, "--out", str(tmp_path / "out"), "--error-scales", "sampled"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    errors_lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors_lines) == 1 and "Traceback" not in text, text
    assert "--error-scales" in errors_lines[0] and "integrate, fixed" in errors_lines[0]
    assert not (tmp_path / "out").exists()
