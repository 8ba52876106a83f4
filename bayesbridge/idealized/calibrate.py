"""Bayesian calibration of the idealized ENSO model with an emulated synthetic likelihood.

Observed summary statistics ``s_obs`` (variance, skewness, kurtosis and seasonal std of Nino 3
and Nino 4, their correlation, event rates; std and skewness of h_W when given) are modelled
with a Gaussian synthetic likelihood (Wood 2010; Price et al. 2018)

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import qmc

from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ParameterError,
    VariableNotFoundError,
)
from bayesbridge.idealized.model import MultiscaleENSO
from bayesbridge.idealized.params import ENSOParameters
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

_SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
_LOG_STATS = ("var", "std_")


def _names(with_hw: bool) -> list[str]:
    names = []
    for v in ("nino3", "nino4"):
        names += [f"{v}_var", f"{v}_skew", f"{v}_kurt"]
    names.append("corr_nino3_nino4")
    for v in ("nino3", "nino4"):
        names += [f"{v}_std_{s}" for s in _SEASONS]
    names += ["ep_per_70yr", "cp_per_70yr", "la_nina_per_70yr", "extreme_ep_per_70yr"]
    if with_hw:
        names += ["h_w_std", "h_w_skew"]
    return names


def _is_log(name: str) -> bool:
    """Scale statistics and the (positive, right-skewed) kurtosis enter on a log scale."""
    return name.endswith("_var") or "_std" in name or name.endswith("_kurt")


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variance, skewness, Pearson kurtosis along the last axis (ddof = 0)."""
    d = x - x.mean(axis=-1, keepdims=True)
    m2 = (d**2).mean(axis=-1)
    return m2, (d**3).mean(axis=-1) / m2**1.5, (d**4).mean(axis=-1) / m2**2


def statistics_from_arrays(
    nino3: np.ndarray, nino4: np.ndarray, h_w: np.ndarray | None = None, first_month: int = 1
) -> np.ndarray:
    """Calibration statistics of records that start in January, vectorised over records.

    Parameters
    ----------
    nino3, nino4 : ndarray, shape ``(record, month)``
        Monthly anomalies (degC), whole years, no missing values, starting in January.
    h_w : ndarray, shape ``(record, month_hw)``, optional
        Thermocline anomalies (m) of each record (may be shorter).
    first_month : int
        Calendar month of the first value; only 1 (January) is supported.

    Returns
    -------
    ndarray, shape ``(record, n_stat)``
        In the order of :attr:`CalibrationResult.statistic_names`; event rates use the design
        rules of :func:`bayesbridge.diagnostics.enso.classify_events` (complete DJF windows).
    """
    if first_month != 1:
        raise InputValueError("first_month: records must start in January.")
    n3 = np.atleast_2d(np.asarray(nino3, dtype=float))
    n4 = np.atleast_2d(np.asarray(nino4, dtype=float))
    n_rec, n_mon = n3.shape
    if n_mon % 12 or n_mon < 24:
        raise InputValueError(f"nino3: expected whole years (>= 2) of months, received {n_mon} months.")
    out = []
    for x in (n3, n4):
        v, s, k = _moments(x)
        out += [v, s, k]
    a = n3 - n3.mean(-1, keepdims=True)
    b = n4 - n4.mean(-1, keepdims=True)
    out.append((a * b).mean(-1) / np.sqrt((a * a).mean(-1) * (b * b).mean(-1)))
    months = np.arange(n_mon) % 12 + 1
    for x in (n3, n4):
        for season in _SEASONS.values():
            out.append(x[:, np.isin(months, season)].std(axis=-1, ddof=1))
    y3 = n3.reshape(n_rec, -1, 12)
    y4 = n4.reshape(n_rec, -1, 12)
    e = (y3[:, :-1, 11] + y3[:, 1:, 0] + y3[:, 1:, 1]) / 3.0
    c = (y4[:, :-1, 11] + y4[:, 1:, 0] + y4[:, 1:, 1]) / 3.0
    mx = np.maximum(y3[:, :-1, 3:].max(-1), y3[:, 1:, :3].max(-1))
    extreme = mx > 2.5
    ep = ~extreme & (e > c) & (e > 0.5)
    cp = ~extreme & ~ep & (c > e) & (c > 0.5)
    ln = ~extreme & ~ep & ~cp & ((c < -0.5) | (e < -0.5))
    per = 70.0 / e.shape[1]
    out += [ep.sum(-1) * per, cp.sum(-1) * per, ln.sum(-1) * per, extreme.sum(-1) * per]
    if h_w is not None:
        h = np.atleast_2d(np.asarray(h_w, dtype=float))
        v, s, _ = _moments(h)
        out += [np.sqrt(v), s]
    return np.stack(out, axis=-1)


def _to_model_scale(stats: np.ndarray, names: list[str]) -> np.ndarray:
    """Normalising transforms: log (scales, kurtosis), atanh (correlation), sqrt (event rates)."""
    out = np.array(stats, dtype=float, copy=True)
    for j, n in enumerate(names):
        if _is_log(n):
            out[..., j] = np.log(out[..., j])
        elif n.startswith("corr"):
            out[..., j] = np.arctanh(np.clip(out[..., j], -0.999, 0.999))
        elif n.endswith("_per_70yr"):
            out[..., j] = np.sqrt(out[..., j])
    return out


@dataclass(frozen=True)
class ObservedRecord:
    """Observed statistics and the record lengths they come from.

    Attributes
    ----------
    statistics : pandas.Series
        Observed statistics indexed by name (see :func:`statistics_from_arrays`), natural scale.
    years : int
        Length of the Nino 3/Nino 4 record in years; simulated records have the same length.
    hw_years : int or None
        Length of the ``h_w`` record in years (``None`` when no ``h_w`` statistic is used).
    """

    statistics: pd.Series
    years: int
    hw_years: int | None


def calibration_statistics(
    ds: xr.Dataset, start: str = "1950-01", end: str = "2019-12", hw_start: str = "1980-01"
) -> ObservedRecord:
    """Observed calibration statistics from a Dataset with ``nino3``, ``nino4`` (and ``h_w``).

    Anomalies are re-centred on the monthly climatology of ``start..end`` (whole years starting
    in January); ``h_w`` (optional) is used from ``hw_start`` to ``end``.

    Parameters
    ----------
    ds : xarray.Dataset
        Monthly indices on ``time``: ``nino3``, ``nino4`` (degC) and optionally ``h_w`` (m),
        e.g. :func:`bayesbridge.datasets.observed_indices`.
    start, end : str
        Calibration period (``"YYYY-MM"``), whole years starting in January.
    hw_start : str
        First month of ``h_w``; its finite values up to ``end`` are used (whole years, at least
        two, else ``h_w`` is left out).

    Returns
    -------
    ObservedRecord
        The statistics and the record lengths.

    Raises
    ------
    VariableNotFoundError
        ``nino3`` or ``nino4`` absent.
    AllMissingError
        Missing values inside ``start..end``.
    """
    from bayesbridge.diagnostics.enso import recentre

    if not isinstance(ds, xr.Dataset):
        raise InputTypeError(f"ds: expected an xarray.Dataset of indices, received {type(ds).__name__}.")
    missing = [v for v in ("nino3", "nino4") if v not in ds.data_vars]
    if missing:
        raise VariableNotFoundError(
            f"calibration data: needs variables nino3 and nino4 (degC monthly anomalies); missing "
            f"{missing}, available {sorted(map(str, ds.data_vars))}. Rename or add them."
        )
    sub = recentre(ds.sel(time=slice(start, end)), start, end)
    n3, n4 = sub["nino3"].values, sub["nino4"].values
    if not (np.isfinite(n3).all() and np.isfinite(n4).all()):
        raise AllMissingError(f"nino3/nino4: missing values inside {start}..{end}; choose a complete period.")
    if int(sub["time"].dt.month.values[0]) != 1 or n3.size % 12:
        raise InputValueError(f"start, end: expected whole years starting in January, received {start}..{end}.")
    h = None
    hw_years = None
    if "h_w" in ds.data_vars:
        hs = ds["h_w"].sel(time=slice(hw_start, end))
        hv = hs.values[np.isfinite(hs.values)]
        if hv.size >= 24:
            hw_years = hv.size // 12
            h = hv[: hw_years * 12]
    with_hw = h is not None
    stats = statistics_from_arrays(n3[None], n4[None], None if h is None else h[None])[0]
    return ObservedRecord(pd.Series(stats, index=_names(with_hw)), n3.size // 12, hw_years)


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
        n_feat = _n_features(len(self.parameters))
        for name, minimum in (("design_points", n_feat + 2), ("replicates", 8), ("num_samples", 10),
                              ("num_chains", 1), ("posterior_predictive_draws", 1), ("burn_in_years", 0),
                              ("num_warmup", 100)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ParameterError(f"{name}: expected an integer >= {minimum}, received {value!r}.")


def _n_features(p: int) -> int:
    return 1 + p + p * (p + 1) // 2


def _features(z: np.ndarray) -> np.ndarray:
    """Quadratic features of normalised parameters, ``(n, p) -> (n, 1 + p + p(p+1)/2)``."""
    cols = [np.ones(len(z))] + [z[:, i] for i in range(z.shape[1])]
    for i in range(z.shape[1]):
        for j in range(i, z.shape[1]):
            cols.append(z[:, i] * z[:, j])
    return np.stack(cols, axis=-1)


@dataclass(frozen=True)
class Emulator:
    """Quadratic emulator of the statistics' mean and log std; pooled residual correlation.

    ``coef_mean``, ``coef_logsd``: ``(n_feature, n_stat)``; ``corr``: ``(n_stat, n_stat)``;
    ``lack_of_fit``: ``(n_stat,)`` variance; ``low``, ``high``: ``(n_param,)`` prior box;
    ``inflation``: the factor :math:`1 + 1/R` of :math:`D C D` in the likelihood covariance
    (R = replicates per design point). Features are ``1, z_i, z_i z_j (i <= j)`` of the
    normalised parameters ``z`` (:meth:`normalise`).
    """

    coef_mean: np.ndarray
    coef_logsd: np.ndarray
    corr: np.ndarray
    lack_of_fit: np.ndarray
    low: np.ndarray
    high: np.ndarray
    inflation: float = 1.0

    def normalise(self, theta: np.ndarray) -> np.ndarray:
        """Map parameters from the prior box to [-1, 1]: ``z = 2 (theta - low)/(high - low) - 1``.

        Parameters
        ----------
        theta : ndarray, shape ``(..., n_param)``
            Parameter values in the order of the calibrated parameters.

        Returns
        -------
        ndarray, shape ``(..., n_param)``
        """
        return 2.0 * (np.asarray(theta) - self.low) / (self.high - self.low) - 1.0


def _simulate_records(
    params: ENSOParameters, n_rec: int, years: int, hw_years: int | None, seed: int, burn: int
) -> np.ndarray:
    ds = MultiscaleENSO(params).simulate(years=years, members=n_rec, seed=seed, burn_in_years=burn)
    h = ds["h_w"].values[:, -hw_years * 12 :] if hw_years else None
    # each record is re-centred on its own monthly climatology, like the observations
    n3 = ds["nino3"].values.reshape(n_rec, years, 12)
    n4 = ds["nino4"].values.reshape(n_rec, years, 12)
    n3 = (n3 - n3.mean(1, keepdims=True)).reshape(n_rec, -1)
    n4 = (n4 - n4.mean(1, keepdims=True)).reshape(n_rec, -1)
    return statistics_from_arrays(n3, n4, h)


def _fit_emulator(config: CalibrationConfig, obs: ObservedRecord, progress: bool) -> Emulator:
    names = list(obs.statistics.index)
    low = np.array([config.priors[p][0] for p in config.parameters])
    high = np.array([config.priors[p][1] for p in config.parameters])
    design = qmc.LatinHypercube(d=len(low), seed=np.random.default_rng(config.seed)).random(config.design_points)
    thetas = low + design * (high - low)
    means, logsds, resid = [], [], []
    iterator = range(len(thetas))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="synthetic likelihood design", unit="point")
    for i in iterator:
        params = ENSOParameters().replace(**dict(zip(config.parameters, thetas[i], strict=True)))
        s = _to_model_scale(
            _simulate_records(params, config.replicates, obs.years, obs.hw_years, config.seed + 1, config.burn_in_years),
            names,
        )  # common random numbers: the same seed at every design point
        mu = s.mean(0)
        sd = s.std(0, ddof=1) + 1e-9
        means.append(mu)
        logsds.append(np.log(sd))
        resid.append((s - mu) / sd)
    means, logsds = np.array(means), np.array(logsds)
    x = _features(2.0 * design - 1.0)
    coef_mean, *_ = np.linalg.lstsq(x, means, rcond=None)
    coef_logsd, *_ = np.linalg.lstsq(x, logsds, rcond=None)
    dof = max(len(thetas) - x.shape[1], 1)
    lack = ((means - x @ coef_mean) ** 2).sum(0) / dof
    r = np.concatenate(resid)
    corr = np.corrcoef(r, rowvar=False)
    corr = 0.9 * corr + 0.1 * np.eye(len(names))  # shrinkage keeps C well conditioned
    # 1 + 1/R: the Monte Carlo error of the estimated mean, common to all design points under
    # common random numbers, adds Sigma/R to the variance of s_obs - mu(theta)
    return Emulator(coef_mean, coef_logsd, corr, lack, low, high, 1.0 + 1.0 / config.replicates)


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


def _log_likelihood(emu: Emulator, theta: np.ndarray, s_obs: np.ndarray) -> float:
    """Gaussian synthetic log-likelihood of ``s_obs`` (model scale) at ``theta`` (n_param,)."""
    phi = _features(emu.normalise(theta)[None])[0]
    mu = phi @ emu.coef_mean
    sd = np.exp(phi @ emu.coef_logsd)
    cov = emu.inflation * sd[:, None] * emu.corr * sd[None, :] + np.diag(emu.lack_of_fit)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return -np.inf
    r = np.linalg.solve(chol, s_obs - mu)
    return float(-0.5 * r @ r - np.log(np.diag(chol)).sum() - 0.5 * len(r) * math.log(2 * math.pi))


def pyro_model(emu: Emulator, s_obs: np.ndarray, parameters: tuple[str, ...]):
    """The calibration as a Pyro program (uniform priors, emulated synthetic likelihood).

    Returns a callable model for Pyro inference (``pyro.infer.NUTS(model)`` etc.); its log
    density equals :func:`calibrate`'s target. ``s_obs``: shape ``(n_stat,)`` on the model scale
    (log for scale statistics).

    Parameters
    ----------
    emu : Emulator
        Fitted emulator (prior box, mean and log-std coefficients, correlation, lack of fit).
    s_obs : ndarray, shape ``(n_stat,)``
        Observed statistics on the model scale (log scales and kurtosis, atanh correlation,
        square-root event rates).
    parameters : tuple of str
        Names of the calibrated parameters, in the emulator's order; each becomes a
        ``pyro.sample`` site with a ``Uniform(low, high)`` prior.

    Returns
    -------
    callable
        A model without arguments; the statistics are the observed site ``"statistics"``
        (multivariate normal, covariance ``inflation D C D + diag(lack_of_fit)``).
    """
    import pyro
    import pyro.distributions as dist
    import torch

    dtype = torch.float64
    low = torch.as_tensor(emu.low, dtype=dtype)
    high = torch.as_tensor(emu.high, dtype=dtype)
    cm = torch.as_tensor(emu.coef_mean, dtype=dtype)
    cs = torch.as_tensor(emu.coef_logsd, dtype=dtype)
    corr = torch.as_tensor(emu.corr, dtype=dtype)
    lack = torch.as_tensor(emu.lack_of_fit, dtype=dtype)
    y = torch.as_tensor(s_obs, dtype=dtype)
    p = len(parameters)

    def model() -> None:
        theta = torch.stack(
            [pyro.sample(name, dist.Uniform(low[i], high[i])) for i, name in enumerate(parameters)]
        )
        z = 2.0 * (theta - low) / (high - low) - 1.0
        cols = [torch.ones((), dtype=dtype)] + [z[i] for i in range(p)]
        cols += [z[i] * z[j] for i in range(p) for j in range(i, p)]
        phi = torch.stack(cols)
        sd = torch.exp(phi @ cs)
        cov = emu.inflation * sd[:, None] * corr * sd[None, :] + torch.diag(lack)
        pyro.sample("statistics", dist.MultivariateNormal(phi @ cm, covariance_matrix=cov), obs=y)

    return model


def _adaptive_metropolis(
    emu: Emulator, s_obs: np.ndarray, config: CalibrationConfig, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive random-walk Metropolis (Haario et al. 2001) in logit coordinates of the prior box.

    Gradient-free and cheap (one 21 x 21 Cholesky per step). The proposal covariance is
    ``2.38^2 / d`` times the warmup sample covariance (updated every 100 warmup steps) and fixed
    while sampling, so the sampling phase is a valid Metropolis chain. Chains start at
    independent prior draws. Returns draws ``(chain, draw, n_param)`` and acceptance rates
    ``(chain,)``.
    """
    d = len(emu.low)
    width = emu.high - emu.low

    def log_target(x: np.ndarray) -> float:
        u = 1.0 / (1.0 + np.exp(-x))
        theta = emu.low + u * width
        # uniform prior on theta -> density of x: prod u (1 - u) (Jacobian)
        return _log_likelihood(emu, theta, s_obs) + float(np.sum(np.log(u) + np.log1p(-u)))

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7919]))
    draws = np.empty((config.num_chains, config.num_samples, d))
    accept = np.empty(config.num_chains)
    total = config.num_chains * (config.num_warmup + config.num_samples)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="adaptive Metropolis", unit="step")
    for c in range(config.num_chains):
        x = rng.normal(0.0, 1.0, d)
        lp = log_target(x)
        prop_chol = 0.3 * np.eye(d)
        history = []
        n_acc = 0
        for it in range(config.num_warmup + config.num_samples):
            y = x + prop_chol @ rng.standard_normal(d)
            lpy = log_target(y)
            sampling = it >= config.num_warmup
            if np.log(rng.uniform()) < lpy - lp:
                x, lp = y, lpy
                n_acc += sampling
            if sampling:
                draws[c, it - config.num_warmup] = x
            else:
                history.append(x)
                if (it + 1) % 100 == 0 and len(history) > 2 * d:
                    cov = np.cov(np.array(history[len(history) // 2 :]), rowvar=False)
                    prop_chol = np.linalg.cholesky((2.38**2 / d) * cov + 1e-8 * np.eye(d))
            if bar is not None:
                bar.update()
        accept[c] = n_acc / max(config.num_samples, 1)
    if bar is not None:
        bar.close()
    theta = emu.low + width / (1.0 + np.exp(-draws))
    return theta, accept


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
    s_obs = _to_model_scale(obs.statistics.to_numpy()[None], names)[0]
    emu = _fit_emulator(config, obs, progress)
    draws, accept = _adaptive_metropolis(emu, s_obs, config, progress)  # (chain, draw, param)
    posterior = pd.DataFrame(draws.reshape(-1, draws.shape[-1]), columns=list(config.parameters))
    # posterior predictive: fresh simulations (new seed) at a thinned set of posterior draws
    rng = np.random.default_rng(config.seed + 7)
    pick = rng.choice(len(posterior), size=min(config.posterior_predictive_draws, len(posterior)), replace=False)
    pp = []
    for k, idx in enumerate(pick):
        params = ENSOParameters().replace(**posterior.iloc[idx].to_dict())
        pp.append(_simulate_records(params, 1, obs.years, obs.hw_years, config.seed + 10_000 + k, config.burn_in_years)[0])
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
        attrs={"method": "adaptive Metropolis on an emulated Gaussian synthetic likelihood", "record_years": obs.years},
    )
    summary = arviz_compat.summary(idata, var_names=list(config.parameters))
    return CalibrationResult(idata, posterior, summary, predictive, emu, config)


