"""Independent numpy Kalman filter / RTS smoother used as the exact oracle in tests.

Textbook equations (Anderson & Moore 1979; Rauch, Tung & Striebel 1965), written directly in
numpy so they share no code with bayesbridge. Missing components (NaN) are dropped per step.
"""

from __future__ import annotations

import numpy as np


def kalman_oracle(A, Q, H, R, m0, P0, y):
    """Return (filtered means, filtered covs, smoothed means, smoothed covs, log-evidence)."""
    A, Q, H, R, m0, P0, y = (np.asarray(v, dtype=float) for v in (A, Q, H, R, m0, P0, y))
    T, d = y.shape[0], A.shape[0]
    mf, Pf, mp, Pp = np.zeros((T, d)), np.zeros((T, d, d)), np.zeros((T, d)), np.zeros((T, d, d))
    m, P, loglik = m0, P0, 0.0
    for t in range(T):
        m, P = A @ m, A @ P @ A.T + Q
        mp[t], Pp[t] = m, P
        obs = ~np.isnan(y[t])
        if obs.any():
            Ho, Ro = H[obs], R[np.ix_(obs, obs)]
            S = Ho @ P @ Ho.T + Ro
            e = y[t, obs] - Ho @ m
            K = np.linalg.solve(S, Ho @ P).T
            m = m + K @ e
            P = P - K @ S @ K.T
            _, logdet = np.linalg.slogdet(S)
            loglik += -0.5 * (e @ np.linalg.solve(S, e) + logdet + obs.sum() * np.log(2 * np.pi))
        mf[t], Pf[t] = m, P
    ms, Ps = mf.copy(), Pf.copy()
    for t in range(T - 2, -1, -1):
        G = np.linalg.solve(Pp[t + 1], A @ Pf[t]).T
        ms[t] = mf[t] + G @ (ms[t + 1] - mp[t + 1])
        Ps[t] = Pf[t] + G @ (Ps[t + 1] - Pp[t + 1]) @ G.T
    return mf, Pf, ms, Ps, loglik


def random_lg_problem(d=8, m=3, seed=0, obs_noise=0.5, rho=0.9):
    """A stable random linear-Gaussian system: (A, Q, H, R, m0, P0)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = rho * U
    B = rng.normal(size=(d, d)) * 0.3
    Q = B @ B.T / d + 0.1 * np.eye(d)
    H = rng.normal(size=(m, d)) / np.sqrt(d)
    R = np.diag(np.full(m, obs_noise**2))
    return A, Q, H, R, np.zeros(d), np.eye(d)


def kalman_loglik_grid(A, Q, H, R, m0, P0, y):
    """log p(y) of the Kalman filter for a batch of covariances: Q (*g, d, d) and R (*g, m, m)
    broadcast against each other -> (*g,). The same textbook recursions as :func:`kalman_oracle`,
    vectorised over the grid (quadrature over error scales); missing components dropped per step."""
    A, Q, H, R, m0, P0, y = (np.asarray(v, dtype=float) for v in (A, Q, H, R, m0, P0, y))
    grid = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2])
    d = A.shape[0]
    m = np.broadcast_to(m0, (*grid, d)).copy()
    P = np.broadcast_to(P0, (*grid, d, d)).copy()
    loglik = np.zeros(grid)
    for t in range(y.shape[0]):
        m, P = m @ A.T, A @ P @ A.T + Q
        obs = ~np.isnan(y[t])
        if obs.any():
            Ho, Ro = H[obs], R[..., obs, :][..., :, obs]
            S = Ho @ P @ Ho.T + Ro
            e = y[t, obs] - m @ Ho.T
            K = np.swapaxes(np.linalg.solve(S, Ho @ P), -1, -2)
            m = m + (K @ e[..., None])[..., 0]
            P = P - K @ S @ np.swapaxes(K, -1, -2)
            Se = np.linalg.solve(S, e[..., None])[..., 0]
            loglik += -0.5 * ((e * Se).sum(-1) + np.linalg.slogdet(S)[1] + obs.sum() * np.log(2 * np.pi))
    return loglik
