"""Priors of observation-error scales floored at the representation error.

An observation of a box average through the operational model's patterns cannot be more accurate
than those patterns can represent the box: its error scale has a floor :math:`r_k`, the
representation error (``docs/design.md`` section 6: :math:`r_k^2 = \\epsilon_k^2 +
\\operatorname{Var}_t[B_k x_t - B_k \\operatorname{dec}(\\operatorname{enc}(x_t))]`, a floor
:math:`\\epsilon_k` plus the codec's residual on the box, measured on the operational training
data). :class:`FlooredHalfNormal` is the prior

.. math:: s_k = r_k + e_k,\\qquad e_k \\sim \\mathrm{HalfNormal}(\\tau_k),

with support :math:`[r_k, \\infty)`: the most probable scale is the floor itself, and the data
may ask for more (a mis-specified operational model, a noisier observing system), never for less.
Samplers work on :math:`u = \\log(s - r)` (``torch.distributions.biject_to`` of the support
``greater_than_eq(r)``), so no draw can fall below the floor.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from bayesbridge.errors import ParameterError

__all__ = ["FlooredHalfNormal", "floored_scale_prior"]

_HALF_LOG_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)
_NO_SHAPE = torch.Size()


class FlooredHalfNormal(dist.TorchDistribution):
    """``s = floor + |N(0, excess_scale^2)|``: a half-normal shifted to start at ``floor``.

    Parameters
    ----------
    floor : Tensor (*batch,)
        Lowest value ``r > 0`` (the representation error), where the density is largest.
    excess_scale : Tensor (*batch,)
        Scale ``tau > 0`` of the excess ``s - r``.
    validate_args : bool, optional
        Check arguments and values (torch's distribution validation).

    Notes
    -----
    :math:`\\log p(s) = \\tfrac12 \\log(2/\\pi) - \\log\\tau - (s - r)^2 / (2\\tau^2)` for
    :math:`s \\ge r`, else :math:`-\\infty`. Mean :math:`r + \\tau\\sqrt{2/\\pi}`.
    """

    arg_constraints = {"floor": constraints.positive, "excess_scale": constraints.positive}
    has_rsample = True

    def __init__(self, floor, excess_scale, validate_args=None) -> None:
        self.floor, self.excess_scale = torch.broadcast_tensors(
            torch.as_tensor(floor, dtype=torch.float64), torch.as_tensor(excess_scale, dtype=torch.float64))
        super().__init__(self.floor.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):  # noqa: D102 - the floored half-line
        return constraints.greater_than_eq(self.floor)

    @property
    def mean(self) -> torch.Tensor:  # noqa: D102
        return self.floor + self.excess_scale * math.sqrt(2.0 / math.pi)

    @property
    def variance(self) -> torch.Tensor:  # noqa: D102
        return self.excess_scale**2 * (1.0 - 2.0 / math.pi)

    def expand(self, batch_shape, _instance=None):  # noqa: D102
        shape = torch.Size(batch_shape)
        return FlooredHalfNormal(self.floor.expand(shape), self.excess_scale.expand(shape))

    def rsample(self, sample_shape=_NO_SHAPE) -> torch.Tensor:  # noqa: D102
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=torch.float64, device=self.floor.device)
        return self.floor + self.excess_scale * eps.abs()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:  # noqa: D102
        excess = value - self.floor
        lp = _HALF_LOG_2_OVER_PI - self.excess_scale.log() - 0.5 * (excess / self.excess_scale) ** 2
        return torch.where(excess >= 0, lp, torch.full_like(lp, -math.inf))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:  # noqa: D102
        excess = (value - self.floor).clamp(min=0.0)
        return torch.erf(excess / (self.excess_scale * math.sqrt(2.0)))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.floor + self.excess_scale * math.sqrt(2.0) * torch.erfinv(value)


def floored_scale_prior(floor, excess_scale=1.0) -> dist.Distribution:
    """The prior ``s_k = r_k + HalfNormal(excess_scale * r_k)`` of ``m`` observation-error scales.

    Parameters
    ----------
    floor : array (m,)
        Representation errors ``r_k > 0`` (observation units).
    excess_scale : float
        ``tau_k / r_k``: the excess over the floor in units of the floor (default 1: the excess
        is of the order of the representation error; 95 % prior mass below ``r_k (1 + 1.96 tau)``).

    Returns
    -------
    Distribution
        Event shape ``(m,)`` (the form :class:`~bayesbridge.model.StateSpaceModel` takes as
        ``obs_scale_prior``).

    Raises
    ------
    ParameterError
        For a floor or excess scale that is not positive and finite.
    """
    r = torch.as_tensor(floor, dtype=torch.float64).reshape(-1)
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or not bool((r > 0).all()):
        raise ParameterError(
            f"floor: expected positive finite representation errors (one per observable), got {r.tolist()}; "
            f"the floor is the smallest observation error the operational patterns allow (e.g. 0.15 degC)."
        )
    tau = float(excess_scale)
    if not (math.isfinite(tau) and tau > 0):
        raise ParameterError(f"excess_scale: expected a positive finite number (e.g. 1.0), got {excess_scale!r}.")
    return FlooredHalfNormal(r, tau * r).to_event(1)
