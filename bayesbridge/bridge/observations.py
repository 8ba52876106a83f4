"""Index observations as the bridge reads them: selected, on consecutive months, physically screened.

:func:`observations_from` turns a Dataset, DataArray or DataFrame of monthly index series into
the float64 Dataset that :meth:`bayesbridge.bridge.Bridge.assimilate` assimilates, and rejects,
before any work, what would otherwise surface as a late or misleading failure of an engine:

* a time axis that is not monthly and consecutive: duplicated dates, several values in one month
  (daily or weekly data), dates out of order, gaps (missing months must be NaN rows);
* :func:`screen_observations`: a requested series with no value at all; ``+/-inf``; a value
  beyond :data:`PLAUSIBLE_FACTOR` times the index's reference standard deviation
  (:data:`REFERENCE_STD`, the bundled 1950-2019 record); a long series whose mean is many
  standard deviations away from zero (absolute values, e.g. degC or Kelvin, instead of
  anomalies). Each message names the column, the first offending date and value.

The bound is loose on purpose: 20 standard deviations is about 16 degC for Nino 3, twice the
largest Nino 3 anomaly of a 300-year run of the idealized model (8 degC), and 264 m for ``h_w``;
what it catches is data in the wrong units or with overflowed or sentinel values (``1e30``,
``-9999``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.dims import RUN_DIMS
from bayesbridge.errors import (
    AllMissingError,
    InputTypeError,
    ObservationValueError,
    ShapeMismatchError,
    TimeAxisError,
    VariableNotFoundError,
)
from bayesbridge.regions import STANDARD_BOXES

__all__ = ["observations_from", "screen_observations", "REFERENCE_STD", "PLAUSIBLE_FACTOR"]

REFERENCE_STD: dict[str, float] = {"nino12": 1.1, "nino3": 0.79, "nino34": 0.77, "nino4": 0.58, "h_w": 13.2}
"""Standard deviation of each index's monthly anomalies in its units (degC; m for ``h_w``): the
bundled record (:func:`bayesbridge.datasets.observed_indices`; ERSST v5 1854-2024, GODAS
1980-2019), and the usual ERSST value for Nino 1+2, which the bundled record lacks."""

PLAUSIBLE_FACTOR: float = 20.0
"""An observed anomaly beyond ``PLAUSIBLE_FACTOR * REFERENCE_STD[k]`` is rejected."""

_MEAN_FACTOR = 5.0  # |mean| of >= _MEAN_MONTHS values beyond this many std: not anomalies
_MEAN_MONTHS = 24
_TEMPERATURE = {"nino12", "nino3", "nino34", "nino4"}


def observations_from(obj, variables: Sequence[str] | None = None, *, runs: bool = False) -> xr.Dataset:
    """Index observations as a Dataset on ``time`` with the requested variables (NaN = missing).

    The time axis must be monthly and consecutive, and the values pass
    :func:`screen_observations` (the module notes list the checks).

    Parameters
    ----------
    obj : xarray.Dataset, xarray.DataArray or pandas.DataFrame
        Monthly index series: a Dataset, a named DataArray, or a DataFrame with a ``time``
        column or index.
    variables : sequence of str, optional
        Indices to keep (default: every known index in :data:`~bayesbridge.bridge.OBSERVABLES`
        present).
    runs : bool
        Accept one extra dimension of independent runs, named one of :data:`~bayesbridge.dims.RUN_DIMS`
        (``run``, ``member`` as in ``MultiscaleENSO.simulate(members=K)``, or ``draw``); it is
        renamed ``run`` and the series are broadcast to ``(run, time)``.

    Returns
    -------
    xarray.Dataset
        float64 series on consecutive months, ``(time,)`` or, with ``runs``, ``(run, time)``;
        a single ``member`` is always dropped.

    Raises
    ------
    VariableNotFoundError, TimeAxisError, ShapeMismatchError, AllMissingError, ObservationValueError
        With the column, date and value concerned.
    """
    if isinstance(obj, pd.DataFrame):
        frame = obj.set_index("time") if "time" in obj.columns else obj
        frame.index.name = "time"
        if len(frame) and isinstance(frame.index[0], str):
            try:  # "1950-01", "1950-01-16": dates written as text
                frame = frame.set_axis(pd.to_datetime(frame.index, format="mixed"), axis=0)
            except (ValueError, TypeError) as exc:
                raise TimeAxisError(
                    f"observations: the time column holds text that is not a date ({exc}); give dates "
                    f"such as 1950-01, or convert it with pd.to_datetime."
                ) from exc
            frame.index.name = "time"
        ds = xr.Dataset.from_dataframe(frame)
    elif isinstance(obj, xr.DataArray):
        ds = obj.to_dataset(name=obj.name or "y")
    elif isinstance(obj, xr.Dataset):
        ds = obj
    else:
        raise InputTypeError(
            f"observations: expected an xarray Dataset or a pandas DataFrame with a time column, "
            f"got {type(obj).__name__}."
        )
    if "time" not in ds.dims:
        raise TimeAxisError(f"observations: no time dimension (dims: {dict(ds.sizes)}).")
    if isinstance(variables, str):
        raise InputTypeError(f"variables: expected a list of index names, got the string {variables!r}; "
                             f"pass e.g. [{variables!r}].")
    names = list(variables) if variables is not None else [v for v in ds.data_vars if v in STANDARD_BOXES]
    unknown = [v for v in names if v not in STANDARD_BOXES]
    if unknown:
        raise VariableNotFoundError(
            f"variables: {unknown} cannot be assimilated; known indices are {', '.join(STANDARD_BOXES)}."
        )
    twice = sorted({v for v in names if names.count(v) > 1})
    if twice:
        raise VariableNotFoundError(f"variables: {twice} listed more than once; name each index once.")
    missing = [v for v in names if v not in ds.data_vars]
    if missing:
        raise VariableNotFoundError(
            f"variables: {missing} not in the observations, which contain {', '.join(map(str, ds.data_vars))}."
        )
    if not names:
        raise VariableNotFoundError(
            f"observations: none of the known indices ({', '.join(STANDARD_BOXES)}) is present; the "
            f"data has {', '.join(map(str, ds.data_vars)) or 'no variables'}."
        )
    out = ds[names]
    if "member" in out.dims and out.sizes["member"] == 1:
        out = out.isel(member=0, drop=True)
    extra = [str(d) for d in out.dims if d != "time"]
    if extra:
        if not runs:
            raise ShapeMismatchError(
                f"observations: expected series on time only, got dimensions {dict(out.sizes)}; select "
                f"one series, or pass all runs to Bridge.assimilate (one run dimension: {', '.join(RUN_DIMS)})."
            )
        if len(extra) > 1 or extra[0] not in RUN_DIMS:
            raise ShapeMismatchError(
                f"observations: expected series on time plus at most one run dimension named one of "
                f"{', '.join(RUN_DIMS)}, got dimensions {dict(out.sizes)}; stack or rename the extra "
                f"dimensions first, e.g. ds.stack(run=('chain', 'draw'))."
            )
        out = out.rename({extra[0]: "run"}) if extra[0] != "run" else out
        if out.sizes["run"] < 1:
            raise ShapeMismatchError("observations: the run dimension is empty; pass at least one run.")
        out = xr.broadcast(out)[0].transpose("run", "time")
    if out.sizes["time"] == 0:
        raise TimeAxisError("observations: the time axis is empty; select a period with data.")
    _check_monthly(out["time"])
    for name in names:
        if out[name].dtype.kind not in "fiub":
            _not_numeric(out[name], name)
    out = out.astype("float64")
    screen_observations(out, names)
    return out


def _months(time: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(year, month, day)`` arrays of a time coordinate (numpy or cftime dates)."""
    try:
        return (np.asarray(time.dt.year.values), np.asarray(time.dt.month.values),
                np.asarray(time.dt.day.values))
    except (AttributeError, TypeError) as exc:
        first = time.values.reshape(-1)[0] if time.size else None
        raise TimeAxisError(
            f"observations: the time coordinate holds {type(first).__name__} values such as {first!r}, not "
            f"dates; give dates such as 1950-01 (CSV) or CF-encoded times (netCDF)."
        ) from exc


def _stamp(year, month) -> str:
    return f"{int(year):04d}-{int(month):02d}"


def _check_monthly(time: xr.DataArray) -> None:
    """Raise :class:`TimeAxisError` unless ``time`` holds consecutive months, one value each.

    The message tells a duplicated date, several values within one month (daily or weekly
    data), dates out of order and a gap apart, naming the dates concerned.

    Parameters
    ----------
    time : xarray.DataArray
        Time coordinate ``(T,)`` of numpy or cftime dates.
    """
    years, months, days = _months(time)
    key = years.astype(np.int64) * 12 + months - 1
    if key.size < 2:
        return
    step = np.diff(key)
    if np.any(step == 0):
        i = int(np.argmax(step == 0))
        same = key == key[i]
        if days[i] == days[i + 1]:
            raise TimeAxisError(
                f"observations: the date {_stamp(years[i], months[i])}-{int(days[i]):02d} appears more than "
                f"once (positions {i} and {i + 1}); remove the duplicated rows."
            )
        raise TimeAxisError(
            f"observations: {int(same.sum())} values fall in the month {_stamp(years[i], months[i])} "
            f"(days {', '.join(str(int(d)) for d in days[same][:5])}{' ...' if same.sum() > 5 else ''}); "
            f"the series looks daily or weekly, but one value per month is expected. Resample to "
            f"monthly means first, e.g. ds.resample(time='MS').mean()."
        )
    if np.any(step < 0):
        i = int(np.argmax(step < 0))
        raise TimeAxisError(
            f"observations: the dates are not in order ({_stamp(years[i + 1], months[i + 1])} comes after "
            f"{_stamp(years[i], months[i])}, position {i + 1}); sort the rows by time."
        )
    if np.any(step != 1):
        i = int(np.argmax(step != 1))
        raise TimeAxisError(
            f"observations: expected consecutive monthly values; the step after "
            f"{_stamp(years[i], months[i])} goes to {_stamp(years[i + 1], months[i + 1])}. "
            f"Add the missing months as empty (NaN) rows; missing values are allowed."
        )


def _not_numeric(da: xr.DataArray, name: str) -> None:
    values = np.asarray(da.values).reshape(-1)
    times = np.broadcast_to(np.asarray(da["time"].values), da.shape).reshape(-1) if "time" in da.coords else None
    for i, v in enumerate(values):
        try:
            float(v)
        except (TypeError, ValueError):
            where = f" at {times[i]}" if times is not None else ""
            raise InputTypeError(
                f"observations: the column {name!r} holds the non-numeric value {v!r}{where}; use numbers, "
                f"and leave missing months empty (or NaN)."
            ) from None
    raise InputTypeError(f"observations: the column {name!r} has dtype {da.dtype}; expected numbers.")


def _first(da: xr.DataArray, bad: np.ndarray) -> tuple[str, float]:
    """``(YYYY-MM of the first time step where bad holds, the value there)`` for ``bad`` like ``da``."""
    per_step = bad if bad.ndim == 1 else bad.any(axis=tuple(range(bad.ndim - 1)))
    t = int(np.argmax(per_step))
    years, months, _ = _months(da["time"])
    values = np.asarray(da.values)[..., t].reshape(-1)
    flags = bad[..., t].reshape(-1)
    return _stamp(years[t], months[t]), float(values[np.argmax(flags)])


def screen_observations(ds: xr.Dataset, variables: Sequence[str] | None = None, *,
                        require_values: bool = True) -> None:
    """Reject index series that are empty or physically implausible, naming column, date and value.

    For each known index ``k`` among ``variables`` (default: every known index of ``ds``):
    no value at all (:class:`AllMissingError`); ``+/-inf``; ``|y| > PLAUSIBLE_FACTOR *
    REFERENCE_STD[k]``; or, over at least 24 values, ``|mean(y)| > 5 REFERENCE_STD[k]``
    (absolute temperatures or depths instead of anomalies) (:class:`ObservationValueError`).
    Series of unknown names are not screened.

    Parameters
    ----------
    ds : xarray.Dataset
        Numeric series on ``time`` or ``(run, time)``.
    variables : sequence of str, optional
        Series to screen.
    require_values : bool
        Whether a series without any value is an error (``False``: it is skipped, e.g. a
        withheld index the period does not cover).

    Raises
    ------
    AllMissingError, ObservationValueError
    """
    names = [v for v in (variables if variables is not None else ds.data_vars) if v in REFERENCE_STD]
    for name in names:
        da = ds[name]
        if da.dtype.kind not in "fiub":
            _not_numeric(da, name)
        values = np.asarray(da.values, dtype=float)
        finite = np.isfinite(values)
        if not finite.any():
            if not require_values:
                continue
            years, months, _ = _months(da["time"])
            raise AllMissingError(
                f"observations: the column {name!r} has no value from {_stamp(years[0], months[0])} to "
                f"{_stamp(years[-1], months[-1])} (all {values.size} entries are missing); fill it, "
                f"choose another period, or leave {name} out of the assimilated indices."
            )
        if np.isinf(values).any():
            date, value = _first(da, np.isinf(values))
            raise ObservationValueError(
                f"observations: the column {name!r} holds {value} at {date}; mark missing months with "
                f"NaN (an empty cell) instead."
            )
        units = "m" if name == "h_w" else "degC"
        bound = PLAUSIBLE_FACTOR * REFERENCE_STD[name]
        bad = finite & (np.abs(np.where(finite, values, 0.0)) > bound)
        if bad.any():
            date, value = _first(da, bad)
            raise ObservationValueError(
                f"observations: the column {name!r} holds {value:g} at {date}, beyond the plausible "
                f"anomaly range of +/-{bound:g} {units} ({PLAUSIBLE_FACTOR:g} standard deviations of "
                f"the observed {name}); {_hint(name, value)}"
            )
        if finite.sum() >= _MEAN_MONTHS:
            mean = float(values[finite].mean())
            if abs(mean) > _MEAN_FACTOR * REFERENCE_STD[name]:
                raise ObservationValueError(
                    f"observations: the column {name!r} has a mean of {mean:.3g} {units}, but anomalies "
                    f"average near 0 (standard deviation about {REFERENCE_STD[name]:g} {units}); "
                    f"{_hint(name, mean)}"
                )


def _hint(name: str, value: float) -> str:
    if name in _TEMPERATURE and 200.0 < value < 350.0:
        return ("the values look like absolute temperatures in Kelvin; give anomalies in degC "
                "(subtract the monthly climatology).")
    if name in _TEMPERATURE and 10.0 < value < 40.0:
        return "the values look like absolute temperatures in degC; give anomalies (subtract the monthly climatology)."
    if name == "h_w" and 40.0 < abs(value) < 400.0:
        return "the values look like absolute depths; give anomalies in m (subtract the monthly climatology)."
    return ("check the units (anomalies in degC, m for h_w) and replace fill values such as -9999 or "
            "1e30 by NaN.")
