"""Posterior summaries as CF-attributed xarray: field statistics and box-index series.

Per field variable ``<var>``: ``<var>_{mean,std,q05,q50,q95}`` on ``(time, lat, lon)``; per box:
the same statistics of the exact observable of every draw,
:math:`I_b^{(i)}(t) = c_b \\sum_j W_{bj} x^{(i)}_{j,t}`, with the normalised area weights ``W``
of :func:`bayesbridge.regions.point_box_weights` and the box's scale :math:`c_b` (150 m per m
for ``h_w`` from ``zos``, else 1), in the observable's units; per observation series
``<name>_obs``. The layout
is the ``posterior.nc`` contract of ``docs/design.md`` section 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import AllMissingError, GridCoverageError, VariableNotFoundError
from bayesbridge.regions import REGIONS, STANDARD_BOXES, Region, get_region, point_box_weights

__all__ = ["QUANTILES", "FIELD_STATS", "BoxWeights", "box_weights_for", "assemble_summary", "long_name"]

QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)
"""Quantile levels of the field summaries (``q05``, ``q50``, ``q95``)."""
FIELD_STATS: tuple[str, ...] = ("mean", "std", "q05", "q50", "q95")
"""Summary statistics written per variable as ``<var>_<stat>`` on ``(time, lat, lon)``."""

_LONG_NAMES = {"tos": "sea surface temperature anomaly", "zos": "sea surface height anomaly (thermocline proxy)"}
_CELL_METHODS = {
    "mean": "draw: mean",
    "std": "draw: standard_deviation",
    "q05": "draw: percentile (comment: 5th percentile, linear interpolation)",
    "q50": "draw: median",
    "q95": "draw: percentile (comment: 95th percentile, linear interpolation)",
}
_STAT_TEXT = {"mean": "posterior mean", "std": "posterior standard deviation",
              "q05": "posterior 5% quantile", "q50": "posterior median", "q95": "posterior 95% quantile"}


def long_name(variable: str) -> str:
    """Long name of a field ``variable`` (its name when unknown)."""
    return _LONG_NAMES.get(variable, variable)


class BoxWeights:
    """The boxes whose index series a posterior reports, and their weights on the codec's points.

    Attributes
    ----------
    regions : dict of str to Region
        The boxes by name, in column order of ``W``.
    W : numpy.ndarray ``(n_points, n_boxes)``
        Normalised area weights times each box's :attr:`~bayesbridge.regions.Region.scale`
        (zero outside a box and for other variables), so ``x @ W`` is in observation units.
    """

    def __init__(self, regions: dict[str, Region], W: np.ndarray) -> None:
        self.regions, self.W = regions, W

    @property
    def names(self) -> tuple[str, ...]:
        """Box names, in column order of ``W``."""
        return tuple(self.regions)

    def units(self, box: str, field_units: Mapping[str, str]) -> str:
        """Units of the observable ``box``: its region's, else those of its field (``field_units``)."""
        region = self.regions[box]
        return region.units or field_units[region.variable]


def box_weights_for(points: pd.MultiIndex, variables: Sequence[str], lat, lon, boxes: Sequence[str | Region] | None,
                    area: xr.DataArray | None, regions: Mapping[str, Region] | None = None) -> BoxWeights:
    """Box weights on the codec's ``points`` for ``boxes`` (default the standard boxes).

    Boxes whose variable is not among ``variables`` (``h_w`` without ``zos``) or that the grid
    ``lat, lon`` does not cover are skipped when ``boxes`` is None, and raise otherwise. ``area``
    gives cell areas (default ``cos(lat)``); ``regions`` overrides the definitions of box names
    (default :data:`bayesbridge.regions.REGIONS`).
    """
    strict = boxes is not None
    names = tuple(boxes) if boxes is not None else STANDARD_BOXES
    columns, kept = [], {}
    for name in names:
        region = get_region(name)
        region = (regions or {}).get(region.name, region)
        if region.variable not in variables:
            if strict:
                raise VariableNotFoundError(
                    f"boxes: {name!r} is averaged over {region.variable!r}, which the codec does "
                    f"not decode (it has {', '.join(variables)})."
                )
            continue
        try:
            col = point_box_weights(points, region, lat=lat, lon=lon, area=area)
        except (GridCoverageError, AllMissingError):
            if strict:
                raise
            continue
        columns.append(col * region.scale)
        kept[region.name] = region
    W = np.stack(columns, axis=1) if columns else np.zeros((len(points), 0))
    return BoxWeights(kept, W)


def assemble_summary(grids: Mapping[tuple[str, str], np.ndarray], index: np.ndarray, *, time, lat, lon,
                     units: Mapping[str, str], boxes: BoxWeights, observations: Mapping[str, np.ndarray],
                     assimilated: Sequence[str], attrs: dict) -> xr.Dataset:
    """The summary Dataset of ``posterior.nc``.

    Parameters
    ----------
    grids : mapping of (variable, stat) to ndarray ``(T, nlat, nlon)``
        Field statistics (float32).
    index : ndarray ``(n_boxes, T, draw)``
        Box index of every draw.
    time, lat, lon : array-like
        Coordinates.
    units : mapping of str to str
        Units per field variable.
    boxes : BoxWeights
        The boxes of ``index``.
    observations : mapping of str to ndarray ``(T,)``
        Observed series, written as ``<name>_obs``.
    assimilated : sequence of str
        Which observations were assimilated (the others are withheld).
    attrs : dict
        Global attributes.
    """
    coords = {"time": time, "lat": lat, "lon": lon}
    n_draws = index.shape[-1] if index.ndim == 3 else 0
    out = {}
    for (v, s), arr in grids.items():
        out[f"{v}_{s}"] = xr.DataArray(arr, dims=("time", "lat", "lon"), attrs={
            "units": units[v],
            "long_name": f"{_STAT_TEXT[s]} of {long_name(v)}",
            "cell_methods": _CELL_METHODS[s],
        })
    for b_i, box in enumerate(boxes.names):
        draws = index[b_i]  # (T, draw)
        unit = boxes.units(box, units)
        region = boxes.regions[box]
        qs = np.quantile(draws, QUANTILES, axis=1)
        for s, values in (("mean", draws.mean(axis=1)), ("std", draws.std(axis=1, ddof=1) if
                          n_draws > 1 else np.zeros(draws.shape[0])),
                          ("q05", qs[0]), ("q50", qs[1]), ("q95", qs[2])):
            out[f"{box}_{s}"] = xr.DataArray(values.astype(np.float32), dims="time", attrs={
                "units": unit,
                "long_name": f"{_STAT_TEXT[s]} of the {region.long_name or box} index",
                "cell_methods": f"area: mean {_CELL_METHODS[s]}",
            })
    for name, values in observations.items():
        role = "assimilated" if name in assimilated else "withheld"
        if name in boxes.regions:
            reg_unit = boxes.units(name, units)
        elif name in REGIONS:
            reg_unit = REGIONS[name].units or units.get(REGIONS[name].variable, "1")
        else:
            reg_unit = "1"
        out[f"{name}_obs"] = xr.DataArray(values.astype(np.float32), dims="time", attrs={
            "units": reg_unit, "long_name": f"observed {name} index ({role})",
            "cell_methods": "area: mean",
        })
    ds = xr.Dataset(out, coords=coords)
    ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}
    ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}
    ds["time"].attrs.update({"standard_name": "time", "long_name": "time"})
    ds.attrs = attrs
    return ds
