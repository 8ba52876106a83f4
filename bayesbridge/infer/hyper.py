"""Posterior of the error scales (observation-error scales, model-error scale) by NUTS or SVI.

The target is the exact marginal posterior of the global scales of an affine state-space model,

.. math:: p(s, \\sigma | y) \\propto p(s)\\, p(\\sigma)\\, p(y_{1:T} | s, \\sigma),

where the latent chain is integrated out exactly (the Kalman marginal likelihood). By default
(``engine="compiled"``) NUTS runs on the potential of
:class:`~bayesbridge.infer.scale_posterior.ScalePosterior`, whose likelihood and gradient come from
one compiled Kalman pass with forward sensitivities
(:class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood`); ``engine="pyro"`` traces the Pyro
program :func:`bayesbridge.model.pyro_program.state_space_program` (GaussianHMM) at every
gradient instead, the same posterior at many times the cost. ``"nuts"``
samples it with the No-U-Turn sampler (Hoffman & Gelman 2014) in several independent chains
from dispersed starting points, so convergence is checked with the rank-normalised split R-hat
and bulk ESS (Vehtari et al. 2021); ``"svi"`` fits a variational approximation
(:mod:`bayesbridge.infer.variational`) and returns its draws as one chain (R-hat is undefined
for one chain and reported as NaN).

Observation-error scales include representation error; multiple independent runs
(``observations`` with leading batch dims) share the scales.

*Ensemble likelihood* (``likelihood="ensemble"``). For a nonlinear model, or to infer the
multiplicative inflation ``lambda`` of an ensemble filter, the exact marginal likelihood is
replaced by the ensemble Kalman (EnKF/ETKF) estimate of the innovation likelihood
(:mod:`bayesbridge.infer.enkf`),

.. math::
    \\log \\hat p_N(y_{1:T} | s, \\sigma, \\lambda) = \\sum_t \\log N\\big(y_t;\\,
    \\overline{h(z^f_t)},\\; \\lambda^2 Y_t^T Y_t / (N-1) + \\mathrm{diag}(s^2)\\big),

computed with *common random numbers*: every evaluation draws the initial ensemble, the model
errors (and the perturbed observations of the stochastic EnKF) from a generator re-seeded with
the same ``seed``, so :math:`\\hat p_N` is a deterministic, differentiable function of
``(s, sigma, lambda)``; autograd through the filter gives the gradient that NUTS and SVI need,
and the posterior is :math:`p(s) p(\\sigma) p(\\lambda) \\hat p_N(y | s, \\sigma, \\lambda)` (a
``pyro.factor`` site). This is the ensemble-Kalman likelihood of Stroud & Bengtsson (2007,
*Sequential state and variance estimation within the ensemble Kalman filter*, MWR 135) and
Katzfuss, Stroud & Wikle (2020, *Ensemble Kalman methods for high-dimensional hierarchical
dynamic space-time models*, JASA 115), with fixed random numbers as in simulated-likelihood
estimation. For a linear-Gaussian model the ETKF with second-order exact sampling and
``members > 2 latent_dim`` reproduces the Kalman filter, so :math:`\\hat p_N` is then the exact
likelihood of the inflated filter (forecast covariance :math:`\\lambda^2 (A P A^T + Q)`); with a
stochastic EnKF or a nonlinear model it is an approximation whose error shrinks as ``members``
grows.

Inflation ``lambda >= 1`` gets the prior ``lambda - 1 ~ HalfNormal(inflation_scale)`` (mass at
1, i.e. "no inflation unless the data ask for it") or ``LogNormal(log inflation_scale, 1)``; its
draws are returned as the variable ``inflation``. Inflation above 1 signals an ensemble whose
forecast spread is too small for the data: too small a model-error covariance, or too few
members.

Cost: every NUTS leapfrog step and every SVI step runs the ensemble filter forward and back
once (``O(T N d (m + d))``, a Python loop over the ``T`` steps), against one compiled Kalman
pass for the exact likelihood; prefer ``method="svi"`` for long series and
``likelihood="exact"`` whenever the model is linear-Gaussian and no inflation is wanted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesbridge.errors import InputTypeError, ParameterError, check_choice
from bayesbridge.infer.enkf import EnKFConfig, Sampling
from bayesbridge.infer.enkf import run as enkf_run
from bayesbridge.infer.scale_posterior import ScalePosterior
from bayesbridge.io import arviz_compat
from bayesbridge.model import as_tensor
from bayesbridge.model.pyro_program import isolated_pyro, state_space_program
from bayesbridge.model.state_space import as_state_space_model

__all__ = [
    "HyperConfig",
    "EnsembleLikelihood",
    "HyperPosterior",
    "infer_hyperparameters",
    "ensemble_log_likelihood",
]

HyperMethod = Literal["nuts", "svi"]
Likelihood = Literal["exact", "ensemble"]
Engine = Literal["auto", "compiled", "pyro"]
EnsembleMethod = Literal["enkf", "etkf"]
InflationPrior = Literal["halfnormal", "lognormal"]


@dataclass
class EnsembleLikelihood:
    """Settings of the ensemble (EnKF/ETKF) likelihood with common random numbers.

    Parameters
    ----------
    method : {"etkf", "enkf"}
        ETKF (deterministic square root; exact for linear-Gaussian models with ``sampling="exact"``
        and ``members > 2 latent_dim``) or stochastic EnKF with perturbed observations.
    members : int
        Ensemble size ``N`` (default 200); at least ``latent_dim + 1`` so that the forecast
        covariance has full rank.
    seed : int
        Seed of the common random numbers, the same at every evaluation (default 0).
    sampling : {"exact", "centred", "random"}
        Initial-ensemble and model-error sampling (see :class:`~bayesbridge.infer.enkf.EnKFConfig`).
    infer_inflation : bool
        Sample the multiplicative inflation ``lambda >= 1`` with its prior (default False).
    inflation_prior : {"halfnormal", "lognormal"}
        Prior of ``lambda - 1``: ``HalfNormal(inflation_scale)`` or
        ``LogNormal(log inflation_scale, 1)``.
    inflation_scale : float
        Scale of that prior (> 0, default 0.1: inflation of a few to 20 %).
    inflation : float
        Fixed inflation (>= 1) used when ``infer_inflation`` is False (default 1, none).
    scales : {"infer", "fixed"}
        ``"infer"`` (default): sample ``obs_scale`` and ``model_error_scale`` from the model's
        priors. ``"fixed"``: hold them at the model's nominal values and infer the inflation only
        (e.g. to tune the inflation of an operational filter); needs ``infer_inflation=True``.
    """

    method: EnsembleMethod = "etkf"
    members: int = 200
    seed: int = 0
    sampling: Sampling = "exact"
    infer_inflation: bool = False
    inflation_prior: InflationPrior = "halfnormal"
    inflation_scale: float = 0.1
    inflation: float = 1.0
    scales: Literal["infer", "fixed"] = "infer"

    def __post_init__(self) -> None:
        check_choice(self.scales, "ensemble.scales", ("infer", "fixed"))
        check_choice(self.method, "ensemble.method", get_args(EnsembleMethod))
        try:  # members, inflation and sampling as the engine validates them
            EnKFConfig(variant=self.method, members=self.members, inflation=self.inflation, sampling=self.sampling)
        except ParameterError as err:
            raise ParameterError(f"ensemble.{err}") from err
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ParameterError(f"ensemble.seed: expected a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.infer_inflation, bool):
            raise ParameterError(f"ensemble.infer_inflation: expected True or False, got {self.infer_inflation!r}.")
        if not (np.isfinite(self.inflation_scale) and self.inflation_scale > 0):
            raise ParameterError(
                f"ensemble.inflation_scale: expected a positive prior scale for inflation - 1, got "
                f"{self.inflation_scale!r}."
            )
        if self.scales == "fixed" and not self.infer_inflation:
            raise ParameterError(
                "ensemble.scales: 'fixed' holds the error scales at their nominal values, so with "
                "infer_inflation=False nothing is left to infer; set infer_inflation=True or scales='infer'."
            )

    def inflation_excess_prior(self) -> dist.Distribution:
        """Prior of ``lambda - 1`` (support ``(0, inf)``)."""
        scale = torch.tensor(float(self.inflation_scale), dtype=torch.float64)
        if self.inflation_prior == "halfnormal":
            return dist.HalfNormal(scale)
        return dist.LogNormal(scale.log(), torch.ones((), dtype=torch.float64))

    def describe(self) -> str:
        """One-line description (stored in the ArviZ attributes)."""
        infl = (f"inflation ~ 1 + {self.inflation_prior}({self.inflation_scale})" if self.infer_inflation
                else f"inflation {self.inflation}")
        fixed = ", scales fixed at their nominal values" if self.scales == "fixed" else ""
        return (f"ensemble ({self.method}, {self.members} members, {self.sampling} sampling, common random "
                f"numbers seed {self.seed}, {infl}{fixed})")


@dataclass
class HyperConfig:
    """Configuration of hyperparameter inference.

    Parameters
    ----------
    method : {"nuts", "svi"}
    num_samples : int
        Draws per chain (NUTS) or guide draws (SVI); default 500.
    warmup : int
        NUTS warm-up (adaptation) iterations per chain; default 300.
    chains : int
        Independent NUTS chains (>= 2 for R-hat; run one after the other); default 2.
    target_accept : float in (0, 1)
        NUTS step-size adaptation target (default 0.8).
    max_tree_depth : int
        NUTS maximum tree depth (default 6).
    svi_steps, lr, guide : int, float, {"normal", "lowrank"}
        SVI settings (see :class:`~bayesbridge.infer.variational.SVIConfig`): largest number of
        steps, learning rate and guide, the same on both likelihoods.
    elbo_particles : int
        Draws per ELBO estimate of SVI (default 1; each costs one likelihood evaluation, an
        ensemble filter run with the ensemble likelihood).
    likelihood : {"exact", "ensemble"}
        ``"exact"`` (default): Kalman marginal likelihood of an affine model (GaussianHMM).
        ``"ensemble"``: EnKF/ETKF likelihood with common random numbers (any model; optional
        inflation), configured by ``ensemble``.
    ensemble : EnsembleLikelihood or dict, optional
        Settings of the ensemble likelihood (default ``EnsembleLikelihood()``); only valid with
        ``likelihood="ensemble"``.
    engine : {"auto", "compiled", "pyro"}
        How NUTS evaluates the exact posterior and its gradient. ``"compiled"``: a
        ``potential_fn`` over the unconstrained scales
        (:class:`~bayesbridge.infer.scale_posterior.ScalePosterior`), the Kalman likelihood and
        its gradient in one compiled pass
        (:class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood`). ``"pyro"``: the Pyro
        program traced at every gradient (GaussianHMM marginalisation, autograd), the only route
        of the ensemble likelihood. ``"auto"`` (default): ``"compiled"`` for the exact
        likelihood, ``"pyro"`` for the ensemble one. Both target the same posterior.
    """

    method: HyperMethod = "nuts"
    num_samples: int = 500
    warmup: int = 300
    chains: int = 2
    target_accept: float = 0.8
    max_tree_depth: int = 6
    svi_steps: int = 1000
    elbo_particles: int = 1
    lr: float = 0.03
    guide: Literal["normal", "lowrank"] = "lowrank"
    likelihood: Likelihood = "exact"
    ensemble: EnsembleLikelihood | None = None
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        check_choice(self.method, "method", get_args(HyperMethod))
        check_choice(self.likelihood, "likelihood", get_args(Likelihood))
        check_choice(self.engine, "engine", get_args(Engine))
        if self.engine == "compiled" and self.likelihood == "ensemble":
            raise ParameterError(
                "engine: 'compiled' evaluates the exact Kalman likelihood; the ensemble likelihood runs "
                "through the Pyro program. Use engine='auto' or 'pyro' with likelihood='ensemble'."
            )
        check_choice(self.guide, "guide", ("normal", "lowrank"))
        if isinstance(self.ensemble, dict):
            valid = [f.name for f in fields(EnsembleLikelihood)]
            unknown = sorted(set(self.ensemble) - set(valid))
            if unknown:
                raise InputTypeError(
                    f"ensemble: {', '.join(unknown)} not understood; valid fields are {', '.join(valid)}."
                )
            self.ensemble = EnsembleLikelihood(**self.ensemble)
        if self.ensemble is not None and not isinstance(self.ensemble, EnsembleLikelihood):
            raise InputTypeError(
                f"ensemble: expected an EnsembleLikelihood or a dict of its fields, got {type(self.ensemble).__name__}."
            )
        if self.likelihood == "exact" and self.ensemble is not None:
            what = "an inflation prior" if self.ensemble.infer_inflation else "ensemble settings"
            raise ParameterError(
                f"ensemble: got {what} with likelihood='exact'; the exact (Kalman/GaussianHMM) likelihood "
                f"has no ensemble and no inflation. Set likelihood='ensemble' to use them, or drop ensemble."
            )
        if self.likelihood == "ensemble" and self.ensemble is None:
            self.ensemble = EnsembleLikelihood()
        for name in ("num_samples", "chains", "max_tree_depth", "svi_steps", "elbo_particles"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {value!r}.")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ParameterError(f"warmup: expected a non-negative integer, got {self.warmup!r}.")
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ParameterError(f"target_accept: expected a number in (0, 1), got {self.target_accept!r}.")


@dataclass
class HyperPosterior:
    """Posterior draws of the error scales.

    Attributes
    ----------
    method : str
    draws : dict of str to Tensor (chain, draw, ...)
        ``obs_scale`` ``(chain, draw, m)``, ``model_error_scale`` ``(chain, draw)`` (absent
        with ``EnsembleLikelihood(scales="fixed")``) and, when inferred with the ensemble
        likelihood, ``inflation`` ``(chain, draw)``.
    inference_data : ArviZ container
        ``posterior`` group (dims ``chain, draw, observable``), plus ``sample_stats`` (NUTS).
    rhat : dict of str to float
        Largest R-hat over the components of each variable (NaN for one chain).
    ess_bulk : dict of str to float
        Smallest bulk ESS over the components of each variable.
    obs_names : tuple of str
    likelihood : str
        ``"exact"`` or ``"ensemble"``.
    """

    method: str
    draws: dict[str, torch.Tensor]
    inference_data: object
    rhat: dict[str, float] = field(default_factory=dict)
    ess_bulk: dict[str, float] = field(default_factory=dict)
    obs_names: tuple[str, ...] = ()
    likelihood: str = "exact"

    def mean(self) -> dict[str, torch.Tensor]:
        """Posterior means ``obs_scale (m,)``, ``model_error_scale ()`` (and ``inflation ()``)."""
        return {k: v.mean((0, 1)) for k, v in self.draws.items()}

    def quantiles(self, q=(0.05, 0.5, 0.95)) -> dict[str, torch.Tensor]:
        """Posterior quantiles ``(len(q), ...)`` over chains and draws."""
        qs = torch.as_tensor(q, dtype=torch.float64)
        return {k: torch.quantile(v.flatten(0, 1), qs, dim=0) for k, v in self.draws.items()}

    def summary(self):
        """ArviZ summary table (mean, sd, HDI, ESS, R-hat)."""
        return arviz_compat.summary(self.inference_data)


def _check_members(config: EnsembleLikelihood, latent_dim: int) -> None:
    """The ensemble must span the latent space: ``members >= latent_dim + 1``."""
    if config.members < latent_dim + 1:
        raise ParameterError(
            f"ensemble.members: expected at least latent_dim + 1 = {latent_dim + 1} members (a "
            f"full-rank forecast covariance), got {config.members}; use more than 2 * latent_dim = "
            f"{2 * latent_dim} for second-order exact sampling."
        )


class _ScaledModel:
    """A StateSpace view of ``model`` at (possibly grad-carrying) scales ``s (m,)``, ``sigma ()``.

    ``transition_cov(t) = sigma^2 L_t L_t^T`` and ``obs_cov() = diag(s^2)`` stay in the autograd
    graph (unlike :meth:`StateSpaceModel.with_scales`, which stores floats); a time-invariant
    ``L_t`` returns the same ``Q`` object at every step, so the filter factorises it once.
    """

    def __init__(self, ssm, obs_scale: torch.Tensor, model_error_scale: torch.Tensor) -> None:
        self.ssm = ssm
        self.latent_dim, self.obs_dim = ssm.latent_dim, ssm.obs_dim
        self._R = torch.diag_embed(obs_scale**2)
        self._sigma2 = model_error_scale**2
        self._L0 = as_tensor(ssm.transition.noise_scale_tril(0), "noise_scale_tril")
        self._Q0 = self._sigma2 * (self._L0 @ self._L0.mT)

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ssm.initial()

    def transition_mean(self, z: torch.Tensor, step: int) -> torch.Tensor:
        return self.ssm.transition_mean(z, step)

    def transition_cov(self, step: int) -> torch.Tensor:
        Lt = as_tensor(self.ssm.transition.noise_scale_tril(step), "noise_scale_tril")
        if Lt is self._L0 or torch.equal(Lt, self._L0):
            return self._Q0
        return self._sigma2 * (Lt @ Lt.mT)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        return self.ssm.observe(z)

    def obs_cov(self) -> torch.Tensor:
        return self._R


def ensemble_log_likelihood(
    model, observations, obs_scale, model_error_scale, inflation=1.0, config: EnsembleLikelihood | None = None
) -> torch.Tensor:
    """Ensemble (EnKF/ETKF) log-likelihood with common random numbers, differentiable.

    .. math::
        \\log \\hat p_N(y_{1:T}) = \\sum_t \\log N\\big(y_t;\\, \\overline{h(z^f_t)},\\;
        \\lambda^2 Y_t^T Y_t / (N-1) + \\mathrm{diag}(s^2)\\big)

    (missing components dropped), evaluated by :func:`bayesbridge.infer.enkf.run` with a noise
    source re-seeded with ``config.seed`` at every call: the same scales give the same value
    bit for bit, and the value is a smooth function of ``obs_scale``, ``model_error_scale`` and
    ``inflation``, whose gradient autograd returns (Stroud & Bengtsson 2007; Katzfuss, Stroud &
    Wikle 2020).

    Parameters
    ----------
    model : StateSpaceModel or StateSpace
        Converted with :func:`~bayesbridge.model.state_space.as_state_space_model`; may be nonlinear.
    observations : Tensor (*batch, T, m)
        Validated observations (float64, NaN = missing); the runs share the scales.
    obs_scale : Tensor (m,)
        Observation-error scales ``s``.
    model_error_scale : Tensor ()
        Model-error scale ``sigma`` (``Q_t = sigma^2 L_t L_t^T``).
    inflation : float or Tensor ()
        Multiplicative inflation ``lambda >= 1`` of the forecast anomalies.
    config : EnsembleLikelihood, optional
        Method, members, seed and sampling (default ``EnsembleLikelihood()``).

    Returns
    -------
    Tensor (*batch,)
        ``log p_N(y | s, sigma, lambda)`` per run, carrying gradients w.r.t. tensor inputs.
    """
    config = EnsembleLikelihood() if config is None else config
    ssm = as_state_space_model(model)
    _check_members(config, ssm.latent_dim)
    s = as_tensor(obs_scale, "obs_scale") if not torch.is_tensor(obs_scale) else obs_scale
    sigma = as_tensor(model_error_scale, "model_error_scale") if not torch.is_tensor(model_error_scale) else (
        model_error_scale
    )
    scaled = _ScaledModel(ssm, s.reshape(ssm.obs_dim), sigma.reshape(()))
    enkf_config = EnKFConfig(  # a 0-dim tensor inflation keeps its graph through the anomaly scaling
        variant=config.method, members=config.members, sampling=config.sampling, inflation=inflation,
        store_ensemble=False, check_divergence=False,
    )
    generator = torch.Generator().manual_seed(config.seed)  # re-seeded: common random numbers
    return enkf_run(scaled, observations, enkf_config, generator).log_evidence


def _ensemble_program(ssm, ens: EnsembleLikelihood):
    """Pyro program: scale (and inflation) priors plus the ensemble log-likelihood as a factor."""

    def program(y):
        if ens.scales == "infer":
            s = pyro.sample("obs_scale", ssm.obs_scale_prior)
            sigma = pyro.sample("model_error_scale", ssm.model_error_prior)
        else:
            s, sigma = ssm.obs_scale, torch.tensor(ssm.model_error_scale, dtype=torch.float64)
        inflation = ens.inflation
        if ens.infer_inflation:
            inflation = 1.0 + pyro.sample("inflation_excess", ens.inflation_excess_prior())
        try:
            loglik = ensemble_log_likelihood(ssm, y, s, sigma, inflation, ens).sum()
        except torch.linalg.LinAlgError:  # a degenerate innovation covariance: zero likelihood
            loglik = torch.tensor(-math.inf, dtype=torch.float64)
        pyro.factor("ensemble_log_likelihood", loglik)

    return program


def _ensemble_svi_draws(ssm, y: torch.Tensor, config: HyperConfig, generator: torch.Generator) -> dict:
    """SVI on the global sites of the ensemble likelihood, with the guide, optimiser and gradient of
    the exact route (:func:`~bayesbridge.infer.variational_fit.fit_gaussian_guide`).

    Sites: ``obs_scale (m,)`` and ``model_error_scale`` (``ensemble.scales="infer"``),
    ``inflation_excess`` (``ensemble.infer_inflation``), each through
    ``biject_to(prior.support)`` from one unconstrained vector, started at the nominal scales
    and the median of the inflation prior. Returns draws ``(1, num_samples, ...)`` sampled from
    the guide alone (no further likelihood evaluations).
    """
    from torch.distributions import biject_to

    from bayesbridge.infer.variational_fit import fit_gaussian_guide

    ens = config.ensemble
    sites = []  # (name, prior, size, nominal)
    if ens.scales == "infer":
        sites += [("obs_scale", ssm.obs_scale_prior, ssm.obs_dim, ssm.obs_scale.detach().cpu()),
                  ("model_error_scale", ssm.model_error_prior, 1, torch.tensor(ssm.model_error_scale, dtype=torch.float64))]
    if ens.infer_inflation:
        prior = ens.inflation_excess_prior()
        sites.append(("inflation_excess", prior, 1, prior.icdf(torch.tensor(0.5, dtype=torch.float64))))
    transforms = [biject_to(prior.support) for _, prior, _, _ in sites]
    loc = torch.cat([t.inv(nom).reshape(size) for t, (_, _, size, nom) in zip(transforms, sites, strict=True)])

    def values(u: torch.Tensor) -> tuple[dict, torch.Tensor]:
        out, log_prior, start = {}, torch.zeros(u.shape[:-1], dtype=torch.float64), 0
        for t, (name, prior, size, _) in zip(transforms, sites, strict=True):
            v = u[..., start:start + size] if size > 1 else u[..., start]
            x = t(v)
            log_prior = log_prior + prior.log_prob(x) + t.log_abs_det_jacobian(v, x)
            out[name] = x
            start += size
        return out, log_prior

    def log_joint(u: torch.Tensor) -> torch.Tensor:
        x, log_prior = values(u)
        s = x.get("obs_scale", ssm.obs_scale)
        sigma = x.get("model_error_scale", torch.tensor(ssm.model_error_scale, dtype=torch.float64))
        inflation = 1.0 + x["inflation_excess"] if "inflation_excess" in x else ens.inflation
        try:
            loglik = ensemble_log_likelihood(ssm, y, s, sigma, inflation, ens).sum()
        except torch.linalg.LinAlgError:  # a degenerate innovation covariance: zero likelihood
            loglik = torch.tensor(-math.inf, dtype=torch.float64)
        return loglik + log_prior

    q, _ = fit_gaussian_guide(log_joint, loc, generator, guide=config.guide, particles=config.elbo_particles,
                              lr=config.lr, max_steps=config.svi_steps)
    with torch.no_grad():
        draws, _ = values(q.rsample(config.num_samples, generator))
    return {k: v.detach().to(torch.float64).unsqueeze(0) for k, v in draws.items()}


def _nuts_chains(program, y: torch.Tensor, config: HyperConfig, generator: torch.Generator, posterior=None):
    """NUTS chains on the Pyro ``program`` or, given a :class:`ScalePosterior`, on its potential.

    Returns draws ``(chain, draw, ...)`` of every site (constrained) and ``{"diverging": (chain, draw)}``.
    """
    from pyro.infer import MCMC, NUTS

    samples, stats = [], []
    for _ in range(config.chains):
        init = None
        if posterior is not None:  # dispersed start with a finite potential, as Pyro's init_to_uniform
            for _ in range(100):
                init = posterior.initial_params(generator)
                if bool(torch.isfinite(posterior.potential(init))):
                    break
        with isolated_pyro(generator):  # one seed per chain, drawn from the generator
            if posterior is None:
                kernel = NUTS(program, target_accept_prob=config.target_accept, max_tree_depth=config.max_tree_depth)
            else:
                kernel = NUTS(potential_fn=posterior.potential, target_accept_prob=config.target_accept,
                              max_tree_depth=config.max_tree_depth)
            mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.warmup, disable_progbar=True,
                        initial_params=init)
            mcmc.run(y) if posterior is None else mcmc.run()
            chain = {k: v.detach().to(torch.float64) for k, v in mcmc.get_samples().items()}
            samples.append(chain if posterior is None else posterior.constrain(chain))
            diverging = np.zeros(config.num_samples, dtype=bool)
            diverging[list(mcmc.diagnostics().get("divergences", {}).get("chain 0", []))] = True
            stats.append(diverging)
    draws = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return draws, {"diverging": np.stack(stats)}


def infer_hyperparameters(
    model, observations, config: HyperConfig | None = None, *, seed: int | torch.Generator = 0, **options
) -> HyperPosterior:
    """Posterior of the observation-error and model-error scales (and inflation) given ``observations``.

    Parameters
    ----------
    model : StateSpaceModel or LinearGaussianModel
        Its priors are used (a LinearGaussianModel gets the default priors of
        :class:`~bayesbridge.model.StateSpaceModel` centred on ``sqrt(diag R)`` and 1). The exact
        likelihood needs an affine model; the ensemble likelihood takes any model.
    observations : array (T, m) or (*batch, T, m)
        NaN = missing; runs in the batch share the scales.
    config : HyperConfig, optional
        Or give its fields as keyword ``options`` (e.g. ``likelihood="ensemble",
        ensemble=EnsembleLikelihood(infer_inflation=True)``).
    seed : int or torch.Generator
        Seeds NUTS/SVI (the ensemble's common random numbers use ``config.ensemble.seed``).

    Returns
    -------
    HyperPosterior
        Draws of ``obs_scale``, ``model_error_scale`` and, if inferred, ``inflation``, with
        R-hat and bulk ESS.
    """
    from bayesbridge.infer import prepare_observations
    from bayesbridge.infer.variational import SVIConfig, fit_svi

    if config is None:
        config = HyperConfig(**options)
    elif options:
        raise InputTypeError("options: give either config or keyword options, not both.")
    ssm = as_state_space_model(model)
    y = prepare_observations(ssm, observations)
    exact = config.likelihood == "exact"
    if exact and ssm.affine_structure(int(y.shape[-2])) is None:
        raise ParameterError(
            "model: the exact likelihood marginalises the latent chain exactly and needs an affine "
            "model; for a nonlinear model use likelihood='ensemble' (EnKF/ETKF likelihood), or "
            "assimilate(..., method='svi'), whose structured guide also returns the scales' posterior."
        )
    if not exact:
        _check_members(config.ensemble, ssm.latent_dim)
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))

    def exact_program(obs):
        return state_space_program(ssm, obs)

    program = exact_program if exact else _ensemble_program(ssm, config.ensemble)
    sample_stats = None
    if config.method == "nuts":
        posterior = ScalePosterior(ssm, y) if exact and config.engine != "pyro" else None
        draws, sample_stats = _nuts_chains(program, y, config, generator, posterior)
    elif exact:
        svi_cfg = SVIConfig(steps=config.svi_steps, lr=config.lr, guide=config.guide, members=config.num_samples,
                            elbo_particles=config.elbo_particles)
        fit = fit_svi(ssm, y, svi_cfg, generator)
        draws = {k: fit.draws[k].unsqueeze(0) for k in ("obs_scale", "model_error_scale")}
    else:
        draws = _ensemble_svi_draws(ssm, y, config, generator)
    if "obs_scale" in draws:
        draws["obs_scale"] = draws["obs_scale"].reshape(*draws["obs_scale"].shape[:2], ssm.obs_dim)
        draws["model_error_scale"] = draws["model_error_scale"].reshape(draws["model_error_scale"].shape[:2])
    if "inflation_excess" in draws:
        excess = draws.pop("inflation_excess")
        draws["inflation"] = 1.0 + excess.reshape(excess.shape[:2])
    idata = arviz_compat.from_dict(
        posterior={k: v.numpy() for k, v in draws.items()},
        sample_stats=sample_stats,
        coords={"observable": list(ssm.obs_names)},
        dims={"obs_scale": ["observable"]},
        attrs={"inference_method": config.method,
               "likelihood": "exact (GaussianHMM)" if exact else config.ensemble.describe()},
    )
    n_chains = next(iter(draws.values())).shape[0]
    rhat, ess = {}, {}
    for name in draws:
        ess[name] = float(np.min(arviz_compat.ess(idata, var_names=[name])[name].values))
        rhat[name] = float(np.max(arviz_compat.rhat(idata, var_names=[name])[name].values)) if n_chains > 1 else float("nan")
    return HyperPosterior(config.method, draws, idata, rhat, ess, tuple(ssm.obs_names), config.likelihood)
