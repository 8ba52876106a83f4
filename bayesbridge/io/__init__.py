"""Reading and writing: CF/CMIP6 operational fields, netCDF output and the ArviZ layer.

:mod:`.fields` opens operational files (netCDF, or zarr stores through :mod:`.stores`) and
returns anomalies (:mod:`.anomalies`) on ``(time, lat, lon)``; :mod:`.vertical` reduces 4-D
variables to one level or to the 20 degC isotherm depth (:func:`.vertical.isotherm_depth`);
:mod:`.netcdf` writes files atomically; :mod:`.outputs` checks output paths before the work and
writes sets of files together; :mod:`.arviz_compat` is the one module that calls ArviZ (0.x on
Python 3.11, 1.x on 3.12+).
The ArviZ layer loads lazily: ``import bayesbridge.io`` does not import ArviZ.
"""

from __future__ import annotations

from importlib import import_module

from bayesbridge.io.anomalies import anomalies, area_weights, ocean_mask
from bayesbridge.io.fields import (
    normalize_longitudes,
    open_dataset,
    open_operational,
    select_region,
    time_coder,
)
from bayesbridge.io.netcdf import atomic_path, write_netcdf
from bayesbridge.io.outputs import check_output_dir, check_output_file, clean_stale, output_set
from bayesbridge.io.vertical import isotherm_depth, select_level

__all__ = [
    "open_operational",
    "open_dataset",
    "anomalies",
    "area_weights",
    "ocean_mask",
    "isotherm_depth",
    "select_level",
    "normalize_longitudes",
    "select_region",
    "write_netcdf",
    "atomic_path",
    "output_set",
    "check_output_dir",
    "check_output_file",
    "clean_stale",
    "time_coder",
    "arviz_compat",
]


def __getattr__(name: str):
    if name == "arviz_compat":
        module = import_module("bayesbridge.io.arviz_compat")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesbridge.io' has no attribute {name!r}")
