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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.errors import FilterDivergenceError, ParameterError, check_choice
from bayesbridge.infer._particle_kernel import _bootstrap_block, _weigh_step
from bayesbridge.infer._ziggurat import ZigguratNormals
from bayesbridge.infer.divergence import REMEDIES, check_finite
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

__all__ = ["ParticleConfig", "run", "systematic_resample"]

Proposal = Literal["bootstrap", "guided"]
Resample = Literal["systematic"]
Smoother = Literal["none", "backward"]
ObsLikelihood = Literal["gaussian", "student_t"]
_LOG2PI = math.log(2.0 * math.pi)


@dataclass
class ParticleConfig:
    """Configuration of the particle filter.

    Parameters
    ----------
    members : int
        Number of particles ``N`` (>= 10; default 1000).
    proposal : {"bootstrap", "guided"}
    resample : {"systematic"}
    ess_threshold : float in (0, 1]
        Resample when ``ESS < ess_threshold * N`` (1 resamples every step).
    smoother : {"none", "backward"}
        Backward simulation of ``n_trajectories`` trajectories (needs a positive-definite
        model-error covariance).
    n_trajectories : int
        Number of smoothed trajectories (``smoothed_ensemble``'s member axis).
    obs_likelihood : {"gaussian", "student_t"}
        Observation-error family; ``student_t`` uses independent components with scale
        ``sqrt(R_kk)`` and ``df`` degrees of freedom (variance ``R_kk df / (df - 2)``), so ``R``
        must be diagonal.
    df : float
        Degrees of freedom of the Student-t error (> 0).
    store_ensemble : bool
        Return ``filtered_ensemble`` ``(*batch, T, N, d)`` and ``log_weights`` (memory ``T N d``
        per run). ``False`` keeps only the last two steps (the backward smoother still stores
        what it needs, without returning it).
    """

    members: int = 1000
    proposal: Proposal = "bootstrap"
    resample: Resample = "systematic"
    ess_threshold: float = 0.5
    smoother: Smoother = "backward"
    n_trajectories: int = 100
    obs_likelihood: ObsLikelihood = "gaussian"
    df: float = 4.0
    store_ensemble: bool = True

    def __post_init__(self) -> None:
        check_choice(self.proposal, "proposal", get_args(Proposal))
        check_choice(self.resample, "resample", get_args(Resample))
        check_choice(self.smoother, "smoother", get_args(Smoother))
        check_choice(self.obs_likelihood, "obs_likelihood", get_args(ObsLikelihood))
        if not isinstance(self.members, int) or self.members < 10:
            raise ParameterError(
                f"members: a particle filter needs at least 10 particles (1,000 or more for a useful "
                f"log-evidence), got {self.members!r}."
            )
        if not 0.0 < float(self.ess_threshold) <= 1.0:
            raise ParameterError(f"ess_threshold: expected a number in (0, 1], got {self.ess_threshold!r}.")
        if not isinstance(self.n_trajectories, int) or self.n_trajectories < 1:
            raise ParameterError(f"n_trajectories: expected a positive integer, got {self.n_trajectories!r}.")
        if not float(self.df) > 0.0:
            raise ParameterError(f"df: expected positive degrees of freedom, got {self.df!r}.")


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996): one uniform per run.

    Parameters
    ----------
    log_weights : Tensor (*batch, N)
        Normalised log weights.
    generator : torch.Generator
        Source of the one uniform ``u ~ U(0, 1)`` per run; particle ``i`` is chosen for the
        points ``(u + k)/N``, ``k = 0..N-1``, of the weights' cumulative sum.

    Returns
    -------
    Tensor (*batch, N) of int64
        Ancestor indices.
    """
    cdf = torch.cumsum(log_weights.exp(), -1)
    u = torch.rand(*log_weights.shape[:-1], 1, dtype=cdf.dtype, generator=generator, device=cdf.device)
    return _systematic_ancestors(cdf, u)


def _systematic_ancestors(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ancestors ``(*batch, N)`` int64 of the points ``(u + k) cdf[-1] / N`` in the running sum
    ``cdf`` ``(*batch, N)`` of the weights; ``u`` ``(*batch, 1)`` uniforms."""
    n = cdf.shape[-1]
    u = u.add(torch.arange(n, dtype=cdf.dtype, device=cdf.device)).mul_(cdf[..., -1:] / n)  # one uniform per stratum
    return torch.searchsorted(cdf.contiguous(), u).clamp_max_(n - 1)


def _masked_cov(R: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``R`` restricted to observed components, identity on missing ones: ``(*batch, m, m)``."""
    both = mask[..., :, None] & mask[..., None, :]
    return torch.where(both, R, torch.eye(R.shape[-1], dtype=R.dtype, device=R.device))


def _gauss_logpdf(resid: torch.Tensor, chol: torch.Tensor, n_obs: torch.Tensor) -> torch.Tensor:
    """``log N(resid; 0, L L^T)`` over observed components (missing: resid 0, unit diagonal).

    resid (*batch, N, m); chol (*batch, 1 or N, m, m); n_obs (*batch,) -> (*batch, N).
    """
    u = torch.linalg.solve_triangular(chol, resid.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (u**2).sum(-1) - logdet - 0.5 * _LOG2PI * n_obs.unsqueeze(-1)


class _Likelihood:
    """Observation log-likelihood ``log p(y_t | z_t)`` for one step, batched over particles."""

    def __init__(self, R: torch.Tensor, config: ParticleConfig) -> None:
        self.kind = config.obs_likelihood
        self.df = float(config.df)
        self.R = R
        if self.kind == "student_t":
            if not torch.equal(R, torch.diag(R.diagonal())):
                raise ParameterError(
                    "obs_likelihood='student_t': expects independent observation errors, so the "
                    "model's R must be diagonal; decorrelate the observables or use 'gaussian'."
                )
            self.scale = R.diagonal().sqrt()
            nu = self.df
            self.const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
            # Gaussian stand-in for the guided proposal (t variance when finite)
            self.R_gauss = R * (nu / (nu - 2.0) if nu > 2.0 else 1.0)
        else:
            self.R_gauss = R
        m = R.shape[-1]
        # fully observed steps (the common case): precomputed whitening, no per-step factorisation
        self.whiten = torch.linalg.inv(torch.linalg.cholesky(R)).mT.contiguous()  # u = r @ whiten
        self.const_full = float(torch.linalg.cholesky(R).diagonal().log().sum()) + 0.5 * m * _LOG2PI

    def set_step(self, mask: torch.Tensor, full: bool, n_obs: torch.Tensor) -> None:
        """mask (*batch, m); ``full``: every component of every run observed; n_obs (*batch,)."""
        self.mask, self.full, self.n_obs = mask, full, n_obs
        if self.kind == "gaussian" and not full:
            self.chol = torch.linalg.cholesky(_masked_cov(self.R, mask))

    def __call__(self, y: torch.Tensor, hz: torch.Tensor) -> torch.Tensor:
        """y (*batch, m) (missing filled with 0), hz (*batch, N, m) -> (*batch, N)."""
        if self.full:
            resid = y.unsqueeze(-2) - hz
            if self.kind == "gaussian":
                u = resid @ self.whiten
                return (u * u).sum(-1).mul_(-0.5).sub_(self.const_full)
        else:
            resid = torch.where(self.mask.unsqueeze(-2), y.unsqueeze(-2) - hz, 0.0)
            if self.kind == "gaussian":
                return _gauss_logpdf(resid, self.chol.unsqueeze(-3), self.n_obs)
        u = resid / self.scale
        per = self.const - torch.log(self.scale) - 0.5 * (self.df + 1) * torch.log1p(u**2 / self.df)
        return (per if self.full else torch.where(self.mask.unsqueeze(-2), per, 0.0)).sum(-1)


def _obs_matrix(model, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Observation matrices: ``(*batch, 1, m, d)`` if ``h`` is linear, else the Jacobians of ``h``
    at every particle ``x`` ``(*batch, N, d)`` -> ``(*batch, N, m, d)`` (one backward pass per
    observable; ``h`` acts row by row, so the gradient of a sum is the per-row Jacobian)."""
    H = getattr(model, "observation_matrix", None)
    if H is None and isinstance(model, LinearGaussianModel):
        H = model.H
    if H is not None:
        return H.to(x.dtype).expand(*x.shape[:-2], 1, *H.shape), True
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model.observe(xg)
        rows = [torch.autograd.grad(out[..., k].sum(), xg, retain_graph=True)[0] for k in range(out.shape[-1])]
    return torch.stack(rows, -2).detach().to(x.dtype), False


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.to(torch.float64)


def _noise_blocks(generator: torch.Generator, T: int, shape: tuple, budget: int = 2**17):
    """Standard normals ``(K, *shape)`` for blocks of ``K`` consecutive steps: ``(start, block)``.

    Float32 numbers (Monte-Carlo noise needs no more digits) used in float64 algebra, one call
    per block instead of one per step, into one reused buffer of at most ``budget`` numbers
    (512 KiB: it stays in the L2 cache between drawing and use), so a block is valid until the
    next is drawn. On the CPU they come from
    :class:`~bayesbridge.infer._ziggurat.ZigguratNormals` seeded from ``generator`` (2 ns per
    number against ``torch.randn``'s 3.5 ns, which was half of a compiled bootstrap step),
    elsewhere from ``generator`` itself. Both routes of the filter draw the model noise
    component-major, ``shape = (*batch, d, N)``, as the compiled kernel reads it.
    """
    per_step = max(1, math.prod(shape))
    chunk = max(1, min(T, budget // per_step))
    buf = torch.empty(chunk, *shape, dtype=torch.float32, device=generator.device)
    normals = ZigguratNormals(generator) if buf.device.type == "cpu" else None
    for start in range(0, T, chunk):
        block = buf[: min(chunk, T - start)]
        if normals is not None:
            normals.fill(block.numpy())
        else:
            block.normal_(generator=generator)
        yield start, block


def _is_diagonal(mat: torch.Tensor) -> bool:
    return bool(torch.equal(mat, torch.diag_embed(mat.diagonal(dim1=-2, dim2=-1))))


class _NoiseFactor:
    """Model-error covariance ``Q_t`` and a square root ``L_t``, refactorised only when ``Q_t`` changes."""

    def __init__(self, model) -> None:
        self.model, self.Q, self.L = model, None, None

    def __call__(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q_t, L_t)``, both ``(d, d)``."""
        Q = _f64(self.model.transition_cov(t))
        if self.Q is None or (Q is not self.Q and not torch.equal(self.Q, Q)):
            self.Q, self.L = Q, _psd_sqrt(Q, "transition_cov")
        return self.Q, self.L

    @staticmethod
    def scale(noise: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """``noise @ L^T`` (an elementwise product when ``L`` is diagonal)."""
        return noise * L.diagonal() if _is_diagonal(L) else noise @ L.mT


@dataclass
class _FilterPass:
    """Raw outputs of one forward pass (float64).

    Attributes
    ----------
    particles : Tensor (*batch, T or 2, N, d)
        Step ``t`` in slot ``t % T`` (all steps kept) or ``t % 2`` (``store_ensemble=False``).
    log_weights : Tensor (*batch, T or 2, N)
        Normalised, before resampling (same slots).
    inv_ess : Tensor (*batch, T)
        ``sum_i W_i^2`` (one over the ESS).
    step_ev : Tensor (*batch, T)
        Log-evidence increments ``log p(y_t | y_{1:t-1})``.
    pred_mean, pred_sq : Tensor (*batch, T, m)
        Predictive first and second moments of ``h(z_t)`` (weights of step ``t-1``).
    extra_var : Tensor (*batch, T, m) or None
        Extra predictive variance of the guided proposal (``diag(H Q H^T)``).
    fmean : Tensor (*batch, T, d)
        Weighted filtered mean.
    fcov : Tensor (*batch, T, d, d)
        Weighted filtered covariance.
    """

    particles: torch.Tensor
    log_weights: torch.Tensor
    inv_ess: torch.Tensor
    step_ev: torch.Tensor
    pred_mean: torch.Tensor
    pred_sq: torch.Tensor
    extra_var: torch.Tensor | None
    fmean: torch.Tensor
    fcov: torch.Tensor


def _allocate(batch: tuple, T: int, N: int, d: int, m: int, ring: int,
              device: torch.device | None = None) -> tuple[_FilterPass, list[np.ndarray] | None]:
    """Empty outputs of a pass, and their ``(B, ...)`` numpy views (shared memory) in the order
    particles, log_weights, inv_ess, step_ev, pred_mean, pred_sq, fmean, fcov (``None`` off the CPU).

    Particles and log weights of step ``t`` live in slot ``t % ring`` (``ring = T``: all kept).
    """
    B = math.prod(batch)
    device = torch.device("cpu") if device is None else device
    e = lambda *shape: torch.empty(*batch, T, *shape, dtype=torch.float64, device=device)  # noqa: E731
    r = lambda *shape: torch.empty(*batch, ring, *shape, dtype=torch.float64, device=device)  # noqa: E731
    fp = _FilterPass(r(N, d), r(N), e(), e(), e(m), e(m), None, e(d), e(d, d))
    if device.type != "cpu":
        return fp, None
    tensors = (fp.particles, fp.log_weights, fp.inv_ess, fp.step_ev, fp.pred_mean, fp.pred_sq, fp.fmean, fp.fcov)
    return fp, [x.reshape(B, *x.shape[len(batch):]).numpy() for x in tensors]


def _check_block(fp: _FilterPass, start: int, K: int, stored: bool) -> None:
    """Raise :class:`FilterDivergenceError` at the first of steps ``start .. start + K - 1``
    whose weighted mean or evidence increment is not finite (finite ones imply finite particles
    and weights), naming the step and, when they are stored, counting non-finite particles."""
    blk = slice(start, start + K)
    finite = torch.isfinite(fp.step_ev[..., blk]) & torch.isfinite(fp.fmean[..., blk, :]).all(-1)
    if bool(finite.all()):
        return
    k = int(torch.nonzero(~finite.reshape(-1, K).all(0))[0])
    bad_t = start + k
    if stored:
        check_finite(fp.particles[..., bad_t, :, :], bad_t, "pf", "particles")
    elif not bool(torch.isinf(fp.step_ev[..., bad_t]).any()):
        check_finite(fp.fmean[..., bad_t, :], bad_t, "pf", "weighted particle mean")
    raise FilterDivergenceError(
        f"pf: every particle has zero weight at time step {bad_t} (the observation is far outside "
        f"the particle cloud). Remedies: use proposal='guided', obs_likelihood='student_t', "
        f"or {REMEDIES}."
    )


def run(model, y: torch.Tensor, config: ParticleConfig, generator: torch.Generator) -> AssimilationResult:
    """Particle filter (and backward-simulation smoother) on ``y`` ``(*batch, T, m)``.

    The algorithm is the one of the module docstring: sequential importance resampling with
    the ``config.proposal`` proposal, systematic resampling when the ESS falls below
    ``config.ess_threshold * N``, and backward simulation for the smoother. A bootstrap filter
    on a linear model (:class:`~bayesbridge.model.LinearGaussianModel`, or a
    :class:`~bayesbridge.model.StateSpaceModel` with a
    :class:`~bayesbridge.model.LinearTransition` and an observation matrix) runs as one compiled
    kernel per block of steps; every other case runs the vectorised torch loop. Off the CPU
    (``y`` on CUDA) the torch loop also weighs and resamples in torch
    (:func:`_weigh_step_torch`), so every tensor follows ``y``'s device.

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
        ``smoother='backward'``; ``diagnostics.ess`` ``(*batch, T)`` is the ESS after weighting.

    Raises
    ------
    FilterDivergenceError
        Non-finite particles, or every weight zero, naming the first such time step.
    """
    batch = tuple(y.shape[:-2])
    N, d = config.members, int(model.latent_dim)
    dt = torch.float64
    m0, P0 = (v.to(dtype=dt, device=y.device) for v in model.initial())
    lik = _Likelihood(model.obs_cov().to(dtype=dt, device=y.device), config)
    mask_all = ~torch.isnan(y)
    y0 = torch.where(mask_all, y, 0.0)
    z0 = m0 + torch.randn(*batch, N, d, dtype=dt, generator=generator, device=y.device) @ _psd_sqrt(P0, "P0").mT
    compiled = _use_compiled(y)
    linear = _linear_parts(model) if config.proposal == "bootstrap" and compiled else None
    if linear is not None:
        fp = _filter_compiled(model, linear, y0, mask_all, z0, config, lik, generator)
    else:
        fp = _filter_torch(model, y0, mask_all, z0, config, lik, generator, compiled=compiled)

    particles, logw = fp.particles, fp.log_weights
    innov = torch.where(mask_all, y0 - fp.pred_mean, float("nan"))
    innov_var = fp.pred_sq - fp.pred_mean**2 + lik.R_gauss.diagonal()
    if fp.extra_var is not None:
        innov_var = innov_var + fp.extra_var
    spread = fp.fcov.diagonal(dim1=-2, dim2=-1).mean(-1).sqrt()
    result = AssimilationResult(
        method="pf",
        filtered_mean=fp.fmean,
        log_evidence=fp.step_ev.sum(-1),
        filtered_cov=fp.fcov,
        filtered_ensemble=particles if config.store_ensemble else None,
        log_weights=logw if config.store_ensemble else None,
        diagnostics=StepDiagnostics(innovation=innov, spread=spread, innovation_var=innov_var, ess=1.0 / fp.inv_ess),
        config=config,
    )
    if config.smoother == "backward":
        traj = backward_simulation(model, particles, logw, config.n_trajectories, generator)
        result.smoothed_ensemble = traj
        result.smoothed_mean = traj.mean(-2)
    return result


# --------------------------------------------------------------------------------------------
# Vectorised torch loop: any transition, either proposal, either observation-error family.
# --------------------------------------------------------------------------------------------


def _use_compiled(y: torch.Tensor) -> bool:
    """Whether the numba kernels serve observations ``y``: CPU tensors only (off the CPU every
    step is torch, see :func:`_weigh_step_torch`)."""
    return y.device.type == "cpu"


def _filter_torch(model, y0, mask_all, z, config: ParticleConfig, lik: _Likelihood, generator,
                  compiled: bool = True) -> _FilterPass:
    """Forward pass over time: the model's own torch functions, vectorised over ``(*batch, N)``.

    Per step, propagation and likelihood are torch ops (any transition, either proposal, either
    observation-error family); weighting, log-evidence increment, ESS, moments and systematic
    resampling are one compiled call (:func:`_weigh_step`) on shared memory when ``compiled``
    (CPU), else the torch equivalent :func:`_weigh_step_torch` (any device); neither reads a
    value back to Python.
    """
    batch, (T, m) = tuple(y0.shape[:-2]), tuple(y0.shape[-2:])
    N, d = z.shape[-2:]
    B = math.prod(batch)
    dt = torch.float64
    full_steps = mask_all.movedim(-2, 0).reshape(T, -1).all(-1).tolist()
    n_obs = mask_all.sum(-1).to(dt)
    inv_ess_min = 1.0 / (config.ess_threshold * N)
    factor = _NoiseFactor(model)
    guided = config.proposal == "guided"

    stored = config.store_ensemble or config.smoother == "backward"
    ring = T if stored else 2
    dev = y0.device
    fp, out = _allocate(batch, T, N, d, m, ring, dev)
    particles = fp.particles
    fp.extra_var = extra = torch.zeros(*batch, T, m, dtype=dt, device=dev) if guided else None
    if compiled:
        w, anc, lwp, wp = _carry(B, N)
        W = torch.from_numpy(wp).reshape(*batch, N)  # weights of the parents (a view, updated in place)
        zbuf = torch.empty(*batch, N, d, dtype=dt, device=dev)
        work = (zbuf.view(B, N, d).numpy(), np.empty((d, N)), np.empty((d, N)))
    else:
        lwp_t = torch.full((*batch, N), -math.log(N), dtype=dt, device=dev)
        W = torch.full((*batch, N), 1.0 / N, dtype=dt, device=dev)

    for start, block in _noise_blocks(generator, T, (*batch, d, N)):
        K = block.shape[0]
        block = block.transpose(-1, -2)  # (K, *batch, N, d)
        QLs = [factor(t) for t in range(start, start + K)]
        if all(L is QLs[0][1] for _, L in QLs):
            wblock = factor.scale(block.to(dt), QLs[0][1])
        else:
            wblock = torch.stack([factor.scale(block[k].to(dt), QLs[k][1]) for k in range(K)])
        vblock = (torch.randn(K, *batch, N, m, 1, dtype=torch.float32, generator=generator, device=dev).to(dt)
                  if guided else None)
        uni = torch.rand(K, B, dtype=dt, generator=generator, device=dev)
        if compiled:
            uni = uni.numpy()
        for k in range(K):
            t = start + k
            mu = _f64(model.transition_mean(z, t)).detach()
            mask, yt = mask_all[..., t, :], y0[..., t, :]
            lik.set_step(mask, full_steps[t], n_obs[..., t])
            if not guided:
                z_t = torch.add(mu, wblock[k], out=particles[..., t % ring, :, :])
                pred = _f64(model.observe(z_t))
                incr = lik(yt, pred)
            else:
                z_t, pred, incr, extra_t = _guided_step(model, mu, mask, yt, lik, QLs[k][0], wblock[k], vblock[k], W)
                particles[..., t % ring, :, :] = z_t
                extra[..., t, :] = extra_t
            if compiled:
                _weigh_step(t, t % ring, t == T - 1, uni[k], incr.detach().reshape(B, N).contiguous().numpy(),
                            pred.detach().expand(*batch, N, m).reshape(B, N, m).contiguous().numpy(), *out,
                            inv_ess_min, w, anc, lwp, wp, *work)
                z = zbuf
            else:
                z, lwp_t, W = _weigh_step_torch(fp, t, t % ring, incr.detach(), pred.detach(), lwp_t, W,
                                                uni[k].reshape(batch + (1,)), inv_ess_min)
        _check_block(fp, start, K, stored)  # stop at the first bad block

    return fp


def _weigh_step_torch(fp: _FilterPass, t: int, ts: int, incr: torch.Tensor, pred: torch.Tensor, lwp: torch.Tensor,
                      wp: torch.Tensor, u: torch.Tensor, inv_ess_min: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`_weigh_step` (every run at once, any device, no host sync).

    incr (*batch, N) log-likelihood increments; pred (*batch, 1 or N, m) predicted
    observations; lwp, wp (*batch, N) log weights / weights of the parents (step ``t-1`` after
    resampling); u (*batch, 1) resampling uniforms. Writes step ``t`` of ``fp`` (particles and
    log weights at slot ``ts``) and returns the parents ``(*batch, N, d)`` of step ``t+1`` with
    their log weights and weights: systematic resampling where ``sum W^2 > inv_ess_min``
    (``ESS < ess_threshold N``), the particles themselves elsewhere.
    """
    N = incr.shape[-1]
    wpe = wp.unsqueeze(-1)
    fp.pred_mean[..., t, :] = (wpe * pred).sum(-2)
    fp.pred_sq[..., t, :] = (wpe * pred.square()).sum(-2)
    tot = lwp + incr
    ev = torch.logsumexp(tot, -1, keepdim=True)  # every weight zero: -inf (NaN weights, caught per block)
    logw = tot - ev
    w = logw.exp()
    x = fp.particles[..., ts, :, :]
    mu = (w.unsqueeze(-2) @ x).squeeze(-2)
    dev = x - mu.unsqueeze(-2)
    cov = (dev * w.unsqueeze(-1)).mT @ dev
    s2 = w.square().sum(-1)
    fp.log_weights[..., ts, :] = logw
    fp.step_ev[..., t] = ev.squeeze(-1)
    fp.inv_ess[..., t] = s2
    fp.fmean[..., t, :] = mu
    fp.fcov[..., t, :, :] = 0.5 * (cov + cov.mT)
    need = (s2 > inv_ess_min).unsqueeze(-1)  # (*batch, 1)
    anc = torch.where(need, _systematic_ancestors(torch.cumsum(w, -1), u),
                      torch.arange(N, device=w.device))
    z = torch.gather(x, -2, anc.unsqueeze(-1).expand(*anc.shape, x.shape[-1]))
    lwp = torch.where(need, -math.log(N), logw)
    wp = torch.where(need, 1.0 / N, w)
    return z, lwp, wp


def _guided_step(model, mu, mask, yt, lik: _Likelihood, Q, w, v_std, W):
    """One guided-proposal step: ``(z, h(mu), log alpha, diag(H Q H^T))`` (see module docstring).

    mu, w (*batch, N, d); mask, yt (*batch, m); v_std (*batch, N, m, 1); W (*batch, N).
    """
    dt = torch.float64
    H, linear = _obs_matrix(model, mu)  # (*batch, 1 or N, m, d)
    Hm = H * mask[..., None, :, None].to(dt)  # zero rows where missing
    Rg = _masked_cov(lik.R_gauss, mask).unsqueeze(-3)  # (*batch, 1, m, m)
    LR = torch.linalg.cholesky(Rg)
    S = Hm @ Q @ Hm.mT + Rg
    LS = torch.linalg.cholesky(S)
    K = torch.cholesky_solve(Hm @ Q, LS).mT  # (*batch, 1 or N, d, m) = Q Hm^T S^-1
    hmu = _f64(model.observe(mu))
    e = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - hmu, 0.0)
    v = (LR @ v_std).squeeze(-1)
    innov_draw = e - (Hm @ w.unsqueeze(-1)).squeeze(-1) - v
    z = mu + w + (K @ innov_draw.unsqueeze(-1)).squeeze(-1)
    log_pred = _gauss_logpdf(e, LS, lik.n_obs)  # \hat p(y | z_{t-1})
    if linear and lik.kind == "gaussian":
        incr = log_pred
    else:
        hz = _f64(model.observe(z))
        lin = hmu + (Hm @ (z - mu).unsqueeze(-1)).squeeze(-1)
        lin_resid = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - lin, 0.0)
        incr = lik(yt, hz) + log_pred - _gauss_logpdf(lin_resid, LR, lik.n_obs)
    extra = (Hm @ Q @ Hm.mT).diagonal(dim1=-2, dim2=-1)
    extra = (W.unsqueeze(-1) * extra).sum(-2) if extra.shape[-2] > 1 else extra.squeeze(-2)
    return z, hmu, incr, extra


# --------------------------------------------------------------------------------------------
# Compiled bootstrap filter for linear transitions and observation matrices.
# --------------------------------------------------------------------------------------------


@dataclass
class _LinearParts:
    """``f(z) = A z + b``, ``h(z) = H z + c``: A (d, d), b (d,), H (m, d), c (m,)."""

    A: torch.Tensor
    b: torch.Tensor
    H: torch.Tensor
    c: torch.Tensor


def _linear_parts(model) -> _LinearParts | None:
    """The affine pieces of a model whose transition and observation are known to be linear."""
    if type(model) is LinearGaussianModel:
        A, H = model.A, model.H
    elif type(model) is StateSpaceModel and type(model.transition) is LinearTransition and (
        model.observation_matrix is not None
    ):
        A, H = model.transition.A, model.observation_matrix
    else:
        return None
    A, H = _f64(A), _f64(H)
    return _LinearParts(A, torch.zeros(A.shape[0], dtype=A.dtype, device=A.device), H,
                        torch.zeros(H.shape[0], dtype=H.dtype, device=H.device))


def _whitening_table(R: torch.Tensor, mask_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whitening matrices of the observed components: ``(table (U, m, m), index (B, T), const (B, T))``.

    ``table[index[b, t]] = L^{-1}`` with ``L`` the Cholesky factor of ``R`` restricted to the
    components observed at ``(b, t)`` (identity on missing ones), so that the residual ``r``
    (zero where missing) gives ``log p = -|L^{-1} r|^2 / 2 - const``,
    ``const = log det L + n_obs log(2 pi) / 2``. Entry 0 is the fully observed case.
    """
    m = R.shape[-1]
    mask = mask_all.reshape(-1, *mask_all.shape[-2:])  # (B, T, m)
    full = mask.all(-1)
    partial = (~full).nonzero()
    covs = torch.cat([R.unsqueeze(0), _masked_cov(R, mask[partial[:, 0], partial[:, 1]])], 0)
    L = torch.linalg.cholesky(covs)
    eye = torch.eye(m, dtype=R.dtype, device=R.device).expand_as(L)
    table = torch.linalg.solve_triangular(L, eye, upper=False)
    index = torch.zeros(mask.shape[:2], dtype=torch.int64, device=R.device)
    index[partial[:, 0], partial[:, 1]] = torch.arange(1, len(partial) + 1, device=R.device)
    logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    const = logdet[index] + 0.5 * _LOG2PI * mask.sum(-1).to(R.dtype)
    return table.contiguous(), index, const


def _carry(B: int, N: int) -> tuple[np.ndarray, ...]:
    """State carried from step to step by the compiled pieces, before the first step.

    ``w`` (B, N) weights of the last step; ``anc`` (B, N) parents of the next step's particles;
    ``lwp``, ``wp`` (B, N) their log weights and weights (uniform before the first step).
    """
    return (np.full((B, N), 1.0 / N), np.broadcast_to(np.arange(N), (B, N)).copy(),
            np.full((B, N), -math.log(N)), np.full((B, N), 1.0 / N))


def _filter_compiled(model, parts: _LinearParts, y0, mask_all, z0, config: ParticleConfig, lik: _Likelihood,
                     generator) -> _FilterPass:
    """Bootstrap forward pass of a linear model: one compiled call per block of steps.

    The kernel (:func:`~bayesbridge.infer._particle_kernel._bootstrap_block`) fuses, per step
    and run, propagation, weighting, log-evidence increment, normalisation, ESS, filtered
    moments and systematic resampling (an O(N) merge of the stratified points with the weights'
    running sum), reading no value back to Python. It stops at the first step with a non-finite
    evidence increment or weighted mean, which :func:`_check_block` then names.
    """
    batch, (T, m) = tuple(y0.shape[:-2]), tuple(y0.shape[-2:])
    N, d = z0.shape[-2:]
    B = math.prod(batch)
    dt = torch.float64
    Q = _f64(model.transition_cov(0))
    LQ = _psd_sqrt(Q, "transition_cov")
    R = lik.R
    if lik.kind == "student_t":
        table = torch.zeros(1, m, m, dtype=dt, device="cpu")
        index = torch.zeros(B, T, dtype=torch.int64, device="cpu")
        const = torch.zeros(B, T, dtype=dt, device="cpu")
        scale = lik.scale
        lc = lik.const - torch.log(scale)
    else:
        table, index, const = _whitening_table(R, mask_all)
        scale = lc = torch.ones(m, dtype=dt, device="cpu")
    stored = config.store_ensemble or config.smoother == "backward"
    ring = T if stored else 2
    fp, out = _allocate(batch, T, N, d, m, ring)
    state = _carry(B, N)
    args = (
        parts.A.contiguous().numpy(), parts.b.numpy(), LQ.contiguous().numpy(), _is_diagonal(LQ),
        parts.H.contiguous().numpy(), parts.c.numpy(), y0.reshape(B, T, m).contiguous().numpy(),
        mask_all.reshape(B, T, m).contiguous().numpy(), table.numpy(), index.numpy(), const.contiguous().numpy(),
        lik.kind == "student_t", _is_diagonal(R), (1.0 / scale).numpy(), lc.numpy(), float(config.df),
        1.0 / (config.ess_threshold * N), z0.reshape(B, N, d).contiguous().numpy(),
    )
    for start, block in _noise_blocks(generator, T, (B, d, N)):
        K = block.shape[0]
        uni = torch.rand(K, B, dtype=dt, generator=generator, device="cpu").numpy()
        if _bootstrap_block(start, T, ring, block.numpy(), uni, *args, *state, *out) >= 0:
            _check_block(fp, start, K, stored)  # raises, naming the first bad step
    return fp


def _categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``logits`` ``(*shape, N)`` -> ``(*shape,)`` (inverse-CDF sampling)."""
    p = torch.softmax(logits, -1)
    cdf = torch.cumsum(p, -1)
    u = torch.rand(*logits.shape[:-1], 1, dtype=p.dtype, generator=generator, device=p.device) * cdf[..., -1:]
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).squeeze(-1).clamp_max(logits.shape[-1] - 1)


def backward_simulation(
    model, particles: torch.Tensor, log_weights: torch.Tensor, n_traj: int, generator: torch.Generator
) -> torch.Tensor:
    """Backward-simulation smoother (Godsill, Doucet & West 2004).

    Parameters
    ----------
    particles : Tensor (*batch, T, N, d)
        Filtering particles of steps ``1..T``.
    log_weights : Tensor (*batch, T, N)
        Their normalised log weights.
    n_traj : int
        Number of trajectories ``M``.

    Returns
    -------
    Tensor (*batch, T, M, d)
        Trajectories drawn from the particle approximation of ``p(z_{1:T} | y_{1:T})``.
    """
    batch, (T, N, d) = particles.shape[:-3], particles.shape[-3:]
    pick = lambda x, idx: torch.gather(x, -2, idx.unsqueeze(-1).expand(*idx.shape, d))  # noqa: E731
    idx = _categorical(log_weights[..., -1, :].unsqueeze(-2).expand(*batch, n_traj, N), generator)
    out = torch.empty(*batch, T, n_traj, d, dtype=particles.dtype, device=particles.device)
    out[..., T - 1, :, :] = pick(particles[..., T - 1, :, :], idx)
    for t in range(T - 2, -1, -1):
        Q = model.transition_cov(t + 1).to(particles.dtype)
        L, info = torch.linalg.cholesky_ex(Q)
        if int(info) != 0:
            raise ParameterError(
                f"smoother='backward' needs a positive-definite model-error covariance; the one at step "
                f"{t + 1} is singular. Use smoother='none' or add a small diagonal model error."
            )
        fx = model.transition_mean(particles[..., t, :, :], t + 1)  # (*batch, N, d)
        a = torch.linalg.solve_triangular(L, out[..., t + 1, :, :].mT, upper=False).mT  # (*batch, M, d)
        b = torch.linalg.solve_triangular(L, fx.mT, upper=False).mT  # (*batch, N, d)
        sq = (a**2).sum(-1, keepdim=True) + (b**2).sum(-1).unsqueeze(-2) - 2.0 * a @ b.mT  # (*batch, M, N)
        logits = log_weights[..., t, :].unsqueeze(-2) - 0.5 * sq
        idx = _categorical(logits, generator)
        out[..., t, :, :] = pick(particles[..., t, :, :], idx)
    return out
