"""Hyperparameter posterior (error scales) by NUTS and SVI on the exact marginal likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lg_oracle import kalman_oracle, random_lg_problem
from scipy import stats

from bayesbridge.diagnostics import arviz_compat
from bayesbridge.errors import ParameterError
from bayesbridge.infer.hyper import HyperConfig, infer_hyperparameters
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

TRUE_OBS = np.array([0.3, 0.6])
TRUE_SIGMA = 1.5




def _twin(T=60, seed=4):
    A, Q, H, _, m0, P0 = random_lg_problem(d=2, m=2, seed=seed, obs_noise=0.5)
    truth = LinearGaussianModel(A, TRUE_SIGMA**2 * Q, H, np.diag(TRUE_OBS**2), m0, P0)
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    return model, (A, Q, H, m0, P0), y


def test_nuts_rhat_and_posterior_means_against_quadrature():
    # One observable: the posterior of (s, sigma) is two-dimensional, so quadrature on a grid
    # with the independent Kalman oracle's likelihood gives its exact means.
    A, Q, H, _, m0, P0 = random_lg_problem(d=2, m=1, seed=5, obs_noise=0.5)
    truth = LinearGaussianModel(A, TRUE_SIGMA**2 * Q, H, np.diag([TRUE_OBS[0] ** 2]), m0, P0)
    _, y = truth.simulate(60, generator=torch.Generator().manual_seed(0))
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    hp = infer_hyperparameters(model, y, num_samples=100, warmup=80, chains=2, max_tree_depth=4, seed=1)
    assert hp.draws["obs_scale"].shape == (2, 100, 1)
    assert hp.draws["model_error_scale"].shape == (2, 100)
    assert max(hp.rhat.values()) < 1.05, hp.rhat
    assert set(arviz_compat.groups(hp.inference_data)) >= {"posterior", "sample_stats"}
    post = arviz_compat.group_dataset(hp.inference_data, "posterior")
    assert post["obs_scale"].dims == ("chain", "draw", "observable")

    s_grid, sig_grid = np.linspace(0.01, 1.0, 30), np.linspace(0.8, 2.6, 30)
    prior_s = stats.lognorm(s=1.0, scale=0.5).logpdf(s_grid)
    prior_sig = stats.lognorm(s=1.0, scale=1.0).logpdf(sig_grid)
    lp = np.array([[kalman_oracle(A, g**2 * Q, H, [[s**2]], m0, P0, y.numpy())[-1] + ps + pg
                    for g, pg in zip(sig_grid, prior_sig, strict=True)] for s, ps in zip(s_grid, prior_s, strict=True)])
    w = np.exp(lp - lp.max())
    w /= w.sum()
    for name, grid_mean, grid_sd in (
        ("obs_scale", (w.sum(1) * s_grid).sum(), np.sqrt((w.sum(1) * s_grid**2).sum() - (w.sum(1) * s_grid).sum() ** 2)),
        ("model_error_scale", (w.sum(0) * sig_grid).sum(),
         np.sqrt((w.sum(0) * sig_grid**2).sum() - (w.sum(0) * sig_grid).sum() ** 2)),
    ):
        # within 3 Monte-Carlo standard errors (sd / sqrt(ESS))
        assert abs(float(hp.draws[name].mean()) - grid_mean) < 3 * grid_sd / np.sqrt(hp.ess_bulk[name]), name


@pytest.mark.slow
def test_nuts_recovers_all_scales_with_converged_chains():
    model, _, y = _twin(T=100)
    hp = infer_hyperparameters(model, y, num_samples=300, warmup=300, chains=3, seed=1)
    assert hp.draws["obs_scale"].shape == (3, 300, 2)
    assert max(hp.rhat.values()) < 1.05, hp.rhat
    q = hp.quantiles((0.05, 0.95))
    assert ((q["obs_scale"][0].numpy() <= TRUE_OBS) & (TRUE_OBS <= q["obs_scale"][1].numpy())).all()
    assert float(q["model_error_scale"][0]) <= TRUE_SIGMA <= float(q["model_error_scale"][1])


def test_svi_hyperparameters_one_chain():
    model, _, y = _twin(T=100)
    hp = infer_hyperparameters(model, y, method="svi", svi_steps=300, lr=0.05, num_samples=400, seed=0)
    assert hp.draws["obs_scale"].shape == (1, 400, 2)
    assert np.isnan(hp.rhat["obs_scale"])  # one variational chain: R-hat undefined
    q = hp.quantiles((0.05, 0.95))
    assert ((q["obs_scale"][0].numpy() <= TRUE_OBS) & (TRUE_OBS <= q["obs_scale"][1].numpy())).all()
    assert float(q["model_error_scale"][0]) <= TRUE_SIGMA <= float(q["model_error_scale"][1])
    assert hp.summary().shape[0] == 3


def test_bad_inputs():
    with pytest.raises(ParameterError):
        HyperConfig(method="mh")
    with pytest.raises(ParameterError):
        HyperConfig(chains=0)
    with pytest.raises(ParameterError):
        HyperConfig(target_accept=1.0)
    nonlinear = StateSpaceModel(LinearTransition(0.9 * np.eye(2), 0.3 * np.eye(2)), lambda z: z**3, 0.3)
    with pytest.raises(ParameterError, match="affine"):
        infer_hyperparameters(nonlinear, np.zeros((10, 2)))
