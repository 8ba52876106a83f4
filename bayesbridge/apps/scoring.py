"""Scores of the twin experiment: index statistics, statistic maps and their errors.

Statistics of the bridged fields come from whole-trajectory posterior draws plus the decoder's
representation error, never from the posterior mean (``docs/design.md`` section 6): the mean is
smoother than any realisation, and its skewness map is worse than the operational model's. Event
counts are averaged over about 20 draws.
"""

from __future__ import annotations

import numba
import numpy as np
import xarray as xr

__all__ = [
    "STATS",
    "PARAM_UQ_STATS",
    "index_statistics",
    "field_statistics",
    "bridged_maps",
    "stat_draw_list",
    "weighted_rmse",
    "pattern_bound_maps",
    "COVERAGE_BOXES",
    "box_coverage",
]

COVERAGE_BOXES: tuple[str, ...] = ("nino12", "nino3", "nino4", "h_w", "nino34")
"""Box series whose 90 % coverage is scored in the synchronized twin, in report order."""

STATS: tuple[str, ...] = (
    "nino3_skew",
    "nino4_skew",
    "nino3_kurt",
    "nino3_std",
    "ep_per_70yr",
    "cp_per_70yr",
    "extreme_per_70yr",
    "la_nina_per_70yr",
)
"""The index statistics reported as ``twin.<stat>.{truth,operational,bridged}``."""

PARAM_UQ_STATS: tuple[str, ...] = ("nino3_skew", "nino4_skew", "nino3_std", "extreme_per_70yr")
"""Statistics reported as ``twin.param_uq.<stat>.{mean,q05,q95}`` when ``parameter_draws > 0``."""


def index_statistics(nino3: np.ndarray, nino4: np.ndarray, time) -> dict[str, float]:
    """The :data:`STATS` of one pair of monthly index series (degC).

    Parameters
    ----------
    nino3, nino4 : array-like ``(time,)``
        Monthly Nino 3 and Nino 4 anomalies (degC).
    time : array-like ``(time,)``
        Their time coordinate (for the DJF event classification).

    Returns
    -------
    dict of str to float
        Skewness, Pearson kurtosis and std of Nino 3, skewness of Nino 4, and event rates per
        70 years (:func:`bayesbridge.diagnostics.enso.classify_events`).
    """
    from bayesbridge.diagnostics import enso

    n3 = xr.DataArray(np.asarray(nino3, float), dims="time", coords={"time": time})
    n4 = xr.DataArray(np.asarray(nino4, float), dims="time", coords={"time": time})
    rates = enso.event_rates_per_70yr(enso.classify_events(n3, n4))
    skew3, kurt3 = enso.skew_kurtosis(n3.values)
    return {
        "nino3_skew": skew3,
        "nino4_skew": enso.skew_kurtosis(n4.values)[0],
        "nino3_kurt": kurt3,
        "nino3_std": float(n3.std()),
        "ep_per_70yr": float(rates["ep"]),
        "cp_per_70yr": float(rates["cp"]),
        "extreme_per_70yr": float(rates["extreme_ep"]),
        "la_nina_per_70yr": float(rates["la_nina"]),
    }


@numba.njit(cache=True)
def _central_moments(x):
    """Mean-removed second and third moments over the rows of ``x (T, P)`` (float64 sums).

    Two passes over contiguous rows (mean, then centred powers), NaN where a column holds a NaN.
    """
    T, P = x.shape
    mean = np.zeros(P)
    for t in range(T):
        row = x[t]
        for p in range(P):
            mean[p] += row[p]
    mean /= T
    m2 = np.zeros(P)
    m3 = np.zeros(P)
    for t in range(T):
        row = x[t]
        for p in range(P):
            d = row[p] - mean[p]
            m2[p] += d * d
            m3[p] += d * d * d
    return m2 / T, m3 / T


def field_statistics(field: xr.DataArray) -> xr.Dataset:
    """Standard deviation and skewness maps ``(lat, lon)`` of a field on ``(time, lat, lon)``.

    Population moments (``ddof = 0``, skewness ``m3 / m2^{3/2}`` as :func:`scipy.stats.skew`);
    land (all-NaN) points stay NaN.
    """
    x = np.asarray(field.transpose("time", "lat", "lon").values)
    m2, m3 = _central_moments(np.ascontiguousarray(x.reshape(x.shape[0], -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(m2 > 0, m3 / m2**1.5, np.nan)
    shape = x.shape[1:]
    coords = {"lat": field["lat"], "lon": field["lon"]}
    return xr.Dataset(
        {"std": (("lat", "lon"), np.sqrt(m2).reshape(shape)), "skew": (("lat", "lon"), skew.reshape(shape))},
        coords=coords,
    )


def stat_draw_list(n_total: int, n_draws: int, seed: int, group: int = 4) -> np.ndarray:
    """The draws whose statistics are averaged: ``n_draws`` positions among ``n_total``.

    Groups of ``group`` distinct draws, group ``k`` chosen by ``default_rng(seed + k)`` (sorted
    within the group; a draw may appear in two groups), as the demo has always chosen them.

    Parameters
    ----------
    n_total : int
        Number of posterior draws.
    n_draws : int
        Number of draws to list.
    seed : int
        Seed of the choice.
    group : int
        Draws per group.

    Returns
    -------
    numpy.ndarray
        ``(n_draws,)`` int positions.
    """
    out = []
    for k in range(0, n_draws, group):
        size = min(group, n_draws - k)
        out.append(np.sort(np.random.default_rng(seed + k).choice(n_total, size, replace=False)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def bridged_maps(posterior, n_draws: int, seed: int, variable: str = "tos") -> xr.Dataset:
    """Std and skewness maps of whole-trajectory draws, averaged over draws.

    Parameters
    ----------
    posterior : Posterior
        The bridged posterior; the maps come from
        :meth:`~bayesbridge.bridge.posterior.Posterior.draw_statistic_maps` (representation error
        included), in the same pass as its summaries when asked before them.
    n_draws : int
        Number of draws averaged (:func:`stat_draw_list`).
    seed : int
        Seed of the choice of draws.
    variable : str
        Field variable (default ``"tos"``).

    Returns
    -------
    xarray.Dataset
        ``std`` and ``skew`` on ``(lat, lon)`` (:func:`field_statistics` of each draw, averaged).
    """
    return posterior.draw_statistic_maps(stat_draw_list(posterior.n_draws, n_draws, seed), variable)


def weighted_rmse(a: xr.DataArray, b: xr.DataArray) -> float:
    """Area-weighted (``cos(lat)``) RMSE of the maps ``a`` and ``b`` ``(lat, lon)`` over the points where both are finite."""
    w = np.cos(np.deg2rad(a["lat"])) * xr.ones_like(a["lon"])
    d2 = (a - b) ** 2
    valid = d2.notnull()
    return float(np.sqrt((d2.fillna(0) * w).sum() / (w * valid).sum()))


def pattern_bound_maps(twin, seed: int) -> xr.Dataset:
    """Std and skewness maps of the operational patterns driven by the truth's own indices.

    The scoring-only oracle :func:`bayesbridge.datasets.twin.operational_pattern_fields`
    (operational generator, ``twin.truth_driver``'s indices, noise seed ``seed``), read as
    anomalies by :func:`bayesbridge.io.open_operational` like the truth. Every field decoded
    through the operational model's patterns lives in this family, so the RMSE of these maps
    against the truth's (``twin.map_rmse.<stat>.pattern_bound``) is a structural bound for the
    bridge. It never feeds the bridge.

    Parameters
    ----------
    twin : TwinExperiment
        The twin experiment (its ``truth_driver`` and ``metadata["start_year"]``).
    seed : int
        Seed of the oracle's red noise.

    Returns
    -------
    xarray.Dataset
        ``std``, ``skew`` of ``tos`` on ``(lat, lon)`` (:func:`field_statistics`).
    """
    from bayesbridge import io
    from bayesbridge.datasets.twin import operational_pattern_fields

    start = int(twin.metadata.get("start_year", 1850))
    fields = operational_pattern_fields(twin.truth_driver, seed, start_year=start)
    return field_statistics(io.open_operational(fields, variables="tos", region=None)["tos"].load())


def box_coverage(posterior, idx_truth, boxes=COVERAGE_BOXES) -> dict[str, float]:
    """90 % coverage of each box series' posterior draws against the truth's series.

    Parameters
    ----------
    posterior : Posterior
        The bridged posterior (:meth:`~bayesbridge.bridge.posterior.Posterior.index_draws`).
    idx_truth : xarray.Dataset
        The truth's box series on ``time`` (synchronized twin).
    boxes : sequence of str
        Boxes to score (default :data:`COVERAGE_BOXES`); those missing from either side are left out.

    Returns
    -------
    dict of str to float
        Box name to the fraction of months inside the 90 % interval.
    """
    from bayesbridge.diagnostics import uq

    return {box: float(uq.interval_coverage(posterior.index_draws(box), idx_truth[box], 0.9))
            for box in boxes if box in posterior.boxes and box in idx_truth}
