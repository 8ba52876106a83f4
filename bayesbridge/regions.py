"""Named regions (Nino boxes, western-Pacific thermocline box) and area-weighted indices.

Longitudes of regions are stored in 0..360 degrees east. Grids may use either 0..360 or
-180..180; both are mapped to 0..360 before selection, so a box that crosses the dateline in the
-180..180 convention (Nino 4: 160E-150W) or Greenwich in the 0..360 convention (a region with
``lon_min > lon_max``) is handled the same way.

An index is the area-weighted mean over the ocean points of a box,

.. math:: I(t) = \\frac{\\sum_{j \\in B} w_j x_j(t)}{\\sum_{j \\in B} w_j}, \\qquad
          w_j = \\cos \\varphi_j \\text{ (or the cell area)},

with NaN (land, missing) points excluded from both sums. Box definitions follow the NOAA Climate
Prediction Center (Trenberth 1997, *Bull. Amer. Meteor. Soc.* 78, 2771-2777); the thermocline
box is the western-Pacific h_W region of Jin (1997) used by Chen, Fang & Yu (2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    GridCoverageError,
    InputTypeError,
    RegionError,
    VariableNotFoundError,
)

__all__ = [
    "Region",
    "REGIONS",
    "THERMOCLINE_PER_ZOS",
    "STANDARD_BOXES",
    "get_region",
    "region_mask",
    "box_weights",
    "point_box_weights",
    "grid_of_points",
    "box_index",
    "indices",
    "observable",
    "grid_extent",
]


@dataclass(frozen=True)
class Region:
    """A latitude/longitude box.

    Parameters
    ----------
    name : str
        Short identifier (``"nino3"``).
    lat_min, lat_max : float
        Latitude bounds in degrees north, ``lat_min < lat_max``.
    lon_min, lon_max : float
        Longitude bounds in degrees east, 0..360. ``lon_min > lon_max`` means the box wraps
        through 0/360 degrees.
    long_name : str
        Human-readable name used in plots and CF attributes.
    variable : str
        The field the box is usually averaged over: ``"tos"`` (SST) or ``"zos"`` (thermocline).
    scale : float
        Observation units per unit of ``variable``: the observable is ``scale`` times the box
        mean (1 for SST boxes; :data:`THERMOCLINE_PER_ZOS` for ``h_w`` observed through ``zos``).
    units : str, optional
        Units of the observable (default: those of the field).
    """

    name: str
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    long_name: str = ""
    variable: str = "tos"
    scale: float = 1.0
    units: str | None = None

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat_min < self.lat_max <= 90.0:
            raise RegionError(
                f"Region {self.name!r}: expected -90 <= lat_min < lat_max <= 90, got "
                f"lat_min={self.lat_min}, lat_max={self.lat_max}; swap or correct the bounds."
            )
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise RegionError(f"Region {self.name!r}: scale must be a positive number, got {self.scale}.")
        for label, value in (("lon_min", self.lon_min), ("lon_max", self.lon_max)):
            if not 0.0 <= value <= 360.0:
                raise RegionError(
                    f"Region {self.name!r}: {label} must be in 0..360 degrees east, got {value}; "
                    f"convert with lon % 360."
                )

    @property
    def wraps(self) -> bool:
        """Whether the box crosses 0/360 degrees east."""
        return self.lon_min > self.lon_max

    def contains_lon(self, lon: np.ndarray) -> np.ndarray:
        """Boolean mask of longitudes ``lon`` (degrees east, any convention) inside the box.

        Longitudes are mapped to [0, 360); boxes across the 0/360 meridian (``wraps``) are
        handled. Returns a boolean array of the shape of ``lon``.
        """
        lon360 = np.mod(np.asarray(lon, dtype=float), 360.0)
        if self.wraps:
            return (lon360 >= self.lon_min) | (lon360 <= self.lon_max)
        return (lon360 >= self.lon_min) & (lon360 <= self.lon_max)

    def contains_lat(self, lat: np.ndarray) -> np.ndarray:
        """Boolean mask, of the shape of ``lat``, of latitudes (degrees north) inside the box (edges included)."""
        lat = np.asarray(lat, dtype=float)
        return (lat >= self.lat_min) & (lat <= self.lat_max)


THERMOCLINE_PER_ZOS = 150.0
"""Metres of thermocline displacement per metre of sea-surface height (the reduced-gravity ratio
``g / g'`` of Jin 1997): ``h_w`` observed through ``zos`` is this times the box mean of ``zos``."""

REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("nino12", -10.0, 0.0, 270.0, 280.0, "Nino 1+2 (10S-0, 90W-80W)"),
        Region("nino3", -5.0, 5.0, 210.0, 270.0, "Nino 3 (5S-5N, 150W-90W)"),
        Region("nino34", -5.0, 5.0, 190.0, 240.0, "Nino 3.4 (5S-5N, 170W-120W)"),
        Region("nino4", -5.0, 5.0, 160.0, 210.0, "Nino 4 (5S-5N, 160E-150W)"),
        Region(
            "h_w",
            -5.0,
            5.0,
            120.0,
            180.0,
            "western Pacific thermocline box (5S-5N, 120E-180)",
            variable="zos",
            scale=THERMOCLINE_PER_ZOS,
            units="m",
        ),
        Region("tropical_pacific", -20.0, 20.0, 120.0, 280.0, "tropical Pacific (20S-20N, 120E-80W)"),
    )
}
"""Named regions, keyed by name."""

STANDARD_BOXES: tuple[str, ...] = ("nino12", "nino3", "nino34", "nino4", "h_w")
"""The index boxes reported for every posterior (``h_w`` needs a thermocline variable)."""


def get_region(region: str | Region | tuple[float, float, float, float]) -> Region:
    """Resolve a region given by name, as a :class:`Region`, or as ``(lat_min, lat_max, lon_min, lon_max)``."""
    if isinstance(region, Region):
        return region
    if isinstance(region, str):
        key = region.lower().replace(".", "").replace("+", "").replace(" ", "")
        if key not in REGIONS:
            raise RegionError(
                f"region: unknown name {region!r}; valid names are {', '.join(sorted(REGIONS))}, "
                f"or pass (lat_min, lat_max, lon_min, lon_max) in degrees."
            )
        return REGIONS[key]
    if isinstance(region, tuple | list) and len(region) == 4:
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in region)
        return Region("custom", lat_min, lat_max, lon_min % 360.0 if lon_min != 360 else 360.0,
                      lon_max % 360.0 if lon_max != 360 else 360.0)
    raise InputTypeError(
        f"region: expected a name, a Region or a 4-tuple (lat_min, lat_max, lon_min, lon_max), "
        f"got {type(region).__name__} {region!r}."
    )


def grid_extent(obj: xr.DataArray | xr.Dataset) -> str:
    """Human-readable extent of a grid, for error messages.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Data with ``lat`` and ``lon`` coordinates.

    Returns
    -------
    str
        E.g. ``"lat -10..10, lon 120..280 (11 x 81 points)"``.
    """
    lat = np.asarray(obj["lat"].values, dtype=float)
    lon = np.asarray(obj["lon"].values, dtype=float)
    return (
        f"lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}..{lon.max():g} "
        f"({lat.size} x {lon.size} points)"
    )


def _spacing(values: np.ndarray) -> float:
    if values.size < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(np.sort(values)))))


def _check_coverage(obj: xr.DataArray | xr.Dataset, region: Region) -> None:
    lat = np.asarray(obj["lat"].values, dtype=float)
    lon360 = np.mod(np.asarray(obj["lon"].values, dtype=float), 360.0)
    tol_lat = _spacing(lat)
    tol_lon = _spacing(lon360)
    lat_ok = lat.min() <= region.lat_min + tol_lat and lat.max() >= region.lat_max - tol_lat
    inside = np.sort(lon360[region.contains_lon(lon360)])
    if region.wraps:
        lon_ok = inside.size > 0 and (
            inside.max() >= 360.0 - tol_lon or region.lon_max <= tol_lon
        ) and inside.min() <= region.lon_max + tol_lon
        lon_ok = lon_ok and np.any(lon360 >= region.lon_min) and np.any(lon360 <= region.lon_max)
    else:
        lon_ok = (
            inside.size > 0
            and inside.min() <= region.lon_min + tol_lon
            and inside.max() >= region.lon_max - tol_lon
        )
    if not (lat_ok and lon_ok):
        raise GridCoverageError(
            f"region {region.name!r} ({region.lat_min:g}..{region.lat_max:g}N, "
            f"{region.lon_min:g}..{region.lon_max:g}E) is not covered by the grid, whose extent is "
            f"{grid_extent(obj)}; use a larger domain or a region inside it."
        )


def region_mask(obj: xr.DataArray | xr.Dataset, region: str | Region) -> xr.DataArray:
    """Boolean ``(lat, lon)`` mask of the grid points inside ``region``.

    Raises :class:`~bayesbridge.errors.GridCoverageError` when the grid does not cover the box.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Data with ``lat`` and ``lon`` coordinates (degrees).
    region : str or Region
        A name from :data:`REGIONS` or a :class:`Region`.

    Returns
    -------
    xarray.DataArray
        Boolean mask on ``(lat, lon)``, named after the region.
    """
    reg = get_region(region)
    _check_coverage(obj, reg)
    lat_in = xr.DataArray(reg.contains_lat(obj["lat"].values), dims="lat", coords={"lat": obj["lat"]})
    lon_in = xr.DataArray(reg.contains_lon(obj["lon"].values), dims="lon", coords={"lon": obj["lon"]})
    return (lat_in & lon_in).rename(reg.name)


def box_weights(
    obj: xr.DataArray | xr.Dataset,
    region: str | Region,
    *,
    valid: xr.DataArray | None = None,
    area: xr.DataArray | None = None,
) -> xr.DataArray:
    """Normalised area weights ``(lat, lon)`` of a box: zero outside it and on invalid points.

    ``valid`` is a boolean ``(lat, lon)`` ocean mask; ``area`` a cell-area field (``areacello``),
    otherwise ``cos(lat)`` is used. The weights sum to one, so ``(weights * field).sum()`` is the
    box index; they are the rows of a linear observation operator.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Data giving the ``(lat, lon)`` grid.
    region : str or Region
        A name from :data:`REGIONS` or a :class:`Region`.
    valid : xarray.DataArray, optional
        Boolean ``(lat, lon)`` mask of valid (ocean) points.
    area : xarray.DataArray, optional
        Cell areas on ``(lat, lon)``; default ``cos(lat)``.

    Returns
    -------
    xarray.DataArray
        ``<region>_weights`` on ``(lat, lon)``, summing to one.

    Raises
    ------
    AllMissingError
        If no valid point lies inside the box.
    """
    reg = get_region(region)
    inside = region_mask(obj, reg)
    if area is None:
        area = np.cos(np.deg2rad(obj["lat"])) * xr.ones_like(obj["lon"], dtype=float)
    weights = area.where(inside, 0.0)
    if valid is not None:
        weights = weights.where(valid, 0.0)
    total = float(weights.sum())
    if total <= 0.0:
        raise AllMissingError(
            f"region {reg.name!r}: no valid (ocean, non-NaN) grid point inside the box on a grid "
            f"with extent {grid_extent(obj)}; check the land mask or choose another region."
        )
    return (weights / total).transpose("lat", "lon").rename(f"{reg.name}_weights")


def grid_of_points(points, variable: str, lat=None, lon=None, reader: str = "the operator"):
    """The ``(lat, lon)`` grid of a codec's stacked points and where ``variable``'s points lie on it.

    Parameters
    ----------
    points : pandas.MultiIndex
        Levels ``(variable, lat, lon)``, one entry per stacked value.
    variable : str
        The variable whose points are wanted.
    lat, lon : array-like, optional
        The full grid (default: the distinct coordinates of ``variable``'s points).
    reader : str
        Who reads ``variable``, for the error message.

    Returns
    -------
    sel, ii, jj : numpy.ndarray
        ``(n,)`` positions of ``variable``'s entries in ``points`` and their grid indices.
    lat, lon : numpy.ndarray
        The grid coordinates.
    """
    names = np.asarray(points.get_level_values(0)).astype(str)
    sel = np.flatnonzero(names == variable)
    if sel.size == 0:
        raise VariableNotFoundError(
            f"variable: {reader} reads {variable!r}, but the points hold "
            f"{', '.join(dict.fromkeys(names.tolist()))}; pass variable= explicitly (one of these)."
        )
    plat = np.asarray(points.get_level_values(1), dtype=float)[sel]
    plon = np.asarray(points.get_level_values(2), dtype=float)[sel]
    lat = np.unique(plat) if lat is None else np.asarray(lat, dtype=float)
    lon = np.unique(plon) if lon is None else np.asarray(lon, dtype=float)
    ii = np.abs(plat[:, None] - lat[None, :]).argmin(axis=1)
    jj = np.abs(plon[:, None] - lon[None, :]).argmin(axis=1)
    return sel, ii, jj, lat, lon


def point_box_weights(
    points,
    region: str | Region,
    variable: str | None = None,
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    area: xr.DataArray | None = None,
) -> np.ndarray:
    """Row ``(n_points,)`` of a box-average operator over stacked grid points.

    ``x @ row`` is the area-weighted mean over ``region`` of ``variable`` for a stacked field
    ``x`` ``(..., n_points)`` (a codec's point vector). The weights are those of
    :func:`box_weights` on the grid spanned by the points, with the points of ``variable``
    as the valid mask, so every box average in bayesbridge (observation operators, codec
    reports, posterior series) uses one definition.

    Parameters
    ----------
    points : pandas.MultiIndex
        Levels ``(variable, lat, lon)``, one entry per stacked value.
    region : str or Region
        A name from :data:`REGIONS` or a :class:`Region`.
    variable : str, optional
        Variable averaged (default: the region's own, ``tos`` for Nino boxes, ``zos`` for ``h_w``).
    lat, lon : numpy.ndarray, optional
        The full grid (default: the distinct coordinates of ``points``).
    area : xarray.DataArray, optional
        Cell areas on ``(lat, lon)`` (default ``cos(lat)``).

    Raises
    ------
    VariableNotFoundError
        If no point holds ``variable``.
    GridCoverageError, AllMissingError
        As :func:`box_weights`.
    """
    reg = get_region(region)
    sel, ii, jj, lat, lon = grid_of_points(points, variable or reg.variable, lat, lon, f"box {reg.name!r}")
    valid = np.zeros((lat.size, lon.size), dtype=bool)
    valid[ii, jj] = True
    coords = {"lat": lat, "lon": lon}
    grid = xr.DataArray(np.zeros(valid.shape), dims=("lat", "lon"), coords=coords)
    w = box_weights(grid, reg, valid=xr.DataArray(valid, dims=("lat", "lon"), coords=coords), area=area).values
    row = np.zeros(len(points))
    row[sel] = w[ii, jj]
    return row


def box_index(
    field: xr.DataArray,
    region: str | Region,
    *,
    area: xr.DataArray | None = None,
    running_mean: int | None = None,
) -> xr.DataArray:
    """Area-weighted mean of ``field`` over ``region`` (NaN points skipped).

    Parameters
    ----------
    field : xarray.DataArray
        Field on ``(..., lat, lon)``, typically ``(time, lat, lon)`` anomalies.
    region : str or Region
        A name from :data:`REGIONS` or a :class:`Region`.
    area : xarray.DataArray, optional
        Cell areas on ``(lat, lon)``; default ``cos(lat)``.
    running_mean : int, optional
        Centred running mean over this many time steps (3 gives the ONI convention).

    Returns
    -------
    xarray.DataArray
        The index on the non-spatial dimensions of ``field``.
    """
    if not isinstance(field, xr.DataArray):
        raise InputTypeError(
            f"field: expected an xarray.DataArray on (..., lat, lon), got {type(field).__name__}; "
            f"select a variable first, e.g. ds['tos']."
        )
    reg = get_region(region)
    inside = region_mask(field, reg)
    if area is None:
        area = np.cos(np.deg2rad(field["lat"])) * xr.ones_like(field["lon"], dtype=float)
    sub = field.where(inside)
    weights = area.where(inside, 0.0)
    valid = sub.notnull()
    num = (sub.fillna(0.0) * weights).sum(("lat", "lon"))
    den = (valid * weights).sum(("lat", "lon"))
    if not bool((den > 0).any()):
        raise AllMissingError(
            f"region {reg.name!r}: every value of {field.name or 'the field'} inside the box is NaN "
            f"(grid extent {grid_extent(field)}); check the land mask or the time selection."
        )
    index = (num / den.where(den > 0)).rename(reg.name)
    if running_mean is not None and running_mean > 1:
        index = index.rolling(time=int(running_mean), center=True, min_periods=1).mean()
    units = field.attrs.get("units")
    index.attrs = {"long_name": reg.long_name or reg.name, "cell_methods": "area: mean"}
    if units:
        index.attrs["units"] = units
    return index


def indices(
    ds: xr.Dataset,
    boxes: tuple[str, ...] = STANDARD_BOXES,
    *,
    area: xr.DataArray | None = None,
    running_mean: int | None = None,
) -> xr.Dataset:
    """Every standard index available from a Dataset of fields, in observation units.

    SST boxes are averaged over ``tos``; ``h_w`` over ``zos`` when present (skipped otherwise)
    and scaled to metres of thermocline depth (:attr:`Region.scale`, :data:`THERMOCLINE_PER_ZOS`).

    Parameters
    ----------
    ds : xarray.Dataset
        Fields on ``(..., lat, lon)`` (e.g. ``tos``, ``zos`` anomalies on ``(time, lat, lon)``).
    boxes : tuple of str
        Boxes to compute (default :data:`STANDARD_BOXES`); a box whose variable is absent is
        skipped.
    area : xarray.DataArray, optional
        Cell areas on ``(lat, lon)``; default ``cos(lat)``.
    running_mean : int, optional
        Centred running mean over this many time steps (see :func:`box_index`).

    Returns
    -------
    xarray.Dataset
        One variable per computed box, on the non-spatial dimensions of ``ds``.
    """
    out = {}
    for name in boxes:
        reg = get_region(name)
        if reg.variable not in ds:
            continue
        out[name] = observable(ds[reg.variable], reg, area=area, running_mean=running_mean)
    return xr.Dataset(out)


def observable(
    field: xr.DataArray,
    region: str | Region,
    *,
    area: xr.DataArray | None = None,
    running_mean: int | None = None,
) -> xr.DataArray:
    """The observable of ``region`` from ``field``: ``region.scale`` times its :func:`box_index`.

    Parameters
    ----------
    field : xarray.DataArray
        The region's variable on ``(..., lat, lon)``.
    region : str or Region
        A name from :data:`REGIONS` or a :class:`Region`.
    area : xarray.DataArray, optional
        Cell areas on ``(lat, lon)``; default ``cos(lat)``.
    running_mean : int, optional
        Centred running mean over this many time steps.

    Returns
    -------
    xarray.DataArray
        In the region's units (``region.units``, else the field's).
    """
    reg = get_region(region)
    index = box_index(field, reg, area=area, running_mean=running_mean)
    if reg.scale == 1.0 and reg.units is None:
        return index
    out = index * reg.scale
    out.attrs = dict(index.attrs)
    if reg.units is not None:
        out.attrs["units"] = reg.units
    return out.rename(reg.name)
