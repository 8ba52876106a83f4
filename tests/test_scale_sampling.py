"""Floored priors of the observation-error scales and the few-draw sampler of the scale posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lg_oracle import kalman_loglik_grid, kalman_oracle, random_lg_problem
from scipy import stats

from bayesbridge.errors import BayesBridgeError
from bayesbridge.infer.scale_mixture import scale_mixture_draws
from bayesbridge.infer.scale_sampling import ScaleSamplerConfig, laplace_scales, sample_error_scales
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel
from bayesbridge.model.scale_priors import FlooredHalfNormal, floored_scale_prior

FLOOR, TAU = 0.2, 0.3


def test_floored_half_normal_is_the_shifted_scipy_half_normal():
    prior = FlooredHalfNormal(torch.tensor([FLOOR], dtype=torch.float64), torch.tensor([TAU], dtype=torch.float64))
    ref = stats.halfnorm(loc=FLOOR, scale=TAU)
    x = torch.tensor([0.1, 0.2, 0.25, 0.6, 1.4], dtype=torch.float64)
    lp = prior.log_prob(x[:, None])[:, 0].numpy()
    assert lp[0] == -np.inf  # below the floor: no density
    np.testing.assert_allclose(lp[1:], ref.logpdf(x[1:].numpy()), rtol=1e-12)
    np.testing.assert_allclose(prior.cdf(x[:, None])[:, 0].numpy(), ref.cdf(x.numpy()), atol=1e-12)
    q = torch.tensor([[0.05], [0.5], [0.95]], dtype=torch.float64)
    np.testing.assert_allclose(prior.icdf(q)[:, 0].numpy(), ref.ppf(q[:, 0].numpy()), rtol=1e-10)
    draws = prior.sample(torch.Size([20000]))
    assert float(draws.min()) >= FLOOR
    assert abs(float(draws.mean()) - ref.mean()) < 4 * ref.std() / np.sqrt(20000)
    assert float(prior.mean) == pytest.approx(ref.mean(), rel=1e-12)
    assert float(prior.variance) == pytest.approx(ref.var(), rel=1e-12)
    # the unconstrained coordinate log(s - r) maps the whole line above the floor
    t = torch.distributions.biject_to(prior.support)
    assert float(t(torch.tensor([-30.0]))) >= FLOOR


def _problem(T=80, seed=5, true_sigma=1.5, sigma_prior=None):
    A, Q, H, _, m0, P0 = random_lg_problem(d=2, m=1, seed=seed, obs_noise=0.5)
    truth = LinearGaussianModel(A, true_sigma**2 * Q, H, np.diag([0.45**2]), m0, P0)
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, FLOOR, initial_mean=m0, initial_cov=P0,
                            obs_scale_prior=floored_scale_prior([FLOOR], TAU / FLOOR), model_error_prior=sigma_prior)
    return model, (A, Q, H, m0, P0), y


def _grid_moments(model, parts, y, sig_grid=None):
    """Posterior means and sds of (s, sigma) by quadrature with the independent numpy Kalman filter."""
    A, Q, H, m0, P0 = parts
    s_grid = FLOOR + np.linspace(0.0, 1.2, 121)[1:]
    sig_grid = np.linspace(0.5, 3.5, 121) if sig_grid is None else sig_grid
    lp = kalman_loglik_grid(A, sig_grid[None, :, None, None] ** 2 * Q, H, s_grid[:, None, None, None] ** 2,
                            m0, P0, y.numpy())
    lp += stats.halfnorm(loc=FLOOR, scale=TAU).logpdf(s_grid)[:, None]
    lp += model.model_error_prior.log_prob(torch.as_tensor(sig_grid)).numpy()[None, :]
    w = np.exp(lp - lp.max())
    # log p(y) = log of the integral of p(y | s, sigma) p(s) p(sigma), by the Riemann sum of the grid
    out = {"log_evidence": float(lp.max() + np.log(w.sum() * (s_grid[1] - s_grid[0]) * (sig_grid[1] - sig_grid[0])))}
    w /= w.sum()
    for name, grid, marg in (("obs_scale", s_grid, w.sum(1)), ("model_error_scale", sig_grid, w.sum(0))):
        mean = float((marg * grid).sum())
        out[name] = (mean, float(np.sqrt((marg * grid**2).sum() - mean**2)))
    return out


@pytest.mark.parametrize("sampler", ["laplace", pytest.param("nuts", marks=pytest.mark.slow)])
def test_draws_match_the_quadrature_posterior(sampler):
    model, parts, y = _problem()
    ref = _grid_moments(model, parts, y)
    log_evidence = ref.pop("log_evidence")
    config = ScaleSamplerConfig(draws=300, sampler=sampler, proposal_draws=2000, warmup=150, nuts_draws=300)
    draws = sample_error_scales(model, y, config, generator=torch.Generator().manual_seed(1))
    assert draws.sampler == sampler
    assert draws.obs_scale.shape == (300, 1) and draws.model_error_scale.shape == (300,)
    assert float(draws.obs_scale.min()) >= FLOOR  # the floor holds for every draw
    torch.testing.assert_close(draws.floor, torch.tensor([FLOOR], dtype=torch.float64))
    if sampler == "laplace":
        ess = draws.stats["importance_ess"]
        # the truncated Laplace proposal covers the posterior cut at the floor
        assert 0.1 * config.proposal_draws < ess <= config.proposal_draws
        assert draws.stats["log_evidence"] == pytest.approx(log_evidence, abs=0.05)
    else:
        ess = draws.stats["ess_bulk_min"]
    n_eff = min(ess, config.draws)
    got = {"obs_scale": draws.obs_scale[:, 0], "model_error_scale": draws.model_error_scale}
    for name, (mean, sd) in ref.items():
        assert abs(float(got[name].mean()) - mean) < 4 * sd / np.sqrt(n_eff), (name, float(got[name].mean()), mean)
        assert 0.7 < float(got[name].std()) / sd < 1.4, name
    table = draws.table()
    assert list(table.columns) == [*model.obs_names, "model_error_scale"] and len(table) == 300


def test_floored_model_error_prior_holds_sigma_at_its_floor():
    # Data simulated with half the nominal model noise want sigma = 0.5; under the floored prior
    # sigma = 1 + |N(0, 0.5^2)| every draw stays >= 1 and the draws match the quadrature
    # posterior on [1, 3] (piled against the floor: the truncated-Gaussian coordinate of the sampler).
    sigma_prior = FlooredHalfNormal(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    model, parts, y = _problem(T=120, true_sigma=0.5, sigma_prior=sigma_prior)
    ref = _grid_moments(model, parts, y, sig_grid=1.0 + np.linspace(0.0, 2.0, 161)[1:])
    ref.pop("log_evidence")
    draws = sample_error_scales(model, y, ScaleSamplerConfig(draws=300, proposal_draws=2000),
                                generator=torch.Generator().manual_seed(2))
    assert draws.sampler == "laplace" and draws.stats["importance_ess"] > 200
    assert float(draws.model_error_scale.min()) >= 1.0 and float(draws.mode["model_error_scale"]) >= 1.0
    n_eff = min(draws.stats["importance_ess"], 300)
    got = {"obs_scale": draws.obs_scale[:, 0], "model_error_scale": draws.model_error_scale}
    for name, (mean, sd) in ref.items():
        assert abs(float(got[name].mean()) - mean) < 4 * sd / np.sqrt(n_eff), (name, float(got[name].mean()), mean)
        assert 0.7 < float(got[name].std()) / sd < 1.4, name
    assert ref["model_error_scale"][0] < 1.2  # the posterior is piled against the floor


def test_low_importance_ess_falls_back_to_nuts():
    model, _, y = _problem(T=40)
    config = ScaleSamplerConfig(draws=5, proposal_draws=8, min_ess=1e9, warmup=10, nuts_draws=10)
    draws = sample_error_scales(model, y, config, generator=torch.Generator().manual_seed(0))
    assert draws.sampler == "nuts" and "divergences" in draws.stats and draws.stats["importance_ess"] < 1e9


@pytest.mark.parametrize(("call", "option"), [
    (lambda: floored_scale_prior([0.2, 0.0]), "floor"),
    (lambda: floored_scale_prior([0.2, float("inf")]), "floor"),
    (lambda: floored_scale_prior([-0.1]), "floor"),
    (lambda: floored_scale_prior([0.2], 0.0), "excess_scale"),
    (lambda: floored_scale_prior([0.2], float("nan")), "excess_scale"),
    (lambda: ScaleSamplerConfig(sampler="hmc"), "sampler"),
    (lambda: ScaleSamplerConfig(draws=0), "draws"),
    (lambda: ScaleSamplerConfig(proposal_draws=1.5), "proposal_draws"),
    (lambda: ScaleSamplerConfig(warmup=-1), "warmup"),
    (lambda: ScaleSamplerConfig(min_ess=-2.0), "min_ess"),
])
def test_bad_settings_name_the_option(call, option):
    with pytest.raises(BayesBridgeError, match=option) as info:
        call()
    assert isinstance(info.value, ValueError | TypeError)


@pytest.mark.parametrize("steady_tol", [0.0, 1e-9])
def test_mixture_draws_are_the_exact_smoother_at_each_scale_draw(steady_tol):
    # Two scale draws of a time-invariant model; per draw, FFBS trajectories against the numpy
    # RTS smoother (means, marginal variances and the lag-one covariance, which only whole
    # trajectories get right) and the exact log-evidence. 120 steps reach the steady state.
    A, Q, H, _, m0, P0 = random_lg_problem(d=2, m=2, seed=3, obs_noise=0.5)
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    y = torch.randn(120, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y[30:33, 0] = float("nan")
    S, sig = torch.tensor([[0.3, 0.6], [0.8, 0.4]], dtype=torch.float64), torch.tensor([1.5, 0.7], dtype=torch.float64)
    n = 3000
    res = scale_mixture_draws(model, y, S, sig, n, generator=torch.Generator().manual_seed(0), steady_tol=steady_tol)
    assert res.smoothed_ensemble.shape == (120, 2 * n, 2) and res.log_evidence.shape == ()
    lls, means = [], []
    for j in range(2):
        mf, Pf, ms, Ps, ll = kalman_oracle(A, float(sig[j]) ** 2 * Q, H, np.diag(S[j].numpy() ** 2), m0, P0, y.numpy())
        lls.append(ll)
        means.append(mf)
        z = res.smoothed_ensemble[:, j * n:(j + 1) * n].numpy()  # (T, n, d): component j
        sd = np.sqrt(np.diagonal(Ps, axis1=1, axis2=2))
        assert np.abs((z.mean(1) - ms) / sd).max() < 4.5 / np.sqrt(n) * 1.2
        np.testing.assert_allclose(z.var(1) / np.diagonal(Ps, axis1=1, axis2=2), 1.0, atol=0.15)
        # lag-one cross-covariance Cov(z_t, z_{t+1}) = G_t Ps_{t+1} (RTS)
        t = 60
        G = np.linalg.solve(A @ Pf[t] @ A.T + float(sig[j]) ** 2 * Q, A @ Pf[t]).T
        lag = np.einsum("ni,nj->ij", z[t] - z[t].mean(0), z[t + 1] - z[t + 1].mean(0)) / (n - 1)
        np.testing.assert_allclose(lag, G @ Ps[t + 1], atol=0.1 * float(np.abs(Ps[t]).max()))
    # the mixture's filtered mean and the mean log-likelihood over the components
    np.testing.assert_allclose(res.filtered_mean.numpy(), np.mean(means, 0), atol=1e-8)
    assert float(res.log_evidence) == pytest.approx(np.mean(lls), rel=1e-8)


def test_mixture_draws_of_several_runs_keep_run_and_component_order():
    A, Q, H, _, m0, P0 = random_lg_problem(d=2, m=1, seed=4, obs_noise=0.5)
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    y = torch.randn(2, 50, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y[1] += 2.0  # run 1 far from run 0
    S, sig = torch.tensor([[0.3], [0.9]], dtype=torch.float64), torch.tensor([1.2, 0.6], dtype=torch.float64)
    n = 2000
    res = scale_mixture_draws(model, y, S, sig, n, generator=torch.Generator().manual_seed(1))
    assert res.smoothed_ensemble.shape == (2, 50, 2 * n, 2) and res.log_evidence.shape == (2,)
    for r in range(2):
        for j in range(2):
            _, _, ms, Ps, _ = kalman_oracle(A, float(sig[j]) ** 2 * Q, H, [[float(S[j, 0]) ** 2]], m0, P0, y[r].numpy())
            z = res.smoothed_ensemble[r, :, j * n:(j + 1) * n].numpy()  # run r, component j
            sd = np.sqrt(np.diagonal(Ps, axis1=1, axis2=2))
            assert np.abs((z.mean(1) - ms) / sd).max() < 5.0 / np.sqrt(n), (r, j)


def test_laplace_scales_start_inside_the_supports_near_the_posterior_mean():
    # the starting point svi takes: above every floor, and within a posterior sd of the
    # quadrature mean (the cut-Gaussian mean of a coordinate piled on its floor)
    sigma_prior = FlooredHalfNormal(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    model, parts, y = _problem(T=120, true_sigma=0.5, sigma_prior=sigma_prior)
    ref = _grid_moments(model, parts, y, sig_grid=1.0 + np.linspace(0.0, 2.0, 161)[1:])
    start = laplace_scales(model, y)
    assert start["obs_scale"].shape == (1,) and start["model_error_scale"].shape == ()
    assert float(start["obs_scale"][0]) > FLOOR and float(start["model_error_scale"]) > 1.0
    for name, value in (("obs_scale", float(start["obs_scale"][0])),
                        ("model_error_scale", float(start["model_error_scale"]))):
        mean, sd = ref[name]
        assert abs(value - mean) < sd, (name, value, mean, sd)


def test_batched_potential_of_floored_priors_equals_the_pointwise_one():
    # svi's ELBO evaluates its draws in one compiled call: values and gradients must be those of
    # the one-point potential (autograd through the priors and the compiled likelihood)
    from bayesbridge.infer.scale_posterior import ScalePosterior

    sigma_prior = FlooredHalfNormal(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    model, _, y = _problem(T=60, sigma_prior=sigma_prior)
    post = ScalePosterior(model, y)
    u = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    batch = post.potential_batch(u)
    (g_batch,) = torch.autograd.grad(batch.sum(), u)
    single = torch.stack([post.potential({"obs_scale": r[:-1], "model_error_scale": r[-1]}) for r in u])
    (g_single,) = torch.autograd.grad(single.sum(), u)
    torch.testing.assert_close(batch, single, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(g_batch, g_single, rtol=1e-9, atol=1e-9)
