"""Validation of latent series and free runs of any :class:`~bayesbridge.latent.base.Transition`.

Calendar convention shared by the dynamics: a run's step ``s`` (0-based) falls in calendar month
``(start_month - 1 + s) % 12 + 1``; ``start_month`` (1..12) is the month of step 0. Fitting
stores the month of the first fitted time; set ``start_month`` on the model (or pass it to
``simulate``) to start a new run in another month.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from bayesbridge.errors import (
    FilterDivergenceError,
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
)

__all__ = [
    "FreeRunMixin",
    "LatentSeries",
    "latent_series",
    "month_of_step",
    "simulate_transition",
    "transition_start",
]


@dataclass(frozen=True)
class LatentSeries:
    """A validated latent series.

    Attributes
    ----------
    values : numpy.ndarray
        ``(time, latent)`` float64.
    months : numpy.ndarray or None
        ``(time,)`` calendar month 1..12 of each step, ``None`` without a datetime axis.
    """

    values: np.ndarray
    months: np.ndarray | None

    @property
    def start_month(self) -> int:
        """Calendar month of the first step (1 when unknown)."""
        return int(self.months[0]) if self.months is not None else 1


def latent_series(z: xr.DataArray, min_steps: int, argument: str = "z") -> LatentSeries:
    """Check ``z``, a ``(time, latent)`` DataArray of at least ``min_steps`` steps, and return its
    values and calendar months; errors name it ``argument``."""
    if not isinstance(z, xr.DataArray):
        raise InputTypeError(
            f"{argument}: expected an xarray.DataArray on (time, latent) (codec.encode output), "
            f"got {type(z).__name__}."
        )
    if set(z.dims) != {"time", "latent"}:
        raise ShapeMismatchError(
            f"{argument}: expected dimensions (time, latent), got {z.dims}; select one member "
            f"or stack the series first."
        )
    values = np.asarray(z.transpose("time", "latent").values, dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputValueError(
            f"{argument}: {int(bad.sum())} NaN/inf values (first at time index "
            f"{int(np.nonzero(bad.any(1))[0][0])}); latent series must be complete."
        )
    if values.shape[0] < min_steps:
        raise InputValueError(
            f"{argument}: {values.shape[0]} time steps are too few; fitting needs at least "
            f"{min_steps} for latent_dim {values.shape[1]}. Use a longer series or a smaller latent."
        )
    try:
        months = np.asarray(z["time"].dt.month.values, dtype=int)
    except (AttributeError, TypeError, KeyError):
        months = None
    return LatentSeries(values, months)


def month_of_step(start_month: int, step: int) -> int:
    """Calendar month (1..12) of step ``step`` of a run whose step 0 is in ``start_month``."""
    return (int(start_month) - 1 + int(step)) % 12 + 1


def simulate_transition(
    transition,
    n_steps: int,
    members: int = 1,
    seed: int = 0,
    z0: torch.Tensor | np.ndarray | None = None,
    burn_in: int = 120,
    start_month: int = 1,
) -> xr.DataArray:
    """Free run ``z_s = mean(z_{s-1}, s) + L_s eps_s`` of a transition, float64.

    Parameters
    ----------
    transition : Transition
        Anything with ``mean(z, step)``, ``noise_scale_tril(step)`` and ``latent_dim``.
    n_steps, members : int
        Length and number of independent runs.
    seed : int
        Seed of the ``torch.Generator`` of the noise.
    z0 : array, optional
        ``(latent,)`` or ``(members, latent)`` state at step ``-burn_in`` (default zeros).
    burn_in : int
        Discarded spin-up steps (a multiple of 12 keeps the calendar of ``start_month``).
    start_month : int
        Calendar month of recorded step 0.

    Returns
    -------
    xarray.DataArray
        ``(member, time, latent)`` with ``time = 0..n_steps-1`` and a ``month`` coordinate.
    """
    if int(n_steps) < 1 or int(members) < 1 or int(burn_in) < 0:
        raise ParameterError(
            f"n_steps, members must be >= 1 and burn_in >= 0, got {n_steps}, {members}, {burn_in}."
        )
    if not 1 <= int(start_month) <= 12:
        raise ParameterError(f"start_month: expected a calendar month 1..12, got {start_month}.")
    d = transition.latent_dim
    gen = torch.Generator().manual_seed(int(seed))
    if z0 is None:
        z = torch.zeros(members, d, dtype=torch.float64)
    else:
        z = torch.as_tensor(np.asarray(z0, dtype=float)).expand(members, d).clone()
    out = torch.empty(members, n_steps, d, dtype=torch.float64)
    if burn_in == 0:
        out[:, 0] = z
    with torch.no_grad():
        for s in range(-burn_in + 1, n_steps):
            step = s + (int(start_month) - 1) - (transition_start(transition) - 1)
            chol = transition.noise_scale_tril(step).to(torch.float64).cpu()
            eps = torch.randn(members, d, generator=gen, dtype=torch.float64)
            z = transition.mean(z, step).to(torch.float64).cpu() + eps @ chol.T
            if s >= 0:
                out[:, s] = z
    if not torch.isfinite(out).all():
        raise FilterDivergenceError(
            "simulate: the free run produced NaN/inf states (unstable dynamics); check the fitted "
            "transition (spectral radius of the linear part) or train with more data."
        )
    months = [month_of_step(start_month, s) for s in range(n_steps)]
    return xr.DataArray(
        out.numpy(),
        dims=("member", "time", "latent"),
        coords={"member": np.arange(members), "time": np.arange(n_steps),
                "latent": np.arange(d), "month": ("time", months)},
        name="z",
        attrs={"long_name": "free-running latent state", "units": "1"},
    )


def transition_start(transition) -> int:
    """``start_month`` of a transition (1 when it has none)."""
    return int(getattr(transition, "start_month", None) or 1)


class FreeRunMixin:
    """Adds :meth:`simulate` to a fitted transition with ``start_month`` and ``_require()``."""

    start_month: int | None

    def simulate(
        self, n_steps: int, members: int = 1, seed: int = 0, *, z0=None, burn_in: int = 120,
        start_month: int | None = None,
    ) -> xr.DataArray:
        """Free run ``(member, time, latent)`` from step ``-burn_in``; see :func:`simulate_transition`.

        ``n_steps`` recorded steps of ``members`` runs seeded by ``seed``, started from ``z0``
        (default zeros). ``start_month`` (1..12) is the calendar month of recorded step 0
        (default: the model's ``start_month``, i.e. the month of the first fitted time).
        """
        self._require()
        return simulate_transition(
            self, n_steps, members, seed, z0=z0, burn_in=burn_in,
            start_month=start_month or self.start_month or 1,
        )
