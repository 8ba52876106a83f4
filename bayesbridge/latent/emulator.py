"""Emulator check: does a free run of codec + latent dynamics reproduce the operational ENSO?

The dynamics are run freely (``members`` runs of ``n_steps`` months after a burn-in), decoded
with the codec's :meth:`decode_tensor` and averaged over the Nino 3 box (the same area weights
as :func:`bayesbridge.regions.box_index`). The statistics of this emulated index are compared
with those of the operational fields' own index:

- standard deviation and skewness (pooled over members),
- standard deviation by calendar month (phase locking),
- autocorrelation at lags 6 and 12 months (mean over members),
- period of the spectral peak (Welch periodogram, 20-year Hann segments, mean over members).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import InputValueError
from bayesbridge.latent.stacking import as_dataset
from bayesbridge.regions import get_region

__all__ = ["IndexStatistics", "EmulatorReport", "series_statistics", "emulator_check"]


@dataclass(frozen=True)
class IndexStatistics:
    """ENSO statistics of an index (monthly anomalies).

    Attributes
    ----------
    std, skewness : float
    monthly_std : numpy.ndarray
        ``(12,)`` standard deviation for January..December.
    acf_lag6, acf_lag12 : float
        Autocorrelation at lags of 6 and 12 months.
    spectral_peak_years : float
        Period of the highest spectral peak (zero frequency excluded).
    """

    std: float
    skewness: float
    monthly_std: np.ndarray
    acf_lag6: float
    acf_lag12: float
    spectral_peak_years: float


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.sum(x[:-lag] * x[lag:]) / np.sum(x * x))


def series_statistics(series: np.ndarray, months: np.ndarray) -> IndexStatistics:
    """Statistics of ``series`` ``(member, time)`` (or ``(time,)``) with calendar ``months`` ``(time,)``."""
    import scipy.signal  # lazy: scipy.signal and scipy.stats take about 1 s to import
    import scipy.stats

    x = np.atleast_2d(np.asarray(series, dtype=float))
    months = np.asarray(months, dtype=int)
    if x.shape[-1] < 25:
        raise InputValueError(
            f"series: {x.shape[-1]} months are too few for lag-12 statistics; need at least 25."
        )
    x = x - x.mean()
    flat = x.ravel()
    mstd = np.array([x[:, months == m].std(ddof=1) if np.any(months == m) else np.nan
                     for m in range(1, 13)])
    nper = min(x.shape[-1], 240)
    freq, power = scipy.signal.welch(x, fs=12.0, nperseg=nper, detrend="constant", axis=-1)
    power = power.mean(axis=0)
    peak = int(np.argmax(power[1:])) + 1
    return IndexStatistics(
        std=float(flat.std(ddof=1)),
        skewness=float(scipy.stats.skew(flat)),
        monthly_std=mstd,
        acf_lag6=float(np.mean([_acf(row, 6) for row in x])),
        acf_lag12=float(np.mean([_acf(row, 12) for row in x])),
        spectral_peak_years=float(1.0 / freq[peak]),
    )


@dataclass(frozen=True)
class EmulatorReport:
    """Statistics of the operational index and of the emulated (free-run) index.

    Attributes
    ----------
    box : str
        Name of the index box (e.g. ``"nino3"``).
    operational : IndexStatistics
        Statistics of the box index of the fields the dynamics were fitted on.
    emulator : IndexStatistics
        Statistics of the box index of the decoded free runs (pooled over members).
    n_steps : int
        Length of each free run (months), after the burn-in.
    members : int
        Number of free runs.
    """

    box: str
    operational: IndexStatistics
    emulator: IndexStatistics
    n_steps: int
    members: int

    @property
    def std_ratio(self) -> float:
        """Emulated / operational standard deviation."""
        return self.emulator.std / self.operational.std

    def to_dataframe(self) -> pd.DataFrame:
        """Scalar statistics side by side (columns ``operational``, ``emulator``)."""
        keys = ("std", "skewness", "acf_lag6", "acf_lag12", "spectral_peak_years")
        return pd.DataFrame(
            {"operational": [getattr(self.operational, k) for k in keys],
             "emulator": [getattr(self.emulator, k) for k in keys]},
            index=pd.Index(keys, name=f"{self.box} statistic"),
        )

    def __str__(self) -> str:
        return self.to_dataframe().round(3).to_string()


def emulator_check(
    codec,
    dynamics,
    fields: xr.Dataset,
    *,
    n_steps: int | None = None,
    members: int = 10,
    seed: int = 0,
    box: str = "nino3",
    burn_in: int = 120,
) -> EmulatorReport:
    """Free-run ``dynamics``, decode with ``codec`` and compare the ``box`` index with ``fields``.

    Parameters
    ----------
    codec : Codec
        Fitted codec (its :meth:`decode_tensor` maps latents to stacked fields).
    dynamics : LinearInverseModel or NeuralDynamics
        Fitted dynamics with ``simulate(n_steps, members, seed, start_month=...)``.
    fields : xarray.Dataset
        Operational anomaly fields ``(time, lat, lon)`` (datetime time axis).
    n_steps : int, optional
        Length of each free run (default: the length of ``fields``).
    members : int
        Number of independent free runs.
    seed : int
        Seed of the free runs.
    box : str
        Index box (default Nino 3).
    burn_in : int
        Discarded spin-up months (keep it a multiple of 12).
    """
    ds = as_dataset(fields)
    stacker = codec._require_fitted()
    row = torch.from_numpy(stacker.box_weights(get_region(box)))
    operational = stacker.stack(ds) @ row.numpy()
    op_months = np.asarray(ds["time"].dt.month.values, dtype=int)
    n_steps = int(n_steps or operational.size)
    run = dynamics.simulate(n_steps, members, seed, burn_in=burn_in, start_month=int(op_months[0]))
    z = torch.from_numpy(run.values)
    with torch.no_grad():
        emulated = np.stack([(codec.decode_tensor(z[m]).double() @ row).numpy() for m in range(members)])
    return EmulatorReport(
        box=box,
        operational=series_statistics(operational, op_months),
        emulator=series_statistics(emulated, run["month"].values),
        n_steps=n_steps,
        members=int(members),
    )
