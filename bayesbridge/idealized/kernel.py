"""Compiled ensemble integrator of the multiscale ENSO model (numba, members in parallel).

Euler-Maruyama for (u, h_W, T_C, T_E, tau) and Milstein for the Walker index I, with step ``dt``
(time unit = 2 months). For ``sigma_I(I) = sqrt(lambda (4 - I) I)`` the Milstein correction is

.. math::

    \\tfrac12 \\sigma_I \\sigma_I' (\\Delta W^2 - \\Delta t)
      = \\tfrac14 \\lambda (4 - 2 I) (\\Delta W^2 - \\Delta t),

and I is reflected back into [0, 4] (then clipped) after each step. The noise of tau does not
depend on tau, so Euler-Maruyama is already strong order 1 for it.

Determinism: every member owns its own ``numpy.random.Generator`` (spawned from one
``SeedSequence``), and members are independent loop iterations of ``numba.prange``, so the
output for a seed does not depend on the number of threads or on how members are scheduled.

The time-dependent (seasonal) factors depend only on the step within the year, so they are
tabulated once, shape ``(steps_per_year, 3)``, and shared by all members.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["seasonal_table", "integrate_ensemble", "STATE_NAMES", "N_STATE"]

STATE_NAMES: tuple[str, ...] = ("u", "h_W", "T_C", "T_E", "tau", "I")
"""Order of the state components in every state array (last axis)."""

N_STATE: int = 6


def seasonal_table(steps_per_year: int, dt: float, f: float) -> np.ndarray:
    """Seasonal factors at the left end of each step of a year.

    Returns
    -------
    numpy.ndarray, shape ``(steps_per_year, 3)``
        Column 0: ``1 + 0.3 sin(2 pi t/6 - pi/6)`` (factor of c_1); column 1:
        ``c_2(t) = 1.4 f [1 + 0.3 sin(2 pi t/6 + 2 pi/6) + 0.25 sin(4 pi t/6 + 2 pi/6)]``;
        column 2: ``1 + 0.3 cos(2 pi t/6 + 2 pi/6)`` (factor of sigma_tau); t = k dt, t = 0 is
        the start of January.
    """
    t = np.arange(steps_per_year, dtype=np.float64) * dt
    w = 2.0 * np.pi * t / 6.0
    out = np.empty((steps_per_year, 3), dtype=np.float64)
    out[:, 0] = 1.0 + 0.3 * np.sin(w - np.pi / 6.0)
    out[:, 1] = 1.4 * f * (1.0 + 0.3 * np.sin(w + 2.0 * np.pi / 6.0) + 0.25 * np.sin(2.0 * w + 2.0 * np.pi / 6.0))
    out[:, 2] = 1.0 + 0.3 * np.cos(w + 2.0 * np.pi / 6.0)
    return out


@njit(parallel=True, cache=True, nogil=True)
def integrate_ensemble(  # pragma: no cover - compiled; covered through MultiscaleENSO
    rngs, coef, state, season, dt, burn_steps, n_bins, steps_per_bin, day_of_step, day_weight,
    out, out_daily,
):  # fmt: skip
    """Integrate every member; accumulate bin (month) means of the state.

    Parameters
    ----------
    rngs : numba.typed.List of numpy.random.Generator, length ``member``
        One independent stream per member.
    coef : ndarray, shape ``(20,)``
        :meth:`ENSOParameters.kernel_vector`.
    state : ndarray, shape ``(member, 6)``
        Initial state, overwritten with the final state.
    season : ndarray, shape ``(steps_per_year, 3)``
        :func:`seasonal_table`.
    dt : float
        Time step (time units).
    burn_steps : int
        Steps integrated and discarded first (a whole number of years).
    n_bins, steps_per_bin : int
        Output bins (months) and steps per bin; bins tile whole years, burn-in is whole years.
    day_of_step : ndarray of int64, shape ``(steps_per_year,)``
        Day of the year (0..364) of each step, used when ``out_daily`` has a non-empty time axis.
    day_weight : ndarray, shape ``(365,)``
        1 / number of steps falling in each day of the year.
    out : ndarray, shape ``(member, n_bins, 6)``
        Receives the bin means (every entry is overwritten).
    out_daily : ndarray, shape ``(member, n_days, 6)`` with ``n_days = 0`` or ``365 years``
        Accumulates daily means when ``n_days > 0`` (must be zero on entry).
    """
    n_members = state.shape[0]
    steps_per_year = season.shape[0]
    delta_u = coef[0]
    delta_h = coef[1]
    r = coef[2]
    gamma_c = coef[3]
    gamma_e = coef[4]
    r_c = coef[5]
    zeta_c = coef[6]
    r_e = coef[7]
    zeta_e = coef[8]
    c_u = coef[9]
    d_tau = coef[10]
    lam = coef[11]
    m_i = coef[12]
    f = coef[13]
    beta_e0 = coef[14]
    s_u = coef[15]
    s_h = coef[16]
    s_c = coef[17]
    s_e = coef[18]
    wind_amp = coef[19]
    sq = math.sqrt(dt)
    has_e_noise = s_e > 0.0
    daily = out_daily.shape[1] > 0
    inv_bin = 1.0 / steps_per_bin
    n_years_total = (burn_steps + n_bins * steps_per_bin) // steps_per_year
    burn_years = burn_steps // steps_per_year
    bins_per_year = steps_per_year // steps_per_bin
    for mem in prange(n_members):
        rng = rngs[np.int64(mem)]
        u = state[mem, 0]
        h = state[mem, 1]
        tc = state[mem, 2]
        te = state[mem, 3]
        tau = state[mem, 4]
        i_w = state[mem, 5]
        for year in range(n_years_total):
            rec_year = year - burn_years
            for b in range(bins_per_year):
                a_u = 0.0
                a_h = 0.0
                a_c = 0.0
                a_e = 0.0
                a_t = 0.0
                a_i = 0.0
                for s in range(steps_per_bin):
                    k = b * steps_per_bin + s
                    a_u += u
                    a_h += h
                    a_c += tc
                    a_e += te
                    a_t += tau
                    a_i += i_w
                    if daily and rec_year >= 0:
                        d = rec_year * 365 + day_of_step[k]
                        w = day_weight[day_of_step[k]]
                        out_daily[mem, d, 0] += u * w
                        out_daily[mem, d, 1] += h * w
                        out_daily[mem, d, 2] += tc * w
                        out_daily[mem, d, 3] += te * w
                        out_daily[mem, d, 4] += tau * w
                        out_daily[mem, d, 5] += i_w * w
                    w_u = rng.standard_normal()
                    w_h = rng.standard_normal()
                    w_c = rng.standard_normal()
                    w_e = rng.standard_normal() if has_e_noise else 0.0
                    w_t = rng.standard_normal()
                    w_i = rng.standard_normal() * sq
                    t_mean = 0.5 * (tc + te)
                    beta_e = beta_e0 * (2.0 - 0.2 * i_w)
                    tc1 = tc + 0.1
                    c1 = f * (25.0 * tc1 * tc1 + 0.9) * season[k, 0]
                    du = -r * u - delta_u * t_mean - 0.2 * beta_e * tau
                    dh = -r * h - delta_h * t_mean - 0.4 * beta_e * tau
                    dtc = (r_c - c1) * tc + zeta_c * te + gamma_c * h + 0.2 * f * i_w * u + c_u + 0.8 * beta_e * tau
                    dte = (r_e - season[k, 1]) * te - zeta_e * tc + gamma_e * h + beta_e * tau
                    s_tau = wind_amp * (math.tanh(7.5 * tc) + 1.0) * season[k, 2]
                    s_i = math.sqrt(max(lam * (4.0 - i_w) * i_w, 0.0))
                    u += du * dt + s_u * sq * w_u
                    h += dh * dt + s_h * sq * w_h
                    tc += dtc * dt + s_c * sq * w_c
                    te += dte * dt + s_e * sq * w_e
                    tau += -d_tau * tau * dt + s_tau * sq * w_t
                    i_w += (
                        -lam * (i_w - m_i) * dt + s_i * w_i
                        + 0.25 * lam * (4.0 - 2.0 * i_w) * (w_i * w_i - dt)
                    )  # fmt: skip
                    if i_w < 0.0:
                        i_w = -i_w
                    if i_w > 4.0:
                        i_w = 8.0 - i_w
                    i_w = min(max(i_w, 0.0), 4.0)
                if rec_year >= 0:
                    j = rec_year * bins_per_year + b
                    out[mem, j, 0] = a_u * inv_bin
                    out[mem, j, 1] = a_h * inv_bin
                    out[mem, j, 2] = a_c * inv_bin
                    out[mem, j, 3] = a_e * inv_bin
                    out[mem, j, 4] = a_t * inv_bin
                    out[mem, j, 5] = a_i * inv_bin
        state[mem, 0] = u
        state[mem, 1] = h
        state[mem, 2] = tc
        state[mem, 3] = te
        state[mem, 4] = tau
        state[mem, 5] = i_w
