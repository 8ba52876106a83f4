"""State-space models: the generative model that every inference engine works on.

The contract shared by all engines is the :class:`StateSpace` protocol,

.. math::
    z_0 \\sim N(m_0, P_0), \\quad
    z_t = f_t(z_{t-1}) + w_t,\\; w_t \\sim N(0, Q_t), \\quad
    y_t = h(z_t) + v_t,\\; v_t \\sim N(0, R), \\qquad t = 1..T,

so the first observation sees :math:`z_1` (textbook column-vector convention; note that
:class:`pyro.distributions.GaussianHMM` uses row vectors and puts its initial state one step
before the first observation, which is the same convention once matrices are transposed).

:class:`LinearGaussianModel` is the linear-Gaussian special case (``f_t(z) = A z``,
``h(z) = H z``) for which the exact Kalman filter/smoother is the oracle.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from bayesbridge.errors import InputTypeError, ParameterError, ShapeMismatchError

__all__ = ["StateSpace", "LinearGaussianModel", "as_tensor"]


def as_tensor(value, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Convert an array-like argument to a tensor, naming the argument on failure."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    try:
        return torch.as_tensor(np.asarray(value, dtype=float), dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            f"{name}: expected an array or tensor of numbers, got {type(value).__name__} ({exc})."
        ) from exc


@runtime_checkable
class StateSpace(Protocol):
    """What an inference engine needs from a model (shapes ``(*batch, member, d)``)."""

    latent_dim: int
    obs_dim: int

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        ...

    def transition_mean(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """``f_t(z)``: ``(*batch, d) -> (*batch, d)``; ``step`` = t - 1 is the 0-based target index."""
        ...

    def transition_cov(self, step: int) -> torch.Tensor:
        """``Q_t`` ``(d, d)``."""
        ...

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``h(z)``: ``(*batch, d) -> (*batch, m)``, applied member by member."""
        ...

    def obs_cov(self) -> torch.Tensor:
        """``R`` ``(m, m)``."""
        ...


def _check_square(mat: torch.Tensor, name: str, size: int) -> None:
    if mat.shape != (size, size):
        raise ShapeMismatchError(
            f"{name}: expected shape ({size}, {size}), got {tuple(mat.shape)}."
        )


def _check_spd(mat: torch.Tensor, name: str, allow_singular: bool = False) -> None:
    if not torch.allclose(mat, mat.mT, atol=1e-10, rtol=1e-8):
        raise ParameterError(f"{name}: expected a symmetric covariance matrix; symmetrise it, e.g. (M + M.T) / 2.")
    eig_min = float(torch.linalg.eigvalsh(mat).min())
    scale = float(mat.diagonal().abs().max().clamp_min(1e-300))
    if eig_min < -1e-10 * scale or (not allow_singular and eig_min <= 0.0):
        raise ParameterError(
            f"{name}: expected a positive-definite covariance, smallest eigenvalue is {eig_min:.3g}; "
            f"add a small multiple of the identity."
        )


class LinearGaussianModel:
    """Linear-Gaussian state-space model ``z_t = A z_{t-1} + w_t``, ``y_t = H z_t + v_t``.

    Parameters
    ----------
    A : array (d, d)
        Transition matrix.
    Q : array (d, d)
        Model-error covariance (positive semi-definite).
    H : array (m, d)
        Observation matrix.
    R : array (m, m)
        Observation-error covariance (positive definite).
    m0 : array (d,)
        Mean of ``z_0``.
    P0 : array (d, d)
        Covariance of ``z_0``.

    Notes
    -----
    Textbook column-vector convention (Anderson & Moore 1979, *Optimal Filtering*); observations
    ``y_1..y_T`` start one step after ``z_0``.
    """

    def __init__(self, A, Q, H, R, m0, P0) -> None:
        self.A = as_tensor(A, "A")
        self.Q = as_tensor(Q, "Q")
        self.H = as_tensor(H, "H")
        self.R = as_tensor(R, "R")
        self.m0 = as_tensor(m0, "m0")
        self.P0 = as_tensor(P0, "P0")
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ShapeMismatchError(f"A: expected a square (d, d) matrix, got shape {tuple(self.A.shape)}.")
        d = self.A.shape[0]
        if self.H.ndim != 2 or self.H.shape[1] != d:
            raise ShapeMismatchError(
                f"H: expected shape (m, {d}) to match A ({d}, {d}), got {tuple(self.H.shape)}."
            )
        m = self.H.shape[0]
        _check_square(self.Q, "Q", d)
        _check_square(self.R, "R", m)
        _check_square(self.P0, "P0", d)
        if self.m0.shape != (d,):
            raise ShapeMismatchError(f"m0: expected shape ({d},), got {tuple(self.m0.shape)}.")
        _check_spd(self.Q, "Q", allow_singular=True)
        _check_spd(self.P0, "P0", allow_singular=True)
        _check_spd(self.R, "R")
        self.latent_dim = d
        self.obs_dim = m

    def __repr__(self) -> str:
        return f"LinearGaussianModel(latent_dim={self.latent_dim}, obs_dim={self.obs_dim})"

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.m0, self.P0

    def transition_mean(self, z: torch.Tensor, step: int = 0) -> torch.Tensor:
        return z @ self.A.mT

    def transition_cov(self, step: int = 0) -> torch.Tensor:
        return self.Q

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.H.mT

    def obs_cov(self) -> torch.Tensor:
        return self.R

    def simulate(
        self, n_steps: int, *, generator: torch.Generator | None = None, batch_shape: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a trajectory and its observations.

        Returns
        -------
        z : Tensor (*batch, T, d)
            States ``z_1..z_T``.
        y : Tensor (*batch, T, m)
            Observations ``y_1..y_T``.
        """
        d, m = self.latent_dim, self.obs_dim
        lq = torch.linalg.cholesky(self.Q + 1e-12 * torch.eye(d, dtype=self.Q.dtype))
        lr = torch.linalg.cholesky(self.R)
        l0 = torch.linalg.cholesky(self.P0 + 1e-12 * torch.eye(d, dtype=self.P0.dtype))
        noise = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=generator)  # noqa: E731
        z = self.m0 + noise(*batch_shape, d) @ l0.mT
        zs, ys = [], []
        for _ in range(n_steps):
            z = z @ self.A.mT + noise(*batch_shape, d) @ lq.mT
            zs.append(z)
            ys.append(z @ self.H.mT + noise(*batch_shape, m) @ lr.mT)
        return torch.stack(zs, -2), torch.stack(ys, -2)
