"""Benchmark row: peak memory of the posterior field summaries as the ensemble grows.

:meth:`bayesbridge.bridge.posterior.Posterior.summary` decodes the latent draws a block of time steps at
a time (a block holds at most ``chunk_mb`` of decoded values), so its peak memory should not grow
with the number of draws. This row builds one :class:`~bayesbridge.infer.result.AssimilationResult`
per ensemble size (latent draws ``(T, member, d)`` from a seeded generator; the engine is not
what is measured), wraps it in a ``Posterior`` with the EOF codec of the default grid (``tos``,
``zos``; :func:`bayesbridge.bench.latent.latent_problem`) and measures the peak resident-set
growth (:class:`~bayesbridge.bench.core.PeakRSS`) around ``Posterior(...).summary()``.

The figure of merit is ``memory.posterior_summary_peak_mb``, the peak at the largest ensemble
(400 members), and the growth ``peak(400) / peak(50) - 1`` (target below 10 %). The outputs
themselves (``(time, lat, lon)`` summaries, float32, and the ``(box, time, draw)`` index draws)
are part of the peak; the latter is the only term that grows with the ensemble.

Each size runs in a fresh interpreter with glibc's mmap threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``), so that the resident set follows the live memory rather than the
allocator's fragmentation (with the default adaptive threshold the peaks are higher and noisier).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

import numpy as np
import torch

from bayesbridge.bench.core import BenchRow, PeakRSS, Timing

__all__ = ["run", "summary_peak_mb", "MEMBERS"]

MEMBERS: tuple[int, ...] = (50, 100, 200, 400)
"""Ensemble sizes of the row."""


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without it, memory freed by an earlier measurement is reused by the next one and never
    shows up as RSS growth.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def summary_peak_mb(codec, members: int, steps: int, chunk_mb: float, seed: int = 0) -> tuple[float, float]:
    """Peak RSS growth (MiB) and wall time (s) of ``Posterior(...).summary()``.

    Parameters
    ----------
    codec : Codec
        Fitted codec of the fields.
    members, steps : int
        Draws and time steps of the synthetic latent ensemble ``(steps, members, d)``.
    chunk_mb : float
        ``Posterior``'s block budget.
    seed : int
        Seed of the latent draws.
    """
    import time

    from bayesbridge.bridge.posterior import Posterior
    from bayesbridge.infer.result import AssimilationResult

    g = torch.Generator().manual_seed(seed)
    d = codec.latent_dim
    ens = torch.randn(steps, members, d, generator=g, dtype=torch.float64)
    result = AssimilationResult(method="enkf", filtered_mean=ens.mean(dim=1), log_evidence=torch.zeros(()),
                                filtered_ensemble=ens)
    _release_free_memory()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        summary = Posterior(result, codec, chunk_mb=chunk_mb, seed=seed).summary()
        elapsed = time.perf_counter() - t0
    if not np.isfinite(summary["tos_mean"].values).any():  # pragma: no cover - guards a silent no-op
        raise RuntimeError("posterior summary is empty")
    del summary, result, ens
    _release_free_memory()
    return mem.peak_mb, elapsed


_CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
from bayesbridge.bench.memory import summary_peak_mb
from bayesbridge.latent import EOFCodec
codec = EOFCodec.load(sys.argv[1])
members, steps, chunk_mb = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
summary_peak_mb(codec, members, 4, chunk_mb)  # warm-up: lazy imports, allocator pools
peak, seconds = summary_peak_mb(codec, members, steps, chunk_mb)
print(json.dumps({"peak_mb": peak, "seconds": seconds}))
"""


def _measure_in_child(codec_dir: str, members: int, steps: int, chunk_mb: float) -> tuple[float, float]:
    """:func:`summary_peak_mb` in a fresh interpreter (no allocator state left by other rows)."""
    import json
    import subprocess
    import sys

    # A fixed mmap threshold makes glibc return every large block to the OS when it is freed, so
    # the resident set follows the live memory (with the default, adaptive threshold, freed blocks
    # stay in a fragmented heap and the peak depends on the order of allocation sizes).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", _CHILD, codec_dir, str(members), str(steps), str(chunk_mb)],
                         capture_output=True, text=True, check=True, env=env)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return float(doc["peak_mb"]), float(doc["seconds"])


def run(quick: bool = False, tiny: bool = False) -> list[BenchRow]:
    """One row: peak MiB at 400 members (key ``memory.posterior_summary_peak_mb``), growth vs 50.

    Each ensemble size is measured in a fresh interpreter (the codec is saved and reloaded), so
    that memory freed by earlier rows cannot hide or inflate the growth. ``quick``: 120 time
    steps, 16 MiB blocks; full: 600 steps, the default 64 MiB blocks; ``tiny``: 24 steps, 8 MiB
    blocks (tests).
    """
    import tempfile

    from bayesbridge.bench.latent import latent_problem

    steps, chunk_mb, years = (24, 8.0, 10) if tiny else (120, 16.0, 20) if quick else (600, 64.0, 40)
    codec = latent_problem(years).bridge.codec
    peaks, times = {}, {}
    with tempfile.TemporaryDirectory(prefix="bayesbridge-bench-") as tmp:
        codec.save(tmp)
        for n in MEMBERS:
            peaks[n], times[n] = _measure_in_child(tmp, n, steps, chunk_mb)
    small, large = MEMBERS[0], MEMBERS[-1]
    growth = peaks[large] / peaks[small] - 1.0 if peaks[small] > 0 else float("nan")
    extra = {f"peak_mb_{n}": peaks[n] for n in MEMBERS}
    extra.update({"growth_50_to_400": growth, "chunk_mb": chunk_mb, "steps": float(steps)})
    ours = Timing(times[large], (times[large],), peaks[large])
    return [BenchRow(
        name="posterior summary memory",
        problem=(f"Posterior(...).summary() on the default grid (tos+zos, {codec.stacker.n_points} points), "
                 f"{steps} steps, {chunk_mb:g} MiB blocks, {small} -> {large} members"),
        ours=ours,
        peer_name="(no peer: growth with members)",
        peer=None,
        key=None,
        note=f"peak {peaks[small]:.1f} MiB at {small} members, {peaks[large]:.1f} MiB at {large}: growth {growth:+.1%}",
        extra=extra,
    )]
