"""The bridge settings the commands offer, as one :class:`~bayesbridge.bridge.BridgeConfig`.

``bayesbridge assimilate`` and ``bayesbridge demo`` (and :class:`~bayesbridge.apps.demo.DemoConfig`)
take the latent space (``codec``, ``dynamics``, ``latent_dim``), the engine (``method``), a
sample size (``members``) and, for the particle filter only, ``particles`` and ``proposal``.
:func:`bridge_config` maps them onto the fields of :class:`~bayesbridge.bridge.BridgeConfig`:

- ``members`` is the number of posterior draws every engine returns: ensemble members of
  ``enkf``/``etkf``/``enks``, posterior draws of ``kalman``/``svi`` and, for ``pf``, the whole
  trajectories drawn by backward simulation (:class:`~bayesbridge.infer.particle.ParticleConfig`
  ``n_trajectories``);
- ``particles`` (``pf`` only) is the size ``N`` of the particle cloud that carries the filter
  (:class:`~bayesbridge.infer.particle.ParticleConfig` ``members``; at least 10), by default
  :data:`DEFAULT_PARTICLES` (at least ``members``). More particles than draws is the usual remedy for a collapsing filter: the cost of
  the filter grows with ``N``, that of the backward smoother with ``N`` times the draws;
- ``proposal`` (``pf`` only): ``auto`` (default; the locally optimal guided proposal when the
  observation operator allows it), ``guided`` or ``bootstrap``.

A particle or proposal setting with another engine is refused, not ignored.
"""

from __future__ import annotations

from typing import get_args

from bayesbridge.bridge import BridgeConfig
from bayesbridge.errors import ParameterError, check_choice
from bayesbridge.infer.particle_config import Proposal

__all__ = ["bridge_config", "default_members", "DEFAULT_MEMBERS", "DEFAULT_PARTICLES", "MIN_PARTICLES", "PROPOSALS"]

DEFAULT_MEMBERS = 100
"""Posterior draws when none are asked for (the 90 % interval of 100 exchangeable draws covers
about 88 % of a calibrated posterior; of 40, 86 %)."""
ENSEMBLE_KALMAN = ("enkf", "etkf", "enks")
"""Engines whose posterior is the span of their ensemble."""

MIN_PARTICLES = 10
"""Fewest particles :class:`~bayesbridge.infer.particle.ParticleConfig` accepts."""

DEFAULT_PARTICLES = 5000
"""Particles of the filter when none are asked for: with the guided proposal at latent size 20
(quick twin, 100 smoothed trajectories, the ``eq_sst`` profile assimilated) 2,000 particles left
the backward smoother narrower than the exact one (Nino 4 covered in 79 % of months), 5,000 match
the ensemble smoother's coverage within 3 points (``docs/lab-notes.md``)."""

PROPOSALS: tuple[str, ...] = get_args(Proposal)
"""The particle filter's proposals (``auto``, ``guided``, ``bootstrap``)."""


def default_members(method: str, dynamics: str, latent_dim: int, window: int = 6) -> int:
    """Members when none are asked for: :data:`DEFAULT_MEMBERS`, or more for a windowed state.

    An ensemble Kalman engine's posterior covariance has rank at most ``members - 1``; with
    ``dynamics="lstm"`` the state is the window ``(z_t, ..., z_{t-w+1})`` of ``w d`` numbers (120
    for ``w = 6``, ``d = 20``), and 100 members leave it rank-deficient and over-confident (quick
    twin: Nino 3 covered in 51 % of months with 100 members, 96 % with 300; ``docs/lab-notes.md``).
    Those engines then get ``2 w d`` members.

    Parameters
    ----------
    method, dynamics : str
        Engine and latent dynamics.
    latent_dim : int
        Latent size ``d``.
    window : int
        ``w`` of the LSTM (its default, 6).

    Returns
    -------
    int
    """
    if dynamics == "lstm" and method in ENSEMBLE_KALMAN:
        return max(DEFAULT_MEMBERS, 2 * int(window) * int(latent_dim))
    return DEFAULT_MEMBERS


def bridge_config(
    *,
    method: str = "enks",
    members: int = 100,
    particles: int | None = None,
    proposal: str | None = None,
    **fields,
) -> BridgeConfig:
    """The :class:`~bayesbridge.bridge.BridgeConfig` of the command-line settings (module docstring).

    Parameters
    ----------
    method : str
        Inference engine (:data:`bayesbridge.infer.METHODS`).
    members : int
        Posterior draws (ensemble members; whole trajectories of ``pf``), >= 2.
    particles : int, optional
        ``pf`` only: particles of the filter (>= 10; default :data:`DEFAULT_PARTICLES`, at least
        ``members``).
    proposal : {"auto", "guided", "bootstrap"}, optional
        ``pf`` only: the particle proposal (default ``"auto"``).
    **fields
        Further fields of :class:`~bayesbridge.bridge.BridgeConfig` (``codec``, ``dynamics``,
        ``latent_dim`` ...); ``method_options`` are merged under the particle settings.

    Returns
    -------
    BridgeConfig

    Raises
    ------
    ParameterError
        ``particles`` or ``proposal`` with another method than ``pf``, fewer than
        :data:`MIN_PARTICLES` particles, an unknown proposal, or any invalid
        :class:`~bayesbridge.bridge.BridgeConfig` field.
    """
    options = dict(fields.pop("method_options", None) or {})
    if method != "pf":
        given = [name for name, value in (("particles", particles), ("proposal", proposal)) if value is not None]
        if given:
            raise ParameterError(
                f"{', '.join(given)}: only the particle filter uses {' and '.join(given)}, but method is "
                f"{method!r}; drop {' and '.join(given)} or use method 'pf'."
            )
        return BridgeConfig(method=method, members=members, method_options=options, **fields)
    if particles is None:
        particles = max(members, DEFAULT_PARTICLES)
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < MIN_PARTICLES:
        raise ParameterError(
            f"particles: a particle filter needs an integer of at least {MIN_PARTICLES} particles (1,000 or more "
            f"for a posterior that does not collapse), got {particles!r}."
        )
    if not (isinstance(members, int) and not isinstance(members, bool) and members >= 2):
        raise ParameterError(f"members: expected an integer >= 2 (posterior trajectories), got {members!r}.")
    options["proposal"] = "auto" if proposal is None else proposal
    check_choice(options["proposal"], "proposal", PROPOSALS)
    options["n_trajectories"] = members
    return BridgeConfig(method=method, members=particles, method_options=options, **fields)
