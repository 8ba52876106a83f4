"""Variational families of :mod:`bayesbridge.infer.variational`: the error scales and the trajectory.

:class:`ScaleGuide` is a Gaussian over the ``k = m + 1`` unconstrained scales ``u`` (``log s``,
``log sigma`` for the default priors): mean-field, ``N(loc, diag(sd^2))`` (``"normal"``, Pyro's
``AutoNormal``), or low-rank plus diagonal, ``N(loc, W W^T + diag(sd^2))`` (``"lowrank"``, Pyro's
``AutoLowRankMultivariateNormal``); draws are reparameterised and the entropy is analytic.

:class:`MarkovGuide` is a Gauss-Markov chain over the trajectory ``z_{0:T}`` of every run,
written backwards in time as the smoothing posterior of a linear-Gaussian model is
(forward-filtering backward-sampling),

.. math::
    z_t = \\mu_t + x_t,\\qquad x_T = C_T \\varepsilon_T,\\qquad
    x_t = B_t x_{t+1} + C_t \\varepsilon_t,\\qquad \\varepsilon_t \\sim N(0, I),

with ``C_t`` lower triangular with a positive diagonal: a Gaussian whose precision is block
tridiagonal (banded), the structure of the exact smoothing posterior of a linear-Gaussian
state-space model (so the family contains it) and of the guides of Archer et al. (2015,
*Black box variational inference for state space models*, arXiv 1511.07367) and Krishnan, Shalit
& Sontag (2017, *Structured inference networks for nonlinear state space models*, AAAI). Its
entropy is :math:`\\sum_t \\sum_i \\log C_{t,ii} + \\tfrac{(T + 1) d}{2} \\log 2\\pi e`. The linear
recursion is evaluated by a parallel prefix scan (Hillis & Steele 1986) over the pairs
``(B_t, C_t eps_t)`` in ``ceil(log2(T + 1))`` batched matrix products, not a loop over time.
:meth:`MarkovGuide.from_smoother` starts it at a Rauch-Tung-Striebel smoother
(``mu_t = m^s_t``, ``B_t = G_t``, ``C_t C_t^T = P_t - G_t P^-_{t+1} G_t^T``): exact for an
affine model, the extended (linearised) smoother's answer otherwise
(:mod:`bayesbridge.infer._svi_start`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["ScaleGuide", "MarkovGuide", "linear_scan"]

_LOG_2PI_E = math.log(2.0 * math.pi) + 1.0


class ScaleGuide:
    """Gaussian guide over ``k`` unconstrained scales: ``"normal"`` (diagonal) or ``"lowrank"``.

    Parameters
    ----------
    loc : Tensor (k,)
        Initial mean (e.g. the unconstrained prior medians).
    kind : {"normal", "lowrank"}
    rank : int or None
        Rank of ``W`` (default ``ceil(sqrt(k))``).
    init_scale : float
        Initial standard deviations (and scale of the random initial ``W``).
    generator : torch.Generator
        Draws the initial ``W``.
    """

    def __init__(self, loc: torch.Tensor, kind: str, rank: int | None, init_scale: float,
                 generator: torch.Generator) -> None:
        k = int(loc.shape[0])
        self.k = k
        self.loc = loc.detach().clone().to(torch.float64).requires_grad_(True)
        self.log_sd = torch.full((k,), math.log(init_scale), dtype=torch.float64, requires_grad=True)
        self.W = None
        if kind == "lowrank":
            r = int(rank) if rank is not None else max(1, math.ceil(math.sqrt(k)))
            w = torch.randn(k, r, dtype=torch.float64, generator=generator) * init_scale / math.sqrt(r)
            self.W = w.requires_grad_(True)

    @property
    def params(self) -> list[torch.Tensor]:
        """The optimised tensors."""
        return [self.loc, self.log_sd] + ([] if self.W is None else [self.W])

    def rsample(self, n: int, generator: torch.Generator, widen: float = 1.0) -> torch.Tensor:
        """``n`` reparameterised draws ``(n, k)`` (from the guide with its spread times ``widen``)."""
        eps = torch.randn(n, self.k, dtype=torch.float64, generator=generator)
        u = eps * self.log_sd.exp()
        if self.W is not None:
            u = u + torch.randn(n, self.W.shape[1], dtype=torch.float64, generator=generator) @ self.W.mT
        return self.loc + widen * u

    def log_prob_detached(self, u: torch.Tensor, widen: float = 1.0) -> torch.Tensor:
        """``log q(u)`` ``(n,)`` for draws ``u (n, k)`` with the guide's parameters detached: the
        "sticking the landing" term (Roeder, Wu & Duvenaud 2017), whose gradient flows only
        through the draws, so that the ELBO gradient vanishes exactly where ``q`` is the posterior.
        ``widen`` evaluates the guide with its spread times ``widen`` instead."""
        loc, sd = self.loc.detach(), widen * self.log_sd.detach().exp()
        if self.W is None:
            z = (u - loc) / sd
            return (-0.5 * z.square() - sd.log() - 0.5 * math.log(2.0 * math.pi)).sum(-1)
        W = widen * self.W.detach()
        cov = W @ W.mT + torch.diag(sd.square())
        return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov).log_prob(u)

    def entropy(self) -> torch.Tensor:
        """``H[q]`` ``()``, analytic."""
        if self.W is None:
            return self.log_sd.sum() + 0.5 * self.k * _LOG_2PI_E
        cov = self.W @ self.W.mT + torch.diag(torch.exp(2.0 * self.log_sd))
        return 0.5 * torch.logdet(cov) + 0.5 * self.k * _LOG_2PI_E


def linear_scan(M: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Solve ``x_t = M_t x_{t-1} + e_t`` (``x_{-1} = 0``) for all ``t`` by a parallel prefix scan.

    Parameters
    ----------
    M : Tensor (*b, n, d, d)
        ``M_0`` is ignored (there is no ``x_{-1}``).
    e : Tensor (*k, *b, n, d)
        Innovations; leading dims ``*k`` (e.g. draws) broadcast against ``M``.

    Returns
    -------
    Tensor (*k, *b, n, d)
    """
    n = M.shape[-3]
    A = torch.cat([torch.zeros_like(M[..., :1, :, :]), M[..., 1:, :, :]], -3)
    v = e
    offset = 1
    while offset < n:
        v = torch.cat([v[..., :offset, :],
                       v[..., offset:, :] + (A[..., offset:, :, :] @ v[..., :-offset, :].unsqueeze(-1)).squeeze(-1)],
                      -2)
        A = torch.cat([A[..., :offset, :, :], A[..., offset:, :, :] @ A[..., :-offset, :, :]], -3)
        offset *= 2
    return v


class MarkovGuide:
    """Gauss-Markov guide over the trajectories ``z_{0:T}`` ``(*runs, T + 1, d)`` (see the module docstring).

    Parameters
    ----------
    mu : Tensor (R, T + 1, d)
        Initial means of the ``R`` runs.
    B : Tensor (R, T + 1, d, d)
        Initial couplings ``B_t`` of ``x_t`` on ``x_{t+1}`` (``B_T`` unused).
    C : Tensor (R, T + 1, d, d)
        Initial lower-triangular factors with a positive diagonal.
    """

    def __init__(self, mu: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
        self.mu = mu.detach().clone().to(torch.float64).requires_grad_(True)
        self.B = B.detach().clone().to(torch.float64).requires_grad_(True)
        diag = C.diagonal(dim1=-2, dim2=-1).clamp_min(1e-8)
        self.log_diag = diag.log().detach().clone().requires_grad_(True)
        self.lower = torch.tril(C, -1).detach().clone().to(torch.float64).requires_grad_(True)
        self.d = int(mu.shape[-1])

    @classmethod
    def from_smoother(cls, mean: torch.Tensor, gain: torch.Tensor, cond_cov: torch.Tensor) -> MarkovGuide:
        """Start at a smoother: ``mean (R, T + 1, d)`` the smoothed means, ``gain (R, T, d, d)`` the
        smoother gains ``G_0..G_{T-1}``, ``cond_cov (R, T + 1, d, d)`` the covariances of
        ``z_t | z_{t+1}`` (of ``z_T`` at the end)."""
        d = mean.shape[-1]
        eye = torch.eye(d, dtype=torch.float64)
        cov = 0.5 * (cond_cov + cond_cov.mT)
        floor = 1e-10 * cov.diagonal(dim1=-2, dim2=-1).mean().clamp_min(1e-12)
        C = torch.linalg.cholesky(cov + floor * eye)
        B = torch.cat([gain, torch.zeros_like(gain[..., :1, :, :])], -3)
        return cls(mean, B, C)

    @property
    def params(self) -> list[torch.Tensor]:
        """The optimised tensors."""
        return [self.mu, self.B, self.log_diag, self.lower]

    def factors(self) -> torch.Tensor:
        """``C_t`` ``(R, T + 1, d, d)``."""
        return torch.tril(self.lower, -1) + torch.diag_embed(self.log_diag.exp())

    def rsample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` reparameterised trajectories ``(n, R, T + 1, d)``."""
        eps = torch.randn(n, *self.mu.shape, dtype=torch.float64, generator=generator)
        e = (self.factors() @ eps.unsqueeze(-1)).squeeze(-1)
        x = linear_scan(self.B.flip(-3), e.flip(-2)).flip(-2)  # backwards: x_t = B_t x_{t+1} + e_t
        return self.mu + x

    def log_prob_detached(self, z: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` ``(n,)`` for trajectories ``z (n, R, T + 1, d)`` with the guide's parameters
        detached (the "sticking the landing" term, see :meth:`ScaleGuide.log_prob_detached`)."""
        x = z - self.mu.detach()
        r = x - torch.cat([(self.B.detach()[..., :-1, :, :] @ x[..., 1:, :].unsqueeze(-1)).squeeze(-1),
                           torch.zeros_like(x[..., -1:, :])], -2)
        C = torch.tril(self.lower.detach(), -1) + torch.diag_embed(self.log_diag.detach().exp())
        w = torch.linalg.solve_triangular(C, r.unsqueeze(-1), upper=False).squeeze(-1)
        n_values = self.log_diag.numel()
        return (-0.5 * w.square().sum((-1, -2, -3)) - self.log_diag.detach().sum()
                - 0.5 * n_values * math.log(2.0 * math.pi))

    def entropy(self) -> torch.Tensor:
        """``H[q]`` ``()`` summed over runs, analytic."""
        return self.log_diag.sum() + 0.5 * self.log_diag.numel() * _LOG_2PI_E
