"""The compiled bootstrap particle filter of linear models, one kernel call per block of steps.

For ``z_t = A z_{t-1} + b + L_Q eps_t`` and ``y_t = H z_t + c + v_t`` (a
:class:`~bayesbridge.model.LinearGaussianModel`, or a :class:`~bayesbridge.model.StateSpaceModel`
with a :class:`~bayesbridge.model.LinearTransition` and an observation matrix;
:func:`linear_parts`), :func:`filter_compiled` runs whole blocks of bootstrap steps in
:func:`~bayesbridge.infer._particle_kernel._bootstrap_block`, with the Gaussian log-likelihood
``-|L^{-1} r|^2 / 2 - log det L - n_obs log(2 pi) / 2`` read from a table of whitening matrices
``L^{-1}``, one per missing-value pattern (:func:`whitening_table`). It draws the same random
numbers as the torch loop, so both routes agree to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesbridge.infer._particle_kernel import _bootstrap_block
from bayesbridge.infer._particle_pass import (
    FilterPass,
    allocate,
    carry,
    check_block,
    is_diagonal,
    noise_blocks,
)
from bayesbridge.infer._particle_proposals import LOG_2PI, Likelihood, as_f64, masked_cov
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.particle_config import ParticleConfig
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

__all__ = ["LinearParts", "filter_compiled", "linear_parts", "whitening_table"]


@dataclass
class LinearParts:
    """``f(z) = A z + b``, ``h(z) = H z + c``: A (d, d), b (d,), H (m, d), c (m,)."""

    A: torch.Tensor
    b: torch.Tensor
    H: torch.Tensor
    c: torch.Tensor


def linear_parts(model) -> LinearParts | None:
    """The affine pieces of a model whose transition and observation are known to be linear."""
    if type(model) is LinearGaussianModel:
        A, H = model.A, model.H
    elif type(model) is StateSpaceModel and type(model.transition) is LinearTransition and (
        model.observation_matrix is not None
    ):
        A, H = model.transition.A, model.observation_matrix
    else:
        return None
    A, H = as_f64(A), as_f64(H)
    return LinearParts(A, torch.zeros(A.shape[0], dtype=A.dtype, device=A.device), H,
                       torch.zeros(H.shape[0], dtype=H.dtype, device=H.device))


def whitening_table(R: torch.Tensor, mask_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whitening matrices of the observed components: ``(table (U, m, m), index (B, T), const (B, T))``.

    ``table[index[b, t]] = L^{-1}`` with ``L`` the Cholesky factor of ``R`` restricted to the
    components observed at ``(b, t)`` (identity on missing ones), so that the residual ``r``
    (zero where missing) gives ``log p = -|L^{-1} r|^2 / 2 - const``,
    ``const = log det L + n_obs log(2 pi) / 2``. Entry 0 is the fully observed case.
    """
    m = R.shape[-1]
    mask = mask_all.reshape(-1, *mask_all.shape[-2:])  # (B, T, m)
    full = mask.all(-1)
    partial = (~full).nonzero()
    covs = torch.cat([R.unsqueeze(0), masked_cov(R, mask[partial[:, 0], partial[:, 1]])], 0)
    L = torch.linalg.cholesky(covs)
    eye = torch.eye(m, dtype=R.dtype, device=R.device).expand_as(L)
    table = torch.linalg.solve_triangular(L, eye, upper=False)
    index = torch.zeros(mask.shape[:2], dtype=torch.int64, device=R.device)
    index[partial[:, 0], partial[:, 1]] = torch.arange(1, len(partial) + 1, device=R.device)
    logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    const = logdet[index] + 0.5 * LOG_2PI * mask.sum(-1).to(R.dtype)
    return table.contiguous(), index, const


def filter_compiled(model, parts: LinearParts, y0, mask_all, z0, config: ParticleConfig, lik: Likelihood,
                    generator) -> FilterPass:
    """Bootstrap forward pass of a linear model: one compiled call per block of steps.

    The kernel (:func:`~bayesbridge.infer._particle_kernel._bootstrap_block`) fuses, per step
    and run, propagation, weighting, log-evidence increment, normalisation, ESS, filtered
    moments and systematic resampling (an O(N) merge of the stratified points with the weights'
    running sum), reading no value back to Python. It stops at the first step with a non-finite
    evidence increment or weighted mean, which :func:`check_block` then names.
    """
    batch, (T, m) = tuple(y0.shape[:-2]), tuple(y0.shape[-2:])
    N, d = z0.shape[-2:]
    B = math.prod(batch)
    dt = torch.float64
    Q = as_f64(model.transition_cov(0))
    LQ = _psd_sqrt(Q, "transition_cov")
    R = lik.R
    if lik.kind == "student_t":
        table = torch.zeros(1, m, m, dtype=dt, device="cpu")
        index = torch.zeros(B, T, dtype=torch.int64, device="cpu")
        const = torch.zeros(B, T, dtype=dt, device="cpu")
        scale = lik.scale
        lc = lik.const - torch.log(scale)
    else:
        table, index, const = whitening_table(R, mask_all)
        scale = lc = torch.ones(m, dtype=dt, device="cpu")
    stored = config.store_ensemble or config.smoother == "backward"
    ring = T if stored else 2
    fp, out = allocate(batch, T, N, d, m, ring)
    state = carry(B, N)
    args = (
        parts.A.contiguous().numpy(), parts.b.numpy(), LQ.contiguous().numpy(), is_diagonal(LQ),
        parts.H.contiguous().numpy(), parts.c.numpy(), y0.reshape(B, T, m).contiguous().numpy(),
        mask_all.reshape(B, T, m).contiguous().numpy(), table.numpy(), index.numpy(), const.contiguous().numpy(),
        lik.kind == "student_t", is_diagonal(R), (1.0 / scale).numpy(), lc.numpy(), float(config.df),
        1.0 / (config.ess_threshold * N), z0.reshape(B, N, d).contiguous().numpy(),
    )
    for start, block in noise_blocks(generator, T, (B, d, N)):
        K = block.shape[0]
        uni = torch.rand(K, B, dtype=dt, generator=generator, device="cpu").numpy()
        if _bootstrap_block(start, T, ring, block.numpy(), uni, *args, *state, *out) >= 0:
            check_block(fp, start, K, stored)  # raises, naming the first bad step
    return fp
