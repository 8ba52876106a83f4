"""Sobol sensitivity analysis against the analytic indices of the Ishigami function."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from bayesbridge import parallel
from bayesbridge.apps.sobol import (
    SobolProblem,
    SobolResult,
    run_sobol,
    sobol_analyze,
    sobol_sample,
)
from bayesbridge.errors import InputTypeError, InputValueError, ParameterError
from bayesbridge.plots.sensitivity import plot_sobol

A, B = 7.0, 0.1
ISHIGAMI = SobolProblem.from_bounds({"x1": (-np.pi, np.pi), "x2": (-np.pi, np.pi),
                                     "x3": (-np.pi, np.pi)})


def ishigami(x1: float, x2: float, x3: float, seed: int) -> dict:
    y = np.sin(x1) + A * np.sin(x2) ** 2 + B * x3**4 * np.sin(x1)
    return {"y": float(y), "only_x2": float(np.sin(x2))}


def noisy_linear(x1: float, x2: float, seed: int) -> dict:
    return {"y": x1 + np.random.default_rng(seed).normal()}


def analytic_ishigami() -> dict[str, np.ndarray]:
    """Ishigami & Homma (1990); Sobol & Levitan (1999): partial variances in closed form."""
    pi4, pi8 = np.pi**4, np.pi**8
    v1 = 0.5 * (1 + B * pi4 / 5) ** 2
    v2 = A**2 / 8
    v13 = B**2 * pi8 * (1 / 18 - 1 / 50)
    var = v1 + v2 + v13
    return {"S1": np.array([v1, v2, 0.0]) / var,
            "ST": np.array([v1 + v13, v2, v13]) / var,
            "S13": np.array(v13 / var)}


@pytest.fixture(scope="module")
def client():
    with parallel.cluster(n_workers=2, memory_limit="1GiB", dashboard_address=None) as c:
        yield c


def test_analytic_reference_values():
    ref = analytic_ishigami()  # the published values, to guard the oracle itself
    np.testing.assert_allclose(ref["S1"], [0.3139, 0.4424, 0.0], atol=5e-4)
    np.testing.assert_allclose(ref["ST"], [0.5576, 0.4424, 0.2437], atol=5e-4)


def test_ishigami_on_cluster_matches_analytic_and_serial(client, tmp_path):
    res = run_sobol(ishigami, ISHIGAMI, 1024, seed=42, client=client, progress=False)
    assert isinstance(res, SobolResult) and len(res.samples) == 1024 * 5
    ref = analytic_ishigami()
    y = res.indices.sel(output="y")
    for key in ("S1", "ST"):
        conf = y[f"{key}_conf"].values
        assert (conf < 0.1).all(), f"{key} intervals too wide to be a test: {conf}"
        np.testing.assert_array_less(np.abs(y[key].values - ref[key]), 2 * conf + 1e-3)
    # sin(x2) depends on x2 alone: S1 = ST = (0, 1, 0).
    only = res.indices.sel(output="only_x2")
    np.testing.assert_allclose(only["S1"].values, [0, 1, 0], atol=0.05)
    np.testing.assert_allclose(only["ST"].values, [0, 1, 0], atol=0.05)

    serial = run_sobol(ishigami, ISHIGAMI, 1024, seed=42, serial=True, progress=False)
    xr.testing.assert_identical(res.indices, serial.indices)

    table = res.to_dataframe()
    assert list(table.columns) == ["S1", "S1_conf", "ST", "ST_conf"]
    assert table.loc[("y", "x2"), "S1"] == pytest.approx(float(y["S1"].sel(parameter="x2")))
    files = res.save(tmp_path)
    with xr.open_dataset(files.netcdf) as saved:
        np.testing.assert_array_equal(saved["ST"].values, res.to_xarray()["ST"].values)
        assert saved.sizes["sample"] == 1024 * 5
    assert files.csv.stat().st_size > 0 and files.figure.stat().st_size > 0


def test_second_order_index():
    res = run_sobol(ishigami, ISHIGAMI, 512, seed=3, calc_second_order=True, serial=True,
                    progress=False)
    assert len(res.samples) == 512 * 8
    s2 = res.indices["S2"].sel(output="y")
    conf = res.indices["S2_conf"].sel(output="y")
    ref = analytic_ishigami()["S13"]
    assert abs(float(s2.sel(parameter="x1", parameter_j="x3")) - ref) < 2 * float(
        conf.sel(parameter="x1", parameter_j="x3")) + 1e-3
    assert abs(float(s2.sel(parameter="x1", parameter_j="x2"))) < 2 * float(
        conf.sel(parameter="x1", parameter_j="x2")) + 1e-3


def test_common_random_numbers_remove_model_noise():
    # y = x1 + eps with Var(x1) = Var(eps) = 1: with one common seed the noise is a constant and
    # x1 explains everything; with independent seeds half the variance is noise.
    problem = SobolProblem(("x1", "x2"), ((0.0, np.sqrt(12.0)), (0.0, 1.0)))
    crn = run_sobol(noisy_linear, problem, 256, seed=0, serial=True, progress=False)
    indep = run_sobol(noisy_linear, problem, 256, seed=0, serial=True, progress=False,
                      common_random_numbers=False)
    assert float(crn.indices["S1"].sel(output="y", parameter="x1")) == pytest.approx(1.0, abs=0.02)
    assert float(crn.indices["ST"].sel(output="y", parameter="x2")) == pytest.approx(0.0, abs=0.02)
    s1_indep = float(indep.indices["S1"].sel(output="y", parameter="x1"))
    assert 0.3 < s1_indep < 0.7


def test_plot_returns_figure_with_one_panel_per_output():
    res = run_sobol(ishigami, ISHIGAMI, 64, seed=1, serial=True, progress=False)
    fig = plot_sobol(res)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["x1", "x2", "x3"]
    with pytest.raises(InputValueError, match="not among"):
        plot_sobol(res, outputs=["nope"])


@pytest.mark.parametrize("n", [1000, 3, 1, 0, 2.0])
def test_n_must_be_power_of_two(n):
    with pytest.raises(ParameterError, match="power of two"):
        sobol_sample(ISHIGAMI, n, seed=0)
    with pytest.raises(ParameterError, match="power of two"):
        run_sobol(ishigami, ISHIGAMI, n, seed=0, serial=True)


@pytest.mark.parametrize(
    ("names", "bounds", "error", "match"),
    [
        (("a", "b"), ((0, 1), (2, 2)), ParameterError, "lower < upper"),
        (("a", "b"), ((0, 1), (3, 2)), ParameterError, "lower < upper"),
        (("a",), ((0, np.inf),), ParameterError, "finite"),
        (("a", "b"), ((0, 1),), InputValueError, "one \\(lower, upper\\) pair"),
        (("a", "a"), ((0, 1), (0, 1)), InputValueError, "unique"),
        (("a", "seed"), ((0, 1), (0, 1)), InputValueError, "reserved"),
        (("1a",), ((0, 1),), InputValueError, "identifier"),
        (("a",), (("x", 1),), InputTypeError, "pairs of numbers"),
    ],
)
def test_bad_problem_raises(names, bounds, error, match):
    with pytest.raises(error, match=match):
        SobolProblem(names, bounds)


def test_analyze_rejects_bad_outputs():
    x = sobol_sample(ISHIGAMI, 8, seed=0)
    y = np.ones(len(x))
    y[3] = np.nan
    with pytest.raises(InputValueError, match="not finite"):
        sobol_analyze(ISHIGAMI, {"y": y}, seed=0)
    with pytest.raises(InputValueError, match="expected n \\* 5 runs"):
        sobol_analyze(ISHIGAMI, {"y": np.ones(len(x) - 1)}, seed=0)
