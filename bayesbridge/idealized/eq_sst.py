"""The idealized model's equatorial SST profile as an observable: ``eq_sst``.

The idealized model reconstructs the equatorial (5S-5N mean) SST anomaly along longitude from
its two SST indices through the observed regression of Chen, Fang & Yu (2022)
(:mod:`bayesbridge.idealized.profiles`),

.. math:: \\mathrm{eq\\_sst}(x_k, t) = b_E(x_k)\\, T_E'(t) + b_C(x_k)\\, T_C'(t),

``T'`` the anomalies of the run's indices relative to its own monthly climatology (the intercept
``b_0`` drops out of anomalies), plus :math:`b_{EE}(x_k)\\, (T_E'^2)'` when the regression has the
quadratic EP term (:mod:`bayesbridge.idealized.regression`, which fits one to a gridded record
with its own residual; every function here takes it as ``regression``, default the bundled,
linear one). It is sampled at :data:`EQ_SST_SPACING_DEG` degree spacing
(:func:`eq_sst_longitudes`): linear interpolation of ``b_E``, ``b_C`` from 10-degree samples
reproduces the 1-degree profiles within 5 % of their peak (2 % at 5 degrees, 10 % at 20, 26 %
at 30 degrees), and the rows are strongly correlated, so denser sampling adds rows, not
information (``docs/lab-notes.md``).

Error model. The regression file holds no residual variance. It is estimated from independent
data, the bundled ERSST record (:func:`regression_residual`): Nino 3.4 reconstructed from the
observed Nino 3 and Nino 4 through the regression against the observed Nino 3.4 gives the
residual standard deviation :math:`\\sigma_{34}` of a box mean of the profile (0.13 degC over
1870-2020). The bridge treats the rows' errors as independent, so the per-longitude error is
set so that this assumption reproduces the measured box-mean error: with ``k`` rows inside
190E-240E, :math:`s = \\sigma_{34} \\sqrt{k}` (the variance of the mean of ``k`` independent
errors of variance ``s^2`` is :math:`\\sigma_{34}^2`). This is conservative for the shape
between rows and right for their box means.
With the operational model's fields at hand (:func:`profile_observation` with ``fields``),
the residual's row-to-row correlation ``C`` is taken to be that of the model's own profile shape
(the residual *is* a shape), the row error is set so that the correlated box mean has the
measured variance, and it is inflated by :math:`\\sqrt{k / k_{eff}}`,
:math:`k_{eff} = (\\mathrm{tr}\\, C)^2 / \\mathrm{tr}(C^2)`, so that the bridge's independent
row errors carry the information of :math:`k_{eff}` independent rows
(:func:`regression_residual`).

No double counting. The profile is a deterministic function of Nino 3 and Nino 4, so when
those are assimilated too, the profile's amplitude information is theirs. Assimilating it as
independent rows would count it twice. :func:`equatorial_sst_operator` with ``shape_only``
therefore observes the *shape* of the profile,

.. math:: y_k = \\mathrm{eq\\_sst}_k - b_E(x_k)\\, \\mathrm{nino3} - b_C(x_k)\\, \\mathrm{nino4},
          \\qquad h_k(x) = P_k x - b_E(x_k) B_3 x - b_C(x_k) B_4 x,

whose error is the regression residual alone: for observations exactly on the regression
(a profile derived from the indices, or the idealized model's own) ``y_k = 0`` and the rows
say only that the decoded field's equatorial profile must have the regression's shape given
its own Nino 3 and Nino 4 means. This is the exact transformation of the joint likelihood of
``(nino3, nino4, eq_sst)`` when ``eq_sst`` is the regression of the observed indices plus an
independent residual (``docs/design.md``, observation operators).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesbridge.datasets.observed import equatorial_regression, observed_indices
from bayesbridge.errors import GridCoverageError, InputValueError, VariableNotFoundError
from bayesbridge.idealized.regression import QUADRATIC, quadratic_anomaly
from bayesbridge.operators import BoxOperator, ContrastOperator, ProfileOperator

__all__ = [
    "EQ_SST",
    "EQ_SST_SPACING_DEG",
    "EQ_SST_BAND",
    "MEASURED_SPAN",
    "eq_sst_longitudes",
    "regression_coefficients",
    "quadratic_coefficient",
    "equatorial_sst_from_indices",
    "with_equatorial_sst",
    "RegressionResidual",
    "regression_residual",
    "equatorial_sst_operator",
    "ProfileObservation",
    "profile_observation",
]

EQ_SST = "eq_sst"
"""Name of the equatorial SST profile observable."""
EQ_SST_SPACING_DEG = 10.0
"""Spacing of the profile's longitudes (degrees; see the module notes)."""
EQ_SST_BAND = (-5.0, 5.0)
"""Latitude band of the profile (degrees north): the regression's 5S-5N mean."""
_NINO34 = (190.0, 240.0)
MEASURED_SPAN = _NINO34
"""Longitudes (degrees east) of a profile derived from observed indices: the Nino 3.4 span, where
the regression residual is measured (:func:`regression_residual`); outside it the two-index
regression's error is not known from the bundled data (``docs/lab-notes.md``)."""


def _regression_range(coefficients: xr.Dataset | None = None) -> tuple[xr.Dataset, float, float]:
    c = equatorial_regression() if coefficients is None else coefficients
    lon = np.asarray(c["lon"].values, dtype=float)
    return c, float(lon.min()), float(lon.max())


def eq_sst_longitudes(lon_min: float = 120.0, lon_max: float = 280.0, spacing: float = EQ_SST_SPACING_DEG,
                      regression: xr.Dataset | None = None) -> np.ndarray:
    """Longitudes of the profile: multiples of ``spacing`` inside both a grid and the regression.

    Parameters
    ----------
    lon_min, lon_max : float
        The grid's longitude range (degrees east, 0..360; default the twin's 120E-280E).
    spacing : float
        Degrees between rows.
    regression : xarray.Dataset, optional
        The regression whose longitudes bound the rows (default the bundled one).

    Returns
    -------
    numpy.ndarray
        ``(k,)`` longitudes (degrees east), e.g. 120, 130, ..., 280.
    """
    _, lo, hi = _regression_range(regression)
    first = np.ceil(max(lo, lon_min) / spacing) * spacing
    out = np.arange(first, min(hi, lon_max) + 1e-9, spacing)
    if out.size == 0:
        raise GridCoverageError(
            f"lon_min, lon_max: the grid {lon_min:g}..{lon_max:g}E does not overlap the regression's "
            f"longitudes {lo:g}..{hi:g}E; eq_sst needs an equatorial Pacific grid."
        )
    return out


def regression_coefficients(longitudes, coefficients: xr.Dataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(b_E, b_C)`` ``(k,)`` at ``longitudes``, linearly interpolated from the 1-degree regression.

    Raises :class:`~bayesbridge.errors.GridCoverageError` for a longitude outside the
    regression's range (119.5E-288.5E), naming the range. ``coefficients`` defaults to the
    bundled regression (:func:`bayesbridge.datasets.observed.equatorial_regression`).
    """
    c, lo, hi = _regression_range(coefficients)
    x = np.mod(np.atleast_1d(np.asarray(longitudes, dtype=float)), 360.0)
    bad = x[(x < lo - 1e-9) | (x > hi + 1e-9)]
    if bad.size:
        raise GridCoverageError(
            f"longitudes: {', '.join(f'{v:g}' for v in bad)} outside the equatorial regression's range "
            f"{lo:g}E..{hi:g}E; choose profile longitudes inside it."
        )
    missing = [v for v in ("b_e", "b_c") if v not in c]
    if missing:
        raise VariableNotFoundError(f"coefficients: missing {missing}; expected b_e, b_c on 'lon'.")
    rlon = np.asarray(c["lon"].values, dtype=float)
    return tuple(np.interp(x, rlon, np.asarray(c[k].values, dtype=float)) for k in ("b_e", "b_c"))


def quadratic_coefficient(longitudes, coefficients: xr.Dataset | None = None) -> np.ndarray:
    """``b_EE`` ``(k,)`` at ``longitudes``: the quadratic EP term's coefficient, zeros when absent.

    Parameters
    ----------
    longitudes : array-like
        Degrees east.
    coefficients : xarray.Dataset, optional
        The regression (default the bundled one, which is linear: no ``b_ee``); one fitted by
        :func:`bayesbridge.idealized.regression.fit_equatorial_regression` has it.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` degC per degC^2, linearly interpolated.
    """
    c, _, _ = _regression_range(coefficients)
    x = np.mod(np.atleast_1d(np.asarray(longitudes, dtype=float)), 360.0)
    if QUADRATIC not in c:
        return np.zeros(x.size)
    return np.interp(x, np.asarray(c["lon"].values, dtype=float), np.asarray(c[QUADRATIC].values, dtype=float))


def equatorial_sst_from_indices(nino3: xr.DataArray, nino4: xr.DataArray, longitudes=None,
                                regression: xr.Dataset | None = None) -> xr.DataArray:
    """``eq_sst = b_E nino3 + b_C nino4 (+ b_EE (nino3^2)')`` at ``longitudes`` (degC), on ``(*dims, lon)``.

    The indices are taken as anomalies already (observed records); NaN where either is missing.
    The quadratic term (:mod:`bayesbridge.idealized.regression`) enters only when the
    regression has it, with ``(nino3^2)'`` the anomaly of the square to its monthly climatology.

    Parameters
    ----------
    nino3, nino4 : xarray.DataArray
        Anomalies (degC) on ``(*dims)`` (e.g. ``time``), broadcastable; ``time`` is needed by a
        regression with a quadratic term.
    longitudes : array-like, optional
        Default :func:`eq_sst_longitudes`.
    regression : xarray.Dataset, optional
        The coefficients (default the bundled, linear regression).
    """
    lon = eq_sst_longitudes(regression=regression) if longitudes is None else np.asarray(longitudes, dtype=float)
    be, bc = regression_coefficients(lon, regression)
    bee = quadratic_coefficient(lon, regression)
    b_e = xr.DataArray(be, dims="lon", coords={"lon": lon})
    b_c = xr.DataArray(bc, dims="lon", coords={"lon": lon})
    out = b_e * nino3 + b_c * nino4
    if np.any(bee != 0.0):
        out = out + xr.DataArray(bee, dims="lon", coords={"lon": lon}) * quadratic_anomaly(nino3)
    out = out.transpose(*nino3.dims, "lon")
    out.name = EQ_SST
    out.attrs = {"long_name": "equatorial (5S-5N mean) SST anomaly from the Nino 3 / Nino 4 regression",
                 "units": "degC"}
    out["lon"].attrs = {"units": "degrees_east", "long_name": "longitude of the profile"}
    return out


def with_equatorial_sst(run: xr.Dataset, longitudes=None, regression: xr.Dataset | None = None) -> xr.Dataset:
    """``run`` plus ``eq_sst`` ``(*dims, time, lon)``: its profile, anomalies to its monthly climatology.

    Parameters
    ----------
    run : xarray.Dataset
        An idealized-model run (``MultiscaleENSO.simulate`` output or the twin's
        ``idealized_observations``) with ``nino3`` (T_E) and ``nino4`` (T_C) on ``(*dims, time)``.
    longitudes : array-like, optional
        Default :func:`eq_sst_longitudes`.
    regression : xarray.Dataset, optional
        The coefficients (default the bundled, linear regression).

    Returns
    -------
    xarray.Dataset
        A copy with ``eq_sst`` (degC), ``b_E T_E' + b_C T_C' (+ b_EE (T_E'^2)')`` with ``T'``
        relative to the run's monthly climatology.
    """
    missing = [v for v in ("nino3", "nino4") if v not in run]
    if missing:
        raise VariableNotFoundError(f"run: missing {missing}; eq_sst is reconstructed from nino3 (T_E) and nino4 (T_C).")
    anom = {k: run[k].groupby("time.month") - run[k].groupby("time.month").mean() for k in ("nino3", "nino4")}
    prof = equatorial_sst_from_indices(anom["nino3"].drop_vars("month"), anom["nino4"].drop_vars("month"), longitudes,
                                       regression)
    terms = "T_E, T_C and T_E^2" if QUADRATIC in (regression if regression is not None else {}) else "T_E, T_C"
    prof.attrs["long_name"] = (f"equatorial (5S-5N mean) SST anomaly of the idealized model (regression on "
                               f"{terms}; anomalies to the run's monthly climatology)")
    return run.assign({EQ_SST: prof})


@dataclass(frozen=True)
class RegressionResidual:
    """Residual of the equatorial regression, measured on independent observations.

    Attributes
    ----------
    box_std : float
        Standard deviation (degC) of observed Nino 3.4 minus its regression reconstruction from
        observed Nino 3 and Nino 4 (ERSST v5).
    per_longitude : numpy.ndarray
        ``(k,)`` error standard deviation per profile row (:func:`regression_residual`).
    n_in_box : int
        Rows inside Nino 3.4 (190E-240E).
    months : int
        Months of the record used.
    effective_rows : float
        Effective number of independent rows ``(tr C)^2 / tr(C^2)`` of the residual's correlation
        ``C`` (``k`` without a correlation).
    """

    box_std: float
    per_longitude: np.ndarray
    n_in_box: int
    months: int
    effective_rows: float = np.nan


@functools.lru_cache(maxsize=1)
def _nino34_residual() -> tuple[float, int]:
    from bayesbridge.idealized.profiles import nino34_from_indices

    obs = observed_indices()
    rec = nino34_from_indices(obs["nino3"], obs["nino4"])
    diff = np.asarray((obs["nino34"] - rec).values, dtype=float)
    ok = np.isfinite(diff)
    return float(diff[ok].std(ddof=1)), int(ok.sum())


def _measured_residual(lon: np.ndarray, regression: xr.Dataset, box: np.ndarray) -> RegressionResidual:
    """Row errors from a fitted regression's own residual (std and correlation on its rows)."""
    rlon = np.asarray(regression["lon"].values, dtype=float)
    pos = np.array([int(np.argmin(np.abs(rlon - x))) for x in lon])
    if np.max(np.abs(rlon[pos] - lon)) > 1e-6:
        raise InputValueError(
            f"longitudes: the regression's residual is measured at {', '.join(f'{v:g}' for v in rlon)}E; "
            f"profile rows at {', '.join(f'{v:g}' for v in lon)}E need a regression fitted at those longitudes."
        )
    std = np.asarray(regression["residual_std"].values, dtype=float)[pos]
    C = np.asarray(regression["residual_corr"].values, dtype=float)[np.ix_(pos, pos)]
    k_eff = float(np.trace(C) ** 2 / np.trace(C @ C))
    k = max(1, int(box.sum()))
    cov_box = (std[box, None] * C[np.ix_(box, box)] * std[None, box]).sum() if box.any() else float(std.mean() ** 2)
    box_std = float(np.sqrt(cov_box)) / k
    return RegressionResidual(box_std, std * np.sqrt(lon.size / k_eff), k, int(regression.attrs.get("months", 0)), k_eff)


def regression_residual(longitudes=None, correlation=None, regression: xr.Dataset | None = None) -> RegressionResidual:
    """The per-row error of ``eq_sst`` at ``longitudes`` from the ERSST Nino 3.4 residual.

    A fitted ``regression`` (:func:`bayesbridge.idealized.regression.fit_equatorial_regression`)
    carries its own residual, measured per row on its record: then ``s_k = sigma_k sqrt(k / k_eff)``
    with its residual's standard deviation ``sigma_k`` and correlation (``correlation`` is
    ignored), the same inflation as below.

    Without ``correlation`` the rows' residuals are taken as independent: ``s = sigma_34 sqrt(k_b)``
    for ``k_b`` rows in Nino 3.4 (module notes). With the residual's row-to-row correlation
    ``C`` ``(k, k)`` (estimated from the operational model's own profile shape,
    :func:`profile_observation`), ``s`` is the row error whose correlated box mean has the
    measured variance, ``sigma_34 k_b / sqrt(1' C_b 1)``, times ``sqrt(k / k_eff)`` with
    ``k_eff = (tr C)^2 / tr(C^2)``: the bridge's errors are independent per row, so the diagonal
    is inflated until the ``k`` rows carry the information of ``k_eff`` independent ones.
    """
    lon = eq_sst_longitudes(regression=regression) if longitudes is None else np.asarray(longitudes, dtype=float)
    x = np.mod(lon, 360.0)
    box = (x >= _NINO34[0]) & (x <= _NINO34[1])
    if regression is not None and "residual_std" in regression and "residual_corr" in regression:
        return _measured_residual(x, regression, box)
    box_std, months = _nino34_residual()
    k = max(1, int(box.sum()))
    if correlation is None:
        return RegressionResidual(box_std, np.full(lon.size, box_std * np.sqrt(k)), k, months, float(lon.size))
    C = np.asarray(correlation, dtype=float)
    if C.shape != (lon.size, lon.size) or not np.all(np.isfinite(C)):
        raise InputValueError(f"correlation: expected a finite ({lon.size}, {lon.size}) matrix, got shape {C.shape}.")
    k_eff = float(np.trace(C) ** 2 / np.trace(C @ C))
    in_box = float(C[np.ix_(box, box)].sum()) if box.any() else float(k)
    s = box_std * k / np.sqrt(max(in_box, 1e-12)) * np.sqrt(lon.size / k_eff)
    return RegressionResidual(box_std, np.full(lon.size, s), k, months, k_eff)


def equatorial_sst_operator(longitudes=None, *, shape_only: bool = True, variable: str = "tos", correlation=None,
                            regression: xr.Dataset | None = None):
    """The ``eq_sst`` observation operator (5S-5N mean of ``variable`` at ``longitudes``).

    Parameters
    ----------
    longitudes : array-like, optional
        Rows (degrees east; default :func:`eq_sst_longitudes`); each must lie in the
        regression's range.
    shape_only : bool
        Observe the profile minus its regression on Nino 3 and Nino 4 (use when ``nino3`` and
        ``nino4`` are assimilated too; module notes), else the profile itself.
    variable : str
        The SST variable of the fields.
    correlation : numpy.ndarray, optional
        ``(k, k)`` row-to-row correlation of the residual (:func:`regression_residual`).
    regression : xarray.Dataset, optional
        The coefficients (default the bundled regression); a fitted one also gives the rows'
        errors (:func:`regression_residual`).

    Returns
    -------
    ContrastOperator or ProfileOperator
        Named ``eq_sst``, row dimension ``lon``, error floor :func:`regression_residual`.
    """
    lon = eq_sst_longitudes(regression=regression) if longitudes is None else np.asarray(longitudes, dtype=float)
    be, bc = regression_coefficients(lon, regression)
    floor = tuple(float(v) for v in regression_residual(lon, correlation, regression).per_longitude)
    profile = ProfileOperator(EQ_SST, variable=variable, units="degC", error_floor=floor,
                              at=tuple(float(v) for v in lon), band=EQ_SST_BAND, along="lon")
    if not shape_only:
        return profile
    parts = (BoxOperator("nino3", variable=variable, region="nino3"),
             BoxOperator("nino4", variable=variable, region="nino4"))
    return ContrastOperator(EQ_SST, variable=variable, units="degC", error_floor=floor, base=profile, parts=parts,
                            coef=np.stack([be, bc], axis=1), part_names=("nino3", "nino4"))


@dataclass(frozen=True)
class ProfileObservation:
    """Observations with their ``eq_sst`` profile and its operator, ready for ``Bridge.assimilate``.

    Attributes
    ----------
    observations : xarray.Dataset
        The input series plus ``eq_sst`` on ``(time, lon)`` (degC).
    operator : ContrastOperator or ProfileOperator
        :func:`equatorial_sst_operator` at the profile's longitudes.
    derived : bool
        True when the profile was reconstructed from ``nino3``/``nino4`` (no ``eq_sst`` given).
    """

    observations: xr.Dataset
    operator: object
    derived: bool


def profile_observation(observations: xr.Dataset, grid_lon, *, assimilated=("nino3", "nino4"),
                        climatology: bool = False, variable: str = "tos", fields=None,
                        regression: xr.Dataset | None = None) -> ProfileObservation:
    """``observations`` with ``eq_sst`` at the longitudes of a grid, and its operator.

    A profile already on ``(time, lon)`` in ``observations`` is kept (its longitudes must lie
    in the regression's range). An idealized run's (``climatology=True``) is its own output at
    every :func:`eq_sst_longitudes` of the grid. Observed indices get the profile reconstructed
    from ``nino3``/``nino4`` by the regression (:func:`equatorial_sst_from_indices`) over
    :data:`MEASURED_SPAN` only, where its error, the regression residual
    (:func:`regression_residual`), is measured. When ``nino3`` and ``nino4`` are both in ``assimilated`` the
    operator observes only the profile's shape (module notes: no double counting).

    Parameters
    ----------
    observations : xarray.Dataset
        Index series on ``time`` (anomalies, degC), with ``nino3`` and ``nino4`` unless it holds
        ``eq_sst``.
    grid_lon : array-like
        Longitudes of the operational grid (degrees east): the profile is sampled at
        :func:`eq_sst_longitudes` inside them.
    assimilated : sequence of str
        The other series assimilated with the profile.
    climatology : bool
        The indices are raw run output (an idealized run): take anomalies to their monthly
        climatology first (:func:`with_equatorial_sst`).
    variable : str
        The SST variable of the fields.
    fields : xarray.Dataset, optional
        The operational model's anomalies ``(time, lat, lon)``: the row-to-row correlation of
        the shape of their profile stands for that of the regression residual
        (:func:`regression_residual`); without them the rows' errors are taken as independent.
    regression : xarray.Dataset, optional
        The regression (default the bundled one): a fitted one
        (:func:`bayesbridge.idealized.regression.fit_equatorial_regression`) gives the profile's
        quadratic term, its longitudes and its rows' errors (then ``fields`` is not used).

    Returns
    -------
    ProfileObservation
    """
    given = EQ_SST in observations.data_vars and "lon" in observations[EQ_SST].dims
    if given:
        lons = np.asarray(observations[EQ_SST]["lon"].values, dtype=float)
        out = observations
    else:
        lon = np.mod(np.asarray(grid_lon, dtype=float), 360.0)
        lo, hi = float(lon.min()), float(lon.max())
        if not climatology:  # derived from observed indices: only where the residual is measured
            lo, hi = max(lo, MEASURED_SPAN[0]), min(hi, MEASURED_SPAN[1])
        lons = eq_sst_longitudes(lo, hi, regression=regression)
        if climatology:
            out = with_equatorial_sst(observations, lons, regression)
        else:
            missing = [v for v in ("nino3", "nino4") if v not in observations]
            if missing:
                raise VariableNotFoundError(
                    f"observations: eq_sst is derived from nino3 and nino4 through the equatorial regression, "
                    f"but {', '.join(missing)} is missing; add it to the file or drop eq_sst from the variables."
                )
            out = observations.assign({EQ_SST: equatorial_sst_from_indices(observations["nino3"],
                                                                           observations["nino4"], lons, regression)})
    shape = "nino3" in assimilated and "nino4" in assimilated
    correlation = None
    measured = regression is not None and "residual_corr" in regression
    if fields is not None and lons.size > 1 and not measured:  # the residual is a shape: the model's shape's correlation
        series = equatorial_sst_operator(lons, shape_only=True, variable=variable).apply(fields[variable])
        correlation = np.corrcoef(np.asarray(series.values, dtype=float).T)
    op = equatorial_sst_operator(lons, shape_only=shape, variable=variable, correlation=correlation,
                                 regression=regression)
    return ProfileObservation(out, op, not given)
