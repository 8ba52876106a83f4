"""Reanalysis mode: reconstruct historical fields from a few observed index series.

:func:`read_observations` reads a user's index file (CSV with a ``time`` column, or netCDF) and
:func:`reconstruct` runs the bridge on it: the operational model (user CMIP6 files, or the
bundled synthetic operational model) provides the latent space and dynamics, the chosen indices
are assimilated with a smoother, and any other known index present in the file is kept as a
withheld validation series. This is what ``bayesbridge assimilate`` runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.bridge import OBSERVABLES, Bridge, BridgeConfig, BridgeResult, observations_from
from bayesbridge.errors import CalendarError, DataFileError, TimeAxisError, VariableNotFoundError
from bayesbridge.regions import get_region

__all__ = ["read_observations", "reconstruct", "Reconstruction", "default_operational"]


def read_observations(path: str | os.PathLike, *, start: str | None = None, end: str | None = None) -> xr.Dataset:
    """Index observations from a CSV (``time`` column: ``YYYY-MM`` or dates) or a netCDF file.

    Parameters
    ----------
    path : path
        ``.csv``/``.txt`` (one column per index plus ``time``) or netCDF (variables on ``time``).
    start, end : str, optional
        First and last month to keep (``YYYY-MM``).

    Returns
    -------
    xarray.Dataset
        Every column/variable of the file on ``time`` (cftime; CSV months are stamped on day 1).
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"observations: file {str(path)!r} does not exist.")
    if path.suffix.lower() in (".csv", ".txt"):
        try:
            frame = pd.read_csv(path)
        except Exception as exc:
            raise DataFileError(f"observations: cannot read {str(path)!r} as CSV ({exc}).") from exc
        if "time" not in frame.columns:
            raise TimeAxisError(
                f"observations: {path.name} has no 'time' column (columns: {', '.join(frame.columns)}); "
                f"add one with values like 1950-01."
            )
        try:
            stamps = pd.to_datetime(frame.pop("time").astype(str), format="mixed")
        except (ValueError, TypeError) as exc:
            raise TimeAxisError(f"observations: cannot parse the time column of {path.name} ({exc}).") from exc
        times = np.array([cftime.DatetimeProlepticGregorian(t.year, t.month, 1) for t in stamps])
        ds = xr.Dataset({c: ("time", frame[c].to_numpy(dtype=float)) for c in frame.columns}, coords={"time": times})
    else:
        from bayesbridge.io import open_dataset

        ds = open_dataset(path).load()
        ds.close()
    if start is not None or end is not None:
        ds = ds.sel(time=slice(start, end))
        if ds.sizes.get("time", 0) == 0:
            raise TimeAxisError(f"start, end: no observation between {start} and {end} in {path.name}.")
    return ds


def default_operational(years: int = 200, seed: int = 0) -> xr.Dataset:
    """The bundled synthetic operational model (twin experiment, ``docs/design.md`` section 6), as anomalies.

    Parameters
    ----------
    years, seed : int
        Length and seed of the twin experiment it is taken from (cached after the first call).

    Returns
    -------
    xarray.Dataset
        ``tos`` and ``zos`` anomalies on ``(time, lat, lon)`` (:func:`bayesbridge.io.open_operational`,
        cached with the twin: :meth:`~bayesbridge.datasets.TwinExperiment.anomalies`).
    """
    from bayesbridge.datasets import make_twin_experiment

    return make_twin_experiment(years=years, seed=seed).anomalies("operational")


def _check_calendar(obs: xr.Dataset, operational: xr.Dataset) -> None:
    """Every observation date must exist in the operational model's calendar.

    Monthly files of a 360-day model stamped on day 30 have dates (30 February) that a
    ``noleap`` or Gregorian model cannot represent: say so instead of shifting them silently.
    """
    cal = getattr(operational["time"].values[0], "calendar", None) or "proleptic_gregorian"
    t = obs["time"]
    for y, m, d in zip(t.dt.year.values, t.dt.month.values, t.dt.day.values, strict=True):
        try:
            cftime.datetime(int(y), int(m), int(d), calendar=cal)
        except ValueError as exc:
            raise CalendarError(
                f"observations: the date {int(y):04d}-{int(m):02d}-{int(d):02d} does not exist in the "
                f"operational model's {cal!r} calendar; re-stamp monthly values on the first or "
                f"15th of each month."
            ) from exc


@dataclass
class Reconstruction:
    """A reanalysis: the bridge output plus validation against withheld indices.

    Attributes
    ----------
    bridge_result : BridgeResult
    assimilated : tuple of str
    withheld : tuple of str
        Known indices present in the observations but not assimilated.
    validation : pandas.DataFrame
        Per index: correlation of the posterior mean with the observations and 90 % coverage.
    """

    bridge_result: BridgeResult
    assimilated: tuple[str, ...]
    withheld: tuple[str, ...]
    validation: pd.DataFrame


def reconstruct(
    observations: xr.Dataset,
    variables: Sequence[str],
    *,
    operational: xr.Dataset | None = None,
    config: BridgeConfig | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Assimilate ``variables`` of ``observations`` into the operational model's latent space.

    Parameters
    ----------
    observations : xarray.Dataset
        Monthly indices on ``time`` (see :func:`read_observations`).
    variables : sequence of str
        Indices to assimilate (from :data:`bayesbridge.bridge.OBSERVABLES`).
    operational : xarray.Dataset, optional
        Operational anomalies on ``(time, lat, lon)`` (:func:`bayesbridge.io.open_operational`);
        default :func:`default_operational`.
    config : BridgeConfig, optional
        Default: EOF codec, seasonal linear dynamics, ensemble Kalman smoother.
    seed : int
        Seed of codec fitting, the engine and the representation noise.

    Returns
    -------
    Reconstruction
    """
    obs = observations_from(observations, list(variables))  # validates names, time axis
    operational = default_operational() if operational is None else operational
    for name in variables:
        needed = get_region(name).variable
        if needed not in operational.data_vars:
            raise VariableNotFoundError(
                f"operational: observing {name!r} needs the variable {needed!r}, but the operational "
                f"files only provide {', '.join(map(str, operational.data_vars))}; add the {needed} files "
                f"or drop {name} from --vars."
            )
    _check_calendar(obs, operational)
    bridge = Bridge(config or BridgeConfig()).fit(operational, seed=seed)
    withheld = tuple(v for v in OBSERVABLES if v in observations.data_vars and v not in variables
                     and v in bridge.observables)
    extra = observations[list(withheld)].sel(time=obs["time"]) if withheld else None
    res = bridge.assimilate(obs, seed=seed, withheld=extra)
    summary = res.posterior.summary()
    rows = {}
    for name in (*variables, *withheld):
        y = observations[name].sel(time=obs["time"]).values.astype(float)
        mean, lo, hi = (summary[f"{name}_{s}"].values for s in ("mean", "q05", "q95"))
        ok = np.isfinite(y)
        rows[name] = {
            "assimilated": name in variables,
            "months": int(ok.sum()),
            "correlation": float(np.corrcoef(mean[ok], y[ok])[0, 1]) if ok.sum() > 2 else np.nan,
            "coverage90": float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else np.nan,
        }
    validation = pd.DataFrame.from_dict(rows, orient="index")
    validation.index.name = "index"
    return Reconstruction(res, tuple(variables), withheld, validation)
