"""The bridge options that ``assimilate`` and ``demo`` share: their help and their memory check.

The options themselves are checked by :func:`bayesbridge.cli.checks.check_bridge_options` and
mapped onto a :class:`~bayesbridge.bridge.BridgeConfig` by
:func:`bayesbridge.apps.bridge_options.bridge_config`, whose docstring says how ``--members`` and
``--particles`` relate.
"""

from __future__ import annotations

from collections.abc import Callable

from bayesbridge.cli.checks import DEFAULT_PARTICLES, available_memory, check_memory

__all__ = ["MEMBERS_HELP", "CODEC_HELP", "DYNAMICS_HELP", "PARTICLES_HELP", "DEMO_PARTICLES_HELP", "PROPOSAL_HELP",
           "LSTM_WINDOW", "check_engine_memory"]

MEMBERS_HELP = "Posterior draws (>= 2): ensemble members; with --method pf the smoothed trajectories."
CODEC_HELP = "Latent codec: eof, autoencoder or vae."
DYNAMICS_HELP = ("Latent dynamics: linear, seasonal (one linear model per calendar month), neural or lstm "
                 "(not with --method svi).")
PARTICLES_HELP = ("--method pf only: particles of the filter (>= 10; default 5000, at least --members, the "
                  "smoothed trajectories). More particles than trajectories is the remedy for collapsing weights.")
DEMO_PARTICLES_HELP = ("--method pf only: particles of the filter (>= 10; default 5000; the smoothed trajectories "
                       "are the 100 members).")
PROPOSAL_HELP = "--method pf only: auto (default: guided where the observation operator allows), guided or bootstrap."

LSTM_WINDOW = 6
"""Window of :class:`~bayesbridge.latent.LSTMDynamics` (its default): the state is ``6 * latent_dim`` long."""


def check_engine_memory(estimate: Callable[[int, int], int], *, method: str, members: int, latent_dim: int,
                        dynamics: str, particles: int | None, what: str, fix_period: str,
                        members_option: bool = True) -> None:
    """Refuse a request whose engine would not fit in memory, naming the option to reduce.

    Parameters
    ----------
    estimate : callable
        ``estimate(n, d)``: bytes of the run with ``n`` ensemble members or particles of a
        ``d``-dimensional state (affine in ``n``).
    method : str
        ``--method``: the particle filter holds its particles and the ``members`` drawn trajectories.
    members, latent_dim : int
        ``--members`` and ``--latent-dim``.
    dynamics : str
        ``--dynamics`` (``lstm`` multiplies the state size by :data:`LSTM_WINDOW`).
    particles : int or None
        ``--particles`` (``None``: not given; the particle filter then runs :data:`DEFAULT_PARTICLES`,
        at least ``members``).
    what : str
        The rest of the request, e.g. ``"over 840 months"``.
    fix_period : str
        What to do when even the smallest sample does not fit.
    members_option : bool
        Whether the command has ``--members`` (else its ensemble size is named as a number).
    """
    d = latent_dim * (LSTM_WINDOW if dynamics == "lstm" else 1)
    base = estimate(0, d)
    per = max(estimate(1, d) - base, 1)
    room = int((available_memory() * 0.9 - base) // per)
    if method != "pf":
        n, option, fits, least = members, "--members", room, 2
    elif particles is None:
        n, option, fits, least = members + max(members, DEFAULT_PARTICLES), "--members", room - DEFAULT_PARTICLES, 2
    else:
        n, option, fits, least = members + particles, "--particles", room - members, 10
    fix = f"use {option} {fits} or fewer" if fits >= least and (members_option or option != "--members") else fix_period
    request = f"--members {members}" if members_option else f"{members} members"
    request += f" with --particles {particles}" if particles is not None else ""
    request += f" with --latent-dim {latent_dim}" + (" and --dynamics lstm" if dynamics == "lstm" else "")
    check_memory(base + per * n, f"{request} {what}", fix)
