"""The compiled exact likelihood of the error scales and its gradient, and the NUTS potential built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lg_oracle import kalman_oracle, random_lg_problem

from bayesbridge.errors import BayesBridgeError, ParameterError
from bayesbridge.infer.hyper import HyperConfig
from bayesbridge.infer.scale_likelihood import ScaleLikelihood
from bayesbridge.infer.scale_posterior import ScalePosterior
from bayesbridge.model import LinearTransition, StateSpaceModel
from bayesbridge.model.pyro_program import masked_gaussian_hmm


class _Seasonal:
    """A time-varying affine transition with offsets: A_t = rho_t U, b_t."""

    latent_dim = 3

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.U = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
        self.b = 0.1 * torch.randn(12, 3, generator=g, dtype=torch.float64)

    def mean(self, z, step=0):
        return (0.8 + 0.1 * np.cos(step)) * z @ self.U.mT + self.b[step % 12]

    def noise_scale_tril(self, step=0):
        return (0.5 + 0.1 * (step % 2)) * torch.eye(3, dtype=torch.float64)


class _Monthly(_Seasonal):
    """A seasonal linear inverse model: A_t, b_t and L_t repeat every 12 steps (period 12)."""

    def mean(self, z, step=0):
        return (0.8 + 0.1 * np.cos(2 * np.pi * step / 12)) * z @ self.U.mT + self.b[step % 12]


def _affine_model(transition=None):
    return StateSpaceModel(transition or _Seasonal(),
                           lambda z: z[..., :2] * torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.3,
                           0.4, obs_names=("a", "b"))


@pytest.mark.parametrize("case", ["invariant", "periodic", "time-varying"])
def test_value_and_gradient_equal_gaussian_hmm_with_missing_values_and_batch(case):
    # 240 steps: the (periodic) steady state is reached, left at missing values and re-entered
    if case == "invariant":
        A, Q, H, _, m0, P0 = random_lg_problem(d=4, m=2, seed=1)
        model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    else:
        model = _affine_model(_Monthly() if case == "periodic" else None)
    y = torch.randn(2, 240, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[0, 5, 1] = y[1, 100:104] = y[1, 187, 0] = float("nan")
    y[0, 160:200, 0] = float("nan")  # a long half-observed stretch
    lik = ScaleLikelihood(model, y)
    assert lik._args[0].shape[0] == {"invariant": 1, "periodic": 12, "time-varying": 240}[case]
    s = torch.tensor([0.35, 0.8], dtype=torch.float64, requires_grad=True)
    sig = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    value = lik(s, sig)
    value.backward()
    masked = masked_gaussian_hmm(model, y, obs_scale=s, model_error_scale=sig)
    ref = (masked.hmm.log_prob(masked.filled) + masked.log_correction).sum()
    g_s, g_sig = torch.autograd.grad(ref, (s, sig))
    torch.testing.assert_close(value.detach(), ref.detach(), rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(s.grad, g_s, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(sig.grad, g_sig, rtol=1e-7, atol=1e-7)
    # no steady-state reuse gives the same numbers; the value-only pass the same value
    exact = ScaleLikelihood(model, y, steady_tol=0.0).value_and_grad([0.35, 0.8], 1.3)
    np.testing.assert_allclose(exact[0], float(value.detach()), rtol=1e-11)
    np.testing.assert_allclose(exact[1], np.append(s.grad.numpy(), float(sig.grad)), rtol=1e-7, atol=1e-8)
    # (the value-only pass reaches the steady state at another step: agreement to the tolerance)
    assert lik.value_and_grad([0.35, 0.8], 1.3, grad=False)[0] == pytest.approx(float(value.detach()), rel=1e-10)


def test_value_equals_the_independent_numpy_oracle():
    A, Q, H, _, m0, P0 = random_lg_problem(d=5, m=3, seed=2)
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5, initial_mean=m0, initial_cov=P0)
    y = np.random.default_rng(1).normal(size=(300, 3))
    y[17, 2] = np.nan
    s, sig = np.array([0.2, 0.5, 0.9]), 0.7
    oracle = kalman_oracle(A, sig**2 * Q, H, np.diag(s**2), m0, P0, y)[-1]
    assert ScaleLikelihood(model, y).value_and_grad(s, sig)[0] == pytest.approx(oracle, rel=1e-11)


def test_potential_equals_the_pyro_programs_potential():
    # ScalePosterior's potential (log-normal fast path and generic path) against the potential that
    # Pyro's NUTS builds from the model program; gradients too.
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    from bayesbridge.model.pyro_program import isolated_pyro, state_space_program

    model = _affine_model()
    y = torch.randn(60, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y[3, 0] = float("nan")
    post = ScalePosterior(model, y)
    with isolated_pyro(torch.Generator().manual_seed(0)):
        _, pyro_potential, _, _ = initialize_model(lambda obs: state_space_program(model, obs), model_args=(y,))
    params = {"obs_scale": torch.tensor([-0.7, 0.1], dtype=torch.float64),
              "model_error_scale": torch.tensor(0.3, dtype=torch.float64)}
    g_ref, u_ref = potential_grad(pyro_potential, params)
    assert post._lognormal is not None
    for fast in (True, False):
        if not fast:
            post._lognormal = None
        g, u = potential_grad(post.potential, params)
        torch.testing.assert_close(u, u_ref, rtol=1e-9, atol=1e-9)
        for k in params:
            torch.testing.assert_close(g[k], g_ref[k], rtol=1e-6, atol=1e-7)
    back = post.unconstrain(post.constrain(params))
    torch.testing.assert_close(back["obs_scale"], params["obs_scale"])


def test_bad_inputs_name_the_option():
    nonlinear = StateSpaceModel(LinearTransition(0.9 * np.eye(2), 0.3 * np.eye(2)), lambda z: z**3, 0.3)
    with pytest.raises(ParameterError, match="affine"):
        ScaleLikelihood(nonlinear, np.zeros((10, 2)))
    model = _affine_model()
    with pytest.raises(BayesBridgeError, match="steady_tol"):
        ScaleLikelihood(model, np.zeros((10, 2)), steady_tol=-1.0)
    with pytest.raises(BayesBridgeError, match="engine: expected one of 'auto', 'compiled', 'pyro'"):
        HyperConfig(engine="jax")
    with pytest.raises(BayesBridgeError, match="engine: 'compiled'"):
        HyperConfig(engine="compiled", likelihood="ensemble")
