"""The main job: the twin experiment end to end (``bayesbridge demo``).

Steps (each timed into ``metrics.json`` as ``timing.<step>_s``):

1. ``twin`` - generate (or read from cache) the synthetic twin experiment
   (``docs/design.md`` section 6): a biased CMIP-style operational model and a truth driven by an
   idealized-model run;
2. ``read`` - anomalies of both through the same CF/CMIP6 reader users call;
3. ``fit`` - codec and latent dynamics on the operational model only; the twin world's
   historical record (:func:`~bayesbridge.datasets.twin.historical_record`, independent of the
   scored truth) gives the representation error (``representation="record"``) and the
   equatorial regression of ``eq_sst``;
4. ``assimilate`` - the idealized run's sparse output (``nino3``, ``nino4``, ``h_w`` and its
   equatorial profile ``eq_sst``) into the latent space with an ensemble Kalman smoother;
5. ``decode`` - chunked posterior field summaries and index draws;
6. ``evaluate`` - truth / operational / bridged ENSO statistics, skewness and std maps, and UQ
   scores of the posterior Nino 3.4 series against the truth; the structural bound of any
   decoding through the operational model's patterns
   (:func:`~bayesbridge.apps.scoring.pattern_bound_maps`);
7. ``ablation`` (``ablation=True``, the full demo's default) - the same run assimilated once more
   with ``eq_sst`` toggled and both scored alike (:mod:`bayesbridge.apps.ablation`);
8. ``param_uq`` (only with ``parameter_draws = K > 0``) - idealized-model parameter
   uncertainty: ``K`` parameter vectors from the bundled calibration posterior
   (:func:`~bayesbridge.apps.propagate.parameter_draws`), one idealized run each, assimilated as one batch
   (:func:`bayesbridge.apps.propagate.propagate_parameter_uncertainty`);
9. ``explain`` - gain maps and latent increments;
10. ``write`` - ``posterior.nc``, ``inference_data.nc``, ``metrics.json``, ``report.md`` and
    ``figures/*.png``, staged and moved into place together (all or nothing).

Following the scoring rules of :mod:`bayesbridge.apps.scoring` (``docs/design.md`` section 6),
statistics of the bridged model come from whole-trajectory posterior draws plus the decoder's
representation error - never from the posterior mean - and event counts are averaged over draws.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from bayesbridge.apps.explanation import explain_assimilation
from bayesbridge.apps.propagate import PARAMETER_SOURCES, parameter_draws
from bayesbridge.apps.rendering import start_rendering
from bayesbridge.apps.report import REPORT_FIGURES, report_figure_jobs, write_report
from bayesbridge.apps.scoring import (
    PARAM_UQ_STATS,
    STATS,
    box_coverage,
    bridged_maps,
    field_statistics,
    index_statistics,
    pattern_bound_maps,
    weighted_rmse,
)
from bayesbridge.errors import ParameterError, check_choice
from bayesbridge.io.outputs import output_set

__all__ = ["DemoConfig", "DemoResult", "run_demo", "TWIN_SETTINGS", "DEFAULT_OBSERVABLES"]

TwinSetting = Literal["synchronized", "statistical"]
TWIN_SETTINGS: tuple[str, ...] = get_args(TwinSetting)
"""``synchronized``: the idealized run that drives the truth is assimilated (trajectory coverage is
scored); ``statistical``: an idealized run independent of the truth (statistics and maps only)."""
Representation = Literal["record", "operational"]
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)
"""Where the representation error is measured: ``record``, the twin world's historical record
(:func:`bayesbridge.datasets.twin.historical_record`, :meth:`~bayesbridge.bridge.Bridge.measure_representation`
with its quadratic decoder term); ``operational``, the operational training fields."""
DEFAULT_OBSERVABLES: tuple[str, ...] = ("nino3", "nino4", "h_w", "eq_sst")
"""What the demo assimilates from the idealized run (its own output, never the truth's fields)."""


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
        Ensemble members, the posterior draws (default
        :func:`~bayesbridge.apps.bridge_options.default_members`: 100, or ``2 w d`` for an
        ensemble Kalman engine on the LSTM's window state; the 90 % interval of 40 exchangeable
        draws covers only about 86 % of a calibrated posterior).
    method : str
        Inference engine (see :func:`bayesbridge.infer.assimilate`).
    codec : {"eof", "autoencoder", "vae"}
        Latent codec (:class:`~bayesbridge.bridge.BridgeConfig`).
    dynamics : {"linear", "seasonal", "neural", "lstm"}
        Latent dynamics (:class:`~bayesbridge.bridge.BridgeConfig`; ``lstm`` not with ``svi``).
    particles : int, optional
        ``method="pf"`` only: particles of the filter (default 5,000, at least ``members``, the
        number of smoothed trajectories; :mod:`bayesbridge.apps.bridge_options`).
    proposal : {"auto", "guided", "bootstrap"}, optional
        ``method="pf"`` only: the particle proposal (default ``"auto"``).
    stat_draws : int
        Posterior draws averaged for the bridged statistics (``docs/design.md`` section 6: about 20).
    cache_dir : str, optional
        Cache of the twin experiment (default ``$BAYESBRIDGE_CACHE_DIR``).
    twin : {"synchronized", "statistical"}
        Which idealized run is assimilated (:data:`TWIN_SETTINGS`): the one that drives the truth
        (month-by-month coverage scored), or an independent run of the same model
        (:func:`bayesbridge.datasets.twin.independent_idealized_run`; statistics and maps only).
    observables : tuple of str
        What is assimilated from the idealized run (default :data:`DEFAULT_OBSERVABLES`;
        ``eq_sst`` is its equatorial SST profile, :mod:`bayesbridge.idealized.eq_sst`).
    parameter_draws : int
        ``K > 0``: also propagate idealized-model parameter uncertainty, ``K`` parameter vectors
        (:func:`~bayesbridge.apps.propagate.parameter_draws`), one run each, assimilated as one
        batch (``twin.param_uq.*`` metrics, with the law-of-total-variance split of each
        statistic); 0 (default) skips this step.
    parameter_source : {"posterior", "prior"}
        Where the ``K`` vectors come from: the bundled calibration posterior (default,
        :mod:`bayesbridge.idealized.calibrated`) or the calibration's uniform prior box.
    error_scales : {"fixed", "integrate"}
        Error scales of the bridge (:attr:`~bayesbridge.bridge.BridgeConfig.error_scales`).
    ablation : bool, optional
        Also assimilate the run with ``eq_sst`` toggled (dropped when observed, added when not)
        and tabulate both beside the pattern bound in the report and ``twin.ablation.*``
        (:mod:`bayesbridge.apps.ablation`); one more assimilation and decoding pass. Default: on
        for the full demo, off with ``quick``.
    representation : {"record", "operational"}
        Where the codec's representation error (observation errors, decoded draws) is measured
        (:data:`REPRESENTATIONS`): on the twin world's historical record (default; the latent
        space fitted to the operational model flatters itself on its own fields), with the
        record's residual quadratic in Nino 3 added to the decoded draws
        (:mod:`bayesbridge.bridge.representation`), or on the operational training fields.
    """

    quick: bool = False
    seed: int = 0
    years: int | None = None
    latent_dim: int = 20
    members: int | None = None
    method: str = "enks"
    codec: str = "eof"
    dynamics: str = "seasonal"
    particles: int | None = None
    proposal: str | None = None
    stat_draws: int = 20
    cache_dir: str | None = None
    twin: TwinSetting = "synchronized"
    observables: tuple[str, ...] = DEFAULT_OBSERVABLES
    parameter_draws: int = 0
    parameter_source: str = "posterior"
    error_scales: str = "fixed"
    representation: Representation = "record"
    ablation: bool | None = None

    def __post_init__(self) -> None:
        check_choice(self.twin, "twin", TWIN_SETTINGS)
        check_choice(self.representation, "representation", REPRESENTATIONS)
        self.observables = tuple(self.observables)
        check_choice(self.parameter_source, "parameter_source", PARAMETER_SOURCES)
        # the choices of bayesbridge.bridge.scales.ERROR_SCALES, listed here so that no torch loads
        check_choice(self.error_scales, "error_scales", ("integrate", "fixed"))
        if self.years is None:
            self.years = 40 if self.quick else 200
        if self.ablation is None:
            self.ablation = not self.quick
        if self.ablation and not [o for o in self.observables if o != "eq_sst"]:
            raise ParameterError(
                f"ablation: its counterpart drops eq_sst from observables={self.observables!r} and would "
                f"observe nothing; add box indices (e.g. 'nino3', 'nino4', 'h_w') or pass ablation=False."
            )
        if self.members is None:
            from bayesbridge.apps.bridge_options import default_members

            self.members = default_members(self.method, self.dynamics, self.latent_dim)
        if self.years < 10:
            raise ParameterError(f"years: expected at least 10 years, got {self.years}.")
        if self.stat_draws < 1:
            raise ParameterError(f"stat_draws: expected >= 1, got {self.stat_draws}.")
        if isinstance(self.parameter_draws, bool) or not isinstance(self.parameter_draws, int) or self.parameter_draws < 0:
            raise ParameterError(
                f"parameter_draws: expected an integer >= 0 (0 skips parameter uncertainty), got {self.parameter_draws!r}."
            )
        self.bridge_config()  # refuses a bad codec, dynamics, method or particle setting now

    def bridge_config(self):
        """The :class:`~bayesbridge.bridge.BridgeConfig` of the demo's bridge
        (:func:`~bayesbridge.apps.bridge_options.bridge_config`)."""
        from bayesbridge.apps.bridge_options import bridge_config  # torch loads with it

        return bridge_config(method=self.method, members=self.members, particles=self.particles,
                             proposal=self.proposal, latent_dim=self.latent_dim, codec=self.codec,
                             dynamics=self.dynamics, error_scales=self.error_scales)


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
    from bayesbridge.devices import single_torch_thread

    # Filters, decoding and moments are many small or medium torch ops: one intra-op thread is
    # faster than two spinning OpenMP threads on a two-core machine.
    with single_torch_thread():
        return _run_demo(Path(out_dir), config or DemoConfig(), progress)


def _run_demo(out: Path, cfg: DemoConfig, progress) -> DemoResult:
    from bayesbridge import regions
    from bayesbridge.bridge import Bridge
    from bayesbridge.datasets import make_twin_experiment

    timer = _Timer(progress)

    with timer("twin"):
        twin = make_twin_experiment(years=cfg.years, seed=cfg.seed, cache_dir=cfg.cache_dir)
    with timer("read"):
        operational = twin.anomalies("operational")  # io.open_operational, cached with the twin
        truth = twin.anomalies("truth")
    with timer("fit"):
        bridge = Bridge(cfg.bridge_config())
        bridge.fit(operational, seed=cfg.seed)
        record = None
        if cfg.representation == "record" or "eq_sst" in cfg.observables or cfg.ablation:
            from bayesbridge.datasets.twin import RECORD_YEARS, historical_record

            record = historical_record(twin, cfg.seed, years=min(cfg.years, RECORD_YEARS))
        if cfg.representation == "record":
            bridge.measure_representation(record, quadratic=True)
    with timer("assimilate"):
        run, operators = _idealized_observables(twin, cfg, operational, record)
        res = bridge.assimilate(run, list(cfg.observables), seed=cfg.seed, operators=operators)
    post = res.posterior
    n_stat = min(cfg.stat_draws, post.n_draws)
    with timer("decode"):
        # the bridged statistic maps come out of the same decoding pass as the summaries
        bridged = bridged_maps(post, n_stat, cfg.seed)
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
        draws = [index_statistics(n3d[i], n4d[i], time_coord) for i in range(n_stat)]
        per_source["bridged"] = {k: float(np.mean([d[k] for d in draws])) for k in STATS}
        for k in STATS:
            for src, values in per_source.items():
                metrics[f"twin.{k}.{src}"] = values[k]
        maps = {
            "truth": field_statistics(truth["tos"]),
            "operational": field_statistics(operational["tos"]),
            "bridged": bridged,
        }
        bound = pattern_bound_maps(twin, cfg.seed)
        for stat in ("std", "skew"):
            for src in ("operational", "bridged"):
                metrics[f"twin.map_rmse.{stat}.{src}"] = weighted_rmse(maps[src][stat], maps["truth"][stat])
            metrics[f"twin.map_rmse.{stat}.pattern_bound"] = weighted_rmse(bound[stat], maps["truth"][stat])
        metrics["twin.synchronized"] = float(cfg.twin == "synchronized")
        if cfg.twin == "synchronized":  # month-by-month scores need the run that drives the truth
            _coverage(metrics, post, idx_truth)
    if cfg.ablation:
        with timer("ablation"):
            metrics.update(_ablation(cfg, twin, bridge, post, operational, record, maps, per_source,
                                     idx_truth, n_stat))
    with output_set(out) as stage:
        # the figures are drawn by forked processes while the job goes on and writes its files
        sst = {"truth": truth["tos"], "operational": operational["tos"], "bridged (posterior mean)": summary["tos_mean"]}
        report_figs = start_rendering(report_figure_jobs(maps, summary, idx_truth, post, sst), stage / "figures")
        explain_figs = None
        try:
            propagation = _propagate(cfg, twin, bridge, metrics, timer)
            with timer("explain"):
                explanation = explain_assimilation(res, bridge.codec, run, cfg.seed)
                metrics.update(explanation.to_dict())
            explain_figs = start_rendering(explanation.figure_jobs(), stage / "figures")
            with timer("write"):
                files = {"posterior": post.to_netcdf(stage / "posterior.nc"),
                         "inference_data": post.write_inference_data(stage / "inference_data.nc")}
                figures = {**report_figs.wait(), **explain_figs.wait()}
                files.update({f"fig_{name}": path for name, path in figures.items()})
                captions = {**REPORT_FIGURES, **{name: name for name in figures if name not in REPORT_FIGURES}}
                for step, seconds in timer.times.items():
                    metrics[f"timing.{step}_s"] = seconds
                metrics["timing.write_s"] = time.perf_counter() - timer.started["write"]
                files["report"] = write_report(stage, config=asdict(cfg), metrics=metrics, timings=timer.times,
                                               per_source=per_source, propagation=propagation,
                                               figures={n: captions[n] for n in figures})
                files["metrics"] = _write_json(stage / "metrics.json", metrics)
        finally:
            for rendering in (report_figs, explain_figs):
                if rendering is not None:
                    rendering.cancel()
        files = {k: out / p.relative_to(stage) for k, p in files.items()}
    return DemoResult(out_dir=out, metrics=metrics, files=files, bridge_result=res, twin=twin,
                      propagation=propagation)


def _idealized_observables(twin, cfg: DemoConfig, fields, record):
    """The idealized run to assimilate (``cfg.twin``) with its ``eq_sst`` profile, and the operators.

    The profile is the run's own (:func:`bayesbridge.idealized.eq_sst.with_equatorial_sst`) at
    :data:`~bayesbridge.idealized.eq_sst.EQ_SST_SPACING_DEG` spacing inside the operational grid,
    through the regression (with its quadratic EP term) fitted to the twin world's historical
    record (:func:`bayesbridge.datasets.twin.historical_record`, independent of the scored
    truth), whose residual also gives the rows' errors; with ``nino3`` and ``nino4``
    assimilated too, only its shape is observed (no double counting,
    :mod:`bayesbridge.idealized.eq_sst`).

    Returns
    -------
    run : xarray.Dataset
        The run's outputs on ``time``, ``eq_sst`` on ``(time, lon)``.
    operators : list of ObservationOperator
        The ``eq_sst`` operator when it is observed, else empty.
    """
    from bayesbridge.datasets.twin import independent_idealized_run
    from bayesbridge.idealized.eq_sst import EQ_SST, eq_sst_longitudes, profile_observation
    from bayesbridge.idealized.regression import fit_equatorial_regression

    run = twin.idealized_observations if cfg.twin == "synchronized" else independent_idealized_run(twin, cfg.seed)
    if EQ_SST not in cfg.observables:
        return run, []
    lon = np.mod(np.asarray(fields["lon"].values, dtype=float), 360.0)
    rows = eq_sst_longitudes(float(lon.min()), float(lon.max()))
    regression = fit_equatorial_regression(record["tos"], rows)
    prof = profile_observation(run, lon, assimilated=cfg.observables, climatology=True, regression=regression)
    return prof.observations, [prof.operator]


def _ablation(cfg: DemoConfig, twin, bridge, post, operational, record, maps, per_source, idx_truth,
              n_stat: int) -> dict[str, float]:
    """The run and its counterpart with ``eq_sst`` toggled, scored alike (:mod:`bayesbridge.apps.ablation`)."""
    from bayesbridge.apps.ablation import ablation_metrics, score_posterior, toggled_observables

    other = replace(cfg, observables=toggled_observables(cfg.observables))
    run, operators = _idealized_observables(twin, other, operational, record)
    counterpart = bridge.assimilate(run, list(other.observables), seed=cfg.seed, operators=operators).posterior
    scoring = dict(n_draws=n_stat, seed=cfg.seed, truth_maps=maps["truth"], operational_maps=maps["operational"],
                   truth_nino3_skew=per_source["truth"]["nino3_skew"],
                   operational_nino3_skew=per_source["operational"]["nino3_skew"],
                   idx_truth=idx_truth if cfg.twin == "synchronized" else None)
    return ablation_metrics(score_posterior(post, cfg.observables, **scoring),
                            score_posterior(counterpart, other.observables, **scoring))


def _coverage(metrics: dict, post, idx_truth) -> None:
    """Month-by-month UQ scores of the posterior box series against the truth (synchronized twin)."""
    from bayesbridge.diagnostics import uq

    scores = uq.uq_scores(post.index_draws("nino34"), idx_truth["nino34"].drop_vars(["area", "mask"], errors="ignore"))
    metrics.update(scores.to_dict("twin.uq"))
    for box, value in box_coverage(post, idx_truth, ("nino12", "nino3", "nino4", "h_w")).items():
        metrics[f"twin.uq.coverage90_{box}"] = value


def _propagate(cfg: DemoConfig, twin, bridge, metrics: dict, timer):
    """Idealized-parameter uncertainty (``cfg.parameter_draws > 0``): the runs and their metrics."""
    if not cfg.parameter_draws:
        return None
    from bayesbridge.apps.propagate import propagate_parameter_uncertainty

    with timer("param_uq"):
        propagation = propagate_parameter_uncertainty(
            bridge, parameter_draws(cfg.parameter_draws, cfg.seed, cfg.parameter_source), cfg.years,
            seed=cfg.seed, start=int(twin.metadata.get("start_year", 1850)), stat_draws=cfg.stat_draws)
        propagation = replace(propagation, source=cfg.parameter_source)
        spread, split = propagation.spread(), propagation.variance_split()
        for stat in PARAM_UQ_STATS:
            for col in ("mean", "q05", "q95"):
                metrics[f"twin.param_uq.{stat}.{col}"] = float(spread.loc[stat, col])
            for col in ("between", "within", "between_fraction"):
                metrics[f"twin.param_uq.{stat}.var_{col}"] = float(split.loc[stat, col])
    return propagation


def _write_json(path: Path, payload: dict) -> Path:
    from bayesbridge.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path
