"""Zarr stores: the layout of cloud CMIP6 collections, opened lazily like netCDF files.

A zarr store is a folder (named ``*.zarr`` by convention) holding the metadata (``.zgroup``,
``.zmetadata`` in zarr format 2; ``zarr.json`` in format 3) and the chunks of every variable.
:func:`bayesbridge.io.open_operational` accepts a store, a list of stores or a glob of them
wherever it accepts netCDF files and opens each with :func:`open_zarr_store`; what follows
(combining, calendars, variables, regions, anomalies) is the netCDF route.

Reading zarr needs the optional package ``zarr`` (``pip install 'bayesbridge[zarr]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from bayesbridge.errors import DataFileError

__all__ = ["is_zarr_store", "open_zarr_store", "ZARR_MARKERS"]

ZARR_MARKERS = (".zgroup", ".zmetadata", ".zattrs", "zarr.json")
"""Files at the top of a zarr store (format 2 or 3) that identify it."""


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store: a folder named ``*.zarr`` or holding zarr metadata.

    Parameters
    ----------
    path : str or os.PathLike
        A local path.
    """
    p = Path(path)
    return p.is_dir() and (p.suffix.lower() == ".zarr" or any((p / m).exists() for m in ZARR_MARKERS))


def open_zarr_store(path: str | os.PathLike, *, decode_times=True) -> xr.Dataset:
    """Open a zarr store lazily with dask (the store's own chunks), naming it if it cannot be read.

    Parameters
    ----------
    path : str or os.PathLike
        The store's folder (zarr format 2, consolidated or not, or format 3).
    decode_times : bool or xarray.coders.CFDatetimeCoder
        Passed to :func:`xarray.open_zarr`; :func:`bayesbridge.io.fields.time_coder` decodes
        every calendar to cftime objects.

    Returns
    -------
    xarray.Dataset
        Lazily opened, dask-backed.

    Raises
    ------
    DataFileError
        If the package ``zarr`` is not installed (the message names the ``zarr`` extra), or the
        store cannot be read.
    """
    try:
        import zarr  # noqa: F401
    except ImportError as exc:
        raise DataFileError(
            f"source: {str(path)!r} is a zarr store, and reading zarr needs the optional package zarr, "
            f"which is not installed ({exc}); install it with pip install 'bayesbridge[zarr]'."
        ) from exc
    try:
        return xr.open_zarr(path, decode_times=decode_times, chunks={})
    except Exception as exc:  # zarr raises many types for incomplete stores
        raise DataFileError(
            f"source: cannot read {str(path)!r} as a zarr store ({type(exc).__name__}: {exc}); check that the "
            f"store is complete (its .zgroup/.zmetadata or zarr.json and the variables' folders)."
        ) from exc
