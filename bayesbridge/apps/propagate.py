"""Idealized-model parameter uncertainty propagated through the bridge (``docs/design.md`` section 5).

The bridged posterior conditioned on the idealized model's parameter posterior
:math:`p(\\theta \\mid D)` (from :func:`bayesbridge.idealized.calibrate.calibrate`) is the mixture

.. math::

    p(x \\mid D) = \\int p\\big(x \\mid y(\\theta)\\big)\\, p(\\theta \\mid D)\\, d\\theta
    \\approx \\frac{1}{K} \\sum_{k=1}^{K} p\\big(x \\mid y^{(k)}\\big),
    \\qquad y^{(k)} \\sim \\text{MultiscaleENSO}(\\theta^{(k)}),

with :math:`\\theta^{(k)}` ``K`` posterior draws (evenly thinned) and :math:`y^{(k)}` one
idealized run per draw (``nino3``, ``nino4``, ``h_w``). All ``K`` runs are assimilated as ONE
batched call of :meth:`bayesbridge.bridge.Bridge.assimilate` (observations ``(run, T, m)``), whose
:class:`~bayesbridge.bridge.posterior.Posterior` pools the ``K x members`` whole-trajectory draws; by the
law of total variance its spread is the mean within-run spread plus the spread of the run means,
the latter being the part due to the parameters (and to the runs' internal variability).

The per-draw statistics (:func:`bayesbridge.apps.scoring.index_statistics`: Nino 3 skewness, event
rates, ...) of the simulated runs and of the bridged runs show how much each statistic moves
with the parameters.

References: Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16; Behnoudfar et al.,
arXiv 2510.13030.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
    check_choice,
)

__all__ = [
    "PARAMETER_SOURCES",
    "ParameterPropagation",
    "propagate_parameter_uncertainty",
    "parameter_draws",
    "parameter_table",
    "prior_parameter_draws",
    "thin_indices",
]

ParameterSource = Literal["posterior", "prior"]
PARAMETER_SOURCES: tuple[str, ...] = get_args(ParameterSource)
"""Where parameter draws come from: the bundled calibration posterior or the prior box."""

_SIMULATED = ("nino3", "nino4", "h_w")


def _parameter_names() -> tuple[str, ...]:
    from bayesbridge.idealized.params import ENSOParameters

    return tuple(f.name for f in dataclasses.fields(ENSOParameters) if f.name != "variant")


def prior_parameter_draws(k: int, seed: int):
    """``k`` MultiscaleENSO parameter vectors from the calibration's prior, ``(draw, parameter)``.

    Uniform draws from the prior box of :func:`bayesbridge.idealized.calibrate.calibrate` for its
    default calibrated parameters
    (:data:`~bayesbridge.idealized.calibrate.DEFAULT_PRIORS`: ``f`` 0.5-0.8, ``wind_amp``
    0.6-1.2, ``noise_scale`` 0.5-1.5, ``m`` 1.5-2.5), a box centred on the published 2024 values
    (0.65, 0.9, 1, 2). Stream 61 of ``numpy.random.default_rng([seed, stream])``. The default of
    the demo is the calibration posterior instead (:func:`parameter_draws`).

    Parameters
    ----------
    k : int
        Number of draws (>= 1).
    seed : int
        Seed of the draws.

    Returns
    -------
    pandas.DataFrame
        One row per draw, one column per parameter.
    """
    from bayesbridge.idealized.calibrate import DEFAULT_PRIORS, CalibrationConfig

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ParameterError(f"k: expected an integer >= 1, got {k!r}.")
    rng = np.random.default_rng([seed, 61])
    names = CalibrationConfig().parameters
    return pd.DataFrame({n: rng.uniform(*DEFAULT_PRIORS[n], size=k) for n in names})


def parameter_draws(k: int, seed: int, source: str = "posterior") -> pd.DataFrame:
    """``k`` idealized-parameter vectors, ``(draw, parameter)``, from the posterior or the prior.

    Parameters
    ----------
    k, seed : int
        Number of draws (>= 1) and their seed.
    source : {"posterior", "prior"}
        ``posterior``: the bundled calibration posterior
        (:func:`bayesbridge.idealized.calibrated.posterior_parameter_draws`); ``prior``: the
        calibration's uniform prior box (:func:`prior_parameter_draws`).
    """
    check_choice(source, "source", PARAMETER_SOURCES)
    if source == "prior":
        return prior_parameter_draws(k, seed)
    from bayesbridge.idealized.calibrated import posterior_parameter_draws

    return posterior_parameter_draws(k, seed)


def parameter_table(parameter_draws) -> pd.DataFrame:
    """Parameter draws as a table ``(draw, parameter)`` of float64.

    Parameters
    ----------
    parameter_draws : CalibrationResult, ArviZ InferenceData / DataTree, xarray.Dataset, pandas.DataFrame or mapping
        Draws of :class:`~bayesbridge.idealized.params.ENSOParameters` fields: a
        :class:`~bayesbridge.idealized.calibrate.CalibrationResult` (its ``posterior``), an
        ArviZ container (its ``posterior`` group), a Dataset of scalar-per-draw variables on
        any sample dimensions (e.g. ``(chain, draw)``, stacked chain-major), a DataFrame with
        one row per draw, or a mapping of name to equally long arrays.

    Returns
    -------
    pandas.DataFrame
        One row per draw (``RangeIndex`` named ``draw``), one column per parameter.
    """
    obj = parameter_draws
    if not isinstance(obj, xr.Dataset | pd.DataFrame) and hasattr(obj, "posterior"):
        obj = obj.posterior  # CalibrationResult (DataFrame), InferenceData (Dataset), DataTree (node)
    if not isinstance(obj, xr.Dataset | pd.DataFrame) and hasattr(obj, "to_dataset"):
        obj = obj.to_dataset()  # a DataTree node
    if isinstance(obj, xr.Dataset):
        dims = {tuple(obj[v].dims) for v in obj.data_vars}
        if len(dims) > 1:
            raise ShapeMismatchError(
                f"parameter_draws: expected every parameter on the same sample dimensions, got "
                f"{ {str(v): obj[v].dims for v in obj.data_vars} }; select scalar parameters only."
            )
        frame = obj.to_dataframe().reset_index(drop=True) if obj.data_vars else pd.DataFrame()
    elif isinstance(obj, pd.DataFrame):
        frame = obj.reset_index(drop=True)
    elif isinstance(obj, Mapping):
        arrays = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in obj.items()}
        sizes = {k: a.size for k, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ShapeMismatchError(f"parameter_draws: expected arrays of one length, got sizes {sizes}.")
        frame = pd.DataFrame(arrays)
    else:
        raise InputTypeError(
            f"parameter_draws: expected a CalibrationResult, an ArviZ posterior, an xarray Dataset, a "
            f"pandas DataFrame or a mapping of parameter name to draws, got {type(parameter_draws).__name__}."
        )
    valid = _parameter_names()
    unknown = [str(c) for c in frame.columns if c not in valid]
    if unknown:
        raise ParameterError(
            f"parameter_draws: {unknown} are not MultiscaleENSO parameters; valid names are "
            f"{', '.join(valid)}. Drop the other variables first."
        )
    if frame.empty or frame.shape[1] == 0:
        raise InputValueError("parameter_draws: no draws given; pass at least one draw of one parameter.")
    frame = frame.astype("float64")
    if not np.isfinite(frame.to_numpy()).all():
        raise InputValueError("parameter_draws: contain NaN or inf; pass finite draws.")
    frame.index.name = "draw"
    return frame


def thin_indices(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced indices of ``0..n-1`` (first and last included), ``(k,)`` int.

    Evenly spaced thinning of a chain-major sample keeps draws far apart in each chain (less
    autocorrelated) and spreads them over the chains.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ParameterError(f"draws: expected an integer in 1..{n} (the number of available draws), got {k!r}.")
    return np.linspace(0, n - 1, int(k)).round().astype(int)


@dataclass
class ParameterPropagation:
    """What :func:`propagate_parameter_uncertainty` returns.

    Attributes
    ----------
    bridge_result : BridgeResult
        The batched assimilation; ``bridge_result.posterior`` pools ``run x member`` draws
        (draw ``i = run * members + m``).
    parameters : pandas.DataFrame
        The ``K`` parameter draws used, ``(run, parameter)``.
    seed : int
        The master seed; run ``k`` was simulated with ``SeedSequence(seed).spawn(K)[k]``.
    runs : xarray.Dataset
        The simulated indices on ``(run, time)`` that were assimilated.
    statistics : pandas.DataFrame
        :func:`~bayesbridge.apps.scoring.index_statistics` of each simulated run, ``(run, statistic)``.
    bridged_draw_statistics : pandas.DataFrame
        The same statistics of ``stat_draws`` bridged Nino 3 / Nino 4 draws of each run,
        ``((run, draw), statistic)``; :attr:`bridged_statistics` averages them per run.
    source : str
        Where the parameter draws came from: ``posterior`` (the bundled calibration posterior),
        ``prior`` (the prior box) or ``given`` (passed by the caller, the default).
    """

    bridge_result: object = field(repr=False)
    parameters: pd.DataFrame
    seed: int
    runs: xr.Dataset = field(repr=False)
    statistics: pd.DataFrame
    bridged_draw_statistics: pd.DataFrame
    source: str = "given"

    @property
    def bridged_statistics(self) -> pd.DataFrame:
        """The bridged statistics averaged over the draws of each run, ``(run, statistic)``."""
        return self.bridged_draw_statistics.groupby(level="run").mean()

    @property
    def posterior(self):
        """The pooled :class:`~bayesbridge.bridge.posterior.Posterior`."""
        return self.bridge_result.posterior

    def spread(self, source: str = "bridged") -> pd.DataFrame:
        """Mean and 5/95 % quantiles over the runs of each statistic, ``(statistic, [mean, q05, q95])``.

        Parameters
        ----------
        source : {"bridged", "idealized"}
            Statistics of the bridged draws or of the simulated idealized runs.
        """
        if source not in ("bridged", "idealized"):
            raise ParameterError(f"source: expected one of bridged, idealized, got {source!r}.")
        table = self.bridged_statistics if source == "bridged" else self.statistics
        return pd.DataFrame({"mean": table.mean(), "q05": table.quantile(0.05), "q95": table.quantile(0.95)})

    def variance_split(self) -> pd.DataFrame:
        """Each bridged statistic's variance split by the law of total variance, ``(statistic, part)``.

        With :math:`s_{ki}` the statistic of draw :math:`i` of run :math:`k` (parameter vector
        :math:`\\theta^{(k)}`),

        .. math::

            \\operatorname{Var}(s) = \\underbrace{\\operatorname{Var}_k\\big(\\bar s_{k\\cdot}\\big)}_{\\text{between}}
            + \\underbrace{\\operatorname{E}_k\\big[\\operatorname{Var}_i(s_{ki})\\big]}_{\\text{within}},

        population variances (``ddof = 0``), so the parts add up to ``total`` exactly. ``between``
        holds the parameters' share (and each run's own internal variability), ``within`` the
        assimilation's posterior spread given the run.

        Returns
        -------
        pandas.DataFrame
            Columns ``total``, ``between``, ``within``, ``between_fraction``; one row per statistic.
        """
        grouped = self.bridged_draw_statistics.groupby(level="run")
        between = grouped.mean().var(ddof=0)
        within = grouped.var(ddof=0).mean()
        total = between + within
        fraction = (between / total.where(total > 0)).fillna(0.0)
        return pd.DataFrame({"total": total, "between": between, "within": within, "between_fraction": fraction})


def propagate_parameter_uncertainty(
    bridge,
    parameter_draws,
    years: int,
    *,
    seed: int,
    start: int = 1,
    draws: int | None = None,
    variables: Sequence[str] = _SIMULATED,
    burn_in_years: int = 20,
    stat_draws: int = 20,
    progress: bool = False,
) -> ParameterPropagation:
    """Simulate the idealized model at parameter draws and assimilate all runs as one batch.

    Parameters
    ----------
    bridge : Bridge
        A fitted :class:`~bayesbridge.bridge.Bridge`.
    parameter_draws : CalibrationResult, ArviZ posterior, Dataset, DataFrame or mapping
        Draws of :class:`~bayesbridge.idealized.params.ENSOParameters` fields (see
        :func:`parameter_table`); fields not drawn keep the published values.
    years : int
        Length of each run (>= 2).
    seed : int
        Master seed: run ``k`` uses ``SeedSequence(seed).spawn(K)[k]``, the assimilation uses
        ``seed``. The same seed gives the same runs and posterior.
    start : int
        Calendar year of the first month (January, the model's ``t = 0``) of the monthly
        ``noleap`` time axis.
    draws : int, optional
        Thin to this many draws ``K`` (evenly spaced, :func:`thin_indices`); default all.
    variables : sequence of str
        Indices of each run to assimilate (from ``nino3``, ``nino4``, ``h_w``).
    burn_in_years : int
        Spin-up of each run (discarded).
    stat_draws : int
        Posterior draws per run averaged for :attr:`ParameterPropagation.bridged_statistics`.
    progress : bool
        Progress bar (tqdm) over the simulations.

    Returns
    -------
    ParameterPropagation
    """
    from tqdm.auto import tqdm

    from bayesbridge.apps.scoring import STATS, index_statistics
    from bayesbridge.idealized import MultiscaleENSO
    from bayesbridge.idealized.params import ENSOParameters

    if isinstance(years, bool) or not isinstance(years, int | np.integer) or years < 2:
        raise ParameterError(f"years: expected an integer >= 2, got {years!r}.")
    if isinstance(stat_draws, bool) or not isinstance(stat_draws, int | np.integer) or stat_draws < 1:
        raise ParameterError(f"stat_draws: expected an integer >= 1, got {stat_draws!r}.")
    variables = list(variables)
    bad = [v for v in variables if v not in _SIMULATED]
    if bad or not variables:
        raise VariableNotFoundError(
            f"variables: expected a non-empty selection of {', '.join(_SIMULATED)} (the simulated "
            f"indices that can be assimilated), got {variables}."
        )
    table = parameter_table(parameter_draws)
    if draws is not None:
        table = table.iloc[thin_indices(len(table), draws)].reset_index(drop=True)
    table.index.name = "run"
    children = np.random.SeedSequence(seed).spawn(len(table))
    runs, stats = [], []
    for k, child in enumerate(tqdm(children, desc="simulating parameter draws", unit="run", disable=not progress)):
        try:
            params = ENSOParameters().replace(**table.iloc[k].to_dict())
        except ParameterError as err:
            raise ParameterError(f"parameter_draws: draw {k} is not a valid parameter set: {err}") from err
        sim = MultiscaleENSO(params).simulate(int(years), members=1, seed=child,
                                              burn_in_years=burn_in_years, start_year=start)
        sim = sim.isel(member=0, drop=True)
        runs.append(sim[variables])
        stats.append(index_statistics(sim["nino3"].values, sim["nino4"].values, sim["time"].values))
    ensemble = xr.concat(runs, dim="run", combine_attrs="drop").assign_coords(run=np.arange(len(runs)))
    result = bridge.assimilate(ensemble, seed=seed)
    post = result.posterior
    members = post.n_draws // len(runs)
    n3, n4 = post.index_draws("nino3").values, post.index_draws("nino4").values
    time = ensemble["time"].values
    per_run = min(stat_draws, members)
    rows = [index_statistics(n3[k * members + i], n4[k * members + i], time)
            for k in range(len(runs)) for i in range(per_run)]  # fmt: skip
    draw_stats = pd.DataFrame(rows, index=pd.MultiIndex.from_product([range(len(runs)), range(per_run)],
                                                                     names=["run", "draw"]))[list(STATS)]
    index = pd.RangeIndex(len(runs), name="run")
    return ParameterPropagation(
        bridge_result=result,
        parameters=table,
        seed=int(seed),
        runs=ensemble,
        statistics=pd.DataFrame(stats, index=index)[list(STATS)],
        bridged_draw_statistics=draw_stats,
    )
