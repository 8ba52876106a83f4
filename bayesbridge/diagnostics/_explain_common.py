"""Helpers shared by the explanation diagnostics: result checks, decoding, Jacobians, map grids.

The gain maps (:mod:`bayesbridge.diagnostics.gains`) and the increments
(:mod:`bayesbridge.diagnostics.increments`) both decode latent states ``z (..., d)`` to field
values at the codec's points ``(..., n_points)`` (:func:`decode`), push latent directions
through the decoder's Jacobian :math:`D = \\partial\\,\\mathrm{decode} / \\partial z` by
forward-mode differentiation (:func:`jvp`, ``J(z) v`` without forming ``J``), and scatter the
point values back to ``(..., lat, lon)`` maps per field variable (:class:`Grid`, NaN where a
variable has no point, e.g. over land). :func:`time_coords` validates the time axis of the
steps and :func:`check_result` the assimilation result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import InputTypeError, InputValueError, ShapeMismatchError
from bayesbridge.infer.result import AssimilationResult

__all__ = ["F64", "CHUNK_ELEMENTS", "Grid", "check_result", "decode", "decode_jvp", "jvp", "linear_decoder", "time_coords"]

F64 = torch.float64
CHUNK_ELEMENTS = 5_000_000  # decoded values per chunk (40 MB in float64)


def check_result(result, need: str) -> AssimilationResult:
    """``result`` if it is an :class:`AssimilationResult` holding what ``need`` asks for, else an error.

    ``need``: ``"ensemble"`` (``filtered_ensemble``), ``"kalman"`` (``filtered_cov``) or ``""``.
    """
    if not isinstance(result, AssimilationResult):
        raise InputTypeError(
            f"result: expected a bayesbridge.infer.AssimilationResult (from assimilate), got "
            f"{type(result).__name__}."
        )
    if need == "ensemble" and result.filtered_ensemble is None:
        raise InputValueError(
            f"result: the ensemble gain needs filtered_ensemble (*batch, T, member, d), but the "
            f"{result.method!r} result has none; rerun with store_ensemble=True, pass forecast=..., "
            f"or use method='kalman' for an exact Kalman result."
        )
    if need == "kalman" and result.filtered_cov is None:
        raise InputValueError(
            f"result: the Kalman gain needs filtered_cov (*batch, T, d, d), but the "
            f"{result.method!r} result has none; use method='ensemble'."
        )
    return result


class Grid:
    """Scatter ``(..., n_points)`` codec outputs to ``(..., lat, lon)`` maps per variable.

    ``codec`` a fitted codec with ``decode_tensor`` and ``points`` (MultiIndex ``variable, lat,
    lon``); ``field_units`` overrides the units it knows per variable.
    """

    def __init__(self, codec, field_units: Mapping[str, str] | None) -> None:
        points = getattr(codec, "points", None)
        if not callable(getattr(codec, "decode_tensor", None)) or not isinstance(points, pd.MultiIndex) or points.nlevels != 3:
            raise InputTypeError(
                f"codec: expected a fitted Codec with decode_tensor and points (MultiIndex variable, "
                f"lat, lon), got {type(codec).__name__}; call codec.fit(fields) first."
            )
        var = np.asarray(points.get_level_values(0)).astype(str)
        lat = np.asarray(points.get_level_values(1), dtype=float)
        lon = np.asarray(points.get_level_values(2), dtype=float)
        self.lat, self.lon = np.unique(lat), np.unique(lon)
        self.variables = tuple(dict.fromkeys(var))
        self.n_points = len(points)
        self.where = {
            v: (np.nonzero(var == v)[0], np.searchsorted(self.lat, lat[var == v]), np.searchsorted(self.lon, lon[var == v]))
            for v in self.variables
        }
        units = dict(getattr(getattr(codec, "stacker", None), "units", None) or getattr(codec, "units", None) or {})
        units.update(field_units or {})
        self.units = {v: str(units.get(v, "")) for v in self.variables}

    def to_dataset(self, values: np.ndarray, dims: tuple[str, ...], coords: dict, units_suffix: str = "",
                   long_name: str = "", dtype=np.float64) -> xr.Dataset:  # fmt: skip
        """One ``(*dims, lat, lon)`` variable per field variable from ``values (..., n_points)``.

        ``coords`` label ``dims``; units are the field's plus ``units_suffix``, the long name
        ``"<long_name> of <variable>"``; maps are ``dtype`` with NaN where a variable has no point.
        """
        lead = values.shape[:-1]
        out = {}
        for v, (pos, ii, jj) in self.where.items():
            grid = np.full((*lead, self.lat.size, self.lon.size), np.nan, dtype=dtype)
            grid[..., ii, jj] = values[..., pos]
            unit = self.units[v] or "field units"
            out[v] = xr.DataArray(grid, dims=(*dims, "lat", "lon"),
                                  attrs={"units": f"{unit}{units_suffix}", "long_name": f"{long_name} of {v}".strip()})  # fmt: skip
        ds = xr.Dataset(out, coords={**coords, "lat": self.lat, "lon": self.lon})
        ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
        ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
        return ds


def decode(codec, z: torch.Tensor, n_points: int) -> torch.Tensor:
    """``codec.decode_tensor(z)`` in float64, ``(..., d) -> (..., n_points)``, its width checked."""
    x = codec.decode_tensor(z).to(F64)
    if x.shape[-1] != n_points:
        raise ShapeMismatchError(
            f"codec: decode_tensor returned {x.shape[-1]} values per state, but points has {n_points}."
        )
    return x


def jvp(fn, z: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """Directional derivatives ``J(z_b) v_{b,k}`` of a member-wise function.

    ``z`` ``(B, d)``, ``tangents`` ``(B, k, d)`` -> ``(B, k, n)``. Forward-mode AD
    (:func:`torch.func.jvp`), falling back to the double-backward trick.
    """
    zz = z.unsqueeze(-2).expand(tangents.shape).contiguous()
    try:
        return torch.func.jvp(lambda u: fn(u).to(F64), (zz,), (tangents,))[1]
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jvp(lambda u: fn(u).to(F64), zz, tangents)[1]


def linear_decoder(codec, d: int, n_points: int) -> torch.Tensor | None:
    """``W (d, n_points)`` float64 when ``codec`` decodes linearly (``decode_tensor(z) = z W + mean``,
    e.g. the EOF codec's ``decoder_matrix``), else None."""
    if hasattr(type(codec), "decoder_matrix"):
        W = torch.as_tensor(codec.decoder_matrix, dtype=F64)
        if tuple(W.shape) == (d, n_points):
            return W
    return None


def decode_jvp(codec, z: torch.Tensor, tangents: torch.Tensor, n_points: int) -> torch.Tensor:
    """Directional derivatives of the decoder, ``J_dec(z_b) v_{b,k}``, ``(B, k, n_points)`` float64.

    A linear decoder (:func:`linear_decoder`) has the constant Jacobian ``W``: the tangents are
    multiplied by it, without automatic differentiation; any other decoder goes through
    :func:`jvp`.
    """
    W = linear_decoder(codec, z.shape[-1], n_points)
    if W is not None:
        return tangents.to(F64) @ W
    return jvp(lambda u: decode(codec, u, n_points), z, tangents)


def time_coords(time, T: int) -> tuple[dict, np.ndarray | None]:
    """``({"time": values}, months or None)`` for a time axis of length ``T``."""
    if time is None:
        return {"time": np.arange(T)}, None
    values = time.values if isinstance(time, xr.DataArray | pd.Index) else np.asarray(time)
    if values.ndim != 1 or values.shape[0] != T:
        raise ShapeMismatchError(
            f"time: expected {T} time values (one per assimilation step), got shape {values.shape}; "
            f"pass the time axis of the assimilated observations."
        )
    try:
        months = np.asarray(xr.DataArray(values, dims="time").dt.month.values)
    except (TypeError, AttributeError):
        months = None
    return {"time": values}, months
