"""``bayesbridge sensitivity``: Sobol indices of the bridged statistics of the twin experiment.

The model of the analysis is :func:`bayesbridge.apps.sensitivity.bridge_statistics`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["sensitivity"]


def sensitivity(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny analysis: n=8 base samples, 12-year twin.")] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address (tcp://host:8786) or scheduler file of a running dask cluster; "
                          "default: a local cluster."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/sensitivity"),
    seed: Annotated[int, typer.Option(help="Root seed of sampling, runs and bootstrap.")] = 0,
    n: Annotated[
        int | None, typer.Option(help="Base sample size (a power of two); default 8 with --quick, else 64.")
    ] = None,
    years: Annotated[int | None, typer.Option(help="Years of the twin experiment (default 12 quick, 100 full).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes of the local cluster.")] = None,
) -> None:
    """Sobol indices (SALib, with bootstrap confidence intervals) of the bridged Nino 3 skewness
    error, skewness-map RMSE and Nino 3.4 90 % coverage with respect to the observation-error
    floor, inflation, latent size and ensemble size. Runs as dask tasks; writes
    OUT/sobol_indices.nc, OUT/sobol_indices.csv and OUT/figures/sobol_indices.png."""
    from rich.console import Console
    from rich.table import Table

    from bayesbridge.apps.sensitivity import BOUNDS, bridge_statistics
    from bayesbridge.apps.sobol import SobolProblem, run_sobol
    from bayesbridge.datasets import make_twin_experiment
    from bayesbridge.datasets.twin import default_cache_dir
    from bayesbridge.parallel import cluster

    console = Console()
    n = n if n is not None else (8 if quick else 64)
    years = years if years is not None else (12 if quick else 100)
    cache_dir = str(default_cache_dir())
    console.print(f"twin experiment: {years} years (cached in {cache_dir})")
    make_twin_experiment(years=years, seed=seed, cache_dir=cache_dir)  # generated once, read by the workers
    model = functools.partial(bridge_statistics, years=years, twin_seed=seed, cache_dir=cache_dir,
                              map_draws=2 if quick else 8)
    problem = SobolProblem.from_bounds(BOUNDS)
    console.print(f"{problem.n_runs(n)} bridge runs ({n} base samples, {problem.num_vars} inputs)")
    with cluster(scheduler, n_workers=None if scheduler else workers, dashboard_address=None) as client:
        result = run_sobol(model, problem, n, seed=seed, client=client, progress=True)
    files = result.save(out)
    table = Table(title="Sobol indices (95 % bootstrap half-widths)")
    for col in ("output", "parameter", "S1", "ST"):
        table.add_column(col, justify="left" if col in ("output", "parameter") else "right")
    frame = result.to_dataframe()
    for (output, param), row in frame.iterrows():
        table.add_row(str(output), str(param), f"{row['S1']:.2f} +/- {row['S1_conf']:.2f}",
                      f"{row['ST']:.2f} +/- {row['ST_conf']:.2f}")
    console.print(table)
    console.print(f"wrote {files.netcdf}, {files.csv}, {files.figure}")
