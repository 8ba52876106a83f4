"""Diagnostics: ENSO statistics (:mod:`.enso`), UQ scores (:mod:`.uq`), explanations
(:mod:`.explain`, regime composites in :mod:`.regimes`).

Statistics and scores only: nothing here loads data (the ArviZ layer is
:mod:`bayesbridge.io.arviz_compat`, the figures are in :mod:`bayesbridge.plots`)."""

from __future__ import annotations

from importlib import import_module

__all__ = ["enso", "uq", "explain", "regimes"]


def __getattr__(name: str):
    if name in __all__:
        module = import_module(f"bayesbridge.diagnostics.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge.diagnostics' has no attribute {name!r}")
