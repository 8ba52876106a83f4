"""The ``idealized`` typer sub-app and the ENSO plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from bayesbridge import plots  # noqa: E402
from bayesbridge.cli.idealized import app  # noqa: E402
from bayesbridge.idealized import MultiscaleENSO, profiles  # noqa: E402

runner = CliRunner()


def test_cli_simulate_writes_cf_netcdf(tmp_path):
    out = tmp_path / "sim.nc"
    res = runner.invoke(app, ["simulate", "--years", "30", "--members", "3", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    assert ds["nino3"].dims == ("member", "time") and ds.sizes["time"] == 360
    assert ds["nino3"].attrs["units"] == "degC"
    expected = MultiscaleENSO().simulate(years=30, members=3, seed=2)
    np.testing.assert_allclose(ds["nino3"].values, expected["nino3"].values, rtol=1e-6)


def test_cli_simulate_bad_input_is_reported():
    res = runner.invoke(app, ["simulate", "--years", "0"])
    assert res.exit_code != 0
    assert "years" in str(res.exception)


def test_cli_calibrate_against_bundled_observations(tmp_path):
    args = ["calibrate", "--out", str(tmp_path), "--design-points", "17", "--replicates", "8",
            "--samples", "200", "--warmup", "200", "--chains", "2", "--seed", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(tmp_path / "predictive.csv", index_col=0)
    assert pred.loc["nino3_var", "observed"] == np.float64(pred.loc["nino3_var", "observed"])
    assert abs(pred.loc["nino3_var", "observed"] - 0.744) < 1e-3
    assert {"pp_mean", "pp_q05", "pp_q95"} <= set(pred.columns)
    assert (pred["pp_q05"] <= pred["pp_q95"]).all()
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert set(summary.index) == {"f", "wind_amp", "noise_scale", "m"}
    from bayesbridge.io import arviz_compat

    idata = arviz_compat.from_netcdf(tmp_path / "calibration.nc")
    assert {"posterior", "posterior_predictive", "observed_data"} <= set(arviz_compat.groups(idata))
    assert "posterior predictive vs observed" in res.output


def test_plots_return_figures():
    ds = MultiscaleENSO().simulate(years=40, members=2, seed=0)
    series = {"nino3": ds["nino3"], "nino4": ds["nino4"]}
    for fn in (plots.plot_pdfs, plots.plot_phase_locking, plots.plot_spectra):
        fig = fn(series, title="test")
        assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) >= 2
    hov = profiles.equatorial_hovmoller(ds["nino3"], ds["nino4"])
    fig = plots.plot_hovmoller(hov.isel(time=slice(0, 120)))
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # mesh + colour bar
