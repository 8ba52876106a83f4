"""Systematic resampling (Kitagawa 1996): ancestor indices from weights and one uniform per run.

With normalised weights :math:`W^1..W^N` and their running sum :math:`C_j = \\sum_{i \\le j} W^i`,
systematic resampling draws one :math:`u \\sim U(0, 1)` per run and gives the ``k``-th offspring
(``k = 0..N-1``) the ancestor :math:`a_k` whose interval of the running sum holds the point
:math:`p_k = (u + k) / N`. Every particle is then copied :math:`\\lfloor N W^i \\rfloor` or
:math:`\\lceil N W^i \\rceil` times, the lowest variance of the standard unbiased schemes
(Kitagawa 1996, *J. Comput. Graph. Statist.* 5, 1-25; Douc, Cappé & Moulines 2005, *Proc. ISPA*,
64-69).

Two conventions are in use, and they differ only at ties (a point falling exactly on a
boundary, e.g. after zero weights) and in the rounding of the points, so each keeps its own
entry:

* :func:`systematic_ancestors` -- the particle filter's: points :math:`(u + k)\\, C_N / N`
  scaled to the unnormalised running sum, ancestor the first ``j`` with :math:`C_j \\ge p_k`
  (the torch twin of the compiled merge in :mod:`bayesbridge.infer._particle_kernel`);
  :func:`systematic_resample` draws the uniforms for it from a generator.
* :func:`systematic_indices` -- for posterior draws given as log weights: softmax in float64,
  the running sum's last entry set to exactly 1, ancestor the first ``j`` with
  :math:`C_j > p_k`.

Both clamp to ``N - 1`` (a point beyond a running sum that rounds below its total) and share the
search itself (:func:`_search`).
"""

from __future__ import annotations

import torch

__all__ = ["systematic_ancestors", "systematic_indices", "systematic_resample"]


def _search(cdf: torch.Tensor, points: torch.Tensor, right: bool) -> torch.Tensor:
    """Indices ``(*batch, N)`` int64 of ``points`` in the running sum ``cdf (*batch, N)``, clamped to ``N - 1``."""
    return torch.searchsorted(cdf.contiguous(), points.contiguous(), right=right).clamp_max_(cdf.shape[-1] - 1)


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996): one uniform per run.

    Parameters
    ----------
    log_weights : Tensor (*batch, N)
        Normalised log weights.
    generator : torch.Generator
        Source of the one uniform ``u ~ U(0, 1)`` per run; particle ``i`` is chosen for the
        points ``(u + k)/N``, ``k = 0..N-1``, of the weights' cumulative sum.

    Returns
    -------
    Tensor (*batch, N) of int64
        Ancestor indices.
    """
    cdf = torch.cumsum(log_weights.exp(), -1)
    u = torch.rand(*log_weights.shape[:-1], 1, dtype=cdf.dtype, generator=generator, device=cdf.device)
    return systematic_ancestors(cdf, u)


def systematic_ancestors(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ancestors of the points ``(u + k) cdf[-1] / N`` in a running sum of (unnormalised) weights.

    Parameters
    ----------
    cdf : Tensor (*batch, N)
        Running sum of the weights (need not end at 1).
    u : Tensor (*batch, 1)
        One uniform in ``[0, 1)`` per run.

    Returns
    -------
    Tensor (*batch, N) of int64
        For each point the first index ``j`` with ``cdf[j] >= point`` (at most ``N - 1``).
    """
    n = cdf.shape[-1]
    points = u.add(torch.arange(n, dtype=cdf.dtype, device=cdf.device)).mul_(cdf[..., -1:] / n)  # one per stratum
    return _search(cdf, points, right=False)


def systematic_indices(log_weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic resampling of ``M`` weighted draws per run, ``(B, M) -> (B, M)`` ancestor indices.

    Parameters
    ----------
    log_weights : Tensor (B, M)
        Log weights, not necessarily normalised (normalised by a float64 softmax over ``M``).
    u : Tensor (B,)
        One uniform in ``[0, 1)`` per run.

    Returns
    -------
    Tensor (B, M) of int64
        For the points ``(u + k) / M``, ``k = 0..M-1``, the first index ``j`` whose running sum
        of the weights exceeds the point (``searchsorted(..., right=True)``; the running sum's
        last entry is set to 1 so that rounding cannot leave a point beyond it), clamped to
        ``M - 1``.
    """
    w = torch.softmax(log_weights.to(torch.float64), dim=-1)
    cum = torch.cumsum(w, dim=-1)
    cum[..., -1] = 1.0
    m = w.shape[-1]
    positions = (u[..., None] + torch.arange(m, dtype=torch.float64, device=cum.device)) / m
    return _search(cum, positions, right=True)
