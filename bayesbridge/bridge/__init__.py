"""The bridge: operational fields -> latent space -> assimilated indices -> posterior fields.

:class:`Bridge` fits the codec and latent dynamics and assimilates index series;
:class:`~bayesbridge.bridge.posterior.Posterior` decodes the result lazily into field summaries,
index draws and ArviZ containers.
"""

from __future__ import annotations

from bayesbridge.bridge.bridge import (
    DEFAULT_OBS_ERROR_FLOOR,
    OBSERVABLES,
    RUN_DIMS,
    Bridge,
    BridgeConfig,
    BridgeResult,
)
from bayesbridge.bridge.observations import observations_from
from bayesbridge.bridge.posterior import Posterior

__all__ = ["Bridge", "BridgeConfig", "BridgeResult", "Posterior", "observations_from", "OBSERVABLES", "RUN_DIMS",
           "DEFAULT_OBS_ERROR_FLOOR"]
