"""Ensemble Kalman engines against the exact Kalman filter/smoother (the oracle)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from bayesbridge.errors import FilterDivergenceError, ParameterError, ShapeMismatchError
from bayesbridge.infer import assimilate
from bayesbridge.infer.enkf import EnKFConfig, gaspari_cohn
from bayesbridge.infer.enkf import run as enkf_run
from bayesbridge.model import LinearGaussianModel

f64 = torch.float64




def problem(d: int, m: int, T: int, seed: int = 0, rho: float = 0.8, batch=()):
    g = torch.Generator().manual_seed(seed)
    A = rho * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))[0]
    Q = 0.2 * torch.eye(d, dtype=f64)
    H = torch.randn(m, d, generator=g, dtype=f64) / d**0.5
    R = 0.3 * torch.eye(m, dtype=f64)
    model = LinearGaussianModel(A, Q, H, R, torch.zeros(d, dtype=f64), torch.eye(d, dtype=f64))
    z, y = model.simulate(T, generator=g, batch_shape=batch)
    return model, z, y


def compare(res, exact, smoothed=False):
    """RMS standardized mean error, RMS relative variance error."""
    if smoothed:
        mean, ens, cov = res.smoothed_mean, res.smoothed_ensemble, exact.smoothed_cov
        ref = exact.smoothed_mean
    else:
        mean, ens, cov = res.filtered_mean, res.filtered_ensemble, exact.filtered_cov
        ref = exact.filtered_mean
    var = cov.diagonal(dim1=-2, dim2=-1)
    mean_err = ((mean - ref) / var.sqrt()).pow(2).mean().sqrt()
    var_err = (ens.var(-2) / var - 1.0).pow(2).mean().sqrt()
    return float(mean_err), float(var_err)


@pytest.mark.parametrize("d,m", [(8, 3), (32, 8)])
@pytest.mark.parametrize("method", ["enkf", "etkf", "enks"])
def test_matches_exact_kalman_with_2000_members(method, d, m):
    model, _, y = problem(d, m, T=60, seed=d)
    y[10, 0] = float("nan")
    y[20, :] = float("nan")
    exact = assimilate(model, y, "kalman")
    res = assimilate(model, y, method, members=2000, seed=1)
    mean_err, var_err = compare(res, exact)
    assert mean_err < 0.05
    assert var_err < 0.10
    assert abs(float(res.log_evidence / exact.log_evidence) - 1.0) < 0.01
    if method == "enks":
        mean_err, var_err = compare(res, exact, smoothed=True)
        assert mean_err < 0.05
        assert var_err < 0.10
    assert res.filtered_ensemble.shape == (60, 2000, d)
    assert torch.isnan(res.diagnostics.innovation[20]).all()


@pytest.mark.parametrize("method", ["enkf", "etkf"])
def test_plain_random_sampling_is_within_tolerance(method):
    # Without second-order exact sampling the error is pure Monte Carlo; still within 0.05 sd.
    model, _, y = problem(8, 4, T=60, seed=2, rho=0.7)
    exact = assimilate(model, y, "kalman")
    res = assimilate(model, y, method, members=2000, seed=2, sampling="random")
    mean_err, var_err = compare(res, exact)
    assert mean_err < 0.05
    assert var_err < 0.10
    assert abs(float(res.log_evidence / exact.log_evidence) - 1.0) < 0.01


def test_transform_smoother_lag_zero_is_filter_and_full_lag_converges():
    model, _, y = problem(4, 2, T=30, seed=3, rho=0.6)
    exact = assimilate(model, y, "kalman")
    lag0 = assimilate(model, y, "enks", members=200, seed=4, smoother="transform", lag=0)
    torch.testing.assert_close(lag0.smoothed_mean, lag0.filtered_mean)
    full = assimilate(model, y, "enks", members=4000, seed=4, smoother="transform", lag=None)
    assert compare(full, exact, smoothed=True)[0] < 0.1
    assert compare(full, exact, smoothed=False)[0] < 1e-8  # ETKF with exact sampling: exact filter
    # a short lag avoids spurious long-range sample correlations (rho^3 ~ 0.2: little is lost)
    lag3 = assimilate(model, y, "enks", members=4000, seed=4, smoother="transform", lag=3)
    err3 = compare(lag3, exact, smoothed=True)[0]
    assert err3 < 0.05
    # the lag-0 smoother is not smoothing: it is much further from the exact smoother
    sd = exact.smoothed_cov.diagonal(dim1=-2, dim2=-1).sqrt()
    err0 = float(((lag0.smoothed_mean - exact.smoothed_mean) / sd).pow(2).mean().sqrt())
    assert err0 > 4 * err3


@pytest.mark.parametrize("method", ["enkf", "etkf"])
def test_rank_histogram_is_uniform_in_twin_runs(method):
    # Independent cases for the chi-square test: 200 twin runs, one latent component per run
    # (ranks of components at one time are correlated through the shared ensemble) at three
    # times 20 steps apart (the filter error decorrelates over a few steps).
    runs, members = 200, 19
    model, z, y = problem(8, 3, T=60, seed=11, batch=(runs,))
    t = torch.tensor([19, 39, 59])[None, :]
    r, k = torch.arange(runs)[:, None], (torch.arange(runs) % 8)[:, None]

    def rank_pvalue(res):
        ens = res.filtered_ensemble[r, t, :, k]  # (run, 3, member)
        ranks = (ens < z[r, t, k].unsqueeze(-1)).sum(-1).reshape(-1)
        counts = torch.bincount(ranks, minlength=members + 1).numpy()
        assert counts.sum() == runs * 3
        return stats.chisquare(counts).pvalue

    assert rank_pvalue(assimilate(model, y, method, members=members, seed=5)) > 1e-3
    # an under-dispersed ensemble (the filter's prior far too tight) fails the same test
    bad = LinearGaussianModel(model.A, 0.02 * model.Q, model.H, model.R, model.m0, 0.1 * model.P0)
    assert rank_pvalue(assimilate(bad, y, method, members=members, seed=5, check_divergence=False)) < 1e-6


class Recorder:
    """Noise source that records what it hands out, to replay slices for single runs."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.log: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, kind, step, shape):
        eps = torch.randn(shape, dtype=f64, generator=self.g)
        self.log[(kind, step)] = eps
        return eps


@pytest.mark.parametrize("variant", ["enkf", "etkf", "enks"])
def test_batched_equals_one_by_one(variant):
    model, _, y = problem(6, 3, T=30, seed=7, batch=(2, 2))
    y[torch.rand(y.shape, generator=torch.Generator().manual_seed(8)) < 0.25] = float("nan")
    y[0, 1, 5, :] = float("nan")
    cfg = EnKFConfig(variant=variant, members=20)
    rec = Recorder(9)
    batched = enkf_run(model, y, cfg, torch.Generator(), noise=rec)
    for i in range(2):
        for j in range(2):
            one = enkf_run(model, y[i, j], cfg, torch.Generator(), noise=lambda k, s, shape, i=i, j=j: rec.log[(k, s)][i, j])
            torch.testing.assert_close(batched.filtered_ensemble[i, j], one.filtered_ensemble, rtol=0, atol=1e-10)
            torch.testing.assert_close(batched.log_evidence[i, j], one.log_evidence, rtol=0, atol=1e-10)
            if variant == "enks":
                torch.testing.assert_close(batched.smoothed_mean[i, j], one.smoothed_mean, rtol=0, atol=1e-10)
    # same seed, same answer; different seed, different answer
    a = assimilate(model, y, variant, members=20, seed=3)
    b = assimilate(model, y, variant, members=20, seed=3)
    c = assimilate(model, y, variant, members=20, seed=4)
    torch.testing.assert_close(a.filtered_ensemble, b.filtered_ensemble)
    assert not torch.allclose(a.filtered_ensemble, c.filtered_ensemble)


class Wrapped:
    """The same linear model seen only through the StateSpace protocol (no A/H attributes)."""

    def __init__(self, lin: LinearGaussianModel, h=None) -> None:
        self.lin, self.h = lin, h
        self.latent_dim, self.obs_dim = lin.latent_dim, lin.obs_dim
        self.calls = 0

    def initial(self):
        return self.lin.initial()

    def transition_mean(self, z, step):
        return self.lin.transition_mean(z, step)

    def transition_cov(self, step):
        return self.lin.transition_cov(step)

    def observe(self, z):
        self.calls += 1
        return self.lin.observe(z) if self.h is None else self.h(z)

    def obs_cov(self):
        return self.lin.obs_cov()


def test_uses_observation_operator_member_by_member():
    model, _, y = problem(4, 2, T=20, seed=12)
    wrapped = Wrapped(model)
    a = assimilate(model, y, "etkf", members=30, seed=1)
    b = assimilate(wrapped, y, "etkf", members=30, seed=1)
    torch.testing.assert_close(a.filtered_ensemble, b.filtered_ensemble)
    assert wrapped.calls == 20
    # a nonlinear operator: h(z) = H z + 0.3 (H z)^2 changes the answer and stays finite
    nl = Wrapped(model, h=lambda z: model.observe(z) + 0.3 * model.observe(z) ** 2)
    c = assimilate(nl, y, "enkf", members=30, seed=1, check_divergence=False)
    assert torch.isfinite(c.filtered_ensemble).all()
    assert not torch.allclose(a.filtered_mean, c.filtered_mean)


def test_inflation_rtps_and_taper():
    model, _, y = problem(8, 3, T=40, seed=13)
    base = assimilate(model, y, "etkf", members=30, seed=1)
    lean = assimilate(model, y, "etkf", members=30, seed=1, store_ensemble=False)
    assert lean.filtered_ensemble is None
    torch.testing.assert_close(lean.filtered_mean, base.filtered_mean)
    torch.testing.assert_close(lean.diagnostics.spread, base.diagnostics.spread)
    torch.testing.assert_close(base.diagnostics.spread, base.filtered_ensemble.var(-2).mean(-1).sqrt())
    infl = assimilate(model, y, "etkf", members=30, seed=1, inflation=1.2)
    rtps = assimilate(model, y, "etkf", members=30, seed=1, rtps=0.7)
    assert float(infl.diagnostics.spread.mean()) > 1.02 * float(base.diagnostics.spread.mean())
    assert float(rtps.diagnostics.spread.mean()) > 1.02 * float(base.diagnostics.spread.mean())
    plain = assimilate(model, y, "enkf", members=30, seed=1)
    ones = assimilate(model, y, "enkf", members=30, seed=1, taper=torch.ones(8, 3))
    torch.testing.assert_close(plain.filtered_ensemble, ones.filtered_ensemble)
    zeros = assimilate(model, y, "enkf", members=30, seed=1, taper=torch.zeros(8, 3), check_divergence=False)
    # a zero taper switches the analysis off: the mean follows the free forecast A^t m0 = 0
    assert float(zeros.filtered_mean.abs().max()) < 1e-10
    tik = assimilate(model, y, "enkf", members=30, seed=1, inversion="tikhonov", ridge=1e-9)
    torch.testing.assert_close(tik.filtered_mean, plain.filtered_mean, rtol=0, atol=1e-6)
    gc = gaspari_cohn(torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0]), 1.0)
    torch.testing.assert_close(gc, torch.tensor([1.0, 5.0 / 24.0, float(gaspari_cohn(1.5, 1.0)), 0.0, 0.0], dtype=f64))
    assert 0.0 < float(gc[2]) < 5.0 / 24.0


def test_divergence_is_detected_and_names_the_step():
    model, _, y = problem(4, 2, T=30, seed=14)

    class Exploding(Wrapped):
        def transition_mean(self, z, step):
            out = self.lin.transition_mean(z, step)
            return out * float("nan") if step == 7 else out

    with pytest.raises(FilterDivergenceError, match="time step 7"):
        assimilate(Exploding(model), y, "etkf", members=20, seed=1)
    # a wrong model (tiny R, tiny Q, strongly damped) against data it cannot explain
    wrong = LinearGaussianModel(0.1 * model.A, 1e-6 * model.Q, model.H, 1e-6 * model.R, model.m0, 1e-6 * model.P0)
    with pytest.raises(FilterDivergenceError, match=r"time step \d+.*inflation"):
        assimilate(wrong, 10.0 * y, "enkf", members=20, seed=1)


def test_bad_input():
    model, _, y = problem(4, 2, T=10, seed=0)
    with pytest.raises(ParameterError, match="at least 2"):
        assimilate(model, y, "enkf", members=1)
    with pytest.raises(ParameterError, match="'enkf', 'etkf', 'enks'"):
        EnKFConfig(variant="letkf")
    with pytest.raises(ParameterError, match="inflation"):
        EnKFConfig(inflation=0.9)
    with pytest.raises(ParameterError, match="rtps"):
        EnKFConfig(rtps=1.5)
    with pytest.raises(ParameterError, match="taper"):
        EnKFConfig(variant="etkf", taper=torch.ones(4, 2))
    with pytest.raises(ShapeMismatchError, match=r"\(4, 2\).*\(3, 2\)"):
        assimilate(model, y, "enkf", taper=torch.ones(3, 2))
    with pytest.raises(ShapeMismatchError, match=r"\(10, 5\)"):
        assimilate(model, torch.zeros(10, 5), "etkf")
    with pytest.raises(ParameterError, match="inversion"):
        EnKFConfig(inversion="cholesky")
