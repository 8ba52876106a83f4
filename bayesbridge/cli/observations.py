"""``bayesbridge observations``: ENSO statistics of the bundled observed indices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bayesbridge.cli.checks import month_range
from bayesbridge.cli.console import console

__all__ = ["observations"]


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
    from bayesbridge.io import atomic_path, check_output_file

    start, end = month_range(start, end)
    if json_out is not None:
        json_out = check_output_file(json_out, "--json")
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
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(stats.to_dict(), indent=2))
        console.print(f"wrote {json_out}")
