"""``bayesbridge bench``: run every benchmark row and print (and optionally write) the report.

Mounted in :mod:`bayesbridge.cli` with ``app.command(name="bench")(bench)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayesbridge.cli.checks import parse_names
from bayesbridge.cli.console import console
from bayesbridge.cli.progress import steps

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

    Peers that are not installed are reported as missing: install them with
    pip install 'bayesbridge\\[bench]' (or make bench).
    """
    from bayesbridge.bench.suite import MODULES, print_report, run_all
    from bayesbridge.io import check_output_file

    modules = tuple(parse_names(only, "--only", MODULES)) if only is not None else MODULES
    if json_out is not None:
        json_out = check_output_file(json_out, "--json")
    with steps("bench", modules) as advance:
        report = run_all(quick=quick, tiny=tiny, modules=modules, progress=advance)
    print_report(report, console)
    if json_out is not None:
        report.write_json(json_out)
        console.print(f"wrote {json_out}")
