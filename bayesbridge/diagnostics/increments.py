"""Latent and decoded increments: what the analysis changed, and along which directions.

**Latent increments** :math:`\\delta_t = \\bar z^a_t - \\bar z^f_t` (analysis minus forecast
mean, ``(*batch, T, d)``). Their uncentred second moment :math:`M = \\langle \\delta_t
\\delta_t^T \\rangle` (systematic corrections count) is split per latent component
(:math:`M_{kk} / \\mathrm{tr} M`) and per principal direction (eigenvectors :math:`e_j` of
:math:`M`, share :math:`\\lambda_j / \\sum \\lambda`); the leading directions are decoded to
maps :math:`\\sqrt{\\lambda_j}\\, D\\, e_j` (the field pattern of a one-rms increment along
:math:`e_j`, ``D`` the decoder's Jacobian at the mean forecast state). Shares are in the
Euclidean metric of the latent coordinates (:func:`latent_increments`).

**Decoded increments** :math:`\\mathrm{decode}(\\bar z^a_t) - \\mathrm{decode}(\\bar z^f_t)`
per step on ``(time, lat, lon)`` maps (:func:`decoded_increments`): the correction in field
space, which the regime composites of :mod:`bayesbridge.diagnostics.regimes` average.

The forecast mean is the member mean of :math:`f_t` on the previous analysis ensemble when the
result stores one (the exact forecast mean, model noise having zero mean), else
:math:`f_t(\\bar z^a_{t-1})`; the first step starts from ``m0``.

References
----------
Kalnay (2003), *Atmospheric Modeling, Data Assimilation and Predictability*, sec. 5.4 (gain and
increments); Behnoudfar, Moser, Bocquet, Cheng & Chen (2026), npj Clim. Atmos. Sci.,
arXiv:2510.13030 (latent data assimilation bridging idealized and operational models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from bayesbridge.diagnostics._explain_common import (
    F64,
    Grid,
    check_result,
    decode,
    decode_jvp,
    linear_decoder,
    time_coords,
)
from bayesbridge.errors import InputValueError, ParameterError
from bayesbridge.infer.result import AssimilationResult

__all__ = ["LatentIncrements", "latent_increments", "decoded_increments"]


@dataclass(frozen=True)
class LatentIncrements:
    """Analysis-minus-forecast increments in latent space and the directions that carry them.

    Attributes
    ----------
    increments : xarray.DataArray
        :math:`\\delta_t` on ``(time, latent)`` (``(run, time, latent)`` for batched results).
    component_share : xarray.DataArray
        ``(latent,)`` share of :math:`\\mathrm{tr} M` per latent component (sums to 1).
    direction_share : xarray.DataArray
        ``(mode,)`` eigenvalue shares :math:`\\lambda_j / \\sum \\lambda` of the leading
        ``n_modes`` directions (all ``d`` shares sum to 1; ``total_direction_share`` = 1).
    directions : xarray.DataArray
        ``(mode, latent)`` unit eigenvectors :math:`e_j` (sign: largest entry positive).
    amplitude : xarray.DataArray
        ``(..., time, mode)`` projections :math:`e_j^T \\delta_t`.
    maps : xarray.Dataset or None
        ``(mode, lat, lon)`` decoded one-rms increment :math:`\\sqrt{\\lambda_j} D e_j` per field
        variable (``None`` without a codec).
    mean_increment : xarray.DataArray
        ``(latent,)`` time-mean increment (a systematic correction).
    """

    increments: xr.DataArray
    component_share: xr.DataArray
    direction_share: xr.DataArray
    directions: xr.DataArray
    amplitude: xr.DataArray
    maps: xr.Dataset | None
    mean_increment: xr.DataArray


def _forecast_means(model, result: AssimilationResult) -> torch.Tensor:
    """Forecast means ``(*batch, T, d)``: member mean of ``f_t`` on the previous analysis."""
    mean = result.filtered_mean.to(F64)
    *batch, T, d = mean.shape
    m0 = torch.as_tensor(model.initial()[0], dtype=F64).expand(*batch, d)
    ens = result.filtered_ensemble
    out = torch.empty_like(mean)
    with torch.no_grad():
        for t in range(T):
            if t == 0:
                out[..., 0, :] = model.transition_mean(m0, 0).to(F64)
            elif ens is not None:
                out[..., t, :] = model.transition_mean(ens[..., t - 1, :, :].to(F64), t).to(F64).mean(-2)
            else:
                out[..., t, :] = model.transition_mean(mean[..., t - 1, :], t).to(F64)
    return out


def _lead(batch: Sequence[int], coords: dict) -> tuple[tuple[str, ...], dict, int]:
    """Leading dims, their coordinates and the number of runs: ``("run", "time")`` for batched results."""
    if batch:
        B = int(np.prod(batch))
        return ("run", "time"), {"run": np.arange(B), **coords}, B
    return ("time",), dict(coords), 1


def latent_increments(
    model,
    result: AssimilationResult,
    codec=None,
    *,
    n_modes: int = 3,
    time=None,
    field_units: Mapping[str, str] | None = None,
) -> LatentIncrements:
    """Latent increments :math:`\\delta_t = \\bar z^a_t - \\bar z^f_t` and their leading directions.

    Parameters
    ----------
    model : StateSpace
    result : AssimilationResult
        Filter output ``(*batch, T, d)``; with ``filtered_ensemble`` the forecast mean is
        :math:`\\frac1N \\sum_j f_t(z^{a,j}_{t-1})` (exact mean of the forecast ensemble, model
        noise has zero mean), otherwise :math:`f_t(\\bar z^a_{t-1})`; the first step starts from
        ``m0``.
    codec : Codec, optional
        Decodes the leading directions to maps (Jacobian at the mean forecast state).
    n_modes : int
        Number of leading directions returned (1 <= n_modes <= d).
    time : array-like (T,), optional
        Time coordinate of the steps.
    field_units : dict, optional
        Units per field variable for the maps.

    Returns
    -------
    LatentIncrements
    """
    result = check_result(result, "")
    *batch, T, d = result.filtered_mean.shape
    if not isinstance(n_modes, int | np.integer) or isinstance(n_modes, bool) or not 1 <= n_modes <= d:
        raise ParameterError(f"n_modes: expected an integer in [1, {d}] (latent_dim), got {n_modes!r}.")
    coords, _ = time_coords(time, T)
    fc = _forecast_means(model, result)
    inc = (result.filtered_mean.to(F64) - fc).reshape(-1, T, d)
    flat = inc.reshape(-1, d)
    M = flat.mT @ flat / flat.shape[0]
    total = float(M.trace())
    if not total > 0:
        raise InputValueError("result: every increment is zero; the analysis never moved the forecast.")
    lam, V = torch.linalg.eigh(M)
    lam, V = lam.flip(0).clamp_min(0.0), V.flip(1)
    V = V * torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))
    lam_k, V_k = lam[:n_modes], V[:, :n_modes]
    dims, lead, _ = _lead(batch, coords)
    modes = np.arange(1, n_modes + 1)
    latent = np.arange(d)
    incs = inc.numpy() if batch else inc[0].numpy()
    increments = xr.DataArray(incs, dims=(*dims, "latent"), coords={**lead, "latent": latent}, name="increment",
                              attrs={"long_name": "analysis minus forecast mean (latent)"})  # fmt: skip
    amp = (inc @ V_k).numpy()
    amplitude = xr.DataArray(amp if batch else amp[0], dims=(*dims, "mode"), coords={**lead, "mode": modes},
                             name="amplitude", attrs={"long_name": "projection of the increment on each direction"})  # fmt: skip
    comp = xr.DataArray((M.diagonal() / total).numpy(), dims=("latent",), coords={"latent": latent},
                        name="component_share", attrs={"units": "1"})  # fmt: skip
    dshare = xr.DataArray((lam_k / lam.sum()).numpy(), dims=("mode",), coords={"mode": modes},
                          name="direction_share", attrs={"units": "1"})  # fmt: skip
    directions = xr.DataArray(V_k.mT.numpy(), dims=("mode", "latent"), coords={"mode": modes, "latent": latent},
                              name="direction")  # fmt: skip
    mean_inc = xr.DataArray(flat.mean(0).numpy(), dims=("latent",), coords={"latent": latent}, name="mean_increment")
    maps = None
    if codec is not None:
        grid = Grid(codec, field_units)
        zref = fc.reshape(-1, d).mean(0, keepdim=True)
        tang = (V_k * lam_k.sqrt()).mT.unsqueeze(0)  # (1, k, d)
        x = decode_jvp(codec, zref, tang, grid.n_points)[0].detach().numpy()
        maps = grid.to_dataset(x, ("mode",), {"mode": modes}, long_name="decoded one-rms latent increment")
    return LatentIncrements(increments, comp, dshare, directions, amplitude, maps, mean_inc)


def decoded_increments(model, result: AssimilationResult, codec, *, time=None,
                       field_units: Mapping[str, str] | None = None) -> xr.Dataset:  # fmt: skip
    """Decoded correction per step: :math:`\\mathrm{decode}(\\bar z^a_t) - \\mathrm{decode}(\\bar z^f_t)`.

    Parameters
    ----------
    model : StateSpace
        The model the filter ran with; its ``transition_mean`` gives the forecast means.
    result : AssimilationResult
        Filter output, ``filtered_mean`` of shape ``(*batch, T, d)``; with ``filtered_ensemble``
        the forecast mean is the mean of :math:`f_t` over the previous analysis members,
        otherwise :math:`f_t(\\bar z^a_{t-1})`; the first step starts from ``m0``.
    codec : Codec
        Fitted codec with ``decode_tensor`` and ``points`` (MultiIndex ``variable, lat, lon``);
        both means are decoded and subtracted in field space (not the increment decoded, which
        differs for a nonlinear decoder).
    time : array-like (T,), optional
        Time coordinate of the steps (default ``0..T-1``).
    field_units : dict of str to str, optional
        Units per field variable, overriding those the codec knows.

    Returns
    -------
    xarray.Dataset
        One variable per field variable on ``(time, lat, lon)`` (``(run, time, lat, lon)`` for
        batched results), float32, field units; forecast means as in :func:`latent_increments`.
    """
    result = check_result(result, "")
    grid = Grid(codec, field_units)
    *batch, T, d = result.filtered_mean.shape
    coords, _ = time_coords(time, T)
    fc = _forecast_means(model, result)
    W = linear_decoder(codec, d, grid.n_points)
    with torch.no_grad():
        if W is not None:  # the means cancel: decode(za) - decode(zf) = (za - zf) W
            x = (result.filtered_mean.to(F64) - fc) @ W
        else:
            x = decode(codec, result.filtered_mean.to(F64), grid.n_points) - decode(codec, fc, grid.n_points)
    dims, lead, B = _lead(batch, coords)
    x = x.reshape(B, T, -1).numpy() if batch else x.numpy()
    ds = grid.to_dataset(x, dims, lead, long_name="decoded analysis increment", dtype=np.float32)
    ds.attrs["description"] = "decode(analysis mean) - decode(forecast mean) at each step"
    return ds
