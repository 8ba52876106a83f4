"""Vertical levels of operational fields: the 20 degC isotherm depth and single-level selection.

CMIP6 ocean temperature ``thetao`` is four-dimensional, ``(time, lev, lat, lon)``. bayesbridge
works on ``(time, lat, lon)`` fields, so a variable with a vertical dimension is reduced here,
in one of two ways:

* :func:`isotherm_depth` turns every temperature column into the depth of an isotherm, the
  thermocline proxy of the tropical Pacific (``d20``, the 20 degC isotherm depth; Kessler 1990,
  *J. Geophys. Res.* 95, 5183; Meinen & McPhaden 2000, *J. Climate* 13, 3551). This is the
  observable ``h_w`` of the idealized model, in metres (``docs/conventions.md``, Units);
* :func:`select_level` keeps one level, chosen by depth (nearest level) or by index.

The vertical coordinate is found with cf-xarray (``axis="Z"``, a ``positive`` attribute or a
vertical ``standard_name``) or by the usual names (:data:`VERTICAL_NAMES`). Depth levels in m or
cm, positive down or up, are converted to metres positive down.

:func:`bayesbridge.io.open_operational` calls :func:`field_source` and :func:`as_field` for
every requested variable: a name ``d<T>`` (``"d20"``) absent from the files is derived from
``thetao``, and a variable with a vertical dimension needs ``level=``/``level_index=``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Literal, get_args

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import xarray as xr

from bayesbridge.errors import InputTypeError, InputValueError, VariableNotFoundError, check_choice

__all__ = [
    "isotherm_depth",
    "select_level",
    "vertical_coordinate",
    "level_depths",
    "isotherm_of",
    "field_source",
    "as_field",
    "VERTICAL_NAMES",
    "D20_STANDARD_NAME",
]

VERTICAL_NAMES = ("lev", "olevel", "depth", "deptht", "depthu", "depthv", "z", "z_t", "st_ocean",
                  "plev", "level")
"""Names tried for the vertical dimension when no coordinate carries CF vertical attributes."""
D20_STANDARD_NAME = "depth_of_isosurface_of_sea_water_potential_temperature"
"""CF standard name of an isotherm depth (``d20``)."""

Outcrop = Literal["nan", "surface"]
_FIELD = ("time", "lat", "lon")
_LENGTH = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
           "cm": 0.01, "centimeter": 0.01, "centimeters": 0.01, "centimetre": 0.01, "centimetres": 0.01,
           "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0}
_KELVIN = {"k", "kelvin", "degk", "deg_k", "degrees_k"}
_CELSIUS = {"", "degc", "deg_c", "degrees_c", "degree_c", "celsius", "c", "degrees_celsius", "°c"}
_TEMPERATURE_NAMES = ("thetao", "bigthetao")
_TEMPERATURE_STANDARD = ("sea_water_potential_temperature", "sea_water_conservative_temperature",
                         "sea_water_temperature")
_DERIVED = re.compile(r"^d(\d+(?:\.\d+)?)$")


def vertical_coordinate(da: xr.DataArray) -> xr.DataArray | None:
    """The one-dimensional vertical coordinate of ``da``, or ``None`` if it has none.

    Looked up in this order: coordinates cf-xarray recognises as vertical (``axis="Z"``, a
    ``positive`` attribute, a vertical ``standard_name`` such as ``depth``), then a dimension of
    ``da`` named as in :data:`VERTICAL_NAMES` that has coordinate values. Only a coordinate along
    a single dimension of ``da`` other than ``time``, ``lat`` and ``lon`` qualifies.

    Parameters
    ----------
    da : xarray.DataArray
        A field such as ``thetao`` on ``(time, lev, lat, lon)``.

    Returns
    -------
    xarray.DataArray or None
        The coordinate (its dimension is ``coord.dims[0]``), or ``None``.
    """
    candidates = list(da.cf.axes.get("Z", [])) + list(da.cf.coordinates.get("vertical", []))
    candidates += [d for d in da.dims if str(d).lower() in VERTICAL_NAMES]
    for name in candidates:
        if name not in da.coords:
            continue
        coord = da.coords[name]
        if coord.ndim == 1 and coord.dims[0] in da.dims and coord.dims[0] not in _FIELD:
            return coord
    return None


def level_depths(coord: xr.DataArray) -> np.ndarray:
    """Depths of a vertical coordinate in metres, positive down.

    The coordinate's ``units`` (m, cm or km; missing units mean metres) give the scale and its
    ``positive`` attribute the sign: ``"down"`` keeps the values, ``"up"`` negates them. Without
    ``positive``, levels that are all ``<= 0`` (one of them ``< 0``) are read as heights
    (positive up), any other as depths.

    Parameters
    ----------
    coord : xarray.DataArray
        One-dimensional vertical coordinate ``(K,)``, e.g. from :func:`vertical_coordinate`.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` float64 depths in m, positive down, in the coordinate's order.

    Raises
    ------
    InputValueError
        Units that are not a length (pressure, model level numbers), or a ``positive``
        attribute other than ``"up"``/``"down"``.
    """
    units = str(coord.attrs.get("units", "m")).strip().lower()
    if units not in _LENGTH:
        raise InputValueError(
            f"{coord.name}: expected depth levels in m or cm, got units {coord.attrs.get('units')!r}; "
            f"convert the vertical coordinate to depth in metres (positive down) first."
        )
    values = np.asarray(coord.values, dtype=float) * _LENGTH[units]
    positive = str(coord.attrs.get("positive", "")).strip().lower()
    if positive not in ("", "up", "down"):
        raise InputValueError(
            f"{coord.name}: expected the attribute positive='up' or 'down', got {positive!r}; "
            f"set it to say whether the levels are heights or depths."
        )
    if positive == "up" or (not positive and np.all(values <= 0) and np.any(values < 0)):
        values = -values
    return values


def _describe(coord: xr.DataArray) -> str:
    values = np.asarray(coord.values)
    units = coord.attrs.get("units", "no units")
    positive = coord.attrs.get("positive")
    extent = f"{values.min():g}..{values.max():g} {units}" if values.size else "empty"
    return f"{coord.dims[0]!r} ({values.size} levels, {extent}" + (f", positive {positive})" if positive else ")")


def _is_length(coord: xr.DataArray) -> bool:
    return str(coord.attrs.get("units", "m")).strip().lower() in _LENGTH


def select_level(da: xr.DataArray, *, level: float | None = None, index: int | None = None) -> xr.DataArray:
    """One vertical level of ``da``, chosen by depth (nearest level) or by position.

    Parameters
    ----------
    da : xarray.DataArray
        A field with a vertical dimension, e.g. ``thetao`` on ``(time, lev, lat, lon)``.
    level : float, optional
        For depth levels, the depth in metres, positive down (cm and ``positive="up"`` levels
        are converted); for any other vertical coordinate (pressure ...), a value in the
        coordinate's own units. The nearest level is taken; a value more than half a level
        spacing beyond the first or last level is refused.
    index : int, optional
        Position of the level along the vertical dimension (``0`` is the first, ``-1`` the
        last). Give ``level`` or ``index``, not both.

    Returns
    -------
    xarray.DataArray
        ``da`` without its vertical dimension; the attribute ``vertical_level`` records the
        level taken, e.g. ``"lev = 55 m"``.

    Raises
    ------
    InputValueError
        No vertical coordinate, neither or both of ``level`` and ``index``, a level outside the
        levels or an index out of range (the message gives the levels' extent).
    """
    coord = vertical_coordinate(da)
    if coord is None:
        raise InputValueError(_no_vertical(da))
    dim = coord.dims[0]
    if (level is None) == (index is None):
        raise InputValueError(f"level: expected one of level= (a depth) or level_index= (a position) for {_describe(coord)}, got "
                              f"{'both' if level is not None else 'neither'}; pass one of them.")
    n = coord.size
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise InputTypeError(f"level_index: expected an integer, got {type(index).__name__} {index!r}; pass e.g. level_index=0.")
        if not -n <= index < n:
            raise InputValueError(f"level_index: expected an integer in {-n}..{n - 1} for {_describe(coord)}, got {index}; "
                                  f"pass level_index=0 for the first level.")
        position = int(index) % n
    else:
        if not isinstance(level, numbers.Real) or not math.isfinite(level):
            raise InputTypeError(f"level: expected a finite number, got {type(level).__name__} {level!r}; pass e.g. level=50.0.")
        axis = level_depths(coord) if _is_length(coord) else np.asarray(coord.values, dtype=float)
        unit = "m (depth, positive down)" if _is_length(coord) else str(coord.attrs.get("units", ""))
        position = int(np.argmin(np.abs(axis - level)))
        order = np.sort(axis)
        half = 0.5 * np.diff(order) if n > 1 else np.zeros(1)
        low, high = order[0] - half[0], order[-1] + half[-1]
        if not low <= level <= high:
            raise InputValueError(
                f"level: expected a value within the levels of {_describe(coord)}, i.e. {low:g}..{high:g} {unit}, "
                f"got {level:g}; pass a level inside that range or level_index=<int>."
            )
    out = da.isel({dim: position}, drop=True)
    value = np.asarray(coord.values)[position]
    out.attrs = dict(da.attrs, vertical_level=f"{dim} = {value:g} {coord.attrs.get('units', '')}".strip())
    return out


def isotherm_depth(thetao: xr.DataArray, isotherm: float = 20.0, *, outcrop: Outcrop = "nan") -> xr.DataArray:
    r"""Depth of an isotherm in every temperature column (``d20`` for 20 degC), in metres.

    The rule, per column of levels :math:`z_1 < z_2 < \dots < z_K` (depths in m, positive down,
    levels below the sea floor NaN): the shallowest valid level must be at least as warm as the
    isotherm :math:`T_*`; the isotherm depth is then the first crossing going down, the shallowest
    pair of consecutive levels with :math:`T_k \ge T_* > T_{k+1}`, linearly interpolated:

    .. math::

        d = z_k + \frac{T_k - T_*}{T_k - T_{k+1}} (z_{k+1} - z_k).

    A column that stays warmer than :math:`T_*` down to its last valid level, an all-NaN column
    (land) and a column whose shallowest valid level is already colder than :math:`T_*` (the
    isotherm outcrops) give NaN; with ``outcrop="surface"`` the last case gives 0 m.

    Parameters
    ----------
    thetao : xarray.DataArray
        Sea-water (potential) temperature with a vertical dimension, e.g. CMIP6 ``thetao`` on
        ``(time, lev, lat, lon)``, numpy- or dask-backed; in degC or Kelvin (``units`` ``K``;
        missing units mean degC). The vertical coordinate is found by :func:`vertical_coordinate`
        and converted by :func:`level_depths` (m or cm, ``positive`` up or down).
    isotherm : float
        :math:`T_*` in degC (default 20).
    outcrop : {"nan", "surface"}
        Value where the shallowest valid level is colder than the isotherm: NaN (default) or
        0 m.

    Returns
    -------
    xarray.DataArray
        ``d20`` (named ``d<isotherm>``) on the dimensions of ``thetao`` without the vertical one,
        e.g. ``(time, lat, lon)``; metres, positive down; float32 for float32 input; lazy for
        dask input (the vertical dimension is put in one chunk). CF attributes ``standard_name``
        (``depth_of_isosurface_of_sea_water_potential_temperature``), ``units``, ``positive``,
        ``long_name`` and a ``comment`` stating the isotherm and the rule.

    Raises
    ------
    InputTypeError
        ``thetao`` is not a DataArray, or ``isotherm`` is not a number.
    InputValueError
        No vertical coordinate, fewer than two levels, levels that are not a length or that
        repeat, or temperature units other than degC/K.
    """
    if not isinstance(thetao, xr.DataArray):
        raise InputTypeError(f"thetao: expected an xarray.DataArray with a vertical dimension, got {type(thetao).__name__}; "
                             f"pass e.g. ds['thetao'].")
    if isinstance(isotherm, bool) or not isinstance(isotherm, numbers.Real) or not math.isfinite(isotherm):
        raise InputTypeError(f"isotherm: expected a finite temperature in degC, got {isotherm!r}; pass e.g. isotherm=20.0.")
    check_choice(outcrop, "outcrop", get_args(Outcrop), InputValueError)
    coord = vertical_coordinate(thetao)
    if coord is None:
        raise InputValueError(_no_vertical(thetao))
    dim = coord.dims[0]
    depth = level_depths(coord)
    if depth.size < 2:
        raise InputValueError(f"thetao: expected at least two levels to find the {isotherm:g} degC isotherm, got "
                              f"{_describe(coord)}; pass the full-depth temperature.")
    order = np.argsort(depth, kind="stable")
    if np.any(np.diff(depth[order]) <= 0) or not np.all(np.isfinite(depth)):
        raise InputValueError(f"thetao: expected distinct, finite levels along {_describe(coord)}, got {depth.tolist()}; "
                              f"fix the vertical coordinate.")
    temp = thetao if np.all(order == np.arange(depth.size)) else thetao.isel({dim: order})
    units = str(thetao.attrs.get("units", "")).strip().lower()
    if units not in _KELVIN | _CELSIUS:
        raise InputValueError(f"thetao: expected temperature units degC or K, got {thetao.attrs.get('units')!r}; "
                              f"convert to degC and set units='degC'.")
    target = float(isotherm) + (273.15 if units in _KELVIN else 0.0)
    if not np.issubdtype(temp.dtype, np.floating):
        temp = temp.astype("float64")
    if temp.chunks is not None:
        temp = temp.chunk({dim: -1})
    dtype = np.result_type(temp.dtype, np.float32)
    out = xr.apply_ufunc(
        _crossing_depth, temp, input_core_dims=[[dim]], dask="parallelized", output_dtypes=[dtype],
        kwargs={"depth": depth[order], "isotherm": target, "surface": outcrop == "surface"},
    )
    label = f"{isotherm:g} degC"
    out.attrs = {
        "standard_name": D20_STANDARD_NAME,
        "long_name": f"depth of the {label} isotherm",
        "units": "m",
        "positive": "down",
        "comment": (
            f"Depth of the {label} isotherm of {thetao.name or 'sea water temperature'}: the first crossing from "
            f">= {label} to < {label} going down from the shallowest valid level, linearly interpolated between "
            f"levels; NaN where the column never crosses {label}, is all missing, or "
            + ("starts colder (0 m there: the isotherm outcrops)." if outcrop == "surface" else "starts colder (outcrop).")
        ),
    }
    return out.rename(f"d{isotherm:g}")


def _crossing_depth(temp: np.ndarray, depth: np.ndarray, isotherm: float, surface: bool) -> np.ndarray:
    """Vectorised kernel of :func:`isotherm_depth`: ``temp`` ``(..., K)``, ``depth`` ``(K,)`` increasing."""
    upper, lower = temp[..., :-1], temp[..., 1:]
    crossing = (upper >= isotherm) & (lower < isotherm)  # NaN compares False: no crossing
    k = np.argmax(crossing, axis=-1)
    t0 = np.take_along_axis(upper, k[..., None], axis=-1)[..., 0]
    t1 = np.take_along_axis(lower, k[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = depth[k] + (t0 - isotherm) / (t0 - t1) * (depth[k + 1] - depth[k])
    valid = ~np.isnan(temp)
    top = np.take_along_axis(temp, np.argmax(valid, axis=-1)[..., None], axis=-1)[..., 0]
    warm_top = top >= isotherm  # False for all-NaN columns
    out = np.where(crossing.any(axis=-1) & warm_top, d, np.nan)
    if surface:
        out = np.where(top < isotherm, 0.0, out)
    return out.astype(np.result_type(temp.dtype, np.float32), copy=False)


def _no_vertical(da: xr.DataArray) -> str:
    extra = [str(d) for d in da.dims if d not in _FIELD]
    expected = (f"{da.name or 'variable'}: expected a vertical coordinate (CF axis='Z' or positive='up'/'down', or a "
                f"coordinate named one of {', '.join(VERTICAL_NAMES)})")
    if not extra:
        return (f"{expected} along a level dimension, got dimensions {tuple(map(str, da.dims))} and no level "
                f"dimension; pass the full-depth variable, e.g. thetao on (time, lev, lat, lon).")
    dim = extra[0]
    return (
        f"{expected} along {extra}, got dimensions {tuple(map(str, da.dims))} with coordinates "
        f"{', '.join(map(str, da.coords)) or 'none'}; add one, e.g. "
        f"da.assign_coords({dim}=('{dim}', depths_in_m, {{'units': 'm', 'positive': 'down', 'axis': 'Z'}}))."
    )


def isotherm_of(name: str) -> float | None:
    """The isotherm (degC) of a derived-variable name ``d<T>`` (``"d20"`` -> 20.0), else ``None``.

    Parameters
    ----------
    name : str
        A requested variable name.
    """
    match = _DERIVED.match(str(name))
    return float(match.group(1)) if match else None


def field_source(ds: xr.Dataset, name: str) -> str | None:
    """The temperature variable that a derived ``name`` (``"d20"``) is computed from, or ``None``.

    ``None`` when ``name`` is not of the form ``d<T>`` or when the data already hold a variable
    called ``name`` (that one is used as it is). Otherwise the temperature is ``thetao`` (or
    ``bigthetao``) by name, else the first variable whose ``standard_name`` is a sea-water
    temperature.

    Parameters
    ----------
    ds : xarray.Dataset
        The opened data.
    name : str
        A requested variable name.

    Returns
    -------
    str or None
        Name of the temperature variable in ``ds``.

    Raises
    ------
    VariableNotFoundError
        ``name`` is ``d<T>`` but the data hold no sea-water temperature.
    """
    if isotherm_of(name) is None or name in ds.data_vars:
        return None
    for var in _TEMPERATURE_NAMES:
        if var in ds.data_vars:
            return var
    for var in ds.data_vars:
        if ds[var].attrs.get("standard_name") in _TEMPERATURE_STANDARD:
            return str(var)
    raise VariableNotFoundError(
        f"variables: {name!r} is derived from the ocean temperature thetao (sea_water_potential_temperature on "
        f"(time, lev, lat, lon)), which is not in the data; the data contain "
        f"{', '.join(map(str, ds.data_vars)) or 'no data variables'}. Add the thetao files, or drop {name!r}."
    )


def as_field(da: xr.DataArray, name: str, *, level: float | None = None, level_index: int | None = None) -> xr.DataArray:
    """A variable as a field without vertical dimension, as :func:`bayesbridge.io.open_operational` needs it.

    A requested ``d<T>`` computed from a temperature with a vertical dimension is
    :func:`isotherm_depth`; a variable with a vertical dimension is reduced by
    :func:`select_level` when ``level`` or ``level_index`` is given; a variable with only
    ``time``, ``lat`` and ``lon`` is returned unchanged.

    Parameters
    ----------
    da : xarray.DataArray
        The variable as stored.
    name : str
        The name it was requested under (``"d20"`` derives the isotherm depth).
    level, level_index : float or int, optional
        Passed to :func:`select_level` as ``level`` and ``index``.

    Returns
    -------
    xarray.DataArray
        On ``(time, lat, lon)`` (in the stored order).

    Raises
    ------
    InputValueError
        A vertical dimension without ``level``/``level_index`` (the message names the dimension,
        its levels and the options), a ``d<T>`` source without vertical coordinate, or any other
        extra dimension.
    """
    extra = [str(d) for d in da.dims if d not in _FIELD]
    iso = isotherm_of(name)
    if iso is not None and name != da.name:
        if not extra or vertical_coordinate(da) is None:
            raise InputValueError(
                f"variables: {name!r} is derived from {da.name!r}, which needs a vertical dimension with depth "
                f"levels; {_no_vertical(da)}"
            )
        return isotherm_depth(da, iso)
    if not extra:
        return da
    coord = vertical_coordinate(da)
    if coord is None or len(extra) > 1:
        raise InputValueError(
            f"variables: {da.name!r} has extra dimensions {extra} besides (time, lat, lon); select one value of "
            f"each first, e.g. ds.isel({extra[0]}=0)."
        )
    if level is None and level_index is None:
        is_temperature = da.name in _TEMPERATURE_NAMES or da.attrs.get("standard_name") in _TEMPERATURE_STANDARD
        unit = "depth in m" if _is_length(coord) else f"value in {coord.attrs.get('units', 'its units')}"
        raise InputValueError(
            f"variables: {da.name!r} has the vertical dimension {_describe(coord)} besides (time, lat, lon); "
            f"pass level=<{unit}> (nearest level) or level_index=<int> to keep one level"
            + (", or request the 20 degC isotherm depth derived from it as 'd20', e.g. variables=['tos', 'd20']."
               if is_temperature else ".")
        )
    return select_level(da, level=level, index=level_index)
