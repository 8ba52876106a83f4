"""Reanalysis mode: reconstruct 1950-2019 from observed Nino 3 and Nino 4 (issue 6 acceptance)."""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from bayesbridge import errors
from bayesbridge.apps.reanalysis import default_operational, read_observations, reconstruct
from bayesbridge.cli import app
from bayesbridge.datasets import observed_indices


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory):
    """What a user brings: a CSV of monthly indices with a YYYY-MM time column."""
    obs = observed_indices().sel(time=slice("1950-01", "2019-12"))
    frame = pd.DataFrame({
        "time": [f"{t.year:04d}-{t.month:02d}" for t in obs["time"].values],
        "nino3": obs["nino3"].values, "nino4": obs["nino4"].values,
        "nino34": obs["nino34"].values, "h_w": obs["h_w"].values,
    })
    path = tmp_path_factory.mktemp("user") / "indices.csv"
    frame.to_csv(path, index=False)
    return path


def test_cli_reconstructs_observed_record_with_skill(user_csv, tmp_path):
    out = tmp_path / "reanalysis"
    res = CliRunner().invoke(app, ["assimilate", "--observations", str(user_csv), "--vars", "nino3,nino4",
                                   "--out", str(out), "--members", "60"], terminal_width=200)
    assert res.exit_code == 0, res.output
    val = pd.read_csv(out / "validation.csv", index_col="index")
    # withheld Nino 3.4: correlation >= 0.95 and a 90 % band covering 80-97 % of observed months
    assert val.loc["nino34", "correlation"] >= 0.95
    assert 0.80 <= val.loc["nino34", "coverage90"] <= 0.97
    # withheld GODAS h_W (not assimilated): correlation >= 0.6
    assert val.loc["h_w", "correlation"] >= 0.6
    post = xr.open_dataset(out / "posterior.nc")
    assert post.sizes["time"] == 840
    for box in ("nino12", "nino3", "nino34", "nino4", "h_w"):
        assert {f"{box}_mean", f"{box}_q05", f"{box}_q95"} <= set(post.data_vars)
    assert post["tos_q95"].attrs["units"] == "degC"
    # the validation table is computed from the written summaries: check one number independently
    obs = read_observations(user_csv)
    r = np.corrcoef(post["nino34_mean"].values, obs["nino34"].values)[0, 1]
    assert r == pytest.approx(val.loc["nino34", "correlation"], abs=1e-6)
    post.close()


def test_unknown_variables_list_known_ones(user_csv):
    obs = read_observations(user_csv)
    with pytest.raises(errors.VariableNotFoundError, match="known indices are nino12, nino3, nino34, nino4, h_w"):
        reconstruct(obs, ["nino3", "sst_west"])


def test_gap_in_monthly_series(user_csv):
    obs = read_observations(user_csv).isel(time=[0, 1, 2, 5, 6])
    with pytest.raises(errors.TimeAxisError, match="consecutive monthly"):
        reconstruct(obs, ["nino3"])


def test_daily_observations_rejected(tmp_path):
    days = pd.date_range("2000-01-01", periods=90, freq="D")
    pd.DataFrame({"time": days.strftime("%Y-%m-%d"), "nino3": np.zeros(90)}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(errors.TimeAxisError, match="monthly"):
        reconstruct(read_observations(tmp_path / "d.csv"), ["nino3"])


def test_dates_outside_operational_calendar():
    times = [cftime.Datetime360Day(2000, m, 30) for m in range(1, 13)]
    obs = xr.Dataset({"nino3": ("time", np.zeros(12))}, coords={"time": times})
    with pytest.raises(errors.CalendarError, match="2000-02-30.*noleap"):
        reconstruct(obs, ["nino3"], operational=default_operational(years=20))


def test_operational_files_without_the_needed_variable(tmp_path):
    from bayesbridge.datasets import make_twin_experiment, write_cmip6

    twin = make_twin_experiment(years=20, seed=1, cache_dir=tmp_path / "c")
    write_cmip6(twin.operational[["tos"]], tmp_path / "cmip", years_per_file=10)
    obs = twin.idealized_observations
    res = CliRunner().invoke(app, ["assimilate", "--observations", str(_to_nc(obs, tmp_path)), "--vars",
                                   "nino3,h_w", "--operational", str(tmp_path / "cmip" / "*.nc"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert isinstance(res.exception, errors.VariableNotFoundError)
    assert "zos" in str(res.exception)
    assert not (tmp_path / "o" / "posterior.nc").exists()


def _to_nc(ds, folder):
    path = folder / "obs.nc"
    ds.to_netcdf(path)
    return path


def test_missing_time_column(tmp_path):
    pd.DataFrame({"date": ["2000-01"], "nino3": [0.1]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(errors.TimeAxisError, match="no 'time' column"):
        read_observations(tmp_path / "x.csv")
