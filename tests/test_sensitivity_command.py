"""``bayesbridge sensitivity``: the bridged-statistics model and the command through dask."""

from __future__ import annotations

import math

import pytest
import typer
import xarray as xr
from typer.testing import CliRunner

from bayesbridge.apps.sensitivity import OUTPUTS, bridge_statistics
from bayesbridge.cli.sensitivity import sensitivity


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("twin-cache"))


def test_bridge_statistics_scores_respond_to_the_error_floor(cache_dir):
    tight = bridge_statistics(0.02, 1.0, 8, 40, seed=1, years=12, cache_dir=cache_dir, map_draws=2)
    loose = bridge_statistics(1.5, 1.0, 8, 40, seed=1, years=12, cache_dir=cache_dir, map_draws=2)
    for out in (tight, loose):
        assert set(out) == set(OUTPUTS)
        assert all(math.isfinite(v) for v in out.values())
        assert 0.0 <= out["coverage90_nino34"] <= 1.0
        assert out["skew_map_rmse"] > 0.0
    # a much larger observation error widens the posterior: more truth inside the 90 % band
    assert loose["coverage90_nino34"] > tight["coverage90_nino34"]


@pytest.mark.slow
def test_sensitivity_quick_writes_sobol_indices(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    app = typer.Typer()
    app.command(name="sensitivity")(sensitivity)
    app.command(name="noop")(lambda: None)
    out = tmp_path / "sens"
    res = CliRunner().invoke(app, ["sensitivity", "--quick", "--n", "2", "--workers", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = xr.open_dataset(out / "sobol_indices.nc")
    assert set(ds["output"].values) == set(OUTPUTS)
    assert {"S1", "S1_conf", "ST", "ST_conf"} <= set(ds.data_vars)
    assert ds["output_coverage90_nino34"].size == 2 * (4 + 2)
    assert (out / "sobol_indices.csv").exists() and (out / "figures" / "sobol_indices.png").exists()
