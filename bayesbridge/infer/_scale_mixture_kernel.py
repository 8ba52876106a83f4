"""Compiled (numba) Kalman filter and forward-filter backward-sample draws of an affine model at given scales.

:func:`bayesbridge.infer.scale_mixture.scale_mixture_draws` calls :func:`_ffbs_at_scales` once per
scale draw ``(s, sigma)`` and run; the maths (the Kalman filter, FFBS, reuse of the periodic steady
state) is in that module's docstring.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__: list[str] = []

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True)
def _sqrt_psd(P):  # pragma: no cover - compiled
    """``L`` with ``L L^T = P`` ``(d, d)``: Cholesky, or the clipped eigen-root of a singular ``P``."""
    S = 0.5 * (P + P.T)
    try:
        return np.linalg.cholesky(S)
    except Exception:  # noqa: BLE001 - numba raises a generic error for a matrix that is not PD
        w, V = np.linalg.eigh(S)
        return V * np.sqrt(np.maximum(w, 0.0))


@njit(cache=True)
def _rel_change(X, Y):  # pragma: no cover - compiled
    """``max |X - Y| / max |X|`` (0 for two zero matrices)."""
    num = np.max(np.abs(X - Y))
    den = np.max(np.abs(X))
    return num / den if den > 0.0 else num


@njit(cache=True)
def _ffbs_at_scales(A, b, LL, H, c, m0, P0, y, s, sigma, eps_s, eps_f, tol):  # pragma: no cover - compiled
    """Kalman filter, filtered draws and FFBS trajectories of one run at scales ``s (m,)``, ``sigma``.

    ``A``, ``LL`` ``(p, d, d)`` periodic (``t % p``), ``b`` ``(pb, d)`` (``t % pb``), ``H (m, d)``,
    ``c (m,)``, ``m0 (d,)``, ``P0 (d, d)``, ``y (T, m)`` (NaN = missing), standard normals
    ``eps_s``, ``eps_f`` ``(T, n, d)``. Returns ``(smoothed draws (T, n, d), filtered draws
    (T, n, d), filtered means (T, d), filtered covariances (T, d, d), log-likelihood)``.
    """
    T, m = y.shape
    d = m0.shape[0]
    p, pb = A.shape[0], b.shape[0]
    n = eps_s.shape[1]
    mf = np.empty((T, d))
    mp = np.empty((T, d))
    Pf = np.empty((T, d, d))
    Pp = np.empty((T, d, d))
    Kg = np.zeros((T, d, m))
    Si = np.zeros((T, m, m))
    hld = np.zeros(T)
    steady = np.zeros(T, dtype=np.bool_)
    mean = m0.copy()
    P = P0.copy()
    s2 = sigma * sigma
    ll = 0.0
    run = 0
    for t in range(T):
        ph = t % p
        Ap = A[ph]
        mpt = Ap @ mean + b[t % pb]
        full = True
        for k in range(m):
            if np.isnan(y[t, k]):
                full = False
        v = np.zeros(m)
        for k in range(m):
            if not np.isnan(y[t, k]):
                v[k] = y[t, k] - c[k]
        v -= H @ mpt
        if full and run >= p:  # periodic steady state: the covariances and gain of one period before
            steady[t] = True
            Pp[t] = Pp[t - p]
            Pf[t] = Pf[t - p]
            Kg[t] = Kg[t - p]
            Si[t] = Si[t - p]
            hld[t] = hld[t - p]
        else:
            Ppt = Ap @ P @ Ap.T + s2 * LL[ph]
            Ppt = 0.5 * (Ppt + Ppt.T)
            obs = np.empty(m, dtype=np.int64)
            no = 0
            for k in range(m):
                if not np.isnan(y[t, k]):
                    obs[no] = k
                    no += 1
            Pft = Ppt.copy()
            if no > 0:
                Ho = np.empty((no, d))
                So = np.empty((no, no))
                for i in range(no):
                    Ho[i] = H[obs[i]]
                PHt = Ppt @ Ho.T
                So[:, :] = Ho @ PHt
                for i in range(no):
                    So[i, i] += s[obs[i]] ** 2
                Lo = np.linalg.cholesky(0.5 * (So + So.T))
                Soi = np.linalg.inv(So)
                Soi = 0.5 * (Soi + Soi.T)
                Ko = PHt @ Soi
                IKH = np.eye(d) - Ko @ Ho
                Ro = np.zeros((no, no))
                for i in range(no):
                    Ro[i, i] = s[obs[i]] ** 2
                Pft = IKH @ Ppt @ IKH.T + Ko @ Ro @ Ko.T
                Pft = 0.5 * (Pft + Pft.T)
                h = 0.0
                for i in range(no):
                    h += math.log(Lo[i, i])
                    Kg[t, :, obs[i]] = Ko[:, i]
                    for j in range(no):
                        Si[t, obs[i], obs[j]] = Soi[i, j]
                hld[t] = h
            Pp[t] = Ppt
            Pf[t] = Pft
            if full and t >= p and _rel_change(Pft, Pf[t - p]) <= tol and _rel_change(Ppt, Pp[t - p]) <= tol:
                run += 1
            else:
                run = 0
        nobs = 0
        for k in range(m):
            if not np.isnan(y[t, k]):
                nobs += 1
        if nobs > 0:
            ll += -0.5 * (nobs * _LOG_2PI + 2.0 * hld[t] + v @ Si[t] @ v)
        mean = mpt + Kg[t] @ v
        P = Pf[t]
        mf[t] = mean
        mp[t] = mpt
    # filtered draws, with the filtered square roots reused in the steady state
    filt = np.empty((T, n, d))
    Cf = np.empty((T, d, d))
    for t in range(T):
        if steady[t] and t >= p:
            Cf[t] = Cf[t - p]
        else:
            Cf[t] = _sqrt_psd(Pf[t])
        filt[t] = mf[t] + eps_f[t] @ Cf[t].T
    # backward sampling: z_t | z_{t+1} ~ N(m_t + G_t (z_{t+1} - m_{t+1}^-), P_t - G_t P_{t+1}^- G_t^T)
    smooth = np.empty((T, n, d))
    z = mf[T - 1] + eps_s[T - 1] @ Cf[T - 1].T
    smooth[T - 1] = z
    G = np.empty((T, d, d))
    Cc = np.empty((T, d, d))
    for t in range(T - 2, -1, -1):
        if t + 1 + p <= T - 1 and steady[t + p] and steady[t + 1 + p]:  # G_t, C_t those of t + p
            G[t] = G[t + p]
            Cc[t] = Cc[t + p]
        else:
            An = A[(t + 1) % p]
            G[t] = np.linalg.solve(Pp[t + 1], An @ Pf[t]).T  # P_t A^T (P^-_{t+1})^{-1}, P^- symmetric
            cond = Pf[t] - G[t] @ Pp[t + 1] @ G[t].T
            Cc[t] = _sqrt_psd(cond)
        z = mf[t] + (z - mp[t + 1]) @ G[t].T + eps_s[t] @ Cc[t].T
        smooth[t] = z
    return smooth, filt, mf, Pf, ll
