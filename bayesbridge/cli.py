"""The ``bayesbridge`` command line (typer).

Every command has ``--help``; long steps show progress bars; random steps take ``--seed``.
Subcommand groups live beside the concept they drive (e.g. ``bayesbridge.idealized.commands``)
and are mounted here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bayesbridge import __version__
from bayesbridge.bench.commands import bench
from bayesbridge.errors import BayesBridgeError
from bayesbridge.idealized.commands import app as idealized_app
from bayesbridge.sensitivity_commands import sensitivity

__all__ = ["app", "main"]

app = typer.Typer(
    name="bayesbridge",
    help="Bayesian bridging of idealized and operational Earth-system models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"bayesbridge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Bayesian bridging of idealized and operational Earth-system models."""


@app.command()
def observations(
    start: Annotated[str, typer.Option(help="First month of the statistics period (YYYY-MM).")] = "1950-01",
    end: Annotated[str, typer.Option(help="Last month of the statistics period (YYYY-MM).")] = "2019-12",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the statistics to this JSON file.")
    ] = None,
) -> None:
    """Print ENSO statistics of the bundled observed indices (ERSST v5, GODAS).

    Anomalies are re-centred on the monthly climatology of START..END before the statistics.
    """
    from bayesbridge.datasets import observed_statistics

    stats = observed_statistics(start=start, end=end)
    table = Table(title=f"Observed ENSO statistics, {start} to {end}")
    table.add_column("statistic")
    for name in stats.moments.index:
        table.add_column(name, justify="right")
    for col in stats.moments.columns:
        table.add_row(col, *(f"{v:.3f}" for v in stats.moments[col]))
    console.print(table)

    months = Table(title="Monthly standard deviation (phase locking)")
    months.add_column("variable")
    for m in "JFMAMJJASOND":
        months.add_column(m, justify="right")
    for name, row in stats.monthly_std.items():
        months.add_row(name, *(f"{v:.2f}" for v in row))
    console.print(months)
    console.print(f"corr(nino3, nino4) = {stats.corr_nino3_nino4:.2f}")

    events = Table(title="Events (DJF definitions)")
    for label in stats.event_counts.index:
        events.add_column(label, justify="right")
    events.add_row(*(str(int(v)) for v in stats.event_counts.values))
    console.print(events)
    if json_out is not None:
        from bayesbridge.io import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(stats.to_dict(), indent=2))
        console.print(f"wrote {json_out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small experiment (under two minutes on two cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the twin experiment and of the assimilation.")] = 0,
    parameter_draws: Annotated[int, typer.Option(
        "--parameter-draws", min=0,
        help="K > 0: also propagate idealized-model parameter uncertainty (K prior parameter draws, "
             "one run each, assimilated as one batch).")] = 0,
) -> None:
    """Run the twin experiment end to end and write posterior.nc, inference_data.nc,
    metrics.json, report.md and figures/ into OUT."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bayesbridge.demo import DemoConfig, run_demo

    steps = ("twin", "read", "fit", "assimilate", "decode", "evaluate",
             *(("param_uq",) if parameter_draws else ()), "explain", "write")
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("demo", total=len(steps))

        def advance(step: str) -> None:
            done = steps.index(step) if step in steps else 0
            bar.update(task, completed=done, description=f"demo: {step}")

        result = run_demo(out, DemoConfig(quick=quick, seed=seed, parameter_draws=parameter_draws), progress=advance)
        bar.update(task, completed=len(steps), description="demo: done")
    m = result.metrics
    table = Table(title="Twin experiment: truth / operational / bridged")
    for col in ("statistic", "truth", "operational", "bridged"):
        table.add_column(col, justify="right" if col != "statistic" else "left")
    from bayesbridge.demo import STATS

    for stat in STATS:
        table.add_row(stat, *(f"{m[f'twin.{stat}.{s}']:.3f}" for s in ("truth", "operational", "bridged")))
    for stat in ("std", "skew"):
        table.add_row(f"map RMSE {stat}", "", f"{m[f'twin.map_rmse.{stat}.operational']:.3f}",
                      f"{m[f'twin.map_rmse.{stat}.bridged']:.3f}")
    console.print(table)
    console.print(
        f"Nino 3.4 posterior: CRPS {m['twin.uq.crps']:.3f}, 90 % coverage {m['twin.uq.coverage90']:.2f}, "
        f"spread/skill {m['twin.uq.spread_skill']:.2f}"
    )
    if parameter_draws:
        from bayesbridge.demo import PARAM_UQ_STATS

        console.print(f"Parameter uncertainty ({parameter_draws} prior draws), bridged mean [q05, q95]: " + "; ".join(
            f"{s} {m[f'twin.param_uq.{s}.mean']:.2f} [{m[f'twin.param_uq.{s}.q05']:.2f}, "
            f"{m[f'twin.param_uq.{s}.q95']:.2f}]" for s in PARAM_UQ_STATS))
    console.print(f"wrote {out}/posterior.nc, inference_data.nc, metrics.json, report.md, figures/")


@app.command("assimilate")
def assimilate_command(
    observations: Annotated[Path, typer.Option(help="Index file: CSV with a 'time' column (YYYY-MM) or netCDF.")],
    vars: Annotated[str, typer.Option("--vars", help="Indices to assimilate, comma-separated (nino3,nino4[,h_w,nino34,nino12]).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    operational: Annotated[
        list[Path] | None, typer.Option(help="Operational model files (CMIP6 netCDF; repeat or use a glob). Default: the bundled synthetic model.")
    ] = None,
    method: Annotated[str, typer.Option(help="enkf, etkf, enks, pf, svi or kalman.")] = "enks",
    members: Annotated[int, typer.Option(help="Ensemble members / particles / draws.")] = 100,
    latent_dim: Annotated[int, typer.Option(help="Latent size of the EOF codec.")] = 20,
    start: Annotated[str | None, typer.Option(help="First month (YYYY-MM).")] = None,
    end: Annotated[str | None, typer.Option(help="Last month (YYYY-MM).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the assimilation.")] = 0,
) -> None:
    """Reconstruct fields with uncertainty from observed index series (reanalysis mode).

    Writes OUT/posterior.nc (field summaries <var>_{mean,std,q05,q50,q95} and box series
    <box>_{mean,q05,q95}), OUT/inference_data.nc and OUT/validation.csv (skill against every
    known index in the file, assimilated or withheld).
    """
    from bayesbridge.bridge import BridgeConfig, _single_torch_thread
    from bayesbridge.diagnostics import arviz_compat
    from bayesbridge.io import atomic_path, open_operational
    from bayesbridge.reanalysis import read_observations, reconstruct

    names = [v.strip() for v in vars.split(",") if v.strip()]
    with console.status("reading observations and operational fields"):
        obs = read_observations(observations, start=start, end=end)
        fields = None
        if operational:
            sources = [str(p) for p in operational]
            fields = open_operational(sources[0] if len(sources) == 1 else sources, region=None).load()
    config = BridgeConfig(method=method, members=members, latent_dim=latent_dim)
    with console.status(f"fitting the latent space and assimilating {', '.join(names)} ({method})"), \
            _single_torch_thread():
        rec = reconstruct(obs, names, operational=fields, config=config, seed=seed)
        post = rec.bridge_result.posterior
        post.summary()
    out.mkdir(parents=True, exist_ok=True)
    post.to_netcdf(out / "posterior.nc")
    arviz_compat.to_netcdf(post.to_inference_data(), out / "inference_data.nc")
    with atomic_path(out / "validation.csv") as tmp:
        rec.validation.to_csv(tmp)
    table = Table(title="Posterior against the observations")
    for col in ("index", "assimilated", "months", "correlation", "90 % coverage"):
        table.add_column(col)
    for name, row in rec.validation.iterrows():
        table.add_row(name, str(bool(row["assimilated"])), str(int(row["months"])),
                      f"{row['correlation']:.3f}", f"{row['coverage90']:.2f}")
    console.print(table)
    console.print(f"wrote {out}/posterior.nc, inference_data.nc, validation.csv")


app.command(name="bench")(bench)
app.command(name="sensitivity")(sensitivity)
app.add_typer(idealized_app, name="idealized", help="Simulate and calibrate the idealized ENSO model.")


def main() -> None:
    """Entry point: run the app, turning bayesbridge errors into a one-line message and exit code 2."""
    try:
        app()
    except BayesBridgeError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise SystemExit(2) from exc
