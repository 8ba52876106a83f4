"""The particle filter's vectorised torch loop: any transition, either proposal, either error family.

Per step, the model's own torch functions propagate the particles (bootstrap or guided
proposal, :mod:`bayesbridge.infer._particle_proposals`) and weigh them; the tail of the step --
normalisation, log-evidence increment :math:`\\log \\sum_i W_{t-1}^i \\alpha_t^i`, ESS
``1 / sum_i (W_t^i)^2``, filtered moments and systematic resampling when the ESS falls below
``ess_threshold * N`` -- is one compiled call on the CPU
(:func:`~bayesbridge.infer._particle_kernel._weigh_step`) or its torch twin
:func:`weigh_step_torch` elsewhere. Neither reads a value back to Python within a block.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bayesbridge.infer._particle_kernel import _weigh_step
from bayesbridge.infer._particle_pass import (
    FilterPass,
    NoiseFactor,
    allocate,
    carry,
    check_block,
    noise_blocks,
)
from bayesbridge.infer._particle_proposals import Likelihood, as_f64, guided_step
from bayesbridge.infer.particle_config import ParticleConfig
from bayesbridge.infer.resampling import systematic_ancestors

__all__ = ["filter_torch", "weigh_step_torch"]


def filter_torch(model, y0, mask_all, z, config: ParticleConfig, lik: Likelihood, generator,
                 compiled: bool = True, proposal: str | None = None, H_affine=None) -> FilterPass:
    """Forward pass over time: the model's own torch functions, vectorised over ``(*batch, N)``.

    Per step, propagation and likelihood are torch ops (any transition, either proposal, either
    observation-error family); weighting, log-evidence increment, ESS, moments and systematic
    resampling are one compiled call (:func:`~bayesbridge.infer._particle_kernel._weigh_step`)
    on shared memory when ``compiled`` (CPU), else the torch equivalent :func:`weigh_step_torch`
    (any device); neither reads a value back to Python. ``y0 (*batch, T, m)`` the observations
    (missing components, ``~mask_all``, set to 0), ``z (*batch, N, d)`` the initial particles,
    ``lik`` the observation likelihood and ``generator`` the source of the model noise, the
    guided-proposal noise and the resampling uniforms (drawn per block of steps). ``proposal``
    is the resolved proposal (``"guided"`` or ``"bootstrap"``; default ``config.proposal``) and
    ``H_affine (m, d)`` the matrix of an affine observation operator (guided proposal).
    """
    batch, (T, m) = tuple(y0.shape[:-2]), tuple(y0.shape[-2:])
    N, d = z.shape[-2:]
    B = math.prod(batch)
    dt = torch.float64
    full_steps = mask_all.movedim(-2, 0).reshape(T, -1).all(-1).tolist()
    n_obs = mask_all.sum(-1).to(dt)
    inv_ess_min = 1.0 / (config.ess_threshold * N)
    factor = NoiseFactor(model)
    guided = (config.proposal if proposal is None else proposal) == "guided"

    stored = config.store_ensemble or config.smoother == "backward"
    ring = T if stored else 2
    dev = y0.device
    fp, out = allocate(batch, T, N, d, m, ring, dev)
    particles = fp.particles
    fp.extra_var = extra = torch.zeros(*batch, T, m, dtype=dt, device=dev) if guided else None
    if compiled:
        w, anc, lwp, wp = carry(B, N)
        W = torch.from_numpy(wp).reshape(*batch, N)  # weights of the parents (a view, updated in place)
        zbuf = torch.empty(*batch, N, d, dtype=dt, device=dev)
        work = (zbuf.view(B, N, d).numpy(), np.empty((d, N)), np.empty((d, N)))
    else:
        lwp_t = torch.full((*batch, N), -math.log(N), dtype=dt, device=dev)
        W = torch.full((*batch, N), 1.0 / N, dtype=dt, device=dev)

    for start, block in noise_blocks(generator, T, (*batch, d, N)):
        K = block.shape[0]
        block = block.transpose(-1, -2)  # (K, *batch, N, d)
        QLs = [factor(t) for t in range(start, start + K)]
        if all(L is QLs[0][1] for _, L in QLs):
            wblock = factor.scale(block.to(dt), QLs[0][1])
        else:
            wblock = torch.stack([factor.scale(block[k].to(dt), QLs[k][1]) for k in range(K)])
        vblock = (torch.randn(K, *batch, N, m, 1, dtype=torch.float32, generator=generator, device=dev).to(dt)
                  if guided else None)
        uni = torch.rand(K, B, dtype=dt, generator=generator, device=dev)
        if compiled:
            uni = uni.numpy()
        for k in range(K):
            t = start + k
            mu = as_f64(model.transition_mean(z, t)).detach()
            mask, yt = mask_all[..., t, :], y0[..., t, :]
            lik.set_step(mask, full_steps[t], n_obs[..., t])
            if not guided:
                z_t = torch.add(mu, wblock[k], out=particles[..., t % ring, :, :])
                pred = as_f64(model.observe(z_t))
                incr = lik(yt, pred)
            else:
                z_t, pred, incr, extra_t = guided_step(model, mu, mask, yt, lik, QLs[k][0], wblock[k], vblock[k], W,
                                                               H_affine)
                particles[..., t % ring, :, :] = z_t
                extra[..., t, :] = extra_t
            if compiled:
                _weigh_step(t, t % ring, t == T - 1, uni[k], incr.detach().reshape(B, N).contiguous().numpy(),
                            pred.detach().expand(*batch, N, m).reshape(B, N, m).contiguous().numpy(), *out,
                            inv_ess_min, w, anc, lwp, wp, *work)
                z = zbuf
            else:
                z, lwp_t, W = weigh_step_torch(fp, t, t % ring, incr.detach(), pred.detach(), lwp_t, W,
                                               uni[k].reshape(batch + (1,)), inv_ess_min)
        check_block(fp, start, K, stored)  # stop at the first bad block

    return fp


def weigh_step_torch(fp: FilterPass, t: int, ts: int, incr: torch.Tensor, pred: torch.Tensor, lwp: torch.Tensor,
                     wp: torch.Tensor, u: torch.Tensor, inv_ess_min: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`~bayesbridge.infer._particle_kernel._weigh_step` (all runs, any device, no host sync).

    incr (*batch, N) log-likelihood increments; pred (*batch, 1 or N, m) predicted
    observations; lwp, wp (*batch, N) log weights / weights of the parents (step ``t-1`` after
    resampling); u (*batch, 1) resampling uniforms. Writes step ``t`` of ``fp`` (particles and
    log weights at slot ``ts``) and returns the parents ``(*batch, N, d)`` of step ``t+1`` with
    their log weights and weights: systematic resampling where ``sum W^2 > inv_ess_min``
    (``ESS < ess_threshold N``), the particles themselves elsewhere.
    """
    N = incr.shape[-1]
    wpe = wp.unsqueeze(-1)
    fp.pred_mean[..., t, :] = (wpe * pred).sum(-2)
    fp.pred_sq[..., t, :] = (wpe * pred.square()).sum(-2)
    tot = lwp + incr
    ev = torch.logsumexp(tot, -1, keepdim=True)  # every weight zero: -inf (NaN weights, caught per block)
    logw = tot - ev
    w = logw.exp()
    x = fp.particles[..., ts, :, :]
    mu = (w.unsqueeze(-2) @ x).squeeze(-2)
    dev = x - mu.unsqueeze(-2)
    cov = (dev * w.unsqueeze(-1)).mT @ dev
    s2 = w.square().sum(-1)
    fp.log_weights[..., ts, :] = logw
    fp.step_ev[..., t] = ev.squeeze(-1)
    fp.inv_ess[..., t] = s2
    fp.fmean[..., t, :] = mu
    fp.fcov[..., t, :, :] = 0.5 * (cov + cov.mT)
    need = (s2 > inv_ess_min).unsqueeze(-1)  # (*batch, 1)
    anc = torch.where(need, systematic_ancestors(torch.cumsum(w, -1), u),
                      torch.arange(N, device=w.device))
    z = torch.gather(x, -2, anc.unsqueeze(-1).expand(*anc.shape, x.shape[-1]))
    lwp = torch.where(need, -math.log(N), logw)
    wp = torch.where(need, 1.0 / N, w)
    return z, lwp, wp
