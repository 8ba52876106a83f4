"""Summary statistics of ENSO index records, the data of the idealized model's calibration.

For records of monthly Nino 3 and Nino 4 anomalies (and optionally h_W) the statistics are:
variance, skewness and Pearson kurtosis of Nino 3 and Nino 4, their correlation, the seasonal
(DJF, MAM, JJA, SON) standard deviations of each, the rates per 70 years of EP, CP, La Nina and
extreme EP events (the rules of :func:`bayesbridge.diagnostics.enso.classify_events` on
complete DJF windows), and the std and skewness of h_W (:func:`statistic_names` gives the
order). :func:`calibration_statistics` computes them for an observed Dataset,
:func:`simulate_statistics` for records simulated by :class:`~bayesbridge.idealized.MultiscaleENSO`,
and :func:`to_model_scale` maps them to the scale on which the synthetic likelihood is Gaussian:
log for scales and kurtosis, atanh (Fisher z) for the correlation, square root for event rates.

References: Wood (2010), Nature 466:1102-1104; Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    VariableNotFoundError,
)
from bayesbridge.idealized.model import MultiscaleENSO
from bayesbridge.idealized.params import ENSOParameters

__all__ = [
    "statistic_names",
    "statistics_from_arrays",
    "to_model_scale",
    "ObservedRecord",
    "calibration_statistics",
    "simulate_statistics",
]

_SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}


def statistic_names(with_hw: bool) -> list[str]:
    """Names of the calibration statistics, in the order of :func:`statistics_from_arrays`.

    Parameters
    ----------
    with_hw : bool
        Whether the two h_W statistics (``h_w_std``, ``h_w_skew``) are included.

    Returns
    -------
    list of str
        19 names, or 21 with h_W.
    """
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
        In the order of :func:`statistic_names` (and of
        :attr:`~bayesbridge.idealized.calibrate.CalibrationResult.statistic_names`); event rates
        use the design rules of :func:`bayesbridge.diagnostics.enso.classify_events` (complete
        DJF windows).
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


def to_model_scale(stats: np.ndarray, names: list[str]) -> np.ndarray:
    """Normalising transforms: log (scales, kurtosis), atanh (correlation), sqrt (event rates).

    The correlation is clipped to [-0.999, 0.999] before :math:`\\operatorname{atanh}`; other
    statistics (skewness) are left as they are.

    Parameters
    ----------
    stats : ndarray, shape ``(..., n_stat)``
        Statistics on the natural scale.
    names : list of str
        ``(n_stat,)`` their names (:func:`statistic_names`), which select the transform.

    Returns
    -------
    ndarray, shape ``(..., n_stat)``
        A transformed copy.
    """
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
    return ObservedRecord(pd.Series(stats, index=statistic_names(with_hw)), n3.size // 12, hw_years)


def simulate_statistics(
    params: ENSOParameters, n_rec: int, years: int, hw_years: int | None, seed: int, burn: int
) -> np.ndarray:
    """Calibration statistics of ``n_rec`` records simulated at ``params``.

    Each record is a member of ``MultiscaleENSO(params).simulate(years, members=n_rec,
    seed=seed, burn_in_years=burn)``, re-centred on its own monthly climatology like the
    observations; h_W statistics use its last ``hw_years`` years.

    Parameters
    ----------
    params : ENSOParameters
        Model parameters.
    n_rec : int
        Number of records (ensemble members).
    years : int
        Length of each Nino 3/Nino 4 record in years.
    hw_years : int or None
        Length of the h_W record in years; ``None`` (or 0) leaves the h_W statistics out.
    seed : int
        Seed of the simulation (the same seed gives common random numbers across ``params``).
    burn : int
        Spin-up years discarded before each record.

    Returns
    -------
    ndarray, shape ``(n_rec, n_stat)``
        Statistics on the natural scale, in the order of :func:`statistic_names`.
    """
    ds = MultiscaleENSO(params).simulate(years=years, members=n_rec, seed=seed, burn_in_years=burn)
    h = ds["h_w"].values[:, -hw_years * 12 :] if hw_years else None
    # each record is re-centred on its own monthly climatology, like the observations
    n3 = ds["nino3"].values.reshape(n_rec, years, 12)
    n4 = ds["nino4"].values.reshape(n_rec, years, 12)
    n3 = (n3 - n3.mean(1, keepdims=True)).reshape(n_rec, -1)
    n4 = (n4 - n4.mean(1, keepdims=True)).reshape(n_rec, -1)
    return statistics_from_arrays(n3, n4, h)


