"""The benchmark suite: JSON keys, explicit missing peers, the full-space EnKF peer, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from bayesbridge.bench.core import BenchRow, Timing
from bayesbridge.bench.latent import fullspace_enkf
from bayesbridge.bench.suite import RATIO_KEYS, BenchReport, run_all

REQUIRED = [f"ratios.{k}" for k in ("enkf_vs_dapper", "pf_vs_smcfilter", "latent_vs_fullspace_enkf",
                                    "batched_vs_sequential", "gaussianhmm_vs_loop_kalman")]
REQUIRED += ["idealized.member_years_per_s", "memory.posterior_summary_peak_mb"]


def _get(doc: dict, dotted: str):
    section, key = dotted.split(".")
    return doc[section][key]


def _check_keys(doc: dict) -> None:
    for key in REQUIRED:
        value = _get(doc, key)
        if value is None:
            assert key in doc["missing"] and doc["missing"][key], key
        else:
            assert math.isfinite(value) and value > 0, (key, value)


@pytest.fixture(scope="module")
def tiny_report() -> BenchReport:
    return run_all(quick=True, tiny=True, modules=("latent", "memory"))


def test_tiny_suite_reports_every_key(tiny_report):
    doc = tiny_report.to_json()
    json.dumps(doc, allow_nan=False)  # strict JSON
    assert not tiny_report.errors
    _check_keys(doc)
    # the rows that ran give numbers; the rest say why they are missing
    assert doc["ratios"]["latent_vs_fullspace_enkf"] > 1.0
    assert doc["memory"]["posterior_summary_peak_mb"] > 0.0
    for key in ("enkf_vs_dapper", "pf_vs_smcfilter"):
        assert doc["ratios"][key] is None
        assert doc["missing"][f"ratios.{key}"].startswith("not run")
    row = tiny_report.keyed("latent_vs_fullspace_enkf")
    # the dense full-space peer costs more per cycle than its factored form
    assert row.peer.median_s > row.extra["factored_peer_per_cycle_s"]


def test_missing_peer_and_failed_row_are_explicit():
    t = Timing(0.01, (0.01,), 1.0)
    rows = [BenchRow("enkf (PertObs), batched", "p", t, "dapper EnKF('PertObs')", None, key="enkf_vs_dapper",
                     note="DAPPER not installed (No module named 'dapper')")]
    report = BenchReport(rows=rows, errors={"particle": "RuntimeError: boom"}, skipped=("idealized",))
    doc = report.to_json()
    assert doc["ratios"]["enkf_vs_dapper"] is None
    assert doc["missing"]["ratios.enkf_vs_dapper"].startswith("peer missing: DAPPER not installed")
    assert doc["missing"]["ratios.pf_vs_smcfilter"] == "row failed: RuntimeError: boom"
    assert doc["missing"]["idealized.member_years_per_s"].startswith("not run")
    assert set(RATIO_KEYS) <= set(doc["ratios"])
    _check_keys(doc)
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(report.table())
    text = console.export_text()
    assert "peer missing" in text and "row failed" in text


def test_run_all_records_a_failing_module(monkeypatch):
    import bayesbridge.bench.memory as memory

    def broken(quick: bool = False, tiny: bool = False):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(memory, "run", broken)
    report = run_all(quick=True, tiny=True, modules=("memory",))
    assert "out of cheese" in report.errors["memory"]
    doc = report.to_json()
    assert doc["memory"]["posterior_summary_peak_mb"] is None
    assert "out of cheese" in doc["missing"]["memory.posterior_summary_peak_mb"]


def test_fullspace_enkf_matches_exact_kalman_filter():
    """The peer, on a small full space spanned by a decoder, against the exact latent Kalman filter."""
    from bayesbridge.infer import assimilate
    from bayesbridge.model import LinearGaussianModel

    rng = np.random.default_rng(3)
    d, P, m, T, N = 3, 40, 2, 15, 4000
    W = rng.standard_normal((d, P)) / np.sqrt(P)
    A = np.diag([0.9, 0.7, 0.5])
    Q = 0.2 * np.eye(d)
    P0 = np.eye(d)
    H = np.zeros((m, P))
    H[0, :10] = 0.1
    H[1, 20:30] = 0.1
    r = np.array([0.05, 0.08])
    Hl = H @ W.T  # latent observation matrix
    y = rng.standard_normal((T, m)) * 0.3
    kf = assimilate(LinearGaussianModel(A, Q, Hl, np.diag(r**2), np.zeros(d), P0), y, "kalman")
    exact = kf.filtered_mean.numpy() @ W  # (T, P)
    dp = np.linalg.pinv(W)
    out = fullspace_enkf(y, dp @ A.T @ W, noise_factor=np.linalg.cholesky(Q).T @ W, nugget=np.zeros(P),
                         obs_matrix=H, obs_error=r, mean=np.zeros(P), init_factor=np.linalg.cholesky(P0).T @ W,
                         members=N, seed=0).analysis_mean
    scale = np.sqrt(np.mean(exact**2))
    assert np.sqrt(np.mean((out - exact) ** 2)) < 0.1 * scale
    # the factored propagation is the same filter
    out2 = fullspace_enkf(y, (dp, A.T.copy(), W), noise_factor=np.linalg.cholesky(Q).T @ W, nugget=np.zeros(P),
                          obs_matrix=H, obs_error=r, mean=np.zeros(P), init_factor=np.linalg.cholesky(P0).T @ W,
                          members=N, seed=0).analysis_mean
    np.testing.assert_allclose(out2, out, atol=1e-4 * scale)
    assert torch.get_num_threads() >= 1


def test_bench_command_writes_json(tmp_path):
    from bayesbridge.cli.bench import bench

    app = typer.Typer()
    app.command(name="bench")(bench)
    app.command(name="noop")(lambda: None)  # keep 'bench' a subcommand
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--tiny", "--only", "latent", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["ratios"]["latent_vs_fullspace_enkf"] > 0
    assert doc["missing"]["memory.posterior_summary_peak_mb"].startswith("not run")
    assert "latent_vs_fullspace_enkf" in res.output and "target >= 100" in res.output


@pytest.mark.slow
def test_quick_suite_all_modules():
    report = run_all(quick=True)
    doc = report.to_json()
    json.dumps(doc, allow_nan=False)
    assert not report.errors, report.errors
    _check_keys(doc)
    assert doc["idealized"]["member_years_per_s"] > 0


def test_measure_pair_alternates_sides():
    """Timed calls alternate so that a load change during the run hits both sides alike."""
    from bayesbridge.bench.core import measure_pair

    calls = []
    ours, peer = measure_pair(lambda: calls.append("o"), lambda: calls.append("p"), repeats=3, warmup=1)
    assert "".join(calls) == "op" + "op" + "po" + "op"
    assert len(ours.times_s) == len(peer.times_s) == 3
    assert ours.median_s == sorted(ours.times_s)[1] and peer.median_s == sorted(peer.times_s)[1]
