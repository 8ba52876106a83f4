"""The representation error measured on a record of the observed system, and a quadratic decoder term.

:meth:`bayesbridge.bridge.Bridge.fit` measures the codec residual
:math:`r_t = x_t - \\mathrm{dec}(\\mathrm{enc}(x_t))` on the operational training fields, which
the codec was fitted to. :func:`record_residual` measures it on a record of the system the
observations come from (a gridded observational record on the codec's grid, independent of
anything the bridge is scored against), whose patterns may sit where the latent space cannot put
them.

Part of that residual is not noise but the observed system's nonlinearity: ENSO's leading
nonlinear SST pattern grows with the square of the eastern index (Takahashi et al. 2011, GRL
38:L10704), and a latent space learned from a model without it leaves it in the residual.
:func:`fit_quadratic_term` regresses the record's residual at every point on
:math:`T_E^2 - \\overline{T_E^2}` (``T_E`` the record's Nino 3 mean),

.. math:: r_t(p) = g(p)\\, (T_{E,t}^2 - c) + \\epsilon_t(p), \\qquad c = \\overline{T_E^2},

and :class:`~bayesbridge.bridge.decoding.QuadraticTerm` adds :math:`g\\, (T_E^{(i)2} - c)` to
every decoded draw, with :math:`T_E^{(i)}` the draw's own decoded Nino 3; the representation
noise of the draws is then :math:`\\epsilon`, not :math:`r`, so nothing is counted twice. The
observation operator is left alone: the latent state is not asked to make the term. At each
assimilation :meth:`~bayesbridge.bridge.decoding.QuadraticTerm.orthogonal_to` gives ``g`` zero
mean on every assimilated box, which the latent state already matches (``docs/lab-notes.md``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bayesbridge.bridge.decoding import QuadraticTerm
from bayesbridge.errors import (
    GridCoverageError,
    InputTypeError,
    InputValueError,
    VariableNotFoundError,
)

__all__ = ["MIN_RECORD_MONTHS", "check_record", "record_residual", "fit_quadratic_term"]

MIN_RECORD_MONTHS = 24
"""Fewest months of record :func:`check_record` accepts."""


def check_record(record, codec, grid: xr.Dataset) -> xr.Dataset:
    """``record`` as a Dataset of the codec's variables on the grid of ``grid``, or a clear error."""
    if not isinstance(record, xr.Dataset):
        raise InputTypeError(f"record: expected an xarray Dataset of anomalies, got {type(record).__name__}.")
    missing = [v for v in codec.variables if v not in record]
    if missing:
        raise VariableNotFoundError(f"record: missing {missing}; the codec reads {list(codec.variables)}.")
    n = record.sizes.get("time", 0)
    if n < MIN_RECORD_MONTHS:
        raise InputValueError(f"record: expected at least {MIN_RECORD_MONTHS} months on 'time', got {n}.")
    for c in ("lat", "lon"):
        if record.sizes.get(c) != grid.sizes[c] or not np.allclose(record[c].values, grid[c].values):
            raise GridCoverageError(
                f"record: its {c} differs from the codec's grid ({grid.sizes[c]} values, "
                f"{float(grid[c].min()):g}..{float(grid[c].max()):g}); regrid it to the operational grid first."
            )
    return record[list(codec.variables)].load()


def record_residual(record: xr.Dataset, codec) -> xr.Dataset:
    """The codec residual ``x - dec(enc(x))`` of ``record`` (a lag-window codec's base codec)."""
    codec = getattr(codec, "base", codec)  # the lag-window codec wraps the fitted one
    recon = codec.decode(codec.encode(record))
    return xr.Dataset({v: record[v] - recon[v] for v in codec.variables})


def fit_quadratic_term(residual_points: np.ndarray, nino3: np.ndarray,
                       weights: np.ndarray) -> tuple[QuadraticTerm, np.ndarray]:
    """Least-squares ``g`` of the module notes, and the residual left over.

    Parameters
    ----------
    residual_points : numpy.ndarray
        ``(n, P)`` codec residual of the record at the codec's points.
    nino3 : numpy.ndarray
        ``(n,)`` the record's Nino 3 anomaly (degC).
    weights : numpy.ndarray
        ``(P,)`` Nino 3 box weights on the codec's points (``T_E = x . weights``).

    Returns
    -------
    term : QuadraticTerm
        ``g`` ``(P,)`` (field units per degC^2), ``c`` and the weights.
    rest : numpy.ndarray
        ``(n, P)`` float32, ``r - g (T_E^2 - c)``: the draws' representation noise.
    """
    r = np.asarray(residual_points, dtype=np.float64)
    te = np.asarray(nino3, dtype=np.float64)
    if r.ndim != 2 or te.shape != (r.shape[0],) or np.shape(weights) != (r.shape[1],):
        raise InputValueError(f"residual_points, nino3, weights: expected shapes (n, P), (n,), (P,); got "
                              f"{r.shape}, {te.shape}, {np.shape(weights)}.")
    q = te**2
    c = float(q.mean())
    qa = q - c
    if not np.any(qa):
        raise InputValueError("nino3: the record's Nino 3 is constant; the quadratic term cannot be fitted.")
    g = r.T @ qa / float(qa @ qa)
    return QuadraticTerm(np.asarray(weights, dtype=np.float64), g, c), (r - qa[:, None] * g[None, :]).astype(np.float32)
