"""The posterior of an assimilation, decoded to physical fields on demand.

A :class:`Posterior` wraps an :class:`~bayesbridge.infer.result.AssimilationResult` and the
:class:`~bayesbridge.latent.base.Codec` that maps latent states to fields. It holds only the
latent draws ``(T, draw, d)`` (a view of the engine's ensemble); everything physical is decoded
lazily, a block of time steps at a time:

.. math::

    x^{(i)}_t = \\operatorname{decode}(z^{(i)}_t) + \\rho \\odot \\varepsilon^{(i)}_t,
    \\qquad \\varepsilon^{(i)}_t \\sim N(0, I),

for every draw ``i`` of the block, where :math:`\\rho` is the decoder's per-point
representation-error standard deviation (the VAE residual, or a given array; zero when not
requested). The block is reduced to the field summaries (mean, standard deviation with
``ddof = 1``, 5/50/95 % quantiles identical to :func:`torch.quantile`) and to the exact box indices of
every draw, :math:`I_b^{(i)}(t) = \\sum_j W_{bj} x^{(i)}_{j,t}` with the normalised area weights
``W`` of :func:`bayesbridge.regions.point_box_weights`, and discarded. Peak memory is therefore one
block (``chunk_mb``) plus the outputs ``(time, lat, lon)``, independent of the number of draws;
the full ``(draw, time, lat, lon)`` array is built only by :meth:`Posterior.sample_fields`, for
the subset asked for.

Which draws: whole trajectories from ``smoothed_ensemble`` when the engine smooths (ensemble
Kalman smoother, particle backward simulation, variational / Kalman trajectory draws), else the
``filtered_ensemble``; particle weights (``log_weights``) are honoured by systematic resampling at
every step (Kitagawa 1996, *J. Comput. Graph. Stat.* 5, 1-25) with a seeded generator. Engines
that return only Gaussian moments (exact Kalman) are sampled independently per time step from
``N(mean_t, cov_t)`` (marginals, not trajectories; ``Posterior.source`` says which). Batched
results (``(*batch, T, member, d)``, e.g. one run per idealized-model parameter draw) are pooled:
draw ``i = b * member + m``.

Representation noise at step ``t`` comes from a generator seeded by ``(seed, t)``, so summaries,
index draws and :meth:`Posterior.sample_fields` see the same realisation whatever the block size.

``docs/design.md`` section 6: statistics of the bridged fields (std/skewness maps, event rates, spectra) must
come from whole-trajectory draws plus representation error (:meth:`Posterior.index_draws`,
:meth:`Posterior.sample_fields`), never from the posterior mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import (
    AllMissingError,
    GridCoverageError,
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
)
from bayesbridge.infer.result import AssimilationResult
from bayesbridge.regions import REGIONS, STANDARD_BOXES, get_region, point_box_weights

__all__ = ["Posterior", "Source", "QUANTILES", "FIELD_STATS", "DEFAULT_UNITS", "quantile_lastdim"]

Source = Literal["auto", "smoothed", "filtered", "gaussian"]
QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)
"""Quantile levels of the field summaries (``q05``, ``q50``, ``q95``)."""
FIELD_STATS: tuple[str, ...] = ("mean", "std", "q05", "q50", "q95")
"""Summary statistics written per variable as ``<var>_<stat>`` on ``(time, lat, lon)``."""
DEFAULT_UNITS: dict[str, str] = {"tos": "degC", "zos": "m"}
"""Units used when the codec does not record them."""

_LONG_NAMES = {"tos": "sea surface temperature anomaly", "zos": "sea surface height anomaly (thermocline proxy)"}
_CELL_METHODS = {
    "mean": "draw: mean",
    "std": "draw: standard_deviation",
    "q05": "draw: percentile (comment: 5th percentile, linear interpolation)",
    "q50": "draw: median",
    "q95": "draw: percentile (comment: 95th percentile, linear interpolation)",
}
_STAT_TEXT = {"mean": "posterior mean", "std": "posterior standard deviation",
              "q05": "posterior 5% quantile", "q50": "posterior median", "q95": "posterior 95% quantile"}
# bytes held per decoded element while a block is reduced: the float32 block with either its
# float64 copy (moments, indices) or its float32 transpose and sorted copy (quantiles), + slack
_BYTES_PER_ELEMENT = 4 + 8 + 4


def _seed_for(seed: int, stream: int, step: int) -> int:
    """A 64-bit seed for ``(seed, stream, step)`` (independent streams per time step)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0])


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


def _systematic_indices(log_w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic resampling ``(B, M) -> (B, M)`` ancestor indices; ``u`` ``(B,)`` in [0, 1)."""
    w = torch.softmax(log_w.to(torch.float64), dim=-1)
    cum = torch.cumsum(w, dim=-1)
    cum[..., -1] = 1.0
    m = w.shape[-1]
    positions = (u[..., None] + torch.arange(m, dtype=torch.float64, device=cum.device)) / m
    idx = torch.searchsorted(cum.contiguous(), positions.contiguous(), right=True)
    return idx.clamp_(max=m - 1)


class Posterior:
    """Posterior draws of an assimilation with lazily decoded field and index summaries.

    Parameters
    ----------
    result : AssimilationResult
        Output of :func:`bayesbridge.infer.assimilate`; ensembles ``(*batch, T, member, d)``.
    codec : Codec
        Fitted codec with ``points`` (``(variable, lat, lon)`` MultiIndex) and
        ``decode_tensor((*batch, d)) -> (*batch, n_points)`` in physical units.
    time : array-like ``(T,)``, optional
        Time coordinate (datetime, cftime, ...); default ``0..T-1``.
    observations : Dataset, DataFrame or mapping of str to ``(T,)`` arrays, optional
        Index series (``nino3``, ...), assimilated or withheld, stored in ``observed_data`` and
        in ``posterior.nc`` as ``<box>_obs``.
    assimilated : sequence of str, optional
        Names of the observations that were assimilated (default: all of ``observations``).
    representation_residuals : array ``(n_samples, n_points)``, optional
        Residual series of the codec on its training data, ``x_t - decode(encode(x_t))``, in
        time order. Each draw adds the residual series circularly shifted by its own random
        offset, :math:`r_{(t + o_i) \bmod n}`: spatially and temporally coherent representation
        error with exactly the codec's residual covariance (box means included), unlike
        independent per-point noise, whose box means nearly vanish. Mutually exclusive with
        ``representation_std``.
    representation_std : None, "codec", float, array ``(n_points,)`` or Dataset, optional
        Per-point standard deviation of the decoder's representation error, added as Gaussian
        noise to every decoded draw. ``"codec"`` takes ``codec.residual_std`` (VAE); a Dataset
        gives ``(lat, lon)`` maps per variable.
    source : {"auto", "smoothed", "filtered", "gaussian"}
        Which draws: ``auto`` = smoothed ensemble, else filtered ensemble, else Gaussian
        marginals from the smoothed (else filtered) mean and covariance.
    seed : int
        Seed of particle resampling, Gaussian draws and representation noise.
    boxes : sequence of str
        Index boxes (default the standard Nino boxes and ``h_w``). Boxes whose variable the codec
        lacks (``h_w`` without ``zos``) or that the grid does not cover are skipped when left at
        the default, and raise otherwise.
    area : DataArray ``(lat, lon)``, optional
        Cell areas for the box weights (default ``cos(lat)``).
    chunk_mb : float
        Memory budget of one decoded block (sets the number of time steps per block).
    gaussian_draws : int
        Number of draws for ``source="gaussian"``.
    lat, lon : array-like, optional
        Full grid coordinates (default from ``codec.stacker``, else the points' unique values).
    units : mapping of str to str, optional
        Units per variable (default from the codec, else :data:`DEFAULT_UNITS`).
    progress : bool
        Show a progress bar (tqdm) while the summaries are decoded.

    Attributes
    ----------
    source : str
        ``"smoothed"``, ``"filtered"`` or ``"gaussian"``.
    n_draws, n_steps, latent_dim : int
    boxes : tuple of str
        Boxes for which index series are computed.
    """

    def __init__(
        self,
        result: AssimilationResult,
        codec,
        time=None,
        *,
        observations=None,
        assimilated: Sequence[str] | None = None,
        representation_std=None,
        representation_residuals=None,
        source: Source = "auto",
        seed: int = 0,
        boxes: Sequence[str] | None = None,
        area: xr.DataArray | None = None,
        chunk_mb: float = 64.0,
        gaussian_draws: int = 100,
        lat=None,
        lon=None,
        units: Mapping[str, str] | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(result, AssimilationResult):
            raise InputTypeError(
                f"result: expected an AssimilationResult (from bayesbridge.infer.assimilate), got "
                f"{type(result).__name__}."
            )
        for attr in ("points", "decode_tensor"):
            if not hasattr(codec, attr):
                raise InputTypeError(
                    f"codec: expected a fitted Codec with `points` and `decode_tensor`, got "
                    f"{type(codec).__name__} without `{attr}`; fit the codec first."
                )
        if source not in get_args(Source):
            raise ParameterError(
                f"source: expected one of {', '.join(get_args(Source))}, got {source!r}."
            )
        if not (isinstance(chunk_mb, int | float) and chunk_mb > 0):
            raise ParameterError(f"chunk_mb: expected a positive number of megabytes, got {chunk_mb!r}.")
        if not (isinstance(gaussian_draws, int | np.integer) and gaussian_draws >= 2):
            raise ParameterError(f"gaussian_draws: expected an integer >= 2, got {gaussian_draws!r}.")
        self.result = result
        self.device = result.device  # draws are formed and decoded here; summaries come back to the CPU
        self.codec = codec
        self.seed = int(seed)
        self.chunk_mb = float(chunk_mb)
        self.progress = bool(progress)
        self._setup_draws(result, source, int(gaussian_draws))
        self.time = self._time_index(time)
        self._setup_grid(codec, lat, lon, units)
        self._rep_std = self._representation_std(representation_std)
        self._rep_bank, self._rep_offsets = self._representation_bank(representation_residuals)
        if self._rep_std is not None and self._rep_bank is not None:
            raise InputValueError(
                "representation_std, representation_residuals: give one representation-error model, not both."
            )
        self.observations = self._observations(observations)
        self.assimilated = self._assimilated(assimilated)
        self._setup_boxes(boxes, area)
        self._summary: xr.Dataset | None = None
        self._index_draws: np.ndarray | None = None

    # ------------------------------------------------------------------ set-up
    def _setup_draws(self, result: AssimilationResult, source: str, gaussian_draws: int) -> None:
        self._weights = None
        if source == "auto":
            if result.smoothed_ensemble is not None:
                source = "smoothed"
            elif result.filtered_ensemble is not None:
                source = "filtered"
            else:
                source = "gaussian"
        if source in ("smoothed", "filtered"):
            ens = getattr(result, f"{source}_ensemble")
            if ens is None:
                raise InputValueError(
                    f"source: {source!r} requested but result.{source}_ensemble is None (method "
                    f"{result.method!r}); use source='auto' or an engine that returns it."
                )
            if ens.ndim < 3:
                raise ShapeMismatchError(
                    f"result.{source}_ensemble: expected shape (*batch, T, member, d), got {tuple(ens.shape)}."
                )
            self._ens = ens.detach()
            if source == "filtered" and result.log_weights is not None:
                if tuple(result.log_weights.shape) != tuple(ens.shape[:-1]):
                    raise ShapeMismatchError(
                        f"result.log_weights: expected shape {tuple(ens.shape[:-1])} (*batch, T, member) "
                        f"to match filtered_ensemble, got {tuple(result.log_weights.shape)}."
                    )
                self._weights = result.log_weights.detach()
            batch = tuple(ens.shape[:-3])
            self._members = int(ens.shape[-2])
        else:
            mean = result.smoothed_mean if result.smoothed_cov is not None else result.filtered_mean
            cov = result.smoothed_cov if result.smoothed_cov is not None else result.filtered_cov
            if cov is None:
                raise InputValueError(
                    f"result: method {result.method!r} returned neither an ensemble nor a covariance; "
                    f"no posterior draws can be formed. Use an ensemble, particle or Kalman engine."
                )
            self._mean = mean.detach().to(torch.float64)
            self._chol = torch.linalg.cholesky(
                cov.detach().to(torch.float64)
                + 1e-12 * torch.eye(cov.shape[-1], dtype=torch.float64, device=cov.device)
            )
            batch = tuple(mean.shape[:-2])
            self._members = gaussian_draws
        self.source = source
        self._batch = batch
        self._n_batch = int(math.prod(batch)) if batch else 1
        self.n_draws = self._n_batch * self._members
        self.n_steps = result.n_steps
        self.latent_dim = result.latent_dim

    def _time_index(self, time) -> pd.Index:
        if time is None:
            return pd.RangeIndex(self.n_steps, name="time")
        if isinstance(time, xr.DataArray):
            time = time.values
        index = pd.Index(np.asarray(time) if not isinstance(time, pd.Index) else time, name="time")
        if index.ndim != 1 or len(index) != self.n_steps:
            raise ShapeMismatchError(
                f"time: expected {self.n_steps} values (one per assimilation step), got "
                f"{len(index)}; pass the time coordinate of the observations."
            )
        return index

    def _setup_grid(self, codec, lat, lon, units) -> None:
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
        self.lat = np.asarray(lat if lat is not None else np.unique(plat), dtype=float)
        self.lon = np.asarray(lon if lon is not None else np.unique(plon), dtype=float)
        var = np.asarray(points.get_level_values("variable")).astype(str)
        self.variables = tuple(dict.fromkeys(var.tolist()))
        ii = np.abs(plat[:, None] - self.lat[None, :]).argmin(axis=1)
        jj = np.abs(plon[:, None] - self.lon[None, :]).argmin(axis=1)
        if not (np.allclose(self.lat[ii], plat, atol=1e-6) and np.allclose(self.lon[jj], plon, atol=1e-6)):
            raise ShapeMismatchError(
                f"lat/lon: the codec's points do not lie on the grid lat {self.lat.min():g}.."
                f"{self.lat.max():g} ({self.lat.size}) x lon {self.lon.min():g}..{self.lon.max():g} "
                f"({self.lon.size}); pass the grid the codec was fitted on."
            )
        self.points = points
        self.n_points = len(points)
        # per variable: slice positions in the point vector and (i, j) grid indices
        self._var_points = {v: np.flatnonzero(var == v) for v in self.variables}
        self._var_ij = {v: (ii[p], jj[p]) for v, p in self._var_points.items()}
        codec_units = dict(getattr(stacker, "units", None) or {}) if stacker is not None else {}
        self.units = {v: (units or {}).get(v) or codec_units.get(v) or DEFAULT_UNITS.get(v, "1")
                      for v in self.variables}

    def _representation_bank(self, residuals) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if residuals is None:
            return None, None
        bank = torch.as_tensor(np.asarray(residuals, dtype=np.float32), device="cpu")
        if bank.ndim != 2 or bank.shape[1] != self.n_points or bank.shape[0] < 2:
            raise ShapeMismatchError(
                f"representation_residuals: expected shape (n_samples >= 2, {self.n_points}) (one "
                f"column per codec point), got {tuple(bank.shape)}."
            )
        if not bool(torch.isfinite(bank).all()):
            raise InputValueError("representation_residuals: expected finite values (ocean points only).")
        g = torch.Generator().manual_seed(_seed_for(self.seed, 4, 0))
        offsets = torch.randint(bank.shape[0], (self.n_draws,), generator=g, device="cpu")
        return bank, offsets

    def _representation_std(self, rep) -> torch.Tensor | None:
        if rep is None:
            return None
        if isinstance(rep, str):
            if rep != "codec":
                raise ParameterError(
                    f"representation_std: expected None, 'codec', a number, an array (n_points,) or a "
                    f"Dataset, got the string {rep!r}."
                )
            if not hasattr(self.codec, "residual_std"):
                raise InputValueError(
                    f"representation_std='codec': {type(self.codec).__name__} has no residual_std "
                    f"(only the VAE learns one); pass an array or a number instead."
                )
            rep = self.codec.residual_std
        if isinstance(rep, xr.Dataset):
            out = np.empty(self.n_points)
            for v, pos in self._var_points.items():
                if v not in rep:
                    raise VariableNotFoundError(
                        f"representation_std: variable {v!r} missing; the Dataset has "
                        f"{', '.join(map(str, rep.data_vars))}."
                    )
                grid = np.asarray(rep[v].transpose("lat", "lon").values, float)
                out[pos] = grid[self._var_ij[v]]
            rep = out
        std = torch.as_tensor(np.asarray(rep, dtype=np.float64) if not isinstance(rep, torch.Tensor)
                              else rep.detach().cpu(), dtype=torch.float64, device="cpu")
        if std.ndim == 0:
            std = std.expand(self.n_points).clone()
        if tuple(std.shape) != (self.n_points,):
            raise ShapeMismatchError(
                f"representation_std: expected a number or shape ({self.n_points},) (one per codec "
                f"point), got {tuple(std.shape)}."
            )
        if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
            raise InputValueError("representation_std: expected finite, non-negative values.")
        return std.to(torch.float32)

    def _observations(self, obs) -> dict[str, np.ndarray]:
        if obs is None:
            return {}
        if isinstance(obs, xr.Dataset):
            items = {str(k): obs[k].values for k in obs.data_vars}
        elif isinstance(obs, pd.DataFrame):
            items = {str(k): obs[k].to_numpy() for k in obs.columns if str(k) != "time"}
        elif isinstance(obs, Mapping):
            items = {str(k): np.asarray(v) for k, v in obs.items()}
        else:
            raise InputTypeError(
                f"observations: expected an xarray Dataset, pandas DataFrame or mapping of name to "
                f"(T,) arrays, got {type(obs).__name__}."
            )
        out = {}
        for name, values in items.items():
            arr = np.asarray(values, dtype=float).reshape(-1)
            if arr.size != self.n_steps:
                raise ShapeMismatchError(
                    f"observations[{name!r}]: expected {self.n_steps} values (one per step), got {arr.size}."
                )
            out[name] = arr
        return out

    def _assimilated(self, assimilated) -> tuple[str, ...]:
        if assimilated is None:
            return tuple(self.observations)
        names = tuple(assimilated)
        unknown = [n for n in names if n not in self.observations]
        if unknown:
            raise VariableNotFoundError(
                f"assimilated: {', '.join(unknown)} not among the observations "
                f"({', '.join(self.observations) or 'none given'}); pass them in `observations`."
            )
        return names

    def _setup_boxes(self, boxes, area) -> None:
        strict = boxes is not None
        names = tuple(boxes) if boxes is not None else STANDARD_BOXES
        columns, kept = [], []
        for name in names:
            region = get_region(name)
            if region.variable not in self.variables:
                if strict:
                    raise VariableNotFoundError(
                        f"boxes: {name!r} is averaged over {region.variable!r}, which the codec does "
                        f"not decode (it has {', '.join(self.variables)})."
                    )
                continue
            try:
                col = point_box_weights(self.points, region, lat=self.lat, lon=self.lon, area=area)
            except (GridCoverageError, AllMissingError):
                if strict:
                    raise
                continue
            columns.append(col)
            kept.append(region.name)
        self.boxes = tuple(kept)
        self._box_variable = {b: get_region(b).variable for b in kept}
        self._W = torch.as_tensor(np.stack(columns, axis=1) if columns else np.zeros((self.n_points, 0)), device="cpu")

    # ------------------------------------------------------------------ draws
    def _positions(self, time) -> np.ndarray:
        """Integer step positions selected by ``time`` (slice of positions or labels, or sequence)."""
        if time is None:
            return np.arange(self.n_steps)
        if isinstance(time, slice):
            bounds = (time.start, time.stop, time.step)
            if all(b is None or isinstance(b, int | np.integer) for b in bounds):
                return np.arange(self.n_steps)[time]
            lookup = xr.DataArray(np.arange(self.n_steps), dims="time", coords={"time": self.time})
            return np.asarray(lookup.sel(time=time).values)
        pos = np.asarray(time)
        if pos.dtype.kind not in "iu" or pos.ndim != 1:
            raise InputTypeError(
                f"time: expected a slice (positions or labels) or a 1-D sequence of integer "
                f"positions, got {type(time).__name__}."
            )
        if pos.size and (pos.min() < -self.n_steps or pos.max() >= self.n_steps):
            raise InputValueError(f"time: positions must lie in 0..{self.n_steps - 1}.")
        return pos % self.n_steps

    def latent_draws(self, time=None) -> torch.Tensor:
        """Latent draws ``(T', draw, d)`` float64 at the selected steps (all by default).

        Draws are reproducible (seeded from the posterior's ``seed`` and the step): Gaussian
        results are sampled from the per-step mean and covariance, weighted particle ensembles
        are resampled systematically, other ensembles are returned as they are.

        Parameters
        ----------
        time : slice or sequence of int, optional
            Steps to return: a slice of positions or of time labels, or integer positions
            (negative ones count from the end); ``None`` selects all ``T`` steps.

        Returns
        -------
        torch.Tensor
            Shape ``(T', draw, d)``, ``T'`` the number of selected steps.
        """
        pos = self._positions(time)
        blocks = [self._latent_steps(pos[i: i + 256]).cpu() for i in range(0, pos.size, 256)]
        if not blocks:
            return torch.zeros(0, self.n_draws, self.latent_dim, dtype=torch.float64, device="cpu")
        return torch.cat(blocks, dim=0)

    def _latent_steps(self, steps: np.ndarray) -> torch.Tensor:
        """``(len(steps), draw, d)`` latent draws (float64, on the result's device) at integer positions ``steps``.

        The random numbers come from CPU generators seeded per step (the same draws on every
        device) and are moved to the device once per block.
        """
        b, m, d = self._n_batch, self._members, self.latent_dim
        dev = self.device
        idx = torch.as_tensor(steps, dtype=torch.long, device=dev)
        if self.source == "gaussian":
            mean = self._mean.reshape(b, self.n_steps, d)[:, idx]
            chol = self._chol.reshape(b, self.n_steps, d, d)[:, idx]
            eps = torch.stack([
                torch.randn(b, m, d, dtype=torch.float64, device="cpu",
                            generator=torch.Generator().manual_seed(_seed_for(self.seed, 2, int(t))))
                for t in steps
            ], dim=1).to(dev)  # (b, k, m, d)
            z = mean[:, :, None, :] + torch.einsum("bkij,bkmj->bkmi", chol, eps)
        else:
            ens = self._ens.reshape(b, self.n_steps, m, d)[:, idx].to(torch.float64)  # (b, k, m, d)
            if self._weights is not None:
                lw = self._weights.reshape(b, self.n_steps, m)[:, idx]  # (b, k, m)
                anc = []
                for k, t in enumerate(steps):
                    g = torch.Generator().manual_seed(_seed_for(self.seed, 1, int(t)))
                    u = torch.rand(b, dtype=torch.float64, generator=g, device="cpu")
                    anc.append(_systematic_indices(lw[:, k], u.to(dev)))
                anc = torch.stack(anc, dim=1)  # (b, k, m)
                ens = torch.gather(ens, 2, anc[..., None].expand(-1, -1, -1, d))
            z = ens
        return z.movedim(0, 1).reshape(len(steps), b * m, d)

    def _decode_steps(self, steps: np.ndarray, dtype=torch.float32, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded draws plus representation noise ``(len(steps), draw, n_points)`` float32 (CPU).

        Decoding runs on the result's device; the decoded block is brought to the CPU once.
        ``draws`` (integer positions) decodes only those draws, with exactly the latent states and
        representation noise they have when all draws are decoded (the noise streams are drawn
        for every draw and then indexed, so a subset is the same sample as in the summaries).
        """
        z = self._latent_steps(steps)
        if draws is not None:
            z = z[:, draws.to(z.device)]
        n = z.shape[1]
        with torch.no_grad():
            x = self.codec.decode_tensor(z.to(dtype))
        x = x.detach().to(dtype=torch.float32, device="cpu")
        if tuple(x.shape) != (len(steps), n, self.n_points):
            raise ShapeMismatchError(
                f"codec.decode_tensor: expected output shape {(len(steps), n, self.n_points)} "
                f"(*batch, n_points), got {tuple(x.shape)}."
            )
        if self._rep_std is not None:
            for k, t in enumerate(steps):
                g = torch.Generator().manual_seed(_seed_for(self.seed, 3, int(t)))
                noise = torch.randn(self.n_draws, self.n_points, generator=g, device="cpu")
                x[k] += (noise if draws is None else noise[draws]) * self._rep_std
        if self._rep_bank is not None:
            n_bank = self._rep_bank.shape[0]
            offsets = self._rep_offsets if draws is None else self._rep_offsets[draws]
            for k, t in enumerate(steps):
                x[k] += self._rep_bank[(offsets + int(t)) % n_bank]
        return x

    def _steps_per_block(self) -> int:
        per_step = self.n_draws * max(self.n_points, 1) * _BYTES_PER_ELEMENT
        return max(1, int(self.chunk_mb * 2**20 // per_step))

    # ------------------------------------------------------------------ summaries
    def _compute(self) -> None:
        """One chunked pass: field summaries and box-index draws."""
        T, nlat, nlon = self.n_steps, self.lat.size, self.lon.size
        grids = {(v, s): np.full((T, nlat, nlon), np.nan, dtype=np.float32)
                 for v in self.variables for s in FIELD_STATS}
        index = np.empty((len(self.boxes), T, self.n_draws), dtype=np.float64)
        q = torch.tensor(QUANTILES, dtype=torch.float32, device="cpu")
        W = self._W.to(torch.float64)
        tb = self._steps_per_block()
        from tqdm.auto import tqdm

        for t0 in tqdm(range(0, T, tb), desc="decoding posterior", unit="block",
                       disable=not self.progress, leave=False):
            steps = np.arange(t0, min(T, t0 + tb))
            x = self._decode_steps(steps)  # (k, draw, P)
            xd = x.to(torch.float64)
            stats = {"mean": xd.mean(dim=1).to(torch.float32)}
            stats["std"] = (xd.std(dim=1) if self.n_draws > 1 else torch.zeros_like(xd[:, 0])).to(torch.float32)
            if W.shape[1]:
                index[:, steps, :] = (xd @ W).permute(2, 0, 1).numpy()
            del xd
            xt = x.transpose(1, 2).contiguous()  # (k, P, draw)
            del x
            qs = quantile_lastdim(xt, q)  # (3, k, P), == torch.quantile(xt, q, dim=-1)
            del xt
            stats.update(q05=qs[0], q50=qs[1], q95=qs[2])
            for v in self.variables:
                pos = self._var_points[v]
                ii, jj = self._var_ij[v]
                for s in FIELD_STATS:
                    grids[(v, s)][t0: t0 + len(steps), ii, jj] = stats[s][:, pos].numpy()
            del stats, qs
        self._index_draws = index
        self._summary = self._assemble(grids, index)

    def _assemble(self, grids, index) -> xr.Dataset:
        coords = {"time": self.time, "lat": self.lat, "lon": self.lon}
        out = {}
        for (v, s), arr in grids.items():
            out[f"{v}_{s}"] = xr.DataArray(arr, dims=("time", "lat", "lon"), attrs={
                "units": self.units[v],
                "long_name": f"{_STAT_TEXT[s]} of {_LONG_NAMES.get(v, v)}",
                "cell_methods": _CELL_METHODS[s],
            })
        for b_i, box in enumerate(self.boxes):
            draws = index[b_i]  # (T, draw)
            unit = self.units[self._box_variable[box]]
            region = get_region(box)
            qs = np.quantile(draws, QUANTILES, axis=1)
            for s, values in (("mean", draws.mean(axis=1)), ("std", draws.std(axis=1, ddof=1) if
                              self.n_draws > 1 else np.zeros(self.n_steps)),
                              ("q05", qs[0]), ("q50", qs[1]), ("q95", qs[2])):
                out[f"{box}_{s}"] = xr.DataArray(values.astype(np.float32), dims="time", attrs={
                    "units": unit,
                    "long_name": f"{_STAT_TEXT[s]} of the {region.long_name or box} index",
                    "cell_methods": f"area: mean {_CELL_METHODS[s]}",
                })
        for name, values in self.observations.items():
            role = "assimilated" if name in self.assimilated else "withheld"
            reg_unit = self.units.get(REGIONS[name].variable, "1") if name in REGIONS else "1"
            out[f"{name}_obs"] = xr.DataArray(values.astype(np.float32), dims="time", attrs={
                "units": reg_unit, "long_name": f"observed {name} index ({role})",
                "cell_methods": "area: mean",
            })
        ds = xr.Dataset(out, coords=coords)
        ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}
        ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}
        ds["time"].attrs.update({"standard_name": "time", "long_name": "time"})
        ds.attrs = self._global_attrs()
        return ds

    def _global_attrs(self) -> dict:
        return {
            "title": "bayesbridge posterior field and index summaries",
            "source": f"bayesbridge {self.result.method} assimilation ({self.source} draws)",
            "n_draws": int(self.n_draws),
            "seed": int(self.seed),
            "representation_noise": int(self._rep_std is not None or self._rep_bank is not None),
            "quantile_method": "linear interpolation between order statistics (torch.quantile)",
            "std_ddof": 1,
            "assimilated": ",".join(self.assimilated),
            "boxes": ",".join(self.boxes),
        }

    def summary(self) -> xr.Dataset:
        """Field and index summaries (computed once, chunked over time, then cached).

        Returns
        -------
        xarray.Dataset
            ``<var>_{mean,std,q05,q50,q95}`` float32 on ``(time, lat, lon)`` (NaN over land);
            ``<box>_{mean,std,q05,q50,q95}`` float32 on ``time`` for every box in :attr:`boxes`;
            ``<name>_obs`` for the observations. CF attributes on every variable.
        """
        if self._summary is None:
            self._compute()
        return self._summary

    to_xarray = summary

    def index_draws(self, box: str) -> xr.DataArray:
        """Box index of every whole-trajectory draw, ``(draw, time)`` float64.

        Exact: the normalised area weights applied to each decoded draw (with representation
        noise when requested). Use these, not the mean series, for skewness, event counts and
        spectra.

        Parameters
        ----------
        box : str
            A box of :attr:`boxes` (a region name or alias, e.g. ``"nino34"``).

        Returns
        -------
        xarray.DataArray
            Named after the box, on ``(draw, time)``, in the units of the box's field variable.
        """
        name = get_region(box).name
        if name not in self.boxes:
            raise VariableNotFoundError(
                f"box: {box!r} has no index series here; available: {', '.join(self.boxes)}."
            )
        self.summary()
        values = self._index_draws[self.boxes.index(name)].T
        return xr.DataArray(values, dims=("draw", "time"),
                            coords={"draw": np.arange(self.n_draws), "time": self.time}, name=name,
                            attrs={"units": self.units[self._box_variable[name]],
                                   "long_name": f"{get_region(name).long_name} index, posterior draws",
                                   "cell_methods": "area: mean"})

    def sample_fields(self, n_draws: int | None = 10, seed: int = 0, time=None) -> xr.Dataset:
        """Full decoded fields of a subset of draws, ``(draw, time, lat, lon)`` float32 per variable.

        Parameters
        ----------
        n_draws : int or None
            Number of draws chosen at random without replacement (``None``: all).
        seed : int
            Seed of the choice of draws (representation noise follows the posterior's ``seed``,
            so these are exactly the draws the summaries were computed from).
        time : slice or sequence of int, optional
            Steps to decode: a slice of positions or of time labels, or integer positions.
        """
        if n_draws is None:
            chosen = np.arange(self.n_draws)
        else:
            if not (isinstance(n_draws, int | np.integer) and 1 <= n_draws <= self.n_draws):
                raise ParameterError(
                    f"n_draws: expected an integer in 1..{self.n_draws} (or None for all), got {n_draws!r}."
                )
            chosen = np.sort(np.random.default_rng(seed).choice(self.n_draws, int(n_draws), replace=False))
        pos = self._positions(time)
        grids = {v: np.full((chosen.size, pos.size, self.lat.size, self.lon.size), np.nan, np.float32)
                 for v in self.variables}
        tb = max(1, self._steps_per_block())
        sel = torch.as_tensor(chosen, device="cpu")
        for k0 in range(0, pos.size, tb):
            steps = pos[k0: k0 + tb]
            x = self._decode_steps(steps, draws=sel).numpy()  # (k, n, P): only the chosen draws
            for v in self.variables:
                ii, jj = self._var_ij[v]
                grids[v][:, k0: k0 + len(steps), ii, jj] = x[:, :, self._var_points[v]].transpose(1, 0, 2)
        ds = xr.Dataset(
            {v: xr.DataArray(g, dims=("draw", "time", "lat", "lon"),
                             attrs={"units": self.units[v], "long_name": f"posterior draw of {_LONG_NAMES.get(v, v)}"})
             for v, g in grids.items()},
            coords={"draw": chosen, "time": self.time[pos], "lat": self.lat, "lon": self.lon},
        )
        ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
        ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
        return ds

    # ------------------------------------------------------------------ output
    def to_netcdf(self, path: str | Path) -> Path:
        """Write :meth:`summary` to ``path`` (``posterior.nc``): CF-1.8, compressed, atomic."""
        from bayesbridge.io import write_netcdf

        return write_netcdf(self.summary(), path)

    def ess(self) -> np.ndarray | None:
        """Effective sample size per run and step ``(n_batch, T)``, when the engine weights draws."""
        diag = self.result.diagnostics
        if diag is not None and diag.ess is not None:
            return diag.ess.detach().reshape(self._n_batch, self.n_steps).to(torch.float64).cpu().numpy()
        if self.result.log_weights is not None:
            lw = torch.log_softmax(self.result.log_weights.detach().to(torch.float64), dim=-1)
            ess = torch.exp(-torch.logsumexp(2.0 * lw, dim=-1))
            return ess.reshape(self._n_batch, self.n_steps).cpu().numpy()
        return None

    def to_inference_data(self, include_latent: bool = True):
        """ArviZ container (through :mod:`bayesbridge.io.arviz_compat`).

        Groups: ``posterior`` (latent states ``z`` on ``(chain, draw, time, latent)`` and the
        hyperparameters; ensemble/variational draws form one chain), ``posterior_predictive``
        (index draws per box, ``(chain, draw, time)``), ``observed_data`` (the observed indices on
        ``time``), ``sample_stats`` (``log_evidence`` of each draw's run, ``ess`` per step and the
        particle ``log_weight`` where available, ``(chain, draw[, time])``).

        Hyperparameter draws whose count differs from the latent draws are thinned (evenly spaced)
        to the smaller count, and the latent draws with them; single values are broadcast.

        Parameters
        ----------
        include_latent : bool
            Add the latent draws ``z`` to the ``posterior`` group (``T x draw x d`` values; leave
            them out for a small file).

        Returns
        -------
        arviz.InferenceData or xarray.DataTree
            Whichever the installed ArviZ uses.
        """
        from bayesbridge.io import arviz_compat

        hyper = {k: v.detach().cpu().to(torch.float64).numpy() for k, v in self.result.hyperparameters.items()}
        counts = [v.shape[0] for v in hyper.values() if v.ndim >= 1 and v.shape[0] > 1]
        n_post = min([self.n_draws, *counts])

        def thin(arr: np.ndarray, n: int) -> np.ndarray:
            if arr.ndim == 0 or arr.shape[0] == 1:
                return np.broadcast_to(arr.reshape(1, *arr.shape[arr.ndim > 0:]), (n, *arr.shape[arr.ndim > 0:]))
            if arr.shape[0] == n:
                return arr
            keep = np.unique(np.linspace(0, arr.shape[0] - 1, n).round().astype(int))
            return arr[keep]

        posterior = {name: thin(arr, n_post)[None] for name, arr in hyper.items()}
        dims: dict[str, list[str]] = {}
        coords: dict[str, np.ndarray] = {"time": np.asarray(self.time)}
        if include_latent:
            z = self.latent_draws().permute(1, 0, 2).numpy()  # (draw, T, d)
            posterior["z"] = thin(z, n_post)[None]
            dims["z"] = ["time", "latent"]
            coords["latent"] = np.arange(self.latent_dim)
        predictive = {}
        if self.boxes:
            self.summary()
            for b_i, box in enumerate(self.boxes):
                predictive[box] = self._index_draws[b_i].T[None]  # (1, draw, T)
                dims[box] = ["time"]
        observed = {}
        for name, values in self.observations.items():
            observed[name] = values
            dims[name] = ["time"]
        per_draw_run = np.repeat(np.arange(self._n_batch), self._members)
        log_ev = self.result.log_evidence.detach().reshape(-1).to(torch.float64).cpu().numpy()
        stats = {"log_evidence": log_ev[per_draw_run][None] if log_ev.size == self._n_batch
                 else np.full((1, self.n_draws), float(log_ev.sum()))}
        ess = self.ess()
        if ess is not None:
            stats["ess"] = ess[per_draw_run][None]
            dims["ess"] = ["time"]
        if self._weights is not None:
            lw = self._weights.reshape(self._n_batch, self.n_steps, self._members).permute(0, 2, 1)
            stats["log_weight"] = lw.reshape(self.n_draws, self.n_steps).to(torch.float64).cpu().numpy()[None]
            dims["log_weight"] = ["time"]
        attrs = {"method": self.result.method, "source": self.source,
                 "log_evidence_total": float(log_ev.sum()), "assimilated": ",".join(self.assimilated)}
        return arviz_compat.from_dict(
            posterior=posterior or None,
            posterior_predictive=predictive or None,
            observed_data=observed or None,
            sample_stats=stats,
            coords=coords,
            dims=dims,
            attrs=attrs,
        )

    def __repr__(self) -> str:
        return (f"Posterior(method={self.result.method!r}, source={self.source!r}, draws={self.n_draws}, "
                f"steps={self.n_steps}, latent={self.latent_dim}, variables={self.variables}, "
                f"boxes={self.boxes})")

