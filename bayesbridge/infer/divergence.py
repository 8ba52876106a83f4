"""Divergence checks shared by the filters: detect, never hide.

A filter that produces NaN/inf states, or whose normalised innovations are far outside their
predicted distribution, has diverged; continuing would silently return garbage. The checks raise
:class:`~bayesbridge.errors.FilterDivergenceError` naming the time step and the usual remedies.

The innovation test uses the normalised innovation squared (NIS, Bar-Shalom, Li & Kirubarajan
2001, *Estimation with Applications to Tracking and Navigation*, sec. 5.4):
:math:`\\epsilon_t = \\nu_t^T S_t^{-1} \\nu_t \\sim \\chi^2_{m_t}` for a consistent filter. Its
time average over the run is compared with a very loose bound, so only gross inconsistency
(e.g. a collapsed ensemble) triggers.
"""

from __future__ import annotations

import torch

from bayesbridge.errors import FilterDivergenceError

__all__ = ["check_finite", "check_innovations", "REMEDIES"]

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
