"""SVI with exact GaussianHMM marginalisation: error-scale recovery and the latent posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lg_oracle import kalman_oracle, random_lg_problem

from bayesbridge.errors import ParameterError
from bayesbridge.infer import assimilate
from bayesbridge.infer.variational import SVIConfig
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

TRUE_OBS = np.array([0.3, 0.6])
TRUE_SIGMA = 1.5




def _twin(seed: int, T: int = 150):
    """Truth with known scales; the model is given nominal scales 0.5 and 1 (prior centres)."""
    A, Q, H, _, m0, P0 = random_lg_problem(d=4, m=2, seed=100 + seed, obs_noise=0.5)
    truth = LinearGaussianModel(A, TRUE_SIGMA**2 * Q, H, np.diag(TRUE_OBS**2), m0, P0)
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    return model, truth, y


def _inside_90(result) -> np.ndarray:
    """Per scale (obs_scale..., model_error_scale): truth inside the central 90 % interval."""
    draws = np.column_stack([result.hyperparameters["obs_scale"].numpy(),
                             result.hyperparameters["model_error_scale"].numpy()])
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    truth = np.append(TRUE_OBS, TRUE_SIGMA)
    return (lo <= truth) & (truth <= hi)


def test_svi_recovers_scales_and_exact_latent_posterior_one_seed():
    model, truth, y = _twin(seed=0)
    y[10, 0] = float("nan")
    res = assimilate(model, y, "svi", members=300, seed=1, steps=300, lr=0.05, guide="lowrank")
    assert res.hyperparameters["obs_scale"].shape == (300, 2)
    assert res.hyperparameters["model_error_scale"].shape == (300,)
    assert _inside_90(res).all()
    # latent posterior: the Kalman smoother at the posterior-mean scales against the oracle at
    # the true scales (they differ only through the scale estimates)
    _, _, ms, Ps, _ = kalman_oracle(truth.A, truth.Q, truth.H, truth.R, truth.m0, truth.P0, y.numpy())
    sd = np.sqrt(np.einsum("tii->ti", Ps))
    assert np.sqrt((((res.smoothed_mean.numpy() - ms) / sd) ** 2).mean()) < 0.2
    # posterior trajectories (one per scale draw): their mean agrees with the smoothed mean to
    # Monte-Carlo error (300 draws: 1/sqrt(300) = 0.06 posterior sd) and their spread with Ps
    assert res.smoothed_ensemble.shape == (150, 300, 4)
    zd = (res.smoothed_ensemble.mean(-2).numpy() - ms) / sd
    assert np.sqrt((zd**2).mean()) < 0.25
    ratio = res.smoothed_ensemble.std(-2).numpy() / sd
    assert 0.85 < ratio.mean() < 1.2


@pytest.mark.slow
def test_svi_scale_posterior_matches_nuts_in_five_seeds():
    # The exact scale posterior (NUTS on the compiled potential) is the reference. (Counting how often
    # the truth falls inside the 90 % interval over 5 seeds tests luck: the exact posterior itself
    # misses the truth's second obs scale in seeds 1 and 2. Calibration over many replications is
    # tested by simulation-based calibration, tests/test_calibration.py.) SVI with the low-rank guide
    # and importance resampling: means within 0.25 exact sd, sds within [0.8, 1.25] of the exact.
    from bayesbridge.infer.hyper import infer_hyperparameters

    for seed in range(5):
        model, _, y = _twin(seed)
        hp = infer_hyperparameters(model, y, num_samples=600, warmup=300, chains=1, seed=seed)
        exact = np.column_stack([hp.draws["obs_scale"][0].numpy(), hp.draws["model_error_scale"][0].numpy()])
        res = assimilate(model, y, "svi", members=1000, seed=seed, guide="lowrank")
        svi = np.column_stack([res.hyperparameters["obs_scale"].numpy(),
                               res.hyperparameters["model_error_scale"].numpy()])
        shift = (svi.mean(0) - exact.mean(0)) / exact.std(0)
        ratio = svi.std(0) / exact.std(0)
        assert (np.abs(shift) < 0.25).all() and ((0.8 < ratio) & (ratio < 1.25)).all(), (seed, shift, ratio)


def test_svi_posterior_mean_mode_and_batch():
    model, _, y = _twin(seed=2, T=60)
    yb = torch.stack([y, y.flip(0)])
    res = assimilate(model, yb, "svi", members=50, seed=0, steps=150, lr=0.05, latent="posterior_mean")
    assert res.smoothed_ensemble.shape == (2, 60, 50, 4)
    assert res.log_evidence.shape == (2,)
    # plug-in evidence = exact log p(y | posterior-mean scales) from the oracle
    s = res.hyperparameters["obs_scale"].mean(0).numpy()
    sig = float(res.hyperparameters["model_error_scale"].mean())
    Q = sig**2 * (model.transition.L @ model.transition.L.mT).numpy()
    ll = kalman_oracle(model.transition.A, Q, model.observation_matrix, np.diag(s**2), model.m0, model.P0, yb[1].numpy())[-1]
    assert abs(float(res.log_evidence[1]) - ll) < 1e-6


class _Tanh:
    latent_dim = 2

    def __init__(self):
        self.A = torch.tensor([[0.9, 0.3], [-0.3, 0.9]], dtype=torch.float64)

    def mean(self, z, step=None):
        return 1.5 * torch.tanh(z @ self.A.mT)

    def noise_scale_tril(self, step=None):
        return 0.4 * torch.eye(2, dtype=torch.float64)


def _nonlinear_case(T):
    model = StateSpaceModel(_Tanh(), np.eye(2), 0.3)
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(2, dtype=torch.float64)
    ys = []
    for _ in range(T):
        z = model.transition_mean(z) + 0.4 * torch.randn(2, generator=g, dtype=torch.float64)
        ys.append(z + 0.3 * torch.randn(2, generator=g, dtype=torch.float64))
    return model, torch.stack(ys)


def _svi_vs_particle_smoother(T, steps):
    model, y = _nonlinear_case(T)
    svi = assimilate(model, y, "svi", members=200, seed=0, steps=steps, lr=0.05)
    pf = assimilate(model, y, "pf", members=4000, seed=0, n_trajectories=300)
    assert svi.smoothed_ensemble.shape == (T, 200, 2)
    assert set(svi.hyperparameters) == {"obs_scale", "model_error_scale"}
    # SVI integrates over the scales, the particle smoother fixes them at the nominal values:
    # the smoothed means should still agree well within one posterior sd
    sd = pf.smoothed_ensemble.std(-2)
    return float((((svi.smoothed_mean - pf.smoothed_mean) / sd) ** 2).mean().sqrt())


def test_nonlinear_structured_guide_quick():
    assert _svi_vs_particle_smoother(T=6, steps=150) < 0.6


@pytest.mark.slow
def test_nonlinear_structured_guide_matches_particle_smoother():
    assert _svi_vs_particle_smoother(T=12, steps=300) < 0.5


@pytest.mark.parametrize("options", [{"steps": 0}, {"lr": 0.0}, {"guide": "flow"}, {"latent": "mode"}, {"members": 0},
                                     {"trajectory": "banded"}, {"scales": "free"}, {"window": 0}, {"tol": float("nan")},
                                     {"elbo_particles": 0}, {"init_scale": -1.0}])
def test_bad_svi_config(options):
    with pytest.raises(ParameterError, match=next(iter(options))):
        SVIConfig(**options)


def test_low_rank_guide_rank_is_bounded_by_the_number_of_scales():
    model, _, y = _twin(seed=0, T=20)
    with pytest.raises(ParameterError, match="rank: .*m \\+ 1 = 3"):
        assimilate(model, y, "svi", guide="lowrank", rank=4)


def test_exact_trajectory_needs_an_affine_model():
    model, y = _nonlinear_case(6)
    with pytest.raises(ParameterError, match="trajectory: 'exact'.*trajectory='markov'"):
        assimilate(model, y, "svi", trajectory="exact")


def _lg_case(seed=1, d=4, m=2, T=100):
    """An affine StateSpaceModel whose nominal scales are the truth's, and the exact smoother."""
    A, Q, H, _, m0, P0 = random_lg_problem(d=d, m=m, seed=seed, obs_noise=0.5)
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    truth = LinearGaussianModel(A, Q, H, np.diag(np.full(m, 0.25)), m0, P0)
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    y[5, 1] = y[30] = float("nan")
    return model, y, kalman_oracle(A, Q, H, truth.R, m0, P0, y.numpy())


def test_markov_guide_matches_the_exact_smoother():
    # The structured (Gauss-Markov) guide of nonlinear chains, forced on a linear-Gaussian model at
    # its true scales: smoothing means within 0.25 posterior sd (RMS), time-averaged variances
    # within [0.8, 1.25] per component, and the ELBO a lower bound within 1 nat of log p(y).
    model, y, (_, _, ms, Ps, loglik) = _lg_case()
    res = assimilate(model, y, "svi", members=400, seed=2, trajectory="markov", scales="fixed")
    assert res.hyperparameters == {} and res.smoothed_ensemble.shape == (100, 400, 4)
    sd = np.sqrt(np.einsum("tii->ti", Ps))
    z = (res.smoothed_mean.numpy() - ms) / sd
    assert np.sqrt((z**2).mean()) < 0.25
    ratio = res.smoothed_ensemble.var(-2).numpy().mean(0) / (sd**2).mean(0)
    assert ((0.8 <= ratio) & (ratio <= 1.25)).all(), ratio
    assert loglik - 1.0 < float(res.log_evidence[()]) < loglik + 0.2
    # the ELBO trace and the convergence test are in the result
    trace = res.fit
    assert trace.converged and trace.steps < SVIConfig().steps and trace.elbo.shape == (trace.steps,)
    assert len(trace.window_means) == trace.steps // SVIConfig().window
    assert "converged after" in trace.summary()


def test_fixed_scales_on_an_affine_chain_is_the_exact_smoother():
    model, y, (mf, _, ms, Ps, loglik) = _lg_case(seed=3, T=40)
    res = assimilate(model, y, "svi", members=50, seed=0, scales="fixed")
    assert res.fit.steps == 0 and res.hyperparameters == {}
    np.testing.assert_allclose(res.smoothed_mean.numpy(), ms, atol=1e-8)
    np.testing.assert_allclose(res.smoothed_cov.numpy(), Ps, atol=1e-8)
    assert float(res.log_evidence) == pytest.approx(loglik, abs=1e-8)
    assert res.smoothed_ensemble.shape == (40, 50, 4)
