"""Figures of the demo report: statistic maps, index posteriors and index PDFs of the twin experiment.

Every figure is a function returning a matplotlib Figure (matplotlib picks a non-interactive
backend when there is no screen), so notebooks show the same pictures the report embeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from bayesbridge.plots.layout import fixed_margins, map_axes

__all__ = [
    "plot_equatorial_hovmoller","SOURCES", "plot_statistic_maps", "plot_index_posterior", "plot_index_pdfs", "save_figure"]

SOURCES: tuple[str, ...] = ("truth", "operational", "bridged")
"""The three sources compared in every figure, in panel order."""


def save_figure(fig, path: Path) -> Path:
    """Save atomically as PNG and close the figure.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (closed after saving if pyplot made it); saved at 110 dpi as it is laid out
        (no second, 'tight' draw).
    path : pathlib.Path
        Destination; parent folders are created.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from bayesbridge.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    # bayesbridge's figures fit their labels (fixed margins or a layout engine): a "tight"
    # bounding box would only draw them a second time
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    if getattr(fig.canvas, "manager", None) is not None:  # a pyplot figure: release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def plot_statistic_maps(maps: dict[str, xr.Dataset], variable_label: str = "SST anomaly"):
    """Std (degC) and skewness maps of truth, operational and bridged fields (2 x 3 panels).

    Parameters
    ----------
    maps : dict of str to xarray.Dataset
        Keys ``truth``, ``operational``, ``bridged``; each Dataset holds ``std`` and ``skew``
        on ``(lat, lon)``. Colour limits are shared per row (99.5th percentile of the std,
        symmetric 99th percentile of ``|skew|``).
    variable_label : str
        Name of the mapped quantity in the panel titles.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(15, 6.2))
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    fixed_margins(fig, right=0.9, top=0.4, wspace=0.08, hspace=0.3)
    for row, (stat, cmap, label) in enumerate(
        (("std", "viridis", "standard deviation (degC)"), ("skew", "RdBu_r", "skewness"))
    ):
        vals = np.concatenate([np.ravel(maps[s][stat].values) for s in SOURCES])
        vals = vals[np.isfinite(vals)]
        if stat == "skew":
            vmax = float(np.nanpercentile(np.abs(vals), 99)) if vals.size else 1.0
            vmin = -vmax
        else:
            vmin, vmax = 0.0, float(np.nanpercentile(vals, 99.5)) if vals.size else 1.0
        for col, src in enumerate(SOURCES):
            ax = axes[row, col]
            da = maps[src][stat]
            mesh = ax.pcolormesh(da["lon"], da["lat"], da.values, cmap=cmap, vmin=vmin, vmax=vmax, shading="auto")
            ax.set_title(f"{src}: {variable_label} {stat}", y=1.0)
            if row == 1:
                ax.set_xlabel("longitude (degrees east)")
            if col == 0:
                ax.set_ylabel("latitude (degrees north)")
        fig.colorbar(mesh, ax=axes[row, :], label=label, shrink=0.9, fraction=0.03, pad=0.015)
    map_axes(axes)
    return fig


def plot_index_posterior(summary: xr.Dataset, truth: xr.DataArray, box: str = "nino34", last_months: int = 360):
    """Posterior mean and 90 % band of an index against the truth (and observations if any).

    Parameters
    ----------
    summary : xarray.Dataset
        Posterior summary on ``time`` (monthly) with ``<box>_mean``, ``<box>_q05``,
        ``<box>_q95`` and optionally ``<box>_obs``.
    truth : xarray.DataArray
        True index on the same ``time`` steps.
    box : str
        Index name (e.g. ``"nino34"``).
    last_months : int
        Number of final months drawn; the x axis is years since the start of the run.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = summary.sizes["time"]
    sl = slice(max(0, n - last_months), n)
    t = np.arange(n)[sl] / 12.0
    fig = Figure(figsize=(12, 3.8))
    ax = fig.subplots()
    fixed_margins(fig, left=0.75, bottom=0.55, top=0.4)
    ax.fill_between(t, summary[f"{box}_q05"].values[sl], summary[f"{box}_q95"].values[sl],
                    color="tab:blue", alpha=0.3, label="90 % posterior interval")
    ax.plot(t, summary[f"{box}_mean"].values[sl], color="tab:blue", lw=1.2, label="posterior mean")
    ax.plot(t, np.asarray(truth.values)[sl], color="k", lw=1.0, label="truth")
    if f"{box}_obs" in summary:
        ax.plot(t, summary[f"{box}_obs"].values[sl], ".", color="tab:red", ms=2.5, label="assimilated")
    units = summary[f"{box}_mean"].attrs.get("units", "")
    ax.set_xlabel("years since start of run")
    ax.set_ylabel(f"{box} anomaly ({units})")
    ax.legend(loc="upper left", ncol=4, fontsize=8)
    ax.set_title(f"{box}: posterior against truth (last {last_months // 12} years)", y=1.0)
    return fig


def plot_index_pdfs(series: dict[str, np.ndarray], box: str = "nino3"):
    """Kernel density of an index for several sources (truth, operational, bridged draws).

    Parameters
    ----------
    series : dict of str to ndarray
        Values per source (any shape, flattened), e.g. ``{"truth": (time,), "bridged": (draw,
        time)}``; ``truth``, ``operational`` and ``bridged`` get fixed colours.
    box : str
        Index name for the axis label and title.

    Returns
    -------
    matplotlib.figure.Figure
        Densities on a logarithmic y axis (tails visible).
    """
    import seaborn as sns

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    fixed_margins(fig, left=0.75, bottom=0.55, top=0.4)
    colors = {"truth": "k", "operational": "tab:orange", "bridged": "tab:blue"}
    for name, values in series.items():
        sns.kdeplot(np.ravel(values), ax=ax, label=name, color=colors.get(name), lw=1.6)
    ax.set_xlabel(f"{box} anomaly (degC)")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, None)
    ax.legend()
    ax.set_title(f"{box} distribution (log scale: tails)", y=1.0)
    return fig


def plot_equatorial_hovmoller(sections: dict[str, xr.DataArray], last_months: int = 120, cmap: str = "RdBu_r"):
    """Time-longitude (Hovmoeller) diagrams of the equatorial SST anomaly, one panel per source.

    Parameters
    ----------
    sections : dict of str to xarray.DataArray
        The 5S-5N mean SST anomaly on ``(time, lon)`` per source (e.g. ``truth``,
        ``operational``, ``bridged``), monthly, same length; one shared symmetric colour scale.
    last_months : int
        Number of final months drawn; the y axis is years since the start of the run.
    cmap : str
        Diverging colormap (centred at 0).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import TwoSlopeNorm

    fig = Figure(figsize=(3.6 * len(sections) + 1.2, 6.0))
    axes = fig.subplots(1, len(sections), squeeze=False, sharey=True)[0]
    fixed_margins(fig, left=0.75, right=1.0, bottom=0.55, top=0.65, wspace=0.25)
    cut = {k: v.isel(time=slice(max(0, v.sizes["time"] - last_months), None)) for k, v in sections.items()}
    vmax = max(float(np.nanmax(np.abs(v.values))) for v in cut.values()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    mesh = None
    for ax, (name, da) in zip(axes, cut.items(), strict=True):
        years = np.arange(da.sizes["time"]) / 12.0
        mesh = ax.pcolormesh(da["lon"].values, years, np.asarray(da.transpose("time", "lon").values), cmap=cmap,
                             norm=norm, shading="auto")
        ax.set_title(name, y=1.0)
        ax.set_xlabel("longitude (°E)")
    axes[0].set_ylabel(f"years (last {last_months // 12})")
    units = next(iter(sections.values())).attrs.get("units", "degC")
    fig.colorbar(mesh, ax=list(axes), shrink=0.9, fraction=0.04, pad=0.02).set_label(f"SST anomaly ({units})")
    fig.suptitle("Equatorial (5S-5N) SST anomaly")
    return fig
