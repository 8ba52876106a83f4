"""A battery of bad (and a few odd but valid) command-line inputs, counted by outcome.

Usage::

    python benchmarks/cli_battery.py [--jobs 2] [--only SUBSTRING] [--json results.json]

Every case runs ``bayesbridge ...`` in a fresh process (as a user would), with a 120 s limit, and
is classified:

* ``clear``: exit code 2, one ``error:`` line, no traceback;
* ``ran``: exit code 0 (an odd input that is valid, e.g. an unpadded year);
* ``traceback``: a Python traceback anywhere in the output;
* ``other``: any other exit code (or the time limit).

Errors must come before the work: a clear error slower than 25 s counts as ``late``. Commands that
write into an output folder get one holding a complete earlier set (``posterior.nc``,
``inference_data.nc``, ``validation.csv`` with one ``run_id``); after the case the folder must hold
one complete set (the old one, or a new one) and no leftovers, else the case counts as
``lost_or_mixed``. The counts are printed at the end (and written with ``--json``). About ten
minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--latent-dim", "4", "--members", "10"]
LIMIT_S = 120
LATE_S = 25.0


def _observed(start="2000-01", end="2004-12") -> pd.DataFrame:
    from bayesbridge.datasets import observed_indices

    obs = observed_indices().sel(time=slice(start, end))
    return pd.DataFrame({
        "time": [f"{t.year:04d}-{t.month:02d}" for t in obs["time"].values],
        **{v: obs[v].values.astype(float) for v in ("nino3", "nino4", "nino34", "h_w")},
    })


_NETCDF_LOCK = threading.Lock()

def make_files(d: Path) -> dict[str, Path]:
    """Every input file the cases refer to, written into ``d``."""
    f: dict[str, Path] = {}
    frame = _observed()

    def csv(name, df=None, text=None):
        path = d / name
        if text is not None:
            path.write_text(text)
        else:
            df.to_csv(path, index=False)
        f[name] = path

    csv("ok.csv", frame)
    csv("empty.csv", text="")
    csv("header_only.csv", text="time,nino3,nino4\n")
    bad = frame.astype(object)
    bad.loc[7, "nino3"] = "abc"
    csv("non_numeric.csv", bad)
    csv("bad_time.csv", frame.assign(time=frame["time"].where(frame.index != 3, "2000/xx")))
    csv("month13.csv", frame.assign(time=frame["time"].where(frame.index != 3, "2000-13")))
    unpadded = frame.copy()
    unpadded["time"] = [f"{i // 12 + 1}-{i % 12 + 1:02d}" for i in range(len(frame))]
    csv("unpadded_year.csv", unpadded)
    daily = pd.DataFrame({"time": pd.date_range("2000-01-01", periods=90).strftime("%Y-%m-%d"),
                          "nino3": np.zeros(90), "nino4": np.zeros(90)})
    csv("daily.csv", daily)
    csv("duplicated.csv", pd.concat([frame.iloc[:5], frame.iloc[4:]]))
    csv("semicolon.csv", text=frame.to_csv(index=False, sep=";"))
    csv("tabs.csv", text=frame.to_csv(index=False, sep="\t"))
    csv("ragged.csv", text=frame.to_csv(index=False) + "2005-01,0.1,0.2,0.3,0.4,0.5\n")
    csv("dup_columns.csv", text="time,nino3,nino3\n2000-01,0.1,0.2\n2000-02,0.1,0.2\n")
    csv("no_time.csv", frame.rename(columns={"time": "date"}))
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    f["binary.csv"] = d / "binary.csv"
    (d / "garbage.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(3000))
    f["garbage.nc"] = d / "garbage.nc"
    (d / "table.xlsx").write_bytes(b"PK\x03\x04" + os.urandom(500))
    f["table.xlsx"] = d / "table.xlsx"
    csv("obs.json", text=json.dumps({"nino3": [0.1, 0.2]}))
    csv("all_nan.csv", frame.assign(nino3=np.nan))
    csv("fill_1e30.csv", frame.assign(nino3=frame["nino3"].where(frame.index != 20, 1e30)))
    csv("fill_9999.csv", frame.assign(nino4=frame["nino4"].where(frame.index != 33, -9999.0)))
    csv("inf.csv", frame.assign(nino3=frame["nino3"].where(frame.index != 11, np.inf)))
    csv("kelvin.csv", frame.assign(nino3=frame["nino3"] + 299.15, nino4=frame["nino4"] + 301.15))
    csv("absolute_degc.csv", frame.assign(nino3=frame["nino3"] + 26.0))
    csv("absolute_depth.csv", frame.assign(h_w=frame["h_w"] + 160.0))
    csv("gap.csv", frame.drop(index=[10, 11]))
    csv("unordered.csv", frame.iloc[[1, 0, *range(2, len(frame))]])
    csv("one_row.csv", frame.iloc[:1])
    csv("only_nino4.csv", frame[["time", "nino4"]])
    csv("text_cells.csv", text="time,nino3,nino4\n2000-01,warm,cold\n")
    csv("nan_text.csv", frame.assign(nino4=["NaN" if i % 5 == 0 else v for i, v in enumerate(frame["nino4"])]))
    csv("bom.csv", text="\ufeff" + frame.to_csv(index=False))
    csv("time_only.csv", frame[["time"]])
    csv("spaced_header.csv", text=frame.to_csv(index=False).replace("time,nino3", "time , nino3", 1))
    csv("datetime_text.csv", frame.assign(time=[f"{t}-01 00:00:00" for t in frame["time"]]))
    csv("negative_year.csv", frame.assign(time=frame["time"].where(frame.index != 0, "-5-01")))
    csv("sentinel_hw.csv", frame.assign(h_w=frame["h_w"].where(frame.index != 40, 9.96921e36)))
    csv("constant.csv", frame.assign(nino3=0.0, nino4=0.0))
    csv("long.csv", _observed("1950-01", "2019-12"))
    csv("quoted.csv", text=frame.to_csv(index=False, quoting=1))
    csv("trailing_comma.csv", text="\n".join(line + "," for line in frame.to_csv(index=False).splitlines()) + "\n")
    # netCDF observations
    time = xr.date_range("2000-01-01", periods=60, freq="MS", calendar="noleap", use_cftime=True)
    ens = xr.Dataset({v: (("member", "time"), np.random.default_rng(0).normal(0, 0.8, (3, 60)))
                      for v in ("nino3", "nino4")}, coords={"time": time})
    ens.to_netcdf(d / "ensemble.nc")
    f["ensemble.nc"] = d / "ensemble.nc"
    xr.Dataset({"nino3": ("x", np.zeros(5))}).to_netcdf(d / "no_time.nc")
    f["no_time.nc"] = d / "no_time.nc"
    xr.Dataset({"nino3": ("time", np.zeros(5))}, coords={"time": np.arange(5)}).to_netcdf(d / "int_time.nc")
    f["int_time.nc"] = d / "int_time.nc"
    # operational files
    from bayesbridge.datasets import make_twin_experiment, write_cmip6

    twin = make_twin_experiment(years=20, seed=0)
    op = twin.operational
    op.to_netcdf(d / "op20.nc")
    f["op20.nc"] = d / "op20.nc"
    op[["zos"]].to_netcdf(d / "op_zos_only.nc")
    f["op_zos_only.nc"] = d / "op_zos_only.nc"
    op.isel(time=slice(0, 12)).to_netcdf(d / "op_one_year.nc")
    f["op_one_year.nc"] = d / "op_one_year.nc"
    op.sel(lat=slice(10, 20)).to_netcdf(d / "op_north.nc")
    f["op_north.nc"] = d / "op_north.nc"
    op.rename({"lat": "y"}).to_netcdf(d / "op_no_lat.nc")
    f["op_no_lat.nc"] = d / "op_no_lat.nc"
    write_cmip6(op, d / "cmip", years_per_file=10)
    idx = xr.Dataset({"nino3": ("time", np.zeros(60)), "nino4": ("time", np.zeros(60))}, coords={"time": time})
    idx.to_netcdf(d / "calib_bad.nc")
    f["calib_bad.nc"] = d / "calib_bad.nc"
    xr.Dataset({"nino3": ("time", np.zeros(24))},
               coords={"time": xr.date_range("2000-01-30", periods=24, freq="MS", calendar="360_day",
                                             use_cftime=True).shift(29, "D")}).to_netcdf(d / "day30_360.nc")
    f["day30_360.nc"] = d / "day30_360.nc"
    dup = xr.Dataset({"nino3": ("time", np.zeros(4))},
                     coords={"time": xr.date_range("2000-01-01", periods=4, freq="MS", use_cftime=True)[[0, 1, 1, 2]]})
    dup.to_netcdf(d / "dup_time.nc")
    f["dup_time.nc"] = d / "dup_time.nc"
    kelvin_op = op.copy()
    kelvin_op["tos"] = kelvin_op["tos"] + 273.15
    kelvin_op["tos"].attrs["units"] = "K"
    kelvin_op.to_netcdf(d / "op_kelvin.nc")
    f["op_kelvin.nc"] = d / "op_kelvin.nc"
    (op * np.nan).assign_attrs(op.attrs).to_netcdf(d / "op_nan.nc")
    f["op_nan.nc"] = d / "op_nan.nc"
    op.isel(time=slice(None, None, -1)).to_netcdf(d / "op_reversed.nc")
    f["op_reversed.nc"] = d / "op_reversed.nc"
    op360 = op.convert_calendar("360_day", align_on="year")
    op360.isel(time=slice(0, 120)).to_netcdf(d / "op_360a.nc")
    op.isel(time=slice(120, 240)).to_netcdf(d / "op_noleap_b.nc")
    f["op_360a.nc"], f["op_noleap_b.nc"] = d / "op_360a.nc", d / "op_noleap_b.nc"
    (d / "a_folder").mkdir()
    f["a_folder"] = d / "a_folder"
    (d / "plain_file").write_text("x")
    f["plain_file"] = d / "plain_file"
    return f


def cases(f: dict[str, Path], d: Path) -> list[tuple[str, list[str], str | None]]:
    """``(name, arguments, kind of output folder to check or None)``."""
    out = str(d / "OUT")
    ok = str(f["ok.csv"])

    def assim(obs, *extra, vars_="nino3,nino4"):
        return ["assimilate", "--observations", str(obs), "--vars", vars_, "--out", out, *TINY, *extra]

    c: list[tuple[str, list[str], str | None]] = []
    # observations
    for name, args in [
        ("obs start bogus", ["--start", "bogus"]), ("obs end month 13", ["--end", "2019-13"]),
        ("obs start after end", ["--start", "2019-01", "--end", "1950-01"]),
        ("obs period outside record", ["--start", "3000-01", "--end", "3001-01"]),
        ("obs period too short", ["--start", "1950-01", "--end", "1950-06"]),
        ("obs json is folder", ["--json", str(f["a_folder"])]),
        ("obs json not writable", ["--json", "/proc/self/x/stats.json"]),
        ("obs json under a file", ["--json", str(f["plain_file"]) + "/stats.json"]),
        ("obs start empty", ["--start", ""]), ("obs start year only", ["--start", "1950"]),
        ("obs end with day 32", ["--end", "2019-12-32"]),
    ]:
        c.append((name, ["observations", *args], None))
    # assimilate: observation files
    for name in ["empty.csv", "header_only.csv", "non_numeric.csv", "bad_time.csv", "month13.csv", "daily.csv",
                 "duplicated.csv", "semicolon.csv", "tabs.csv", "ragged.csv", "dup_columns.csv", "no_time.csv",
                 "binary.csv", "garbage.nc", "table.xlsx", "obs.json", "all_nan.csv", "fill_1e30.csv",
                 "fill_9999.csv", "inf.csv", "kelvin.csv", "absolute_degc.csv", "gap.csv", "unordered.csv",
                 "only_nino4.csv", "text_cells.csv", "no_time.nc", "int_time.nc", "ensemble.nc"]:
        c.append((f"assimilate {name}", assim(f[name]), "assimilate"))
    c += [
        ("assimilate absolute h_w depth", assim(f["absolute_depth.csv"], vars_="h_w"), "assimilate"),
        ("assimilate missing file", assim(d / "nope.csv"), "assimilate"),
        ("assimilate observations folder", assim(f["a_folder"]), "assimilate"),
        ("assimilate ensemble member 99", assim(f["ensemble.nc"], "--member", "99"), "assimilate"),
        ("assimilate ensemble member -1", assim(f["ensemble.nc"], "--member", "-1"), "assimilate"),
        ("assimilate member on csv", assim(ok, "--member", "0"), "assimilate"),
        ("assimilate vars comma", assim(ok, vars_=","), "assimilate"),
        ("assimilate vars empty", assim(ok, vars_=""), "assimilate"),
        ("assimilate vars unknown", assim(ok, vars_="nino3,sst_west"), "assimilate"),
        ("assimilate vars twice", assim(ok, vars_="nino3,nino3"), "assimilate"),
        ("assimilate vars not in file", assim(f["only_nino4.csv"], vars_="nino3"), "assimilate"),
        ("assimilate method bogus", assim(ok, "--method", "bogus"), "assimilate"),
        ("assimilate members 0", assim(ok, "--members", "0"), "assimilate"),
        ("assimilate members 1", assim(ok, "--members", "1"), "assimilate"),
        ("assimilate members -3", assim(ok, "--members", "-3"), "assimilate"),
        ("assimilate members abc", assim(ok, "--members", "abc"), "assimilate"),
        ("assimilate members 1e9 text", assim(ok, "--members", "1e9"), "assimilate"),
        ("assimilate members 10^9", assim(ok, "--members", "1000000000"), "assimilate"),
        ("assimilate members 10^12", assim(ok, "--members", "1000000000000"), "assimilate"),
        ("assimilate latent 0", assim(ok, "--latent-dim", "0"), "assimilate"),
        ("assimilate latent 100000", assim(ok, "--latent-dim", "100000"), "assimilate"),
        ("assimilate latent 198", assim(ok, "--latent-dim", "198"), "assimilate"),
        ("assimilate seed -1", assim(ok, "--seed", "-1"), "assimilate"),
        ("assimilate seed 2^64", assim(ok, "--seed", str(2**64)), "assimilate"),
        ("assimilate seed float", assim(ok, "--seed", "1.5"), "assimilate"),
        ("assimilate start bogus", assim(ok, "--start", "bogus"), "assimilate"),
        ("assimilate start 2000-1-1x", assim(ok, "--start", "2000-1-1x"), "assimilate"),
        ("assimilate start after data", assim(ok, "--start", "2050-01"), "assimilate"),
        ("assimilate end before data", assim(ok, "--end", "1990-01"), "assimilate"),
        ("assimilate start after end", assim(ok, "--start", "2003-01", "--end", "2001-01"), "assimilate"),
        ("assimilate out is file", ["assimilate", "--observations", ok, "--vars", "nino3", "--out", ok, *TINY], None),
        ("assimilate out under file", ["assimilate", "--observations", ok, "--vars", "nino3", "--out",
                                       str(f["plain_file"]) + "/o", *TINY], None),
        ("assimilate out not writable", ["assimilate", "--observations", ok, "--vars", "nino3", "--out",
                                         "/proc/self/o", *TINY], None),
        ("assimilate operational missing", assim(ok, "--operational", str(d / "nope.nc")), "assimilate"),
        ("assimilate operational glob none", assim(ok, "--operational", str(d / "none" / "*.nc")), "assimilate"),
        ("assimilate operational csv", assim(ok, "--operational", ok), "assimilate"),
        ("assimilate operational garbage", assim(ok, "--operational", str(f["garbage.nc"])), "assimilate"),
        ("assimilate operational folder", assim(ok, "--operational", str(f["a_folder"])), "assimilate"),
        ("assimilate operational no lat", assim(ok, "--operational", str(f["op_no_lat.nc"])), "assimilate"),
        ("assimilate operational zos only", assim(ok, "--operational", str(f["op_zos_only.nc"])), "assimilate"),
        ("assimilate operational misses boxes", assim(ok, "--operational", str(f["op_north.nc"])), "assimilate"),
        ("assimilate operational one year", assim(ok, "--operational", str(f["op_one_year.nc"])), "assimilate"),
        ("assimilate operational obs as op", assim(ok, "--operational", str(f["ensemble.nc"])), "assimilate"),
        ("assimilate missing --vars", ["assimilate", "--observations", ok, "--out", out], "assimilate"),
        ("assimilate unknown option", assim(ok, "--bogus", "1"), "assimilate"),
        ("assimilate BOM header (valid)", assim(f["bom.csv"]), "assimilate"),
        ("assimilate time only", assim(f["time_only.csv"]), "assimilate"),
        ("assimilate spaced header (valid)", assim(f["spaced_header.csv"]), "assimilate"),
        ("assimilate datetime text (valid)", assim(f["datetime_text.csv"]), "assimilate"),
        ("assimilate negative year", assim(f["negative_year.csv"]), "assimilate"),
        ("assimilate netCDF fill in h_w", assim(f["sentinel_hw.csv"]), "assimilate"),
        ("assimilate quoted (valid)", assim(f["quoted.csv"]), "assimilate"),
        ("assimilate trailing comma (valid)", assim(f["trailing_comma.csv"]), "assimilate"),
        ("assimilate 360-day day 30", assim(f["day30_360.nc"], vars_="nino3"), "assimilate"),
        ("assimilate duplicated netCDF times", assim(f["dup_time.nc"], vars_="nino3"), "assimilate"),
        ("assimilate operational all NaN", assim(ok, "--operational", str(f["op_nan.nc"])), "assimilate"),
        ("assimilate operational reversed", assim(ok, "--operational", str(f["op_reversed.nc"])), "assimilate"),
        ("assimilate operational mixed calendars",
         assim(ok, "--operational", str(f["op_360a.nc"]), "--operational", str(f["op_noleap_b.nc"])), "assimilate"),
        ("assimilate operational Kelvin (valid)", assim(ok, "--operational", str(f["op_kelvin.nc"]), "--method", "kalman"),
         "assimilate"),
        ("assimilate constant (valid)", assim(f["constant.csv"], "--method", "etkf"), "assimilate"),
        ("assimilate long record pf (valid)", assim(f["long.csv"], "--method", "pf", "--operational",
                                                    str(f["op20.nc"])), "assimilate"),
        ("assimilate nino12 svi (valid)", assim(ok, "--method", "svi", "--operational", str(f["op20.nc"]),
                                                vars_="nino12"), "assimilate"),
        # bridge options (issues 14 and 15)
        ("assimilate codec bogus", assim(ok, "--codec", "pca"), "assimilate"),
        ("assimilate dynamics bogus", assim(ok, "--dynamics", "gru"), "assimilate"),
        ("assimilate svi with lstm", assim(ok, "--method", "svi", "--dynamics", "lstm"), "assimilate"),
        ("assimilate particles 1", assim(ok, "--method", "pf", "--particles", "1"), "assimilate"),
        ("assimilate particles 0", assim(ok, "--method", "pf", "--particles", "0"), "assimilate"),
        ("assimilate particles abc", assim(ok, "--method", "pf", "--particles", "abc"), "assimilate"),
        ("assimilate particles 10^12", assim(ok, "--method", "pf", "--particles", "1000000000000"), "assimilate"),
        ("assimilate particles with enks", assim(ok, "--particles", "500"), "assimilate"),
        ("assimilate proposal with enks", assim(ok, "--method", "enks", "--proposal", "guided"), "assimilate"),
        ("assimilate proposal bogus", assim(ok, "--method", "pf", "--proposal", "optimal"), "assimilate"),
        ("assimilate pf members 4 (valid: 2000 particles)", assim(ok, "--method", "pf", "--members", "4",
                                                                  "--operational", str(f["op20.nc"])), "assimilate"),
        ("assimilate pf particles bootstrap (valid)", assim(ok, "--method", "pf", "--particles", "200", "--proposal",
                                                            "bootstrap", "--operational", str(f["op20.nc"])),
         "assimilate"),
        ("assimilate autoencoder lstm (valid)", assim(ok, "--codec", "autoencoder", "--dynamics", "lstm",
                                                      "--operational", str(f["op20.nc"])), "assimilate"),
        ("assimilate vae neural etkf (valid)", assim(ok, "--codec", "vae", "--dynamics", "neural", "--method", "etkf",
                                                     "--operational", str(f["op20.nc"])), "assimilate"),
        # odd but valid
        ("assimilate unpadded year (valid)", assim(f["unpadded_year.csv"]), "assimilate"),
        ("assimilate one row (valid)", assim(f["one_row.csv"]), "assimilate"),
        ("assimilate NaN text cells (valid)", assim(f["nan_text.csv"]), "assimilate"),
        ("assimilate ensemble member 1 (valid)", assim(f["ensemble.nc"], "--member", "1"), "assimilate"),
        ("assimilate cmip glob (valid)", assim(ok, "--operational", str(d / "cmip" / "*.nc"), "--method", "kalman"),
         "assimilate"),
    ]
    # idealized simulate
    sim_out = str(d / "sim.nc")
    for name, args in [
        ("simulate out folder", ["--out", str(f["a_folder"])]), ("simulate out not writable", ["--out", "/proc/self/x.nc"]),
        ("simulate years 0", ["--years", "0"]), ("simulate years -1", ["--years", "-1"]),
        ("simulate members 0", ["--members", "0"]), ("simulate members 10^9", ["--members", "1000000000"]),
        ("simulate years 10^8", ["--years", "100000000", "--members", "1"]),
        ("simulate daily huge", ["--years", "100000", "--members", "10", "--daily"]),
        ("simulate dt 0", ["--dt", "0"]), ("simulate dt 0.3", ["--dt", "0.3"]), ("simulate dt nan", ["--dt", "nan"]),
        ("simulate dt not dividing", ["--dt", "0.0033"]), ("simulate variant bogus", ["--variant", "bogus"]),
        ("simulate f -1", ["--f", "-1"]), ("simulate f nan", ["--f", "nan"]), ("simulate m 5", ["--m", "5"]),
        ("simulate noise -1", ["--noise-scale", "-1"]), ("simulate wind inf", ["--wind-amp", "inf"]),
        ("simulate seed -1", ["--seed", "-1"]), ("simulate burn-in -1", ["--burn-in-years", "-1"]),
        ("simulate start-year 0", ["--start-year", "0"]), ("simulate years abc", ["--years", "abc"]),
        ("simulate one member (valid)", ["--members", "1"]),
        ("simulate daily (valid)", ["--daily", "--years", "1"]),
        ("simulate dt inf", ["--dt", "inf"]), ("simulate years 1e3 text", ["--years", "1e3"]),
    ]:
        c.append((name, ["idealized", "simulate", "--out", sim_out, "--years", "3", "--members", "2", *args], None))
    # idealized calibrate
    cal = ["idealized", "calibrate", "--out", str(d / "cal"), "--quick"]
    for name, args in [
        ("calibrate observations missing", ["--observations", str(d / "nope.nc")]),
        ("calibrate observations garbage", ["--observations", str(f["garbage.nc"])]),
        ("calibrate observations folder", ["--observations", str(f["a_folder"])]),
        ("calibrate observations csv", ["--observations", ok]),
        ("calibrate observations short", ["--observations", str(f["calib_bad.nc"])]),
        ("calibrate parameters bogus", ["--parameters", "f,bogus"]), ("calibrate parameters comma", ["--parameters", ","]),
        ("calibrate design 0", ["--design-points", "0"]), ("calibrate chains 0", ["--chains", "0"]),
        ("calibrate start bogus", ["--start", "bogus"]), ("calibrate start after end", ["--start", "2019-01", "--end", "1950-01"]),
        ("calibrate out is file", ["--out", str(f["plain_file"])]), ("calibrate seed -1", ["--seed", "-1"]),
    ]:
        c.append((name, [*cal, *args], None))
    # sensitivity
    sens = ["sensitivity", "--quick", "--out", str(d / "sens")]
    for name, args in [
        ("sensitivity n 3", ["--n", "3"]), ("sensitivity n 0", ["--n", "0"]), ("sensitivity n -2", ["--n", "-2"]),
        ("sensitivity years 1", ["--years", "1"]), ("sensitivity years 2", ["--years", "2"]),
        ("sensitivity workers 0", ["--workers", "0"]), ("sensitivity workers -1", ["--workers", "-1"]),
        ("sensitivity scheduler bogus", ["--scheduler", "bogus"]),
        ("sensitivity scheduler unreachable", ["--scheduler", "tcp://127.0.0.1:9"]),
        ("sensitivity scheduler file missing", ["--scheduler", str(d / "nope.json")]),
        ("sensitivity scheduler with workers", ["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"]),
        ("sensitivity out is file", ["--out", str(f["plain_file"])]), ("sensitivity seed -1", ["--seed", "-1"]),
        ("sensitivity host url", ["--host", "tcp://0.0.0.0"]),
    ]:
        c.append((name, [*sens, *args], None))
    # demo, bench, root
    c += [
        ("demo out is file", ["demo", "--quick", "--out", str(f["plain_file"])], None),
        ("demo out not writable", ["demo", "--quick", "--out", "/proc/self/demo"], None),
        ("demo seed -1", ["demo", "--quick", "--seed", "-1"], None),
        ("demo parameter draws -1", ["demo", "--quick", "--parameter-draws", "-1"], None),
        ("demo parameter draws 10^9", ["demo", "--quick", "--out", str(d / "demo"), "--parameter-draws", "1000000000"], None),
        ("demo parameter source unknown", ["demo", "--quick", "--out", str(d / "demo"), "--parameter-source", "uniform"], None),
        ("demo seed abc", ["demo", "--seed", "abc"], None),
        ("demo method bogus", ["demo", "--quick", "--method", "mcmc"], None),
        ("demo codec bogus", ["demo", "--quick", "--codec", "pca"], None),
        ("demo dynamics bogus", ["demo", "--quick", "--dynamics", "gru"], None),
        ("demo svi with lstm", ["demo", "--quick", "--method", "svi", "--dynamics", "lstm"], None),
        ("demo particles 1", ["demo", "--quick", "--method", "pf", "--particles", "1"], None),
        ("demo particles with enks", ["demo", "--quick", "--particles", "100"], None),
        ("demo proposal with enks", ["demo", "--quick", "--method", "enks", "--proposal", "guided"], None),
        ("demo proposal bogus", ["demo", "--quick", "--method", "pf", "--proposal", "optimal"], None),
        ("demo particles 10^12", ["demo", "--quick", "--out", str(d / "demo"), "--method", "pf", "--particles",
                                  "1000000000000"], None),
        ("bench only bogus", ["bench", "--only", "bogus"], None), ("bench only comma", ["bench", "--only", ","], None),
        ("bench json folder", ["bench", "--tiny", "--only", "idealized", "--json", str(f["a_folder"])], None),
        ("bench json not writable", ["bench", "--tiny", "--only", "idealized", "--json", "/proc/self/b.json"], None),
        ("observations json new file (valid)", ["observations", "--json", str(d / "new" / "stats.json")], None),
        ("root unknown command", ["nosuch"], None), ("root unknown option", ["--bogus"], None),
        ("idealized unknown command", ["idealized", "nosuch"], None),
    ]
    return c


def reference_set(folder: Path, files: dict[str, Path], env: dict) -> None:
    """One complete assimilate output set in ``folder`` (the 'old set' every case starts from)."""
    subprocess.run([sys.executable, "-c", "from bayesbridge.cli import main; main()", "assimilate", "--observations",
                    str(files["ok.csv"]), "--vars", "nino3,nino4", "--out", str(folder), *TINY],
                   env=env, check=True, capture_output=True, timeout=LIMIT_S)


def output_state(folder: Path) -> str:
    """``"complete <run_id>"``, or what is wrong with the folder's set of files."""
    names = ("posterior.nc", "inference_data.nc", "validation.csv")
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.is_dir() else []
    if leftovers:
        return f"leftovers {leftovers}"
    if not all((folder / n).exists() for n in names):
        return "missing " + ",".join(n for n in names if not (folder / n).exists())
    times = xr.coders.CFDatetimeCoder(use_cftime=True)
    with _NETCDF_LOCK:  # the HDF5 library is not thread-safe: two cases' checks at once crashed this driver
        with xr.open_dataset(folder / "posterior.nc", decode_times=times) as post:
            a = post.attrs.get("run_id")
        with xr.open_dataset(folder / "inference_data.nc", group="posterior", decode_times=times) as idata:
            b = idata.attrs.get("run_id")
    c = set(pd.read_csv(folder / "validation.csv")["run_id"].astype(str))
    return f"complete {a}" if a == b and c == {a} else f"mixed {a} {b} {c}"


def run_case(case, files, d, env, reference: Path) -> dict:
    name, args, kind = case
    workdir = Path(tempfile.mkdtemp(dir=d, prefix="case-"))
    args = [a.replace(str(d / "OUT"), str(workdir / "OUT")) for a in args]
    if kind == "assimilate":
        shutil.copytree(reference, workdir / "OUT")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", "from bayesbridge.cli import main; main()", *args],
                              env=env, capture_output=True, text=True, timeout=LIMIT_S, cwd=workdir)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        code, text = 124, raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    seconds = time.perf_counter() - t0
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if "Traceback" in text:
        outcome = "traceback"
    elif code == 2 and len(errors) == 1:
        outcome = "clear"
    elif code == 0:
        outcome = "ran"
    else:
        outcome = "other"
    last = text.strip().splitlines()[-1] if text.strip() else ""
    row = {"case": name, "outcome": outcome, "code": code, "seconds": round(seconds, 1),
           "message": errors[0] if errors else last}
    if outcome == "clear" and seconds > LATE_S:
        row["late"] = True
    if kind == "assimilate":
        row["output"] = output_state(workdir / "OUT")
        row["output_ok"] = row["output"].startswith("complete")
    shutil.rmtree(workdir, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bayesbridge-battery-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.setdefault("BAYESBRIDGE_CACHE_DIR", str(ROOT / "tests" / ".cache"))
    try:
        files = make_files(d)
        reference = d / "reference"
        reference_set(reference, files, env)
        todo = [c for c in cases(files, d) if args.only is None or args.only in c[0]]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(lambda c: run_case(c, files, d, env, reference), todo))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for row in rows:
        flag = " LATE" if row.get("late") else ""
        out = f" [{row['output']}]" if "output" in row else ""
        print(f"{row['outcome']:9s} {row['seconds']:6.1f}s{flag} {row['case']}: {row['message']}{out}")
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("clear", "ran", "traceback", "other")}
    counts["tried"] = len(rows)
    counts["late"] = sum(bool(r.get("late")) for r in rows)
    counts["lost_or_mixed"] = sum(not r["output_ok"] for r in rows if "output_ok" in r)
    print(json.dumps(counts))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
