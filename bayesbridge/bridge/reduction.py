"""The decoding pass of a posterior: every draw decoded once, block by block, and reduced.

:func:`reduce_posterior` walks the time steps in blocks of ``Posterior.block_steps()``:
latent draws of the block (:class:`~bayesbridge.bridge.draws.LatentDraws`), decoded
(:class:`~bayesbridge.bridge.decoding.BlockDecoder`), reduced in place by the compiled kernel
(:mod:`bayesbridge.bridge._summary_kernel`: representation error, mean, standard deviation,
order statistics, per-draw power sums), and the box observables of every draw; then the block is
discarded. The quantiles are interpolated from the order statistics with ``torch.lerp`` exactly as
:func:`torch.quantile` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bayesbridge.bridge._summary_kernel import reduce_block
from bayesbridge.bridge.summaries import FIELD_STATS, QUANTILES

__all__ = ["ReducedPosterior", "reduce_posterior"]


@dataclass
class ReducedPosterior:
    """What one decoding pass keeps.

    Attributes
    ----------
    grids : dict of (str, str) to ndarray ``(T, nlat, nlon)``
        Field statistic ``(variable, stat)`` for every stat of :data:`FIELD_STATS`, float32.
    index : ndarray ``(n_boxes, T, draw)``
        Box observable of every draw, float64.
    moment_draws : ndarray ``(m,)``
        The draws whose power sums were accumulated (may repeat).
    moment_sums : ndarray ``(3, m, n_points)``
        :math:`\\sum_t x`, :math:`\\sum_t x^2`, :math:`\\sum_t x^3` of those draws, float64.
    """

    grids: dict
    index: np.ndarray
    moment_draws: np.ndarray
    moment_sums: np.ndarray


def reduce_posterior(post, moment_draws=None) -> ReducedPosterior:
    """Decode every draw of ``post`` once and reduce it (see the module docstring).

    Parameters
    ----------
    post : Posterior
        The posterior (its draws, decoder, grid, representation error and boxes).
    moment_draws : sequence of int, optional
        Draws whose per-point power sums over time are accumulated (repeats allowed).

    Returns
    -------
    ReducedPosterior
    """
    from tqdm.auto import tqdm

    T, P, n = post.n_steps, post.n_points, post.n_draws
    grids = {(v, s): np.full((T, post.lat.size, post.lon.size), np.nan, dtype=np.float32)
             for v in post.variables for s in FIELD_STATS}
    index = np.empty((len(post.boxes), T, n), dtype=np.float64)
    q = torch.tensor(QUANTILES, dtype=torch.float32, device="cpu")
    # torch.quantile's float32 ranks r = q (n - 1), interpolated between floor and ceil
    ranks = q * (n - 1)
    below, above = ranks.to(torch.long), ranks.ceil().to(torch.long)
    ks = np.unique(np.concatenate([below.numpy(), above.numpy()])).astype(np.int64)
    pos_below = torch.as_tensor(np.searchsorted(ks, below.numpy()), device="cpu")
    pos_above = torch.as_tensor(np.searchsorted(ks, above.numpy()), device="cpu")
    draws = np.zeros(0, np.int64) if moment_draws is None else np.asarray(moment_draws, np.int64)
    sums = np.zeros((3, draws.size, P))
    # the box observables need only the points inside some box
    box_points = np.flatnonzero(np.any(post.box_weights.W != 0.0, axis=1))
    W = torch.as_tensor(post.box_weights.W[box_points], dtype=torch.float64, device="cpu")
    rep = post.representation
    bank = rep.bank.numpy() if rep.bank is not None else np.zeros((0, P), np.float32)
    offsets = rep.offsets.numpy() if rep.offsets is not None else np.zeros(n, np.int64)
    tb = post.block_steps()
    for t0 in tqdm(range(0, T, tb), desc="decoding posterior", unit="block", disable=not post.progress,
                   leave=False):
        steps = np.arange(t0, min(T, t0 + tb))
        x = post.decoder(post.draws.steps(steps))  # (k, draw, P)
        if rep.std is not None:
            rep.add_to(x, steps)  # Gaussian noise in torch; the residual bank is added by the kernel
        k = len(steps)
        mean, std = np.empty((k, P)), np.empty((k, P))
        order = np.empty((k, ks.size, P), np.float32)
        reduce_block(x.numpy(), bank, offsets, t0, ks, draws, mean, std, order, *sums)
        if W.shape[1]:
            index[:, steps, :] = (x[:, :, box_points].to(torch.float64) @ W).permute(2, 0, 1).numpy()
        o = torch.from_numpy(order)
        weight = (ranks - below)[:, None].expand(k, q.numel(), P)
        qs = torch.lerp(o[:, pos_below], o[:, pos_above], weight).movedim(1, 0)  # == torch.quantile
        stats = {"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                 "q05": qs[0].numpy(), "q50": qs[1].numpy(), "q95": qs[2].numpy()}
        for v in post.variables:
            pos = post.grid.var_points[v]
            ii, jj = post.grid.var_ij[v]
            for s in FIELD_STATS:
                grids[(v, s)][t0: t0 + k, ii, jj] = stats[s][:, pos]
    return ReducedPosterior(grids, index, draws, sums)
