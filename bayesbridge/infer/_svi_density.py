"""Log joint density of a (nonlinear) state-space model at trajectory draws, vectorised over time.

For draws ``z (K, R, T + 1, d)`` of the trajectories ``z_0..z_T`` of ``R`` runs and scales ``s (K, m)``,
``sigma (K,)``,

.. math::
    \\log p(z, y \\mid s, \\sigma) = \\log N(z_0; m_0, P_0)
      + \\sum_{t=1}^T \\log N(z_t; f_t(z_{t-1}), \\sigma^2 L_t L_t^T)
      + \\sum_{t, k\\ \\mathrm{observed}} \\log N(y_{t,k}; h_k(z_t), s_k^2),

summed over runs. :class:`TrajectoryDensity` evaluates ``f`` on all steps at once when the
transition does not depend on the step (checked once on random probes; else one call per step)
and ``h`` on all steps at once.
"""

from __future__ import annotations

import math

import torch

from bayesbridge.model.tensors import as_tensor, jittered

__all__ = ["TrajectoryDensity"]

_LOG_2PI = math.log(2.0 * math.pi)


def _time_invariant(ssm, T: int) -> bool:
    """Whether ``f_t`` and ``L_t`` are the same at every step (random probes, once)."""
    probes = torch.randn(3, ssm.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        f0 = ssm.transition.mean(probes, 0)
        L0 = as_tensor(ssm.transition.noise_scale_tril(0), "noise_scale_tril")
        for t in range(1, T):
            if not torch.allclose(ssm.transition.mean(probes, t), f0, rtol=1e-12, atol=1e-12):
                return False
            if not torch.equal(as_tensor(ssm.transition.noise_scale_tril(t), "noise_scale_tril"), L0):
                return False
    return True


class TrajectoryDensity:
    """``log p(z, y | s, sigma)`` of a :class:`~bayesbridge.model.StateSpaceModel` (see the module docstring).

    Parameters
    ----------
    ssm : StateSpaceModel
    y : Tensor (R, T, m)
        Observations of the ``R`` runs, NaN = missing.
    """

    def __init__(self, ssm, y: torch.Tensor) -> None:
        self.ssm = ssm
        self.T = int(y.shape[-2])
        self.mask = ~torch.isnan(y)
        self.y0 = torch.where(self.mask, y, 0.0)
        self.n_obs = self.mask.sum().to(torch.float64)
        self.invariant = _time_invariant(ssm, self.T)
        if self.invariant:
            self.L = as_tensor(ssm.transition.noise_scale_tril(0), "noise_scale_tril")
        else:
            self.L = torch.stack([as_tensor(ssm.transition.noise_scale_tril(t), "noise_scale_tril")
                                  for t in range(self.T)])  # (T, d, d)
        self.L0 = torch.linalg.cholesky(jittered(ssm.P0))
        self.m0 = ssm.m0

    def _transition_means(self, z: torch.Tensor) -> torch.Tensor:
        """``f_t(z_{t-1})`` ``(K, R, T, d)`` for ``z (K, R, T + 1, d)``."""
        if self.invariant:
            return self.ssm.transition.mean(z[..., :-1, :], 0)
        return torch.stack([self.ssm.transition.mean(z[..., t, :], t) for t in range(self.T)], -2)

    def log_joint(self, z: torch.Tensor, obs_scale: torch.Tensor, model_error_scale: torch.Tensor) -> torch.Tensor:
        """``log p(z, y | s, sigma)`` ``(K,)`` for ``z (K, R, T + 1, d)``, ``obs_scale (K, m)``, ``model_error_scale (K,)``."""
        d = z.shape[-1]
        w0 = torch.linalg.solve_triangular(self.L0, (z[..., 0, :] - self.m0).unsqueeze(-1), upper=False).squeeze(-1)
        lp0 = -0.5 * w0.square().sum(-1) - self.L0.diagonal().log().sum() - 0.5 * d * _LOG_2PI  # (K, R)
        r = z[..., 1:, :] - self._transition_means(z)  # (K, R, T, d)
        w = torch.linalg.solve_triangular(self.L, r.unsqueeze(-1), upper=False).squeeze(-1)
        logdet_L = self.L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # () or (T,)
        sig = model_error_scale.reshape(-1, 1, 1)
        lpt = (-0.5 * w.square().sum(-1) / sig**2 - d * sig.log() - logdet_L - 0.5 * d * _LOG_2PI).sum(-1)
        hz = self.ssm.observe(z[..., 1:, :])  # (K, R, T, m)
        s = obs_scale.reshape(obs_scale.shape[0], 1, 1, -1)
        u = torch.where(self.mask, (self.y0 - hz) / s, 0.0)
        lpy = -0.5 * u.square().sum((-1, -2, -3)) - (self.mask * s.log()).sum((-1, -2, -3)) - 0.5 * _LOG_2PI * self.n_obs
        return (lp0 + lpt).sum(-1) + lpy
