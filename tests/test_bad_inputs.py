"""Issue 17: every bad input a clear error before the work starts, outputs as one set, no open doors.

One test (or more) per finding of the issue. Command-line cases run through
:func:`bayesbridge.cli.main` in this process, as a user's shell would: exit code 2, exactly one
``error:`` line, no traceback. The interrupt test of ``assimilate`` itself is marked ``slow``; the
staging helper is interrupted at every stage in ``tests/test_outputs.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from bayesbridge import errors
from bayesbridge.apps.reanalysis import check_operational, read_observations, reconstruct
from bayesbridge.bridge import BridgeConfig, observations_from
from bayesbridge.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--latent-dim", "4", "--members", "10"]


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``bayesbridge *args``; return its exit code and output."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return stop.value.code, out.out + out.err


def clear_error(capsys, *args) -> str:
    """The one ``error:`` line of a bad command line (exit code 2, no traceback)."""
    code, text = cli(capsys, *args)
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Observation files (five years of the bundled record) and a small operational model."""
    from bayesbridge.datasets import make_twin_experiment, observed_indices

    d = tmp_path_factory.mktemp("inputs")
    obs = observed_indices().sel(time=slice("2000-01", "2004-12"))
    frame = pd.DataFrame({"time": [f"{t.year:04d}-{t.month:02d}" for t in obs["time"].values],
                          **{v: obs[v].values.astype(float) for v in ("nino3", "nino4", "nino34", "h_w")}})
    paths = {"frame": frame, "dir": d}

    def write(name, df):
        df.to_csv(d / name, index=False)
        paths[name] = d / name

    write("ok.csv", frame)
    write("all_nan.csv", frame.assign(nino3=np.nan))
    write("fill.csv", frame.assign(nino4=frame["nino4"].where(frame.index != 20, 1e30)))
    write("kelvin.csv", frame.assign(nino3=frame["nino3"] + 299.15))
    (d / "header.csv").write_text("time,nino3,nino4\n")
    paths["header.csv"] = d / "header.csv"
    twin = make_twin_experiment(years=20, seed=0)
    twin.operational.to_netcdf(d / "op20.nc")
    paths["op20.nc"] = d / "op20.nc"
    paths["plain"] = d / "plain.txt"
    paths["plain"].write_text("x")
    return paths


# ---------------------------------------------------------------------------- finding 1


def test_one_member_idealized_run_assimilates(files, capsys, tmp_path):
    out_nc = tmp_path / "one.nc"
    code, text = cli(capsys, "idealized", "simulate", "--members", "1", "--years", "5", "--out", out_nc)
    assert code == 0, text
    assert xr.open_dataset(out_nc).sizes["member"] == 1
    code, text = cli(capsys, "assimilate", "--observations", out_nc, "--vars", "nino3,nino4", "--operational",
                     files["op20.nc"], "--out", tmp_path / "o", *TINY)
    assert code == 0, text
    validation = pd.read_csv(tmp_path / "o" / "validation.csv", index_col="index")
    assert set(validation.index) >= {"nino3", "nino4", "h_w"} and (validation["months"] == 60).all()
    # the API takes the one-member Dataset as it comes from simulate()
    from bayesbridge.idealized import MultiscaleENSO

    run = MultiscaleENSO().simulate(years=3, members=1, seed=1)
    op = xr.open_dataset(files["op20.nc"])
    from bayesbridge.io import open_operational

    rec = reconstruct(run, ["nino3"], operational=open_operational(op, region=None).load(),
                      config=BridgeConfig(latent_dim=4, members=10))
    assert rec.validation.loc["nino3", "months"] == 36


# ---------------------------------------------------------------------------- finding 3


def test_tracebacks_of_the_issue_are_clear_errors(files, capsys, tmp_path):
    ok, out = files["ok.csv"], tmp_path / "o"
    assert "no data rows" in clear_error(capsys, "assimilate", "--observations", files["header.csv"], "--vars",
                                         "nino3", "--out", out)
    bad = files["frame"].astype(object)
    bad.loc[7, "nino3"] = "abc"
    bad.to_csv(tmp_path / "cell.csv", index=False)
    assert "row 9, column 'nino3': 'abc' is not a number" in clear_error(
        capsys, "assimilate", "--observations", tmp_path / "cell.csv", "--vars", "nino3", "--out", out)
    for option, value in (("--start", "2000-13"), ("--end", "June")):
        assert f"{option}: '{value}'" in clear_error(capsys, "assimilate", "--observations", ok, "--vars", "nino3",
                                                     "--out", out, option, value)
    assert "--seed: expected an integer from 0" in clear_error(
        capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", out, "--seed", "-1")
    assert "is a file, but an output folder" in clear_error(
        capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", ok)
    assert "cannot write into '/proc/self'" in clear_error(
        capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", "/proc/self/o")
    assert "--json: " in clear_error(capsys, "observations", "--json", tmp_path)
    assert "--out: " in clear_error(capsys, "idealized", "simulate", "--out", tmp_path, "--years", "2")
    t0 = time.perf_counter()
    message = clear_error(capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", out,
                          "--members", "1000000000")
    assert "--members 1000000000" in message and "memory" in message and "use --members" in message
    assert time.perf_counter() - t0 < 25
    assert "members, years:" in clear_error(capsys, "idealized", "simulate", "--out", tmp_path / "s.nc",
                                            "--members", "1000000000", "--years", "100")
    assert not out.exists()  # nothing was written by any of them


def test_a_damaged_twin_cache_is_rebuilt(tmp_path):
    from bayesbridge.datasets import make_twin_experiment

    twin = make_twin_experiment(years=2, seed=3, cache_dir=tmp_path)
    part = next(tmp_path.glob("*/operational.nc"))
    part.write_bytes(part.read_bytes()[:2000])  # truncated
    with pytest.warns(UserWarning, match="rebuilding the cached twin experiment.*operational.nc"):
        again = make_twin_experiment(years=2, seed=3, cache_dir=tmp_path)
    xr.testing.assert_identical(again.operational, twin.operational)
    with pytest.raises(errors.OutputPathError, match="cache_dir"):
        make_twin_experiment(years=2, seed=4, cache_dir="/proc/self/cache")


def test_usage_errors_are_one_line(capsys):
    assert "Invalid value for '--members'" in clear_error(capsys, "assimilate", "--observations", "x.csv",
                                                          "--vars", "nino3", "--out", "o", "--members", "abc")
    assert "No such command 'nosuch'" in clear_error(capsys, "nosuch")


# ---------------------------------------------------------------------------- finding 4


def test_all_nan_fill_and_kelvin_columns_are_rejected_before_the_work(files, capsys, tmp_path):
    out = tmp_path / "o"
    message = clear_error(capsys, "assimilate", "--observations", files["all_nan.csv"], "--vars", "nino3,nino4",
                          "--out", out)
    assert "'nino3' has no value from 2000-01 to 2004-12" in message
    message = clear_error(capsys, "assimilate", "--observations", files["fill.csv"], "--vars", "nino3", "--out", out)
    assert "'nino4' holds 1e+30 at 2001-09" in message
    message = clear_error(capsys, "assimilate", "--observations", files["kelvin.csv"], "--vars", "nino4", "--out", out)
    assert "'nino3' holds" in message and "at 2000-01" in message and "Kelvin" in message
    # the API says the same: the Bridge path and the reader
    frame = files["frame"]
    with pytest.raises(errors.ObservationValueError, match="'nino3' holds 300.*at 2000-03.*Kelvin"):
        observations_from(frame.assign(nino3=frame["nino3"].where(frame.index != 2, 300.0)), ["nino3"])
    with pytest.raises(errors.AllMissingError, match="'nino4' has no value"):
        observations_from(frame.assign(nino4=np.nan), ["nino3", "nino4"])
    with pytest.raises(errors.ObservationValueError, match="at 2000-01.*absolute temperatures in degC"):
        observations_from(frame.assign(nino3=frame["nino3"] + 26.0), ["nino3"])
    with pytest.raises(errors.ObservationValueError, match="'h_w' has a mean of 1.*absolute depths"):
        observations_from(frame.assign(h_w=frame["h_w"] + 100.0), ["h_w"])


@pytest.mark.parametrize("method", ["enkf", "etkf", "enks", "kalman", "pf"])
def test_engines_name_the_step_of_a_fill_value(method):
    from bayesbridge.infer import assimilate
    from bayesbridge.model import LinearGaussianModel

    model = LinearGaussianModel(0.8 * np.eye(2), np.eye(2), [[1.0, 0.0]], [[1.0]], [0.0, 0.0], np.eye(2))
    y = np.random.default_rng(0).normal(size=(40, 1))
    y[17, 0] = 1e30
    with pytest.raises(errors.ObservationValueError, match=r"time step 17 \(component 0\) is 1e\+30"):
        assimilate(model, y, method, members=10)


# ---------------------------------------------------------------------------- finding 5


@pytest.mark.parametrize("name", ["A", "H", "Q", "R", "m0", "P0"])
def test_model_matrices_must_be_finite(name):
    from bayesbridge.model import LinearGaussianModel

    args = {"A": 0.5 * np.eye(2), "Q": np.eye(2), "H": [[1.0, 0.0]], "R": [[1.0]], "m0": [0.0, 0.0], "P0": np.eye(2)}
    bad = np.array(args[name], dtype=float)
    bad.flat[0] = np.nan
    with pytest.raises(errors.ParameterError, match=f"^{name}: expected finite numbers, got nan"):
        LinearGaussianModel(**{**args, name: bad})
    with pytest.raises(errors.ShapeMismatchError, match="square"):
        LinearGaussianModel(**{**args, "A": np.ones((2, 3))})


def test_state_space_model_and_transition_reject_non_finite_matrices():
    from bayesbridge.model import LinearTransition, StateSpaceModel

    with pytest.raises(errors.ParameterError, match="noise_scale_tril: expected finite"):
        LinearTransition([[0.5]], [[np.inf]])
    with pytest.raises(errors.ParameterError, match="observation: expected finite"):
        StateSpaceModel(LinearTransition([[0.5]], [[1.0]]), [[np.nan]], 1.0)
    with pytest.raises(errors.ParameterError, match="initial_cov: expected finite"):
        StateSpaceModel(LinearTransition([[0.5]], [[1.0]]), [[1.0]], 1.0, initial_cov=[[np.inf]])


@pytest.mark.parametrize("engine", ["auto", "loop"])
@pytest.mark.parametrize("growth", [1.2, 1.6])
def test_kalman_names_the_step_where_an_unobserved_mode_explodes(engine, growth):
    from bayesbridge.infer import assimilate
    from bayesbridge.model import LinearGaussianModel

    model = LinearGaussianModel(np.diag([0.5, growth]), np.eye(2), [[1.0, 0.0]], [[1.0]], [0.0, 0.0], np.eye(2))
    y = np.random.default_rng(0).normal(size=(120, 1))
    with pytest.raises(errors.FilterDivergenceError, match=r"filtered covariance has a variance of .* at time step \d+"):
        assimilate(model, y, "kalman", engine=engine)
    # a stable model is untouched
    stable = LinearGaussianModel(np.diag([0.5, 0.99]), np.eye(2), [[1.0, 0.0]], [[1.0]], [0.0, 0.0], np.eye(2))
    assert torch.isfinite(assimilate(stable, y, "kalman", engine=engine).filtered_cov).all()


# ---------------------------------------------------------------------------- finding 6


def test_a_grid_that_misses_the_boxes_names_box_and_grid(files):
    op = xr.open_dataset(files["op20.nc"]).sel(lat=slice(10, 20))
    with pytest.raises(errors.GridCoverageError, match=r"has no ocean point of the nino3 box \(-5\.\.5N"):
        check_operational(op, ["nino3"], latent_dim=4)


def test_messages_name_the_real_problem(files, capsys, tmp_path):
    ok, out = files["ok.csv"], tmp_path / "o"
    assert "--vars: no name in ','" in clear_error(capsys, "assimilate", "--observations", ok, "--vars", ",",
                                                   "--out", out)
    days = pd.DataFrame({"time": pd.date_range("2000-01-01", periods=40).strftime("%Y-%m-%d"), "nino3": 0.0})
    days.to_csv(tmp_path / "daily.csv", index=False)
    with pytest.raises(errors.TimeAxisError, match="rows 2 and 3 fall in the same month 2000-01.*daily"):
        read_observations(tmp_path / "daily.csv")
    pd.concat([files["frame"].iloc[:3], files["frame"].iloc[2:]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(errors.TimeAxisError, match="rows 4 and 5 both hold 2000-03; remove the duplicated row"):
        read_observations(tmp_path / "dup.csv")
    frame = files["frame"].copy()
    frame["time"] = [f"{i // 12 + 1}-{i % 12 + 1:02d}" for i in range(len(frame))]  # years 1..5, unpadded
    frame.to_csv(tmp_path / "year1.csv", index=False)
    ds = read_observations(tmp_path / "year1.csv")
    assert (ds["time"].dt.year.values[[0, -1]] == [1, 5]).all() and ds["time"].dt.month.values[12] == 1
    message = clear_error(capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", out,
                          "--operational", files["op20.nc"], "--latent-dim", "30")
    assert "--latent-dim 17 or less" in message and "ridge" not in message and "seasonal=False" not in message
    message = clear_error(capsys, "assimilate", "--observations", ok, "--vars", "nino3", "--out", out,
                          "--start", "2050-01")
    assert "no observation from 2050-01 on" in message and "covers 2000-01 to 2004-12" in message
    assert "None" not in message
    code, text = cli(capsys, "bench", "--help")
    assert code == 0 and "pip install 'bayesbridge[bench]'" in " ".join(text.split())


# ---------------------------------------------------------------------------- finding 7


def test_sobol_results_are_saved_as_one_set_without_fixed_temporary_names(tmp_path):
    from bayesbridge.apps.sobol import SobolProblem, run_sobol

    problem = SobolProblem.from_bounds({"a": (0.0, 1.0), "b": (0.0, 1.0)})
    result = run_sobol(_linear, problem, 8, seed=0, serial=True, progress=False)
    (tmp_path / "sobol_indices.nc.tmp").mkdir()  # the old fixed name: no longer used, so no clash
    files = result.save(tmp_path)
    assert files.netcdf.exists() and files.csv.exists() and files.figure.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _linear(a: float, b: float, seed: int) -> dict:
    return {"y": a + 2.0 * b}


# ---------------------------------------------------------------------------- finding 8


def test_progress_is_one_line_per_step_in_a_log(capsys):
    from bayesbridge.cli.progress import bars_enabled, status, steps

    assert not bars_enabled()  # pytest's captured stderr is no terminal
    with steps("demo", ("twin", "fit")) as advance:
        for step in ("twin", "twin", "fit"):
            advance(step)
    with status("reading"):
        pass
    text = capsys.readouterr().out
    assert "\r" not in text and text.splitlines() == ["demo: twin", "demo: fit", "demo: done", "reading"]


# ---------------------------------------------------------------------------- finding 2 (the command)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("stage", ["staging", "staged", "moving", "moved"])
def test_interrupted_assimilate_leaves_one_complete_set(files, tmp_path, stage, sig):
    out = tmp_path / "out"
    base = [sys.executable, "-c", "from bayesbridge.cli import main; main()", "assimilate", "--observations",
            str(files["ok.csv"]), "--vars", "nino3,nino4", "--operational", str(files["op20.nc"]), "--out", str(out),
            *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(base, env=env, check=True, capture_output=True)
    old = _run_ids(out)
    assert len(old) == 1
    pause = f"{stage}:{1 if stage in ('moving', 'moved') else 60}"
    proc = subprocess.Popen(base + ["--seed", "1"], env={**env, "BAYESBRIDGE_TEST_STAGE_PAUSE": pause},
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if line.startswith(f"bayesbridge-stage: {stage}"):
            break
    proc.send_signal(sig)
    proc.wait(timeout=60)
    after = _run_ids(out)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert len(after) == 1 and (after == old) == (stage in ("staging", "staged"))
    else:
        assert (len(after) == 2) == (stage == "moving")  # mixed until the next run completes the commit
    # the next run, even one that stops at a bad input, cleans the leftovers first
    subprocess.run(base + ["--start", "2050-01"], env=env, capture_output=True)
    final = _run_ids(out)
    assert len(final) == 1 and (final == old) == (stage in ("staging", "staged"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _run_ids(folder: Path) -> set[str]:
    ids = set()
    with xr.open_dataset(folder / "posterior.nc") as post:
        ids.add(post.attrs["run_id"])
    with xr.open_dataset(folder / "inference_data.nc", group="posterior") as idata:
        ids.add(idata.attrs["run_id"])
    ids |= set(pd.read_csv(folder / "validation.csv")["run_id"].astype(str))
    return ids


def test_the_command_line_checks_agree_with_the_library():
    # the CLI checks months and methods before torch loads, with its own copy of the rules
    from typing import get_args

    from bayesbridge.apps import bridge_options
    from bayesbridge.apps.reanalysis import parse_month
    from bayesbridge.bridge.bridge import CodecKind, DynamicsKind
    from bayesbridge.cli import checks
    from bayesbridge.cli.checks import month
    from bayesbridge.infer import METHODS as ENGINES

    assert set(checks.METHODS) == set(ENGINES)
    assert checks.CODECS == get_args(CodecKind) and checks.DYNAMICS == get_args(DynamicsKind)
    assert checks.PROPOSALS == bridge_options.PROPOSALS
    assert checks.MIN_PARTICLES == bridge_options.MIN_PARTICLES
    assert checks.DEFAULT_PARTICLES == bridge_options.DEFAULT_PARTICLES
    for text in ("1950-01", "1-01", "850-3", "1950-01-16", "2000/02", "1950-01-01T00:00:00Z", "2000-13", "1950",
                 "bogus", "", "0-01", "2019-12-32", " 1950-01 "):
        try:
            expected = "{:04d}-{:02d}".format(*parse_month(text))
        except errors.TimeAxisError:
            expected = errors.TimeAxisError
        try:
            got = month(text, "--start")
        except errors.TimeAxisError:
            got = errors.TimeAxisError
        assert got == expected, text


# ---------------------------------------------------------------------------- issues 14 and 15: bridge options


@pytest.mark.parametrize("command", ["assimilate", "demo"])
def test_bridge_options_are_checked_before_the_work(files, capsys, tmp_path, command):
    base = (["assimilate", "--observations", files["ok.csv"], "--vars", "nino3", *TINY] if command == "assimilate"
            else ["demo", "--quick"])
    base = [*base, "--out", tmp_path / "o"]
    for args, expected in [
        (("--codec", "pca"), "--codec: expected one of eof, autoencoder, vae, got 'pca'"),
        (("--dynamics", "gru"), "--dynamics: expected one of linear, seasonal, neural, lstm, got 'gru'"),
        (("--method", "mcmc"), "--method: expected one of enks, enkf, etkf, pf, svi, kalman"),
        (("--method", "svi", "--dynamics", "lstm"), "--method, --dynamics: svi cannot fit"),
        (("--method", "pf", "--particles", "1"), "--particles: a particle filter needs at least 10 particles"),
        (("--method", "pf", "--proposal", "optimal"), "--proposal: expected one of auto, guided, bootstrap"),
        (("--method", "enks", "--proposal", "guided"), "--proposal: only the particle filter uses --proposal"),
        (("--particles", "500",), "--particles: only the particle filter uses --particles, got --method enks"),
        (("--method", "pf", "--particles", "10000000000000"), "use --particles"),
    ]:
        assert expected in clear_error(capsys, *base, *args), args
    assert not (tmp_path / "o").exists()


def test_bridge_config_maps_particles_and_draws():
    from bayesbridge.apps import bridge_options
    from bayesbridge.apps.bridge_options import bridge_config
    from bayesbridge.apps.demo import DemoConfig

    cfg = bridge_config(method="pf", members=30, particles=500, proposal="bootstrap", codec="autoencoder",
                        dynamics="lstm", latent_dim=3)
    assert (cfg.method, cfg.members, cfg.codec, cfg.dynamics, cfg.latent_dim) == ("pf", 500, "autoencoder", "lstm", 3)
    assert cfg.method_options == {"proposal": "bootstrap", "n_trajectories": 30}
    default = bridge_config(method="pf", members=40)  # 5,000 particles carry the 40 smoothed draws
    assert default.members == bridge_options.DEFAULT_PARTICLES == 5000
    assert default.method_options == {"proposal": "auto", "n_trajectories": 40}
    assert bridge_config(method="pf", members=6000).members == 6000  # never fewer particles than draws
    assert bridge_config(method="etkf", members=12).method_options == {}
    with pytest.raises(errors.ParameterError, match="particles: only the particle filter"):
        bridge_config(method="enks", particles=100)
    with pytest.raises(errors.ParameterError, match="particles: a particle filter needs"):
        bridge_config(method="pf", members=5, particles=5)
    with pytest.raises(errors.ParameterError, match="proposal: expected one of .auto., .guided., .bootstrap."):
        bridge_config(method="pf", proposal="optimal")
    demo = DemoConfig(quick=True, method="pf", particles=300, codec="vae", dynamics="neural")
    assert demo.bridge_config().members == 300 and demo.bridge_config().method_options["n_trajectories"] == 100
    with pytest.raises(errors.ParameterError, match="'svi' cannot fit"):
        DemoConfig(quick=True, method="svi", dynamics="lstm")
