"""The exact posterior density of the error scales of an affine model, in unconstrained coordinates.

For observation-error scales :math:`s \\in (0, \\infty)^m` and the model-error scale
:math:`\\sigma > 0` with priors :math:`p(s)`, :math:`p(\\sigma)` (the model's
``obs_scale_prior`` and ``model_error_prior``), samplers and variational fits work on
unconstrained coordinates :math:`u = (T_s^{-1}(s), T_\\sigma^{-1}(\\sigma))`, with
:math:`T = ` ``torch.distributions.biject_to(prior.support)`` (``exp`` for the default
log-normal priors), exactly as Pyro does for a model's sample sites. The potential energy is

.. math::
    U(u) = -\\log p(y_{1:T} \\mid s, \\sigma) - \\log p(s) - \\log p(\\sigma)
           - \\log \\Big|\\frac{\\partial (s, \\sigma)}{\\partial u}\\Big|,

with the exact Kalman marginal likelihood and its gradient of
:class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood` (one compiled pass per evaluation),
the priors and the Jacobian in torch. :class:`ScalePosterior` is that potential in the form
Pyro's ``HMC``/``NUTS`` take as ``potential_fn`` (a dict of unconstrained tensors), so every
leapfrog step costs one compiled likelihood pass and a few small torch operations instead of a
trace of the Pyro program with a :class:`~pyro.distributions.GaussianHMM`. With log-normal
priors (the default, ``LogNormal(mu, tau)``) and ``u = log s``, prior and Jacobian together are
:math:`\\log N(u; \\mu, \\tau^2)`, whose gradient :math:`-(u - \\mu) / \\tau^2` is written out, and
the whole potential is one :class:`torch.autograd.Function` (no autograd graph at all); other
priors go through torch's autograd for their part.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Independent, LogNormal, biject_to

from bayesbridge.infer.scale_likelihood import ScaleLikelihood
from bayesbridge.model.state_space import as_state_space_model

__all__ = ["ScalePosterior", "SITES"]

SITES = ("obs_scale", "model_error_scale")
"""Names of the two scale sites (as in :func:`~bayesbridge.model.pyro_program.state_space_program`)."""


def _lognormal_parts(prior, shape: tuple) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` broadcast to ``shape`` if ``prior`` is a (possibly independent) log-normal."""
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if type(base).__name__ != "LogNormal" or not isinstance(base, LogNormal):
        return None
    return (base.loc.detach().to(torch.float64).expand(shape).reshape(-1),
            base.scale.detach().to(torch.float64).expand(shape).reshape(-1))


class _LogNormalPotential(torch.autograd.Function):
    """``U(u)`` for log-normal priors at ``u = (log s, log sigma)`` ``(K, m + 1)``: ``(K,)``, with its gradient."""

    @staticmethod
    def forward(ctx, u, loc, scale, lik):  # noqa: D102 - autograd protocol
        un = u.detach().numpy()
        with np.errstate(over="ignore"):
            theta = np.exp(un)
        ok = np.isfinite(theta).all(-1) & (theta > 0).all(-1)  # out of range: zero density
        theta = np.where(ok[:, None], theta, 1.0)
        z = (un - loc) / scale
        log_prior = -0.5 * (z * z).sum(-1) - np.log(scale).sum() - 0.5 * un.shape[-1] * math.log(2.0 * math.pi)
        value, grad = lik.value_and_grad_batch(theta[:, :-1], theta[:, -1])
        g = np.where(ok[:, None], -(grad * theta - z / scale), 0.0)
        ctx.save_for_backward(torch.as_tensor(g))
        return torch.as_tensor(np.where(ok, -(value + log_prior), math.inf))

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102 - autograd protocol
        (g,) = ctx.saved_tensors
        return grad_output.unsqueeze(-1) * g, None, None, None


class _BatchLogLik(torch.autograd.Function):
    """``log p(y | s_k, sigma_k)`` ``(K,)`` at ``S (K, m)``, ``sig (K,)`` in one compiled call (gradients
    only when autograd asks for them), with the compiled sensitivities as its backward."""

    @staticmethod
    def forward(ctx, S, sig, lik, with_grad):  # noqa: D102 - autograd protocol
        values, grads = lik.value_and_grad_batch(S.detach().numpy(), sig.detach().numpy(), grad=with_grad)
        g = torch.as_tensor(grads, dtype=torch.float64)
        ctx.save_for_backward(g[:, :-1], g[:, -1])
        return torch.as_tensor(values, dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102 - autograd protocol
        gs, gsig = ctx.saved_tensors
        return grad_output.unsqueeze(-1) * gs, grad_output * gsig, None, None


class ScalePosterior:
    """Unnormalised log posterior of ``(s, sigma)`` of an affine model, in unconstrained coordinates.

    Parameters
    ----------
    model : StateSpaceModel or LinearGaussianModel
        Affine (see :class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood`) when
        ``observations`` are given; its priors are used.
    observations : array (*batch, T, m), optional
        NaN = missing; the runs share the scales. ``None``: the prior alone (:meth:`log_prior`,
        e.g. for a nonlinear model whose likelihood is evaluated elsewhere).

    Attributes
    ----------
    likelihood : ScaleLikelihood or None
    priors : dict of str to Distribution
        ``obs_scale`` (event shape ``(m,)``) and ``model_error_scale`` (scalar).
    transforms : dict of str to Transform
        Unconstrained -> constrained bijection per site.
    """

    def __init__(self, model, observations=None) -> None:
        ssm = as_state_space_model(model)
        self.likelihood = None if observations is None else ScaleLikelihood(ssm, observations)
        self.obs_dim = ssm.obs_dim
        self.priors = {"obs_scale": ssm.obs_scale_prior, "model_error_scale": ssm.model_error_prior}
        self.transforms = {k: biject_to(p.support) for k, p in self.priors.items()}
        parts = [_lognormal_parts(self.priors["obs_scale"], (ssm.obs_dim,)),
                 _lognormal_parts(self.priors["model_error_scale"], ())]
        self._lognormal = None
        if all(p is not None for p in parts) and self.likelihood is not None:
            self._lognormal = tuple(torch.cat([parts[0][i], parts[1][i]]).numpy() for i in range(2))

    def constrain(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scales from unconstrained ``params``: ``obs_scale (*s, m)``, ``model_error_scale (*s,)``."""
        return {k: self.transforms[k](params[k]) for k in SITES}

    def unconstrain(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unconstrained values from scales ``values`` (the inverse of :meth:`constrain`)."""
        return {k: self.transforms[k].inv(values[k]) for k in SITES}

    def log_prior(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log p(s) + log p(sigma) + log |d(s, sigma) / du|`` ``(*s,)`` at unconstrained ``params``
        (``obs_scale (*s, m)``, ``model_error_scale (*s,)``), differentiable by autograd."""
        total = 0.0
        for k in SITES:
            u = params[k]
            t = self.transforms[k]
            x = t(u)
            total = total + self.priors[k].log_prob(x) + t.log_abs_det_jacobian(u, x)
        return total

    def log_density(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``-U(u)`` ``()`` at unconstrained ``params`` (``obs_scale (m,)``, ``model_error_scale ()``),
        differentiable (the likelihood's gradient comes from the compiled sensitivities)."""
        total = torch.zeros((), dtype=torch.float64)
        scales = {}
        for k in SITES:
            u = params[k]
            t = self.transforms[k]
            x = t(u)
            scales[k] = x
            total = total + self.priors[k].log_prob(x).sum() + t.log_abs_det_jacobian(u, x).sum()
        if not bool(torch.isfinite(total)) or self.likelihood is None:
            return total
        return total + self.likelihood(scales["obs_scale"].reshape(self.obs_dim),
                                       scales["model_error_scale"].reshape(()))

    def potential(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Potential energy ``U(u) = -log p(u | y)`` (up to a constant), the ``potential_fn`` of Pyro's NUTS.

        ``params``: unconstrained ``obs_scale (m,)`` and ``model_error_scale ()``; returns ``()``.
        """
        if self._lognormal is None:
            return -self.log_density(params)
        u = torch.cat([params["obs_scale"].reshape(1, -1), params["model_error_scale"].reshape(1, 1)], -1)
        return _LogNormalPotential.apply(u.to(torch.float64), *self._lognormal, self.likelihood)[0]

    def potential_batch(self, u: torch.Tensor) -> torch.Tensor:
        """:meth:`potential` at ``K`` points ``u (K, m + 1)`` (``log s`` then ``log sigma`` for the
        default priors; the unconstrained values in general) -> ``(K,)``, with one compiled
        likelihood call for all points (gradients only when ``u`` requires them)."""
        if self._lognormal is not None:
            return _LogNormalPotential.apply(u.to(torch.float64), *self._lognormal, self.likelihood)
        u = u.to(torch.float64)
        params = {"obs_scale": u[:, :-1], "model_error_scale": u[:, -1]}
        total, scales = self.log_prior(params), self.constrain(params)
        if self.likelihood is None:
            return -total
        ok = torch.isfinite(total).detach()
        S = torch.where(ok[:, None], scales["obs_scale"], torch.ones_like(scales["obs_scale"]))
        sig = torch.where(ok, scales["model_error_scale"], torch.ones_like(scales["model_error_scale"]))
        with_grad = torch.is_grad_enabled() and u.requires_grad
        ll = _BatchLogLik.apply(S, sig, self.likelihood, with_grad)
        return torch.where(ok, -(total + ll), torch.full_like(total, math.inf))

    def initial_params(self, generator: torch.Generator, radius: float = 2.0) -> dict[str, torch.Tensor]:
        """Dispersed starting point: every unconstrained coordinate uniform on ``(-radius, radius)``
        (Pyro's ``init_to_uniform``), drawn from ``generator``."""
        def draw(shape):
            return (torch.rand(shape, dtype=torch.float64, generator=generator) * 2.0 - 1.0) * radius

        return {"obs_scale": draw((self.obs_dim,)), "model_error_scale": draw(())}
