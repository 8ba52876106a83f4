"""What both routes of the particle filter's forward pass share: storage, noise and checks.

:class:`FilterPass` holds the outputs of a forward pass (particles and log weights of every
step, or of the last two in a ring, the evidence increments, ESS, moments) and
:func:`allocate` creates it with ``(B, ...)`` numpy views that the compiled kernels of
:mod:`bayesbridge.infer._particle_kernel` write in place. :func:`noise_blocks` draws the model
noise for blocks of steps (float32 ziggurat normals on the CPU), :class:`NoiseFactor` keeps the
square root of ``Q_t``, :func:`carry` is the state carried between compiled steps, and
:func:`check_block` names the first step of a block whose weighted mean or evidence increment
is not finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bayesbridge.errors import FilterDivergenceError
from bayesbridge.infer._particle_proposals import as_f64
from bayesbridge.infer._ziggurat import ZigguratNormals
from bayesbridge.infer.divergence import REMEDIES, check_finite
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt

__all__ = ["FilterPass", "NoiseFactor", "allocate", "carry", "check_block", "is_diagonal", "noise_blocks"]


def noise_blocks(generator: torch.Generator, T: int, shape: tuple, budget: int = 2**17):
    """Standard normals ``(K, *shape)`` for blocks of ``K`` consecutive steps: ``(start, block)``.

    Float32 numbers (Monte-Carlo noise needs no more digits) used in float64 algebra, one call
    per block instead of one per step, into one reused buffer of at most ``budget`` numbers
    (512 KiB: it stays in the L2 cache between drawing and use), so a block is valid until the
    next is drawn. On the CPU they come from
    :class:`~bayesbridge.infer._ziggurat.ZigguratNormals` seeded from ``generator`` (faster
    than ``torch.randn``, whose draws dominated a compiled bootstrap step; the measurements are
    in ``docs/lab-notes.md``), elsewhere from ``generator`` itself. Both routes of the filter draw the model noise
    component-major, ``shape = (*batch, d, N)``, as the compiled kernel reads it.
    """
    per_step = max(1, math.prod(shape))
    chunk = max(1, min(T, budget // per_step))
    buf = torch.empty(chunk, *shape, dtype=torch.float32, device=generator.device)
    normals = ZigguratNormals(generator) if buf.device.type == "cpu" else None
    for start in range(0, T, chunk):
        block = buf[: min(chunk, T - start)]
        if normals is not None:
            normals.fill(block.numpy())
        else:
            block.normal_(generator=generator)
        yield start, block


def is_diagonal(mat: torch.Tensor) -> bool:
    return bool(torch.equal(mat, torch.diag_embed(mat.diagonal(dim1=-2, dim2=-1))))


class NoiseFactor:
    """Model-error covariance ``Q_t`` and a square root ``L_t``, refactorised only when ``Q_t`` changes."""

    def __init__(self, model) -> None:
        self.model, self.Q, self.L = model, None, None

    def __call__(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q_t, L_t)``, both ``(d, d)``."""
        Q = as_f64(self.model.transition_cov(t))
        if self.Q is None or (Q is not self.Q and not torch.equal(self.Q, Q)):
            self.Q, self.L = Q, _psd_sqrt(Q, "transition_cov")
        return self.Q, self.L

    @staticmethod
    def scale(noise: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """``noise @ L^T`` (an elementwise product when ``L`` is diagonal)."""
        return noise * L.diagonal() if is_diagonal(L) else noise @ L.mT


@dataclass
class FilterPass:
    """Raw outputs of one forward pass (float64).

    Attributes
    ----------
    particles : Tensor (*batch, T or 2, N, d)
        Step ``t`` in slot ``t % T`` (all steps kept) or ``t % 2`` (``store_ensemble=False``).
    log_weights : Tensor (*batch, T or 2, N)
        Normalised, before resampling (same slots).
    inv_ess : Tensor (*batch, T)
        ``sum_i W_i^2`` (one over the ESS).
    step_ev : Tensor (*batch, T)
        Log-evidence increments ``log p(y_t | y_{1:t-1})``.
    pred_mean, pred_sq : Tensor (*batch, T, m)
        Predictive first and second moments of ``h(z_t)`` (weights of step ``t-1``).
    extra_var : Tensor (*batch, T, m) or None
        Extra predictive variance of the guided proposal (``diag(H Q H^T)``).
    fmean : Tensor (*batch, T, d)
        Weighted filtered mean.
    fcov : Tensor (*batch, T, d, d)
        Weighted filtered covariance.
    """

    particles: torch.Tensor
    log_weights: torch.Tensor
    inv_ess: torch.Tensor
    step_ev: torch.Tensor
    pred_mean: torch.Tensor
    pred_sq: torch.Tensor
    extra_var: torch.Tensor | None
    fmean: torch.Tensor
    fcov: torch.Tensor


def allocate(batch: tuple, T: int, N: int, d: int, m: int, ring: int,
             device: torch.device | None = None) -> tuple[FilterPass, list[np.ndarray] | None]:
    """Empty outputs of a pass, and their ``(B, ...)`` numpy views (shared memory) in the order
    particles, log_weights, inv_ess, step_ev, pred_mean, pred_sq, fmean, fcov (``None`` off the CPU).

    Particles and log weights of step ``t`` live in slot ``t % ring`` (``ring = T``: all kept).
    """
    B = math.prod(batch)
    device = torch.device("cpu") if device is None else device
    e = lambda *shape: torch.empty(*batch, T, *shape, dtype=torch.float64, device=device)  # noqa: E731
    r = lambda *shape: torch.empty(*batch, ring, *shape, dtype=torch.float64, device=device)  # noqa: E731
    fp = FilterPass(r(N, d), r(N), e(), e(), e(m), e(m), None, e(d), e(d, d))
    if device.type != "cpu":
        return fp, None
    tensors = (fp.particles, fp.log_weights, fp.inv_ess, fp.step_ev, fp.pred_mean, fp.pred_sq, fp.fmean, fp.fcov)
    return fp, [x.reshape(B, *x.shape[len(batch):]).numpy() for x in tensors]


def check_block(fp: FilterPass, start: int, K: int, stored: bool) -> None:
    """Raise :class:`FilterDivergenceError` at the first of steps ``start .. start + K - 1``
    whose weighted mean or evidence increment is not finite (finite ones imply finite particles
    and weights), naming the step and, when they are stored, counting non-finite particles."""
    blk = slice(start, start + K)
    finite = torch.isfinite(fp.step_ev[..., blk]) & torch.isfinite(fp.fmean[..., blk, :]).all(-1)
    if bool(finite.all()):
        return
    k = int(torch.nonzero(~finite.reshape(-1, K).all(0))[0])
    bad_t = start + k
    if stored:
        check_finite(fp.particles[..., bad_t, :, :], bad_t, "pf", "particles")
    elif not bool(torch.isinf(fp.step_ev[..., bad_t]).any()):
        check_finite(fp.fmean[..., bad_t, :], bad_t, "pf", "weighted particle mean")
    raise FilterDivergenceError(
        f"pf: every particle has zero weight at time step {bad_t} (the observation is far outside "
        f"the particle cloud). Remedies: use proposal='guided', obs_likelihood='student_t', "
        f"or {REMEDIES}."
    )


def carry(B: int, N: int) -> tuple[np.ndarray, ...]:
    """State carried from step to step by the compiled pieces, before the first step.

    ``w`` (B, N) weights of the last step; ``anc`` (B, N) parents of the next step's particles;
    ``lwp``, ``wp`` (B, N) their log weights and weights (uniform before the first step).
    """
    return (np.full((B, N), 1.0 / N), np.broadcast_to(np.arange(N), (B, N)).copy(),
            np.full((B, N), -math.log(N)), np.full((B, N), 1.0 / N))
