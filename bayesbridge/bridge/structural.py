"""Structural-error terms added to the box-index draws of boxes that are not assimilated.

A term is a pair of coefficient differences :math:`\\delta_j = \\beta^{obs}_j - \\beta^{op}_j`
of box :math:`j` on Niño 3 and Niño 4 (how the observed relation between the box and those two
indices differs from the operational model's; estimated by
:func:`bayesbridge.apps.structural.structural_error`). Draw :math:`i` of the box series gets

.. math:: x^{(i)}_{j,t} \\leftarrow x^{(i)}_{j,t} + \\xi_i\\, \\delta_j^\\top u_t,
          \\qquad \\xi_i \\sim \\mathcal N(0, 1),

with :math:`u_t` the posterior mean of (Niño 3, Niño 4) at month :math:`t`: one amplitude per
whole-trajectory draw, so the draws stay coherent in time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bayesbridge.errors import ParameterError, VariableNotFoundError

__all__ = ["PREDICTORS", "check_structural", "add_structural_terms"]

PREDICTORS: tuple[str, str] = ("nino3", "nino4")
"""The indices the structural terms are linear in."""

_STREAM = 71  # numpy.random.default_rng([seed, stream]): the per-draw amplitudes


def check_structural(structural, boxes: Sequence[str]) -> dict[str, np.ndarray]:
    """Validate ``{box: (delta_e, delta_c)}`` against the posterior's ``boxes``; ``{}`` for None."""
    if structural is None:
        return {}
    if not isinstance(structural, Mapping):
        raise ParameterError(f"structural_error: expected a mapping box -> (delta_e, delta_c), got {type(structural).__name__}.")
    out = {}
    for box, delta in structural.items():
        d = np.asarray(delta, dtype=np.float64).reshape(-1)
        if d.shape != (2,) or not np.isfinite(d).all():
            raise ParameterError(f"structural_error[{box!r}]: expected two finite coefficients (Nino 3, Nino 4), got {delta!r}.")
        out[str(box)] = d
    missing = [b for b in (*out, *(PREDICTORS if out else ())) if b not in boxes]
    if missing:
        raise VariableNotFoundError(f"structural_error: boxes {missing} have no index series here; available: {', '.join(boxes)}.")
    return out


def add_structural_terms(index: np.ndarray, boxes: Sequence[str], assimilated: Sequence[str],
                         structural: Mapping[str, np.ndarray], seed: int) -> dict[str, float]:
    """Add the terms in place to ``index`` ``(box, T, draw)`` for the boxes not in ``assimilated``.

    Returns
    -------
    dict
        ``{box: RMS over months of the term's standard deviation}`` for the boxes changed.
    """
    if not structural:
        return {}
    boxes = list(boxes)
    u = np.stack([index[boxes.index(p)].mean(axis=-1) for p in PREDICTORS], axis=-1)  # (T, 2)
    xi = np.random.default_rng([int(seed), _STREAM]).standard_normal(index.shape[-1])
    changed = {}
    for box, delta in structural.items():
        if box in assimilated:
            continue
        amplitude = u @ delta  # (T,)
        index[boxes.index(box)] += amplitude[:, None] * xi[None, :]
        changed[box] = float(np.sqrt(np.mean(amplitude**2)))
    return changed
