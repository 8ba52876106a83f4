"""Every figure bayesbridge draws (matplotlib/seaborn), one module per subject.

:mod:`.enso` (index PDFs, phase locking, spectra, Hovmoeller), :mod:`.posterior` (posterior maps,
bands, rank histograms), :mod:`.explain` (gains, increments, regime composites), :mod:`.report`
(the demo report's figures) and :mod:`.sensitivity` (Sobol indices). The ENSO figures are also
available here directly (``bb.plots.plot_pdfs``).
"""

from __future__ import annotations

from importlib import import_module

_ENSO = ("plot_pdfs", "plot_phase_locking", "plot_spectra", "plot_hovmoller")
_MODULES = ("enso", "posterior", "explain", "report", "sensitivity")

__all__ = [*_ENSO, *_MODULES]


def __getattr__(name: str):
    # figures load matplotlib: only on first use
    if name in _ENSO:
        value = getattr(import_module("bayesbridge.plots.enso"), name)
    elif name in _MODULES:
        value = import_module(f"bayesbridge.plots.{name}")
    else:
        raise AttributeError(f"module 'bayesbridge.plots' has no attribute {name!r}")
    globals()[name] = value
    return value
