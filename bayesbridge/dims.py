"""Dimension names and array layouts shared across bayesbridge (``docs/conventions.md``).

xarray objects use the CF-style names below; torch tensors follow two layouts, written in
docstrings as ``(*batch, T, member, d)`` (engines: runs, time, ensemble members, latent) and
``(T, draw, d)`` (a posterior's pooled draws, time-major for chunked decoding).
"""

from __future__ import annotations

__all__ = ["TIME", "LAT", "LON", "MEMBER", "DRAW", "CHAIN", "RUN", "LATENT", "FIELD_DIMS", "RUN_DIMS"]

TIME = "time"
"""Monthly time axis (cftime or numpy datetimes)."""
LAT = "lat"
"""Latitude, degrees north."""
LON = "lon"
"""Longitude, degrees east (0..360 or -180..180 on input, 0..360 inside bayesbridge)."""
MEMBER = "member"
"""Ensemble member of an idealized-model ensemble or of an ensemble engine."""
DRAW = "draw"
"""Posterior draw (ArviZ convention)."""
CHAIN = "chain"
"""Markov chain (ArviZ convention; ensemble and variational draws form one chain)."""
RUN = "run"
"""Independent run of a batch (e.g. one idealized run per parameter draw)."""
LATENT = "latent"
"""Latent component of a codec."""

FIELD_DIMS: tuple[str, str, str] = (TIME, LAT, LON)
"""Dimensions of a field variable, in order."""
RUN_DIMS: tuple[str, ...] = (RUN, MEMBER, DRAW)
"""Names accepted for the dimension of independent runs when a batch of index series is assimilated."""
