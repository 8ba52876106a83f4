"""Stochastic variational inference for the state-space model, with structured guides.

The model is that of :class:`~bayesbridge.model.StateSpaceModel`: observation-error scales
``s`` and the model-error scale ``sigma`` with their priors, the latent chain and the
observations. SVI maximises

.. math:: \\mathrm{ELBO}(q) = E_q[\\log p(y, z, s, \\sigma) - \\log q(z, s, \\sigma)]

(Hoffman, Blei, Wang & Paisley 2013; Kucukelbir et al. 2017) by stochastic gradients of a
reparameterised estimate (:mod:`bayesbridge.infer.variational_fit`: Adam, a convergence test on
windows of steps, the ELBO trace returned in :attr:`AssimilationResult.fit`).

*Affine latent chains* (``trajectory="exact"``, the default for affine models) are
marginalised exactly: the guide covers the scales only (:class:`~bayesbridge.infer._svi_guides.ScaleGuide`,
mean-field ``"normal"`` or ``"lowrank"`` in the unconstrained space) and
:math:`\\log p(y \\mid s, \\sigma)` is the Kalman likelihood with its gradient from one compiled
pass (:class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood`). The latent posterior is
then exact given the scales: trajectories are drawn from :math:`p(z_{1:T} | y, s, \\sigma)`
(compiled forward-filtering backward-sampling, :mod:`bayesbridge.infer.scale_mixture`), one per
draw of the scales (``latent="average"``, integrating their uncertainty) or all at the
posterior-mean scales (``latent="posterior_mean"``); filtered and smoothed moments come from the
exact Kalman engine at the posterior-mean scales.

*Nonlinear chains* (``trajectory="markov"``, the default for them, and available for affine
models too) get a Gauss-Markov guide over the whole trajectory of every run
(:class:`~bayesbridge.infer._svi_guides.MarkovGuide`: block-tridiagonal precision, the structure of
the exact smoothing posterior of a linear-Gaussian model), started at the Kalman smoother of the
model linearised along an ensemble Kalman smoother's mean (:mod:`bayesbridge.infer._svi_start`),
times the scale guide; the log joint density is evaluated for all steps
at once (:mod:`bayesbridge.infer._svi_density`). Its draws are the posterior trajectories and
``log_evidence`` is the ELBO.

``scales="fixed"`` holds the scales at the model's nominal values (no scale guide): with an
affine chain the posterior is then the exact smoother and no optimisation is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from bayesbridge.errors import FilterDivergenceError, ParameterError, check_choice
from bayesbridge.infer._svi_density import TrajectoryDensity
from bayesbridge.infer._svi_guides import MarkovGuide, ScaleGuide
from bayesbridge.infer._svi_start import linearised_smoother
from bayesbridge.infer.divergence import check_finite
from bayesbridge.infer.result import AssimilationResult
from bayesbridge.infer.scale_posterior import SITES, ScalePosterior
from bayesbridge.infer.variational_fit import ELBOTrace, maximise_elbo
from bayesbridge.model import LinearGaussianModel
from bayesbridge.model.pyro_program import masked_gaussian_hmm
from bayesbridge.model.state_space import as_state_space_model

__all__ = ["SVIConfig", "run", "fit_svi", "SVIFit"]

Guide = Literal["normal", "lowrank"]
Latent = Literal["average", "posterior_mean"]
Trajectory = Literal["auto", "exact", "markov"]
Scales = Literal["infer", "fixed"]
GLOBAL_SITES = SITES


@dataclass
class SVIConfig:
    """Configuration of variational inference.

    Parameters
    ----------
    steps : int
        Largest number of optimisation steps (default 2000); the convergence test usually stops
        earlier.
    lr : float
        Adam learning rate (default 0.05).
    guide : {"normal", "lowrank"}
        Guide of the error scales: mean-field normal or low-rank plus diagonal, in the
        unconstrained space.
    rank : int or None
        Rank of the low-rank guide (default ``ceil(sqrt(m + 1))``).
    members : int
        Posterior draws returned (hyperparameters and trajectories; default 200).
    elbo_particles : int
        Monte-Carlo samples per ELBO gradient (default 8: the exact route costs one compiled
        likelihood pass per sample, and 8 halve the jitter of the fitted scales against 1).
    latent : {"average", "posterior_mean"}
        Exact trajectories: one per draw of the scales, or all at the posterior-mean scales.
    trajectory : {"auto", "exact", "markov"}
        ``"exact"``: marginalise an affine chain exactly; ``"markov"``: the Gauss-Markov guide
        over the trajectory (any model); ``"auto"`` (default): exact where the model is affine.
    scales : {"infer", "fixed"}
        Infer the error scales with their priors (default) or hold them at the nominal values.
    window : int
        Steps per window of the convergence test (default 100).
    tol : float
        Convergence: stop when a window's mean ELBO gains less than ``tol`` nats (plus twice
        its standard error) over the previous window (default 0.05; negative: never stop early).
    init_scale : float
        Initial standard deviation of the scale guide in the unconstrained space (default 0.05).
    importance : int
        Exact marginalisation with inferred scales: the returned scale draws are resampled from
        ``importance * members`` draws of the guide, widened 1.5 times, weighted by the exact
        posterior density over the guide's (sampling importance resampling, Rubin 1988), which
        corrects the Gaussian guide's too-narrow, too-symmetric marginals at the cost of that
        many compiled likelihood passes; the weights' ESS is reported in
        ``fit.importance_ess``. 0 returns the guide's own draws (default 10).
    """

    steps: int = 2000
    lr: float = 0.05
    guide: Guide = "normal"
    rank: int | None = None
    members: int = 200
    elbo_particles: int = 8
    latent: Latent = "average"
    trajectory: Trajectory = "auto"
    scales: Scales = "infer"
    window: int = 100
    tol: float = 0.05
    init_scale: float = 0.05
    importance: int = 10

    def __post_init__(self) -> None:
        for name, lit in (("guide", Guide), ("latent", Latent), ("trajectory", Trajectory), ("scales", Scales)):
            check_choice(getattr(self, name), name, get_args(lit))
        for name in ("steps", "members", "elbo_particles", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {value!r}.")
        for name in ("lr", "init_scale"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ParameterError(f"{name}: expected a positive number, got {value!r}.")
        if not (isinstance(self.tol, int | float) and math.isfinite(self.tol)):
            raise ParameterError(f"tol: expected a finite number of nats (negative disables the test), got {self.tol!r}.")
        if not isinstance(self.importance, int) or isinstance(self.importance, bool) or self.importance < 0:
            raise ParameterError(f"importance: expected an integer >= 0 (0: the guide's own draws), got {self.importance!r}.")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ParameterError(f"rank: expected None or a positive integer, got {self.rank!r}.")


@dataclass
class SVIFit:
    """A fitted guide and its draws.

    Attributes
    ----------
    draws : dict of str to Tensor (draw, ...)
        ``obs_scale (draw, m)`` and ``model_error_scale (draw,)`` (the nominal values repeated
        with ``scales="fixed"``).
    losses : Tensor (steps,)
        Negative ELBO per step.
    elbo : float
        Final ELBO, averaged over 16 estimates (the exact ``log p(y)`` when nothing is fitted).
    trace : ELBOTrace
        ELBO per step and the convergence test.
    trajectory : str
        ``"exact"`` or ``"markov"``.
    trajectories : Tensor (draw, *batch, T, d) or None
        Draws of the Markov guide (``trajectory="markov"``).
    """

    draws: dict[str, torch.Tensor]
    losses: torch.Tensor
    elbo: float
    trace: ELBOTrace
    trajectory: str = "exact"
    trajectories: torch.Tensor | None = field(default=None, repr=False)


def _trajectory_mode(ssm, T: int, config: SVIConfig) -> str:
    affine = ssm.affine_structure(T) is not None
    if config.trajectory == "exact" and not affine:
        raise ParameterError(
            "trajectory: 'exact' marginalises an affine latent chain, but this model's transition or "
            "observation operator is nonlinear; use trajectory='markov' (or 'auto', which chooses it)."
        )
    if config.trajectory == "auto":
        return "exact" if affine else "markov"
    return config.trajectory


def _markov_start(ssm, y: torch.Tensor, generator: torch.Generator) -> MarkovGuide:
    """The Markov guide at the smoother of the model linearised along an ensemble Kalman
    smoother's mean (exact for an affine model, where the linearisation point does not matter);
    if that ensemble smoother diverges, along the prior mean."""
    from bayesbridge.infer.enkf import EnKFConfig
    from bayesbridge.infer.enkf import run as enkf_run

    R, T, d = y.shape[0], y.shape[-2], ssm.latent_dim
    zbar = ssm.m0.to(torch.float64).expand(R, T + 1, d).clone()
    if ssm.affine_structure(T) is None:
        try:
            ens = enkf_run(ssm, y, EnKFConfig(variant="enks", members=max(100, 4 * d)), generator)
            zbar[:, 1:] = ens.smoothed_mean.reshape(R, T, d)
        except FilterDivergenceError:
            pass
    mean, gain, cond = linearised_smoother(ssm, y, zbar, ssm.obs_scale.detach().cpu(), ssm.model_error_scale)
    return MarkovGuide.from_smoother(mean, gain, cond)


def fit_svi(model, observations: torch.Tensor, config: SVIConfig, generator: torch.Generator) -> SVIFit:
    """Fit the guides by SVI and draw ``config.members`` samples (see the module docstring).

    Parameters
    ----------
    model : StateSpace or StateSpaceModel
        Converted with :func:`~bayesbridge.model.state_space.as_state_space_model`.
    observations : Tensor (*batch, T, m)
        Observations (float64, NaN = missing); the runs share the scales.
    config : SVIConfig
    generator : torch.Generator
        Source of every random number (initial guide, ELBO estimates, draws).

    Returns
    -------
    SVIFit

    Raises
    ------
    ParameterError
        If the ELBO becomes non-finite, or ``trajectory="exact"`` is asked of a nonlinear model.
    """
    ssm = as_state_space_model(model)
    y = torch.as_tensor(observations, dtype=torch.float64)
    batch, T, m = tuple(y.shape[:-2]), int(y.shape[-2]), ssm.obs_dim
    mode = _trajectory_mode(ssm, T, config)
    infer = config.scales == "infer"
    if infer and config.guide == "lowrank" and config.rank is not None and config.rank > m + 1:
        raise ParameterError(
            f"rank: the low-rank guide covers the m + 1 = {m + 1} error scales of this model, so its rank is at "
            f"most {m + 1}; got {config.rank} (or use guide='normal')."
        )
    post = ScalePosterior(ssm, y if mode == "exact" else None)
    nominal = {"obs_scale": ssm.obs_scale.detach().cpu(),
               "model_error_scale": torch.tensor(ssm.model_error_scale, dtype=torch.float64)}
    u0 = post.unconstrain(nominal)
    loc0 = torch.cat([u0["obs_scale"].reshape(m), u0["model_error_scale"].reshape(1)])
    K = config.elbo_particles
    split = lambda u: {"obs_scale": u[..., :m], "model_error_scale": u[..., m]}  # noqa: E731
    sg = ScaleGuide(loc0, config.guide, config.rank, config.init_scale, generator) if infer else None
    mg = density = None
    if mode == "markov":
        yr = y.reshape(-1, T, m)
        mg = _markov_start(ssm, yr, generator)
        density = TrajectoryDensity(ssm, yr)

    def elbo() -> torch.Tensor:
        # (1/K) sum_k [log p(y, z_k, theta_k) - log q(z_k, theta_k)], q's parameters detached in
        # log q: the "sticking the landing" gradient, zero where q is the exact posterior
        log_w = torch.zeros(K, dtype=torch.float64)
        if sg is not None:
            u = sg.rsample(K, generator)
            log_w = log_w - sg.log_prob_detached(u)
        if mode == "exact":
            return (log_w - post.potential_batch(u)).mean()
        z = mg.rsample(K, generator)
        if sg is None:
            s, sig = nominal["obs_scale"].expand(K, m), nominal["model_error_scale"].expand(K)
        else:
            params = split(u)
            scales = post.constrain(params)
            s, sig = scales["obs_scale"], scales["model_error_scale"]
            log_w = log_w + post.log_prior(params)
        return (log_w + density.log_joint(z, s, sig) - mg.log_prob_detached(z)).mean()

    params = (sg.params if sg is not None else []) + (mg.params if mg is not None else [])
    if params:
        trace = maximise_elbo(elbo, params, lr=config.lr, max_steps=config.steps, window=config.window,
                              tol=config.tol)
    else:  # affine chain at fixed scales: nothing to fit
        trace = ELBOTrace(torch.zeros(0, dtype=torch.float64), True, 0, torch.zeros(0, dtype=torch.float64),
                          math.nan, math.nan)
    with torch.no_grad():
        final = (float(sum(elbo() for _ in range(16)) / 16) if params
                 else float(post.likelihood(nominal["obs_scale"], nominal["model_error_scale"])))
        n = config.members
        if sg is not None and mode == "exact" and config.importance > 0:
            u, trace.importance_ess = _importance_resample(sg, post, n, config.importance, generator)
            scales = post.constrain(split(u))
            draws = {"obs_scale": scales["obs_scale"].reshape(n, m), "model_error_scale": scales["model_error_scale"].reshape(n)}
        elif sg is not None:
            scales = post.constrain(split(sg.rsample(n, generator)))
            draws = {"obs_scale": scales["obs_scale"].reshape(n, m), "model_error_scale": scales["model_error_scale"].reshape(n)}
        else:
            draws = {"obs_scale": nominal["obs_scale"].expand(n, m).clone(),
                     "model_error_scale": nominal["model_error_scale"].expand(n).clone()}
        traj = None
        if mg is not None:
            traj = mg.rsample(n, generator)[..., 1:, :].reshape(n, *batch, T, ssm.latent_dim)
    return SVIFit(draws, -trace.elbo, final, trace, mode, traj)


def _importance_resample(sg: ScaleGuide, post: ScalePosterior, n: int, factor: int,
                         generator: torch.Generator, widen: float = 1.5) -> tuple[torch.Tensor, float]:
    """``n`` draws ``(n, k)`` resampled from ``factor * n`` widened guide draws by their exact
    posterior weights, and the weights' ESS as a fraction of the proposals."""
    u = sg.rsample(factor * n, generator, widen)
    log_q = sg.log_prob_detached(u, widen)
    log_p = -post.potential_batch(u)
    log_w = torch.nan_to_num(log_p - log_q, nan=-math.inf)
    w = torch.softmax(log_w, 0)
    idx = torch.multinomial(w, n, replacement=True, generator=generator)
    return u[idx], float(1.0 / (w.square().sum() * u.shape[0]))


def _exact_trajectories(ssm, y: torch.Tensor, s_draws: torch.Tensor, sig_draws: torch.Tensor, config: SVIConfig,
                        generator: torch.Generator) -> torch.Tensor:
    """Trajectories ``(*batch, T, draw, d)`` from ``p(z | y, s, sigma)``: one per scale draw
    (``latent="average"``) or all at the posterior-mean scales, by the compiled
    forward-filtering backward-sampling of :func:`~bayesbridge.infer.scale_mixture.scale_mixture_draws`
    (periodic steady state reused)."""
    from bayesbridge.infer.scale_mixture import scale_mixture_draws

    if config.latent == "average" and config.scales == "infer":
        res = scale_mixture_draws(ssm, y, s_draws, sig_draws, 1, generator=generator)
    else:
        res = scale_mixture_draws(ssm, y, s_draws.mean(0, keepdim=True), sig_draws.mean(0, keepdim=True),
                                  config.members, generator=generator)
    return res.smoothed_ensemble.to(y.device)


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
        Guides, optimisation settings, number of draws ``members`` and the ``latent`` mode.
    generator : torch.Generator
        Source of all randomness (SVI and the trajectory draws).

    Returns
    -------
    AssimilationResult
        ``hyperparameters``: ``obs_scale`` ``(draw, m)`` and ``model_error_scale`` ``(draw,)``
        (with ``scales="infer"``). ``smoothed_ensemble`` ``(*batch, T, draw, d)``: posterior
        trajectories. ``fit``: the :class:`~bayesbridge.infer.variational_fit.ELBOTrace`.
        Exact trajectories: ``filtered_mean/cov``, ``smoothed_mean/cov`` from the exact Kalman
        filter/smoother at the posterior-mean scales, and ``log_evidence`` ``(*batch,)`` =
        ``log p(y | posterior-mean scales)`` (plug-in; time-varying or offset models use the
        trajectory draws for the means). Markov guide: SVI is a smoother, there is no filtering
        pass, so ``filtered_mean`` holds the smoothing mean too, and ``log_evidence`` is the ELBO
        of all runs together (a lower bound on ``log p(y)``), broadcast over ``*batch``.
    """
    ssm = as_state_space_model(model)
    batch, T = tuple(y.shape[:-2]), int(y.shape[-2])
    fit = fit_svi(ssm, y, config, generator)
    s_draws, sig_draws = fit.draws["obs_scale"], fit.draws["model_error_scale"]
    hyper = dict(fit.draws) if config.scales == "infer" else {}
    s_mean, sig_mean = s_draws.mean(0), sig_draws.mean(0)
    if fit.trajectory == "markov":
        traj = fit.trajectories.movedim(0, -2)  # (*batch, T, draw, d)
        check_finite(traj, T - 1, "svi", "trajectory draws")
        mean = traj.mean(-2)
        return AssimilationResult(
            method="svi", filtered_mean=mean, smoothed_mean=mean, smoothed_ensemble=traj,
            log_evidence=torch.full(batch, fit.elbo, dtype=torch.float64), hyperparameters=hyper, config=config,
            fit=fit.trace,
        )
    traj = _exact_trajectories(ssm, y, s_draws, sig_draws, config, generator)
    check_finite(traj, T - 1, "svi", "trajectory draws")
    lgm = _posterior_mean_model(ssm, s_mean, sig_mean, T)
    if lgm is not None:
        from bayesbridge.infer.kalman import KalmanConfig
        from bayesbridge.infer.kalman import run as kalman_run

        exact = kalman_run(lgm, y, KalmanConfig(smooth=True), generator)
        return AssimilationResult(
            method="svi", filtered_mean=exact.filtered_mean, filtered_cov=exact.filtered_cov,
            smoothed_mean=exact.smoothed_mean, smoothed_cov=exact.smoothed_cov, smoothed_ensemble=traj,
            log_evidence=exact.log_evidence, hyperparameters=hyper, config=config, fit=fit.trace,
        )
    masked = masked_gaussian_hmm(ssm, y, obs_scale=s_mean, model_error_scale=sig_mean)
    with torch.no_grad():
        log_ev = masked.hmm.log_prob(masked.filled) + masked.log_correction
    mean = traj.mean(-2)
    return AssimilationResult(
        method="svi", filtered_mean=mean, smoothed_mean=mean, smoothed_ensemble=traj,
        log_evidence=log_ev, hyperparameters=hyper, config=config, fit=fit.trace,
    )
