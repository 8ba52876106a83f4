"""Data layer: reading CMIP6-like files, anomalies, regions, indices, atomic writing."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cmip_files import SEASONAL, make_fields, write_cmip_files

from bayesbridge import errors, io, regions


@pytest.fixture(scope="module")
def cmip(tmp_path_factory):
    ds, amp, pattern, land = make_fields()
    folder = tmp_path_factory.mktemp("cmip")
    paths = write_cmip_files(folder, ds)
    return folder, paths, ds, amp, pattern, land


def test_multifile_noleap_kelvin_anomalies(cmip):
    folder, paths, raw, amp, pattern, land = cmip
    ds = io.open_operational(str(folder / "*.nc"), region=None)
    assert set(ds.data_vars) == {"tos", "zos"}
    assert ds["tos"].attrs["units"] == "degC"
    assert ds.sizes["time"] == raw.sizes["time"]
    assert ds["time"].values[0].calendar == "noleap"
    assert ds["tos"].chunks is None  # small enough: read into memory, anomalies with numpy
    # anomalies equal the known amplitude times the pattern (the seasonal cycle is removed)
    expected = amp[:, None, None] * pattern[None]
    got = ds["tos"].values
    ocean = ~land
    np.testing.assert_allclose(got[:, ocean], expected[:, ocean], atol=2e-4)
    assert np.isnan(got[:, land]).all()
    assert not bool(ds["mask"].values[land].any()) and bool(ds["mask"].values[ocean].all())
    # chunks= keeps the fields lazy (dask, block-wise climatology): the same anomalies
    lazy = io.open_operational(str(folder / "*.nc"), region=None, chunks={"time": 24})
    assert lazy["tos"].chunks is not None
    np.testing.assert_allclose(lazy["tos"].values, got, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(lazy["mask"].values, ds["mask"].values)


def test_climatology_matches_known_seasonal_cycle(cmip):
    folder, *_ = cmip
    full = io.open_operational(str(folder / "tos*.nc"), anomalies=False, region=None)
    clim = full["tos"].groupby("time.month").mean().isel(lat=10, lon=10).values - 26.0
    np.testing.assert_allclose(clim, SEASONAL, atol=1e-4)


def test_find_variable_by_standard_name(cmip):
    folder, *_ = cmip
    ds = io.open_operational(str(folder / "*.nc"), variables=["sea_surface_temperature"], region="nino3")
    assert list(ds.data_vars) == ["sea_surface_temperature"]


def test_detrend_removes_linear_trend(cmip):
    *_, raw, amp, pattern, land = cmip
    trended = raw.copy()
    n = raw.sizes["time"]
    years = np.arange(n) / 12.0
    trended["tos"] = raw["tos"] + xr.DataArray(0.5 * years, dims="time").astype("float32")
    out = io.open_operational(trended, variables="tos", region=None, detrend=True)
    # independent numpy version: least-squares line per point, then monthly means removed
    x = trended["tos"].values[:, ~land].astype(float) - 273.15
    t = np.arange(n, dtype=float)
    coef = np.polyfit(t, x, 1)
    resid = x - np.outer(t - t.mean(), coef[0])
    month = np.arange(n) % 12
    resid -= np.stack([resid[month == m].mean(0) for m in range(12)])[month]
    np.testing.assert_allclose(out["tos"].values[:, ~land], resid, atol=2e-3)
    plain = io.open_operational(trended, variables="tos", region=None)
    assert np.abs(plain["tos"].values[:, ~land] - resid).max() > 0.5


def test_index_matches_hand_computed_area_weighted_mean(cmip):
    *_, raw, amp, pattern, land = cmip
    ds = io.open_operational(raw, variables="tos", region=None)
    idx = regions.box_index(ds["tos"], "nino3").values
    lat, lon = raw.lat.values, raw.lon.values
    inside = (np.abs(lat) <= 5)[:, None] & ((lon >= 210) & (lon <= 270))[None, :]
    w = np.cos(np.deg2rad(lat))[:, None] * inside
    manual = (amp[:, None, None] * pattern[None] * w).sum((1, 2)) / w.sum()
    np.testing.assert_allclose(idx, manual, atol=1e-5)
    oni = regions.box_index(ds["tos"], "nino3", running_mean=3).values
    np.testing.assert_allclose(oni[1:-1], (manual[:-2] + manual[1:-1] + manual[2:]) / 3, atol=1e-5)


def test_land_points_skipped_in_index(cmip):
    *_, raw, amp, pattern, land = cmip
    ds = io.open_operational(raw, variables="tos", region=None)
    box = regions.Region("corner", 0.0, 20.0, 250.0, 300.0)
    lat, lon = raw.lat.values, raw.lon.values
    inside = (lat >= 0)[:, None] & ((lon >= 250) & (lon <= 300))[None, :] & ~land
    w = np.cos(np.deg2rad(lat))[:, None] * inside
    manual = (amp[:, None, None] * pattern[None] * w).sum((1, 2)) / w.sum()
    np.testing.assert_allclose(regions.box_index(ds["tos"], box).values, manual, atol=1e-5)


def test_dateline_crossing_region_on_minus180_grid(cmip):
    *_, raw, amp, pattern, land = cmip
    shifted = raw.assign_coords(lon=((raw.lon + 180) % 360) - 180).sortby("lon")
    a = io.open_operational(raw, variables="tos", region="nino4")
    b = io.open_operational(shifted, variables="tos", region="nino4")
    assert float(b.lon.min()) >= 160 and float(b.lon.max()) <= 210  # contiguous in 0..360
    np.testing.assert_allclose(b["tos"].values, a["tos"].values, atol=1e-6)
    # the index is the same whichever longitude convention the grid uses
    i_shift = regions.box_index(io.anomalies(shifted["tos"]), "nino4").values
    i_raw = regions.box_index(io.anomalies(raw["tos"]), "nino4").values
    np.testing.assert_allclose(i_shift, i_raw, atol=1e-5)
    # a box that wraps through Greenwich on a global grid
    lon = np.arange(0, 360, 10.0)
    glob = xr.DataArray(np.broadcast_to(lon, (3, lon.size)), dims=("lat", "lon"), coords={"lat": [-1.0, 0, 1], "lon": lon})
    wrap = regions.Region("wrap", -2, 2, 350, 10)
    sub = io.select_region(glob.to_dataset(name="x"), wrap)
    assert sorted(np.mod(sub.lon.values, 360).tolist()) == [0.0, 10.0, 350.0]


def test_areacello_weights(cmip, tmp_path):
    *_, raw, amp, pattern, land = cmip
    area = xr.DataArray(
        np.outer(np.linspace(1, 2, raw.lat.size), np.ones(raw.lon.size)), dims=("lat", "lon"),
        coords={"lat": raw.lat, "lon": raw.lon}, attrs={"standard_name": "cell_area", "units": "m2"},
    )
    area.to_dataset(name="areacello").to_netcdf(tmp_path / "areacello.nc")
    ds = io.open_operational(raw, variables="tos", region=None, areacello=tmp_path / "areacello.nc")
    np.testing.assert_allclose(ds["area"].values, area.values)
    assert ds["area"].attrs["units"] == "m2"


def test_write_netcdf_roundtrip_with_attributes(tmp_path):
    ds = xr.Dataset({"x": (("time",), np.arange(5.0), {"units": "degC"})}, coords={"time": np.arange(5)})
    path = io.write_netcdf(ds, tmp_path / "out.nc", attrs={"title": "t"})
    back = xr.open_dataset(path)
    assert back.attrs["Conventions"] == "CF-1.8" and back.attrs["title"] == "t"
    assert back["x"].attrs["units"] == "degC" and back["x"].attrs["long_name"] == "x"
    assert not back["x"].encoding.get("zlib")  # uncompressed by default (docs/lab-notes.md)
    assert back["x"].encoding["chunksizes"] == (5,)  # chunked by time (here one chunk)
    assert path.stat().st_mode & 0o044  # readable by others, like any file the user writes
    np.testing.assert_array_equal(back["x"].values, ds["x"].values)
    back.close()
    long = xr.Dataset({"y": (("time", "lat"), np.ones((300, 2)))}, coords={"time": np.arange(300)})
    packed = io.write_netcdf(long, tmp_path / "packed.nc", complevel=4, time_chunk=120)
    with xr.open_dataset(packed) as back:
        assert back["y"].encoding["zlib"] and back["y"].encoding["chunksizes"] == (120, 2)


def test_write_failure_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.nc"
    target.write_text("previous")
    bad = xr.Dataset({"x": ("t", np.array([object(), object()]))})  # netCDF cannot store objects
    with pytest.raises(Exception):  # noqa: B017 - any failure of the backend
        io.write_netcdf(bad, target)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nc"]  # no temporary left behind


# ---- bad input -------------------------------------------------------------------------------


def test_missing_variable_lists_available(cmip):
    *_, raw, _a, _p, _l = cmip
    with pytest.raises(errors.VariableNotFoundError, match="tos.*zos|zos.*tos") as exc:
        io.open_operational(raw, variables="thetao")
    assert isinstance(exc.value, errors.BayesBridgeError)


def test_no_time_axis(cmip):
    *_, raw, _a, _p, _l = cmip
    with pytest.raises(errors.TimeAxisError, match="no time"):
        io.open_operational(raw.isel(time=0, drop=True))


def test_non_monotonic_time(cmip):
    *_, raw, _a, _p, _l = cmip
    shuffled = raw.isel(time=[0, 2, 1, 3])
    with pytest.raises(errors.TimeAxisError, match="not monotonic"):
        io.open_operational(shuffled)


def test_duplicated_time(cmip):
    *_, raw, _a, _p, _l = cmip
    with pytest.raises(errors.TimeAxisError, match="duplicated"):
        io.open_operational(raw.isel(time=[0, 1, 1, 2]))


def test_mixed_calendars(tmp_path):
    a, *_ = make_fields(n_months=12, calendar="noleap")
    b, *_ = make_fields(n_months=12, start_year=1851, calendar="360_day")
    write_cmip_files(tmp_path, a[["tos"]], months_per_file=12, calendar="noleap")
    write_cmip_files(tmp_path, b[["tos"]], months_per_file=12, calendar="360_day")
    with pytest.raises(errors.CalendarError, match="noleap.*360_day|360_day.*noleap"):
        io.open_operational(str(tmp_path / "*.nc"))


@pytest.mark.parametrize("calendar", ["360_day", "proleptic_gregorian", "gregorian"])
def test_other_calendars_open(tmp_path, calendar):
    ds, amp, pattern, land = make_fields(n_months=24, calendar=calendar)
    write_cmip_files(tmp_path, ds[["tos"]], months_per_file=12, calendar=calendar)
    out = io.open_operational(str(tmp_path / "*.nc"), region="nino34")
    assert out.sizes["time"] == 24


def test_grid_not_covering_region(cmip):
    *_, raw, _a, _p, _l = cmip
    small = raw.sel(lon=slice(100, 180))
    with pytest.raises(errors.GridCoverageError, match=r"lon 100\.\.180"):
        io.open_operational(small, region="nino3")


def test_all_nan_region(cmip):
    *_, raw, _a, _p, _l = cmip
    dry = raw.copy()
    dry["tos"] = dry["tos"].where(dry.lon < 200)
    with pytest.raises(errors.AllMissingError, match="nino3"):
        io.open_operational(dry, variables="tos", region="nino3")


def test_unknown_region_lists_valid():
    with pytest.raises(errors.RegionError, match="nino34.*nino4"):
        regions.get_region("nino5")


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"this is not netcdf")
    with pytest.raises(errors.DataFileError, match="broken.nc"):
        io.open_operational([bad])
    with pytest.raises(errors.DataFileError, match="nothere.nc"):
        io.open_operational(tmp_path / "nothere.nc")
    with pytest.raises(errors.DataFileError, match="matches no file"):
        io.open_operational(str(tmp_path / "*.zzz"))


def test_region_validation_and_weights(cmip):
    *_, raw, _a, _p, land = cmip
    with pytest.raises(errors.RegionError, match="lat_min"):
        regions.Region("bad", 5.0, -5.0, 100.0, 200.0)
    with pytest.raises(errors.RegionError, match="lon_max"):
        regions.Region("bad", -5.0, 5.0, 100.0, 400.0)
    tup = regions.get_region((-5, 5, -150, -90))  # degrees west become 0..360
    assert (tup.lon_min, tup.lon_max) == (210.0, 270.0)
    valid = xr.DataArray(~land, dims=("lat", "lon"), coords={"lat": raw.lat, "lon": raw.lon})
    w = regions.box_weights(raw, "nino3", valid=valid)
    assert abs(float(w.sum()) - 1.0) < 1e-12
    assert float(w.where(~valid, 0).sum()) == 0.0
    # the weights reproduce box_index on any field
    field = raw["zos"].isel(time=3)
    np.testing.assert_allclose(float((w * field.fillna(0)).sum()), float(regions.box_index(field, "nino3")), rtol=1e-5)


def test_point_box_weights_equal_grid_box_index():
    """Box means over stacked points equal box_index on the gridded field (masked points, areas)."""
    import pandas as pd

    rng = np.random.default_rng(4)
    lat, lon = np.arange(-10.0, 10.1, 2.0), np.arange(120.0, 281.0, 4.0)
    ocean = rng.random((lat.size, lon.size)) > 0.2
    area = xr.DataArray(rng.uniform(0.5, 1.5, ocean.shape), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    fields = {v: xr.DataArray(np.where(ocean, rng.standard_normal(ocean.shape), np.nan), dims=("lat", "lon"),
                              coords={"lat": lat, "lon": lon}) for v in ("tos", "zos")}
    ii, jj = np.nonzero(ocean)
    points = pd.MultiIndex.from_tuples([(v, lat[i], lon[j]) for v in fields for i, j in zip(ii, jj, strict=True)],
                                       names=["variable", "lat", "lon"])
    stacked = np.concatenate([fields[v].values[ii, jj] for v in fields])
    for box in ("nino3", "nino4", "h_w"):
        var = regions.get_region(box).variable
        row = regions.point_box_weights(points, box, lat=lat, lon=lon, area=area)
        want = float(regions.box_index(fields[var], box, area=area))
        np.testing.assert_allclose(stacked @ row, want, rtol=1e-12)
        assert np.all(row[[p[0] != var for p in points]] == 0.0)
    with pytest.raises(errors.VariableNotFoundError, match="thetao"):
        regions.point_box_weights(points, "nino3", "thetao")
