"""ENSO statistics and events on index series or fields (labelled xarray/pandas results).

Works on any monthly series on ``time`` (cftime or numpy datetimes), optionally with extra
dimensions such as ``member`` (idealized-model ensembles) or ``lat, lon`` (fields): moments are
pooled over everything unless stated, event classification runs per member.

Definitions (``docs/design.md`` section 4, Chen, Fang & Yu 2022):

* moments: variance and std (ddof = 0), skewness, Pearson kurtosis (normal = 3), NaN-skipping;
* phase locking: the std of each calendar month;
* events, one label per event year y from the DJF means (Dec(y), Jan(y+1), Feb(y+1)) of Nino 3
  (T_E) and Nino 4 (T_C), in this priority: ``extreme_ep`` if max Nino 3 from Apr(y) to Mar(y+1)
  exceeds 2.5 degC; ``ep`` if T_E > T_C and T_E > 0.5; ``cp`` if T_C > T_E and T_C > 0.5;
  ``la_nina`` if T_C < -0.5 or T_E < -0.5; otherwise ``neutral``. Only years with a complete DJF
  window are classified (for ERSST 1950-01..2019-12: 69 event years 1950..2018, giving 12 EP,
  9 CP, 27 La Nina and 3 extreme EP events, the extreme years counted only as ``extreme_ep``);
* equatorial SST from the indices: SSTA(x, t) = b0(x) + b_e(x) T_E(t) + b_c(x) T_C(t) with the
  observed regression coefficients, Nino 3.4 = its mean over 190E-240E.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ShapeMismatchError,
    TimeAxisError,
    VariableNotFoundError,
)

__all__ = [
    "check_series",
    "skew_kurtosis",
    "EVENT_LABELS",
    "summary_statistics",
    "monthly_std",
    "correlation",
    "autocorrelation",
    "Spectrum",
    "power_spectrum",
    "classify_events",
    "event_counts",
    "event_rates_per_70yr",
    "multi_year_events",
    "recentre",
]

EVENT_LABELS: tuple[str, ...] = ("extreme_ep", "ep", "cp", "la_nina", "neutral")
EXTREME_THRESHOLD = 2.5
EVENT_THRESHOLD = 0.5


def check_series(da: object, name: str) -> xr.DataArray:
    """``da`` itself if it is a DataArray on ``time`` with at least one value, else a clear error naming ``name``."""
    if not isinstance(da, xr.DataArray):
        raise InputTypeError(
            f"{name}: expected an xarray.DataArray with a 'time' dimension, received "
            f"{type(da).__name__}; select one variable, e.g. ds['nino3']."
        )
    if "time" not in da.dims:
        raise TimeAxisError(f"{name}: expected a 'time' dimension, received dims {da.dims}.")
    if int(da.count()) == 0:
        raise AllMissingError(f"{name}: every value is missing (NaN); nothing to analyse.")
    return da


def skew_kurtosis(x: np.ndarray) -> tuple[float, float]:
    """Skewness :math:`m_3 / m_2^{3/2}` and Pearson kurtosis :math:`m_4 / m_2^2` of ``x`` ``(n,)``.

    Population moments, as :func:`scipy.stats.skew` and ``scipy.stats.kurtosis(fisher=False)``
    (without importing ``scipy.stats``, which took 0.5-0.8 s of every command's start); NaN for
    a constant series.
    """
    d = np.asarray(x, dtype=np.float64) - np.mean(x)
    m2 = float(np.mean(d**2))
    if m2 == 0.0:
        return float("nan"), float("nan")
    return float(np.mean(d**3) / m2**1.5), float(np.mean(d**4) / m2**2)


def _moments(x: np.ndarray) -> tuple[float, float, float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (np.nan,) * 4
    var = float(np.var(x))
    return (var, float(np.sqrt(var)), *skew_kurtosis(x))


def summary_statistics(
    ds: xr.Dataset | xr.DataArray,
    variables: Sequence[str] | None = None,
    per_member: bool = False,
) -> pd.DataFrame:
    """Variance, std, skewness and Pearson kurtosis of each variable.

    Parameters
    ----------
    ds : xarray.Dataset or DataArray
        Series on ``(time,)``, ``(member, time)`` or any dims; NaNs are skipped.
    variables : sequence of str, optional
        Variables to include (default: every variable with a ``time`` dimension).
    per_member : bool
        ``False`` (default): pool all values (members are exchangeable realisations, pooling
        gives the most precise estimate). ``True``: one row per ``(variable, member)``.

    Returns
    -------
    pandas.DataFrame
        Index ``variable`` (or ``variable, member``); columns ``variance``, ``std`` (ddof = 0),
        ``skewness``, ``kurtosis`` (Pearson, normal = 3).
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "x")
    if not isinstance(ds, xr.Dataset):
        raise InputTypeError(f"ds: expected an xarray Dataset or DataArray, received {type(ds).__name__}.")
    names = list(variables) if variables is not None else [v for v in ds.data_vars if "time" in ds[v].dims]
    missing = [v for v in names if v not in ds.data_vars]
    if missing:
        raise VariableNotFoundError(
            f"variables: {missing} not in the dataset; available: {sorted(map(str, ds.data_vars))}."
        )
    rows, index = [], []
    for name in names:
        da = ds[name]
        if per_member:
            if "member" not in da.dims:
                raise InputValueError(
                    f"per_member=True: variable {name!r} has no 'member' dimension (dims {da.dims}); "
                    "use per_member=False."
                )
            for mem in da["member"].values:
                rows.append(_moments(np.asarray(da.sel(member=mem).values, dtype=float).ravel()))
                index.append((name, mem))
        else:
            rows.append(_moments(np.asarray(da.values, dtype=float).ravel()))
            index.append(name)
    idx = (
        pd.MultiIndex.from_tuples(index, names=["variable", "member"])
        if per_member
        else pd.Index(index, name="variable")
    )
    return pd.DataFrame(rows, index=idx, columns=["variance", "std", "skewness", "kurtosis"])


def monthly_std(da: xr.DataArray, ddof: int = 1) -> xr.DataArray:
    """Standard deviation per calendar month (seasonal phase locking), pooled over other dims.

    Parameters
    ----------
    da : xarray.DataArray
        Monthly anomalies on ``(time,)`` or ``(*other, time)`` (e.g. ``(member, time)``); all
        values of one calendar month, over every other dimension, are pooled; NaNs are skipped.
    ddof : int, default 1
        Delta degrees of freedom of the standard deviation.

    Returns
    -------
    xarray.DataArray
        On ``month`` (1..12); NaN for a month with at most ``ddof`` finite values. ``ddof = 1``
        by default (the convention of the PROVENANCE table; with 70 years per month the two
        differ by 0.7 %).
    """
    da = check_series(da, "da")
    month = da["time"].dt.month
    out = []
    for mth in range(1, 13):
        x = np.asarray(da.where(month == mth, drop=True).values, dtype=float).ravel()
        x = x[np.isfinite(x)]
        out.append(float(np.std(x, ddof=ddof)) if x.size > ddof else np.nan)
    return xr.DataArray(
        np.array(out), dims=("month",), coords={"month": np.arange(1, 13)}, name=f"{da.name}_monthly_std",
        attrs={"long_name": f"standard deviation of {da.name} per calendar month", "units": da.attrs.get("units", "")},
    )  # fmt: skip


def correlation(a: xr.DataArray, b: xr.DataArray) -> float:
    """Pearson correlation of two series over the values where both are finite (pooled).

    Parameters
    ----------
    a, b : xarray.DataArray
        Series on ``time`` (any other dims, e.g. ``(member, time)``); they are aligned on their
        common coordinates (inner join) and every pair of finite values is pooled.

    Returns
    -------
    float
        The sample correlation coefficient.

    Raises
    ------
    AllMissingError
        If fewer than 3 values are finite in both.
    """
    a, b = check_series(a, "a"), check_series(b, "b")
    a, b = xr.align(a, b, join="inner")
    x, y = np.asarray(a.values, float).ravel(), np.asarray(b.values, float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        raise AllMissingError("a, b: fewer than 3 months where both series are finite.")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def autocorrelation(da: xr.DataArray, max_lag: int = 36) -> xr.DataArray:
    """Autocorrelation function at lags 0..max_lag months (averaged over members/other dims).

    Uses the biased estimator ``sum_t x_t x_{t+k} / sum_t x_t^2`` of the mean-removed series
    (missing values set to 0 after removing the mean), computed per series and then averaged.

    Parameters
    ----------
    da : xarray.DataArray
        Monthly series on ``(*other, time)``; each series along ``time`` is one sample.
    max_lag : int, default 36
        Largest lag (months), less than the number of time steps.

    Returns
    -------
    xarray.DataArray
        On ``lag`` (0..max_lag months); the value at lag 0 is 1.
    """
    da = check_series(da, "da")
    if not isinstance(max_lag, int | np.integer) or max_lag < 0:
        raise InputValueError(f"max_lag: expected an integer >= 0, received {max_lag!r}.")
    x = np.moveaxis(np.asarray(da.values, dtype=float), da.get_axis_num("time"), -1)
    x = x.reshape(-1, x.shape[-1])
    if max_lag >= x.shape[-1]:
        raise InputValueError(
            f"max_lag: expected fewer lags than time steps ({x.shape[-1]}), received {max_lag}."
        )
    x = x - np.nanmean(x, axis=-1, keepdims=True)
    x = np.where(np.isfinite(x), x, 0.0)
    denom = (x * x).sum(axis=-1)
    acf = np.array([((x[:, : x.shape[-1] - k] * x[:, k:]).sum(axis=-1) / denom).mean() for k in range(max_lag + 1)])
    return xr.DataArray(acf, dims=("lag",), coords={"lag": np.arange(max_lag + 1)},
                        name=f"{da.name}_acf", attrs={"long_name": "autocorrelation", "lag_units": "months"})  # fmt: skip


@dataclass(frozen=True)
class Spectrum:
    """Welch power spectrum.

    Attributes
    ----------
    power : xarray.DataArray
        Power spectral density on ``frequency`` (cycles per year), units^2 year.
    dominant_period : float
        Period (years) of the largest power at frequencies below 1 cycle/year (interannual band).
    """

    power: xr.DataArray
    dominant_period: float


def power_spectrum(da: xr.DataArray, segment_years: int = 32) -> Spectrum:
    """Welch power spectrum of a monthly series, averaged over members/other dims.

    Hann windows of ``segment_years`` (shortened to the record), 50 % overlap, linear detrend
    (``scipy.signal.welch``), sampling 12 per year. Missing values are set to zero (after
    removing each series' mean); the spectra of the series are averaged.

    Parameters
    ----------
    da : xarray.DataArray
        Monthly series on ``(*other, time)``, at least 24 months long.
    segment_years : int, default 32
        Length of a Welch segment in years.

    Returns
    -------
    Spectrum
        Power on ``frequency`` (cycles per year) and the dominant interannual period (years).
    """
    da = check_series(da, "da")
    x = np.moveaxis(np.asarray(da.values, dtype=float), da.get_axis_num("time"), -1)
    x = x.reshape(-1, x.shape[-1])
    x = np.where(np.isfinite(x), x - np.nanmean(x, axis=-1, keepdims=True), 0.0)
    nperseg = min(int(segment_years) * 12, x.shape[-1])
    if nperseg < 24:
        raise InputValueError(f"da: expected at least 24 months for a spectrum, received {x.shape[-1]}.")
    from scipy import signal  # lazy: slow to import

    freq, pxx = signal.welch(x, fs=12.0, nperseg=nperseg, detrend="linear", axis=-1)
    pxx = pxx.mean(axis=0)
    band = (freq > 0) & (freq < 1.0)
    dominant = float(1.0 / freq[band][np.argmax(pxx[band])]) if band.any() else np.nan
    power = xr.DataArray(pxx, dims=("frequency",), coords={"frequency": freq}, name=f"{da.name}_psd",
                         attrs={"long_name": f"Welch power spectral density of {da.name}",
                                "frequency_units": "cycles per year"})  # fmt: skip
    return Spectrum(power, dominant)


# ----------------------------------------------------------------------------------- events
def _year_month(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    t = da["time"]
    return np.asarray(t.dt.year.values), np.asarray(t.dt.month.values)


def _classify_series(n3: np.ndarray, n4: np.ndarray, years: np.ndarray, months: np.ndarray) -> pd.DataFrame:
    key = years * 12 + (months - 1)
    if np.any(np.diff(key) != 1):
        raise TimeAxisError(
            "nino3/nino4: expected a contiguous monthly time axis (one value per month, no gaps "
            "or duplicates); resample or fill the series first."
        )
    start = key[0]
    rows = []
    for y in range(int(years[0]), int(years[-1]) + 1):
        dec, feb, apr = y * 12 + 11 - start, (y + 1) * 12 + 1 - start, y * 12 + 3 - start
        if dec < 0 or feb >= len(key):
            continue
        e = n3[dec : feb + 1].mean()
        c = n4[dec : feb + 1].mean()
        if not (np.isfinite(e) and np.isfinite(c)):
            continue
        window = n3[max(apr, 0) : feb + 2]  # Apr(y) .. Mar(y+1) (truncated at the record edges)
        mx = float(np.nanmax(window)) if np.isfinite(window).any() else np.nan
        if mx > EXTREME_THRESHOLD:
            label = "extreme_ep"
        elif e > c and e > EVENT_THRESHOLD:
            label = "ep"
        elif c > e and c > EVENT_THRESHOLD:
            label = "cp"
        elif c < -EVENT_THRESHOLD or e < -EVENT_THRESHOLD:
            label = "la_nina"
        else:
            label = "neutral"
        rows.append((y, e, c, mx, label))
    return pd.DataFrame(rows, columns=["year", "nino3_djf", "nino4_djf", "nino3_max", "label"]).set_index("year")


def classify_events(nino3: xr.DataArray, nino4: xr.DataArray) -> pd.DataFrame:
    """Classify every event year (``docs/design.md`` section 4 rules; see the module docstring).

    Parameters
    ----------
    nino3, nino4 : xarray.DataArray
        Monthly anomalies (degC) on ``(time,)`` or ``(member, time)``, contiguous months.

    Returns
    -------
    pandas.DataFrame
        Indexed by event ``year`` y (or ``member, year``), columns ``nino3_djf``, ``nino4_djf``
        (DJF means of Dec(y), Jan(y+1), Feb(y+1)), ``nino3_max`` (max Apr(y)..Mar(y+1)) and
        ``label`` in :data:`EVENT_LABELS`. Only complete DJF windows are classified.
    """
    nino3, nino4 = check_series(nino3, "nino3"), check_series(nino4, "nino4")
    if nino3.dims != nino4.dims or nino3.shape != nino4.shape:
        raise ShapeMismatchError(
            f"nino3, nino4: expected identical dims and shapes, received {nino3.dims}{nino3.shape} "
            f"and {nino4.dims}{nino4.shape}."
        )
    years, months = _year_month(nino3)
    extra = [d for d in nino3.dims if d != "time"]
    if not extra:
        return _classify_series(np.asarray(nino3.values, float), np.asarray(nino4.values, float), years, months)
    if extra != ["member"]:
        raise InputValueError(
            f"nino3: expected dims ('time',) or ('member', 'time'), received {nino3.dims}."
        )
    frames = {}
    for mem in nino3["member"].values:
        frames[mem] = _classify_series(
            np.asarray(nino3.sel(member=mem).values, float), np.asarray(nino4.sel(member=mem).values, float),
            years, months,
        )  # fmt: skip
    return pd.concat(frames, names=["member", "year"])


def event_counts(events: pd.DataFrame) -> pd.Series:
    """Number of event years per label (all of :data:`EVENT_LABELS`, zeros included).

    Parameters
    ----------
    events : pandas.DataFrame
        The table returned by :func:`classify_events` (a ``label`` column); all members are
        counted together.

    Returns
    -------
    pandas.Series
        Integer ``count`` indexed by ``label``, in the order of :data:`EVENT_LABELS`.
    """
    if not isinstance(events, pd.DataFrame) or "label" not in events:
        raise InputTypeError("events: expected the DataFrame returned by classify_events (with a 'label' column).")
    counts = events["label"].value_counts().reindex(list(EVENT_LABELS), fill_value=0)
    counts.name = "count"
    counts.index.name = "label"
    return counts.astype(int)


def event_rates_per_70yr(events: pd.DataFrame) -> pd.Series:
    """Events per 70 years: ``count * 70 / number of classified event years`` (all members).

    Parameters
    ----------
    events : pandas.DataFrame
        The table returned by :func:`classify_events` (a ``label`` column).

    Returns
    -------
    pandas.Series
        Float ``per_70yr`` indexed by ``label``, in the order of :data:`EVENT_LABELS`.
    """
    counts = event_counts(events)
    n = len(events)
    if n == 0:
        raise AllMissingError("events: no classified event year (the series is shorter than one DJF window).")
    rates = counts * 70.0 / n
    rates.name = "per_70yr"
    return rates


def multi_year_events(events: pd.DataFrame) -> pd.DataFrame:
    """Runs of at least two consecutive El Nino (ep/cp/extreme_ep) or La Nina years.

    Returns
    -------
    pandas.DataFrame
        Columns ``kind`` ("el_nino" or "la_nina"), ``start``, ``end`` (event years) and
        ``length`` (years), plus ``member`` when the events have one.
    """
    event_counts(events)  # validates
    kind_of = {"extreme_ep": "el_nino", "ep": "el_nino", "cp": "el_nino", "la_nina": "la_nina"}
    groups = events.groupby(level="member") if "member" in (events.index.names or []) else [(None, events)]
    rows = []
    for mem, ev in groups:
        yrs = ev.index.get_level_values("year").to_numpy()
        kinds = ev["label"].map(kind_of).to_numpy()
        i = 0
        while i < len(yrs):
            j = i
            if isinstance(kinds[i], str):
                while j + 1 < len(yrs) and kinds[j + 1] == kinds[i] and yrs[j + 1] == yrs[j] + 1:
                    j += 1
            if j > i:
                row = {"kind": kinds[i], "start": int(yrs[i]), "end": int(yrs[j]), "length": int(j - i + 1)}
                if mem is not None:
                    row["member"] = mem
                rows.append(row)
            i = j + 1
    cols = ["kind", "start", "end", "length"] + (["member"] if "member" in (events.index.names or []) else [])
    return pd.DataFrame(rows, columns=cols)


def recentre(da: xr.DataArray | xr.Dataset, start: str, end: str) -> xr.DataArray | xr.Dataset:
    """Re-centre anomalies on the monthly climatology of the base period ``start..end``.

    ``start``, ``end`` are strings such as ``"1950-01"``; the climatology (mean of each calendar
    month over the base period, NaN-skipping) is subtracted from the whole record.

    Parameters
    ----------
    da : xarray.DataArray or xarray.Dataset
        Monthly anomalies (or raw values) with a ``time`` dimension, any other dims.
    start, end : str
        First and last month of the base period (inclusive, ``time`` label slicing).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Same type, dims and coordinates as ``da``, each calendar month's base-period mean
        removed.
    """
    from bayesbridge.io import anomalies

    if not isinstance(da, xr.DataArray | xr.Dataset) or "time" not in da.dims:
        raise InputTypeError("da: expected an xarray DataArray/Dataset with a 'time' dimension.")
    if da.sel(time=slice(start, end)).sizes.get("time", 0) == 0:
        raise InputValueError(
            f"start, end: the base period {start}..{end} contains no time step of the record "
            f"({da['time'].values[0]} .. {da['time'].values[-1]})."
        )
    return anomalies(da, climatology=(start, end))
