"""Posterior of the error scales (observation-error scales, model-error scale) by NUTS or SVI.

The target is the exact marginal posterior of the global scales of an affine state-space model,

.. math:: p(s, \\sigma | y) \\propto p(s)\\, p(\\sigma)\\, p(y_{1:T} | s, \\sigma),

where the latent chain is integrated out exactly (:class:`pyro.distributions.GaussianHMM`, the
Kalman marginal likelihood) by :func:`bayesbridge.model_pyro.state_space_program`. ``"nuts"``
samples it with the No-U-Turn sampler (Hoffman & Gelman 2014) in several independent chains
from dispersed starting points, so convergence is checked with the rank-normalised split R-hat
and bulk ESS (Vehtari et al. 2021); ``"svi"`` fits a variational approximation
(:mod:`bayesbridge.infer.variational`) and returns its draws as one chain (R-hat is undefined
for one chain and reported as NaN).

Observation-error scales include representation error; multiple independent runs
(``observations`` with leading batch dims) share the scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.diagnostics import arviz_compat
from bayesbridge.errors import InputTypeError, ParameterError
from bayesbridge.model_pyro import as_state_space_model, isolated_pyro, state_space_program

__all__ = ["HyperConfig", "HyperPosterior", "infer_hyperparameters"]

HyperMethod = Literal["nuts", "svi"]


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
        SVI settings (see :class:`~bayesbridge.infer.variational.SVIConfig`).
    """

    method: HyperMethod = "nuts"
    num_samples: int = 500
    warmup: int = 300
    chains: int = 2
    target_accept: float = 0.8
    max_tree_depth: int = 6
    svi_steps: int = 1000
    lr: float = 0.03
    guide: Literal["normal", "lowrank"] = "lowrank"

    def __post_init__(self) -> None:
        if self.method not in get_args(HyperMethod):
            raise ParameterError(f"method: expected one of 'nuts', 'svi', got {self.method!r}.")
        for name in ("num_samples", "chains", "max_tree_depth", "svi_steps"):
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
        ``obs_scale`` ``(chain, draw, m)`` and ``model_error_scale`` ``(chain, draw)``.
    inference_data : ArviZ container
        ``posterior`` group (dims ``chain, draw, observable``), plus ``sample_stats`` (NUTS).
    rhat : dict of str to float
        Largest R-hat over the components of each variable (NaN for one chain).
    ess_bulk : dict of str to float
        Smallest bulk ESS over the components of each variable.
    obs_names : tuple of str
    """

    method: str
    draws: dict[str, torch.Tensor]
    inference_data: object
    rhat: dict[str, float] = field(default_factory=dict)
    ess_bulk: dict[str, float] = field(default_factory=dict)
    obs_names: tuple[str, ...] = ()

    def mean(self) -> dict[str, torch.Tensor]:
        """Posterior means ``obs_scale (m,)``, ``model_error_scale ()``."""
        return {k: v.mean((0, 1)) for k, v in self.draws.items()}

    def quantiles(self, q=(0.05, 0.5, 0.95)) -> dict[str, torch.Tensor]:
        """Posterior quantiles ``(len(q), ...)`` over chains and draws."""
        qs = torch.as_tensor(q, dtype=torch.float64)
        return {k: torch.quantile(v.flatten(0, 1), qs, dim=0) for k, v in self.draws.items()}

    def summary(self):
        """ArviZ summary table (mean, sd, HDI, ESS, R-hat)."""
        return arviz_compat.summary(self.inference_data)


def _nuts_chains(program, y: torch.Tensor, config: HyperConfig, generator: torch.Generator):
    from pyro.infer import MCMC, NUTS

    samples, stats = [], []
    for _ in range(config.chains):
        with isolated_pyro(generator):  # one seed per chain, drawn from the generator
            kernel = NUTS(program, target_accept_prob=config.target_accept, max_tree_depth=config.max_tree_depth)
            mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.warmup, disable_progbar=True)
            mcmc.run(y)
            samples.append({k: v.detach().to(torch.float64) for k, v in mcmc.get_samples().items()})
            diverging = np.zeros(config.num_samples, dtype=bool)
            diverging[list(mcmc.diagnostics().get("divergences", {}).get("chain 0", []))] = True
            stats.append(diverging)
    draws = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return draws, {"diverging": np.stack(stats)}


def infer_hyperparameters(
    model, observations, config: HyperConfig | None = None, *, seed: int | torch.Generator = 0, **options
) -> HyperPosterior:
    """Posterior of the observation-error and model-error scales given ``observations``.

    Parameters
    ----------
    model : StateSpaceModel or LinearGaussianModel
        An affine model (its priors are used; a LinearGaussianModel gets the default priors of
        :class:`~bayesbridge.model.StateSpaceModel` centred on ``sqrt(diag R)`` and 1).
    observations : array (T, m) or (*batch, T, m)
        NaN = missing; runs in the batch share the scales.
    config : HyperConfig, optional
        Or give its fields as keyword ``options``.
    seed : int or torch.Generator

    Returns
    -------
    HyperPosterior
    """
    from bayesbridge.infer import prepare_observations
    from bayesbridge.infer.variational import SVIConfig, fit_svi

    if config is None:
        config = HyperConfig(**options)
    elif options:
        raise InputTypeError("options: give either config or keyword options, not both.")
    ssm = as_state_space_model(model)
    y = prepare_observations(ssm, observations)
    if ssm.affine_structure(int(y.shape[-2])) is None:
        raise ParameterError(
            "model: hyperparameter inference marginalises the latent chain exactly and needs an affine "
            "model; for a nonlinear model use assimilate(..., method='svi'), whose structured guide "
            "also returns the scales' posterior in result.hyperparameters."
        )
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))

    def program(obs):
        return state_space_program(ssm, obs)

    sample_stats = None
    if config.method == "nuts":
        draws, sample_stats = _nuts_chains(program, y, config, generator)
    else:
        svi_cfg = SVIConfig(steps=config.svi_steps, lr=config.lr, guide=config.guide, members=config.num_samples)
        fit = fit_svi(ssm, y, svi_cfg, generator)
        draws = {k: fit.draws[k].unsqueeze(0) for k in ("obs_scale", "model_error_scale")}
    draws["obs_scale"] = draws["obs_scale"].reshape(*draws["obs_scale"].shape[:2], ssm.obs_dim)
    draws["model_error_scale"] = draws["model_error_scale"].reshape(draws["model_error_scale"].shape[:2])
    idata = arviz_compat.from_dict(
        posterior={k: v.numpy() for k, v in draws.items()},
        sample_stats=sample_stats,
        coords={"observable": list(ssm.obs_names)},
        dims={"obs_scale": ["observable"]},
        attrs={"inference_method": config.method, "likelihood": "exact (GaussianHMM)"},
    )
    n_chains = next(iter(draws.values())).shape[0]
    rhat, ess = {}, {}
    for name in draws:
        ess[name] = float(np.min(arviz_compat.ess(idata, var_names=[name])[name].values))
        rhat[name] = float(np.max(arviz_compat.rhat(idata, var_names=[name])[name].values)) if n_chains > 1 else float("nan")
    return HyperPosterior(config.method, draws, idata, rhat, ess, tuple(ssm.obs_names))
