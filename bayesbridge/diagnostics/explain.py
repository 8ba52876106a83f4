"""Explanations of the correction: physical gain maps and latent increments.

The bridge corrects the operational model by assimilating a few indices ``y_t`` (``m`` of them)
into its latent state ``z_t`` (``d`` components) and decoding. Three views explain *what* the
assimilation changes and *why*.

**Physical gain maps** (how a unit innovation in each index moves every grid point). The
analysis update is :math:`x^a_t = x^f_t + K_t (y_t - h(z^f_t))` in field space with

.. math::
    K_t = C_{xh}(t)\\,\\bigl(C_{hh}(t) + R\\bigr)^{-1} \\quad (n_\\text{points} \\times m),

where :math:`x = \\mathrm{decode}(z)` and :math:`h = h(z)` are evaluated on the forecast
ensemble and :math:`C_{xh}, C_{hh}` are ensemble (co)variances (Evensen 2003, eq. 2.25;
Houtekamer & Mitchell 1998). Column ``k`` of :math:`K_t` is the field increment produced by a
unit innovation in index ``k`` with the other innovations zero. For the exact Kalman filter of
a linear-Gaussian latent model the latent gain :math:`P^f_t H_t^T S_t^{-1}` is mapped through
the decoder's Jacobian :math:`D_t = \\partial\\,\\mathrm{decode}/\\partial z` at the forecast
mean, :math:`K_t = D_t P^f_t H_t^T (H_t P^f_t H_t^T + R)^{-1}`, which is exact for linear
codecs (EOF) and the first-order (extended Kalman) gain otherwise. Gains are averaged over the
steps where each index is observed (optionally by calendar month, which shows the seasonal
dependence of the correction).

**Latent increments** :math:`\\delta_t = \\bar z^a_t - \\bar z^f_t` (analysis minus forecast
mean). Their uncentred second moment :math:`M = \\langle \\delta_t \\delta_t^T \\rangle`
(systematic corrections count) is split per latent component (:math:`M_{kk} / \\mathrm{tr} M`)
and per principal direction (eigenvectors :math:`e_j` of :math:`M`, share
:math:`\\lambda_j / \\sum \\lambda`); the leading directions are decoded to maps
:math:`\\sqrt{\\lambda_j}\\, D\\, e_j` (the field pattern of a one-rms increment along
:math:`e_j`). Shares are in the Euclidean metric of the latent coordinates.

**Regime composites** of the correction (high versus low Walker index, EP versus CP years)
live in :mod:`bayesbridge.diagnostics.regimes`.

This module gathers the three views: the gain maps and :func:`forecast_ensemble` are computed
in :mod:`bayesbridge.diagnostics.gains`, the latent and decoded increments in
:mod:`bayesbridge.diagnostics.increments` (both on the decoding and map helpers of
``_explain_common``), and the composites in :mod:`bayesbridge.diagnostics.regimes`; their
public names are re-exported here.

References
----------
Behnoudfar, Moser, Bocquet, Cheng & Chen (2026), npj Clim. Atmos. Sci., arXiv:2510.13030 —
latent data assimilation bridging idealized and operational models; Evensen (2003), Ocean
Dynamics 53, 343-367; Kalnay (2003), *Atmospheric Modeling, Data Assimilation and
Predictability*, sec. 5.4 (gain and increments); Chen, Fang & Yu (2022), npj Clim. Atmos. Sci.
5:16 (regimes of the multiscale ENSO model).
"""

from __future__ import annotations

from bayesbridge.diagnostics.gains import GainMaps, forecast_ensemble, gain_maps
from bayesbridge.diagnostics.increments import (
    LatentIncrements,
    decoded_increments,
    latent_increments,
)
from bayesbridge.diagnostics.regimes import (
    RegimeComposites,
    enso_regimes,
    regime_composites,
    walker_regimes,
)

__all__ = [
    "GainMaps",
    "LatentIncrements",
    "RegimeComposites",
    "forecast_ensemble",
    "gain_maps",
    "latent_increments",
    "decoded_increments",
    "walker_regimes",
    "enso_regimes",
    "regime_composites",
]
