"""What the equatorial profile adds: the demo's run beside its counterpart with ``eq_sst`` toggled.

The demo assimilates the idealized run's box indices and, by default, its equatorial SST profile
``eq_sst`` (:mod:`bayesbridge.idealized.eq_sst`). The ablation assimilates the same run once more
with the profile toggled (dropped when it was observed, added when it was not), with the same
fitted bridge, seed and scoring, so the report can set the two side by side with the pattern
bound (the truth's box indices decoded through the operational patterns,
:func:`~bayesbridge.apps.scoring.pattern_bound_maps`). Each row scores, against the truth, the
std and skewness maps of whole-trajectory draws (representation error included) over the
operational model's RMSE, the Nino 3 skewness error over the operational model's, and in the
synchronized twin the 90 % coverage of every box series. The measured tables on seeds 0-2 are
in ``docs/lab-notes.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bayesbridge.apps.scoring import COVERAGE_BOXES

__all__ = ["AblationRow", "toggled_observables", "score_posterior", "ablation_metrics", "ablation_rows"]

_PREFIX = "twin.ablation."


@dataclass(frozen=True)
class AblationRow:
    """Scores of one assimilated set of observables.

    Attributes
    ----------
    observables : tuple of str
        What was assimilated from the idealized run.
    std_ratio, skew_ratio : float
        Std- and skewness-map RMSE against the truth over the operational model's.
    nino3_skew_error : float
        ``|bridged - truth| / |operational - truth|`` of the Nino 3 skewness.
    coverage : dict of str to float
        90 % coverage of the box series of :data:`~bayesbridge.apps.scoring.COVERAGE_BOXES`
        (synchronized twin), else empty.
    """

    observables: tuple[str, ...]
    std_ratio: float
    skew_ratio: float
    nino3_skew_error: float
    coverage: dict[str, float] = field(default_factory=dict)

    def to_dict(self, label: str) -> dict[str, float]:
        """Flat ``metrics.json`` keys ``twin.ablation.<label>.*``."""
        out = {f"{_PREFIX}{label}.std_ratio": self.std_ratio, f"{_PREFIX}{label}.skew_ratio": self.skew_ratio,
               f"{_PREFIX}{label}.nino3_skew_error": self.nino3_skew_error}
        out.update({f"{_PREFIX}{label}.coverage90_{box}": v for box, v in self.coverage.items()})
        return out


def toggled_observables(observables, profile: str = "eq_sst") -> tuple[str, ...]:
    """``observables`` without ``profile`` when it is there, with it appended when it is not."""
    observables = tuple(observables)
    if profile in observables:
        return tuple(o for o in observables if o != profile)
    return (*observables, profile)


def score_posterior(post, observables, *, n_draws: int, seed: int, truth_maps, operational_maps,
                    truth_nino3_skew: float, operational_nino3_skew: float, idx_truth=None) -> AblationRow:
    """Score one bridged posterior as the demo scores its own (:mod:`bayesbridge.apps.scoring`).

    Parameters
    ----------
    post : Posterior
        The bridged posterior.
    observables : sequence of str
        What it assimilated (a label of the row).
    n_draws, seed : int
        Whole-trajectory draws averaged for the maps (:func:`~bayesbridge.apps.scoring.bridged_maps`
        with ``seed``) and for the Nino 3 skewness (the first ``n_draws``).
    truth_maps, operational_maps : xarray.Dataset
        ``std`` and ``skew`` maps ``(lat, lon)`` of the truth and of the operational model.
    truth_nino3_skew, operational_nino3_skew : float
        Their Nino 3 skewness.
    idx_truth : xarray.Dataset, optional
        The truth's box series (synchronized twin): coverage is scored when given.

    Returns
    -------
    AblationRow
        The row's scores.
    """
    from bayesbridge.apps.scoring import box_coverage, bridged_maps, weighted_rmse
    from bayesbridge.diagnostics import enso

    maps = bridged_maps(post, n_draws, seed)
    ratios = [weighted_rmse(maps[s], truth_maps[s]) / weighted_rmse(operational_maps[s], truth_maps[s])
              for s in ("std", "skew")]
    # the first n_draws draws, as the demo's index statistics (run_demo) take them
    n3 = post.index_draws("nino3").values[:n_draws]
    skew = float(np.mean([enso.skew_kurtosis(row)[0] for row in n3]))
    coverage = box_coverage(post, idx_truth) if idx_truth is not None else {}
    return AblationRow(tuple(observables), float(ratios[0]), float(ratios[1]),
                       abs(skew - truth_nino3_skew) / abs(operational_nino3_skew - truth_nino3_skew), coverage)


def ablation_metrics(run: AblationRow, counterpart: AblationRow, profile: str = "eq_sst") -> dict[str, float]:
    """``metrics.json`` keys of both rows, labelled ``with_<profile>`` and ``without_<profile>``.

    Parameters
    ----------
    run, counterpart : AblationRow
        The demo's run and its counterpart with ``profile`` toggled.
    profile : str
        The toggled observable (default ``"eq_sst"``).

    Returns
    -------
    dict of str to float
        ``twin.ablation.<label>.*`` keys (:meth:`AblationRow.to_dict`).
    """
    out = {}
    for row in (run, counterpart):
        out.update(row.to_dict(("with_" if profile in row.observables else "without_") + profile))
    return out


def ablation_rows(metrics: Mapping[str, float], profile: str = "eq_sst") -> list[str]:
    """The report's markdown table of the ablation, or no lines when it was not run.

    Parameters
    ----------
    metrics : mapping of str to float
        The demo's metrics: ``twin.ablation.*`` (:func:`ablation_metrics`) and
        ``twin.map_rmse.{std,skew}.{operational,pattern_bound}``.
    profile : str
        The toggled observable (default ``"eq_sst"``).

    Returns
    -------
    list of str
        Markdown table lines: one row per run, then the pattern bound.
    """
    labels = [lab for lab in (f"without_{profile}", f"with_{profile}") if f"{_PREFIX}{lab}.std_ratio" in metrics]
    if len(labels) < 2:
        return []

    def cell(key: str) -> str:
        value = metrics.get(key, np.nan)
        return "-" if not np.isfinite(value) else f"{value:.3f}"

    boxes = [b for b in COVERAGE_BOXES if f"{_PREFIX}{labels[0]}.coverage90_{b}" in metrics]
    head = "| observed | std ratio | skewness ratio | Nino 3 skewness error / operational |"
    head += "".join(f" coverage90 {b} |" for b in boxes)
    rows = [head, "|" + "---|" * (4 + len(boxes))]
    for lab in labels:
        name = "box indices" + (f" + {profile}" if lab.startswith("with_") else "")
        rows.append(f"| {name} | {cell(f'{_PREFIX}{lab}.std_ratio')} | {cell(f'{_PREFIX}{lab}.skew_ratio')} | "
                    f"{cell(f'{_PREFIX}{lab}.nino3_skew_error')} |"
                    + "".join(f" {cell(f'{_PREFIX}{lab}.coverage90_{b}')} |" for b in boxes))
    bound = [metrics.get(f"twin.map_rmse.{s}.pattern_bound", np.nan) / metrics.get(f"twin.map_rmse.{s}.operational", np.nan)
             for s in ("std", "skew")]
    rows.append(f"| pattern bound (truth's box indices) | {bound[0]:.3f} | {bound[1]:.3f} | - |" + " - |" * len(boxes))
    return rows
