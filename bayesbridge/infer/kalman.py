"""Exact Kalman filter and Rauch-Tung-Striebel smoother: the oracle for every other engine.

For a :class:`~bayesbridge.model.LinearGaussianModel`

.. math::
    z_0 \\sim N(m_0, P_0),\\quad z_t = A z_{t-1} + w_t,\\; w_t \\sim N(0, Q),\\quad
    y_t = H z_t + v_t,\\; v_t \\sim N(0, R),

the filter (Kalman 1960) computes :math:`p(z_t \\mid y_{1:t}) = N(m_t, P_t)` by

.. math::
    m_t^- = A m_{t-1},\\; P_t^- = A P_{t-1} A^T + Q,\\;
    S_t = H P_t^- H^T + R,\\; K_t = P_t^- H^T S_t^{-1},\\;
    m_t = m_t^- + K_t (y_t - H m_t^-),\\;
    P_t = (I - K_t H) P_t^- (I - K_t H)^T + K_t R K_t^T

(Joseph form), the exact log-evidence
:math:`\\log p(y_{1:T}) = \\sum_t \\log N(y_t; H m_t^-, S_t)`, and the RTS smoother
(Rauch, Tung & Striebel 1965) :math:`G_t = P_t A^T (P_{t+1}^-)^{-1}`,
:math:`m_t^s = m_t + G_t (m_{t+1}^s - m_{t+1}^-)`,
:math:`P_t^s = P_t + G_t (P_{t+1}^s - P_{t+1}^-) G_t^T`. Posterior trajectories are drawn by
forward-filtering backward-sampling (Carter & Kohn 1994; Frühwirth-Schnatter 1994):
:math:`z_t \\mid z_{t+1}, y_{1:T} \\sim N(m_t + G_t (z_{t+1} - m_{t+1}^-), P_t - G_t P_{t+1}^- G_t^T)`.

Missing components (NaN) are skipped component by component and run by run without any
gather: at each step the rows of ``H`` of missing components are zeroed, their innovations set
to 0, and ``R`` is replaced by ``M R M + (I - M)`` with ``M`` the diagonal 0/1 mask. Then ``S``
is block-diagonal (observed block exact, unit block for missing ones), the gain has zero columns
for missing components and the log-density is that of the observed components only, so runs
with different missing patterns are processed together.

For time-invariant models (fixed ``A`` and ``Q``) :func:`steady_state_smoother` runs the same
recursions in compiled loops and reuses the filter and smoother covariances once they have
converged to their steady state (the Riccati fixed point), recomputing them only around missing
values; it is what ``run`` uses unless the model is time-varying or an input requires gradients.
Otherwise all runs in the leading batch dimensions of the observations are filtered at once
(batched torch linear algebra; the only Python loop is over time). :func:`gaussian_hmm` builds the same model
as :class:`pyro.distributions.GaussianHMM` (an independent implementation, used as the test
oracle and, through its parallel-scan algorithms, by :func:`parallel_smoothed_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.errors import InputTypeError, ParameterError
from bayesbridge.infer._kalman_kernel import (
    _cov_pass,
    _mean_pass,
    _smooth_cov_pass,
    _smooth_mean_pass,
)
from bayesbridge.infer.divergence import check_finite, check_innovations
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = [
    "KalmanConfig",
    "run",
    "steady_state_smoother",
    "SteadyStateOutput",
    "gaussian_hmm",
    "parallel_smoothed_mean",
    "masked_obs_system",
]

_LOG_2PI = math.log(2.0 * math.pi)

Noise = Callable[[str, int, tuple], torch.Tensor]
Engine = Literal["auto", "steady", "loop"]


@dataclass
class KalmanConfig:
    """Configuration of the exact Kalman engine.

    Attributes
    ----------
    smooth : bool
        Also run the RTS smoother (``smoothed_mean``, ``smoothed_cov``).
    draws : int
        Number of posterior trajectories to draw by forward-filter backward-sample (0 = none);
        returned as ``smoothed_ensemble`` ``(*batch, T, draw, d)``.
    members : int or None
        Alias of ``draws`` so that ``assimilate(..., method="kalman", members=N)`` works.
    check_divergence : bool
        Check states for NaN/inf at every step and the innovations' consistency at the end.
    engine : {"auto", "steady", "loop"}
        ``"steady"``: :func:`steady_state_smoother` (compiled; time-invariant ``A``, ``Q`` and no
        input requiring gradients); ``"loop"``: batched torch loop over time (time-varying
        models, autograd); ``"auto"`` (default): ``"steady"`` where it applies, else ``"loop"``.
    steady_tol : float
        Relative tolerance (>= 0) at which filter and smoother covariances count as converged and
        are reused (see :func:`steady_state_smoother`); 0 recomputes them at every step.
    """

    smooth: bool = True
    draws: int = 0
    members: int | None = None
    check_divergence: bool = True
    engine: Engine = "auto"
    steady_tol: float = 1e-12

    def __post_init__(self) -> None:
        if self.engine not in get_args(Engine):
            raise ParameterError(
                f"engine: expected one of {', '.join(map(repr, get_args(Engine)))}, got {self.engine!r}."
            )
        if (not isinstance(self.steady_tol, (int, float)) or isinstance(self.steady_tol, bool)
                or not math.isfinite(self.steady_tol) or self.steady_tol < 0):
            raise ParameterError(
                f"steady_tol: expected a finite number >= 0 (e.g. 1e-12; 0 disables the steady-state "
                f"reuse), got {self.steady_tol!r}."
            )
        self.steady_tol = float(self.steady_tol)
        if self.members is not None:
            if self.draws not in (0, self.members):
                raise ParameterError(
                    f"members/draws: got members={self.members} and draws={self.draws}; they are "
                    f"aliases, give only one."
                )
            self.draws = self.members
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 0:
            raise ParameterError(
                f"draws: expected a non-negative integer number of posterior trajectories, got "
                f"{self.draws!r}."
            )
        self.members = self.draws


def _linear_parts(model) -> tuple[torch.Tensor, ...]:
    names = ("A", "Q", "H", "R", "m0", "P0")
    if not all(hasattr(model, n) for n in names):
        raise InputTypeError(
            f"model: the exact Kalman engine needs a linear-Gaussian model with attributes "
            f"{', '.join(names)} (e.g. bayesbridge.model.LinearGaussianModel), got "
            f"{type(model).__name__}; use method='enkf', 'etkf' or 'pf' for nonlinear models."
        )
    return tuple(_as_f64(getattr(model, n)) for n in names)


def _as_f64(x, device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a float64 tensor on ``device`` (a tensor's own device when None, else the CPU)."""
    if device is None:
        device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def _affine_system(model, T: int) -> tuple[torch.Tensor, ...]:
    """Per-step affine system ``A (T, d, d)``, ``b (T, d)``, ``Q (T, d, d)``, ``H``, ``c``, ``R``, ``m0``, ``P0``.

    ``z_t = A_t z_{t-1} + b_t + w_t``, ``w_t ~ N(0, Q_t)``, ``y_t = H z_t + c + v_t``. A
    :class:`~bayesbridge.model.LinearGaussianModel` is time-invariant with ``b = c = 0``; a
    :class:`~bayesbridge.model.StateSpaceModel` whose transition and observation operator are
    affine (a linear inverse model, seasonal or not, and an EOF decoder with box averages) is
    linearised exactly by its ``affine_structure``.
    """
    if all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0")):
        A, Q, H, R, m0, P0 = _linear_parts(model)
        d, m = A.shape[0], H.shape[0]
        return (A.expand(T, d, d), A.new_zeros(T, d), Q.expand(T, d, d), H, A.new_zeros(m), R, m0, P0)
    structure = model.affine_structure(T) if hasattr(model, "affine_structure") else None
    if structure is None:
        _linear_parts(model)  # raises the explanatory error
    m0, P0 = (_as_f64(x) for x in model.initial())
    Q = torch.stack([_as_f64(model.transition_cov(t), m0.device) for t in range(T)])
    R = _as_f64(model.obs_cov(), m0.device)
    return structure.A, structure.b, Q, structure.H, structure.c, R, m0, P0


def masked_obs_system(
    y_t: torch.Tensor, H: torch.Tensor, R: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observation system of one step with missing components neutralised.

    Parameters
    ----------
    y_t : Tensor (*batch, m)
        Observations, NaN = missing.
    H : Tensor (m, d) or (*batch, m, d)
    R : Tensor (m, m)

    Returns
    -------
    mask : Tensor (*batch, m) bool
        True where observed.
    y0 : Tensor (*batch, m)
        ``y_t`` with missing components set to 0.
    H_eff : Tensor (*batch, m, d)
        ``H`` with rows of missing components zeroed.
    R_eff : Tensor (*batch, m, m)
        ``M R M + (I - M)``.
    """
    mask = ~torch.isnan(y_t)
    mf = mask.to(R.dtype)
    y0 = torch.where(mask, y_t, torch.zeros_like(y_t))
    H_eff = H * mf.unsqueeze(-1)
    R_eff = R * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    return mask, y0, H_eff, R_eff


def _spd_solve(P: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``P^{-1} B`` for symmetric ``P`` (Cholesky; pseudo-inverse if singular)."""
    L, info = torch.linalg.cholesky_ex(P)
    if bool((info == 0).all()):
        return torch.cholesky_solve(B, L)
    return torch.linalg.pinv(P, hermitian=True) @ B


class _InnovationLog:
    """Per-step Gaussian innovation bookkeeping shared by the Kalman and ensemble engines.

    Accumulates ``log N(v_t; 0, S_t)`` over observed components (``S_t = L L^T`` with missing
    components decoupled, see :func:`masked_obs_system`), the normalised innovation squared and
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
        return -0.5 * (self.dof * _LOG_2PI + 2.0 * self.half_logdet + self.nis).sum(-1)


@dataclass
class _Pass:
    """Internal output of one filter/smoother pass (loop or steady-state), before draws."""

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


def _loop_pass(A_seq, b_seq, Q_seq, H, c, R, m0, P0, y: torch.Tensor, config: KalmanConfig) -> _Pass:
    """Kalman filter and RTS smoother by a torch loop over time (general, autograd-capable)."""
    batch = y.shape[:-2]
    T, m = y.shape[-2], y.shape[-1]
    d = A_seq.shape[-1]
    dev = y.device
    eye = torch.eye(d, dtype=torch.float64, device=dev)
    mean = m0.expand(*batch, d)
    cov = P0.expand(*batch, d, d)
    log = _InnovationLog(batch, T, m, dev)
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
        L = torch.linalg.cholesky(S)
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
    out = _Pass(mf_all, Pf_all, log.log_ev, log.nis, log.dof, log.innov, log.innov_var, mp_all, lambda: Pp_all)
    if config.smooth or config.draws > 0:
        gains = torch.empty(*batch, max(T - 1, 0), d, d, dtype=torch.float64, device=dev)
        for t in range(T - 1):
            # G_t = P_t A_{t+1}^T (P_{t+1}^-)^{-1}  (P^- symmetric)
            gains[..., t, :, :] = _spd_solve(Pp_all[..., t + 1, :, :], A_seq[t + 1] @ Pf_all[..., t, :, :]).mT
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


def _steady_parts(model, T: int, system: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...] | None:
    """``(A, b (T, d), Q, H, c, R, m0, P0)`` if the model has time-invariant ``A`` and ``Q``, else None.

    ``system`` is the model's :func:`_affine_system` when already computed.
    """
    if system is None and all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0")):
        A, Q, H, R, m0, P0 = _linear_parts(model)
        d, m = A.shape[0], H.shape[0]
        return A, A.new_zeros(T, d), Q, H, A.new_zeros(m), R, m0, P0
    A_seq, b_seq, Q_seq, H, c, R, m0, P0 = _affine_system(model, T) if system is None else system
    if not (torch.equal(A_seq, A_seq[:1].expand_as(A_seq)) and torch.equal(Q_seq, Q_seq[:1].expand_as(Q_seq))):
        return None
    return A_seq[0], b_seq, Q_seq[0], H, c, R, m0, P0


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in tensors)


def run(
    model, y: torch.Tensor, config: KalmanConfig, generator: torch.Generator, *, noise: Noise | None = None
) -> AssimilationResult:
    """Exact Kalman filter (+ RTS smoother, + FFBS draws) for a linear-Gaussian model.

    Time-invariant models (``A`` and ``Q`` the same at every step; offsets may vary) whose
    inputs do not require gradients go through :func:`steady_state_smoother` (compiled,
    steady-state covariances reused once converged, ``config.steady_tol``); the others
    (time-varying ``A_t``, e.g. a seasonal linear inverse model, or autograd users) through a
    batched torch loop over time. ``config.engine`` forces one or the other. The steady-state
    engine is compiled for the CPU: observations on another device (e.g. CUDA) always take the
    torch loop, whose tensors follow ``y``'s device.

    Parameters
    ----------
    model : LinearGaussianModel or affine StateSpaceModel
        Either attributes ``A (d, d)``, ``Q (d, d)``, ``H (m, d)``, ``R (m, m)``, ``m0 (d,)``,
        ``P0 (d, d)``, or an ``affine_structure(T)`` (time-varying ``A_t``, offsets ``b_t``,
        ``c``), see :func:`_affine_system`.
    y : Tensor (*batch, T, m)
        Validated observations (float64, NaN = missing).
    config : KalmanConfig
    generator : torch.Generator
        Used only for posterior draws (``config.draws > 0``): one standard-normal tensor of shape
        ``(T, *batch, draw, d)`` is drawn for all runs at once.
    noise : callable, optional
        ``noise(kind, step, shape) -> Tensor`` of standard normals replacing the generator
        (kind ``"draws"``, step 0, shape ``(T, *batch, draw, d)``); for common-random-number
        experiments and tests.

    Returns
    -------
    AssimilationResult
        ``filtered_mean (*batch, T, d)``, ``filtered_cov (*batch, T, d, d)``,
        ``smoothed_mean``/``smoothed_cov`` when ``config.smooth``, ``smoothed_ensemble
        (*batch, T, draw, d)`` when ``config.draws > 0``, ``log_evidence (*batch,)``.
    """
    batch = y.shape[:-2]
    T = y.shape[-2]
    res: _Pass | None = None
    linear = all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0"))
    system = None if linear else _affine_system(model, T)
    if config.engine != "loop":
        parts = _steady_parts(model, T, system)
        why = None
        if y.device.type != "cpu":
            why = f"the observations live on {y.device} (the steady-state engine is compiled for the CPU)"
        elif parts is None:
            why = "the model is time-varying (A_t or Q_t change with t) or not affine"
        elif _needs_grad(y, *parts):
            why = "an input requires gradients (the steady-state engine is not differentiable)"
        else:
            try:
                out = _steady_pass(*parts, y, config.steady_tol, config.smooth or config.draws > 0)
            except np.linalg.LinAlgError as exc:
                why = f"a predicted covariance is singular ({exc})"
            else:
                res = out._as_pass()
        if why is not None and config.engine == "steady":
            raise ParameterError(
                f"engine: 'steady' cannot be used here because {why}; use engine='auto' or 'loop'."
            )
        if res is not None and config.check_divergence:
            bad = ~torch.isfinite(res.filtered_mean).all(-1)
            if bool(bad.any()):
                t = int(bad.reshape(-1, T).any(0).nonzero()[0])
                check_finite(res.filtered_mean[..., t, :], t, "kalman", "filtered mean")
    if res is None:
        res = _loop_pass(*(_affine_system(model, T) if system is None else system), y, config)
    if config.check_divergence:
        check_innovations(res.nis, res.dof, "kalman")
    spread = res.spread
    if spread is None:
        spread = (res.filtered_cov.diagonal(dim1=-2, dim2=-1).mean(-1)).clamp_min(0.0).sqrt()
    result = AssimilationResult(
        method="kalman",
        filtered_mean=res.filtered_mean,
        filtered_cov=res.filtered_cov,
        log_evidence=res.log_evidence,
        diagnostics=StepDiagnostics(innovation=res.innovation, spread=spread, innovation_var=res.innovation_var),
        config=config,
    )
    if config.smooth:
        result.smoothed_mean, result.smoothed_cov = res.smoothed_mean, res.smoothed_cov
    if config.draws > 0:
        n = config.draws
        d = res.filtered_mean.shape[-1]
        shape = (T, *batch, n, d)
        if noise is None:
            eps = torch.randn(shape, dtype=torch.float64, generator=generator, device=y.device)
        else:
            eps = noise("draws", 0, shape)
        result.smoothed_ensemble = _ffbs(res, eps)
    return result


def _ffbs(res: _Pass, eps: torch.Tensor) -> torch.Tensor:
    """Forward-filter backward-sample trajectories ``(*batch, T, draw, d)`` from standard normals ``eps``
    ``(T, *batch, draw, d)``."""
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


@dataclass
class SteadyStateOutput:
    """Exact filter/smoother output of :func:`steady_state_smoother`.

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

    def _as_pass(self) -> _Pass:
        return _Pass(self.filtered_mean, self.filtered_cov, self.log_evidence, self.nis, self.dof,
                     self.innovation, self.innovation_var, self.predicted_mean, self._predicted_cov,
                     self.smoothed_mean, self.smoothed_cov, self._gains, self.spread)


def _gather(store: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """``store[index]`` for ``store (n, *e)`` and an integer ``index (*i)``: ``(*i, *e)`` (row copies)."""
    return torch.from_numpy(np.take(store, index, axis=0))


def _steady_pass(A, b, Q, H, c, R, m0, P0, y: torch.Tensor, tol: float, smooth: bool) -> SteadyStateOutput:
    """Steady-state engine on prepared float64 parts; see :func:`steady_state_smoother`."""
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
    log_ev = -0.5 * (dof * _LOG_2PI + 2.0 * hld + nis).sum(-1)
    innov_var = np.where(obs, Sd_c[run_idx], np.nan)
    shp = lambda x, *tail: x.reshape((*batch, *tail))  # noqa: E731
    out = SteadyStateOutput(
        filtered_mean=shp(tt(mf), T, d),
        filtered_cov=shp(_gather(Pf_c, run_idx), T, d, d),
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
    out._predicted_cov = lambda: shp(_gather(Pp_c, run_idx), T, d, d)
    if smooth:
        G_c, Ps_c = (np.concatenate(x) if len(x) > 1 else x[0] for x in zip(*s_parts, strict=True))
        run_gidx = np.stack(gidx_g)[group]
        ms = np.empty((B, T, d))
        _smooth_mean_pass(mf, mp, run_gidx, G_c, ms)
        out.smoothed_mean = shp(tt(ms), T, d)
        out.smoothed_cov = shp(_gather(Ps_c, np.stack(sidx_g)[group]), T, d, d)
        out._gains = lambda: shp(_gather(G_c, run_gidx), T - 1, d, d)
    return out


def steady_state_smoother(model, y, *, tol: float = 1e-12, smooth: bool = True) -> SteadyStateOutput:
    """Exact Kalman filter and RTS smoother reusing converged (steady-state) covariances.

    For a time-invariant model (``A``, ``Q``, ``H``, ``R`` fixed; offsets ``b_t``, ``c`` allowed)
    the covariances :math:`P_t^-, P_t, S_t, K_t` do not depend on the data and converge
    geometrically to the solution of the discrete algebraic Riccati equation (Anderson & Moore
    1979, ch. 4). Once a fully observed step changes the filtered covariance by at most
    ``tol * max|P_t|`` (element-wise) from the previous fully observed step, the converged
    :math:`P^-, P, K, S^{-1/2}` are reused and only the means are propagated
    (matrix-vector work), as statsmodels' ``KalmanFilter`` does with its ``tolerance`` option.
    A step with missing components (NaN) leaves the steady state: covariances are computed
    again until they return within ``tol`` of the steady values. The RTS backward pass does
    the same with the smoother gain :math:`G = P A^T (P^-)^{-1}` and the smoothed covariance
    (a Stein-equation fixed point). Runs sharing a missing-value pattern share one covariance
    computation; means of all runs are propagated by compiled loops (numba).

    The error of a reused covariance is about ``tol * rho / (1 - rho)`` relative, ``rho`` the
    contraction rate of the Riccati map (the squared spectral radius of the closed-loop
    ``A (I - K H)``); ``tol = 0`` recomputes every step (the plain Kalman recursions).

    Parameters
    ----------
    model : LinearGaussianModel or time-invariant affine StateSpaceModel
    y : array (*batch, T, m)
        Observations, NaN = missing.
    tol : float
        Relative convergence tolerance (>= 0).
    smooth : bool
        Also run the RTS smoother.

    Returns
    -------
    SteadyStateOutput
        Means, covariances, log-evidence, innovations and the counts of covariance updates.

    Raises
    ------
    ParameterError
        If the model is time-varying, ``tol`` is negative, or a predicted covariance
        :math:`P_t^-` is singular (e.g. ``Q = 0`` and ``P0 = 0``; ``run`` then uses the loop,
        whose smoother falls back to a pseudo-inverse).
    """
    from bayesbridge.model import as_tensor

    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ParameterError(f"tol: expected a finite number >= 0 (e.g. 1e-12), got {tol!r}.")
    y = as_tensor(y, "y")
    parts = _steady_parts(model, y.shape[-2])
    if parts is None:
        raise ParameterError(
            "model: steady_state_smoother needs a time-invariant linear-Gaussian model (fixed A and Q); "
            "use run() / assimilate(..., method='kalman'), which falls back to the general loop."
        )
    try:
        return _steady_pass(*parts, y, float(tol), smooth)
    except np.linalg.LinAlgError as exc:
        raise ParameterError(
            f"model: a predicted covariance is singular ({exc}); give Q or P0 positive variance in "
            f"every direction, or use assimilate(..., method='kalman', engine='loop')."
        ) from exc


def gaussian_hmm(model, T: int):
    """The model as :class:`pyro.distributions.GaussianHMM` over ``y_1..y_T``.

    Pyro's matrices act on row vectors, so the transition matrix is ``A^T`` and the observation
    matrix ``H^T``; its initial distribution is that of the state one step before the first
    observation, which is our ``z_0 ~ N(m0, P0)``. ``Q`` must be positive definite.

    Parameters
    ----------
    model : LinearGaussianModel
    T : int
        Number of observation times.

    Returns
    -------
    pyro.distributions.GaussianHMM
        ``log_prob(y)`` for ``y`` ``(*batch, T, m)`` is ``log p(y_{1:T})`` and ``filter(y)`` is
        ``p(z_T | y_{1:T})``.
    """
    import pyro.distributions as dist

    A, Q, H, R, m0, P0 = _linear_parts(model)
    d, m = A.shape[0], H.shape[0]
    return dist.GaussianHMM(
        initial_dist=dist.MultivariateNormal(m0, covariance_matrix=P0),
        transition_matrix=A.mT.contiguous(),
        transition_dist=dist.MultivariateNormal(Q.new_zeros(d), covariance_matrix=Q),
        observation_matrix=H.mT.contiguous(),
        observation_dist=dist.MultivariateNormal(R.new_zeros(m), covariance_matrix=R),
        duration=T,
    )


def parallel_smoothed_mean(model, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact smoothed means and log-evidence by Pyro's parallel-scan algorithms.

    Uses :func:`pyro.ops.gaussian.sequential_gaussian_filter_sample` with zero noise (the
    posterior of the whole trajectory is Gaussian, so its zero-noise reparameterised sample is
    the smoothed mean) and :meth:`GaussianHMM.log_prob`; both contract the time axis in
    ``O(log T)`` sequential depth instead of a loop over ``T``. Fully observed ``y`` only.

    Parameters
    ----------
    model : LinearGaussianModel
    y : Tensor (*batch, T, m)
        Observations without NaN.

    Returns
    -------
    smoothed_mean : Tensor (*batch, T, d)
    log_evidence : Tensor (*batch,)
    """
    from pyro.ops.gaussian import sequential_gaussian_filter_sample

    if bool(torch.isnan(y).any()):
        raise ParameterError(
            "y: parallel_smoothed_mean needs fully observed data; use run() (method='kalman') "
            "for observations with NaN."
        )
    hmm = gaussian_hmm(model, y.shape[-2])
    trans = hmm._trans + hmm._obs.condition(y).event_pad(left=hmm.hidden_dim)
    trans = trans.expand(trans.batch_shape)
    zeros = y.new_zeros(*y.shape[:-2], y.shape[-2] + 1, hmm.hidden_dim)
    mean = sequential_gaussian_filter_sample(hmm._init, trans, (), noise=zeros)[..., 1:, :]
    return mean, hmm.log_prob(y)
