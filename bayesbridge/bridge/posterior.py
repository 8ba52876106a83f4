"""The posterior of an assimilation, decoded to physical fields on demand.

A :class:`Posterior` wraps an :class:`~bayesbridge.infer.result.AssimilationResult` and the
:class:`~bayesbridge.latent.base.Codec` that maps latent states to fields. It holds only the
latent draws ``(T, draw, d)`` (:mod:`bayesbridge.bridge.draws`, a view of the engine's
ensemble); everything physical is decoded lazily, a block of time steps at a time, with the
decoder's representation error (:mod:`bayesbridge.bridge.decoding`):

.. math::

    x^{(i)}_t = \\operatorname{decode}(z^{(i)}_t) + r^{(i)}_t .

Each block is reduced to the field summaries (mean, standard deviation with ``ddof = 1``,
5/50/95 % quantiles identical to :func:`torch.quantile`) and to the exact box index of every
draw (:mod:`bayesbridge.bridge.summaries`), and discarded. Peak memory is therefore one block
(``chunk_mb``) plus the outputs ``(time, lat, lon)``, independent of the number of draws; the
full ``(draw, time, lat, lon)`` array is built only by :meth:`Posterior.sample_fields`, for the
subset asked for. Batched results (``(*batch, T, member, d)``, e.g. one run per idealized-model
parameter draw) are pooled: draw ``i = b * member + m``.

Random numbers are seeded per ``(seed, stream, step)``, so summaries, index draws and
:meth:`Posterior.sample_fields` see the same realisation whatever the block size.

``docs/design.md`` section 6: statistics of the bridged fields (std/skewness maps, event rates,
spectra) must come from whole-trajectory draws plus representation error
(:meth:`Posterior.index_draws`, :meth:`Posterior.sample_fields`), never from the posterior mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.bridge.decoding import (
    DEFAULT_UNITS,
    BlockDecoder,
    FieldGrid,
    RepresentationError,
    as_representation_std,
    quantile_lastdim,
)
from bayesbridge.bridge.draws import LatentDraws, Source
from bayesbridge.bridge.structural import add_structural_terms, check_structural
from bayesbridge.bridge.summaries import (
    FIELD_STATS,
    QUANTILES,
    assemble_summary,
    box_weights_for,
    long_name,
)
from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
)
from bayesbridge.infer.result import AssimilationResult
from bayesbridge.regions import Region, get_region

__all__ = ["Posterior", "Source", "QUANTILES", "FIELD_STATS", "DEFAULT_UNITS", "quantile_lastdim"]

# bytes held per decoded element while a block is reduced: the float32 block, and as much again
# for a nonlinear decoder's temporaries (the compiled reduction works in place)
_BYTES_PER_ELEMENT = 4 + 4


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
    source : {"auto", "smoothed", "filtered"}
        Which trajectories: ``auto`` = smoothed ensemble, else an unweighted filtered ensemble.
        A result without whole trajectories (a weighted particle ensemble without backward
        simulation, a Kalman result without ``members``) raises, naming the remedy
        (:mod:`bayesbridge.bridge.draws`).
    seed : int
        Seed of the representation noise.
    boxes : sequence of str
        Index boxes (default the standard Nino boxes and ``h_w``). Boxes whose variable the codec
        lacks (``h_w`` without ``zos``) or that the grid does not cover are skipped when left at
        the default, and raise otherwise.
    regions : mapping of str to Region, optional
        Definitions of the box names (default :data:`bayesbridge.regions.REGIONS`), e.g. an
        ``h_w`` box with another thermocline scale (:meth:`bayesbridge.bridge.BridgeConfig.region`).
    area : DataArray ``(lat, lon)``, optional
        Cell areas for the box weights (default ``cos(lat)``).
    chunk_mb : float
        Memory budget of one decoded block (sets the number of time steps per block).
    lat, lon : array-like, optional
        Full grid coordinates (default from ``codec.stacker``, else the points' unique values).
    units : mapping of str to str, optional
        Units per variable (default from the codec, else :data:`DEFAULT_UNITS`).
    progress : bool
        Show a progress bar (tqdm) while the summaries are decoded.
    structural_error : mapping of str to (float, float), optional
        Structural-error terms of boxes that are not assimilated: per box the coefficient
        differences on Niño 3 and Niño 4 between the observed and the operational relation
        (:mod:`bayesbridge.bridge.structural`, estimated by
        :func:`bayesbridge.apps.structural.structural_error`); added to the box's index draws.
    quadratic : QuadraticTerm, optional
        A decoder term in the draw's own Nino 3 squared (:mod:`bayesbridge.bridge.representation`).

    Attributes
    ----------
    source : str
        ``"smoothed"`` or ``"filtered"``.
    n_draws, n_steps, latent_dim : int
    boxes : tuple of str
        Boxes for which index series are computed.
    draws : LatentDraws
        Where the latent draws come from (:mod:`bayesbridge.bridge.draws`).
    grid : FieldGrid
        The codec's points on the full grid.
    decoder : BlockDecoder
        Decodes blocks of latent draws.
    representation : RepresentationError
        The decoder's representation error added to every draw.
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
        regions: Mapping[str, Region] | None = None,
        area: xr.DataArray | None = None,
        chunk_mb: float = 64.0,
        lat=None,
        lon=None,
        units: Mapping[str, str] | None = None,
        progress: bool = False,
        structural_error: Mapping[str, Sequence[float]] | None = None,
        quadratic=None,
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
        if not (isinstance(chunk_mb, int | float) and chunk_mb > 0):
            raise ParameterError(f"chunk_mb: expected a positive number of megabytes, got {chunk_mb!r}.")
        self.result = result
        self.device = result.device  # draws are formed and decoded here; summaries come back to the CPU
        self.codec = codec
        self.seed = int(seed)
        self.chunk_mb = float(chunk_mb)
        self.progress = bool(progress)
        self.draws = LatentDraws.from_result(result, source, seed=self.seed)
        self.source = self.draws.source
        self.n_draws = self.draws.n_draws
        self.n_steps = result.n_steps
        self.latent_dim = result.latent_dim
        self.time = self._time_index(time)
        self.grid = FieldGrid.from_codec(codec, lat, lon, units)
        self.lat, self.lon = self.grid.lat, self.grid.lon
        self.variables, self.units = self.grid.variables, self.grid.units
        self.points, self.n_points = self.grid.points, self.grid.n_points
        self.decoder = BlockDecoder(codec, self.n_points, quadratic)
        self.representation = RepresentationError(
            self.grid, self.n_draws, self.seed, residuals=representation_residuals,
            std=as_representation_std(representation_std, self.grid, codec),
        )
        from bayesbridge.bridge.observables import split_stored

        # multi-row observations (a profile on (time, <name>_lon)) are kept apart from the series
        self.profile_observations, observations = split_stored(observations, self.n_steps)
        self.observations = self._observations(observations)
        self.assimilated = self._assimilated(assimilated)
        self._boxes = box_weights_for(self.points, self.variables, self.lat, self.lon, boxes, area, regions)
        self.boxes = self._boxes.names
        self.structural_error = check_structural(structural_error, self.boxes)
        self._summary: xr.Dataset | None = None
        self._index_draws: np.ndarray | None = None
        self._moments: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ set-up
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

    @property
    def box_weights(self):
        """The boxes of :attr:`boxes` and their weights on the codec's points
        (:class:`~bayesbridge.bridge.summaries.BoxWeights`, ``W (n_points, n_boxes)``)."""
        return self._boxes

    def _assimilated(self, assimilated) -> tuple[str, ...]:
        if assimilated is None:
            return tuple(self.observations)
        names = tuple(assimilated)
        unknown = [n for n in names if n not in self.observations and n not in self.profile_observations]
        if unknown:
            raise VariableNotFoundError(
                f"assimilated: {', '.join(unknown)} not among the observations "
                f"({', '.join(self.observations) or 'none given'}); pass them in `observations`."
            )
        return names

    def _assimilated(self, assimilated) -> tuple[str, ...]:
        if assimilated is None:
            return tuple(self.observations)
        names = tuple(assimilated)
        unknown = [n for n in names if n not in self.observations and n not in self.profile_observations]
        if unknown:
            raise VariableNotFoundError(
                f"assimilated: {', '.join(unknown)} not among the observations "
                f"({', '.join(self.observations) or 'none given'}); pass them in `observations`."
            )
        return names

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
        """``(len(steps), draw, d)`` latent draws (float64, on the result's device) at integer positions ``steps``."""
        return self.draws.steps(steps)

    def _decode_steps(self, steps: np.ndarray, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded draws plus representation error ``(len(steps), draw, n_points)`` float32 (CPU).

        ``draws`` (integer positions) decodes only those draws, with exactly the latent states and
        representation error they have when all draws are decoded.
        """
        z = self.draws.steps(steps)
        if draws is not None:
            z = z[:, draws.to(z.device)]
        x = self.decoder(z)
        self.representation.add_to(x, steps, draws)
        return x

    def block_steps(self) -> int:
        """Time steps decoded at once: as many as fit in ``chunk_mb`` (at least one)."""
        per_step = self.n_draws * max(self.n_points, 1) * _BYTES_PER_ELEMENT
        return max(1, int(self.chunk_mb * 2**20 // per_step))

    # ------------------------------------------------------------------ summaries
    def _compute(self, moment_draws: np.ndarray | None = None) -> None:
        """One chunked decoding pass (:func:`bayesbridge.bridge.reduction.reduce_posterior`):
        field summaries, box-index draws and the power sums of ``moment_draws``."""
        from bayesbridge.bridge.reduction import reduce_posterior

        reduced = reduce_posterior(self, moment_draws)
        add_structural_terms(reduced.index, self.boxes, self.assimilated, self.structural_error, self.seed)
        self._index_draws = reduced.index
        self._moments = (reduced.moment_draws, reduced.moment_sums) if moment_draws is not None else None
        self._summary = assemble_summary(
            reduced.grids, reduced.index, time=self.time, lat=self.lat, lon=self.lon, units=self.units,
            boxes=self._boxes, observations=self.observations, assimilated=self.assimilated,
            attrs=self._global_attrs())
        if self.profile_observations:
            from bayesbridge.bridge.observables import with_stored_profiles

            self._summary = with_stored_profiles(self._summary, self.profile_observations, self.assimilated)

    def draw_statistic_maps(self, draws, variable: str = "tos") -> xr.Dataset:
        """Standard-deviation and skewness maps of whole-trajectory draws, averaged over ``draws``.

        For each listed draw ``i`` (repeats count twice) the population moments over time of
        ``x^{(i)}_{t,p}`` (representation error included) give ``std = sqrt(m2)`` and
        ``skew = m3 / m2^{3/2}`` per point, as :func:`bayesbridge.apps.scoring.field_statistics`
        of that draw's field; the maps are then averaged over the list. Computed from power sums
        accumulated while the summaries are decoded: asked before :meth:`summary`, they cost no
        second decoding pass (afterwards, only the listed draws are decoded again).

        Parameters
        ----------
        draws : sequence of int
            Draw positions in ``0 .. n_draws - 1``.
        variable : str
            Field variable (default ``"tos"``).

        Returns
        -------
        xarray.Dataset
            ``std`` and ``skew`` on ``(lat, lon)``, NaN over land.
        """
        chosen = np.asarray(draws, dtype=np.int64).reshape(-1)
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= self.n_draws:
            raise ParameterError(f"draws: expected positions in 0..{self.n_draws - 1}, got {chosen.tolist()!r}.")
        if variable not in self.variables:
            raise VariableNotFoundError(f"variable: {variable!r} is not decoded; available: {', '.join(self.variables)}.")
        if self._summary is None:
            self._compute(moment_draws=chosen)
        if self._moments is not None and np.array_equal(self._moments[0], chosen):
            sums = self._moments[1]
        else:
            sums = self._moment_sums(chosen)
        n = float(self.n_steps)
        mu = sums[0] / n
        m2 = np.maximum(sums[1] / n - mu**2, 0.0)
        m3 = sums[2] / n - 3.0 * mu * sums[1] / n + 2.0 * mu**3
        with np.errstate(invalid="ignore", divide="ignore"):
            skew = np.where(m2 > 0, m3 / m2**1.5, np.nan)
        pos = self.grid.var_points[variable]
        ii, jj = self.grid.var_ij[variable]
        out = {}
        for name, values in (("std", np.sqrt(m2).mean(0)), ("skew", skew.mean(0))):
            grid = np.full((self.lat.size, self.lon.size), np.nan)
            grid[ii, jj] = values[pos]
            out[name] = (("lat", "lon"), grid)
        return xr.Dataset(out, coords={"lat": self.lat, "lon": self.lon})

    def _moment_sums(self, draws: np.ndarray) -> np.ndarray:
        """Power sums ``(3, len(draws), P)`` of the listed draws, decoding only those draws."""
        unique, inverse = np.unique(draws, return_inverse=True)
        sums = np.zeros((3, unique.size, self.n_points))
        sel = torch.as_tensor(unique, device="cpu")
        tb = self.block_steps()
        for t0 in range(0, self.n_steps, tb):
            steps = np.arange(t0, min(self.n_steps, t0 + tb))
            x = self._decode_steps(steps, draws=sel).numpy().astype(np.float64)  # (k, m, P)
            sums += np.stack([x.sum(0), (x**2).sum(0), (x**3).sum(0)])
        return sums[:, inverse]

    def _global_attrs(self) -> dict:
        return {
            "title": "bayesbridge posterior field and index summaries",
            "source": f"bayesbridge {self.result.method} assimilation ({self.source} draws)",
            "n_draws": int(self.n_draws),
            "seed": int(self.seed),
            "representation_noise": int(self.representation.active),
            "quantile_method": "linear interpolation between order statistics (torch.quantile)",
            "std_ddof": 1,
            "assimilated": ",".join(self.assimilated),
            "boxes": ",".join(self.boxes),
            "structural_error_boxes": ",".join(b for b in self.structural_error if b not in self.assimilated),
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
        """Observable of a box for every whole-trajectory draw, ``(draw, time)`` float64.

        Exact: the normalised area weights (times the box's scale) applied to each decoded draw
        (with representation noise when requested), in the observable's units (``h_w`` in metres
        of thermocline depth). Use these, not the mean series, for skewness, event counts and
        spectra.

        Parameters
        ----------
        box : str
            A box of :attr:`boxes` (a region name or alias, e.g. ``"nino34"``).

        Returns
        -------
        xarray.DataArray
            Named after the box, on ``(draw, time)``, in the observable's units.
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
                            attrs={"units": self._boxes.units(name, self.units),
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
        tb = max(1, self.block_steps())
        sel = torch.as_tensor(chosen, device="cpu")
        for k0 in range(0, pos.size, tb):
            steps = pos[k0: k0 + tb]
            x = self._decode_steps(steps, draws=sel).numpy()  # (k, n, P): only the chosen draws
            for v in self.variables:
                ii, jj = self.grid.var_ij[v]
                grids[v][:, k0: k0 + len(steps), ii, jj] = x[:, :, self.grid.var_points[v]].transpose(1, 0, 2)
        ds = xr.Dataset(
            {v: xr.DataArray(g, dims=("draw", "time", "lat", "lon"),
                             attrs={"units": self.units[v], "long_name": f"posterior draw of {long_name(v)}"})
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
            return diag.ess.detach().reshape(self.draws.n_batch, self.n_steps).to(torch.float64).cpu().numpy()
        if self.result.log_weights is not None:
            lw = torch.log_softmax(self.result.log_weights.detach().to(torch.float64), dim=-1)
            ess = torch.exp(-torch.logsumexp(2.0 * lw, dim=-1))
            return ess.reshape(self.draws.n_batch, self.n_steps).cpu().numpy()
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
        from bayesbridge.bridge.export import posterior_inference_data

        return posterior_inference_data(self, include_latent)

    def write_inference_data(self, path: str | Path, include_latent: bool = True) -> Path:
        """Write :meth:`to_inference_data`'s container to ``path`` (``inference_data.nc``), atomically.

        Built and written with xarray only (:func:`bayesbridge.io.arviz_compat.write_groups`), so
        it costs no ArviZ import; ``arviz.from_netcdf`` reads it. ``include_latent`` as in
        :meth:`to_inference_data`.
        """
        from bayesbridge.bridge.export import posterior_groups
        from bayesbridge.io.arviz_compat import write_groups

        return write_groups(posterior_groups(self, include_latent), path)

    def __repr__(self) -> str:
        return (f"Posterior(method={self.result.method!r}, source={self.source!r}, draws={self.n_draws}, "
                f"steps={self.n_steps}, latent={self.latent_dim}, variables={self.variables}, "
                f"boxes={self.boxes})")

