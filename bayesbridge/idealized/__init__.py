"""The multiscale stochastic conceptual ENSO model: fast ensemble simulator and calibration.

:class:`MultiscaleENSO` (Chen, Fang & Yu 2022, 2024 parameters) simulates ensembles with a
compiled numba kernel; :mod:`.calibrate` infers its parameters from observed ENSO statistics
with a synthetic likelihood. :mod:`.eq_sst` turns a run into the equatorial SST profile
``eq_sst`` and its observation operator.
"""

from __future__ import annotations

from bayesbridge.idealized.model import DT_MAX, MultiscaleENSO, member_generators
from bayesbridge.idealized.params import SCALES, ENSOParameters

__all__ = ["MultiscaleENSO", "ENSOParameters", "SCALES", "DT_MAX", "member_generators", "calibrate",
           "equatorial_sst_operator", "with_equatorial_sst", "profile_observation"]


_EQ_SST = ("equatorial_sst_operator", "with_equatorial_sst", "profile_observation")


def __getattr__(name: str):
    from importlib import import_module

    if name == "calibrate":  # torch/pyro-free import of the simulator
        module = import_module("bayesbridge.idealized.calibrate")
        globals()[name] = module
        return module
    if name in _EQ_SST:  # the simulator's import stays free of the observed records
        value = getattr(import_module("bayesbridge.idealized.eq_sst"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayesbridge.idealized' has no attribute {name!r}")
