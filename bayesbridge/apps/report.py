"""``report.md`` of the demo: the tables a reader can check, with the figures it embeds.

The figures are drawn by :mod:`bayesbridge.plots.report` (the same functions notebooks call),
from the callables of :func:`report_figure_jobs`, in the background while the job writes its
other files (:mod:`bayesbridge.apps.rendering`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from bayesbridge.plots.report import (
    SOURCES,
    plot_equatorial_hovmoller,
    plot_index_pdfs,
    plot_index_posterior,
    plot_statistic_maps,
)

__all__ = ["write_report", "report_figure_jobs", "REPORT_FIGURES", "equatorial_section"]


def _ablation_section(metrics: dict[str, float]) -> list[str]:
    """The ablation table (:mod:`bayesbridge.apps.ablation`) when the demo ran it, else nothing."""
    from bayesbridge.apps.ablation import ablation_rows

    rows = ablation_rows(metrics)
    if not rows:
        return []
    return [
        "## Ablation: what the equatorial profile adds",
        "",
        "The same idealized run assimilated with and without its equatorial SST profile `eq_sst`, "
        "with the same bridge, seed and scoring. Map ratios are RMSE against the truth over the "
        "operational model's; the pattern bound decodes the truth's own box indices through the "
        "operational patterns.",
        "",
        *rows,
        "",
    ]


def _parameter_section(metrics: dict[str, float], per_source: dict, propagation) -> list[str]:
    """Markdown lines of the parameter-uncertainty section (empty without ``twin.param_uq.*``)."""
    stats = list(dict.fromkeys(k.split(".")[2] for k in metrics if k.startswith("twin.param_uq.")))
    if not stats:
        return []
    k = len(propagation.parameters) if propagation is not None else 0
    source = propagation.source if propagation is not None else "given"
    origin = {
        "posterior": "the bundled calibration posterior (`bayesbridge idealized calibrate` against ERSST v5 / "
                     "GODAS 1950-2019; `bayesbridge.idealized.calibrated`)",
        "prior": "the calibration's uniform prior box centred on the published 2024 parameters (f 0.5-0.8, "
                 "wind_amp 0.6-1.2, noise_scale 0.5-1.5, m 1.5-2.5): the spread is prior, not posterior, uncertainty",
    }.get(source, "the caller's draws")
    lines = [
        "## Idealized-model parameter uncertainty",
        "",
        f"{k} parameter vectors of the multiscale ENSO model from {origin}, one idealized run each, "
        "assimilated as one batch; the pooled posterior mixes the runs. Each bridged statistic is "
        "averaged over draws of one run; mean and 5-95 % range are over the runs. The last columns split "
        "the variance of the statistic over all draws (law of total variance): between runs (the "
        "parameters, with each run's own internal variability) and within runs (the assimilation).",
        "",
        "| statistic | truth | idealized runs mean [q05, q95] | bridged mean [q05, q95] | var between | var within | between share |",
        "|---|---|---|---|---|---|---|",
    ]
    ideal = propagation.spread("idealized") if propagation is not None else None
    for stat in stats:
        m = {c: metrics.get(f"twin.param_uq.{stat}.{c}", np.nan)
             for c in ("mean", "q05", "q95", "var_between", "var_within", "var_between_fraction")}
        idl = (f"{_fmt(ideal.loc[stat, 'mean'])} [{_fmt(ideal.loc[stat, 'q05'])}, {_fmt(ideal.loc[stat, 'q95'])}]"
               if ideal is not None and stat in ideal.index else "")
        truth = _fmt(per_source.get("truth", {}).get(stat, np.nan))
        lines.append(f"| {stat} | {truth} | {idl} | {_fmt(m['mean'])} [{_fmt(m['q05'])}, {_fmt(m['q95'])}] | "
                     f"{_fmt(m['var_between'])} | {_fmt(m['var_within'])} | {_fmt(m['var_between_fraction'])} |")
    return [*lines, ""]


def _twin_text(twin: str) -> str:
    if twin == "statistical":
        return ("Twin setting: **statistical**. The assimilated idealized run is independent of the run that "
                "drives the truth (the paper's setting): only statistics and maps are scored, not month-by-month "
                "agreement or coverage.")
    return ("Twin setting: **synchronized**. The assimilated idealized run is the one that drives the truth, so "
            "the posterior series can be scored month by month (coverage, CRPS).")


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


REPORT_FIGURES: dict[str, str] = {
    "statistic_maps": "std and skewness maps",
    "nino34_posterior": "Nino 3.4 posterior",
    "nino12_posterior": "Nino 1+2 posterior",
    "nino3_pdf": "Nino 3 PDF",
    "equatorial_hovmoller": "equatorial SST anomaly: truth / operational / bridged",
}
"""The report's own figures: file stem and caption."""


def equatorial_section(sst: xr.DataArray, band: tuple[float, float] = (-5.0, 5.0)) -> xr.DataArray:
    """The ``cos(lat)``-weighted band mean of ``sst`` ``(time, lat, lon)`` -> ``(time, lon)`` (land skipped)."""
    band_sst = sst.sel(lat=(sst["lat"] >= band[0]) & (sst["lat"] <= band[1]))
    weights = np.cos(np.deg2rad(band_sst["lat"])) * band_sst.notnull()
    out = (band_sst.fillna(0.0) * weights).sum("lat") / weights.sum("lat").where(weights.sum("lat") > 0)
    out.attrs["units"] = sst.attrs.get("units", "degC")
    return out


def report_figure_jobs(maps: dict[str, xr.Dataset], summary: xr.Dataset, truth_indices: xr.Dataset,
                       posterior, sst_fields: dict[str, xr.DataArray] | None = None) -> dict:
    """Callables drawing the figures of :data:`REPORT_FIGURES` (for
    :func:`bayesbridge.apps.rendering.start_rendering`).

    Parameters
    ----------
    maps : dict of str to xarray.Dataset
        Statistic maps per source (see :func:`~bayesbridge.plots.report.plot_statistic_maps`).
    summary : xarray.Dataset
        Posterior summary (see :func:`~bayesbridge.plots.report.plot_index_posterior`).
    truth_indices : xarray.Dataset
        True ``nino34``, ``nino12`` and ``nino3`` series.
    posterior : Posterior
        Source of the Nino 3 draws of the PDF figure (up to 20).
    sst_fields : dict of str to xarray.DataArray, optional
        SST anomaly on ``(time, lat, lon)`` per source: their last ten years' equatorial sections
        (:func:`equatorial_section`, computed in the drawing process) make the Hovmoeller
        figure (left out when not given).
    """
    n_pdf = min(20, posterior.n_draws)
    pdf_series = {"truth": truth_indices["nino3"].values, "bridged": posterior.index_draws("nino3").values[:n_pdf]}
    return {
        "statistic_maps": lambda: plot_statistic_maps(maps),
        "nino34_posterior": lambda: plot_index_posterior(summary, truth_indices["nino34"]),
        "nino12_posterior": lambda: plot_index_posterior(summary, truth_indices["nino12"], box="nino12"),
        "nino3_pdf": lambda: plot_index_pdfs(pdf_series),
        **({"equatorial_hovmoller": lambda: plot_equatorial_hovmoller(
            {k: equatorial_section(v.isel(time=slice(-120, None))) for k, v in sst_fields.items()})}
           if sst_fields else {}),
    }


_REPRESENTATION = {
    "record": " (measured on the twin world's historical record, which also fits the equatorial regression "
              "of eq_sst and a decoder term quadratic in Nino 3: the truth's generator on an independent "
              "run, never the scored truth)",
    "operational": " (measured on the operational training fields)",
}


def write_report(
    out: Path,
    *,
    config: dict,
    metrics: dict[str, float],
    timings: dict[str, float],
    per_source: dict[str, dict[str, float]],
    figures: dict[str, str],
    propagation=None,
) -> Path:
    """Write ``report.md`` into ``out``: the tables, and the figures already in ``out/figures``.

    Parameters
    ----------
    out : pathlib.Path
        Output folder.
    config : dict
        Run configuration, printed verbatim.
    metrics : dict of str to float
        ``metrics.json`` values; the ``twin.map_rmse.{std,skew}.{operational,bridged}``
        (and ``.pattern_bound`` when present), ``twin.uq.*`` and ``twin.param_uq.*`` keys are
        tabulated.
    timings : dict of str to float
        Seconds per pipeline step.
    per_source : dict of str to dict of str to float
        Index statistics per source (``truth``, ``operational``, ``bridged``), by statistic.
    figures : dict of str to str
        File stem (``figures/<stem>.png``) to caption, in the order they are shown.
    propagation : ParameterPropagation, optional
        Parameter-uncertainty runs (:mod:`bayesbridge.apps.propagate`); adds a section with the
        spread of each statistic over the parameter draws.

    Returns
    -------
    pathlib.Path
        The report.
    """
    from bayesbridge.io import atomic_path

    fig_lines = [f"![{caption}](figures/{stem}.png)" for stem, caption in figures.items()]
    rows = ["| statistic | truth | operational | bridged |", "|---|---|---|---|"]
    for stat in per_source["truth"]:
        rows.append(f"| {stat} | " + " | ".join(_fmt(per_source[s][stat]) for s in SOURCES) + " |")
    map_rows = ["| map | operational RMSE | bridged RMSE | ratio | pattern bound RMSE |", "|---|---|---|---|---|"]
    for stat in ("std", "skew"):
        op, br = metrics[f"twin.map_rmse.{stat}.operational"], metrics[f"twin.map_rmse.{stat}.bridged"]
        bound = metrics.get(f"twin.map_rmse.{stat}.pattern_bound", np.nan)
        map_rows.append(f"| {stat} | {_fmt(op)} | {_fmt(br)} | {_fmt(br / op if op else np.nan)} | {_fmt(bound)} |")
    bound_text = (
        "The pattern bound is the RMSE of fields built with the operational model's own patterns but "
        "driven by the truth's exact indices (one noise realisation; a scoring-only oracle that never "
        "feeds the bridge): the bridged fields live in the span of the operational patterns, so this "
        "is the structural error that no method decoding through those patterns removes by "
        "assimilating better indices. It is a reference level, not a strict lower bound: compensating "
        "index errors and the sampling noise of the maps (bridged maps average several draws) can "
        "score below it."
    )
    uq_rows = ["| score | value |", "|---|---|"]
    for key in sorted(k for k in metrics if k.startswith("twin.uq.")):
        uq_rows.append(f"| {key[8:]} | {_fmt(metrics[key])} |")
    time_rows = ["| step | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    text = "\n".join(
        [
            "# bayesbridge twin experiment",
            "",
            "A synthetic operational model with documented ENSO biases is bridged to the idealized "
            f"multiscale ENSO model by assimilating the idealized run's {', '.join(config.get('observables', ()))} "
            "in the operational model's latent space. Bridged statistics come from whole-trajectory "
            "posterior draws (statistics averaged over up to 20) plus the decoder's representation "
            f"error{_REPRESENTATION.get(config.get('representation'), '')}, never from the posterior mean.",
            "",
            _twin_text(config.get("twin", "synchronized")),
            "",
            f"Configuration: `{config}`",
            "",
            "## ENSO statistics (index series)",
            "",
            *rows,
            "",
            "## Maps (area-weighted RMSE against the truth's SST statistics)",
            "",
            *map_rows,
            "",
            bound_text,
            "",
            *_ablation_section(metrics),
            *_parameter_section(metrics, per_source, propagation),
            "## Uncertainty of the posterior Nino 3.4 series against the truth",
            "",
            *(uq_rows if len(uq_rows) > 2 else ["Not scored: the statistical twin's run is independent of the truth."]),
            "",
            "## Timings",
            "",
            *time_rows,
            "",
            "## Figures",
            "",
            *fig_lines,
            "",
        ]
    )
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
