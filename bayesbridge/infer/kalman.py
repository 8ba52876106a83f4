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
(batched torch linear algebra; the only Python loop is over time). :func:`gaussian_hmm` builds the
same model as :class:`pyro.distributions.GaussianHMM` (an independent implementation, used as the
test oracle and, through its parallel-scan algorithms, by :func:`parallel_smoothed_mean`).

The pieces live in :mod:`~bayesbridge.infer.kalman_config` (:class:`KalmanConfig`),
``_kalman_system`` (the affine system read from the model, the masked observation step),
``_kalman_loop`` (the torch loop and FFBS), ``_kalman_steady`` with ``_kalman_kernel`` (the
steady-state engine) and :mod:`~bayesbridge.infer.pyro_hmm` (the Pyro oracle); this module is
the engine's entry point and re-exports their public names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from bayesbridge.errors import ParameterError
from bayesbridge.infer._kalman_loop import Pass, ffbs, loop_pass, reference_scale
from bayesbridge.infer._kalman_steady import SteadyStateOutput, steady_pass
from bayesbridge.infer._kalman_system import (
    affine_system,
    masked_obs_system,
    needs_grad,
    steady_parts,
)
from bayesbridge.infer.divergence import check_covariance, check_finite, check_innovations
from bayesbridge.infer.kalman_config import KalmanConfig
from bayesbridge.infer.pyro_hmm import gaussian_hmm, parallel_smoothed_mean
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

Noise = Callable[[str, int, tuple], torch.Tensor]


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
        ``c``), see :func:`~bayesbridge.infer._kalman_system.affine_system`.
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
    T = y.shape[-2]
    linear = all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0"))
    system = None if linear else affine_system(model, T)
    res = _steady_route(model, y, config, system) if config.engine != "loop" else None
    if res is None:
        res = loop_pass(*(affine_system(model, T) if system is None else system), y, config)
    if config.check_divergence:
        check_innovations(res.nis, res.dof, "kalman")
    return _result(res, y, config, generator, noise)


def _steady_route(model, y: torch.Tensor, config: KalmanConfig, system) -> Pass | None:
    """The steady-state pass where it applies (else None, or an error for ``engine="steady"``).

    ``system`` is the model's affine system when already computed (None for a
    :class:`~bayesbridge.model.LinearGaussianModel`). It applies to CPU observations
    ``y (*batch, T, m)`` of a time-invariant model with no input requiring gradients and
    non-singular predicted covariances; its filtered means are checked for NaN/inf.
    """
    T = y.shape[-2]
    res = None
    parts = steady_parts(model, T, system)
    why = None
    if y.device.type != "cpu":
        why = f"the observations live on {y.device} (the steady-state engine is compiled for the CPU)"
    elif parts is None:
        why = "the model is time-varying (A_t or Q_t change with t) or not affine"
    elif needs_grad(y, *parts):
        why = "an input requires gradients (the steady-state engine is not differentiable)"
    else:
        try:
            out = steady_pass(*parts, y, config.steady_tol, config.smooth or config.draws > 0)
        except np.linalg.LinAlgError as exc:
            why = f"a predicted covariance is singular ({exc})"
        else:
            res = out._as_pass()
    if why is not None and config.engine == "steady":
        raise ParameterError(
            f"engine: 'steady' cannot be used here because {why}; use engine='auto' or 'loop'."
        )
    if res is not None and config.check_divergence:
        check_covariance(res.filtered_cov, "kalman", reference_scale(parts[7], parts[2]))
        bad = ~torch.isfinite(res.filtered_mean).all(-1)
        if bool(bad.any()):
            t = int(bad.reshape(-1, T).any(0).nonzero()[0])
            check_finite(res.filtered_mean[..., t, :], t, "kalman", "filtered mean")
    return res


def _result(res: Pass, y: torch.Tensor, config: KalmanConfig, generator: torch.Generator,
            noise: Noise | None) -> AssimilationResult:
    """The engine's result from a pass ``res``, with FFBS draws when ``config.draws > 0``.

    The draws take one standard-normal tensor ``(T, *batch, draw, d)`` from ``noise("draws", 0,
    shape)`` or, without ``noise``, from ``generator`` on ``y``'s device.
    """
    batch = y.shape[:-2]
    T = y.shape[-2]
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
        result.smoothed_ensemble = ffbs(res, eps)
    return result


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
    parts = steady_parts(model, y.shape[-2])
    if parts is None:
        raise ParameterError(
            "model: steady_state_smoother needs a time-invariant linear-Gaussian model (fixed A and Q); "
            "use run() / assimilate(..., method='kalman'), which falls back to the general loop."
        )
    try:
        return steady_pass(*parts, y, float(tol), smooth)
    except np.linalg.LinAlgError as exc:
        raise ParameterError(
            f"model: a predicted covariance is singular ({exc}); give Q or P0 positive variance in "
            f"every direction, or use assimilate(..., method='kalman', engine='loop')."
        ) from exc
