"""Observation operators: linear functionals of decoded fields, in observation units.

An operator maps a field ``x`` (one variable on ``(lat, lon)``) to ``m`` observables,

.. math:: y_k = s \\sum_{i, j} w_{k, ij}\\, x_{ij}, \\qquad k = 1 \\dots m,

with ``s`` the operator's :attr:`~ObservationOperator.scale` (observation units per field unit)
and weights ``w`` that are zero on land and outside the operator's support. Kinds:

* :class:`BoxOperator` - the area-weighted mean over a latitude/longitude box (the Nino boxes,
  ``h_w``; :func:`bayesbridge.regions.box_weights`), one row;
* :class:`PointOperator` - values at points (moorings), nearest grid point or bilinear between
  the four surrounding points (land corners dropped, the rest renormalised), one row per point;
* :class:`ProfileOperator` - a zonal profile (the 5S-5N mean along longitude at given
  longitudes: the area-weighted band mean of each grid column, linearly interpolated in
  longitude between the two columns around each requested longitude) or a meridional one
  (the same with latitude and longitude swapped), one row per position;
* :class:`LinearOperator` - user-supplied weights on ``(row?, lat, lon)``;
* :class:`ContrastOperator` - one operator minus a linear combination of others (the shape
  of a profile once its box means are accounted for, :func:`bayesbridge.idealized.equatorial_sst_operator`).

Every operator carries its name, variable, units, scale, an observation-error floor (per row
or one value) and the name and coordinate of its row dimension (``None`` for one row). The
representation error of a codec is estimated per row by the bridge from the codec's residuals
on the operational training data (:meth:`ObservationOperator.apply` on residual fields, or
:meth:`ObservationOperator.rows` on its stacked points).

Longitudes of operators are degrees east in 0..360 or -180..180; grids of either convention are
compared in 0..360. An operator whose support is outside the grid raises
:class:`~bayesbridge.errors.GridCoverageError` with the grid's extent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    GridCoverageError,
    InputTypeError,
    InputValueError,
    ShapeMismatchError,
    VariableNotFoundError,
    check_choice,
)
from bayesbridge.regions import Region, box_weights, get_region, grid_of_points

__all__ = [
    "ObservationOperator",
    "BoxOperator",
    "PointOperator",
    "ProfileOperator",
    "LinearOperator",
    "ContrastOperator",
]


def _extent(lat: np.ndarray, lon: np.ndarray) -> str:
    return (f"lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}..{lon.max():g} "
            f"({lat.size} x {lon.size} points)")


@dataclass(frozen=True)
class ObservationOperator:
    """Base of every operator: a linear functional of one field variable, in observation units.

    Parameters
    ----------
    name : str
        The observable's name (``"nino3"``, ``"eq_sst"``).
    variable : str
        The field variable it reads (``"tos"``, ``"zos"``, ``"d20"``).
    units : str, optional
        Units of the observable (default: the field's).
    scale : float
        Observation units per field unit (150 m per m of ``zos`` for ``h_w``).
    error_floor : float or tuple of float
        Floor of the observation-error standard deviation, one value or one per row
        (observation units).
    """

    name: str
    variable: str = "tos"
    units: str | None = None
    scale: float = 1.0
    error_floor: float | tuple[float, ...] = 0.15

    # ----------------------------------------------------------- interface of the kinds
    @property
    def row_dim(self) -> str | None:
        """Name of the row dimension (``None``: one row)."""
        return None

    @property
    def row_coord(self) -> np.ndarray | None:
        """Coordinate of the rows ``(m,)`` (``None``: one row)."""
        return None

    @property
    def n_rows(self) -> int:
        """Number of observables ``m``."""
        coord = self.row_coord
        return 1 if coord is None else int(np.size(coord))

    def grid_weights(self, lat: np.ndarray, lon: np.ndarray, valid: np.ndarray,
                     area: np.ndarray | None = None) -> np.ndarray:
        """Weights ``(m, nlat, nlon)`` on the grid ``lat`` ``(nlat,)``, ``lon`` ``(nlon,)`` (field units).

        Zero where ``valid`` ``(nlat, nlon)`` is False; ``area`` ``(nlat, nlon)`` are cell areas
        (default ``cos(lat)``).
        """
        raise NotImplementedError

    # ----------------------------------------------------------- derived
    def floors(self) -> np.ndarray:
        """The error floor of every row ``(m,)``."""
        floor = np.broadcast_to(np.asarray(self.error_floor, dtype=float), (self.n_rows,)).copy()
        if not np.all(np.isfinite(floor) & (floor >= 0)):
            raise InputValueError(f"error_floor: operator {self.name!r} needs non-negative floors, got {floor}.")
        return floor

    def row_labels(self) -> list[str]:
        """One label per row: the name, or ``name[coord]`` for several rows."""
        if self.row_coord is None:
            return [self.name]
        return [f"{self.name}[{c:g}]" for c in np.asarray(self.row_coord, dtype=float)]

    def rows(self, points, lat=None, lon=None, area: xr.DataArray | None = None) -> np.ndarray:
        """Rows ``(m, n_points)`` of the operator on a codec's stacked points, scale included.

        ``x @ rows.T`` is the observable ``(..., m)`` of stacked fields ``x`` ``(..., n_points)``.

        Parameters
        ----------
        points : pandas.MultiIndex
            Levels ``(variable, lat, lon)`` (``codec.points``).
        lat, lon : array-like, optional
            The full grid (default: the distinct coordinates of the variable's points).
        area : xarray.DataArray, optional
            Cell areas on ``(lat, lon)`` (default ``cos(lat)``).
        """
        sel, ii, jj, lat, lon = grid_of_points(points, self.variable, lat, lon)
        valid = np.zeros((lat.size, lon.size), dtype=bool)
        valid[ii, jj] = True
        a = None if area is None else np.asarray(area.transpose("lat", "lon").values, dtype=float)
        w = self.grid_weights(lat, lon, valid, a)
        out = np.zeros((w.shape[0], len(points)))
        out[:, sel] = w[:, ii, jj] * float(self.scale)
        return out

    def apply(self, field: xr.DataArray | xr.Dataset, area: xr.DataArray | None = None) -> xr.DataArray:
        """The observable of gridded fields, in observation units.

        Parameters
        ----------
        field : xarray.DataArray or xarray.Dataset
            The operator's variable on ``(..., lat, lon)`` (a Dataset: its :attr:`variable`).
            Points that are NaN at every other index (land) are excluded.
        area : xarray.DataArray, optional
            Cell areas on ``(lat, lon)`` (default ``cos(lat)``).

        Returns
        -------
        xarray.DataArray
            On ``(...)`` for one row, ``(..., row_dim)`` otherwise.
        """
        if isinstance(field, xr.Dataset):
            if self.variable not in field:
                raise VariableNotFoundError(
                    f"field: operator {self.name!r} reads {self.variable!r}, not among "
                    f"{', '.join(map(str, field.data_vars))}."
                )
            field = field[self.variable]
        if not isinstance(field, xr.DataArray) or "lat" not in field.dims or "lon" not in field.dims:
            raise InputTypeError(f"field: expected a DataArray on (..., lat, lon), got {type(field).__name__}.")
        other = [d for d in field.dims if d not in ("lat", "lon")]
        valid = field.notnull().any(other) if other else field.notnull()
        lat, lon = np.asarray(field["lat"].values, float), np.asarray(field["lon"].values, float)
        a = None if area is None else np.asarray(area.transpose("lat", "lon").values, dtype=float)
        w = self.grid_weights(lat, lon, valid.transpose("lat", "lon").values, a) * float(self.scale)
        wda = xr.DataArray(w, dims=("_row", "lat", "lon"), coords={"lat": field["lat"], "lon": field["lon"]})
        out = xr.dot(field.fillna(0.0), wda, dim=("lat", "lon"))
        if self.row_dim is None:
            out = out.isel(_row=0, drop=True)
        else:
            out = out.rename({"_row": self.row_dim}).assign_coords({self.row_dim: np.asarray(self.row_coord)})
        out.name = self.name
        if self.units or field.attrs.get("units"):
            out.attrs["units"] = self.units or field.attrs.get("units")
        return out


def _normalised(w: np.ndarray, what: str, name: str, lat, lon) -> np.ndarray:
    total = w.sum()
    if not total > 0:
        raise AllMissingError(
            f"operator {name!r}: no valid (ocean) grid point in {what} on a grid with extent "
            f"{_extent(lat, lon)}; choose a location over the ocean."
        )
    return w / total


def _area(lat: np.ndarray, lon: np.ndarray, area: np.ndarray | None) -> np.ndarray:
    return np.cos(np.deg2rad(lat))[:, None] * np.ones(lon.size)[None, :] if area is None else area


@dataclass(frozen=True)
class BoxOperator(ObservationOperator):
    """The area-weighted mean over a box (:func:`bayesbridge.regions.box_weights`), one row.

    Parameters
    ----------
    name, variable, units, scale, error_floor
        As :class:`ObservationOperator`.
    region : str, Region or tuple
        A named box (``"nino3"``) or ``(lat_min, lat_max, lon_min, lon_max)`` in degrees.
    """

    region: str | Region | tuple = "nino3"

    def grid_weights(self, lat, lon, valid, area=None):
        """Weights ``(m, nlat, nlon)`` on the grid ``lat``, ``lon`` (``valid`` mask, ``area`` cell areas);
        :meth:`ObservationOperator.grid_weights`."""
        coords = {"lat": lat, "lon": lon}
        grid = xr.DataArray(np.zeros(valid.shape), dims=("lat", "lon"), coords=coords)
        a = None if area is None else xr.DataArray(area, dims=("lat", "lon"), coords=coords)
        reg = get_region(self.region)
        w = box_weights(grid, reg, valid=xr.DataArray(valid, dims=("lat", "lon"), coords=coords), area=a)
        return np.asarray(w.values)[None]


def _positions(values, label: str, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise InputValueError(f"{label}: operator {name!r} needs at least one position, got {values!r}.")
    if not np.all(np.isfinite(arr)):
        raise InputValueError(f"{label}: operator {name!r} got non-finite positions {arr.tolist()}.")
    return arr


def _bracket(x: float, axis: np.ndarray, label: str, name: str, lat, lon) -> tuple[int, int, float]:
    """Indices ``(j0, j1)`` of ``axis`` (sorted) around ``x`` and the weight ``f`` of ``j1``."""
    if not axis[0] - 1e-9 <= x <= axis[-1] + 1e-9:
        raise GridCoverageError(
            f"{label}: operator {name!r} asks for {x:g}, outside the grid, whose extent is "
            f"{_extent(lat, lon)}; choose positions inside it."
        )
    j1 = int(np.clip(np.searchsorted(axis, x), 1, axis.size - 1)) if axis.size > 1 else 0
    j0 = max(j1 - 1, 0)
    f = 0.0 if j1 == j0 else float(np.clip((x - axis[j0]) / (axis[j1] - axis[j0]), 0.0, 1.0))
    return j0, j1, f


def _lon360(lon: np.ndarray) -> np.ndarray:
    return np.mod(np.asarray(lon, dtype=float), 360.0)


@dataclass(frozen=True)
class PointOperator(ObservationOperator):
    """Values at points, one row per point.

    Parameters
    ----------
    name, variable, units, scale, error_floor
        As :class:`ObservationOperator`.
    lats, lons : sequence of float
        Point coordinates (degrees north, degrees east), same length, at least one.
    method : {"nearest", "bilinear"}
        Nearest valid grid point, or bilinear weights of the four surrounding grid points (land
        corners dropped and the others renormalised).
    """

    lats: tuple[float, ...] = ()
    lons: tuple[float, ...] = ()
    method: str = "nearest"

    def __post_init__(self) -> None:
        check_choice(self.method, "method", ("nearest", "bilinear"))
        la, lo = _positions(self.lats, "lats", self.name), _positions(self.lons, "lons", self.name)
        if la.size != lo.size:
            raise ShapeMismatchError(f"lats, lons: operator {self.name!r} got {la.size} latitudes and {lo.size} "
                                     f"longitudes; give one of each per point.")

    @property
    def row_dim(self):
        return "point"

    @property
    def row_coord(self):
        return np.arange(len(self.lats))

    def grid_weights(self, lat, lon, valid, area=None):
        """Weights ``(m, nlat, nlon)`` on the grid ``lat``, ``lon`` (``valid`` mask, ``area`` cell areas);
        :meth:`ObservationOperator.grid_weights`."""
        order_i, order_j = np.argsort(lat), np.argsort(_lon360(lon))
        slat, slon = lat[order_i], _lon360(lon)[order_j]
        out = np.zeros((len(self.lats), lat.size, lon.size))
        for k, (y, x) in enumerate(zip(self.lats, self.lons, strict=True)):
            i0, i1, fi = _bracket(float(y), slat, "lats", self.name, lat, lon)
            j0, j1, fj = _bracket(float(x) % 360.0, slon, "lons", self.name, lat, lon)
            corners = [(i0, j0, (1 - fi) * (1 - fj)), (i0, j1, (1 - fi) * fj), (i1, j0, fi * (1 - fj)),
                       (i1, j1, fi * fj)]
            w = np.zeros((lat.size, lon.size))
            if self.method == "nearest":
                cand = [(a, b) for a, b, _ in corners if valid[order_i[a], order_j[b]]]
                if cand:
                    d = [(slat[a] - y) ** 2 + (slon[b] - float(x) % 360.0) ** 2 for a, b in cand]
                    a, b = cand[int(np.argmin(d))]
                    w[order_i[a], order_j[b]] = 1.0
            else:
                for a, b, c in corners:
                    if valid[order_i[a], order_j[b]]:
                        w[order_i[a], order_j[b]] += c
            out[k] = _normalised(w, f"the cell around point ({y:g}N, {x:g}E)", self.name, lat, lon)
        return out


@dataclass(frozen=True)
class ProfileOperator(ObservationOperator):
    """A band-mean profile along longitude (zonal) or latitude (meridional), one row per position.

    ``along="lon"`` (default): the area-weighted mean over the latitude band ``band`` of each
    grid column, linearly interpolated in longitude between the two columns around each of
    ``at``; ``along="lat"``: the mean over the longitude band ``band`` of each grid row,
    interpolated in latitude. A column without any valid point in the band drops out and its
    neighbour takes the whole weight.

    Parameters
    ----------
    name, variable, units, scale, error_floor
        As :class:`ObservationOperator`.
    at : sequence of float
        Positions along the profile (degrees east or north), at least one.
    band : tuple of float
        ``(min, max)`` bounds of the averaged band (degrees north for ``along="lon"``, degrees
        east otherwise).
    along : {"lon", "lat"}
        The profile's axis, also the name of its row dimension.
    """

    at: tuple[float, ...] = ()
    band: tuple[float, float] = (-5.0, 5.0)
    along: str = "lon"

    def __post_init__(self) -> None:
        check_choice(self.along, "along", ("lon", "lat"))
        _positions(self.at, "at", self.name)
        if len(self.band) != 2 or (self.along == "lon" and not self.band[0] < self.band[1]):
            raise InputValueError(f"band: operator {self.name!r} expects (min, max) with min < max, got {self.band}.")

    @property
    def row_dim(self):
        return self.along

    @property
    def row_coord(self):
        return np.asarray(self.at, dtype=float)

    def grid_weights(self, lat, lon, valid, area=None):
        """Weights ``(m, nlat, nlon)`` on the grid ``lat``, ``lon`` (``valid`` mask, ``area`` cell areas);
        :meth:`ObservationOperator.grid_weights`."""
        a = _area(lat, lon, area) * valid
        lon360 = _lon360(lon)
        if self.along == "lon":
            inband = (lat >= self.band[0]) & (lat <= self.band[1])
            if not inband.any():
                raise GridCoverageError(f"band: operator {self.name!r} averages {self.band[0]:g}..{self.band[1]:g}N, "
                                        f"outside the grid, whose extent is {_extent(lat, lon)}.")
            lines, axis, positions = (a * inband[:, None]).T, lon360, np.mod(self.row_coord, 360.0)
        else:
            inband = Region("band", -90, 90, self.band[0] % 360.0, self.band[1] % 360.0).contains_lon(lon360)
            if not inband.any():
                raise GridCoverageError(f"band: operator {self.name!r} averages {self.band[0]:g}..{self.band[1]:g}E, "
                                        f"outside the grid, whose extent is {_extent(lat, lon)}.")
            lines, axis, positions = a * inband[None, :], lat, self.row_coord
        # lines: (n_along, n_across) weights of each grid line across the profile's axis
        total = lines.sum(axis=1)
        order = np.argsort(axis)
        saxis = axis[order]
        out = np.zeros((positions.size, lat.size, lon.size))
        for k, x in enumerate(positions):
            j0, j1, f = _bracket(float(x), saxis, self.along, self.name, lat, lon)
            w = np.zeros(axis.size)
            for j, c in ((j0, 1.0 - f), (j1, f)):
                if total[order[j]] > 0 and c > 0:
                    w[order[j]] += c
            if not w.any():
                raise AllMissingError(
                    f"at: operator {self.name!r} finds no valid point in the band at {x:g} on a grid with "
                    f"extent {_extent(lat, lon)}; choose positions over the ocean."
                )
            w = w / w.sum()
            line = lines * (w / np.where(total > 0, total, 1.0))[:, None]
            out[k] = line.T if self.along == "lon" else line
        return out


@dataclass(frozen=True, eq=False)
class LinearOperator(ObservationOperator):
    """A user-supplied linear operator: weights on ``(row?, lat, lon)`` (field units, unnormalised).

    ``weights`` must be given on the grid's coordinates (checked to 1e-6 degrees); weights on
    land points, where the field has no value, must be zero.

    Parameters
    ----------
    name, variable, units, scale, error_floor
        As :class:`ObservationOperator`.
    weights : xarray.DataArray
        On ``(lat, lon)`` (one row) or ``(row, lat, lon)`` with any name for ``row``.
    """

    weights: xr.DataArray = field(default=None)

    def __post_init__(self) -> None:
        w = self.weights
        if not isinstance(w, xr.DataArray) or not {"lat", "lon"} <= set(w.dims) or w.ndim not in (2, 3):
            raise InputTypeError(
                f"weights: operator {self.name!r} expects a DataArray on (lat, lon) or (row, lat, lon), got "
                f"{type(w).__name__}{' on ' + str(w.dims) if isinstance(w, xr.DataArray) else ''}."
            )
        if not np.all(np.isfinite(w.values)):
            raise InputValueError(f"weights: operator {self.name!r} has NaN or infinite weights; use 0 outside its support.")

    @property
    def row_dim(self):
        extra = [d for d in self.weights.dims if d not in ("lat", "lon")]
        return str(extra[0]) if extra else None

    @property
    def row_coord(self):
        dim = self.row_dim
        if dim is None:
            return None
        return np.asarray(self.weights[dim].values) if dim in self.weights.coords else np.arange(self.weights.sizes[dim])

    def grid_weights(self, lat, lon, valid, area=None):
        """Weights ``(m, nlat, nlon)`` on the grid ``lat``, ``lon`` (``valid`` mask, ``area`` cell areas);
        :meth:`ObservationOperator.grid_weights`."""
        w = self.weights
        dim = self.row_dim
        w = (w.transpose(dim, "lat", "lon") if dim else w.transpose("lat", "lon").expand_dims("_row"))
        out = np.zeros((w.shape[0], lat.size, lon.size))
        wlat, wlon = np.asarray(w["lat"].values, float), _lon360(w["lon"].values)
        ii = np.abs(wlat[:, None] - lat[None, :]).argmin(axis=1)
        jj = np.abs(wlon[:, None] - _lon360(lon)[None, :]).argmin(axis=1)
        off = np.abs(wlat - lat[ii]).max(initial=0.0) > 1e-6 or np.abs(wlon - _lon360(lon)[jj]).max(initial=0.0) > 1e-6
        if off:
            raise GridCoverageError(
                f"weights: operator {self.name!r} is given on lat {wlat.min():g}..{wlat.max():g}, lon "
                f"{wlon.min():g}..{wlon.max():g}, not on the grid, whose extent is {_extent(lat, lon)}; "
                f"interpolate the weights to the grid (weights.interp_like(field))."
            )
        vals = np.asarray(w.values, dtype=float)
        np.add.at(out, (slice(None), ii[:, None], jj[None, :]), vals)
        bad = (np.abs(out) > 0) & ~valid[None]
        if bad.any():
            r, i, j = np.argwhere(bad)[0]
            raise InputValueError(
                f"weights: operator {self.name!r} puts weight on the grid point ({lat[i]:g}N, {lon[j]:g}E) of row "
                f"{r}, where {self.variable!r} has no value (land or outside the codec); set it to 0."
            )
        return out


@dataclass(frozen=True, eq=False)
class ContrastOperator(ObservationOperator):
    """``base - sum_j c_j part_j``: an operator minus a linear combination of one-row operators.

    Row ``k`` is ``base_k - sum_j coef[k, j] part_j`` (weights, before the scale, which is the
    base's); all operators read the same variable. Used for the shape of an equatorial
    profile once its Nino 3 and Nino 4 means are accounted for (:func:`bayesbridge.idealized.equatorial_sst_operator`).

    Parameters
    ----------
    name, variable, units, scale, error_floor
        As :class:`ObservationOperator`.
    base : ObservationOperator
    parts : tuple of ObservationOperator
        One-row operators.
    coef : numpy.ndarray
        ``(base.n_rows, len(parts))`` coefficients.
    part_names : tuple of str
        The observations that carry the parts' values (:meth:`observed`).
    """

    base: ObservationOperator = None
    parts: tuple = ()
    coef: np.ndarray = None
    part_names: tuple = ()

    def part_values(self, series) -> list[np.ndarray]:
        """The observed values of :attr:`part_names` in ``series`` (a Dataset or mapping of arrays)."""
        absent = [p for p in self.part_names if p not in series]
        if not absent:
            return [np.asarray(series[p].values, dtype=float) for p in self.part_names]
        raise VariableNotFoundError(
            f"observations: {self.name!r} is observed as its shape given {', '.join(self.part_names)}, but "
            f"{', '.join(absent)} is not assimilated; assimilate it too, or use the plain profile operator "
            f"(e.g. equatorial_sst_operator(shape_only=False))."
        )

    def observed(self, base: np.ndarray, parts) -> np.ndarray:
        """Observation of the contrast ``(..., m)``: ``base`` ``(..., m)`` minus ``coef`` times ``parts``.

        ``parts`` is a sequence of ``(...)`` arrays, the observed values of :attr:`part_names`.
        """
        coef = np.asarray(self.coef, dtype=float)
        out = np.asarray(base, dtype=float).copy()
        for j, values in enumerate(parts):
            out -= np.asarray(values, dtype=float)[..., None] * coef[:, j]
        return out

    @property
    def row_dim(self):
        return self.base.row_dim

    @property
    def row_coord(self):
        return self.base.row_coord

    def grid_weights(self, lat, lon, valid, area=None):
        """Weights ``(m, nlat, nlon)`` on the grid ``lat``, ``lon`` (``valid`` mask, ``area`` cell areas);
        :meth:`ObservationOperator.grid_weights`."""
        w = self.base.grid_weights(lat, lon, valid, area).copy()
        coef = np.asarray(self.coef, dtype=float).reshape(w.shape[0], len(self.parts))
        for j, part in enumerate(self.parts):
            w -= coef[:, j, None, None] * part.grid_weights(lat, lon, valid, area)[0][None]
        return w
