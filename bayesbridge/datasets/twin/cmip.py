"""CMIP6-style files of the twin experiment's fields.

:func:`write_cmip6` writes monthly ``(time, lat, lon)`` fields as one NetCDF file per variable
and block of years, named and laid out like CMIP6 output (``docs/design.md`` section 6), so the
package's CMIP6 reader serves the synthetic operational model exactly as it serves real model
output. Every file is written atomically (:func:`atomic_to_netcdf`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from bayesbridge.datasets.twin.grid import time_axis
from bayesbridge.errors import check_int
from bayesbridge.io import atomic_path

__all__ = ["write_cmip6", "atomic_to_netcdf"]


def atomic_to_netcdf(ds: xr.Dataset, path: Path, encoding: dict | None = None) -> None:
    """Write ``ds`` to ``path`` atomically: readers see the old file or the complete new one.

    Parameters
    ----------
    ds : xarray.Dataset
        Dataset to write.
    path : pathlib.Path
        Destination file (NetCDF); replaced if it exists.
    encoding : dict, optional
        Per-variable encoding passed to :meth:`xarray.Dataset.to_netcdf`.
    """
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=encoding)


def write_cmip6(ds: xr.Dataset, out_dir: str | os.PathLike, *, years_per_file: int = 50) -> list[Path]:
    """Write fields as CMIP6-style files, one per variable and block of years.

    Names follow ``<var>_<table_id>_<source_id>_<experiment_id>_<variant_label>_<grid_label>_
    YYYYMM-YYYYMM.nc`` (e.g. ``tos_Omon_SYNTH_piControl_r1i1p1f1_gn_185001-189912.nc``), with
    ``time_bnds``, ``lat_bnds``, ``lon_bnds``; each file is written atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        Monthly fields on ``(time, lat, lon)`` with a cftime ``time`` axis (written with the
        ``noleap`` calendar); the file-name parts ``table_id``, ``source_id``, ``experiment_id``,
        ``variant_label`` and ``grid_label`` are read from ``ds.attrs`` (defaults ``Omon``,
        ``SYNTH``, ``piControl``, ``r1i1p1f1``, ``gn``). Latitude and longitude bounds are the
        centres +- 1 degree.
    out_dir : str or os.PathLike
        Output folder, created if missing.
    years_per_file : int, default 50
        Years of monthly data per file (>= 1).

    Returns
    -------
    list of pathlib.Path
        The files written, by variable then time.
    """
    years_per_file = check_int(years_per_file, "years_per_file", minimum=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = ds.attrs
    stem = "_".join(str(a.get(k, d)) for k, d in (("table_id", "Omon"), ("source_id", "SYNTH"),
                                                 ("experiment_id", "piControl"),
                                                 ("variant_label", "r1i1p1f1"), ("grid_label", "gn")))
    t0 = ds["time"].values[0]
    _, tb = time_axis(ds.sizes["time"], t0.year)
    units = f"days since {t0.year:04d}-01-01 00:00:00"
    bnds = {"time_bnds": (("time", "bnds"), tb)}
    for c in ("lat", "lon"):
        v = ds[c].values
        bnds[f"{c}_bnds"] = ((c, "bnds"), np.stack([v - 1.0, v + 1.0], axis=1))
    paths = []
    step = 12 * years_per_file
    for var in ds.data_vars:
        for i0 in range(0, ds.sizes["time"], step):
            block = ds[[var]].isel(time=slice(i0, i0 + step)).assign(
                {k: (dims, val[i0:i0 + step] if k == "time_bnds" else val) for k, (dims, val) in bnds.items()})
            for c in ("time", "lat", "lon"):
                block[c].attrs["bounds"] = f"{c}_bnds"
            first, last = block["time"].values[0], block["time"].values[-1]
            name = f"{var}_{stem}_{first.year:04d}{first.month:02d}-{last.year:04d}{last.month:02d}.nc"
            enc = {"time": {"units": units, "calendar": "noleap", "dtype": "float64"},
                   "time_bnds": {"units": units, "calendar": "noleap", "dtype": "float64"},
                   var: {"zlib": True, "complevel": 1, "_FillValue": np.float32(1e20)}}
            atomic_to_netcdf(block, out / name, enc)
            paths.append(out / name)
    return paths
