"""bayesbridge: Bayesian bridging of idealized and operational Earth-system models.

The data flow (see ``DESIGN.md``): :mod:`bayesbridge.io` reads operational fields,
:mod:`bayesbridge.regions` computes indices, :mod:`bayesbridge.idealized` simulates the multiscale
ENSO model, :mod:`bayesbridge.latent` compresses fields and learns latent dynamics,
:mod:`bayesbridge.model` and :mod:`bayesbridge.infer` assimilate, and
:mod:`bayesbridge.diagnostics` evaluates and explains.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from bayesbridge.errors import BayesBridgeError

try:
    __version__ = version("bayesbridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

_SUBMODULES = (
    "io",
    "regions",
    "datasets",
    "idealized",
    "latent",
    "model",
    "infer",
    "posterior",
    "bridge",
    "reanalysis",
    "diagnostics",
    "parallel",
    "propagate",
    "devices",
    "sensitivity",
    "demo",
    "errors",
)

__all__ = ["BayesBridgeError", "Bridge", "BridgeConfig", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    # Subpackages load lazily: `import bayesbridge` stays fast for the CLI, and torch/pyro are
    # only imported by the pieces that need them.
    if name in ("Bridge", "BridgeConfig"):
        from bayesbridge import bridge

        return getattr(bridge, name)
    if name in _SUBMODULES:
        module = import_module(f"bayesbridge.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge' has no attribute {name!r}")
