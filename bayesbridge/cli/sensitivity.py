"""``bayesbridge sensitivity``: Sobol indices of the bridged statistics of the twin experiment.

The model of the analysis is :func:`bayesbridge.apps.sensitivity.bridge_statistics`. The options,
the output folder, the scheduler address and the memory of the local cluster are checked before
the twin experiment is built; the local cluster listens on this machine only unless ``--host``
says otherwise (:func:`bayesbridge.parallel.cluster`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

import typer

from bayesbridge.cli.checks import available_memory, check_count, check_memory, check_seed
from bayesbridge.cli.console import console
from bayesbridge.cli.progress import bars_enabled

__all__ = ["sensitivity"]

_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^\s/:]+(:\d{1,5})?/?$")
CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a ``--scheduler``."""


def sensitivity(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny analysis: n=8 base samples, 12-year twin.")] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address (tcp://host:8786) or scheduler file of a running dask cluster; "
                          "default: a local cluster."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/sensitivity"),
    seed: Annotated[int, typer.Option(help="Root seed of sampling, runs and bootstrap (0 to 4294967295).")] = 0,
    n: Annotated[
        int | None, typer.Option(help="Base sample size (a power of two); default 8 with --quick, else 64.")
    ] = None,
    years: Annotated[int | None, typer.Option(help="Years of the twin experiment (>= 3; default 12 quick, 100 full).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes of the local cluster.")] = None,
    host: Annotated[str, typer.Option(
        help="Interface the local cluster listens on: 127.0.0.1 (default) is this machine only; "
             "another address opens its ports to the network.")] = "127.0.0.1",
) -> None:
    """Sobol indices (SALib, with bootstrap confidence intervals) of the bridged Nino 3 skewness
    error, skewness-map RMSE and Nino 3.4 90 % coverage with respect to the observation-error
    floor, inflation, latent size and ensemble size. Runs as dask tasks; writes
    OUT/sobol_indices.nc, OUT/sobol_indices.csv and OUT/figures/sobol_indices.png together."""
    from bayesbridge.errors import ClusterError, ParameterError
    from bayesbridge.parallel import default_n_workers

    n = n if n is not None else (8 if quick else 64)
    years = years if years is not None else (12 if quick else 100)
    check_seed(seed)
    check_count(n, "--n", minimum=2, maximum=2**20)
    if n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        raise ParameterError(f"--n: expected a power of two (the base sample of the Sobol' sequence), got {n}; "
                             f"use --n {lower} or --n {2 * lower}.")
    # the largest latent size of the analysis (24) needs 26 months of operational record
    check_count(years, "--years", minimum=3, maximum=2000)
    if scheduler is not None:
        if workers is not None:
            raise ParameterError("--workers: applies to the local cluster only; size the cluster at --scheduler "
                                 "where it was started, or drop --scheduler.")
        is_file = scheduler.endswith(".json") or Path(scheduler).is_file()
        if is_file and not Path(scheduler).is_file():
            raise ClusterError(f"--scheduler: the scheduler file {scheduler!r} does not exist; start the scheduler "
                               f"with --scheduler-file {scheduler}, or give its address (tcp://host:8786).")
        if not is_file and not _ADDRESS.match(scheduler):
            raise ClusterError(f"--scheduler: {scheduler!r} is neither an address such as tcp://host:8786 nor an "
                               f"existing scheduler file (*.json).")
    else:
        check_count(workers if workers is not None else 1, "--workers", minimum=1, maximum=4 * default_n_workers())
        n_workers = workers if workers is not None else default_n_workers()
        # every worker holds the twin experiment (about 3.2 MB per year) and one bridge
        check_memory(n_workers * (years * 3_200_000 * 4 + 600 * 2**20), f"{n_workers} workers with --years {years}",
                     f"use --workers {max(1, int(0.9 * available_memory() // (years * 12_800_000 + 600 * 2**20)))} "
                     f"or fewer, or fewer --years")
    if not host or "://" in host or any(c.isspace() for c in host):
        raise ParameterError(f"--host: expected an interface address such as 127.0.0.1, got {host!r}.")
    from rich.table import Table

    from bayesbridge.apps.sensitivity import BOUNDS, bridge_statistics
    from bayesbridge.apps.sobol import SobolProblem, run_sobol
    from bayesbridge.datasets import make_twin_experiment
    from bayesbridge.datasets.twin import default_cache_dir
    from bayesbridge.io import check_output_dir
    from bayesbridge.parallel import cluster

    out = check_output_dir(out, "--out")
    cache_dir = str(default_cache_dir())
    console.print(f"twin experiment: {years} years (cached in {cache_dir})", soft_wrap=True)
    make_twin_experiment(years=years, seed=seed, cache_dir=cache_dir)  # generated once, read by the workers
    model = functools.partial(bridge_statistics, years=years, twin_seed=seed, cache_dir=cache_dir,
                              map_draws=2 if quick else 8)
    problem = SobolProblem.from_bounds(BOUNDS)
    console.print(f"{problem.n_runs(n)} bridge runs ({n} base samples, {problem.num_vars} inputs)")
    options = ({"timeout": CONNECT_TIMEOUT_S} if scheduler else
               {"n_workers": workers, "dashboard_address": None, "host": host})
    with cluster(scheduler, **options) as client:
        result = run_sobol(model, problem, n, seed=seed, client=client, progress=bars_enabled())
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
