"""Configuration of the particle filter: :class:`ParticleConfig` and its choices.

The proposals, the resampling rule, the observation-error families and the backward-simulation
smoother are described with the algorithm in :mod:`bayesbridge.infer.particle`; this module
holds and validates the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from bayesbridge.errors import ParameterError, check_choice

__all__ = ["ParticleConfig", "Proposal", "Resample", "Smoother", "ObsLikelihood"]

Proposal = Literal["auto", "guided", "bootstrap"]
Resample = Literal["systematic"]
Smoother = Literal["none", "backward"]
ObsLikelihood = Literal["gaussian", "student_t"]


@dataclass
class ParticleConfig:
    """Configuration of the particle filter.

    Parameters
    ----------
    members : int
        Number of particles ``N`` (>= 10; default 1000).
    proposal : {"auto", "guided", "bootstrap"}
        ``"guided"``: the locally optimal proposal of a linear(ised) Gaussian observation (exact
        for an affine observation operator, linearised by autograd otherwise); ``"bootstrap"``:
        the transition density. ``"auto"`` (default): ``"guided"`` when the observation operator
        is affine (an observation matrix, or found affine by probing) or differentiable by torch
        autograd, else ``"bootstrap"``. A bootstrap filter's weights collapse when the
        observations are more informative than the transition (issue 14: median ESS 20 of 100
        on the ENSO indices); the guided proposal's weights are the predictive densities
        :math:`p(y_t | z_{t-1}^i)`, which vary far less.
    resample : {"systematic"}
    ess_threshold : float in (0, 1]
        Resample when ``ESS < ess_threshold * N`` (1 resamples every step).
    smoother : {"none", "backward"}
        Backward simulation of ``n_trajectories`` trajectories (needs a positive-definite
        model-error covariance).
    n_trajectories : int
        Number of smoothed trajectories (``smoothed_ensemble``'s member axis).
    obs_likelihood : {"gaussian", "student_t"}
        Observation-error family; ``student_t`` uses independent components with scale
        ``sqrt(R_kk)`` and ``df`` degrees of freedom (variance ``R_kk df / (df - 2)``), so ``R``
        must be diagonal.
    df : float
        Degrees of freedom of the Student-t error (> 0).
    store_ensemble : bool
        Return ``filtered_ensemble`` ``(*batch, T, N, d)`` and ``log_weights`` (memory ``T N d``
        per run). ``False`` keeps only the last two steps (the backward smoother still stores
        what it needs, without returning it).
    warn_degeneracy : bool
        Emit a :class:`~bayesbridge.infer.degeneracy.DegeneracyWarning` when the ESS falls below
        10 % of the particles at more than 5 % of the steps (default True).
    """

    members: int = 1000
    proposal: Proposal = "auto"
    resample: Resample = "systematic"
    ess_threshold: float = 0.5
    smoother: Smoother = "backward"
    n_trajectories: int = 100
    obs_likelihood: ObsLikelihood = "gaussian"
    df: float = 4.0
    store_ensemble: bool = True
    warn_degeneracy: bool = True

    def __post_init__(self) -> None:
        check_choice(self.proposal, "proposal", get_args(Proposal))
        check_choice(self.resample, "resample", get_args(Resample))
        check_choice(self.smoother, "smoother", get_args(Smoother))
        check_choice(self.obs_likelihood, "obs_likelihood", get_args(ObsLikelihood))
        if not isinstance(self.members, int) or self.members < 10:
            raise ParameterError(
                f"members: a particle filter needs at least 10 particles (1,000 or more for a useful "
                f"log-evidence), got {self.members!r}."
            )
        if not 0.0 < float(self.ess_threshold) <= 1.0:
            raise ParameterError(f"ess_threshold: expected a number in (0, 1], got {self.ess_threshold!r}.")
        if not isinstance(self.n_trajectories, int) or self.n_trajectories < 1:
            raise ParameterError(f"n_trajectories: expected a positive integer, got {self.n_trajectories!r}.")
        if not float(self.df) > 0.0:
            raise ParameterError(f"df: expected positive degrees of freedom, got {self.df!r}.")
