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
pf        :mod:`.particle`             guided (auto) / bootstrap particle filter + backward simulation
svi       :mod:`.variational`          SVI: exact marginalisation or a Gauss-Markov trajectory guide
========  ===========================  =====================================================
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Literal, get_args

import torch

from bayesbridge.devices import generator_on, resolve_device
from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    InputValueError,
    ObservationValueError,
    ParameterError,
    ShapeMismatchError,
)
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics
from bayesbridge.model import StateSpace, as_tensor

__all__ = ["assimilate", "Method", "METHODS", "AssimilationResult", "StepDiagnostics", "prepare_observations",
           "OUTLIER_FACTOR"]

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

# engines whose tensors do not yet follow their inputs' device
_CPU_ONLY: frozenset[str] = frozenset({"svi"})


OUTLIER_FACTOR = 1e6
"""A value farther than this many robust standard deviations from its component's median is
rejected by :func:`prepare_observations` (a fill value or an overflow, not an observation)."""


def prepare_observations(model: StateSpace, observations) -> torch.Tensor:
    """Validate observations ``(*batch, T, m)`` against ``model`` (float64 tensor, NaN = missing).

    Besides shapes: not every value may be missing; ``+/-inf`` is rejected, and so is a value
    more than :data:`OUTLIER_FACTOR` robust standard deviations (``1.4826 * MAD``) from the
    median of its component (fill values such as ``1e30``), each naming the time step, run and
    component of the first offending value, before any engine runs.

    Parameters
    ----------
    model : StateSpace
        The model (its ``obs_dim``).
    observations : array-like (*batch, T, m)
        ``y_1..y_T``, NaN = missing.

    Returns
    -------
    torch.Tensor
        float64 ``(*batch, T, m)``.
    """
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
        raise ObservationValueError(f"observations: {_where(y, torch.isinf(y))} is {_first(y, torch.isinf(y)):g}; "
                              f"replace +/-inf by NaN to mark missing values.")
    _check_outliers(y)
    return y


def _where(y: torch.Tensor, bad: torch.Tensor) -> str:
    """``"the value at time step t (run r, component k)"`` of the first flagged entry, in time order."""
    T, m = y.shape[-2], y.shape[-1]
    flat = bad.reshape(-1, T, m)
    step = int(flat.any(0).any(-1).nonzero()[0])
    run, comp = (int(i) for i in flat[:, step, :].nonzero()[0])
    runs = f"run {run}, " if flat.shape[0] > 1 else ""
    return f"the value at time step {step} ({runs}component {comp})"


def _first(y: torch.Tensor, bad: torch.Tensor) -> float:
    T, m = y.shape[-2], y.shape[-1]
    flat, flags = y.reshape(-1, T, m), bad.reshape(-1, T, m)
    step = int(flags.any(0).any(-1).nonzero()[0])
    run, comp = (int(i) for i in flags[:, step, :].nonzero()[0])
    return float(flat[run, step, comp])


def _check_outliers(y: torch.Tensor) -> None:
    """Reject values :data:`OUTLIER_FACTOR` robust standard deviations from their component's median."""
    values = y.detach().reshape(-1, y.shape[-1]).cpu()
    bad = torch.zeros_like(values, dtype=torch.bool)
    for k in range(values.shape[-1]):
        col = values[:, k]
        ok = col[~torch.isnan(col)]
        if ok.numel() < 3:
            continue
        med = ok.median()
        mad = (ok - med).abs().median() * 1.4826
        scale = float(mad) if float(mad) > 0 else max(float(med.abs()), 1.0)
        bad[:, k] = (col - med).abs() > OUTLIER_FACTOR * scale
    if bool(bad.any()):
        bad = bad.reshape(y.shape).to(y.device)
        raise ObservationValueError(
            f"observations: {_where(y, bad)} is {_first(y, bad):g}, more than {OUTLIER_FACTOR:.0e} robust standard "
            f"deviations from the other values of that component; a fill value or an overflow? Replace it by "
            f"NaN (missing) or fix the units."
        )


def assimilate(
    model: StateSpace,
    observations,
    method: Method = "kalman",
    *,
    members: int | None = None,
    seed: int | torch.Generator | None = None,
    device: str | torch.device | None = None,
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
        Source of randomness; the same seed gives the same result on the same device (CPU and
        CUDA generators draw different streams, so results agree across devices in distribution,
        and exactly for the deterministic Kalman filter). A generator must live on the device
        the engine runs on.
    device : str or torch.device, optional
        Where the engine runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... The model (its ``to``
        method) and the observations are moved there and every tensor the engine creates
        follows them; the result lives there too (:meth:`AssimilationResult.cpu` brings it
        back). ``None`` (default) runs where the model lives (the CPU unless it was moved with
        ``model.to(...)``). Compiled CPU kernels (the steady-state Kalman engine, the compiled
        particle filter) are used on the CPU only; on a GPU the equivalent torch loops run.
    **method_options
        Fields of the engine's configuration dataclass (e.g. ``inflation=1.02`` for EnKF).

    Returns
    -------
    AssimilationResult

    Raises
    ------
    ParameterError
        For an unknown ``device``, a CUDA device on a machine without CUDA, a ``seed``
        generator on another device, or a model that cannot be moved.
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
    if method in _CPU_ONLY and device is not None and resolve_device(device, "device").type != "cpu":
        raise ParameterError(
            f"device: method {method!r} runs on the CPU only (its Pyro model builds CPU tensors), got "
            f"device={device!r}; use device='cpu', or a filter/smoother method ({', '.join(sorted(set(METHODS) - _CPU_ONLY))}) "
            f"on the GPU."
        )
    model, dev = _model_on(model, device)
    y = prepare_observations(model, observations)
    if dev is not None and y.device != dev:
        y = y.to(dev)
    dev = y.device if dev is None else dev
    if isinstance(seed, torch.Generator):
        if seed.device.type != dev.type:
            raise ParameterError(
                f"seed: the generator lives on {seed.device} but the engine runs on {dev}; pass an int seed "
                f"or torch.Generator(device={str(dev)!r})."
            )
        generator = seed
    elif seed is None or isinstance(seed, int):
        generator = generator_on(0 if seed is None else int(seed), dev)
    else:
        raise InputTypeError(f"seed: expected an int or torch.Generator, got {type(seed).__name__}.")
    return getattr(module, run_name)(model, y, config, generator)


def _model_on(model: StateSpace, device) -> tuple[StateSpace, torch.device | None]:
    """``(model on device, device)``; with ``device=None`` the model's own device (None if unknown)."""
    if device is None:
        dev = getattr(model, "device", None)
        return model, dev if isinstance(dev, torch.device) else None
    dev = resolve_device(device, "device")
    current = getattr(model, "device", None)
    if isinstance(current, torch.device) and current == dev:
        return model, dev
    mover = getattr(model, "to", None)
    if not callable(mover):
        if dev.type == "cpu":
            return model, dev
        raise ParameterError(
            f"device: {type(model).__name__} has no to(device) method, so it cannot be moved to {dev}; "
            f"add one (returning a copy on the device) or use device='cpu'."
        )
    return mover(dev), dev
