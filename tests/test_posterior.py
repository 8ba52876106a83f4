"""Posterior: chunked decoded summaries against brute force, index draws against
regions.box_index, particle resampling, memory that does not grow with members, netCDF and
ArviZ outputs."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from bayesbridge.bench.core import PeakRSS
from bayesbridge.bridge.posterior import Posterior
from bayesbridge.errors import (
    InputTypeError,
    InputValueError,
    ParameterError,
    ShapeMismatchError,
    VariableNotFoundError,
)
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics
from bayesbridge.io import arviz_compat
from bayesbridge.regions import box_index


class LinearCodec:
    """Hand-made codec: x = B z + c on the ocean points of a small grid (test double)."""

    def __init__(self, lat, lon, variables=("tos", "zos"), latent_dim=6, seed=0, land=True):
        rng = np.random.default_rng(seed)
        self.lat = np.asarray(lat, float)
        self.lon = np.asarray(lon, float)
        tuples = []
        for v in variables:
            for la in self.lat:
                for lo in self.lon:
                    if land and lo >= self.lon[-2] and la > 0:  # a land corner
                        continue
                    tuples.append((v, la, lo))
        self.points = pd.MultiIndex.from_tuples(tuples, names=["variable", "lat", "lon"])
        n = len(tuples)
        q, _ = np.linalg.qr(rng.normal(size=(n, latent_dim)))
        self.B = torch.as_tensor(q * 3.0)
        self.c = torch.as_tensor(rng.normal(scale=0.1, size=n))
        self.latent_dim = latent_dim
        self.residual_std = torch.full((n,), 0.2)

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.B.to(z.dtype).T + self.c.to(z.dtype)


GRID_LAT = np.arange(-10.0, 10.1, 2.0)
GRID_LON = np.arange(120.0, 281.0, 10.0)


def make_result(T=24, M=30, d=6, batch=(), seed=1, smoothed=True, weights=False):
    """An ensemble result: smoothed (EnKS-like), or a weighted particle filter (``weights``) whose
    backward-simulation trajectories are the smoothed ensemble when ``smoothed``."""
    g = torch.Generator().manual_seed(seed)
    ens = torch.randn(*batch, T, M, d, generator=g, dtype=torch.float64).cumsum(-3) * 0.3
    lw = None
    if weights:
        lw = torch.log_softmax(torch.randn(*batch, T, M, generator=g, dtype=torch.float64), -1)
    return AssimilationResult(
        method="pf" if weights or not smoothed else "enks",
        filtered_mean=ens.mean(-2),
        log_evidence=torch.full(batch, -12.5, dtype=torch.float64),
        filtered_ensemble=ens if weights or not smoothed else None,
        smoothed_ensemble=ens if smoothed else None,
        log_weights=lw,
        diagnostics=StepDiagnostics(innovation=torch.zeros(*batch, T, 2), spread=torch.ones(*batch, T)),
        hyperparameters={"obs_scale": torch.rand(M, generator=g, dtype=torch.float64) + 0.1},
    )




@pytest.fixture(scope="module")
def codec():
    return LinearCodec(GRID_LAT, GRID_LON)


def test_chunked_summaries_equal_brute_force(codec):
    res = make_result(T=17, M=25)
    post = Posterior(res, codec, chunk_mb=0.05)  # several blocks
    assert post.block_steps() < 17
    ds = post.summary()
    x = codec.decode_tensor(res.smoothed_ensemble.to(torch.float32)).to(torch.float32)  # (T, M, P)
    q = torch.quantile(x, torch.tensor([0.05, 0.5, 0.95]), dim=1).numpy()
    mean = x.double().mean(1).numpy()
    std = x.double().std(1).numpy()
    pts = codec.points
    for v in ("tos", "zos"):
        sel = np.flatnonzero(pts.get_level_values("variable") == v)
        lat = np.asarray(pts.get_level_values("lat"))[sel]
        lon = np.asarray(pts.get_level_values("lon"))[sel]
        got = {s: ds[f"{v}_{s}"].sel(lat=xr.DataArray(lat, dims="p"), lon=xr.DataArray(lon, dims="p")).values
               for s in ("mean", "std", "q05", "q50", "q95")}
        np.testing.assert_allclose(got["mean"], mean[:, sel], atol=1e-5)
        np.testing.assert_allclose(got["std"], std[:, sel], atol=1e-5)
        for k, s in enumerate(("q05", "q50", "q95")):
            np.testing.assert_array_equal(got[s], q[k][:, sel])
        assert ds[f"{v}_mean"].dtype == np.float32
        # land corner is NaN, ocean is finite
        assert np.isnan(ds[f"{v}_mean"].sel(lat=10.0, lon=GRID_LON[-1])).all()
        assert int(ds[f"{v}_mean"].isel(time=0).notnull().sum()) == sel.size


def test_index_draws_match_box_index_of_sampled_fields(codec):
    res = make_result(T=12, M=8)
    post = Posterior(res, codec, representation_std="codec", seed=3, chunk_mb=0.02)
    assert post.boxes == ("nino12", "nino3", "nino34", "nino4", "h_w")
    fields = post.sample_fields(n_draws=None)  # all draws, same seeded noise as the summaries
    for box in post.boxes:
        var = "zos" if box == "h_w" else "tos"
        # the observable: the box mean, times 150 m of thermocline per m of zos for h_w
        oracle = box_index(fields[var], box).transpose("draw", "time").values * (150.0 if box == "h_w" else 1.0)
        np.testing.assert_allclose(post.index_draws(box).values, oracle, atol=1e-5)
        ds = post.summary()
        np.testing.assert_allclose(ds[f"{box}_mean"].values, oracle.mean(0), atol=1e-5)
        np.testing.assert_allclose(ds[f"{box}_q95"].values, np.quantile(oracle, 0.95, axis=0), atol=1e-5)
    # the noise is really there: fields differ from the noiseless decode by ~0.2
    clean = Posterior(res, codec).sample_fields(n_draws=None)
    diff = (fields["tos"] - clean["tos"]).values
    assert 0.17 < np.nanstd(diff) < 0.23
    # and the summaries used the same noisy draws
    np.testing.assert_allclose(post.summary()["tos_mean"].values, fields["tos"].mean("draw").values, atol=1e-5)


def test_sample_fields_subset_and_time_selection(codec):
    res = make_result(T=10, M=12)
    time = xr.date_range("2000-01-01", periods=10, freq="MS", calendar="noleap", use_cftime=True)
    post = Posterior(res, codec, time=time)
    a = post.sample_fields(n_draws=4, seed=5, time=slice(2, 6))
    assert a["tos"].shape == (4, 4, GRID_LAT.size, GRID_LON.size)
    assert a["tos"].dtype == np.float32
    b = post.sample_fields(n_draws=None, time=slice("2000-03-01", "2000-06-01"))
    np.testing.assert_allclose(a["tos"].values, b["tos"].sel(draw=a["draw"]).values, rtol=0, atol=1e-5)
    # a subset decodes exactly the draws of the summaries, representation noise included
    for noise in ({"representation_std": "codec"}, {"representation_residuals": np.random.default_rng(1).normal(
            0.0, 0.2, (7, len(codec.points)))}):
        noisy = Posterior(res, codec, time=time, seed=4, **noise)
        sub = noisy.sample_fields(n_draws=5, seed=2)
        full = noisy.sample_fields(n_draws=None)
        np.testing.assert_allclose(sub["zos"].values, full["zos"].sel(draw=sub["draw"]).values, rtol=0, atol=1e-5)
        assert np.nanstd(sub["tos"].values - Posterior(res, codec, time=time).sample_fields(
            n_draws=5, seed=2)["tos"].values) > 0.05  # the noise is really in the subset
    with pytest.raises(ParameterError, match="n_draws"):
        post.sample_fields(n_draws=0)


def test_batched_results_are_pooled(codec):
    res = make_result(T=6, M=5, batch=(3,))
    post = Posterior(res, codec)
    assert post.n_draws == 15
    z = post.latent_draws()
    torch.testing.assert_close(z[:, 5:10], res.smoothed_ensemble[1])  # draw = b * M + m


def test_particle_results_give_backward_trajectories_or_raise(codec):
    # A particle filter result with backward-simulation trajectories: the posterior's draws are those
    # trajectories, whole (the weighted per-step particles are not used).
    res = make_result(T=5, M=40, weights=True)
    post = Posterior(res, codec, seed=2)
    assert post.source == "smoothed"
    torch.testing.assert_close(post.latent_draws(), res.smoothed_ensemble)
    # Without them (smoother="none"), the weighted per-step particles are not trajectories: the
    # posterior refuses them, naming the remedy, with source "auto" and "filtered" alike.
    weighted = make_result(T=5, M=40, weights=True, smoothed=False)
    for source in ("auto", "filtered"):
        with pytest.raises(ParameterError, match="smoother='backward'"):
            Posterior(weighted, codec, source=source)
    # an unweighted filtered ensemble (EnKF members, each propagated from its own analysis) is used
    enkf = make_result(T=5, M=40, smoothed=False)
    enkf.method = "enkf"
    assert Posterior(enkf, codec).source == "filtered"


def test_kalman_trajectories_have_smoother_moments_and_lag_covariance(codec):
    # The exact Kalman engine returns forward-filtering backward-sampling trajectories (members=N):
    # per-step moments are the RTS smoother's, and consecutive steps have the exact smoothing
    # cross-covariance G_t P^s_{t+1} (which independent per-step draws would set to 0).
    from lg_oracle import kalman_oracle, random_lg_problem

    from bayesbridge.infer import assimilate
    from bayesbridge.model import LinearGaussianModel

    A, Q, H, R, m0, P0 = random_lg_problem(d=6, m=2, seed=3)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(4, generator=torch.Generator().manual_seed(0))
    res = assimilate(model, y, "kalman", members=4000, seed=5)
    post = Posterior(res, codec)
    assert post.source == "smoothed" and post.n_draws == 4000
    z = post.latent_draws()
    mf, Pf, ms, Ps, _ = kalman_oracle(A, Q, H, R, m0, P0, y.numpy())
    torch.testing.assert_close(z.mean(1), torch.as_tensor(ms), atol=0.05, rtol=0)
    dev = z - z.mean(1, keepdim=True)
    emp = torch.einsum("tmi,tmj->tij", dev, dev) / 3999
    torch.testing.assert_close(emp, torch.as_tensor(Ps), atol=0.06, rtol=0)
    for t in range(3):
        G = np.linalg.solve(A @ Pf[t] @ A.T + Q, A @ Pf[t]).T
        lag = (dev[t].T @ dev[t + 1] / 3999).numpy()
        np.testing.assert_allclose(lag, G @ Ps[t + 1], atol=0.06)
    # moments only (no members): no trajectories, and the remedy is named
    with pytest.raises(ParameterError, match="members=N"):
        Posterior(assimilate(model, y, "kalman"), codec)


def test_netcdf_roundtrip_with_cf_attributes(codec, tmp_path):
    res = make_result(T=8, M=10)
    time = xr.date_range("2001-01-01", periods=8, freq="MS", calendar="noleap", use_cftime=True)
    obs = {"nino3": np.linspace(-1, 1, 8), "nino4": np.linspace(1, -1, 8)}
    post = Posterior(res, codec, time=time, observations=obs, assimilated=["nino3"])
    path = post.to_netcdf(tmp_path / "posterior.nc")
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        for v in ("tos", "zos"):
            for s in ("mean", "std", "q05", "q50", "q95"):
                var = ds[f"{v}_{s}"]
                assert var.dims == ("time", "lat", "lon") and var.dtype == np.float32
                assert {"units", "long_name", "cell_methods"} <= set(var.attrs)
        assert ds["tos_mean"].attrs["units"] == "degC" and ds["zos_std"].attrs["units"] == "m"
        for box in ("nino3", "nino34", "nino4", "h_w"):
            for s in ("mean", "q05", "q95"):
                assert ds[f"{box}_{s}"].dims == ("time",)
                assert "cell_methods" in ds[f"{box}_{s}"].attrs
        assert "withheld" in ds["nino4_obs"].attrs["long_name"]
        assert ds.attrs["Conventions"] == "CF-1.8"
        np.testing.assert_allclose(ds["nino3_obs"].values, obs["nino3"], atol=1e-6)
        assert ds["time"].values[0].year == 2001
    # no h_w without a thermocline variable
    tos_only = LinearCodec(GRID_LAT, GRID_LON, variables=("tos",))
    assert "h_w" not in Posterior(make_result(T=4, M=3), tos_only).boxes


def test_inference_data_groups_dims(codec):
    res = make_result(T=9, M=20, weights=True)  # particle filter with backward trajectories
    res.hyperparameters["inflation"] = torch.tensor(1.05, dtype=torch.float64)
    res.hyperparameters["obs_scale"] = torch.rand(10, dtype=torch.float64)  # fewer draws: thinned
    post = Posterior(res, codec, observations={"nino3": np.zeros(9)})
    idata = post.to_inference_data()
    assert set(arviz_compat.groups(idata)) >= {"posterior", "posterior_predictive", "observed_data", "sample_stats"}
    p = arviz_compat.group_dataset(idata, "posterior")
    assert p["z"].dims == ("chain", "draw", "time", "latent")
    assert p["z"].shape == (1, 10, 9, 6)
    assert p["inflation"].shape == (1, 10)
    pp = arviz_compat.group_dataset(idata, "posterior_predictive")
    assert pp["nino3"].dims == ("chain", "draw", "time") and pp["nino3"].shape == (1, 20, 9)
    np.testing.assert_allclose(pp["nino3"].values[0], post.index_draws("nino3").values)
    ss = arviz_compat.group_dataset(idata, "sample_stats")
    np.testing.assert_allclose(ss["log_evidence"].values, -12.5)
    # ESS from the log weights: 1 / sum w^2
    w = torch.softmax(res.log_weights, -1)
    np.testing.assert_allclose(ss["ess"].values[0, 0], (1.0 / (w**2).sum(-1)).numpy())
    assert ss["ess"].dims == ("chain", "draw", "time")
    assert "log_weight" not in ss  # the draws are equally weighted trajectories
    od = arviz_compat.group_dataset(idata, "observed_data")
    assert od["nino3"].dims == ("time",)


def test_bad_input(codec):
    res = make_result(T=5, M=4)
    with pytest.raises(InputTypeError, match="AssimilationResult"):
        Posterior({"filtered_mean": 1}, codec)
    with pytest.raises(ShapeMismatchError, match="time"):
        Posterior(res, codec, time=np.arange(3))
    with pytest.raises(ParameterError, match="source"):
        Posterior(res, codec, source="nope")
    with pytest.raises(InputValueError, match="filtered_ensemble"):
        Posterior(res, codec, source="filtered")
    with pytest.raises(ShapeMismatchError, match="representation_std"):
        Posterior(res, codec, representation_std=np.ones(3))
    tos_only = LinearCodec(GRID_LAT, GRID_LON, variables=("tos",))
    with pytest.raises(VariableNotFoundError, match="available"):
        Posterior(res, tos_only).index_draws("h_w")
    with pytest.raises(VariableNotFoundError, match="zos"):
        Posterior(res, tos_only, boxes=["h_w"])
    with pytest.raises(VariableNotFoundError, match="assimilated"):
        Posterior(res, codec, observations={"nino3": np.zeros(5)}, assimilated=["nino4"])


def _peak_growth(codec, T, M, d, chunk_mb):
    res = make_result(T=T, M=M, d=d, seed=4)
    gc.collect()
    with PeakRSS() as mem:
        post = Posterior(res, codec, chunk_mb=chunk_mb, representation_std=0.1)
        post.summary()
    out = mem.peak_mb
    del post
    gc.collect()
    return out


def test_memory_flat_in_members():
    """Peak RSS growth must not scale with members x time: 8x members adds a small fraction of
    what the all-in-memory decoded array (T * M * P float32) would. The only output that grows
    with members is the (box, time, draw) index array, ~5 MB here."""
    codec = LinearCodec(GRID_LAT, np.arange(120.0, 281.0, 10.0), latent_dim=16)  # 2 x ~180 points
    T = 360
    _peak_growth(codec, T, 20, 16, 8.0)  # warm-up: allocator, torch kernels
    small = _peak_growth(codec, T, 50, 16, 8.0)
    large = _peak_growth(codec, T, 400, 16, 8.0)
    full_mb = T * 400 * codec.points.size * 4 / 2**20  # ~ 195 MB
    assert large - small < 0.1 * full_mb, (small, large, full_mb)
    assert large < 0.15 * full_mb, (large, full_mb)


@pytest.mark.slow
def test_memory_full_size_under_2gb():
    """2,400 months x 200 members on the default 21 x 81 grid, two variables, latent 32."""
    lat = np.arange(-20.0, 20.1, 2.0)
    lon = np.arange(120.0, 280.1, 2.0)
    big = LinearCodec(lat, lon, latent_dim=32)
    assert 3000 <= big.points.size <= 3500  # 2 x 1701 grid points minus a land corner
    res = make_result(T=2400, M=200, d=32, seed=5)
    gc.collect()
    with PeakRSS() as mem:
        post = Posterior(res, big, representation_std=0.1)
        ds = post.summary()
    print(f"posterior summary peak RSS growth: {mem.peak_mb:.0f} MB "
          f"(all-in-memory decode would be {2400 * 200 * big.points.size * 4 / 2**20:.0f} MB)")
    assert mem.peak_mb < 2048
    assert ds["tos_q95"].shape == (2400, 21, 81)
    assert bool(ds["tos_std"].isel(time=-1).notnull().any())


def test_posterior_figures(codec, tmp_path):
    from bayesbridge.diagnostics.uq import rank_histogram
    from bayesbridge.plots.posterior import (
        plot_field_summary,
        plot_index_band,
        plot_rank_histogram,
        plot_std_map,
    )

    res = make_result(T=14, M=12)
    time = xr.date_range("2000-01-01", periods=14, freq="MS", calendar="noleap", use_cftime=True)
    post = Posterior(res, codec, time=time, observations={"nino34": np.linspace(-1, 1, 14)})
    ds = post.summary()
    fig = plot_std_map(post, "zos")
    mesh = fig.axes[0].collections[0]
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(GRID_LAT.size, GRID_LON.size),
                               ds["zos_std"].mean("time").values, rtol=1e-6)
    fig.savefig(tmp_path / "std.png")
    truth = np.zeros(14)
    fig = plot_index_band(ds, "nino34", truth=truth)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), ds["nino34_mean"].values)
    assert ax.get_xlim()[0] < 2000.1 and ax.get_xlim()[1] > 2001.0  # cftime -> decimal years
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"90 % band", "truth", "observed (assimilated)"}
    fig.savefig(tmp_path / "band.png")
    plot_field_summary(post, "tos", time=3).savefig(tmp_path / "summary.png")
    ens = post.index_draws("nino34")
    fig = plot_rank_histogram(rank_histogram(ens, ens.isel(draw=0, drop=True) * 0.0))
    assert len(fig.axes[0].patches) == post.n_draws + 1
    fig.savefig(tmp_path / "rank.png")
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("std.png", "band.png", "summary.png", "rank.png"))
    with pytest.raises(VariableNotFoundError, match="tos_mean"):
        plot_index_band(ds, "nino99")


def test_draw_statistic_maps_equal_field_statistics_of_sampled_draws(codec):
    from bayesbridge.apps.scoring import field_statistics

    res = make_result(T=40, M=12)
    draws = [3, 7, 7, 0]  # repeats count twice
    post = Posterior(res, codec, representation_std="codec", seed=5, chunk_mb=0.05)
    maps = post.draw_statistic_maps(draws)  # before summary(): from the one decoding pass
    fields = post.sample_fields(n_draws=None)["tos"]
    want = sum(field_statistics(fields.sel(draw=d)) for d in draws) / len(draws)
    for stat in ("std", "skew"):
        np.testing.assert_allclose(maps[stat].values, want[stat].values, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(maps["std"].sel(lat=10.0, lon=GRID_LON[-1])).all()  # land stays NaN
    # asked again after the summaries: the listed draws are decoded again, same maps up to the
    # float32 decoding (a different batch of draws can take a different BLAS kernel path)
    again = post.draw_statistic_maps([0, 3, 7, 7])
    np.testing.assert_allclose(again["skew"].values, maps["skew"].values, rtol=1e-5, atol=1e-6, equal_nan=True)
    with pytest.raises(ParameterError, match="draws"):
        post.draw_statistic_maps([12])
