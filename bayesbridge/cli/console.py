"""The console every command prints to (rich)."""

from __future__ import annotations

from rich.console import Console

__all__ = ["console"]

console = Console()
"""Shared :class:`rich.console.Console` of the command line."""
