"""Figures of the explanations in :mod:`bayesbridge.diagnostics.explain`.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no GUI
backend, safe under Agg and in worker processes); save it with ``fig.savefig(path)``. Maps use
a diverging colormap centred at zero (symmetric limits per field variable), longitude and
latitude axes in degrees, and a colorbar labelled with the units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from bayesbridge.diagnostics.explain import GainMaps, LatentIncrements, RegimeComposites
from bayesbridge.errors import InputTypeError, InputValueError
from bayesbridge.plots.layout import fixed_margins, map_axes

__all__ = ["plot_gain_maps", "plot_increment_maps", "plot_increment_shares", "plot_regime_composites"]


def _panel_grid(ds: xr.Dataset, row_dim: str, row_labels: Sequence[str], title: str, cmap: str,
                extra: xr.Dataset | None = None, panel_width: float = 4.2) -> Figure:  # fmt: skip
    """Rows = entries of ``row_dim`` (then ``extra``, a ``(lat, lon)`` dataset), columns = field
    variables, shared symmetric colour scale per column."""
    variables = list(ds.data_vars)
    rows = [ds.isel({row_dim: i}) for i in range(ds.sizes[row_dim])] + ([extra] if extra is not None else [])
    fig = Figure(figsize=(panel_width * len(variables) + 0.6, 1.9 * len(rows) + 0.9))
    axes = fig.subplots(len(rows), len(variables), squeeze=False, sharex=True, sharey=True)
    # room right of each column for its colorbar, tick labels and units
    fixed_margins(fig, left=0.75, right=0.95, bottom=0.55, top=0.65, wspace=0.4, hspace=0.45)
    lon, lat = ds["lon"].values, ds["lat"].values
    for j, v in enumerate(variables):
        da = ds[v]
        values = np.concatenate([np.ravel(r[v].values) for r in rows])
        vmax = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        vmax = vmax if vmax > 0 else 1.0
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
        mesh = None
        for i, r in enumerate(rows):
            ax = axes[i, j]
            mesh = ax.pcolormesh(lon, lat, np.asarray(r[v].values), cmap=cmap, norm=norm, shading="auto")
            ax.set_title(f"{v}: {row_labels[i]}", fontsize=9, y=1.0)
            if j == 0:
                ax.set_ylabel("latitude (°N)")
            if i == len(rows) - 1:
                ax.set_xlabel("longitude (°E)")
        cb = fig.colorbar(mesh, ax=list(axes[:, j]), shrink=0.9, fraction=0.05, pad=0.03)
        cb.set_label(da.attrs.get("units", ""))
    map_axes(axes)
    fig.suptitle(title)
    return fig


def plot_gain_maps(gains: GainMaps, *, month: int | None = None, cmap: str = "RdBu_r") -> Figure:
    """One panel per assimilated index (rows) and field variable (columns).

    Parameters
    ----------
    gains : GainMaps
    month : int, optional
        Calendar month (1..12) of monthly gains; default: the mean over months.
    cmap : str
        Diverging colormap (centred at 0).
    """
    if not isinstance(gains, GainMaps):
        raise InputTypeError(f"gains: expected a GainMaps from gain_maps(), got {type(gains).__name__}.")
    ds = gains.maps
    if "month" in ds.dims:
        if month is None:
            ds = ds.mean("month", keep_attrs=True)
        elif month in range(1, 13):
            ds = ds.sel(month=month)
        else:
            raise InputValueError(f"month: expected an integer in 1..12 or None, got {month!r}.")
    ds, labels = _profiles_summed(ds)
    when = f", month {month}" if month is not None else ""
    return _panel_grid(ds, "index", labels, f"Physical gain ({gains.method}{when})", cmap)


def _profiles_summed(ds: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """Gains with the rows of each profile (``name[coord]``) summed: the gain of a unit innovation
    of the whole profile, one panel instead of one per row; and the panel labels."""
    names = [str(k) for k in ds["index"].values]
    groups = list(dict.fromkeys(n.split("[")[0] for n in names))
    if len(groups) == len(names):
        return ds, [f"unit {k} innovation" for k in names]
    key = xr.DataArray([n.split("[")[0] for n in names], dims="index")
    out = ds.groupby(key.rename("group")).sum("index", keep_attrs=True).rename({"group": "index"}).sel(index=groups)
    out = out.where(ds.isel(index=0).notnull())  # land stays NaN
    labels = [f"unit {k} innovation" if k in names else f"unit {k} profile innovation (all rows)" for k in groups]
    return out, labels


def plot_increment_maps(increments: LatentIncrements, *, cmap: str = "RdBu_r") -> Figure:
    """Leading latent increment directions decoded to maps (one row per direction).

    Parameters
    ----------
    increments : LatentIncrements
        Output of :func:`~bayesbridge.diagnostics.explain.latent_increments` computed with a
        codec (its ``maps`` on ``(mode, lat, lon)`` per field variable).
    cmap : str
        Diverging colormap (centred at 0).

    Returns
    -------
    matplotlib.figure.Figure
        Rows = directions (labelled with their variance share), columns = field variables.
    """
    if not isinstance(increments, LatentIncrements) or increments.maps is None:
        raise InputValueError(
            "increments: expected a LatentIncrements computed with a codec (latent_increments(..., codec))."
        )
    share = increments.direction_share.values
    labels = [f"direction {k} ({100 * s:.0f} %)" for k, s in zip(increments.maps["mode"].values, share, strict=True)]
    return _panel_grid(increments.maps, "mode", labels, "Leading analysis-increment directions (one rms)", cmap)


def plot_increment_shares(increments: LatentIncrements) -> Figure:
    """Bar charts of the increment variance share per latent component and per direction.

    Parameters
    ----------
    increments : LatentIncrements
        Output of :func:`~bayesbridge.diagnostics.explain.latent_increments`
        (``component_share`` on ``latent``, ``direction_share`` on ``mode``).

    Returns
    -------
    matplotlib.figure.Figure
        Two bar charts side by side.
    """
    if not isinstance(increments, LatentIncrements):
        raise InputTypeError(f"increments: expected a LatentIncrements, got {type(increments).__name__}.")
    fig = Figure(figsize=(9, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    fixed_margins(fig, left=0.8, bottom=0.55, top=0.4, wspace=0.25)
    comp = increments.component_share
    ax1.bar(comp["latent"].values, comp.values, color="tab:blue")
    ax1.set_xlabel("latent component")
    ax1.set_ylabel("share of increment variance")
    ax1.set_title("per latent component", y=1.0)
    dirs = increments.direction_share
    ax2.bar(dirs["mode"].values, dirs.values, color="tab:orange")
    ax2.set_xlabel("direction (eigenvector)")
    ax2.set_title("per principal direction", y=1.0)
    ax2.set_xticks(dirs["mode"].values)
    return fig


def plot_regime_composites(composites: RegimeComposites, *, cmap: str = "RdBu_r",
                           contrast: bool = True) -> Figure:  # fmt: skip
    """One row per regime (with its sample count), plus the contrast of the first two.

    Parameters
    ----------
    composites : RegimeComposites
        Output of :func:`~bayesbridge.diagnostics.explain.regime_composites` (maps on
        ``(regime, lat, lon)`` per field variable).
    cmap : str
        Diverging colormap (centred at 0).
    contrast : bool
        Add a last row with the contrast (first regime minus second) when there are at least
        two regimes and the contrast is finite somewhere.

    Returns
    -------
    matplotlib.figure.Figure
        Rows = regimes (then the contrast), columns = field variables.
    """
    if not isinstance(composites, RegimeComposites):
        raise InputTypeError(f"composites: expected a RegimeComposites, got {type(composites).__name__}.")
    ds = composites.composites
    labels = [f"{r} (n = {int(n)})" for r, n in zip(ds["regime"].values, composites.counts.values, strict=True)]
    extra = None
    if contrast and ds.sizes["regime"] >= 2 and np.isfinite(composites.contrast.to_array().values).any():
        extra = composites.contrast
        labels.append(str(extra.attrs.get("description", "contrast")))
    return _panel_grid(ds, "regime", labels, f"Composites: {composites.description}", cmap, extra=extra)
