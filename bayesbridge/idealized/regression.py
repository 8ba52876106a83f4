"""The equatorial SST regression fitted to a gridded SST record, with a quadratic EP term.

Chen, Fang & Yu (2022) reconstruct the equatorial (5S-5N mean) SST anomaly along longitude from
the idealized model's two SST indices by a regression fitted to observations; the bundled
coefficients (:func:`bayesbridge.datasets.equatorial_regression`) are linear in ``T_E`` and
``T_C``. A linear reconstruction cannot carry ENSO's asymmetry: strong El Nino events warm the
far eastern Pacific more than a linear pattern allows, which is the leading nonlinear pattern of
observed SST (Takahashi et al. 2011, GRL 38:L10704; Frauen & Dommenget 2010, GRL 37:L18801),
commonly written as a term quadratic in the eastern index. :func:`fit_equatorial_regression`
fits, per longitude ``x_k`` of a gridded anomaly record,

.. math:: \\mathrm{SSTA}(x_k, t) = b_0(x_k) + b_E(x_k)\\, T_E(t) + b_C(x_k)\\, T_C(t)
          + b_{EE}(x_k)\\, (T_E^2)'(t) + r_k(t),

by least squares, ``T_E``, ``T_C`` the record's own Nino 3 and Nino 4 means and ``(T_E^2)'`` the
anomaly of ``T_E^2`` to its monthly climatology (so the term has no mean and no seasonal cycle).
It also returns what the bridge needs for the error of the profile rows: the residual's standard
deviation per row and the row-to-row correlation of ``r``, both measured on the same record. The
record must be independent of whatever the reconstructed profile is later scored against.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bayesbridge.errors import InputValueError, TimeAxisError
from bayesbridge.operators import BoxOperator, ProfileOperator

__all__ = ["QUADRATIC", "MIN_MONTHS", "quadratic_anomaly", "fit_equatorial_regression"]

QUADRATIC = "b_ee"
"""Name of the coefficient of the quadratic EP term ``(T_E^2)'`` in a regression Dataset."""
MIN_MONTHS = 120
"""Fewest months of record :func:`fit_equatorial_regression` accepts (ten years)."""


def quadratic_anomaly(nino3: xr.DataArray) -> xr.DataArray:
    """``(T_E^2)'``: the square of the Nino 3 anomaly minus its monthly climatology (degC^2).

    Parameters
    ----------
    nino3 : xarray.DataArray
        Nino 3 anomalies (degC) on ``(*dims, time)`` with a datetime-like ``time``.

    Returns
    -------
    xarray.DataArray
        Same dimensions; the climatology is the mean of ``T_E^2`` over the record's months of the
        same calendar month (per series of ``*dims``).
    """
    if "time" not in nino3.dims:
        raise TimeAxisError(f"nino3: expected a 'time' dimension, got {nino3.dims}.")
    sq = nino3**2
    month = sq["time"].dt.month
    return (sq.groupby(month) - sq.groupby(month).mean("time")).drop_vars("month", errors="ignore")


def fit_equatorial_regression(sst: xr.DataArray, longitudes, *, band: tuple[float, float] = (-5.0, 5.0),
                              quadratic: bool = True) -> xr.Dataset:
    """Fit the equatorial regression (module notes) to a gridded SST anomaly record.

    Parameters
    ----------
    sst : xarray.DataArray
        SST anomalies (degC) on ``(time, lat, lon)``, covering the Nino 3 and Nino 4 boxes and
        the band at every longitude of ``longitudes``; at least :data:`MIN_MONTHS` months.
    longitudes : array-like
        ``(k,)`` longitudes of the fitted rows (degrees east), e.g. the profile's.
    band : tuple of float
        Latitude band of the profile's mean (default 5S-5N, the bundled regression's).
    quadratic : bool
        Fit the quadratic EP term ``b_ee`` (default); False fits the linear regression alone.

    Returns
    -------
    xarray.Dataset
        On ``lon`` ``(k,)``: ``b0`` (degC), ``b_e``, ``b_c`` (degC per degC), ``b_ee`` (degC per
        degC^2, with ``quadratic``) and ``residual_std`` (degC); ``residual_corr`` on
        ``(lon, lon_row)`` ``(k, k)``; attributes ``months`` and ``band``.
    """
    if not isinstance(sst, xr.DataArray) or any(d not in sst.dims for d in ("time", "lat", "lon")):
        raise InputValueError(f"sst: expected a DataArray on (time, lat, lon), got "
                              f"{type(sst).__name__} {getattr(sst, 'dims', '')}.")
    lon = np.atleast_1d(np.asarray(longitudes, dtype=float))
    if lon.size == 0:
        raise InputValueError("longitudes: expected at least one longitude, got none.")
    n = sst.sizes["time"]
    if n < MIN_MONTHS:
        raise TimeAxisError(f"sst: the regression needs at least {MIN_MONTHS} months of record, got {n}.")
    sst = sst.transpose("time", "lat", "lon")
    te = BoxOperator("nino3", variable=str(sst.name), region="nino3").apply(sst)
    tc = BoxOperator("nino4", variable=str(sst.name), region="nino4").apply(sst)
    profile = ProfileOperator("eq_sst", variable=str(sst.name), at=tuple(lon), band=band, along="lon").apply(sst)
    cols = [np.ones(n), te.values, tc.values]
    if quadratic:
        cols.append(quadratic_anomaly(te).values)
    X = np.stack(cols, axis=1).astype(float)
    Y = np.asarray(profile.transpose("time", "lon").values, dtype=float)
    ok = np.isfinite(X).all(axis=1) & np.isfinite(Y).all(axis=1)
    if ok.sum() < MIN_MONTHS:
        raise TimeAxisError(f"sst: only {int(ok.sum())} months have every index and profile value; "
                            f"the regression needs at least {MIN_MONTHS}.")
    coef, *_ = np.linalg.lstsq(X[ok], Y[ok], rcond=None)  # (p, k)
    resid = Y[ok] - X[ok] @ coef
    std = resid.std(axis=0, ddof=X.shape[1])
    corr = np.corrcoef(resid.T) if lon.size > 1 else np.ones((1, 1))
    names = ["b0", "b_e", "b_c"] + ([QUADRATIC] if quadratic else [])
    units = {"b0": "degC", "b_e": "1", "b_c": "1", QUADRATIC: "degC-1"}
    data = {k: ("lon", coef[i], {"units": units[k]}) for i, k in enumerate(names)}
    data["residual_std"] = ("lon", std, {"units": "degC", "long_name": "standard deviation of the fit's residual"})
    data["residual_corr"] = (("lon", "lon_row"), corr, {"long_name": "row-to-row correlation of the residual"})
    return xr.Dataset(data, coords={"lon": ("lon", lon, {"units": "degrees_east"}),
                                    "lon_row": ("lon_row", lon, {"units": "degrees_east"})},
                      attrs={"months": int(ok.sum()), "band": f"{band[0]:g}..{band[1]:g}N",
                             "source": "bayesbridge.idealized.regression.fit_equatorial_regression"})
