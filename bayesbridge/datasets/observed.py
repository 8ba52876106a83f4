"""Bundled observations of the tropical Pacific (see ``data/PROVENANCE.md`` for sources).

* :func:`observed_indices` - monthly ERSST v5 Nino 3, 3.4, 4 (1870-2020), GODAS h_W and u,
  and the Walker circulation index I;
* :func:`wind_bursts` - daily western-Pacific 850 hPa zonal wind anomalies (NCEP-NCAR R1);
* :func:`equatorial_regression` - per-longitude coefficients of
  ``SSTA(x, t) = b0(x) + b_e(x) T_E(t) + b_c(x) T_C(t)`` (Chen, Fang & Yu 2022).

Files are found inside the installed package (``bayesbridge/_data``) or, in a source checkout,
in the repository's ``data/`` folder; nothing outside the repository is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from bayesbridge.errors import DataFileError, TimeAxisError

__all__ = [
    "data_path",
    "observed_indices",
    "wind_bursts",
    "equatorial_regression",
    "provenance",
    "ObservedStatistics",
    "observed_statistics",
]

_PACKAGE_DATA = Path(__file__).resolve().parents[1] / "_data"
_SOURCE_DATA = Path(__file__).resolve().parents[2] / "data"

_ATTRS = {
    "nino3": ("Nino 3 SST anomaly (5S-5N, 150W-90W)", "degC", "NOAA ERSST v5"),
    "nino34": ("Nino 3.4 SST anomaly (5S-5N, 170W-120W)", "degC", "NOAA ERSST v5"),
    "nino4": ("Nino 4 SST anomaly (5S-5N, 160E-150W)", "degC", "NOAA ERSST v5"),
    "h_w": ("western Pacific 20 degC isotherm depth anomaly (5S-5N, 120E-180)", "m", "NCEP GODAS"),
    "u": ("central Pacific mixed-layer zonal current anomaly", "m s-1", "NCEP GODAS"),
    "walker_i": ("Walker circulation strength index I", "1", "reanalysis SLP (Kang et al. 2020)"),
    "tau": ("western Pacific 850 hPa zonal wind anomaly", "m s-1", "NCEP-NCAR Reanalysis 1"),
    "tau_smoothed": ("western Pacific 850 hPa zonal wind anomaly, 1-month running mean", "m s-1", "NCEP-NCAR Reanalysis 1"),
}


def data_path(name: str) -> Path:
    """Path of a bundled data file (``"enso_observations.nc"``, ``"PROVENANCE.md"`` ...).

    The installed package data folder is searched first, then the ``data/`` folder of a source
    checkout.

    Parameters
    ----------
    name : str
        File name inside the data folder, e.g. ``"enso_observations.nc"``.

    Returns
    -------
    pathlib.Path
        Path of the first existing file.

    Raises
    ------
    DataFileError
        If the file is in neither folder.
    """
    for folder in (_PACKAGE_DATA, _SOURCE_DATA):
        candidate = folder / name
        if candidate.exists():
            return candidate
    raise DataFileError(
        f"bundled data file {name!r} not found in {_PACKAGE_DATA} or {_SOURCE_DATA}; reinstall "
        f"bayesbridge (pip install -e .) from a complete clone."
    )


def _open(name: str) -> xr.Dataset:
    from bayesbridge.io import open_dataset

    ds = open_dataset(data_path(name)).load()
    ds.close()
    for var in ds.data_vars:
        if var in _ATTRS:
            long_name, units, source = _ATTRS[str(var)]
            ds[var].attrs.update(long_name=long_name, units=units, source=source)
    return ds


def observed_indices() -> xr.Dataset:
    """Monthly observed ENSO indices on ``time`` (cftime, first of month).

    Variables ``nino3``, ``nino34``, ``nino4`` (degC, 1870-01..2020-10), ``h_w`` (m,
    1980-2019), ``u`` (m/s, 1980-2018), ``walker_i`` (1980-2017); NaN outside each record.
    """
    return _open("enso_observations.nc")


def wind_bursts() -> xr.Dataset:
    """Daily western-Pacific zonal wind anomalies ``tau``, ``tau_smoothed`` (m/s), 1982-2020, noleap."""
    return _open("wind_bursts_daily.nc")


def equatorial_regression() -> xr.Dataset:
    """Regression coefficients ``b0, b_e, b_c, b_h`` on ``lon`` (119.5E..288.5E, 1 degree)."""
    ds = _open("equatorial_sst_regression.nc")
    ds["b0"].attrs.setdefault("long_name", "intercept of SSTA regression")
    ds["b_e"].attrs.setdefault("long_name", "SSTA coefficient of T_E (Nino 3)")
    ds["b_c"].attrs.setdefault("long_name", "SSTA coefficient of T_C (Nino 4)")
    return ds


def provenance() -> str:
    """The provenance text (sources, licences, reference statistics) of the bundled data."""
    return data_path("PROVENANCE.md").read_text()


@dataclass(frozen=True)
class ObservedStatistics:
    """ENSO statistics of the observed indices over one period (the PROVENANCE.md table).

    Attributes
    ----------
    start, end : str
        First and last month of the period (``"YYYY-MM"``), also the climatology base period.
    moments : pandas.DataFrame
        Rows ``variable`` (nino3, nino4, h_w); columns variance, std, skewness, kurtosis.
    monthly_std : dict of str to list of float
        Standard deviation per calendar month, January first.
    corr_nino3_nino4 : float
        Pearson correlation of the Nino 3 and Nino 4 anomalies.
    event_counts : pandas.Series
        Event years per label (``extreme_ep``, ``ep``, ``cp``, ``la_nina``, ``neutral``).
    events : pandas.DataFrame
        One row per event year (see :func:`bayesbridge.diagnostics.enso.classify_events`).
    """

    start: str
    end: str
    moments: pd.DataFrame
    monthly_std: dict[str, list[float]]
    corr_nino3_nino4: float
    event_counts: pd.Series
    events: pd.DataFrame

    def to_dict(self) -> dict:
        """JSON-ready nested dictionary."""
        return {
            "period": [self.start, self.end],
            "moments": {k: {c: float(v) for c, v in row.items()} for k, row in self.moments.iterrows()},
            "monthly_std": self.monthly_std,
            "corr_nino3_nino4": self.corr_nino3_nino4,
            "event_counts": {k: int(v) for k, v in self.event_counts.items()},
        }


def observed_statistics(start: str = "1950-01", end: str = "2019-12") -> ObservedStatistics:
    """Statistics of the bundled indices over ``start..end``, re-centred on that period.

    Nino 3 and Nino 4 come from ERSST v5; ``h_w`` (GODAS) only covers 1980-2019 and its
    statistics use the months available in the period.
    """
    from bayesbridge.diagnostics import enso
    from bayesbridge.io import anomalies

    full = observed_indices()[["nino3", "nino4", "h_w"]]
    ds = full.sel(time=slice(start, end))
    if ds.sizes["time"] < 24:
        first, last = full["time"].values[[0, -1]]
        raise TimeAxisError(
            f"start, end: the period {start}..{end} holds {ds.sizes['time']} months of the observed "
            f"record ({first:%Y-%m} to {last:%Y-%m}); choose at least two years inside it."
        )
    ds = anomalies(ds, climatology=(start, end))
    moments = enso.summary_statistics(ds)
    monthly = {
        v: [float(x) for x in enso.monthly_std(ds[v].dropna("time")).values] for v in ("nino3", "nino4")
    }
    events = enso.classify_events(ds["nino3"], ds["nino4"])
    return ObservedStatistics(
        start=start,
        end=end,
        moments=moments,
        monthly_std=monthly,
        corr_nino3_nino4=float(enso.correlation(ds["nino3"], ds["nino4"])),
        event_counts=enso.event_counts(events),
        events=events,
    )
