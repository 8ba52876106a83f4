"""Hyperparameter posterior (error scales, inflation) by NUTS and SVI on the exact and ensemble likelihoods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lg_oracle import kalman_loglik_grid, kalman_oracle, random_lg_problem
from scipy import stats

from bayesbridge.errors import BayesBridgeError, ParameterError
from bayesbridge.infer.hyper import (
    EnsembleLikelihood,
    HyperConfig,
    ensemble_log_likelihood,
    infer_hyperparameters,
)
from bayesbridge.io import arviz_compat
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
    # 300 warm-up + 400 draws at tree depth 5 (the compiled potential makes this a few seconds): with
    # 150 + 150, R-hat of obs_scale was 1.03-1.06 over seeds 0-5 (bulk ESS 40-80), with 300 + 400
    # at most 1.012 (bulk ESS 160-300)
    hp = infer_hyperparameters(model, y, num_samples=400, warmup=300, chains=2, max_tree_depth=5, seed=1)
    assert hp.draws["obs_scale"].shape == (2, 400, 1)
    assert hp.draws["model_error_scale"].shape == (2, 400)
    assert max(hp.rhat.values()) < 1.05, hp.rhat
    assert set(arviz_compat.groups(hp.inference_data)) >= {"posterior", "sample_stats"}
    post = arviz_compat.group_dataset(hp.inference_data, "posterior")
    assert post["obs_scale"].dims == ("chain", "draw", "observable")

    s_grid, sig_grid = np.linspace(0.01, 1.0, 30), np.linspace(0.8, 2.6, 30)
    prior_s = stats.lognorm(s=1.0, scale=0.5).logpdf(s_grid)
    prior_sig = stats.lognorm(s=1.0, scale=1.0).logpdf(sig_grid)
    # the oracle's recursions vectorised over the (s, sigma) grid; one point against kalman_oracle
    lp = kalman_loglik_grid(A, sig_grid[None, :, None, None] ** 2 * Q, H, s_grid[:, None, None, None] ** 2,
                            m0, P0, y.numpy()) + prior_s[:, None] + prior_sig[None, :]
    np.testing.assert_allclose(lp[3, 7] - prior_s[3] - prior_sig[7],
                               kalman_oracle(A, sig_grid[7] ** 2 * Q, H, [[s_grid[3] ** 2]], m0, P0, y.numpy())[-1])
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


# --- ensemble likelihood -------------------------------------------------------------------


def inflated_kalman_loglik(A, Q, H, R, m0, P0, y, inflation):
    """Independent numpy oracle: log p(y) of the Kalman filter with forecast covariance
    inflation^2 (A P A^T + Q), the infinite-ensemble limit of multiplicative inflation
    (Joseph-form update for stability at large inflation)."""
    m, P, loglik, eye = m0, P0, 0.0, np.eye(len(m0))
    for yt in y:
        m, P = A @ m, inflation**2 * (A @ P @ A.T + Q)
        S = H @ P @ H.T + R
        e = yt - H @ m
        K = np.linalg.solve(S, H @ P).T
        m = m + K @ e
        P = (eye - K @ H) @ P @ (eye - K @ H).T + K @ R @ K.T
        loglik += -0.5 * (e @ np.linalg.solve(S, e) + np.linalg.slogdet(S)[1] + len(e) * np.log(2 * np.pi))
    return loglik


def _problem(d=4, m=2, T=100, q_factor=TRUE_SIGMA**2, seed=4):
    """Truth with model error q_factor * Q; the assimilating model has Q and nominal scales 0.5, 1."""
    A, Q, H, R, m0, P0 = random_lg_problem(d=d, m=m, seed=seed, obs_noise=0.5)
    obs = TRUE_OBS[:m] if m <= len(TRUE_OBS) else np.full(m, 0.5)
    truth = LinearGaussianModel(A, q_factor * Q, H, np.diag(obs**2), m0, P0)
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    return model, (A, Q, H, m0, P0), y


def test_etkf_likelihood_is_the_exact_inflated_kalman_likelihood_with_its_gradient():
    # ETKF with second-order exact sampling and members > 2 d reproduces the Kalman filter, so
    # the ensemble likelihood and its autograd gradient must equal the oracle's (finite differences).
    model, (A, Q, H, m0, P0), y = _problem()
    s = torch.tensor([0.4, 0.7], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    config = EnsembleLikelihood(method="etkf", members=20, seed=3)
    ll = ensemble_log_likelihood(model, y, s, sigma, lam, config)
    ll.backward()

    def oracle(s_=(0.4, 0.7), sigma_=1.3, lam_=1.2):
        return inflated_kalman_loglik(A, sigma_**2 * Q, H, np.diag(np.square(s_)), m0, P0, y.numpy(), lam_)

    assert ll.shape == ()
    np.testing.assert_allclose(float(ll.detach()), oracle(), rtol=1e-9)
    h = 1e-5
    fd = {
        "s0": (oracle(s_=(0.4 + h, 0.7)) - oracle(s_=(0.4 - h, 0.7))) / (2 * h),
        "s1": (oracle(s_=(0.4, 0.7 + h)) - oracle(s_=(0.4, 0.7 - h))) / (2 * h),
        "sigma": (oracle(sigma_=1.3 + h) - oracle(sigma_=1.3 - h)) / (2 * h),
        "lam": (oracle(lam_=1.2 + h) - oracle(lam_=1.2 - h)) / (2 * h),
    }
    grads = {"s0": s.grad[0], "s1": s.grad[1], "sigma": sigma.grad, "lam": lam.grad}
    for name, value in grads.items():
        np.testing.assert_allclose(float(value), fd[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_stochastic_enkf_likelihood_common_random_numbers_make_it_smooth():
    # With the same seed every evaluation, the stochastic EnKF likelihood is a deterministic smooth
    # function: repeated calls agree bit for bit and autograd equals its own central differences;
    # another seed gives another (Monte-Carlo) value.
    model, _, y = _problem()
    config = EnsembleLikelihood(method="enkf", members=100, seed=1)

    def ll(sigma_, cfg=config):
        return ensemble_log_likelihood(model, y, torch.tensor([0.4, 0.7], dtype=torch.float64), sigma_, 1.1, cfg)

    sigma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    value = ll(sigma)
    value.backward()
    assert float(value.detach()) == float(ll(torch.tensor(1.3, dtype=torch.float64)))
    assert float(value.detach()) != float(ll(torch.tensor(1.3, dtype=torch.float64), EnsembleLikelihood(method="enkf", members=100, seed=2)))
    h = 1e-6
    fd = (float(ll(torch.tensor(1.3 + h, dtype=torch.float64))) - float(ll(torch.tensor(1.3 - h, dtype=torch.float64)))) / (2 * h)
    np.testing.assert_allclose(float(sigma.grad), fd, rtol=1e-4)


def _posterior_moments(grid, logpost):
    w = np.exp(logpost - logpost.max())
    w /= w.sum()
    mean = float((w * grid).sum())
    return mean, float(np.sqrt((w * grid**2).sum() - mean**2)), np.cumsum(w)


def test_ensemble_svi_posterior_of_scales_agrees_with_exact_svi_posterior():
    # Same guide, optimiser, steps and seed on both likelihoods: the stochastic-optimisation noise is
    # common, so the difference is the EnKF's likelihood error (200 members, latent 4). Tolerance:
    # half an exact posterior sd per scale.
    model, _, y = _problem(T=100)
    kw = {"method": "svi", "svi_steps": 100, "lr": 0.08, "num_samples": 400, "guide": "normal", "seed": 0}
    exact = infer_hyperparameters(model, y, **kw)
    ens = infer_hyperparameters(model, y, likelihood="ensemble", ensemble={"method": "enkf", "members": 200}, **kw)
    assert ens.likelihood == "ensemble" and ens.draws["obs_scale"].shape == (1, 400, 2)
    assert "ensemble (enkf, 200 members" in arviz_compat.group_dataset(ens.inference_data, "posterior").attrs["likelihood"]
    for name in ("obs_scale", "model_error_scale"):
        sd = exact.draws[name].std((0, 1))
        shift = (ens.draws[name].mean((0, 1)) - exact.draws[name].mean((0, 1))).abs()
        assert bool((shift < 0.5 * sd).all()), (name, shift / sd)


def _inflation_oracle(q_factor, T=100, prior_scale=0.5):
    """Exact posterior of the inflation (scales at their nominal values, 1 + HalfNormal prior) by
    quadrature over the oracle's inflated-Kalman likelihood; full observation (m = d) keeps the
    inflated filter stable."""
    model, (A, Q, H, m0, P0), y = _problem(d=4, m=4, T=T, q_factor=q_factor)
    R = np.diag(model.obs_scale.numpy() ** 2)
    grid = 1.0 + np.linspace(0.0, 1.5, 301)[1:]
    lp = np.array([inflated_kalman_loglik(A, Q, H, R, m0, P0, y.numpy(), g) for g in grid])
    lp += stats.halfnorm(scale=prior_scale).logpdf(grid - 1.0)
    mean, sd, cdf = _posterior_moments(grid, lp)
    return model, y, mean, sd, grid[np.searchsorted(cdf, 0.95)]


# the correct-Q case (16 s) runs with the slow tests, keeping the default suite under its limit
@pytest.mark.parametrize("q_factor", [pytest.param(3.0, id="Q-too-small"),
                                      pytest.param(1.0, id="correct-Q", marks=pytest.mark.slow)])
def test_inflation_posterior_matches_the_inflated_kalman_oracle(q_factor):
    # Truth with 3x the model's Q: the exact posterior of the inflation lies well above 1 (the
    # forecast spread must grow); truth = model: it piles up near 1. The ETKF (exact for linear-
    # Gaussian, 20 members > 2 d) with SVI must reproduce it: mean within one oracle sd (mean-field
    # log-normal guide, 120 steps), and above 1 (resp. near 1) in the same way.
    model, y, mean, sd, q95 = _inflation_oracle(q_factor)
    ensemble = EnsembleLikelihood(method="etkf", members=20, infer_inflation=True, inflation_scale=0.5, scales="fixed")
    hp = infer_hyperparameters(model, y, method="svi", svi_steps=120, lr=0.1, num_samples=1000, guide="normal",
                               likelihood="ensemble", ensemble=ensemble, seed=0)
    assert set(hp.draws) == {"inflation"} and hp.draws["inflation"].shape == (1, 1000)
    lam = hp.draws["inflation"]
    assert bool((lam >= 1.0).all())
    assert abs(float(lam.mean()) - mean) < sd, (float(lam.mean()), mean, sd)
    q05_ens, q95_ens = (float(v) for v in hp.quantiles((0.05, 0.95))["inflation"])
    if q_factor > 1.0:
        assert mean - 1.0 > 5 * sd  # the oracle: clearly inflated
        assert q05_ens > 1.0 + 0.5 * (mean - 1.0)
    else:
        assert q95 - 1.0 < 0.15  # the oracle: near 1
        assert q95_ens < q95 + sd


def test_ensemble_bad_inputs_name_the_argument():
    with pytest.raises(BayesBridgeError, match="likelihood: expected one of 'exact', 'ensemble'"):
        HyperConfig(likelihood="particle")
    with pytest.raises(BayesBridgeError, match="ensemble: got an inflation prior with likelihood='exact'"):
        HyperConfig(ensemble=EnsembleLikelihood(infer_inflation=True))
    with pytest.raises(BayesBridgeError, match="ensemble.method: expected one of 'enkf', 'etkf'"):
        EnsembleLikelihood(method="enks")
    with pytest.raises(BayesBridgeError, match="ensemble.members"):
        EnsembleLikelihood(members=1)
    with pytest.raises(BayesBridgeError, match="ensemble.inflation_scale"):
        EnsembleLikelihood(infer_inflation=True, inflation_scale=0.0)
    with pytest.raises(BayesBridgeError, match="ensemble.scales"):
        EnsembleLikelihood(scales="fixed")
    with pytest.raises(BayesBridgeError, match="ensemble: member not understood; valid fields are method, members"):
        HyperConfig(likelihood="ensemble", ensemble={"member": 100})
    model, _, y = _problem(d=4, m=2, T=10)
    with pytest.raises(BayesBridgeError, match=r"ensemble.members: expected at least latent_dim \+ 1 = 5"):
        infer_hyperparameters(model, y, likelihood="ensemble", ensemble={"members": 4})
    with pytest.raises(BayesBridgeError, match="ensemble.members"):
        ensemble_log_likelihood(model, y, torch.ones(2), 1.0, config=EnsembleLikelihood(members=3))


def test_ensemble_likelihood_takes_a_nonlinear_model():
    # The exact likelihood refuses a nonlinear observation operator; the ensemble one runs SVI on it
    # and moves the observation-error scales from the nominal 0.5 towards the truth's 0.2.
    gen = torch.Generator().manual_seed(0)
    z, ys = torch.zeros(2, dtype=torch.float64), []
    for _ in range(60):
        z = 0.9 * z + 0.5 * torch.randn(2, generator=gen, dtype=torch.float64)
        ys.append(z + 0.1 * z**3 + 0.2 * torch.randn(2, generator=gen, dtype=torch.float64))
    y = torch.stack(ys)
    model = StateSpaceModel(LinearTransition(0.9 * np.eye(2), 0.5 * np.eye(2)), lambda z: z + 0.1 * z**3, 0.5)
    with pytest.raises(ParameterError, match="likelihood='ensemble'"):
        infer_hyperparameters(model, y)
    hp = infer_hyperparameters(model, y, method="svi", svi_steps=60, lr=0.1, num_samples=200, guide="normal",
                               likelihood="ensemble", ensemble={"members": 50}, seed=0)
    assert hp.draws["obs_scale"].shape == (1, 200, 2)
    assert bool(torch.isfinite(hp.draws["model_error_scale"]).all())
    assert bool((hp.mean()["obs_scale"] < 0.35).all()), hp.mean()


@pytest.mark.slow
def test_ensemble_nuts_posterior_agrees_with_exact_quadrature():
    # One observable and sigma: quadrature with the independent Kalman oracle gives the exact
    # posterior. NUTS on the stochastic-EnKF likelihood (200 members, latent 4, 80 steps) must converge
    # (R-hat) and put its means within half an exact sd plus three Monte-Carlo standard errors.
    model, (A, Q, H, m0, P0), y = _problem(d=4, m=1, T=80)
    hp = infer_hyperparameters(model, y, num_samples=200, warmup=150, chains=2, max_tree_depth=3, seed=1,
                               likelihood="ensemble", ensemble={"method": "enkf", "members": 200})
    assert max(hp.rhat.values()) < 1.05, hp.rhat
    assert set(arviz_compat.groups(hp.inference_data)) >= {"posterior", "sample_stats"}
    s_grid, sig_grid = np.linspace(0.05, 1.0, 40), np.linspace(0.6, 2.8, 40)
    prior = stats.lognorm(s=1.0, scale=0.5).logpdf(s_grid)[:, None] + stats.lognorm(s=1.0, scale=1.0).logpdf(sig_grid)
    lp = prior + np.array([[kalman_oracle(A, g**2 * Q, H, [[s**2]], m0, P0, y.numpy())[-1] for g in sig_grid]
                           for s in s_grid])
    w = np.exp(lp - lp.max())
    w /= w.sum()
    for name, grid, marginal in (("obs_scale", s_grid, w.sum(1)), ("model_error_scale", sig_grid, w.sum(0))):
        mean = (marginal * grid).sum()
        sd = np.sqrt((marginal * grid**2).sum() - mean**2)
        tol = 0.5 * sd + 3 * sd / np.sqrt(hp.ess_bulk[name])
        assert abs(float(hp.draws[name].mean()) - mean) < tol, (name, float(hp.draws[name].mean()), mean, sd)


@pytest.mark.slow
def test_ensemble_svi_posterior_agrees_with_exact_at_full_size():
    # The brief's size: latent 6, 3 observables, 300 steps, 300 stochastic-EnKF members.
    model, _, y = _problem(d=6, m=3, T=300)
    kw = {"method": "svi", "svi_steps": 200, "lr": 0.05, "num_samples": 400, "guide": "normal", "seed": 0}
    exact = infer_hyperparameters(model, y, **kw)
    ens = infer_hyperparameters(model, y, likelihood="ensemble", ensemble={"method": "enkf", "members": 300}, **kw)
    for name in ("obs_scale", "model_error_scale"):
        sd = exact.draws[name].std((0, 1))
        shift = (ens.draws[name].mean((0, 1)) - exact.draws[name].mean((0, 1))).abs()
        assert bool((shift < 0.5 * sd).all()), (name, shift / sd)


@pytest.mark.slow
def test_stochastic_enkf_inflation_near_one_with_many_members_above_one_with_few():
    # Correct model: the exact (infinite-ensemble) posterior of the inflation piles up near 1, and so
    # must the stochastic EnKF's with 500 members. With 6 members (latent 4) the EnKF's sampling
    # error shrinks its spread, which the likelihood corrects with an inflation clearly above that.
    model, y, mean, sd, q95 = _inflation_oracle(1.0, T=200)
    kw = {"method": "svi", "svi_steps": 120, "lr": 0.1, "num_samples": 1000, "guide": "normal", "seed": 0,
          "likelihood": "ensemble"}
    base = {"method": "enkf", "infer_inflation": True, "inflation_scale": 0.5, "scales": "fixed", "sampling": "random"}
    many = infer_hyperparameters(model, y, ensemble={**base, "members": 500}, **kw)
    few = infer_hyperparameters(model, y, ensemble={**base, "members": 6}, **kw)
    assert abs(float(many.draws["inflation"].mean()) - mean) < sd
    assert float(many.quantiles((0.95,))["inflation"][0]) < q95 + sd
    assert float(few.quantiles((0.05,))["inflation"][0]) > float(many.quantiles((0.95,))["inflation"][0])
