"""Covariance localisation: the Gaspari-Cohn taper.

An ensemble of ``N`` members estimates a ``d x m`` state-observation covariance with sampling
noise of order :math:`1/\\sqrt{N}` in every entry, also between components that are physically
unrelated. Localisation multiplies the estimate entry by entry (Schur product) with a taper
``rho (d, m)`` that is 1 for nearby pairs and falls to 0 with distance (Houtekamer & Mitchell
2001, *Mon. Wea. Rev.* 129, 123-137); the stochastic EnKF takes it as
``EnKFConfig(taper=rho)``. The Gaspari & Cohn (1999, *Q. J. R. Meteorol. Soc.* 125, 723-757,
eq. 4.10) function is the usual choice: a fifth-order piecewise rational function of
``r = |distance| / c`` that is a valid (positive semi-definite) correlation in up to three
dimensions and vanishes for ``r >= 2``,

.. math::
    \\rho(r) = \\begin{cases}
    -\\tfrac14 r^5 + \\tfrac12 r^4 + \\tfrac58 r^3 - \\tfrac53 r^2 + 1, & 0 \\le r \\le 1,\\\\
    \\tfrac1{12} r^5 - \\tfrac12 r^4 + \\tfrac58 r^3 + \\tfrac53 r^2 - 5 r + 4 - \\tfrac{2}{3 r},
    & 1 < r < 2,\\\\
    0, & r \\ge 2.
    \\end{cases}
"""

from __future__ import annotations

import torch

from bayesbridge.errors import ParameterError

__all__ = ["gaspari_cohn"]


def gaspari_cohn(distance, length: float) -> torch.Tensor:
    """Gaspari & Cohn (1999, eq. 4.10) compactly supported correlation, zero beyond ``2 * length``.

    Parameters
    ----------
    distance : array (...)
        Non-negative distances (e.g. ``|i - j|`` in latent index space, or km).
    length : float
        Half-width ``c``; the taper is 1 at 0 and vanishes at ``2 c``.

    Returns
    -------
    Tensor (...)
        Taper values in ``[0, 1]``, usable as ``EnKFConfig(taper=...)``.
    """
    if not length > 0:
        raise ParameterError(f"length: expected a positive localisation half-width, got {length!r}.")
    r = torch.as_tensor(distance, dtype=torch.float64).abs() / length
    inner = -0.25 * r**5 + 0.5 * r**4 + 0.625 * r**3 - 5.0 / 3.0 * r**2 + 1.0
    outer = r**5 / 12.0 - 0.5 * r**4 + 0.625 * r**3 + 5.0 / 3.0 * r**2 - 5.0 * r + 4.0 - 2.0 / (3.0 * r.clamp_min(1e-300))
    out = torch.where(r <= 1.0, inner, torch.where(r < 2.0, outer, torch.zeros_like(r)))
    return out.clamp(0.0, 1.0)
