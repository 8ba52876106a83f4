"""A few draws of the error scales of an affine model from their exact posterior, fast.

The target is the posterior of the observation-error scales :math:`s` ``(m,)`` and the model-error
scale :math:`\\sigma` of :class:`~bayesbridge.infer.scale_posterior.ScalePosterior` (exact Kalman
marginal likelihood, the model's priors), in its unconstrained coordinates :math:`u` (``log(s -
r)`` for floored priors, :mod:`bayesbridge.model.scale_priors`; ``log s`` for log-normal ones).
With ``T`` months of ``m`` indices this ``m + 1``-dimensional posterior is close to Gaussian in
:math:`u`, and a bridge needs only ``K`` (10-20) draws of it, so the default sampler is
*importance sampling from the Laplace approximation* (Geweke 1989, *Econometrica* 57,
1317-1339):

1. the mode :math:`\\hat u` by L-BFGS on :math:`U(u) = -\\log p(u \\mid y)` (value and gradient
   in one compiled Kalman pass per evaluation);
2. the Hessian :math:`\\mathcal H` at the mode by central differences of the gradient
   (``2 (m + 1)`` passes);
3. ``proposal_draws`` points from a multivariate Student-t proposal
   :math:`q = t_\\nu(\\hat u, \\mathcal H^{-1})` (:math:`\\nu = 5`: heavier tails than the
   posterior, so the importance weights stay bounded), their exact log posterior in one batched
   compiled call without gradients, weights :math:`w_i \\propto p(u_i \\mid y) / q(u_i)`;
4. ``draws`` scales by systematic resampling of the weighted points.

The weights make the draws exact as ``proposal_draws`` grows, whatever the shape of the
posterior; their effective sample size :math:`(\\sum w)^2 / \\sum w^2` says how well the Laplace
proposal covers it. Below ``min_ess`` the sampler falls back to NUTS (Hoffman & Gelman 2014)
started at the mode with the Laplace covariance as its mass matrix. ``sampler="nuts"`` runs NUTS
directly (the reference: ``docs/lab-notes.md`` compares both on the bridge).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.errors import ParameterError, check_choice, check_int
from bayesbridge.infer.scale_posterior import SITES, ScalePosterior

__all__ = ["ScaleSamplerConfig", "ScaleDraws", "sample_error_scales"]

Sampler = Literal["laplace", "nuts"]


@dataclass
class ScaleSamplerConfig:
    """Settings of :func:`sample_error_scales`.

    Parameters
    ----------
    draws : int
        Scale draws ``K`` returned (>= 1; default 10).
    sampler : {"laplace", "nuts"}
        Importance sampling from the Laplace approximation (default) or NUTS.
    proposal_draws : int
        Importance-sampling points (default 256).
    min_ess : float
        Smallest acceptable importance ESS; below it, NUTS (default 30).
    warmup, nuts_draws : int
        NUTS warm-up and draws (one chain, started at the mode; defaults 150 and 150).
    """

    draws: int = 10
    sampler: Sampler = "laplace"
    proposal_draws: int = 256
    min_ess: float = 30.0
    warmup: int = 150
    nuts_draws: int = 150

    def __post_init__(self) -> None:
        check_choice(self.sampler, "sampler", get_args(Sampler))
        for name, minimum in (("draws", 1), ("proposal_draws", 1), ("nuts_draws", 1), ("warmup", 0)):
            setattr(self, name, check_int(getattr(self, name), name, minimum=minimum))
        if not (isinstance(self.min_ess, int | float) and math.isfinite(self.min_ess) and self.min_ess >= 0):
            raise ParameterError(f"min_ess: expected a number >= 0, got {self.min_ess!r}.")


@dataclass
class ScaleDraws:
    """Draws of the error scales and how they were obtained.

    Attributes
    ----------
    obs_scale : Tensor (K, m)
        Observation-error scales ``s_k`` per draw (observation units).
    model_error_scale : Tensor (K,)
        Model-error scale ``sigma`` per draw.
    obs_names : tuple of str
        The ``m`` observables.
    sampler : str
        ``"laplace"`` (importance-sampled Laplace), ``"nuts"``, or ``"fixed"`` (the nominal scales).
    floor : Tensor (m,) or None
        Lower bound of ``obs_scale`` (the representation error) when the prior is floored.
    stats : dict of str to float
        ``seconds``, and per sampler: ``importance_ess``, ``proposal_draws``, ``optimizer_evals``
        (Laplace); ``divergences``, ``ess_bulk_min``, ``accept_rate`` (NUTS).
    mode : dict of str to Tensor
        Posterior mode of ``obs_scale`` ``(m,)`` and ``model_error_scale`` ``()`` (Laplace).
    """

    obs_scale: torch.Tensor
    model_error_scale: torch.Tensor
    obs_names: tuple[str, ...]
    sampler: str
    floor: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    mode: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_draws(self) -> int:
        """``K``."""
        return int(self.model_error_scale.shape[0])

    def table(self):
        """A :class:`pandas.DataFrame` ``(K, m + 1)`` of the draws, columns the observables and ``sigma``."""
        import pandas as pd

        cols = {n: self.obs_scale[:, k].cpu().numpy() for k, n in enumerate(self.obs_names)}
        cols["model_error_scale"] = self.model_error_scale.cpu().numpy()
        return pd.DataFrame(cols)


def _flat(post: ScalePosterior, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unconstrained site values from ``u (*s, m + 1)``."""
    return {"obs_scale": u[..., :-1], "model_error_scale": u[..., -1]}


def _start(post: ScalePosterior, ssm) -> torch.Tensor:
    """A starting point in the interior of the support: the nominal scales, or the prior mean where
    the nominal value is on the boundary (a floored prior's floor)."""
    values = {"obs_scale": ssm.obs_scale.detach().cpu().to(torch.float64),
              "model_error_scale": torch.tensor(ssm.model_error_scale, dtype=torch.float64)}
    u = post.unconstrain(values)
    for k in SITES:
        if not bool(torch.isfinite(u[k]).all()):
            mean = post.priors[k].mean.to(torch.float64).reshape(values[k].shape)
            u[k] = torch.where(torch.isfinite(u[k]), u[k], post.transforms[k].inv(mean))
    return torch.cat([u["obs_scale"].reshape(-1), u["model_error_scale"].reshape(1)])


def _value_and_grad(post: ScalePosterior, u: np.ndarray) -> tuple[float, np.ndarray]:
    """``U(u)`` and its gradient ``(m + 1,)`` (compiled likelihood, autograd for the priors)."""
    ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    value = post.potential(_flat(post, ut))
    if not bool(torch.isfinite(value)):
        return 1e300, np.zeros_like(u)
    (g,) = torch.autograd.grad(value, ut)
    return float(value.detach()), g.numpy()


def _log_posterior_batch(post: ScalePosterior, u: torch.Tensor) -> torch.Tensor:
    """``-U(u)`` at ``u (N, m + 1)`` without gradients: priors in torch, likelihood in one batched pass."""
    with torch.no_grad():
        params = _flat(post, u)
        lp = post.log_prior(params)
        lp = lp.sum(-1) if lp.ndim > 1 else lp
        scales = post.constrain(params)
        ok = torch.isfinite(lp) & torch.isfinite(scales["obs_scale"]).all(-1) & torch.isfinite(scales["model_error_scale"])
        S = torch.where(ok[:, None], scales["obs_scale"], torch.ones_like(scales["obs_scale"]))
        sig = torch.where(ok, scales["model_error_scale"], torch.ones_like(scales["model_error_scale"]))
        ll, _ = post.likelihood.value_and_grad_batch(S.numpy(), sig.numpy(), grad=False)
        out = lp + torch.as_tensor(ll)
        return torch.where(ok & torch.isfinite(out), out, torch.full_like(out, -math.inf))


def _laplace(post: ScalePosterior, ssm) -> tuple[np.ndarray, np.ndarray, int]:
    """Mode, Hessian of ``U`` at the mode (central differences of the gradient), and the evaluations used."""
    from scipy.optimize import minimize

    evals = 0

    def fun(u):
        nonlocal evals
        evals += 1
        return _value_and_grad(post, u)

    u0 = _start(post, ssm).numpy()
    opt = minimize(fun, u0, jac=True, method="L-BFGS-B", options={"maxiter": 200, "gtol": 1e-6})
    mode = opt.x
    n = mode.size
    hess = np.empty((n, n))
    for j in range(n):
        h = 1e-4 * max(1.0, abs(mode[j]))
        e = np.zeros(n)
        e[j] = h
        hess[:, j] = (fun(mode + e)[1] - fun(mode - e)[1]) / (2.0 * h)
    hess = 0.5 * (hess + hess.T)
    w, V = np.linalg.eigh(hess)
    w = np.maximum(w, 1e-3 * max(float(w.max()), 1.0))  # a flat or non-convex direction: a wide proposal
    return mode, (V * w) @ V.T, evals


def _systematic(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices by systematic resampling of normalised ``weights (N,)``."""
    u0 = torch.rand((), dtype=torch.float64, generator=generator)
    positions = (u0 + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(torch.cumsum(weights, 0), positions).clamp(max=weights.numel() - 1)


def _importance(post: ScalePosterior, mode: np.ndarray, hess: np.ndarray, config: ScaleSamplerConfig,
                generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """``config.draws`` resampled points ``(K, m + 1)`` and the importance ESS (Student-t proposal)."""
    nu, n, N = 5.0, mode.size, config.proposal_draws
    L = torch.as_tensor(np.linalg.cholesky(np.linalg.inv(hess)), dtype=torch.float64)
    loc = torch.as_tensor(mode, dtype=torch.float64)
    z = torch.randn(N, n, dtype=torch.float64, generator=generator)
    chi2 = 2.0 * torch._standard_gamma(torch.full((N,), nu / 2.0, dtype=torch.float64), generator=generator)
    u = loc + (z @ L.mT) / torch.sqrt(chi2 / nu)[:, None]
    maha = torch.linalg.solve_triangular(L, (u - loc).T, upper=False).square().sum(0)
    log_q = -0.5 * (nu + n) * torch.log1p(maha / nu) - L.diagonal().log().sum()  # up to a constant
    log_w = _log_posterior_batch(post, u) - log_q
    w = torch.softmax(log_w, 0)
    ess = float(1.0 / w.square().sum()) if bool(torch.isfinite(w).all()) else 0.0
    return u[_systematic(w, config.draws, generator)], ess


def _nuts(post: ScalePosterior, start: np.ndarray, hess: np.ndarray | None, config: ScaleSamplerConfig,
          generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """``config.draws`` evenly thinned NUTS draws ``(K, m + 1)`` from one chain started at ``start``."""
    from pyro.infer import MCMC, NUTS

    from bayesbridge.io import arviz_compat
    from bayesbridge.model.pyro_program import isolated_pyro

    init = _flat(post, torch.as_tensor(start, dtype=torch.float64))
    with isolated_pyro(generator):
        kernel = NUTS(potential_fn=post.potential, target_accept_prob=0.8, max_tree_depth=6, adapt_mass_matrix=True)
        mcmc = MCMC(kernel, num_samples=config.nuts_draws, warmup_steps=config.warmup, disable_progbar=True,
                    initial_params={k: v.clone() for k, v in init.items()})
        mcmc.run()
    samples = mcmc.get_samples()
    u = torch.cat([samples["obs_scale"].reshape(config.nuts_draws, -1).to(torch.float64),
                   samples["model_error_scale"].reshape(-1, 1).to(torch.float64)], -1)
    diverging = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
    ess = arviz_compat.ess(arviz_compat.from_dict(posterior={"u": u.numpy()[None]}))["u"].values
    keep = torch.linspace(0, config.nuts_draws - 1, config.draws).round().long()
    return u[keep], {"divergences": float(len(diverging)), "ess_bulk_min": float(np.min(ess)),
                     "nuts_draws": float(config.nuts_draws)}


def sample_error_scales(model, observations, config: ScaleSamplerConfig | None = None, *,
                        generator: torch.Generator | None = None) -> ScaleDraws:
    """``K`` draws of ``(s, sigma)`` from their exact posterior given ``observations``.

    Parameters
    ----------
    model : StateSpaceModel
        Affine (``affine_structure`` not None); its ``obs_scale_prior`` and ``model_error_prior``
        are the priors (e.g. :func:`~bayesbridge.model.scale_priors.floored_scale_prior`).
    observations : array (T, m) or (*batch, T, m)
        NaN = missing; runs share the scales.
    config : ScaleSamplerConfig, optional
    generator : torch.Generator, optional
        Source of the proposal, resampling and NUTS randomness (default seeded with 0).

    Returns
    -------
    ScaleDraws
        ``obs_scale (K, m)``, ``model_error_scale (K,)`` and the sampler's diagnostics.
    """
    from bayesbridge.model.scale_priors import FlooredHalfNormal

    config = config or ScaleSamplerConfig()
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    started = time.perf_counter()
    post = ScalePosterior(model, observations)
    mode, hess, evals = _laplace(post, model)
    stats: dict[str, float] = {"optimizer_evals": float(evals)}
    sampler = config.sampler
    if sampler == "laplace":
        u, ess = _importance(post, mode, hess, config, generator)
        stats.update(importance_ess=ess, proposal_draws=float(config.proposal_draws))
        if ess < config.min_ess:
            sampler = "nuts"
    if sampler == "nuts":
        u, nuts_stats = _nuts(post, mode, hess, config, generator)
        stats.update(nuts_stats)
    scales = post.constrain(_flat(post, u))
    at_mode = post.constrain(_flat(post, torch.as_tensor(mode, dtype=torch.float64)))
    base = model.obs_scale_prior
    while hasattr(base, "base_dist"):
        base = base.base_dist
    floor = base.floor.detach().clone() if isinstance(base, FlooredHalfNormal) else None
    stats["seconds"] = time.perf_counter() - started
    return ScaleDraws(scales["obs_scale"].detach().reshape(config.draws, -1), scales["model_error_scale"].detach().reshape(-1),
                      tuple(model.obs_names), sampler, floor, stats,
                      {k: v.detach() for k, v in at_mode.items()})
