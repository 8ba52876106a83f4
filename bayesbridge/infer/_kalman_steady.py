"""The exact Kalman filter and RTS smoother with converged (steady-state) covariances reused.

For a time-invariant system the covariances :math:`P_t^-, P_t, S_t, K_t` do not depend on the
data and converge geometrically to the solution of the discrete algebraic Riccati equation
(Anderson & Moore 1979, *Optimal Filtering*, ch. 4); the smoother gain and covariance converge
to a Stein-equation fixed point. :func:`steady_pass` computes the covariances once per
missing-value pattern with the compiled loops of :mod:`bayesbridge.infer._kalman_kernel`
(recomputing them only until they return within ``tol`` of the steady values), then
propagates the means of every run with compiled matrix-vector loops. The user-facing entry is
:func:`bayesbridge.infer.kalman.steady_state_smoother`; ``kalman.run`` uses it for
time-invariant models whose inputs do not require gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from bayesbridge.infer._kalman_kernel import (
    _cov_pass,
    _mean_pass,
    _smooth_cov_pass,
    _smooth_mean_pass,
)
from bayesbridge.infer._kalman_loop import LOG_2PI, Pass

__all__ = ["SteadyStateOutput", "gather", "steady_pass"]


@dataclass
class SteadyStateOutput:
    """Exact filter/smoother output of :func:`~bayesbridge.infer.kalman.steady_state_smoother`.

    Attributes
    ----------
    filtered_mean, predicted_mean : Tensor (*batch, T, d)
        ``E[z_t | y_{1:t}]`` and ``E[z_t | y_{1:t-1}]``.
    filtered_cov : Tensor (*batch, T, d, d)
    log_evidence : Tensor (*batch,)
        ``log p(y_{1:T})`` over observed components.
    nis, dof : Tensor (*batch, T)
        Normalised innovation squared and number of observed components per step.
    innovation, innovation_var : Tensor (*batch, T, m)
        ``y_t - H m_t^-`` and the diagonal of ``S_t`` (NaN where missing).
    spread : Tensor (*batch, T)
        ``sqrt(tr P_t / d)``.
    smoothed_mean : Tensor (*batch, T, d) or None
    smoothed_cov : Tensor (*batch, T, d, d) or None
    filter_cov_updates, smoother_cov_updates : Tensor (*batch,) int64
        Number of steps at which the run's filter (Riccati) and smoother covariances were
        actually computed; at the other steps the converged values were reused. ``T`` each
        when ``tol = 0``. Runs with the same missing-value pattern share one computation.
    """

    filtered_mean: torch.Tensor
    filtered_cov: torch.Tensor
    predicted_mean: torch.Tensor
    log_evidence: torch.Tensor
    nis: torch.Tensor
    dof: torch.Tensor
    innovation: torch.Tensor
    innovation_var: torch.Tensor
    spread: torch.Tensor
    filter_cov_updates: torch.Tensor
    smoother_cov_updates: torch.Tensor
    smoothed_mean: torch.Tensor | None = None
    smoothed_cov: torch.Tensor | None = None
    _predicted_cov: Callable[[], torch.Tensor] | None = field(default=None, init=False, repr=False)
    _gains: Callable[[], torch.Tensor] | None = field(default=None, init=False, repr=False)

    def _as_pass(self) -> Pass:
        return Pass(self.filtered_mean, self.filtered_cov, self.log_evidence, self.nis, self.dof,
                    self.innovation, self.innovation_var, self.predicted_mean, self._predicted_cov,
                    self.smoothed_mean, self.smoothed_cov, self._gains, self.spread)


def gather(store: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """``store[index]`` for ``store (n, *e)`` and an integer ``index (*i)``: ``(*i, *e)`` (row copies)."""
    return torch.from_numpy(np.take(store, index, axis=0))


def steady_pass(A, b, Q, H, c, R, m0, P0, y: torch.Tensor, tol: float, smooth: bool) -> SteadyStateOutput:
    """Steady-state engine on prepared float64 parts; see :func:`~bayesbridge.infer.kalman.steady_state_smoother`.

    ``A, b, Q, H, c, R, m0, P0`` the time-invariant system of
    :func:`~bayesbridge.infer._kalman_system.steady_parts`, ``y (*batch, T, m)`` the observations,
    ``tol`` the relative convergence tolerance and ``smooth`` whether to run the RTS smoother.
    """
    batch = y.shape[:-2]
    T, m = y.shape[-2], y.shape[-1]
    d = A.shape[-1]
    np_ = lambda x: np.ascontiguousarray(x.detach().numpy(), dtype=np.float64)  # noqa: E731
    A_, b_, Q_, H_, c_, R_, m0_, P0_ = (np_(x) for x in (A, b, Q, H, c, R, m0, P0))
    yb = np_(y.reshape(-1, T, m))
    B = yb.shape[0]
    obs = ~np.isnan(yb)
    if B == 1 or not (~obs).any():
        patterns, group = obs[:1], np.zeros(B, np.int64)
    else:
        patterns, group = np.unique(obs.reshape(B, -1), axis=0, return_inverse=True)
        patterns, group = patterns.reshape(-1, T, m), group.reshape(-1).astype(np.int64)
    f_parts, s_parts, f_off, g_off, s_off = [], [], 0, 0, 0
    idx_g, gidx_g, sidx_g, nf_g, ns_g = [], [], [], [], []
    for pat in patterns:
        n, idx, Pp_u, Pf_u, KT_u, Li_u, hld_u, Sd_u = _cov_pass(A_, Q_, H_, R_, P0_, np.ascontiguousarray(pat), tol)
        f_parts.append((Pp_u, Pf_u, KT_u, Li_u, hld_u, Sd_u))
        idx_g.append(idx + f_off)
        nf_g.append(n)
        if smooth:
            ns, gidx, G_u, sidx, Ps_u = _smooth_cov_pass(A_, idx, Pp_u, Pf_u, tol)
            s_parts.append((G_u, Ps_u))
            gidx_g.append(gidx + g_off)
            sidx_g.append(sidx + s_off)
            ns_g.append(ns)
            g_off += G_u.shape[0]
            s_off += Ps_u.shape[0]
        f_off += n
    Pp_c, Pf_c, KT_c, Li_c, hld_c, Sd_c = (np.concatenate(x) if len(x) > 1 else x[0] for x in zip(*f_parts, strict=True))
    run_idx = np.stack(idx_g)[group]
    mf = np.empty((B, T, d))
    mp = np.empty((B, T, d))
    innov = np.empty((B, T, m))
    nis = np.empty((B, T))
    _mean_pass(A_, H_, b_, c_, m0_, yb, run_idx, KT_c, Li_c, mf, mp, innov, nis)
    tt = torch.from_numpy
    dof = obs.sum(-1).astype(np.float64)
    hld = np.where(dof > 0, hld_c[run_idx], 0.0)
    log_ev = -0.5 * (dof * LOG_2PI + 2.0 * hld + nis).sum(-1)
    innov_var = np.where(obs, Sd_c[run_idx], np.nan)
    shp = lambda x, *tail: x.reshape((*batch, *tail))  # noqa: E731
    out = SteadyStateOutput(
        filtered_mean=shp(tt(mf), T, d),
        filtered_cov=shp(gather(Pf_c, run_idx), T, d, d),
        predicted_mean=shp(tt(mp), T, d),
        log_evidence=shp(tt(log_ev)),
        nis=shp(tt(nis), T),
        dof=shp(tt(dof), T),
        innovation=shp(tt(innov), T, m),
        innovation_var=shp(tt(innov_var), T, m),
        spread=shp(tt(np.sqrt(np.maximum(np.diagonal(Pf_c, axis1=-2, axis2=-1).mean(-1), 0.0))[run_idx]), T),
        filter_cov_updates=shp(torch.tensor(nf_g, dtype=torch.int64, device="cpu")[tt(group)]),
        smoother_cov_updates=shp(torch.tensor(ns_g if smooth else [0] * len(nf_g), dtype=torch.int64, device="cpu")[tt(group)]),
    )
    out._predicted_cov = lambda: shp(gather(Pp_c, run_idx), T, d, d)
    if smooth:
        G_c, Ps_c = (np.concatenate(x) if len(x) > 1 else x[0] for x in zip(*s_parts, strict=True))
        run_gidx = np.stack(gidx_g)[group]
        ms = np.empty((B, T, d))
        _smooth_mean_pass(mf, mp, run_gidx, G_c, ms)
        out.smoothed_mean = shp(tt(ms), T, d)
        out.smoothed_cov = shp(gather(Ps_c, np.stack(sidx_g)[group]), T, d, d)
        out._gains = lambda: shp(gather(G_c, run_gidx), T - 1, d, d)
    return out
