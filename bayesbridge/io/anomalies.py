"""Anomalies of monthly fields, area weights and the ocean mask.

Anomalies are taken from the monthly climatology of a base period, optionally after removing a
linear trend per grid point. Fields in memory are handled with vectorised numpy (one masked mean
per calendar month, then one gather-subtract); lazy (dask) fields are reduced block by block so
that data larger than memory never has to be held at once.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bayesbridge.errors import TimeAxisError

__all__ = ["anomalies", "area_weights", "ocean_mask"]


def area_weights(ds: xr.Dataset | xr.DataArray, areacello: xr.DataArray | None = None) -> xr.DataArray:
    """Cell weights ``(lat, lon)``: ``areacello`` when given (m2), else ``cos(lat)``.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        Data on a ``(lat, lon)`` grid (degrees).
    areacello : xarray.DataArray, optional
        Cell areas (``lat``/``lon`` or ``latitude``/``longitude`` dims), interpolated to the
        grid of ``ds`` by nearest neighbour.

    Returns
    -------
    xarray.DataArray
        ``area`` on ``(lat, lon)``, float64.
    """
    if areacello is not None:
        area = areacello
        if "latitude" in area.dims or "longitude" in area.dims:
            area = area.rename({k: v for k, v in (("latitude", "lat"), ("longitude", "lon")) if k in area.dims})
        area = area.interp_like(ds[["lat", "lon"]] if isinstance(ds, xr.Dataset) else ds, method="nearest")
        attrs = {"long_name": "grid-cell area", "units": areacello.attrs.get("units", "m2")}
    else:
        area = np.cos(np.deg2rad(ds["lat"])) * xr.ones_like(ds["lon"], dtype=float)
        attrs = {"long_name": "area weight cos(latitude)", "units": "1"}
    area = area.transpose("lat", "lon").astype(float)
    area.attrs = attrs
    return area.rename("area")


def ocean_mask(ds: xr.Dataset) -> xr.DataArray:
    """``(lat, lon)`` True where every variable has at least one finite value in time.

    Parameters
    ----------
    ds : xarray.Dataset
        Fields on ``(time, lat, lon)``; variables without ``time`` are ignored.

    Returns
    -------
    xarray.DataArray
        Boolean ``mask`` on ``(lat, lon)``, computed (in memory) even for lazy input.
    """
    masks = [ds[v].notnull().any("time") for v in ds.data_vars if "time" in ds[v].dims]
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    mask = mask.transpose("lat", "lon").compute()
    mask.attrs = {"long_name": "ocean (valid) grid points", "flag_meanings": "land ocean", "flag_values": "0 1"}
    return mask.rename("mask")


def _time_in_years(time: xr.DataArray) -> xr.DataArray:
    # Fractional years since the first time step, for calendars without numpy datetimes.
    import cftime

    t = time.values
    cal = getattr(t[0], "calendar", "standard") or "standard"
    days = cftime.date2num(list(t), "days since 0001-01-01", calendar=cal)
    days = np.asarray(days, dtype=float)
    return xr.DataArray((days - days[0]) / 365.25, dims="time", coords={"time": time})


_CLIM_BLOCK_MB = 32.0


def _in_memory(obj: xr.Dataset | xr.DataArray) -> bool:
    """Whether every array of ``obj`` is a numpy array on ``(time, ...)``."""
    arrays = list(obj.data_vars.values()) if isinstance(obj, xr.Dataset) else [obj]
    return bool(arrays) and all(a.chunks is None and a.dims[:1] == ("time",) for a in arrays)


def _month_index(time: xr.DataArray) -> np.ndarray:
    """Calendar month (0..11) of each time step."""
    return np.asarray(time.dt.month.values, dtype=np.intp) - 1


def _month_slices(month: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
    """``(m, rows)`` for every calendar month ``m`` present: strided slices (views) when the months
    run consecutively (the rows of a month are then every 12th step), else boolean masks."""
    consecutive = month.size < 2 or bool(np.all(np.diff(month) % 12 == 1))
    if consecutive:
        return [(int(month[k]), slice(k, None, 12)) for k in range(min(12, month.size))]
    return [(int(m), month == m) for m in np.unique(month)]


def _numpy_anomalies(out: xr.Dataset | xr.DataArray, base: xr.Dataset | xr.DataArray):
    """``out`` minus the monthly climatology of ``base``, both numpy-backed on ``(time, ...)``.

    The climatology of month ``m`` is the NaN-skipping mean over the base period's steps of that
    month, accumulated in float64; it is subtracted in place from a copy of each array, in its
    dtype, which the result keeps. Consecutive months are reached as strided views (every 12th
    step), so no step is gathered or copied one by one.
    """
    rows_out, rows_base = _month_slices(_month_index(out["time"])), _month_slices(_month_index(base["time"]))

    def one(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        x = np.asarray(b.values)
        clim = np.full((12, *x.shape[1:]), np.nan)
        for m, rows in rows_base:
            sel = x[rows]
            n = np.isfinite(sel).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                clim[m] = np.where(n > 0, np.nansum(sel, axis=0, dtype=np.float64) / n, np.nan)
        values = np.asarray(a.values)
        out_values = values.copy()
        for m, rows in rows_out:
            out_values[rows] -= clim[m].astype(values.dtype)
        return a.copy(data=out_values)

    if isinstance(out, xr.Dataset):
        return out.copy(data={v: one(out[v], base[v]).values for v in out.data_vars})
    return one(out, base)


def _monthly_climatology(base: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Mean of each calendar month (dimension ``month``), NaN-skipping.

    Lazy (dask) data is reduced in one pass over blocks of time steps (about 32 MiB of float64
    each) and returned in memory: every chunk of the anomalies then depends on its own data only,
    so later passes over data larger than memory hold one block, not the whole record (a lazy
    climatology would make dask keep every chunk until the mean is known).
    """
    arrays = list(base.data_vars.values()) if isinstance(base, xr.Dataset) else [base]
    lazy = any(a.chunks is not None for a in arrays)
    if not lazy or not arrays or any(a.dims[:1] != ("time",) for a in arrays):
        clim = base.groupby("time.month").mean("time")
        return clim.compute() if lazy else clim
    months = np.asarray(base["time"].dt.month.values)
    present = np.unique(months)
    per_step = sum(a.size // max(a.sizes["time"], 1) for a in arrays) * 8
    block = max(1, int(_CLIM_BLOCK_MB * 2**20 // max(per_step, 1)))
    sums = [np.zeros((present.size, *a.shape[1:])) for a in arrays]
    counts = [np.zeros((present.size, *a.shape[1:])) for a in arrays]
    for start in range(0, months.size, block):
        rows = np.searchsorted(present, months[start: start + block])
        for k, a in enumerate(arrays):
            x = np.asarray(a.isel(time=slice(start, start + block)).values, dtype=float)
            for row in np.unique(rows):
                xm = x[rows == row]
                finite = np.isfinite(xm)
                sums[k][row] += np.where(finite, xm, 0.0).sum(axis=0)
                counts[k][row] += finite.sum(axis=0)
    out = []
    for a, total, n in zip(arrays, sums, counts, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / n, np.nan).astype(a.dtype)
        coords = {c: a[c] for c in a.coords if "time" not in a[c].dims}
        out.append(xr.DataArray(mean, dims=("month", *a.dims[1:]), coords={**coords, "month": present}, name=a.name))
    return xr.merge(out, compat="no_conflicts") if isinstance(base, xr.Dataset) else out[0]


def anomalies(
    ds: xr.Dataset | xr.DataArray,
    *,
    detrend: bool = False,
    climatology: tuple[str, str] | None = None,
) -> xr.Dataset | xr.DataArray:
    """Monthly-climatology anomalies, optionally after removing a linear trend per grid point.

    .. math:: x'(t) = x(t) - \\bar x_{m(t)}, \\qquad
              \\bar x_m = \\operatorname{mean}\\{x(s): \\operatorname{month}(s) = m,\\ s \\in P\\}

    with base period ``P = climatology`` (default: the whole record).

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        Monthly data with a ``time`` dimension (cftime or numpy times), any other dims; lazy
        (dask) input is supported.
    detrend : bool
        First remove a least-squares linear trend in time per grid point (NaN-skipping), keeping
        the time mean, so the climatology is that of the detrended data.
    climatology : (str, str), optional
        Base period ``(start, end)``, e.g. ``("1981-01", "2010-12")``.

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        Anomalies with the dims and coordinates of ``ds``.

    Raises
    ------
    TimeAxisError
        If the base period holds no time step.
    """
    out = ds
    if detrend:
        years = _time_in_years(out["time"])
        work = out.assign_coords(_years=years).swap_dims({"time": "_years"})
        if work.chunks:
            work = work.chunk({"_years": -1})
        fit = work.polyfit("_years", deg=1, skipna=True)
        names = list(out.data_vars) if isinstance(out, xr.Dataset) else [None]
        if isinstance(out, xr.Dataset):
            trend = xr.Dataset(
                {v: xr.polyval(years, fit[f"{v}_polyfit_coefficients"]) for v in names}
            )
        else:
            trend = xr.polyval(years, fit["polyfit_coefficients"])
        trend = trend - trend.mean("time")
        out = out - trend.drop_vars([c for c in trend.coords if c not in ("time", "lat", "lon")], errors="ignore")
    base = out if climatology is None else out.sel(time=slice(*climatology))
    if base.sizes.get("time", 0) == 0:
        raise TimeAxisError(f"climatology: the base period {climatology} has no time steps in the data.")
    if _in_memory(out):
        anom = _numpy_anomalies(out, base)
    else:
        clim = _monthly_climatology(base)
        anom = out.groupby("time.month") - clim
        anom = anom.drop_vars("month", errors="ignore")
    if isinstance(ds, xr.Dataset):
        for v in anom.data_vars:
            anom[v].attrs = dict(ds[v].attrs)
            anom[v].attrs["long_name"] = f"{ds[v].attrs.get('long_name', v)} anomaly"
    else:
        anom.attrs = dict(ds.attrs)
    return anom
