"""Stacking of multivariate anomaly fields into the ``(time, n_points)`` matrix codecs work on.

Every codec sees the fields through one :class:`FieldStacker`: the ocean points of each
variable, standardised and area weighted, side by side in one vector. With ``j`` an ocean point
of variable ``v`` at latitude :math:`\\varphi_j`,

.. math::

    \\tilde x_j(t) = \\frac{x_j(t) - \\bar x_j}{s_v} \\sqrt{\\frac{w_j}{\\bar w_v}},
    \\qquad w_j = \\cos \\varphi_j,
    \\qquad s_v^2 = \\frac{\\sum_{j \\in v} w_j \\operatorname{var}(x_j)}{\\sum_{j \\in v} w_j},

where :math:`\\bar x_j` is the training mean, :math:`\\bar w_v` the mean weight over the points of
``v``. So a plain sum of squares of :math:`\\tilde x` is an area-weighted sum in which every
variable has unit variance per point on average (North et al. 1982, *Mon. Wea. Rev.* 110, 699;
the ``sqrt(cos lat)`` weighting of EOF analysis). The inverse is
``x = x_tilde * scale + mean`` with ``scale_j = s_v sqrt(w_bar_v / w_j)``: decoders return
physical anomaly units through it.

Land is wherever a variable is NaN at every time step (or outside an explicit ``mask``); any
other NaN is an error that names how many values are missing and where.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from bayesbridge.regions import Region

__all__ = ["FieldStacker", "DataSplit", "split_years", "as_dataset", "iter_time_blocks", "is_lazy"]

_GRID_TOL = 1e-6


def as_dataset(fields: xr.Dataset | xr.DataArray, argument: str = "fields") -> xr.Dataset:
    """Return ``fields`` as a Dataset (a named DataArray becomes a one-variable Dataset); errors name it ``argument``."""
    if isinstance(fields, xr.DataArray):
        if fields.name is None:
            raise InputTypeError(
                f"{argument}: got an unnamed xarray.DataArray; name it (da.rename('tos')) or pass "
                f"an xarray.Dataset of anomaly fields on (time, lat, lon)."
            )
        return fields.to_dataset()
    if not isinstance(fields, xr.Dataset):
        raise InputTypeError(
            f"{argument}: expected an xarray.Dataset of anomaly fields on (time, lat, lon), got "
            f"{type(fields).__name__}."
        )
    return fields


def _field_array(ds: xr.Dataset, name: str, argument: str) -> xr.DataArray:
    if name not in ds:
        raise VariableNotFoundError(
            f"{argument}: variable {name!r} is missing; the Dataset has "
            f"{', '.join(map(str, ds.data_vars)) or 'no variables'}. Pass fields with the "
            f"variables the codec was fitted on."
        )
    da = ds[name]
    missing = {"time", "lat", "lon"} - set(da.dims)
    extra = set(da.dims) - {"time", "lat", "lon"}
    if missing or extra:
        raise ShapeMismatchError(
            f"{argument}[{name!r}]: expected dimensions (time, lat, lon), got {da.dims}; "
            f"rename or select dimensions first (e.g. .isel(lev=0), .rename(latitude='lat'))."
        )
    return da.transpose("time", "lat", "lon")


def is_lazy(fields: xr.Dataset | xr.DataArray) -> bool:
    """True when any variable of ``fields`` is backed by a dask array (not loaded)."""
    ds = fields.to_dataset() if isinstance(fields, xr.DataArray) and fields.name is not None else fields
    if isinstance(ds, xr.DataArray):
        return ds.chunks is not None
    return any(v.chunks is not None for v in ds.data_vars.values())


def _names_and_grid(ds: xr.Dataset, variables) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    names = tuple(variables) if variables is not None else tuple(map(str, ds.data_vars))
    if not names:
        raise InputValueError("fields: the Dataset has no data variables; pass anomaly fields.")
    first = _field_array(ds, names[0], "fields")
    return names, np.asarray(first["lat"].values, dtype=float), np.asarray(first["lon"].values, dtype=float)


def _ocean(name: str, valid: np.ndarray, mask: xr.DataArray | None) -> np.ndarray:
    ocean = valid if mask is None else valid & np.asarray(mask.transpose("lat", "lon").values, dtype=bool)
    if not ocean.any():
        raise AllMissingError(
            f"fields[{name!r}]: every grid point is NaN (or outside mask); check the "
            f"variable, the land mask and the time selection."
        )
    return ocean


def _point_scale(name: str, lat: np.ndarray, ocean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``scale_j = s_v sqrt(w_bar / w_j)`` from the per-point variances ``var`` of variable ``name``."""
    w = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], ocean.shape)[ocean]
    s_v = float(np.sqrt(np.sum(w * var) / np.sum(w)))
    if not s_v > 0:
        raise InputValueError(
            f"fields[{name!r}]: the variable is constant in time; it carries no anomaly "
            f"signal. Drop it from variables=."
        )
    return s_v * np.sqrt(w.mean() / w)


BLOCK_MB = 32.0
"""Default size (MiB, as float64) of one block of time steps in :func:`iter_time_blocks`."""


def iter_time_blocks(fields: xr.Dataset, block_steps: int | None = None):
    """Yield ``(start, block)``: consecutive time slices of ``fields``, computed one at a time.

    ``block_steps`` defaults to as many steps as fit in :data:`BLOCK_MB` MiB of float64 values.
    Each block is loaded into memory (``.load()``) before it is yielded, so at most one block of
    a lazy dataset is resident at a time.
    """
    n = fields.sizes["time"]
    if block_steps is None:
        per_step = sum(v.size // max(v.sizes.get("time", 1), 1) for v in fields.data_vars.values()) * 8
        block_steps = max(1, int(BLOCK_MB * 2**20 // max(per_step, 1)))
    if not (isinstance(block_steps, int | np.integer) and block_steps >= 1):
        raise InputValueError(f"block_steps: expected a positive integer, got {block_steps!r}.")
    for start in range(0, n, int(block_steps)):
        yield start, fields.isel(time=slice(start, start + int(block_steps))).load()


@dataclass
class FieldStacker:
    """Standardise, weight and stack fields ``(time, lat, lon)`` per variable into ``(time, n_points)``.

    Build it with :meth:`fit`; all arrays are float64.

    Attributes
    ----------
    variables : tuple of str
        Variable names, in stacking order.
    lat, lon : numpy.ndarray
        Grid coordinates ``(n_lat,)``, ``(n_lon,)``.
    mask : dict of str to numpy.ndarray
        Boolean ocean mask ``(n_lat, n_lon)`` per variable.
    mean, scale : numpy.ndarray
        ``(n_points,)``; physical value ``= normalised * scale + mean``.
    units : dict of str to str
        Units of each variable (from its ``units`` attribute, ``""`` if none).
    """

    variables: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    mask: dict[str, np.ndarray]
    mean: np.ndarray
    scale: np.ndarray
    units: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls,
        fields: xr.Dataset | xr.DataArray,
        variables: tuple[str, ...] | list[str] | None = None,
        mask: xr.DataArray | None = None,
    ) -> FieldStacker:
        """Learn mask, mean and scale from training fields.

        Parameters
        ----------
        fields : xarray.Dataset
            Anomaly fields ``(time, lat, lon)``, NaN over land.
        variables : sequence of str, optional
            Variables to use (default: every data variable).
        mask : xarray.DataArray, optional
            Boolean ``(lat, lon)`` ocean mask applied to every variable on top of the NaN mask.
        """
        ds = as_dataset(fields)
        names, lat, lon = _names_and_grid(ds, variables)
        masks, means, scales, units = {}, [], [], {}
        for name in names:
            da = _field_array(ds, name, "fields")
            values = np.asarray(da.values, dtype=float)
            ocean = _ocean(name, np.isfinite(values).any(axis=0), mask)
            masks[name] = ocean
            units[name] = str(da.attrs.get("units", ""))
            stacked = values[:, ocean]
            _check_finite(stacked, name, ocean, lat, lon, da["time"].values, "fields")
            means.append(stacked.mean(axis=0))
            scales.append(_point_scale(name, lat, ocean, stacked.var(axis=0)))
        return cls(names, lat, lon, masks, np.concatenate(means), np.concatenate(scales), units)

    @classmethod
    def fit_streaming(
        cls,
        fields: xr.Dataset | xr.DataArray,
        variables: tuple[str, ...] | list[str] | None = None,
        mask: xr.DataArray | None = None,
        block_steps: int | None = None,
    ) -> FieldStacker:
        """:meth:`fit` in one pass over blocks of time steps (for lazy data larger than memory).

        Per grid point, the count, mean and sum of squared deviations of the finite values are
        merged block by block (Chan, Golub & LeVeque 1983, *Am. Stat.* 37, 242), so the result
        equals :meth:`fit` up to rounding while only one block (:func:`iter_time_blocks`) is in
        memory.

        Parameters
        ----------
        fields : xarray.Dataset or xarray.DataArray
            Anomaly fields ``(time, lat, lon)``, NaN over land; typically dask-backed.
        variables : sequence of str, optional
            Variables to use (default: every data variable).
        mask : xarray.DataArray, optional
            Boolean ``(lat, lon)`` ocean mask applied to every variable on top of the NaN mask.
        block_steps : int, optional
            Time steps per block (default: :data:`BLOCK_MB` MiB of float64 values per block).

        Returns
        -------
        FieldStacker
            The fitted stacker (float64 ``mean`` and ``scale``, ``(n_points,)``).
        """
        ds = as_dataset(fields)
        names, lat, lon = _names_and_grid(ds, variables)
        arrays = {name: _field_array(ds, name, "fields") for name in names}
        shape = (lat.size, lon.size)
        count = {n: np.zeros(shape) for n in names}
        mean = {n: np.zeros(shape) for n in names}
        m2 = {n: np.zeros(shape) for n in names}
        sub = xr.Dataset({n: a for n, a in arrays.items()})
        for _, block in iter_time_blocks(sub, block_steps):
            for name in names:
                vals = np.asarray(block[name].values, dtype=float)
                finite = np.isfinite(vals)
                cnt_b = finite.sum(axis=0).astype(float)
                safe = np.maximum(cnt_b, 1.0)
                mean_b = np.where(finite, vals, 0.0).sum(axis=0) / safe
                m2_b = (np.where(finite, vals - mean_b, 0.0) ** 2).sum(axis=0)
                total = count[name] + cnt_b
                delta = mean_b - mean[name]
                frac = np.divide(cnt_b, total, out=np.zeros(shape), where=total > 0)
                mean[name] += delta * frac
                m2[name] += m2_b + delta**2 * count[name] * frac
                count[name] = total
        n_time = ds.sizes["time"]
        masks, means, scales, units = {}, [], [], {}
        for name in names:
            ocean = _ocean(name, count[name] > 0, mask)
            partial = ocean & (count[name] < n_time)
            if partial.any():
                ii, jj = np.nonzero(partial)
                where = ", ".join(f"(lat={lat[i]:g}, lon={lon[j]:g})" for i, j in list(zip(ii, jj, strict=True))[:5])
                raise InputValueError(
                    f"fields[{name!r}]: {int(n_time * partial.sum() - count[name][partial].sum())} NaN/inf values "
                    f"at {int(partial.sum())} ocean points (points that are valid at other times), e.g. {where}. "
                    f"Fill or interpolate the gaps, or pass mask= to exclude those points."
                )
            masks[name] = ocean
            units[name] = str(arrays[name].attrs.get("units", ""))
            means.append(mean[name][ocean])
            scales.append(_point_scale(name, lat, ocean, m2[name][ocean] / n_time))
        return cls(names, lat, lon, masks, np.concatenate(means), np.concatenate(scales), units)

    # ------------------------------------------------------------------ properties
    @property
    def n_points(self) -> int:
        """Number of stacked ocean points over all variables."""
        return int(self.mean.size)

    @property
    def points(self) -> pd.MultiIndex:
        """``(variable, lat, lon)`` of every stacked point, in stacking order."""
        tuples = []
        for name in self.variables:
            ii, jj = np.nonzero(self.mask[name])
            tuples.extend((name, float(self.lat[i]), float(self.lon[j])) for i, j in zip(ii, jj, strict=True))
        return pd.MultiIndex.from_tuples(tuples, names=["variable", "lat", "lon"])

    @property
    def slices(self) -> dict[str, slice]:
        """Position of each variable's points along the stacked axis."""
        out, start = {}, 0
        for name in self.variables:
            n = int(self.mask[name].sum())
            out[name] = slice(start, start + n)
            start += n
        return out

    @property
    def area_weights(self) -> np.ndarray:
        """``cos(lat)`` of every stacked point, ``(n_points,)``."""
        coslat = np.cos(np.deg2rad(self.lat))[:, None]
        return np.concatenate(
            [np.broadcast_to(coslat, self.mask[v].shape)[self.mask[v]] for v in self.variables]
        )

    # ------------------------------------------------------------------ transforms
    def check_grid(self, ds: xr.Dataset, argument: str = "fields") -> None:
        """Raise :class:`ShapeMismatchError` unless ``ds`` is on the fitted grid.

        Parameters
        ----------
        ds : xarray.Dataset
            Fields ``(time, lat, lon)``; the grid of the first fitted variable is compared with
            the fitted ``lat`` and ``lon`` (tolerance 1e-6 degrees).
        argument : str
            Name of the argument reported in error messages (default ``"fields"``).
        """
        da = _field_array(ds, self.variables[0], argument)
        lat = np.asarray(da["lat"].values, dtype=float)
        lon = np.asarray(da["lon"].values, dtype=float)
        if lat.shape != self.lat.shape or lon.shape != self.lon.shape or not (
            np.allclose(lat, self.lat, atol=_GRID_TOL) and np.allclose(lon, self.lon, atol=_GRID_TOL)
        ):
            raise ShapeMismatchError(
                f"{argument}: grid lat {lat.min():g}..{lat.max():g} x lon {lon.min():g}..{lon.max():g} "
                f"({lat.size} x {lon.size}) differs from the fitted grid lat {self.lat.min():g}.."
                f"{self.lat.max():g} x lon {self.lon.min():g}..{self.lon.max():g} "
                f"({self.lat.size} x {self.lon.size}); regrid the fields or refit the codec."
            )

    def stack(self, fields: xr.Dataset | xr.DataArray, argument: str = "fields") -> np.ndarray:
        """Physical values of the ocean points, ``(time, n_points)`` float64.

        Parameters
        ----------
        fields : xarray.Dataset or xarray.DataArray
            Anomaly fields ``(time, lat, lon)`` holding (at least) the fitted variables on the
            fitted grid; a DataArray must be named.
        argument : str
            Name of the argument reported in error messages (default ``"fields"``).

        Returns
        -------
        numpy.ndarray
            ``(time, n_points)`` float64 values of the masked points, variables side by side in
            stacking order (not normalised).

        Raises
        ------
        InputValueError
            When a stacked ocean point is NaN or infinite at some time step.
        """
        ds = as_dataset(fields, argument)
        self.check_grid(ds, argument)
        blocks = []
        for name in self.variables:
            da = _field_array(ds, name, argument)
            block = np.asarray(da.values, dtype=float)[:, self.mask[name]]
            _check_finite(block, name, self.mask[name], self.lat, self.lon, da["time"].values, argument)
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    def transform(self, fields: xr.Dataset | xr.DataArray, argument: str = "fields") -> np.ndarray:
        """Normalised, weighted stacked fields ``(time, n_points)``.

        ``fields`` and ``argument`` are as in :meth:`stack` (fields ``(time, lat, lon)`` on the
        fitted grid; ``argument`` is the name used in error messages).

        Returns
        -------
        numpy.ndarray
            ``(time, n_points)`` float64, ``(stack(fields) - mean) / scale``.
        """
        return (self.stack(fields, argument) - self.mean) / self.scale

    def unstack(
        self,
        values: np.ndarray,
        dims: tuple[str, ...],
        coords: dict | None = None,
        dtype: type = np.float32,
    ) -> xr.Dataset:
        """Physical stacked values ``(..., n_points)`` to a Dataset of ``(..., lat, lon)`` fields.

        ``dims`` names the leading dimensions of ``values``; land points are NaN.

        Parameters
        ----------
        values : array_like
            Stacked physical values ``(..., n_points)``.
        dims : tuple of str
            Names of the leading dimensions ``...`` of ``values`` (one per leading axis).
        coords : dict, optional
            Coordinates to assign to the result (e.g. ``{"time": ...}`` for the leading dims).
        dtype : numpy dtype
            Dtype of the output fields (default ``numpy.float32``).

        Returns
        -------
        xarray.Dataset
            One variable per fitted variable on ``(..., lat, lon)``, with its ``units``
            attribute and CF attributes on ``lat`` and ``lon``.
        """
        values = np.asarray(values)
        lead = values.shape[:-1]
        out = {}
        for name, sl in self.slices.items():
            grid = np.full((*lead, self.lat.size, self.lon.size), np.nan, dtype=dtype)
            grid[..., self.mask[name]] = values[..., sl]
            attrs = {"units": self.units.get(name, "")} if self.units.get(name) else {}
            out[name] = xr.DataArray(grid, dims=(*dims, "lat", "lon"), attrs=attrs)
        ds = xr.Dataset(out, coords={"lat": self.lat, "lon": self.lon})
        if coords:
            ds = ds.assign_coords(coords)
        ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
        ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
        return ds

    def box_weights(self, region: str | Region, variable: str | None = None) -> np.ndarray:
        """Row ``(n_points,)`` of a box-average operator: stacked-physical @ row = box index.

        ``variable`` defaults to the region's own variable (``tos`` for Nino boxes, ``zos`` for
        ``h_w``). Uses :func:`bayesbridge.regions.point_box_weights` on the stacked points.
        """
        from bayesbridge.regions import point_box_weights

        return point_box_weights(self.points, region, variable, lat=self.lat, lon=self.lon)

    # ------------------------------------------------------------------ serialisation
    def to_metadata(self) -> dict:
        """JSON-serialisable description (grid, masks, variables, normalisation)."""
        return {
            "variables": list(self.variables),
            "lat": self.lat.tolist(),
            "lon": self.lon.tolist(),
            "mask": {k: v.astype(int).tolist() for k, v in self.mask.items()},
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "units": dict(self.units),
        }

    @classmethod
    def from_metadata(cls, meta: dict) -> FieldStacker:
        """Inverse of :meth:`to_metadata`.

        Parameters
        ----------
        meta : dict
            Mapping as written by :meth:`to_metadata` (keys ``variables``, ``lat``, ``lon``,
            ``mask``, ``mean``, ``scale`` and optionally ``units``).

        Returns
        -------
        FieldStacker
            The stacker, with float64 arrays and boolean masks.
        """
        return cls(
            tuple(meta["variables"]),
            np.asarray(meta["lat"], dtype=float),
            np.asarray(meta["lon"], dtype=float),
            {k: np.asarray(v, dtype=bool) for k, v in meta["mask"].items()},
            np.asarray(meta["mean"], dtype=float),
            np.asarray(meta["scale"], dtype=float),
            dict(meta.get("units", {})),
        )

    def check_compatible(self, fields: xr.Dataset | xr.DataArray, argument: str = "fields") -> None:
        """Raise a clear error unless ``fields`` has this stacker's variables, grid and ocean mask.

        Parameters
        ----------
        fields : xarray.Dataset or xarray.DataArray
            Fields ``(time, lat, lon)`` to check; the ocean mask is where a variable is finite
            at some time step.
        argument : str
            Name of the argument reported in error messages (default ``"fields"``).

        Raises
        ------
        VariableNotFoundError
            When a fitted variable is missing.
        ShapeMismatchError
            When the grid or a variable's ocean mask differs from the fitted one.
        """
        ds = as_dataset(fields, argument)
        absent = [v for v in self.variables if v not in ds]
        if absent:
            raise VariableNotFoundError(
                f"{argument}: the codec was saved for variables {list(self.variables)}, but "
                f"{absent} are missing from the Dataset (it has {list(map(str, ds.data_vars))}); "
                f"pass fields with the same variables or refit."
            )
        self.check_grid(ds, argument)
        for name in self.variables:
            ocean = np.isfinite(np.asarray(_field_array(ds, name, argument).values)).any(axis=0)
            if not np.array_equal(ocean, self.mask[name]):
                raise ShapeMismatchError(
                    f"{argument}[{name!r}]: ocean mask has {int(ocean.sum())} points, the saved "
                    f"codec's has {int(self.mask[name].sum())} ({int((ocean != self.mask[name]).sum())} "
                    f"differ); use fields with the same land mask or refit."
                )


def _check_finite(block, name, ocean, lat, lon, times, argument) -> None:
    bad = ~np.isfinite(block)
    if not bad.any():
        return
    ti, pj = np.nonzero(bad)
    ii, jj = np.nonzero(ocean)
    where = ", ".join(
        f"(time={pd.Timestamp(times[t]) if np.issubdtype(np.asarray(times).dtype, np.datetime64) else times[t]}, "
        f"lat={lat[ii[p]]:g}, lon={lon[jj[p]]:g})"
        for t, p in list(zip(ti, pj, strict=True))[:5]
    )
    raise InputValueError(
        f"{argument}[{name!r}]: {int(bad.sum())} NaN/inf values at {len(np.unique(pj))} ocean points "
        f"(points that are valid at other times), e.g. {where}. Fill or interpolate the gaps, or "
        f"pass mask= to exclude those points."
    )


@dataclass(frozen=True)
class DataSplit:
    """A split of a time series by whole calendar years.

    Attributes
    ----------
    train, validation : numpy.ndarray
        Integer time positions of the two parts.
    validation_years : tuple of int
        The calendar years held out.
    """

    train: np.ndarray
    validation: np.ndarray
    validation_years: tuple[int, ...]


def split_years(time: xr.DataArray, validation: float, min_steps: int = 2) -> DataSplit:
    """Hold out the last ``validation`` fraction of calendar years (at least one year).

    A contiguous final block keeps the held-out years out of the training years' serial
    correlation (a random choice of years would leak persistence across the split).

    Raises
    ------
    InputValueError
        When there are fewer than two calendar years, or either part has fewer than
        ``min_steps`` time steps.
    """
    if not 0.0 < validation < 1.0:
        raise InputValueError(f"validation: expected a fraction in (0, 1), got {validation}.")
    try:
        years = np.asarray(time.dt.year.values)
    except (AttributeError, TypeError) as err:
        raise TimeAxisError(
            f"time: a validation split by years needs a datetime (or cftime) time axis, got "
            f"dtype {time.dtype}; decode times (xr.decode_cf) or pass dates."
        ) from err
    unique = np.unique(years)
    n_val = max(1, int(round(validation * unique.size)))
    val_years = unique[unique.size - n_val :]
    is_val = np.isin(years, val_years)
    n_train, n_validation = int((~is_val).sum()), int(is_val.sum())
    if unique.size < 2 or n_train < min_steps or n_validation < min_steps:
        raise InputValueError(
            f"fields: {years.size} time steps in {unique.size} calendar year(s) are too few for a "
            f"validation split of {validation:.0%} of the years with at least {min_steps} steps in "
            f"each part (got {n_train} train, {n_validation} validation); pass at least "
            f"{max(2, int(np.ceil(1 / validation)))} years of data or a different validation fraction."
        )
    return DataSplit(np.nonzero(~is_val)[0], np.nonzero(is_val)[0], tuple(int(y) for y in val_years))
