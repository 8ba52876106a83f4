"""The bundled calibration posterior of the idealized model's parameters.

:func:`~bayesbridge.idealized.calibrate.calibrate` run against the bundled ERSST v5 / GODAS
indices (1950-2019; ``data/PROVENANCE.md``) gives a posterior over the calibrated fields of
:class:`~bayesbridge.idealized.params.ENSOParameters`. That posterior is the prior of the bridge's
idealized parameters :math:`\\theta` (``docs/design.md`` section 6): parameter uncertainty is
propagated with draws from it (:func:`posterior_parameter_draws`), and the uniform prior box of the
calibration is only used on request.

The file ``data/calibration_posterior.nc`` is the ``calibration.nc`` that the command

.. code-block:: console

    bayesbridge idealized calibrate --out calibration --seed 0

writes (ArviZ groups in one netCDF file; the root attributes of each group record the settings,
the record length and the package version). :func:`calibration_posterior` reads its ``posterior``
group with xarray alone (no arviz import).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesbridge.errors import DataFileError, ParameterError

__all__ = ["CALIBRATION_FILE", "CalibrationPosterior", "calibration_posterior", "posterior_parameter_draws"]

CALIBRATION_FILE = "calibration_posterior.nc"
"""Name of the bundled calibration posterior in the data folder."""

_STREAM = 62  # numpy.random.default_rng([seed, stream]) stream of the posterior draws


@dataclass(frozen=True)
class CalibrationPosterior:
    """The bundled calibration posterior.

    Attributes
    ----------
    draws : pandas.DataFrame
        ``(draw, parameter)``: the pooled chains, chain-major.
    provenance : dict
        How it was made: method, record length in years, calibrated parameters, prior box,
        design and sampler settings, seed, package version.
    """

    draws: pd.DataFrame
    provenance: dict

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the calibrated parameters."""
        return tuple(str(c) for c in self.draws.columns)


def calibration_posterior() -> CalibrationPosterior:
    """Read the bundled calibration posterior (``data/calibration_posterior.nc``).

    Returns
    -------
    CalibrationPosterior

    Raises
    ------
    DataFileError
        If the file is missing or has no ``posterior`` group of scalar parameters.
    """
    import xarray as xr

    from bayesbridge.datasets.observed import data_path

    path = data_path(CALIBRATION_FILE)
    try:
        with xr.open_dataset(path, group="posterior") as ds:
            posterior = ds.load()
    except (OSError, ValueError) as exc:
        raise DataFileError(
            f"{path}: cannot read its 'posterior' group ({type(exc).__name__}); restore the file from "
            f"the repository or rebuild it with `bayesbridge idealized calibrate` (data/PROVENANCE.md)."
        ) from exc
    names = [str(v) for v in posterior.data_vars if set(posterior[v].dims) == {"chain", "draw"}]
    if not names:
        raise DataFileError(f"{path}: the posterior group holds no (chain, draw) parameters.")
    frame = pd.DataFrame({n: posterior[n].transpose("chain", "draw").values.reshape(-1) for n in names})
    frame.index.name = "draw"
    return CalibrationPosterior(draws=frame, provenance=dict(posterior.attrs))


def posterior_parameter_draws(k: int, seed: int) -> pd.DataFrame:
    """``k`` parameter vectors from the bundled calibration posterior, ``(draw, parameter)``.

    Draws are picked without replacement (with replacement if ``k`` exceeds the stored draws)
    by stream 62 of ``numpy.random.default_rng([seed, stream])``, so the same seed gives the same
    draws.

    Parameters
    ----------
    k : int
        Number of draws (>= 1).
    seed : int
        Seed of the selection.

    Returns
    -------
    pandas.DataFrame
        One row per draw, one column per calibrated parameter.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ParameterError(f"k: expected an integer >= 1, got {k!r}.")
    draws = calibration_posterior().draws
    rng = np.random.default_rng([seed, _STREAM])
    pick = rng.choice(len(draws), size=int(k), replace=int(k) > len(draws))
    return draws.iloc[pick].reset_index(drop=True)
