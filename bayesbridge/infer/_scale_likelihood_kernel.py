"""Compiled (numba) exact Kalman log-likelihood of an affine model and its gradient w.r.t. the error scales.

:class:`bayesbridge.infer.scale_likelihood.ScaleLikelihood` calls :func:`_loglik_and_grad`; the
maths (univariate sequential processing of the diagonal observation error, forward
sensitivities of the filter) is in that module's docstring.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__: list[str] = []

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True)
def _predict(A, b, LL, sigma, m, P, dm, dP, n_par, tmp, tmp_d):  # pragma: no cover - compiled
    """Prediction step in place: ``m <- A m + b``, ``P <- A P A^T + sigma^2 LL`` and, for the
    first ``n_par`` parameters (0: none), the sensitivities ``dm[j] <- A dm[j]``,
    ``dP[j] <- A dP[j] A^T`` (+ ``2 sigma LL`` for the last parameter, ``sigma``)."""
    d = m.shape[0]
    for i in range(d):
        acc = b[i]
        for k in range(d):
            acc += A[i, k] * m[k]
        tmp_d[i] = acc
    m[:] = tmp_d
    for j in range(n_par + 1):
        X = P if j == n_par else dP[j]
        if j < n_par:
            for i in range(d):
                acc = 0.0
                for k in range(d):
                    acc += A[i, k] * dm[j, k]
                tmp_d[i] = acc
            dm[j, :] = tmp_d
        # tmp = A X ; X = tmp A^T
        for i in range(d):
            for k in range(d):
                acc = 0.0
                for q in range(d):
                    acc += A[i, q] * X[q, k]
                tmp[i, k] = acc
        for i in range(d):
            for k in range(i, d):
                acc = 0.0
                for q in range(d):
                    acc += tmp[i, q] * A[k, q]
                X[i, k] = acc
                X[k, i] = acc
    s2 = sigma * sigma
    for i in range(d):
        for k in range(d):
            P[i, k] += s2 * LL[i, k]
    if n_par > 0:
        for i in range(d):
            for k in range(d):
                dP[n_par - 1, i, k] += 2.0 * sigma * LL[i, k]


@njit(cache=True)
def _predict_means(A, b, m, dm, n_par, tmp_d):  # pragma: no cover - compiled
    """``m <- A m + b`` and ``dm[j] <- A dm[j]`` for the first ``n_par`` parameters."""
    d = m.shape[0]
    for j in range(n_par + 1):
        for i in range(d):
            acc = b[i] if j == n_par else 0.0
            for k in range(d):
                acc += A[i, k] * (m[k] if j == n_par else dm[j, k])
            tmp_d[i] = acc
        if j == n_par:
            m[:] = tmp_d
        else:
            dm[j, :] = tmp_d


@njit(cache=True)
def _max_change(X, prev):  # pragma: no cover - compiled
    """``(max|X - prev|, max|X|)`` over all entries."""
    flat, pflat = X.ravel(), prev.ravel()
    big = 0.0
    diff = 0.0
    for i in range(flat.shape[0]):
        big = max(big, abs(flat[i]))
        diff = max(diff, abs(flat[i] - pflat[i]))
    return diff, big


@njit(cache=True)
def _loglik_and_grad(A, b, LL, H, c, m0, P0, y, s, sigma, with_grad, tol):  # pragma: no cover - compiled
    """``(log p(y), d log p / d(s_1..s_m, sigma))`` summed over the runs of ``y (B, T, m)``.

    ``A (nA, d, d)``, ``b (nT, d)``, ``LL (nA, d, d)`` with ``nA``, ``nT`` 1 (time-invariant) or
    ``T``; ``Q_t = sigma^2 LL_t``; ``R = diag(s^2)``; NaN in ``y`` marks a missing component.
    With time-invariant ``A`` and ``LL``, once two consecutive fully observed steps leave the
    filtered covariance and its sensitivities unchanged to ``tol`` (relative, element-wise), the
    gains and innovation variances are reused and only the means and their sensitivities are
    propagated, until a step with a missing component. Returns ``-inf`` and a zero gradient if
    an innovation variance is not positive.
    """
    B, T, n_obs = y.shape
    d = m0.shape[0]
    nA = A.shape[0]
    nT = b.shape[0]
    n_par = n_obs + 1
    n_sens = n_par if with_grad else 0
    m = np.empty(d)
    P = np.empty((d, d))
    dm = np.zeros((n_par, d))
    dP = np.zeros((n_par, d, d))
    P_prev = np.empty((d, d))
    dP_prev = np.empty((n_par, d, d))
    tmp = np.empty((d, d))
    tmp_d = np.empty(d)
    g = np.empty(d)
    dg = np.empty((n_par, d))
    dv = np.empty(n_par)
    df = np.empty(n_par)
    # steady-state cache per observed component: gain, innovation variance and their sensitivities
    K_c = np.empty((n_obs, d))
    f_c = np.empty(n_obs)
    dK_c = np.empty((n_obs, n_par, d))
    df_c = np.empty((n_obs, n_par))
    grad = np.zeros(n_par)
    ll = 0.0
    for r in range(B):
        m[:] = m0
        P[:, :] = P0
        dm[:, :] = 0.0
        dP[:, :, :] = 0.0
        steady = False
        prev_full = False
        for t in range(T):
            a = t if nA > 1 else 0
            bt = b[t if nT > 1 else 0]
            full = True
            for k in range(n_obs):
                if np.isnan(y[r, t, k]):
                    full = False
            if steady and full:
                _predict_means(A[a], bt, m, dm, n_sens, tmp_d)
                for k in range(n_obs):
                    v = y[r, t, k] - c[k]
                    for i in range(d):
                        v -= H[k, i] * m[i]
                    f = f_c[k]
                    ll -= 0.5 * (_LOG_2PI + math.log(f) + v * v / f)
                    for j in range(n_sens):
                        acc_v = 0.0
                        for i in range(d):
                            acc_v -= H[k, i] * dm[j, i]
                        grad[j] -= 0.5 * (df_c[k, j] / f + 2.0 * v * acc_v / f - v * v * df_c[k, j] / (f * f))
                        for i in range(d):
                            dm[j, i] += dK_c[k, j, i] * v + K_c[k, i] * acc_v
                    for i in range(d):
                        m[i] += K_c[k, i] * v
                continue
            steady = False
            _predict(A[a], bt, LL[a], sigma, m, P, dm, dP, n_sens, tmp, tmp_d)
            for k in range(n_obs):
                yk = y[r, t, k]
                if np.isnan(yk):
                    continue
                v = yk - c[k]
                for i in range(d):
                    v -= H[k, i] * m[i]
                f = s[k] * s[k]
                for i in range(d):
                    acc = 0.0
                    for q in range(d):
                        acc += P[i, q] * H[k, q]
                    g[i] = acc
                    f += H[k, i] * acc
                if not f > 0.0:
                    return -np.inf, np.zeros(n_par)
                ll -= 0.5 * (_LOG_2PI + math.log(f) + v * v / f)
                f_c[k] = f
                for j in range(n_sens):
                    acc_v = 0.0
                    acc_f = 2.0 * s[k] if j == k else 0.0
                    for i in range(d):
                        acc_v -= H[k, i] * dm[j, i]
                        acc = 0.0
                        for q in range(d):
                            acc += dP[j, i, q] * H[k, q]
                        dg[j, i] = acc
                        acc_f += H[k, i] * acc
                    dv[j] = acc_v
                    df[j] = acc_f
                    df_c[k, j] = acc_f
                    grad[j] -= 0.5 * (acc_f / f + 2.0 * v * acc_v / f - v * v * acc_f / (f * f))
                for j in range(n_sens):
                    # K = g / f, dK = dg / f - g df / f^2
                    for i in range(d):
                        dK = dg[j, i] / f - g[i] * df[j] / (f * f)
                        dK_c[k, j, i] = dK
                        dm[j, i] += dK * v + g[i] / f * dv[j]
                    for i in range(d):
                        for q in range(i, d):
                            val = (dg[j, i] * g[q] + g[i] * dg[j, q]) / f - g[i] * g[q] * df[j] / (f * f)
                            dP[j, i, q] -= val
                            if q != i:
                                dP[j, q, i] -= val
                for i in range(d):
                    K_c[k, i] = g[i] / f
                    m[i] += g[i] / f * v
                for i in range(d):
                    for q in range(i, d):
                        val = 0.5 * (P[i, q] + P[q, i]) - g[i] * g[q] / f
                        P[i, q] = val
                        P[q, i] = val
            if nA == 1 and full and tol > 0.0:
                if prev_full:
                    diff, big = _max_change(P, P_prev)
                    steady = diff <= tol * big
                    if steady and n_sens > 0:
                        diff, big = _max_change(dP, dP_prev)
                        steady = diff <= tol * big
                P_prev[:, :] = P
                dP_prev[:, :, :] = dP
                prev_full = True
            else:
                prev_full = False
    return ll, grad


@njit(cache=True)
def _loglik_and_grad_batch(A, b, LL, H, c, m0, P0, y, S, SIG, with_grad, tol):  # pragma: no cover - compiled
    """:func:`_loglik_and_grad` at ``K`` scale pairs ``S (K, m)``, ``SIG (K,)``: ``(K,)``, ``(K, m + 1)``."""
    K = S.shape[0]
    values = np.empty(K)
    grads = np.zeros((K, S.shape[1] + 1))
    for k in range(K):
        values[k], grads[k] = _loglik_and_grad(A, b, LL, H, c, m0, P0, y, np.ascontiguousarray(S[k]), SIG[k],
                                               with_grad, tol)
    return values, grads
