"""Structural error of the operational model's patterns on boxes that are not assimilated.

A box that is not assimilated (Niño 1+2 when Niño 3 and Niño 4 are) is predicted through the
operational model's patterns: its posterior follows the operational model's own relation between
that box and the observed indices. Where the real relation differs, the posterior of the box is
too narrow and nothing inside the assimilation can tell, since the box has no data.

The real relation is known along the equator from independent observations: the bundled ERSST v5
regression of the 5S-5N SST anomaly on Niño 3 and Niño 4 (Chen, Fang & Yu 2022;
``data/PROVENANCE.md``), :math:`\\mathrm{SSTA}(x, t) \\approx b_e(x) T_E(t) + b_c(x) T_C(t)`. For a
box :math:`j` with the coefficients :math:`\\beta^{obs}_j = (\\bar b_e, \\bar b_c)` averaged over its
longitudes, and the operational model's coefficients :math:`\\beta^{op}_j` (least squares of the
box on Niño 3 and Niño 4 in the codec's reconstruction of the operational training data), the
two relations differ at month :math:`t` by

.. math:: a_{j,t} = (\\beta^{obs}_j - \\beta^{op}_j)^\\top u_t, \\qquad u_t = (T_{E,t}, T_{C,t}),

with :math:`u_t` the posterior mean of Niño 3 and Niño 4. Each whole-trajectory draw :math:`i` of
the box series gets :math:`\\xi_i a_{j,t}` added, :math:`\\xi_i \\sim \\mathcal N(0, 1)` once per draw:
an uncertain amplitude of the pattern mismatch, coherent in time, that puts the observed relation
one posterior standard deviation away from the operational one. It scales with the ENSO state
(a strong El Niño, a large mismatch) and vanishes for a box the patterns represent as the
observations do. Assimilated boxes are not changed (their data constrain them directly), nor are
the decoded fields: they stay the operational patterns.

The regression holds for the 5S-5N band; for a box off the equator (Niño 1+2 is 10S-0) the band
at the box's longitudes stands in for it. Boxes of another variable, or outside the regression's
longitudes, get no term. Measurements and the alternatives tried are in ``docs/lab-notes.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from bayesbridge.bridge.structural import PREDICTORS as _PREDICTORS

__all__ = ["StructuralError", "structural_error"]


@dataclass(frozen=True)
class StructuralError:
    """Per-box pattern mismatch of :func:`structural_error`.

    Attributes
    ----------
    coefficients : pandas.DataFrame
        One row per box: ``op_b_e``, ``op_b_c`` (operational), ``obs_b_e``, ``obs_b_c`` (ERSST
        regression), and the ``lon_min``/``lon_max`` the observed ones were averaged over.
    """

    coefficients: pd.DataFrame

    @property
    def boxes(self) -> tuple[str, ...]:
        """Boxes with a structural term."""
        return tuple(str(b) for b in self.coefficients.index)

    def terms(self) -> dict[str, tuple[float, float]]:
        """``{box: (delta_e, delta_c)}``, observed minus operational coefficients: the
        ``structural_error`` argument of :meth:`bayesbridge.bridge.Bridge.assimilate`."""
        c = self.coefficients
        return {str(b): (float(c.loc[b, "obs_b_e"] - c.loc[b, "op_b_e"]), float(c.loc[b, "obs_b_c"] - c.loc[b, "op_b_c"]))
                for b in c.index}


def _lon360(x: float) -> float:
    return float(x) % 360.0


def structural_error(bridge, boxes: Sequence[str]) -> StructuralError:
    """The structural terms of ``boxes`` for a fitted bridge (boxes without one are left out).

    Parameters
    ----------
    bridge : Bridge
        A fitted :class:`~bayesbridge.bridge.Bridge` that observes ``nino3`` and ``nino4``.
    boxes : sequence of str
        Candidate boxes (e.g. the unobserved standard boxes).

    Returns
    -------
    StructuralError
        Empty when the bridge cannot observe Niño 3 and Niño 4.
    """
    from bayesbridge.datasets.observed import equatorial_regression
    from bayesbridge.regions import get_region

    empty = StructuralError(pd.DataFrame(columns=["op_b_e", "op_b_c", "obs_b_e", "obs_b_c", "lon_min", "lon_max"]))
    if not all(p in bridge.observables for p in _PREDICTORS):
        return empty
    reg = equatorial_regression()
    lon = np.asarray(reg["lon"].values, dtype=float) % 360.0
    rows = {}
    candidates = [b for b in boxes if b not in _PREDICTORS and b in bridge.observables]
    for box in candidates:
        region = get_region(box)
        lo, hi = _lon360(region.lon_min), _lon360(region.lon_max)
        sel = (lon >= lo) & (lon <= hi) if lo <= hi else (lon >= lo) | (lon <= hi)
        if region.variable != "tos" or not sel.any():
            continue
        rows[box] = {"obs_b_e": float(reg["b_e"].values[sel].mean()), "obs_b_c": float(reg["b_c"].values[sel].mean()),
                     "lon_min": lo, "lon_max": hi}
    if not rows:
        return empty
    # the operational relation: the codec's reconstruction of the training data, observed by the boxes
    model = bridge.state_space_model([*_PREDICTORS, *rows], 1)
    z = torch.as_tensor(bridge.latent_train.values, dtype=torch.float64, device="cpu")
    if z.shape[-1] != model.latent_dim:  # a lag-augmented state (LSTM dynamics): no plain training series
        return empty
    with torch.no_grad():
        idx = model.observe(z).double().cpu().numpy()  # (T, 2 + boxes)
    X = np.column_stack([np.ones(idx.shape[0]), idx[:, :2]])
    beta = np.linalg.lstsq(X, idx[:, 2:], rcond=None)[0]  # (3, boxes)
    for k, box in enumerate(rows):
        rows[box].update(op_b_e=float(beta[1, k]), op_b_c=float(beta[2, k]))
    frame = pd.DataFrame.from_dict(rows, orient="index")[["op_b_e", "op_b_c", "obs_b_e", "obs_b_c", "lon_min", "lon_max"]]
    frame.index.name = "box"
    return StructuralError(frame)
