"""Bayesian calibration of the idealized ENSO model with an emulated synthetic likelihood.

Observed summary statistics ``s_obs`` (variance, skewness, kurtosis and seasonal std of Nino 3
and Nino 4, their correlation, event rates; std and skewness of h_W when given;
:mod:`~bayesbridge.idealized.statistics`) are modelled with a Gaussian synthetic likelihood
(Wood 2010; Price et al. 2018; :mod:`~bayesbridge.idealized.likelihood`)

.. math::

    s_{obs} \\mid \\theta \\sim \\mathcal N\\big(\\mu(\\theta),\\; (1 + 1/R) D(\\theta) C D(\\theta) + E\\big),

where ``mu`` and the standard deviations ``D = diag(d(theta))`` of the statistics of one record
of the observed length are estimated by simulation: at ``design_points`` parameter values (a
Latin hypercube design over the prior box) ``replicates`` records are simulated with common
random numbers (the same seed at every design point, so the estimates are smooth in theta),
``mu`` and ``log d`` are fitted by quadratic regression in theta (the emulator), ``C`` is the
pooled correlation of the replicate residuals, ``E`` the emulator's lack-of-fit variance and
``1/R`` (R = replicates) accounts for the Monte Carlo error of the estimated mean. Scale
statistics (variances, stds) and the kurtosis enter on a log scale, the correlation as
atanh (Fisher z) and event rates as square roots (variance-stabilising for counts), so that the
Gaussian approximation holds better. The Pyro model puts uniform priors on
the calibrated parameters (:func:`pyro_model`, usable with any Pyro sampler); :func:`calibrate`
samples the same density with a gradient-free adaptive Metropolis scheme in logit coordinates
(several chains; R-hat and ESS from ArviZ), which is orders of magnitude faster than NUTS for
this 4-dimensional target. Posterior-predictive statistics come from fresh simulations at
posterior draws.

This module holds the settings (:class:`CalibrationConfig`, :data:`DEFAULT_PRIORS`), the result
(:class:`CalibrationResult`) and the entry point :func:`calibrate`; it re-exports the
statistics and likelihood names of its ``__all__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import InputTypeError, InputValueError, ParameterError
from bayesbridge.idealized.likelihood import (
    Emulator,
    adaptive_metropolis,
    fit_emulator,
    n_features,
    pyro_model,
)
from bayesbridge.idealized.params import ENSOParameters
from bayesbridge.idealized.statistics import (
    ObservedRecord,
    calibration_statistics,
    simulate_statistics,
    statistics_from_arrays,
    to_model_scale,
)
from bayesbridge.io import arviz_compat

__all__ = [
    "CalibratedParameter",
    "CalibrationConfig",
    "CalibrationResult",
    "DEFAULT_PRIORS",
    "calibration_statistics",
    "statistics_from_arrays",
    "pyro_model",
    "Emulator",
    "ObservedRecord",
    "calibrate",
]

CalibratedParameter = Literal["f", "wind_amp", "noise_scale", "m", "beta_e_coef", "d_tau"]

DEFAULT_PRIORS: dict[str, tuple[float, float]] = {
    "f": (0.5, 0.8),
    "wind_amp": (0.6, 1.2),
    "noise_scale": (0.5, 1.5),
    "m": (1.5, 2.5),
    "beta_e_coef": (0.1, 0.2),
    "d_tau": (1.5, 3.0),
}
"""Uniform prior bounds (inside which the model is stable and ENSO-like)."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`calibrate`.

    Attributes
    ----------
    parameters : tuple of str
        Calibrated fields of :class:`ENSOParameters` (from :data:`CalibratedParameter`).
    priors : dict
        ``name -> (low, high)`` uniform bounds (defaults: :data:`DEFAULT_PRIORS`).
    design_points, replicates : int
        Emulator design size (>= number of quadratic features) and records simulated per point.
    burn_in_years : int
        Spin-up per record.
    num_warmup, num_samples, num_chains : int
        Adaptive-Metropolis settings per chain (warmup adapts the proposal and is discarded).
    posterior_predictive_draws : int
        Posterior draws at which records are simulated for posterior-predictive statistics.
    seed : int
        Master seed (design, simulations, Metropolis sampler).
    """

    parameters: tuple[str, ...] = ("f", "wind_amp", "noise_scale", "m")
    priors: dict[str, tuple[float, float]] = field(default_factory=dict)
    design_points: int = 40
    replicates: int = 64
    burn_in_years: int = 10
    num_warmup: int = 2000
    num_samples: int = 2000
    num_chains: int = 4
    posterior_predictive_draws: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        valid = get_args(CalibratedParameter)
        bad = [p for p in self.parameters if p not in valid]
        if bad or not self.parameters or len(set(self.parameters)) != len(self.parameters):
            raise ParameterError(
                f"parameters: expected distinct names from {list(valid)}, received {list(self.parameters)}."
            )
        priors = {p: DEFAULT_PRIORS[p] for p in self.parameters}
        for name, bounds in dict(self.priors).items():
            if name not in self.parameters:
                raise ParameterError(f"priors: {name!r} is not calibrated; calibrated: {list(self.parameters)}.")
            lo, hi = (float(b) for b in bounds)
            if not lo < hi:
                raise ParameterError(f"priors[{name!r}]: expected low < high, received {bounds}.")
            priors[name] = (lo, hi)
        for name, (lo, hi) in priors.items():
            try:
                ENSOParameters(**{name: lo})
                ENSOParameters(**{name: hi})
            except ParameterError as err:
                raise ParameterError(f"priors[{name!r}]: bounds {(lo, hi)} leave the valid range: {err}") from err
        object.__setattr__(self, "priors", priors)
        n_feat = n_features(len(self.parameters))
        for name, minimum in (("design_points", n_feat + 2), ("replicates", 8), ("num_samples", 10),
                              ("num_chains", 1), ("posterior_predictive_draws", 1), ("burn_in_years", 0),
                              ("num_warmup", 100)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ParameterError(f"{name}: expected an integer >= {minimum}, received {value!r}.")


@dataclass
class CalibrationResult:
    """Output of :func:`calibrate`.

    Attributes
    ----------
    idata : arviz.InferenceData (ArviZ 0.x) or DataTree (1.x)
        ``posterior`` (chain, draw) of the parameters, ``posterior_predictive`` statistics
        (chain = 1, draw, statistic), ``observed_data`` statistics.
    posterior : pandas.DataFrame
        Draws (rows) x parameters, chains stacked.
    summary : pandas.DataFrame
        ArviZ summary (mean, sd, HDI, ess_bulk, ess_tail, r_hat).
    predictive : pandas.DataFrame
        Per statistic: ``observed``, ``pp_mean``, ``pp_q05``, ``pp_q95``.
    emulator : Emulator
    config : CalibrationConfig
    """

    idata: object
    posterior: pd.DataFrame
    summary: pd.DataFrame
    predictive: pd.DataFrame
    emulator: Emulator
    config: CalibrationConfig

    @property
    def statistic_names(self) -> list[str]:
        """Names of the calibration statistics, in the order of ``predictive``."""
        return list(self.predictive.index)

    def interval(self, level: float = 0.9) -> pd.DataFrame:
        """Equal-tailed posterior interval per parameter (columns ``low``, ``high``).

        Parameters
        ----------
        level : float
            Posterior probability inside the interval, in (0, 1); the bounds are the
            ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the pooled draws.

        Returns
        -------
        pandas.DataFrame
            Indexed by parameter.
        """
        if not 0.0 < level < 1.0:
            raise InputValueError(f"level: expected a value in (0, 1), received {level!r}.")
        a = (1.0 - level) / 2.0
        return pd.DataFrame({"low": self.posterior.quantile(a), "high": self.posterior.quantile(1.0 - a)})


def _provenance(config: CalibrationConfig, obs: ObservedRecord) -> dict[str, object]:
    """Attributes that say how a calibration was made (stored with the bundled posterior)."""
    from bayesbridge import __version__

    return {
        "method": "adaptive Metropolis on an emulated Gaussian synthetic likelihood",
        "record_years": obs.years,
        "calibrated_parameters": ",".join(config.parameters),
        "prior_box": "; ".join(f"{n} {lo:g}..{hi:g}" for n, (lo, hi) in config.priors.items()),
        "design_points": config.design_points,
        "replicates": config.replicates,
        "num_chains": config.num_chains,
        "num_warmup": config.num_warmup,
        "num_samples": config.num_samples,
        "seed": config.seed,
        "bayesbridge_version": __version__,
    }


def calibrate(
    observations: xr.Dataset | ObservedRecord,
    config: CalibrationConfig | None = None,
    progress: bool = False,
) -> CalibrationResult:
    """Calibrate :class:`MultiscaleENSO` parameters against observed ENSO statistics.

    Parameters
    ----------
    observations : xarray.Dataset or ObservedRecord
        Indices with ``nino3``, ``nino4`` (and optionally ``h_w``), e.g.
        :func:`bayesbridge.datasets.observed_indices` (statistics of 1950-2019 and of GODAS
        h_W 1980-2019), or precomputed statistics.
    config : CalibrationConfig, optional
    progress : bool
        Show progress bars (design simulations, sampling).

    Returns
    -------
    CalibrationResult
    """
    config = config or CalibrationConfig()
    if not isinstance(config, CalibrationConfig):
        raise InputTypeError(f"config: expected CalibrationConfig, received {type(config).__name__}.")
    obs = observations if isinstance(observations, ObservedRecord) else calibration_statistics(observations)
    names = list(obs.statistics.index)
    s_obs = to_model_scale(obs.statistics.to_numpy()[None], names)[0]
    emu = fit_emulator(obs, config.parameters, config.priors, design_points=config.design_points,
                       replicates=config.replicates, burn_in_years=config.burn_in_years,
                       seed=config.seed, progress=progress)
    draws, accept = adaptive_metropolis(emu, s_obs, num_warmup=config.num_warmup,
                                        num_samples=config.num_samples, num_chains=config.num_chains,
                                        seed=config.seed, progress=progress)  # (chain, draw, param)
    posterior = pd.DataFrame(draws.reshape(-1, draws.shape[-1]), columns=list(config.parameters))
    # posterior predictive: fresh simulations (new seed) at a thinned set of posterior draws
    rng = np.random.default_rng(config.seed + 7)
    pick = rng.choice(len(posterior), size=min(config.posterior_predictive_draws, len(posterior)), replace=False)
    pp = []
    for k, idx in enumerate(pick):
        params = ENSOParameters().replace(**posterior.iloc[idx].to_dict())
        pp.append(simulate_statistics(params, 1, obs.years, obs.hw_years, config.seed + 10_000 + k, config.burn_in_years)[0])
    pp = np.array(pp)
    predictive = pd.DataFrame(
        {"observed": obs.statistics.to_numpy(), "pp_mean": pp.mean(0),
         "pp_q05": np.quantile(pp, 0.05, axis=0), "pp_q95": np.quantile(pp, 0.95, axis=0)},
        index=pd.Index(names, name="statistic"),
    )  # fmt: skip
    idata = arviz_compat.from_dict(
        posterior={n: draws[..., i] for i, n in enumerate(config.parameters)},
        posterior_predictive={"statistics": pp[None]},
        observed_data={"statistics": obs.statistics.to_numpy()},
        sample_stats={"acceptance_rate": np.repeat(accept[:, None], draws.shape[1], axis=1)},
        coords={"statistic": np.array(names)},
        dims={"statistics": ["statistic"]},
        attrs=_provenance(config, obs),
    )
    summary = arviz_compat.summary(idata, var_names=list(config.parameters))
    return CalibrationResult(idata, posterior, summary, predictive, emu, config)
