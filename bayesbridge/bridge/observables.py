"""What the bridge observes: operators by name, observation series as rows, and their errors.

Every assimilated observable is an :class:`~bayesbridge.operators.ObservationOperator`: the
standard boxes (``nino12``, ``nino3``, ``nino34``, ``nino4``, ``h_w``) are built from their
names (:func:`standard_operator`; ``h_w`` reads ``d20`` in metres when the fields have it, else
``zos`` times :attr:`~bayesbridge.bridge.BridgeConfig.thermocline_per_zos`), any other one
(a profile such as ``eq_sst``, points, a user operator) is passed to
:meth:`~bayesbridge.bridge.Bridge.assimilate` as an object. The operators are stacked into the
rows of one linear operator on the codec's points (:func:`stacked_rows`), from which the bridge
builds its latent observation operator once per assimilation.

A multi-row observable arrives as a variable with one extra dimension, the operator's row
dimension (``eq_sst(time, lon)``) or its stored name ``<name>_<row_dim>`` (``eq_sst_lon``); its
coordinate must hold the operator's (:func:`profile_rows`). Stored beside the posterior it is on
``(time, <name>_<row_dim>)``, so that it never clashes with the grid's ``lat``/``lon``
(``docs/conventions.md``).

The error of row ``k`` is :math:`s_k^2 = \\epsilon_k^2 + \\operatorname{Var}_t[h_k(x_t - \\hat x_t)]`:
the operator's floor and the codec's representation error on that row, from the residuals
``x_t - \\hat x_t`` of the operational training data (never from a truth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesbridge.dims import RUN_DIMS
from bayesbridge.errors import (
    InputTypeError,
    ObservationValueError,
    ShapeMismatchError,
    VariableNotFoundError,
)
from bayesbridge.operators import BoxOperator, ContrastOperator, ObservationOperator

__all__ = ["standard_operator", "stored_dim", "split_profiles", "profile_rows", "stacked_rows", "ObservationRows",
           "observation_rows", "operator_mapping"]


def standard_operator(name: str, config, variables: Sequence[str] = ()) -> BoxOperator:
    """The operator of a standard box ``name`` as ``config`` (a :class:`~bayesbridge.bridge.BridgeConfig`) observes it.

    ``h_w`` reads ``d20`` (20 degC isotherm depth, m, scale 1) when ``variables`` holds it, else
    :meth:`BridgeConfig.region`'s variable and scale (``zos`` times ``thermocline_per_zos``).
    """
    reg = config.region(name)
    floor = float(config.obs_error_floor[reg.name])
    if reg.name == "h_w" and "d20" in variables:
        return BoxOperator(reg.name, variable="d20", units="m", scale=1.0, error_floor=floor, region=reg)
    return BoxOperator(reg.name, variable=reg.variable, units=reg.units, scale=reg.scale, error_floor=floor, region=reg)


def operator_mapping(operators) -> dict[str, ObservationOperator]:
    """``operators`` (a sequence or mapping of operators) keyed by name, checked."""
    items = list(operators.values()) if isinstance(operators, Mapping) else list(operators or ())
    out = {}
    for op in items:
        if not isinstance(op, ObservationOperator):
            raise InputTypeError(
                f"operators: expected ObservationOperator objects (bayesbridge.operators), got {type(op).__name__}."
            )
        if op.name in out:
            raise InputTypeError(f"operators: the name {op.name!r} is given twice; name each operator once.")
        out[op.name] = op
    return out


def stored_dim(op: ObservationOperator) -> str | None:
    """The row dimension of ``op``'s series beside a posterior: ``<name>_<row_dim>``."""
    return None if op.row_dim is None else f"{op.name}_{op.row_dim}"


def split_profiles(observations, operators: Mapping[str, ObservationOperator]):
    """``(rest, profiles)``: ``observations`` without the variables of given operators, and those by name.

    ``operators`` maps names to :class:`~bayesbridge.operators.ObservationOperator` objects.

    Variables named after an operator (one or several rows) are taken out (a Dataset input) and
    checked by :func:`profile_rows`; the standard indices go through
    :func:`~bayesbridge.bridge.observations.observations_from`.
    """
    if not isinstance(observations, xr.Dataset) or not operators:
        return observations, {}
    present = [n for n in operators if n in observations.data_vars]
    return observations.drop_vars(present), {n: observations[n] for n in present}


def profile_rows(da: xr.DataArray, op: ObservationOperator, time: xr.DataArray) -> xr.DataArray:
    """A multi-row observation on ``(run?, time, <name>_<row_dim>)``, its rows those of ``op``.

    Parameters
    ----------
    da : xarray.DataArray
        The observation on ``time``, the row dimension (``op.row_dim`` or
        :func:`stored_dim`), and optionally one run dimension (:data:`~bayesbridge.dims.RUN_DIMS`).
    op : ObservationOperator
        Its operator; every one of its row coordinates must be in ``da`` (to 1e-6), in any order.
    time : xarray.DataArray
        The assimilated months; ``da`` must hold exactly these.

    Raises
    ------
    ShapeMismatchError
        Missing or mismatched rows, other dimensions or other months, naming both sides.
    """
    if op.row_dim is None:
        return _series_rows(da, op, time)
    dim = stored_dim(op)
    cand = [d for d in (op.row_dim, dim) if d in da.dims]
    if not cand:
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: expected a dimension {op.row_dim!r} (or {dim!r}) holding the operator's rows, "
            f"got dimensions {tuple(da.dims)}."
        )
    da = da.rename({cand[0]: dim}) if cand[0] != dim else da
    extra = [d for d in da.dims if d not in ("time", dim)]
    if len(extra) > 1 or (extra and extra[0] not in RUN_DIMS):
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: expected dimensions (time, {dim}) and at most one run dimension "
            f"({', '.join(RUN_DIMS)}), got {tuple(da.dims)}."
        )
    if extra and extra[0] != "run":
        da = da.rename({extra[0]: "run"})
    want = np.asarray(op.row_coord, dtype=float)
    have = np.asarray(da[dim].values, dtype=float) if dim in da.coords else np.arange(da.sizes[dim], dtype=float)
    pos = np.abs(have[None, :] - want[:, None]).argmin(axis=1) if have.size else np.zeros(0, int)
    if have.size == 0 or np.abs(have[pos] - want).max() > 1e-6:
        missing = want if have.size == 0 else want[np.abs(have[pos] - want) > 1e-6]
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: the {op.row_dim} coordinate holds {', '.join(f'{v:g}' for v in have)}, "
            f"but the operator observes {', '.join(f'{v:g}' for v in want)} (missing: "
            f"{', '.join(f'{v:g}' for v in missing)}); give the profile at the operator's {op.row_dim}s or build "
            f"the operator at the profile's."
        )
    da = da.isel({dim: pos}).assign_coords({dim: want})
    if da.sizes["time"] != time.size or not np.array_equal(np.asarray(da["time"].values), np.asarray(time.values)):
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: its {da.sizes['time']} months differ from the other observations' "
            f"{time.size}; give all series on the same months."
        )
    _check_values(da, op)
    order = [d for d in ("run", "time", dim) if d in da.dims]
    return da.astype("float64").transpose(*order)


def _check_values(da: xr.DataArray, op: ObservationOperator) -> None:
    values = np.asarray(da.values, dtype=float)
    if np.isinf(values).any() or (np.abs(np.nan_to_num(values)) > 1e3).any():
        raise ObservationValueError(
            f"observations[{op.name!r}]: holds infinite or implausible values (|y| > 1000); mark missing values "
            f"with NaN and give anomalies in the operator's units ({op.units or 'field units'})."
        )


def _series_rows(da: xr.DataArray, op: ObservationOperator, time: xr.DataArray) -> xr.DataArray:
    """A one-row operator's series on ``(run?, time)``, on the months ``time``."""
    extra = [d for d in da.dims if d != "time"]
    if "time" not in da.dims or len(extra) > 1 or (extra and extra[0] not in RUN_DIMS):
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: expected dimensions (time,) and at most one run dimension "
            f"({', '.join(RUN_DIMS)}), got {tuple(da.dims)}."
        )
    if extra and extra[0] != "run":
        da = da.rename({extra[0]: "run"})
    if da.sizes["time"] != time.size or not np.array_equal(np.asarray(da["time"].values), np.asarray(time.values)):
        raise ShapeMismatchError(
            f"observations[{op.name!r}]: its {da.sizes['time']} months differ from the other observations' "
            f"{time.size}; give all series on the same months."
        )
    _check_values(da, op)
    return da.astype("float64").transpose(*[d for d in ("run", "time") if d in da.dims])


def stacked_rows(operators: Sequence[ObservationOperator], points) -> np.ndarray:
    """Rows ``(m, n_points)`` of every one of ``operators`` on the codec's ``points``, in order (scales included)."""
    return np.concatenate([op.rows(points) for op in operators], axis=0)


@dataclass
class ObservationRows:
    """Observations ready for the engine.

    Attributes
    ----------
    operators : tuple of ObservationOperator
        One per observable, in order.
    labels : tuple of str
        One per row (``nino3``, ``eq_sst[130]`` ...).
    y : numpy.ndarray
        ``(T, m)`` or ``(run, T, m)`` row values (NaN = missing).
    stored : xarray.Dataset
        The observations as stored beside the posterior: series on ``time`` (or ``(run, time)``),
        profiles on ``(time, <name>_<row_dim>)``.
    """

    operators: tuple
    labels: tuple
    y: np.ndarray
    stored: xr.Dataset


def observation_rows(series: xr.Dataset, profiles: Mapping[str, xr.DataArray], names: Sequence[str],
                     operators: Sequence[ObservationOperator]) -> ObservationRows:
    """Stack one-row series and multi-row profiles into the rows of ``operators`` (one per ``names``).

    A :class:`~bayesbridge.operators.ContrastOperator` row is observed as its profile minus
    ``coef`` times its parts' observations (:meth:`~bayesbridge.operators.ContrastOperator.observed`),
    which must be among ``series``.
    """
    blocks, labels, stored = [], [], {}
    for name, op in zip(names, operators, strict=True):
        if op.row_dim is None and name in profiles:  # a series of a given operator
            values = np.asarray(profiles[name].values, dtype=float)[..., None]
            stored[name] = profiles[name]
        elif op.row_dim is None:
            if name not in series:
                raise VariableNotFoundError(f"observations: no series {name!r}; the data has {', '.join(series.data_vars)}.")
            values = np.asarray(series[name].values, dtype=float)[..., None]
            stored[name] = series[name]
        else:
            da = profiles[name]
            values = np.asarray(da.values, dtype=float)
            stored[name] = da
        if isinstance(op, ContrastOperator):
            parts = op.part_values(series)
            if values.ndim == 2 and parts[0].ndim == 2:  # a profile on (time, k) beside batched series
                values = np.broadcast_to(values, parts[0].shape + values.shape[-1:])
            values = op.observed(values, parts)
        blocks.append(values)
        labels.extend(op.row_labels())
    shape = np.broadcast_shapes(*[b.shape[:-1] for b in blocks])
    y = np.concatenate([np.broadcast_to(b, shape + b.shape[-1:]) for b in blocks], axis=-1)
    return ObservationRows(tuple(operators), tuple(labels), y, xr.Dataset(stored))


def split_stored(observations, n_steps: int):
    """``(profiles, rest)``: the multi-row series of a stored-observation Dataset, and the others.

    ``profiles`` maps a name to its ``(time, <name>_<row_dim>)`` DataArray (checked to have
    ``n_steps`` months); ``rest`` is ``observations`` without them (any other type as given).
    """
    if not isinstance(observations, xr.Dataset):
        return {}, observations
    profiles = {}
    for name in list(observations.data_vars):
        da = observations[name]
        if da.ndim == 2 and "time" in da.dims:
            if da.sizes["time"] != n_steps:
                raise ShapeMismatchError(
                    f"observations[{name!r}]: expected {n_steps} months (one per step), got {da.sizes['time']}."
                )
            profiles[str(name)] = da.transpose("time", ...)
    return profiles, observations.drop_vars(list(profiles))


def with_stored_profiles(summary: xr.Dataset, profiles: Mapping[str, xr.DataArray], assimilated) -> xr.Dataset:
    """``summary`` plus ``<name>_obs`` on ``(time, <name>_<row_dim>)`` for each profile (float32, CF attributes)."""
    out = {}
    for name, da in profiles.items():
        role = "assimilated" if name in assimilated else "withheld"
        values = xr.DataArray(np.asarray(da.values, dtype=np.float32), dims=("time", da.dims[1]),
                              coords={da.dims[1]: np.asarray(da[da.dims[1]].values)} if da.dims[1] in da.coords else None)
        values.attrs = {"units": da.attrs.get("units", "degC" if name == "eq_sst" else "1"),
                        "long_name": f"observed {name} profile ({role})"}
        out[f"{name}_obs"] = values
    return summary.assign(out) if out else summary
