"""Per-step records of the ensemble Kalman loop and their summary after the loop.

The loop of :func:`bayesbridge.infer.enkf.run` issues no host synchronisation per step: it
appends what it needs to lists (:class:`Records`) and everything that reads values back --
the log-evidence, the innovation diagnostics, the innovation-consistency check -- is computed
once after the loop by :func:`innovation_summary`; the analysis means are checked for NaN/inf
in blocks (:func:`check_block`). The log-evidence is the Gaussian innovation form (e.g.
Carrassi, Bocquet, Hannart & Ghil 2017, *Estimating model evidence using data assimilation*,
Q. J. R. Meteorol. Soc. 143, 866-880),

.. math::
    \\log p(y_{1:T}) \\approx \\sum_t \\log N\\bigl(y_t;\\, \\overline{h(z^f_t)},\\, S_t\\bigr),
    \\qquad S_t = L_t \\bigl(I + G_t / (N-1)\\bigr) L_t^T,

with ``L_t`` the (masked) observation-error factor and ``G_t`` the Gram matrix of the whitened
forecast anomalies, evaluated in the eigenbasis of ``G_t`` where it is diagonal.
"""

from __future__ import annotations

import math

import torch

from bayesbridge.infer.divergence import check_finite, check_innovations

__all__ = ["Records", "check_block", "innovation_summary"]

f64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


class Records:
    """What the torch loop keeps per step, appended without host synchronisation.

    Lists (one entry per step, stacked once after the loop, which costs far less than ``T``
    small copies into buffers): ``dt`` whitened innovations ``(*b, 1, m)``, ``dv`` the same in
    the eigenbasis of ``G`` ``(*b, 1, m)``, ``lamn`` eigenvalues of ``G + (N-1) I``
    ``(*b, 1, m)``, ``g`` the Gram matrices ``G = Yt^T Yt`` ``(*b, m, m)``, ``means`` analysis
    means ``(*b, 1, d)`` and ``norms`` ``||X_a||_F`` ``(*b,)`` when the ensembles are not stored.
    Buffers: ``l_all (*b, T, m, m)`` per-step observation-error factors (only with missing
    values), ``fc_all``/``ens_all (*b, T, N, d)`` forecast and analysis ensembles (RTS smoother,
    ``store_ensemble``) and ``smo_all (*b, N, T, d)`` (member-major, transform smoother).

    Parameters
    ----------
    batch : tuple of int
        Leading batch shape of the runs.
    T, N, d, m : int
        Steps, members, latent and observation dimensions.
    L_R : Tensor (m, m)
        Cholesky factor of ``R``, the default factor of every step.
    any_missing, store_ensemble, rts, smooth : bool
        Whether some step misses observations, the analysis ensembles are returned, the RTS or
        the transform smoother runs.
    """

    def __init__(self, batch: tuple, T: int, N: int, d: int, m: int, L_R: torch.Tensor, *, any_missing: bool,
                 store_ensemble: bool, rts: bool, smooth: bool) -> None:
        dev = L_R.device
        self.batch, self.m, self.nm1, self.device = batch, m, float(N - 1), dev
        self.dt: list[torch.Tensor] = []
        self.dv: list[torch.Tensor] = []
        self.lamn: list[torch.Tensor] = []
        self.g: list[torch.Tensor] = []
        self.means: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.l_all = L_R.expand(*batch, T, m, m).clone() if any_missing else None
        self.fc_all = torch.empty(*batch, T, N, d, dtype=f64, device=dev) if rts else None
        self.ens_all = torch.empty(*batch, T, N, d, dtype=f64, device=dev) if (store_ensemble or rts) else None
        self.smo_all = torch.empty(*batch, N, T, d, dtype=f64, device=dev) if smooth else None

    def innovation(self, dt: torch.Tensor, dv: torch.Tensor, lamn: torch.Tensor, G: torch.Tensor) -> None:
        """Record the innovation statistics ``dt``, ``dv``, ``lamn`` ``(*b, 1, m)`` and ``G (*b, m, m)`` of a step."""
        self.dt.append(dt)
        self.dv.append(dv)
        self.lamn.append(lamn)
        self.g.append(G)

    def unobserved(self, t: int, E: torch.Tensor, xbar: torch.Tensor) -> None:
        """Step ``t`` observed nothing in any run: the analysis is the forecast ``E (*b, N, d)``, mean ``xbar``."""
        zero = torch.zeros(*self.batch, 1, self.m, dtype=f64, device=self.device)
        self.dt.append(zero)
        self.dv.append(zero)
        self.lamn.append(torch.full((*self.batch, 1, self.m), self.nm1, dtype=f64, device=self.device))
        self.g.append(torch.zeros(*self.batch, self.m, self.m, dtype=f64, device=self.device))
        self.store(t, E, xbar)

    def store(self, t: int, E: torch.Tensor, mean_a: torch.Tensor) -> None:
        """Record the analysis of step ``t`` (``E (*b, N, d)``, ``mean_a (*b, 1, d)``)."""
        self.means.append(mean_a)
        if self.ens_all is not None:
            self.ens_all[..., t, :, :] = E
        else:  # ||X_a||_F, turned into sqrt(tr(P_a) / d) after the loop (no torch.var two-pass kernel)
            self.norms.append(torch.linalg.vector_norm(E - mean_a, dim=(-2, -1)))
        if self.smo_all is not None:
            self.smo_all[..., t, :] = E

    def spread(self, N: int, d: int) -> torch.Tensor:
        """``sqrt(tr(P_a) / d)`` per step ``(*b, T)`` of the analysis ensembles of ``N`` members, latent size ``d``."""
        if self.ens_all is not None:
            return self.ens_all.var(-2).mean(-1).sqrt()
        return torch.stack(self.norms, -1) / math.sqrt((N - 1) * d)


def check_block(means: list[torch.Tensor], lo: int, hi: int, variant: str) -> None:
    """Raise naming the first step in ``[lo, hi)`` whose analysis mean ``(*b, 1, d)`` is not finite.

    ``means`` the per-step analysis means, ``variant`` the engine named in the error.
    """
    if hi <= lo:
        return
    block = torch.cat(means[lo:hi], -2)  # (*b, hi - lo, d)
    ok = torch.isfinite(block).reshape(-1, hi - lo, block.shape[-1]).all(-1).all(0)
    if not bool(ok.all()):
        t = lo + int(torch.argmin(ok.to(torch.int8)))
        check_finite(means[t], t, variant, "analysis mean")


def innovation_summary(y, dt_all, dv_all, lamn_all, g_all, L_t, N: int, variant: str, check: bool):
    """Log-evidence ``(*b,)``, innovations and their variances ``(*b, T, m)`` from the per-step records.

    Gaussian innovation form with ``S_t = L_t (I + G_t / (N-1)) L_t^T`` (``L_t (*b, T, m, m)`` or
    ``(m, m)`` the, possibly masked, observation-error factor and ``g_all`` the whitened
    forecast-anomaly Gram matrices ``G_t (*b, T, m, m)``); ``dt_all`` ``(*b, T, m)`` is the
    whitened innovation, ``dv_all`` the same in the eigenbasis of ``G_t`` and ``lamn_all`` the
    eigenvalues of ``G_t + (N-1) I``; ``y (*b, T, m)`` marks missing components (NaN), ``N`` is
    the ensemble size and ``check`` runs the innovation-consistency check naming ``variant``.
    """
    nm1 = float(N - 1)
    obs = ~torch.isnan(y)
    dof = obs.sum(-1).to(f64)
    nis = (dv_all.square() * nm1 / lamn_all).sum(-1)
    log_l = L_t.diagonal(dim1=-2, dim2=-1).log()
    half_logdet = (log_l * obs).sum(-1) + 0.5 * (lamn_all / nm1).log().sum(-1)
    log_ev = -0.5 * (dof * _LOG_2PI + 2.0 * half_logdet + nis).sum(-1)
    innov = (L_t @ dt_all.unsqueeze(-1)).squeeze(-1)
    LG = L_t @ g_all
    innov_var = (LG * L_t).sum(-1) / nm1 + L_t.square().sum(-1)  # diag(L G L^T / (N-1) + L L^T)
    nan_f = torch.tensor(float("nan"), dtype=f64, device=y.device)
    innov = torch.where(obs, innov, nan_f)
    innov_var = torch.where(obs, innov_var, nan_f)
    if check:
        check_innovations(nis, dof, variant)
    return log_ev, innov, innov_var
