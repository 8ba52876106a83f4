"""The ``bayesbridge`` command line (typer).

Every command has ``--help``; long steps show progress bars on a terminal (one line per step
in a log); random steps take ``--seed``. Each command lives in its own module of
:mod:`bayesbridge.cli` and is mounted here. Every command checks its arguments, input files and
output path before it starts working; :func:`main` prints any bad input (a
:class:`~bayesbridge.errors.BayesBridgeError` or a usage error) as one ``error:`` line and exits
with code 2, and an interrupt with code 130.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

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


def _click_exceptions() -> tuple:
    """``(NoArgsIsHelpError, UsageError, Abort)`` of the click that typer runs on (recent typer
    releases vendor click as ``typer._click``; older ones use the ``click`` package)."""
    try:
        from typer._click import exceptions as ex
    except ImportError:  # pragma: no cover - typer before it vendored click
        from click import exceptions as ex
    no_args = getattr(ex, "NoArgsIsHelpError", ())
    return no_args, ex.UsageError, typer.Abort


def _error_line(message: str) -> None:
    """Print ``error: <message>`` on one line (the first line of the message; all with BAYESBRIDGE_DEBUG)."""
    lines = [line for line in str(message).splitlines() if line.strip()] or ["(no message)"]
    text = " ".join(lines) if os.environ.get("BAYESBRIDGE_DEBUG") else lines[0]
    if len(lines) > 1 and not os.environ.get("BAYESBRIDGE_DEBUG"):
        text += " (set BAYESBRIDGE_DEBUG=1 for the details)"
    console.print(f"[bold red]error:[/bold red] {escape(text)}", soft_wrap=True, highlight=False)


def main(args: list[str] | None = None) -> None:
    """Entry point: run the app; bad input ends with one ``error:`` line and exit code 2.

    :class:`~bayesbridge.errors.BayesBridgeError` and click usage errors (unknown options,
    values of the wrong type) are printed as one line and exit with code 2; an interrupt
    (Ctrl-C) prints one line and exits with code 130.

    Parameters
    ----------
    args : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    """
    no_args, usage_error, abort = _click_exceptions()
    try:
        code = app(args=args, prog_name="bayesbridge", standalone_mode=False)
    except no_args as exc:
        console.print(exc.ctx.get_help() if exc.ctx is not None else str(exc), markup=False, highlight=False)
        raise SystemExit(2) from None
    except usage_error as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error_line(f"{exc.format_message()}{where}")
        raise SystemExit(2) from None
    except abort:
        _error_line("interrupted; no partial output was left behind.")
        raise SystemExit(130) from None
    except BayesBridgeError as exc:
        _error_line(str(exc))
        raise SystemExit(2) from None
    except MemoryError:
        _error_line("out of memory; reduce the problem size (--members, --years, the period).")
        raise SystemExit(2) from None
    if code == 130:
        _error_line("interrupted; no partial output was left behind.")
    sys.exit(code if isinstance(code, int) else 0)
