"""Backward-simulation smoother of the particle filter (Godsill, Doucet & West 2004).

Given the filtering particles ``z_t^i`` and normalised weights ``W_t^i`` of steps ``1..T``,
draw :math:`\\tilde z_T \\sim W_T`, then for ``t = T-1 .. 1`` draw :math:`\\tilde z_t = z_t^i`
with probability

.. math::
    \\propto W_t^i \\, p(\\tilde z_{t+1} \\mid z_t^i)
    = W_t^i \\, N\\bigl(\\tilde z_{t+1};\\, f_{t+1}(z_t^i),\\, Q_{t+1}\\bigr);

each draw is a trajectory from the particle approximation of :math:`p(z_{1:T} \\mid y_{1:T})`
(Godsill, Doucet & West 2004, *J. Amer. Statist. Assoc.* 99, 156-168). ``M`` trajectories cost
``O(T M N d)``; ``Q_t`` must be positive definite.
"""

from __future__ import annotations

import torch

from bayesbridge.errors import ParameterError

__all__ = ["backward_simulation", "categorical"]


def categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``logits`` ``(*shape, N)`` -> ``(*shape,)`` (inverse-CDF sampling from ``generator``)."""
    p = torch.softmax(logits, -1)
    cdf = torch.cumsum(p, -1)
    u = torch.rand(*logits.shape[:-1], 1, dtype=p.dtype, generator=generator, device=p.device) * cdf[..., -1:]
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).squeeze(-1).clamp_max(logits.shape[-1] - 1)


def backward_simulation(
    model, particles: torch.Tensor, log_weights: torch.Tensor, n_traj: int, generator: torch.Generator
) -> torch.Tensor:
    """Backward-simulation smoother (Godsill, Doucet & West 2004).

    Parameters
    ----------
    model : StateSpace
        Provides ``transition_mean(z, step)`` and a positive-definite ``transition_cov(step)``.
    particles : Tensor (*batch, T, N, d)
        Filtering particles of steps ``1..T``.
    log_weights : Tensor (*batch, T, N)
        Their normalised log weights.
    n_traj : int
        Number of trajectories ``M``.
    generator : torch.Generator
        Source of the uniforms of the categorical draws (one per trajectory and step).

    Returns
    -------
    Tensor (*batch, T, M, d)
        Trajectories drawn from the particle approximation of ``p(z_{1:T} | y_{1:T})``.
    """
    batch, (T, N, d) = particles.shape[:-3], particles.shape[-3:]
    pick = lambda x, idx: torch.gather(x, -2, idx.unsqueeze(-1).expand(*idx.shape, d))  # noqa: E731
    idx = categorical(log_weights[..., -1, :].unsqueeze(-2).expand(*batch, n_traj, N), generator)
    out = torch.empty(*batch, T, n_traj, d, dtype=particles.dtype, device=particles.device)
    out[..., T - 1, :, :] = pick(particles[..., T - 1, :, :], idx)
    for t in range(T - 2, -1, -1):
        Q = model.transition_cov(t + 1).to(particles.dtype)
        L, info = torch.linalg.cholesky_ex(Q)
        if int(info) != 0:
            raise ParameterError(
                f"smoother='backward' needs a positive-definite model-error covariance; the one at step "
                f"{t + 1} is singular. Use smoother='none' or add a small diagonal model error."
            )
        fx = model.transition_mean(particles[..., t, :, :], t + 1)  # (*batch, N, d)
        a = torch.linalg.solve_triangular(L, out[..., t + 1, :, :].mT, upper=False).mT  # (*batch, M, d)
        b = torch.linalg.solve_triangular(L, fx.mT, upper=False).mT  # (*batch, N, d)
        sq = (a**2).sum(-1, keepdim=True) + (b**2).sum(-1).unsqueeze(-2) - 2.0 * a @ b.mT  # (*batch, M, N)
        logits = log_weights[..., t, :].unsqueeze(-2) - 0.5 * sq
        idx = categorical(logits, generator)
        out[..., t, :, :] = pick(particles[..., t, :, :], idx)
    return out
