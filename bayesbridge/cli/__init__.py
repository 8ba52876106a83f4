"""The ``bayesbridge`` command line (typer): the root app and one module per command group."""

from __future__ import annotations

from bayesbridge.cli.app import app, main

__all__ = ["app", "main"]
