"""Weight degeneracy of importance-sampling filters: detect it and say so.

A particle filter whose effective sample size :math:`\\mathrm{ESS}_t = 1 / \\sum_i (W_t^i)^2`
(Kong, Liu & Wong 1994) keeps falling to a few particles estimates its posterior from those few:
the moments, the log-evidence and the backward-simulation trajectories are then noisy and too
narrow, typically with no error raised (issue 14: a bootstrap filter of 100 particles on the
ENSO indices had a median ESS of 20 and a minimum of 1.7, and 56 % coverage of a nominal 90 %).
:func:`check_degeneracy` emits a :class:`DegeneracyWarning` when the ESS falls below
``threshold`` times the number of particles (default 10 %) at more than ``max_fraction`` of the
steps (default 5 %), naming the worst step, its ESS and the remedies.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["DegeneracyWarning", "check_degeneracy", "ESS_THRESHOLD", "MAX_FRACTION"]

ESS_THRESHOLD = 0.10
"""Fraction of the particles below which a step's ESS counts as degenerate."""

MAX_FRACTION = 0.05
"""Fraction of degenerate steps above which :func:`check_degeneracy` warns."""


class DegeneracyWarning(UserWarning):
    """The importance weights of a particle filter collapsed onto a few particles at many steps."""


def check_degeneracy(ess: torch.Tensor, n_particles: int, method: str, remedy: str,
                     threshold: float = ESS_THRESHOLD, max_fraction: float = MAX_FRACTION) -> bool:
    """Warn (:class:`DegeneracyWarning`) if ``ESS < threshold * N`` at more than ``max_fraction`` of the steps.

    Parameters
    ----------
    ess : Tensor (*batch, T)
        Effective sample size of every step (after weighting, before resampling); steps whose
        observation was entirely missing have ESS ``N`` and never count.
    n_particles : int
        ``N``.
    method : str
        Engine name for the message.
    remedy : str
        What to change (the proposal, the number of particles ...), appended to the message.
    threshold, max_fraction : float
        The rule above.

    Returns
    -------
    bool
        Whether it warned.
    """
    ess = ess.detach().reshape(-1, ess.shape[-1]).to(torch.float64).cpu()
    low = ess < threshold * n_particles
    frac = low.double().mean(-1)  # per run
    run = int(torch.argmax(frac))
    if float(frac[run]) <= max_fraction:
        return False
    step = int(torch.argmin(ess[run]))
    where = f" (run {run})" if ess.shape[0] > 1 else ""
    warnings.warn(
        f"{method}: the particle weights are degenerate{where}: the effective sample size is below "
        f"{threshold:.0%} of the {n_particles} particles at {int(low[run].sum())} of {ess.shape[-1]} steps "
        f"({float(frac[run]):.0%}; median ESS {float(ess[run].median()):.1f}), lowest {float(ess[run, step]):.1f} "
        f"at time step {step}. The posterior moments, log-evidence and trajectories rest on a few particles "
        f"and are too narrow. Remedies: {remedy}.",
        DegeneracyWarning,
        stacklevel=4,
    )
    return True
