"""Reconstruction skill of a codec on training and held-out fields.

For each variable ``v`` with area weights :math:`w_j = \\cos\\varphi_j`, reconstruction
:math:`\\hat x = \\mathrm{decode}(\\mathrm{encode}(x))` and the codec's training mean
:math:`\\bar x`:

- explained variance :math:`1 - \\sum_{t,j} w_j (x_{tj} - \\hat x_{tj})^2 /
  \\sum_{t,j} w_j (x_{tj} - \\bar x_j)^2`;
- pattern correlation: the time mean of the area-weighted, spatially centred correlation of
  :math:`x_t - \\bar x` and :math:`\\hat x_t - \\bar x`;
- index skill: Pearson correlation and RMSE of each standard box index (Nino 1+2, 3, 3.4, 4 on
  ``tos``; ``h_w`` on ``zos``) of the reconstruction against that of the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import GridCoverageError, VariableNotFoundError
from bayesbridge.latent.stacking import as_dataset
from bayesbridge.regions import STANDARD_BOXES, get_region

__all__ = ["ReconstructionScores", "ReconstructionReport", "reconstruction_report", "box_operator"]


@dataclass(frozen=True)
class ReconstructionScores:
    """Skill on one set of fields (all values are floats; dict keys are variables or boxes).

    With ``a`` the stacked anomalies and ``b`` their reconstruction ``decode(encode(a))``
    (both relative to the fitted mean) and ``w`` the area weights of the grid points:

    Attributes
    ----------
    explained_variance : dict of str to float
        Per variable, :math:`1 - \\sum w (a - b)^2 / \\sum w a^2` over all times and points.
    pattern_correlation : dict of str to float
        Per variable, the area-weighted spatial correlation of ``a`` and ``b`` (each centred on
        its weighted spatial mean), averaged over time steps.
    index_correlation : dict of str to float
        Per standard box on the grid (:func:`box_operator`), the correlation in time of the
        true and reconstructed box averages.
    index_rmse : dict of str to float
        Per box, the root mean squared error of the reconstructed box average (field units).
    n_time : int
        Number of time steps scored.
    """

    explained_variance: dict[str, float]
    pattern_correlation: dict[str, float]
    index_correlation: dict[str, float]
    index_rmse: dict[str, float]
    n_time: int


@dataclass(frozen=True)
class ReconstructionReport:
    """Reconstruction skill on training and (optionally) held-out fields.

    Attributes
    ----------
    codec : str
        Class name of the codec (``"EOFCodec"``, ``"Autoencoder"``, ``"VAE"``).
    latent_dim : int
        Latent size ``d`` of the codec.
    train : ReconstructionScores
        Skill on the fields the codec was fitted on.
    test : ReconstructionScores or None
        Skill on held-out fields, when given.
    notes : dict of str to str
        Free-form remarks (e.g. settings) shown with the report.
    """

    codec: str
    latent_dim: int
    train: ReconstructionScores
    test: ReconstructionScores | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        """Long table with columns ``split, metric, target, value``."""
        rows = []
        for split, scores in (("train", self.train), ("test", self.test)):
            if scores is None:
                continue
            for metric in ("explained_variance", "pattern_correlation", "index_correlation", "index_rmse"):
                for target, value in getattr(scores, metric).items():
                    rows.append((split, metric, target, value))
        return pd.DataFrame(rows, columns=["split", "metric", "target", "value"])

    def __str__(self) -> str:
        table = self.to_dataframe().pivot_table(index=["metric", "target"], columns="split", values="value")
        return f"{self.codec} (latent_dim={self.latent_dim})\n{table.round(4).to_string()}"


def box_operator(codec, boxes: tuple[str, ...] = STANDARD_BOXES) -> dict[str, np.ndarray]:
    """Rows ``(n_points,)`` of the box-average operators available on a fitted codec's grid.

    ``decode_tensor(z) @ row`` is the box index; boxes whose variable is absent or which the grid
    does not cover are skipped.
    """
    stacker = codec._require_fitted()
    out = {}
    for name in boxes:
        try:
            out[name] = stacker.box_weights(get_region(name))
        except (GridCoverageError, VariableNotFoundError):
            continue
    return out


def _scores(codec, fields: xr.Dataset) -> ReconstructionScores:
    stacker = codec._require_fitted()
    x = stacker.stack(fields)
    z = codec.encode(fields)
    with torch.no_grad():
        xhat = codec.decode_tensor(torch.from_numpy(z.values)).double().cpu().numpy()
    w = stacker.area_weights
    ev, pc = {}, {}
    for name, sl in stacker.slices.items():
        a, b, ww = x[:, sl] - stacker.mean[sl], xhat[:, sl] - stacker.mean[sl], w[sl]
        ev[name] = float(1.0 - np.sum(ww * (a - b) ** 2) / np.sum(ww * a**2))
        ac = a - (a @ ww / ww.sum())[:, None]
        bc = b - (b @ ww / ww.sum())[:, None]
        num = (ac * bc) @ ww
        den = np.sqrt(((ac**2) @ ww) * ((bc**2) @ ww))
        pc[name] = float(np.nanmean(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)))
    corr, rmse = {}, {}
    for box, row in box_operator(codec).items():
        truth, rec = x @ row, xhat @ row
        corr[box] = float(np.corrcoef(truth, rec)[0, 1])
        rmse[box] = float(np.sqrt(np.mean((truth - rec) ** 2)))
    return ReconstructionScores(ev, pc, corr, rmse, int(x.shape[0]))


def reconstruction_report(
    codec, train: xr.Dataset, test: xr.Dataset | None = None
) -> ReconstructionReport:
    """Score ``decode(encode(fields))`` of a fitted codec on training and held-out fields.

    Parameters
    ----------
    codec : Codec
        A fitted :class:`EOFCodec`, :class:`Autoencoder` or :class:`VAE`.
    train : xarray.Dataset
        The fields the codec was fitted on.
    test : xarray.Dataset, optional
        Held-out fields on the same grid (years never seen in fitting).

    Returns
    -------
    ReconstructionReport
    """
    train_scores = _scores(codec, as_dataset(train, "train"))
    test_scores = _scores(codec, as_dataset(test, "test")) if test is not None else None
    return ReconstructionReport(type(codec).__name__, int(codec.latent_dim), train_scores, test_scores)
