"""Composites of the bridge's correction by regime of the idealized model.

The *correction* composited by default is the decoded increment
:math:`\\mathrm{decode}(\\bar z^a_t) - \\mathrm{decode}(\\bar z^f_t)` (what each analysis adds
to the operational model's one-step forecast;
:func:`bayesbridge.diagnostics.explain.decoded_increments`). Any other correction
on ``(time, lat, lon)`` may be passed instead, e.g. the posterior mean field minus the
operational model's free run. It is averaged over the months of each regime of the idealized
model: high versus low Walker-circulation index ``I`` (:func:`walker_regimes`), or EP versus CP
El Nino years (:func:`enso_regimes`, from :func:`bayesbridge.diagnostics.enso.classify_events`;
months of an event year ``y`` are its DJF Dec(y), Jan(y+1), Feb(y+1) by default).

References
----------
Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16 (regimes of the multiscale ENSO model);
Behnoudfar, Moser, Bocquet, Cheng & Chen (2026), arXiv:2510.13030 (regime-dependent corrections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ShapeMismatchError,
    TimeAxisError,
    check_choice,
)

__all__ = ["RegimeComposites", "walker_regimes", "enso_regimes", "regime_composites"]

Threshold = Literal["median", "mean"]
EventWindow = Literal["djf", "apr_mar"]


@dataclass(frozen=True)
class RegimeComposites:
    """Composites of a correction field by regime.

    Attributes
    ----------
    composites : xarray.Dataset
        Mean correction per field variable on ``(regime, lat, lon)``.
    counts : xarray.DataArray
        ``(regime,)`` number of time steps in each composite.
    contrast : xarray.Dataset
        ``(lat, lon)``: first regime minus second (e.g. high minus low ``I``, EP minus CP).
    description : str
        What the correction is (e.g. decoded analysis increments).
    """

    composites: xr.Dataset
    counts: xr.DataArray
    contrast: xr.Dataset
    description: str


# ----------------------------------------------------------------------------- regimes
def _as_time_series(values, name: str) -> xr.DataArray:
    if isinstance(values, xr.DataArray):
        if values.dims != ("time",):
            raise ShapeMismatchError(f"{name}: expected a series on ('time',), got dims {values.dims}.")
        return values
    if isinstance(values, pd.Series):
        return xr.DataArray(values.to_numpy(), dims="time", coords={"time": values.index.to_numpy()})
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ShapeMismatchError(f"{name}: expected a 1-D series on time, got shape {arr.shape}.")
    return xr.DataArray(arr, dims="time")


def walker_regimes(walker_index, threshold: Threshold | float = "median",
                   labels: tuple[str, str] = ("high_I", "low_I")) -> xr.DataArray:  # fmt: skip
    """Label each step by the Walker-circulation index ``I`` of the idealized model.

    Parameters
    ----------
    walker_index : xarray.DataArray, pandas.Series or array (time,)
        ``I`` on the assimilation time axis (non-dimensional, in [0, 4]).
    threshold : {"median", "mean"} or float
        ``I > threshold`` is high, ``I <= threshold`` low (e.g. 2, the mean of the uniform
        distribution of ``I``); missing ``I`` gives an empty label (excluded).
    labels : (str, str)
        Names of the high and low regimes.

    Returns
    -------
    xarray.DataArray ``(time,)`` of str labels ("" = excluded).
    """
    da = _as_time_series(walker_index, "walker_index")
    x = np.asarray(da.values, dtype=float)
    if isinstance(threshold, str):
        check_choice(threshold, "threshold", get_args(Threshold), error=InputValueError)
        thr = float(np.nanmedian(x) if threshold == "median" else np.nanmean(x))
    elif isinstance(threshold, int | float | np.number) and not isinstance(threshold, bool) and np.isfinite(threshold):
        thr = float(threshold)
    else:
        raise InputValueError(
            f"threshold: expected 'median', 'mean' or a finite number, got {threshold!r}."
        )
    out = np.where(np.isfinite(x), np.where(x > thr, labels[0], labels[1]), "").astype(object)
    return xr.DataArray(out, dims="time", coords=da.coords, name="regime",
                        attrs={"threshold": thr, "description": f"Walker index I > {thr:g}: {labels[0]}"})  # fmt: skip


def enso_regimes(events: pd.DataFrame, time, *, include: Sequence[str] = ("ep", "cp"),
                 extreme_as_ep: bool = True, window: EventWindow = "djf") -> xr.DataArray:  # fmt: skip
    """Label each month by the ENSO event type of its event year.

    Parameters
    ----------
    events : pandas.DataFrame
        From :func:`bayesbridge.diagnostics.enso.classify_events` (index ``year``, column
        ``label``), one series (not per member).
    time : array-like (T,)
        Datetime/cftime times of the steps.
    include : sequence of str
        Event labels to keep (:data:`bayesbridge.diagnostics.enso.EVENT_LABELS`), default EP
        and CP El Nino.
    extreme_as_ep : bool
        Count ``extreme_ep`` years as ``ep`` (they are the strongest EP events).
    window : {"djf", "apr_mar"}
        Months of event year ``y``: Dec(y), Jan(y+1), Feb(y+1), or Apr(y)..Mar(y+1).

    Returns
    -------
    xarray.DataArray ``(time,)`` of str labels ("" = not in a selected event).
    """
    from bayesbridge.diagnostics.enso import EVENT_LABELS

    if not isinstance(events, pd.DataFrame) or "label" not in events:
        raise InputTypeError("events: expected the DataFrame returned by classify_events (with a 'label' column).")
    if isinstance(events.index, pd.MultiIndex):
        raise InputValueError(
            "events: expected one series' events indexed by year, got a MultiIndex "
            f"{list(events.index.names)}; select one member, e.g. events.xs(0, level='member')."
        )
    check_choice(window, "window", get_args(EventWindow), error=InputValueError)
    bad = [x for x in include if x not in EVENT_LABELS]
    if bad:
        raise InputValueError(f"include: unknown event labels {bad}; valid labels are {', '.join(EVENT_LABELS)}.")
    values = time.values if isinstance(time, xr.DataArray | pd.Index) else np.asarray(time)
    t = xr.DataArray(values, dims="time", coords={"time": values})
    try:
        year, month = np.asarray(t.dt.year.values), np.asarray(t.dt.month.values)
    except (TypeError, AttributeError) as exc:
        raise TimeAxisError(f"time: expected datetime64 or cftime values, got {values.dtype}.") from exc
    event_year = np.where(month >= (12 if window == "djf" else 4), year, year - 1)
    in_window = (month == 12) | (month <= 2) if window == "djf" else np.ones(month.shape, bool)
    labels = events["label"].astype(str)
    if extreme_as_ep:
        labels = labels.replace("extreme_ep", "ep")
    lookup = labels.to_dict()
    out = np.array([lookup.get(int(y), "") if w else "" for y, w in zip(event_year, in_window, strict=True)], dtype=object)
    out[~np.isin(out, list(include))] = ""
    return xr.DataArray(out, dims="time", coords=t.coords, name="regime",
                        attrs={"description": f"ENSO event type of the event year ({window} months)"})  # fmt: skip


def regime_composites(
    correction: xr.Dataset | xr.DataArray,
    regimes,
    *,
    order: Sequence[str] | None = None,
    description: str | None = None,
) -> RegimeComposites:
    """Mean correction field in each regime.

    Parameters
    ----------
    correction : xarray.Dataset or DataArray
        Fields on ``(time, lat, lon)`` (any extra dims such as ``run`` are pooled), e.g. from
        :func:`decoded_increments`, or the posterior mean minus the operational free run.
    regimes : xarray.DataArray or array (time,)
        Labels per step (:func:`walker_regimes`, :func:`enso_regimes`); "" excludes a step.
    order : sequence of str, optional
        Regimes to composite, in order (default: the labels present, sorted; the ``contrast``
        is the first minus the second). Asking for a label that never occurs is an error.
    description : str, optional
        What ``correction`` is (default: its ``description`` attribute).

    Returns
    -------
    RegimeComposites
    """
    if isinstance(correction, xr.DataArray):
        correction = correction.to_dataset(name=correction.name or "correction")
    if not isinstance(correction, xr.Dataset):
        raise InputTypeError(
            f"correction: expected an xarray Dataset on (time, lat, lon), got {type(correction).__name__}."
        )
    if "time" not in correction.dims:
        raise TimeAxisError(f"correction: expected a 'time' dimension, got dims {tuple(correction.dims)}.")
    lab = _as_time_series(regimes, "regimes")
    T = correction.sizes["time"]
    if lab.sizes["time"] != T:
        raise ShapeMismatchError(
            f"regimes: expected {T} labels (one per time step of correction), got {lab.sizes['time']}; "
            f"build the labels on the correction's time axis."
        )
    if "time" in lab.coords and "time" in correction.coords:
        a, b = np.asarray(lab["time"].values), np.asarray(correction["time"].values)
        if a.dtype == b.dtype and not np.array_equal(a, b):
            raise TimeAxisError(
                "regimes: its time coordinate differs from the correction's; build the labels on "
                "correction['time'] (e.g. walker_regimes(I.sel(time=correction.time)))."
            )
    labels = np.asarray(lab.values).astype(str)
    present = sorted(set(labels) - {"", "nan", "None"})
    names = list(order) if order is not None else present
    missing = [r for r in names if r not in present]
    if missing or len(names) < 1:
        raise InputValueError(
            f"order: regimes {missing or names} have no time step; the labels present are {present}."
        )
    comps, counts = [], []
    for r in names:
        sel = labels == r
        comps.append(correction.isel(time=np.nonzero(sel)[0]).mean([d for d in correction.dims if d not in ("lat", "lon")]))
        counts.append(int(sel.sum()))
    comp = xr.concat(comps, dim=pd.Index(names, name="regime", dtype=object))
    for v in comp.data_vars:
        comp[v].attrs = dict(correction[v].attrs)
    desc = description or str(correction.attrs.get("description", "correction"))
    comp.attrs = {"description": f"regime composites of: {desc}"}
    count = xr.DataArray(np.array(counts), dims="regime", coords={"regime": comp["regime"].values}, name="count")
    if len(names) >= 2:
        contrast = comp.sel(regime=names[0]).drop_vars("regime") - comp.sel(regime=names[1]).drop_vars("regime")
        contrast.attrs = {"description": f"{names[0]} minus {names[1]}"}
    else:
        contrast = comp.isel(regime=0).drop_vars("regime") * np.nan
    for v in contrast.data_vars:
        contrast[v].attrs = dict(correction[v].attrs)
    return RegimeComposites(comp, count, contrast, desc)
