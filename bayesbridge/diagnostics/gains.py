"""Physical gain maps: how a unit innovation in each assimilated index moves every grid point.

The analysis update is :math:`x^a_t = x^f_t + K_t (y_t - h(z^f_t))` in field space with

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
dependence of the correction). :func:`forecast_ensemble` rebuilds the forecast ensembles the
ensemble gain needs from a filter run.

References
----------
Evensen (2003), Ocean Dynamics 53, 343-367; Houtekamer & Mitchell (1998), Mon. Wea. Rev. 126,
796-811; Kalnay (2003), *Atmospheric Modeling, Data Assimilation and Predictability*, sec. 5.4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr

from bayesbridge.diagnostics._explain_common import (
    CHUNK_ELEMENTS,
    F64,
    Grid,
    check_result,
    decode,
    decode_jvp,
    jvp,
    linear_decoder,
    time_coords,
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

__all__ = ["GainMaps", "GainMethod", "forecast_ensemble", "gain_maps"]

GainMethod = Literal["auto", "ensemble", "kalman"]


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
    result = check_result(result, "ensemble")
    if not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}.")
    infl = float(getattr(result.config, "inflation", 1.0) if inflation is None else inflation)
    if not infl >= 1.0:
        raise ParameterError(f"inflation: expected a number >= 1, got {inflation!r}.")
    ens = result.filtered_ensemble.to(F64)
    *batch, T, N, d = ens.shape
    m0, P0 = (torch.as_tensor(v, dtype=F64) for v in model.initial())
    prev = m0 + torch.randn(*batch, N, d, dtype=F64, generator=generator) @ _psd_sqrt(P0).mT
    out = torch.empty_like(ens)
    for t in range(T):
        if t > 0:
            prev = ens[..., t - 1, :, :]
        L = _psd_sqrt(torch.as_tensor(model.transition_cov(t), dtype=F64))
        E = model.transition_mean(prev, t).to(F64) + torch.randn(*batch, N, d, dtype=F64, generator=generator) @ L.mT
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
    mean = result.filtered_mean.to(F64)
    cov = result.filtered_cov.to(F64)
    *batch, T, d = mean.shape
    B = int(np.prod(batch)) if batch else 1
    mean, cov = mean.reshape(B, T, d), cov.reshape(B, T, d, d)
    m0, P0 = (torch.as_tensor(v, dtype=F64) for v in model.initial())
    eye = torch.eye(d, dtype=F64).expand(B, d, d)
    mf = torch.empty(B, T, d, dtype=F64)
    Pf = torch.empty(B, T, d, d, dtype=F64)
    for t in range(T):
        m_prev = m0.expand(B, d) if t == 0 else mean[:, t - 1]
        P_prev = P0.expand(B, d, d) if t == 0 else cov[:, t - 1]
        F = jvp(lambda z, t=t: model.transition_mean(z, t), m_prev, eye).mT  # (B, d, d)
        with torch.no_grad():
            mf[:, t] = model.transition_mean(m_prev, t).to(F64)
        Pf[:, t] = F @ P_prev @ F.mT + torch.as_tensor(model.transition_cov(t), dtype=F64)
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
        check_result(result, "")
    if method == "auto":
        method = "kalman" if result.method == "kalman" and result.filtered_cov is not None else "ensemble"
    grid = Grid(codec, field_units)
    R = torch.as_tensor(model.obs_cov(), dtype=F64)
    m = R.shape[-1]
    names = _index_names(model, m, index_names)
    *batch, T, d = result.filtered_mean.shape
    B = int(np.prod(batch)) if batch else 1
    coords, months = time_coords(time, T)
    if by_month and months is None:
        raise InputValueError(
            "by_month=True: expected datetime-like time values (numpy datetime64 or cftime) for "
            "the steps; pass time=<the observations' time axis>."
        )
    groups = np.asarray(months) - 1 if by_month else np.zeros(T, dtype=int)
    G = 12 if by_month else 1
    mask = _obs_mask(result, observations, tuple(batch), T, m).reshape(B, T, m)
    n = grid.n_points
    sums = (torch.zeros(G, n, m, dtype=F64), torch.zeros(G, d, m, dtype=F64), torch.zeros(G, m, dtype=F64))
    members = None
    if method == "kalman":
        check_result(result, "kalman")
        _kalman_gains(model, result, codec, R, mask, groups, n, sums)
    else:
        if forecast is None:
            check_result(result, "ensemble")
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            forecast = forecast_ensemble(model, result, generator=gen)
        members = _ensemble_gains(model, codec, forecast, R, mask, groups, (*batch, T), d, n, sums)
    return _gain_maps(grid, sums, by_month, names, method, members, d)


def _kalman_gains(model, result: AssimilationResult, codec, R, mask, groups, n: int, sums) -> None:
    """Accumulate the Kalman gains :math:`K_t = D_t P^f_t H_t^T S_t^{-1}` (physical and latent) into ``sums``.

    ``R (m, m)``, ``mask (B, T, m)``, ``groups (T,)`` calendar groups, ``n`` points; the steps
    are processed in chunks of about :data:`CHUNK_ELEMENTS` decoded values.
    """
    B, T, m = mask.shape
    mf, Pf = _kalman_forecast(model, result)
    d = mf.shape[-1]
    chunk = max(1, CHUNK_ELEMENTS // max(1, B * max(m, d) * n))
    for t0 in range(0, T, chunk):
        sl = slice(t0, min(T, t0 + chunk))
        z = mf[:, sl].reshape(-1, d)
        tc = z.shape[0] // B
        H = jvp(model.observe, z, torch.eye(d, dtype=F64).expand(z.shape[0], d, d)).mT.reshape(B, tc, m, d)
        PHt = Pf[:, sl] @ H.mT
        kz = _masked_solve(PHt, H @ PHt + R, mask[:, sl])  # (B, tc, d, m)
        kx = decode_jvp(codec, z, kz.mT.reshape(B * tc, m, d), n)
        _accumulate(*sums, kx.reshape(B, tc, m, n).mT, kz, mask[:, sl], groups[sl])


def _ensemble_gains(model, codec, forecast, R, mask, groups, lead: tuple, d: int, n: int, sums) -> int:
    """Accumulate the ensemble gains :math:`C_{xh}(C_{hh} + R)^{-1}` of ``forecast`` into ``sums``.

    ``forecast (*batch, T, member, d)`` is checked against ``lead = (*batch, T)`` and ``d``;
    returns the number of members. Sample covariances with ``N - 1``, processed in chunks of
    steps of about :data:`CHUNK_ELEMENTS` decoded values.
    """
    B, T, m = mask.shape
    forecast = torch.as_tensor(forecast, dtype=F64)
    if forecast.ndim < 3 or tuple(forecast.shape[:-2]) != lead or forecast.shape[-1] != d:
        raise ShapeMismatchError(
            f"forecast: expected shape (*batch, T, member, d) = ({', '.join(map(str, lead))}, N, {d}) "
            f"to match the result, got {tuple(forecast.shape)}."
        )
    N = forecast.shape[-2]
    if N < 2:
        raise ParameterError(f"forecast: expected at least 2 members, got {N}.")
    forecast = forecast.reshape(B, T, N, d)
    # a linear decoder maps anomalies linearly, X_a = Z_a W, so K_x = W^T K_z: no ensemble is decoded
    W = linear_decoder(codec, d, n)
    chunk = max(1, CHUNK_ELEMENTS // max(1, B * N * (d if W is not None else n)))
    with torch.no_grad():
        for t0 in range(0, T, chunk):
            sl = slice(t0, min(T, t0 + chunk))
            E = forecast[:, sl]
            Hx = model.observe(E).to(F64)
            Ha, Za = (V - V.mean(-2, keepdim=True) for V in (Hx, E))
            S = Ha.mT @ Ha / (N - 1) + R
            Kz = _masked_solve(Za.mT @ Ha / (N - 1), S, mask[:, sl])
            if W is not None:
                Kx = W.mT @ Kz
            else:
                X = decode(codec, E, n)
                Xa = X - X.mean(-2, keepdim=True)
                Kx = _masked_solve(Xa.mT @ Ha / (N - 1), S, mask[:, sl])
            _accumulate(*sums, Kx, Kz, mask[:, sl], groups[sl])
    return N


def _gain_maps(grid: Grid, sums, by_month: bool, names: list[str], method: str, members: int | None,
               d: int) -> GainMaps:
    """Average the accumulated gains ``sums = (sum_x (G, n, m), sum_z (G, d, m), count (G, m))`` into :class:`GainMaps`."""
    sum_x, sum_z, count = sums
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
    mf = mask.to(F64)  # (B, tc, m)
    for k in torch.unique(g).tolist():
        sel = g == k
        sum_x[k] += Kx[:, sel].sum((0, 1))
        sum_z[k] += Kz[:, sel].sum((0, 1))
        count[k] += mf[:, sel].sum((0, 1))


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
    mf = mask.to(F64)
    S_eff = S * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    C_eff = C * mf.unsqueeze(-2)
    return torch.linalg.solve(S_eff, C_eff.mT).mT


def _index_names(model, m: int, index_names) -> list[str]:
    """The ``m`` index names: ``index_names``, else ``model.obs_names``, else ``y0, y1, ...``."""
    names = index_names if index_names is not None else getattr(model, "obs_names", None)
    names = [str(n) for n in names] if names is not None else [f"y{k}" for k in range(m)]
    if len(names) != m:
        raise ShapeMismatchError(f"index_names: expected {m} names (model obs_dim), got {len(names)}.")
    return names
