"""Where the trajectory guide of :mod:`bayesbridge.infer.variational` starts: a linearised smoother.

The model is linearised along a trajectory ``zbar_{0:T}`` of every run,

.. math::
    z_t \\approx A_t z_{t-1} + b_t + \\sigma L_t \\varepsilon_t,\\quad
    A_t = \\partial f_t / \\partial z (\\bar z_{t-1}),\\;
    y_t \\approx H_t z_t + c_t + s \\odot \\eta_t,\\quad H_t = \\partial h / \\partial z (\\bar z_t)

(Jacobians by autograd, offsets so that the maps are exact at ``zbar``), and the Kalman filter
and Rauch-Tung-Striebel smoother of that linear model are run with the state ``z_0`` included
(missing components skipped), giving the smoothed means ``m^s_t``, the smoother gains ``G_t`` and
the covariances of ``z_t | z_{t+1}``, ``P_t - G_t P^-_{t+1} G_t^T``: the parameters of the
backward Gauss-Markov guide (:meth:`~bayesbridge.infer._svi_guides.MarkovGuide.from_smoother`).
For an affine model this is the exact smoothing posterior whatever ``zbar``; for a nonlinear one
it is the extended Kalman smoother around ``zbar`` (an ensemble Kalman smoother's mean).
"""

from __future__ import annotations

import torch

from bayesbridge.model.tensors import as_tensor, jittered

__all__ = ["linearised_smoother"]


def _jacobian(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(z), J)`` for a row-wise map ``fn``: ``z (*b, d)`` -> ``(*b, k)``, ``J (*b, k, d)``."""
    x = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        rows = [torch.autograd.grad(out[..., i].sum(), x, retain_graph=True)[0] for i in range(out.shape[-1])]
    return out.detach().to(torch.float64), torch.stack(rows, -2).detach().to(torch.float64)


def linearised_smoother(ssm, y: torch.Tensor, zbar: torch.Tensor, obs_scale: torch.Tensor,
                        model_error_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kalman filter and RTS smoother of the model linearised along ``zbar``; see the module docstring.

    Parameters
    ----------
    ssm : StateSpaceModel
    y : Tensor (R, T, m)
        Observations of ``R`` runs, NaN = missing.
    zbar : Tensor (R, T + 1, d)
        Linearisation trajectory (``z_0..z_T``).
    obs_scale : Tensor (m,)
    model_error_scale : float

    Returns
    -------
    mean : Tensor (R, T + 1, d)
        Smoothed means of ``z_0..z_T``.
    gain : Tensor (R, T, d, d)
        Smoother gains ``G_0..G_{T-1}``.
    cond_cov : Tensor (R, T + 1, d, d)
        Covariance of ``z_t | z_{t+1}, y`` (of ``z_T | y`` at the end).
    """
    R, T, m = y.shape
    d = ssm.latent_dim
    eye = torch.eye(d, dtype=torch.float64)
    mask = ~torch.isnan(y)
    y0 = torch.where(mask, y, 0.0)
    Rdiag = obs_scale.to(torch.float64) ** 2
    mean = ssm.m0.to(torch.float64).expand(R, d)
    cov = jittered(ssm.P0).to(torch.float64).expand(R, d, d)
    mf, Pf, mp, Pp, As = [mean], [cov], [], [], []
    for t in range(T):
        f, A = _jacobian(lambda z, t=t: ssm.transition.mean(z, t), zbar[:, t])
        L = model_error_scale * as_tensor(ssm.transition.noise_scale_tril(t), "noise_scale_tril")
        pm = f + ((mean - zbar[:, t]).unsqueeze(-2) @ A.mT).squeeze(-2)
        pc = A @ cov @ A.mT + L @ L.mT
        h, H = _jacobian(ssm.observe, zbar[:, t + 1])
        Hm = H * mask[:, t, :, None]
        v = torch.where(mask[:, t], y0[:, t] - h - ((pm - zbar[:, t + 1]).unsqueeze(-2) @ H.mT).squeeze(-2), 0.0)
        S = Hm @ pc @ Hm.mT + torch.diag_embed(torch.where(mask[:, t], Rdiag, 1.0))
        K = torch.linalg.solve(S, Hm @ pc).mT  # (R, d, m)
        mean = pm + (K @ v.unsqueeze(-1)).squeeze(-1)
        IKH = eye - K @ Hm
        cov = IKH @ pc @ IKH.mT + K @ torch.diag_embed(torch.where(mask[:, t], Rdiag, 0.0)) @ K.mT
        cov = 0.5 * (cov + cov.mT)
        mp.append(pm)
        Pp.append(0.5 * (pc + pc.mT))
        As.append(A)
        mf.append(mean)
        Pf.append(cov)
    ms, Ps = [mf[T]], [Pf[T]]
    gains, conds = [], [Pf[T]]
    for t in range(T - 1, -1, -1):
        # G_t = P_t A_{t+1}^T (P^-_{t+1})^{-1}; here A_{t+1} maps z_t to z_{t+1} (list index t)
        G = torch.linalg.solve(Pp[t], As[t] @ Pf[t]).mT
        m_s = mf[t] + ((ms[-1] - mp[t]).unsqueeze(-2) @ G.mT).squeeze(-2)
        P_s = Pf[t] + G @ (Ps[-1] - Pp[t]) @ G.mT
        ms.append(m_s)
        Ps.append(0.5 * (P_s + P_s.mT))
        gains.append(G)
        conds.append(Pf[t] - G @ Pp[t] @ G.mT)
    mean = torch.stack(ms[::-1], 1)
    gain = torch.stack(gains[::-1], 1)
    cond_cov = torch.stack(conds[::-1], 1)
    return mean, gain, cond_cov
