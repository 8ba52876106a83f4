"""Codecs: EOF, autoencoder, VAE (bayesbridge.latent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from synthetic_fields import make_synthetic_fields

import bayesbridge.latent as bl
from bayesbridge.errors import (
    BayesBridgeError,
    DataFileError,
    InputValueError,
    NotFittedError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
)
from bayesbridge.regions import box_index

FAST = {"progress": False, "epochs": 80, "patience": 10}




@pytest.fixture(scope="module")
def data():
    ds = make_synthetic_fields(n_years=40, seed=0).fields
    return ds.isel(time=slice(0, 32 * 12)), ds.isel(time=slice(32 * 12, None))


@pytest.fixture(scope="module")
def eof(data):
    return bl.EOFCodec(6).fit(data[0])


@pytest.fixture(scope="module")
def ae(data):
    return bl.Autoencoder(6, **FAST).fit(data[0])


@pytest.fixture(scope="module")
def vae(data):
    return bl.VAE(6, **FAST).fit(data[0])


def _weighted_matrix(ds):
    """Independent oracle of the normalised stacked data (numpy only)."""
    blocks = []
    for v in ("tos", "zos"):
        a = ds[v].values
        ocean = np.isfinite(a).any(0)
        x = a[:, ocean]
        w = np.broadcast_to(np.cos(np.deg2rad(ds.lat.values))[:, None], ocean.shape)[ocean]
        s = np.sqrt(np.sum(w * x.var(0)) / w.sum())
        blocks.append((x - x.mean(0)) / s * np.sqrt(w / w.mean()))
    return np.concatenate(blocks, 1)


# ----------------------------------------------------------------------------- EOF
def test_eof_matches_numpy_svd(data, eof):
    x = _weighted_matrix(data[0])
    s2 = np.sort(np.linalg.eigvalsh(x @ x.T))[::-1]  # squared singular values
    np.testing.assert_allclose(eof.explained_variance_ratio, (s2 / np.sum(s2))[:6], rtol=1e-8)
    z = eof.encode(data[0])
    assert z.dims == ("time", "latent") and z.shape == (384, 6)
    np.testing.assert_allclose(z.std("time", ddof=1).values, 1.0, rtol=1e-8)
    np.testing.assert_allclose(np.corrcoef(z.values.T), np.eye(6), atol=1e-8)


def test_eof_full_rank_reconstructs_exactly():
    ds = make_synthetic_fields(n_years=2, seed=3).fields
    full = bl.EOFCodec(23).fit(ds)  # rank of 24 centred time steps is 23
    rec = full.decode(full.encode(ds))
    np.testing.assert_allclose(rec["tos"].values, ds["tos"].values, atol=1e-4)
    assert np.array_equal(np.isnan(rec["zos"].values), np.isnan(ds["zos"].values))
    assert rec["tos"].dtype == np.float32 and rec["tos"].attrs["units"] == "degC"


def test_randomized_eof_matches_full(data):
    full = bl.EOFCodec(4, method="full").fit(data[0])
    rand = bl.EOFCodec(4, method="randomized", seed=1).fit(data[0])
    np.testing.assert_allclose(rand.explained_variance_ratio, full.explained_variance_ratio, rtol=1e-6)
    np.testing.assert_allclose(rand.encode(data[1]).values, full.encode(data[1]).values, atol=1e-5)


# ----------------------------------------------------------------------------- done-when skill
def test_autoencoder_heldout_skill_and_eof_beside_it(data, ae, eof):
    train, test = data
    rep_ae = bl.reconstruction_report(ae, train, test)
    rep_eof = bl.reconstruction_report(eof, train, test)
    print("\n", rep_ae, "\n", rep_eof)
    for v in ("tos", "zos"):
        assert rep_ae.test.explained_variance[v] >= 0.90
        assert rep_eof.test.explained_variance[v] >= 0.90
    for box in ("nino3", "nino4"):
        assert rep_ae.test.index_correlation[box] >= 0.97
    # the report's index correlation agrees with an independent computation via regions.box_index
    rec = ae.decode(ae.encode(test))
    direct = np.corrcoef(box_index(rec["tos"], "nino3"), box_index(test["tos"], "nino3"))[0, 1]
    assert rep_ae.test.index_correlation["nino3"] == pytest.approx(direct, abs=1e-5)
    assert set(rep_ae.to_dataframe()["split"]) == {"train", "test"}


def test_vae_residual_variance_matches_heldout_error(data, vae):
    _, test = data
    rec = vae.decode(vae.encode(test))
    resid_var = vae.residual_std.numpy() ** 2
    w = vae.stacker.area_weights
    for v, sl in vae.stacker.slices.items():
        err = ((rec[v] - test[v]) ** 2).mean("time").values[vae.stacker.mask[v]]
        ratio = np.sum(w[sl] * resid_var[sl]) / np.sum(w[sl] * err)
        assert 0.8 <= ratio <= 1.2, (v, ratio)


def test_vae_decode_sample_carries_residual_error(vae):
    z = torch.zeros(4000, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = vae.decode_sample(z, gen).detach()
    np.testing.assert_allclose(draws.std(0).numpy(), vae.residual_std.numpy(), rtol=0.1)
    assert vae.encode_std(make_synthetic_fields(2, seed=1).fields).dims == ("time", "latent")


# ----------------------------------------------------------------------------- decode_tensor
@pytest.mark.parametrize("name", ["eof", "ae", "vae"])
def test_decode_tensor_batched_shapes(name, request, data):
    codec = request.getfixturevalue(name)
    z = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0))
    out = codec.decode_tensor(z)
    assert out.shape == (3, 5, len(codec.points)) and out.dtype == torch.float32
    assert codec.decode_tensor(z.double()).dtype == torch.float64
    # batching is elementwise: a batched call equals per-sample calls
    np.testing.assert_allclose(
        out[2, 4].detach().numpy(), codec.decode_tensor(z[2, 4]).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    fields = codec.decode(xr.DataArray(z.numpy(), dims=("batch", "member", "latent")))
    assert fields["tos"].dims == ("batch", "member", "lat", "lon")
    assert list(codec.points.names) == ["variable", "lat", "lon"]
    assert isinstance(codec, bl.Codec)


def test_decode_tensor_gradient_eof_is_decoder_matrix(eof):
    z = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(eof.decode_tensor, z)
    np.testing.assert_allclose(jac.T.numpy(), eof.decoder_matrix.numpy(), rtol=1e-10)


def test_decode_tensor_gradient_ae_matches_finite_differences(ae):
    row = torch.from_numpy(bl.box_operator(ae)["nino3"])
    z = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    f = lambda zz: ae.decode_tensor(zz).double() @ row  # noqa: E731
    (grad,) = torch.autograd.grad(f(z), z)
    h = 1e-2
    fd = torch.stack([(f(z + h * e) - f(z - h * e)) / (2 * h) for e in torch.eye(6, dtype=torch.float64)])
    assert grad.abs().max() > 1e-3
    np.testing.assert_allclose(grad.numpy(), fd.detach().numpy(), rtol=0.02, atol=1e-4)


# ----------------------------------------------------------------------------- determinism, persistence
def test_seed_determinism(data):
    small = data[0].isel(time=slice(0, 120))
    a = bl.Autoencoder(3, hidden=(16,), epochs=5, progress=False, seed=4).fit(small)
    b = bl.Autoencoder(3, hidden=(16,), epochs=5, progress=False, seed=4).fit(small)
    c = bl.Autoencoder(3, hidden=(16,), epochs=5, progress=False, seed=5, init="random").fit(small)
    np.testing.assert_array_equal(a.encode(small).values, b.encode(small).values)
    assert not np.allclose(a.encode(small).values, c.encode(small).values)


@pytest.mark.parametrize("name", ["eof", "ae", "vae"])
def test_save_load_round_trip_exact(name, request, data, tmp_path):
    codec = request.getfixturevalue(name)
    codec.save(tmp_path / name)
    loaded = type(codec).load(tmp_path / name, fields=data[1])
    np.testing.assert_array_equal(loaded.encode(data[1]).values, codec.encode(data[1]).values)
    z = torch.randn(7, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.decode_tensor(z), codec.decode_tensor(z))
    assert loaded.points.equals(codec.points)
    if name == "vae":
        assert torch.equal(loaded.residual_std, codec.residual_std)


def test_load_mismatch_errors(eof, data, tmp_path):
    eof.save(tmp_path / "c")
    with pytest.raises(ShapeMismatchError, match="fitted grid"):
        bl.EOFCodec.load(tmp_path / "c", fields=data[1].isel(lon=slice(0, 30)))
    with pytest.raises(VariableNotFoundError, match="zos"):
        bl.EOFCodec.load(tmp_path / "c", fields=data[1][["tos"]])
    with pytest.raises(DataFileError, match="eof"):
        bl.Autoencoder.load(tmp_path / "c")
    with pytest.raises(DataFileError, match="metadata.json"):
        bl.EOFCodec.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- bad input
def test_nan_in_ocean_points_reports_count_and_where(data):
    bad = data[0].copy(deep=True)
    bad["tos"][5, 5, 20] = np.nan
    bad["tos"][9, 5, 20] = np.nan
    with pytest.raises(InputValueError, match=r"2 NaN/inf values at 1 ocean points.*lat=0, lon=200") as err:
        bl.EOFCodec(3).fit(bad)
    assert isinstance(err.value, BayesBridgeError)


def test_latent_dim_above_rank(data):
    with pytest.raises(ParameterError, match="rank"):
        bl.EOFCodec(30).fit(data[0].isel(time=slice(0, 24)))
    with pytest.raises(ParameterError, match="rank"):
        bl.Autoencoder(40, progress=False).fit(data[0].isel(time=slice(0, 48)))


def test_decode_wrong_latent_size_states_both_shapes(eof):
    with pytest.raises(ShapeMismatchError, match=r"\(\*batch, 6\).*\(2, 5\)"):
        eof.decode_tensor(torch.zeros(2, 5))
    with pytest.raises(ShapeMismatchError):
        eof.decode(np.zeros((3, 4)))


def test_too_few_time_steps_for_validation_split(data):
    with pytest.raises(InputValueError, match="too few for a validation split"):
        bl.Autoencoder(3, progress=False).fit(data[0].isel(time=slice(0, 12)))


def test_other_input_errors(data):
    with pytest.raises(NotFittedError):
        bl.EOFCodec(3).encode(data[0])
    with pytest.raises(ParameterError, match="full, randomized|auto"):
        bl.EOFCodec(3, method="qr")
    with pytest.raises(ParameterError, match="eof, random"):
        bl.Autoencoder(3, init="zeros")
    with pytest.raises(BayesBridgeError):
        bl.EOFCodec(0)
