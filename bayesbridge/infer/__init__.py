"""Inference engines behind one entry point, :func:`assimilate`.

Each engine lives in its own module and exposes a configuration dataclass and a ``run``
function ``run(model, observations, config, generator) -> AssimilationResult``:

========  ===========================  =====================================================
method    module                       algorithm
========  ===========================  =====================================================
kalman    :mod:`.kalman`               exact Kalman filter + RTS smoother (the oracle)
enkf      :mod:`.enkf`                 stochastic (perturbed-observation) EnKF
etkf      :mod:`.enkf`                 ensemble transform Kalman filter (square root)
enks      :mod:`.enkf`                 ensemble Kalman smoother
pf        :mod:`.particle`             bootstrap / guided particle filter + backward simulation
svi       :mod:`.variational`          SVI on the Pyro model (GaussianHMM marginalisation)
========  ===========================  =====================================================
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Literal, get_args

import torch

from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ShapeMismatchError,
)
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics
from bayesbridge.model import StateSpace, as_tensor

__all__ = ["assimilate", "Method", "METHODS", "AssimilationResult", "StepDiagnostics", "prepare_observations"]

Method = Literal["kalman", "enkf", "etkf", "enks", "pf", "svi"]
METHODS: tuple[str, ...] = get_args(Method)

# method -> (module, config class, run function); modules load lazily on first use.
_ENGINES: dict[str, tuple[str, str, str]] = {
    "kalman": ("bayesbridge.infer.kalman", "KalmanConfig", "run"),
    "enkf": ("bayesbridge.infer.enkf", "EnKFConfig", "run"),
    "etkf": ("bayesbridge.infer.enkf", "EnKFConfig", "run"),
    "enks": ("bayesbridge.infer.enkf", "EnKFConfig", "run"),
    "pf": ("bayesbridge.infer.particle", "ParticleConfig", "run"),
    "svi": ("bayesbridge.infer.variational", "SVIConfig", "run"),
}


def prepare_observations(model: StateSpace, observations) -> torch.Tensor:
    """Validate observations ``(*batch, T, m)`` against ``model`` (float64 tensor, NaN = missing)."""
    y = as_tensor(observations, "observations")
    if y.ndim < 2:
        raise ShapeMismatchError(
            f"observations: expected shape (T, m) or (*batch, T, m) with m = {model.obs_dim}, "
            f"got {tuple(y.shape)}; reshape a single series with y[:, None]."
        )
    if y.shape[-1] != model.obs_dim:
        raise ShapeMismatchError(
            f"observations: expected {model.obs_dim} variables in the last axis (model obs_dim), "
            f"got shape {tuple(y.shape)}; select the observed variables in the model's order."
        )
    if y.shape[-2] < 1:
        raise ShapeMismatchError(f"observations: expected at least one time step, got shape {tuple(y.shape)}.")
    if bool(torch.isnan(y).all()):
        raise AllMissingError(
            f"observations: all {y.numel()} values are NaN; nothing to assimilate. Check the time "
            f"selection and variable names."
        )
    if bool(torch.isinf(y).any()):
        raise InputValueError("observations: contain +/-inf; replace them by NaN to mark missing values.")
    return y


def assimilate(
    model: StateSpace,
    observations,
    method: Method = "kalman",
    *,
    members: int | None = None,
    seed: int | torch.Generator | None = None,
    **method_options,
) -> AssimilationResult:
    """Assimilate ``observations`` into ``model`` with the chosen engine.

    Parameters
    ----------
    model : StateSpace
        E.g. :class:`bayesbridge.model.LinearGaussianModel`.
    observations : array (T, m) or (*batch, T, m)
        ``y_1..y_T``; NaN marks a missing component. Leading dimensions are independent runs,
        processed together (no Python loop over runs).
    method : {"kalman", "enkf", "etkf", "enks", "pf", "svi"}
    members : int, optional
        Ensemble members / particles / posterior draws (method-dependent default).
    seed : int or torch.Generator, optional
        Source of randomness; the same seed gives the same result.
    **method_options
        Fields of the engine's configuration dataclass (e.g. ``inflation=1.02`` for EnKF).

    Returns
    -------
    AssimilationResult
    """
    if method not in _ENGINES:
        raise InputValueError(
            f"method: expected one of {', '.join(METHODS)}, got {method!r}."
        )
    module_name, config_name, run_name = _ENGINES[method]
    module = import_module(module_name)
    config_cls = getattr(module, config_name)
    options = dict(method_options)
    field_names = {f.name for f in dataclasses.fields(config_cls)}
    if "variant" in field_names and method in ("enkf", "etkf", "enks"):
        options.setdefault("variant", method)
    if members is not None:
        options["members"] = members
    unknown = sorted(set(options) - field_names)
    if unknown:
        raise InputValueError(
            f"method_options: {', '.join(unknown)} not understood by method {method!r}; valid "
            f"options are {', '.join(sorted(field_names))}."
        )
    config = config_cls(**options)
    y = prepare_observations(model, observations)
    if isinstance(seed, torch.Generator):
        generator = seed
    elif seed is None or isinstance(seed, int):
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    else:
        raise InputTypeError(f"seed: expected an int or torch.Generator, got {type(seed).__name__}.")
    return getattr(module, run_name)(model, y, config, generator)
