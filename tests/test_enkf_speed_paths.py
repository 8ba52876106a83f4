"""Fast paths of the ensemble Kalman engines: each must equal the general path, stay differentiable
and still detect divergence (oracles: the general path, central finite differences)."""

from __future__ import annotations

import pytest
import torch

from bayesbridge.errors import FilterDivergenceError, ParameterError
from bayesbridge.infer import assimilate
from bayesbridge.infer.enkf import EnKFConfig, generator_noise
from bayesbridge.infer.enkf import run as enkf_run
from bayesbridge.model import LinearGaussianModel

f64 = torch.float64


def problem(d=6, m=3, T=40, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    A = 0.8 * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))[0]
    H = torch.randn(m, d, generator=g, dtype=f64) / d**0.5
    model = LinearGaussianModel(A, 0.2 * torch.eye(d, dtype=f64), H, 0.3 * torch.eye(m, dtype=f64),
                                torch.zeros(d, dtype=f64), torch.eye(d, dtype=f64))
    _, y = model.simulate(T, generator=g, batch_shape=batch)
    return model, y


def loglik(model, y, variant, q, r, inflation, sampling="random"):
    d, m = model.latent_dim, model.obs_dim
    lin = LinearGaussianModel(model.A, q * torch.eye(d, dtype=f64), model.H, r * torch.eye(m, dtype=f64),
                              model.m0, model.P0)
    res = assimilate(lin, y, variant, members=40, seed=11, inflation=inflation, sampling=sampling,
                     store_ensemble=False)
    return res.log_evidence


@pytest.mark.parametrize("variant,sampling", [("enkf", "random"), ("etkf", "random"), ("etkf", "exact")])
def test_log_evidence_gradient_matches_finite_differences(variant, sampling):
    model, y = problem(T=30, seed=1)
    y[7, 1] = float("nan")  # a missing component goes through the masked path
    theta = torch.tensor([0.2, 0.3, 1.05], dtype=f64, requires_grad=True)
    ll = loglik(model, y, variant, theta[0], theta[1], theta[2], sampling)
    (grad,) = torch.autograd.grad(ll, theta)
    fd = torch.empty(3, dtype=f64)
    with torch.no_grad():
        for k in range(3):
            h = 1e-5
            up, down = theta.detach().clone(), theta.detach().clone()
            up[k] += h
            down[k] -= h
            fd[k] = (loglik(model, y, variant, *up, sampling) - loglik(model, y, variant, *down, sampling)) / (2 * h)
    assert torch.all(grad.abs() > 1e-3)  # every parameter matters
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-6)


def test_inflation_tensor_equal_to_float_and_validated():
    model, y = problem()
    a = assimilate(model, y, "etkf", members=20, seed=2, inflation=1.1)
    b = assimilate(model, y, "etkf", members=20, seed=2, inflation=torch.tensor(1.1, dtype=f64))
    torch.testing.assert_close(a.filtered_ensemble, b.filtered_ensemble, rtol=0, atol=1e-12)
    with pytest.raises(ParameterError, match="0-dim"):
        EnKFConfig(inflation=torch.tensor([1.1, 1.2]))
    with pytest.raises(ParameterError, match="inflation.*>= 1"):
        EnKFConfig(inflation=torch.tensor(0.9))


@pytest.mark.parametrize("variant", ["enkf", "etkf", "enks"])
def test_diagonal_fast_paths_equal_general_path(variant):
    # diagonal Q and R take elementwise shortcuts; tensors requiring grad take the general path
    model, y = problem(seed=3, batch=(2,))
    y[0, 4, :] = float("nan")
    y[1, 9, 0] = float("nan")
    general = LinearGaussianModel(model.A, model.Q.clone().requires_grad_(), model.H,
                                  model.R.clone().requires_grad_(), model.m0, model.P0)
    fast = assimilate(model, y, variant, members=25, seed=4)
    slow = assimilate(general, y, variant, members=25, seed=4)
    torch.testing.assert_close(fast.filtered_ensemble, slow.filtered_ensemble.detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.log_evidence, slow.log_evidence.detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.diagnostics.innovation_var, slow.diagnostics.innovation_var.detach(),
                               equal_nan=True)


@pytest.mark.parametrize("variant", ["etkf", "enkf"])
def test_block_noise_equals_step_by_step_draws(variant):
    # the ETKF draws only model noise, so blocks of T steps are the same stream as T draws
    model, y = problem(T=50, seed=5)
    cfg = EnKFConfig(variant=variant, members=30, sampling="random")
    blocks = enkf_run(model, y, cfg, torch.Generator().manual_seed(6))
    stepwise = enkf_run(model, y, cfg, None, noise=generator_noise(torch.Generator().manual_seed(6)))
    small = enkf_run(model, y, cfg, None, noise=generator_noise(torch.Generator().manual_seed(6), 50, 30 * 6 * 7))
    if variant == "etkf":
        torch.testing.assert_close(blocks.filtered_ensemble, stepwise.filtered_ensemble, rtol=0, atol=0)
        torch.testing.assert_close(blocks.filtered_ensemble, small.filtered_ensemble, rtol=0, atol=0)
    else:  # model and observation noise come from one stream in another order: same law only
        assert not torch.equal(blocks.filtered_mean, stepwise.filtered_mean)
        exact = assimilate(model, y, "kalman")
        for res in (blocks, stepwise, small):
            err = (res.filtered_mean - exact.filtered_mean).pow(2).mean().sqrt()
            assert float(err) < 0.25


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_divergence_after_the_first_check_block_names_the_step(bad):
    model, y = problem(T=150, seed=7)

    class Exploding:
        latent_dim, obs_dim = model.latent_dim, model.obs_dim

        def initial(self):
            return model.initial()

        def transition_mean(self, z, step):
            out = model.transition_mean(z, step)
            return out * bad if step == 101 else out

        def transition_cov(self, step):
            return model.transition_cov(step)

        def observe(self, z):
            return model.observe(z)

        def obs_cov(self):
            return model.obs_cov()

    for variant in ("enkf", "etkf"):
        with pytest.raises(FilterDivergenceError, match="time step 101"):
            assimilate(Exploding(), y, variant, members=20, seed=1)
