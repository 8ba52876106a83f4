"""Benchmark rows for the ensemble Kalman engines.

* ``enkf_vs_dapper`` -- one linear-Gaussian problem (latent 32, 3 observables, 100 members,
  2,400 cycles; 300 in quick mode): our stochastic EnKF (perturbed observations) and ETKF against
  DAPPER's ``EnKF('PertObs')`` and ``EnKF('Sqrt')``, and filterpy's ``EnsembleKalmanFilter``.
  The keyed row compares like with like: one run of DAPPER's PertObs EnKF against one run of
  ours, per cycle, on the same problem and observations. The batched rows (64 independent runs in
  one call, time per run-cycle) are extra information, not the keyed comparison.
* ``batched_vs_sequential`` -- 64 independent runs of the ETKF (latent 32, 100 members) in one
  batched call against 64 calls one after another. Both go through the compiled cycle
  (:mod:`bayesbridge.infer._enkf_kernel`, which cycles a batch run by run), already near its
  floor of noise draws and GEMMs per run-cycle, so batching removes only per-call overhead; the
  ratio is reported, not tuned. The extras time the same comparison on the torch engine.

The ensemble rows use ``sampling="random"`` (plain Gaussian draws, as DAPPER's default) and
``store_ensemble=False``; the default second-order exact sampling costs about twice as much per
cycle (a QR factorisation of the forecast anomalies each step) and is far more accurate.

Peers are imported inside the functions; a missing peer gives a row with ``peer=None`` and a
note, never a silent skip. Every timing runs with one intra-op thread for torch and for the BLAS
used by numpy (threadpoolctl, when installed), so that the comparison is per core.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from bayesbridge.bench.core import BenchRow, Timing, measure, measure_pair
from bayesbridge.devices import single_torch_thread

__all__ = ["run", "linear_problem"]


def linear_problem(d: int, m: int, T: int, seed: int = 0, batch: tuple[int, ...] = ()):
    """A stable random linear-Gaussian model and a simulated observation series ``(*batch, T, m)``.

    Parameters
    ----------
    d, m, T : int
        Latent size, number of observables, number of steps.
    seed : int
        Seed of the matrices and of the simulation.
    batch : tuple of int
        Leading batch shape of independent series.

    Returns
    -------
    model : LinearGaussianModel
    z : Tensor (*batch, T, d)
    y : Tensor (*batch, T, m)
    """
    from bayesbridge.model import LinearGaussianModel

    g = torch.Generator().manual_seed(seed)
    A = 0.95 * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    Q = 0.1 * torch.eye(d, dtype=torch.float64)
    H = torch.randn(m, d, generator=g, dtype=torch.float64) / d**0.5
    R = 0.2 * torch.eye(m, dtype=torch.float64)
    model = LinearGaussianModel(A, Q, H, R, torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    z, y = model.simulate(T, generator=g, batch_shape=batch)
    return model, z, y


@contextlib.contextmanager
def _single_thread():
    """One torch thread and, where threadpoolctl is installed, one BLAS thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the bench extra
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(1)
    with single_torch_thread(), limiter:
        yield


def _per_cycle(t: Timing, cycles: int) -> Timing:
    return Timing(t.median_s / cycles, tuple(x / cycles for x in t.times_s), t.peak_mb)


def _dapper_hmm(model, T: int):
    import dapper.mods as modelling

    A, Q, H, R = (np.asarray(getattr(model, k)) for k in "AQHR")
    d, m = A.shape[0], H.shape[0]
    tseq = modelling.Chronology(dt=1, dko=1, K=T, BurnIn=0)
    Dyn = {"M": d, "model": lambda x, t, dt: x @ A.T, "noise": modelling.GaussRV(C=Q)}
    Obs = {"M": m, "model": lambda x: x @ H.T, "noise": modelling.GaussRV(C=R)}
    X0 = modelling.GaussRV(mu=np.asarray(model.m0), C=np.asarray(model.P0))
    return modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)


def _enkf_rows(quick: bool) -> list[BenchRow]:
    from bayesbridge.infer import assimilate

    d, m, N, runs = 32, 3, 100, 64
    T = 300 if quick else 2400
    T_batch = 50 if quick else 300
    repeats = 1 if quick else 3
    problem = f"linear latent {d}, {m} observables, {N} members, {T} cycles, time per cycle"
    model, _, y = linear_problem(d, m, T)
    _, _, yb = linear_problem(d, m, T_batch, batch=(runs,))
    # Same algorithm as the peers: plain random draws (DAPPER's default 'Stoch' noise), no stored
    # ensembles (the peers keep only the current one).
    opts = {"members": N, "seed": 1, "sampling": "random", "store_ensemble": False}
    ours = {
        v: _per_cycle(measure(lambda v=v: assimilate(model, y, v, **opts), repeats=repeats), T)
        for v in ("enkf", "etkf")
    }  # re-measured in alternation with each peer below; these stand in when a peer is missing
    batched = {
        v: _per_cycle(measure(lambda v=v: assimilate(model, yb, v, **opts), repeats=repeats), T_batch * runs)
        for v in ("enkf", "etkf")
    }
    batched_problem = f"{problem}; ours: {runs} independent runs batched ({T_batch} cycles), time per run-cycle"
    rows: list[BenchRow] = []
    try:
        import dapper.da_methods as da
        import dapper.tools.progressbar as dapper_progress
    except ImportError as exc:
        rows.append(BenchRow("enkf (PertObs), one run", problem, ours["enkf"], "dapper EnKF('PertObs')",
                             None, key="enkf_vs_dapper", note=f"DAPPER not installed ({exc}); pip install dapper"))
    else:
        dapper_progress.disable_progbar = True
        dapper_progress.disable_user_interaction = True
        hmm = _dapper_hmm(model, T)
        xx, _ = hmm.simulate()
        yy = y.numpy()  # the same observations as ours

        def dapper_run(upd_a: str):
            xp = da.EnKF(upd_a, N=N)
            xp.assimilate(hmm, xx, yy, liveplots=False)
            return xp

        for upd_a, v in (("PertObs", "enkf"), ("Sqrt", "etkf")):
            mine, peer = measure_pair(lambda v=v: assimilate(model, y, v, **opts), lambda u=upd_a: dapper_run(u),
                                      repeats=repeats)
            mine, peer = _per_cycle(mine, T), _per_cycle(peer, T)
            rows.append(BenchRow(f"{v} ({upd_a}), one run", problem, mine, f"dapper EnKF('{upd_a}')", peer,
                                 key="enkf_vs_dapper" if v == "enkf" else None))
            rows.append(BenchRow(f"{v} ({upd_a}), batched", batched_problem, batched[v], f"dapper EnKF('{upd_a}')",
                                 peer, note="extra information: the speed-up comes from batching independent runs"))
    try:
        from filterpy.kalman import EnsembleKalmanFilter
    except ImportError as exc:
        rows.append(BenchRow("enkf (PertObs), one run", problem, ours["enkf"], "filterpy EnsembleKalmanFilter", None,
                             note=f"filterpy not installed ({exc}); pip install filterpy"))
    else:
        A, Q, H, R = (np.asarray(getattr(model, k)) for k in "AQHR")
        yn = y.numpy()

        def filterpy_run():
            f = EnsembleKalmanFilter(x=np.zeros(d), P=np.eye(d), dim_z=m, dt=1.0, N=N,
                                     hx=lambda x: H @ x, fx=lambda x, dt: A @ x)
            f.Q, f.R = Q, R
            for t in range(T):
                f.predict()
                f.update(yn[t])

        mine, peer = measure_pair(lambda: assimilate(model, y, "enkf", **opts), filterpy_run, repeats=repeats)
        mine, peer = _per_cycle(mine, T), _per_cycle(peer, T)
        rows.append(BenchRow("enkf (PertObs), one run", problem, mine, "filterpy EnsembleKalmanFilter", peer))
        rows.append(BenchRow("enkf (PertObs), batched", batched_problem, batched["enkf"],
                             "filterpy EnsembleKalmanFilter", peer))
    return rows


def _batched_row(quick: bool) -> BenchRow:
    from bayesbridge.infer import assimilate

    runs, d, m, N = 64, 32, 3, 100
    T = 50 if quick else 200
    model, _, y = linear_problem(d, m, T, seed=3, batch=(runs,))
    problem = f"{runs} independent ETKF runs, latent {d}, {m} observables, {N} members, {T} cycles"
    # the same options as the DAPPER rows (plain random draws, no stored ensembles)
    opts = {"members": N, "seed": 1, "sampling": "random", "store_ensemble": False}
    ours = measure(lambda: assimilate(model, y, "etkf", **opts), repeats=1 if quick else 3)

    def sequential(engine: str = "auto"):
        for i in range(runs):
            assimilate(model, y[i], "etkf", engine=engine, **opts)

    peer = measure(sequential, repeats=1, warmup=1)  # warmed up like the batch (the first call loads kernels)
    # context: the batch and the same runs one after another on the vectorised torch engine, i.e.
    # what batching saves where a run is not compiled
    torch_batch = measure(lambda: assimilate(model, y, "etkf", engine="torch", **opts), repeats=1)
    torch_seq = measure(lambda: sequential("torch"), repeats=1, warmup=0)
    extra = {"batched_torch_engine_s": torch_batch.median_s, "sequential_torch_engine_s": torch_seq.median_s,
             "ratio_torch_engine": torch_seq.median_s / torch_batch.median_s}
    return BenchRow("etkf batched", problem, ours, "etkf one run after another", peer, key="batched_vs_sequential",
                    note="the batch and each sequential run take the same compiled cycle, at its per-run floor of "
                         "noise draws and GEMMs, so batching saves only per-call overhead (extra: both on the "
                         "torch engine)", extra=extra)


def run(quick: bool) -> list[BenchRow]:
    """All rows of this module (see the module docstring); ``quick`` shortens every problem."""
    with _single_thread():
        return [*_enkf_rows(quick), _batched_row(quick)]
