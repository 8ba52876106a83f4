"""Sobol indices of the bridged statistics of the twin experiment (``bayesbridge sensitivity``).

Which settings of the bridge matter for the statistics it is judged on? The model of the
analysis is :func:`bridge_statistics`: one bridge fitted and assimilated on the twin experiment
(``docs/design.md`` section 6) for given inputs, returning three scalar scores against the truth:

* ``nino3_skew_error`` - absolute error of the Nino 3 skewness, the mean over posterior draws
  of the skewness of each whole-trajectory draw
  (:func:`bayesbridge.diagnostics.enso.skew_kurtosis`), against the truth's;
* ``skew_map_rmse`` - area-weighted RMSE of the SST skewness map (mean of the per-draw maps of a
  few draws) against the truth's map;
* ``coverage90_nino34`` - fraction of months whose true Nino 3.4 lies in the central 90 %
  posterior interval.

Inputs (uniform on their bounds, :data:`BOUNDS`): ``obs_error_floor`` (degC floor of the Nino
observation errors; ``h_w`` floor scaled by 2 m / 0.15 degC), ``inflation`` (multiplicative),
``latent_dim`` and ``members`` (rounded to integers). The indices are computed with SALib on
Saltelli's scheme (:func:`bayesbridge.apps.sobol.run_sobol`), the runs evaluated as dask tasks
(:func:`bayesbridge.parallel.map_tasks`) on a local cluster or on ``--scheduler ADDRESS``, with
common random numbers (every run uses the same engine seed). Mounted in :mod:`bayesbridge.cli`
with ``app.command(name="sensitivity")(sensitivity)``.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["bridge_statistics", "BOUNDS", "OUTPUTS"]

BOUNDS: dict[str, tuple[float, float]] = {
    "obs_error_floor": (0.05, 0.5),
    "inflation": (1.0, 1.3),
    "latent_dim": (4.0, 24.0),
    "members": (20.0, 100.0),
}
"""Inputs of the analysis and their ranges."""

OUTPUTS: tuple[str, ...] = ("nino3_skew_error", "skew_map_rmse", "coverage90_nino34")
"""Scalar outputs of :func:`bridge_statistics`."""

@functools.lru_cache(maxsize=2)
def _twin(years: int, twin_seed: int, cache_dir: str | None):
    """Twin experiment, its anomalies and truth statistics (cached per worker process)."""
    from bayesbridge import regions
    from bayesbridge.apps.scoring import field_statistics, index_statistics
    from bayesbridge.datasets import make_twin_experiment

    twin = make_twin_experiment(years=years, seed=twin_seed, cache_dir=cache_dir)
    operational = twin.anomalies("operational")
    truth = twin.anomalies("truth")
    idx = regions.indices(truth)
    truth_stats = index_statistics(idx["nino3"], idx["nino4"], truth["time"])
    truth_map = field_statistics(truth["tos"])
    return twin, operational, idx, truth_stats, truth_map


def bridge_statistics(
    obs_error_floor: float,
    inflation: float,
    latent_dim: float,
    members: float,
    seed: int,
    *,
    years: int = 20,
    twin_seed: int = 0,
    cache_dir: str | None = None,
    map_draws: int = 4,
    method: str = "enks",
) -> dict[str, float]:
    """Bridge the twin experiment with the given settings and score it against the truth.

    Parameters
    ----------
    obs_error_floor : float
        Floor of the Nino-index observation errors (degC); the ``h_w`` floor is scaled with it.
    inflation : float
        Multiplicative inflation (>= 1).
    latent_dim, members : float
        Latent size and ensemble size (rounded to the nearest integer).
    seed : int
        Seed of the assimilation and of the draws.
    years, twin_seed, cache_dir
        The twin experiment (:func:`bayesbridge.datasets.make_twin_experiment`).
    map_draws : int
        Posterior draws whose skewness maps are averaged.
    method : str
        Inference engine.

    Returns
    -------
    dict of str to float
        :data:`OUTPUTS`.

    Notes
    -----
    The latent dynamics are the seasonal LIM when the twin has enough years for a per-month
    fit (``years - 1 >= latent_dim + 2``), else the stationary LIM.
    """
    from bayesbridge.apps.scoring import bridged_maps, weighted_rmse
    from bayesbridge.bridge import DEFAULT_OBS_ERROR_FLOOR, Bridge, BridgeConfig
    from bayesbridge.diagnostics import enso, uq

    twin, operational, idx_truth, truth_stats, truth_map = _twin(int(years), int(twin_seed), cache_dir)
    floor = float(obs_error_floor)
    d = int(round(latent_dim))
    cfg = BridgeConfig(
        latent_dim=d,
        # a per-month LIM needs d + 2 transitions per calendar month; else the stationary LIM
        dynamics="seasonal" if int(years) - 1 >= d + 2 else "linear",
        members=int(round(members)),
        method=method,
        inflation=float(inflation),
        # every default floor scaled by the same factor as the Nino floors
        obs_error_floor={k: v * floor / DEFAULT_OBS_ERROR_FLOOR["nino3"] for k, v in DEFAULT_OBS_ERROR_FLOOR.items()},
    )
    bridge = Bridge(cfg).fit(operational, seed=int(seed) % 2**31)
    res = bridge.assimilate(twin.idealized_observations[["nino3", "nino4", "h_w"]], seed=int(seed) % 2**31)
    post = res.posterior
    n3 = post.index_draws("nino3").values
    skew = float(np.mean([enso.skew_kurtosis(d)[0] for d in n3]))
    maps = bridged_maps(post, min(map_draws, post.n_draws), int(seed) % 2**31)
    truth34 = idx_truth["nino34"].drop_vars(["area", "mask"], errors="ignore")
    coverage = uq.interval_coverage(post.index_draws("nino34"), truth34, 0.9)
    return {
        "nino3_skew_error": abs(skew - truth_stats["nino3_skew"]),
        "skew_map_rmse": weighted_rmse(maps["skew"], truth_map["skew"]),
        "coverage90_nino34": float(coverage),
    }
