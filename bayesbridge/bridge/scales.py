"""The bridge's error scales: fixed at the representation error, or integrated over their posterior.

The observation-error scale :math:`s_k` of an assimilated index cannot be smaller than the
representation error :math:`r_k` that the bridge measures when it is fitted (the floor
:math:`\\epsilon_k` plus the codec's residual on the box, :mod:`bayesbridge.bridge.bridge`), and
the model-error scale :math:`\\sigma` multiplies the latent dynamics' noise learnt on the
operational model. With ``error_scales="fixed"`` the engines run at :math:`s = r`,
:math:`\\sigma = 1`. With ``error_scales="integrate"`` the priors are

.. math:: s_k = r_k + |e_k|,\\ e_k \\sim N(0, r_k^2),\\qquad \\sigma = 1 + |e_\\sigma|,\\ e_\\sigma \\sim N(0, 1)

(:func:`~bayesbridge.model.scale_priors.floored_scale_prior`,
:class:`~bayesbridge.model.scale_priors.FlooredHalfNormal`): both floored. The latent noise
learnt on the operational model is the least model error the bridge admits, as the
representation error is the least observation error: the operational model's linear inverse
model cannot predict another system (the truth, the real ocean) better than it predicts the
operational model's own trajectories; and a few observed indices see only a few latent
directions, so a ``sigma`` below 1 learnt from them would shrink the noise of all the others
(the measurements are in ``docs/lab-notes.md``, "Integrated error scales"). The field posterior is the
Rao-Blackwellised mixture

.. math:: p(z_{1:T} \\mid y) = \\int p(z_{1:T} \\mid y, s, \\sigma)\\, p(s, \\sigma \\mid y)\\, ds\\, d\\sigma
          \\approx \\frac1K \\sum_{j=1}^K p(z_{1:T} \\mid y, s^{(j)}, \\sigma^{(j)}),

with :math:`K` draws of the scales from their exact-marginal-likelihood posterior
(:func:`~bayesbridge.infer.scale_sampling.sample_error_scales`: Laplace approximation plus
importance sampling) and, per draw, ``members / K`` whole trajectories by forward-filtering
backward-sampling (Carter & Kohn 1994; Frühwirth-Schnatter 1994) of the exact Kalman smoother
(:func:`~bayesbridge.infer.scale_mixture.scale_mixture_draws`, compiled, with the periodic
steady state reused).

This needs an affine bridge (EOF codec, linear or seasonal dynamics) and a smoothing route:
``kalman`` and ``enks`` (which equals the exact smoother on an affine bridge). ``svi`` infers
the scales itself, under the same floored priors, with either setting (its guide always learns
them; with the engine's log-normal priors it found 0.015-0.02 degC, a tenth of the
representation error, and covered the twin's truth in half the months). The filters (``enkf``, ``etkf``) and the
particle filter ``pf`` run at the fixed scales: splitting their ensembles over scale draws would
leave too few members per draw, so :class:`ScaleChoice` records the fallback and its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bayesbridge.infer import AssimilationResult, assimilate
from bayesbridge.infer.scale_mixture import scale_mixture_draws
from bayesbridge.infer.scale_sampling import (
    ScaleDraws,
    ScaleSamplerConfig,
    laplace_scales,
    sample_error_scales,
)
from bayesbridge.model.scale_priors import FlooredHalfNormal, floored_scale_prior

__all__ = ["ErrorScales", "ERROR_SCALES", "INTEGRATING_METHODS", "ScaleChoice", "ScaledAssimilation",
           "floored_model", "scale_choice", "assimilate_error_scales"]

ErrorScales = Literal["integrate", "fixed"]
ERROR_SCALES: tuple[str, ...] = ("integrate", "fixed")
"""Valid values of ``BridgeConfig.error_scales``."""

INTEGRATING_METHODS: tuple[str, ...] = ("kalman", "enks")
"""Routes that integrate over the scales by a smoother draw per scale draw (affine bridges)."""


@dataclass(frozen=True)
class ScaleChoice:
    """How the error scales of one assimilation are treated.

    Attributes
    ----------
    requested : str
        ``"integrate"`` or ``"fixed"`` (the configuration).
    used : str
        ``"integrate"`` (scale draws, a smoother per draw), ``"infer"`` (``svi`` infers them
        under the floored priors) or ``"fixed"``.
    reason : str
        Why ``used`` differs from ``requested`` (empty when it does not).
    """

    requested: str
    used: str
    reason: str = ""


def scale_choice(requested: str, method: str, affine: bool) -> ScaleChoice:
    """What ``requested`` becomes for engine ``method`` on an affine (``affine=True``) or nonlinear bridge."""
    if method == "svi":  # its guide always learns the scales: under the floored priors, whatever was asked
        return ScaleChoice(requested, "infer", "" if requested == "integrate" else
                           "svi always infers the error scales; it does so under the floored priors")
    if requested == "fixed":
        return ScaleChoice("fixed", "fixed")
    if method not in INTEGRATING_METHODS:
        return ScaleChoice(requested, "fixed", f"method {method!r} runs at the fixed scales; integrating "
                                               f"needs one of {', '.join(INTEGRATING_METHODS)} or 'svi'")
    if not affine:
        return ScaleChoice(requested, "fixed", "the bridge is not affine (a neural codec or dynamics): the exact "
                                               "likelihood of the scales is not available")
    return ScaleChoice(requested, "integrate")


def floored_model(model, excess_scale: float = 1.0):
    """``model`` with floored priors on its error scales; a shallow copy.

    ``s_k = r_k + HalfNormal(excess_scale * r_k)``, ``r_k`` the nominal scales ``obs_scale (m,)``
    (the representation error), and ``sigma = sigma_0 + HalfNormal(excess_scale * sigma_0)``,
    ``sigma_0`` the nominal model-error scale (1: the latent noise learnt on the operational model).
    """
    new = model.with_scales()
    new.obs_scale_prior = floored_scale_prior(model.obs_scale.detach().cpu(), excess_scale)
    sigma0 = torch.tensor(float(model.model_error_scale), dtype=torch.float64)
    new.model_error_prior = FlooredHalfNormal(sigma0, excess_scale * sigma0)
    return new


@dataclass
class ScaledAssimilation:
    """An engine result with the error scales it was obtained at.

    Attributes
    ----------
    result : AssimilationResult
        With ``integrate``: the ``K`` smoothers pooled in the member dimension, ``(*batch, T, K per,
        d)`` (:func:`~bayesbridge.infer.scale_mixture.scale_mixture_draws`), and
        ``hyperparameters`` ``obs_error_scale (draw, m)`` and ``model_error_scale (draw,)``, one
        row per pooled trajectory; for one run ``log_evidence`` is :math:`\\log p(y)` with the scales
        integrated out (``draws.stats["log_evidence"]``); ``fit`` is ``draws``.
    choice : ScaleChoice
    draws : ScaleDraws or None
        The scale draws (``integrate`` only).
    """

    result: AssimilationResult
    choice: ScaleChoice
    draws: ScaleDraws | None = None


def assimilate_error_scales(model, y, *, requested: str, method: str, members: int, seed: int, device: str,
                            scale_draws: int = 10, **options) -> ScaledAssimilation:
    """Run engine ``method`` on ``model`` at fixed or integrated error scales.

    Parameters
    ----------
    model : StateSpaceModel
        Nominal ``obs_scale`` = the representation errors ``r (m,)``.
    y : array (T, m) or (run, T, m)
        Observations (NaN = missing); runs share the scales.
    requested : {"integrate", "fixed"}
    method, members, seed, device, **options
        As for :func:`bayesbridge.infer.assimilate`; with ``integrate`` on a smoothing route,
        ``members`` trajectories in all, ``members // scale_draws`` per scale draw.
    scale_draws : int
        ``K``, the scale draws (at most ``members // 2``, so that each has two trajectories).

    Returns
    -------
    ScaledAssimilation
    """
    affine = model.affine_structure(1) is not None
    choice = scale_choice(requested, method, affine)
    if choice.used == "fixed":
        return ScaledAssimilation(assimilate(model, y, method=method, members=members, seed=seed, device=device,
                                             **options), choice)
    model = floored_model(model)
    if choice.used == "infer":
        # svi starts its scale guide at the nominal scales, in u = log(s - r), so not on the
        # floor (u = -inf): on an affine bridge at the mean of the Laplace proposal, just above
        # the floors where the posterior piles up (the prior's median excess, 0.674 r, left
        # about 100 more steps of walking down to them), else at that median
        if affine:
            start = laplace_scales(model, torch.as_tensor(y, dtype=torch.float64))
            s0, sigma0 = start["obs_scale"], float(start["model_error_scale"])
        else:
            s0, sigma0 = model.obs_scale * (1.0 + 0.6745), model.model_error_scale * (1.0 + 0.6745)
        model = model.with_scales(obs_scale=s0, model_error_scale=sigma0)
        result = assimilate(model, y, method=method, members=members, seed=seed, device=device, **options)
        if "obs_scale" in result.hyperparameters:  # the name the integrating route uses (InferenceData ``index``)
            result.hyperparameters["obs_error_scale"] = result.hyperparameters.pop("obs_scale")
        return ScaledAssimilation(result, choice)
    k = max(1, min(int(scale_draws), members // 2))
    per = members // k
    yt = torch.as_tensor(y, dtype=torch.float64)
    draws = sample_error_scales(model, yt, ScaleSamplerConfig(draws=k),
                                generator=torch.Generator().manual_seed(int(seed)))
    result = scale_mixture_draws(model, yt, draws.obs_scale, draws.model_error_scale, per,
                                 generator=torch.Generator().manual_seed(int(seed) + 1)).to(device)
    result.fit = draws  # the record of the scale step (sampler, importance ESS, log-evidence, seconds)
    if yt.ndim == 2:  # one run: the evidence p(y) itself, integrated over the scales (importance sampling)
        result.log_evidence = torch.tensor(draws.stats["log_evidence"], dtype=torch.float64)
    runs = int(yt[..., 0, 0].numel())  # pooled draw r * (K per) + j * per + i: run r, scale draw j
    result.hyperparameters = {
        "obs_error_scale": draws.obs_scale.repeat_interleave(per, dim=0).repeat(runs, 1),
        "model_error_scale": draws.model_error_scale.repeat_interleave(per, dim=0).repeat(runs),
    }
    return ScaledAssimilation(result, choice, draws)
