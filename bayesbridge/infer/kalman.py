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

All runs in the leading batch dimensions of the observations are filtered at once (batched
linear algebra; the only Python loop is over time). :func:`gaussian_hmm` builds the same model
as :class:`pyro.distributions.GaussianHMM` (an independent implementation, used as the test
oracle and, through its parallel-scan algorithms, by :func:`parallel_smoothed_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bayesbridge.errors import InputTypeError, ParameterError
from bayesbridge.infer.divergence import check_finite, check_innovations
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = ["KalmanConfig", "run", "gaussian_hmm", "parallel_smoothed_mean", "masked_obs_system"]

_LOG_2PI = math.log(2.0 * math.pi)

Noise = Callable[[str, int, tuple], torch.Tensor]


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
    """

    smooth: bool = True
    draws: int = 0
    members: int | None = None
    check_divergence: bool = True

    def __post_init__(self) -> None:
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
    return tuple(torch.as_tensor(getattr(model, n), dtype=torch.float64) for n in names)


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
        return (A.expand(T, d, d), torch.zeros(T, d, dtype=torch.float64), Q.expand(T, d, d), H,
                torch.zeros(m, dtype=torch.float64), R, m0, P0)
    structure = model.affine_structure(T) if hasattr(model, "affine_structure") else None
    if structure is None:
        _linear_parts(model)  # raises the explanatory error
    Q = torch.stack([torch.as_tensor(model.transition_cov(t), dtype=torch.float64) for t in range(T)])
    m0, P0 = (torch.as_tensor(x, dtype=torch.float64) for x in model.initial())
    R = torch.as_tensor(model.obs_cov(), dtype=torch.float64)
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


def _psd_sqrt(P: torch.Tensor) -> torch.Tensor:
    """A square root ``L`` with ``L L^T = P`` for a positive semi-definite ``P`` ``(*b, d, d)``."""
    L, info = torch.linalg.cholesky_ex(P)
    if bool((info == 0).all()):
        return L
    lam, V = torch.linalg.eigh(0.5 * (P + P.mT))
    return V * lam.clamp_min(0.0).sqrt().unsqueeze(-2)


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

    def __init__(self, batch: tuple, T: int, m: int) -> None:
        self.innov = torch.full((*batch, T, m), float("nan"), dtype=torch.float64)
        self.innov_var = torch.full_like(self.innov, float("nan"))
        self.nis = torch.zeros(*batch, T, dtype=torch.float64)
        self.dof = torch.full((*batch, T), float(m), dtype=torch.float64)
        self.half_logdet = torch.zeros(*batch, T, dtype=torch.float64)

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


def run(
    model, y: torch.Tensor, config: KalmanConfig, generator: torch.Generator, *, noise: Noise | None = None
) -> AssimilationResult:
    """Exact Kalman filter (+ RTS smoother, + FFBS draws) for a linear-Gaussian model.

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
    T, m = y.shape[-2], y.shape[-1]
    A_seq, b_seq, Q_seq, H, c, R, m0, P0 = _affine_system(model, T)
    d = A_seq.shape[-1]
    eye = torch.eye(d, dtype=torch.float64)
    mean = m0.expand(*batch, d)
    cov = P0.expand(*batch, d, d)
    log = _InnovationLog(batch, T, m)
    mf_all = torch.empty(*batch, T, d, dtype=torch.float64)
    Pf_all = torch.empty(*batch, T, d, d, dtype=torch.float64)
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
    if config.check_divergence:
        check_innovations(log.nis, log.dof, "kalman")
    spread = (Pf_all.diagonal(dim1=-2, dim2=-1).mean(-1)).clamp_min(0.0).sqrt()
    result = AssimilationResult(
        method="kalman",
        filtered_mean=mf_all,
        filtered_cov=Pf_all,
        log_evidence=log.log_ev,
        diagnostics=StepDiagnostics(innovation=log.innov, spread=spread, innovation_var=log.innov_var),
        config=config,
    )
    if config.smooth or config.draws > 0:
        gains = torch.empty(*batch, max(T - 1, 0), d, d, dtype=torch.float64)
        for t in range(T - 1):
            # G_t = P_t A_{t+1}^T (P_{t+1}^-)^{-1}  (P^- symmetric)
            gains[..., t, :, :] = _spd_solve(Pp_all[..., t + 1, :, :], A_seq[t + 1] @ Pf_all[..., t, :, :]).mT
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
        result.smoothed_mean, result.smoothed_cov = ms_all, Ps_all
    if config.draws > 0:
        n = config.draws
        shape = (T, *batch, n, d)
        if noise is None:
            eps = torch.randn(shape, dtype=torch.float64, generator=generator)
        else:
            eps = noise("draws", 0, shape)
        out = torch.empty(*batch, T, n, d, dtype=torch.float64)
        z = mf_all[..., T - 1, :].unsqueeze(-2) + eps[T - 1] @ _psd_sqrt(Pf_all[..., T - 1, :, :]).mT
        out[..., T - 1, :, :] = z
        for t in range(T - 2, -1, -1):
            G = gains[..., t, :, :]
            cond_cov = Pf_all[..., t, :, :] - G @ Pp_all[..., t + 1, :, :] @ G.mT
            cond_mean = mf_all[..., t, :].unsqueeze(-2) + (z - mp_all[..., t + 1, :].unsqueeze(-2)) @ G.mT
            z = cond_mean + eps[t] @ _psd_sqrt(0.5 * (cond_cov + cond_cov.mT)).mT
            out[..., t, :, :] = z
        result.smoothed_ensemble = out
    return result


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
        transition_dist=dist.MultivariateNormal(torch.zeros(d, dtype=torch.float64), covariance_matrix=Q),
        observation_matrix=H.mT.contiguous(),
        observation_dist=dist.MultivariateNormal(torch.zeros(m, dtype=torch.float64), covariance_matrix=R),
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
    zeros = torch.zeros(*y.shape[:-2], y.shape[-2] + 1, hmm.hidden_dim, dtype=torch.float64)
    mean = sequential_gaussian_filter_sample(hmm._init, trans, (), noise=zeros)[..., 1:, :]
    return mean, hmm.log_prob(y)
