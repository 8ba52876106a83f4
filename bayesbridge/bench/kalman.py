"""Benchmark row for the exact Kalman smoother (``gaussianhmm_vs_loop_kalman``).

Exact smoothing at 2,000 steps (500 in quick mode), latent 20, 3 observables: Pyro's
``GaussianHMM`` parallel-scan algorithms (:func:`bayesbridge.infer.kalman.parallel_smoothed_mean`)
against filterpy's sequential ``KalmanFilter.batch_filter`` + ``rts_smoother`` loop. One intra-op
thread for torch and BLAS, so that the comparison is per core.
"""

from __future__ import annotations

import numpy as np

from bayesbridge.bench.core import BenchRow, measure
from bayesbridge.bench.enkf import _single_thread, linear_problem

__all__ = ["run"]


def _kalman_row(quick: bool) -> BenchRow:
    from bayesbridge.infer import assimilate
    from bayesbridge.infer.kalman import parallel_smoothed_mean

    d, m = 20, 3
    T = 500 if quick else 2000
    repeats = 1 if quick else 3
    model, _, y = linear_problem(d, m, T, seed=2)
    problem = f"exact smoother, linear latent {d}, {m} observables, {T} steps"
    ours = measure(lambda: parallel_smoothed_mean(model, y), repeats=repeats)
    loop = measure(lambda: assimilate(model, y, "kalman"), repeats=repeats)
    extra = {"bayesbridge_torch_loop_s": loop.median_s}
    try:
        from filterpy.kalman import KalmanFilter
    except ImportError as exc:
        return BenchRow("GaussianHMM parallel smoother", problem, ours, "filterpy KalmanFilter loop", None,
                        key="gaussianhmm_vs_loop_kalman", note=f"filterpy not installed ({exc})", extra=extra)
    A, Q, H, R = (np.asarray(getattr(model, k)) for k in "AQHR")
    yn = y.numpy()

    def filterpy_run():
        kf = KalmanFilter(dim_x=d, dim_z=m)
        kf.F, kf.Q, kf.H, kf.R = A, Q, H, R
        kf.x, kf.P = np.zeros(d), np.eye(d)
        mu, cov, _, _ = kf.batch_filter(yn)
        return kf.rts_smoother(mu, cov)

    peer = measure(filterpy_run, repeats=repeats)
    return BenchRow("GaussianHMM parallel smoother", problem, ours, "filterpy KalmanFilter batch_filter + rts_smoother",
                    peer, key="gaussianhmm_vs_loop_kalman", extra=extra)



def run(quick: bool) -> list[BenchRow]:
    """The exact-smoother row; ``quick`` shortens the series."""
    with _single_thread():
        return [_kalman_row(quick)]
