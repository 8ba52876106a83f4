"""Vertical levels: the 20 degC isotherm depth and 4-D variables in open_operational.

The temperature columns are a tanh thermocline (``tests/cmip_files.py``) whose exact 20 degC
crossing is known in closed form, on levels 10 m apart to 95 m and 25 m apart to 245 m.
"""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from cmip_files import LEVELS, make_thetao, tanh_crossing, tanh_profile, write_cmip_files

from bayesbridge import errors, io
from bayesbridge.io import vertical


@pytest.fixture(scope="module")
def thetao():
    return make_thetao()


def _column(temps, levels, **attrs):
    """One column ``(lev,)`` of temperatures on the given levels, as (time, lev, lat, lon)."""
    lev = xr.DataArray(np.asarray(levels, float), dims="lev", attrs=attrs)
    values = np.asarray(temps, float)[None, :, None, None]
    return xr.DataArray(values, dims=("time", "lev", "lat", "lon"), coords={"lev": lev}, name="thetao",
                        attrs={"units": "degC"})


def _one(da: xr.DataArray) -> float:
    return float(da.values.item())


def test_isotherm_depth_matches_exact_tanh_crossing(thetao):
    ds, exact = thetao
    d20 = io.isotherm_depth(ds["thetao"])
    assert d20.dims == ("time", "lat", "lon") and d20.name == "d20" and d20.dtype == np.float32
    assert d20.attrs["standard_name"] == "depth_of_isosurface_of_sea_water_potential_temperature"
    assert d20.attrs["units"] == "m" and d20.attrs["positive"] == "down" and "20 degC" in d20.attrs["comment"]
    got = d20.values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))  # land, outcrop and shallow floor
    assert np.nanmax(np.abs(got - exact)) < 1.0  # metres, linear interpolation on 10-25 m levels
    assert np.isfinite(exact).mean() > 0.7  # most columns do cross


def test_centimetre_and_positive_up_levels_give_the_same_depth(thetao):
    ds, exact = thetao
    theta = ds["thetao"].isel(time=slice(0, 3))
    metres = io.isotherm_depth(theta).values
    cm = theta.assign_coords(lev=("lev", LEVELS * 100.0, {"units": "centimeters", "positive": "down"}))
    np.testing.assert_allclose(io.isotherm_depth(cm).values, metres, rtol=1e-6)
    # heights (negative, positive up), stored bottom first: reordered to depths
    up = theta.assign_coords(lev=("lev", -LEVELS, {"units": "m", "positive": "up", "axis": "Z"})).isel(lev=slice(None, None, -1))
    np.testing.assert_allclose(io.isotherm_depth(up).values, metres, rtol=1e-6)
    # negative levels without a positive attribute are heights too
    bare = theta.assign_coords(lev=("lev", -LEVELS, {"units": "m"}))
    np.testing.assert_allclose(io.isotherm_depth(bare).values, metres, rtol=1e-6)


def test_single_columns_by_hand():
    levels = [0.0, 10.0, 30.0, 60.0]
    # linear between 25 degC at 10 m and 15 degC at 30 m: 20 degC at 20 m; Kelvin gives the same
    col = _column([26.0, 25.0, 15.0, 10.0], levels, units="m", positive="down")
    assert _one(io.isotherm_depth(col)) == pytest.approx(20.0)
    kelvin = col + 273.15
    kelvin.attrs = {"units": "K"}
    assert _one(io.isotherm_depth(kelvin)) == pytest.approx(20.0, abs=1e-9)
    assert _one(io.isotherm_depth(col, 15.0)) == pytest.approx(30.0)  # exactly on a level
    assert io.isotherm_depth(col, 15.0).name == "d15"
    # the first crossing going down, even with a warm layer below it
    assert _one(io.isotherm_depth(_column([26, 18, 21, 10], levels))) == pytest.approx(10 * 6 / 8)
    # never crosses: warm to the bottom, all NaN (land), colder at the top (outcrop), sea floor above
    for temps in ([26, 25, 24, 23], [np.nan] * 4, [19, 18, 15, 10], [26, 25, np.nan, np.nan]):
        assert np.isnan(_one(io.isotherm_depth(_column(temps, levels))))
    assert _one(io.isotherm_depth(_column([19, 18, 15, 10], levels), outcrop="surface")) == 0.0
    assert np.isnan(_one(io.isotherm_depth(_column([np.nan] * 4, levels), outcrop="surface")))
    # the vertical coordinate is found by CF attributes or by name
    olevel = _column([26, 25, 15, 10], levels, axis="Z").rename(lev="olevel")
    deptht = _column([26, 25, 15, 10], levels).rename(lev="deptht")
    assert _one(io.isotherm_depth(olevel)) == _one(io.isotherm_depth(deptht)) == pytest.approx(20.0)


def test_dask_input_stays_lazy_and_matches_numpy(thetao):
    ds, exact = thetao
    eager = io.isotherm_depth(ds["thetao"])
    lazy_in = ds["thetao"].chunk({"time": 5, "lev": 7, "lat": 11})  # the level axis in several chunks
    lazy = io.isotherm_depth(lazy_in)
    assert isinstance(lazy.data, dsa.Array)
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_isotherm_depth_bad_input_names_the_problem():
    col = _column([26.0, 25.0, 15.0, 10.0], [0, 10, 30, 60], units="m")
    with pytest.raises(errors.InputValueError, match=r"vertical coordinate.*assign_coords"):
        io.isotherm_depth(col.drop_vars("lev").rename(lev="k"))
    with pytest.raises(errors.InputValueError, match="at least two levels"):
        io.isotherm_depth(col.isel(lev=[0]))
    with pytest.raises(errors.InputValueError, match=r"m or cm.*'Pa'"):
        io.isotherm_depth(col.assign_coords(lev=("lev", [1e5, 9e4, 8e4, 7e4], {"units": "Pa", "positive": "down"})))
    with pytest.raises(errors.InputValueError, match="distinct"):
        io.isotherm_depth(col.assign_coords(lev=("lev", [0.0, 10, 10, 60], {"units": "m"})))
    with pytest.raises(errors.InputValueError, match="degC or K"):
        io.isotherm_depth(col.assign_attrs(units="degF"))
    with pytest.raises(errors.InputTypeError, match="thetao: expected an xarray.DataArray"):
        io.isotherm_depth(col.to_dataset())
    with pytest.raises(errors.InputTypeError, match="isotherm"):
        io.isotherm_depth(col, "20")
    with pytest.raises(errors.InputValueError, match="outcrop"):
        io.isotherm_depth(col, outcrop="zero")


# ---- open_operational on 4-D input -------------------------------------------------------------


@pytest.fixture(scope="module")
def thetao_files(tmp_path_factory, thetao):
    ds, exact = thetao
    folder = tmp_path_factory.mktemp("cmip_thetao")
    write_cmip_files(folder, ds[["tos", "thetao"]], months_per_file=12)
    return folder


def test_d20_from_multifile_thetao_equals_isotherm_depth_then_anomalies(thetao_files, thetao):
    ds, exact = thetao
    files = sorted(thetao_files.glob("*.nc"))
    assert len(files) == 4 and any(f.name.startswith("thetao_Omon") for f in files)
    out = io.open_operational(str(thetao_files / "*.nc"), variables=["tos", "d20"], region=None)
    assert list(out.data_vars) == ["tos", "d20"]
    assert out["time"].values[0].calendar == "noleap"
    assert out["d20"].chunks is None and out["d20"].dtype == np.float32  # small: read into memory
    lazy = io.open_operational(str(thetao_files / "*.nc"), variables=["tos", "d20"], region=None,
                               chunks={"time": 12})
    assert lazy["d20"].chunks is not None
    np.testing.assert_allclose(lazy["d20"].values, out["d20"].values, atol=1e-4, equal_nan=True)
    assert out["d20"].attrs["units"] == "m" and out["d20"].attrs["positive"] == "down"
    expected = io.anomalies(io.isotherm_depth(ds["thetao"]).to_dataset())["d20"]
    np.testing.assert_allclose(out["d20"].values, expected.transpose("time", "lat", "lon").values, atol=1e-3)
    # the anomalies are those of the exact crossing, to interpolation accuracy
    truth = io.anomalies(xr.DataArray(exact, dims=("time", "lat", "lon"), coords=out["d20"].coords).to_dataset(name="d"))["d"]
    assert float(np.nanmax(np.abs(out["d20"].values - truth.values))) < 1.0
    # a variable that the files hold under that name is used as it is, not derived
    stored = io.anomalies(io.isotherm_depth(ds["thetao"]).to_dataset())["d20"].rename("d20").to_dataset()
    np.testing.assert_array_equal(io.open_operational(stored, variables="d20", region=None, anomalies=False)["d20"].values,
                                  stored["d20"].values.astype("float32"))


def test_4d_variable_without_level_is_refused_with_the_options(thetao):
    ds, _ = thetao
    with pytest.raises(errors.InputValueError, match=r"'thetao' has the vertical dimension 'lev' \(21 levels, 5\.\.495 m") as exc:
        io.open_operational(ds, variables=["tos", "thetao"], region=None)
    assert "level=<depth in m>" in str(exc.value) and "level_index=<int>" in str(exc.value) and "'d20'" in str(exc.value)
    with pytest.raises(errors.InputValueError, match="vertical dimension 'lev'"):  # every (time, lat, lon) variable
        io.open_operational(ds, region=None)
    other = ds["thetao"].expand_dims(member=2).rename("x").to_dataset()
    with pytest.raises(errors.InputValueError, match=r"extra dimensions \['member', 'lev'\]"):
        io.open_operational(other, variables="x", region=None)


def test_level_selection_by_depth_or_index(thetao):
    ds, _ = thetao
    at_50 = io.open_operational(ds, variables=["tos", "thetao"], region=None, level=52.0)  # nearest: 55 m
    raw = ds["thetao"].sel(lev=55.0)
    want = io.anomalies(raw.to_dataset())["thetao"]
    np.testing.assert_allclose(at_50["thetao"].values, want.values, atol=1e-4)
    assert at_50["thetao"].attrs["vertical_level"] == "lev = 55 m"
    assert "lev" not in at_50.coords and set(at_50["tos"].dims) == {"time", "lat", "lon"}
    by_index = io.open_operational(ds, variables="thetao", region=None, level_index=5)
    np.testing.assert_array_equal(by_index["thetao"].values, at_50["thetao"].values)
    # cm levels: level is still a depth in metres
    cm = ds.assign_coords(lev=("lev", LEVELS * 100.0, {"units": "cm", "axis": "Z"}))
    np.testing.assert_array_equal(io.open_operational(cm, variables="thetao", region=None, level=52.0)["thetao"].values,
                                  at_50["thetao"].values)
    assert float(io.select_level(ds["thetao"], level=0.0).isel(time=0, lat=10, lon=10)) == float(
        ds["thetao"].isel(time=0, lev=0, lat=10, lon=10))  # within half a level of the first one
    with pytest.raises(errors.InputValueError, match=r"level: expected a value within .*0\.\.520 m.*got 800"):
        io.open_operational(ds, variables="thetao", region=None, level=800.0)
    with pytest.raises(errors.InputValueError, match=r"level_index: expected an integer in -21\.\.20"):
        io.open_operational(ds, variables="thetao", region=None, level_index=21)
    with pytest.raises(errors.InputValueError, match="both"):
        io.select_level(ds["thetao"], level=50.0, index=3)


def test_pressure_levels_are_selected_in_their_units():
    plev = xr.DataArray([100000.0, 85000.0, 50000.0], dims="plev", attrs={"units": "Pa", "positive": "down", "axis": "Z"})
    ua = xr.DataArray(np.arange(3 * 2 * 2, dtype=float).reshape(1, 3, 2, 2), dims=("time", "plev", "lat", "lon"),
                      coords={"plev": plev}, name="ua")
    assert io.select_level(ua, level=84000.0).values.ravel().tolist() == [4.0, 5.0, 6.0, 7.0]
    with pytest.raises(errors.InputValueError, match=r"level=<value in Pa>"):
        vertical.as_field(ua, "ua")


def test_d20_needs_thetao_with_a_vertical_coordinate(thetao):
    ds, _ = thetao
    with pytest.raises(errors.VariableNotFoundError, match=r"'d20' is derived from .*thetao.*contain tos"):
        io.open_operational(ds[["tos"]], variables=["tos", "d20"], region=None)
    bare = ds.drop_vars(["lev", "lev_bnds"]).rename(lev="k")
    with pytest.raises(errors.InputValueError, match=r"'d20' is derived from 'thetao'.*expected a vertical coordinate"):
        io.open_operational(bare, variables=["tos", "d20"], region=None)
    surface = ds.assign(thetao=ds["thetao"].isel(lev=0))
    with pytest.raises(errors.InputValueError, match=r"'d20' is derived from 'thetao'.*dimensions \('time', 'lat', 'lon'\)"):
        io.open_operational(surface, variables="d20", region=None)


def test_analytic_profile_helper_is_exact():
    z = tanh_crossing(20.0, 28.0, 140.0)
    assert float(tanh_profile(z, 28.0, 140.0)) == pytest.approx(20.0, abs=1e-9)
