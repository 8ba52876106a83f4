"""Explanations of the correction: physical gain maps and latent increments.

The bridge corrects the operational model by assimilating a few indices ``y_t`` (``m`` of them)
into its latent state ``z_t`` (``d`` components) and decoding. Three views explain *what* the
assimilation changes and *why*.

**Physical gain maps** (how a unit innovation in each index moves every grid point). The
analysis update is :math:`x^a_t = x^f_t + K_t (y_t - h(z^f_t))` in field space with

.. math::
    K_t = C_{xh}(t)\\,\\bigl(C_{hh}(t) + R\\bigr)^{-1} \\quad (n_\\text{points} \\times m),

where :math:`x = \\mathrm{decode}(z)` and :math:`h = h(z)` are evaluated on the forecast
ensemble and :math:`C_{xh}, C_{hh}` are ensemble (co)variances (Evensen 2003, eq. 2.25;
Houtekamer & Mitchell 1998). Column ``k`` of :math:`K_t` is the field increment produced by a
unit innovation in index ``k`` with the other innovations zero. For the exact Kalman filter of
a linear-Gaussian latent model the latent gain :math:`P^f_t H_t^T S_t^{-1}` is mapped through
the decoder's Jacobian :math:`D_t = \\partial\\,\\mathrm{decode}/\\partial z` at the forecast
mean, :math:`K_t = D_t P^f_t H_t^T (H_t P^f_t H_t^T + R)^{-1}`, which is exact for linear
codecs (EOF) and the first-order (extended Kalman) gain otherwise. Gains are averaged over the
steps where each index is observed (optionally by calendar month, which shows the seasonal
dependence of the correction).

**Latent increments** :math:`\\delta_t = \\bar z^a_t - \\bar z^f_t` (analysis minus forecast
mean). Their uncentred second moment :math:`M = \\langle \\delta_t \\delta_t^T \\rangle`
(systematic corrections count) is split per latent component (:math:`M_{kk} / \\mathrm{tr} M`)
and per principal direction (eigenvectors :math:`e_j` of :math:`M`, share
:math:`\\lambda_j / \\sum \\lambda`); the leading directions are decoded to maps
:math:`\\sqrt{\\lambda_j}\\, D\\, e_j` (the field pattern of a one-rms increment along
:math:`e_j`). Shares are in the Euclidean metric of the latent coordinates.

**Regime composites** of the correction (high versus low Walker index, EP versus CP years)
live in :mod:`bayesbridge.diagnostics.regimes` and are re-exported here.

References
----------
Behnoudfar, Moser, Bocquet, Cheng & Chen (2026), npj Clim. Atmos. Sci., arXiv:2510.13030 —
latent data assimilation bridging idealized and operational models; Evensen (2003), Ocean
Dynamics 53, 343-367; Kalnay (2003), *Atmospheric Modeling, Data Assimilation and
Predictability*, sec. 5.4 (gain and increments); Chen, Fang & Yu (2022), npj Clim. Atmos. Sci.
5:16 (regimes of the multiscale ENSO model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.diagnostics.regimes import (
    RegimeComposites,
    enso_regimes,
    regime_composites,
    walker_regimes,
)
from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    check_choice,
)
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.result import AssimilationResult

__all__ = [
    "GainMaps",
    "LatentIncrements",
    "RegimeComposites",
    "forecast_ensemble",
    "gain_maps",
    "latent_increments",
    "decoded_increments",
    "walker_regimes",
    "enso_regimes",
    "regime_composites",
]

GainMethod = Literal["auto", "ensemble", "kalman"]
_F64 = torch.float64
_CHUNK_ELEMENTS = 20_000_000  # decoded values per chunk (160 MB in float64)


# ----------------------------------------------------------------------------- containers
@dataclass(frozen=True)
class GainMaps:
    """Time-averaged physical gains.

    Attributes
    ----------
    maps : xarray.Dataset
        One variable per field variable on ``(index, lat, lon)`` (``(month, index, lat, lon)``
        with ``by_month``); units ``"<field units> per observation unit"``; NaN over land.
    latent_gain : xarray.DataArray
        The latent gain :math:`C_{zh}(C_{hh}+R)^{-1}` (or :math:`P^f H^T S^{-1}`) on
        ``(index, latent)`` (``(month, index, latent)``), averaged like ``maps``.
    n_steps : xarray.DataArray
        Number of (run, step) pairs averaged for each index (``(index,)`` or ``(month, index)``).
    method : {"ensemble", "kalman"}
        Ensemble covariances or the exact Kalman gain through the decoder's Jacobian.
    members : int or None
        Ensemble size used (``None`` for ``"kalman"``).
    """

    maps: xr.Dataset
    latent_gain: xr.DataArray
    n_steps: xr.DataArray
    method: str
    members: int | None = None


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


# ----------------------------------------------------------------------------- helpers
def _check_result(result, need: str) -> AssimilationResult:
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


class _Grid:
    """Scatter ``(..., n_points)`` codec outputs to ``(..., lat, lon)`` maps per variable."""

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


def _decode(codec, z: torch.Tensor, n_points: int) -> torch.Tensor:
    x = codec.decode_tensor(z).to(_F64)
    if x.shape[-1] != n_points:
        raise ShapeMismatchError(
            f"codec: decode_tensor returned {x.shape[-1]} values per state, but points has {n_points}."
        )
    return x


def _jvp(fn, z: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """Directional derivatives ``J(z_b) v_{b,k}`` of a member-wise function.

    ``z`` ``(B, d)``, ``tangents`` ``(B, k, d)`` -> ``(B, k, n)``. Forward-mode AD
    (:func:`torch.func.jvp`), falling back to the double-backward trick.
    """
    zz = z.unsqueeze(-2).expand(tangents.shape).contiguous()
    try:
        return torch.func.jvp(lambda u: fn(u).to(_F64), (zz,), (tangents,))[1]
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jvp(lambda u: fn(u).to(_F64), zz, tangents)[1]


def _time_coords(time, T: int) -> tuple[dict, np.ndarray | None]:
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


def _obs_mask(result: AssimilationResult, observations, batch: tuple, T: int, m: int) -> torch.Tensor:
    """Boolean ``(*batch, T, m)``: True where an index was assimilated."""
    if observations is not None:
        y = torch.as_tensor(np.asarray(observations, dtype=float))
        if tuple(y.shape[-2:]) != (T, m):
            raise ShapeMismatchError(
                f"observations: expected shape (*batch, {T}, {m}) to match the result (T={T}) and "
                f"the model (m={m}), got {tuple(y.shape)}."
            )
        return (~torch.isnan(y)).expand(*batch, T, m)
    innov = getattr(result.diagnostics, "innovation", None)
    if innov is not None and tuple(innov.shape) == (*batch, T, m):
        return ~torch.isnan(innov)
    return torch.ones(*batch, T, m, dtype=torch.bool)


def _masked_solve(C: torch.Tensor, S: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``C_eff S_eff^{-1}`` with missing components decoupled: ``C (.., n, m)``, ``S (.., m, m)``."""
    mf = mask.to(_F64)
    S_eff = S * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    C_eff = C * mf.unsqueeze(-2)
    return torch.linalg.solve(S_eff, C_eff.mT).mT


def _index_names(model, m: int, index_names) -> list[str]:
    names = index_names if index_names is not None else getattr(model, "obs_names", None)
    names = [str(n) for n in names] if names is not None else [f"y{k}" for k in range(m)]
    if len(names) != m:
        raise ShapeMismatchError(f"index_names: expected {m} names (model obs_dim), got {len(names)}.")
    return names


# ----------------------------------------------------------------------------- gains
def forecast_ensemble(model, result: AssimilationResult, *, generator: torch.Generator,
                      inflation: float | None = None) -> torch.Tensor:  # fmt: skip
    """Rebuild the forecast ensembles from the analysis ensembles of a filter run.

    .. math::
        z^{f,j}_t = f_t(z^{a,j}_{t-1}) + L_t \\varepsilon^j_t,\\quad \\varepsilon \\sim N(0, I),
        \\qquad z^{a,j}_0 \\sim N(m_0, P_0),

    then forecast anomalies are multiplied by ``inflation``. The noise draws are new (not those
    of the engine), so the rebuilt ensemble has the forecast distribution of the run, not its
    exact members.

    Parameters
    ----------
    model : StateSpace
    result : AssimilationResult
        With ``filtered_ensemble`` ``(*batch, T, member, d)``.
    generator : torch.Generator
        Source of the initial-state and model-error draws.
    inflation : float, optional
        Multiplicative inflation of forecast anomalies (default: ``result.config.inflation`` if
        the engine has one, else 1).

    Returns
    -------
    Tensor ``(*batch, T, member, d)`` float64.
    """
    result = _check_result(result, "ensemble")
    if not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}.")
    infl = float(getattr(result.config, "inflation", 1.0) if inflation is None else inflation)
    if not infl >= 1.0:
        raise ParameterError(f"inflation: expected a number >= 1, got {inflation!r}.")
    ens = result.filtered_ensemble.to(_F64)
    *batch, T, N, d = ens.shape
    m0, P0 = (torch.as_tensor(v, dtype=_F64) for v in model.initial())
    prev = m0 + torch.randn(*batch, N, d, dtype=_F64, generator=generator) @ _psd_sqrt(P0).mT
    out = torch.empty_like(ens)
    for t in range(T):
        if t > 0:
            prev = ens[..., t - 1, :, :]
        L = _psd_sqrt(torch.as_tensor(model.transition_cov(t), dtype=_F64))
        E = model.transition_mean(prev, t).to(_F64) + torch.randn(*batch, N, d, dtype=_F64, generator=generator) @ L.mT
        if infl != 1.0:
            xbar = E.mean(-2, keepdim=True)
            E = xbar + infl * (E - xbar)
        out[..., t, :, :] = E
    return out


def _kalman_forecast(model, result: AssimilationResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecast means ``(B, T, d)`` and covariances ``(B, T, d, d)`` behind a Kalman result.

    :math:`m^f_t = f_t(m_{t-1})`, :math:`P^f_t = F_t P_{t-1} F_t^T + Q_t` with
    :math:`F_t = \\partial f_t / \\partial z` at :math:`m_{t-1}` (``m_0, P_0`` at the first step).
    """
    mean = result.filtered_mean.to(_F64)
    cov = result.filtered_cov.to(_F64)
    *batch, T, d = mean.shape
    B = int(np.prod(batch)) if batch else 1
    mean, cov = mean.reshape(B, T, d), cov.reshape(B, T, d, d)
    m0, P0 = (torch.as_tensor(v, dtype=_F64) for v in model.initial())
    eye = torch.eye(d, dtype=_F64).expand(B, d, d)
    mf = torch.empty(B, T, d, dtype=_F64)
    Pf = torch.empty(B, T, d, d, dtype=_F64)
    for t in range(T):
        m_prev = m0.expand(B, d) if t == 0 else mean[:, t - 1]
        P_prev = P0.expand(B, d, d) if t == 0 else cov[:, t - 1]
        F = _jvp(lambda z, t=t: model.transition_mean(z, t), m_prev, eye).mT  # (B, d, d)
        with torch.no_grad():
            mf[:, t] = model.transition_mean(m_prev, t).to(_F64)
        Pf[:, t] = F @ P_prev @ F.mT + torch.as_tensor(model.transition_cov(t), dtype=_F64)
    return mf, Pf


def gain_maps(
    model,
    result: AssimilationResult,
    codec,
    *,
    method: GainMethod = "auto",
    forecast: torch.Tensor | None = None,
    observations=None,
    time=None,
    by_month: bool = False,
    generator: torch.Generator | None = None,
    index_names: Sequence[str] | None = None,
    field_units: Mapping[str, str] | None = None,
) -> GainMaps:
    """Physical gain maps: the field increment per unit innovation of each assimilated index.

    Parameters
    ----------
    model : StateSpace
        The model that was assimilated into (``observe``, ``obs_cov``, ``transition_mean``,
        ``transition_cov``, ``initial``).
    result : AssimilationResult
        A filter run (``filtered_ensemble`` for the ensemble gain, ``filtered_cov`` for the
        Kalman gain), shapes ``(*batch, T, ...)``; batched runs are pooled.
    codec : Codec
        ``decode_tensor`` ``(*batch, d) -> (*batch, n_points)`` and ``points``.
    method : {"auto", "ensemble", "kalman"}
        ``"auto"``: ``"kalman"`` for results of the Kalman engine, else ``"ensemble"``.
    forecast : Tensor (*batch, T, member, d), optional
        Forecast ensembles; by default rebuilt with :func:`forecast_ensemble`.
    observations : array (*batch, T, m), optional
        Assimilated observations; NaN marks steps that did not use an index (default: the NaNs
        of ``result.diagnostics.innovation``). Gains are averaged over observed steps only.
    time : array-like (T,), optional
        Times of the steps (datetime/cftime); needed for ``by_month``.
    by_month : bool
        Average separately per calendar month (adds a ``month`` dimension, 1..12).
    generator : torch.Generator, optional
        For rebuilding the forecast ensemble (default: seeded with 0).
    index_names : sequence of str, optional
        Names of the indices (default ``model.obs_names`` or ``y0, y1, ...``).
    field_units : dict of str to str, optional
        Units per field variable (default the codec's).

    Returns
    -------
    GainMaps

    Notes
    -----
    Ensemble: :math:`K_t = C_{xh}(t)(C_{hh}(t) + R)^{-1}` with ``x`` the decoded forecast
    members, ``h = observe(z)``; sample covariances with ``N - 1``. Kalman:
    :math:`K_t = D_t P^f_t H_t^T (H_t P^f_t H_t^T + R)^{-1}` with :math:`P^f_t = F_t P_{t-1}
    F_t^T + Q_t`, Jacobians :math:`F_t, H_t, D_t` at the previous analysis / forecast mean
    (forward-mode AD; exact for linear dynamics, observation operator and codec). Components
    missing at step ``t`` are decoupled (zero gain column) and that step does not enter their
    average.
    """
    check_choice(method, "method", get_args(GainMethod), error=InputValueError)
    if not isinstance(result, AssimilationResult):
        _check_result(result, "")
    if method == "auto":
        method = "kalman" if result.method == "kalman" and result.filtered_cov is not None else "ensemble"
    grid = _Grid(codec, field_units)
    R = torch.as_tensor(model.obs_cov(), dtype=_F64)
    m = R.shape[-1]
    names = _index_names(model, m, index_names)
    *batch, T, d = result.filtered_mean.shape
    B = int(np.prod(batch)) if batch else 1
    coords, months = _time_coords(time, T)
    if by_month and months is None:
        raise InputValueError(
            "by_month=True: expected datetime-like time values (numpy datetime64 or cftime) for "
            "the steps; pass time=<the observations' time axis>."
        )
    groups = np.asarray(months) - 1 if by_month else np.zeros(T, dtype=int)
    G = 12 if by_month else 1
    mask = _obs_mask(result, observations, tuple(batch), T, m).reshape(B, T, m)
    n = grid.n_points
    sum_x = torch.zeros(G, n, m, dtype=_F64)
    sum_z = torch.zeros(G, d, m, dtype=_F64)
    count = torch.zeros(G, m, dtype=_F64)
    members = None
    if method == "kalman":
        _check_result(result, "kalman")
        mf, Pf = _kalman_forecast(model, result)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, B * max(m, d) * n))
        for t0 in range(0, T, chunk):
            sl = slice(t0, min(T, t0 + chunk))
            z = mf[:, sl].reshape(-1, d)
            tc = z.shape[0] // B
            H = _jvp(model.observe, z, torch.eye(d, dtype=_F64).expand(z.shape[0], d, d)).mT.reshape(B, tc, m, d)
            PHt = Pf[:, sl] @ H.mT
            kz = _masked_solve(PHt, H @ PHt + R, mask[:, sl])  # (B, tc, d, m)
            kx = _jvp(lambda u: _decode(codec, u, n), z, kz.mT.reshape(B * tc, m, d))
            _accumulate(sum_x, sum_z, count, kx.reshape(B, tc, m, n).mT, kz, mask[:, sl], groups[sl])
    else:
        if forecast is None:
            _check_result(result, "ensemble")
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            forecast = forecast_ensemble(model, result, generator=gen)
        forecast = torch.as_tensor(forecast, dtype=_F64)
        if forecast.ndim < 3 or tuple(forecast.shape[:-2]) != (*batch, T) or forecast.shape[-1] != d:
            raise ShapeMismatchError(
                f"forecast: expected shape (*batch, T, member, d) = ({', '.join(map(str, (*batch, T)))}, N, {d}) "
                f"to match the result, got {tuple(forecast.shape)}."
            )
        N = forecast.shape[-2]
        if N < 2:
            raise ParameterError(f"forecast: expected at least 2 members, got {N}.")
        members = N
        forecast = forecast.reshape(B, T, N, d)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, B * N * n))
        with torch.no_grad():
            for t0 in range(0, T, chunk):
                sl = slice(t0, min(T, t0 + chunk))
                E = forecast[:, sl]
                X = _decode(codec, E, n)
                Hx = model.observe(E).to(_F64)
                Xa, Ha, Za = (V - V.mean(-2, keepdim=True) for V in (X, Hx, E))
                S = Ha.mT @ Ha / (N - 1) + R
                Kx = _masked_solve(Xa.mT @ Ha / (N - 1), S, mask[:, sl])
                Kz = _masked_solve(Za.mT @ Ha / (N - 1), S, mask[:, sl])
                _accumulate(sum_x, sum_z, count, Kx, Kz, mask[:, sl], groups[sl])
    denom = count.clamp_min(1.0)
    kx_mean = (sum_x / denom.unsqueeze(1)).mT.numpy()  # (G, m, n)
    kz_mean = (sum_z / denom.unsqueeze(1)).mT.numpy()
    kx_mean[(count == 0).numpy()] = np.nan
    kz_mean[(count == 0).numpy()] = np.nan
    lead_dims, lead = ("month", "index"), {"month": np.arange(1, 13), "index": names}
    if not by_month:
        kx_mean, kz_mean, count = kx_mean[0], kz_mean[0], count[0]
        lead_dims, lead = ("index",), {"index": names}
    maps = grid.to_dataset(kx_mean, lead_dims, lead, units_suffix=" per observation unit",
                           long_name=f"{method} gain (field increment per unit innovation)")  # fmt: skip
    maps.attrs = {"method": method, "description": "time-mean physical Kalman gain, column per assimilated index"}
    latent = xr.DataArray(kz_mean, dims=(*lead_dims, "latent"), coords={**lead, "latent": np.arange(d)},
                          name="latent_gain", attrs={"units": "latent units per observation unit"})  # fmt: skip
    n_steps = xr.DataArray(count.numpy().astype(int), dims=lead_dims, coords=lead, name="n_steps")
    return GainMaps(maps, latent, n_steps, method, members)


def _accumulate(sum_x, sum_z, count, Kx, Kz, mask, groups) -> None:
    """Add gains ``Kx (B, tc, n, m)``, ``Kz (B, tc, d, m)`` into their calendar groups."""
    g = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    mf = mask.to(_F64)  # (B, tc, m)
    for k in torch.unique(g).tolist():
        sel = g == k
        sum_x[k] += Kx[:, sel].sum((0, 1))
        sum_z[k] += Kz[:, sel].sum((0, 1))
        count[k] += mf[:, sel].sum((0, 1))


# ----------------------------------------------------------------------------- increments
def _forecast_means(model, result: AssimilationResult) -> torch.Tensor:
    """Forecast means ``(*batch, T, d)``: member mean of ``f_t`` on the previous analysis."""
    mean = result.filtered_mean.to(_F64)
    *batch, T, d = mean.shape
    m0 = torch.as_tensor(model.initial()[0], dtype=_F64).expand(*batch, d)
    ens = result.filtered_ensemble
    out = torch.empty_like(mean)
    with torch.no_grad():
        for t in range(T):
            if t == 0:
                out[..., 0, :] = model.transition_mean(m0, 0).to(_F64)
            elif ens is not None:
                out[..., t, :] = model.transition_mean(ens[..., t - 1, :, :].to(_F64), t).to(_F64).mean(-2)
            else:
                out[..., t, :] = model.transition_mean(mean[..., t - 1, :], t).to(_F64)
    return out


def _lead(batch: Sequence[int], time_coords: dict) -> tuple[tuple[str, ...], dict, int]:
    if batch:
        B = int(np.prod(batch))
        return ("run", "time"), {"run": np.arange(B), **time_coords}, B
    return ("time",), dict(time_coords), 1


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
    result = _check_result(result, "")
    *batch, T, d = result.filtered_mean.shape
    if not isinstance(n_modes, int | np.integer) or isinstance(n_modes, bool) or not 1 <= n_modes <= d:
        raise ParameterError(f"n_modes: expected an integer in [1, {d}] (latent_dim), got {n_modes!r}.")
    coords, _ = _time_coords(time, T)
    fc = _forecast_means(model, result)
    inc = (result.filtered_mean.to(_F64) - fc).reshape(-1, T, d)
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
        grid = _Grid(codec, field_units)
        zref = fc.reshape(-1, d).mean(0, keepdim=True)
        tang = (V_k * lam_k.sqrt()).mT.unsqueeze(0)  # (1, k, d)
        x = _jvp(lambda z: _decode(codec, z, grid.n_points), zref, tang)[0].detach().numpy()
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
    result = _check_result(result, "")
    grid = _Grid(codec, field_units)
    *batch, T, d = result.filtered_mean.shape
    coords, _ = _time_coords(time, T)
    fc = _forecast_means(model, result)
    with torch.no_grad():
        x = _decode(codec, result.filtered_mean.to(_F64), grid.n_points) - _decode(codec, fc, grid.n_points)
    dims, lead, B = _lead(batch, coords)
    x = x.reshape(B, T, -1).numpy() if batch else x.numpy()
    ds = grid.to_dataset(x, dims, lead, long_name="decoded analysis increment", dtype=np.float32)
    ds.attrs["description"] = "decode(analysis mean) - decode(forecast mean) at each step"
    return ds
