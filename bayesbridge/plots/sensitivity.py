"""Figure of Sobol sensitivity indices (first and total order with confidence intervals)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from bayesbridge.errors import InputTypeError, InputValueError

__all__ = ["plot_sobol"]


def plot_sobol(result, outputs: Sequence[str] | None = None) -> Figure:
    """Bar chart of first- and total-order indices with their confidence intervals.

    Parameters
    ----------
    result : SobolResult
        Indices from :func:`bayesbridge.apps.sobol.run_sobol` (or :func:`~bayesbridge.apps.sobol.sobol_analyze`).
    outputs : sequence of str, optional
        Outputs to show, one panel each (default: all).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import seaborn as sns

    if not all(hasattr(result, a) for a in ("indices", "problem", "conf_level")):
        raise InputTypeError(f"result: expected a SobolResult (bayesbridge.apps.sobol.run_sobol), got {type(result).__name__}.")
    names = list(result.indices["output"].values)
    chosen = names if outputs is None else list(outputs)
    missing = [o for o in chosen if o not in names]
    if missing or not chosen:
        raise InputValueError(f"outputs {missing or chosen} are not among the results {names}.")
    params = list(result.problem.names)
    colors = sns.color_palette("colorblind", 2)
    fig = Figure(figsize=(1.2 + 0.9 * len(params) * len(chosen), 3.4), layout="constrained")
    axes = fig.subplots(1, len(chosen), squeeze=False, sharey=True)[0]
    x = np.arange(len(params))
    for ax, out in zip(axes, chosen, strict=True):
        sel = result.indices.sel(output=out)
        for k, (key, label) in enumerate((("S1", "first order $S_i$"),
                                           ("ST", "total order $S_{Ti}$"))):
            ax.bar(x + (k - 0.5) * 0.38, sel[key].values, width=0.38, color=colors[k],
                   yerr=sel[f"{key}_conf"].values, capsize=3, label=label)
        ax.set_xticks(x, params, rotation=30, ha="right")
        ax.set_title(out)
        ax.axhline(0.0, color="0.3", lw=0.8)
    axes[0].set_ylabel(f"Sobol index ({result.conf_level:.0%} CI)")
    axes[0].legend(frameon=False, fontsize="small")
    return fig
