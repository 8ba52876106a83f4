"""Applications built on the library: the twin-experiment demo, reanalysis of observed indices,
idealized-parameter propagation, Sobol sensitivity and the report, and the bridge settings the
commands offer (``bridge_options``).

Each module loads on first use (``bayesbridge.apps.demo`` ...).
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["demo", "bridge_options", "reanalysis", "propagate", "sensitivity", "sobol", "report", "scoring"]


def __getattr__(name: str):
    if name in __all__:
        module = import_module(f"bayesbridge.apps.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge.apps' has no attribute {name!r}")
