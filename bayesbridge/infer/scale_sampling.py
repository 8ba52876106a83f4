"""A few draws of the error scales of an affine model from their exact posterior, fast.

The target is the posterior of the observation-error scales :math:`s` ``(m,)`` and the model-error
scale :math:`\\sigma` of :class:`~bayesbridge.infer.scale_posterior.ScalePosterior` (exact Kalman
marginal likelihood, the model's priors). With ``T`` months of ``m`` indices this
``m + 1``-dimensional posterior is narrow and nearly Gaussian away from the floors, and a bridge
needs only ``K`` (10-20) draws of it, so the default sampler is
*importance sampling from the Laplace approximation* (Geweke 1989, *Econometrica* 57,
1317-1339):

1. coordinates ``x``: the excess :math:`e_k = s_k - r_k \\ge 0` of a floored scale
   (:mod:`bayesbridge.model.scale_priors`, observation or model error; its posterior is often
   piled against the floor, a density cut at 0), the unconstrained value of any other scale
   (``log sigma`` under a log-normal prior);
2. the mode :math:`\\hat x` of :math:`U(x) = -\\log p(x \\mid y)` by L-BFGS-B, bounded at
   :math:`e \\ge 0` (value and gradient in one compiled Kalman pass per evaluation);
3. the Hessian :math:`\\mathcal H` there by differences of the gradient (one-sided on the bound);
   a coordinate on its bound gets the Newton centre :math:`c_j = -\\partial_j U / \\mathcal H_{jj}`
   (below 0: the quadratic expansion of a density cut at 0) and the spread
   :math:`\\mathcal H_{jj}^{-1/2}`, the others the mode and the marginal spreads of their block of
   :math:`\\mathcal H^{-1}` widened by 1.5;
4. ``proposal_draws`` points from a product proposal with those spreads: Gaussians truncated at
   :math:`e = 0` for the floored coordinates, Student-t (5 degrees of freedom) for the other
   coordinates; their exact log posterior in one
   batched compiled call, weights :math:`w_i \\propto p(x_i \\mid y) / q(x_i)`, and the
   log-evidence :math:`\\log p(y) \\approx \\log \\frac1N \\sum_i p(y, x_i) / q(x_i)`;
5. ``draws`` scales by systematic resampling of the weighted points.

The weights make the draws exact as ``proposal_draws`` grows, whatever the shape of the
posterior; their effective sample size :math:`(\\sum w)^2 / \\sum w^2` says how well the Laplace
proposal covers it. Below ``min_ess`` the sampler falls back to NUTS (Hoffman & Gelman 2014)
started at the mode (in the unconstrained coordinates ``log(s - r)``, ``log sigma``), with an
adapted mass matrix. ``sampler="nuts"`` runs NUTS
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
from bayesbridge.infer.scale_posterior import ScalePosterior

__all__ = ["ScaleSamplerConfig", "ScaleDraws", "sample_error_scales", "laplace_scales"]

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


def _summed(jac: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A log-Jacobian summed over the last axis when it is per element of ``x (*s, m)``."""
    return jac.sum(-1) if jac.ndim == x.ndim else jac


class _Coords:
    """The sampler's coordinates ``x (*s, m + 1)``: the excess ``e = s - r >= 0`` of floored
    observation-error scales (else their unconstrained value), then the model-error scale's
    excess ``sigma - sigma_0`` over a floored prior's floor (else its unconstrained value). In
    ``e`` a posterior piled against the floor is a smooth density cut at 0, which a truncated
    Gaussian fits; in ``log e`` it has an exponential left tail that no Gaussian fits (importance
    ESS of 5 in 256 on the bridge's 200-year twin)."""

    def __init__(self, post: ScalePosterior, floor: torch.Tensor | None, sigma_floor: float | None = None) -> None:
        self.post, self.floor, self.sigma_floor = post, floor, sigma_floor
        m = post.obs_dim
        self.floored = [floor is not None] * m + [sigma_floor is not None]

    def scales(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s (*s, m), sigma (*s,), log |d(s, sigma) / dx| (*s,))``."""
        t_s, t_sig = self.post.transforms["obs_scale"], self.post.transforms["model_error_scale"]
        xo, xs = x[..., :-1], x[..., -1]
        if self.floor is not None:
            s, jac = self.floor + xo, torch.zeros(x.shape[:-1], dtype=x.dtype)
        else:
            s = t_s(xo)
            jac = _summed(t_s.log_abs_det_jacobian(xo, s), xo)
        if self.sigma_floor is not None:
            return s, self.sigma_floor + xs, jac
        sig = t_sig(xs)
        return s, sig, jac + t_sig.log_abs_det_jacobian(xs, sig)

    def log_prior(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(s) + log p(sigma) + log |Jacobian|`` ``(*s,)``, and the scales."""
        s, sig, jac = self.scales(x)
        lp = _summed(self.post.priors["obs_scale"].log_prob(s), s) + self.post.priors["model_error_scale"].log_prob(sig)
        return lp + jac, s, sig

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``U(x) = -log p(x | y)`` and its gradient ``(m + 1,)`` (compiled likelihood, autograd for the rest)."""
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        lp, s, sig = self.log_prior(xt)
        if not bool(torch.isfinite(lp)):
            return 1e300, np.zeros_like(x)
        value = -(lp + self.post.likelihood(s.reshape(self.post.obs_dim), sig.reshape(())))
        if not bool(torch.isfinite(value)):
            return 1e300, np.zeros_like(x)
        (g,) = torch.autograd.grad(value, xt)
        return float(value.detach()), g.numpy()

    def log_density_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | y)`` ``(N,)`` at ``x (N, m + 1)``, without gradients (one batched likelihood pass)."""
        with torch.no_grad():
            lp, s, sig = self.log_prior(x)
            ok = torch.isfinite(lp) & torch.isfinite(s).all(-1) & torch.isfinite(sig) & (s > 0).all(-1)
            S = torch.where(ok[:, None], s, torch.ones_like(s))
            sg = torch.where(ok, sig, torch.ones_like(sig))
            ll, _ = self.post.likelihood.value_and_grad_batch(S.numpy(), sg.numpy(), grad=False)
            out = lp + torch.as_tensor(ll)
            return torch.where(ok & torch.isfinite(out), out, torch.full_like(out, -math.inf))

    def to_u(self, x: torch.Tensor) -> torch.Tensor:
        """The ScalePosterior's unconstrained coordinates of ``x (*s, m + 1)`` (for NUTS)."""
        floored = torch.tensor(self.floored)
        return torch.where(floored, x.clamp(min=1e-6).log(), x)

    def start(self, ssm) -> np.ndarray:
        """Nominal scales (a floored prior's floor: a tenth of its mean excess above it)."""
        sig0 = torch.tensor(ssm.model_error_scale, dtype=torch.float64)
        if self.sigma_floor is not None:
            xs = 0.1 * (self.post.priors["model_error_scale"].mean.to(torch.float64).reshape(1) - self.sigma_floor)
        else:
            xs = self.post.transforms["model_error_scale"].inv(sig0).reshape(1)
        if self.floor is not None:
            excess = self.post.priors["obs_scale"].mean.to(torch.float64).reshape(-1) - self.floor
            xo = 0.1 * excess
        else:
            xo = self.post.transforms["obs_scale"].inv(ssm.obs_scale.detach().cpu().to(torch.float64))
        return torch.cat([xo.reshape(-1), xs]).numpy()


def _laplace(coords: _Coords, ssm) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Mode of ``U`` (bounded at 0 in floored coordinates), the proposal's spread per coordinate
    (from the Hessian there, by differences of the gradient, one-sided at the bound), its centre
    (the mode, or for a coordinate on its bound the Newton centre ``mode_j - g_j / H_jj`` of the
    density cut there, below 0) and the evaluations used."""
    from scipy.optimize import minimize

    evals = 0

    def fun(x):
        nonlocal evals
        evals += 1
        return coords.value_and_grad(x)

    x0 = coords.start(ssm)
    n = x0.size
    bounds = [(0.0, None) if coords.floored[j] else (None, None) for j in range(n)]
    opt = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200, "gtol": 1e-6})
    mode = opt.x
    g0 = fun(mode)[1]
    hess = np.empty((n, n))
    for j in range(n):
        h = 1e-4 * max(1e-2, abs(mode[j])) if bounds[j][0] is not None else 1e-4 * max(1.0, abs(mode[j]))
        e = np.zeros(n)
        e[j] = h
        if bounds[j][0] is not None and mode[j] < h:  # on the bound: forward difference
            hess[:, j] = (fun(mode + e)[1] - g0) / h
        else:
            hess[:, j] = (fun(mode + e)[1] - fun(mode - e)[1]) / (2.0 * h)
    hess = 0.5 * (hess + hess.T)
    w, V = np.linalg.eigh(hess)
    w = np.maximum(w, 1e-6 * max(float(w.max()), 1e-12))  # a flat or non-convex direction: a wide proposal
    hess = (V * w) @ V.T
    # Coordinates on their bound (B): near the bound the density is about exp(-g_j e_j - H_jj e_j^2 / 2)
    # along each of them (the others held there), so each gets the centre -g_j / H_jj and the
    # spread 1 / sqrt(H_jj) of that cut Gaussian. A joint Newton step would use H_BB^{-1}: with
    # strongly correlated rows (a profile's 17 longitudes) it sent centres to -1e3 and the
    # importance ESS to 1. Ignoring the (positive) couplings only widens the proposal. The
    # others (I) are centred at the mode with the spreads of H_II^{-1}: once B is pinned near 0
    # they vary about their conditional mode. The cut Gaussians are not widened: their rate at the
    # bound is the density's own, and a 1.5-fold spread over 20 bound coordinates (a profile's
    # rows) left an importance ESS of 4 in 256 where the unwidened product gave 254.
    on_bound = np.array([b[0] is not None and mode[j] < 1e-8 for j, b in enumerate(bounds)])
    centre, sd = mode.copy(), np.empty(n)
    diag = np.diag(hess)
    centre[on_bound] = mode[on_bound] - g0[on_bound] / diag[on_bound]
    sd[on_bound] = 1.0 / np.sqrt(diag[on_bound])
    inner = ~on_bound
    if inner.any():  # widened by 1.5: the Laplace spreads of a skewed interior posterior are short
        sd[inner] = 1.5 * np.sqrt(np.diag(np.linalg.inv(hess[np.ix_(inner, inner)])))
    return mode, sd, centre, evals


def _systematic(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices by systematic resampling of normalised ``weights (N,)``."""
    u0 = torch.rand((), dtype=torch.float64, generator=generator)
    positions = (u0 + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(torch.cumsum(weights, 0), positions).clamp(max=weights.numel() - 1)


def _importance(coords: _Coords, centre: np.ndarray, sd: np.ndarray, config: ScaleSamplerConfig,
                generator: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """``config.draws`` resampled points ``x (K, m + 1)``, the importance ESS and the log-evidence estimate.

    The proposal is a product over coordinates, each with the spread ``sd`` of :func:`_laplace`: a
    Gaussian truncated at 0 for a floored excess (sampled exactly by its inverse CDF), a Student-t
    (5 degrees of freedom) otherwise. ``log p(y) ~ log mean_i p(y, x_i) / q(x_i)``
    (Geweke 1989).
    """
    from scipy import stats

    N, n = config.proposal_draws, centre.size
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    x = np.empty((N, n))
    log_q = np.zeros(N)
    for j in range(n):
        if coords.floored[j]:
            dist = stats.truncnorm((0.0 - centre[j]) / sd[j], np.inf, loc=centre[j], scale=sd[j])
        else:
            dist = stats.t(5.0, loc=centre[j], scale=sd[j])
        x[:, j] = dist.rvs(N, random_state=rng)
        log_q += dist.logpdf(x[:, j])
    xt = torch.as_tensor(x, dtype=torch.float64)
    log_w = coords.log_density_batch(xt) - torch.as_tensor(log_q)
    w = torch.softmax(log_w, 0)
    ok = bool(torch.isfinite(w).all())
    ess = float(1.0 / w.square().sum()) if ok else 0.0
    log_evidence = float(torch.logsumexp(log_w, 0) - math.log(N)) if ok else -math.inf
    return xt[_systematic(w, config.draws, generator)], ess, log_evidence


def _nuts(post: ScalePosterior, start: np.ndarray, config: ScaleSamplerConfig,
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


def _coords(model, observations) -> _Coords:
    """The sampler's coordinates for ``model``'s priors (floored or not) and ``observations``."""
    from bayesbridge.model.scale_priors import FlooredHalfNormal

    base = model.obs_scale_prior
    while hasattr(base, "base_dist"):
        base = base.base_dist
    floor = base.floor.detach().clone().reshape(-1) if isinstance(base, FlooredHalfNormal) else None
    sigma_prior = model.model_error_prior
    sigma_floor = float(sigma_prior.floor) if isinstance(sigma_prior, FlooredHalfNormal) else None
    return _Coords(ScalePosterior(model, observations), floor, sigma_floor)


def laplace_scales(model, observations) -> dict[str, torch.Tensor]:
    """The mean of the Laplace proposal of :func:`sample_error_scales`, as scales: a starting point.

    Per coordinate, the mean of its proposal (the mode for an unbounded one; for a floored one
    on its floor, the mean of the Gaussian cut at the floor, a little above it), mapped to
    ``obs_scale (m,)`` and ``model_error_scale ()``. Variational inference starts its guide there
    instead of at a prior quantile, which saves it the walk down to the floors in
    ``log(s - r)``.

    Parameters
    ----------
    model : StateSpaceModel
        Affine, with its priors (as for :func:`sample_error_scales`).
    observations : array (T, m) or (*batch, T, m)
        NaN = missing.

    Returns
    -------
    dict of str to Tensor
        ``obs_scale (m,)`` and ``model_error_scale ()``, inside the priors' supports.
    """
    from scipy.special import erfcx

    coords = _coords(model, observations)
    mode, sd, centre, _ = _laplace(coords, model)
    # mean of N(c, sd^2) cut at 0: c + sd phi(a) / (1 - Phi(a)), a = -c / sd, with the hazard
    # phi / (1 - Phi) = sqrt(2 / pi) / erfcx(a / sqrt 2), finite for the a ~ 1e4 of a profile's rows
    a = -centre / sd
    cut = centre + sd * math.sqrt(2.0 / math.pi) / erfcx(a / math.sqrt(2.0))
    mean = np.where(coords.floored, np.maximum(cut, 0.0), mode)
    s, sig, _ = coords.scales(torch.as_tensor(mean, dtype=torch.float64))
    return {"obs_scale": s.detach(), "model_error_scale": sig.detach().reshape(())}


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
    config = config or ScaleSamplerConfig()
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    started = time.perf_counter()
    coords = _coords(model, observations)
    post, floor = coords.post, coords.floor
    mode, sd, centre, evals = _laplace(coords, model)
    stats: dict[str, float] = {"optimizer_evals": float(evals)}
    sampler = config.sampler
    if sampler == "laplace":
        x, ess, log_evidence = _importance(coords, centre, sd, config, generator)
        stats.update(importance_ess=ess, proposal_draws=float(config.proposal_draws), log_evidence=log_evidence)
        if ess < config.min_ess:
            sampler = "nuts"
    if sampler == "nuts":
        u, nuts_stats = _nuts(post, coords.to_u(torch.as_tensor(mode)).numpy(), config, generator)
        stats.update(nuts_stats)
        scales = post.constrain(_flat(post, u))
        obs, sig = scales["obs_scale"], scales["model_error_scale"]
    else:
        obs, sig, _ = coords.scales(x)
    at_mode = coords.scales(torch.as_tensor(mode, dtype=torch.float64))
    stats["seconds"] = time.perf_counter() - started
    return ScaleDraws(obs.detach().reshape(config.draws, -1), sig.detach().reshape(-1), tuple(model.obs_names),
                      sampler, floor, stats, {"obs_scale": at_mode[0].detach(), "model_error_scale": at_mode[1].detach()})
