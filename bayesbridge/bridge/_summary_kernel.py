"""Compiled (numba) reduction of a decoded block: summaries over draws and per-draw moments.

One pass over a block ``x (k, n, P)`` of decoded draws (``k`` steps, ``n`` draws, ``P``
points), parallel over steps, always reading whole rows ``x[t, i, :]`` so that every loop runs
over contiguous points and vectorises:

1. adds the representation error of each draw in place, ``x[t, i, p] += R[(o_i + t0 + t) mod
   n_R, p]`` (the codec's residual series shifted by the draw's offset ``o_i``; skipped when
   ``R`` is empty);
2. per step and point, the mean and the standard deviation (``ddof = 1``) over draws in float64;
3. per step and point, the order statistics of ranks ``ks`` from a bitonic sorting network
   (Batcher 1968) over the draws, padded with ``+inf`` to a power of two and applied to tiles of
   points at once: each compare-exchange is an elementwise min/max of two rows, so the network
   costs ``O(n log^2 n)`` vector operations per tile instead of one scalar sort per point;
4. per requested draw (``moment_draws``, repeats allowed) and point, the power sums
   :math:`\\sum_t x`, :math:`\\sum_t x^2`, :math:`\\sum_t x^3` in float64, from which the
   standard-deviation and skewness maps of whole trajectories follow without decoding them again.

Sorting is exact, and the caller interpolates the order statistics into quantiles with
``torch.lerp`` exactly as :func:`torch.quantile` does, so the quantiles are bit-for-bit those of
``torch.quantile``. A point whose draws hold a NaN gets NaN statistics, as ``torch.quantile``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__: list[str] = []

_TILE = 64  # points per tile of the sorting network: (128 draws x 64 points) float32 = 32 KiB, in L1


# The compare-exchange loops are separate (not inlined) functions of two rows: only then does
# LLVM vectorise them (measured: 10x faster than the same loop inside the network's loop nest).
@numba.njit(cache=True, fastmath=True, boundscheck=False)
def _ascend(a, b):
    """``a, b = min(a, b), max(a, b)`` elementwise, in place (rows of equal length, no NaN)."""
    for q in range(a.shape[0]):
        u = a[q]
        v = b[q]
        a[q] = min(u, v)
        b[q] = max(u, v)


@numba.njit(cache=True, fastmath=True, boundscheck=False)
def _descend(a, b):
    """``a, b = max(a, b), min(a, b)`` elementwise, in place (rows of equal length, no NaN)."""
    for q in range(a.shape[0]):
        u = a[q]
        v = b[q]
        a[q] = max(u, v)
        b[q] = min(u, v)


@numba.njit(cache=True)
def _bitonic(y):
    """Sort the columns of ``y (n, w)`` ascending in place; ``n`` is a power of two, no NaN."""
    n = y.shape[0]
    size = 2
    while size <= n:
        stride = size // 2
        while stride >= 1:
            for i in range(n):
                partner = i ^ stride
                if partner > i:
                    if (i & size) == 0:
                        _ascend(y[i], y[partner])
                    else:
                        _descend(y[i], y[partner])
            stride //= 2
        size *= 2


@numba.njit(cache=True, parallel=True)
def reduce_block(x, bank, offsets, t0, ks, moment_draws, mean, std, order, s1, s2, s3):
    """Reduce ``x (k, n, P)`` float32 in place (see the module docstring).

    ``bank (n_R, P)`` float32 (``n_R = 0``: no representation error), ``offsets (n,)`` int64,
    ``t0`` the block's first step, ``ks (r,)`` int64 ranks; outputs ``mean, std (k, P)`` float64,
    ``order (k, r, P)`` float32, and the running sums ``s1, s2, s3 (m, P)`` float64 of the ``m``
    draws ``moment_draws (m,)`` (accumulated over calls, not reset).
    """
    k, n, P = x.shape
    r = ks.shape[0]
    n_bank = bank.shape[0]
    n_pad = 1
    while n_pad < n:
        n_pad *= 2
    # row views (x[t][i]) everywhere: LLVM vectorises loops over a 1-D row, not over x[t, i, p]
    for t in numba.prange(k):
        xt = x[t]
        if n_bank > 0:
            for i in range(n):
                row, noise = xt[i], bank[(offsets[i] + t0 + t) % n_bank]
                for p in range(P):
                    row[p] += noise[p]
        acc = np.zeros(P)
        for i in range(n):
            row = xt[i]
            for p in range(P):
                acc[p] += row[p]
        mu = acc / n
        acc[:] = 0.0
        for i in range(n):
            row = xt[i]
            for p in range(P):
                d = row[p] - mu[p]
                acc[p] += d * d
        mean[t] = mu
        std[t] = np.sqrt(acc / (n - 1)) if n > 1 else 0.0 * acc
        full = np.empty((n_pad, _TILE), dtype=np.float32)
        for p0 in range(0, P, _TILE):
            width = min(_TILE, P - p0)
            # C-contiguous rows (the vectorised compare-exchange needs them): the full tile, or
            # a narrower array for the last one
            y = full if width == _TILE else np.empty((n_pad, width), dtype=np.float32)
            for i in range(n):
                src, dst = xt[i], y[i]
                for q in range(width):
                    dst[q] = src[p0 + q]
            for i in range(n, n_pad):
                y[i] = np.inf
            _bitonic(y)
            for j in range(r):
                src, dst = y[ks[j]], order[t, j]
                for q in range(width):
                    # a NaN draw makes the mean NaN: its order statistics are NaN too
                    dst[p0 + q] = src[q] if mu[p0 + q] == mu[p0 + q] else np.nan
    m = moment_draws.shape[0]
    for t in range(k):
        for j in range(m):
            row, a1, a2, a3 = x[t, moment_draws[j]], s1[j], s2[j], s3[j]
            for p in range(P):
                v = np.float64(row[p])
                a1[p] += v
                a2[p] += v * v
                a3[p] += v * v * v
