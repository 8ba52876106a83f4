"""The Kalman filter and RTS smoother as a batched torch loop over time, and FFBS draws.

For the affine system of :mod:`bayesbridge.infer._kalman_system`, :func:`loop_pass` runs the
Kalman (1960) filter in Joseph form,

.. math::
    m_t^- = A_t m_{t-1} + b_t,\\; P_t^- = A_t P_{t-1} A_t^T + Q_t,\\;
    S_t = H P_t^- H^T + R,\\; K_t = P_t^- H^T S_t^{-1},\\\\
    m_t = m_t^- + K_t (y_t - c - H m_t^-),\\;
    P_t = (I - K_t H) P_t^- (I - K_t H)^T + K_t R K_t^T,

with missing components decoupled (:func:`~bayesbridge.infer._kalman_system.masked_obs_system`),
the innovation log-likelihood :math:`\\sum_t \\log N(v_t; 0, S_t)` (:class:`InnovationLog`) and
the Rauch, Tung & Striebel (1965) smoother :math:`G_t = P_t A_{t+1}^T (P_{t+1}^-)^{-1}`,
:math:`m_t^s = m_t + G_t (m_{t+1}^s - m_{t+1}^-)`,
:math:`P_t^s = P_t + G_t (P_{t+1}^s - P_{t+1}^-) G_t^T`. All runs of the leading batch
dimensions are processed together and everything is differentiable with autograd.
:func:`ffbs` draws trajectories by forward-filtering backward-sampling (Carter & Kohn 1994;
Frühwirth-Schnatter 1994) from the output of either engine (:class:`Pass`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bayesbridge.errors import FilterDivergenceError
from bayesbridge.infer._kalman_system import masked_obs_system
from bayesbridge.infer.divergence import check_covariance, check_finite
from bayesbridge.infer.kalman_config import KalmanConfig
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt

__all__ = ["LOG_2PI", "InnovationLog", "Pass", "ffbs", "loop_pass", "spd_solve", "reference_scale"]

LOG_2PI = math.log(2.0 * math.pi)


def spd_solve(P: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``P^{-1} B`` for symmetric ``P`` (Cholesky; pseudo-inverse if singular)."""
    L, info = torch.linalg.cholesky_ex(P)
    if bool((info == 0).all()):
        return torch.cholesky_solve(B, L)
    return torch.linalg.pinv(P, hermitian=True) @ B


class InnovationLog:
    """Per-step Gaussian innovation bookkeeping of the Kalman loop.

    Accumulates ``log N(v_t; 0, S_t)`` over observed components (``S_t = L L^T`` with missing
    components decoupled, see :func:`~bayesbridge.infer._kalman_system.masked_obs_system`) for
    runs of shape ``batch``, ``T`` steps and ``m`` observables on ``device``, the normalised innovation squared and
    the diagnostics ``innovation``/``innovation_var`` ``(*batch, T, m)`` (NaN where missing).
    """

    def __init__(self, batch: tuple, T: int, m: int, device: torch.device) -> None:
        self.innov = torch.full((*batch, T, m), float("nan"), dtype=torch.float64, device=device)
        self.innov_var = torch.full_like(self.innov, float("nan"))
        self.nis = torch.zeros(*batch, T, dtype=torch.float64, device=device)
        self.dof = torch.full((*batch, T), float(m), dtype=torch.float64, device=device)
        self.half_logdet = torch.zeros(*batch, T, dtype=torch.float64, device=device)

    def add(self, t: int, v: torch.Tensor, S: torch.Tensor, L: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Record step ``t``: innovation ``v (*b, m)`` (0 where missing), ``S``, its Cholesky ``L``."""
        w = torch.linalg.solve_triangular(L, v.unsqueeze(-1), upper=False)
        self.nis[..., t] = w.square().sum((-2, -1))
        self.half_logdet[..., t] = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        if mask is None:
            self.innov[..., t, :] = v
            self.innov_var[..., t, :] = S.diagonal(dim1=-2, dim2=-1)
        else:
            self.dof[..., t] = mask.sum(-1)
            self.innov[..., t, :] = torch.where(mask, v, float("nan"))
            self.innov_var[..., t, :] = torch.where(mask, S.diagonal(dim1=-2, dim2=-1), float("nan"))

    def skip(self, t: int) -> None:
        """Step ``t`` had no observation in any run."""
        self.dof[..., t] = 0.0

    @property
    def log_ev(self) -> torch.Tensor:
        """``sum_t log N(v_t; 0, S_t)`` over observed components, ``(*batch,)``."""
        return -0.5 * (self.dof * LOG_2PI + 2.0 * self.half_logdet + self.nis).sum(-1)


@dataclass
class Pass:
    """Internal output of one filter/smoother pass (loop or steady-state), before draws.

    Means ``(*batch, T, d)``, covariances ``(*batch, T, d, d)``, ``log_evidence (*batch,)``,
    ``nis``/``dof (*batch, T)``, innovations ``(*batch, T, m)``; the predicted covariances and
    the smoother gains ``(*batch, T-1, d, d)`` are callables, built only when draws need them.
    """

    filtered_mean: torch.Tensor
    filtered_cov: torch.Tensor
    log_evidence: torch.Tensor
    nis: torch.Tensor
    dof: torch.Tensor
    innovation: torch.Tensor
    innovation_var: torch.Tensor
    predicted_mean: torch.Tensor
    predicted_cov: Callable[[], torch.Tensor]
    smoothed_mean: torch.Tensor | None = None
    smoothed_cov: torch.Tensor | None = None
    gains: Callable[[], torch.Tensor] | None = None
    spread: torch.Tensor | None = None


def loop_pass(A_seq, b_seq, Q_seq, H, c, R, m0, P0, y: torch.Tensor, config: KalmanConfig) -> Pass:
    """Kalman filter and RTS smoother by a torch loop over time (general, autograd-capable).

    ``A_seq (T, d, d)``, ``b_seq (T, d)``, ``Q_seq (T, d, d)``, ``H (m, d)``, ``c (m,)``,
    ``R (m, m)``, ``m0 (d,)``, ``P0 (d, d)`` the affine system of
    :func:`~bayesbridge.infer._kalman_system.affine_system`; ``y (*batch, T, m)`` the
    observations (NaN = missing); ``config`` says whether to smooth, to keep the gains for draws
    and to check every step for NaN/inf.
    """
    batch = y.shape[:-2]
    T, m = y.shape[-2], y.shape[-1]
    d = A_seq.shape[-1]
    dev = y.device
    eye = torch.eye(d, dtype=torch.float64, device=dev)
    mean = m0.expand(*batch, d)
    cov = P0.expand(*batch, d, d)
    log = InnovationLog(batch, T, m, dev)
    mf_all = torch.empty(*batch, T, d, dtype=torch.float64, device=dev)
    Pf_all = torch.empty(*batch, T, d, d, dtype=torch.float64, device=dev)
    mp_all = torch.empty_like(mf_all)
    Pp_all = torch.empty_like(Pf_all)
    full_obs = not bool(torch.isnan(y).any())
    if full_obs:
        H_eff, R_eff = H, R
    for t in range(T):
        A = A_seq[t]
        mp = mean @ A.mT + b_seq[t]
        Pp = A @ cov @ A.mT + Q_seq[t]
        y_t = y[..., t, :] - c
        if full_obs:
            mask, y0 = None, y_t
        else:
            mask, y0, H_eff, R_eff = masked_obs_system(y_t, H, R)
        v = y0 - (H_eff @ mp.unsqueeze(-1)).squeeze(-1)
        PHt = Pp @ H_eff.mT
        S = H_eff @ PHt + R_eff
        S = 0.5 * (S + S.mT)
        L, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            _not_positive(Pf_all[..., :t, :, :], t, P0, Q_seq[0])
        Kt = torch.cholesky_solve(PHt.mT, L)  # (*b, m, d) = K^T
        mean = mp + (v.unsqueeze(-2) @ Kt).squeeze(-2)
        IKH = eye - Kt.mT @ H_eff
        cov = IKH @ Pp @ IKH.mT + Kt.mT @ R_eff @ Kt
        cov = 0.5 * (cov + cov.mT)
        log.add(t, v, S, L, mask)
        if config.check_divergence:
            check_finite(mean, t, "kalman", "filtered mean")
        mf_all[..., t, :], Pf_all[..., t, :, :] = mean, cov
        mp_all[..., t, :], Pp_all[..., t, :, :] = mp, Pp
    if config.check_divergence:
        check_covariance(Pf_all, "kalman", reference_scale(P0, Q_seq[0]))
    out = Pass(mf_all, Pf_all, log.log_ev, log.nis, log.dof, log.innov, log.innov_var, mp_all, lambda: Pp_all)
    if config.smooth or config.draws > 0:
        gains = torch.empty(*batch, max(T - 1, 0), d, d, dtype=torch.float64, device=dev)
        for t in range(T - 1):
            # G_t = P_t A_{t+1}^T (P_{t+1}^-)^{-1}  (P^- symmetric)
            gains[..., t, :, :] = spd_solve(Pp_all[..., t + 1, :, :], A_seq[t + 1] @ Pf_all[..., t, :, :]).mT
        out.gains = lambda: gains
    if config.smooth:
        ms_all = torch.empty_like(mf_all)
        Ps_all = torch.empty_like(Pf_all)
        ms, Ps = mf_all[..., T - 1, :], Pf_all[..., T - 1, :, :]
        ms_all[..., T - 1, :], Ps_all[..., T - 1, :, :] = ms, Ps
        for t in range(T - 2, -1, -1):
            G = gains[..., t, :, :]
            ms = mf_all[..., t, :] + ((ms - mp_all[..., t + 1, :]).unsqueeze(-2) @ G.mT).squeeze(-2)
            Ps = Pf_all[..., t, :, :] + G @ (Ps - Pp_all[..., t + 1, :, :]) @ G.mT
            Ps = 0.5 * (Ps + Ps.mT)
            ms_all[..., t, :], Ps_all[..., t, :, :] = ms, Ps
        out.smoothed_mean, out.smoothed_cov = ms_all, Ps_all
    return out


def reference_scale(P0: torch.Tensor, Q: torch.Tensor) -> float:
    """The variance scale of a problem: the largest prior or model-error variance (``P0``, ``Q`` ``(d, d)``)."""
    scale = max(float(P0.detach().diagonal().abs().max()), float(Q.detach().diagonal().abs().max()))
    return scale if scale > 0 else 1.0


def _not_positive(Pf_done: torch.Tensor, t: int, P0: torch.Tensor, Q: torch.Tensor) -> None:
    """Raise at step ``t`` whose innovation covariance failed its Cholesky factorisation.

    An earlier exploding covariance (``Pf_done (*batch, t, d, d)``) is named instead: that is
    where the filter diverged.
    """
    check_covariance(Pf_done, "kalman", reference_scale(P0, Q))
    raise FilterDivergenceError(
        f"kalman: the innovation covariance H P H^T + R is not positive definite at time step {t} (a "
        f"covariance overflowed or lost positive definiteness); the filter diverged. Remedies: make the "
        f"dynamics stable (spectral radius of A below 1), or check that Q, R and P0 are valid covariances."
    )


def ffbs(res: Pass, eps: torch.Tensor) -> torch.Tensor:
    """Forward-filter backward-sample trajectories ``(*batch, T, draw, d)`` from standard normals ``eps``
    ``(T, *batch, draw, d)`` and the filter/smoother pass ``res`` (with its gains).

    :math:`z_T \\sim N(m_T, P_T)`, then
    :math:`z_t \\mid z_{t+1} \\sim N(m_t + G_t (z_{t+1} - m_{t+1}^-), P_t - G_t P_{t+1}^- G_t^T)`.
    """
    mf_all, Pf_all, mp_all = res.filtered_mean, res.filtered_cov, res.predicted_mean
    Pp_all, gains = res.predicted_cov(), res.gains()
    T = mf_all.shape[-2]
    out = torch.empty(*mf_all.shape[:-1], eps.shape[-2], mf_all.shape[-1], dtype=torch.float64, device=mf_all.device)
    z = mf_all[..., T - 1, :].unsqueeze(-2) + eps[T - 1] @ _psd_sqrt(Pf_all[..., T - 1, :, :]).mT
    out[..., T - 1, :, :] = z
    for t in range(T - 2, -1, -1):
        G = gains[..., t, :, :]
        cond_cov = Pf_all[..., t, :, :] - G @ Pp_all[..., t + 1, :, :] @ G.mT
        cond_mean = mf_all[..., t, :].unsqueeze(-2) + (z - mp_all[..., t + 1, :].unsqueeze(-2)) @ G.mT
        z = cond_mean + eps[t] @ _psd_sqrt(0.5 * (cond_cov + cond_cov.mT)).mT
        out[..., t, :, :] = z
    return out
