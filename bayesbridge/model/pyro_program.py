"""The state-space model as a Pyro program (usable with SVI, NUTS and ``Predictive``).

:func:`state_space_program` samples the global error scales from their priors,

.. math::
    s_k \\sim p(s_k), \\quad \\sigma \\sim p(\\sigma),

and then the observations. When the model is affine (``f_t(z) = A_t z + b_t``,
``h(z) = H z + c``) the latent chain is marginalised exactly with
:class:`pyro.distributions.GaussianHMM` (row-vector matrices ``A_t^T``, ``H^T``; its initial
state ``N(m_0, P_0)`` is ``z_0``, one step before the first observation ``y_1``). Otherwise the
chain ``z_0, z_1, ..., z_T`` is sampled sequentially under :func:`pyro.markov`.

Missing observations (NaN) are skipped component by component. In the GaussianHMM a missing
component ``k`` at time ``t`` gets a zero column in the observation matrix, observation zero and
unit noise, which makes its factor the constant :math:`N(0; 0, 1)`; that constant
(:math:`-\\tfrac12 \\log 2\\pi` per missing value) is removed again with :func:`pyro.factor`, so
``log p(y)`` is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from bayesbridge.errors import ParameterError, ShapeMismatchError
from bayesbridge.model.tensors import as_tensor, jittered

__all__ = ["MaskedHMM", "masked_gaussian_hmm", "state_space_program", "isolated_pyro"]


@dataclass
class MaskedHMM:
    """A GaussianHMM with missing values filled in, and the constant that makes it exact.

    Attributes
    ----------
    hmm : pyro.distributions.GaussianHMM
        Batch shape ``(*scale_batch, *batch)``, event shape ``(T, m)``.
    filled : Tensor (*batch, T, m)
        Observations with NaN replaced by 0.
    log_correction : Tensor (*batch,)
        ``+0.5 log(2 pi)`` per missing value; ``hmm.log_prob(filled) + log_correction`` is the
        exact ``log p(y_{1:T})``.
    """

    hmm: dist.GaussianHMM
    filled: torch.Tensor | None
    log_correction: torch.Tensor


def masked_gaussian_hmm(
    model,
    observations: torch.Tensor | None,
    *,
    n_steps: int | None = None,
    obs_scale: torch.Tensor | None = None,
    model_error_scale: torch.Tensor | None = None,
) -> MaskedHMM:
    """Exact marginal distribution of the observations of an affine model.

    Parameters
    ----------
    model : StateSpaceModel
        A :class:`~bayesbridge.model.state_space.StateSpaceModel`; must be affine (:meth:`StateSpaceModel.affine_structure` not ``None``).
    observations : Tensor (*batch, T, m) or None
        NaN marks missing components; ``None`` needs ``n_steps`` (sampling).
    obs_scale : Tensor (*s, m), optional
        Observation-error scales (default: the model's nominal ones). Leading dims ``*s`` (e.g.
        posterior draws) become leading batch dims of the HMM.
    model_error_scale : Tensor (*s,), optional
        Model-error scale ``sigma`` (default nominal).
    """
    T = int(observations.shape[-2]) if observations is not None else int(n_steps)
    aff = model.affine_structure(T)
    if aff is None:
        raise ParameterError(
            "model: the exact GaussianHMM marginalisation needs an affine transition and observation "
            "operator; this model is nonlinear. Use a particle filter, an EnKF or a structured guide."
        )
    s = model.obs_scale if obs_scale is None else as_tensor(obs_scale, "obs_scale")
    sigma = torch.tensor(model.model_error_scale, dtype=torch.float64) if model_error_scale is None else (
        as_tensor(model_error_scale, "model_error_scale")
    )
    yb = tuple(observations.shape[:-2]) if observations is not None else ()
    s_batch = tuple(s.shape[:-1])
    pad = (1,) * len(yb)
    s = s.reshape(*s_batch, *pad, 1, s.shape[-1])  # (*s, *1, T=1, m)
    sigma = sigma.reshape(*sigma.shape, *pad, 1, 1, 1)  # (*s, *1, T=1, 1, 1)
    # every per-step parameter keeps a time dim (size 1 if time-invariant): GaussianHMM reads
    # the rightmost batch dim of the transition and observation parts as time.
    A, b, L = (aff.A[:1], aff.b[:1], aff.L[:1]) if aff.time_invariant else (aff.A, aff.b, aff.L)
    scale_tril = sigma * L
    H_row = aff.H.mT  # (d, m)
    loc, scale, filled = aff.c, s, None
    correction = torch.zeros(yb, dtype=torch.float64)
    if observations is not None:
        mask = ~torch.isnan(observations)
        filled = torch.where(mask, observations, torch.zeros((), dtype=torch.float64))
        if not bool(mask.all()):
            H_row = H_row * mask[..., None, :].to(H_row.dtype)  # (*batch, T, d, m)
            loc = torch.where(mask, aff.c, 0.0)
            scale = torch.where(mask, s, torch.ones((), dtype=torch.float64))
            correction = 0.5 * math.log(2 * math.pi) * (~mask).sum((-1, -2)).to(torch.float64)
    init = dist.MultivariateNormal(model.m0, covariance_matrix=jittered(model.P0))
    trans = dist.MultivariateNormal(b, scale_tril=scale_tril)
    obs = dist.Normal(loc, scale).to_event(1)
    hmm = dist.GaussianHMM(init, A.mT, trans, H_row, obs, duration=T)
    return MaskedHMM(hmm, filled, correction)


def state_space_program(model, observations=None, *, n_steps: int | None = None) -> None:
    """Pyro program of :class:`~bayesbridge.model.StateSpaceModel`.

    Sites: ``obs_scale`` ``(m,)``, ``model_error_scale`` ``()``; then either ``y`` (the whole
    series, exact GaussianHMM marginalisation of an affine chain, batch dims as event dims) or
    ``z_0 .. z_T`` ``(B, d)`` and ``y_1 .. y_T`` ``(B, m)`` in a ``runs`` plate of size ``B``
    (the flattened batch; ``B = 1`` for a single series).

    Parameters
    ----------
    observations : array (*batch, T, m) or None
        NaN = missing. ``None`` samples observations (pass ``n_steps``), e.g. in ``Predictive``.
    """
    if observations is not None:
        y = as_tensor(observations, "observations")
        if y.ndim < 2 or y.shape[-1] != model.obs_dim:
            raise ShapeMismatchError(
                f"observations: expected shape (*batch, T, {model.obs_dim}), got {tuple(y.shape)}."
            )
        T, batch = int(y.shape[-2]), tuple(y.shape[:-2])
    else:
        if n_steps is None or n_steps < 1:
            raise ShapeMismatchError("n_steps: expected a positive number of steps when observations is None.")
        y, T, batch = None, int(n_steps), ()
    s = pyro.sample("obs_scale", model.obs_scale_prior)
    sigma = pyro.sample("model_error_scale", model.model_error_prior)
    if model.affine_structure(T) is not None:
        masked = masked_gaussian_hmm(model, y, n_steps=T, obs_scale=s, model_error_scale=sigma)
        hmm = masked.hmm.to_event(len(batch)) if batch else masked.hmm
        pyro.sample("y", hmm, obs=masked.filled)
        if y is not None:
            pyro.factor("missing_correction", masked.log_correction.sum())
        return
    B = math.prod(batch) if batch else 1
    yf = y.reshape(B, T, model.obs_dim) if y is not None else None
    mask = ~torch.isnan(yf) if yf is not None else None
    filled = torch.where(mask, yf, 0.0) if yf is not None else None
    L0 = torch.linalg.cholesky(jittered(model.P0))
    with pyro.plate("runs", B, dim=-1):
        z = pyro.sample("z_0", dist.MultivariateNormal(model.m0.expand(B, -1), scale_tril=L0))
        for t in pyro.markov(range(T)):
            Lt = sigma * as_tensor(model.transition.noise_scale_tril(t), "noise_scale_tril")
            z = pyro.sample(f"z_{t + 1}", dist.MultivariateNormal(model.transition.mean(z, t), scale_tril=Lt))
            noise = dist.Normal(model.observe(z), s)
            if mask is not None:
                noise = noise.mask(mask[:, t, :])
            pyro.sample(f"y_{t + 1}", noise.to_event(1), obs=None if filled is None else filled[:, t, :])


@contextmanager
def isolated_pyro(generator: torch.Generator) -> Iterator[None]:
    """Run Pyro inference reproducibly without touching global state.

    Pyro draws from torch's global generator and keeps parameters in a global store; inside this
    context the global RNG state is forked (restored on exit) and seeded from ``generator``, and
    a fresh parameter store is used (the previous one is restored on exit).
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        torch.manual_seed(seed)
        yield
