"""The result of :meth:`bayesbridge.bridge.Bridge.assimilate`: the posterior and how it was made."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.infer.result import AssimilationResult

__all__ = ["BridgeResult"]


@dataclass
class BridgeResult:
    """What :meth:`Bridge.assimilate` returns.

    Attributes
    ----------
    posterior : Posterior
        Decoded field summaries, index series and draws.
    result : AssimilationResult
        The engine's latent output.
    model : StateSpaceModel
        The state-space model that was assimilated into.
    observations : xarray.Dataset
        The assimilated indices on ``time``, or ``(run, time)`` for a batch of runs.
    obs_error : pandas.Series
        Observation-error standard deviation used per index (the nominal one, the floor of
        integrated scales).
    scales : ScaledAssimilation, optional
        How the error scales were treated, and their draws when integrated.
    y : numpy.ndarray, optional
        The rows the engine assimilated, ``(T, m)`` or ``(run, T, m)`` (NaN = missing), in the
        order of ``model.obs_names`` (a profile such as ``eq_sst`` gives one row per longitude).
    """

    posterior: object
    result: AssimilationResult
    model: object
    observations: xr.Dataset
    obs_error: pd.Series
    scales: object = None
    y: np.ndarray | None = None
