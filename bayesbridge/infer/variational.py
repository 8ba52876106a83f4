"""Stochastic variational inference on the Pyro state-space program.

The program is :func:`bayesbridge.model.pyro_program.state_space_program`: observation-error scales
``s`` and the model-error scale ``sigma`` with their priors, then the observations.

*Affine latent chains* are marginalised exactly (:class:`pyro.distributions.GaussianHMM`), so
the guide covers the global scales only (``AutoNormal``, a mean-field normal in the
unconstrained log space, or ``AutoLowRankMultivariateNormal``), and SVI maximises

.. math:: \\mathrm{ELBO}(q) = E_q[\\log p(y | s, \\sigma) + \\log p(s, \\sigma) - \\log q(s, \\sigma)]

(Hoffman, Blei, Wang & Paisley 2013; Kucukelbir et al. 2017). The latent posterior is then
exact given the scales: trajectories are drawn from :math:`p(z_{1:T} | y, s, \\sigma)` by
:meth:`GaussianHMM.rsample_posterior`, one per draw of the scales (``latent="average"``,
integrating their uncertainty) or all at the posterior-mean scales (``latent="posterior_mean"``);
filtered and smoothed moments come from the exact Kalman engine at the posterior-mean scales.

*Nonlinear chains* get a structured guide over the whole trajectory and the scales:
``AutoLowRankMultivariateNormal`` (a Gaussian with low-rank-plus-diagonal covariance couples
all times), whose draws are returned as posterior trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import pyro.infer.autoguide as autoguide
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import ClippedAdam

from bayesbridge.errors import ParameterError
from bayesbridge.infer.divergence import check_finite
from bayesbridge.infer.result import AssimilationResult
from bayesbridge.model import LinearGaussianModel
from bayesbridge.model.pyro_program import (
    isolated_pyro,
    masked_gaussian_hmm,
    state_space_program,
)
from bayesbridge.model.state_space import as_state_space_model

__all__ = ["SVIConfig", "run", "fit_svi", "SVIFit"]

Guide = Literal["normal", "lowrank"]
Latent = Literal["average", "posterior_mean"]
GLOBAL_SITES = ("obs_scale", "model_error_scale")


@dataclass
class SVIConfig:
    """Configuration of variational inference.

    Parameters
    ----------
    steps : int
        Optimisation steps (default 1500).
    lr : float
        Adam learning rate (default 0.03).
    guide : {"normal", "lowrank"}
        ``AutoNormal`` or ``AutoLowRankMultivariateNormal`` over the global scales (affine models;
        nonlinear models always use the low-rank guide over scales and trajectory).
    rank : int or None
        Rank of the low-rank guide (default: Pyro's ``sqrt`` of the number of latent values).
    members : int
        Posterior draws returned (hyperparameters and trajectories; default 200).
    elbo_particles : int
        Monte-Carlo samples per ELBO gradient (default 1).
    latent : {"average", "posterior_mean"}
        Draw one trajectory per hyperparameter draw, or all at the posterior-mean scales.
    """

    steps: int = 1500
    lr: float = 0.03
    guide: Guide = "normal"
    rank: int | None = None
    members: int = 200
    elbo_particles: int = 1
    latent: Latent = "average"

    def __post_init__(self) -> None:
        for name, value, lit in (("guide", self.guide, Guide), ("latent", self.latent, Latent)):
            if value not in get_args(lit):
                raise ParameterError(f"{name}: expected one of {', '.join(map(repr, get_args(lit)))}, got {value!r}.")
        for name in ("steps", "members", "elbo_particles"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {value!r}.")
        if not float(self.lr) > 0:
            raise ParameterError(f"lr: expected a positive learning rate, got {self.lr!r}.")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ParameterError(f"rank: expected None or a positive integer, got {self.rank!r}.")


@dataclass
class SVIFit:
    """A fitted guide and its draws.

    Attributes
    ----------
    draws : dict of str to Tensor (draw, ...)
        Posterior draws of every latent site of the guide.
    losses : Tensor (steps,)
        Negative ELBO per step.
    elbo : float
        Final ELBO, averaged over 16 guide samples.
    """

    draws: dict[str, torch.Tensor]
    losses: torch.Tensor
    elbo: float


def fit_svi(model, observations: torch.Tensor, config: SVIConfig, generator: torch.Generator) -> SVIFit:
    """Fit a guide to :func:`state_space_program` by SVI and draw ``config.members`` samples.

    ``AutoNormal`` for affine models with ``config.guide == "normal"``, otherwise
    ``AutoLowRankMultivariateNormal`` of rank ``config.rank``; ``config.steps`` steps of
    ClippedAdam (learning rate ``config.lr``, gradient norm clipped at 10) on the
    ``Trace_ELBO`` with ``config.elbo_particles`` particles.

    Parameters
    ----------
    model : StateSpace or StateSpaceModel
        Converted with :func:`~bayesbridge.model.state_space.as_state_space_model`.
    observations : Tensor (*batch, T, m)
        Observations (float64, NaN = missing).
    config : SVIConfig
    generator : torch.Generator
        Seeds Pyro inside :func:`~bayesbridge.model.pyro_program.isolated_pyro` (global RNG state and
        parameter store are restored afterwards).

    Returns
    -------
    SVIFit
        Draws of every guide site, the loss per step and the final ELBO.

    Raises
    ------
    ParameterError
        If the ELBO becomes non-finite.
    """
    ssm = as_state_space_model(model)
    T = int(observations.shape[-2])
    affine = ssm.affine_structure(T) is not None

    def program(y):
        return state_space_program(ssm, y)

    with isolated_pyro(generator):
        if affine and config.guide == "normal":
            guide = autoguide.AutoNormal(program, init_loc_fn=autoguide.init_to_median, init_scale=0.05)
        else:
            guide = autoguide.AutoLowRankMultivariateNormal(
                program, init_loc_fn=autoguide.init_to_median, init_scale=0.05, rank=config.rank
            )
        svi = SVI(program, guide, ClippedAdam({"lr": config.lr, "clip_norm": 10.0}),
                  Trace_ELBO(num_particles=config.elbo_particles, vectorize_particles=False))
        losses = torch.empty(config.steps, dtype=torch.float64)
        for i in range(config.steps):
            losses[i] = svi.step(observations)
            if not torch.isfinite(losses[i]):
                raise ParameterError(
                    f"svi: the ELBO became non-finite at step {i}; lower lr (now {config.lr}) or use "
                    f"tighter priors on the error scales."
                )
        with torch.no_grad():
            elbo = -sum(svi.evaluate_loss(observations) for _ in range(16)) / 16
            sites = [n for n in guide(observations)]
            draws = Predictive(program, guide=guide, num_samples=config.members, return_sites=sites)(observations)
    draws = {k: v.detach().to(torch.float64) for k, v in draws.items()}
    return SVIFit(draws, losses, float(elbo))


def _posterior_mean_model(ssm, obs_scale: torch.Tensor, sigma: torch.Tensor, T: int):
    """LinearGaussianModel at given scales if the affine model fits the Kalman engine, else None."""
    aff = ssm.affine_structure(T)
    if aff is None or not aff.time_invariant or bool(aff.b.abs().max() > 0) or bool(aff.c.abs().max() > 0):
        return None
    L = float(sigma) * aff.L[0]
    return LinearGaussianModel(aff.A[0], L @ L.mT, aff.H, torch.diag(obs_scale**2), ssm.m0, ssm.P0)


def run(model, y: torch.Tensor, config: SVIConfig, generator: torch.Generator) -> AssimilationResult:
    """SVI on ``y`` ``(*batch, T, m)`` (the runs share the error scales).

    Parameters
    ----------
    model : StateSpace or StateSpaceModel
        Converted with :func:`~bayesbridge.model.state_space.as_state_space_model`.
    y : Tensor (*batch, T, m)
        Validated observations (float64, NaN = missing).
    config : SVIConfig
        Guide, optimisation settings, number of draws ``members`` and the ``latent`` mode.
    generator : torch.Generator
        Source of all randomness (SVI and the trajectory draws).

    Returns
    -------
    AssimilationResult
        ``hyperparameters``: ``obs_scale`` ``(draw, m)`` and ``model_error_scale`` ``(draw,)``.
        ``smoothed_ensemble`` ``(*batch, T, draw, d)``: posterior trajectories. Affine models:
        ``filtered_mean/cov``, ``smoothed_mean/cov`` from the exact Kalman filter/smoother at the
        posterior-mean scales, and ``log_evidence`` ``(*batch,)`` = ``log p(y | posterior-mean
        scales)`` (plug-in; time-varying or offset models use the trajectory draws for the
        means). Nonlinear models: SVI is a smoother, there is no filtering pass, so
        ``filtered_mean`` holds the smoothing mean too, and ``log_evidence`` is the ELBO of
        all runs together (a lower bound on ``log p(y)``), broadcast over ``*batch``.
    """
    ssm = as_state_space_model(model)
    batch, T, d = tuple(y.shape[:-2]), int(y.shape[-2]), ssm.latent_dim
    fit = fit_svi(ssm, y, config, generator)
    s_draws = fit.draws["obs_scale"].reshape(config.members, ssm.obs_dim)
    sig_draws = fit.draws["model_error_scale"].reshape(config.members)
    hyper = {"obs_scale": s_draws, "model_error_scale": sig_draws}
    s_mean, sig_mean = s_draws.mean(0), sig_draws.mean(0)
    if ssm.affine_structure(T) is None:
        traj = torch.stack([fit.draws[f"z_{t + 1}"].reshape(config.members, -1, d) for t in range(T)], 2)
        traj = traj.reshape(config.members, *batch, T, d).movedim(0, -2)  # (*batch, T, draw, d)
        check_finite(traj, T - 1, "svi", "trajectory draws")
        mean = traj.mean(-2)
        return AssimilationResult(
            method="svi", filtered_mean=mean, smoothed_mean=mean, smoothed_ensemble=traj,
            log_evidence=torch.full(batch, fit.elbo, dtype=torch.float64), hyperparameters=hyper, config=config,
        )
    with isolated_pyro(generator), torch.no_grad():
        if config.latent == "average":
            masked = masked_gaussian_hmm(ssm, y, obs_scale=s_draws, model_error_scale=sig_draws)
            traj = masked.hmm.rsample_posterior(masked.filled)  # (draw, *batch, T, d)
        else:
            masked = masked_gaussian_hmm(ssm, y, obs_scale=s_mean, model_error_scale=sig_mean)
            traj = masked.hmm.rsample_posterior(masked.filled, torch.Size([config.members]))
    traj = traj.movedim(0, -2)
    check_finite(traj, T - 1, "svi", "trajectory draws")
    lgm = _posterior_mean_model(ssm, s_mean, sig_mean, T)
    if lgm is not None:
        from bayesbridge.infer.kalman import KalmanConfig
        from bayesbridge.infer.kalman import run as kalman_run

        exact = kalman_run(lgm, y, KalmanConfig(smooth=True), generator)
        return AssimilationResult(
            method="svi", filtered_mean=exact.filtered_mean, filtered_cov=exact.filtered_cov,
            smoothed_mean=exact.smoothed_mean, smoothed_cov=exact.smoothed_cov, smoothed_ensemble=traj,
            log_evidence=exact.log_evidence, hyperparameters=hyper, config=config,
        )
    masked = masked_gaussian_hmm(ssm, y, obs_scale=s_mean, model_error_scale=sig_mean)
    with torch.no_grad():
        log_ev = masked.hmm.log_prob(masked.filled) + masked.log_correction
    mean = traj.mean(-2)
    return AssimilationResult(
        method="svi", filtered_mean=mean, smoothed_mean=mean, smoothed_ensemble=traj,
        log_evidence=log_ev, hyperparameters=hyper, config=config,
    )

