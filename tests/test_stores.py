"""Zarr stores (the layout of cloud CMIP6 collections) opened by open_operational like netCDF files."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from cmip_files import make_fields, make_thetao, write_cmip_files

from bayesbridge import errors, io
from bayesbridge.io import stores

pytest.importorskip("zarr")  # in the `dev` extra: this skip only shows outside it


def _to_zarr(ds, path, **kwargs):
    enc = {"time": {"units": "days since 1850-01-01", "calendar": "noleap"}}
    with warnings.catch_warnings():  # zarr 3 warns that consolidated metadata is not in the v3 spec
        warnings.simplefilter("ignore")
        ds.to_zarr(path, encoding=enc, **kwargs)
    return path


@pytest.fixture(scope="module")
def fields():
    ds, *_ = make_fields(n_months=24)
    return ds


def test_zarr_store_matches_the_netcdf_route(fields, tmp_path):
    store = _to_zarr(fields, tmp_path / "tos_zos.zarr")
    write_cmip_files(tmp_path / "nc", fields, months_per_file=12)
    via_zarr = io.open_operational(store, region="nino34")
    via_nc = io.open_operational(str(tmp_path / "nc" / "*.nc"), region="nino34")
    assert set(via_zarr.data_vars) == {"tos", "zos"}
    assert via_zarr["tos"].chunks is None  # small enough: read into memory like the netCDF route
    assert io.open_operational(store, region="nino34", chunks={"time": 12})["tos"].chunks is not None
    assert via_zarr["time"].values[0].calendar == "noleap"
    for v in ("tos", "zos"):
        np.testing.assert_array_equal(via_zarr[v].values, via_nc[v].values)
    np.testing.assert_array_equal(via_zarr["mask"].values, via_nc["mask"].values)


def test_list_and_glob_of_stores_and_zarr_format_2(fields, tmp_path):
    _to_zarr(fields[["tos"]], tmp_path / "tos.zarr", zarr_format=2, consolidated=True)
    _to_zarr(fields[["zos"]], tmp_path / "zos.zarr")
    both = io.open_operational(str(tmp_path / "*.zarr"), region=None)
    listed = io.open_operational([tmp_path / "tos.zarr", tmp_path / "zos.zarr"], region=None)
    direct = io.open_operational(fields, region=None)
    for v in ("tos", "zos"):
        np.testing.assert_array_equal(both[v].values, direct[v].values)
        np.testing.assert_array_equal(listed[v].values, direct[v].values)


def test_d20_from_a_thetao_store(tmp_path):
    ds, _ = make_thetao(n_months=12)
    store = _to_zarr(ds.chunk({"time": 6}), tmp_path / "thetao.zarr")
    out = io.open_operational(store, variables=["tos", "d20"], region=None, anomalies=False)
    np.testing.assert_allclose(out["d20"].values, io.isotherm_depth(ds["thetao"]).values, atol=1e-4)


def test_zarr_errors_name_the_store_and_the_extra(fields, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(errors.DataFileError, match="is a folder"):
        io.open_operational(plain)
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    with pytest.raises(errors.DataFileError, match=r"cannot read .*broken\.zarr.* as a zarr store"):
        io.open_operational(broken)
    store = _to_zarr(fields, tmp_path / "ok.zarr")
    assert stores.is_zarr_store(store) and not stores.is_zarr_store(plain)
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if zarr were not installed
    with pytest.raises(errors.DataFileError, match=r"ok\.zarr.*pip install 'bayesbridge\[zarr\]'"):
        io.open_operational(store)
