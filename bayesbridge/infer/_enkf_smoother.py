"""The two ensemble Kalman smoothers of ``method="enks"``: ensemble RTS and the EnKS transform.

* :func:`ensemble_rts` (``smoother="rts"``, Raanes 2016, *Q. J. R. Meteorol. Soc.* 142,
  1259-1264): on the stored analysis ensembles ``E^a_t`` and forecast ensembles ``E^f_t``
  ``(*b, T, N, d)``, with anomalies ``X``,

  .. math::
      G_t = X_t^{aT} X_{t+1}^f \\bigl(X_{t+1}^{fT} X_{t+1}^f\\bigr)^{-1},\\qquad
      E^s_t = E^a_t + (E^s_{t+1} - E^f_{t+1})\\, G_t^T,

  backwards from ``E^s_T = E^a_T``; it uses only consecutive ensembles, so spurious long-range
  sample correlations add no noise, and with second-order exact sampling it reproduces the RTS
  smoothed means of linear-Gaussian models exactly.
* :func:`transform_smooth` (``smoother="transform"``, Evensen & van Leeuwen 2000, *Mon. Wea.
  Rev.* 128, 1852-1867): every ETKF analysis is a right transform ``E_a = T_t E_f`` of the
  forecast ensemble, applied during the filter pass to the smoothed ensembles of the previous
  ``lag`` steps.
"""

from __future__ import annotations

import torch

from bayesbridge.infer._enkf_analysis import sym_inverse
from bayesbridge.infer.enkf_config import EnKFConfig

__all__ = ["ensemble_rts", "transform_smooth"]


def ensemble_rts(an_all: torch.Tensor, fc_all: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """Ensemble RTS smoother (Raanes 2016) on stored analysis/forecast ensembles ``(*b, T, N, d)``.

    ``G_t = X_t^{a T} X_{t+1}^f (X_{t+1}^{f T} X_{t+1}^f)^{-1}`` (robust inverse as configured by
    ``config``, see :func:`~bayesbridge.infer._enkf_analysis.sym_inverse`),
    ``E_t^s = E_t^a + (E_{t+1}^s - E_{t+1}^f) G_t^T``. The gains of all steps are computed at
    once. Returns the smoothed ensembles ``(*b, T, N, d)``.
    """
    T = an_all.shape[-3]
    out = torch.empty_like(an_all)
    out[..., T - 1, :, :] = an_all[..., T - 1, :, :]
    if T == 1:
        return out
    Xa = an_all[..., :-1, :, :] - an_all[..., :-1, :, :].mean(-2, keepdim=True)
    Xf = fc_all[..., 1:, :, :] - fc_all[..., 1:, :, :].mean(-2, keepdim=True)
    G = (Xa.mT @ Xf) @ sym_inverse(Xf.mT @ Xf, config)  # (*b, T-1, d, d)
    Es = out[..., T - 1, :, :]
    for t in range(T - 2, -1, -1):
        Es = an_all[..., t, :, :] + (Es - fc_all[..., t + 1, :, :]) @ G[..., t, :, :].mT
        out[..., t, :, :] = Es
    return out


def transform_smooth(smo_all: torch.Tensor, left: torch.Tensor, U: torch.Tensor, t: int, lag: int | None) -> None:
    """Apply the analysis transform of step ``t`` to the smoothed ensembles of the past ``lag`` steps.

    ``E_s <- T_t E_s = E_s + left (U^T E_s)`` in place on ``smo_all (*b, N, T, d)`` (member-major,
    so the past steps form one ``(*b, N, L d)`` view) for steps ``max(0, t - lag) .. t-1`` (all
    past steps when ``lag`` is None); ``left (*b, N, m)`` and ``U (*b, N, m)`` as in
    :func:`~bayesbridge.infer._enkf_analysis.transform_update`. ``U`` sums to zero over
    members, so no centring is needed.
    """
    lo = 0 if lag is None else max(0, t - lag)
    if lo < t:
        past = smo_all[..., lo:t, :].flatten(-2)  # view (*b, N, L*d)
        past.add_(left @ (U.mT @ past))
