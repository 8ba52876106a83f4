"""The particle filter's two proposals, the choice between them, and the observation log-likelihood.

With particles ``z_{t-1}^i`` and the transition mean ``mu_i = f_t(z_{t-1}^i)``:

* bootstrap: ``z_t^i = mu_i + w_i``, ``w_i ~ N(0, Q_t)``, weighed by ``log p(y_t | z_t^i)``
  (:class:`Likelihood`: Gaussian, or independent Student-t components);
* guided (:func:`guided_step`): the Gaussian proposal obtained by conditioning the transition
  on the linearised observation ``y_t ~ N(h(mu_i) + H_i (z - mu_i), R_g)`` (Doucet, Godsill &
  Andrieu 2000, *Statist. Comput.* 10, 197-208), drawn as
  ``z = mu + w + K (y - h(mu) - H w - v)`` with ``K = Q H^T S^{-1}``, ``S = H Q H^T + R_g`` and
  ``v ~ N(0, R_g)``, weighed by

  .. math::
      \\log \\alpha_t^i = \\log p(y_t | z_t^i) + \\log N(y_t; h(\\mu_i), S)
      - \\log N\\bigl(y_t; h(\\mu_i) + H_i (z_t^i - \\mu_i), R_g\\bigr),

  which needs no ``Q^{-1}`` and reduces to ``log N(y_t; h(mu_i), S)`` for linear ``h`` and
  Gaussian errors.

:func:`resolve_proposal` turns ``proposal="auto"`` into ``"guided"`` when the observation
operator is affine (an observation matrix, or :func:`~bayesbridge.model.affine.probe_affine`
finds it affine: its matrix is then used for every particle, no Jacobians) or differentiable by
autograd, and into ``"bootstrap"`` otherwise.

Missing components (NaN, filled with 0 in ``y``) drop out: residuals are 0 there and the
covariances are the identity on them (:func:`masked_cov`). Shapes: particles
``(*batch, N, d)``, observations ``(*batch, m)``, log-likelihoods ``(*batch, N)``.
"""

from __future__ import annotations

import math

import torch

from bayesbridge.errors import ParameterError
from bayesbridge.infer.particle_config import ParticleConfig
from bayesbridge.model import LinearGaussianModel
from bayesbridge.model.affine import probe_affine

__all__ = ["LOG_2PI", "Likelihood", "as_f64", "gauss_logpdf", "guided_step", "masked_cov", "obs_matrix",
           "resolve_proposal"]

LOG_2PI = math.log(2.0 * math.pi)


def as_f64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 (itself when it already is)."""
    return x if x.dtype == torch.float64 else x.to(torch.float64)


def masked_cov(R: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``R`` restricted to observed components, identity on missing ones: ``(*batch, m, m)``."""
    both = mask[..., :, None] & mask[..., None, :]
    return torch.where(both, R, torch.eye(R.shape[-1], dtype=R.dtype, device=R.device))


def gauss_logpdf(resid: torch.Tensor, chol: torch.Tensor, n_obs: torch.Tensor) -> torch.Tensor:
    """``log N(resid; 0, L L^T)`` over observed components (missing: resid 0, unit diagonal).

    resid (*batch, N, m); chol (*batch, 1 or N, m, m); n_obs (*batch,) -> (*batch, N).
    """
    u = torch.linalg.solve_triangular(chol, resid.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (u**2).sum(-1) - logdet - 0.5 * LOG_2PI * n_obs.unsqueeze(-1)


class Likelihood:
    """Observation log-likelihood ``log p(y_t | z_t)`` for one step, batched over particles."""

    def __init__(self, R: torch.Tensor, config: ParticleConfig) -> None:
        self.kind = config.obs_likelihood
        self.df = float(config.df)
        self.R = R
        if self.kind == "student_t":
            if not torch.equal(R, torch.diag(R.diagonal())):
                raise ParameterError(
                    "obs_likelihood='student_t': expects independent observation errors, so the "
                    "model's R must be diagonal; decorrelate the observables or use 'gaussian'."
                )
            self.scale = R.diagonal().sqrt()
            nu = self.df
            self.const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
            # Gaussian stand-in for the guided proposal (t variance when finite)
            self.R_gauss = R * (nu / (nu - 2.0) if nu > 2.0 else 1.0)
        else:
            self.R_gauss = R
        m = R.shape[-1]
        # fully observed steps (the common case): precomputed whitening, no per-step factorisation
        self.whiten = torch.linalg.inv(torch.linalg.cholesky(R)).mT.contiguous()  # u = r @ whiten
        self.const_full = float(torch.linalg.cholesky(R).diagonal().log().sum()) + 0.5 * m * LOG_2PI

    def set_step(self, mask: torch.Tensor, full: bool, n_obs: torch.Tensor) -> None:
        """mask (*batch, m); ``full``: every component of every run observed; n_obs (*batch,)."""
        self.mask, self.full, self.n_obs = mask, full, n_obs
        if self.kind == "gaussian" and not full:
            self.chol = torch.linalg.cholesky(masked_cov(self.R, mask))

    def __call__(self, y: torch.Tensor, hz: torch.Tensor) -> torch.Tensor:
        """y (*batch, m) (missing filled with 0), hz (*batch, N, m) -> (*batch, N)."""
        if self.full:
            resid = y.unsqueeze(-2) - hz
            if self.kind == "gaussian":
                u = resid @ self.whiten
                return (u * u).sum(-1).mul_(-0.5).sub_(self.const_full)
        else:
            resid = torch.where(self.mask.unsqueeze(-2), y.unsqueeze(-2) - hz, 0.0)
            if self.kind == "gaussian":
                return gauss_logpdf(resid, self.chol.unsqueeze(-3), self.n_obs)
        u = resid / self.scale
        per = self.const - torch.log(self.scale) - 0.5 * (self.df + 1) * torch.log1p(u**2 / self.df)
        return (per if self.full else torch.where(self.mask.unsqueeze(-2), per, 0.0)).sum(-1)


def _known_matrix(model) -> torch.Tensor | None:
    """The observation matrix ``(m, d)`` a model declares (``observation_matrix`` or ``H``), else None."""
    H = getattr(model, "observation_matrix", None)
    if H is None and isinstance(model, LinearGaussianModel):
        H = model.H
    return H


def _differentiable(model, d: int, device) -> bool:
    """Whether autograd gives a finite Jacobian of ``model.observe`` at the origin."""
    x = torch.zeros(1, d, dtype=torch.float64, device=device, requires_grad=True)
    try:
        with torch.enable_grad():
            grad = torch.autograd.grad(model.observe(x).sum(), x)[0]
    except (RuntimeError, TypeError):
        return False
    return bool(torch.isfinite(grad).all())


def resolve_proposal(model, config: ParticleConfig, device) -> tuple[str, torch.Tensor | None]:
    """``(proposal, H)``: the proposal ``"guided"`` or ``"bootstrap"`` for ``config.proposal``, and the
    affine observation matrix ``H (m, d)`` when ``h`` is affine (else None: Jacobians per particle).

    Raises
    ------
    ParameterError
        For ``proposal="guided"`` with an observation operator that is neither affine nor
        differentiable by autograd.
    """
    d = int(model.latent_dim)
    H = _known_matrix(model)
    if H is None and config.proposal != "bootstrap":
        found = probe_affine(model.observe, d, device=device)
        H = None if found is None else found[0].mT
    if config.proposal == "bootstrap":
        return "bootstrap", H
    if H is not None or _differentiable(model, d, device):
        return "guided", H
    if config.proposal == "guided":
        raise ParameterError(
            "proposal: 'guided' linearises the observation operator, which is neither affine nor differentiable "
            "by torch autograd here; use proposal='bootstrap' (or 'auto', which falls back to it), or make the "
            "observation operator a torch function of z."
        )
    return "bootstrap", None


def obs_matrix(model, x: torch.Tensor, H: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """Observation matrices: ``(*batch, 1, m, d)`` if ``h`` is affine (its matrix ``H (m, d)`` given, or
    declared by the model), else the Jacobians of ``h`` at every particle ``x`` ``(*batch, N, d)``
    -> ``(*batch, N, m, d)`` (one backward pass per observable; ``h`` acts row by row, so the
    gradient of a sum is the per-row Jacobian)."""
    H = _known_matrix(model) if H is None else H
    if H is not None:
        return H.to(x.dtype).expand(*x.shape[:-2], 1, *H.shape), True
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model.observe(xg)
        rows = [torch.autograd.grad(out[..., k].sum(), xg, retain_graph=True)[0] for k in range(out.shape[-1])]
    return torch.stack(rows, -2).detach().to(x.dtype), False


def guided_step(model, mu, mask, yt, lik: Likelihood, Q, w, v_std, W, H_affine=None):
    """One guided-proposal step: ``(z, h(mu), log alpha, diag(H Q H^T))`` (see module docstring).

    mu, w (*batch, N, d); mask, yt (*batch, m); v_std (*batch, N, m, 1); W (*batch, N);
    H_affine (m, d) the matrix of an affine ``h`` (None: declared by the model, or Jacobians).
    """
    dt = torch.float64
    H, linear = obs_matrix(model, mu, H_affine)  # (*batch, 1 or N, m, d)
    Hm = H * mask[..., None, :, None].to(dt)  # zero rows where missing
    Rg = masked_cov(lik.R_gauss, mask).unsqueeze(-3)  # (*batch, 1, m, m)
    LR = torch.linalg.cholesky(Rg)
    S = Hm @ Q @ Hm.mT + Rg
    LS = torch.linalg.cholesky(S)
    K = torch.cholesky_solve(Hm @ Q, LS).mT  # (*batch, 1 or N, d, m) = Q Hm^T S^-1
    hmu = as_f64(model.observe(mu))
    e = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - hmu, 0.0)
    v = (LR @ v_std).squeeze(-1)
    innov_draw = e - (Hm @ w.unsqueeze(-1)).squeeze(-1) - v
    z = mu + w + (K @ innov_draw.unsqueeze(-1)).squeeze(-1)
    log_pred = gauss_logpdf(e, LS, lik.n_obs)  # \hat p(y | z_{t-1})
    if linear and lik.kind == "gaussian":
        incr = log_pred
    else:
        hz = as_f64(model.observe(z))
        lin = hmu + (Hm @ (z - mu).unsqueeze(-1)).squeeze(-1)
        lin_resid = torch.where(mask.unsqueeze(-2), yt.unsqueeze(-2) - lin, 0.0)
        incr = lik(yt, hz) + log_pred - gauss_logpdf(lin_resid, LR, lik.n_obs)
    extra = (Hm @ Q @ Hm.mT).diagonal(dim1=-2, dim2=-1)
    extra = (W.unsqueeze(-1) * extra).sum(-2) if extra.shape[-2] > 1 else extra.squeeze(-2)
    return z, hmu, incr, extra
