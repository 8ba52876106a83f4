"""Stochastic maximisation of an ELBO with a convergence test, and its record (:class:`ELBOTrace`).

:func:`maximise_elbo` runs Adam (Kingma & Ba 2015) with the gradient norm clipped, on a
reparameterised Monte-Carlo ELBO (Kingma & Welling 2014; Titsias & Lázaro-Gredilla 2014),
:math:`\\widehat{\\mathrm{ELBO}} = \\frac1K \\sum_k \\log p(y, \\theta_k) + H[q]` with analytic
entropy. Every ``window`` steps it compares the mean ELBO of the last window with that of the
window before; it stops when the gain is below ``tol`` nats plus twice the standard error of
the difference (the gain is then indistinguishable from the Monte-Carlo noise of the estimator),
after at least ``min_windows`` windows, and at ``max_steps`` otherwise. After at least two windows
the parameters returned are an exponential moving average of their iterates with a time constant
of half a window (iterate averaging, Polyak & Juditsky 1992), which removes most of the
step-to-step jitter of a constant learning rate; shorter runs return the last iterate.

:func:`fit_gaussian_guide` fits a :class:`~bayesbridge.infer._svi_guides.ScaleGuide` (mean-field
or low-rank Gaussian) to any log joint density of a few unconstrained global parameters with the
"sticking the landing" gradient (Roeder, Wu & Duvenaud 2017: ``log q`` with its parameters
detached, so the gradient vanishes where ``q`` is the posterior): the error scales with the exact
Kalman likelihood (:mod:`bayesbridge.infer.variational`) or with the ensemble likelihood
(:mod:`bayesbridge.infer.hyper`), the same optimiser and guide on both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bayesbridge.errors import ParameterError
from bayesbridge.infer._svi_guides import ScaleGuide

__all__ = ["ELBOTrace", "maximise_elbo", "fit_gaussian_guide"]


@dataclass
class ELBOTrace:
    """Record of a variational fit.

    Attributes
    ----------
    elbo : Tensor (steps,)
        Monte-Carlo ELBO estimate at every step (nats).
    converged : bool
        Whether the convergence test stopped the fit before ``max_steps``.
    steps : int
        Steps taken.
    window_means : Tensor (windows,)
        Mean ELBO of each complete window.
    final_gain : float
        Gain of the last window's mean ELBO over the previous window's (nats; NaN with fewer
        than two windows).
    final_gain_se : float
        Standard error of that gain.
    importance_ess : float
        Effective sample size of the importance weights that corrected the draws, as a fraction
        of the proposals (NaN when the draws were not importance-resampled).
    """

    elbo: torch.Tensor
    converged: bool
    steps: int
    window_means: torch.Tensor
    final_gain: float
    final_gain_se: float
    importance_ess: float = math.nan

    def summary(self) -> str:
        """One line: steps, convergence and the last windows' ELBO."""
        last = float(self.window_means[-1]) if len(self.window_means) else float("nan")
        state = "converged" if self.converged else "stopped at the step limit"
        text = (f"SVI {state} after {self.steps} steps; mean ELBO of the last window {last:.2f}, gain over the "
                f"window before {self.final_gain:.3f} +- {self.final_gain_se:.3f} nats")
        if math.isfinite(self.importance_ess):
            text += f"; importance ESS {self.importance_ess:.0%} of the proposals"
        return text


def maximise_elbo(
    elbo: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    lr: float,
    max_steps: int,
    window: int,
    tol: float,
    min_windows: int = 2,
    clip_norm: float = 10.0,
) -> ELBOTrace:
    """Maximise ``elbo()`` over ``params`` in place; see the module docstring.

    Parameters
    ----------
    elbo : callable
        Returns a fresh Monte-Carlo ELBO estimate ``()`` differentiable w.r.t. ``params``.
    params : sequence of Tensor
        Leaf tensors with ``requires_grad``; set to their moving average on return (after at
        least two windows).
    lr : float
        Adam learning rate.
    max_steps : int
        Step limit.
    window : int
        Steps per convergence window.
    tol : float
        Gain (nats) below which, with the noise allowance, the fit counts as converged; a
        negative ``tol`` disables the test.
    min_windows : int
        Windows before the test may stop the fit.
    clip_norm : float
        Largest gradient norm (as Pyro's ``ClippedAdam``).

    Raises
    ------
    ParameterError
        If the ELBO becomes non-finite.
    """
    opt = torch.optim.Adam(list(params), lr=lr)
    trace = torch.empty(max_steps, dtype=torch.float64)
    ema = [p.detach().clone() for p in params]
    decay = 1.0 - 2.0 / max(window, 2)
    means: list[float] = []
    ses: list[float] = []
    converged = False
    gain, gain_se = math.nan, math.nan
    step = 0
    while step < max_steps and not converged:
        opt.zero_grad()
        value = elbo()
        if not bool(torch.isfinite(value)):
            raise ParameterError(
                f"svi: the ELBO became non-finite at step {step}; lower lr (now {lr}) or use tighter priors on "
                f"the error scales."
            )
        (-value).backward()
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
        trace[step] = float(value.detach())
        with torch.no_grad():
            for a, p in zip(ema, params, strict=True):
                a.mul_(decay).add_(p, alpha=1.0 - decay)
        step += 1
        if step % window == 0:
            block = trace[step - window:step]
            means.append(float(block.mean()))
            ses.append(float(block.std()) / math.sqrt(window) if window > 1 else 0.0)
            if len(means) >= 2:
                gain = means[-1] - means[-2]
                gain_se = math.hypot(ses[-1], ses[-2])
                converged = tol >= 0 and len(means) >= min_windows and gain < tol + 2.0 * gain_se
    if step >= 2 * window:
        with torch.no_grad():
            for a, p in zip(ema, params, strict=True):
                p.copy_(a)
    return ELBOTrace(trace[:step].clone(), converged, step, torch.tensor(means, dtype=torch.float64), gain, gain_se)


def fit_gaussian_guide(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    loc: torch.Tensor,
    generator: torch.Generator,
    *,
    guide: str = "normal",
    rank: int | None = None,
    init_scale: float = 0.05,
    particles: int = 1,
    lr: float = 0.05,
    max_steps: int = 1000,
    window: int = 100,
    tol: float = 0.05,
) -> tuple[ScaleGuide, ELBOTrace]:
    """Fit a Gaussian guide ``q(u)`` over ``k`` unconstrained parameters to ``log_joint``.

    Parameters
    ----------
    log_joint : callable
        ``u (k,)`` -> ``log p(y, u)`` ``()`` (likelihood, prior and Jacobian), differentiable.
    loc : Tensor (k,)
        Initial mean of the guide.
    generator : torch.Generator
        Source of the guide's initial ``W`` and of every draw.
    guide : {"normal", "lowrank"}
    rank : int or None
        Rank of the low-rank guide.
    init_scale : float
        Initial standard deviations.
    particles : int
        Draws per ELBO estimate.
    lr, max_steps, window, tol
        See :func:`maximise_elbo`.

    Returns
    -------
    tuple of ScaleGuide and ELBOTrace
    """
    q = ScaleGuide(loc, guide, rank, init_scale, generator)

    def elbo() -> torch.Tensor:
        u = q.rsample(particles, generator)
        log_p = torch.stack([log_joint(u[i]) for i in range(particles)])
        return (log_p - q.log_prob_detached(u)).mean()

    return q, maximise_elbo(elbo, q.params, lr=lr, max_steps=max_steps, window=window, tol=tol)
