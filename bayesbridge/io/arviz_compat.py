"""The one place bayesbridge talks to ArviZ.

ArviZ 0.x (``InferenceData``; the release pip resolves on Python 3.11) and ArviZ 1.x
(``xarray.DataTree``, Python 3.12+) differ in how containers are built and in what the
statistics return. Every other module goes through these functions, so a change of ArviZ
version touches this file only.

Conventions: dimensions ``chain, draw`` first; variational draws are one chain; particle
weights go to ``sample_stats``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
    import arviz as az

__all__ = [
    "ARVIZ_MAJOR",
    "from_dict",
    "summary",
    "rhat",
    "ess",
    "groups",
    "group_dataset",
    "to_netcdf",
    "from_netcdf",
]

ARVIZ_MAJOR: int = int(az.__version__.split(".")[0])
"""Major version of the installed ArviZ (0 or 1)."""

Arrays = Mapping[str, np.ndarray]


def from_dict(
    *,
    posterior: Arrays | None = None,
    posterior_predictive: Arrays | None = None,
    observed_data: Arrays | None = None,
    sample_stats: Arrays | None = None,
    prior: Arrays | None = None,
    coords: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, list[str]] | None = None,
    attrs: Mapping[str, object] | None = None,
):
    """Build an ArviZ container from arrays shaped ``(chain, draw, *shape)``.

    ``observed_data`` arrays carry no ``chain, draw`` dimensions. Returns ``InferenceData``
    on ArviZ 0.x and a ``DataTree`` on 1.x.

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
    """
    groups_in = {
        "posterior": posterior,
        "posterior_predictive": posterior_predictive,
        "observed_data": observed_data,
        "sample_stats": sample_stats,
        "prior": prior,
    }
    groups_in = {k: {n: np.asarray(v) for n, v in g.items()} for k, g in groups_in.items() if g}
    if ARVIZ_MAJOR >= 1:  # pragma: no cover - exercised on Python 3.12+
        tree = az.from_dict(groups_in, coords=dict(coords or {}), dims=dict(dims or {}))
        if attrs:
            tree.attrs.update(attrs)
        return tree
    idata = az.from_dict(**groups_in, coords=dict(coords or {}), dims=dict(dims or {}))
    if attrs:
        for name in idata.groups():
            getattr(idata, name).attrs.update({k: v for k, v in attrs.items()})
    return idata


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


def summary(idata, var_names: list[str] | None = None) -> pd.DataFrame:
    """Posterior summary table of ``idata``: mean, sd, HDI, ``ess_bulk``, ``ess_tail``, ``r_hat``.

    ``var_names`` selects variables (default all of the posterior group).
    """
    return az.summary(idata, var_names=var_names)


def rhat(idata, var_names: list[str] | None = None) -> xr.Dataset:
    """Rank-normalised split R-hat (Vehtari et al. 2021) per variable of ``idata`` (``var_names``: a subset)."""
    out = az.rhat(idata, var_names=var_names)
    return out if isinstance(out, xr.Dataset) else out.to_dataset()  # DataTree on 1.x


def ess(idata, var_names: list[str] | None = None, method: str = "bulk") -> xr.Dataset:
    """Effective sample size per variable of ``idata`` (``var_names``: a subset).

    ``method`` is an ArviZ ESS method: ``"bulk"`` (default), ``"tail"``, ``"mean"`` ...
    """
    out = az.ess(idata, var_names=var_names, method=method)
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
    return az.from_netcdf(str(path))
