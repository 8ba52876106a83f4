"""The multiscale stochastic conceptual ENSO model: fast ensemble simulator and calibration.

:class:`MultiscaleENSO` (Chen, Fang & Yu 2022, 2024 parameters) simulates ensembles with a
compiled numba kernel; :mod:`.calibrate` infers its parameters from observed ENSO statistics
with a synthetic likelihood.
"""

from __future__ import annotations

from bayesbridge.idealized.model import DT_MAX, MultiscaleENSO, member_generators
from bayesbridge.idealized.params import SCALES, ENSOParameters

__all__ = ["MultiscaleENSO", "ENSOParameters", "SCALES", "DT_MAX", "member_generators", "calibrate"]


def __getattr__(name: str):
    if name == "calibrate":  # torch/pyro-free import of the simulator
        from importlib import import_module

        module = import_module("bayesbridge.idealized.calibrate")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge.idealized' has no attribute {name!r}")
