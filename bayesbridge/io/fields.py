"""Reading operational (CF/CMIP6) fields as anomalies on ``(time, lat, lon)``.

:func:`open_operational` turns one file, a glob, a list of files or an in-memory Dataset into
anomaly fields on ``(time, lat, lon)`` that the rest of bayesbridge understands:

* multi-file CMIP6 sets (netCDF files or zarr stores, :mod:`.stores`) are opened lazily with dask
  and combined by coordinates; every file must use the same calendar (``noleap``, ``360_day``, ``proleptic_gregorian``, ``gregorian`` ...,
  decoded with cftime);
* variables are found by name or CF ``standard_name`` (cf-xarray);
* longitudes in 0..360 or -180..180 are normalised so that the requested region is contiguous
  (a region crossing the dateline or Greenwich works either way);
* SST in Kelvin is converted to degC;
* a variable with a vertical dimension (``thetao``) gives one level (``level=``/``level_index=``)
  or the 20 degC isotherm depth ``d20`` (:mod:`.vertical`);
* anomalies are taken from the monthly climatology (optionally after removing a linear trend);
* area weights (``cos(lat)`` or ``areacello``) and the ocean mask are attached as coordinates
  ``area`` and ``mask``; land stays NaN.

Anomalies, weights and the mask come from :mod:`bayesbridge.io.anomalies`.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Sequence
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    CalendarError,
    DataFileError,
    InputTypeError,
    InputValueError,
    TimeAxisError,
    VariableNotFoundError,
)
from bayesbridge.io.anomalies import anomalies as _anomalies
from bayesbridge.io.anomalies import area_weights, ocean_mask
from bayesbridge.io.stores import is_zarr_store, open_zarr_store
from bayesbridge.io.vertical import as_field, field_source
from bayesbridge.regions import Region, _check_coverage, get_region, grid_extent

__all__ = ["open_operational", "open_dataset", "normalize_longitudes", "select_region", "time_coder", "STANDARD_NAMES"]

_KELVIN = {"k", "kelvin", "degk", "deg_k", "degrees_k"}
_SST_NAMES = {"tos", "sst", "ts", "thetao"}
# CMIP6 names for the variables bayesbridge uses, and their CF standard names
STANDARD_NAMES = {
    "tos": "sea_surface_temperature",
    "zos": "sea_surface_height_above_geoid",
    "thetao": "sea_water_potential_temperature",
}


def time_coder() -> xr.coders.CFDatetimeCoder:
    """The time decoder used everywhere: cftime objects for every calendar."""
    return xr.coders.CFDatetimeCoder(use_cftime=True)


def _resolve_paths(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not items:
        raise DataFileError("paths: expected at least one file, got an empty list.")
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):  # a glob, alone or in a list (one per variable)
            matched = sorted(Path(p) for p in globlib.glob(text))
            if not matched:
                raise DataFileError(f"paths: the pattern {text!r} matches no file; check the folder and pattern.")
            paths.extend(matched)
        else:
            paths.append(Path(text))
    for p in paths:
        if not p.exists():
            raise DataFileError(f"paths: file {str(p)!r} does not exist; check the path.")
        if p.is_dir() and not is_zarr_store(p):
            raise DataFileError(f"paths: {str(p)!r} is a folder; pass a file, a list of files or a glob such as '{p}/*.nc'.")
    return paths


def open_dataset(path: str | os.PathLike, *, chunks: dict | None = None) -> xr.Dataset:
    """Open one netCDF file with cftime times, naming the file if it cannot be read.

    Parameters
    ----------
    path : str or os.PathLike
        The netCDF (or HDF5-based netCDF4) file.
    chunks : dict, optional
        Passed to :func:`xarray.open_dataset`: ``None`` (default) opens without dask, ``{}``
        lazily with the file's own chunks.

    Returns
    -------
    xarray.Dataset
        Lazily opened; times decoded as cftime objects (any calendar).

    Raises
    ------
    DataFileError
        If the file cannot be read as netCDF.
    """
    try:
        return xr.open_dataset(path, decode_times=time_coder(), chunks=chunks)
    except Exception as exc:  # netCDF4/h5netcdf raise many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "did not find a match" in reason:  # xarray: no backend recognises the file
            reason = "not a netCDF or HDF5 file"
        raise DataFileError(
            f"cannot read {str(path)!r} as netCDF ({type(exc).__name__}: {reason[:160]}); check that the "
            f"file is complete and is a netCDF/HDF5 file."
        ) from exc


def _calendar(ds: xr.Dataset) -> str | None:
    if "time" not in ds.coords or ds["time"].size == 0:
        return None
    enc = ds["time"].encoding.get("calendar")
    if enc:
        return str(enc)
    first = ds["time"].values[0]
    return getattr(first, "calendar", "proleptic_gregorian")


_CAL_ALIASES = {"standard": "gregorian", "365_day": "noleap", "366_day": "all_leap"}


def _open_many(paths: list[Path], lazy: bool | None = None) -> xr.Dataset:
    """Open and combine ``paths`` (netCDF files or zarr stores): in memory when they fit
    (``lazy=None`` decides from the metadata, :func:`_fits_in_memory`), else as dask arrays
    chunked like the files."""
    datasets = [open_zarr_store(p, decode_times=time_coder()) if is_zarr_store(p) else open_dataset(p)
                for p in paths]  # lazily indexed or (zarr) dask-backed, not yet read
    if lazy is None:
        lazy = sum(v.size * v.dtype.itemsize for ds in datasets for v in ds.data_vars.values()) >= (
            _memory_budget())
    if lazy:
        datasets = [ds.chunk({}) for ds in datasets]
    calendars = {}
    for p, ds in zip(paths, datasets, strict=True):
        cal = _calendar(ds)
        if cal is not None:
            calendars[p.name] = _CAL_ALIASES.get(cal, cal)
    if len(set(calendars.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in calendars.items())
        raise CalendarError(
            f"paths: the files use different calendars ({listing}); convert them to one calendar "
            f"first, e.g. with ds.convert_calendar('noleap')."
        )
    if len(datasets) == 1:
        return datasets[0]
    try:
        return xr.combine_by_coords(
            datasets, combine_attrs="drop_conflicts", data_vars="all", coords="minimal", compat="override", join="outer"
        )
    except ValueError as exc:
        raise TimeAxisError(
            f"paths: the {len(paths)} files cannot be combined along time ({exc}); check for "
            f"overlapping or duplicated periods."
        ) from exc


def _standardize_coords(ds: xr.Dataset) -> xr.Dataset:
    rename = {}
    for axis, target in (("latitude", "lat"), ("longitude", "lon"), ("time", "time")):
        if target in ds.coords or target in ds.dims:
            continue
        try:
            name = ds.cf[axis].name
        except KeyError:
            continue
        rename[name] = target
    if rename:
        ds = ds.rename(rename)
    for coord in ("lat", "lon"):
        if coord not in ds.coords:
            raise InputValueError(
                f"the dataset has no {coord} coordinate (coordinates: {', '.join(map(str, ds.coords)) or 'none'}); "
                f"bayesbridge expects a regular lat/lon grid — regrid curvilinear model output first."
            )
        if ds[coord].ndim != 1:
            raise InputValueError(
                f"{coord} is {ds[coord].ndim}-dimensional (a curvilinear grid); bayesbridge expects a "
                f"regular lat/lon grid — regrid first (e.g. with xesmf or cdo remapbil)."
            )
    return ds


def _check_time(ds: xr.Dataset) -> None:
    if "time" not in ds.dims:
        raise TimeAxisError(
            f"the dataset has no time dimension (dimensions: {', '.join(map(str, ds.dims))}); "
            f"bayesbridge needs fields on (time, lat, lon)."
        )
    t = ds["time"].values
    if t.size == 0:
        raise TimeAxisError("the time axis is empty; select a period that exists in the files.")
    values = np.asarray(t)  # cftime objects compare with < and ==
    dup = np.array([values[i] == values[i + 1] for i in range(values.size - 1)], dtype=bool)
    if dup.any():
        i = int(np.argmax(dup))
        raise TimeAxisError(
            f"the time axis has duplicated values (first at index {i + 1}: {values[i + 1]}); remove "
            f"overlapping files or drop duplicates with ds.drop_duplicates('time')."
        )
    dec = np.array([values[i] > values[i + 1] for i in range(values.size - 1)], dtype=bool)
    if dec.any():
        i = int(np.argmax(dec))
        raise TimeAxisError(
            f"the time axis is not monotonic (index {i + 1}: {values[i + 1]} comes after "
            f"{values[i]}); sort it with ds.sortby('time')."
        )


def _find_variable(ds: xr.Dataset, name: str) -> str:
    if name in ds.data_vars:
        return name
    wanted = {name, STANDARD_NAMES.get(name, name)}
    for var in ds.data_vars:
        if ds[var].attrs.get("standard_name") in wanted:
            return str(var)
    available = ", ".join(
        f"{v} ({ds[v].attrs['standard_name']})" if "standard_name" in ds[v].attrs else str(v)
        for v in ds.data_vars
    )
    raise VariableNotFoundError(
        f"variables: {name!r} not found by name or CF standard_name; the files contain "
        f"{available or 'no data variables'}."
    )


def _to_celsius(da: xr.DataArray, name: str) -> xr.DataArray:
    units = str(da.attrs.get("units", "")).strip().lower()
    is_sst = name in _SST_NAMES or "temperature" in str(da.attrs.get("standard_name", ""))
    if is_sst and units in _KELVIN:
        attrs = dict(da.attrs, units="degC")
        da = da - 273.15
        da.attrs = attrs
    return da


def normalize_longitudes(ds: xr.Dataset | xr.DataArray, convention: str = "0_360"):
    """Map longitudes to ``"0_360"`` or ``"-180_180"`` and sort them.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        Data with a ``lon`` coordinate (degrees east).
    convention : {"0_360", "-180_180"}
        Target range, ``[0, 360)`` or ``[-180, 180)``.

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        Same type, ``lon`` mapped and sorted increasing (its attributes kept).
    """
    if convention not in ("0_360", "-180_180"):
        raise InputValueError(f"convention: expected '0_360' or '-180_180', got {convention!r}.")
    lon = ds["lon"].values.astype(float)
    new = np.mod(lon, 360.0) if convention == "0_360" else (np.mod(lon + 180.0, 360.0) - 180.0)
    attrs = dict(ds["lon"].attrs)
    out = ds.assign_coords(lon=new)
    if new.size > 1 and not bool(np.all(np.diff(new) > 0)):  # sorting copies the data: only when needed
        out = out.sortby("lon")
    out["lon"].attrs = attrs
    return out


def select_region(ds: xr.Dataset | xr.DataArray, region: str | Region | tuple) -> xr.Dataset | xr.DataArray:
    """Cut ``ds`` to ``region``; raises :class:`GridCoverageError` with the grid's extent if not covered."""
    reg = get_region(region)
    ds = normalize_longitudes(ds, "-180_180" if reg.wraps else "0_360")
    _check_coverage(ds, reg)
    lat_ok = reg.contains_lat(ds["lat"].values)
    lon_ok = reg.contains_lon(ds["lon"].values)
    return ds.isel(lat=np.flatnonzero(lat_ok), lon=np.flatnonzero(lon_ok))


def open_operational(
    source,
    variables: Sequence[str] | str | None = None,
    region: str | Region | tuple | None = "tropical_pacific",
    *,
    anomalies: bool = True,
    detrend: bool = False,
    climatology: tuple[str, str] | None = None,
    areacello=None,
    time: tuple[str, str] | None = None,
    chunks: dict | None = None,
    level: float | None = None,
    level_index: int | None = None,
) -> xr.Dataset:
    """Open operational-model fields as anomalies on ``(time, lat, lon)``.

    Parameters
    ----------
    source : path, glob, list of paths or xarray.Dataset
        CF/CMIP6 netCDF files (one per variable and period is typical), zarr stores (folders
        ``*.zarr``, the layout of cloud CMIP6 collections; needs ``pip install
        'bayesbridge[zarr]'``) or a Dataset.
    variables : str or list of str, optional
        Names or CF standard names (``"tos"``, ``"sea_surface_temperature"``). Default: every
        variable on ``(time, lat, lon)``. ``"d20"`` (generally ``"d<T>"``) absent from the data is
        the 20 degC isotherm depth (m, positive down) derived from ``thetao`` on ``(time, lev,
        lat, lon)`` by :func:`bayesbridge.io.vertical.isotherm_depth`, then treated like ``zos``
        (anomalies included): ``variables=["tos", "d20"]``.
    region : str, Region, (lat_min, lat_max, lon_min, lon_max) or None
        Region to cut (default the tropical Pacific, 20S-20N, 120E-80W). ``None`` keeps the grid.
    anomalies : bool
        Subtract the monthly climatology (of ``climatology`` period, default the whole record).
    detrend : bool
        Remove a linear trend per grid point first.
    areacello : path or DataArray, optional
        Cell areas; default weights are ``cos(lat)``.
    time : (start, end), optional
        Period to keep, e.g. ``("1950-01", "2019-12")``.
    chunks : dict, optional
        Dask chunks (e.g. ``{"time": 120}``): keep the fields lazy. By default the fields are
        read into memory when they fit in a quarter of the available memory (the anomalies are
        then computed with vectorised numpy, without a task graph), and chunked by 120 time
        steps otherwise.
    level, level_index : float or int, optional
        Keep one level of every variable with a vertical dimension (a depth or pressure level),
        by value (``level``: depth in m positive down for depth levels, else in the coordinate's
        units; the nearest level) or by position (``level_index``); see
        :func:`bayesbridge.io.vertical.select_level`. Without them such a variable is refused,
        with a message naming its level dimension and these options.

    Returns
    -------
    xarray.Dataset
        Variables on ``(time, lat, lon)`` (float32; numpy in memory, or dask when lazy),
        coordinates ``area`` and ``mask``.
    """
    if isinstance(source, xr.Dataset):
        ds = source
    elif isinstance(source, str | os.PathLike | list | tuple):
        ds = _open_many(_resolve_paths(source), lazy=True if chunks is not None else None)
    else:
        raise InputTypeError(
            f"source: expected a path, a glob, a list of paths or an xarray.Dataset, got {type(source).__name__}."
        )
    ds = _standardize_coords(ds)
    _check_time(ds)
    if isinstance(variables, str):
        variables = [v.strip() for v in variables.split(",") if v.strip()]
    if variables is None:
        names = [str(v) for v in ds.data_vars if {"time", "lat", "lon"} <= set(ds[v].dims)]
        if not names:
            raise VariableNotFoundError(
                f"variables: no variable on (time, lat, lon) in the data; variables present: "
                f"{', '.join(map(str, ds.data_vars)) or 'none'}."
            )
        found = {n: n for n in names}
    else:
        found = {v: field_source(ds, v) or _find_variable(ds, v) for v in variables}
    fields = {}
    for out_name, src in found.items():
        da = as_field(ds[src], out_name, level=level, level_index=level_index)
        da = _to_celsius(da, out_name).transpose("time", "lat", "lon")
        fields[out_name] = da.astype("float32", copy=False)
    out = xr.Dataset(fields, attrs=dict(ds.attrs))
    if time is not None:
        out = out.sel(time=slice(*time))
        if out.sizes["time"] == 0:
            raise TimeAxisError(f"time: the period {time} is outside the data's time range.")
    if region is not None:
        out = select_region(out, region)
    else:
        out = normalize_longitudes(out, "0_360")
    out = out.load() if chunks is None and _fits_in_memory(out) else out.chunk(chunks or {"time": 120})
    for v in out.data_vars:
        if not bool(out[v].notnull().any()):
            raise AllMissingError(
                f"variables: {v!r} is NaN everywhere in region {get_region(region).name if region is not None else 'the grid'} "
                f"(grid extent {grid_extent(out)}); check the region, the land mask and the period."
            )
    if anomalies:
        out = _anomalies(out, detrend=detrend, climatology=climatology)
    if isinstance(areacello, str | os.PathLike):
        areacello = _find_areacello(open_dataset(areacello))
    area = area_weights(out, areacello)
    mask = ocean_mask(out)
    return out.assign_coords(area=area, mask=mask)


def _memory_budget(fraction: float = 0.25) -> float:
    """Bytes of fields read into memory at most: ``fraction`` of the available memory."""
    import psutil

    return fraction * psutil.virtual_memory().available


def _fits_in_memory(ds: xr.Dataset) -> bool:
    """Whether the variables of ``ds`` (in their dtype) fit in :func:`_memory_budget`."""
    return sum(v.size * v.dtype.itemsize for v in ds.data_vars.values()) < _memory_budget()


def _find_areacello(ds: xr.Dataset) -> xr.DataArray:
    ds = _standardize_coords(ds)
    for v in ds.data_vars:
        if v == "areacello" or ds[v].attrs.get("standard_name") == "cell_area":
            return normalize_longitudes(ds[v], "0_360")
    raise VariableNotFoundError(
        f"areacello: no 'areacello' or cell_area variable in the file; it contains {', '.join(map(str, ds.data_vars))}."
    )


