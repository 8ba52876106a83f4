"""Synthetic twin experiment: a CMIP-formatted operational model with ENSO biases and a known truth.

No CMIP6 archive is reachable offline, so bayesbridge's default data set is generated here
(``docs/design.md`` section 6). Everything lives on one grid, 20S-20N x 120E-280E at 2 degrees (21 x 81),
monthly on a 365-day (``noleap``) cftime calendar, with CMIP6 variable names (``tos`` in degC,
``zos`` in m), CF attributes and a small land mask (a Central-America corner and bits of the
maritime continent and northern Australia), so the same reader serves real CMIP6 files.

**Truth.** Driven by one idealized-model run (T_E = Nino 3, T_C = Nino 4, h_W):

.. math::

    \\mathrm{tos}(t, y, x) = C(m_t, y, x) + \\tilde b_0(x, y)
        + P_E(x, y) T_E(t) + P_C(x, y) T_C(t) + \\kappa N(x, y) \\max(T_E(t), 0)^2
        + \\varepsilon(t, y, x),

with :math:`P_{E,C}(x, y) = b_{e,c}(x) G(y) / \\bar G`, the observed 5S-5N regression
coefficients of Chen, Fang & Yu (2022) (``data/equatorial_sst_regression.nc``) trapped
meridionally by :math:`G(y) = \\exp(-(y / 8^\\circ)^2)` (:math:`\\bar G` its 5S-5N mean, so the
5S-5N mean profile is the observed one), then corrected by a 2 x 2 matrix so that the Nino 3 and
Nino 4 box means of the field are exactly T_E and T_C. The nonlinear pattern :math:`N` (east
positive, central Pacific negative, zero Nino 3 and Nino 4 means) makes strong EP events peak
further east; :math:`\\varepsilon` is spatially smooth AR(1) red noise; :math:`C` a seasonal
climatology with a cold tongue. ``zos`` is sea-surface height (m) as a thermocline proxy,
:math:`\\eta = D / 150` with thermocline displacement
:math:`D = W h_W + S \\alpha T_E + \\varepsilon_h` (W: western-Pacific pattern with unit h_W-box
mean, S: east-west seesaw with zero h_W-box mean, :math:`\\alpha` = 12 m per degC).

**Operational model** (the biases the bridge must correct, recorded in the global attributes):
a Gaussian damped linear oscillator :math:`z_t = \\rho e^{i 2 \\pi / P} z_{t-1} + \\xi_t`
(complex AR(1), i.e. AR(2) for each component) with the truth's period and Nino variances; its
marginals are mapped by ranks to exactly symmetric, light-tailed laws (Nino 3 skewness 0,
\\|T\\| < 2 degC: no extreme events); Nino 4 is 0.9-correlated with Nino 3 and there is no
nonlinear term (weak EP/CP diversity); seasonal phase locking is weak (+-10 %); the patterns and
the mean cold tongue extend 15 degrees too far west in the central Pacific, tapering to no shift
at the American coast. Its noise uses a stream independent of the truth's.

All random numbers come from ``numpy.random.default_rng([seed, stream])`` with a fixed stream per
component, so a seed fixes every array and the components are mutually independent.

References: Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16; Behnoudfar et al.,
arXiv 2510.13030.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cftime
import numpy as np
import xarray as xr
from scipy import ndimage, optimize, signal, special, stats

from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    VariableNotFoundError,
)
from bayesbridge.io import atomic_path
from bayesbridge.regions import REGIONS

__all__ = [
    "GENERATOR_VERSION",
    "OBSERVED_VARIABLES",
    "THERMOCLINE_PER_ZOS",
    "COLD_TONGUE_SHIFT_DEG",
    "OscillatorTarget",
    "TwinExperiment",
    "twin_grid",
    "centroid_period",
    "synthetic_truth",
    "synthetic_operational",
    "operational_pattern_fields",
    "twin_from_drivers",
    "make_twin_experiment",
    "write_cmip6",
]

GENERATOR_VERSION = "3"
"""Bumped whenever generated values change; part of the cache key."""
OBSERVED_VARIABLES: tuple[str, ...] = ("nino3", "nino4", "h_w")
"""The idealized-model outputs that are assimilated (degC, degC, m of thermocline)."""
THERMOCLINE_PER_ZOS = 150.0
"""Metres of thermocline displacement per metre of ``zos`` (reduced-gravity ratio g/g'):
the h_w box mean of the ``zos`` anomaly times this factor is h_W in metres."""
COLD_TONGUE_SHIFT_DEG = 15.0
"""Westward shift of the operational model's patterns west of 200E (tapering to 0 at 280E)."""

MERIDIONAL_EFOLD_DEG = 8.0
NONLINEAR_COEF = 0.12  # degC^-1: kappa of the T_E^2 term (peak of N is 1)
TILT_M_PER_DEGC = 12.0  # alpha: east-west thermocline tilt per degC of T_E
NOISE_PHI = 0.7  # monthly AR(1) coefficient of the red noise
TOS_NOISE_DEGC = (0.22, 0.18)  # point std at the equator, increase towards 20 degrees
ZOS_NOISE_M = 3.0  # thermocline-displacement noise (m)
OPERATIONAL_CAP_DEGC = 2.0  # |T_E|, |T_C| of the operational model stay below this
OPERATIONAL_NINO_CORR = 0.75  # corr(T_E, T_C) built into the operational model
OPERATIONAL_PHASE_LOCKING = 0.1  # relative seasonal modulation of its Nino 3 amplitude
_STREAMS = {"truth_driver": 1, "truth_noise": 3, "oscillator": 4, "op_noise": 5, "pattern_oracle": 9}
_LAND_BOXES = (  # (lat_min, lat_max, lon_min, lon_max), inclusive
    (8.0, 20.0, 276.0, 280.0),  # Central America
    (12.0, 20.0, 272.0, 280.0),
    (16.0, 20.0, 266.0, 280.0),
    (-8.0, -2.0, 120.0, 124.0),  # Sulawesi-like bit of the maritime continent
    (-20.0, -14.0, 120.0, 134.0),  # northern Australia
)


# ----------------------------------------------------------------------------------- grid & time
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


def _time_axis(n_months: int, start_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Mid-month cftime ``noleap`` times and their ``(time, 2)`` bounds, starting in January."""
    edges = [cftime.DatetimeNoLeap(start_year + m // 12, m % 12 + 1, 1) for m in range(n_months + 1)]
    bounds = np.array([[edges[i], edges[i + 1]] for i in range(n_months)], dtype=object)
    mid = np.array([edges[i] + (edges[i + 1] - edges[i]) / 2 for i in range(n_months)], dtype=object)
    return mid, bounds


def _box_mean(pattern: np.ndarray, lat: np.ndarray, lon: np.ndarray, ocean: np.ndarray,
              box: str) -> float:
    """cos(lat)-weighted ocean mean of a ``(lat, lon)`` pattern over a named box (as regions)."""
    reg = REGIONS[box]
    w = np.cos(np.deg2rad(lat))[:, None] * (reg.contains_lat(lat)[:, None] & reg.contains_lon(lon)[None, :])
    w = w * ocean
    return float((w * pattern).sum() / w.sum())


def _shift(lon: np.ndarray, shift_deg: float) -> np.ndarray:
    """Westward pattern shift: ``shift_deg`` west of 200E, tapering linearly to 0 at 280E."""
    return shift_deg * np.clip((280.0 - lon) / 80.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------- patterns
def _regression() -> xr.Dataset:
    """The observed equatorial regression coefficients (b0, b_e, b_c on lon)."""
    from bayesbridge.datasets import equatorial_regression  # lazy: the package imports this module

    return equatorial_regression()


def _sst_patterns(lat, lon, ocean, shift_deg: float) -> dict[str, np.ndarray]:
    """Offset, EP, CP and nonlinear SST patterns ``(lat, lon)`` (degC per degC of index)."""
    reg = _regression()
    rlon = np.asarray(reg["lon"].values, dtype=float)
    src = lon + _shift(lon, shift_deg)
    g = np.exp(-((lat / MERIDIONAL_EFOLD_DEG) ** 2))
    eq = np.abs(lat) <= 5.0
    gbar = float(np.average(g[eq], weights=np.cos(np.deg2rad(lat[eq]))))
    prof = {k: np.interp(src, rlon, np.asarray(reg[k].values, dtype=float)) for k in ("b0", "b_e", "b_c")}
    p = {k: prof[k][None, :] * g[:, None] / gbar for k in prof}
    # 2 x 2 correction so that box means of (P_E, P_C) are the identity on (nino3, nino4)
    m = np.array([[_box_mean(p[k], lat, lon, ocean, b) for k in ("b_e", "b_c")]
                  for b in ("nino3", "nino4")])
    minv = np.linalg.inv(m)
    pe = p["b_e"] * minv[0, 0] + p["b_c"] * minv[1, 0]
    pc = p["b_e"] * minv[0, 1] + p["b_c"] * minv[1, 1]
    nl = (np.exp(-(((src - 268.0) / 12.0) ** 2)) - 0.6 * np.exp(-(((src - 215.0) / 20.0) ** 2)))
    nl = nl[None, :] * g[:, None] / gbar
    nl = nl - _box_mean(nl, lat, lon, ocean, "nino3") * pe - _box_mean(nl, lat, lon, ocean, "nino4") * pc
    nl = nl / np.abs(nl[lat == 0.0]).max()
    return {"b0": p["b0"], "ep": pe, "cp": pc, "nonlinear": nl}


def _zos_patterns(lat, lon, ocean, shift_deg: float) -> dict[str, np.ndarray]:
    """Western (unit h_w-box mean) and seesaw (zero h_w-box mean) thermocline patterns."""
    src = lon + _shift(lon, shift_deg)
    g = np.exp(-((lat / MERIDIONAL_EFOLD_DEG) ** 2))[:, None]
    west = special.expit((195.0 - lon) / 12.0)[None, :] * g
    west = west / _box_mean(west, lat, lon, ocean, "h_w")
    tilt = special.expit((src - 215.0) / 15.0)[None, :] * g
    tilt = tilt - _box_mean(tilt, lat, lon, ocean, "h_w") * west
    return {"west": west, "tilt": tilt}


def _tos_climatology(lat, lon, shift_deg: float) -> np.ndarray:
    """Seasonal SST climatology ``(12, lat, lon)`` in degC: warm pool, cold tongue, Peru coast."""
    x = (lon + _shift(lon, shift_deg))[None, :]
    y = lat[:, None]
    ct = special.expit((x - 205.0) / 18.0) * np.exp(-(((y + 0.5) / 6.0) ** 2))
    peru = special.expit((x - 255.0) / 10.0) * special.expit(-(y + 4.0) / 4.0)
    mean = 29.3 - 0.0065 * y**2 - 5.0 * ct - 4.0 * peru
    month = np.arange(12)[:, None, None]
    seas = (1.3 * ct + 0.8 * peru) * np.cos(2 * np.pi * (month - 2.5) / 12)
    seas = seas + 1.8 * (y / 20.0) * np.cos(2 * np.pi * (month - 7.5) / 12)
    return mean[None] + seas


def _zos_climatology(lat, lon) -> np.ndarray:
    """Seasonal sea-surface-height climatology ``(12, lat, lon)`` in m (high in the west)."""
    y = lat[:, None]
    mean = 0.25 - 0.45 * ((lon[None, :] - 120.0) / 160.0) * np.exp(-((y / 15.0) ** 2))
    mean = mean + 0.08 * np.exp(-(((y - 9.0) / 4.0) ** 2))
    month = np.arange(12)[:, None, None]
    return mean[None] + 0.02 * (y / 20.0) * np.cos(2 * np.pi * (month - 8.0) / 12)


def _red_noise(rng: np.random.Generator, n: int, ny: int, nx: int, burn: int = 24) -> np.ndarray:
    """Unit-variance red noise ``(n, ny, nx)``: Gaussian-smoothed in space, AR(1) in time."""
    white = rng.standard_normal((n + burn, ny, nx), dtype=np.float32)
    smooth = ndimage.gaussian_filter(white, sigma=(0.0, 1.5, 4.0), mode="nearest")
    smooth /= smooth.std(axis=0, keepdims=True)
    red = signal.lfilter([np.sqrt(1 - NOISE_PHI**2)], [1.0, -NOISE_PHI], smooth, axis=0)
    return red[burn:]


# ------------------------------------------------------------------------------ driver handling
def _driver_arrays(driver: xr.Dataset, name: str = "driver") -> dict[str, np.ndarray]:
    """Validate an index Dataset on ``time`` (one member) and return float64 arrays."""
    if not isinstance(driver, xr.Dataset):
        raise InputTypeError(f"{name}: expected an xarray.Dataset with nino3, nino4, h_w on time, "
                             f"got {type(driver).__name__}.")
    missing = [v for v in OBSERVED_VARIABLES if v not in driver]
    if missing:
        raise VariableNotFoundError(f"{name}: missing variables {missing}; expected {list(OBSERVED_VARIABLES)}, "
                                    f"found {sorted(map(str, driver.data_vars))}.")
    if "member" in driver.dims:
        if driver.sizes["member"] != 1:
            raise InputValueError(f"{name}: expected one member, got {driver.sizes['member']}; "
                                  f"select one with .isel(member=k).")
        driver = driver.isel(member=0)
    out = {}
    for v in driver.data_vars:
        da = driver[v]
        if da.dims != ("time",):
            continue
        arr = np.asarray(da.values, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise InputValueError(f"{name}: variable {v!r} has NaN or inf values; pass complete series.")
        out[str(v)] = arr
    if any(v not in out for v in OBSERVED_VARIABLES) or out["nino3"].size < 24:
        raise InputValueError(f"{name}: nino3, nino4, h_w must be on dims ('time',) with at least 24 "
                              f"months; got sizes {dict(driver.sizes)}.")
    return out


_INDEX_ATTRS = {
    "nino3": {"long_name": "Nino 3 SST anomaly (T_E)", "units": "degC"},
    "nino4": {"long_name": "Nino 4 SST anomaly (T_C)", "units": "degC"},
    "h_w": {"long_name": "western Pacific thermocline depth anomaly (h_W)", "units": "m"},
}


def _index_dataset(arrays: Mapping[str, np.ndarray], time: np.ndarray, attrs: dict) -> xr.Dataset:
    ds = xr.Dataset({k: ("time", v, dict(_INDEX_ATTRS.get(k, {}))) for k, v in arrays.items()},
                    coords={"time": ("time", time, {"standard_name": "time", "axis": "T"})})
    ds.attrs.update(attrs)
    return ds


def _anomalies(x: np.ndarray) -> np.ndarray:
    month = np.arange(x.size) % 12
    return x - np.array([x[month == m].mean() for m in range(12)])[month]


@dataclass(frozen=True)
class OscillatorTarget:
    """Statistics the operational model's linear oscillator reproduces.

    Parameters
    ----------
    nino3_std, nino4_std : float
        Standard deviations (degC) of T_E and T_C; each must be below ~0.95 x the 2 degC cap.
    h_w_std : float
        Standard deviation of h_W (m).
    period_months : float
        Oscillation period P (months), 12..120.
    decay_months : float
        e-folding time tau of the autocorrelation envelope, :math:`\\rho = e^{-1/\\tau}` (months).
    h_leads : bool
        Whether h_W leads T_E by a quarter period (recharge) or lags it; used only when
        ``h_w_response`` is empty.
    h_w_response : tuple of float
        Recharge-discharge coupling: coefficients :math:`\beta_k` (k = 0..K months) of the
        distributed-lag regression :math:`\\hat h(t) = \\sum_k \beta_k \\hat T_E(t - k)` of
        standardised h_W on standardised Nino 3, fitted on the driver by least squares. The
        operational h_W is this response to its own Nino 3 plus AR(1) noise with the residual
        variance, so the operational model keeps the truth's thermocline-SST relationship (a
        coupled GCM has one); its biases are in the SST patterns and statistics, not here.

    Defaults: the multiscale model's published Nino variances (``docs/design.md`` section 4) and what
    :meth:`from_driver` gives on its runs (h_W std 12-14 m, P 45-50, tau 7-10 months).
    """

    nino3_std: float = 0.885
    nino4_std: float = 0.64
    h_w_std: float = 13.0
    period_months: float = 48.0
    decay_months: float = 8.0
    h_leads: bool = True
    h_w_response: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("nino3_std", "nino4_std"):
            value = getattr(self, key)
            if not 0.0 < value < 0.95 * OPERATIONAL_CAP_DEGC:
                raise ParameterError(f"OscillatorTarget.{key}: expected 0 < value < "
                                     f"{0.95 * OPERATIONAL_CAP_DEGC} degC, got {value}.")
        if not self.h_w_std > 0.0:
            raise ParameterError(f"OscillatorTarget.h_w_std: expected > 0 m, got {self.h_w_std}.")
        if not 12.0 <= self.period_months <= 120.0:
            raise ParameterError(f"OscillatorTarget.period_months: expected 12..120, got {self.period_months}.")
        if not 1.0 <= self.decay_months <= 120.0:
            raise ParameterError(f"OscillatorTarget.decay_months: expected 1..120, got {self.decay_months}.")

    @classmethod
    def from_driver(cls, driver: xr.Dataset) -> OscillatorTarget:
        """Estimate the target from an index run.

        Standard deviations are those of the monthly anomalies. ENSO spectra are broad, so the
        period is defined robustly as the spectral centroid period :math:`P_c = 1/\\bar f` of
        Nino 3 over 18..120 months (Welch, 20-year segments); the oscillator's period P is then
        chosen so that its analytic spectrum has the same centroid, alternating with a
        least-squares fit of :math:`\\tau` to the autocorrelation
        :math:`r(k) = e^{-k/\\tau}\\cos(2\\pi k/P)` at lags 1..24 months (eight rounds). ``h_leads``
        is the sign of the correlation of h_W with Nino 3 a quarter period later, and
        ``h_w_response`` the distributed-lag regression described in the class docstring.

        Parameters
        ----------
        driver : xarray.Dataset
            Monthly index run on ``time`` (one member; a ``member`` dimension of length 1 is
            allowed) with ``nino3``, ``nino4`` (degC) and ``h_w`` (m); the mean seasonal cycle is
            removed before the statistics are computed.

        Returns
        -------
        OscillatorTarget
            The estimated target.
        """
        a = {k: _anomalies(v) for k, v in _driver_arrays(driver).items() if k in OBSERVED_VARIABLES}
        x = a["nino3"] - a["nino3"].mean()
        lags = np.arange(1, min(25, x.size // 2))
        acf = np.array([x[:-k] @ x[k:] for k in lags]) / (x @ x)
        centroid = centroid_period(x)
        period, tau = centroid, 12.0
        for _ in range(8):
            tau = float(optimize.least_squares(
                lambda p, per=period: np.exp(-lags / p[0]) * np.cos(2 * np.pi * lags / per) - acf,
                [tau], bounds=([1.0], [120.0])).x[0])
            try:
                period = optimize.brentq(lambda per, t=tau: _oscillator_centroid(per, t) - centroid,
                                         12.0, 120.0)
            except ValueError:  # centroid not reachable: take the nearest end
                period = 120.0 if _oscillator_centroid(120.0, tau) < centroid else 12.0
        k = max(1, round(period / 4))
        lead = np.corrcoef(a["h_w"][:-k], a["nino3"][k:])[0, 1]
        return cls(float(a["nino3"].std()), float(a["nino4"].std()), float(a["h_w"].std()),
                   float(period), tau, bool(lead >= 0), _lag_response(a["nino3"], a["h_w"]))


_BAND_MONTHS = (18.0, 120.0)
_RESPONSE_LAGS = 18


def _lag_response(te: np.ndarray, hw: np.ndarray, lags: int = _RESPONSE_LAGS) -> tuple[float, ...]:
    """Least-squares :math:`\beta_0..\beta_K` of standardised ``hw`` on lagged standardised ``te``."""
    x = (te - te.mean()) / te.std()
    y = (hw - hw.mean()) / hw.std()
    design = np.stack([x[lags - k: x.size - k] for k in range(lags + 1)], axis=1)
    beta, *_ = np.linalg.lstsq(design, y[lags:], rcond=None)
    return tuple(float(b) for b in beta)


def centroid_period(x: np.ndarray) -> float:
    """Spectral centroid period (months) of a monthly series over 18..120 months.

    :math:`P_c = 1 / (\\sum_f f S(f) / \\sum_f S(f))` over the band, with :math:`S` the Welch
    periodogram (240-month segments, linear detrend).

    Parameters
    ----------
    x : numpy.ndarray
        ``(time,)`` monthly values.
    """
    x = np.asarray(x, dtype=float)
    f, s = signal.welch(x, fs=1.0, nperseg=min(x.size, 240), detrend="linear")
    band = (f >= 1.0 / _BAND_MONTHS[1]) & (f <= 1.0 / _BAND_MONTHS[0])
    return float(s[band].sum() / (f[band] * s[band]).sum())


def _oscillator_centroid(period: float, tau: float) -> float:
    """Analytic centroid period of Re z for :math:`z_t = \\lambda z_{t-1} + \\xi_t`.

    :math:`S(\\omega) \\propto |1 - \\lambda e^{-i\\omega}|^{-2} + |1 - \\bar\\lambda e^{-i\\omega}|^{-2}`.
    """
    f = np.linspace(1.0 / _BAND_MONTHS[1], 1.0 / _BAND_MONTHS[0], 400)
    lam = np.exp(-1.0 / tau + 2j * np.pi / period)
    e = np.exp(-2j * np.pi * f)
    s = 1.0 / np.abs(1 - lam * e) ** 2 + 1.0 / np.abs(1 - np.conj(lam) * e) ** 2
    return float(s.sum() / (f * s).sum())


def _symmetric_marginal(x: np.ndarray, std: float, cap: float | None) -> np.ndarray:
    """Map ``x`` by ranks onto an exactly symmetric law with sample std ``std``.

    The quantiles are :math:`c \\tanh(a \\Phi^{-1}(p)/c)` (or :math:`a \\Phi^{-1}(p)` without a
    cap), :math:`p = (\\mathrm{rank} + 1/2)/n`, with ``a`` solved so the sample std is ``std``.
    """
    q = stats.norm.ppf((np.argsort(np.argsort(x)) + 0.5) / x.size)
    if cap is None:
        return std * q / q.std()
    a = optimize.brentq(lambda s: (cap * np.tanh(s * q / cap)).std() - std, 1e-6, 100.0)
    return cap * np.tanh(a * q / cap)


def _oscillator_indices(n: int, target: OscillatorTarget, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Operational T_E, T_C, h_W ``(n,)`` from the damped complex-AR(1) oscillator."""
    burn = 120
    lam = np.exp(-1.0 / target.decay_months + 2j * np.pi / target.period_months)
    xi = rng.standard_normal((2, n + burn))
    z = signal.lfilter([1.0], [1.0, -lam], xi[0] + 1j * xi[1])[burn:]
    # Re z lags -Im z by a quarter period: -Im z plays the recharged heat content
    u, v = z.real / z.real.std(), -z.imag / z.imag.std()
    month = np.arange(n) % 12
    lock = 1.0 + OPERATIONAL_PHASE_LOCKING * np.cos(2 * np.pi * (month - 10.5) / 12)
    ar = signal.lfilter([1.0], [1.0, -0.85], rng.standard_normal(n + burn))[burn:]
    w = OPERATIONAL_NINO_CORR * u + np.sqrt(1 - OPERATIONAL_NINO_CORR**2) * ar / ar.std()
    te = _symmetric_marginal(lock * u, target.nino3_std, OPERATIONAL_CAP_DEGC)
    if target.h_w_response:
        beta = np.asarray(target.h_w_response)
        x = (te - te.mean()) / te.std()
        response = signal.lfilter(beta, [1.0], x)
        explained = min(float(response[beta.size:].var()), 0.95)
        red = signal.lfilter([1.0], [1.0, -0.85], rng.standard_normal(n + burn))[burn:]
        h = response / max(response.std(), 1e-12) * np.sqrt(explained) + red / red.std() * np.sqrt(1 - explained)
    else:
        h = v if target.h_leads else -v
    return {
        "nino3": te,
        "nino4": _symmetric_marginal(w, target.nino4_std, OPERATIONAL_CAP_DEGC),
        "h_w": _symmetric_marginal(h, target.h_w_std, None),
    }


# ----------------------------------------------------------------------------------- the fields
_VAR_ATTRS = {
    "tos": {"standard_name": "sea_surface_temperature", "long_name": "Sea Surface Temperature",
            "units": "degC", "cell_methods": "area: mean where sea time: mean"},
    "zos": {"standard_name": "sea_surface_height_above_geoid",
            "long_name": "Sea Surface Height Above Geoid (thermocline proxy)", "units": "m",
            "cell_methods": "area: mean where sea time: mean",
            "comment": f"thermocline displacement = {THERMOCLINE_PER_ZOS:g} x zos anomaly"},
}


def _fields(idx: Mapping[str, np.ndarray], rng: np.random.Generator, start_year: int,
            shift_deg: float, nonlinear: float) -> xr.Dataset:
    grid = twin_grid()
    lat, lon, ocean = grid["lat"].values, grid["lon"].values, grid["ocean"].values
    n = idx["nino3"].size
    sst, thc = _sst_patterns(lat, lon, ocean, shift_deg), _zos_patterns(lat, lon, ocean, shift_deg)
    month = np.arange(n) % 12
    te, tc, hw = (idx[k][:, None, None] for k in OBSERVED_VARIABLES)
    amp = TOS_NOISE_DEGC[0] + TOS_NOISE_DEGC[1] * np.abs(lat)[:, None] / 20.0
    tos = _tos_climatology(lat, lon, shift_deg)[month] + sst["b0"] + sst["ep"] * te + sst["cp"] * tc
    if nonlinear:
        tos += nonlinear * sst["nonlinear"] * np.maximum(te, 0.0) ** 2
    tos += amp * _red_noise(rng, n, lat.size, lon.size)
    depth = thc["west"] * hw + thc["tilt"] * TILT_M_PER_DEGC * te
    depth += ZOS_NOISE_M * _red_noise(rng, n, lat.size, lon.size)
    zos = _zos_climatology(lat, lon)[month] + depth / THERMOCLINE_PER_ZOS
    time, _ = _time_axis(n, start_year)
    land = ~ocean[None]
    data = {name: (("time", "lat", "lon"), np.where(land, np.nan, arr).astype(np.float32), dict(_VAR_ATTRS[name]))
            for name, arr in (("tos", tos), ("zos", zos))}
    ds = xr.Dataset(data, coords={"time": ("time", time, {"standard_name": "time", "long_name": "time",
                                                          "axis": "T"}),
                                  "lat": grid["lat"], "lon": grid["lon"]})
    ds["time"].encoding.update({"units": f"days since {start_year:04d}-01-01 00:00:00",
                                "calendar": "noleap", "dtype": "float64"})
    return ds


def _global_attrs(role: str, seed: int, extra: Mapping[str, object]) -> dict[str, object]:
    attrs = {
        "Conventions": "CF-1.7 CMIP-6.2", "title": f"bayesbridge synthetic twin experiment: {role}",
        "institution": "bayesbridge (synthetic data)", "source_id": "SYNTH", "experiment_id": "piControl",
        "variant_label": "r1i1p1f1", "grid_label": "gn", "table_id": "Omon", "frequency": "mon",
        "realm": "ocean", "bayesbridge_role": role, "bayesbridge_generator_version": GENERATOR_VERSION,
        "bayesbridge_seed": int(seed), "bayesbridge_thermocline_per_zos": THERMOCLINE_PER_ZOS,
    }
    attrs.update({f"bayesbridge_{k}": v for k, v in extra.items()})
    return attrs


def synthetic_truth(driver: xr.Dataset, seed: int, *, start_year: int = 1850) -> xr.Dataset:
    """Truth fields ``tos``, ``zos`` on ``(time, lat, lon)`` driven by an idealized-model run.

    Parameters
    ----------
    driver : xarray.Dataset
        ``nino3``, ``nino4`` (degC) and ``h_w`` (m) anomalies on ``time`` (one member, first
        month January), e.g. ``MultiscaleENSO().simulate(years, members=1, seed=s)``.
    seed : int
        Seed of the red noise (stream 3 of ``default_rng([seed, stream])``).
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    xarray.Dataset
        float32 fields (absolute values: anomalies are the reader's job), NaN over land, with
        CF attributes and global attributes describing the construction (module docstring).
    """
    _check_int("seed", seed, 0)
    _check_int("start_year", start_year, 1)
    idx = _driver_arrays(driver)
    ds = _fields(idx, np.random.default_rng([seed, _STREAMS["truth_noise"]]), start_year, 0.0, NONLINEAR_COEF)
    ds.attrs = _global_attrs("truth", seed, {
        "construction": "tos = clim + b0 + P_E T_E + P_C T_C + kappa N max(T_E,0)^2 + red noise; "
                        "zos = clim + (W h_W + S alpha T_E + noise) / thermocline_per_zos",
        "meridional_efolding_deg": MERIDIONAL_EFOLD_DEG, "nonlinear_coef_per_degc": NONLINEAR_COEF,
        "tilt_m_per_degc": TILT_M_PER_DEGC, "noise_ar1": NOISE_PHI,
        "tos_noise_std_degc": f"{TOS_NOISE_DEGC[0]} + {TOS_NOISE_DEGC[1]} |lat|/20",
        "zos_noise_std_m_thermocline": ZOS_NOISE_M})
    return ds


def operational_pattern_fields(driver: xr.Dataset, seed: int, *, start_year: int = 1850) -> xr.Dataset:
    """The operational generator's fields driven by given indices: a scoring-only oracle.

    Exactly the operational model's construction (patterns and cold tongue shifted
    :data:`COLD_TONGUE_SHIFT_DEG` west, no nonlinear term, its noise amplitudes) but driven by
    ``driver``'s indices instead of the oscillator, with red noise from stream 9 of
    ``default_rng([seed, stream])``. Driven by the truth's own indices (``truth_driver``), it is
    the best any method decoding through the operational model's patterns can be expected to do:
    the distance of its statistic maps to the truth's is a structural bound. Never an input of
    the bridge.

    Parameters
    ----------
    driver : xarray.Dataset
        ``nino3``, ``nino4`` (degC), ``h_w`` (m) on ``time`` (one member, first month January).
    seed : int
        Seed of the red noise.
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    xarray.Dataset
        ``tos``, ``zos`` float32 on ``(time, lat, lon)`` (absolute values), NaN over land.
    """
    seed = _check_int("seed", seed, 0)
    start_year = _check_int("start_year", start_year, 1)
    rng = np.random.default_rng([seed, _STREAMS["pattern_oracle"]])
    return _fields(_driver_arrays(driver), rng, start_year, COLD_TONGUE_SHIFT_DEG, 0.0)


_BIASES = {
    "bias_distribution": "Gaussian linear oscillator; Nino 3/4 marginals mapped to exactly symmetric "
                         "laws: Nino 3 skewness 0 (truth about +0.9), Nino 4 skewness 0",
    "bias_extremes": f"|Nino 3|, |Nino 4| < {OPERATIONAL_CAP_DEGC} degC: no extreme El Nino",
    "bias_westward_extension": f"SST/thermocline patterns and the mean cold tongue extend "
                               f"{COLD_TONGUE_SHIFT_DEG} deg too far west west of 200E, tapering to 0 at 280E",
    "bias_ep_cp_contrast": f"corr(Nino 3, Nino 4) = {OPERATIONAL_NINO_CORR}, no nonlinear EP term",
    "bias_phase_locking": f"Nino 3 amplitude seasonal modulation only +-{OPERATIONAL_PHASE_LOCKING:.0%}",
    "matched": "variances of Nino 3, Nino 4, h_W and the ENSO period/decay of the target",
}


def _operational(n: int, seed: int, target: OscillatorTarget, start_year: int) -> tuple[xr.Dataset, dict]:
    idx = _oscillator_indices(n, target, np.random.default_rng([seed, _STREAMS["oscillator"]]))
    ds = _fields(idx, np.random.default_rng([seed, _STREAMS["op_noise"]]), start_year,
                 COLD_TONGUE_SHIFT_DEG, 0.0)
    ds.attrs = _global_attrs("operational", seed, {**_BIASES, **{
        f"target_{k}": (np.asarray(v, dtype=float) if isinstance(v, tuple) else float(v))
        for k, v in vars(target).items()}})
    return ds, idx


def synthetic_operational(years: int, seed: int, *, target: OscillatorTarget | None = None,
                          start_year: int = 1850, out_dir: str | os.PathLike | None = None,
                          years_per_file: int = 50) -> xr.Dataset:
    """The synthetic operational model alone: biased ``tos``, ``zos`` on ``(time, lat, lon)``.

    Parameters
    ----------
    years, seed : int
        Length (years >= 2) and seed (oscillator stream 4, noise stream 5).
    target : OscillatorTarget, optional
        Variances and period to reproduce; default :class:`OscillatorTarget` (the idealized
        model's published statistics). :func:`make_twin_experiment` uses
        ``OscillatorTarget.from_driver(truth_driver)``, so passing that gives identical fields.
    start_year : int
        Calendar year of the first month.
    out_dir : path, optional
        If given, also write CMIP6-style files there with :func:`write_cmip6`.
    years_per_file : int
        Years per file when writing.

    Returns
    -------
    xarray.Dataset
        float32 fields with CF attributes; every built-in bias is a ``bayesbridge_bias_*``
        global attribute.
    """
    years = _check_int("years", years, 2)
    _check_int("seed", seed, 0)
    _check_int("start_year", start_year, 1)
    ds, _ = _operational(12 * years, seed, target or OscillatorTarget(), start_year)
    if out_dir is not None:
        write_cmip6(ds, out_dir, years_per_file=years_per_file)
    return ds


# ------------------------------------------------------------------------------------- writing
def _atomic_to_netcdf(ds: xr.Dataset, path: Path, encoding: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=encoding)


def write_cmip6(ds: xr.Dataset, out_dir: str | os.PathLike, *, years_per_file: int = 50) -> list[Path]:
    """Write fields as CMIP6-style files, one per variable and block of years.

    Names follow ``<var>_<table_id>_<source_id>_<experiment_id>_<variant_label>_<grid_label>_
    YYYYMM-YYYYMM.nc`` (e.g. ``tos_Omon_SYNTH_piControl_r1i1p1f1_gn_185001-189912.nc``), with
    ``time_bnds``, ``lat_bnds``, ``lon_bnds``; each file is written atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        Monthly fields on ``(time, lat, lon)`` with a cftime ``time`` axis (written with the
        ``noleap`` calendar); the file-name parts ``table_id``, ``source_id``, ``experiment_id``,
        ``variant_label`` and ``grid_label`` are read from ``ds.attrs`` (defaults ``Omon``,
        ``SYNTH``, ``piControl``, ``r1i1p1f1``, ``gn``). Latitude and longitude bounds are the
        centres +- 1 degree.
    out_dir : str or os.PathLike
        Output folder, created if missing.
    years_per_file : int, default 50
        Years of monthly data per file (>= 1).

    Returns
    -------
    list of pathlib.Path
        The files written, by variable then time.
    """
    years_per_file = _check_int("years_per_file", years_per_file, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = ds.attrs
    stem = "_".join(str(a.get(k, d)) for k, d in (("table_id", "Omon"), ("source_id", "SYNTH"),
                                                 ("experiment_id", "piControl"),
                                                 ("variant_label", "r1i1p1f1"), ("grid_label", "gn")))
    t0 = ds["time"].values[0]
    _, tb = _time_axis(ds.sizes["time"], t0.year)
    units = f"days since {t0.year:04d}-01-01 00:00:00"
    bnds = {"time_bnds": (("time", "bnds"), tb)}
    for c in ("lat", "lon"):
        v = ds[c].values
        bnds[f"{c}_bnds"] = ((c, "bnds"), np.stack([v - 1.0, v + 1.0], axis=1))
    paths = []
    step = 12 * years_per_file
    for var in ds.data_vars:
        for i0 in range(0, ds.sizes["time"], step):
            block = ds[[var]].isel(time=slice(i0, i0 + step)).assign(
                {k: (dims, val[i0:i0 + step] if k == "time_bnds" else val) for k, (dims, val) in bnds.items()})
            for c in ("time", "lat", "lon"):
                block[c].attrs["bounds"] = f"{c}_bnds"
            first, last = block["time"].values[0], block["time"].values[-1]
            name = f"{var}_{stem}_{first.year:04d}{first.month:02d}-{last.year:04d}{last.month:02d}.nc"
            enc = {"time": {"units": units, "calendar": "noleap", "dtype": "float64"},
                   "time_bnds": {"units": units, "calendar": "noleap", "dtype": "float64"},
                   var: {"zlib": True, "complevel": 1, "_FillValue": np.float32(1e20)}}
            _atomic_to_netcdf(block, out / name, enc)
            paths.append(out / name)
    return paths


# ------------------------------------------------------------------------------ the experiment
@dataclass
class TwinExperiment:
    """A twin experiment with known truth (``docs/design.md`` section 6).

    Attributes
    ----------
    truth : xarray.Dataset
        True ``tos`` (degC), ``zos`` (m) on ``(time, lat, lon)``, float32, NaN over land.
    operational : xarray.Dataset
        Biased operational model on the same grid and times (its biases in ``attrs``).
    idealized_observations : xarray.Dataset
        The idealized-model run to assimilate, on ``time``: ``nino3``, ``nino4`` (degC), ``h_w``
        (m of thermocline) (:data:`OBSERVED_VARIABLES`), plus its other outputs. In the default
        experiment this is the run that drives the truth (its sparse output), so posterior
        series can be scored against the truth month by month; it is independent of the
        operational model.
    truth_driver : xarray.Dataset
        The idealized run that drives the truth (on ``time``): the truth's exact indices.
    operational_driver : xarray.Dataset
        The operational model's oscillator indices ``nino3``, ``nino4``, ``h_w`` on ``time``.
    metadata : dict
        Seed, years, generator version, oscillator target and the documented biases.
    """

    truth: xr.Dataset
    operational: xr.Dataset
    idealized_observations: xr.Dataset
    truth_driver: xr.Dataset
    operational_driver: xr.Dataset
    metadata: dict = field(default_factory=dict)

    _PARTS = ("truth", "operational", "idealized_observations", "truth_driver", "operational_driver")

    def save(self, directory: str | os.PathLike) -> Path:
        """Write every part as ``<part>.nc`` plus ``metadata.json`` (written last, atomically).

        Parameters
        ----------
        directory : str or os.PathLike
            Output folder, created if missing; existing files of the same names are replaced.

        Returns
        -------
        pathlib.Path
            The folder written, readable with :meth:`load`.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for part in self._PARTS:
            _atomic_to_netcdf(getattr(self, part), out / f"{part}.nc")
        with atomic_path(out / "metadata.json") as tmp:
            tmp.write_text(json.dumps(self.metadata, indent=1, sort_keys=True))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TwinExperiment:
        """Read a directory written by :meth:`save` (fully into memory)."""
        src = Path(directory)
        if not (src / "metadata.json").exists():
            raise FileNotFoundError(f"directory: no complete twin experiment in {src} (metadata.json missing).")
        parts = {}
        for part in cls._PARTS:
            with xr.open_dataset(src / f"{part}.nc") as ds:
                parts[part] = ds.load()
        return cls(**parts, metadata=json.loads((src / "metadata.json").read_text()))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputTypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise InputValueError(f"{name}: expected an integer >= {minimum}, got {value}.")
    return int(value)


def twin_from_drivers(truth_driver: xr.Dataset, observation_driver: xr.Dataset, seed: int, *,
                      start_year: int = 1850) -> TwinExperiment:
    """Build a twin experiment from two given index runs (no simulation, no cache).

    Parameters
    ----------
    truth_driver, observation_driver : xarray.Dataset
        Independent runs with ``nino3``, ``nino4``, ``h_w`` on ``time`` (same length, first
        month January). The first drives the truth, the second is what gets assimilated.
    seed : int
        Seed of the truth's noise and of the operational model.
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    TwinExperiment
    """
    seed = _check_int("seed", seed, 0)
    tdrv, odrv = _driver_arrays(truth_driver, "truth_driver"), _driver_arrays(observation_driver, "observation_driver")
    n = tdrv["nino3"].size
    if odrv["nino3"].size != n:
        raise InputValueError(f"observation_driver: expected {n} months like truth_driver, got {odrv['nino3'].size}.")
    time, _ = _time_axis(n, start_year)
    tds = _index_dataset(tdrv, time, {"bayesbridge_role": "truth driver (idealized model)"})
    target = OscillatorTarget.from_driver(tds)
    truth = synthetic_truth(tds, seed, start_year=start_year)
    operational, op_idx = _operational(n, seed, target, start_year)
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "months": n, "start_year": start_year,
            "target": {k: (v if isinstance(v, bool) else [float(b) for b in v] if isinstance(v, tuple) else float(v))
                       for k, v in vars(target).items()},
            "biases": dict(_BIASES), "thermocline_per_zos": THERMOCLINE_PER_ZOS,
            "observed_variables": list(OBSERVED_VARIABLES)}
    return TwinExperiment(
        truth=truth, operational=operational,
        idealized_observations=_index_dataset(odrv, time, {"bayesbridge_role": "idealized observations"}),
        truth_driver=tds,
        operational_driver=_index_dataset(op_idx, time, {"bayesbridge_role": "operational oscillator"}),
        metadata=meta)


def _default_cache_dir() -> Path:
    env = os.environ.get("BAYESBRIDGE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bayesbridge"


def make_twin_experiment(years: int = 200, seed: int = 0, *, cache_dir: str | os.PathLike | None = None,
                         use_cache: bool = True, start_year: int = 1850) -> TwinExperiment:
    """The default twin experiment: one idealized run drives the truth and is assimilated.

    The run is ``MultiscaleENSO().simulate(years, members=1, seed=s)`` with ``s`` drawn from
    stream 1 of ``SeedSequence([seed, stream])``; its indices ``nino3``, ``nino4``, ``h_w`` are
    the sparse observations, and the truth fields it drives (with their own patterns, nonlinear
    term and noise, never seen by the bridge) are what the bridged fields are scored against.
    The operational model is independent of it. Results
    are cached under ``cache_dir`` (default ``$BAYESBRIDGE_CACHE_DIR`` or
    ``~/.cache/bayesbridge``) in ``twin-v<version>-y<years>-s<seed>-start<year>/``; the cache is
    read only when complete (``metadata.json`` is written last) and each file is written
    atomically.

    Parameters
    ----------
    years, seed : int
        Length in years (>= 2) and master seed (>= 0).
    cache_dir : path, optional
        Cache folder.
    use_cache : bool
        Read and write the cache (default True).
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    TwinExperiment
    """
    years = _check_int("years", years, 2)
    seed = _check_int("seed", seed, 0)
    start_year = _check_int("start_year", start_year, 1)
    path = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = path / f"twin-v{GENERATOR_VERSION}-y{years}-s{seed}-start{start_year}"
    if use_cache and (path / "metadata.json").exists():
        return TwinExperiment.load(path)
    from bayesbridge.idealized import MultiscaleENSO

    def run(stream: str) -> xr.Dataset:
        s = int(np.random.SeedSequence([seed, _STREAMS[stream]]).generate_state(1)[0])
        return MultiscaleENSO().simulate(years=years, members=1, seed=s).isel(member=0, drop=True)

    driver = run("truth_driver")
    twin = twin_from_drivers(driver, driver, seed, start_year=start_year)
    twin.metadata["idealized_model"] = "bayesbridge.idealized.MultiscaleENSO() defaults"
    if use_cache:
        twin.save(path)
    return twin
