"""Uncertainty-quantification scores of an ensemble (posterior draws) against a known truth.

Every function takes an ensemble ``xarray.DataArray`` with one member dimension (``member`` or
``draw``; name it with ``dim``) and a truth ``DataArray`` on the remaining dimensions (or a
subset of them, broadcast). Each non-member element is one *case*; cases where the truth or any
member is NaN (land, gaps) are skipped. Scores:

- **CRPS** (Matheson & Winkler 1976; Gneiting & Raftery 2007, *JASA* 102, 359-378),
  :math:`\\mathrm{CRPS}(F, y) = E|X - y| - \\tfrac12 E|X - X'|`, estimated from the members as
  :func:`scoringrules.crps_ensemble` does (here from sorted members). The default ``"fair"``
  estimator divides the pair sum by :math:`M(M-1)`, an unbiased estimate of the CRPS of the
  distribution the members are drawn from (Ferro 2014, *QJRMS* 140, 1917); ``"nrg"`` is the
  CRPS of the empirical distribution.
- **Interval coverage**: fraction of cases with the truth inside the central ``level`` interval
  of the members (linear-interpolation quantiles). For ``M`` exchangeable members and a truth
  drawn from the same distribution, order-statistic ranks ``k < l`` (1-based) bracket the truth
  with probability :math:`(l - k)/(M + 1)`, so small ensembles cover slightly less than
  ``level`` even when calibrated.
- **Spread-skill ratio** :math:`\\sqrt{(M+1)/M}\\; \\overline{s} / \\mathrm{RMSE}`, with
  :math:`\\overline{s}^2` the mean unbiased ensemble variance and RMSE that of the ensemble mean.
  If truth and members are exchangeable with variance :math:`\\sigma^2`,
  :math:`E[(\\bar x - y)^2] = \\sigma^2 (1 + 1/M)`, so the factor makes a calibrated ensemble
  score 1 for any ``M`` (Fortin et al. 2014, *J. Hydrometeor.* 15, 1708-1713). Below 1:
  underdispersed (overconfident).
- **Rank histogram** (Anderson 1996; Hamill 2001, *Mon. Wea. Rev.* 129, 550-560): the rank of
  the truth among the members (ties broken at random), counts over the ``M + 1`` ranks, and a
  chi-square test of uniformity (:func:`scipy.stats.chisquare`). U-shaped: underdispersed;
  dome-shaped: overdispersed. The test assumes independent cases; serially correlated cases
  (monthly series) make small p-values more frequent than nominal, so read it as a diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import xarray as xr
from scipy import special

from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
)

__all__ = [
    "Estimator",
    "MEMBER_DIMS",
    "RankHistogram",
    "SpreadSkill",
    "UQScores",
    "member_dim",
    "crps",
    "interval_coverage",
    "coverage_from_bounds",
    "spread_skill",
    "rank_histogram",
    "uq_scores",
]

Estimator = Literal["fair", "nrg", "pwm", "int", "qd", "akr", "akr_circperm"]
MEMBER_DIMS: tuple[str, ...] = ("member", "draw")
"""Dimension names recognised as the ensemble dimension."""


@dataclass(frozen=True)
class RankHistogram:
    """Rank histogram of the truth among ``n_members`` members.

    Attributes
    ----------
    counts : ndarray (n_bins,)
        Number of cases per rank bin (``n_bins = n_members + 1`` unless pooled).
    expected : ndarray (n_bins,)
        Expected counts under uniform ranks.
    chi2, pvalue : float
        Chi-square statistic of uniformity and its p-value.
    n_members : int
    """

    counts: np.ndarray
    expected: np.ndarray
    chi2: float
    pvalue: float
    n_members: int

    @property
    def n_cases(self) -> int:
        """Number of scored cases."""
        return int(self.counts.sum())

    @property
    def frequencies(self) -> np.ndarray:
        """Relative frequencies ``counts / n_cases``."""
        return self.counts / max(self.n_cases, 1)


@dataclass(frozen=True)
class SpreadSkill:
    """Ensemble spread against the error of the ensemble mean.

    Attributes
    ----------
    spread : float
        Root mean unbiased ensemble variance.
    rmse : float
        Root mean squared error of the ensemble mean.
    ratio : float
        ``sqrt((M + 1) / M) * spread / rmse`` (1 when calibrated).
    n_members : int
    """

    spread: float
    rmse: float
    ratio: float
    n_members: int


@dataclass(frozen=True)
class UQScores:
    """All scores of one ensemble against one truth (see the module docstring).

    ``to_dict()`` gives the ``metrics.json`` keys ``<prefix>.crps``, ``<prefix>.coverage90`` (the
    coverage at ``level``, 0.9 by default), ``<prefix>.spread_skill`` and a few extras.

    Attributes
    ----------
    crps : float
        Mean CRPS over the cases (weighted when weights were given).
    coverage : float
        Fraction of cases inside the central ``level`` interval of the members.
    level : float
        Nominal coverage of the interval, in (0, 1).
    spread_skill : SpreadSkill
        Spread, RMSE of the ensemble mean and their calibrated ratio.
    rank_histogram : RankHistogram
        Rank histogram of the truth among the members and its uniformity test.
    n_cases : int
        Number of scored (finite) cases.
    n_members : int
        Ensemble size M.
    estimator : str
        CRPS estimator of :func:`scoringrules.crps_ensemble` (see :data:`Estimator`).
    """

    crps: float
    coverage: float
    level: float
    spread_skill: SpreadSkill
    rank_histogram: RankHistogram
    n_cases: int
    n_members: int
    estimator: str

    def to_dict(self, prefix: str = "twin.uq") -> dict[str, float]:
        """Flat ``{key: number}`` for ``metrics.json``.

        Parameters
        ----------
        prefix : str
            Key prefix, e.g. ``"twin.uq"`` gives ``twin.uq.crps``, ``twin.uq.coverage90``,
            ``twin.uq.spread_skill``, ``.spread``, ``.rmse``, ``.rank_hist_pvalue``,
            ``.n_members`` and ``.n_cases``.

        Returns
        -------
        dict of str to float
        """
        pct = int(round(self.level * 100))
        return {
            f"{prefix}.crps": float(self.crps),
            f"{prefix}.coverage{pct}": float(self.coverage),
            f"{prefix}.spread_skill": float(self.spread_skill.ratio),
            f"{prefix}.spread": float(self.spread_skill.spread),
            f"{prefix}.rmse": float(self.spread_skill.rmse),
            f"{prefix}.rank_hist_pvalue": float(self.rank_histogram.pvalue),
            f"{prefix}.n_members": float(self.n_members),
            f"{prefix}.n_cases": float(self.n_cases),
        }


# ---------------------------------------------------------------------------- input handling
def member_dim(ensemble: xr.DataArray, dim: str | None = None) -> str:
    """Name of the member dimension of ``ensemble`` (``dim``, else ``member`` or ``draw``)."""
    if not isinstance(ensemble, xr.DataArray):
        raise InputTypeError(
            f"ensemble: expected an xarray.DataArray with a 'member' or 'draw' dimension, got "
            f"{type(ensemble).__name__}; wrap arrays with xr.DataArray(x, dims=(..., 'member'))."
        )
    if dim is not None:
        if dim not in ensemble.dims:
            raise ShapeMismatchError(
                f"dim: {dim!r} is not a dimension of the ensemble, whose dims are {ensemble.dims}."
            )
        return dim
    found = [d for d in MEMBER_DIMS if d in ensemble.dims]
    if len(found) != 1:
        raise ShapeMismatchError(
            f"ensemble: expected exactly one of the dimensions {MEMBER_DIMS}, got dims "
            f"{ensemble.dims}; pass dim='...' to name the ensemble dimension."
        )
    return found[0]


def _cases(ensemble, truth, dim, weights=None):
    """Aligned valid cases: members ``(n, M)``, truth ``(n,)``, weights ``(n,)`` or None, and
    the broadcast truth DataArray with the validity mask (for per-case outputs)."""
    dim = member_dim(ensemble, dim)
    if not isinstance(truth, xr.DataArray):
        raise InputTypeError(
            f"truth: expected an xarray.DataArray on the ensemble's other dimensions, got "
            f"{type(truth).__name__}."
        )
    if dim in truth.dims:
        raise ShapeMismatchError(
            f"truth: must not have the member dimension {dim!r} (dims {truth.dims}); select one "
            f"realisation, e.g. truth.isel({dim}=0)."
        )
    extra = set(truth.dims) - set(ensemble.dims)
    if extra:
        raise ShapeMismatchError(
            f"truth: dimensions {sorted(extra)} are not in the ensemble (dims {ensemble.dims})."
        )
    n_members = int(ensemble.sizes[dim])
    if n_members < 2:
        raise InputValueError(f"ensemble: need at least 2 members along {dim!r}, got {n_members}.")
    try:
        ens, tru = xr.align(ensemble, truth, join="exact")
        if weights is not None:
            ens, tru, weights = xr.align(ens, tru, weights, join="exact")
    except ValueError as err:
        raise ShapeMismatchError(
            f"truth/ensemble{'/weights' if weights is not None else ''}: coordinates differ ({err}); "
            f"select the common period/grid first (e.g. truth.sel(time=ensemble.time))."
        ) from err
    others = [d for d in ens.dims if d != dim]
    ens = ens.transpose(*others, dim)
    tru = tru.broadcast_like(ens.isel({dim: 0}, drop=True)).transpose(*others)
    x = np.asarray(ens.values, dtype=float).reshape(-1, n_members)
    y = np.asarray(tru.values, dtype=float).reshape(-1)
    valid = np.isfinite(y) & np.isfinite(x).all(axis=1)
    w = None
    if weights is not None:
        w = np.asarray(weights.broadcast_like(tru).transpose(*others).values, dtype=float).reshape(-1)
        valid &= np.isfinite(w)
        w = w[valid]
        if np.any(w < 0) or w.sum() <= 0:
            raise InputValueError("weights: expected non-negative weights with a positive sum.")
    if not valid.any():
        raise AllMissingError(
            "truth/ensemble: no case where the truth and every member are finite; check the "
            "land mask and the time overlap."
        )
    return x[valid], y[valid], w, tru, valid


def _mean(values: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.average(values, weights=w))


def _check_level(level: float) -> float:
    if not (isinstance(level, int | float) and 0.0 < level < 1.0):
        raise ParameterError(f"level: expected a probability in (0, 1), e.g. 0.9, got {level!r}.")
    return float(level)


def _check_estimator(estimator: str) -> str:
    if estimator not in get_args(Estimator):
        raise ParameterError(
            f"estimator: expected one of {', '.join(get_args(Estimator))}, got {estimator!r}."
        )
    return estimator


# ---------------------------------------------------------------------------- scores
def _crps_cases(x: np.ndarray, y: np.ndarray, estimator: str) -> np.ndarray:
    """CRPS of cases ``x (n, M)`` against ``y (n,)``, as :func:`scoringrules.crps_ensemble`.

    :math:`\\frac1M \\sum_i |x_i - y| - \\frac{1}{2 c} \\sum_{i,j} |x_i - x_j|` with
    ``c = M (M - 1)`` (``fair``) or ``M^2`` (``nrg``); the pair sum of sorted members
    :math:`x_{(1)} \\le \\dots \\le x_{(M)}` is :math:`2 \\sum_k (2k - M - 1)\\, x_{(k)}`, so a case
    costs a sort instead of ``M^2`` differences. (scoringrules computes the same numbers, but
    importing it compiles its kernels, about 3 s, at every start: ``docs/lab-notes.md``.)
    """
    m = x.shape[1]
    spread = 2.0 * np.sort(x, axis=1) @ (2.0 * np.arange(1, m + 1) - m - 1)
    c = m * (m - 1) if estimator == "fair" else m * m
    return np.abs(x - y[:, None]).mean(axis=1) - spread / (2.0 * c)


def crps(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | None = None,
    *,
    estimator: Estimator = "fair",
) -> xr.DataArray:
    """CRPS of every case, on the truth's (broadcast) dimensions; NaN where not scorable.

    Parameters
    ----------
    ensemble : DataArray ``(..., member)``
    truth : DataArray ``(...)``
    dim : str, optional
        Member dimension (default ``member`` or ``draw``).
    estimator : str
        Estimator of :func:`scoringrules.crps_ensemble` (``"fair"`` default, ``"nrg"`` empirical).
    """
    _check_estimator(estimator)
    x, y, _, tru, valid = _cases(ensemble, truth, dim)
    out = np.full(valid.shape, np.nan)
    out[valid] = _crps_cases(x, y, estimator)
    return xr.DataArray(out.reshape(tru.shape), dims=tru.dims, coords=tru.coords, name="crps",
                        attrs={"long_name": f"continuous ranked probability score ({estimator})",
                               "units": ensemble.attrs.get("units", truth.attrs.get("units", "1"))})


def interval_coverage(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    level: float = 0.9,
    dim: str | None = None,
    *,
    weights: xr.DataArray | None = None,
) -> float:
    """Fraction of cases whose truth lies in the central ``level`` interval of the members.

    Bounds are the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (linear interpolation);
    ``weights`` (e.g. ``cos(lat)``) weight the cases.

    Parameters
    ----------
    ensemble, truth : xarray.DataArray
        Members ``(..., member)`` and truth ``(...)``; see :func:`uq_scores`.
    level : float, default 0.9
        Nominal coverage of the central interval, in (0, 1).
    dim : str, optional
        Member dimension (default ``member`` or ``draw``).
    weights : xarray.DataArray, optional
        Case weights, as in :func:`uq_scores`.

    Returns
    -------
    float
        The (weighted) fraction of cases with ``lower <= truth <= upper``.
    """
    level = _check_level(level)
    x, y, w, _, _ = _cases(ensemble, truth, dim, weights)
    lo, hi = np.quantile(x, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=1)
    return _mean(((y >= lo) & (y <= hi)).astype(float), w)


def coverage_from_bounds(
    lower: xr.DataArray,
    upper: xr.DataArray,
    truth: xr.DataArray,
    *,
    weights: xr.DataArray | None = None,
) -> float:
    """Fraction of cases with ``lower <= truth <= upper`` (e.g. ``nino34_q05``/``nino34_q95`` of
    ``posterior.nc``); cases with any NaN are skipped.

    Parameters
    ----------
    lower, upper, truth : xarray.DataArray
        Interval bounds and truth with exactly matching coordinates (broadcast against each
        other).
    weights : xarray.DataArray, optional
        Case weights broadcastable to the truth (default: equal weights).

    Returns
    -------
    float
        The (weighted) fraction of finite cases inside the bounds.
    """
    for name, arr in (("lower", lower), ("upper", upper), ("truth", truth)):
        if not isinstance(arr, xr.DataArray):
            raise InputTypeError(f"{name}: expected an xarray.DataArray, got {type(arr).__name__}.")
    try:
        arrays = xr.align(lower, upper, truth, *(() if weights is None else (weights,)), join="exact")
    except ValueError as err:
        raise ShapeMismatchError(
            f"lower/upper/truth: coordinates differ ({err}); select the common period first."
        ) from err
    lo, hi, y = (np.asarray(a, dtype=float) for a in xr.broadcast(*arrays[:3]))
    valid = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    if not valid.any():
        raise AllMissingError("lower/upper/truth: no case where all three are finite.")
    w = None
    if weights is not None:
        w = np.asarray(arrays[3].broadcast_like(arrays[2]).values, dtype=float)[valid]
    inside = (y[valid] >= lo[valid]) & (y[valid] <= hi[valid])
    return _mean(inside.astype(float), w)


def spread_skill(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | None = None,
    *,
    weights: xr.DataArray | None = None,
) -> SpreadSkill:
    """Spread-skill ratio ``sqrt((M + 1)/M) * spread / rmse`` (see the module docstring).

    Parameters
    ----------
    ensemble, truth : xarray.DataArray
        Ensemble ``(..., member)`` and truth ``(...)``, as in :func:`uq_scores`.
    dim : str, optional
        Member dimension (default ``member`` or ``draw``).
    weights : xarray.DataArray, optional
        Weights of the cases in both means (see :func:`uq_scores`).

    Returns
    -------
    SpreadSkill
        ``spread`` = root of the (weighted) mean unbiased member variance, ``rmse`` of the
        ensemble mean, and the ratio (``inf`` when ``rmse`` is 0).
    """
    x, y, w, _, _ = _cases(ensemble, truth, dim, weights)
    m = x.shape[1]
    spread = np.sqrt(_mean(x.var(axis=1, ddof=1), w))
    rmse = np.sqrt(_mean((x.mean(axis=1) - y) ** 2, w))
    ratio = float(np.sqrt((m + 1.0) / m) * spread / rmse) if rmse > 0 else float("inf")
    return SpreadSkill(float(spread), float(rmse), ratio, m)


def rank_histogram(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | None = None,
    *,
    n_bins: int | None = None,
    seed: int | np.random.Generator = 0,
) -> RankHistogram:
    """Rank histogram of the truth among the members and its chi-square uniformity test.

    Parameters
    ----------
    ensemble, truth : xarray.DataArray
        Ensemble ``(..., member)`` and truth ``(...)``, as in :func:`uq_scores`.
    dim : str, optional
        Name of the member dimension, if not ``member`` or ``draw``.
    n_bins : int, optional
        Pool the ``M + 1`` ranks into this many contiguous bins (keeps expected counts >= 5 for
        large ensembles); expected counts follow the bin widths.
    seed : int or numpy Generator
        Random tie-breaking: a truth equal to ``k`` members takes a uniform rank among the
        ``k + 1`` positions.

    Returns
    -------
    RankHistogram
        Counts per rank (bin), expected counts under uniform ranks and the chi-square test.
    """
    x, y, _, _, _ = _cases(ensemble, truth, dim)
    m = x.shape[1]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    below = (x < y[:, None]).sum(axis=1)
    ties = (x == y[:, None]).sum(axis=1)
    ranks = below + np.floor(rng.random(y.size) * (ties + 1)).astype(int)
    counts = np.bincount(ranks, minlength=m + 1).astype(float)
    width = np.ones(m + 1)
    if n_bins is not None:
        if not (isinstance(n_bins, int | np.integer) and 2 <= n_bins <= m + 1):
            raise ParameterError(f"n_bins: expected an integer in 2..{m + 1}, got {n_bins!r}.")
        groups = np.array_split(np.arange(m + 1), int(n_bins))
        counts = np.array([counts[g].sum() for g in groups])
        width = np.array([float(g.size) for g in groups])
    expected = counts.sum() * width / width.sum()
    # Pearson's chi-square test of uniformity (scipy.stats.chisquare), without importing scipy.stats
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return RankHistogram(counts, expected, statistic, float(special.chdtrc(counts.size - 1, statistic)), m)


def uq_scores(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | None = None,
    *,
    level: float = 0.9,
    estimator: Estimator = "fair",
    weights: xr.DataArray | None = None,
    n_bins: int | None = None,
    seed: int = 0,
) -> UQScores:
    """CRPS (mean over cases), interval coverage, spread-skill and rank histogram in one call.

    Example: ``uq_scores(post.index_draws("nino34"), truth_nino34).to_dict()`` gives the
    ``twin.uq.*`` keys of ``metrics.json``.

    Parameters
    ----------
    ensemble : xarray.DataArray ``(..., member)``
        Members along one dimension (``member`` or ``draw``, or ``dim``); every other element
        is one case.
    truth : xarray.DataArray ``(...)``
        Truth on the ensemble's other dimensions or a subset of them (broadcast); coordinates
        must match exactly. Cases where the truth or any member is NaN are skipped.
    dim : str, optional
        Member dimension (default ``member`` or ``draw``).
    level : float, default 0.9
        Nominal coverage of the central interval (:func:`interval_coverage`).
    estimator : str, default "fair"
        CRPS estimator (:data:`Estimator`; ``"fair"`` unbiased, ``"nrg"`` empirical).
    weights : xarray.DataArray, optional
        Non-negative case weights (e.g. ``cos(lat)``) broadcastable to the truth; NaN weights
        skip the case. Default: equal weights.
    n_bins : int, optional
        Rank-histogram bins (:func:`rank_histogram`); the rank histogram is unweighted.
    seed : int
        Seed of the rank histogram's random tie-breaking.

    Returns
    -------
    UQScores
    """
    level = _check_level(level)
    _check_estimator(estimator)
    x, y, w, _, _ = _cases(ensemble, truth, dim, weights)
    return UQScores(
        crps=_mean(_crps_cases(x, y, estimator), w),
        coverage=interval_coverage(ensemble, truth, level, dim, weights=weights),
        level=level,
        spread_skill=spread_skill(ensemble, truth, dim, weights=weights),
        rank_histogram=rank_histogram(ensemble, truth, dim, n_bins=n_bins, seed=seed),
        n_cases=int(y.size),
        n_members=int(x.shape[1]),
        estimator=estimator,
    )
