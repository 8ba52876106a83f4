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

Data larger than memory (``method="streaming"``, or ``"auto"`` on lazy dask-backed fields above
``stream_threshold_mb``) is never materialised: the normalisation is accumulated in one pass over
blocks of time steps (:meth:`FieldStacker.fit_streaming`), and the range finder runs on the
``P x P`` Gram operator without forming it. With :math:`X_b` the normalised block ``b`` and
:math:`Q_0 = \\operatorname{qr}(\\Omega)`, each further pass computes

.. math:: Y_b = X_b Q_i, \\qquad Z = \\sum_b X_b^\\top Y_b = X^\\top X Q_i, \\qquad Q_{i+1} = \\operatorname{qr}(Z),

(one pass per power iteration), and the last pass's :math:`Y = X Q_q` (``T x k``, small) gives
:math:`Y = U S W^\\top` and the modes :math:`V^\\top = W^\\top Q_q^\\top` (Halko et al. 2011,
algorithms 4.4 and 5.1, in their two-pass streaming form). Memory: one block plus ``O((T + P) k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr

from bayesbridge.errors import ParameterError
from bayesbridge.latent._codec import CodecBase
from bayesbridge.latent.stacking import FieldStacker, as_dataset, is_lazy, iter_time_blocks

__all__ = ["EOFCodec", "EOFMethod", "randomized_svd", "streaming_randomized_svd"]

EOFMethod = Literal["auto", "full", "randomized", "streaming"]


def randomized_svd(
    x: torch.Tensor, rank: int, *, oversample: int = 10, n_iter: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading ``rank`` singular triplets of ``x`` ``(T, P)`` by a randomised range finder.

    Returns ``U (T, rank)``, ``S (rank,)``, ``Vh (rank, P)``; ``n_iter`` power iterations with
    QR re-orthonormalisation (Halko et al. 2011, algorithm 4.4) on a Gaussian test matrix of
    ``rank + oversample`` columns drawn from ``generator``.
    """
    k = min(rank + oversample, min(x.shape))
    omega = torch.randn(x.shape[1], k, dtype=x.dtype, device=x.device, generator=generator)
    q, _ = torch.linalg.qr(x @ omega)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(x.T @ q)
        q, _ = torch.linalg.qr(x @ q)
    u_b, s, vh = torch.linalg.svd(q.T @ x, full_matrices=False)
    return (q @ u_b)[:, :rank], s[:rank], vh[:rank]


def streaming_randomized_svd(
    blocks, n_time: int, n_points: int, rank: int, *, oversample: int = 10, n_iter: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Leading singular values and right vectors of ``X (T, P)`` seen only through blocks of rows.

    Parameters
    ----------
    blocks : callable
        ``blocks()`` returns an iterator of ``(start, x_b)`` with ``x_b`` a ``(t_b, P)`` float64
        array of rows ``start .. start + t_b`` of ``X``; it is called ``n_iter + 1`` times (one
        pass over the data each).
    n_time, n_points : int
        ``T`` and ``P``.
    rank : int
        Number of triplets.
    oversample, n_iter : int
        Extra columns of the sketch and power iterations.
    generator : torch.Generator, optional
        Seeds the Gaussian test matrix.

    Returns
    -------
    S : torch.Tensor
        ``(rank,)`` singular values.
    Vh : torch.Tensor
        ``(rank, P)`` right singular vectors.
    total : float
        ``sum(X**2)`` (for explained-variance ratios).
    """
    k = min(rank + oversample, n_points, n_time)
    q, _ = torch.linalg.qr(torch.randn(n_points, k, dtype=torch.float64, generator=generator))
    for it in range(n_iter + 1):
        y = torch.empty(n_time, k, dtype=torch.float64)
        z = torch.zeros(n_points, k, dtype=torch.float64)
        total = 0.0
        for start, xb in blocks():
            xb = torch.as_tensor(xb, dtype=torch.float64)
            yb = xb @ q
            y[start: start + xb.shape[0]] = yb
            z += xb.T @ yb
            total += float((xb**2).sum())
        if it < n_iter:
            q, _ = torch.linalg.qr(z)
    _, s, wh = torch.linalg.svd(y, full_matrices=False)
    vh = wh @ q.T
    return s[:rank], vh[:rank], total


@dataclass
class EOFCodec(CodecBase):
    """Principal-component codec over one or more variables.

    Parameters
    ----------
    latent_dim : int
        Number of retained modes ``d``; at most the rank of the training data.
    method : {"auto", "full", "randomized", "streaming"}
        ``"full"``: ``torch.linalg.svd``; ``"randomized"``: Halko et al. range finder;
        ``"streaming"``: the range finder over blocks of time steps, never holding the data
        (see the module notes); ``"auto"`` streams lazy (dask-backed) fields whose float64 size
        exceeds ``stream_threshold_mb``, else picks randomised when ``min(T, P) > 2000`` and
        ``d < min(T, P) / 10``, else full.
    seed : int
        Seed of the randomised SVD's ``torch.Generator``.
    block_steps : int, optional
        Time steps per block when streaming (default: 32 MiB of float64 values per block).
    stream_threshold_mb : float
        Size above which ``"auto"`` streams lazy fields.
    n_iter : int
        Power iterations of the randomised and streaming methods.

    Attributes
    ----------
    components : torch.Tensor
        After :meth:`fit`: ``(latent, n_points)`` orthonormal EOFs in normalised space
        (``V_d^T``).
    singular_values : torch.Tensor
        After :meth:`fit`: ``(latent,)`` standard deviations of the principal components,
        ``s_k / sqrt(T - 1)``.
    explained_variance_ratio : numpy.ndarray
        After :meth:`fit`: ``(latent,)`` share of the (normalised, weighted) training variance
        of each mode.
    """

    latent_dim: int
    method: EOFMethod = "auto"
    seed: int = 0
    block_steps: int | None = None
    stream_threshold_mb: float = 1024.0
    n_iter: int = 4

    kind = "eof"

    def __post_init__(self) -> None:
        self._check_latent_dim()
        if self.method not in get_args(EOFMethod):
            raise ParameterError(
                f"method: expected one of {', '.join(get_args(EOFMethod))}, got {self.method!r}."
            )
        if self.block_steps is not None and not (isinstance(self.block_steps, int) and self.block_steps >= 1):
            raise ParameterError(f"block_steps: expected a positive integer or None, got {self.block_steps!r}.")
        if not (isinstance(self.n_iter, int) and self.n_iter >= 0):
            raise ParameterError(f"n_iter: expected a non-negative integer, got {self.n_iter!r}.")
        if not self.stream_threshold_mb > 0:
            raise ParameterError(f"stream_threshold_mb: expected > 0, got {self.stream_threshold_mb!r}.")
        self.stacker = None
        self.components: torch.Tensor | None = None
        self.singular_values: torch.Tensor | None = None
        self.explained_variance_ratio: np.ndarray | None = None

    def _check_rank_bound(self, n_time: int, n_points: int) -> None:
        max_rank = min(n_time - 1, n_points)
        if self.latent_dim > max_rank:
            raise ParameterError(
                f"latent_dim: {self.latent_dim} exceeds the rank bound min(T - 1, n_points) = "
                f"{max_rank} of the training data ({n_time} time steps, {n_points} ocean points); "
                f"use latent_dim <= {max_rank} or more data."
            )

    def fit(self, fields: xr.Dataset | xr.DataArray, mask: xr.DataArray | None = None) -> EOFCodec:
        """Fit on anomaly fields ``(time, lat, lon)``; streams lazy data per ``method`` (see above).

        Parameters
        ----------
        fields : xarray.Dataset or xarray.DataArray
            Anomaly fields ``(time, lat, lon)`` (one or more variables, NaN over land); a
            DataArray must be named. Dask-backed fields may be streamed block by block.
        mask : xarray.DataArray, optional
            Boolean ``(lat, lon)`` ocean mask applied to every variable on top of the NaN mask;
            points outside it are excluded.

        Returns
        -------
        EOFCodec
            ``self``, fitted.
        """
        ds = as_dataset(fields)
        if not self._streams(ds):
            return super().fit(ds, mask=mask)
        stacker = FieldStacker.fit_streaming(ds, mask=mask, block_steps=self.block_steps)
        n_time, n_points = ds.sizes["time"], stacker.n_points
        self._check_rank_bound(n_time, n_points)
        sub = ds[list(stacker.variables)]

        def blocks():
            for start, block in iter_time_blocks(sub, self.block_steps):
                yield start, stacker.transform(block)

        gen = torch.Generator().manual_seed(self.seed)
        s, vh, total = streaming_randomized_svd(blocks, n_time, n_points, self.latent_dim, n_iter=self.n_iter,
                                                generator=gen)
        self._set_modes(s, vh, total, n_time, n_points)
        self.stacker = stacker
        return self

    def _streams(self, ds: xr.Dataset) -> bool:
        if self.method == "streaming":
            return True
        if self.method != "auto" or not is_lazy(ds):
            return False
        size_mb = sum(v.size for v in ds.data_vars.values()) * 8 / 2**20
        return size_mb > self.stream_threshold_mb

    def encode(self, fields: xr.Dataset | xr.DataArray) -> xr.DataArray:
        """Latent series ``(time, latent)``; lazy fields are encoded block by block."""
        ds = as_dataset(fields)
        if not is_lazy(ds):
            return super().encode(ds)
        stacker = self._require_fitted()
        sub = ds[list(stacker.variables)]
        z = np.concatenate([self._encode_array(stacker.transform(b)) for _, b in iter_time_blocks(sub, self.block_steps)])
        return xr.DataArray(
            z, dims=("time", "latent"), coords={"time": ds["time"], "latent": np.arange(self.latent_dim)},
            name="z", attrs={"long_name": f"{self.kind} latent state", "units": "1"},
        )

    def _fit_array(self, x: np.ndarray, fields: xr.Dataset) -> None:
        n_time, n_points = x.shape
        xt = torch.from_numpy(x - x.mean(axis=0))
        self._check_rank_bound(n_time, n_points)
        use_random = self.method == "randomized" or (
            self.method == "auto" and min(x.shape) > 2000 and self.latent_dim < min(x.shape) / 10
        )
        if use_random:
            gen = torch.Generator().manual_seed(self.seed)
            _, s, vh = randomized_svd(xt, self.latent_dim, n_iter=self.n_iter, generator=gen)
            total = float((xt**2).sum())
        else:
            _, s_all, vh_all = torch.linalg.svd(xt, full_matrices=False)
            s, vh = s_all[: self.latent_dim], vh_all[: self.latent_dim]
            total = float((s_all**2).sum())
        self._set_modes(s, vh, total, n_time, n_points)

    def _set_modes(self, s: torch.Tensor, vh: torch.Tensor, total: float, n_time: int, n_points: int) -> None:
        """Rank check, sign convention and attributes from ``S (d,)``, ``Vh (d, P)``, ``sum(X**2)``."""
        tol = max(n_time, n_points) * torch.finfo(s.dtype).eps * float(s[0]) if s.numel() else 0.0
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
