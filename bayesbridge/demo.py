"""The main job: the twin experiment end to end (``bayesbridge demo``).

Steps (each timed into ``metrics.json`` as ``timing.<step>_s``):

1. ``twin`` - generate (or read from cache) the synthetic twin experiment of DESIGN section 6:
   a biased CMIP-style operational model and a truth driven by an idealized-model run;
2. ``read`` - anomalies of both through the same CF/CMIP6 reader users call;
3. ``fit`` - codec and latent dynamics on the operational model only;
4. ``assimilate`` - the idealized run's sparse output (``nino3``, ``nino4``, ``h_w``) into the
   latent space with an ensemble Kalman smoother;
5. ``decode`` - chunked posterior field summaries and index draws;
6. ``evaluate`` - truth / operational / bridged ENSO statistics, skewness and std maps, and UQ
   scores of the posterior Nino 3.4 series against the truth; the structural bound of any
   decoding through the operational model's patterns (:func:`pattern_bound_maps`);
6b. ``param_uq`` (only with ``parameter_draws = K > 0``) - idealized-model parameter uncertainty:
   ``K`` parameter vectors (:func:`prior_parameter_draws`), one idealized run each, assimilated
   as one batch (:func:`bayesbridge.propagate.propagate_parameter_uncertainty`);
7. ``explain`` - gain maps and latent increments;
8. ``write`` - ``posterior.nc``, ``inference_data.nc``, ``metrics.json``, ``report.md`` and
   ``figures/*.png``, staged and moved into place together (all or nothing).

Following the scoring rules learned from the prototype (DESIGN section 6), statistics of the
bridged model come from whole-trajectory posterior draws plus the decoder's representation
error - never from the posterior mean - and event counts are averaged over draws.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from bayesbridge.errors import ParameterError

__all__ = [
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "field_statistics",
    "index_statistics",
    "pattern_bound_maps",
    "prior_parameter_draws",
    "STATS",
    "PARAM_UQ_STATS",
]

STATS: tuple[str, ...] = (
    "nino3_skew",
    "nino4_skew",
    "nino3_kurt",
    "nino3_std",
    "ep_per_70yr",
    "cp_per_70yr",
    "extreme_per_70yr",
    "la_nina_per_70yr",
)
"""The index statistics reported as ``twin.<stat>.{truth,operational,bridged}``."""

PARAM_UQ_STATS: tuple[str, ...] = ("nino3_skew", "nino4_skew", "nino3_std", "extreme_per_70yr")
"""Statistics reported as ``twin.param_uq.<stat>.{mean,q05,q95}`` when ``parameter_draws > 0``."""


@dataclass
class DemoConfig:
    """Sizes and settings of the demo.

    Parameters
    ----------
    quick : bool
        Shrink the experiment (a smoke run in under two minutes on two cores).
    seed : int
        Seed of the twin experiment and of the assimilation.
    years : int, optional
        Length of the twin experiment (default 40 with ``quick``, else 200; at least 10).
    latent_dim : int
        Latent size of the codec.
    members : int, optional
        Ensemble members (default 40 with ``quick``, else 100).
    method : str
        Inference engine (see :func:`bayesbridge.infer.assimilate`).
    stat_draws : int
        Posterior draws averaged for the bridged statistics (DESIGN section 6: about 20).
    cache_dir : str, optional
        Cache of the twin experiment (default ``$BAYESBRIDGE_CACHE_DIR``).
    parameter_draws : int
        ``K > 0``: also propagate idealized-model parameter uncertainty, ``K`` parameter vectors
        from :func:`prior_parameter_draws` (no calibration is run), one run each, assimilated as
        one batch (``twin.param_uq.*`` metrics); 0 (default) skips this step.
    """

    quick: bool = False
    seed: int = 0
    years: int | None = None
    latent_dim: int = 20
    members: int | None = None
    method: str = "enks"
    stat_draws: int = 20
    cache_dir: str | None = None
    parameter_draws: int = 0

    def __post_init__(self) -> None:
        if self.years is None:
            self.years = 40 if self.quick else 200
        if self.members is None:
            self.members = 40 if self.quick else 100
        if self.years < 10:
            raise ParameterError(f"years: expected at least 10 years, got {self.years}.")
        if self.stat_draws < 1:
            raise ParameterError(f"stat_draws: expected >= 1, got {self.stat_draws}.")
        if isinstance(self.parameter_draws, bool) or not isinstance(self.parameter_draws, int) or self.parameter_draws < 0:
            raise ParameterError(
                f"parameter_draws: expected an integer >= 0 (0 skips parameter uncertainty), got {self.parameter_draws!r}."
            )


@dataclass
class DemoResult:
    """Outputs of :func:`run_demo`.

    Attributes
    ----------
    out_dir : pathlib.Path
        The output folder.
    metrics : dict of str to float
        The content of ``metrics.json``.
    files : dict of str to pathlib.Path
        Every file written (``posterior``, ``inference_data``, ``metrics``, ``report``, figures).
    bridge_result : BridgeResult
        The assimilation (posterior, engine result, model).
    twin : TwinExperiment
        The twin experiment that was bridged.
    propagation : ParameterPropagation or None
        The parameter-uncertainty runs (``parameter_draws > 0``), else ``None``.
    """

    out_dir: Path
    metrics: dict[str, float]
    files: dict[str, Path]
    bridge_result: object = field(repr=False)
    twin: object = field(repr=False)
    propagation: object = field(default=None, repr=False)


def index_statistics(nino3: np.ndarray, nino4: np.ndarray, time) -> dict[str, float]:
    """The :data:`STATS` of one pair of monthly index series (degC).

    Parameters
    ----------
    nino3, nino4 : array-like ``(time,)``
        Monthly Nino 3 and Nino 4 anomalies (degC).
    time : array-like ``(time,)``
        Their time coordinate (for the DJF event classification).

    Returns
    -------
    dict of str to float
        Skewness, Pearson kurtosis and std of Nino 3, skewness of Nino 4, and event rates per
        70 years (:func:`bayesbridge.diagnostics.enso.classify_events`).
    """
    from bayesbridge.diagnostics import enso

    n3 = xr.DataArray(np.asarray(nino3, float), dims="time", coords={"time": time})
    n4 = xr.DataArray(np.asarray(nino4, float), dims="time", coords={"time": time})
    rates = enso.event_rates_per_70yr(enso.classify_events(n3, n4))
    return {
        "nino3_skew": float(stats.skew(n3.values)),
        "nino4_skew": float(stats.skew(n4.values)),
        "nino3_kurt": float(stats.kurtosis(n3.values, fisher=False)),
        "nino3_std": float(n3.std()),
        "ep_per_70yr": float(rates["ep"]),
        "cp_per_70yr": float(rates["cp"]),
        "extreme_per_70yr": float(rates["extreme_ep"]),
        "la_nina_per_70yr": float(rates["la_nina"]),
    }


def field_statistics(field: xr.DataArray) -> xr.Dataset:
    """Standard deviation and skewness maps ``(lat, lon)`` of a field on ``(time, lat, lon)``.

    Population moments (``ddof = 0``, skewness ``m3 / m2^{3/2}`` as :func:`scipy.stats.skew`);
    land (all-NaN) points stay NaN.
    """
    x = np.asarray(field.values, dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    ocean = np.isfinite(flat).all(axis=0)
    std = np.full(flat.shape[1], np.nan)
    skew = np.full(flat.shape[1], np.nan)
    a = flat[:, ocean]
    a = a - a.mean(axis=0)
    m2 = (a**2).mean(axis=0)
    m3 = (a**3).mean(axis=0)
    std[ocean] = np.sqrt(m2)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew[ocean] = np.where(m2 > 0, m3 / m2**1.5, np.nan)
    shape = x.shape[1:]
    coords = {"lat": field["lat"], "lon": field["lon"]}
    return xr.Dataset(
        {"std": (("lat", "lon"), std.reshape(shape)), "skew": (("lat", "lon"), skew.reshape(shape))},
        coords=coords,
    )


def pattern_bound_maps(twin, seed: int) -> xr.Dataset:
    """Std and skewness maps of the operational patterns driven by the truth's own indices.

    The scoring-only oracle :func:`bayesbridge.datasets.twin.operational_pattern_fields`
    (operational generator, ``twin.truth_driver``'s indices, noise seed ``seed``), read as
    anomalies by :func:`bayesbridge.io.open_operational` like the truth. Every field decoded
    through the operational model's patterns lives in this family, so the RMSE of these maps
    against the truth's (``twin.map_rmse.<stat>.pattern_bound``) is a structural bound for the
    bridge. It never feeds the bridge.

    Parameters
    ----------
    twin : TwinExperiment
        The twin experiment (its ``truth_driver`` and ``metadata["start_year"]``).
    seed : int
        Seed of the oracle's red noise.

    Returns
    -------
    xarray.Dataset
        ``std``, ``skew`` of ``tos`` on ``(lat, lon)`` (:func:`field_statistics`).
    """
    from bayesbridge import io
    from bayesbridge.datasets.twin import operational_pattern_fields

    start = int(twin.metadata.get("start_year", 1850))
    fields = operational_pattern_fields(twin.truth_driver, seed, start_year=start)
    return field_statistics(io.open_operational(fields, variables="tos", region=None)["tos"].load())


def prior_parameter_draws(k: int, seed: int):
    """``k`` MultiscaleENSO parameter vectors from the calibration's prior, ``(draw, parameter)``.

    No calibration posterior is bundled, so the demo draws uniformly from the prior box of
    :func:`bayesbridge.idealized.calibrate.calibrate` for its default calibrated parameters
    (:data:`~bayesbridge.idealized.calibrate.DEFAULT_PRIORS`: ``f`` 0.5-0.8, ``wind_amp``
    0.6-1.2, ``noise_scale`` 0.5-1.5, ``m`` 1.5-2.5), a box centred on the published 2024 values
    (0.65, 0.9, 1, 2). Stream 61 of ``numpy.random.default_rng([seed, stream])``.

    Parameters
    ----------
    k : int
        Number of draws (>= 1).
    seed : int
        Seed of the draws.

    Returns
    -------
    pandas.DataFrame
        One row per draw, one column per parameter.
    """
    import pandas as pd

    from bayesbridge.idealized.calibrate import DEFAULT_PRIORS, CalibrationConfig

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ParameterError(f"k: expected an integer >= 1, got {k!r}.")
    rng = np.random.default_rng([seed, 61])
    names = CalibrationConfig().parameters
    return pd.DataFrame({n: rng.uniform(*DEFAULT_PRIORS[n], size=k) for n in names})


def _weighted_rmse(a: xr.DataArray, b: xr.DataArray) -> float:
    w = np.cos(np.deg2rad(a["lat"])) * xr.ones_like(a["lon"])
    d2 = (a - b) ** 2
    valid = d2.notnull()
    return float(np.sqrt((d2.fillna(0) * w).sum() / (w * valid).sum()))


class _Timer:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.times: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.progress = progress

    def __call__(self, step: str):
        timer = self

        class _Step:
            def __enter__(self):
                if timer.progress:
                    timer.progress(step)
                timer.started[step] = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[step] = time.perf_counter() - timer.started[step]

        return _Step()


def _bridged_maps(posterior, n_draws: int, seed: int, variable: str = "tos") -> xr.Dataset:
    """Per-draw std/skew maps averaged over draws (draws decoded a few at a time)."""
    total = None
    chosen = 0
    group = 4
    for k in range(0, n_draws, group):
        sample = posterior.sample_fields(n_draws=min(group, n_draws - k), seed=seed + k)[variable]
        for d in range(sample.sizes["draw"]):
            m = field_statistics(sample.isel(draw=d))
            total = m if total is None else total + m
            chosen += 1
    return total / chosen


def run_demo(
    out_dir: str | Path,
    config: DemoConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the twin experiment and write every output into ``out_dir``.

    Outputs are written into a hidden staging folder and moved into ``out_dir`` only when all
    of them succeeded, so a failure part-way leaves ``out_dir`` as it was.

    Parameters
    ----------
    out_dir : str or path
        Output folder (created if needed).
    config : DemoConfig, optional
        Sizes and settings (default :class:`DemoConfig`).
    progress : callable, optional
        Called with the name of each step as it starts (``"twin"``, ``"read"``, ``"fit"`` ...).

    Returns
    -------
    DemoResult
    """
    from bayesbridge.bridge import _single_torch_thread

    # Filters, decoding and moments are many small or medium torch ops: one intra-op thread is
    # faster than two spinning OpenMP threads on a two-core machine.
    with _single_torch_thread():
        return _run_demo(Path(out_dir), config or DemoConfig(), progress)


def _run_demo(out: Path, cfg: DemoConfig, progress) -> DemoResult:
    from bayesbridge import io, regions
    from bayesbridge.bridge import Bridge, BridgeConfig
    from bayesbridge.datasets import make_twin_experiment
    from bayesbridge.diagnostics import uq

    timer = _Timer(progress)

    with timer("twin"):
        twin = make_twin_experiment(years=cfg.years, seed=cfg.seed, cache_dir=cfg.cache_dir)
    with timer("read"):
        operational = io.open_operational(twin.operational, region=None).load()
        truth = io.open_operational(twin.truth, region=None).load()
    with timer("fit"):
        bridge = Bridge(BridgeConfig(latent_dim=cfg.latent_dim, members=cfg.members, method=cfg.method))
        bridge.fit(operational, seed=cfg.seed)
    with timer("assimilate"):
        observed = twin.idealized_observations[["nino3", "nino4", "h_w"]]
        res = bridge.assimilate(observed, seed=cfg.seed)
    post = res.posterior
    with timer("decode"):
        summary = post.summary()
    with timer("evaluate"):
        time_coord = truth["time"]
        idx_truth = regions.indices(truth)
        idx_op = regions.indices(operational)
        metrics: dict[str, float] = {}
        per_source = {
            "truth": index_statistics(idx_truth["nino3"], idx_truth["nino4"], time_coord),
            "operational": index_statistics(idx_op["nino3"], idx_op["nino4"], time_coord),
        }
        n3d, n4d = post.index_draws("nino3"), post.index_draws("nino4")
        n_stat = min(cfg.stat_draws, post.n_draws)
        draws = [index_statistics(n3d[i], n4d[i], time_coord) for i in range(n_stat)]
        per_source["bridged"] = {k: float(np.mean([d[k] for d in draws])) for k in STATS}
        for k in STATS:
            for src, values in per_source.items():
                metrics[f"twin.{k}.{src}"] = values[k]
        maps = {
            "truth": field_statistics(truth["tos"]),
            "operational": field_statistics(operational["tos"]),
            "bridged": _bridged_maps(post, n_stat, cfg.seed),
        }
        bound = pattern_bound_maps(twin, cfg.seed)
        for stat in ("std", "skew"):
            for src in ("operational", "bridged"):
                metrics[f"twin.map_rmse.{stat}.{src}"] = _weighted_rmse(maps[src][stat], maps["truth"][stat])
            metrics[f"twin.map_rmse.{stat}.pattern_bound"] = _weighted_rmse(bound[stat], maps["truth"][stat])
        scores = uq.uq_scores(post.index_draws("nino34"), idx_truth["nino34"].drop_vars(["area", "mask"], errors="ignore"))
        metrics.update(scores.to_dict("twin.uq"))
        for box in ("nino12", "nino3", "nino4"):
            cov = uq.interval_coverage(post.index_draws(box), idx_truth[box], 0.9)
            metrics[f"twin.uq.coverage90_{box}"] = float(cov)
    propagation = None
    if cfg.parameter_draws:
        from bayesbridge.propagate import propagate_parameter_uncertainty

        with timer("param_uq"):
            propagation = propagate_parameter_uncertainty(
                bridge, prior_parameter_draws(cfg.parameter_draws, cfg.seed), cfg.years, seed=cfg.seed,
                start=int(twin.metadata.get("start_year", 1850)), stat_draws=cfg.stat_draws)
            spread = propagation.spread()
            for stat in PARAM_UQ_STATS:
                for col in ("mean", "q05", "q95"):
                    metrics[f"twin.param_uq.{stat}.{col}"] = float(spread.loc[stat, col])
    with timer("explain"):
        explanation = _explain(res, bridge.codec, twin.idealized_observations, cfg.seed)
        metrics.update(explanation.to_dict())
    with timer("write"), _staging(out) as stage:
        files = _write_outputs(stage, cfg, post, summary, metrics, timer.times, maps, per_source,
                               idx_truth, explanation, twin, propagation)
        for step, seconds in timer.times.items():
            metrics[f"timing.{step}_s"] = seconds
        metrics["timing.write_s"] = time.perf_counter() - timer.started["write"]
        files["metrics"] = _write_json(stage / "metrics.json", metrics)
        files = {k: out / p.relative_to(stage) for k, p in files.items()}
    return DemoResult(out_dir=out, metrics=metrics, files=files, bridge_result=res, twin=twin,
                      propagation=propagation)


@contextlib.contextmanager
def _staging(out: Path):
    """Write into a hidden folder beside ``out``; move the files in only if everything succeeded.

    A failure part-way (exception, interrupt) leaves ``out`` exactly as it was.
    """
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bayesbridge-staging-", dir=out))
    try:
        yield stage
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class Explanation:
    """Why the correction happened: gains, increments and regime composites (see
    :mod:`bayesbridge.diagnostics.explain`)."""

    gains: object
    increments: object
    walker: object
    enso: object

    def figures(self) -> dict[str, object]:
        """Figures keyed by file stem."""
        from bayesbridge.diagnostics import explain_plots as ep

        return {
            "gain_maps": ep.plot_gain_maps(self.gains),
            "latent_increment_maps": ep.plot_increment_maps(self.increments),
            "latent_increment_shares": ep.plot_increment_shares(self.increments),
            "composites_walker": ep.plot_regime_composites(self.walker),
            "composites_ep_cp": ep.plot_regime_composites(self.enso),
        }

    def to_dict(self) -> dict[str, float]:
        """Scalar summaries for ``metrics.json``."""
        shares = self.increments.direction_share.values
        out = {"explain.increment_share_mode0": float(shares[0])}
        for regime, n in zip(self.walker.counts["regime"].values, self.walker.counts.values, strict=True):
            out[f"explain.walker_months.{regime}"] = float(n)
        return out


def _explain(res, codec, observed: xr.Dataset, seed: int) -> Explanation:
    import torch

    from bayesbridge.diagnostics import enso, explain

    model, result, time = res.model, res.result, res.observations["time"]
    # The gain is averaged over the last ten years: enough for a stable average (the filter's
    # gain converges within a few years), without decoding the forecast ensemble of the whole
    # run. The window's first forecast starts from the model's prior (one step in 120).
    recent = slice(max(0, result.n_steps - 120), result.n_steps)
    window = dataclasses.replace(
        result,
        filtered_mean=result.filtered_mean[..., recent, :],
        filtered_ensemble=result.filtered_ensemble[..., recent, :, :],
        smoothed_mean=None, smoothed_ensemble=None, log_weights=None,
        diagnostics=None,
    )
    gains = explain.gain_maps(model, window, codec, time=time.values[recent],
                              generator=torch.Generator().manual_seed(seed))
    increments = explain.latent_increments(model, result, codec, time=time.values)
    correction = explain.decoded_increments(model, result, codec, time=time.values)
    walker = explain.regime_composites(correction, explain.walker_regimes(observed["walker_i"].values),
                                       order=("high_I", "low_I"))
    events = enso.classify_events(observed["nino3"], observed["nino4"])
    regimes = explain.enso_regimes(events, time.values)
    order = [r for r in ("ep", "cp") if (regimes == r).any()]
    enso_comp = explain.regime_composites(correction, regimes, order=order or None)
    return Explanation(gains, increments, walker, enso_comp)


def _write_json(path: Path, payload: dict) -> Path:
    from bayesbridge.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def _write_outputs(out, cfg, post, summary, metrics, times, maps, per_source, idx_truth, explanation, twin,
                   propagation=None):
    from bayesbridge.diagnostics import arviz_compat
    from bayesbridge.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    files = {"posterior": post.to_netcdf(out / "posterior.nc")}
    files["inference_data"] = arviz_compat.to_netcdf(post.to_inference_data(), out / "inference_data.nc")
    files.update(
        write_report(
            out,
            config=asdict(cfg),
            metrics=metrics,
            timings=times,
            maps=maps,
            per_source=per_source,
            summary=summary,
            truth_indices=idx_truth,
            posterior=post,
            explanation=explanation,
            propagation=propagation,
        )
    )
    return files
