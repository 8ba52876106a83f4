"""Latent posterior draws of an engine result: whole trajectories, or an error.

:class:`LatentDraws` turns an :class:`~bayesbridge.infer.result.AssimilationResult` into draws
``(k, draw, d)`` at any block of ``k`` time steps, pooling batched results (``(*batch, T,
member, d)``) into ``draw = b * member + m``. Every draw is one member of the engine's ensemble
followed through time, i.e. a whole trajectory, so that statistics over time (variances of
anomalies, spectra, event counts, ``docs/design.md`` section 6) are those of posterior
realisations:

- ``smoothed``: the smoothed ensemble: trajectories from the joint smoothing posterior
  :math:`p(z_{1:T} \\mid y_{1:T})` (ensemble Kalman smoother, particle backward simulation,
  Kalman forward-filtering backward-sampling, variational draws);
- ``filtered``: an *unweighted* filtered ensemble (EnKF/ETKF members, each propagated from its
  own previous analysis).

There is no per-step sampling: a weighted particle ensemble (``log_weights``) is a set of
particles per step whose identities do not persist through resampling, and moments alone (an
exact Kalman result without draws) say nothing about the dependence between steps; drawing each
step independently from them gives marginals but temporally incoherent "trajectories". Such a
result raises :class:`~bayesbridge.errors.ParameterError` naming the remedy: backward simulation
for the particle filter (``smoother="backward"``, its default), trajectory draws for the Kalman
engine (``members=N``: forward-filtering backward-sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.errors import InputValueError, ParameterError, ShapeMismatchError, check_choice
from bayesbridge.infer.result import AssimilationResult

__all__ = ["Source", "LatentDraws", "seed_for"]

Source = Literal["auto", "smoothed", "filtered"]


def seed_for(seed: int, stream: int, step: int) -> int:
    """A 64-bit seed for ``(seed, stream, step)`` (independent streams per time step)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0])


def _no_trajectories(result: AssimilationResult, why: str) -> ParameterError:
    """The error for a result without whole-trajectory draws, naming the engine's remedy."""
    remedy = {
        "pf": "assimilate(..., method='pf', smoother='backward') (the default) for backward-simulation "
              "trajectories (n_trajectories sets their number)",
        "kalman": "assimilate(..., method='kalman', members=N) for N forward-filtering backward-sampling "
                  "trajectories",
    }.get(result.method, "an engine that returns a smoothed or unweighted ensemble (method='enks', 'pf', "
                         "'kalman' with members=N, or 'svi')")
    return ParameterError(
        f"source: {why}; per-step draws would not be whole trajectories (their dependence over time "
        f"is lost). Use {remedy}."
    )


@dataclass
class LatentDraws:
    """Where a posterior's latent trajectories come from, and how to read them at given steps.

    Attributes
    ----------
    source : {"smoothed", "filtered"}
        The ensemble the draws are (see the module docstring).
    batch : tuple of int
        Leading batch shape of the result (independent runs).
    members : int
        Draws per run (ensemble members or trajectories).
    n_steps, latent_dim : int
        ``T`` and ``d``.
    seed : int
        Seed of the posterior (kept for the decoding streams, :func:`seed_for`).
    device : torch.device
        Where the result's tensors live (draws are formed there).
    ensemble : Tensor ``(*batch, T, member, d)``
        The smoothed or unweighted filtered ensemble.
    """

    source: str
    batch: tuple[int, ...]
    members: int
    n_steps: int
    latent_dim: int
    seed: int
    device: torch.device
    ensemble: torch.Tensor

    @property
    def n_batch(self) -> int:
        """Number of pooled runs, ``prod(batch)``."""
        return int(math.prod(self.batch)) if self.batch else 1

    @property
    def n_draws(self) -> int:
        """Pooled draws, ``n_batch * members``."""
        return self.n_batch * self.members

    @classmethod
    def from_result(cls, result: AssimilationResult, source: str = "auto", *, seed: int = 0) -> LatentDraws:
        """Choose the trajectories of ``result``.

        Parameters
        ----------
        result : AssimilationResult
            Engine output; ensembles ``(*batch, T, member, d)``.
        source : {"auto", "smoothed", "filtered"}
            ``auto`` = the smoothed ensemble, else an unweighted filtered ensemble.
        seed : int
            Seed of the posterior (stored, see :attr:`seed`).

        Raises
        ------
        ParameterError
            For an unknown ``source``, a weighted (particle) filtered ensemble, or a result with
            no ensemble at all (e.g. the Kalman engine without ``members``); the message names
            the remedy.
        InputValueError
            If the requested ensemble is missing from ``result``.
        """
        check_choice(source, "source", get_args(Source))
        weighted = result.log_weights is not None
        if source == "auto":
            if result.smoothed_ensemble is not None:
                source = "smoothed"
            elif result.filtered_ensemble is not None and not weighted:
                source = "filtered"
            elif result.filtered_ensemble is not None:
                raise _no_trajectories(result, "the result holds a weighted particle ensemble per step and no "
                                               "backward-simulation trajectories")
            else:
                raise _no_trajectories(result, f"method {result.method!r} returned moments only, no trajectory draws")
        ens = getattr(result, f"{source}_ensemble")
        if ens is None:
            raise InputValueError(
                f"source: {source!r} requested but result.{source}_ensemble is None (method "
                f"{result.method!r}); use source='auto' or an engine that returns it."
            )
        if source == "filtered" and weighted:
            raise _no_trajectories(result, "source='filtered' asks for the weighted particle ensemble, whose "
                                           "members are not trajectories")
        if ens.ndim < 3:
            raise ShapeMismatchError(
                f"result.{source}_ensemble: expected shape (*batch, T, member, d), got {tuple(ens.shape)}."
            )
        return cls(source, tuple(ens.shape[:-3]), int(ens.shape[-2]), result.n_steps, result.latent_dim,
                   int(seed), result.device, ens.detach())

    def steps(self, steps: np.ndarray) -> torch.Tensor:
        """Latent draws ``(len(steps), draw, d)`` float64 at integer positions ``steps``, on :attr:`device`."""
        b, m, d = self.n_batch, self.members, self.latent_dim
        idx = torch.as_tensor(steps, dtype=torch.long, device=self.device)
        z = self.ensemble.reshape(b, self.n_steps, m, d)[:, idx].to(torch.float64)  # (b, k, m, d)
        return z.movedim(0, 1).reshape(len(steps), b * m, d)
