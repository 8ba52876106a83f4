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


# ---- ocean temperature with depth: thetao (time, lev, lat, lon) and its exact 20 degC isotherm depth ----

LEVELS = np.concatenate([np.arange(5.0, 100.0, 10.0), np.arange(120.0, 260.0, 25.0), np.arange(295.0, 500.0, 50.0)])
"""Depth levels (m): 10 m spacing to 95 m, 25 m to 245 m, 50 m to 495 m (like a CMIP6 ocean grid's top)."""
T_DEEP, WIDTH = 8.0, 60.0  # degC below the thermocline, thermocline half-width (m)


def tanh_profile(z, t_surface, z0, width=WIDTH, t_deep=T_DEEP):
    """``T(z) = T_d + (T_s - T_d) (1 - tanh((z - z0) / w)) / 2``: a thermocline centred at ``z0``."""
    return t_deep + 0.5 * (t_surface - t_deep) * (1.0 - np.tanh((z - z0) / width))


def tanh_crossing(isotherm, t_surface, z0, width=WIDTH, t_deep=T_DEEP):
    """The exact depth where :func:`tanh_profile` equals ``isotherm`` (NaN if it never does)."""
    x = 1.0 - 2.0 * (isotherm - t_deep) / (t_surface - t_deep)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(x) < 1, z0 + width * np.arctanh(np.clip(x, -0.999999, 0.999999)), np.nan)


def make_thetao(n_months: int = 24, start_year: int = 1850, calendar: str = "noleap", seed: int = 1,
                levels: np.ndarray = LEVELS):
    """thetao (degC) on (time, lev, lat, lon) with a tanh thermocline, and its exact 20 degC depth.

    The thermocline centre is ``z0 = 140 + 40 a(t) pattern(lat, lon) - 40 (lon - 200) / 100`` m
    (deeper in the west), the surface temperature ``28 + seasonal``, except in a cold strip
    (``lat <= -18``) at 19 degC, where the isotherm outcrops. Land is the corner of
    :func:`make_fields`; west of 120E the sea floor is at 75 m (levels below are NaN), above the
    isotherm, so those columns never cross 20 degC. Returns ``(ds, d20)``: the Dataset (with
    ``tos`` in K as well, on the same grid) and the exact crossing depth on (time, lat, lon),
    NaN where no crossing lies within the valid levels.
    """
    base, amp, pattern, land = make_fields(n_months, start_year, calendar, seed)
    lat, lon = base.lat.values, base.lon.values
    clim = SEASONAL[np.arange(n_months) % 12]
    z0 = 140.0 + 40.0 * amp[:, None, None] * pattern[None] - 40.0 * (lon[None, None, :] - 200.0) / 100.0
    z0 = np.broadcast_to(z0, (n_months, lat.size, lon.size))
    t_surface = np.broadcast_to(28.0 + clim[:, None, None], z0.shape).copy()
    t_surface[:, lat <= -18.0, :] = 19.0
    temp = tanh_profile(levels[None, :, None, None], t_surface[:, None], z0[:, None])
    floor = np.full((lat.size, lon.size), np.inf)
    floor[:, lon < 120.0] = 75.0
    temp = np.where(levels[None, :, None, None] > floor[None, None], np.nan, temp)
    temp = np.where(land[None, None], np.nan, temp)
    exact = tanh_crossing(20.0, t_surface, z0)
    deepest = np.array([[levels[levels <= f].max() for f in row] for row in floor])
    ok = (exact >= levels[0]) & (exact <= deepest[None]) & ~land[None]
    d20 = np.where(ok, exact, np.nan)
    lev = xr.DataArray(levels, dims="lev", attrs={"standard_name": "depth", "units": "m", "positive": "down",
                                                  "axis": "Z", "long_name": "ocean depth coordinate"})
    ds = base[["tos"]].assign_coords(lev=lev)
    ds["thetao"] = (("time", "lev", "lat", "lon"), temp.astype("float32"),
                    {"standard_name": "sea_water_potential_temperature", "units": "degC"})
    ds["lev_bnds"] = (("lev", "bnds"), np.stack([levels - 5.0, levels + 5.0], axis=1))  # not used, like CMIP6
    return ds, d20
