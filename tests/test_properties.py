"""Property-based tests (hypothesis): bad inputs never end in a traceback (issue 17).

Random corruptions of observation files (CSV and netCDF) given to the readers, and random
option values given to the commands, either succeed or raise a
:class:`~bayesbridge.errors.BayesBridgeError` with a one-line message (exit code 2 on the
command line); any other exception is a bug. Examples are few and problems tiny, so the module
runs in seconds; the examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bayesbridge.apps.reanalysis import read_observations
from bayesbridge.bridge import observations_from
from bayesbridge.cli import app
from bayesbridge.errors import BayesBridgeError

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CELLS = st.one_of(
    st.sampled_from(["", "nan", "NaN", "NA", "-", "1e30", "-9999", "inf", "-inf", "299.5", "26.1", "abc", "0x1F",
                     "1,5", "2000-13", "1-01", "  0.3 ", "1e-400", "9" * 400, '"q"', "\x00", "é"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
TIMES = st.sampled_from(["2000-01", "1-01", "2000-13", "2000/02", "2000-02-30", "20000", "", "2000-1", "0-01",
                         "2000-01-01T00:00:00Z", "Jan 2000", "2000-01-32", "99999-01", "-2000-01"])


def _base_frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"time": [f"{2000 + i // 12:04d}-{i % 12 + 1:02d}" for i in range(n)],
                         "nino3": rng.normal(0, 0.8, n).round(3), "nino4": rng.normal(0, 0.6, n).round(3),
                         "h_w": rng.normal(0, 13, n).round(2)})


def _check(read) -> None:
    """``read()`` succeeds or raises a BayesBridgeError with a one-line message."""
    try:
        read()
    except BayesBridgeError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(exc)


@st.composite
def corrupted_csv(draw) -> bytes:
    frame = _base_frame().astype(object)
    for _ in range(draw(st.integers(0, 3))):
        row, col = draw(st.integers(0, len(frame) - 1)), draw(st.sampled_from(list(frame.columns)))
        frame.loc[row, col] = draw(TIMES if col == "time" else CELLS)
    lines = frame.to_csv(index=False).splitlines()
    action = draw(st.sampled_from(["none", "drop", "duplicate", "swap", "truncate", "bytes", "delimiter",
                                   "header", "ragged", "empty"]))
    if action == "drop":
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif action == "duplicate":
        i = draw(st.integers(1, len(lines) - 1))
        lines.insert(i, lines[i])
    elif action == "swap":
        i = draw(st.integers(1, len(lines) - 2))
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif action == "header":
        lines[0] = draw(st.sampled_from(["time,nino3,nino3,h_w", "date,nino3,nino4,h_w", "time;nino3;nino4;h_w",
                                         ",nino3,nino4,h_w", "time,NINO3,nino4,h_w"]))
    elif action == "ragged":
        lines[draw(st.integers(1, len(lines) - 1))] += ",1.0"
    elif action == "delimiter":
        lines = [line.replace(",", draw(st.sampled_from([";", "\t", " "]))) for line in lines]
    elif action == "empty":
        lines = lines[:1]
    data = ("\n".join(lines) + "\n").encode()
    if action == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif action == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return data


@SETTINGS
@given(data=corrupted_csv(), start=st.sampled_from([None, "2000-03", "2000-13", "1999-01", "x"]))
def test_corrupted_csv_never_raises_a_traceback(tmp_path_factory, data, start):
    path = tmp_path_factory.mktemp("csv") / "obs.csv"
    path.write_bytes(data)
    _check(lambda: observations_from(read_observations(path, start=start), ["nino3"]))


@st.composite
def corrupted_netcdf(draw, folder) -> object:
    time = xr.date_range("2000-01-01", periods=24, freq="MS", calendar="noleap", use_cftime=True)
    rng = np.random.default_rng(1)
    ds = xr.Dataset({v: ("time", rng.normal(0, s, 24)) for v, s in (("nino3", 0.8), ("nino4", 0.6), ("h_w", 13.0))},
                    coords={"time": time})
    action = draw(st.sampled_from(["values", "members", "no_time", "int_time", "reverse", "duplicate", "rename",
                                   "2d", "strings", "truncate", "flip"]))
    if action == "values":
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -9999.0, 300.0, 26.0]))
        ds["nino3"][draw(st.integers(0, 23))] = value
        if draw(st.booleans()):
            ds["nino3"][:] = value
    elif action == "members":
        ds = xr.concat([ds] * draw(st.integers(1, 3)), dim="member")
    elif action == "no_time":
        ds = ds.rename({"time": "month"})
    elif action == "int_time":
        ds = ds.assign_coords(time=np.arange(24))
    elif action == "reverse":
        ds = ds.isel(time=slice(None, None, -1))
    elif action == "duplicate":
        ds = ds.isel(time=[0, 1, 1, *range(2, 24)])
    elif action == "rename":
        ds = ds.rename({"nino3": "sst"})
    elif action == "2d":
        ds["nino3"] = ds["nino3"].expand_dims(lat=[0.0, 1.0])
    elif action == "strings":
        ds["nino3"] = ("time", np.array(["a"] * 24))
    path = folder / f"obs-{action}.nc"
    ds.to_netcdf(path)
    if action in ("truncate", "flip"):
        raw = bytearray(path.read_bytes())
        if action == "truncate":
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        else:
            for _ in range(draw(st.integers(1, 20))):
                raw[draw(st.integers(0, len(raw) - 1))] ^= 0xFF
        path.write_bytes(bytes(raw))
    return path, draw(st.sampled_from([None, 0, 2, -1]))


@SETTINGS
@given(data=st.data())
def test_corrupted_netcdf_never_raises_a_traceback(tmp_path_factory, data):
    path, member = data.draw(corrupted_netcdf(tmp_path_factory.mktemp("nc")))

    def read():
        observations_from(read_observations(path, member=member if member is None or member >= 0 else None),
                          ["nino3", "nino4"])

    _check(read)


# ---------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from bayesbridge.datasets import make_twin_experiment

    d = tmp_path_factory.mktemp("cli")
    _base_frame(24).to_csv(d / "obs.csv", index=False)
    make_twin_experiment(years=20, seed=0).operational.to_netcdf(d / "op.nc")
    (d / "file.txt").write_text("x")
    return d


def _invoke(args) -> None:
    """Run the app: success, or a BayesBridgeError / usage error (exit 2) with a one-line message."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return
    exc = result.exception
    if isinstance(exc, SystemExit):  # click's usage errors, handled by the app itself
        assert result.exit_code == 2, result.output
    else:
        assert isinstance(exc, BayesBridgeError), f"{type(exc).__name__}: {exc}"
        assert "\n" not in str(exc), str(exc)


def _option(name, good, bad):
    return st.one_of(st.just(good), st.sampled_from(bad)).map(lambda v: (name, v))


INTS = ["-1", "0", "abc", "1.5", "1e9", "", "99999999999999999999", "1000000000"]


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(options=st.tuples(
    _option("--vars", "nino3,nino4", [",", "", "nino3,nino3", "sst", "NINO3", "h_w,nino12"]),
    _option("--method", "enks", ["bogus", "", "KALMAN", "kalman", "etkf"]),
    _option("--members", "10", INTS),
    _option("--latent-dim", "3", [*INTS, "30", "3000"]),
    _option("--seed", "0", [*INTS, "4294967296"]),
    _option("--start", "2000-01", ["2000-13", "bogus", "2050-01", "1-01", "2001-06"]),
    _option("--end", "2001-12", ["2001-13", "", "1990-01", "2000-06"]),
    _option("--out", "OUT", ["FILE", "/proc/self/o", "FILE/sub"]),
))
def test_assimilate_options_never_raise_a_traceback(inputs, options):
    args = ["assimilate", "--observations", inputs / "obs.csv", "--operational", inputs / "op.nc"]
    for name, value in options:
        value = {"OUT": inputs / "out", "FILE": inputs / "file.txt", "FILE/sub": inputs / "file.txt" / "sub"}.get(value, value)
        args += [name, value]
    _invoke(args)


@SETTINGS
@given(options=st.tuples(
    _option("--years", "2", ["0", "-3", "x", "100000000"]),
    _option("--members", "2", ["0", "-1", "1000000000", "2.5"]),
    _option("--dt", "0.005", ["0", "-0.1", "nan", "inf", "0.3", "0.0033"]),
    _option("--variant", "default", ["bogus", ""]),
    _option("--m", "2.0", ["5", "-1", "nan"]),
    _option("--seed", "0", ["-1", "x"]),
    _option("--out", "sim.nc", ["FOLDER", "/proc/self/x.nc"]),
))
def test_idealized_simulate_options_never_raise_a_traceback(inputs, options):
    args = ["idealized", "simulate", "--burn-in-years", "1"]
    for name, value in options:
        args += [name, {"sim.nc": inputs / "sim.nc", "FOLDER": inputs}.get(value, value)]
    _invoke(args)


@SETTINGS
@given(start=st.one_of(TIMES, st.text(max_size=10)), end=st.one_of(TIMES, st.sampled_from(["2019-12", "1950-06"])),
       json_out=st.sampled_from([None, "FOLDER", "/proc/self/s.json", "s.json"]))
def test_observations_options_never_raise_a_traceback(inputs, start, end, json_out):
    args = ["observations", "--start", start, "--end", end]
    if json_out is not None:
        args += ["--json", {"FOLDER": inputs, "s.json": inputs / "s.json"}.get(json_out, json_out)]
    _invoke(args)
