"""Index runs that drive the twin experiment: validation and the index Dataset.

A driver is one monthly run of the idealized model's observed outputs
(:data:`OBSERVED_VARIABLES`: T_E = Nino 3, T_C = Nino 4 in degC, h_W in m of thermocline) on
``time``, first month January (``docs/design.md`` section 6). :func:`driver_arrays` checks one
and returns its series as float64 arrays; :func:`index_dataset` builds the Dataset the twin
experiment stores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from bayesbridge.errors import InputTypeError, InputValueError, VariableNotFoundError

__all__ = ["OBSERVED_VARIABLES", "driver_arrays", "index_dataset"]

OBSERVED_VARIABLES: tuple[str, ...] = ("nino3", "nino4", "h_w")
"""The idealized-model outputs that are assimilated (degC, degC, m of thermocline)."""

_INDEX_ATTRS = {
    "nino3": {"long_name": "Nino 3 SST anomaly (T_E)", "units": "degC"},
    "nino4": {"long_name": "Nino 4 SST anomaly (T_C)", "units": "degC"},
    "h_w": {"long_name": "western Pacific thermocline depth anomaly (h_W)", "units": "m"},
}


def driver_arrays(driver: xr.Dataset, name: str = "driver") -> dict[str, np.ndarray]:
    """Validate an index Dataset on ``time`` (one member) and return float64 arrays.

    Parameters
    ----------
    driver : xarray.Dataset
        ``nino3``, ``nino4``, ``h_w`` (and possibly other variables) on ``time``, at least 24
        months, no NaN; a ``member`` dimension of length 1 is allowed.
    name : str
        Argument name used in error messages.

    Returns
    -------
    dict of str to numpy.ndarray
        Every variable on ``("time",)`` as a ``(time,)`` float64 array.

    Raises
    ------
    InputTypeError
        ``driver`` is not a Dataset.
    VariableNotFoundError
        One of :data:`OBSERVED_VARIABLES` is absent.
    InputValueError
        Several members, NaN or inf values, other dimensions or fewer than 24 months.
    """
    if not isinstance(driver, xr.Dataset):
        raise InputTypeError(f"{name}: expected an xarray.Dataset with nino3, nino4, h_w on time, "
                             f"got {type(driver).__name__}.")
    missing = [v for v in OBSERVED_VARIABLES if v not in driver]
    if missing:
        raise VariableNotFoundError(f"{name}: missing variables {missing}; expected {list(OBSERVED_VARIABLES)}, "
                                    f"found {sorted(map(str, driver.data_vars))}.")
    if "member" in driver.dims:
        if driver.sizes["member"] != 1:
            raise InputValueError(f"{name}: expected one member, got {driver.sizes['member']}; "
                                  f"select one with .isel(member=k).")
        driver = driver.isel(member=0)
    out = {}
    for v in driver.data_vars:
        da = driver[v]
        if da.dims != ("time",):
            continue
        arr = np.asarray(da.values, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise InputValueError(f"{name}: variable {v!r} has NaN or inf values; pass complete series.")
        out[str(v)] = arr
    if any(v not in out for v in OBSERVED_VARIABLES) or out["nino3"].size < 24:
        raise InputValueError(f"{name}: nino3, nino4, h_w must be on dims ('time',) with at least 24 "
                              f"months; got sizes {dict(driver.sizes)}.")
    return out


def index_dataset(arrays: Mapping[str, np.ndarray], time: np.ndarray, attrs: dict) -> xr.Dataset:
    """Index series as a Dataset on ``time``, with units and long names for the observed ones.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        ``(time,)`` series by name (e.g. the output of :func:`driver_arrays`).
    time : numpy.ndarray
        ``(time,)`` time coordinate.
    attrs : dict
        Global attributes of the Dataset.

    Returns
    -------
    xarray.Dataset
        One variable per entry of ``arrays``.
    """
    ds = xr.Dataset({k: ("time", v, dict(_INDEX_ATTRS.get(k, {}))) for k, v in arrays.items()},
                    coords={"time": ("time", time, {"standard_name": "time", "axis": "T"})})
    ds.attrs.update(attrs)
    return ds
