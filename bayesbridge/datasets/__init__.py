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

__all__ = [
    "data_path",
    "observed_indices",
    "wind_bursts",
    "equatorial_regression",
    "provenance",
    "ObservedStatistics",
    "observed_statistics",
]
