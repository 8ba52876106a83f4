"""ENSO figures (matplotlib/seaborn, Agg-safe): PDFs, seasonal phase locking, spectra, Hovmollers.

Every function draws into a new (or given) figure and returns the ``matplotlib.figure.Figure``;
nothing is shown or saved, so the functions work headless (Agg backend) and in notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt  # falls back to Agg when no display is available
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from bayesbridge.diagnostics import enso
from bayesbridge.errors import InputTypeError

__all__ = ["plot_pdfs", "plot_phase_locking", "plot_spectra", "plot_hovmoller"]

Series = Mapping[str, xr.DataArray]


def _series(series: Series | xr.DataArray, name: str) -> dict[str, xr.DataArray]:
    if isinstance(series, xr.DataArray):
        return {str(series.name or name): series}
    if not isinstance(series, Mapping) or not all(isinstance(v, xr.DataArray) for v in series.values()):
        raise InputTypeError(
            f"{name}: expected a DataArray or a mapping label -> DataArray, received {type(series).__name__}."
        )
    return dict(series)


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pdfs(series: Series | xr.DataArray, bins: int = 60, title: str = "") -> Figure:
    """Kernel-density PDFs of index series, with skewness and Pearson kurtosis in the legend.

    Parameters
    ----------
    series : xarray.DataArray or mapping of str to xarray.DataArray
        One series, or several by legend label, on ``(*other, time)``; e.g. ``{"observed": obs, "model": sim}``; members and other dims are pooled.
    bins : int
        Not used: the PDFs are Gaussian kernel density estimates (:func:`seaborn.kdeplot`), not
        histograms; kept for backward compatibility.
    title : str
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The x axis is labelled with the units of the first series.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, da in _series(series, "series").items():
        x = np.asarray(da.values, float).ravel()
        x = x[np.isfinite(x)]
        s = enso.summary_statistics(da.rename("x").to_dataset(), ["x"]).loc["x"]
        sns.kdeplot(x=x, ax=ax, label=f"{label} (skew {s['skewness']:.2f}, kurt {s['kurtosis']:.2f})")
    units = next(iter(_series(series, "series").values())).attrs.get("units", "")
    return _finish(fig, ax, units, "density", title)


def plot_phase_locking(series: Series | xr.DataArray, title: str = "") -> Figure:
    """Standard deviation per calendar month (seasonal phase locking) of each series.

    Parameters
    ----------
    series : xarray.DataArray or mapping of str to xarray.DataArray
        One series, or several by legend label, on ``(*other, time)``; all values of a calendar month are pooled (:func:`~bayesbridge.diagnostics.enso.monthly_std`).
    title : str
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, da in _series(series, "series").items():
        ms = enso.monthly_std(da)
        ax.plot(ms["month"], ms.values, marker="o", label=label)
    ax.set_xticks(range(1, 13), list("JFMAMJJASOND"))
    return _finish(fig, ax, "calendar month", "standard deviation", title)


def plot_spectra(series: Series | xr.DataArray, title: str = "") -> Figure:
    """Welch power spectra against period (years, log axes), dominant period in the legend.

    Parameters
    ----------
    series : xarray.DataArray or mapping of str to xarray.DataArray
        One series, or several by legend label, on ``(*other, time)``; spectra of :func:`~bayesbridge.diagnostics.enso.power_spectrum` (32-year segments, averaged over members).
    title : str
        Title of the axes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, da in _series(series, "series").items():
        spec = enso.power_spectrum(da)
        f = spec.power["frequency"].values
        keep = f > 0
        ax.loglog(1.0 / f[keep], spec.power.values[keep], label=f"{label} (peak {spec.dominant_period:.1f} yr)")
    return _finish(fig, ax, "period (years)", "power spectral density", title)


def plot_hovmoller(
    ssta: xr.DataArray, title: str = "", vmax: float | None = None, member: int | None = 0
) -> Figure:
    """Time-longitude Hovmoller of equatorial SST anomalies; picks ``member`` if present.

    Parameters
    ----------
    ssta : xarray.DataArray
        Anomalies on ``(time, lon)`` or ``(member, time, lon)`` (e.g.
        :func:`bayesbridge.idealized.profiles.equatorial_hovmoller`).
    title : str
        Axes title.
    vmax : float, optional
        Symmetric colour limit; default the 99th percentile of ``|ssta|``.
    member : int, optional
        Position of the member drawn when there is a ``member`` dimension (``None``: the first).

    Returns
    -------
    matplotlib.figure.Figure
        Longitude on x, fractional year on y, diverging colormap centred at 0.
    """
    if not isinstance(ssta, xr.DataArray) or not {"time", "lon"} <= set(ssta.dims):
        raise InputTypeError("ssta: expected a DataArray with 'time' and 'lon' dimensions.")
    if "member" in ssta.dims:
        ssta = ssta.isel(member=member or 0)
    extra = [d for d in ssta.dims if d not in ("time", "lon")]
    if extra:
        raise InputTypeError(f"ssta: expected only 'time' and 'lon' (and 'member') dims, received {ssta.dims}.")
    ssta = ssta.transpose("time", "lon")
    vmax = vmax or float(np.nanpercentile(np.abs(ssta.values), 99)) or 1.0
    years = ssta["time"].dt.year.values + (ssta["time"].dt.month.values - 0.5) / 12.0
    fig, ax = plt.subplots(figsize=(4.5, 6))
    mesh = ax.pcolormesh(ssta["lon"].values, years, ssta.values, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="auto")
    fig.colorbar(mesh, ax=ax, label=ssta.attrs.get("units", "degC"))
    ax.set_xlabel("longitude (degrees east)")
    ax.set_ylabel("year")
    ax.set_title(title)
    fig.tight_layout()
    return fig
