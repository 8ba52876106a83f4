"""The one place bayesbridge talks to ArviZ.

ArviZ 0.x (``InferenceData``; the release pip resolves on Python 3.11) and ArviZ 1.x
(``xarray.DataTree``, Python 3.12+) differ in how containers are built and in what the
statistics return. Every other module goes through these functions, so a change of ArviZ
version touches this file only.

Conventions: dimensions ``chain, draw`` first; variational draws are one chain; particle
weights go to ``sample_stats``.

ArviZ itself is imported on first use of a function that needs it: building the groups of a
container (:func:`build_groups`) and writing them (:func:`write_groups`) need only xarray, so the
command line writes ``inference_data.nc`` without the import (more than a second, most of it
numba compiling ArviZ's ECDF helpers, at every start: ``docs/lab-notes.md``).
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "ARVIZ_MAJOR",
    "GROUPS",
    "build_groups",
    "write_groups",
    "from_dict",
    "from_groups",
    "summary",
    "rhat",
    "ess",
    "groups",
    "group_dataset",
    "to_netcdf",
    "from_netcdf",
]

ARVIZ_MAJOR: int = int(version("arviz").split(".")[0])
"""Major version of the installed ArviZ (0 or 1), read from its metadata (no import)."""

GROUPS: tuple[str, ...] = ("posterior", "posterior_predictive", "observed_data", "sample_stats", "prior")
"""The groups bayesbridge writes, in ArviZ's order."""


def _az():
    """ArviZ, imported on first use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
        import arviz

    return arviz

Arrays = Mapping[str, np.ndarray]


def build_groups(
    *,
    posterior: Arrays | None = None,
    posterior_predictive: Arrays | None = None,
    observed_data: Arrays | None = None,
    sample_stats: Arrays | None = None,
    prior: Arrays | None = None,
    coords: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, list[str]] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> dict[str, xr.Dataset]:
    """The groups of an ArviZ container as Datasets, laid out as ``arviz.from_dict`` lays them out.

    Arrays of the sampled groups are ``(chain, draw, *shape)``; ``observed_data`` arrays carry
    no ``chain, draw``. A variable's extra dimensions are named by ``dims`` (default
    ``<name>_dim_<i>``) with coordinates from ``coords`` (default ``0..n-1``); ``chain`` and
    ``draw`` are ``0..n-1``. Every group gets ``created_at``, ``inference_library`` and ``attrs``.

    Parameters
    ----------
    posterior, posterior_predictive, sample_stats, prior : mapping of str to array, optional
        Arrays ``(chain, draw, *shape)`` per variable for each group.
    observed_data : mapping of str to array, optional
        Observed arrays (no ``chain, draw``).
    coords : mapping of str to array, optional
        Coordinates of the extra dimensions.
    dims : mapping of str to list of str, optional
        Names of each variable's extra dimensions.
    attrs : mapping, optional
        Attributes set on every group.

    Returns
    -------
    dict of str to xarray.Dataset
        The non-empty groups, in :data:`GROUPS` order.
    """
    given = {"posterior": posterior, "posterior_predictive": posterior_predictive,
             "observed_data": observed_data, "sample_stats": sample_stats, "prior": prior}
    coords, dims = dict(coords or {}), dict(dims or {})
    stamp = {"created_at": datetime.datetime.now(datetime.UTC).isoformat(), "inference_library": "bayesbridge",
             **dict(attrs or {})}
    out = {}
    for group in GROUPS:
        arrays = given[group]
        if not arrays:
            continue
        sampled = group != "observed_data"
        variables = {}
        for name, values in arrays.items():
            values = np.asarray(values)
            lead = ["chain", "draw"] if sampled else []
            n_extra = values.ndim - len(lead)
            extra = list(dims.get(name, []))[:n_extra]
            extra += [f"{name}_dim_{i}" for i in range(len(extra), n_extra)]
            variables[name] = (lead + extra, values)
        ds = xr.Dataset(variables)
        ds = ds.assign_coords({d: coords[d] if d in coords else np.arange(ds.sizes[d]) for d in ds.dims})
        ds.attrs = dict(stamp)
        out[group] = ds
    return out


def write_groups(groups: Mapping[str, xr.Dataset], path: str | Path) -> Path:
    """Write the groups of :func:`build_groups` to ``path`` as an ArviZ netCDF container, atomically.

    One netCDF group per ArviZ group, uncompressed, readable by :func:`from_netcdf` (and by
    ``arviz.from_netcdf``); a failure leaves no partial file.

    Parameters
    ----------
    groups : mapping of str to xarray.Dataset
        Group name to Dataset.
    path : str or pathlib.Path
        Destination file.
    """
    from bayesbridge.io.netcdf import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        mode = "w"
        for name, ds in groups.items():
            ds.to_netcdf(tmp, group=name, mode=mode, engine="h5netcdf")
            mode = "a"
    return path


def from_dict(**arrays: Arrays | Mapping[str, object] | None):
    """Build an ArviZ container from arrays shaped ``(chain, draw, *shape)``.

    The keyword arguments are those of :func:`build_groups`. Returns ``InferenceData`` on
    ArviZ 0.x and a ``DataTree`` on 1.x.
    """
    return from_groups(build_groups(**arrays))


def from_groups(groups: Mapping[str, xr.Dataset]):
    """An ArviZ container (``InferenceData`` on 0.x, ``DataTree`` on 1.x) of the ``groups`` of :func:`build_groups`."""
    if ARVIZ_MAJOR >= 1:  # pragma: no cover - exercised on Python 3.12+
        return xr.DataTree.from_dict(dict(groups))
    return _az().InferenceData(**dict(groups))


def groups(idata) -> list[str]:
    """Names of the groups present in ``idata``."""
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return [name for name in idata.children]
    return list(idata.groups())


def group_dataset(idata, name: str) -> xr.Dataset:
    """Group ``name`` of ``idata`` as an ``xarray.Dataset``."""
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return idata[name].to_dataset()
    return getattr(idata, name)


def summary(idata, var_names: list[str] | None = None, coords: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Posterior summary table of ``idata``: mean, sd, HDI, ``ess_bulk``, ``ess_tail``, ``r_hat``.

    ``var_names`` selects variables (default all of the posterior group); ``coords`` selects
    labels along their other dimensions, e.g. ``{"latent": [0, 1], "time": [t]}`` for a few of
    the ``(time, latent)`` states ``z`` (all of them make a table of ``T d`` rows).
    """
    return _az().summary(idata, var_names=var_names, coords=dict(coords) if coords else None)


def rhat(idata, var_names: list[str] | None = None) -> xr.Dataset:
    """Rank-normalised split R-hat (Vehtari et al. 2021) per variable of ``idata`` (``var_names``: a subset)."""
    out = _az().rhat(idata, var_names=var_names)
    return out if isinstance(out, xr.Dataset) else out.to_dataset()  # DataTree on 1.x


def ess(idata, var_names: list[str] | None = None, method: str = "bulk") -> xr.Dataset:
    """Effective sample size per variable of ``idata`` (``var_names``: a subset).

    ``method`` is an ArviZ ESS method: ``"bulk"`` (default), ``"tail"``, ``"mean"`` ...
    """
    out = _az().ess(idata, var_names=var_names, method=method)
    return out if isinstance(out, xr.Dataset) else out.to_dataset()


def to_netcdf(idata, path: str | Path) -> Path:
    """Write ``idata`` to ``path`` atomically (temporary file, then rename): a failure leaves no partial file.

    Uncompressed: zlib costs several times the write time for little size on draws (see
    :func:`bayesbridge.io.write_netcdf`).
    """
    from bayesbridge.io.netcdf import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if ARVIZ_MAJOR >= 1:  # pragma: no cover - a DataTree
            idata.to_netcdf(str(tmp))
        else:
            idata.to_netcdf(str(tmp), compress=False)
    return path


def from_netcdf(path: str | Path):
    """Read the container at ``path`` written by :func:`to_netcdf`."""
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return xr.open_datatree(path)
    return _az().from_netcdf(str(path))
