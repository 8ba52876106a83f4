"""Small dense linear-algebra helpers shared by the inference engines and the diagnostics."""

from __future__ import annotations

import torch

from bayesbridge.errors import ParameterError

__all__: list[str] = []


def psd_sqrt(P: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """A square root ``L`` with ``L L^T = P`` for a positive semi-definite ``P`` ``(*b, d, d)``.

    The Cholesky factor where ``P`` is positive definite (every matrix of the batch), else the
    symmetric eigen-root ``V diag(sqrt(max(lambda, 0)))`` of ``(P + P^T) / 2``, which also serves
    singular covariances (a model error confined to a subspace, an exactly known initial state).

    Parameters
    ----------
    P : Tensor (*b, d, d)
    name : str, optional
        The argument ``P`` came from. When given, an eigenvalue below ``-1e-8`` times the
        largest magnitude (not positive semi-definite, beyond rounding) raises
        :class:`~bayesbridge.errors.ParameterError` naming it; otherwise negative eigenvalues
        are clipped to 0.
    """
    L, info = torch.linalg.cholesky_ex(P)
    if bool((info == 0).all()):
        return L
    lam, V = torch.linalg.eigh(0.5 * (P + P.mT))
    if name is not None and float(lam.min()) < -1e-8 * float(lam.abs().max()):
        raise ParameterError(f"{name}: expected a positive semi-definite covariance, smallest eigenvalue "
                             f"{float(lam.min()):.3g}.")
    return V * lam.clamp_min(0.0).sqrt().unsqueeze(-2)
