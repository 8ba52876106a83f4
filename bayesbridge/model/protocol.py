"""The :class:`StateSpace` protocol: what every inference engine needs from a model.

.. math::
    z_0 \\sim N(m_0, P_0), \\quad
    z_t = f_t(z_{t-1}) + w_t,\\; w_t \\sim N(0, Q_t), \\quad
    y_t = h(z_t) + v_t,\\; v_t \\sim N(0, R), \\qquad t = 1..T,

so the first observation sees :math:`z_1` (textbook column-vector convention; note that
:class:`pyro.distributions.GaussianHMM` uses row vectors and puts its initial state one step
before the first observation, which is the same convention once matrices are transposed).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["StateSpace"]


@runtime_checkable
class StateSpace(Protocol):
    """What an inference engine needs from a model (shapes ``(*batch, member, d)``).

    A :class:`typing.Protocol` (runtime checkable): :class:`LinearGaussianModel` and
    :class:`StateSpaceModel` conform, and so does any class with these members; the protocol
    itself is not instantiated (``StateSpace(*args, **kwargs)`` raises ``TypeError``).

    Attributes
    ----------
    latent_dim : int
        Latent size ``d``.
    obs_dim : int
        Number of observables ``m``.
    """

    latent_dim: int
    obs_dim: int

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        ...

    def transition_mean(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """``f_t(z)``: ``(*batch, d) -> (*batch, d)``; ``step`` = t - 1 is the 0-based target index."""
        ...

    def transition_cov(self, step: int) -> torch.Tensor:
        """``Q_t`` ``(d, d)``, model-error covariance at the 0-based target index ``step``."""
        ...

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``h(z)``: ``(*batch, d) -> (*batch, m)``, applied member by member."""
        ...

    def obs_cov(self) -> torch.Tensor:
        """``R`` ``(m, m)``."""
        ...
