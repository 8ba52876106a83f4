"""Decoding latent draws into fields on the codec's grid, with the decoder's representation error.

A decoded draw is

.. math::

    x^{(i)}_t = \\operatorname{decode}(z^{(i)}_t) + r^{(i)}_t ,

where :math:`r` is the representation error, either the codec's own residual series shifted
circularly by a random offset per draw (:class:`RepresentationError` with ``residuals``:
spatially and temporally coherent, with exactly the residuals' covariance) or independent
Gaussian noise with a per-point standard deviation. :class:`FieldGrid` maps the codec's stacked
points ``(variable, lat, lon)`` onto the full ``(lat, lon)`` grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.bridge.draws import seed_for
from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
)

__all__ = ["DEFAULT_UNITS", "FieldGrid", "RepresentationError", "as_representation_std", "QuadraticTerm",
           "BlockDecoder", "quantile_lastdim"]

DEFAULT_UNITS: dict[str, str] = {"tos": "degC", "zos": "m"}
"""Units used when the codec does not record them."""

_STREAM_NOISE, _STREAM_OFFSETS = 3, 4


def quantile_lastdim(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Quantiles over the last axis, ``(..., n) -> (len(q), ...)``, float32 CPU tensors.

    Bit-for-bit the result of ``torch.quantile(x, q, dim=-1)`` (linear interpolation between
    the order statistics ``x_(floor(r))`` and ``x_(ceil(r))``, ``r = q (n - 1)``, NaN where a
    row holds NaN), computed with the same float32 rank and ``torch.lerp`` arithmetic, but
    sorting with numpy's vectorised sort, several times faster than ``torch.sort`` on CPU.
    """
    s = torch.from_numpy(np.sort(x.detach().cpu().numpy(), axis=-1))
    n = s.shape[-1]
    ranks = q.to(s.dtype) * (n - 1)
    below = ranks.to(torch.long)
    above = ranks.ceil().to(torch.long)
    shape = (*s.shape[:-1], q.numel())
    out = torch.lerp(s.gather(-1, below.expand(shape)), s.gather(-1, above.expand(shape)),
                     (ranks - below).expand(shape))
    out = out.masked_fill(s.isnan().any(-1, keepdim=True), float("nan"))
    return out.movedim(-1, 0)


@dataclass
class FieldGrid:
    """The codec's points on the full grid.

    Attributes
    ----------
    points : pandas.MultiIndex
        ``(variable, lat, lon)`` of the ``n_points`` decoded values, in the codec's order.
    lat, lon : numpy.ndarray
        Grid coordinates ``(nlat,)``, ``(nlon,)``.
    variables : tuple of str
        Field variables, in the order of the points.
    units : dict of str to str
        Units per variable.
    var_points : dict of str to ndarray
        Positions of each variable's points in the point vector.
    var_ij : dict of str to (ndarray, ndarray)
        Grid indices ``(i, j)`` of each variable's points.
    """

    points: pd.MultiIndex
    lat: np.ndarray
    lon: np.ndarray
    variables: tuple[str, ...]
    units: dict[str, str]
    var_points: dict[str, np.ndarray]
    var_ij: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def n_points(self) -> int:
        """Number of decoded values per draw and step."""
        return len(self.points)

    @classmethod
    def from_codec(cls, codec, lat=None, lon=None, units: Mapping[str, str] | None = None) -> FieldGrid:
        """The grid of a fitted ``codec`` (``points`` and optionally ``stacker.lat/lon/units``).

        Parameters
        ----------
        codec : Codec
            Fitted codec with ``points`` (MultiIndex ``variable, lat, lon``).
        lat, lon : array-like, optional
            Full grid coordinates (default from ``codec.stacker``, else the points' unique values).
        units : mapping of str to str, optional
            Units per variable (default from the codec, else :data:`DEFAULT_UNITS`).
        """
        points = codec.points
        if not isinstance(points, pd.MultiIndex) or list(points.names) != ["variable", "lat", "lon"]:
            raise InputTypeError(
                f"codec.points: expected a pandas MultiIndex with levels (variable, lat, lon), got "
                f"{type(points).__name__} {getattr(points, 'names', '')}."
            )
        stacker = getattr(codec, "stacker", None)
        plat = np.asarray(points.get_level_values("lat"), float)
        plon = np.asarray(points.get_level_values("lon"), float)
        if lat is None:
            lat = getattr(stacker, "lat", None)
        if lon is None:
            lon = getattr(stacker, "lon", None)
        lat = np.asarray(lat if lat is not None else np.unique(plat), dtype=float)
        lon = np.asarray(lon if lon is not None else np.unique(plon), dtype=float)
        var = np.asarray(points.get_level_values("variable")).astype(str)
        variables = tuple(dict.fromkeys(var.tolist()))
        ii = np.abs(plat[:, None] - lat[None, :]).argmin(axis=1)
        jj = np.abs(plon[:, None] - lon[None, :]).argmin(axis=1)
        if not (np.allclose(lat[ii], plat, atol=1e-6) and np.allclose(lon[jj], plon, atol=1e-6)):
            raise ShapeMismatchError(
                f"lat/lon: the codec's points do not lie on the grid lat {lat.min():g}.."
                f"{lat.max():g} ({lat.size}) x lon {lon.min():g}..{lon.max():g} "
                f"({lon.size}); pass the grid the codec was fitted on."
            )
        var_points = {v: np.flatnonzero(var == v) for v in variables}
        var_ij = {v: (ii[p], jj[p]) for v, p in var_points.items()}
        codec_units = dict(getattr(stacker, "units", None) or {}) if stacker is not None else {}
        units = {v: (units or {}).get(v) or codec_units.get(v) or DEFAULT_UNITS.get(v, "1") for v in variables}
        return cls(points, lat, lon, variables, units, var_points, var_ij)

    def per_point(self, maps: xr.Dataset, argument: str) -> np.ndarray:
        """Values ``(n_points,)`` of the per-variable ``(lat, lon)`` ``maps`` at the codec's points.

        ``argument`` names the maps in the error raised when a variable is missing.
        """
        out = np.empty(self.n_points)
        for v, pos in self.var_points.items():
            if v not in maps:
                raise VariableNotFoundError(
                    f"{argument}: variable {v!r} missing; the Dataset has {', '.join(map(str, maps.data_vars))}."
                )
            grid = np.asarray(maps[v].transpose("lat", "lon").values, float)
            out[pos] = grid[self.var_ij[v]]
        return out


class RepresentationError:
    """The decoder's representation error added to every decoded draw.

    Parameters
    ----------
    grid : FieldGrid
        The codec's points.
    n_draws : int
        Number of pooled draws.
    seed : int
        Seed of the noise (per step) and of the residual offsets (per draw).
    residuals : array ``(n_samples, n_points)``, optional
        Residual series ``x_t - decode(encode(x_t))`` of the codec on its training data, in time
        order. Draw ``i`` adds :math:`r_{(t + o_i) \\bmod n}` with its own random offset ``o_i``.
    std : array ``(n_points,)``, optional
        Per-point standard deviation of independent Gaussian noise.

    Exactly one of ``residuals`` and ``std`` may be given; with neither nothing is added.
    """

    def __init__(self, grid: FieldGrid, n_draws: int, seed: int, *, residuals=None, std=None) -> None:
        if std is not None and residuals is not None:
            raise InputValueError(
                "representation_std, representation_residuals: give one representation-error model, not both."
            )
        self.seed = int(seed)
        self.std = std
        self.bank: torch.Tensor | None = None
        self.offsets: torch.Tensor | None = None
        if residuals is not None:
            bank = torch.as_tensor(np.asarray(residuals, dtype=np.float32), device="cpu")
            if bank.ndim != 2 or bank.shape[1] != grid.n_points or bank.shape[0] < 2:
                raise ShapeMismatchError(
                    f"representation_residuals: expected shape (n_samples >= 2, {grid.n_points}) (one "
                    f"column per codec point), got {tuple(bank.shape)}."
                )
            if not bool(torch.isfinite(bank).all()):
                raise InputValueError("representation_residuals: expected finite values (ocean points only).")
            g = torch.Generator().manual_seed(seed_for(self.seed, _STREAM_OFFSETS, 0))
            self.offsets = torch.randint(bank.shape[0], (n_draws,), generator=g, device="cpu")
            self.bank = bank
        self.n_draws = n_draws

    @property
    def active(self) -> bool:
        """Whether any representation error is added."""
        return self.std is not None or self.bank is not None

    def add_to(self, x: torch.Tensor, steps: np.ndarray, draws: torch.Tensor | None = None) -> None:
        """Add the error in place to decoded draws ``x`` ``(len(steps), n, n_points)`` float32.

        ``draws`` (integer positions) selects the subset of draws ``x`` holds; the noise of every
        draw is drawn and then indexed, so a subset sees exactly the values it has among all draws.
        """
        if self.std is not None:
            for k, t in enumerate(steps):
                g = torch.Generator().manual_seed(seed_for(self.seed, _STREAM_NOISE, int(t)))
                noise = torch.randn(self.n_draws, x.shape[-1], generator=g, device="cpu")
                x[k] += (noise if draws is None else noise[draws]) * self.std
        if self.bank is not None:
            n_bank = self.bank.shape[0]
            offsets = self.offsets if draws is None else self.offsets[draws]
            for k, t in enumerate(steps):
                x[k] += self.bank[(offsets + int(t)) % n_bank]


def as_representation_std(value, grid: FieldGrid, codec) -> torch.Tensor | None:
    """Validate a ``representation_std`` argument into a float32 ``(n_points,)`` tensor (or None).

    ``value`` is None, ``"codec"`` (``codec.residual_std``, VAE), a number, an array
    ``(n_points,)`` or a Dataset of ``(lat, lon)`` maps per variable of ``grid``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value != "codec":
            raise ParameterError(
                f"representation_std: expected None, 'codec', a number, an array (n_points,) or a "
                f"Dataset, got the string {value!r}."
            )
        if not hasattr(codec, "residual_std"):
            raise InputValueError(
                f"representation_std='codec': {type(codec).__name__} has no residual_std "
                f"(only the VAE learns one); pass an array or a number instead."
            )
        value = codec.residual_std
    if isinstance(value, xr.Dataset):
        value = grid.per_point(value, "representation_std")
    std = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(value, torch.Tensor)
                          else value.detach().cpu(), dtype=torch.float64, device="cpu")
    if std.ndim == 0:
        std = std.expand(grid.n_points).clone()
    if tuple(std.shape) != (grid.n_points,):
        raise ShapeMismatchError(
            f"representation_std: expected a number or shape ({grid.n_points},) (one per codec "
            f"point), got {tuple(std.shape)}."
        )
    if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
        raise InputValueError("representation_std: expected finite, non-negative values.")
    return std.to(torch.float32)


@dataclass(frozen=True)
class QuadraticTerm:
    """A decoder term quadratic in the draw's own Nino 3: ``x += g (T_E^2 - c)``, ``T_E = x . w``.

    Fitted to a record by :func:`bayesbridge.bridge.representation.fit_quadratic_term` (the
    observed system's nonlinear pattern that the latent space leaves in its residual).

    Attributes
    ----------
    weights : numpy.ndarray
        ``(P,)`` Nino 3 box weights ``w`` on the codec's points.
    pattern : numpy.ndarray
        ``(P,)`` ``g``, field units per degC^2.
    offset : float
        ``c``, the record's mean ``T_E^2`` (degC^2).
    """

    weights: np.ndarray
    pattern: np.ndarray
    offset: float

    def orthogonal_to(self, rows: np.ndarray) -> QuadraticTerm:
        """The term with ``g`` moved least (in the Euclidean norm) so that ``rows @ g = 0``.

        ``rows`` ``(m, P)``: functionals the assimilation already matches (the assimilated
        boxes), which the term must then leave unchanged.
        """
        W = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if W.size == 0:
            return self
        g = self.pattern - W.T @ np.linalg.lstsq(W @ W.T, W @ self.pattern, rcond=None)[0]
        return QuadraticTerm(self.weights, g, self.offset)

    def add_to(self, x: torch.Tensor) -> None:
        """Add the term to decoded draws ``x`` ``(k, n, P)`` float32 (CPU), in place."""
        te = x.to(torch.float64) @ torch.as_tensor(self.weights, dtype=torch.float64)
        x += ((te**2 - self.offset)[..., None] * torch.as_tensor(self.pattern, dtype=torch.float64)).to(x.dtype)


class BlockDecoder:
    """Decode blocks of latent draws ``(k, n, d)`` into fields ``(k, n, n_points)`` float32 (CPU).

    A codec with a linear decoder (``decoder_matrix`` ``W (d, n_points)``, e.g.
    :class:`~bayesbridge.latent.EOFCodec`: ``decode_tensor(z) = z W + mean``) is applied as one
    fused GEMM with bias (``torch.addmm``) on a float32 copy of ``W`` made once; any other codec
    through its ``decode_tensor``. Decoding runs on ``z``'s device; the block comes to the CPU
    once.

    Parameters
    ----------
    codec : Codec
        Fitted codec with ``decode_tensor``.
    n_points : int
        Expected length of the decoded point vector.
    quadratic : QuadraticTerm, optional
        A term added to every decoded draw (before the representation error).
    """

    def __init__(self, codec, n_points: int, quadratic: QuadraticTerm | None = None) -> None:
        self.codec, self.n_points, self.quadratic = codec, int(n_points), quadratic
        self._linear: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        matrix = getattr(codec, "decoder_matrix", None) if hasattr(type(codec), "decoder_matrix") else None
        stacker = getattr(codec, "stacker", None)
        if matrix is not None and stacker is not None and getattr(stacker, "mean", None) is not None:
            self._W = torch.as_tensor(matrix, device="cpu").detach().to(torch.float32)
            self._b = torch.as_tensor(np.asarray(stacker.mean), dtype=torch.float32, device="cpu")
        else:
            self._W = self._b = None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Fields ``(k, n, n_points)`` float32 on the CPU of latent draws ``z`` ``(k, n, d)``."""
        k, n = z.shape[0], z.shape[1]
        with torch.no_grad():
            if self._W is not None and tuple(self._W.shape) == (z.shape[-1], self.n_points):
                if z.device not in self._linear:
                    self._linear[z.device] = (self._W.to(z.device), self._b.to(z.device))
                W, b = self._linear[z.device]
                x = torch.addmm(b, z.reshape(k * n, -1).to(torch.float32), W).reshape(k, n, -1)
            else:
                x = self.codec.decode_tensor(z.to(torch.float32))
        x = x.detach().to(dtype=torch.float32, device="cpu")
        if tuple(x.shape) != (k, n, self.n_points):
            raise ShapeMismatchError(
                f"codec.decode_tensor: expected output shape {(k, n, self.n_points)} "
                f"(*batch, n_points), got {tuple(x.shape)}."
            )
        if self.quadratic is not None:
            self.quadratic.add_to(x)
        return x
