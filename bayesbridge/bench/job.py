"""Benchmark rows: the phases of the main job (``bayesbridge demo``) against plain references.

The demo's time is spent outside inference: reading the fields, decoding the posterior,
evaluating it and writing the outputs. Each phase is timed on the demo's own problem (the twin
experiment: ``years`` of monthly ``tos`` and ``zos`` on the 21 x 81 grid, an EOF codec of 20
modes, the ensemble Kalman smoother with ``members`` draws) against the same work written the
plain way, in the same process and in alternation (:func:`~bayesbridge.bench.core.measure_pair`):

* **read** - ours: the demo's read, the anomaly fields of the operational model and the truth
  from the twin's cache (:meth:`bayesbridge.datasets.TwinExperiment.anomalies`, stored in the
  layout the CF reader produces). Reference: the raw cached files with ``xr.open_dataset(...)
  .load()``, anomalies by ``ds.groupby("time.month") - ds.groupby("time.month").mean("time")`` and
  the ocean mask. ``extra["reader_from_raw_s"]`` times :func:`bayesbridge.io.open_operational`
  taking the anomalies of the raw files itself (what a user's own files cost).
* **decode** - ours: :meth:`~bayesbridge.bridge.posterior.Posterior.summary` and the statistic
  maps of the demo's 20 draws (:meth:`~bayesbridge.bridge.posterior.Posterior.draw_statistic_maps`).
  Reference, numpy per block of time steps: the GEMM ``z W + mean``, the representation error,
  ``mean``, ``std``, ``np.quantile`` over draws and the box indices, then each statistic draw's
  whole trajectory decoded again for its std and :func:`scipy.stats.skew` maps.
* **evaluate** - ours: the demo's scores (:func:`bayesbridge.apps.scoring.field_statistics` of the
  truth and operational fields, :func:`bayesbridge.diagnostics.uq.uq_scores` of Nino 3.4, the
  90 % coverage of three boxes). Reference: ``np.std`` and :func:`scipy.stats.skew` maps, the
  ensemble CRPS from all member pairs and ``np.quantile`` intervals.
* **write** - ours: :meth:`~bayesbridge.bridge.posterior.Posterior.to_netcdf` and
  :func:`bayesbridge.io.arviz_compat.to_netcdf`. Reference: the libraries' defaults,
  ``summary.to_netcdf(path)`` and ``idata.to_netcdf(path)`` (ArviZ compresses by default).

Keys ``ratios.read_vs_xarray``, ``decode_vs_numpy``, ``evaluate_vs_numpy``, ``write_vs_defaults``
(reference time / ours); peak memory per side is in each row.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from bayesbridge.bench.core import BenchRow, measure_pair

__all__ = ["run", "JobProblem", "job_problem"]

_STAT_DRAWS = 20


@dataclass
class JobProblem:
    """The demo's problem, set up once for all phase rows.

    Attributes
    ----------
    years, members : int
        Length of the twin experiment and number of posterior draws.
    files : dict of str to pathlib.Path
        The cached raw netCDF files of the ``operational`` model and the ``truth``.
    cache : pathlib.Path
        The twin's cache folder.
    operational, truth : xarray.Dataset
        Their anomalies (as the demo reads them).
    bridge_result : BridgeResult
        The assimilation whose posterior is decoded.
    """

    years: int
    members: int
    files: dict[str, Path]
    cache: Path
    operational: xr.Dataset
    truth: xr.Dataset
    bridge_result: object


def job_problem(years: int, members: int, latent_dim: int = 20, seed: int = 0) -> JobProblem:
    """Build the twin experiment, fit the bridge and assimilate (untimed set-up of the rows).

    Parameters
    ----------
    years : int
        Length of the twin experiment (cached on disk like the demo's).
    members : int
        Ensemble members of the smoother (posterior draws).
    latent_dim : int
        EOF modes.
    seed : int
        Seed of the twin and of the assimilation.
    """
    from bayesbridge.bridge import Bridge, BridgeConfig
    from bayesbridge.datasets import make_twin_experiment
    from bayesbridge.datasets.twin import default_cache_dir

    twin = make_twin_experiment(years=years, seed=seed, cache_dir=default_cache_dir())
    folder = twin.cache
    files = {"operational": folder / "operational.nc", "truth": folder / "truth.nc"}
    operational = twin.anomalies("operational")
    truth = twin.anomalies("truth")
    bridge = Bridge(BridgeConfig(latent_dim=latent_dim, members=members)).fit(operational, seed=seed)
    res = bridge.assimilate(twin.idealized_observations[["nino3", "nino4", "h_w"]], seed=seed)
    return JobProblem(years, members, files, folder, operational, truth, res)


# ------------------------------------------------------------------------------------ read
def _read_ours(problem: JobProblem) -> None:
    from bayesbridge.datasets import TwinExperiment

    twin = TwinExperiment.load(problem.cache)
    for role in problem.files:
        twin.anomalies(role)


def _read_raw_ours(problem: JobProblem) -> None:
    from bayesbridge import io

    for path in problem.files.values():
        io.open_operational(str(path), region=None)


def _read_reference(problem: JobProblem) -> None:
    for path in problem.files.values():
        with xr.open_dataset(path) as ds:
            ds = ds[["tos", "zos"]].load()
        anomalies = ds.groupby("time.month") - ds.groupby("time.month").mean("time")
        anomalies.notnull().any("time")


# ------------------------------------------------------------------------------------ decode
def _fresh_posterior(problem: JobProblem):
    from bayesbridge.bridge.posterior import Posterior

    res, post = problem.bridge_result, problem.bridge_result.posterior
    return Posterior(res.result, post.codec, time=post.time, seed=post.seed,
                     representation_residuals=post.representation.bank.numpy()
                     if post.representation.bank is not None else None)


def _decode_ours(problem: JobProblem) -> None:
    from bayesbridge.apps.scoring import stat_draw_list

    post = _fresh_posterior(problem)
    post.draw_statistic_maps(stat_draw_list(post.n_draws, min(_STAT_DRAWS, post.n_draws), post.seed))
    post.summary()


def _decode_reference(problem: JobProblem) -> None:
    from scipy import stats

    from bayesbridge.apps.scoring import stat_draw_list

    post = problem.bridge_result.posterior
    ens = post.draws.ensemble.numpy()  # (T, n, d)
    codec = post.codec
    W = codec.decoder_matrix.numpy().astype(np.float32)
    mean = np.asarray(codec.stacker.mean, dtype=np.float32)
    bank, offsets = post.representation.bank.numpy(), post.representation.offsets.numpy()
    boxes = post.box_weights.W
    T, n = ens.shape[0], ens.shape[1]
    block = max(1, int(64 * 2**20 // (n * W.shape[1] * 16)))
    q = np.array([0.05, 0.5, 0.95])
    for t0 in range(0, T, block):
        steps = np.arange(t0, min(T, t0 + block))
        x = ens[steps].astype(np.float32) @ W + mean
        x += bank[(offsets[None, :] + steps[:, None]) % bank.shape[0]]
        x.mean(axis=1), x.std(axis=1, ddof=1), np.quantile(x, q, axis=1)
        x.astype(np.float64) @ boxes
    for d in stat_draw_list(n, min(_STAT_DRAWS, n), post.seed):
        xd = ens[:, d].astype(np.float32) @ W + mean + bank[(offsets[d] + np.arange(T)) % bank.shape[0]]
        xd = xd.astype(np.float64)
        xd.std(axis=0), stats.skew(xd, axis=0)


# ------------------------------------------------------------------------------------ evaluate
def _evaluate_inputs(problem: JobProblem):
    from bayesbridge import regions

    post = problem.bridge_result.posterior
    post.summary()
    truth_idx = regions.indices(problem.truth)
    boxes = ("nino34", "nino12", "nino3", "nino4")
    draws = {b: post.index_draws(b) for b in boxes}
    return post, truth_idx, draws


def _evaluate_ours(problem: JobProblem, inputs) -> None:
    from bayesbridge.apps.scoring import field_statistics
    from bayesbridge.diagnostics import uq

    _, truth_idx, draws = inputs
    field_statistics(problem.truth["tos"]), field_statistics(problem.operational["tos"])
    uq.uq_scores(draws["nino34"], truth_idx["nino34"].drop_vars(["area", "mask"], errors="ignore"))
    for box in ("nino12", "nino3", "nino4"):
        uq.interval_coverage(draws[box], truth_idx[box], 0.9)


def _evaluate_reference(problem: JobProblem, inputs) -> None:
    from scipy import stats

    _, truth_idx, draws = inputs
    for fields in (problem.truth, problem.operational):
        x = fields["tos"].values.astype(np.float64)
        x.std(axis=0), stats.skew(x, axis=0)
    ens, y = draws["nino34"].values.T, truth_idx["nino34"].values  # (T, M), (T,)
    m = ens.shape[1]
    pairs = np.abs(ens[:, :, None] - ens[:, None, :]).sum(axis=(1, 2))
    np.abs(ens - y[:, None]).mean(axis=1) - pairs / (2 * m * (m - 1))
    for box in ("nino34", "nino12", "nino3", "nino4"):
        lo, hi = np.quantile(draws[box].values, [0.05, 0.95], axis=0)
        np.mean((truth_idx[box].values >= lo) & (truth_idx[box].values <= hi))


# ------------------------------------------------------------------------------------ write
def _write_ours(post, idata, folder: Path) -> None:
    from bayesbridge.io import arviz_compat

    post.to_netcdf(folder / "ours_posterior.nc")
    arviz_compat.to_netcdf(idata, folder / "ours_inference_data.nc")


def _write_reference(post, idata, folder: Path) -> None:
    post.summary().to_netcdf(folder / "ref_posterior.nc")
    idata.to_netcdf(str(folder / "ref_inference_data.nc"))


def run(quick: bool = False, tiny: bool = False) -> list[BenchRow]:
    """Four rows, one per phase of the demo (see the module docstring).

    Sizes: the demo's (200 years, 100 members); ``quick``: its ``--quick`` (40 years, 40
    members); ``tiny`` (tests): 10 years, 10 members, 6 modes.
    """
    years, members, d = (10, 10, 6) if tiny else (40, 40, 20) if quick else (200, 100, 20)
    repeats = 2 if (quick or tiny) else 3
    problem = job_problem(years, members, latent_dim=d)
    size = f"{years} years x 2 fields on 21 x 81, {members} draws, {d} EOFs"
    rows = []
    ours, ref = measure_pair(lambda: _read_ours(problem), lambda: _read_reference(problem), repeats=repeats)
    raw = measure_pair(lambda: _read_raw_ours(problem), lambda: None, repeats=repeats)[0]
    rows.append(BenchRow("demo read", f"anomalies of 2 cached runs ({size})", ours,
                         "xarray open_dataset + groupby anomalies", ref, key="read_vs_xarray",
                         extra={"reader_from_raw_s": raw.median_s, "reader_from_raw_ratio": ref.median_s / raw.median_s}))
    ours, ref = measure_pair(lambda: _decode_ours(problem), lambda: _decode_reference(problem), repeats=repeats)
    rows.append(BenchRow("demo decode", f"posterior summaries + {_STAT_DRAWS} draws' maps ({size})", ours,
                         "numpy GEMM + np.quantile + scipy skew", ref, key="decode_vs_numpy"))
    inputs = _evaluate_inputs(problem)
    ours, ref = measure_pair(lambda: _evaluate_ours(problem, inputs), lambda: _evaluate_reference(problem, inputs),
                             repeats=repeats)
    rows.append(BenchRow("demo evaluate", f"maps, CRPS, coverage ({size})", ours,
                         "numpy/scipy moments, all-pairs CRPS, np.quantile", ref, key="evaluate_vs_numpy"))
    post = problem.bridge_result.posterior
    idata = post.to_inference_data()
    with tempfile.TemporaryDirectory(prefix="bayesbridge-bench-") as tmp:
        folder = Path(tmp)
        ours, ref = measure_pair(lambda: _write_ours(post, idata, folder), lambda: _write_reference(post, idata, folder),
                                 repeats=repeats)
        sizes = {f"{p.stem}_mb": p.stat().st_size / 2**20 for p in folder.glob("*.nc")}
    rows.append(BenchRow("demo write", f"posterior.nc + inference_data.nc ({size})", ours,
                         "xarray / ArviZ to_netcdf defaults", ref, key="write_vs_defaults", extra=sizes))
    return rows
