"""Build small CMIP6-like netCDF files on the fly for the data-layer tests.

The fields have a known structure so tests can check the reader against hand computations:
``tos(t, lat, lon) = 273.15 + 26 + clim(month) + a(t) * pattern(lat, lon)`` in Kelvin, with a
land box set to NaN, on a 365-day calendar, split into several files per variable.
"""

from __future__ import annotations

from pathlib import Path

import cftime
import numpy as np
import xarray as xr

SEASONAL = 1.5 * np.sin(2 * np.pi * (np.arange(12) - 2) / 12)  # known climatology, degC


def make_grid(lon0: float = 100.0, lon1: float = 300.0, dlon: float = 4.0, dlat: float = 2.0):
    lat = np.arange(-20.0, 20.0 + 1e-9, dlat)
    lon = np.arange(lon0, lon1 + 1e-9, dlon)
    return lat, lon


def cftime_months(start_year: int, n_months: int, calendar: str = "noleap") -> np.ndarray:
    return np.array(
        [cftime.datetime(start_year + m // 12, m % 12 + 1, 16, calendar=calendar) for m in range(n_months)]
    )


def make_fields(n_months: int = 48, start_year: int = 1850, calendar: str = "noleap", seed: int = 0):
    """tos (K) and zos (m) on (time, lat, lon) with known anomalies ``a(t)`` and land at NaN."""
    rng = np.random.default_rng(seed)
    lat, lon = make_grid()
    time = cftime_months(start_year, n_months, calendar)
    amp = rng.standard_normal(n_months)
    amp -= np.array([amp[m::12].mean() for m in range(12)])[np.arange(n_months) % 12]  # zero monthly means
    pattern = np.exp(-(lat[:, None] / 8.0) ** 2) * np.cos(np.deg2rad(lon[None, :] - 200.0))
    clim = SEASONAL[np.arange(n_months) % 12]
    tos_c = 26.0 + clim[:, None, None] + amp[:, None, None] * pattern[None]
    land = (lat[:, None] > 8.0) & (lon[None, :] > 270.0)  # a Central-America-like corner
    tos = np.where(land[None], np.nan, tos_c + 273.15).astype("float32")
    zos = np.where(land[None], np.nan, 0.1 * amp[:, None, None] * pattern[None]).astype("float32")
    ds = xr.Dataset(
        {
            "tos": (("time", "lat", "lon"), tos, {"standard_name": "sea_surface_temperature", "units": "K"}),
            "zos": (("time", "lat", "lon"), zos, {"standard_name": "sea_surface_height_above_geoid", "units": "m"}),
        },
        coords={
            "time": ("time", time),
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        },
    )
    return ds, amp, pattern, land


def write_cmip_files(folder: Path, ds: xr.Dataset, months_per_file: int = 24, calendar: str = "noleap") -> list[Path]:
    """One file per variable and block of months, CMIP6 file naming, given calendar."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    n = ds.sizes["time"]
    for var in ds.data_vars:
        for i0 in range(0, n, months_per_file):
            block = ds[[var]].isel(time=slice(i0, i0 + months_per_file))
            t0, t1 = block.time.values[0], block.time.values[-1]
            name = f"{var}_Omon_SYNTH_piControl_r1i1p1f1_gn_{t0.year:04d}{t0.month:02d}-{t1.year:04d}{t1.month:02d}.nc"
            enc = {"time": {"units": "days since 1850-01-01", "calendar": calendar}}
            block.to_netcdf(folder / name, encoding=enc)
            paths.append(folder / name)
    return paths
