"""Benchmark row for the exact Kalman smoother (``gaussianhmm_vs_loop_kalman``).

Exact filtering and smoothing at 2,000 steps (500 in quick mode), latent 20, 3 observables, one
series: the engine call users make, ``assimilate(model, y, "kalman")`` (for this time-invariant
model :func:`bayesbridge.infer.kalman.steady_state_smoother`: compiled recursions reusing the
converged filter and smoother covariances; means, covariances and log-evidence), against
filterpy's sequential ``KalmanFilter.batch_filter`` + ``rts_smoother`` loop. Extra figures:
Pyro's ``GaussianHMM`` parallel-scan smoother (:func:`bayesbridge.infer.kalman.parallel_smoothed_mean`,
means and log-evidence only) and our batched torch loop (``engine="loop"``, the autograd and
time-varying path). One intra-op thread for torch and BLAS, so that the comparison is per core.

The key keeps its historical name (it first compared the GaussianHMM scan with loops).
"""

from __future__ import annotations

import numpy as np

from bayesbridge.bench.core import BenchRow, measure, measure_pair
from bayesbridge.bench.enkf import _single_thread, linear_problem

__all__ = ["run"]

_KEY = "gaussianhmm_vs_loop_kalman"
_NOTE = ('ours = assimilate(model, y, "kalman"): steady-state Kalman filter + RTS smoother (numba), '
         "means, covariances and log-evidence")


def _kalman_row(quick: bool) -> BenchRow:
    from bayesbridge.infer import assimilate
    from bayesbridge.infer.kalman import parallel_smoothed_mean

    d, m = 20, 3
    T = 500 if quick else 2000
    repeats = 3 if quick else 5
    model, _, y = linear_problem(d, m, T, seed=2)
    problem = f"exact filter + smoother, linear latent {d}, {m} observables, {T} steps"
    ours = measure(lambda: assimilate(model, y, "kalman"), repeats=repeats)
    scan = measure(lambda: parallel_smoothed_mean(model, y), repeats=1 if quick else 3)
    loop = measure(lambda: assimilate(model, y, "kalman", engine="loop"), repeats=1 if quick else 3)
    extra = {"gaussianhmm_parallel_scan_s": scan.median_s, "bayesbridge_torch_loop_s": loop.median_s}
    name = "steady-state Kalman filter + RTS smoother"
    try:
        from filterpy.kalman import KalmanFilter
    except ImportError as exc:
        return BenchRow(name, problem, ours, "filterpy KalmanFilter loop", None,
                        key=_KEY, note=f"{_NOTE}; filterpy not installed ({exc})", extra=extra)
    A, Q, H, R = (np.asarray(getattr(model, k)) for k in "AQHR")
    yn = y.numpy()

    def filterpy_run():
        kf = KalmanFilter(dim_x=d, dim_z=m)
        kf.F, kf.Q, kf.H, kf.R = A, Q, H, R
        kf.x, kf.P = np.zeros(d), np.eye(d)
        mu, cov, _, _ = kf.batch_filter(yn)
        return kf.rts_smoother(mu, cov)

    ours, peer = measure_pair(lambda: assimilate(model, y, "kalman"), filterpy_run, repeats=repeats)
    return BenchRow(name, problem, ours, "filterpy KalmanFilter batch_filter + rts_smoother",
                    peer, key=_KEY, note=_NOTE, extra=extra)


def run(quick: bool) -> list[BenchRow]:
    """The exact-smoother row; ``quick`` shortens the series."""
    with _single_thread():
        return [_kalman_row(quick)]
