"""The ``bayesbridge`` command line (typer).

Every command has ``--help``; long steps show progress bars; random steps take ``--seed``.
Each command lives in its own module of :mod:`bayesbridge.cli` and is mounted here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bayesbridge import __version__
from bayesbridge.cli.assimilate import assimilate_command
from bayesbridge.cli.bench import bench
from bayesbridge.cli.console import console
from bayesbridge.cli.demo import demo
from bayesbridge.cli.idealized import app as idealized_app
from bayesbridge.cli.observations import observations
from bayesbridge.cli.sensitivity import sensitivity
from bayesbridge.errors import BayesBridgeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bayesbridge",
    help="Bayesian bridging of idealized and operational Earth-system models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


app.command(name="observations")(observations)
app.command(name="demo")(demo)
app.command(name="assimilate")(assimilate_command)
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
