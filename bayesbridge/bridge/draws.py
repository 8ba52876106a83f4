"""Latent posterior draws of an engine result, time step by time step.

:class:`LatentDraws` turns an :class:`~bayesbridge.infer.result.AssimilationResult` into draws
``(k, draw, d)`` at any block of ``k`` time steps, pooling batched results (``(*batch, T,
member, d)``) into ``draw = b * member + m``:

- ``smoothed``: the smoothed ensemble, whole trajectories (ensemble Kalman smoother, particle
  backward simulation, variational / Kalman trajectory draws);
- ``filtered``: the filtered ensemble; particle weights (``log_weights``) are honoured by
  systematic resampling at every step (Kitagawa 1996, *J. Comput. Graph. Stat.* 5, 1-25) with a
  generator seeded per step;
- ``gaussian``: for engines that return only moments (exact Kalman), independent draws per time
  step from ``N(mean_t, cov_t)`` (marginals, not trajectories).

Random numbers come from CPU generators seeded by ``(seed, stream, step)``, so the draws of a step
do not depend on the block it is asked for in, nor on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from bayesbridge.errors import InputValueError, ParameterError, ShapeMismatchError
from bayesbridge.infer.resampling import systematic_indices
from bayesbridge.infer.result import AssimilationResult

__all__ = ["Source", "LatentDraws", "seed_for"]

Source = Literal["auto", "smoothed", "filtered", "gaussian"]

# generator streams of (seed, stream, step): one per kind of randomness
_STREAM_RESAMPLE, _STREAM_GAUSSIAN = 1, 2


def seed_for(seed: int, stream: int, step: int) -> int:
    """A 64-bit seed for ``(seed, stream, step)`` (independent streams per time step)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0])


@dataclass
class LatentDraws:
    """Where a posterior's latent draws come from, and how to form them at given steps.

    Attributes
    ----------
    source : {"smoothed", "filtered", "gaussian"}
        The kind of draws (see the module docstring).
    batch : tuple of int
        Leading batch shape of the result (independent runs).
    members : int
        Draws per run (ensemble members, particles, or Gaussian draws).
    n_steps, latent_dim : int
        ``T`` and ``d``.
    seed : int
        Seed of the resampling and Gaussian draws.
    device : torch.device
        Where the result's tensors live (draws are formed there).
    ensemble : Tensor ``(*batch, T, member, d)``, optional
        The smoothed or filtered ensemble (``smoothed`` and ``filtered`` draws).
    log_weights : Tensor ``(*batch, T, member)``, optional
        Particle weights of a filtered ensemble, honoured by resampling.
    mean : Tensor ``(*batch, T, d)``, optional
        Per-step posterior mean (``gaussian`` draws).
    chol : Tensor ``(*batch, T, d, d)``, optional
        Cholesky factor of the per-step covariance (``gaussian`` draws).
    """

    source: str
    batch: tuple[int, ...]
    members: int
    n_steps: int
    latent_dim: int
    seed: int
    device: torch.device
    ensemble: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    chol: torch.Tensor | None = None

    @property
    def n_batch(self) -> int:
        """Number of pooled runs, ``prod(batch)``."""
        return int(math.prod(self.batch)) if self.batch else 1

    @property
    def n_draws(self) -> int:
        """Pooled draws, ``n_batch * members``."""
        return self.n_batch * self.members

    @classmethod
    def from_result(cls, result: AssimilationResult, source: str = "auto", *, seed: int = 0,
                    gaussian_draws: int = 100) -> LatentDraws:
        """Choose the draws of ``result``.

        Parameters
        ----------
        result : AssimilationResult
            Engine output; ensembles ``(*batch, T, member, d)``.
        source : {"auto", "smoothed", "filtered", "gaussian"}
            ``auto`` = smoothed ensemble, else filtered ensemble, else Gaussian marginals from the
            smoothed (else filtered) mean and covariance.
        seed : int
            Seed of the per-step resampling and Gaussian draws.
        gaussian_draws : int
            Number of draws for ``source="gaussian"``.
        """
        if source not in get_args(Source):
            raise ParameterError(f"source: expected one of {', '.join(get_args(Source))}, got {source!r}.")
        if source == "auto":
            if result.smoothed_ensemble is not None:
                source = "smoothed"
            elif result.filtered_ensemble is not None:
                source = "filtered"
            else:
                source = "gaussian"
        common = {"n_steps": result.n_steps, "latent_dim": result.latent_dim, "seed": int(seed),
                  "device": result.device}
        if source in ("smoothed", "filtered"):
            ens = getattr(result, f"{source}_ensemble")
            if ens is None:
                raise InputValueError(
                    f"source: {source!r} requested but result.{source}_ensemble is None (method "
                    f"{result.method!r}); use source='auto' or an engine that returns it."
                )
            if ens.ndim < 3:
                raise ShapeMismatchError(
                    f"result.{source}_ensemble: expected shape (*batch, T, member, d), got {tuple(ens.shape)}."
                )
            weights = None
            if source == "filtered" and result.log_weights is not None:
                if tuple(result.log_weights.shape) != tuple(ens.shape[:-1]):
                    raise ShapeMismatchError(
                        f"result.log_weights: expected shape {tuple(ens.shape[:-1])} (*batch, T, member) "
                        f"to match filtered_ensemble, got {tuple(result.log_weights.shape)}."
                    )
                weights = result.log_weights.detach()
            return cls(source, tuple(ens.shape[:-3]), int(ens.shape[-2]), ensemble=ens.detach(),
                       log_weights=weights, **common)
        mean = result.smoothed_mean if result.smoothed_cov is not None else result.filtered_mean
        cov = result.smoothed_cov if result.smoothed_cov is not None else result.filtered_cov
        if cov is None:
            raise InputValueError(
                f"result: method {result.method!r} returned neither an ensemble nor a covariance; "
                f"no posterior draws can be formed. Use an ensemble, particle or Kalman engine."
            )
        chol = torch.linalg.cholesky(
            cov.detach().to(torch.float64)
            + 1e-12 * torch.eye(cov.shape[-1], dtype=torch.float64, device=cov.device)
        )
        return cls("gaussian", tuple(mean.shape[:-2]), gaussian_draws, mean=mean.detach().to(torch.float64),
                   chol=chol, **common)

    def steps(self, steps: np.ndarray) -> torch.Tensor:
        """Latent draws ``(len(steps), draw, d)`` float64 at integer positions ``steps``, on :attr:`device`.

        The random numbers come from CPU generators seeded per step (the same draws on every
        device) and are moved to the device once per block.
        """
        b, m, d = self.n_batch, self.members, self.latent_dim
        dev = self.device
        idx = torch.as_tensor(steps, dtype=torch.long, device=dev)
        if self.source == "gaussian":
            mean = self.mean.reshape(b, self.n_steps, d)[:, idx]
            chol = self.chol.reshape(b, self.n_steps, d, d)[:, idx]
            eps = torch.stack([
                torch.randn(b, m, d, dtype=torch.float64, device="cpu",
                            generator=torch.Generator().manual_seed(seed_for(self.seed, _STREAM_GAUSSIAN, int(t))))
                for t in steps
            ], dim=1).to(dev)  # (b, k, m, d)
            z = mean[:, :, None, :] + torch.einsum("bkij,bkmj->bkmi", chol, eps)
        else:
            ens = self.ensemble.reshape(b, self.n_steps, m, d)[:, idx].to(torch.float64)  # (b, k, m, d)
            if self.log_weights is not None:
                lw = self.log_weights.reshape(b, self.n_steps, m)[:, idx]  # (b, k, m)
                anc = []
                for k, t in enumerate(steps):
                    g = torch.Generator().manual_seed(seed_for(self.seed, _STREAM_RESAMPLE, int(t)))
                    u = torch.rand(b, dtype=torch.float64, generator=g, device="cpu")
                    anc.append(systematic_indices(lw[:, k], u.to(dev)))
                anc = torch.stack(anc, dim=1)  # (b, k, m)
                ens = torch.gather(ens, 2, anc[..., None].expand(-1, -1, -1, d))
            z = ens
        return z.movedim(0, 1).reshape(len(steps), b * m, d)
