"""The compiled linear EnKF/ETKF cycle reproduces ``enkf.run`` record by record (same noise)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from bayesbridge.bench.enkf import linear_problem
from bayesbridge.infer._enkf_kernel import eligible, filter_records, linear_cycle_block
from bayesbridge.infer.enkf import EnKFConfig, generator_noise
from bayesbridge.infer.enkf import run as enkf_run
from bayesbridge.model import LinearGaussianModel

f64 = torch.float64


class Recording:
    """Wraps a noise source (here the default block source) and keeps a copy of each draw for replay."""

    def __init__(self, inner) -> None:
        self.inner, self.log = inner, {}

    def __call__(self, kind, step, shape):
        self.log[(kind, step)] = out = self.inner(kind, step, shape)
        return out


def dense_problem(d=6, m=3, T=40, seed=2):
    """Non-diagonal Q and R (whitening by L_R^{-T}, full L_Q)."""
    g = torch.Generator().manual_seed(seed)
    A = 0.9 * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))[0]
    B = torch.randn(d, d, generator=g, dtype=f64)
    Q = 0.05 * (B @ B.T / d + torch.eye(d, dtype=f64))
    H = torch.randn(m, d, generator=g, dtype=f64)
    C = torch.randn(m, m, generator=g, dtype=f64)
    R = 0.3 * (C @ C.T / m + torch.eye(m, dtype=f64))
    model = LinearGaussianModel(A, Q, H, R, torch.ones(d, dtype=f64), 2.0 * torch.eye(d, dtype=f64))
    _, y = model.simulate(T, generator=g)
    return model, y


def post_process(L, rec, N):
    """run's post-processing formulas applied to the kernel's records (numpy)."""
    nm1 = N - 1.0
    nis = (rec.dv**2 * nm1 / rec.lamn).sum(-1)
    half_logdet = np.log(np.diag(L)).sum() + 0.5 * np.log(rec.lamn / nm1).sum(-1)
    m = L.shape[0]
    log_ev = -0.5 * (m * math.log(2 * math.pi) + 2 * half_logdet + nis).sum()
    innov = rec.dt @ L.T
    innov_var = np.einsum("ij,tjk,ik->ti", L, rec.G, L) / nm1 + (L**2).sum(-1)
    return log_ev, innov, innov_var


CASES = [
    ("enkf", 1.0, "random"), ("enkf", 1.05, "random"), ("etkf", 1.0, "random"), ("etkf", 1.05, "random"),
    ("enkf", 1.05, "exact"), ("etkf", 1.0, "exact"), ("enkf", 1.0, "centred"),
]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize(("variant", "infl", "sampling"), CASES)
def test_kernel_matches_run(variant, infl, sampling, dense):
    if dense:
        model, y = dense_problem()
    else:
        model, _, y = linear_problem(6, 3, 40, seed=1)
    N = 20  # N - 1 >= 2 d: the exact mode projects and whitens
    cfg = EnKFConfig(variant=variant, members=N, inflation=infl, sampling=sampling, store_ensemble=False)
    assert eligible(model, cfg, y)
    rec = Recording(generator_noise(torch.Generator().manual_seed(5), n_steps=y.shape[0], block_elements=4096))
    ref = enkf_run(model, y, dataclasses.replace(cfg, engine="torch"), torch.Generator(), noise=rec)
    replay = lambda k, s, shape: rec.log[(k, s)]  # noqa: E731
    ens = enkf_run(model, y, EnKFConfig(variant=variant, members=N, inflation=infl, sampling=sampling,
                                        store_ensemble=True), torch.Generator(), noise=replay)
    L, out = filter_records(model, y, cfg, torch.Generator(), noise=replay, block=15)  # 3 blocks
    assert out.completed == y.shape[0]
    tol = {"rtol": 0, "atol": 1e-10}
    np.testing.assert_allclose(out.mean, ref.filtered_mean.numpy(), **tol)
    np.testing.assert_allclose(out.ensemble, ens.filtered_ensemble[-1].numpy(), **tol)
    np.testing.assert_allclose(out.norm / math.sqrt((N - 1) * 6), ref.diagnostics.spread.numpy(), **tol)
    log_ev, innov, innov_var = post_process(L, out, N)
    np.testing.assert_allclose(innov, ref.diagnostics.innovation.numpy(), **tol)  # dt
    np.testing.assert_allclose(innov_var, ref.diagnostics.innovation_var.numpy(), **tol)  # G
    np.testing.assert_allclose(log_ev, float(ref.log_evidence), rtol=1e-12)  # lamn, dv^2
    # records against independent linear algebra: lamn = eig(G) + N - 1, and dv = dt V with V orthogonal
    for t in (0, 17, 39):
        np.testing.assert_allclose(out.lamn[t], scipy.linalg.eigvalsh(out.G[t]) + N - 1, rtol=1e-12)
        np.testing.assert_allclose((out.dv[t] ** 2).sum(), (out.dt[t] ** 2).sum(), rtol=1e-12)
        quad = out.dt[t] @ np.linalg.solve(out.G[t] + (N - 1) * np.eye(3), out.dt[t])
        np.testing.assert_allclose((out.dv[t] ** 2 / out.lamn[t]).sum(), quad, rtol=1e-10)
    # the analysis actually moved the ensemble towards the data (a non-trivial run)
    assert np.abs(out.mean).max() > 0.1


@pytest.mark.parametrize("block_elements", [None, 20_000])
@pytest.mark.parametrize("variant", ["enkf", "etkf"])
def test_default_seeded_noise_is_run_s(variant, block_elements):
    """With the default block noise source, the same seed gives run's numbers (same draw order).

    ``block_elements=20_000`` makes the source draw the model noise in blocks of 6 steps and the
    observation noise in blocks of 66, so the compiled segments are cut at the block ends.
    """
    model, _, y = linear_problem(32, 3, 30, seed=2)
    cfg = EnKFConfig(variant=variant, members=100, sampling="exact", inflation=1.02, store_ensemble=False)

    def source(seed):
        if block_elements is None:
            return None
        return generator_noise(torch.Generator().manual_seed(seed), n_steps=30, block_elements=block_elements)

    ref = enkf_run(model, y, dataclasses.replace(cfg, engine="torch"), torch.Generator().manual_seed(11),
                   noise=source(11))
    _, out = filter_records(model, y, cfg, torch.Generator().manual_seed(11), noise=source(11), block=8)
    np.testing.assert_allclose(out.mean, ref.filtered_mean.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.norm / math.sqrt(99 * 32), ref.diagnostics.spread.numpy(), rtol=0, atol=1e-10)
    _, other = filter_records(model, y, cfg, torch.Generator().manual_seed(12), noise=source(12), block=8)
    # (for the ETKF with exact sampling the mean is the exact Kalman mean whatever the seed)
    assert np.abs(other.ensemble - out.ensemble).max() > 1e-3


def test_divergence_stops_at_the_bad_step():
    model, _, y = linear_problem(6, 3, 20, seed=1)
    y[7, 1] = float("inf")
    cfg = EnKFConfig(variant="enkf", members=20, sampling="random", store_ensemble=False)
    _, out = filter_records(model, y, cfg, torch.Generator().manual_seed(1), block=5)
    assert out.completed == 7
    assert np.isfinite(out.mean[:7]).all() and np.isnan(out.mean[7:]).all()


def test_block_entry_matches_whole_series():
    """Splitting a series into blocks of linear_cycle_block calls changes nothing."""
    rng = np.random.default_rng(0)
    N, d, m, k = 12, 4, 2, 10
    A = 0.9 * np.linalg.qr(rng.standard_normal((d, d)))[0]
    HW = rng.standard_normal((d, m))
    L_Q = np.diag(rng.uniform(0.1, 0.5, d))
    E0, yw = rng.standard_normal((N, d)), rng.standard_normal((k, m))
    em, eo = rng.standard_normal((k, N, d)), rng.standard_normal((k, N, m))
    whole = linear_cycle_block(E0, A, HW, L_Q, yw, em, eo, inflation=1.1)
    a = linear_cycle_block(E0, A, HW, L_Q, yw[:4], em[:4], eo[:4], inflation=1.1)
    b = linear_cycle_block(a.ensemble, A, HW, L_Q, yw[4:], em[4:], eo[4:], inflation=1.1)
    np.testing.assert_allclose(np.concatenate([a.mean, b.mean]), whole.mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b.ensemble, whole.ensemble, rtol=0, atol=1e-13)
    # a single cycle against a hand computation of the perturbed-observation EnKF (no truncation):
    one = linear_cycle_block(E0, A, HW, L_Q, yw[:1], em[:1], eo[:1])
    Ef = E0 @ A.T + em[0] @ L_Q.T
    Y = Ef @ HW - (Ef @ HW).mean(0)
    X = Ef - Ef.mean(0)
    D = eo[0] - eo[0].mean(0)
    K = X.T @ Y @ np.linalg.inv(Y.T @ Y + (N - 1) * np.eye(m))
    Ea = Ef + (yw[0] + D - Ef @ HW) @ K.T
    np.testing.assert_allclose(one.ensemble, Ea, rtol=0, atol=1e-12)


def test_eligibility():
    model, _, y = linear_problem(6, 3, 10, seed=1)
    base = {"members": 20, "store_ensemble": False}
    assert eligible(model, EnKFConfig(variant="etkf", **base), y)
    assert not eligible(model, EnKFConfig(variant="enks", **base), y)
    assert not eligible(model, EnKFConfig(variant="enkf", inversion="tikhonov", **base), y)
    assert not eligible(model, EnKFConfig(variant="enkf", rtps=0.5, **base), y)
    assert not eligible(model, EnKFConfig(variant="enkf", members=20), y)  # store_ensemble
    assert eligible(model, EnKFConfig(variant="enkf", **base), y.expand(2, 10, 3))  # batches run run by run
    y2 = y.clone()
    y2[3, 0] = float("nan")
    assert "missing" in eligible(model, EnKFConfig(variant="enkf", **base), y2).reason


@pytest.mark.parametrize("variant", ["enkf", "etkf"])
def test_assimilate_routes_eligible_runs_through_the_kernel(variant):
    """Through the public entry the compiled route gives the torch loop's results for the same seed."""
    from bayesbridge.errors import ParameterError
    from bayesbridge.infer import assimilate

    model, _, y = linear_problem(8, 3, 60, seed=4)
    opts = {"members": 30, "seed": 3, "sampling": "random", "store_ensemble": False}
    fast = assimilate(model, y, variant, engine="compiled", **opts)
    slow = assimilate(model, y, variant, engine="torch", **opts)
    auto = assimilate(model, y, variant, **opts)
    for res in (fast, auto):
        torch.testing.assert_close(res.filtered_mean, slow.filtered_mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(res.log_evidence, slow.log_evidence, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(res.diagnostics.innovation_var, slow.diagnostics.innovation_var, rtol=0, atol=1e-10)
    with pytest.raises(ParameterError, match="engine.*store_ensemble"):
        assimilate(model, y, variant, engine="compiled", members=30, seed=3)


@pytest.mark.parametrize("variant", ["enkf", "etkf"])
def test_batched_runs_through_the_kernel_match_the_batched_torch_loop(variant):
    """A batch of runs cycled one by one in compiled code equals the batched torch loop (same numbers)."""
    from bayesbridge.infer import assimilate

    model, _, y = linear_problem(8, 3, 40, seed=6, batch=(2, 3))
    opts = {"members": 30, "seed": 5, "sampling": "exact", "store_ensemble": False, "inflation": 1.05}
    fast = assimilate(model, y, variant, engine="compiled", **opts)
    slow = assimilate(model, y, variant, engine="torch", **opts)
    assert fast.filtered_mean.shape == (2, 3, 40, 8) and fast.log_evidence.shape == (2, 3)
    torch.testing.assert_close(fast.filtered_mean, slow.filtered_mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.log_evidence, slow.log_evidence, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fast.diagnostics.spread, slow.diagnostics.spread, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.diagnostics.innovation, slow.diagnostics.innovation, rtol=0, atol=1e-10)


def test_batched_kernel_names_the_first_step_at_which_a_run_diverges():
    import re

    from bayesbridge.errors import FilterDivergenceError, ObservationValueError
    from bayesbridge.infer import assimilate, enkf
    from bayesbridge.infer.enkf_config import EnKFConfig

    model, _, y = linear_problem(6, 3, 30, seed=2, batch=(3,))
    y = y.clone()
    y[2, 17, 1] = 1e300  # run 2's analysis overflows at step 17, so its forecast of step 18 is not finite
    # assimilate rejects such a value before any engine runs, naming its step
    with pytest.raises(ObservationValueError, match=r"time step 17 \(run 2, component 1\)"):
        assimilate(model, y, "etkf", members=20, seed=1)

    def run(**options):  # the engine itself, past the input checks
        config = EnKFConfig(**{"variant": "etkf", "members": 20, "store_ensemble": False, **options})
        return enkf.run(model, y, config, torch.Generator().manual_seed(1))

    steps = []
    for engine in ("compiled", "torch"):
        with pytest.raises(FilterDivergenceError, match="time step") as info:
            run(engine=engine)
        steps.append(int(re.search(r"time step (\d+)", str(info.value)).group(1)))
    assert steps[0] == steps[1] in (17, 18)
    # without the check, the bad run is NaN from there on and the others are those of a clean batch
    bad = run(check_divergence=False, engine="compiled")
    y[2, 17, 1] = 0.0
    clean = run(check_divergence=False, engine="compiled")
    assert bool(bad.filtered_mean[2, steps[0]:].isnan().all()) and bool(bad.filtered_mean[2, :17].isfinite().all())
    assert torch.equal(bad.filtered_mean[:2], clean.filtered_mean[:2])
