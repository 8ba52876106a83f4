"""Configuration of the exact Kalman engine: :class:`KalmanConfig`.

The filter, the Rauch-Tung-Striebel smoother, the forward-filter backward-sample draws and the
two engines (compiled steady-state recursions, batched torch loop) are described in
:mod:`bayesbridge.infer.kalman`; this module holds and validates the choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from bayesbridge.errors import ParameterError

__all__ = ["KalmanConfig", "Engine"]

Engine = Literal["auto", "steady", "loop"]


@dataclass
class KalmanConfig:
    """Configuration of the exact Kalman engine.

    Attributes
    ----------
    smooth : bool
        Also run the RTS smoother (``smoothed_mean``, ``smoothed_cov``).
    draws : int
        Number of posterior trajectories to draw by forward-filter backward-sample (0 = none);
        returned as ``smoothed_ensemble`` ``(*batch, T, draw, d)``.
    members : int or None
        Alias of ``draws`` so that ``assimilate(..., method="kalman", members=N)`` works.
    check_divergence : bool
        Check states for NaN/inf at every step and the innovations' consistency at the end.
    engine : {"auto", "steady", "loop"}
        ``"steady"``: :func:`~bayesbridge.infer.kalman.steady_state_smoother` (compiled; time-invariant ``A``, ``Q`` and no
        input requiring gradients); ``"loop"``: batched torch loop over time (time-varying
        models, autograd); ``"auto"`` (default): ``"steady"`` where it applies, else ``"loop"``.
    steady_tol : float
        Relative tolerance (>= 0) at which filter and smoother covariances count as converged and
        are reused (see :func:`~bayesbridge.infer.kalman.steady_state_smoother`); 0 recomputes them at every step.
    """

    smooth: bool = True
    draws: int = 0
    members: int | None = None
    check_divergence: bool = True
    engine: Engine = "auto"
    steady_tol: float = 1e-12

    def __post_init__(self) -> None:
        if self.engine not in get_args(Engine):
            raise ParameterError(
                f"engine: expected one of {', '.join(map(repr, get_args(Engine)))}, got {self.engine!r}."
            )
        if (not isinstance(self.steady_tol, (int, float)) or isinstance(self.steady_tol, bool)
                or not math.isfinite(self.steady_tol) or self.steady_tol < 0):
            raise ParameterError(
                f"steady_tol: expected a finite number >= 0 (e.g. 1e-12; 0 disables the steady-state "
                f"reuse), got {self.steady_tol!r}."
            )
        self.steady_tol = float(self.steady_tol)
        if self.members is not None:
            if self.draws not in (0, self.members):
                raise ParameterError(
                    f"members/draws: got members={self.members} and draws={self.draws}; they are "
                    f"aliases, give only one."
                )
            self.draws = self.members
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 0:
            raise ParameterError(
                f"draws: expected a non-negative integer number of posterior trajectories, got "
                f"{self.draws!r}."
            )
        self.members = self.draws
