"""``bayesbridge demo``: the twin experiment end to end (:mod:`bayesbridge.apps.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bayesbridge.cli.bridge_options import (
    CODEC_HELP,
    DEMO_PARTICLES_HELP,
    DYNAMICS_HELP,
    PROPOSAL_HELP,
    check_engine_memory,
)
from bayesbridge.cli.checks import (
    available_memory,
    check_bridge_options,
    check_count,
    check_memory,
    check_option_choice,
    check_seed,
)
from bayesbridge.cli.console import console
from bayesbridge.cli.progress import steps as step_progress

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small experiment (under two minutes on two cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the twin experiment and of the assimilation.")] = 0,
    parameter_draws: Annotated[int, typer.Option(
        "--parameter-draws", min=0,
        help="K > 0: also propagate idealized-model parameter uncertainty (K parameter draws, "
             "one run each, assimilated as one batch).")] = 0,
    twin: Annotated[str, typer.Option(
        help="synchronized: assimilate the idealized run that drives the truth (coverage is scored); "
             "statistical: an independent run of the same model (statistics and maps only).")] = "synchronized",
    parameter_source: Annotated[str, typer.Option(
        "--parameter-source",
        help="Where --parameter-draws come from: posterior (the bundled calibration posterior) or prior "
             "(the calibration's uniform prior box).")] = "posterior",
    method: Annotated[str, typer.Option(help="Inference engine: enks, enkf, etkf, pf, svi or kalman.")] = "enks",
    codec: Annotated[str, typer.Option(help=CODEC_HELP)] = "eof",
    dynamics: Annotated[str, typer.Option(help=DYNAMICS_HELP)] = "seasonal",
    particles: Annotated[int | None, typer.Option(help=DEMO_PARTICLES_HELP)] = None,
    proposal: Annotated[str | None, typer.Option(help=PROPOSAL_HELP)] = None,
    error_scales: Annotated[str, typer.Option(
        help="integrate: average over the observation- and model-error scales' posterior (priors floored at "
             "the representation error); fixed: hold them at the representation error.")] = "fixed",
    representation: Annotated[str, typer.Option(
        help="Where the representation error is measured: record (the twin world's historical record, "
             "independent of the scored truth, with its decoder term quadratic in Nino 3) or operational "
             "(the operational training fields).")] = "record",
    ablation: Annotated[bool | None, typer.Option(
        "--ablation/--no-ablation",
        help="Also assimilate the run with eq_sst toggled and tabulate both in the report (one more "
             "assimilation and decoding pass). Default: on for the full demo, off with --quick.")] = None,
) -> None:
    """Run the twin experiment end to end and write posterior.nc, inference_data.nc,
    metrics.json, report.md and figures/ into OUT."""
    from bayesbridge.apps.demo import DemoConfig, run_demo
    from bayesbridge.io import check_output_dir

    check_seed(seed)
    check_count(parameter_draws, "--parameter-draws", minimum=0)
    check_option_choice(twin, "--twin", ("synchronized", "statistical"))
    from bayesbridge.apps.propagate import PARAMETER_SOURCES
    from bayesbridge.errors import check_choice

    check_choice(parameter_source, "--parameter-source", PARAMETER_SOURCES)
    check_bridge_options(method, codec, dynamics, None, particles, proposal)
    check_option_choice(error_scales, "--error-scales", ("integrate", "fixed"))
    check_option_choice(representation, "--representation", ("record", "operational"))
    out = check_output_dir(out, "--out")
    config = DemoConfig(quick=quick, seed=seed, parameter_draws=parameter_draws, parameter_source=parameter_source,
                        method=method, codec=codec, dynamics=dynamics, particles=particles, proposal=proposal,
                        error_scales=error_scales, twin=twin, representation=representation, ablation=ablation)
    months = config.years * 12

    def run_memory(n: int, d: int) -> int:
        """Bytes of one assimilated run of ``n`` members of a ``d``-dimensional state (rough)."""
        return months * (n * d * 8 * 6 + 6 * 8 * 5)

    check_engine_memory(run_memory, method=method, members=config.members, latent_dim=config.latent_dim,
                        dynamics=dynamics, particles=particles, what=f"over {months} months",
                        fix_period="use --quick", members_option=False)
    if parameter_draws:
        # each draw is one idealized run, assimilated with the others in one batch
        per_draw = run_memory(config.members, config.latent_dim)
        fits = max(0, int(0.9 * available_memory() // per_draw) - 1)
        check_memory(per_draw * (parameter_draws + 1), f"--parameter-draws {parameter_draws}",
                     f"use --parameter-draws {fits} or fewer" + ("" if quick else ", or --quick"))
    steps = ("twin", "read", "fit", "assimilate", "decode", "evaluate", *(("ablation",) if config.ablation else ()),
             *(("param_uq",) if parameter_draws else ()), "explain", "write")
    with step_progress("demo", steps) as advance:
        result = run_demo(out, config, progress=advance)
    m = result.metrics
    table = Table(title="Twin experiment: truth / operational / bridged")
    for col in ("statistic", "truth", "operational", "bridged"):
        table.add_column(col, justify="right" if col != "statistic" else "left")
    from bayesbridge.apps.scoring import STATS

    for stat in STATS:
        table.add_row(stat, *(f"{m[f'twin.{stat}.{s}']:.3f}" for s in ("truth", "operational", "bridged")))
    for stat in ("std", "skew"):
        table.add_row(f"map RMSE {stat}", "", f"{m[f'twin.map_rmse.{stat}.operational']:.3f}",
                      f"{m[f'twin.map_rmse.{stat}.bridged']:.3f}")
    console.print(table)
    if "twin.uq.crps" in m:  # month-by-month scores: synchronized twin only
        console.print(
            f"Nino 3.4 posterior: CRPS {m['twin.uq.crps']:.3f}, 90 % coverage {m['twin.uq.coverage90']:.2f}, "
            f"spread/skill {m['twin.uq.spread_skill']:.2f}"
        )
    else:
        console.print(f"{twin} twin: the assimilated run is independent of the truth, so only statistics are scored")
    if config.ablation:
        a = "twin.ablation."
        console.print("Ablation, box indices -> box indices + eq_sst (RMSE over the operational model's): "
                      + "; ".join(f"{name} map {m[f'{a}without_eq_sst.{k}']:.2f} -> {m[f'{a}with_eq_sst.{k}']:.2f}"
                                  for name, k in (("std", "std_ratio"), ("skewness", "skew_ratio"))))
    if parameter_draws:
        from bayesbridge.apps.scoring import PARAM_UQ_STATS

        console.print(f"Parameter uncertainty ({parameter_draws} {parameter_source} draws), bridged mean [q05, q95] "
                      "(share of variance between parameter draws): " + "; ".join(
            f"{s} {m[f'twin.param_uq.{s}.mean']:.2f} [{m[f'twin.param_uq.{s}.q05']:.2f}, "
            f"{m[f'twin.param_uq.{s}.q95']:.2f}] ({m[f'twin.param_uq.{s}.var_between_fraction']:.0%})"
            for s in PARAM_UQ_STATS))
    console.print(f"wrote {out}/posterior.nc, inference_data.nc, metrics.json, report.md, figures/")

