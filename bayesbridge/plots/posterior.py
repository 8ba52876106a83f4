"""Figures of a posterior: uncertainty maps, index series with their 90 % band, rank histograms.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no global
state, safe under the Agg backend, in threads and in workers); save it with
``fig.savefig(path, dpi=150)``. Inputs are a :class:`~bayesbridge.bridge.posterior.Posterior` or its
summary Dataset (``posterior.nc`` opened with xarray), so figures can be remade from files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from bayesbridge.errors import InputTypeError, VariableNotFoundError

__all__ = ["plot_std_map", "plot_field_summary", "plot_index_band", "plot_rank_histogram", "time_axis"]


def _summary(obj) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if hasattr(obj, "summary"):
        return obj.summary()
    raise InputTypeError(
        f"posterior: expected a Posterior or its summary xarray.Dataset, got {type(obj).__name__}."
    )


def _require(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name not in ds:
        raise VariableNotFoundError(
            f"{name!r} is not in the posterior summary; it has "
            f"{', '.join(sorted(map(str, ds.data_vars)))}."
        )
    return ds[name]


def time_axis(time) -> np.ndarray:
    """Matplotlib-friendly times: datetime64 as is, cftime as decimal years, numbers as is.

    Parameters
    ----------
    time : xarray.DataArray, pandas.Index or array-like ``(time,)``
        Time values; cftime dates become ``year + (month - 1)/12 + (day - 1)/365``.

    Returns
    -------
    numpy.ndarray
        Shape ``(time,)``.
    """
    values = np.asarray(time.values if isinstance(time, xr.DataArray | pd.Index) else time)
    if values.dtype.kind in "Mmfiu":
        return values
    return np.array([t.year + (t.month - 1) / 12.0 + (t.day - 1) / 365.0 for t in values])


def _map(ax, field: xr.DataArray, cmap: str, label: str, fig: Figure, symmetric: bool = False) -> None:
    values = np.asarray(field.transpose("lat", "lon").values, dtype=float)
    kwargs = {"cmap": cmap, "shading": "nearest"}
    if symmetric:
        vmax = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        kwargs.update(vmin=-vmax, vmax=vmax)
    mesh = ax.pcolormesh(field["lon"].values, field["lat"].values, values, **kwargs)
    ax.set_facecolor("0.8")  # land
    ax.set_xlabel("longitude (degrees east)")
    ax.set_ylabel("latitude (degrees north)")
    ax.set_aspect("equal")
    fig.colorbar(mesh, ax=ax, orientation="horizontal", pad=0.18, label=label)


def plot_std_map(posterior, variable: str = "tos", time: int | None = None) -> Figure:
    """Map of the posterior standard deviation: mean over time, or at step ``time``.

    Parameters
    ----------
    posterior : Posterior or xarray.Dataset
        A :class:`~bayesbridge.bridge.posterior.Posterior` or its summary Dataset (``posterior.nc``),
        which must hold ``<variable>_std``.
    variable : str
        Field variable (e.g. ``"tos"``, ``"zos"``).
    time : int, optional
        Step position; ``None`` maps the time mean of the standard deviation.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = _summary(posterior)
    std = _require(ds, f"{variable}_std")
    field = std.mean("time") if time is None else std.isel(time=time)
    when = "time mean" if time is None else f"step {time}"
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    _map(ax, field, "viridis", f"posterior std of {variable} ({std.attrs.get('units', '')})", fig)
    ax.set_title(f"Posterior uncertainty of {variable} ({when})")
    return fig


def plot_field_summary(posterior, variable: str = "tos", time: int = 0) -> Figure:
    """Posterior mean, standard deviation and 90 % interval width of ``variable`` at one step.

    Parameters
    ----------
    posterior : Posterior or xarray.Dataset
        A :class:`~bayesbridge.bridge.posterior.Posterior` or its summary Dataset (``posterior.nc``),
        which must hold ``<variable>_mean``, ``_std``, ``_q05`` and ``_q95``.
    variable : str
        Field variable (e.g. ``"tos"``).
    time : int
        Step position.

    Returns
    -------
    matplotlib.figure.Figure
        Three stacked maps: mean, standard deviation, ``q95 - q05``.
    """
    ds = _summary(posterior)
    units = _require(ds, f"{variable}_mean").attrs.get("units", "")
    sel = {k: _require(ds, f"{variable}_{k}").isel(time=time) for k in ("mean", "std", "q05", "q95")}
    fig = Figure(figsize=(9, 9), layout="constrained")
    axes = fig.subplots(3, 1)
    _map(axes[0], sel["mean"], "RdBu_r", f"mean ({units})", fig, symmetric=True)
    _map(axes[1], sel["std"], "viridis", f"standard deviation ({units})", fig)
    _map(axes[2], sel["q95"] - sel["q05"], "magma", f"90 % interval width ({units})", fig)
    for ax, title in zip(axes, ("posterior mean", "posterior std", "q95 - q05"), strict=True):
        ax.set_title(f"{variable}: {title}")
    return fig


def plot_index_band(posterior, box: str = "nino34", truth=None, show_observed: bool = True) -> Figure:
    """Posterior index series: mean, 90 % band (q05-q95), the observations and an optional truth.

    Parameters
    ----------
    posterior : Posterior or Dataset
    box : str
        Box name (``nino34``, ``h_w``, ...).
    truth : DataArray or array ``(time,)``, optional
        Known truth (twin experiment) drawn in black.
    show_observed : bool
        Draw ``<box>_obs`` when present (assimilated or withheld).
    """
    ds = _summary(posterior)
    mean = _require(ds, f"{box}_mean")
    lo, hi = _require(ds, f"{box}_q05"), _require(ds, f"{box}_q95")
    t = time_axis(ds["time"])
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(t, lo.values, hi.values, color="tab:blue", alpha=0.3, linewidth=0, label="90 % band")
    ax.plot(t, mean.values, color="tab:blue", lw=1.2, label="posterior mean")
    if show_observed and f"{box}_obs" in ds:
        obs = ds[f"{box}_obs"]
        role = "withheld" if "withheld" in obs.attrs.get("long_name", "") else "assimilated"
        ax.plot(t, obs.values, ".", ms=2.5, color="tab:orange", label=f"observed ({role})")
    if truth is not None:
        ax.plot(t, np.asarray(truth, dtype=float), color="k", lw=0.8, label="truth")
    ax.axhline(0.0, color="0.6", lw=0.5)
    ax.set_xlabel("time")
    ax.set_ylabel(f"{box} ({mean.attrs.get('units', '')})")
    title = mean.attrs.get("long_name", box).replace("posterior mean of the ", "")
    ax.set_title(title[:1].upper() + title[1:])
    ax.legend(loc="upper left", fontsize="small", ncol=4)
    return fig


def plot_rank_histogram(hist, title: str = "Rank histogram") -> Figure:
    """Bars of a :class:`~bayesbridge.diagnostics.uq.RankHistogram` with the uniform expectation.

    Parameters
    ----------
    hist : RankHistogram
        Output of :func:`bayesbridge.diagnostics.uq.rank_histogram` (``counts``, ``expected``,
        ``pvalue``).
    title : str
        Title; the chi-square p-value is appended.

    Returns
    -------
    matplotlib.figure.Figure
    """
    for attr in ("counts", "expected", "pvalue"):
        if not hasattr(hist, attr):
            raise InputTypeError(
                f"hist: expected a RankHistogram from bayesbridge.diagnostics.uq.rank_histogram, "
                f"got {type(hist).__name__}."
            )
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    bins = np.arange(hist.counts.size)
    ax.bar(bins, hist.counts, color="tab:blue", alpha=0.8, label="truth rank")
    ax.step(np.r_[bins - 0.5, bins[-1] + 0.5], np.r_[hist.expected, hist.expected[-1]], where="post",
            color="k", lw=1.0, label="uniform")
    ax.set_xlabel("rank bin of the truth among the members")
    ax.set_ylabel("count")
    ax.set_title(f"{title} (chi-square p = {hist.pvalue:.2g})")
    ax.legend(fontsize="small")
    return fig
