"""Grid, land mask, time axis and seasonal climatologies of the synthetic twin experiment.

One grid serves every field of the twin experiment (``docs/design.md`` section 6):
20S-20N x 120E-280E at 2 degrees (21 x 81), with a small land mask (a Central-America corner and
bits of the maritime continent and northern Australia), and a monthly ``noleap`` cftime axis.
The climatologies are absolute seasonal cycles ``(12, lat, lon)``; the operational model's are
displaced west by :func:`westward_shift`. Box means use the boxes of
:data:`bayesbridge.regions.REGIONS`.
"""

from __future__ import annotations

import cftime
import numpy as np
import xarray as xr
from scipy import special

from bayesbridge.regions import REGIONS

__all__ = [
    "twin_grid",
    "time_axis",
    "box_mean",
    "westward_shift",
    "tos_climatology",
    "zos_climatology",
]

_LAND_BOXES = (  # (lat_min, lat_max, lon_min, lon_max), inclusive
    (8.0, 20.0, 276.0, 280.0),  # Central America
    (12.0, 20.0, 272.0, 280.0),
    (16.0, 20.0, 266.0, 280.0),
    (-8.0, -2.0, 120.0, 124.0),  # Sulawesi-like bit of the maritime continent
    (-20.0, -14.0, 120.0, 134.0),  # northern Australia
)


def twin_grid() -> xr.Dataset:
    """The twin-experiment grid: ``lat`` (21), ``lon`` (81) and the boolean ``ocean`` mask.

    Returns
    -------
    xarray.Dataset
        Coordinates ``lat`` (-20..20 degrees north) and ``lon`` (120..280 degrees east) with CF
        attributes; variable ``ocean`` on ``(lat, lon)``, False over land.
    """
    lat = np.arange(-20.0, 20.0 + 1e-9, 2.0)
    lon = np.arange(120.0, 280.0 + 1e-9, 2.0)
    land = np.zeros((lat.size, lon.size), dtype=bool)
    for la0, la1, lo0, lo1 in _LAND_BOXES:
        land |= ((lat >= la0) & (lat <= la1))[:, None] & ((lon >= lo0) & (lon <= lo1))[None, :]
    coords = {
        "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude",
                             "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude",
                             "units": "degrees_east", "axis": "X"}),
    }
    return xr.Dataset({"ocean": (("lat", "lon"), ~land, {"long_name": "ocean mask"})}, coords=coords)


def time_axis(n_months: int, start_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Mid-month cftime ``noleap`` times and their bounds, starting in January.

    Parameters
    ----------
    n_months : int
        Number of months.
    start_year : int
        Calendar year of the first month (January).

    Returns
    -------
    mid : numpy.ndarray
        ``(n_months,)`` :class:`cftime.DatetimeNoLeap` mid-points of the months.
    bounds : numpy.ndarray
        ``(n_months, 2)`` first instants of each month and of the next one.
    """
    edges = [cftime.DatetimeNoLeap(start_year + m // 12, m % 12 + 1, 1) for m in range(n_months + 1)]
    bounds = np.array([[edges[i], edges[i + 1]] for i in range(n_months)], dtype=object)
    mid = np.array([edges[i] + (edges[i + 1] - edges[i]) / 2 for i in range(n_months)], dtype=object)
    return mid, bounds


def box_mean(pattern: np.ndarray, lat: np.ndarray, lon: np.ndarray, ocean: np.ndarray,
             box: str) -> float:
    """cos(lat)-weighted ocean mean of a pattern over a named box.

    :math:`\\bar p = \\sum_{y,x} w_{yx} p_{yx} / \\sum_{y,x} w_{yx}` with
    :math:`w_{yx} = \\cos(\\varphi_y)` inside the box and over ocean, 0 elsewhere.

    Parameters
    ----------
    pattern : numpy.ndarray
        ``(lat, lon)`` values.
    lat, lon : numpy.ndarray
        ``(lat,)`` and ``(lon,)`` coordinates (degrees north, degrees east).
    ocean : numpy.ndarray
        ``(lat, lon)`` boolean ocean mask.
    box : str
        Name of a box of :data:`bayesbridge.regions.REGIONS` (e.g. ``"nino3"``, ``"h_w"``).

    Returns
    -------
    float
        The weighted mean.
    """
    reg = REGIONS[box]
    w = np.cos(np.deg2rad(lat))[:, None] * (reg.contains_lat(lat)[:, None] & reg.contains_lon(lon)[None, :])
    w = w * ocean
    return float((w * pattern).sum() / w.sum())


def westward_shift(lon: np.ndarray, shift_deg: float) -> np.ndarray:
    """Westward pattern shift: ``shift_deg`` west of 200E, tapering linearly to 0 at 280E.

    :math:`s(x) = s_0 \\min(\\max((280 - x)/80, 0), 1)`; a pattern displaced by it reads its
    value at longitude :math:`x + s(x)`.

    Parameters
    ----------
    lon : numpy.ndarray
        ``(lon,)`` longitudes (degrees east).
    shift_deg : float
        Shift :math:`s_0` (degrees) west of 200E.

    Returns
    -------
    numpy.ndarray
        ``(lon,)`` shifts in degrees.
    """
    return shift_deg * np.clip((280.0 - lon) / 80.0, 0.0, 1.0)


def tos_climatology(lat: np.ndarray, lon: np.ndarray, shift_deg: float) -> np.ndarray:
    """Seasonal SST climatology in degC: warm pool, cold tongue, Peru coast.

    Parameters
    ----------
    lat, lon : numpy.ndarray
        ``(lat,)`` and ``(lon,)`` coordinates (degrees).
    shift_deg : float
        Westward displacement of the cold tongue (:func:`westward_shift`); 0 for the truth.

    Returns
    -------
    numpy.ndarray
        ``(12, lat, lon)`` climatology, January first.
    """
    x = (lon + westward_shift(lon, shift_deg))[None, :]
    y = lat[:, None]
    ct = special.expit((x - 205.0) / 18.0) * np.exp(-(((y + 0.5) / 6.0) ** 2))
    peru = special.expit((x - 255.0) / 10.0) * special.expit(-(y + 4.0) / 4.0)
    mean = 29.3 - 0.0065 * y**2 - 5.0 * ct - 4.0 * peru
    month = np.arange(12)[:, None, None]
    seas = (1.3 * ct + 0.8 * peru) * np.cos(2 * np.pi * (month - 2.5) / 12)
    seas = seas + 1.8 * (y / 20.0) * np.cos(2 * np.pi * (month - 7.5) / 12)
    return mean[None] + seas


def zos_climatology(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Seasonal sea-surface-height climatology in m (high in the west).

    Parameters
    ----------
    lat, lon : numpy.ndarray
        ``(lat,)`` and ``(lon,)`` coordinates (degrees).

    Returns
    -------
    numpy.ndarray
        ``(12, lat, lon)`` climatology, January first.
    """
    y = lat[:, None]
    mean = 0.25 - 0.45 * ((lon[None, :] - 120.0) / 160.0) * np.exp(-((y / 15.0) ** 2))
    mean = mean + 0.08 * np.exp(-(((y - 9.0) / 4.0) ** 2))
    month = np.arange(12)[:, None, None]
    return mean[None] + 0.02 * (y / 20.0) * np.cos(2 * np.pi * (month - 8.0) / 12)
