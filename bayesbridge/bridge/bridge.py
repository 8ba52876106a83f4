"""The bridge: operational fields -> latent space -> assimilate idealized/observed indices -> fields.

:class:`Bridge` chains the pieces of the data flow in ``docs/design.md`` section 2:

1. ``fit(fields)`` compresses the operational model's anomaly fields with a codec
   (:class:`~bayesbridge.latent.EOFCodec`, :class:`~bayesbridge.latent.Autoencoder`,
   :class:`~bayesbridge.latent.VAE`), learns latent dynamics (:class:`~bayesbridge.latent.LinearInverseModel`,
   optionally seasonal, :class:`~bayesbridge.latent.NeuralDynamics` or
   :class:`~bayesbridge.latent.LSTMDynamics`, whose window of past states makes the latent state
   the lag-augmented one, decoded by a :class:`~bayesbridge.latent.WindowedCodec`) and measures
   the codec's representation error per grid point and per index box;
2. ``assimilate(observations)`` builds the state-space model (:class:`~bayesbridge.model.StateSpaceModel`)
   whose observation operator is the box average of the decoded field in the units of the
   observation, and runs an inference engine (:func:`bayesbridge.infer.assimilate`);
3. the result is a :class:`~bayesbridge.bridge.posterior.Posterior`: whole-trajectory draws decoded
   lazily to field summaries and index series, plus the decoder's representation error.

Observation error. The error of an assimilated index ``k`` is

.. math:: s_k^2 = \\epsilon_k^2 + \\operatorname{Var}_t\\big[B_k x_t - B_k \\operatorname{dec}(\\operatorname{enc}(x_t))\\big],

a floor :math:`\\epsilon_k` (0.15 degC for Nino indices, the representation error found in the
prototype of Behnoudfar et al. 2026) plus the codec's own structural error on that box, measured
on the operational training data (never on a truth).

Every observable is in its own units: ``scale * B_k x`` with the scale and units of its
:class:`~bayesbridge.regions.Region` (:meth:`BridgeConfig.region`). The thermocline index ``h_w``
(m of 20 degC isotherm depth) is observed through the sea-surface height ``zos`` of the
operational model, ``h_w = thermocline_per_zos * B_hw zos`` with the reduced-gravity ratio
:math:`\\rho / \\Delta\\rho \\approx 150` (Jin 1997).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.bridge.observations import observations_from
from bayesbridge.bridge.result import BridgeResult
from bayesbridge.bridge.scales import ERROR_SCALES, ErrorScales, assimilate_error_scales
from bayesbridge.devices import single_torch_thread
from bayesbridge.dims import RUN_DIMS
from bayesbridge.errors import (
    AllMissingError,
    GridCoverageError,
    InputTypeError,
    NotFittedError,
    ParameterError,
    VariableNotFoundError,
    check_choice,
    check_int,
)
from bayesbridge.infer import METHODS
from bayesbridge.regions import REGIONS, STANDARD_BOXES, Region, get_region

__all__ = ["BridgeConfig", "Bridge", "BridgeResult", "OBSERVABLES", "RUN_DIMS", "DEFAULT_OBS_ERROR_FLOOR"]

CodecKind = Literal["eof", "autoencoder", "vae"]
DynamicsKind = Literal["linear", "seasonal", "neural", "lstm"]

OBSERVABLES: tuple[str, ...] = STANDARD_BOXES
"""Index names that can be assimilated (``nino12``, ``nino3``, ``nino34``, ``nino4``, ``h_w``)."""


DEFAULT_OBS_ERROR_FLOOR: dict[str, float] = {"nino12": 0.15, "nino3": 0.15, "nino34": 0.15, "nino4": 0.15, "h_w": 2.0}
"""Default floor ``epsilon_k`` of the observation error per observable, in its units (degC, m)."""


@dataclass
class BridgeConfig:
    """Configuration of a :class:`Bridge`.

    Parameters
    ----------
    codec : {"eof", "autoencoder", "vae"}
        Latent compression of the operational fields.
    latent_dim : int
        Latent size ``d``.
    dynamics : {"linear", "seasonal", "neural", "lstm"}
        Latent transition: a linear inverse model (``seasonal``: one per calendar month), a
        neural residual transition, or an LSTM over a window of past states
        (:class:`~bayesbridge.latent.LSTMDynamics`; the bridge's latent state is then the
        lag-augmented ``(z_t, ..., z_{t-w+1})`` of size ``window * latent_dim``, assimilated by
        every engine but ``svi``).
    method : {"enks", "enkf", "etkf", "pf", "kalman", "svi"}
        Inference engine (see :mod:`bayesbridge.infer`). Reanalysis output wants a smoother.
    members : int
        Ensemble members / particles / posterior draws.
    obs_error_floor : mapping of str to float
        Floor ``epsilon_k`` of the observation error per index (observation units).
    thermocline_per_zos : float
        Metres of thermocline depth per metre of sea-surface height: the scale of observables
        averaged over ``zos`` (``h_w``), see :meth:`region`.
    representation_error : bool
        Add the codec's per-point residual to decoded draws (``docs/design.md`` section 6).
    inflation : float
        Multiplicative inflation of ensemble engines.
    codec_options, dynamics_options, method_options : dict
        Extra arguments of the codec, dynamics and engine.
    progress : bool
        Progress bars for training steps.
    error_scales : {"fixed", "integrate"}
        Observation- and model-error scales at their nominal values (the representation error,
        ``sigma = 1``), or integrated over their posterior under priors floored at the
        representation error, one smoother draw per scale draw (:mod:`bayesbridge.bridge.scales`).
    scale_draws : int
        Scale draws ``K`` of ``error_scales="integrate"`` (``members // K`` trajectories each).
    device : str
        Where the torch work runs: ``"cpu"`` (default) or ``"cuda"`` / ``"cuda:<index>"``. Passed to
        the neural codec and dynamics (training and decoding) and to the inference engine; the
        posterior decodes there and returns its summaries on the CPU.
    """

    codec: CodecKind = "eof"
    latent_dim: int = 20
    dynamics: DynamicsKind = "seasonal"
    method: str = "enks"
    members: int = 100
    obs_error_floor: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_OBS_ERROR_FLOOR))
    thermocline_per_zos: float = 150.0
    representation_error: bool = True
    inflation: float = 1.0
    codec_options: dict = field(default_factory=dict)
    dynamics_options: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    progress: bool = False
    error_scales: ErrorScales = "fixed"
    scale_draws: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        from bayesbridge.devices import resolve_device

        if not isinstance(self.device, str | torch.device):
            raise ParameterError(f"device: expected a string such as 'cpu' or 'cuda', got {type(self.device).__name__}.")
        self.device = str(resolve_device(self.device))
        check_choice(self.codec, "codec", get_args(CodecKind))
        check_choice(self.dynamics, "dynamics", get_args(DynamicsKind))
        check_choice(self.method, "method", METHODS)
        check_choice(self.error_scales, "error_scales", ERROR_SCALES)
        check_int(self.scale_draws, "scale_draws", minimum=1)
        if self.dynamics == "lstm" and self.method == "svi":
            raise ParameterError(
                "method: 'svi' cannot fit the lag-augmented state of dynamics='lstm' (its lag blocks "
                "are copies with a noise of lag_jitter times their spread, which the variational "
                "trajectory guide does not follow: the ELBO diverges); use 'enks' (a smoother), "
                "'enkf', 'etkf' or 'pf' with the LSTM, or svi with another dynamics."
            )
        if not (isinstance(self.latent_dim, int) and self.latent_dim >= 1):
            raise ParameterError(f"latent_dim: expected a positive integer, got {self.latent_dim!r}.")
        if not (isinstance(self.members, int) and self.members >= 2):
            raise ParameterError(f"members: expected an integer >= 2, got {self.members!r}.")
        if self.thermocline_per_zos <= 0:
            raise ParameterError(f"thermocline_per_zos: expected > 0, got {self.thermocline_per_zos}.")
        if self.inflation < 1.0:
            raise ParameterError(f"inflation: expected >= 1, got {self.inflation}.")
        floors = dict(DEFAULT_OBS_ERROR_FLOOR)
        floors.update(self.obs_error_floor)
        bad = {k: v for k, v in floors.items() if not v > 0}
        if bad:
            raise ParameterError(f"obs_error_floor: expected positive values, got {bad}.")
        self.obs_error_floor = floors

    def region(self, name: str | Region) -> Region:
        """The box of observable ``name`` as this bridge observes it.

        A box averaged over ``zos`` observes thermocline depth: its scale is
        :attr:`thermocline_per_zos` metres per metre of sea-surface height. Any other box is
        :func:`bayesbridge.regions.get_region`'s.
        """
        region = get_region(name)
        if region.variable == "zos":
            return dataclasses.replace(region, scale=float(self.thermocline_per_zos))
        return region


class _AffineObservation:
    """``h(z) = c + H z`` for ``z`` ``(*batch, d)``: ``c`` ``(m,)``, ``H`` ``(m, d)`` (an EOF decoder's box means)."""

    def __init__(self, offset: torch.Tensor, H: torch.Tensor) -> None:
        self.offset, self.H = offset, H

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.offset + z.to(torch.float64) @ self.H.mT

    def to(self, device) -> _AffineObservation:
        """A copy on ``device``."""
        return _AffineObservation(self.offset.to(device), self.H.to(device))


def _augmented(codec, z: xr.DataArray, window: int):
    """The codec and latent series of the lag-augmented state ``(z_t, ..., z_{t-w+1})``.

    ``codec`` wrapped in a :class:`~bayesbridge.latent.WindowedCodec` (latent size ``w d``) and
    the lag windows ``(time, w d)`` of ``z`` ``(time, d)``, whose moments start the chain.
    """
    from bayesbridge.latent import WindowedCodec, lag_windows

    return WindowedCodec(codec, window), lag_windows(z, window)


class Bridge:
    """Latent-space data assimilation that bridges an idealized and an operational model.

    Parameters
    ----------
    config : BridgeConfig, optional
        Codec, dynamics and inference settings.
    **options
        Alternatively the fields of :class:`BridgeConfig` as keywords (not both).

    Examples
    --------
    >>> bridge = Bridge(BridgeConfig(latent_dim=16)).fit(operational_anomalies)   # doctest: +SKIP
    >>> out = bridge.assimilate(idealized[["nino3", "nino4", "h_w"]], seed=1)       # doctest: +SKIP
    >>> out.posterior.summary()["tos_mean"]                                         # doctest: +SKIP
    """

    def __init__(self, config: BridgeConfig | None = None, **options) -> None:
        if config is not None and options:
            raise InputTypeError("Bridge: pass either a BridgeConfig or keyword options, not both.")
        self.config = config if config is not None else BridgeConfig(**options)
        self.codec = None
        self.dynamics = None
        self.fields: xr.Dataset | None = None
        self.quadratic_term = self.representation_bank = None  # set by fit and measure_representation

    # ------------------------------------------------------------------ fitting
    def _make_codec(self, seed: int):
        from bayesbridge.latent import VAE, Autoencoder, EOFCodec

        cfg = self.config
        opts = dict(cfg.codec_options)
        if cfg.codec == "eof":
            return EOFCodec(latent_dim=cfg.latent_dim, **opts)
        opts.setdefault("seed", seed)
        opts.setdefault("progress", cfg.progress)
        opts.setdefault("device", cfg.device)
        cls = Autoencoder if cfg.codec == "autoencoder" else VAE
        return cls(latent_dim=cfg.latent_dim, **opts)

    def _make_dynamics(self, seed: int):
        from bayesbridge.latent import LinearInverseModel, LSTMDynamics, NeuralDynamics

        cfg = self.config
        opts = dict(cfg.dynamics_options)
        if cfg.dynamics in ("neural", "lstm"):
            opts.setdefault("seed", seed)
            opts.setdefault("progress", cfg.progress)
            opts.setdefault("device", cfg.device)
            return (NeuralDynamics if cfg.dynamics == "neural" else LSTMDynamics)(**opts)
        return LinearInverseModel(seasonal=cfg.dynamics == "seasonal", **opts)

    def fit(self, fields: xr.Dataset, *, seed: int = 0) -> Bridge:
        """Fit codec and latent dynamics on operational anomaly fields ``(time, lat, lon)``.

        Also measures the codec residual per grid point (representation error) and per index
        box (structural observation error). With ``dynamics="lstm"`` the stored codec and latent
        training series are the lag-augmented ones (a :class:`~bayesbridge.latent.WindowedCodec`
        and the lag windows of the encoded series); the residuals are the base codec's.

        Parameters
        ----------
        fields : xarray.Dataset
            Operational anomalies (e.g. from :func:`bayesbridge.io.open_operational`).
        seed : int
            Seed of the trained codecs and dynamics (unused by EOF + linear dynamics).

        Returns
        -------
        Bridge
            ``self``, fitted.
        """
        if not isinstance(fields, xr.Dataset):
            raise InputTypeError(
                f"fields: expected an xarray Dataset of anomalies on (time, lat, lon), got {type(fields).__name__}; "
                f"use bayesbridge.io.open_operational."
            )
        fields = fields.load()
        codec = self._make_codec(seed).fit(fields)
        z = codec.encode(fields)
        dynamics = self._make_dynamics(seed).fit(z)
        recon = codec.decode(z)
        residual = xr.Dataset({v: fields[v] - recon[v] for v in codec.variables})
        if self.config.dynamics == "lstm":
            codec, z = _augmented(codec, z, dynamics.window)
        self.codec, self.dynamics, self.fields = codec, dynamics, fields
        self.latent_train = z
        self._set_residual(residual, "operational")
        return self

    def _set_residual(self, residual: xr.Dataset, source: str) -> None:
        self.residual_std = residual.std("time")
        self.residual_points = self._stack_points(residual)
        self.box_residual_std = self._box_residual_std(residual)
        self.representation_source = source
        self.representation_bank, self.quadratic_term = self.residual_points, None

    def measure_representation(self, record: xr.Dataset, *, quadratic: bool = False) -> Bridge:
        """Measure the representation error on a record of the observed system instead.

        :meth:`fit` measures the codec residual on the operational training fields, which the
        codec was fitted to; it says how well the latent space represents the operational
        model, not the system the observations come from. This replaces the per-point residual
        series (the decoded draws' representation error), its standard deviation and the
        per-row residuals (the observation errors of :meth:`state_space_model`) by those of
        ``record`` (:mod:`bayesbridge.bridge.representation`).

        Parameters
        ----------
        record : xarray.Dataset
            Anomalies of every codec variable on ``(time, lat, lon)`` (the codec's grid), at
            least 24 months, independent of anything the bridge is scored against.
        quadratic : bool
            Also fit the record's residual on its Nino 3 squared and add that term to every
            decoded draw (:func:`~bayesbridge.bridge.representation.fit_quadratic_term`); the
            draws' representation noise is then what is left. Needs ``tos`` in the codec.

        Returns
        -------
        Bridge
            ``self``.
        """
        from bayesbridge.bridge.observables import stacked_rows, standard_operator
        from bayesbridge.bridge.representation import (
            check_record,
            fit_quadratic_term,
            record_residual,
        )

        self._require()
        record = check_record(record, self.codec, self.fields)
        self._set_residual(record_residual(record, self.codec), "record")
        if quadratic:
            op = standard_operator("nino3", self.config, self.codec.variables)
            w = stacked_rows([op], self.codec.points)[0]
            nino3 = self._stack_points(record).astype(np.float64) @ w
            self.quadratic_term, self.representation_bank = fit_quadratic_term(self.residual_points, nino3, w)
        return self

    def _box_residual_std(self, residual: xr.Dataset) -> dict[str, float]:
        """Standard deviation of the codec residual of each observable the grid covers (its units)."""
        from bayesbridge.regions import observable

        out = {}
        for name in OBSERVABLES:
            reg = self._region(name, residual.data_vars)
            if reg.variable not in residual:
                continue
            try:
                series = observable(residual[reg.variable], reg)
            except (GridCoverageError, AllMissingError):  # box outside the grid or on land only
                continue
            out[name] = float(series.std())
        return out

    def _region(self, name: str, variables) -> Region:
        """:meth:`BridgeConfig.region`, with ``h_w`` read from ``d20`` (m, scale 1) when ``variables`` holds it."""
        reg = self.config.region(name)
        if reg.name == "h_w" and "d20" in variables:
            return dataclasses.replace(reg, variable="d20", scale=1.0, units="m")
        return reg

    def _require(self) -> None:
        if self.codec is None:
            raise NotFittedError("Bridge: call .fit(operational_fields) before assimilating.")

    @property
    def observables(self) -> tuple[str, ...]:
        """Indices this bridge can observe (boxes covered by the codec's variables and grid)."""
        self._require()
        return tuple(self.box_residual_std)

    def _stack_points(self, ds: xr.Dataset) -> np.ndarray:
        """``(time, n_points)`` values of ``ds`` at the codec's points, in its order."""
        points = self.codec.points
        out = np.empty((ds.sizes["time"], len(points)), dtype=np.float32)
        names = np.asarray(points.get_level_values(0))
        for var in self.codec.variables:
            sel = names == var
            lat = xr.DataArray(np.asarray(points.get_level_values(1))[sel], dims="point")
            lon = xr.DataArray(np.asarray(points.get_level_values(2))[sel], dims="point")
            out[:, sel] = ds[var].sel(lat=lat, lon=lon).transpose("time", "point").values
        return np.nan_to_num(out)

    # ------------------------------------------------------------------ assimilation
    def _operators(self, names: Sequence[str], given: Mapping) -> list:
        """The operator of each of ``names``: given, else the standard box's."""
        from bayesbridge.bridge.observables import standard_operator

        return [given[n] if n in given else standard_operator(n, self.config, self.codec.variables) for n in names]

    def state_space_model(self, names: Sequence[str], start_month: int, operators=None):
        """The :class:`~bayesbridge.model.StateSpaceModel` observing ``names`` (run starting in ``start_month``).

        ``operators`` (:class:`~bayesbridge.operators.ObservationOperator` objects, a sequence or a
        mapping by name) define the observables that are not standard boxes (a profile such as
        ``eq_sst``, points, user operators); the others are :func:`~bayesbridge.bridge.observables.standard_operator`.
        The latent observation operator is built once from their stacked rows
        (:mod:`bayesbridge.bridge.observables`).
        """
        from bayesbridge.bridge.observables import operator_mapping, stacked_rows
        from bayesbridge.model import OperatorObservation, StateSpaceModel

        self._require()
        given = operator_mapping(operators)
        cannot = [n for n in names if n not in self.box_residual_std and n not in given]
        if cannot:
            needs = ", ".join(get_region(n).variable if n in REGIONS else "its operator" for n in cannot)
            raise VariableNotFoundError(
                f"variables: {cannot} cannot be observed by this operational model (needs variable {needs}; "
                f"an observable other than a box, e.g. eq_sst, needs its operator: pass "
                f"operators=[bayesbridge.idealized.equatorial_sst_operator()]); observable: {', '.join(self.observables)}."
            )
        ops = self._operators(names, given)
        rows = stacked_rows(ops, self.codec.points)
        observe = OperatorObservation(self.codec, torch.as_tensor(rows, dtype=torch.float64, device="cpu"))
        if self.config.codec == "eof":
            # A linear decoder makes the operator affine, h(z) = c + H z: precompute it instead of
            # decoding every member's full field at every step (exact, and far cheaper).
            d = self.codec.latent_dim
            with torch.no_grad():
                probe = observe(torch.cat([torch.zeros(1, d, device="cpu"), torch.eye(d, device="cpu")]).to(torch.float64))
            observe = _AffineObservation(probe[0], (probe[1:] - probe[0]).mT.contiguous())

        # representation error per row: the codec residual of the training data under the row
        represent = np.std(self.residual_points.astype(np.float64) @ rows.T, axis=0)
        errors, labels = [], []
        for n, op in zip(names, ops, strict=True):
            k = len(labels)
            labels.extend(op.row_labels())
            if n in given:
                errors.append(np.hypot(op.floors(), represent[k: len(labels)]))
            else:
                errors.append([np.hypot(self.config.obs_error_floor[n], self.box_residual_std[n])])
        obs_error = np.concatenate([np.asarray(e, dtype=float) for e in errors])
        dynamics = copy.copy(self.dynamics)
        if hasattr(dynamics, "start_month"):
            dynamics.start_month = int(start_month)
        z = torch.as_tensor(self.latent_train.values, dtype=torch.float64, device="cpu")
        cov = torch.cov(z.T) if z.shape[1] > 1 else z.var().reshape(1, 1)
        return StateSpaceModel(
            dynamics,
            observe,
            obs_error,
            initial_mean=torch.zeros(z.shape[1], dtype=torch.float64, device="cpu"),
            initial_cov=cov,
            obs_names=tuple(labels),
        )

    def assimilate(
        self,
        observations,
        variables: Sequence[str] | None = None,
        *,
        seed: int = 0,
        withheld=None,
        boxes: Sequence[str] | None = None,
        operators=None,
        structural_error=None,
    ) -> BridgeResult:
        """Assimilate index observations and return the decoded posterior.

        Several independent runs (e.g. one idealized-model run per parameter draw,
        :func:`bayesbridge.apps.propagate.propagate_parameter_uncertainty`) are assimilated as ONE
        batched call: observations ``(run, T, m)`` give an engine result
        ``(run, T, member, d)``, and the posterior pools them, draw ``i = run * members + m``.
        Its summaries are then those of the mixture over runs; for any scalar ``x``, by the law
        of total variance,

        .. math:: \\operatorname{Var}[x] = \\mathbb E_r\\big[\\operatorname{Var}[x \\mid r]\\big]
                  + \\operatorname{Var}_r\\big[\\mathbb E[x \\mid r]\\big].

        Parameters
        ----------
        observations : Dataset or DataFrame
            Monthly index series on ``time`` (``nino3``, ``nino4``, ``nino34``, ``nino12``,
            ``h_w``), NaN = missing; optionally with one run dimension (``run``, ``member`` or
            ``draw``, see :data:`RUN_DIMS`), all runs on the same months.
        variables : sequence of str, optional
            Which indices to assimilate (default: every known index present).
        seed : int
            Seed of the engine and of the posterior's representation noise.
        withheld : Dataset, optional
            Further observed indices that are *not* assimilated, stored beside the posterior
            for validation.
        boxes : sequence of str, optional
            Boxes whose posterior series are reported (default: all standard boxes available).
        operators : sequence of ObservationOperator, optional
            Operators of observables other than the standard boxes (e.g.
            :func:`bayesbridge.idealized.equatorial_sst_operator`); a multi-row one is observed by
            a variable of the same name with its row dimension (``eq_sst(time, lon)``,
            :mod:`bayesbridge.bridge.observables`).
        structural_error : mapping, optional
            Structural-error terms of unobserved boxes (:class:`~bayesbridge.bridge.posterior.Posterior`;
            :func:`bayesbridge.apps.structural.structural_error` estimates them).

        Returns
        -------
        BridgeResult
            With several runs, ``result`` has a leading ``run`` dimension, ``observations`` is on
            ``(run, time)`` and the posterior holds ``run x members`` draws; its stored
            observation series are then only the ``withheld`` ones (one series per name).
        """
        from bayesbridge.bridge.observables import (
            observation_rows,
            operator_mapping,
            profile_rows,
            split_profiles,
            stacked_rows,
        )
        from bayesbridge.bridge.posterior import Posterior

        self._require()
        given = operator_mapping(operators)
        rest, profiles = split_profiles(observations, given)
        wanted = None if variables is None else [v for v in variables if v not in profiles]
        parts = [p for op in given.values() for p in getattr(op, "part_names", ())]
        if wanted is not None:  # the parts of a contrast are read even when not assimilated
            wanted += [p for p in dict.fromkeys(parts) if p not in wanted and isinstance(rest, xr.Dataset) and p in rest]
        # only operator series wanted: the standard indices present give the checked time axis
        obs = observations_from(rest, wanted or None, runs=True)
        obs = obs if wanted or wanted is None else obs.drop_vars(list(obs.data_vars))
        names = [v for v in (variables if variables is not None else [*obs.data_vars, *profiles])]
        missing = [v for v in names if v not in obs and v not in profiles]
        if missing:
            raise VariableNotFoundError(f"variables: {missing} not in the observations.")
        profiles = {n: profile_rows(profiles[n], given[n], obs["time"]) for n in names if n in profiles}
        batched = "run" in obs.dims
        start_month = int(obs["time"].dt.month.values[0])
        model = self.state_space_model(names, start_month, given)
        rows = observation_rows(obs, profiles, names, self._operators(names, given))
        quadratic = self.quadratic_term
        if quadratic is not None:  # the assimilated boxes are matched by the latent state already
            box_ops = self._operators([n for n in names if n not in given], {})
            quadratic = quadratic.orthogonal_to(stacked_rows(box_ops, self.codec.points) if box_ops else [])
        y = rows.y  # (T, m) or (run, T, m)
        obs = rows.stored
        cfg = self.config
        options = dict(cfg.method_options)
        if cfg.method in ("enkf", "etkf", "enks"):
            options.setdefault("inflation", cfg.inflation)
            if cfg.members <= self.codec.latent_dim:  # rank-deficient ensemble covariance
                warnings.warn(
                    f"members: {cfg.members} ensemble members for a {self.codec.latent_dim}-dimensional state "
                    f"leave the {cfg.method} posterior over-confident; use at least {2 * self.codec.latent_dim}.",
                    stacklevel=2)
        with single_torch_thread():
            scaled = assimilate_error_scales(model, y, requested=cfg.error_scales, method=cfg.method,
                                             members=cfg.members, seed=seed, device=cfg.device,
                                             scale_draws=cfg.scale_draws, **options)
        result = scaled.result
        series = [] if batched else [obs]
        if withheld is not None:
            series.append(observations_from(withheld))
        observed = xr.merge(series) if series else None
        posterior = Posterior(
            result,
            self.codec,
            time=obs["time"].values,
            observations=observed,
            assimilated=() if batched else names,
            representation_residuals=self.representation_bank if cfg.representation_error else None,
            quadratic=quadratic,
            seed=seed,
            boxes=boxes,
            regions={n: self._region(n, self.codec.variables) for n in OBSERVABLES},
            structural_error=structural_error,
        )
        return BridgeResult(
            posterior=posterior,
            result=result,
            model=model,
            observations=obs,
            obs_error=pd.Series(model.obs_scale.cpu().numpy(), index=list(rows.labels), name="obs_error"),
            scales=scaled,
            y=y,
        )
