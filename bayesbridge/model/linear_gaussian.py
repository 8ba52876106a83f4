"""The linear-Gaussian state-space model, for which the exact Kalman smoother is the oracle.

:class:`LinearGaussianModel` is the special case ``f_t(z) = A z``, ``h(z) = H z`` of the
:class:`~bayesbridge.model.protocol.StateSpace` protocol; :class:`LinearTransition` is linear
dynamics as a :class:`~bayesbridge.latent.base.Transition` for the general
:class:`~bayesbridge.model.state_space.StateSpaceModel`.
"""

from __future__ import annotations

import copy

import torch

from bayesbridge.errors import ShapeMismatchError
from bayesbridge.model.tensors import as_tensor, check_finite, check_spd, check_square

__all__ = ["LinearGaussianModel", "LinearTransition"]


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
        for name in ("A", "Q", "H", "R", "m0", "P0"):
            check_finite(getattr(self, name), name)
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ShapeMismatchError(f"A: expected a square (d, d) matrix, got shape {tuple(self.A.shape)}.")
        d = self.A.shape[0]
        if self.H.ndim != 2 or self.H.shape[1] != d:
            raise ShapeMismatchError(
                f"H: expected shape (m, {d}) to match A ({d}, {d}), got {tuple(self.H.shape)}."
            )
        m = self.H.shape[0]
        check_square(self.Q, "Q", d)
        check_square(self.R, "R", m)
        check_square(self.P0, "P0", d)
        if self.m0.shape != (d,):
            raise ShapeMismatchError(f"m0: expected shape ({d},), got {tuple(self.m0.shape)}.")
        check_spd(self.Q, "Q", allow_singular=True)
        check_spd(self.P0, "P0", allow_singular=True)
        check_spd(self.R, "R")
        self.latent_dim = d
        self.obs_dim = m

    def __repr__(self) -> str:
        return f"LinearGaussianModel(latent_dim={self.latent_dim}, obs_dim={self.obs_dim})"

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors."""
        return self.A.device

    def to(self, device: str | torch.device) -> LinearGaussianModel:
        """A copy with ``A, Q, H, R, m0, P0`` on ``device`` (validated, see :func:`bayesbridge.devices.resolve_device`)."""
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        new = copy.copy(self)
        for name in ("A", "Q", "H", "R", "m0", "P0"):
            setattr(new, name, getattr(self, name).to(dev))
        return new

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        return self.m0, self.P0

    def transition_mean(self, z: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``A z`` for ``z`` ``(*batch, d)``; ``step`` is ignored (time-invariant)."""
        return z @ self.A.mT

    def transition_cov(self, step: int = 0) -> torch.Tensor:
        """``Q`` ``(d, d)``; ``step`` is ignored (time-invariant)."""
        return self.Q

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``H z``: ``(*batch, d) -> (*batch, m)`` for states ``z``."""
        return z @ self.H.mT

    def obs_cov(self) -> torch.Tensor:
        """``R`` ``(m, m)``."""
        return self.R

    def simulate(
        self, n_steps: int, *, generator: torch.Generator | None = None, batch_shape: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a trajectory and its observations.

        ``z_0 ~ N(m0, P0)``, then ``z_t = A z_{t-1} + w_t`` and ``y_t = H z_t + v_t`` with
        Gaussian ``w_t ~ N(0, Q)``, ``v_t ~ N(0, R)`` (``Q`` and ``P0`` get a 1e-12 jitter for the
        Cholesky factor).

        Parameters
        ----------
        n_steps : int
            Number of steps ``T``.
        generator : torch.Generator, optional
            Source of the standard normals (``None``: torch's global generator).
        batch_shape : tuple of int
            Leading batch shape: independent trajectories.

        Returns
        -------
        z : Tensor (*batch, T, d)
            States ``z_1..z_T``.
        y : Tensor (*batch, T, m)
            Observations ``y_1..y_T``.
        """
        d, m = self.latent_dim, self.obs_dim
        dev = self.A.device
        lq = torch.linalg.cholesky(self.Q + 1e-12 * torch.eye(d, dtype=self.Q.dtype, device=dev))
        lr = torch.linalg.cholesky(self.R)
        l0 = torch.linalg.cholesky(self.P0 + 1e-12 * torch.eye(d, dtype=self.P0.dtype, device=dev))
        noise = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=generator, device=dev)  # noqa: E731
        z = self.m0 + noise(*batch_shape, d) @ l0.mT
        zs, ys = [], []
        for _ in range(n_steps):
            z = z @ self.A.mT + noise(*batch_shape, d) @ lq.mT
            zs.append(z)
            ys.append(z @ self.H.mT + noise(*batch_shape, m) @ lr.mT)
        return torch.stack(zs, -2), torch.stack(ys, -2)


class LinearTransition:
    """Time-invariant linear dynamics ``z_t = A z_{t-1} + L w_t`` (a :class:`~bayesbridge.latent.base.Transition`).

    Parameters
    ----------
    A : array (d, d)
        Transition matrix (column-vector convention).
    noise_scale_tril : array (d, d)
        Lower-triangular factor ``L`` of the model-error covariance ``L L^T``.
    """

    def __init__(self, A, noise_scale_tril) -> None:
        self.A = as_tensor(A, "A")
        self.L = as_tensor(noise_scale_tril, "noise_scale_tril")
        check_finite(self.A, "A")
        check_finite(self.L, "noise_scale_tril")
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ShapeMismatchError(f"A: expected a square (d, d) matrix, got shape {tuple(self.A.shape)}.")
        check_square(self.L, "noise_scale_tril", self.A.shape[0])
        self.latent_dim = int(self.A.shape[0])

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``A z`` for ``z`` of shape ``(*batch, d)``; ``step`` is ignored (time-invariant)."""
        return z @ self.A.mT

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """``L`` ``(d, d)``; ``step`` is ignored (time-invariant)."""
        return self.L

    def to(self, device: str | torch.device) -> LinearTransition:
        """A copy with ``A`` and ``L`` on ``device``."""
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        new = copy.copy(self)
        new.A, new.L = self.A.to(dev), self.L.to(dev)
        return new
