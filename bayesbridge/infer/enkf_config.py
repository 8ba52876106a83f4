"""Configuration of the ensemble Kalman engines: :class:`EnKFConfig` and its choices.

The variants, the inversion of the innovation covariance, the sampling of the initial ensemble
and of the model error, the smoother and the engine are described with the algorithms in
:mod:`bayesbridge.infer.enkf`; this module only holds and validates the choices (errors name the
option and say what was expected). :data:`MIN_MEMBERS` is the smallest ensemble size per variant
(two members give the first sample covariance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from bayesbridge.errors import ParameterError, check_choice

__all__ = ["EnKFConfig", "Variant", "Inversion", "Sampling", "Smoother", "Engine", "MIN_MEMBERS"]

Variant = Literal["enkf", "etkf", "enks"]
Inversion = Literal["eigh", "tikhonov"]
Sampling = Literal["exact", "centred", "random"]
Smoother = Literal["rts", "transform"]
Engine = Literal["auto", "compiled", "torch"]
MIN_MEMBERS: dict[str, int] = {"enkf": 2, "etkf": 2, "enks": 2}


@dataclass
class EnKFConfig:
    """Configuration of the ensemble Kalman engines (validated on construction).

    Attributes
    ----------
    variant : {"enkf", "etkf", "enks"}
        Stochastic EnKF, ETKF (symmetric square root) or ETKF-based ensemble Kalman smoother;
        :func:`~bayesbridge.infer.assimilate` sets it from ``method``.
    members : int
        Ensemble size ``N`` (at least :data:`MIN_MEMBERS` for the variant).
    inflation : float or Tensor ()
        Multiplicative inflation of the forecast anomalies, ``>= 1`` (1 = none). A 0-dim tensor
        (e.g. one requiring grad) is applied even when it equals 1, so that autograd reaches it:
        the log-evidence is differentiable in it, as in ``Q`` and ``R`` when the model holds them as
        tensors requiring grad (for fixed random numbers, i.e. a fixed seed).
    rtps : float
        Relaxation-to-prior-spread coefficient ``alpha`` in ``[0, 1]`` (0 = none).
    inversion : {"eigh", "tikhonov"}
        How the stochastic EnKF inverts the innovation covariance of the perturbed observations.
    truncation : float
        ``eigh``: eigenvalues of the whitened ``G + (N-1) I`` below ``truncation`` times the largest
        are dropped (pseudo-inverse).
    ridge : float
        ``tikhonov``: ``ridge`` times the mean eigenvalue of the whitened ``G + (N-1) I`` is added
        to its eigenvalues before inverting.
    taper : array (d, m) or None
        Schur-product localisation of the state-observation covariance in the stochastic EnKF
        gain (entries in ``[0, 1]``); see :func:`~bayesbridge.infer.localisation.gaspari_cohn`.
        Not available for ETKF/EnKS (their global transform cannot be localised without local
        analyses).
    smoother : {"rts", "transform"}
        How ``"enks"`` smooths: ``"rts"`` (default), the ensemble Rauch-Tung-Striebel smoother
        (Raanes 2016), whose gains use only consecutive ensembles and so carry no spurious
        long-range sample correlations; ``"transform"``, the Evensen & van Leeuwen (2000) EnKS
        that applies each analysis transform to the past ``lag`` ensembles.
    lag : int or None
        Smoother lag in steps for ``smoother="transform"`` (``None`` = the whole window).
    check_divergence : bool
        Check the ensemble for NaN/inf at every step and the innovations' consistency at the end.
    sampling : {"exact", "centred", "random"}
        How the initial ensemble and the model-error draws are sampled. ``"random"``: plain
        Gaussian draws. ``"centred"``: centred over members (rescaled by ``sqrt(N/(N-1))``), so
        linear dynamics propagate the ensemble mean exactly. ``"exact"`` (default): second-order
        exact sampling (Pham 2001; Evensen 2004, "improved sampling"): also orthogonal to the
        forecast anomalies and with sample covariance exactly ``P0`` / ``Q``, which removes the
        sampling error of the forecast covariance for linear dynamics; needs ``N > 2 d``, else
        it falls back to ``"centred"``.
    store_ensemble : bool
        Return ``filtered_ensemble (*batch, T, member, d)`` (memory ``T N d`` per run).
    engine : {"auto", "compiled", "torch"}
        ``"auto"`` runs linear CPU runs (one or a batch, cycled run by run) without missing
        values, stored ensembles, taper or RTPS through the compiled cycle of
        :mod:`bayesbridge.infer._enkf_kernel` (the same records and random numbers, faster for
        one run and for a batch; ``docs/lab-notes.md`` has the measurements) and everything else
        through the torch loop; ``"compiled"`` insists on the compiled cycle (an error says why a
        case is not eligible); ``"torch"`` always runs the torch loop (autograd, devices,
        reference).
    """

    variant: Variant = "enkf"
    members: int = 100
    inflation: float | torch.Tensor = 1.0
    rtps: float = 0.0
    inversion: Inversion = "eigh"
    truncation: float = 1e-10
    ridge: float = 1e-6
    taper: object | None = None
    smoother: Smoother = "rts"
    lag: int | None = None
    check_divergence: bool = True
    sampling: Sampling = "exact"
    store_ensemble: bool = True
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        check_choice(self.variant, "variant", get_args(Variant))
        check_choice(self.engine, "engine", get_args(Engine))
        check_choice(self.inversion, "inversion", get_args(Inversion))
        check_choice(self.sampling, "sampling", get_args(Sampling))
        check_choice(self.smoother, "smoother", get_args(Smoother))
        if not isinstance(self.members, int) or isinstance(self.members, bool):
            raise ParameterError(f"members: expected an integer ensemble size, got {self.members!r}.")
        need = MIN_MEMBERS[self.variant]
        if self.members < need:
            raise ParameterError(
                f"members: the {self.variant} needs at least {need} members to estimate a "
                f"covariance, got {self.members}; use 50-100 or more (2,000 for near-exact results)."
            )
        if isinstance(self.inflation, torch.Tensor):
            if self.inflation.ndim != 0:
                raise ParameterError(
                    f"inflation: expected a float or a 0-dim tensor, got a tensor of shape "
                    f"{tuple(self.inflation.shape)}; pass one factor for all runs."
                )
            self.inflation = self.inflation.to(torch.float64)  # differentiable cast, keeps the graph
            value = float(self.inflation.detach())
        elif isinstance(self.inflation, (int, float)) and not isinstance(self.inflation, bool):
            value = float(self.inflation)
        else:
            raise ParameterError(f"inflation: expected a float or a 0-dim tensor, got {self.inflation!r}.")
        if not (math.isfinite(value) and value >= 1.0):
            raise ParameterError(
                f"inflation: expected a multiplicative factor >= 1 (1 = no inflation), got {value!r}."
            )
        if not (0.0 <= self.rtps <= 1.0):
            raise ParameterError(f"rtps: expected a relaxation coefficient in [0, 1], got {self.rtps!r}.")
        if not (0.0 <= self.truncation < 1.0):
            raise ParameterError(f"truncation: expected a relative tolerance in [0, 1), got {self.truncation!r}.")
        if not (self.ridge >= 0.0):
            raise ParameterError(f"ridge: expected a non-negative Tikhonov factor, got {self.ridge!r}.")
        if self.lag is not None and (not isinstance(self.lag, int) or self.lag < 0):
            raise ParameterError(f"lag: expected None (whole window) or an integer >= 0, got {self.lag!r}.")
        if self.taper is not None:
            if self.variant != "enkf":
                raise ParameterError(
                    f"taper: localisation is implemented for the stochastic EnKF only, got variant "
                    f"{self.variant!r}; use variant='enkf' or drop the taper."
                )
            taper = torch.as_tensor(self.taper, dtype=torch.float64, device="cpu" if not isinstance(
                self.taper, torch.Tensor) else self.taper.device)
            if taper.ndim != 2 or bool(((taper < 0) | (taper > 1)).any()):
                raise ParameterError(
                    f"taper: expected a (d, m) matrix with entries in [0, 1], got shape {tuple(taper.shape)}."
                )
            self.taper = taper
