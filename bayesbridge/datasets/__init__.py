"""Data that ships with bayesbridge: observed indices (:mod:`.observed`) and the synthetic twin
experiment (:mod:`.twin`)."""

from __future__ import annotations

from bayesbridge.datasets.observed import (
    ObservedStatistics,
    data_path,
    equatorial_regression,
    observed_indices,
    observed_statistics,
    provenance,
    wind_bursts,
)
from bayesbridge.datasets.twin import (
    OBSERVED_VARIABLES,
    THERMOCLINE_PER_ZOS,
    OscillatorTarget,
    TwinExperiment,
    make_twin_experiment,
    synthetic_operational,
    synthetic_truth,
    twin_from_drivers,
    write_cmip6,
)

__all__ = [
    "data_path",
    "observed_indices",
    "wind_bursts",
    "equatorial_regression",
    "provenance",
    "ObservedStatistics",
    "observed_statistics",
    "TwinExperiment",
    "make_twin_experiment",
    "twin_from_drivers",
    "synthetic_truth",
    "synthetic_operational",
    "write_cmip6",
    "OscillatorTarget",
    "OBSERVED_VARIABLES",
    "THERMOCLINE_PER_ZOS",
]
