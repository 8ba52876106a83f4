"""Divergence checks shared by the filters: detect, never hide.

A filter that produces NaN/inf states, or whose normalised innovations are far outside their
predicted distribution, has diverged; continuing would silently return garbage. The checks raise
:class:`~bayesbridge.errors.FilterDivergenceError` naming the time step and the usual remedies.

The innovation test uses the normalised innovation squared (NIS, Bar-Shalom, Li & Kirubarajan
2001, *Estimation with Applications to Tracking and Navigation*, sec. 5.4):
:math:`\\epsilon_t = \\nu_t^T S_t^{-1} \\nu_t \\sim \\chi^2_{m_t}` for a consistent filter. Its
time average over the run is compared with a very loose bound, so only gross inconsistency
(e.g. a collapsed ensemble) triggers.

The covariance test (:func:`check_covariance`, used by the exact Kalman filter) flags the first
step whose covariance holds NaN/inf or whose largest variance exceeds :data:`EXPLOSION_FACTOR`
times the reference scale (the prior and model-error variances): an unstable direction of the
dynamics that the observations do not constrain grows geometrically and is never a posterior.
"""

from __future__ import annotations

import torch

from bayesbridge.errors import FilterDivergenceError

__all__ = ["check_finite", "check_innovations", "check_covariance", "REMEDIES", "EXPLOSION_FACTOR"]

EXPLOSION_FACTOR = 1e12
"""A variance this many times the reference scale counts as a diverged covariance."""

REMEDIES = (
    "increase multiplicative inflation, enlarge the observation-error scale R, add members or "
    "particles, or check that observations and the observation operator use the same units"
)


def check_finite(state: torch.Tensor, step: int, method: str, what: str = "state") -> None:
    """Raise :class:`FilterDivergenceError` if ``state`` holds NaN or inf at assimilation step ``step`` (0-based).

    ``method`` (the engine's name) and ``what`` (e.g. ``"analysis mean"``) go into the message.
    """
    if not bool(torch.isfinite(state).all()):
        bad = int((~torch.isfinite(state)).sum())
        raise FilterDivergenceError(
            f"{method}: {bad} non-finite values in the {what} at time step {step}; the filter "
            f"diverged. Remedies: {REMEDIES}."
        )


def check_innovations(
    nis: torch.Tensor, dof: torch.Tensor, method: str, factor: float = 25.0
) -> None:
    """Raise if the normalised innovations are grossly inconsistent.

    Parameters
    ----------
    nis : Tensor (*batch, T)
        Normalised innovation squared per step (0 where nothing was observed).
    dof : Tensor (*batch, T)
        Number of observed components per step.
    method : str
        Engine name for the message.
    factor : float
        Trigger when ``sum(nis) > factor * sum(dof) + 50`` (mean NIS 25 times its expectation).
    """
    total = nis.sum(-1)
    expected = dof.sum(-1)
    bad = total > factor * expected + 50.0
    if bool(bad.any()):
        worst = torch.argmax(torch.where(bad, total - expected, torch.zeros_like(total)).reshape(-1))
        run_nis = nis.reshape(-1, nis.shape[-1])[worst]
        step = int(torch.argmax(run_nis))
        raise FilterDivergenceError(
            f"{method}: innovations are inconsistent with their predicted covariance (mean "
            f"normalised innovation squared {float(total.reshape(-1)[worst] / expected.reshape(-1)[worst].clamp_min(1)):.1f}, "
            f"expected about 1; worst at time step {step}). Remedies: {REMEDIES}."
        )


def check_covariance(cov: torch.Tensor, method: str, reference: float, what: str = "filtered covariance",
                     hint: str = "") -> None:
    """Raise :class:`FilterDivergenceError` at the first step whose covariance is non-finite or exploding.

    Parameters
    ----------
    cov : Tensor (*batch, T, d, d)
        Per-step covariances.
    method : str
        Engine name for the message.
    reference : float
        Variance scale of the problem (e.g. the largest prior or model-error variance); a
        variance above ``EXPLOSION_FACTOR * reference`` counts as exploding.
    what : str
        What ``cov`` is, for the message.
    hint : str
        Extra explanation appended to the message (e.g. the spectral radius of ``A``).
    """
    if cov.shape[-3] == 0:
        return
    T = cov.shape[-3]
    with torch.no_grad():
        var = cov.detach().diagonal(dim1=-2, dim2=-1)  # (*batch, T, d)
        nonfinite = (~torch.isfinite(cov.detach())).flatten(-2).any(-1).reshape(-1, T).any(0)
        limit = EXPLOSION_FACTOR * max(float(reference), 1e-300)
        big = torch.nan_to_num(var.abs(), nan=0.0, posinf=float("inf")).amax(-1).reshape(-1, T) > limit
        bad = nonfinite | big.any(0)
        if not bool(bad.any()):
            return
        t = int(bad.nonzero()[0])
        if bool(nonfinite[t]):
            kind = "non-finite values"
        else:
            kind = (f"a variance of {float(var[..., t, :].abs().max()):.3g}, more than {EXPLOSION_FACTOR:.0e} times "
                    f"the problem's scale ({float(reference):.3g})")
    raise FilterDivergenceError(
        f"{method}: the {what} has {kind} at time step {t}; the filter diverged{hint}. Remedies: make the "
        f"dynamics stable (spectral radius of A below 1), observe the growing directions, or give Q, R "
        f"and P0 in consistent units."
    )
