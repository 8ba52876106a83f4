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

Everything is vectorised over particles and a leading batch of independent runs; the only
Python loop is over time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from bayesbridge.errors import FilterDivergenceError, ParameterError
from bayesbridge.infer.divergence import REMEDIES, check_finite
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics
from bayesbridge.model import LinearGaussianModel

__all__ = ["ParticleConfig", "run", "systematic_resample"]

Proposal = Literal["bootstrap", "guided"]
Resample = Literal["systematic"]
Smoother = Literal["none", "backward"]
ObsLikelihood = Literal["gaussian", "student_t"]
_LOG2PI = math.log(2.0 * math.pi)


def _check_choice(name: str, value, literal) -> None:
    options = get_args(literal)
    if value not in options:
        raise ParameterError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}.")


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
    """

    members: int = 1000
    proposal: Proposal = "bootstrap"
    resample: Resample = "systematic"
    ess_threshold: float = 0.5
    smoother: Smoother = "backward"
    n_trajectories: int = 100
    obs_likelihood: ObsLikelihood = "gaussian"
    df: float = 4.0

    def __post_init__(self) -> None:
        _check_choice("proposal", self.proposal, Proposal)
        _check_choice("resample", self.resample, Resample)
        _check_choice("smoother", self.smoother, Smoother)
        _check_choice("obs_likelihood", self.obs_likelihood, ObsLikelihood)
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
    n = log_weights.shape[-1]
    cdf = torch.cumsum(log_weights.exp(), -1)
    u = torch.rand(*log_weights.shape[:-1], 1, dtype=cdf.dtype, generator=generator)
    u = u.add(torch.arange(n, dtype=cdf.dtype)).mul_(cdf[..., -1:] / n)  # one uniform per stratum
    return torch.searchsorted(cdf, u).clamp_max_(n - 1)


def _psd_sqrt(cov: torch.Tensor, name: str) -> torch.Tensor:
    """A square root ``L`` with ``L L^T = cov`` (Cholesky; symmetric eigen-root if singular)."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info.max()) == 0:
        return chol
    vals, vecs = torch.linalg.eigh(cov)
    if float(vals.min()) < -1e-8 * float(vals.abs().max()):
        raise ParameterError(f"{name}: expected a positive semi-definite covariance, smallest eigenvalue {float(vals.min()):.3g}.")
    return vecs * vals.clamp_min(0.0).sqrt()[..., None, :]


def _masked_cov(R: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``R`` restricted to observed components, identity on missing ones: ``(*batch, m, m)``."""
    both = mask[..., :, None] & mask[..., None, :]
    return torch.where(both, R, torch.eye(R.shape[-1], dtype=R.dtype))


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

    def set_step(self, mask: torch.Tensor, full: bool) -> None:
        """mask (*batch, m); ``full``: every component of every run observed."""
        self.mask, self.full = mask, full
        self.n_obs = mask.sum(-1).to(self.R.dtype)
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


def _noise_stream(generator: torch.Generator, T: int, shape: tuple, budget: int = 2**21):
    """Standard normals ``shape`` for each of ``T`` steps, drawn in chunks of steps (fewer calls)."""
    per_step = max(1, math.prod(shape))
    chunk = max(1, min(T, budget // per_step))
    for start in range(0, T, chunk):
        # drawn in float32 (twice as fast; Monte-Carlo noise needs no more digits), used in float64
        block = torch.randn(min(chunk, T - start), *shape, dtype=torch.float32, generator=generator)
        yield from block.to(torch.float64)


def run(model, y: torch.Tensor, config: ParticleConfig, generator: torch.Generator) -> AssimilationResult:
    """Particle filter (and backward-simulation smoother) on ``y`` ``(*batch, T, m)``.

    The algorithm is the one of the module docstring: sequential importance resampling with
    the ``config.proposal`` proposal, systematic resampling when the ESS falls below
    ``config.ess_threshold * N``, and backward simulation for the smoother.

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
    """
    batch, (T, m) = tuple(y.shape[:-2]), tuple(y.shape[-2:])
    N, d = config.members, int(model.latent_dim)
    dt = torch.float64
    m0, P0 = (v.to(dt) for v in model.initial())
    R = model.obs_cov().to(dt)
    lik = _Likelihood(R, config)
    mask_all = ~torch.isnan(y)
    y0 = torch.where(mask_all, y, 0.0)
    full_steps = mask_all.movedim(-2, 0).reshape(T, -1).all(-1).tolist()
    log_n = math.log(N)
    inv_ess_min = 1.0 / (config.ess_threshold * N)
    n_runs = math.prod(batch)
    state_noise = _noise_stream(generator, T, (*batch, N, d))
    obs_noise = _noise_stream(generator, T, (*batch, N, m, 1)) if config.proposal == "guided" else None

    z = m0 + torch.randn(*batch, N, d, dtype=dt, generator=generator) @ _psd_sqrt(P0, "P0").mT
    uniform = torch.full((*batch, N), -log_n, dtype=dt)
    uniform_w = uniform.exp()
    logw, W = uniform, uniform_w
    particles = torch.empty(*batch, T, N, d, dtype=dt)
    logw_store = torch.empty(*batch, T, N, dtype=dt)
    ess_store = torch.empty(*batch, T, dtype=dt)
    moments = torch.empty(*batch, T, 1, 2 * m, dtype=dt)
    innov_var = torch.zeros(*batch, T, m, dtype=dt)
    step_ev_store = torch.empty(*batch, T, dtype=dt)
    cache: dict[str, object] = {"Q": None}

    for t in range(T):
        if t > 0:  # resample the weights of step t-1 where the ESS is low
            need = ess_store[..., t - 1] > inv_ess_min  # ESS < threshold N
            n_need = int(need.sum()) if batch else int(bool(need))
            if n_need:
                idx = systematic_resample(logw, generator)
                z_res = torch.gather(z, -2, idx.unsqueeze(-1).expand(*idx.shape, d))
                if n_need == n_runs:
                    z, logw, W = z_res, uniform, uniform_w
                else:
                    z = torch.where(need[..., None, None], z_res, z)
                    logw = torch.where(need[..., None], uniform, logw)
                    W = logw.exp()
        mu = _f64(model.transition_mean(z, t))
        Q = _f64(model.transition_cov(t))
        if cache["Q"] is None or (Q is not cache["Q"] and not torch.equal(cache["Q"], Q)):
            cache["Q"], cache["LQ"] = Q, _psd_sqrt(Q, "transition_cov")
        LQ = cache["LQ"]
        mask, yt = mask_all[..., t, :], y0[..., t, :]
        lik.set_step(mask, full_steps[t])
        if config.proposal == "bootstrap":
            z = mu + next(state_noise) @ LQ.mT
            hz = _f64(model.observe(z))
            incr = lik(yt, hz)
            pred = hz
            extra_var = 0.0
        else:
            H, linear = _obs_matrix(model, mu)  # (*batch, 1 or N, m, d)
            Hm = H * mask[..., None, :, None].to(dt)  # zero rows where missing
            Rg = _masked_cov(lik.R_gauss, mask).unsqueeze(-3)  # (*batch, 1, m, m)
            LR = torch.linalg.cholesky(Rg)
            S = Hm @ Q @ Hm.mT + Rg
            LS = torch.linalg.cholesky(S)
            K = torch.cholesky_solve(Hm @ Q, LS).mT  # (*batch, 1 or N, d, m) = Q Hm^T S^-1
            hmu = model.observe(mu).to(dt)
            e = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - hmu, 0.0)
            w = next(state_noise) @ LQ.mT
            v = (LR @ next(obs_noise)).squeeze(-1)
            innov_draw = e - (Hm @ w.unsqueeze(-1)).squeeze(-1) - v
            z = mu + w + (K @ innov_draw.unsqueeze(-1)).squeeze(-1)
            log_pred = _gauss_logpdf(e, LS, lik.n_obs)  # \hat p(y | z_{t-1})
            if linear and config.obs_likelihood == "gaussian":
                incr = log_pred
            else:
                hz = model.observe(z).to(dt)
                lin = hmu + (Hm @ (z - mu).unsqueeze(-1)).squeeze(-1)
                lin_resid = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - lin, 0.0)
                incr = lik(yt, hz) + log_pred - _gauss_logpdf(lin_resid, LR, lik.n_obs)
            pred = hmu
            extra_var = (Hm @ Q @ Hm.mT).diagonal(dim1=-2, dim2=-1)
            if extra_var.shape[-2] > 1:
                extra_var = (W.unsqueeze(-1) * extra_var).sum(-2)
            else:
                extra_var = extra_var.squeeze(-2)
        total = logw + incr
        step_ev = torch.logsumexp(total, -1)
        step_ev_store[..., t] = step_ev
        # predictive moments of h (weights of step t-1), turned into innovations after the loop
        moments[..., t, :, :] = W.unsqueeze(-2) @ torch.cat([pred, pred * pred], -1)
        if not isinstance(extra_var, float):
            innov_var[..., t, :] = extra_var
        logw = total - step_ev.unsqueeze(-1)
        particles[..., t, :, :] = z
        logw_store[..., t, :] = logw
        W = logw.exp()
        ess_store[..., t] = (W * W).sum(-1)  # 1 / ESS

    ess_store = 1.0 / ess_store
    log_ev = step_ev_store.sum(-1)
    pmean, psq = moments.squeeze(-2).split(m, -1)
    innov = torch.where(mask_all, y0 - pmean, float("nan"))
    innov_var = innov_var + psq - pmean**2 + lik.R_gauss.diagonal()
    # divergence checks once, after the loop (no per-step synchronisation); name the first bad step
    finite = torch.isfinite(particles).flatten(-2).all(-1) & torch.isfinite(step_ev_store)  # (*batch, T)
    if not bool(finite.all()):
        bad_t = int(torch.nonzero(~finite.reshape(-1, T).all(0))[0])
        check_finite(particles[..., bad_t, :, :], bad_t, "pf", "particles")
        raise FilterDivergenceError(
            f"pf: every particle has zero weight at time step {bad_t} (the observation is far outside "
            f"the particle cloud). Remedies: use proposal='guided', obs_likelihood='student_t', "
            f"or {REMEDIES}."
        )
    W = logw_store.exp().unsqueeze(-1)
    fmean = (W * particles).sum(-2)
    dev = particles - fmean.unsqueeze(-2)
    fcov = (W * dev).mT @ dev
    spread = (fcov.diagonal(dim1=-2, dim2=-1).mean(-1)).sqrt()
    result = AssimilationResult(
        method="pf",
        filtered_mean=fmean,
        log_evidence=log_ev,
        filtered_cov=fcov,
        filtered_ensemble=particles,
        log_weights=logw_store,
        diagnostics=StepDiagnostics(innovation=innov, spread=spread, innovation_var=innov_var, ess=ess_store),
        config=config,
    )
    if config.smoother == "backward":
        traj = backward_simulation(model, particles, logw_store, config.n_trajectories, generator)
        result.smoothed_ensemble = traj
        result.smoothed_mean = traj.mean(-2)
    return result


def _categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``logits`` ``(*shape, N)`` -> ``(*shape,)`` (inverse-CDF sampling)."""
    p = torch.softmax(logits, -1)
    cdf = torch.cumsum(p, -1)
    u = torch.rand(*logits.shape[:-1], 1, dtype=p.dtype, generator=generator) * cdf[..., -1:]
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
    out = torch.empty(*batch, T, n_traj, d, dtype=particles.dtype)
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
