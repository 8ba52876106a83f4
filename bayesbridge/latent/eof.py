"""EOF (principal component) codec: the exact linear baseline.

With the normalised, area-weighted stacked anomalies :math:`\\tilde X \\in \\mathbb R^{T \\times P}`
(see :mod:`bayesbridge.latent.stacking`) and its thin SVD :math:`\\tilde X = U S V^\\top`, the
latent state is the leading ``d`` principal components scaled to unit variance,

.. math:: z_t = \\Sigma_d^{-1} V_d^\\top \\tilde x_t, \\qquad
          \\Sigma_d = \\operatorname{diag}(s_1, \\dots, s_d) / \\sqrt{T - 1},

and the decoder is the affine map :math:`x = \\operatorname{diag}(\\text{scale})\\, V_d \\Sigma_d z
+ \\bar x`, so ``decode_tensor`` is one matrix product (Preisendorfer 1988; North et al. 1982,
*Mon. Wea. Rev.* 110, 699-706). Unit-variance latents make the ``N(0, I)`` prior of the
state-space model natural. For large grids the randomised range finder of Halko, Martinsson &
Tropp (2011, *SIAM Rev.* 53, 217-288) computes the leading ``d`` modes, seeded by an explicit
``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr

from bayesbridge.errors import ParameterError
from bayesbridge.latent._codec import CodecBase

__all__ = ["EOFCodec", "EOFMethod", "randomized_svd"]

EOFMethod = Literal["auto", "full", "randomized"]


def randomized_svd(
    x: torch.Tensor, rank: int, *, oversample: int = 10, n_iter: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading ``rank`` singular triplets of ``x`` ``(T, P)`` by a randomised range finder.

    Returns ``U (T, rank)``, ``S (rank,)``, ``Vh (rank, P)``; power iterations with QR
    re-orthonormalisation (Halko et al. 2011, algorithm 4.4).
    """
    k = min(rank + oversample, min(x.shape))
    omega = torch.randn(x.shape[1], k, dtype=x.dtype, device=x.device, generator=generator)
    q, _ = torch.linalg.qr(x @ omega)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(x.T @ q)
        q, _ = torch.linalg.qr(x @ q)
    u_b, s, vh = torch.linalg.svd(q.T @ x, full_matrices=False)
    return (q @ u_b)[:, :rank], s[:rank], vh[:rank]


@dataclass
class EOFCodec(CodecBase):
    """Principal-component codec over one or more variables.

    Parameters
    ----------
    latent_dim : int
        Number of retained modes ``d``; at most the rank of the training data.
    method : {"auto", "full", "randomized"}
        ``"full"``: ``torch.linalg.svd``; ``"randomized"``: Halko et al. range finder;
        ``"auto"`` picks randomised when ``min(T, P) > 2000`` and ``d < min(T, P) / 10``.
    seed : int
        Seed of the randomised SVD's ``torch.Generator``.

    Attributes (after ``fit``)
    --------------------------
    components : torch.Tensor
        ``(latent, n_points)`` orthonormal EOFs in normalised space (``V_d^T``).
    singular_values : torch.Tensor
        ``(latent,)`` standard deviations of the principal components, ``s_k / sqrt(T - 1)``.
    explained_variance_ratio : numpy.ndarray
        ``(latent,)`` share of the (normalised, weighted) training variance of each mode.
    """

    latent_dim: int
    method: EOFMethod = "auto"
    seed: int = 0

    kind = "eof"

    def __post_init__(self) -> None:
        self._check_latent_dim()
        if self.method not in get_args(EOFMethod):
            raise ParameterError(
                f"method: expected one of {', '.join(get_args(EOFMethod))}, got {self.method!r}."
            )
        self.stacker = None
        self.components: torch.Tensor | None = None
        self.singular_values: torch.Tensor | None = None
        self.explained_variance_ratio: np.ndarray | None = None

    def _fit_array(self, x: np.ndarray, fields: xr.Dataset) -> None:
        n_time, n_points = x.shape
        xt = torch.from_numpy(x - x.mean(axis=0))
        max_rank = min(n_time - 1, n_points)
        if self.latent_dim > max_rank:
            raise ParameterError(
                f"latent_dim: {self.latent_dim} exceeds the rank bound min(T - 1, n_points) = "
                f"{max_rank} of the training data ({n_time} time steps, {n_points} ocean points); "
                f"use latent_dim <= {max_rank} or more data."
            )
        use_random = self.method == "randomized" or (
            self.method == "auto" and min(x.shape) > 2000 and self.latent_dim < min(x.shape) / 10
        )
        if use_random:
            gen = torch.Generator().manual_seed(self.seed)
            _, s, vh = randomized_svd(xt, self.latent_dim, generator=gen)
            total = float((xt**2).sum())
        else:
            _, s_all, vh_all = torch.linalg.svd(xt, full_matrices=False)
            s, vh = s_all[: self.latent_dim], vh_all[: self.latent_dim]
            total = float((s_all**2).sum())
        tol = max(x.shape) * torch.finfo(xt.dtype).eps * float(s[0]) if s.numel() else 0.0
        rank = int((s > tol).sum())
        if rank < self.latent_dim:
            raise ParameterError(
                f"latent_dim: {self.latent_dim} exceeds the numerical rank {rank} of the training "
                f"data (singular values below {tol:.3g} count as zero); use latent_dim <= {rank}."
            )
        # fix the sign of each EOF (largest-magnitude loading positive) for reproducibility
        signs = torch.sign(vh.gather(1, vh.abs().argmax(dim=1, keepdim=True))).squeeze(1)
        self.components = vh * signs[:, None]
        self.singular_values = s / np.sqrt(n_time - 1)
        self.explained_variance_ratio = (s**2).numpy() / total

    def _encode_array(self, x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(x)
        return ((xt @ self.components.T) / self.singular_values).numpy()

    def _decode_normalised(self, z: torch.Tensor) -> torch.Tensor:
        basis = (self.singular_values[:, None] * self.components).to(z.dtype).to(z.device)
        return z @ basis

    @property
    def decoder_matrix(self) -> torch.Tensor:
        """``(latent, n_points)`` float64 matrix ``W`` with ``decode_tensor(z) = z @ W + mean``."""
        stacker = self._require_fitted()
        return self.singular_values[:, None] * self.components * torch.from_numpy(stacker.scale)

    def _state_dict(self) -> dict[str, torch.Tensor]:
        self._require_fitted()
        return {
            "components": self.components,
            "singular_values": self.singular_values,
            "explained_variance_ratio": torch.from_numpy(self.explained_variance_ratio),
        }

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        comps = state["components"]
        if comps.shape != (self.latent_dim, self.stacker.n_points):
            raise RuntimeError(
                f"components have shape {tuple(comps.shape)}, expected "
                f"({self.latent_dim}, {self.stacker.n_points})"
            )
        self.components = comps.to(torch.float64)
        self.singular_values = state["singular_values"].to(torch.float64)
        self.explained_variance_ratio = state["explained_variance_ratio"].numpy()
