"""Tensor conversion and covariance checks shared by the models (float64, the filter algebra's precision)."""

from __future__ import annotations

import numpy as np
import torch

from bayesbridge.errors import InputTypeError, ParameterError, ShapeMismatchError

__all__ = ["as_tensor", "check_finite", "check_square", "check_spd", "jittered"]


def as_tensor(value, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Convert an array-like argument to a tensor, naming the argument on failure.

    Parameters
    ----------
    value : array-like or torch.Tensor
        Numbers of any shape; a tensor is only cast to ``dtype``.
    name : str
        Argument name used in the error message.
    dtype : torch.dtype
        Result dtype (default float64, the filter algebra's precision).

    Returns
    -------
    torch.Tensor
        Same shape as ``value``.

    Raises
    ------
    InputTypeError
        If ``value`` cannot be read as an array of numbers.
    """
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    try:
        return torch.as_tensor(np.asarray(value, dtype=float), dtype=dtype, device="cpu")
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            f"{name}: expected an array or tensor of numbers, got {type(value).__name__} ({exc})."
        ) from exc


def check_finite(value: torch.Tensor, name: str) -> None:
    """Raise :class:`ParameterError` (naming the argument ``name`` and the first bad entry) if ``value`` holds NaN or inf."""
    bad = ~torch.isfinite(value.detach())
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        where = f" at index {index if len(index) != 1 else index[0]}" if index else ""
        raise ParameterError(
            f"{name}: expected finite numbers, got {float(value.detach()[index] if index else value):g}{where} "
            f"({int(bad.sum())} non-finite of {value.numel()}); replace NaN/inf before building the model."
        )


def check_square(mat: torch.Tensor, name: str, size: int) -> None:
    """Raise :class:`ShapeMismatchError` (naming the argument ``name``) unless ``mat`` is ``(size, size)``."""
    if mat.shape != (size, size):
        raise ShapeMismatchError(
            f"{name}: expected shape ({size}, {size}), got {tuple(mat.shape)}."
        )


def check_spd(mat: torch.Tensor, name: str, allow_singular: bool = False) -> None:
    """Raise :class:`ParameterError` (naming the argument ``name``) unless ``mat`` ``(d, d)`` is a
    symmetric positive-definite covariance (semi-definite with ``allow_singular``)."""
    mat = mat.detach()  # a validation, not part of any gradient
    if not torch.allclose(mat, mat.mT, atol=1e-10, rtol=1e-8):
        raise ParameterError(f"{name}: expected a symmetric covariance matrix; symmetrise it, e.g. (M + M.T) / 2.")
    eig_min = float(torch.linalg.eigvalsh(mat).min())
    scale = float(mat.diagonal().abs().max().clamp_min(1e-300))
    if eig_min < -1e-10 * scale or (not allow_singular and eig_min <= 0.0):
        raise ParameterError(
            f"{name}: expected a positive-definite covariance, smallest eigenvalue is {eig_min:.3g}; "
            f"add a small multiple of the identity."
        )


def jittered(cov: torch.Tensor) -> torch.Tensor:
    """``cov + 1e-10 max|diag| I`` ``(d, d)``: a Cholesky-safe copy of a covariance."""
    d = cov.shape[-1]
    scale = float(cov.diagonal(dim1=-2, dim2=-1).abs().max().clamp_min(1e-300))
    return cov + 1e-10 * scale * torch.eye(d, dtype=cov.dtype)
