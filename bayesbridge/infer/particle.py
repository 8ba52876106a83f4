"""Particle filter (bootstrap or guided proposal) with backward-simulation smoothing.

Sequential importance resampling (Gordon, Salmond & Smith 1993; Doucet & Johansen 2009,
*A tutorial on particle filtering and smoothing*). With normalised weights ``W_{t-1}^i`` and
particles ``z_t^i ~ q(z_t | z_{t-1}^i, y_t)``,

.. math::
    \\alpha_t^i = \\frac{p(y_t | z_t^i)\\, p(z_t^i | z_{t-1}^i)}{q(z_t^i | z_{t-1}^i, y_t)},
    \\qquad \\hat p(y_t | y_{1:t-1}) = \\sum_i W_{t-1}^i \\alpha_t^i,
    \\qquad W_t^i \\propto W_{t-1}^i \\alpha_t^i,

and ``log p(y_{1:T})`` is the sum of the log increments (unbiased in ``p``, with or without
resampling, because resampling resets ``W`` to ``1/N`` *after* the increment is taken).
Systematic resampling (Kitagawa 1996) is done when ``ESS = 1 / sum_i (W_t^i)^2`` falls below
``ess_threshold * N``.

Proposals
---------
``bootstrap``: ``q = p(z_t | z_{t-1})``, so ``alpha = p(y_t | z_t)``.

``guided``: the Gaussian proposal obtained by conditioning the transition on a linearised
Gaussian observation ``y_t ~ N(h(mu_i) + \\hat H_i (z - mu_i), R_g)``, ``mu_i = f_t(z_{t-1}^i)``,
``\\hat H_i`` the Jacobian of ``h`` at ``mu_i`` (the locally optimal proposal of Doucet,
Godsill & Andrieu 2000 when ``h`` is linear and the error Gaussian; their linearised proposal
otherwise). ``R_g`` is ``R``, or the Student-t variance ``R df / (df - 2)``. Bayes' rule gives the weight without ``Q^{-1}``,

.. math::
    \\alpha_t^i = p(y_t | z_t^i)\\, \\hat p(y_t | z_{t-1}^i) / \\hat p(y_t | z_t^i),
    \\qquad \\hat p(y_t | z_{t-1}^i) = N(y_t; h(\\mu_i), \\hat H Q \\hat H^T + R_g),

which is exact for any ``h`` and observation error (Student-t included); for linear ``h`` and
Gaussian errors ``alpha_t^i = \\hat p(y_t | z_{t-1}^i)``.

``auto`` (the default) is ``guided`` whenever ``h`` is affine or differentiable, else
``bootstrap``. After the pass, a :class:`~bayesbridge.infer.degeneracy.DegeneracyWarning` says
when the ESS fell below 10 % of the particles at more than 5 % of the steps.

Smoother
--------
Backward simulation (Godsill, Doucet & West 2004, *J. Amer. Statist. Assoc.* 99, 156-168):
draw ``\\tilde z_T ~ W_T``, then for ``t = T-1 .. 1`` draw ``\\tilde z_t = z_t^i`` with
probability ``\\propto W_t^i p(\\tilde z_{t+1} | z_t^i)``; each draw is a trajectory from the
particle approximation of ``p(z_{1:T} | y_{1:T})``.

Implementation
--------------
Everything is vectorised over particles and a leading batch of independent runs; the only
Python loop is over time, and no step reads a value back to Python. Model noise and the
resampling uniforms are drawn for blocks of steps at once. Per step, the model's own torch
functions propagate and weigh the particles; one compiled (numba) call then fuses
normalisation, the log-evidence increment, the ESS, the filtered moments and systematic
resampling (an O(N) merge of the stratified points with the running sum of the weights). A
bootstrap filter on a linear model (:class:`~bayesbridge.model.LinearGaussianModel`, or a
:class:`~bayesbridge.model.StateSpaceModel` with a :class:`~bayesbridge.model.LinearTransition`
and an observation matrix) runs entirely compiled, one call per block of steps; both routes
draw the same random numbers and agree to rounding. The compiled pieces live in
:mod:`bayesbridge.infer._particle_kernel`. Divergence (non-finite weighted means or evidence
increments) is checked per block and names the first bad step.

The pieces live in :mod:`~bayesbridge.infer.particle_config` (:class:`ParticleConfig`),
:mod:`~bayesbridge.infer.resampling` (systematic resampling), ``_particle_proposals`` (the
proposals and the observation likelihood), ``_particle_pass`` (storage, noise and checks shared
by both routes), ``_particle_torch`` (the torch loop), ``_particle_linear`` (the compiled
bootstrap of linear models) and ``_particle_smoother`` (backward simulation); this module is
the engine's entry point.
"""

from __future__ import annotations

import dataclasses

import torch

from bayesbridge.infer._particle_linear import filter_compiled, linear_parts
from bayesbridge.infer._particle_pass import FilterPass
from bayesbridge.infer._particle_proposals import Likelihood, resolve_proposal
from bayesbridge.infer._particle_smoother import backward_simulation
from bayesbridge.infer._particle_torch import filter_torch
from bayesbridge.infer.degeneracy import check_degeneracy
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.particle_config import ParticleConfig
from bayesbridge.infer.resampling import systematic_resample
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = ["ParticleConfig", "run", "systematic_resample"]


def run(model, y: torch.Tensor, config: ParticleConfig, generator: torch.Generator) -> AssimilationResult:
    """Particle filter (and backward-simulation smoother) on ``y`` ``(*batch, T, m)``.

    The algorithm is the one of the module docstring: sequential importance resampling with
    the ``config.proposal`` proposal (``"auto"``: guided for an affine or differentiable
    observation operator, see :func:`~bayesbridge.infer._particle_proposals.resolve_proposal`), systematic resampling when the ESS falls below
    ``config.ess_threshold * N``, and backward simulation for the smoother. A bootstrap filter
    on a linear model (:class:`~bayesbridge.model.LinearGaussianModel`, or a
    :class:`~bayesbridge.model.StateSpaceModel` with a
    :class:`~bayesbridge.model.LinearTransition` and an observation matrix) runs as one compiled
    kernel per block of steps; every other case runs the vectorised torch loop. Off the CPU
    (``y`` on CUDA) the torch loop also weighs and resamples in torch
    (:func:`~bayesbridge.infer._particle_torch.weigh_step_torch`), so every tensor follows ``y``'s device.

    Parameters
    ----------
    model : StateSpace
        Provides ``latent_dim``, ``initial()``, ``transition_mean(z, step)``,
        ``transition_cov(step)``, ``observe(z)`` (``(*batch, N, d) -> (*batch, N, m)``) and
        ``obs_cov()``.
    y : Tensor (*batch, T, m)
        Validated observations (float64, NaN = missing; missing components drop out of the
        likelihood).
    config : ParticleConfig
        Number of particles, proposal, ESS threshold, observation-error family and smoother.
    generator : torch.Generator
        Source of all randomness (initial particles, model noise, guided-proposal noise,
        resampling, backward simulation).

    Returns
    -------
    AssimilationResult
        ``filtered_ensemble`` ``(*batch, T, N, d)`` with ``log_weights`` ``(*batch, T, N)``
        (before resampling), ``filtered_mean``/``filtered_cov`` (weighted), ``log_evidence``
        ``(*batch,)``, ``smoothed_ensemble`` ``(*batch, T, n_trajectories, d)`` and its mean when
        ``smoother='backward'``; ``diagnostics.ess`` ``(*batch, T)`` is the ESS after weighting;
        ``config`` is ``config`` with the proposal that ran (``"auto"`` resolved).

    Raises
    ------
    FilterDivergenceError
        Non-finite particles, or every weight zero, naming the first such time step.
    ParameterError
        ``proposal="guided"`` with an observation operator that is neither affine nor differentiable.

    Warns
    -----
    DegeneracyWarning
        When the ESS falls below 10 % of the particles at more than 5 % of the steps
        (``config.warn_degeneracy``).
    """
    batch = tuple(y.shape[:-2])
    N, d = config.members, int(model.latent_dim)
    dt = torch.float64
    m0, P0 = (v.to(dtype=dt, device=y.device) for v in model.initial())
    lik = Likelihood(model.obs_cov().to(dtype=dt, device=y.device), config)
    mask_all = ~torch.isnan(y)
    y0 = torch.where(mask_all, y, 0.0)
    z0 = m0 + torch.randn(*batch, N, d, dtype=dt, generator=generator, device=y.device) @ _psd_sqrt(P0, "P0").mT
    compiled = _use_compiled(y)
    proposal, H_affine = resolve_proposal(model, config, y.device)
    linear = linear_parts(model) if proposal == "bootstrap" and compiled else None
    if linear is not None:
        fp = filter_compiled(model, linear, y0, mask_all, z0, config, lik, generator)
    else:
        fp = filter_torch(model, y0, mask_all, z0, config, lik, generator, compiled=compiled, proposal=proposal,
                          H_affine=H_affine)
    result = _result(fp, y0, mask_all, dataclasses.replace(config, proposal=proposal), lik)
    if config.warn_degeneracy:
        remedy = ("more particles (members)" + (", proposal='guided' (an observation operator that torch can "
                                                 "differentiate)" if proposal == "bootstrap" else "")
                  + ", an observation-error scale that includes the representation error, or method='enks'")
        check_degeneracy(result.diagnostics.ess, N, "pf", remedy)
    if config.smoother == "backward":
        traj = backward_simulation(model, fp.particles, fp.log_weights, config.n_trajectories, generator)
        result.smoothed_ensemble = traj
        result.smoothed_mean = traj.mean(-2)
    return result


def _use_compiled(y: torch.Tensor) -> bool:
    """Whether the numba kernels serve observations ``y``: CPU tensors only (off the CPU every
    step is torch, see :func:`~bayesbridge.infer._particle_torch.weigh_step_torch`)."""
    return y.device.type == "cpu"


def _result(fp: FilterPass, y0: torch.Tensor, mask_all: torch.Tensor, config: ParticleConfig,
            lik: Likelihood) -> AssimilationResult:
    """The filter's result from a forward pass ``fp``: weighted moments, log-evidence, diagnostics.

    ``y0 (*batch, T, m)`` the observations with missing components (``~mask_all``) set to 0. The
    innovation is ``y_t`` minus the predictive mean of ``h(z_t)`` and its variance the predictive
    variance plus the (Gaussian stand-in of the) observation-error variance, plus the guided
    proposal's ``diag(H Q H^T)``.
    """
    innov = torch.where(mask_all, y0 - fp.pred_mean, float("nan"))
    innov_var = fp.pred_sq - fp.pred_mean**2 + lik.R_gauss.diagonal()
    if fp.extra_var is not None:
        innov_var = innov_var + fp.extra_var
    spread = fp.fcov.diagonal(dim1=-2, dim2=-1).mean(-1).sqrt()
    return AssimilationResult(
        method="pf",
        filtered_mean=fp.fmean,
        log_evidence=fp.step_ev.sum(-1),
        filtered_cov=fp.fcov,
        filtered_ensemble=fp.particles if config.store_ensemble else None,
        log_weights=fp.log_weights if config.store_ensemble else None,
        diagnostics=StepDiagnostics(innovation=innov, spread=spread, innovation_var=innov_var, ess=1.0 / fp.inv_ess),
        config=config,
    )
