"""Equatorial profiles reconstructed from the idealized model's indices.

Chen, Fang & Yu (2022) reconstruct the equatorial (5S-5N mean) SST anomaly along longitude from
the model's two SST indices by a regression fitted to observations,

.. math:: \\mathrm{SSTA}(x, t) = b_0(x) + b_E(x)\\, T_E(t) + b_C(x)\\, T_C(t),

with ``T_E`` the Nino 3 and ``T_C`` the Nino 4 anomaly; the observed coefficients ship in
``data/equatorial_sst_regression.nc`` (:func:`bayesbridge.datasets.equatorial_regression`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bayesbridge.datasets.observed import equatorial_regression
from bayesbridge.diagnostics.enso import check_series
from bayesbridge.errors import VariableNotFoundError

__all__ = ["equatorial_hovmoller", "nino34_from_indices"]


def _regression(coefficients: xr.Dataset | None) -> xr.Dataset:
    if coefficients is None:
        coefficients = equatorial_regression()
    missing = [v for v in ("b0", "b_e", "b_c") if v not in coefficients]
    if missing:
        raise VariableNotFoundError(
            f"coefficients: missing {missing}; expected b0, b_e, b_c on 'lon' "
            "(bayesbridge.datasets.equatorial_regression())."
        )
    return coefficients


def equatorial_hovmoller(
    nino3: xr.DataArray, nino4: xr.DataArray, coefficients: xr.Dataset | None = None
) -> xr.DataArray:
    """Equatorial SST anomaly SSTA(x, t) = b0(x) + b_e(x) T_E(t) + b_c(x) T_C(t).

    Parameters
    ----------
    nino3, nino4 : xarray.DataArray
        Nino 3 (T_E) and Nino 4 (T_C) anomalies (degC) on ``(*other, time)``, broadcastable
        against each other.
    coefficients : xarray.Dataset, optional
        Regression coefficients ``b0``, ``b_e``, ``b_c`` on ``lon``; default the observed ones,
        :func:`bayesbridge.datasets.equatorial_regression`.

    Returns
    -------
    xarray.DataArray
        ``ssta`` on ``(*other, time, lon)`` (degC), float32 (a decoded field).
    """
    nino3, nino4 = check_series(nino3, "nino3"), check_series(nino4, "nino4")
    c = _regression(coefficients)
    out = c["b0"] + c["b_e"] * nino3 + c["b_c"] * nino4
    out = out.transpose(*[d for d in nino3.dims], "lon").astype(np.float32)
    out.name = "ssta"
    out.attrs = {"long_name": "equatorial (5S-5N) SST anomaly from Nino 3 and Nino 4", "units": "degC"}
    return out


def nino34_from_indices(
    nino3: xr.DataArray, nino4: xr.DataArray, coefficients: xr.Dataset | None = None
) -> xr.DataArray:
    """Nino 3.4 (mean of :func:`equatorial_hovmoller` over 190E-240E), degC.

    Parameters
    ----------
    nino3, nino4 : xarray.DataArray
        Nino 3 (T_E) and Nino 4 (T_C) anomalies (degC) on ``(*other, time)``.
    coefficients : xarray.Dataset, optional
        Regression coefficients ``b0``, ``b_e``, ``b_c`` on ``lon``; default the observed ones.

    Returns
    -------
    xarray.DataArray
        ``nino34`` on ``(*other, time)`` (degC), float64.
    """
    h = equatorial_hovmoller(nino3, nino4, coefficients)
    out = h.sel(lon=slice(190.0, 240.0)).mean("lon").astype(np.float64)
    out.name = "nino34"
    out.attrs = {"long_name": "Nino 3.4 SST anomaly from the equatorial regression", "units": "degC"}
    return out
