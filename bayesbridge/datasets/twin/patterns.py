"""Spatial patterns and red noise of the synthetic twin experiment.

SST patterns (``docs/design.md`` section 6): the observed 5S-5N regression coefficients
:math:`b_0, b_e, b_c` of Chen, Fang & Yu (2022) (``data/equatorial_sst_regression.nc``, read with
:func:`bayesbridge.datasets.observed.equatorial_regression`) trapped meridionally by
:math:`G(y) = \\exp(-(y / 8^\\circ)^2)` and divided by its 5S-5N mean :math:`\\bar G`, then
corrected by a 2 x 2 matrix so that the Nino 3 and Nino 4 box means of :math:`(P_E, P_C)` are
the identity; a nonlinear pattern :math:`N` with zero Nino 3 and Nino 4 means. Thermocline
patterns: a western pattern :math:`W` with unit h_W-box mean and an east-west seesaw :math:`S`
with zero h_W-box mean. Noise: spatially smooth, unit-variance AR(1) red noise.

References: Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from bayesbridge.datasets.observed import equatorial_regression
from bayesbridge.datasets.twin.grid import box_mean, westward_shift

__all__ = [
    "MERIDIONAL_EFOLD_DEG",
    "NOISE_PHI",
    "sst_patterns",
    "zos_patterns",
    "red_noise",
]

MERIDIONAL_EFOLD_DEG = 8.0
"""e-folding latitude (degrees) of the meridional trapping :math:`G(y)` of every pattern."""
NOISE_PHI = 0.7
"""Monthly AR(1) coefficient of the red noise."""


def sst_patterns(lat: np.ndarray, lon: np.ndarray, ocean: np.ndarray,
                 shift_deg: float) -> dict[str, np.ndarray]:
    """Offset, EP, CP and nonlinear SST patterns (degC per degC of index).

    :math:`P_{E,C}(x, y) = b_{e,c}(x) G(y) / \\bar G`, combined by the inverse of the 2 x 2 matrix
    of their Nino 3 / Nino 4 box means so that ``ep`` has unit Nino 3 and zero Nino 4 mean and
    ``cp`` the reverse. The nonlinear pattern (positive in the east near 268E, negative near
    215E) is made orthogonal to both box means and scaled to an equatorial peak of 1.

    Parameters
    ----------
    lat, lon : numpy.ndarray
        ``(lat,)`` and ``(lon,)`` coordinates (degrees); ``lat`` must contain 0.
    ocean : numpy.ndarray
        ``(lat, lon)`` boolean ocean mask (used in the box means).
    shift_deg : float
        Westward displacement of the patterns (:func:`~bayesbridge.datasets.twin.grid.westward_shift`).

    Returns
    -------
    dict of str to numpy.ndarray
        ``b0`` (degC), ``ep``, ``cp``, ``nonlinear``, each ``(lat, lon)``.
    """
    reg = equatorial_regression()  # observed b0, b_e, b_c on lon
    rlon = np.asarray(reg["lon"].values, dtype=float)
    src = lon + westward_shift(lon, shift_deg)
    g = np.exp(-((lat / MERIDIONAL_EFOLD_DEG) ** 2))
    eq = np.abs(lat) <= 5.0
    gbar = float(np.average(g[eq], weights=np.cos(np.deg2rad(lat[eq]))))
    prof = {k: np.interp(src, rlon, np.asarray(reg[k].values, dtype=float)) for k in ("b0", "b_e", "b_c")}
    p = {k: prof[k][None, :] * g[:, None] / gbar for k in prof}
    # 2 x 2 correction so that box means of (P_E, P_C) are the identity on (nino3, nino4)
    m = np.array([[box_mean(p[k], lat, lon, ocean, b) for k in ("b_e", "b_c")]
                  for b in ("nino3", "nino4")])
    minv = np.linalg.inv(m)
    pe = p["b_e"] * minv[0, 0] + p["b_c"] * minv[1, 0]
    pc = p["b_e"] * minv[0, 1] + p["b_c"] * minv[1, 1]
    nl = (np.exp(-(((src - 268.0) / 12.0) ** 2)) - 0.6 * np.exp(-(((src - 215.0) / 20.0) ** 2)))
    nl = nl[None, :] * g[:, None] / gbar
    nl = nl - box_mean(nl, lat, lon, ocean, "nino3") * pe - box_mean(nl, lat, lon, ocean, "nino4") * pc
    nl = nl / np.abs(nl[lat == 0.0]).max()
    return {"b0": p["b0"], "ep": pe, "cp": pc, "nonlinear": nl}


def zos_patterns(lat: np.ndarray, lon: np.ndarray, ocean: np.ndarray,
                 shift_deg: float) -> dict[str, np.ndarray]:
    """Western (unit h_w-box mean) and seesaw (zero h_w-box mean) thermocline patterns.

    :math:`W \\propto \\sigma((195 - x)/12) G(y)` scaled to a unit h_W-box mean and
    :math:`S = \\sigma((x' - 215)/15) G(y) - \\overline{(\\cdot)}_{h_W} W`, with :math:`\\sigma`
    the logistic function and :math:`x'` the shifted longitude.

    Parameters
    ----------
    lat, lon : numpy.ndarray
        ``(lat,)`` and ``(lon,)`` coordinates (degrees).
    ocean : numpy.ndarray
        ``(lat, lon)`` boolean ocean mask.
    shift_deg : float
        Westward displacement of the seesaw.

    Returns
    -------
    dict of str to numpy.ndarray
        ``west`` and ``tilt``, each ``(lat, lon)`` (m of thermocline per m of h_W, per m of tilt).
    """
    src = lon + westward_shift(lon, shift_deg)
    g = np.exp(-((lat / MERIDIONAL_EFOLD_DEG) ** 2))[:, None]
    west = special.expit((195.0 - lon) / 12.0)[None, :] * g
    west = west / box_mean(west, lat, lon, ocean, "h_w")
    tilt = special.expit((src - 215.0) / 15.0)[None, :] * g
    tilt = tilt - box_mean(tilt, lat, lon, ocean, "h_w") * west
    return {"west": west, "tilt": tilt}


def red_noise(rng: np.random.Generator, n: int, ny: int, nx: int, burn: int = 24) -> np.ndarray:
    """Unit-variance red noise: Gaussian-smoothed in space, AR(1) in time.

    White float32 noise is smoothed with a Gaussian filter (sigma 1.5 cells in latitude, 4 in
    longitude), standardised per point, and filtered as
    :math:`r_t = \\phi r_{t-1} + \\sqrt{1 - \\phi^2} e_t` with :math:`\\phi` = :data:`NOISE_PHI`;
    the first ``burn`` months are dropped.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise.
    n : int
        Number of months returned.
    ny, nx : int
        Grid size (lat, lon).
    burn : int
        Spin-up months discarded.

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx)`` noise.
    """
    from scipy import ndimage, signal  # lazy: slow to import; the twin is cached

    white = rng.standard_normal((n + burn, ny, nx), dtype=np.float32)
    smooth = ndimage.gaussian_filter(white, sigma=(0.0, 1.5, 4.0), mode="nearest")
    smooth /= smooth.std(axis=0, keepdims=True)
    red = signal.lfilter([np.sqrt(1 - NOISE_PHI**2)], [1.0, -NOISE_PHI], smooth, axis=0)
    return red[burn:]
