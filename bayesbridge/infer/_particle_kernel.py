"""Compiled (numba) pieces of the particle filter: weighting, resampling and the bootstrap step.

:func:`_weigh_step` is the tail of a step of the torch loop of
:func:`bayesbridge.infer.particle.run` (normalisation, log-evidence increment, ESS, filtered
moments and systematic resampling); :func:`_bootstrap_block` runs whole steps of the bootstrap
filter of a linear model ``z_t = A z_{t-1} + b + L_Q eps_t``, ``y_t = H z_t + c + v_t``. Both
follow the algorithm of the :mod:`~bayesbridge.infer.particle` docstring and consume the same
random numbers as the torch loop, so the routes agree to rounding.

The bootstrap kernel keeps the particles component-major, ``x (d, N)``, so that every pass is a
long contiguous loop over particles that LLVM vectorises, and the three dense products
(``A x``, ``H x`` and the weighted covariance) go to BLAS. Per step and run:

1. ``ax = A x_{t-1}`` (before resampling), then ``x_t[:, i] = ax[:, a_i] + b + L_Q eps_i`` with
   ``a_i`` the parent of particle ``i`` -- gathering the propagated parents costs one pass;
2. ``h = H x_t``; predicted-observation moments under the parents' weights;
3. ``log alpha_i = -|W (y - h_i - c)|^2 / 2 - const`` on the observed components (``W`` the
   whitening matrix of the step, see ``_particle_linear.whitening_table``), or the Student-t density;
4. weights by :func:`_exp_shifted`, log-evidence increment, ESS, weighted mean and covariance;
5. systematic resampling (:func:`_ancestors`) on the ESS threshold.

Fastmath without the no-NaN/no-inf flags, so divergence still shows as NaN/inf.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__: list[str] = []

_jit = numba.njit(cache=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

# exp(v) = 2^k exp(r), k = round(v / ln 2), r = v - k ln 2 (Cody-Waite split of ln 2), exp(r)
# by its Taylor series to degree 13 (|r| <= ln(2) / 2: truncation below 1e-17)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -708.0  # below, exp underflows towards subnormals: the weight is taken as 0
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = (1.0 / math.factorial(n) for n in range(2, 14))


@_jit
def _exp_shifted(tot, mx, w, bits):  # pragma: no cover - compiled
    """``w[i] = exp(tot[i] - mx)`` for ``tot (N,) <= mx``; returns ``sum(w)``.

    A branch-free exp that LLVM vectorises (the libm call does not vectorise, and was a sixth of
    a bootstrap step at ``N = 1000``): relative error below ``3e-14``, ``0`` below
    ``exp(-708)``. ``bits`` (N,) int64 work buffer (the ``2^k`` factors). ``tot[i] - mx`` NaN
    (every log weight ``-inf``) gives NaN weights, which the divergence check reports.
    """
    n = tot.shape[0]
    for i in range(n):
        v = tot[i] - mx
        v = v if v > _EXP_MIN else _EXP_MIN  # NaN too: k stays finite
        k = math.floor(v * _LOG2E + 0.5)
        r = (v - k * _LN2_HI) - k * _LN2_LO
        p = _C13
        p = p * r + _C12
        p = p * r + _C11
        p = p * r + _C10
        p = p * r + _C9
        p = p * r + _C8
        p = p * r + _C7
        p = p * r + _C6
        p = p * r + _C5
        p = p * r + _C4
        p = p * r + _C3
        p = p * r + _C2
        p = p * r + 1.0
        w[i] = p * r + 1.0
        bits[i] = (np.int64(k) + 1023) << 52
    scale = bits.view(np.float64)
    total = 0.0
    for i in range(n):
        v = tot[i] - mx
        e = w[i] * scale[i] if v > _EXP_MIN else (0.0 if v <= _EXP_MIN else v)  # keeps NaN
        w[i] = e
        total += e
    return total


@_jit
def _normalise(tot, x, logw_t, w, mu, cov, dev, wdev, bits):  # pragma: no cover - compiled
    """Normalise the log weights ``tot`` (N,) of particles ``x`` (d, N) (component-major) of one
    run and step.

    Writes ``logw_t`` (N,) (normalised log weights), ``w`` (N,) (weights), ``mu`` (d,) and
    ``cov`` (d, d) (weighted mean and covariance; ``dev``, ``wdev`` (d, N) and ``bits`` (N,)
    are work buffers); returns ``(log sum exp tot, sum w^2)``.
    """
    d, N = x.shape
    mx = -math.inf
    for i in range(N):
        if tot[i] > mx:
            mx = tot[i]
    ssum = _exp_shifted(tot, mx, w, bits)
    ev = mx + math.log(ssum) if mx > -math.inf else mx  # every weight zero: -inf, as logsumexp
    inv_sum = 1.0 / ssum
    s2 = 0.0
    for i in range(N):
        wi = w[i] * inv_sum
        w[i] = wi
        logw_t[i] = tot[i] - ev
        s2 += wi * wi
    for q in range(d):
        xq, dq, wq = x[q], dev[q], wdev[q]
        acc = 0.0
        for i in range(N):
            acc += w[i] * xq[i]
        mu[q] = acc
        for i in range(N):
            dv = xq[i] - acc
            dq[i] = dv
            wq[i] = w[i] * dv
    np.dot(wdev, dev.T, cov)
    for q in range(d):  # exactly symmetric
        for s in range(q + 1, d):
            v = 0.5 * (cov[q, s] + cov[s, q])
            cov[q, s] = v
            cov[s, q] = v
    return ev, s2


@_jit
def _ancestors(need, w, logw_t, u, anc, lwp, wp):  # pragma: no cover - compiled
    """Parents ``anc`` (N,) and their log weights / weights ``lwp``, ``wp`` (N,) for the next step.

    Systematic resampling (points ``(u + i) / N`` merged with the running sum of ``w``: O(N))
    when ``need``; otherwise every particle is its own parent and keeps its weight.
    """
    N = w.shape[0]
    if need:
        total = 0.0
        for j in range(N):
            total += w[j]
        step = total / N
        j = 0
        cum = w[0]
        for i in range(N):
            p = (u + i) * step
            while cum < p and j < N - 1:
                j += 1
                cum += w[j]
            anc[i] = j
            lwp[i] = -math.log(N)
            wp[i] = 1.0 / N
    else:
        for i in range(N):
            anc[i] = i
            lwp[i] = logw_t[i]
            wp[i] = w[i]


@_jit
def _weigh_step(t, ts, last, u, incr, pred, particles, logw, inv_ess, step_ev, pmean, psq, fmean, fcov, inv_ess_min,
                w, anc, lwp, wp, zbuf, dev, wdev):  # pragma: no cover - compiled
    """Tail of a torch-loop step ``t`` for every run: weights, moments, ESS, resampling.

    incr (B, N) log-likelihood increments; pred (B, N, m) predicted observations; particles
    (B, T, N, d) with step ``t`` filled; lwp, wp (B, N) log weights / weights of step ``t-1``
    after resampling (updated for step ``t+1``); u (B,) uniforms; zbuf (B, N, d) receives the
    parents of step ``t+1`` (unless ``last``). Writes logw[:, t], inv_ess, step_ev,
    pmean, psq, fmean, fcov at ``t`` (particles and logw at slot ``ts``). dev, wdev (d, N) are
    work buffers of :func:`_normalise`.
    """
    B, N = incr.shape
    m = pred.shape[2]
    d = particles.shape[3]
    tot = np.empty(N)
    bits = np.empty(N, np.int64)
    xcm = np.empty((d, N))
    for bb in range(B):
        for q in range(m):
            a1 = 0.0
            a2 = 0.0
            for i in range(N):
                h = pred[bb, i, q]
                a1 += wp[bb, i] * h
                a2 += wp[bb, i] * h * h
            pmean[bb, t, q] = a1
            psq[bb, t, q] = a2
        for i in range(N):
            tot[i] = lwp[bb, i] + incr[bb, i]
        x = particles[bb, ts]
        for i in range(N):
            for q in range(d):
                xcm[q, i] = x[i, q]
        ev, s2 = _normalise(tot, xcm, logw[bb, ts], w[bb], fmean[bb, t], fcov[bb, t], dev, wdev, bits)
        step_ev[bb, t] = ev
        inv_ess[bb, t] = s2
        if not last:
            _ancestors(s2 > inv_ess_min, w[bb], logw[bb, ts], u[bb], anc[bb], lwp[bb], wp[bb])
            for i in range(N):
                for q in range(d):
                    zbuf[bb, i, q] = x[anc[bb, i], q]


@_jit
def _bootstrap_block(t0, T, ring, noise, uni, A, b, LQ, diag_q, H, c, y0, mask, table, index, const, student, diag_r,
                     inv_scale, lc, df, inv_ess_min, z0, w, anc, lwp, wp,
                     particles, logw, inv_ess, step_ev, pmean, psq, fmean, fcov):  # pragma: no cover - compiled
    """Steps ``t0 .. t0 + K - 1`` of the bootstrap filter of a linear model, every run.

    noise (K, B, d, N) float32 standard normals (component-major); uni (K, B) resampling
    uniforms (``uni[k]`` resamples after step ``t0 + k``); A (d, d), b (d,), LQ (d, d) the
    transition and a square root of its covariance (``diag_q``: diagonal); H (m, d), c (m,);
    y0, mask (B, T, m); table/index/const from ``_particle_linear.whitening_table`` (``diag_r``: ``R``
    diagonal), or for the Student-t error (``student``) ``inv_scale`` and ``lc`` (m,) and ``df``;
    z0 (B, N, d) the initial particles; w, anc, lwp, wp (B, N) carried between blocks (see
    :func:`_weigh_step`). Outputs: particles (B, ring, N, d) and logw (B, ring, N) of step ``t``
    in slot ``t % ring`` (``ring == T``: every step written; otherwise only each block's last,
    which the next block starts from), inv_ess, step_ev (B, T), pmean, psq (B, T, m), fmean
    (B, T, d), fcov (B, T, d, d). Returns the first step whose evidence increment or weighted
    mean is not finite (the block stops there), or -1.
    """
    K, B, d, N = noise.shape
    m = H.shape[0]
    stored = ring == T
    x = np.empty((d, N))  # particles of the step
    ax = np.empty((d, N))  # A x of the previous step
    hx = np.empty((m, N))
    dev = np.empty((d, N))
    wdev = np.empty((d, N))
    tot = np.empty(N)
    bits = np.empty(N, np.int64)
    lq = np.empty(d)
    for q in range(d):
        lq[q] = LQ[q, q]
    yc = np.empty(m)
    on = np.empty(m)
    Wt = np.empty((m, m))
    half_df1 = 0.5 * (df + 1.0)
    for bb in range(B):
        src = z0[bb] if t0 == 0 else particles[bb, (t0 - 1) % ring]
        for q in range(d):
            for i in range(N):
                x[q, i] = src[i, q]
        parent, lw, wpb, wb = anc[bb], lwp[bb], wp[bb], w[bb]
        for k in range(K):
            t = t0 + k
            ts = t % ring
            eps = noise[k, bb]
            w_ix = index[bb, t]
            for j in range(m):  # this step's observation (minus c), mask and whitening matrix
                on[j] = 1.0 if mask[bb, t, j] else 0.0
                yc[j] = y0[bb, t, j] - c[j] if mask[bb, t, j] else 0.0
                for s in range(m):
                    Wt[j, s] = table[w_ix, j, s]
            # 1. x_t[:, i] = (A x_{t-1})[:, parent_i] + b + L_Q eps_i
            np.dot(A, x, ax)
            for q in range(d):
                xq, axq, bq = x[q], ax[q], b[q]
                if diag_q:
                    eq, lv = eps[q], lq[q]
                    for i in range(N):
                        xq[i] = axq[parent[i]] + bq + lv * eq[i]
                else:
                    for i in range(N):
                        xq[i] = axq[parent[i]] + bq
                    for s in range(d):
                        lv = LQ[q, s]
                        if lv != 0.0:
                            es = eps[s]
                            for i in range(N):
                                xq[i] += lv * es[i]
            # 2. h = H x_t (c added to the moments) and its moments under the parents' weights
            np.dot(H, x, hx)
            for j in range(m):
                hj = hx[j]
                a1 = 0.0
                a2 = 0.0
                for i in range(N):
                    a1 += wpb[i] * hj[i]
                    a2 += wpb[i] * hj[i] * hj[i]
                pmean[bb, t, j] = a1 + c[j]
                psq[bb, t, j] = a2 + 2.0 * c[j] * a1 + c[j] * c[j]
            # 3. log weights: parents' log weights plus the log-likelihood of the step
            cst = const[bb, t]
            for i in range(N):
                tot[i] = lw[i] - cst
            if student:
                for j in range(m):
                    if on[j] > 0.0:
                        hj, yj, iv, lcj = hx[j], yc[j], inv_scale[j], lc[j]
                        for i in range(N):
                            u = (yj - hj[i]) * iv
                            tot[i] += lcj - half_df1 * math.log1p(u * u / df)
            elif diag_r:
                for j in range(m):
                    if on[j] > 0.0:
                        hj, yj, wj = hx[j], yc[j], Wt[j, j]
                        for i in range(N):
                            u = wj * (yj - hj[i])
                            tot[i] -= 0.5 * u * u
            else:
                for i in range(N):
                    for j in range(m):
                        u = 0.0
                        for s in range(j + 1):
                            u += Wt[j, s] * (yc[s] - hx[s, i]) * on[s]
                        tot[i] -= 0.5 * u * u
            # 4. normalise: evidence increment, ESS, weighted mean and covariance
            lwt, mu = logw[bb, ts], fmean[bb, t]
            ev, s2 = _normalise(tot, x, lwt, wb, mu, fcov[bb, t], dev, wdev, bits)
            finite = math.isfinite(ev)
            for q in range(d):
                finite = finite and math.isfinite(mu[q])
            step_ev[bb, t] = ev
            inv_ess[bb, t] = s2
            if stored or k == K - 1 or not finite:
                out = particles[bb, ts]
                for q in range(d):
                    for i in range(N):
                        out[i, q] = x[q, i]
            if not finite:
                return t
            # 5. parents of the next step
            if t < T - 1:
                _ancestors(s2 > inv_ess_min, wb, lwt, uni[k, bb], parent, lw, wpb)
    return -1
