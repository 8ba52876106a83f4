"""Reanalysis mode: reconstruct historical fields from a few observed index series.

:func:`read_observations` reads a user's index file (CSV with a ``time`` column, or netCDF) and
:func:`reconstruct` runs the bridge on it: the operational model (user CMIP6 files, or the
bundled synthetic operational model) provides the latent space and dynamics, the chosen indices
are assimilated with a smoother, and any other known index present in the file is kept as a
withheld validation series. This is what ``bayesbridge assimilate`` runs.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.apps.structural import structural_error as estimate_structural_error
from bayesbridge.bridge import OBSERVABLES, Bridge, BridgeConfig, BridgeResult, observations_from
from bayesbridge.bridge.observations import screen_observations
from bayesbridge.bridge.structural import PREDICTORS
from bayesbridge.dims import RUN_DIMS
from bayesbridge.errors import (
    AllMissingError,
    CalendarError,
    DataFileError,
    GridCoverageError,
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    TimeAxisError,
    VariableNotFoundError,
    check_int,
)
from bayesbridge.regions import get_region, grid_extent

__all__ = ["read_observations", "reconstruct", "Reconstruction", "default_operational", "check_operational",
           "parse_month", "reconstruction_memory"]


_MONTH = re.compile(r"^\s*(\d{1,4})[-/](\d{1,2})(?:[-/](\d{1,2}))?(?:[T ][0-9:.+\-Z]*)?\s*$")
_NA_TEXT = {"", "nan", "na", "n/a", "null", "none", "-"}


def parse_month(text: str, name: str = "month") -> tuple[int, int]:
    """``(year, month)`` of a ``YYYY-MM`` string (``YYYY-MM-DD`` and unpadded years accepted).

    Parameters
    ----------
    text : str
        E.g. ``"1950-01"``, ``"1950-01-16"``, ``"850-3"``.
    name : str
        Argument name used in the message.

    Returns
    -------
    tuple of int
        Year (>= 1) and month (1..12).

    Raises
    ------
    TimeAxisError
        ``text`` is not a month, or its month or day is out of range.
    """
    match = _MONTH.match(str(text))
    if match is None:
        raise TimeAxisError(f"{name}: {str(text)!r} is not a month; expected YYYY-MM, e.g. 1950-01.")
    year, month = int(match[1]), int(match[2])
    day = int(match[3]) if match[3] else 1
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= 31:
        raise TimeAxisError(
            f"{name}: {str(text)!r} is not a valid month (year >= 1, month 01..12, day 01..31); "
            f"expected YYYY-MM, e.g. 1950-01."
        )
    return year, month


def _read_csv(path: Path) -> xr.Dataset:
    """A CSV of index columns plus ``time``, every cell checked (row numbers count the header as 1)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise DataFileError(f"observations: {path.name} is not a text CSV file ({exc.reason}); give a "
                            f"UTF-8 CSV with a time column, or a netCDF file.") from exc
    except (OSError, csv.Error) as exc:
        raise DataFileError(f"observations: cannot read {path.name} as CSV ({exc}).") from exc
    if not rows:
        raise DataFileError(f"observations: {path.name} is empty; expected a header line such as "
                            f"'time,nino3,nino4' and one row per month.")
    (_, header), body = rows[0], rows[1:]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataFileError(f"observations: {path.name} has the column(s) {', '.join(map(repr, twice))} more than "
                            f"once; keep one column per index.")
    if "time" not in header:
        sep = next((c for c in ";\t|" if c in ",".join(header)), None)
        hint = (f"; the header looks {'tab' if sep == chr(9) else repr(sep)}-separated, but commas are expected"
                if sep else "; add one with values like 1950-01")
        raise TimeAxisError(
            f"observations: {path.name} has no 'time' column (columns: {', '.join(header) or 'none'}){hint}."
        )
    if not body:
        raise DataFileError(f"observations: {path.name} has a header but no data rows; add one row per month.")
    for line, cells in body:
        if len(cells) != len(header):
            raise DataFileError(f"observations: {path.name} row {line} has {len(cells)} fields, but the header has "
                                f"{len(header)} ({', '.join(header)}); give every row one value per column.")
    lines = [line for line, _ in body]
    table = dict(zip(header, zip(*(cells for _, cells in body), strict=True), strict=True))
    times = [_csv_month(text, path.name, line) for line, text in zip(lines, table.pop("time"), strict=True)]
    _check_csv_months(times, lines, path.name)
    columns = {}
    for col, cells in table.items():
        text = pd.Series(cells, dtype=str)
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(values) & ~text.str.lower().isin(_NA_TEXT).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise InputTypeError(
                f"observations: {path.name} row {lines[i]}, column {col!r}: {cells[i]!r} is not a number; "
                f"use numbers, and leave missing months empty (or NaN)."
            )
        columns[col or f"column{header.index(col) + 1}"] = ("time", values)
    stamps = np.array([cftime.DatetimeProlepticGregorian(y, m, 1) for y, m, _ in times])
    return xr.Dataset(columns, coords={"time": stamps})


def _csv_month(text: str, name: str, row: int) -> tuple[int, int, int]:
    where = f"observations: {name} row {row}, column 'time'"
    year, month = parse_month(text, where)
    match = _MONTH.match(str(text))
    return year, month, int(match[3]) if match[3] else 1


def _check_csv_months(times: list[tuple[int, int, int]], lines: list[int], name: str) -> None:
    """Rows of one month told apart: a duplicated row, or daily/weekly data (several days)."""
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for row, (y, m, d) in zip(lines, times, strict=True):
        if (y, m) in seen:
            first_row, first_day = seen[(y, m)]
            if first_day == d:
                raise TimeAxisError(
                    f"observations: {name} rows {first_row} and {row} both hold {y:04d}-{m:02d}; remove "
                    f"the duplicated row (one row per month)."
                )
            raise TimeAxisError(
                f"observations: {name} rows {first_row} and {row} fall in the same month {y:04d}-{m:02d} "
                f"(days {first_day} and {d}); the file looks daily or weekly, but one row per month is "
                f"expected. Average to monthly means first."
            )
        seen[(y, m)] = (row, d)


def _read_netcdf(path: Path, member: int | None) -> xr.Dataset:
    from bayesbridge.io import open_dataset

    try:
        ds = open_dataset(path).load()
    except DataFileError as exc:
        raise DataFileError(
            f"observations: cannot read {path.name}: expected a CSV file (.csv, .txt) with a time "
            f"column, or a netCDF file with index variables on time."
        ) from exc
    ds.close()
    if "time" not in ds.dims:
        raise TimeAxisError(
            f"observations: {path.name} has no time dimension (dimensions: {', '.join(map(str, ds.dims)) or 'none'}); "
            f"index variables must be on time."
        )
    for dim in [d for d in ds.dims if d in RUN_DIMS]:
        n = ds.sizes[dim]
        if member is not None:
            if not 0 <= member < n:
                raise InputValueError(f"member: {path.name} has {n} {dim}s (0..{n - 1}); got member={member}.")
            ds = ds.isel({dim: member}, drop=True)
        elif n == 1:
            ds = ds.isel({dim: 0}, drop=True)
        else:
            raise ShapeMismatchError(
                f"observations: {path.name} holds {n} {dim}s of each index; choose one with member=K "
                f"(--member K on the command line), K in 0..{n - 1}."
            )
    return ds


def read_observations(path: str | os.PathLike, *, start: str | None = None, end: str | None = None,
                      member: int | None = None) -> xr.Dataset:
    """Index observations from a CSV (``time`` column: ``YYYY-MM`` or dates) or a netCDF file.

    Every cell is checked as it is read: a message names the row and column of a time that is
    not a month or of a value that is not a number (empty cells and ``NaN`` are missing values).
    Known indices are screened for physically implausible values
    (:func:`bayesbridge.bridge.observations.screen_observations`).

    Parameters
    ----------
    path : path
        ``.csv``/``.txt`` (one column per index plus ``time``) or netCDF (variables on ``time``,
        optionally on ``(member, time)``).
    start, end : str, optional
        First and last month to keep (``YYYY-MM``).
    member : int, optional
        Which member of a netCDF file with a ``member`` (or ``run``, ``draw``) dimension to read;
        a file with one member needs none.

    Returns
    -------
    xarray.Dataset
        Every column/variable of the file on ``time`` (cftime; CSV months are stamped on day 1).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataFileError(f"observations: file {str(path)!r} does not exist.")
    if path.is_dir():
        raise DataFileError(f"observations: {str(path)!r} is a folder; pass the index file (CSV or netCDF) in it.")
    first = parse_month(start, "start") if start is not None else None
    last = parse_month(end, "end") if end is not None else None
    if first is not None and last is not None and first > last:
        raise TimeAxisError(f"start, end: start {start} comes after end {end}; swap them.")
    if member is not None:
        member = check_int(member, "member", minimum=0)
    if path.suffix.lower() in (".csv", ".txt"):
        if member is not None:
            raise InputValueError(f"member: {path.name} is a CSV file, which holds one series per index; drop member.")
        ds = _read_csv(path)
    else:
        ds = _read_netcdf(path, member)
    if first is not None or last is not None:
        ds = _select_months(ds, first, last, start, end, path.name)
    screen_observations(ds, require_values=False)
    return ds


def _select_months(ds: xr.Dataset, first, last, start, end, name: str) -> xr.Dataset:
    try:
        key = ds["time"].dt.year.values * 12 + ds["time"].dt.month.values - 1
    except (AttributeError, TypeError) as exc:
        raise TimeAxisError(f"observations: the time coordinate of {name} holds {ds['time'].dtype} values, "
                            f"not dates.") from exc
    keep = np.ones(key.shape, dtype=bool)
    if first is not None:
        keep &= key >= first[0] * 12 + first[1] - 1
    if last is not None:
        keep &= key <= last[0] * 12 + last[1] - 1
    if not keep.any():
        span = (f"from {start} to {end}" if first and last else f"from {start} on" if first else f"up to {end}")
        cover = (f"{int(key.min()) // 12:04d}-{int(key.min()) % 12 + 1:02d} to "
                 f"{int(key.max()) // 12:04d}-{int(key.max()) % 12 + 1:02d}") if key.size else "no month"
        raise TimeAxisError(f"start, end: no observation {span} in {name}, which covers {cover}; choose "
                            f"months inside it.")
    return ds.isel(time=np.flatnonzero(keep))


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


def check_operational(operational: xr.Dataset, variables: Sequence[str], *, latent_dim: int = 20,
                      seasonal: bool = True, observations: xr.Dataset | None = None) -> None:
    """Check, before fitting, that ``operational`` can observe ``variables`` with a latent size ``latent_dim``.

    Works on raw fields or anomalies, lazily opened or loaded (it reads one time step): every
    index needs its variable (``tos`` for the Nino boxes, ``zos`` for ``h_w``) on a grid that
    covers its box with ocean points; ``latent_dim`` must stay below the rank bound of the
    training data (time steps and ocean points) and, for seasonal dynamics, leave every calendar
    month at least ``latent_dim + 2`` transitions; every date of ``observations`` must exist in
    the operational calendar.

    Parameters
    ----------
    operational : xarray.Dataset
        Fields on ``(time, lat, lon)``.
    variables : sequence of str
        Indices to observe.
    latent_dim : int
        Latent size of the codec.
    seasonal : bool
        Whether the latent dynamics are fitted per calendar month.
    observations : xarray.Dataset, optional
        The index series to assimilate (their dates are checked against the calendar).

    Raises
    ------
    VariableNotFoundError, GridCoverageError, ParameterError, CalendarError
    """
    from bayesbridge.regions import observable

    for name in variables:
        if name == "eq_sst":  # the equatorial profile reads tos along the equator
            _check_profile_grid(operational)
            continue
        region = get_region(name)
        needed = region.variable
        if needed not in operational.data_vars:
            raise VariableNotFoundError(
                f"operational: observing {name!r} needs the variable {needed!r}, but the operational "
                f"files only provide {', '.join(map(str, operational.data_vars)) or 'no variables'}; add the "
                f"{needed} files or drop {name} from --vars."
            )
        try:
            observable(operational[needed].isel(time=0).load(), region)
        except (GridCoverageError, AllMissingError) as exc:
            raise GridCoverageError(
                f"operational: the grid ({grid_extent(operational)}) has no ocean point of the {name} box "
                f"({region.lat_min:g}..{region.lat_max:g}N, {region.lon_min:g}..{region.lon_max:g}E), so {name} "
                f"cannot be observed; give fields that cover the tropical Pacific, or drop {name} from --vars."
            ) from exc
    if observations is not None:
        _check_calendar(observations, operational)
    n_time = int(operational.sizes["time"])
    first = operational[list(operational.data_vars)].isel(time=0)
    n_points = int(sum(int(first[v].notnull().sum()) for v in first.data_vars))
    bound = min(n_time - 2, n_points)
    if latent_dim > bound:
        raise ParameterError(
            f"latent_dim: {latent_dim} exceeds what the operational record supports ({n_time} months, "
            f"{n_points} ocean points: at most {bound}); use --latent-dim {max(bound, 1)} or less."
        )
    if seasonal:
        months = np.asarray(operational["time"].dt.month.values)[1:]  # month each transition ends in
        fewest = min(int((months == m).sum()) for m in range(1, 13)) if months.size else 0
        if fewest < latent_dim + 2:
            fits = fewest - 2
            fix = f"use --latent-dim {fits} or less, or" if fits >= 1 else "use"
            raise ParameterError(
                f"latent_dim: the seasonal latent dynamics need latent_dim + 2 = {latent_dim + 2} transitions per "
                f"calendar month, but the operational record ({n_time} months) has {fewest}; {fix} a "
                f"longer operational record."
            )


def reconstruction_memory(n_months: int, members: int, latent_dim: int, operational: xr.Dataset) -> int:
    """Rough peak memory in bytes of :func:`reconstruct` and of writing its outputs.

    The sum of the engine's ensembles and draws (``8 * 6 * T * N * d``), the index draws of the
    five boxes (``8 * 3 * 5 * T * N``), the decoded field summaries (``4 * 10 * T * n_lat * n_lon``
    per variable), the codec fit (``8 * 6 * T_op * n_points``) and a 300 MB base; good to a factor
    of about two, which is what a check before the work needs.

    Parameters
    ----------
    n_months : int
        Months ``T`` of the observations.
    members : int
        Ensemble members ``N``.
    latent_dim : int
        Latent size ``d``.
    operational : xarray.Dataset
        Operational fields on ``(time, lat, lon)`` (only their sizes are read).

    Returns
    -------
    int
        Bytes.
    """
    T, N, d = int(n_months), int(members), int(latent_dim)
    n_vars = max(1, len(operational.data_vars))
    grid = int(operational.sizes.get("lat", 1)) * int(operational.sizes.get("lon", 1))
    t_op = int(operational.sizes.get("time", 1))
    total = 8 * 6 * T * N * d + 8 * 3 * 5 * T * N + 4 * 10 * T * grid * n_vars
    total += 8 * 6 * t_op * grid * n_vars + 300 * 2**20
    return int(total)


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
    structural : StructuralError or None
        The structural-error terms given to the unobserved boxes
        (:func:`bayesbridge.apps.structural.structural_error`), ``None`` when switched off.
    """

    bridge_result: BridgeResult
    assimilated: tuple[str, ...]
    withheld: tuple[str, ...]
    validation: pd.DataFrame
    structural: object = None


def _check_profile_grid(operational: xr.Dataset) -> None:
    from bayesbridge.idealized.eq_sst import eq_sst_longitudes

    if "tos" not in operational.data_vars:
        raise VariableNotFoundError(
            f"operational: observing 'eq_sst' needs the variable 'tos', but the operational files only provide "
            f"{', '.join(map(str, operational.data_vars)) or 'no variables'}; add the tos files or drop eq_sst."
        )
    lon = np.mod(np.asarray(operational["lon"].values, dtype=float), 360.0)
    eq_sst_longitudes(float(lon.min()), float(lon.max()))


def reconstruct(
    observations: xr.Dataset,
    variables: Sequence[str],
    *,
    operational: xr.Dataset | None = None,
    config: BridgeConfig | None = None,
    seed: int = 0,
    structural_error: bool = True,
) -> Reconstruction:
    """Assimilate ``variables`` of ``observations`` into the operational model's latent space.

    Parameters
    ----------
    observations : xarray.Dataset
        Monthly indices on ``time`` (see :func:`read_observations`).
    variables : sequence of str
        Indices to assimilate (from :data:`bayesbridge.bridge.OBSERVABLES`), and ``eq_sst``: the
        equatorial SST profile of the file, or derived from its ``nino3``/``nino4`` through the
        regression (:func:`bayesbridge.idealized.eq_sst.profile_observation`), with the regression
        residual in its error.
    operational : xarray.Dataset, optional
        Operational anomalies on ``(time, lat, lon)`` (:func:`bayesbridge.io.open_operational`);
        default :func:`default_operational`.
    config : BridgeConfig, optional
        Default: EOF codec, seasonal linear dynamics, ensemble Kalman smoother.
    seed : int
        Seed of codec fitting, the engine and the representation noise.
    structural_error : bool
        Give the boxes that are not assimilated the structural error of the operational patterns
        (:mod:`bayesbridge.apps.structural`: how the observed relation of each box to Niño 3 and
        Niño 4 differs from the operational model's; needs both assimilated).

    Returns
    -------
    Reconstruction
    """
    from bayesbridge.idealized.eq_sst import EQ_SST, profile_observation

    observations = _one_member(observations)
    boxes = [v for v in variables if v != EQ_SST]
    obs = observations_from(observations, boxes)  # validates names, time axis, values
    operational = default_operational() if operational is None else operational
    cfg = config or BridgeConfig()
    check_operational(operational, variables, latent_dim=cfg.latent_dim, seasonal=cfg.dynamics == "seasonal",
                      observations=obs)
    operators = []
    if EQ_SST in variables:  # the profile of the file, or derived from its nino3/nino4 by the regression
        prof = profile_observation(observations.sel(time=obs["time"]), operational["lon"].values, assimilated=boxes,
                                   fields=operational)
        obs, operators = obs.assign({EQ_SST: prof.observations[EQ_SST]}), [prof.operator]
    bridge = Bridge(cfg).fit(operational, seed=seed)
    # withheld: the other known indices of the file, observed by the grid, with a value in the period
    withheld = tuple(v for v in OBSERVABLES if v in observations.data_vars and v not in variables
                     and v in bridge.observables
                     and bool(np.isfinite(observations[v].sel(time=obs["time"]).values.astype(float)).any()))
    extra = observations[list(withheld)].sel(time=obs["time"]) if withheld else None
    structural = None
    if structural_error and all(p in variables for p in PREDICTORS):
        structural = estimate_structural_error(bridge, [b for b in bridge.observables if b not in variables])
    res = bridge.assimilate(obs, list(variables), seed=seed, withheld=extra, operators=operators,
                            structural_error=structural.terms() if structural is not None else None)
    summary = res.posterior.summary()
    rows = {}
    for name in (*boxes, *withheld):
        y = observations[name].sel(time=obs["time"]).values.astype(float)
        mean, lo, hi = (summary[f"{name}_{s}"].values for s in ("mean", "q05", "q95"))
        ok = np.isfinite(y)
        rows[name] = {
            "assimilated": name in variables,
            "months": int(ok.sum()),
            "correlation": (float(np.corrcoef(mean[ok], y[ok])[0, 1])
                            if ok.sum() > 2 and np.std(y[ok]) > 0 and np.std(mean[ok]) > 0 else np.nan),
            "coverage90": float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else np.nan,
        }
    validation = pd.DataFrame.from_dict(rows, orient="index")
    validation.index.name = "index"
    return Reconstruction(res, tuple(variables), withheld, validation, structural)


def _one_member(observations: xr.Dataset) -> xr.Dataset:
    """``observations`` without a run dimension of size 1 (one idealized member); several are an error."""
    if not isinstance(observations, xr.Dataset):
        return observations
    for dim in [d for d in observations.dims if d in RUN_DIMS]:
        n = observations.sizes[dim]
        if n != 1:
            raise ShapeMismatchError(
                f"observations: {n} {dim}s of each index; reconstruct one series (e.g. "
                f"observations.isel({dim}=0)), or assimilate all runs with Bridge.assimilate."
            )
        observations = observations.isel({dim: 0}, drop=True)
    return observations
