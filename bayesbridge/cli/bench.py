"""``bayesbridge bench``: run every benchmark row and print (and optionally write) the report.

Mounted in :mod:`bayesbridge.cli` with ``app.command(name="bench")(bench)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bench"]


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Shorter problems (minutes instead of tens of minutes).")] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the report (ratios.*, idealized.*, memory.*, rows, machine) to this file."),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset of rows: enkf, kalman, particle, idealized, latent, memory, job."),
    ] = None,
    tiny: Annotated[bool, typer.Option("--tiny", hidden=True, help="Smallest problems (tests).")] = False,
) -> None:
    """Run bayesbridge and its peers (DAPPER, filterpy, Pyro SMCFilter, numpy references) on the
    same problems in this process and print times, ratios (peer / ours) and peak memory.

    Peers that are not installed are reported as missing (pip install 'bayesbridge[bench]').
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bayesbridge.bench.suite import MODULES, print_report, run_all

    console = Console()
    modules = tuple(m.strip() for m in only.split(",") if m.strip()) if only else MODULES
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("bench", total=len(modules))
        done = []

        def advance(name: str) -> None:
            bar.update(task, completed=len(done), description=f"bench: {name}")
            done.append(name)

        report = run_all(quick=quick, tiny=tiny, modules=modules, progress=advance)
        bar.update(task, completed=len(modules), description="bench: done")
    print_report(report, console)
    if json_out is not None:
        report.write_json(json_out)
        console.print(f"wrote {json_out}")
