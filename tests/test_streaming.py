"""Large inputs: anomalies and the EOF codec stream multi-file data in blocks of time steps.

The quick tests check the streaming path against the in-memory one (same normalisation, same
EOFs) and that no dask task ever produces more than one block; the slow test writes a multi-file
dataset whose float64 size (about 570 MB) exceeds the memory budget, fits the codec in a
subprocess and checks its peak resident memory and that the EOFs span the generating patterns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cftime
import numpy as np
import pytest
import torch
import xarray as xr

from bayesbridge import io
from bayesbridge.errors import InputValueError
from bayesbridge.latent import EOFCodec
from bayesbridge.latent.stacking import FieldStacker

MODES = 5


def write_dataset(folder: Path, years: int, dlat: float, dlon: float, years_per_file: int = 10, seed: int = 0):
    """CMIP-style ``tos`` (K) and ``zos`` (m) files, written file by file (never whole in memory).

    Fields: seasonal climatology + ``MODES`` known patterns with independent amplitudes of
    decreasing variance + 2 % white noise; a land corner is NaN. Returns the patterns
    ``(MODES, lat, lon)`` and the land mask.
    """
    rng = np.random.default_rng(seed)
    lat = np.arange(-20.0, 20.0 + 1e-9, dlat)
    lon = np.arange(120.0, 280.0 + 1e-9, dlon)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    land = (la > 8) & (lo > 265)
    patterns = np.stack([np.exp(-(la / (6 + 2 * k)) ** 2) * np.cos(np.deg2rad((k + 1) * (lo - 120) / 1.2))
                         for k in range(MODES)])
    n = 12 * years
    amps = rng.standard_normal((n, MODES)) * 1.5 * 2.0 ** -np.arange(MODES)
    clim = 1.5 * np.sin(2 * np.pi * (np.arange(12) - 2) / 12)
    folder.mkdir(parents=True, exist_ok=True)
    for i0 in range(0, n, 12 * years_per_file):
        steps = np.arange(i0, min(n, i0 + 12 * years_per_file))
        time = np.array([cftime.datetime(1850 + k // 12, k % 12 + 1, 16, calendar="noleap") for k in steps])
        signal = np.einsum("tk,kij->tij", amps[steps], patterns)
        for var, scale, offset, std_name, units in (
            ("tos", 1.0, 300.15, "sea_surface_temperature", "K"),
            ("zos", 0.05, 0.0, "sea_surface_height_above_geoid", "m"),
        ):
            x = offset + scale * (clim[steps % 12, None, None] + signal + 0.02 * rng.standard_normal(signal.shape))
            x = np.where(land[None], np.nan, x).astype("float32")
            ds = xr.Dataset(
                {var: (("time", "lat", "lon"), x, {"units": units, "standard_name": std_name})},
                coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
                        "lon": ("lon", lon, {"units": "degrees_east"})},
            )
            t0, t1 = time[0], time[-1]
            name = f"{var}_Omon_SYNTH_piControl_r1i1p1f1_gn_{t0.year:04d}{t0.month:02d}-{t1.year:04d}{t1.month:02d}.nc"
            ds.to_netcdf(folder / name, encoding={"time": {"units": "days since 1850-01-01", "calendar": "noleap"}})
    return patterns, land


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cmip-small")
    write_dataset(folder, years=30, dlat=2.0, dlon=2.0)
    return folder


class _MaxChunk:
    """Dask callback: the largest array any task returns (bytes)."""

    def __init__(self):
        from dask.callbacks import Callback

        self.largest = 0
        outer = self

        class _CB(Callback):
            def _posttask(self, key, result, dsk, state, id):
                outer.largest = max(outer.largest, int(getattr(result, "nbytes", 0) or 0))

        self.callback = _CB()


def test_lazy_anomalies_match_in_memory(small):
    raw = io.open_operational(str(small / "*.nc"), region=None, anomalies=False, chunks={"time": 120})
    lazy = io.anomalies(raw)
    eager = io.anomalies(raw.load())
    for v in ("tos", "zos"):
        assert lazy[v].chunks is not None  # still lazy
        np.testing.assert_allclose(lazy[v].values, eager[v].values, atol=2e-5, equal_nan=True)


def test_streaming_stacker_and_eof_equal_in_memory_fit(small):
    lazy = io.open_operational(str(small / "*.nc"), region=None, chunks={"time": 120})
    mem = lazy.load()
    lazy = io.open_operational(str(small / "*.nc"), region=None, chunks={"time": 120})
    ref_stack = FieldStacker.fit(mem)
    st = FieldStacker.fit_streaming(lazy, block_steps=50)
    for v in ("tos", "zos"):
        np.testing.assert_array_equal(st.mask[v], ref_stack.mask[v])
    np.testing.assert_allclose(st.mean, ref_stack.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.scale, ref_stack.scale, rtol=1e-9)

    ref = EOFCodec(latent_dim=MODES, method="full").fit(mem)
    tracker = _MaxChunk()
    with tracker.callback:
        codec = EOFCodec(latent_dim=MODES, method="streaming", block_steps=50).fit(lazy)
        z = codec.encode(lazy)
    np.testing.assert_allclose(codec.singular_values.numpy(), ref.singular_values.numpy(), rtol=1e-6)
    np.testing.assert_allclose(codec.components.numpy(), ref.components.numpy(), atol=1e-6)
    np.testing.assert_allclose(codec.explained_variance_ratio, ref.explained_variance_ratio, rtol=1e-6)
    np.testing.assert_allclose(z.values, ref.encode(mem).values, atol=1e-6)
    # no task ever returned more than one block (50 of 360 steps, both variables, float64)
    block_bytes = 50 * st.n_points * 8
    full_bytes = sum(mem[v].size for v in ("tos", "zos")) * 4
    assert 0 < tracker.largest <= block_bytes < full_bytes / 3


def test_auto_streams_only_lazy_data_above_threshold(small):
    lazy = io.open_operational(str(small / "*.nc"), region=None, chunks={"time": 120})
    assert EOFCodec(latent_dim=3, stream_threshold_mb=0.5)._streams(lazy)
    assert not EOFCodec(latent_dim=3)._streams(lazy)  # below the default 1 GiB
    assert not EOFCodec(latent_dim=3, stream_threshold_mb=0.5)._streams(lazy.load())


def test_streaming_stacker_rejects_gaps(small):
    ds = io.open_operational(str(small / "*.nc"), region=None).load()
    ds["tos"][5, 10, 10] = np.nan
    with pytest.raises(InputValueError, match="1 NaN/inf values at 1 ocean points"):
        FieldStacker.fit_streaming(ds.chunk({"time": 60}), block_steps=40)


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import dask, psutil, torch
    torch.set_num_threads(1)
    dask.config.set(scheduler="synchronous")
    from bayesbridge import io
    from bayesbridge.latent import EOFCodec
    base = psutil.Process().memory_info().rss
    ds = io.open_operational(sys.argv[1] + "/*.nc", region=None, chunks={"time": 120})
    codec = EOFCodec(latent_dim=MODES_, method="streaming", block_steps=30, n_iter=2).fit(ds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    size = sum(v.size for v in ds.data_vars.values()) * 8
    import numpy as np
    np.save(sys.argv[2], codec.components.numpy())
    np.save(sys.argv[3], codec.stacker.scale)
    print(json.dumps({"growth_mb": (peak - base) / 2**20, "data_mb": size / 2**20}))
""").replace("MODES_", str(MODES))


@pytest.mark.slow
def test_streaming_fit_stays_under_memory_cap(tmp_path):
    folder = tmp_path / "cmip-large"
    patterns, land = write_dataset(folder, years=120, dlat=0.5, dlon=0.5)
    comps, scale = tmp_path / "components.npy", tmp_path / "scale.npy"
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(comps), str(scale)],
                         capture_output=True, text=True, check=True, timeout=600)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["data_mb"] > 500  # float64 size of the record
    # peak growth of the whole job (open, anomalies, normalisation, 3 passes) is about a third of it
    assert figures["growth_mb"] < 0.5 * figures["data_mb"], figures
    # the EOF subspace spans the generating patterns (normalised space: pattern / scale)
    v = np.load(comps)  # (MODES, P)
    s = np.load(scale)
    ocean = ~land
    pats = np.concatenate([patterns[:, ocean], 0.05 * patterns[:, ocean]], axis=1) / s  # zos = 0.05 x the tos signal
    q, _ = np.linalg.qr(pats.T)
    cosines = np.linalg.svd(q.T @ v.T, compute_uv=False)  # cosines of the principal angles
    assert cosines.min() > 0.999, cosines
    assert torch.get_num_threads() >= 1
