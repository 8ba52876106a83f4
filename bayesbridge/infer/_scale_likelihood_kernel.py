"""Compiled (numba) exact Kalman log-likelihood of an affine model and its gradient w.r.t. the error scales.

:class:`bayesbridge.infer.scale_likelihood.ScaleLikelihood` calls :func:`_loglik_and_grad` (and
:func:`_loglik_and_grad_batch`); the maths (univariate sequential processing of the diagonal
observation error, forward sensitivities of the filter, reuse of the periodic steady state) is in
that module's docstring.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__: list[str] = []

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True)
def _predict(A, b, LL, sigma, m, P, dm, dP, n_par, tmp, tmp_d):  # pragma: no cover - compiled
    """Prediction step in place: ``m <- A m + b``, ``P <- A P A^T + sigma^2 LL`` and, for the
    first ``n_par`` parameters (0: none), the sensitivities ``dm[j] <- A dm[j]``,
    ``dP[j] <- A dP[j] A^T`` (+ ``2 sigma LL`` for the last parameter, ``sigma``). Plain loops:
    faster than BLAS calls for the small ``d`` of latent spaces."""
    d = m.shape[0]
    _predict_means(A, b, m, dm, n_par, tmp_d)
    for j in range(n_par + 1):
        X = P if j == n_par else dP[j]
        for i in range(d):  # tmp = A X
            for k in range(d):
                tmp[i, k] = 0.0
            for q in range(d):
                a = A[i, q]
                for k in range(d):
                    tmp[i, k] += a * X[q, k]
        for i in range(d):  # X = tmp A^T
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

    ``A (p, d, d)``, ``LL (p, d, d)`` repeat with period ``p`` (1: time-invariant; ``T``: no
    repetition), ``b (nT, d)`` with ``nT`` 1 or ``T``; ``Q_t = sigma^2 LL_t``; ``R = diag(s^2)``;
    NaN in ``y`` marks a missing component. With ``p < T``, once the filtered covariance and its
    sensitivities after every phase of a cycle of fully observed steps agree to ``tol``
    (relative, element-wise) with those of the cycle before, the gains and innovation variances of
    each phase are reused and only the means and their sensitivities are propagated, until a step
    with a missing component. Returns ``-inf`` and a zero gradient if an innovation variance is
    not positive.
    """
    B, T, n_obs = y.shape
    d = m0.shape[0]
    p = A.shape[0]
    nT = b.shape[0]
    n_par = n_obs + 1
    n_sens = n_par if with_grad else 0
    use_steady = tol > 0.0 and p < T
    m = np.empty(d)
    P = np.empty((d, d))
    dm = np.zeros((n_par, d))
    dP = np.zeros((n_par, d, d))
    P_ph = np.empty((p, d, d))  # filtered covariance (and sensitivities) after each phase
    dP_ph = np.empty((p, n_par, d, d))
    tmp = np.empty((d, d))
    tmp_d = np.empty(d)
    g = np.empty(d)
    dg = np.empty((n_par, d))
    dv = np.empty(n_par)
    df = np.empty(n_par)
    # per phase and observed component: gain, innovation variance and their sensitivities
    K_c = np.empty((p, n_obs, d))
    f_c = np.empty((p, n_obs))
    dK_c = np.empty((p, n_obs, n_par, d))
    df_c = np.empty((p, n_obs, n_par))
    grad = np.zeros(n_par)
    ll = 0.0
    for r in range(B):
        m[:] = m0
        P[:, :] = P0
        dm[:, :] = 0.0
        dP[:, :, :] = 0.0
        steady = False
        run_full = 0  # consecutive fully observed steps
        run_conv = 0  # consecutive fully observed steps that repeated the previous cycle
        for t in range(T):
            ph = t % p
            bt = b[t if nT > 1 else 0]
            full = True
            for k in range(n_obs):
                if np.isnan(y[r, t, k]):
                    full = False
            if steady and full:
                _predict_means(A[ph], bt, m, dm, n_sens, tmp_d)
                for k in range(n_obs):
                    v = y[r, t, k] - c[k]
                    for i in range(d):
                        v -= H[k, i] * m[i]
                    f = f_c[ph, k]
                    ll -= 0.5 * (_LOG_2PI + math.log(f) + v * v / f)
                    for j in range(n_sens):
                        acc_v = 0.0
                        for i in range(d):
                            acc_v -= H[k, i] * dm[j, i]
                        grad[j] -= 0.5 * (df_c[ph, k, j] / f + 2.0 * v * acc_v / f - v * v * df_c[ph, k, j] / (f * f))
                        for i in range(d):
                            dm[j, i] += dK_c[ph, k, j, i] * v + K_c[ph, k, i] * acc_v
                    for i in range(d):
                        m[i] += K_c[ph, k, i] * v
                continue
            if steady:  # leave the steady state: the covariances after the previous phase
                prev = (t - 1) % p
                P[:, :] = P_ph[prev]
                dP[:, :, :] = dP_ph[prev]
                steady = False
            _predict(A[ph], bt, LL[ph], sigma, m, P, dm, dP, n_sens, tmp, tmp_d)
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
                f_c[ph, k] = f
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
                    df_c[ph, k, j] = acc_f
                    grad[j] -= 0.5 * (acc_f / f + 2.0 * v * acc_v / f - v * v * acc_f / (f * f))
                for j in range(n_sens):
                    # K = g / f, dK = dg / f - g df / f^2
                    for i in range(d):
                        dK = dg[j, i] / f - g[i] * df[j] / (f * f)
                        dK_c[ph, k, j, i] = dK
                        dm[j, i] += dK * v + g[i] / f * dv[j]
                    for i in range(d):
                        for q in range(i, d):
                            val = (dg[j, i] * g[q] + g[i] * dg[j, q]) / f - g[i] * g[q] * df[j] / (f * f)
                            dP[j, i, q] -= val
                            if q != i:
                                dP[j, q, i] -= val
                for i in range(d):
                    K_c[ph, k, i] = g[i] / f
                    m[i] += g[i] / f * v
                for i in range(d):
                    for q in range(i, d):
                        val = 0.5 * (P[i, q] + P[q, i]) - g[i] * g[q] / f
                        P[i, q] = val
                        P[q, i] = val
            if not (use_steady and full):
                run_full = 0
                run_conv = 0
                continue
            same = False
            if run_full >= p:  # phase ph was stored one cycle ago, from a fully observed step
                diff, big = _max_change(P, P_ph[ph])
                same = diff <= tol * big
                if same and n_sens > 0:
                    diff, big = _max_change(dP[:n_sens], dP_ph[ph, :n_sens])
                    same = diff <= tol * big
            run_conv = run_conv + 1 if same else 0
            P_ph[ph, :, :] = P
            dP_ph[ph, :, :, :] = dP
            run_full += 1
            steady = run_conv >= p
    return ll, grad


@njit(cache=True, parallel=True)
def _loglik_and_grad_batch(A, b, LL, H, c, m0, P0, y, S, SIG, with_grad, tol):  # pragma: no cover - compiled
    """:func:`_loglik_and_grad` at ``K`` scale pairs ``S (K, m)``, ``SIG (K,)``: ``(K,)``, ``(K, m + 1)``.
    The points are independent passes, spread over numba's threads (``prange``)."""
    K = S.shape[0]
    values = np.empty(K)
    grads = np.zeros((K, S.shape[1] + 1))
    for k in prange(K):
        values[k], grads[k] = _loglik_and_grad(A, b, LL, H, c, m0, P0, y, np.ascontiguousarray(S[k]), SIG[k],
                                               with_grad, tol)
    return values, grads
