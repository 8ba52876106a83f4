"""Writing files safely: atomic replacement and compressed, CF-attributed netCDF.

Every file bayesbridge writes goes through :func:`atomic_path`: the data goes to a temporary
file beside the destination, which is renamed over it only when writing succeeded, so a failure
(exception, interrupt) leaves any previous file untouched and no partial file behind. The
temporary name carries the writer's process tag (:func:`bayesbridge.io.outputs.process_tag`), so
that a file left by a killed process is removed by :func:`bayesbridge.io.outputs.clean_stale`.
Sets of files that belong together are written with :func:`bayesbridge.io.outputs.output_set`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from bayesbridge.io.outputs import process_tag

__all__ = ["atomic_path", "write_netcdf"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is ``.<name>.<pid>-<start>.<random>.tmp`` in the destination folder (see
    :func:`bayesbridge.io.outputs.process_tag`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{process_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file readable by its owner only; give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_netcdf(
    obj: xr.Dataset | xr.DataArray,
    path: str | os.PathLike,
    *,
    complevel: int = 4,
    attrs: dict | None = None,
) -> Path:
    """Write compressed, CF-attributed netCDF4 atomically.

    Every data variable gets a ``long_name`` (its name when missing) and float variables a
    ``_FillValue``; the file gets ``Conventions = "CF-1.8"``. The data is written to a temporary
    file in the destination folder and renamed on success, so a failure (exception, interrupt)
    leaves any previous file untouched and no partial file behind.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        What to write (a named DataArray becomes a one-variable Dataset); not modified.
    path : str or os.PathLike
        Destination file.
    complevel : int
        zlib compression level (0-9) of numeric variables.
    attrs : dict, optional
        Global attributes added to (and overriding) those of ``obj``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj.copy()
    ds.attrs = {**ds.attrs, "Conventions": "CF-1.8", **(attrs or {})}
    encoding = {}
    for name, var in ds.data_vars.items():
        var.attrs.setdefault("long_name", str(name))
        enc = {}
        if var.dtype.kind in "fiu":
            enc.update(zlib=True, complevel=complevel)
        if var.dtype.kind == "f":
            enc["_FillValue"] = np.nan if var.dtype == np.float64 else np.float32(np.nan)
        encoding[name] = enc
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return path
