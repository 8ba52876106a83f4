"""The operational model's ENSO: a damped linear oscillator fitted to an index run.

The operational model's indices (``docs/design.md`` section 6) come from a Gaussian damped
linear oscillator

.. math::

    z_t = \\rho e^{i 2 \\pi / P} z_{t-1} + \\xi_t, \\qquad \\rho = e^{-1/\\tau},

(complex AR(1), i.e. AR(2) for each component) with the target's period and decay
(:class:`OscillatorTarget`, estimated from the truth's driver by
:meth:`OscillatorTarget.from_driver` through the spectral :func:`centroid_period`). Its
marginals are mapped by ranks to exactly symmetric, light-tailed laws (Nino 3 skewness 0,
\\|T\\| < :data:`OPERATIONAL_CAP_DEGC`: no extreme events); Nino 4 is correlated
:data:`OPERATIONAL_NINO_CORR` with Nino 3, seasonal phase locking is weak
(:data:`OPERATIONAL_PHASE_LOCKING`), and h_W is the truth's distributed-lag response to Nino 3
plus AR(1) noise.

References: Burgers, Jin & van Oldenborgh (2005), Geophys. Res. Lett. 32:L13706 (the damped
oscillator as a model of ENSO); Behnoudfar et al., arXiv 2510.13030.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesbridge.datasets.twin.drivers import OBSERVED_VARIABLES, driver_arrays
from bayesbridge.errors import ParameterError

__all__ = [
    "OPERATIONAL_CAP_DEGC",
    "OPERATIONAL_NINO_CORR",
    "OPERATIONAL_PHASE_LOCKING",
    "OscillatorTarget",
    "centroid_period",
    "oscillator_indices",
]

OPERATIONAL_CAP_DEGC = 2.0
"""``|T_E|`` and ``|T_C|`` of the operational model stay below this (degC)."""
OPERATIONAL_NINO_CORR = 0.75
"""corr(T_E, T_C) built into the operational model."""
OPERATIONAL_PHASE_LOCKING = 0.1
"""Relative seasonal modulation of the operational model's Nino 3 amplitude."""

_BAND_MONTHS = (18.0, 120.0)
_RESPONSE_LAGS = 18


def _anomalies(x: np.ndarray) -> np.ndarray:
    """``(time,)`` monthly series minus its mean seasonal cycle (first month January)."""
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
        from scipy import optimize  # lazy: slow to import; the twin is cached

        a = {k: _anomalies(v) for k, v in driver_arrays(driver).items() if k in OBSERVED_VARIABLES}
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
    from scipy import signal  # lazy: slow to import; the twin is cached

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
    from scipy import optimize, stats  # lazy: slow to import; the twin is cached

    q = stats.norm.ppf((np.argsort(np.argsort(x)) + 0.5) / x.size)
    if cap is None:
        return std * q / q.std()
    a = optimize.brentq(lambda s: (cap * np.tanh(s * q / cap)).std() - std, 1e-6, 100.0)
    return cap * np.tanh(a * q / cap)


def oscillator_indices(n: int, target: OscillatorTarget, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Operational T_E, T_C, h_W from the damped complex-AR(1) oscillator.

    :math:`z_t = \\lambda z_{t-1} + \\xi_t`, :math:`\\lambda = e^{-1/\\tau + 2\\pi i/P}` (120
    months of spin-up). With :math:`u` the standardised :math:`\\mathrm{Re}\\, z`, T_E is the
    rank map (onto a symmetric law capped at :data:`OPERATIONAL_CAP_DEGC`) of the phase-locked
    :math:`u`, T_C that of :math:`c u + \\sqrt{1 - c^2} a` (:math:`c` =
    :data:`OPERATIONAL_NINO_CORR`, :math:`a` standardised AR(1) noise), and h_W either the
    target's distributed-lag response to T_E plus AR(1) noise or :math:`\\pm` the standardised
    :math:`-\\mathrm{Im}\\, z` (a quarter period ahead of T_E).

    Parameters
    ----------
    n : int
        Number of months.
    target : OscillatorTarget
        Standard deviations, period, decay and h_W coupling to reproduce.
    rng : numpy.random.Generator
        Source of the oscillator's noise (draw order fixed: the values depend on it).

    Returns
    -------
    dict of str to numpy.ndarray
        ``nino3``, ``nino4`` (degC) and ``h_w`` (m), each ``(n,)``.
    """
    from scipy import signal  # lazy: slow to import; the twin is cached

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


