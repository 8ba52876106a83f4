"""Global variance-based (Sobol) sensitivity analysis with SALib, evaluated through dask.

For a model output :math:`Y = f(X_1, \\dots, X_D)` with independent inputs, uniform on their
bounds, the first-order and total-order Sobol indices of input :math:`i` are

.. math::

    S_i = \\frac{\\operatorname{Var}_{X_i}\\big(\\mathbb{E}[Y \\mid X_i]\\big)}{\\operatorname{Var}(Y)},
    \\qquad
    S_{T_i} = \\frac{\\mathbb{E}_{X_{\\sim i}}\\big(\\operatorname{Var}[Y \\mid X_{\\sim i}]\\big)}
                   {\\operatorname{Var}(Y)},

the share of the output variance explained by :math:`X_i` alone and by :math:`X_i` with all its
interactions (Sobol 2001). They are estimated from :math:`N (D + 2)` model runs
(:math:`N (2D + 2)` with second-order indices :math:`S_{ij}`) on Saltelli's scheme over a scrambled
Sobol' sequence (Saltelli 2002; Saltelli et al. 2010), with bootstrap confidence intervals. ``N``
must be a power of two for the Sobol' sequence to keep its balance properties (Owen 2020).

:func:`run_sobol` samples, evaluates the model on the samples with
:func:`bayesbridge.parallel.map_tasks` (a dask cluster, or serially), and analyses the outputs;
:class:`SobolResult` holds indices, samples and outputs and converts to pandas/xarray;
:func:`bayesbridge.plots.sensitivity.plot_sobol` draws the indices with their confidence intervals.

References
----------
I. M. Sobol (2001), Math. Comput. Simul. 55, 271-280, doi:10.1016/S0378-4754(00)00270-6.
A. Saltelli (2002), Comput. Phys. Commun. 145, 280-297, doi:10.1016/S0010-4655(02)00280-1.
A. Saltelli et al. (2010), Comput. Phys. Commun. 181, 259-270, doi:10.1016/j.cpc.2009.09.018.
A. B. Owen (2020), On dropping the first Sobol' point, arXiv:2008.08051.
J. Herman and W. Usher (2017), SALib, J. Open Source Softw. 2(9), 97, doi:10.21105/joss.00097.
"""

from __future__ import annotations

import functools
import keyword
import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
)
from bayesbridge.parallel import map_tasks

__all__ = ["SobolProblem", "SobolResult", "SobolFiles", "sobol_sample", "sobol_analyze",
           "run_sobol"]

_FIRST_TOTAL = ("S1", "S1_conf", "ST", "ST_conf")


@dataclass(frozen=True)
class SobolProblem:
    """Inputs of a sensitivity analysis: names and uniform bounds.

    Parameters
    ----------
    names : sequence of str
        Input names, unique valid Python identifiers (they are the model's keyword arguments;
        ``seed`` is reserved).
    bounds : sequence of (float, float)
        ``(lower, upper)`` per input, finite with ``lower < upper``; input ``i`` is uniform on it.
    """

    names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not isinstance(self.names, Sequence):
            raise InputTypeError(f"names must be a sequence of strings; received {self.names!r}.")
        names = tuple(self.names)
        if not names:
            raise InputValueError("names is empty; expected at least one input parameter.")
        for name in names:
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise InputValueError(
                    f"names: {name!r} is not a valid Python identifier; parameter names are passed "
                    "to the model as keyword arguments (e.g. 'obs_error').")
        if "seed" in names:
            raise InputValueError("names: 'seed' is reserved for the per-run seed; rename it.")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InputValueError(f"names must be unique; {dupes} appear more than once.")
        try:
            bounds = np.asarray(self.bounds, dtype=float)
        except (TypeError, ValueError) as exc:
            raise InputTypeError(
                f"bounds must be (lower, upper) pairs of numbers; received {self.bounds!r}."
            ) from exc
        if bounds.shape != (len(names), 2):
            raise InputValueError(
                f"bounds must have one (lower, upper) pair per name, shape ({len(names)}, 2); "
                f"received shape {bounds.shape}.")
        for name, (lo, hi) in zip(names, bounds, strict=True):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ParameterError(
                    f"bounds of {name!r} must be finite with lower < upper; received "
                    f"({lo}, {hi}). Give the range the parameter is varied over, e.g. (0.5, 2.0).")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "bounds", tuple((float(lo), float(hi)) for lo, hi in bounds))

    @classmethod
    def from_bounds(cls, bounds: Mapping[str, tuple[float, float]]) -> SobolProblem:
        """Build from ``{"name": (lower, upper), ...}`` (insertion order is kept).

        Parameters
        ----------
        bounds : mapping of str to (float, float)
            Uniform range of each input, by name.

        Returns
        -------
        SobolProblem
            Validated like the constructor.
        """
        if not isinstance(bounds, Mapping):
            raise InputTypeError("bounds must be a mapping of name to (lower, upper); received a "
                                 f"{type(bounds).__name__}.")
        return cls(tuple(bounds), tuple(tuple(b) for b in bounds.values()))

    @property
    def num_vars(self) -> int:
        """Number of inputs ``D``."""
        return len(self.names)

    def to_salib(self) -> dict[str, Any]:
        """The problem dictionary SALib expects."""
        return {"num_vars": self.num_vars, "names": list(self.names),
                "bounds": [list(b) for b in self.bounds]}

    def n_runs(self, n: int, calc_second_order: bool = False) -> int:
        """Model runs of a Sobol analysis with base sample ``n``: ``n (D+2)`` or ``n (2D+2)``.

        Saltelli's scheme evaluates matrices A, B and ``D`` mixed matrices (``2D`` with
        ``calc_second_order=True``), each of ``n`` rows.

        Parameters
        ----------
        n : int
            Base sample size.
        calc_second_order : bool
            Whether second-order indices are estimated.

        Returns
        -------
        int
        """
        return n * ((2 * self.num_vars + 2) if calc_second_order else (self.num_vars + 2))


@dataclass(frozen=True)
class SobolFiles:
    """Paths written by :meth:`SobolResult.save`.

    Attributes
    ----------
    netcdf : pathlib.Path
        ``sobol_indices.nc``: indices, samples and model outputs.
    csv : pathlib.Path
        ``sobol_indices.csv``: the indices as a table.
    figure : pathlib.Path
        ``figures/sobol_indices.png``: bar chart of the indices.
    """

    netcdf: Path
    csv: Path
    figure: Path


@dataclass(frozen=True)
class SobolResult:
    """Sobol indices with bootstrap confidence intervals, and the runs they came from.

    Attributes
    ----------
    problem : SobolProblem
    indices : xarray.Dataset
        ``S1``, ``S1_conf``, ``ST``, ``ST_conf`` on ``(output, parameter)``; with second-order
        indices also ``S2``, ``S2_conf`` on ``(output, parameter, parameter_j)`` (upper triangle,
        NaN elsewhere). ``*_conf`` is the half-width of the ``conf_level`` bootstrap interval.
    samples : pandas.DataFrame
        The ``n_runs x D`` input samples, in evaluation order.
    outputs : xarray.Dataset
        Model outputs along ``sample`` (one scalar variable per output).
    n : int
        Base sample size (a power of two).
    calc_second_order : bool
    conf_level : float
    """

    problem: SobolProblem
    indices: xr.Dataset
    samples: pd.DataFrame
    outputs: xr.Dataset
    n: int
    calc_second_order: bool
    conf_level: float

    def to_xarray(self) -> xr.Dataset:
        """The indices as an xarray Dataset (a copy)."""
        return self.indices.copy()

    def to_dataframe(self) -> pd.DataFrame:
        """First- and total-order indices as a table indexed by ``(output, parameter)``."""
        return self.indices[list(_FIRST_TOTAL)].to_dataframe()[list(_FIRST_TOTAL)]

    def save(self, out_dir: str | os.PathLike) -> SobolFiles:
        """Write ``sobol_indices.nc``, ``sobol_indices.csv`` and ``figures/sobol_indices.png``.

        The three files are written together (:func:`bayesbridge.io.output_set`: staged beside
        the destination and moved in only when all are complete), so an interrupted save leaves
        the previous set. The netCDF file also holds the samples and model outputs
        (``sample_<name>``, ``output_<name>`` on ``sample``).

        Parameters
        ----------
        out_dir : str or os.PathLike
            Output folder (``figures/`` is created inside it).

        Returns
        -------
        SobolFiles
            The three paths written.
        """
        import matplotlib.pyplot as plt

        from bayesbridge.io import output_set
        from bayesbridge.plots.sensitivity import plot_sobol

        out = Path(out_dir)
        ds = self.indices.copy()
        for name in self.samples.columns:
            ds[f"sample_{name}"] = ("sample", self.samples[name].to_numpy())
        for name, var in self.outputs.data_vars.items():
            ds[f"output_{name}"] = ("sample", var.to_numpy())
        ds = ds.drop_vars([c for c in ("sample",) if c in ds.coords])
        with output_set(out) as stage:
            (stage / "figures").mkdir()
            ds.to_netcdf(stage / "sobol_indices.nc")
            self.to_dataframe().to_csv(stage / "sobol_indices.csv")
            figure = plot_sobol(self)
            figure.savefig(stage / "figures" / "sobol_indices.png", dpi=120, bbox_inches="tight")
            plt.close(figure)
        return SobolFiles(out / "sobol_indices.nc", out / "sobol_indices.csv", out / "figures" / "sobol_indices.png")


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2 or (n & (n - 1)):
        lower = 2 ** max(1, int(math.log2(n))) if isinstance(n, numbers.Real) and n >= 2 else 2
        raise ParameterError(
            f"n must be a power of two >= 2 (the base sample size of the Sobol' sequence); "
            f"received {n!r}. Use e.g. n={lower} or n={2 * lower}.")
    return int(n)


def _check_problem(problem: Any) -> SobolProblem:
    if not isinstance(problem, SobolProblem):
        raise InputTypeError(
            f"problem must be a SobolProblem; received a {type(problem).__name__}. Build one with "
            "SobolProblem.from_bounds({'name': (lower, upper), ...}).")
    return problem


def _int_seeds(seed: int, k: int) -> list[int]:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputValueError(f"seed must be a non-negative integer; received {seed!r}.")
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(int(seed)).spawn(k)]


def sobol_sample(problem: SobolProblem, n: int, *, seed: int,
                 calc_second_order: bool = False) -> pd.DataFrame:
    """Saltelli samples on a scrambled Sobol' sequence.

    Parameters
    ----------
    problem : SobolProblem
    n : int
        Base sample size, a power of two.
    seed : int
        Seed of the scrambling.
    calc_second_order : bool
        Include the cross-sample blocks needed for second-order indices.

    Returns
    -------
    pandas.DataFrame, shape (problem.n_runs(n, calc_second_order), D)
        One column per input, in evaluation order (the order :func:`sobol_analyze` expects).
    """
    from SALib.sample import sobol as salib_sample

    problem, n = _check_problem(problem), _check_n(n)
    x = salib_sample.sample(problem.to_salib(), n, calc_second_order=bool(calc_second_order),
                            scramble=True, seed=int(seed))
    return pd.DataFrame(x, columns=list(problem.names))


def sobol_analyze(problem: SobolProblem, outputs: xr.Dataset | Mapping[str, Any], *, seed: int,
                  calc_second_order: bool = False, num_resamples: int = 100,
                  conf_level: float = 0.95) -> xr.Dataset:
    """Sobol indices of each output from the model runs on :func:`sobol_sample`'s samples.

    Parameters
    ----------
    problem : SobolProblem
    outputs : xarray.Dataset or dict of str to array
        One 1-D variable per output, of length ``problem.n_runs(n, calc_second_order)``, in
        sample order.
    seed : int
        Seed of the bootstrap.
    calc_second_order : bool
        Must match the sampling.
    num_resamples : int
        Bootstrap resamples for the confidence intervals.
    conf_level : float
        Confidence level of the intervals, in (0, 1).

    Returns
    -------
    xarray.Dataset
        See :attr:`SobolResult.indices`.
    """
    from SALib.analyze import sobol as salib_analyze

    problem = _check_problem(problem)
    if not (isinstance(conf_level, numbers.Real) and 0.0 < conf_level < 1.0):
        raise ParameterError(f"conf_level must be in (0, 1); received {conf_level!r}.")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, numbers.Integral) \
            or num_resamples < 2:
        raise ParameterError(f"num_resamples must be an integer >= 2; received {num_resamples!r}.")
    per_n = (2 * problem.num_vars + 2) if calc_second_order else (problem.num_vars + 2)
    items = outputs.data_vars.items() if isinstance(outputs, xr.Dataset) else outputs.items()
    names, blocks, n_base = [], [], 0
    for name, values in items:
        y = np.asarray(values, dtype=float)
        if y.ndim != 1:
            raise ShapeMismatchError(f"output {name!r} must be one scalar per model run (1-D); received "
                             f"shape {y.shape}. Reduce it to scalars (e.g. a mean or an error).")
        if y.size % per_n or not _is_pow2(y.size // per_n):
            raise ShapeMismatchError(
                f"output {name!r} has {y.size} values; expected n * {per_n} runs with n a power "
                f"of two for {problem.num_vars} inputs and calc_second_order={calc_second_order}.")
        if blocks and y.size != n_base * per_n:
            raise ShapeMismatchError(
                f"output {name!r} has {y.size} values but {names[0]!r} has {n_base * per_n}; "
                "every output needs one value per model run.")
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise InputValueError(
                f"output {name!r} is not finite in {bad.size} of {y.size} runs (first: run "
                f"{bad[0]}); Sobol indices need every run. Fix or bound the model there.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 for constant outputs -> NaN
            res = salib_analyze.analyze(problem.to_salib(), y, calc_second_order=calc_second_order,
                                        num_resamples=int(num_resamples),
                                        conf_level=float(conf_level), seed=int(seed))
        names.append(str(name))
        blocks.append(res)
        n_base = y.size // per_n
    if not names:
        raise InputValueError("outputs has no variables; expected at least one model output.")
    coords = {"output": names, "parameter": list(problem.names),
              "lower": ("parameter", [b[0] for b in problem.bounds]),
              "upper": ("parameter", [b[1] for b in problem.bounds])}
    long = {"S1": "first-order Sobol index", "ST": "total-order Sobol index",
            "S2": "second-order Sobol index"}
    data: dict[str, Any] = {}
    for key in _FIRST_TOTAL + (("S2", "S2_conf") if calc_second_order else ()):
        stacked = np.stack([np.asarray(b[key], dtype=float) for b in blocks])
        dims = ("output", "parameter") if stacked.ndim == 2 else ("output", "parameter",
                                                                    "parameter_j")
        base = key.removesuffix("_conf")
        attrs = {"units": "1", "long_name": (
            f"half-width of the {conf_level:.0%} bootstrap interval of the {long[base]}"
            if key.endswith("_conf") else long[base])}
        data[key] = xr.Variable(dims, stacked, attrs=attrs)
    if calc_second_order:
        coords["parameter_j"] = list(problem.names)
    return xr.Dataset(data, coords=coords, attrs={
        "method": "Sobol indices, Saltelli sampling on a scrambled Sobol' sequence (SALib)",
        "n": n_base,
        "conf_level": float(conf_level), "calc_second_order": int(bool(calc_second_order))})


def _is_pow2(k: int) -> bool:
    return k >= 1 and not (k & (k - 1))


def _call_with_seed(model: Callable[..., Any], fixed_seed: int, /, *, seed: int, **params: Any):
    """Run ``model`` with one common seed for every sample (common random numbers)."""
    del seed
    return model(**params, seed=fixed_seed)


def run_sobol(model: Callable[..., Any], problem: SobolProblem, n: int, *, seed: int,
              calc_second_order: bool = False, common_random_numbers: bool = True,
              num_resamples: int = 100, conf_level: float = 0.95, client: Any = None,
              scheduler: str | os.PathLike | None = None, retries: int = 2,
              progress: bool = True, serial: bool = False,
              batch_size: int | None = None) -> SobolResult:
    """Sample, evaluate ``model`` through dask, and compute Sobol indices.

    Parameters
    ----------
    model : callable
        ``model(**inputs, seed=int)`` returning a dict of numbers or an xarray Dataset of
        scalars (one per output). Module-level (picklable) for a cluster.
    problem : SobolProblem
    n : int
        Base sample size, a power of two; the model runs ``problem.n_runs(n, calc_second_order)``
        times.
    seed : int
        Root seed: sampling, model seeds and bootstrap seeds are spawned from it.
    calc_second_order : bool
        Also estimate second-order indices (``n (2D+2)`` runs instead of ``n (D+2)``).
    common_random_numbers : bool
        Give every run the same model seed (default), so that the indices describe the inputs'
        effect rather than the model's sampling noise; ``False`` gives each run its own seed.
    num_resamples, conf_level
        Bootstrap settings (see :func:`sobol_analyze`).
    client, scheduler, retries, progress, serial, batch_size
        As in :func:`bayesbridge.parallel.map_tasks`.

    Returns
    -------
    SobolResult
    """
    problem, n = _check_problem(problem), _check_n(n)
    if not callable(model):
        raise InputTypeError(f"model must be callable; received a {type(model).__name__}.")
    sample_seed, task_seed, boot_seed, model_seed = _int_seeds(seed, 4)
    samples = sobol_sample(problem, n, seed=sample_seed, calc_second_order=calc_second_order)
    fn = functools.partial(_call_with_seed, model, model_seed) if common_random_numbers else model
    outputs = map_tasks(fn, samples, seed=task_seed, client=client, scheduler=scheduler,
                        dim="sample", retries=retries, progress=progress, serial=serial,
                        batch_size=batch_size, desc="Sobol runs")
    outputs = outputs.drop_vars([c for c in outputs.coords if c != "sample"])
    for name, var in outputs.data_vars.items():
        if var.dims != ("sample",):
            raise InputValueError(
                f"model output {name!r} has dimensions {var.dims}; expected one scalar per run. "
                "Return scalar summaries (e.g. a skewness error) from the model.")
    indices = sobol_analyze(problem, outputs, seed=boot_seed, calc_second_order=calc_second_order,
                            num_resamples=num_resamples, conf_level=conf_level)
    return SobolResult(problem, indices, samples, outputs, n, bool(calc_second_order),
                       float(conf_level))
