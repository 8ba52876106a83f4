"""Compiled (numba) kernels of the exact Kalman filter's steady-state engine.

:func:`bayesbridge.infer.kalman.steady_state_smoother` (and ``kalman.run``'s default engine for
time-invariant models) calls them: :func:`_cov_pass` runs the Riccati recursion of one
missing-value pattern and stops recomputing once the filtered covariance has converged
(``tol``), :func:`_smooth_cov_pass` does the same for the RTS smoother gain and covariance,
and :func:`_mean_pass` / :func:`_smooth_mean_pass` propagate the means of every run with the
stored (unique) covariances and gains. See ``steady_state_smoother`` for the maths and the
references (Anderson & Moore 1979; statsmodels' converged-covariance option).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__: list[str] = []


@njit(cache=True)
def _sym_update(out, base, X, prev, ref):  # pragma: no cover - compiled
    """``out = base + (X + X^T) / 2``; returns ``max|out|``, ``max|out - prev|``, ``max|out - ref|``
    (``prev``/``ref`` are skipped when they have no rows)."""
    d = out.shape[0]
    big = 0.0
    dp = 0.0
    dr = 0.0
    use_prev = prev.shape[0] > 0
    use_ref = ref.shape[0] > 0
    for i in range(d):
        for j in range(i, d):
            v = 0.5 * (base[i, j] + base[j, i] + X[i, j] + X[j, i])
            out[i, j] = v
            out[j, i] = v
            big = max(big, abs(v))
            if use_prev:
                dp = max(dp, abs(v - prev[i, j]), abs(v - prev[j, i]))
            if use_ref:
                dr = max(dr, abs(v - ref[i, j]), abs(v - ref[j, i]))
    return big, dp, dr


@njit(cache=True)
def _cov_pass(A, Q, H, R, P0, obs, tol):  # pragma: no cover - compiled
    """Filter covariances for one missing-value pattern ``obs (T, m)``, stored once per distinct value.

    Returns ``n`` (number of covariance updates), ``idx (T,)`` (entry of each step) and the
    entries ``Pp, Pf (n, d, d)``, ``KT (n, m, d)`` (transposed gain), ``Li (n, m, m)`` (inverse
    Cholesky factor of ``S``), ``hld (n,)`` (half log-determinant of ``S``), ``Sd (n, m)``.
    """
    T, m = obs.shape
    d = A.shape[0]
    AT = np.ascontiguousarray(A.T)
    Pp_u = np.empty((T, d, d))
    Pf_u = np.empty((T, d, d))
    KT_u = np.empty((T, m, d))
    Li_u = np.empty((T, m, m))
    hld_u = np.empty(T)
    Sd_u = np.empty((T, m))
    idx = np.empty(T, np.int64)
    AP = np.empty((d, d))
    APA = np.empty((d, d))
    PHt = np.empty((d, m))
    HT = np.empty((d, m))
    HPH = np.empty((m, m))
    S = np.empty((m, m))
    KT = np.empty((m, d))
    KSK = np.empty((d, d))
    none = np.empty((0, 0))
    P = np.ascontiguousarray(P0)
    n = 0
    steady = -1  # entry of the converged covariance, once found
    active = False  # whether the recursion currently sits at the steady state
    prev_full = False
    for t in range(T):
        full = True
        for k in range(m):
            if not obs[t, k]:
                full = False
        if active and full:
            idx[t] = steady
            continue
        active = False
        Pp = Pp_u[n]
        np.dot(A, P, AP)
        np.dot(AP, AT, APA)
        _sym_update(Pp, Q, APA, none, none)
        for i in range(d):  # H^T with rows of missing components zeroed
            for k in range(m):
                HT[i, k] = H[k, i] if obs[t, k] else 0.0
        np.dot(Pp, HT, PHt)
        np.dot(np.ascontiguousarray(HT.T), PHt, HPH)
        for k in range(m):
            for j in range(m):
                if obs[t, k] and obs[t, j]:
                    S[k, j] = 0.5 * (HPH[k, j] + HPH[j, k] + R[k, j] + R[j, k])
                else:
                    S[k, j] = 1.0 if k == j else 0.0
        L = np.linalg.cholesky(S)
        Li = np.linalg.inv(L)
        np.dot(np.ascontiguousarray(Li.T) @ Li, np.ascontiguousarray(PHt.T), KT)
        # P = P^- - K S K^T = P^- - (P^- H^T) K^T: O(d^2 m) instead of the Joseph form's O(d^3)
        np.dot(PHt, KT, KSK)
        KSK *= -1.0
        big, dp, dr = _sym_update(Pf_u[n], Pp, KSK, P if prev_full else none, Pf_u[steady] if steady >= 0 else none)
        KT_u[n] = KT
        Li_u[n] = Li
        hld = 0.0
        for k in range(m):
            hld += np.log(L[k, k])
            Sd_u[n, k] = S[k, k]
        hld_u[n] = hld
        idx[t] = n
        if full and tol > 0.0:
            if (steady >= 0 and dr <= tol * big) or (prev_full and dp <= tol * big):
                active = True  # converged (or back at the steady state after a gap)
                steady = n
        prev_full = full
        P = Pf_u[n]
        n += 1
    return n, idx, Pp_u[:n].copy(), Pf_u[:n].copy(), KT_u[:n].copy(), Li_u[:n].copy(), hld_u[:n].copy(), Sd_u[:n].copy()


@njit(cache=True)
def _smooth_cov_pass(A, idx, Pp_u, Pf_u, tol):  # pragma: no cover - compiled
    """RTS gains and smoothed covariances for one pattern, stored once per distinct value.

    Returns ``n_ps`` (smoothed-covariance updates), ``gidx (T - 1,)``, ``G (ng, d, d)``,
    ``sidx (T,)``, ``Ps (n_ps, d, d)``.
    """
    T = idx.shape[0]
    d = A.shape[0]
    G_u = np.empty((max(T - 1, 1), d, d))
    gidx = np.empty(max(T - 1, 0), np.int64)
    Ps_u = np.empty((T, d, d))
    sidx = np.empty(T, np.int64)
    X = np.empty((d, d))
    GX = np.empty((d, d))
    GXG = np.empty((d, d))
    AP = np.empty((d, d))
    none = np.empty((0, 0))
    Ps_u[0] = Pf_u[idx[T - 1]]
    Ps = Ps_u[0]
    sidx[T - 1] = 0
    ns = 1
    ng = 0
    prev_a = -1
    prev_b = -1
    settled = False
    G = np.zeros((d, d))
    GT = np.zeros((d, d))
    for t in range(T - 2, -1, -1):
        a = idx[t]
        b = idx[t + 1]
        same = a == prev_a and b == prev_b
        if not same:
            # G_t = P_t A^T (P_{t+1}^-)^{-1} = ((P_{t+1}^-)^{-1} A P_t)^T
            np.dot(A, Pf_u[a], AP)
            GT = np.ascontiguousarray(np.linalg.solve(Pp_u[b], AP))
            G = G_u[ng]
            G[:, :] = GT.T
            ng += 1
            settled = False
        gidx[t] = ng - 1
        if settled:
            sidx[t] = sidx[t + 1]
            continue
        Ppb = Pp_u[b]
        for i in range(d):
            for j in range(d):
                X[i, j] = Ps[i, j] - Ppb[i, j]
        np.dot(G, X, GX)
        np.dot(GX, GT, GXG)
        big, dp, _ = _sym_update(Ps_u[ns], Pf_u[a], GXG, Ps if same else none, none)
        Ps = Ps_u[ns]
        sidx[t] = ns
        ns += 1
        if same and tol > 0.0 and dp <= tol * big:
            settled = True
        prev_a = a
        prev_b = b
    return ns, gidx, G_u[:ng].copy(), sidx, Ps_u[:ns].copy()


@njit(cache=True)
def _mean_pass(A, H, b, c, m0, y, run_idx, KT_u, Li_u, mf, mp, innov, nis):  # pragma: no cover - compiled
    """Filtered/predicted means, innovations and NIS of every run ``y (B, T, m)`` given its gains."""
    B, T, m = y.shape
    d = A.shape[0]
    v = np.empty(m)
    mean = np.empty(d)
    for r in range(B):
        mean[:] = m0
        for t in range(T):
            j = run_idx[r, t]
            for i in range(d):
                s = b[t, i]
                for k in range(d):
                    s += A[i, k] * mean[k]
                mp[r, t, i] = s
            for k in range(m):
                yk = y[r, t, k]
                if np.isnan(yk):
                    v[k] = 0.0
                    innov[r, t, k] = np.nan
                else:
                    s = yk - c[k]
                    for i in range(d):
                        s -= H[k, i] * mp[r, t, i]
                    v[k] = s
                    innov[r, t, k] = s
            for i in range(d):
                s = mp[r, t, i]
                for k in range(m):
                    s += KT_u[j, k, i] * v[k]
                mean[i] = s
                mf[r, t, i] = s
            q = 0.0
            for k in range(m):
                w = 0.0
                for i in range(k + 1):
                    w += Li_u[j, k, i] * v[i]
                q += w * w
            nis[r, t] = q


@njit(cache=True)
def _smooth_mean_pass(mf, mp, run_gidx, G_u, ms):  # pragma: no cover - compiled
    """RTS smoothed means ``ms (B, T, d)`` from filtered/predicted means and gains."""
    B, T, d = mf.shape
    diff = np.empty(d)
    for r in range(B):
        for i in range(d):
            ms[r, T - 1, i] = mf[r, T - 1, i]
        for t in range(T - 2, -1, -1):
            j = run_gidx[r, t]
            for i in range(d):
                diff[i] = ms[r, t + 1, i] - mp[r, t + 1, i]
            for i in range(d):
                s = mf[r, t, i]
                for k in range(d):
                    s += G_u[j, i, k] * diff[k]
                ms[r, t, i] = s
