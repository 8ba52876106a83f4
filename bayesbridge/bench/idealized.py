"""Benchmark row: the compiled ensemble kernel against a straightforward numpy loop.

Both integrate the same model (Euler-Maruyama, Milstein for I, dt = 0.005, 100 members) and
accumulate monthly means; the numpy reference vectorises over members and loops over time
steps in Python, drawing the noise with ``Generator.standard_normal((6, members))`` each step.
The figure of merit is member-years simulated per second (``extra['member_years_per_s']``).
"""

from __future__ import annotations

import math

import numpy as np

from bayesbridge.bench.core import BenchRow, measure
from bayesbridge.idealized.kernel import seasonal_table
from bayesbridge.idealized.model import MultiscaleENSO
from bayesbridge.idealized.params import ENSOParameters

__all__ = ["run", "numpy_reference"]


def numpy_reference(
    params: ENSOParameters, years: int, members: int, seed: int, dt: float = 0.005
) -> np.ndarray:
    """Plain numpy Euler-Maruyama over the ensemble; monthly means, shape ``(member, month, 6)``.

    The reference the compiled kernel is timed against (same equations, vectorised over
    members, one Python iteration per time step).

    Parameters
    ----------
    params : ENSOParameters
        Model parameters.
    years, members : int
        Simulated years and ensemble size.
    seed : int
        Seed of ``numpy.random.default_rng``.
    dt : float
        Time step in model units.
    """
    c = params.kernel_vector()
    (delta_u, delta_h, r, gamma_c, gamma_e, r_c, zeta_c, r_e, zeta_e, c_u, d_tau, lam, m_i, f,
     beta_e0, s_u, s_h, s_c, s_e, wind_amp) = c  # fmt: skip
    rng = np.random.default_rng(seed)
    spm = int(round(0.5 / dt))
    spy = 12 * spm
    season = seasonal_table(spy, dt, f)
    sq = math.sqrt(dt)
    u, h, tc, te, tau = (np.zeros(members) for _ in range(5))
    i_w = rng.uniform(0.0, 4.0, members)
    out = np.zeros((members, years * 12, 6))
    for step in range(years * spy):
        k = step % spy
        j = step // spm
        out[:, j] += np.stack([u, h, tc, te, tau, i_w], axis=-1) / spm
        w = rng.standard_normal((6, members))
        t_mean = 0.5 * (tc + te)
        beta_e = beta_e0 * (2.0 - i_w / 5.0)
        c1 = f * (25.0 * (tc + 0.1) ** 2 + 0.9) * season[k, 0]
        du = -r * u - delta_u * t_mean - 0.2 * beta_e * tau
        dh = -r * h - delta_h * t_mean - 0.4 * beta_e * tau
        dtc = (r_c - c1) * tc + zeta_c * te + gamma_c * h + f * i_w / 5.0 * u + c_u + 0.8 * beta_e * tau
        dte = (r_e - season[k, 1]) * te - zeta_e * tc + gamma_e * h + beta_e * tau
        s_tau = wind_amp * (np.tanh(7.5 * tc) + 1.0) * season[k, 2]
        s_i = np.sqrt(np.maximum(lam * (4.0 - i_w) * i_w, 0.0))
        dw_i = w[5] * sq
        u = u + du * dt + s_u * sq * w[0]
        h = h + dh * dt + s_h * sq * w[1]
        tc = tc + dtc * dt + s_c * sq * w[2]
        te = te + dte * dt + s_e * sq * w[3]
        tau = tau - d_tau * tau * dt + s_tau * sq * w[4]
        i_w = i_w - lam * (i_w - m_i) * dt + s_i * dw_i + 0.25 * lam * (4 - 2 * i_w) * (dw_i**2 - dt)
        i_w = np.abs(i_w)
        i_w = np.where(i_w > 4.0, 8.0 - i_w, i_w).clip(0.0, 4.0)
    return out


def run(quick: bool = False) -> list[BenchRow]:
    """One row: numba kernel vs numpy reference, 100 members, member-years per second.

    ``quick``: 100 members x 20 years (kernel) and x 2 years (numpy); full: x 200 and x 10.
    """
    members = 100
    years_ours, years_ref = (20, 2) if quick else (200, 10)
    model = MultiscaleENSO()
    ours = measure(
        lambda: model.integrate(years=years_ours, members=members, seed=0, burn_in_years=0),
        repeats=3, warmup=1,
    )  # fmt: skip
    peer = measure(
        lambda: numpy_reference(model.params, years_ref, members, seed=0), repeats=1 if quick else 2, warmup=0
    )
    mys_ours = members * years_ours / ours.median_s
    mys_ref = members * years_ref / peer.median_s
    # BenchRow.ratio compares median times; normalise the peer to the same member-years
    from bayesbridge.bench.core import Timing

    peer_scaled = Timing(peer.median_s * years_ours / years_ref, peer.times_s, peer.peak_mb)
    return [
        BenchRow(
            name="idealized_kernel",
            problem=f"multiscale ENSO, {members} members x {years_ours} years, dt=0.005",
            ours=ours,
            peer_name="numpy vectorised Euler-Maruyama",
            peer=peer_scaled,
            key="idealized_vs_numpy",
            note=f"numpy timed on {years_ref} years and scaled to {years_ours}",
            extra={"member_years_per_s": mys_ours, "numpy_member_years_per_s": mys_ref},
        )
    ]
