"""The multiscale stochastic conceptual ENSO model as an ensemble simulator.

Chen, N., Fang, X. & Yu, J.-Y. (2022) A multiscale model for El Nino complexity.
npj Clim. Atmos. Sci. 5, 16; parameters of the 2024 J. Climate recalibration
(doi:10.1175/JCLI-D-24-0017.1). Non-dimensional equations (time unit = 2 months, t = 0 is
January):

.. math::

    du/dt   &= -r u - \\delta_u (T_C + T_E)/2 + \\beta_u(I) \\tau + \\sigma_u \\dot W_u \\\\
    dh_W/dt &= -r h_W - \\delta_h (T_C + T_E)/2 + \\beta_h(I) \\tau + \\sigma_h \\dot W_h \\\\
    dT_C/dt &= (r_C - c_1(t, T_C)) T_C + \\zeta_C T_E + \\gamma_C h_W + \\sigma(I) u + C_u
               + \\beta_C(I) \\tau + \\sigma_C \\dot W_C \\\\
    dT_E/dt &= (r_E - c_2(t)) T_E - \\zeta_E T_C + \\gamma_E h_W + \\beta_E(I) \\tau
               + \\sigma_E \\dot W_E \\\\
    d\\tau/dt &= -d_\\tau \\tau + \\sigma_\\tau(t, T_C) \\dot W_\\tau \\\\
    dI/dt   &= -\\lambda (I - m) + \\sigma_I(I) \\dot W_I

Monthly values are means over each 0.5 time-unit window, re-centred on the run's own monthly
climatology (pooled over members and years) and scaled to physical units
(T x 7.5 degC, h_W x 150 m, u x 1.5 m/s, tau x 5 m/s). ``walker_i`` is I itself (not re-centred).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cftime
import numpy as np
import xarray as xr
from numba.typed import List

from bayesbridge.errors import InputTypeError, ParameterError, ResourceLimitError, check_int
from bayesbridge.idealized.kernel import integrate_ensemble, seasonal_table
from bayesbridge.idealized.params import SCALES, ENSOParameters

__all__ = ["MultiscaleENSO", "RawSimulation", "DT_MAX", "VARIABLES", "member_generators"]

DT_MAX: float = 0.025
"""Largest accepted time step (time units, 0.025 = 1.5 days). Beyond it the cubic damping
c_1(T_C) T_C and the Milstein step of I stop resolving the fast dynamics."""

STEPS_PER_MONTH_UNIT: float = 0.5  # one month in model time units
MONTHS_PER_YEAR = 12
DAYS_PER_YEAR = 365

# output name, state index, scale key, long_name, units, re-centred
VARIABLES: tuple[tuple[str, int, str, str, str, bool], ...] = (
    ("nino3", 3, "T_E", "Nino 3 (eastern Pacific) SST anomaly T_E", "degC", True),
    ("nino4", 2, "T_C", "Nino 4 (central Pacific) SST anomaly T_C", "degC", True),
    ("h_w", 1, "h_W", "western Pacific thermocline depth anomaly h_W", "m", True),
    ("u", 0, "u", "central Pacific zonal ocean current anomaly u", "m s-1", True),
    ("tau", 4, "tau", "western Pacific zonal wind-burst anomaly tau", "m s-1", True),
    ("walker_i", 5, "I", "Walker circulation strength index I (uniform on [0, 4])", "1", False),
)
_STANDARD_NAMES = {"nino3": "sea_surface_temperature_anomaly", "nino4": "sea_surface_temperature_anomaly"}


def member_generators(seed: int | np.random.SeedSequence, members: int) -> List:
    """One independent ``numpy.random.Generator`` (PCG64) per member from ``SeedSequence.spawn``.

    Member ``k`` gets the same stream whatever ``members`` is, so a larger ensemble extends a
    smaller one (common random numbers across parameter values).

    Parameters
    ----------
    seed : int or numpy.random.SeedSequence
        Root seed; member ``k``'s stream is ``SeedSequence(seed).spawn(members)[k]``.
    members : int
        Number of generators.

    Returns
    -------
    numba.typed.List of numpy.random.Generator
        Length ``members``, ready to pass to the compiled kernel.
    """
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    gens = List()
    for child in ss.spawn(members):
        gens.append(np.random.Generator(np.random.PCG64(child)))
    return gens


@dataclass(frozen=True)
class RawSimulation:
    """Non-dimensional bin means before re-centring and scaling.

    ``monthly``: shape ``(member, month, 6)`` in :data:`~bayesbridge.idealized.kernel.STATE_NAMES`
    order; ``daily``: ``(member, day, 6)`` or ``None``; ``final_state``: ``(member, 6)``.
    """

    monthly: np.ndarray
    daily: np.ndarray | None
    final_state: np.ndarray


class MultiscaleENSO:
    """Multiscale stochastic conceptual ENSO model (Chen, Fang & Yu 2022; 2024 parameters).

    Parameters
    ----------
    params : ENSOParameters, optional
        A full parameter set; keyword arguments override its fields.
    **overrides
        Any field of :class:`~bayesbridge.idealized.params.ENSOParameters`, e.g. ``f=0.7``,
        ``variant="sigma_e"``.

    Examples
    --------
    >>> ds = MultiscaleENSO().simulate(years=100, members=10, seed=1)   # doctest: +SKIP
    >>> ds.nino3.dims
    ('member', 'time')
    """

    def __init__(self, params: ENSOParameters | None = None, **overrides: float | str) -> None:
        if params is not None and not isinstance(params, ENSOParameters):
            raise InputTypeError(
                f"params: expected ENSOParameters or None, received {type(params).__name__}."
            )
        base = params or ENSOParameters()
        self.params = base.replace(**overrides) if overrides else base

    def __repr__(self) -> str:
        return f"MultiscaleENSO({self.params!r})"

    # ------------------------------------------------------------------ raw integration
    def integrate(
        self,
        years: int,
        members: int,
        seed: int | np.random.SeedSequence = 0,
        burn_in_years: int = 20,
        dt: float = 0.005,
        daily: bool = False,
        initial_state: np.ndarray | None = None,
    ) -> RawSimulation:
        """Integrate the ensemble; return non-dimensional monthly (and daily) means.

        Initial state: zeros, with I drawn uniformly on [0, 4] from each member's stream, unless
        ``initial_state`` of shape ``(member, 6)`` is given.

        Parameters
        ----------
        years, members : int
            Output length in years (>= 1) and ensemble size (>= 1).
        seed : int or numpy.random.SeedSequence
            Seed of :func:`member_generators` (one independent stream per member).
        burn_in_years : int
            Years integrated and discarded before the output (>= 0).
        dt : float
            Euler-Maruyama step in time units (2 months); must divide one month (0.5 units)
            exactly and be <= :data:`DT_MAX`.
        daily : bool
            Also accumulate daily means (365-day calendar).
        initial_state : ndarray, shape ``(member, 6)``, optional
            Starting state in :data:`~bayesbridge.idealized.kernel.STATE_NAMES` order
            (``u, h_W, T_C, T_E, tau, I``), non-dimensional.

        Returns
        -------
        RawSimulation
            Monthly means ``(member, month, 6)``, daily means ``(member, day, 6)`` or ``None``,
            and the final state ``(member, 6)``, all non-dimensional and not re-centred.

        Raises
        ------
        FilterDivergenceError
            If the integration produced non-finite values.
        """
        years = check_int(years, "years", minimum=1)
        members = check_int(members, "members", minimum=1)
        burn_in_years = check_int(burn_in_years, "burn_in_years", minimum=0)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer | np.random.SeedSequence):
            raise InputTypeError(f"seed: expected an int or SeedSequence, received {type(seed).__name__}.")
        if not isinstance(seed, np.random.SeedSequence) and seed < 0:
            raise ParameterError(f"seed: expected a non-negative integer, received {seed}; use e.g. seed=0.")
        _check_size(years, members, daily)
        dt = float(dt)
        if not (math.isfinite(dt) and 0.0 < dt <= DT_MAX):
            raise ParameterError(
                f"dt: expected 0 < dt <= {DT_MAX} time units (stability bound; one unit is two "
                f"months), received {dt}; use the default dt=0.005."
            )
        steps_per_month = STEPS_PER_MONTH_UNIT / dt
        if abs(steps_per_month - round(steps_per_month)) > 1e-9 * steps_per_month:
            raise ParameterError(
                f"dt: expected a step that divides one month (0.5 time units) exactly, received "
                f"{dt} (0.5/dt = {steps_per_month:.4f}); use e.g. 0.005, 0.01 or 0.0025."
            )
        spm = int(round(steps_per_month))
        spy = spm * MONTHS_PER_YEAR
        gens = member_generators(seed, members)
        if initial_state is None:
            state = np.zeros((members, 6), dtype=np.float64)
            state[:, 5] = [g.uniform(0.0, 4.0) for g in gens]
        else:
            state = np.array(initial_state, dtype=np.float64, copy=True)
            if state.shape != (members, 6):
                from bayesbridge.errors import ShapeMismatchError

                raise ShapeMismatchError(
                    f"initial_state: expected shape (members, 6) = ({members}, 6), received {state.shape}."
                )
        season = seasonal_table(spy, dt, self.params.f)
        # day of year (365-day calendar) of each step's left end
        t_year = np.arange(spy) / spy
        day_of_step = np.minimum((t_year * DAYS_PER_YEAR).astype(np.int64), DAYS_PER_YEAR - 1)
        counts = np.bincount(day_of_step, minlength=DAYS_PER_YEAR).astype(np.float64)
        day_weight = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
        n_bins = years * MONTHS_PER_YEAR
        out = np.zeros((members, n_bins, 6), dtype=np.float64)
        out_daily = np.zeros((members, years * DAYS_PER_YEAR if daily else 0, 6), dtype=np.float64)
        integrate_ensemble(
            gens, self.params.kernel_vector(), state, season, dt, burn_in_years * spy, n_bins,
            spm, day_of_step, day_weight, out, out_daily,
        )  # fmt: skip
        if not np.all(np.isfinite(out)):
            from bayesbridge.errors import FilterDivergenceError

            raise FilterDivergenceError(
                f"MultiscaleENSO.simulate: the integration diverged (non-finite values) with dt={dt} "
                f"and parameters {self.params}; reduce dt or use less extreme parameters."
            )
        return RawSimulation(out, out_daily if daily else None, state)

    # ------------------------------------------------------------------ public entry point
    def simulate(
        self,
        years: int,
        members: int = 1,
        seed: int | np.random.SeedSequence = 0,
        burn_in_years: int = 20,
        dt: float = 0.005,
        daily: bool = False,
        start_year: int = 1,
    ) -> xr.Dataset:
        """Simulate an ensemble and return physical-unit monthly (or daily) anomalies.

        Parameters
        ----------
        years, members : int
            Output length in years (>= 1) and ensemble size (>= 1).
        seed : int or numpy.random.SeedSequence
            Seed; member k's stream is ``SeedSequence(seed).spawn(members)[k]``. Results do not
            depend on the number of numba threads.
        burn_in_years : int
            Years integrated and discarded first (default 20).
        dt : float
            Euler-Maruyama step in time units (2 months); must divide 0.5 and be <= ``DT_MAX``.
        daily : bool
            Also return daily means (365-day calendar) instead of monthly ones: the Dataset then
            has a daily ``time`` axis and values re-centred on the monthly climatology.
        start_year : int
            Calendar year of the first output month.

        Returns
        -------
        xarray.Dataset
            Variables ``nino3``, ``nino4`` (degC), ``h_w`` (m), ``u``, ``tau`` (m s-1) and
            ``walker_i`` on ``(member, time)``; ``time`` is cftime ``noleap`` (first of each
            month, or each day). Attributes carry the parameters, seed and dt.
        """
        start_year = check_int(start_year, "start_year", minimum=1)
        raw = self.integrate(years, members, seed, burn_in_years, dt, daily)
        mon = raw.monthly.reshape(raw.monthly.shape[0], years, MONTHS_PER_YEAR, 6)
        clim = mon.mean(axis=(0, 1))  # (12, 6): the run's own monthly climatology
        if daily:
            month_of_day = _month_of_day_noleap()
            values = raw.daily.reshape(raw.daily.shape[0], years, DAYS_PER_YEAR, 6)
            values = values - clim[month_of_day][None, None]
            values = values.reshape(raw.daily.shape[0], years * DAYS_PER_YEAR, 6)
            times = [
                cftime.DatetimeNoLeap(start_year + y, 1, 1) + _td(d)
                for y in range(years)
                for d in range(DAYS_PER_YEAR)
            ]
            raw_vals = raw.daily
        else:
            values = (mon - clim[None, None]).reshape(raw.monthly.shape)
            times = [
                cftime.DatetimeNoLeap(start_year + y, mth, 1)
                for y in range(years)
                for mth in range(1, 13)
            ]
            raw_vals = raw.monthly
        data_vars = {}
        for name, idx, scale_key, long_name, units, recentre in VARIABLES:
            arr = values[..., idx] if recentre else raw_vals[..., idx]
            attrs = {"long_name": long_name, "units": units, "model_variable": scale_key,
                     "scale_factor_applied": SCALES[scale_key]}  # fmt: skip
            if name in _STANDARD_NAMES:
                attrs["standard_name"] = _STANDARD_NAMES[name]
            data_vars[name] = (("member", "time"), (arr * SCALES[scale_key]).astype(np.float64), attrs)
        ds = xr.Dataset(
            data_vars,
            coords={
                "member": ("member", np.arange(raw.monthly.shape[0]), {"long_name": "ensemble member"}),
                "time": ("time", np.array(times), {"standard_name": "time", "axis": "T"}),
            },
        )
        ds.attrs.update(
            {
                "title": "Multiscale stochastic conceptual ENSO model (Chen, Fang & Yu 2022; 2024 parameters)",
                "references": "Chen, Fang & Yu (2022) npj Clim. Atmos. Sci. 5:16; J. Climate 2024 doi:10.1175/JCLI-D-24-0017.1",
                "Conventions": "CF-1.8",
                "seed": str(seed if not isinstance(seed, np.random.SeedSequence) else seed.entropy),
                "dt": dt,
                "burn_in_years": burn_in_years,
                "frequency": "day" if daily else "mon",
                "anomalies": "relative to the run's own monthly climatology (pooled over members)",
                **{f"param_{k}": v for k, v in self.params.to_dict().items()},
            }
        )
        return ds


def _check_size(years: int, members: int, daily: bool) -> None:
    """Raise :class:`ResourceLimitError` before allocating if the output would not fit in memory.

    The peak is about five float64 copies of the ``(member, month, 6)`` means (and of the daily
    means with ``daily``): the raw means, the anomalies, and the variables of the Dataset.
    """
    import psutil

    per_member = years * (MONTHS_PER_YEAR + (DAYS_PER_YEAR if daily else 0)) * 6 * 8 * 5
    free = int(psutil.virtual_memory().available)
    if per_member * members > 0.9 * free:
        fits = int(0.9 * free // per_member)
        raise ResourceLimitError(
            f"members, years: {members} members x {years} years{' of daily means' if daily else ''} need "
            f"about {per_member * members / 2**30:.1f} GB of memory, but {free / 2**30:.1f} GB are "
            f"available; use {fits} members or fewer (or fewer years)."
        )


def _td(days: int):
    import datetime

    return datetime.timedelta(days=days)


def _month_of_day_noleap() -> np.ndarray:
    """Month index 0..11 of each day 0..364 of a 365-day year."""
    lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return np.repeat(np.arange(12), lengths)
