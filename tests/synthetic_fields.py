"""Small deterministic CMIP-like anomaly fields driven by known latent dynamics (test helper).

Grid 10S-10N every 2 degrees x 120E-280E every 4 degrees (11 x 41), monthly, 365-day
calendar, variables ``tos`` (degC) and ``zos`` (m), NaN over a small land mask (a strip of the
American coast and one island). The latent driver is a stationary AR(1)

    s_t = A s_{t-1} + w_t,  w_t ~ N(0, Q),

with a damped oscillator (period 48 months, e-folding 18 months) for ENSO and two red-noise
modes. Fields are patterns times the latent series, meridionally trapped (e-folding 8 degrees),
plus a nonlinear term ``relu(s_0)^2`` on the far-eastern pattern (EP events peak further east,
giving positive Nino 3 skewness) and a little white noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["SyntheticFields", "make_synthetic_fields", "TRUE_A"]

_R_OSC = np.exp(-1.0 / 18.0)
_W_OSC = 2.0 * np.pi / 48.0
TRUE_A = np.array(
    [
        [_R_OSC * np.cos(_W_OSC), -_R_OSC * np.sin(_W_OSC), 0.0, 0.0],
        [_R_OSC * np.sin(_W_OSC), _R_OSC * np.cos(_W_OSC), 0.0, 0.0],
        [0.0, 0.0, 0.9, 0.0],
        [0.0, 0.0, 0.1, 0.6],
    ]
)
"""The known transition matrix of the latent driver ``(4, 4)``."""

TRUE_Q = np.diag([0.12, 0.12, 0.19, 0.5])


@dataclass(frozen=True)
class SyntheticFields:
    """Synthetic anomaly fields with their known driver.

    Attributes
    ----------
    fields : xarray.Dataset
        ``tos`` (degC), ``zos`` (m) on ``(time, lat, lon)``.
    latent : numpy.ndarray
        ``(time, 4)`` driver series ``s_t``.
    A, Q : numpy.ndarray
        ``(4, 4)`` transition matrix and noise covariance of the driver.
    """

    fields: xr.Dataset
    latent: np.ndarray
    A: np.ndarray
    Q: np.ndarray


def _bump(lon2d, lat2d, lon0, width, lat_efold=8.0):
    return np.exp(-(((lon2d - lon0) / width) ** 2)) * np.exp(-((lat2d / lat_efold) ** 2))


def make_synthetic_fields(
    n_years: int = 40, seed: int = 0, noise: float = 0.05, start_year: int = 1900
) -> SyntheticFields:
    """Generate :class:`SyntheticFields` for ``n_years`` of monthly data (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    n = 12 * n_years
    burn = 120
    chol = np.linalg.cholesky(TRUE_Q)
    s = np.zeros((n + burn, 4))
    for t in range(1, n + burn):
        s[t] = TRUE_A @ s[t - 1] + chol @ rng.standard_normal(4)
    s = s[burn:]

    lat = np.arange(-10.0, 10.1, 2.0)
    lon = np.arange(120.0, 280.1, 4.0)
    lon2d, lat2d = np.meshgrid(lon, lat)
    ep = _bump(lon2d, lat2d, 245.0, 35.0)
    cp = _bump(lon2d, lat2d, 190.0, 30.0)
    far_east = _bump(lon2d, lat2d, 265.0, 15.0, lat_efold=5.0)
    west = _bump(lon2d, lat2d, 150.0, 30.0)
    off_eq = _bump(lon2d, lat2d, 200.0, 60.0, lat_efold=30.0) * np.sin(np.deg2rad(lat2d) * 9.0)

    relu2 = np.maximum(s[:, 0], 0.0) ** 2
    tos = (
        0.9 * s[:, 0, None, None] * ep
        + 0.5 * s[:, 1, None, None] * cp
        + 0.3 * s[:, 2, None, None] * off_eq
        + 0.4 * relu2[:, None, None] * far_east
        + noise * 1.5 * rng.standard_normal((n, lat.size, lon.size))
    )
    zos = 0.01 * (
        -6.0 * s[:, 1, None, None] * west
        + 4.0 * s[:, 0, None, None] * ep
        + 2.0 * s[:, 3, None, None] * cp
        + noise * 5 * rng.standard_normal((n, lat.size, lon.size))
    )
    land = np.zeros((lat.size, lon.size), dtype=bool)
    land[(lat2d > 3.0) & (lon2d >= 272.0)] = True  # Central America
    land[(np.abs(lat2d) <= 2.0) & (np.abs(lon2d - 132.0) <= 4.0)] = True  # an island
    tos[:, land] = np.nan
    zos[:, land] = np.nan

    time = xr.date_range(f"{start_year:04d}-01-01", periods=n, freq="MS", calendar="noleap",
                         use_cftime=True)
    coords = {"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
              "lon": ("lon", lon, {"units": "degrees_east"})}
    ds = xr.Dataset(
        {
            "tos": (("time", "lat", "lon"), tos, {"units": "degC", "standard_name": "sea_surface_temperature"}),
            "zos": (("time", "lat", "lon"), zos, {"units": "m", "standard_name": "sea_surface_height_above_geoid"}),
        },
        coords=coords,
    )
    return SyntheticFields(ds, s, TRUE_A.copy(), TRUE_Q.copy())


