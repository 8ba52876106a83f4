"""bayesbridge: Bayesian bridging of idealized and operational Earth-system models.

The package is grouped by role, in the order data flows through it (``docs/design.md``):

- core modules: :mod:`bayesbridge.errors`, :mod:`bayesbridge.devices`,
  :mod:`bayesbridge.regions` (named boxes and their indices), :mod:`bayesbridge.dims`
  (dimension names and layouts), :mod:`bayesbridge.parallel` (dask task maps);
- :mod:`bayesbridge.io` reads operational fields and writes netCDF and ArviZ files;
- :mod:`bayesbridge.idealized` simulates and calibrates the multiscale ENSO model;
- :mod:`bayesbridge.latent` compresses fields and learns latent dynamics;
- :mod:`bayesbridge.model` is the state-space model, :mod:`bayesbridge.infer` its engines;
- :mod:`bayesbridge.bridge` chains them and decodes the posterior;
- :mod:`bayesbridge.diagnostics` scores and explains, :mod:`bayesbridge.plots` draws;
- :mod:`bayesbridge.datasets` ships observed records and the synthetic twin experiment;
- :mod:`bayesbridge.apps` (demo, reanalysis, propagation, sensitivity, report),
  :mod:`bayesbridge.bench` and :mod:`bayesbridge.cli` sit on top.

Everything loads lazily: ``import bayesbridge`` is fast, and torch/pyro are only imported by
the pieces that need them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from bayesbridge.errors import BayesBridgeError

try:
    __version__ = version("bayesbridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

_SUBMODULES: dict[str, str] = {
    name: f"bayesbridge.{name}"
    for name in ("errors", "devices", "regions", "dims", "parallel", "io", "idealized", "latent", "model",
                 "infer", "bridge", "diagnostics", "plots", "datasets", "apps", "bench")
}
# names of the flat layout before 0.2 that `bb.<name>` still resolves, and their homes
_MOVED: dict[str, str] = {
    "bayesbridge.model_pyro": "bayesbridge.model.pyro_program",
    "bayesbridge.posterior": "bayesbridge.bridge.posterior",
    "bayesbridge.posterior_plots": "bayesbridge.plots.posterior",
    "bayesbridge.reanalysis": "bayesbridge.apps.reanalysis",
    "bayesbridge.demo": "bayesbridge.apps.demo",
    "bayesbridge.propagate": "bayesbridge.apps.propagate",
    "bayesbridge.report": "bayesbridge.apps.report",
    "bayesbridge.sensitivity": "bayesbridge.apps.sobol",
    "bayesbridge.diagnostics.arviz_compat": "bayesbridge.io.arviz_compat",
    "bayesbridge.diagnostics.explain_plots": "bayesbridge.plots.explain",
    "bayesbridge.idealized.commands": "bayesbridge.cli.idealized",
    "bayesbridge.bench.commands": "bayesbridge.cli.bench",
}
_ATTRIBUTES: dict[str, str] = {
    **_SUBMODULES,
    **{old.removeprefix("bayesbridge."): new for old, new in _MOVED.items() if old.count(".") == 1},
}

__all__ = ["BayesBridgeError", "Bridge", "BridgeConfig", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in ("Bridge", "BridgeConfig"):
        return getattr(import_module("bayesbridge.bridge"), name)
    if name in _ATTRIBUTES:
        module = import_module(_ATTRIBUTES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge' has no attribute {name!r}")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``import bayesbridge.<old path>`` from the module's new home, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there.", DeprecationWarning, stacklevel=3)
        return import_module(new)

    def exec_module(self, module) -> None:
        # the module object is the new home's own, already executed: nothing to run
        return None


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
