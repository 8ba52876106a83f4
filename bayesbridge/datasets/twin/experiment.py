"""The twin experiment: truth, operational model and idealized observations, saved and cached.

:func:`make_twin_experiment` is bayesbridge's default data set (``docs/design.md`` section 6):
one idealized-model run drives the truth (:func:`~bayesbridge.datasets.twin.synthesis.synthetic_truth`)
and is assimilated, the operational model
(:func:`~bayesbridge.datasets.twin.synthesis.operational_model`) reproduces its statistics
with known biases. :func:`twin_from_drivers` builds the same from given runs;
:class:`TwinExperiment` holds the parts and saves/loads them, and experiments are cached under
:func:`default_cache_dir`, keyed by
:data:`~bayesbridge.datasets.twin.synthesis.GENERATOR_VERSION`, years, seed and start year.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from bayesbridge.datasets.twin.cmip import atomic_to_netcdf
from bayesbridge.datasets.twin.drivers import OBSERVED_VARIABLES, driver_arrays, index_dataset
from bayesbridge.datasets.twin.grid import time_axis
from bayesbridge.datasets.twin.oscillator import OscillatorTarget
from bayesbridge.datasets.twin.synthesis import (
    BIASES,
    GENERATOR_VERSION,
    STREAMS,
    THERMOCLINE_PER_ZOS,
    operational_model,
    synthetic_truth,
)
from bayesbridge.errors import DataFileError, InputValueError, check_int
from bayesbridge.io import atomic_path, check_output_dir

__all__ = ["TwinExperiment", "twin_from_drivers", "default_cache_dir", "make_twin_experiment", "independent_idealized_run"]


@dataclass
class TwinExperiment:
    """A twin experiment with known truth (``docs/design.md`` section 6).

    Attributes
    ----------
    truth : xarray.Dataset
        True ``tos`` (degC), ``zos`` (m) on ``(time, lat, lon)``, float32, NaN over land.
    operational : xarray.Dataset
        Biased operational model on the same grid and times (its biases in ``attrs``).
    idealized_observations : xarray.Dataset
        The idealized-model run to assimilate, on ``time``: ``nino3``, ``nino4`` (degC), ``h_w``
        (m of thermocline) (:data:`OBSERVED_VARIABLES`), plus its other outputs. In the default
        experiment this is the run that drives the truth (its sparse output), so posterior
        series can be scored against the truth month by month; it is independent of the
        operational model.
    truth_driver : xarray.Dataset
        The idealized run that drives the truth (on ``time``): the truth's exact indices.
    operational_driver : xarray.Dataset
        The operational model's oscillator indices ``nino3``, ``nino4``, ``h_w`` on ``time``.
    metadata : dict
        Seed, years, generator version, oscillator target and the documented biases.
    cache : pathlib.Path, optional
        The cache folder it was saved to or loaded from (where :meth:`anomalies` keeps the
        anomaly fields); ``None`` for an experiment held in memory only.
    """

    truth: xr.Dataset
    operational: xr.Dataset
    idealized_observations: xr.Dataset
    truth_driver: xr.Dataset
    operational_driver: xr.Dataset
    metadata: dict = field(default_factory=dict)
    cache: Path | None = field(default=None, repr=False)

    _PARTS = ("truth", "operational", "idealized_observations", "truth_driver", "operational_driver")
    _FIELDS = ("truth", "operational")

    def anomalies(self, role: str) -> xr.Dataset:
        """Anomaly fields of ``role`` (``"truth"`` or ``"operational"``), as the CF reader gives them.

        :func:`bayesbridge.io.open_operational` of the part (whole grid), computed once and kept
        in the cache folder as ``<role>_anomalies.nc`` (the layout the reader produces: float32
        on ``(time, lat, lon)`` with the ``area`` and ``mask`` coordinates), so a cached
        experiment is read without taking anomalies again.

        Parameters
        ----------
        role : {"truth", "operational"}
            Which fields.

        Returns
        -------
        xarray.Dataset
            In memory.
        """
        from bayesbridge.errors import check_choice
        from bayesbridge.io import open_operational, write_netcdf

        check_choice(role, "role", self._FIELDS, InputValueError)
        stored = self.cache / f"{role}_anomalies.nc" if self.cache is not None else None
        if stored is not None and stored.exists():
            with xr.open_dataset(stored) as ds:
                return ds.load()
        out = open_operational(getattr(self, role), region=None)
        if stored is not None:
            try:
                write_netcdf(out, stored)
            except OSError:  # a read-only cache: anomalies are recomputed next time
                pass
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write every part as ``<part>.nc`` plus ``metadata.json`` (written last, atomically).

        Parameters
        ----------
        directory : str or os.PathLike
            Output folder, created if missing; existing files of the same names are replaced.

        Returns
        -------
        pathlib.Path
            The folder written, readable with :meth:`load`.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for part in self._PARTS:
            atomic_to_netcdf(getattr(self, part), out / f"{part}.nc")
        with atomic_path(out / "metadata.json") as tmp:
            tmp.write_text(json.dumps(self.metadata, indent=1, sort_keys=True))
        self.cache = out
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TwinExperiment:
        """Read a directory written by :meth:`save`.

        The index series are read into memory; the fields (``truth``, ``operational``) are
        opened lazily and read on first use, since a cached experiment is usually read through
        :meth:`anomalies`. Raises :class:`~bayesbridge.errors.DataFileError` naming the file when
        a part is missing or unreadable (a truncated or corrupted cache): delete the folder to
        rebuild it.
        """
        src = Path(directory)
        if not (src / "metadata.json").exists():
            raise FileNotFoundError(f"directory: no complete twin experiment in {src} (metadata.json missing).")
        parts = {}
        for part in cls._PARTS:
            file = src / f"{part}.nc"
            try:
                ds = xr.open_dataset(file)
                if part not in cls._FIELDS:
                    with ds:
                        ds = ds.load()
                parts[part] = ds
            except Exception as exc:  # netCDF4/h5py raise many types for damaged files
                raise DataFileError(
                    f"directory: the twin experiment file {str(file)!r} is missing or unreadable "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); delete {str(src)!r} to "
                    f"rebuild it."
                ) from exc
        try:
            metadata = json.loads((src / "metadata.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataFileError(f"directory: {str(src / 'metadata.json')!r} is unreadable ({exc}); delete "
                                f"{str(src)!r} to rebuild it.") from exc
        return cls(**parts, metadata=metadata, cache=src)


def twin_from_drivers(truth_driver: xr.Dataset, observation_driver: xr.Dataset, seed: int, *,
                      start_year: int = 1850) -> TwinExperiment:
    """Build a twin experiment from two given index runs (no simulation, no cache).

    Parameters
    ----------
    truth_driver, observation_driver : xarray.Dataset
        Independent runs with ``nino3``, ``nino4``, ``h_w`` on ``time`` (same length, first
        month January). The first drives the truth, the second is what gets assimilated.
    seed : int
        Seed of the truth's noise and of the operational model.
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    TwinExperiment
    """
    seed = check_int(seed, "seed", minimum=0)
    tdrv, odrv = driver_arrays(truth_driver, "truth_driver"), driver_arrays(observation_driver, "observation_driver")
    n = tdrv["nino3"].size
    if odrv["nino3"].size != n:
        raise InputValueError(f"observation_driver: expected {n} months like truth_driver, got {odrv['nino3'].size}.")
    time, _ = time_axis(n, start_year)
    tds = index_dataset(tdrv, time, {"bayesbridge_role": "truth driver (idealized model)"})
    target = OscillatorTarget.from_driver(tds)
    truth = synthetic_truth(tds, seed, start_year=start_year)
    operational, op_idx = operational_model(n, seed, target, start_year)
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "months": n, "start_year": start_year,
            "target": {k: (v if isinstance(v, bool) else [float(b) for b in v] if isinstance(v, tuple) else float(v))
                       for k, v in vars(target).items()},
            "biases": dict(BIASES), "thermocline_per_zos": THERMOCLINE_PER_ZOS,
            "observed_variables": list(OBSERVED_VARIABLES)}
    return TwinExperiment(
        truth=truth, operational=operational,
        idealized_observations=index_dataset(odrv, time, {"bayesbridge_role": "idealized observations"}),
        truth_driver=tds,
        operational_driver=index_dataset(op_idx, time, {"bayesbridge_role": "operational oscillator"}),
        metadata=meta)


def default_cache_dir() -> Path:
    """The folder that caches twin experiments when no ``cache_dir`` is given.

    ``$BAYESBRIDGE_CACHE_DIR`` when set (the test suite points it at ``tests/.cache``), else
    ``$XDG_CACHE_HOME/bayesbridge``, else ``~/.cache/bayesbridge``.

    Returns
    -------
    pathlib.Path
        The folder (not created here).
    """
    env = os.environ.get("BAYESBRIDGE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bayesbridge"


def make_twin_experiment(years: int = 200, seed: int = 0, *, cache_dir: str | os.PathLike | None = None,
                         use_cache: bool = True, start_year: int = 1850) -> TwinExperiment:
    """The default twin experiment: one idealized run drives the truth and is assimilated.

    The run is ``MultiscaleENSO().simulate(years, members=1, seed=s)`` with ``s`` drawn from
    stream 1 of ``SeedSequence([seed, stream])``; its indices ``nino3``, ``nino4``, ``h_w`` are
    the sparse observations, and the truth fields it drives (with their own patterns, nonlinear
    term and noise, never seen by the bridge) are what the bridged fields are scored against.
    The operational model is independent of it. Results
    are cached under ``cache_dir`` (default ``$BAYESBRIDGE_CACHE_DIR`` or
    ``~/.cache/bayesbridge``) in ``twin-v<version>-y<years>-s<seed>-start<year>/``; the cache is
    read only when complete (``metadata.json`` is written last) and each file is written
    atomically.

    Parameters
    ----------
    years, seed : int
        Length in years (>= 2) and master seed (>= 0).
    cache_dir : path, optional
        Cache folder.
    use_cache : bool
        Read and write the cache (default True).
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    TwinExperiment
    """
    years = check_int(years, "years", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    start_year = check_int(start_year, "start_year", minimum=1)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"twin-v{GENERATOR_VERSION}-y{years}-s{seed}-start{start_year}"
    if use_cache and (path / "metadata.json").exists():
        try:
            return TwinExperiment.load(path)
        except DataFileError as exc:
            # a damaged cache (interrupted copy, full disk, bit rot): rebuild it rather than fail
            warnings.warn(f"rebuilding the cached twin experiment: {exc}", stacklevel=2)
            (path / "metadata.json").unlink(missing_ok=True)
    if use_cache:  # before minutes of simulation: can the cache be written at all?
        check_output_dir(path, "cache_dir (BAYESBRIDGE_CACHE_DIR)")
    driver = _idealized_run(seed, "truth_driver", years)
    twin = twin_from_drivers(driver, driver, seed, start_year=start_year)
    twin.metadata["idealized_model"] = "bayesbridge.idealized.MultiscaleENSO() defaults"
    if use_cache:
        try:
            twin.save(path)
        except OSError as exc:
            raise DataFileError(
                f"cache_dir: cannot write the twin experiment cache {str(path)!r} ({exc.strerror or exc}); "
                f"set BAYESBRIDGE_CACHE_DIR to a writable folder, or pass use_cache=False."
            ) from exc
    return twin


def _stream_seed(seed: int, stream: str) -> int:
    """The seed of one random component: ``SeedSequence([seed, STREAMS[stream]])``'s first word."""
    return int(np.random.SeedSequence([seed, STREAMS[stream]]).generate_state(1)[0])


def _idealized_run(seed: int, stream: str, years: int) -> xr.Dataset:
    """One member of ``MultiscaleENSO().simulate`` over ``years``, seeded by ``stream``."""
    from bayesbridge.idealized import MultiscaleENSO

    return MultiscaleENSO().simulate(years=years, members=1, seed=_stream_seed(seed, stream)).isel(member=0, drop=True)


def independent_idealized_run(twin: TwinExperiment, seed: int) -> xr.Dataset:
    """An idealized run independent of the truth, on the twin's months: the statistical twin.

    ``MultiscaleENSO().simulate`` as in :func:`make_twin_experiment`, with its seed drawn from
    stream ``STREAMS["statistical_driver"]`` of ``SeedSequence([seed, stream])`` instead of the
    truth's: the same model and length, an unrelated trajectory. Only statistics (index
    statistics, std and skewness maps) can be scored against the truth with it, not month by
    month agreement.

    Parameters
    ----------
    twin : TwinExperiment
        Gives the months (``truth_driver``'s time axis).
    seed : int
        Master seed (>= 0).

    Returns
    -------
    xarray.Dataset
        Every output of the run on the twin's ``time`` (``nino3``, ``nino4``, ``h_w``, ...).
    """
    seed = check_int(seed, "seed", minimum=0)
    time = twin.truth_driver["time"].values
    years = -(-time.size // 12)
    run = _idealized_run(seed, "statistical_driver", years)
    arrays = {k: v[: time.size] for k, v in driver_arrays(run, "run").items()}
    return index_dataset(arrays, time, {"bayesbridge_role": "idealized observations (independent of the truth)"})


RECORD_YEARS = 100
"""Length (years) of the twin world's historical record (:func:`historical_record`)."""


def historical_record(twin: TwinExperiment, seed: int, years: int = RECORD_YEARS) -> xr.Dataset:
    """The twin world's observed record: the truth generator on an independent run, before the twin.

    What a gridded observational record is to the real bridge (the data a regression of
    equatorial SST on the Nino indices is fitted to), this is to the twin: the truth's generator
    (:func:`~bayesbridge.datasets.twin.synthetic_truth`: its patterns, nonlinear term and noise
    amplitudes) driven by an idealized run independent of the truth's (stream
    ``STREAMS["record_driver"]``) with independent noise (``STREAMS["record_noise"]``), on the
    ``years`` before the twin's first year. It shares no random number with the truth the
    bridge is scored against.

    Parameters
    ----------
    twin : TwinExperiment
        Gives the first year (``metadata["start_year"]``).
    seed : int
        Master seed (>= 0).
    years : int
        Length of the record (>= 10; default :data:`RECORD_YEARS`).

    Returns
    -------
    xarray.Dataset
        Anomalies ``tos``, ``zos`` on ``(time, lat, lon)`` as :func:`bayesbridge.io.open_operational`
        gives them.
    """
    from bayesbridge.io import open_operational

    seed = check_int(seed, "seed", minimum=0)
    years = check_int(years, "years", minimum=10)
    start = int(twin.metadata.get("start_year", 1850)) - years
    if start < 1:
        raise InputValueError(f"years: the record of {years} years would start before year 1 "
                              f"(the twin starts in {start + years}); choose fewer years.")
    run = _idealized_run(seed, "record_driver", years)
    time, _ = time_axis(years * 12, start)
    driver = index_dataset(driver_arrays(run, "run"), time, {"bayesbridge_role": "historical record driver"})
    fields = synthetic_truth(driver, _stream_seed(seed, "record_noise"), start_year=start)
    return open_operational(fields, region=None)

