"""Exact Kalman engine against independent oracles: Pyro's GaussianHMM and a brute-force joint Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bayesbridge.errors import (
    AllMissingError,
    BayesBridgeError,
    InputTypeError,
    ParameterError,
    ShapeMismatchError,
)
from bayesbridge.infer import assimilate
from bayesbridge.infer.kalman import (
    KalmanConfig,
    gaussian_hmm,
    parallel_smoothed_mean,
    steady_state_smoother,
)
from bayesbridge.model import LinearGaussianModel

f64 = torch.float64




def random_model(d: int, m: int, seed: int, rho: float = 0.9) -> LinearGaussianModel:
    g = torch.Generator().manual_seed(seed)
    A = rho * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))[0]
    B = torch.randn(d, d, generator=g, dtype=f64) / d**0.5
    Q = 0.1 * B @ B.T + 0.05 * torch.eye(d, dtype=f64)
    H = torch.randn(m, d, generator=g, dtype=f64) / d**0.5
    C = torch.randn(m, m, generator=g, dtype=f64) / m**0.5
    R = 0.1 * C @ C.T + 0.2 * torch.eye(m, dtype=f64)
    m0 = torch.randn(d, generator=g, dtype=f64)
    return LinearGaussianModel(A, Q, H, R, m0, torch.eye(d, dtype=f64))


def test_log_evidence_and_filter_match_gaussian_hmm():
    model = random_model(8, 3, seed=0)
    _, y = model.simulate(60, generator=torch.Generator().manual_seed(1), batch_shape=(4,))
    res = assimilate(model, y, "kalman")
    hmm = gaussian_hmm(model, 60)
    assert res.log_evidence.shape == (4,)
    torch.testing.assert_close(res.log_evidence, hmm.log_prob(y), rtol=0, atol=1e-8)
    post = hmm.filter(y)
    torch.testing.assert_close(res.filtered_mean[..., -1, :], post.loc, rtol=0, atol=1e-8)
    torch.testing.assert_close(res.filtered_cov[..., -1, :, :], post.covariance_matrix, rtol=0, atol=1e-8)
    # Pyro's parallel-scan smoother agrees with our RTS recursion
    sm, le = parallel_smoothed_mean(model, y)
    torch.testing.assert_close(sm, res.smoothed_mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(le, res.log_evidence, rtol=0, atol=1e-8)


def brute_force(model: LinearGaussianModel, y: np.ndarray):
    """Joint Gaussian of (z_1..z_T, y_1..y_T), conditioned on the observed y components."""
    A, Q, H, R = (np.asarray(getattr(model, k)) for k in "AQHR")
    m0, P0 = np.asarray(model.m0), np.asarray(model.P0)
    T, m = y.shape
    d = A.shape[0]
    # z_t = A^t z_0 + sum_{s<=t} A^{t-s} w_s  -> mean and cov of the stacked states
    mu = np.concatenate([np.linalg.matrix_power(A, t) @ m0 for t in range(1, T + 1)])
    Czz = np.zeros((T * d, T * d))
    for t in range(1, T + 1):
        for s in range(1, T + 1):
            At = np.linalg.matrix_power(A, t)
            As = np.linalg.matrix_power(A, s)
            c = At @ P0 @ As.T
            for k in range(1, min(t, s) + 1):
                c = c + np.linalg.matrix_power(A, t - k) @ Q @ np.linalg.matrix_power(A, s - k).T
            Czz[(t - 1) * d : t * d, (s - 1) * d : s * d] = c
    Hb = np.kron(np.eye(T), H)
    Rb = np.kron(np.eye(T), R)
    Cyy = Hb @ Czz @ Hb.T + Rb
    Czy = Czz @ Hb.T
    yf = y.reshape(-1)
    obs = ~np.isnan(yf)
    Cyy_o, Czy_o = Cyy[np.ix_(obs, obs)], Czy[:, obs]
    resid = yf[obs] - (Hb @ mu)[obs]
    gain = Czy_o @ np.linalg.inv(Cyy_o)
    mean = mu + gain @ resid
    cov = Czz - gain @ Czy_o.T
    logev = stats.multivariate_normal(mean=(Hb @ mu)[obs], cov=Cyy_o).logpdf(yf[obs])
    return mean.reshape(T, d), cov, logev


def test_smoother_and_evidence_match_brute_force_with_missing_values():
    model = random_model(3, 2, seed=3)
    _, y = model.simulate(5, generator=torch.Generator().manual_seed(4))
    y[1, 0] = float("nan")
    y[3, :] = float("nan")
    res = assimilate(model, y, "kalman")
    mean, cov, logev = brute_force(model, y.numpy())
    np.testing.assert_allclose(res.smoothed_mean.numpy(), mean, atol=1e-9)
    for t in range(5):
        np.testing.assert_allclose(res.smoothed_cov[t].numpy(), cov[3 * t : 3 * t + 3, 3 * t : 3 * t + 3], atol=1e-9)
    np.testing.assert_allclose(float(res.log_evidence), logev, atol=1e-9)
    # filtered mean at the last step is the smoothed one
    torch.testing.assert_close(res.filtered_mean[-1], res.smoothed_mean[-1])
    assert torch.isnan(res.diagnostics.innovation[3]).all()
    assert not torch.isnan(res.diagnostics.innovation[2]).any()


def test_batched_equals_one_by_one_with_different_missing_patterns():
    model = random_model(6, 3, seed=5)
    _, y = model.simulate(40, generator=torch.Generator().manual_seed(6), batch_shape=(2, 3))
    g = torch.Generator().manual_seed(7)
    y[torch.rand(y.shape, generator=g) < 0.3] = float("nan")
    res = assimilate(model, y, "kalman")
    for i in range(2):
        for j in range(3):
            one = assimilate(model, y[i, j], "kalman")
            torch.testing.assert_close(res.filtered_mean[i, j], one.filtered_mean, rtol=0, atol=1e-11)
            torch.testing.assert_close(res.smoothed_cov[i, j], one.smoothed_cov, rtol=0, atol=1e-11)
            torch.testing.assert_close(res.log_evidence[i, j], one.log_evidence, rtol=0, atol=1e-10)


def test_posterior_draws_have_smoother_moments():
    model = random_model(3, 2, seed=8)
    _, y = model.simulate(10, generator=torch.Generator().manual_seed(9))
    n = 4000
    res = assimilate(model, y, "kalman", members=n, seed=1)
    draws = res.smoothed_ensemble  # (T, draw, d)
    assert draws.shape == (10, n, 3)
    sd = res.smoothed_cov.diagonal(dim1=-2, dim2=-1).sqrt()
    z = (draws.mean(1) - res.smoothed_mean) / (sd / n**0.5)
    assert float(z.abs().max()) < 4.5
    # joint covariance of consecutive states matches the brute-force posterior
    _, cov, _ = brute_force(model, y.numpy())
    pair = torch.cat([draws[4], draws[5]], -1)
    emp = torch.cov(pair.T).numpy()
    np.testing.assert_allclose(emp, cov[12:18, 12:18], atol=0.08 * np.abs(cov[12:18, 12:18]).max())
    # same seed, same draws
    again = assimilate(model, y, "kalman", members=n, seed=1)
    torch.testing.assert_close(again.smoothed_ensemble, draws)


def test_bad_input():
    model = random_model(4, 2, seed=0)
    _, y = model.simulate(10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ShapeMismatchError, match=r"2 variables.*\(10, 3\)"):
        assimilate(model, torch.zeros(10, 3), "kalman")
    with pytest.raises(AllMissingError):
        assimilate(model, torch.full((10, 2), float("nan")), "kalman")
    with pytest.raises(ParameterError, match="R"):
        LinearGaussianModel(model.A, model.Q, model.H, -torch.eye(2, dtype=f64), model.m0, model.P0)
    with pytest.raises(ParameterError, match="draws"):
        KalmanConfig(draws=-1)
    with pytest.raises(BayesBridgeError, match="smooth_it"):
        assimilate(model, y, "kalman", smooth_it=True)

    class NotLinear:
        latent_dim, obs_dim = 4, 2

    with pytest.raises(InputTypeError, match="enkf"):
        assimilate(NotLinear(), y, "kalman")


class _ParityTransition:
    """Time-varying linear dynamics (A alternates with the step's parity) with an offset."""

    def __init__(self, A_even, A_odd, b, L):
        self.As, self.b, self.L = (A_even, A_odd), b, L
        self.latent_dim = A_even.shape[0]

    def mean(self, z, step=None):
        return z @ self.As[(step or 0) % 2].mT + self.b

    def noise_scale_tril(self, step=None):
        return self.L


def _joint_gaussian_oracle(As, b, Q, H, c, R, m0, P0, y):
    """Brute force: z_1..z_T = G (z_0, w_1..w_T) + offsets and y = H z + c + v, conditioned as
    one Gaussian (numpy and scipy only)."""
    from scipy import stats as st

    T, d = len(As), m0.size
    mean = np.zeros(T * d)
    G = np.zeros((T * d, (T + 1) * d))
    mu = m0
    for t in range(T):
        mu = As[t] @ mu + b
        mean[t * d:(t + 1) * d] = mu
        for s in range(t + 2):  # source s = 0 is z_0, source s >= 1 is w_s
            M = np.eye(d)
            for k in range(s, t + 1):
                M = As[k] @ M
            G[t * d:(t + 1) * d, s * d:(s + 1) * d] = M
    sources = np.zeros(((T + 1) * d, (T + 1) * d))
    sources[:d, :d] = P0
    for s in range(T):
        sources[(s + 1) * d:(s + 2) * d, (s + 1) * d:(s + 2) * d] = Q[s]
    cov = G @ sources @ G.T
    Hb = np.kron(np.eye(T), H)
    ym = Hb @ mean + np.tile(c, T)
    Syy = Hb @ cov @ Hb.T + np.kron(np.eye(T), R)
    post_mean = mean + (Hb @ cov).T @ np.linalg.solve(Syy, y.reshape(-1) - ym)
    return post_mean.reshape(T, d), st.multivariate_normal(ym, Syy).logpdf(y.reshape(-1))


def _affine_case(seed: int, T: int, time_varying: bool):
    """An affine StateSpaceModel (offsets b, c; A alternating if ``time_varying``), data and the
    joint-Gaussian oracle's smoothed means and log-evidence."""
    from bayesbridge.model import StateSpaceModel

    rng = np.random.default_rng(seed)
    d, m = 3, 2
    A_even = 0.8 * np.linalg.qr(rng.standard_normal((d, d)))[0]
    A_odd = 0.6 * np.linalg.qr(rng.standard_normal((d, d)))[0] if time_varying else A_even
    b = rng.standard_normal(d) * 0.3
    L = np.tril(rng.standard_normal((d, d))) * 0.3 + 0.5 * np.eye(d)
    H = rng.standard_normal((m, d))
    c = np.array([0.4, -0.2])
    s = np.array([0.3, 0.5])
    tr = _ParityTransition(*(torch.as_tensor(x) for x in (A_even, A_odd, b, L)))
    Ht, ct = torch.as_tensor(H), torch.as_tensor(c)
    model = StateSpaceModel(tr, lambda z: z @ Ht.mT + ct, s, initial_mean=np.zeros(d), initial_cov=np.eye(d))
    y = rng.standard_normal((T, m))
    As = [A_even if t % 2 == 0 else A_odd for t in range(T)]
    Q = [L @ L.T] * T
    smoothed, logev = _joint_gaussian_oracle(As, b, Q, H, c, np.diag(s**2), np.zeros(d), np.eye(d), y)
    return model, y, smoothed, logev


def test_time_varying_affine_state_space_model_against_joint_gaussian():
    """The exact engine accepts affine StateSpaceModels (seasonal LIM, EOF box operator)."""
    model, y, smoothed, logev = _affine_case(3, 12, time_varying=True)
    res = assimilate(model, y, method="kalman")
    np.testing.assert_allclose(res.smoothed_mean.numpy(), smoothed, atol=1e-9)
    assert float(res.log_evidence) == pytest.approx(logev, abs=1e-9)


def test_nonlinear_state_space_model_is_refused():
    from bayesbridge.model import LinearTransition, StateSpaceModel

    model = StateSpaceModel(LinearTransition(np.eye(2) * 0.5, np.eye(2)), lambda z: torch.tanh(z), 0.3)
    with pytest.raises(InputTypeError, match="linear-Gaussian"):
        assimilate(model, np.zeros((5, 2)), method="kalman")


# --- steady-state engine (compiled, converged covariances reused) ------------------------------


def _assert_same(a, b, atol=1e-8):
    for k in ("filtered_mean", "filtered_cov", "smoothed_mean", "smoothed_cov", "log_evidence"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=0, atol=atol, msg=k)


def test_steady_engine_matches_gaussian_hmm_and_loop_at_d20_T2000():
    model = random_model(20, 3, seed=11)
    T = 2000
    _, y = model.simulate(T, generator=torch.Generator().manual_seed(12))
    fast = assimilate(model, y, "kalman")
    # independent oracle: Pyro's GaussianHMM (parallel-scan smoother, filter at T, log_prob)
    sm, le = parallel_smoothed_mean(model, y)
    torch.testing.assert_close(fast.smoothed_mean, sm, rtol=0, atol=1e-8)
    torch.testing.assert_close(fast.log_evidence, le, rtol=0, atol=1e-8)
    post = gaussian_hmm(model, T).filter(y)
    torch.testing.assert_close(fast.filtered_mean[-1], post.loc, rtol=0, atol=1e-8)
    torch.testing.assert_close(fast.filtered_cov[-1], post.covariance_matrix, rtol=0, atol=1e-8)
    # every step's covariances against the plain torch recursion
    loop = assimilate(model, y, "kalman", engine="loop")
    _assert_same(fast, loop)
    torch.testing.assert_close(fast.diagnostics.innovation, loop.diagnostics.innovation, rtol=0, atol=1e-8)
    torch.testing.assert_close(fast.diagnostics.innovation_var, loop.diagnostics.innovation_var, rtol=0, atol=1e-8)


def test_tolerance_switches_to_steady_state_and_zero_tolerance_recomputes_every_step():
    model = random_model(10, 2, seed=13)
    T = 600
    _, y = model.simulate(T, generator=torch.Generator().manual_seed(14))
    exact = steady_state_smoother(model, y, tol=0.0)
    assert int(exact.filter_cov_updates) == T and int(exact.smoother_cov_updates) == T
    fast = steady_state_smoother(model, y)  # default 1e-12
    assert int(fast.filter_cov_updates) < T // 3
    assert int(fast.smoother_cov_updates) < 2 * T // 3
    _assert_same(fast, exact, atol=1e-9)
    # a loose tolerance reuses unconverged covariances: visibly (but boundedly) wrong
    loose = steady_state_smoother(model, y, tol=1e-2)
    assert int(loose.filter_cov_updates) < int(fast.filter_cov_updates)
    err = float((loose.filtered_cov - exact.filtered_cov).abs().max())
    assert 1e-9 < err < 0.1 * float(exact.filtered_cov.abs().max())
    with pytest.raises(ParameterError, match="tol"):
        steady_state_smoother(model, y, tol=-1.0)


def test_steady_engine_with_missing_components_and_steps_matches_loop():
    model = random_model(8, 3, seed=15)
    T = 900
    _, y = model.simulate(T, generator=torch.Generator().manual_seed(16), batch_shape=(4,))
    y[0, 300, 1] = float("nan")  # single component, after convergence
    y[0, 500:520, :] = float("nan")  # whole steps
    y[1, :50, 0] = float("nan")  # gap before convergence
    y[2, 700:, 2] = float("nan")  # gap up to the end
    # run 3 fully observed
    fast = steady_state_smoother(model, y)
    loop = assimilate(model, y, "kalman", engine="loop")
    _assert_same(fast, loop)
    torch.testing.assert_close(fast.innovation, loop.diagnostics.innovation, rtol=0, atol=1e-8, equal_nan=True)
    torch.testing.assert_close(fast.spread, loop.diagnostics.spread, rtol=0, atol=1e-10)
    assert torch.isnan(fast.innovation[0, 510]).all() and torch.isnan(fast.innovation[0, 300, 1])
    upd = fast.filter_cov_updates
    # gaps cost extra covariance updates, and the filter re-converges after them
    assert bool((upd[:3] > upd[3]).all()) and bool((upd < T // 2).all())
    # the engine call takes the same path
    _assert_same(assimilate(model, y, "kalman"), loop)


def test_steady_engine_batch_equals_runs_one_by_one():
    model = random_model(6, 2, seed=17)
    _, y = model.simulate(300, generator=torch.Generator().manual_seed(18), batch_shape=(2, 3))
    y[1, 2, 40:45] = float("nan")
    res = steady_state_smoother(model, y)
    assert res.filtered_cov.shape == (2, 3, 300, 6, 6) and res.log_evidence.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = assimilate(model, y[i, j], "kalman", engine="loop")
            torch.testing.assert_close(res.smoothed_mean[i, j], one.smoothed_mean, rtol=0, atol=1e-9)
            torch.testing.assert_close(res.smoothed_cov[i, j], one.smoothed_cov, rtol=0, atol=1e-9)
            torch.testing.assert_close(res.log_evidence[i, j], one.log_evidence, rtol=0, atol=1e-9)
    upd = res.filter_cov_updates.reshape(-1)
    assert bool((upd[:5] == upd[0]).all()) and int(upd[5]) > int(upd[0])


def test_time_invariant_affine_model_with_offset_uses_steady_engine():
    model, y, smoothed, logev = _affine_case(5, 10, time_varying=False)
    res = steady_state_smoother(model, y)  # refuses time-varying models, so this is the fast path
    np.testing.assert_allclose(res.smoothed_mean.numpy(), smoothed, atol=1e-9)
    assert float(res.log_evidence) == pytest.approx(logev, abs=1e-9)
    # a time-varying model is refused by the steady engine
    tv, y, _, _ = _affine_case(5, 10, time_varying=True)
    with pytest.raises(ParameterError, match="time-invariant"):
        steady_state_smoother(tv, y)
    with pytest.raises(ParameterError, match="steady"):
        assimilate(tv, y, "kalman", engine="steady")


def test_gradients_flow_through_the_loop_path():
    base = random_model(3, 2, seed=19)
    _, y = base.simulate(25, generator=torch.Generator().manual_seed(20))
    A = base.A.clone().requires_grad_(True)
    model = LinearGaussianModel(A, base.Q, base.H, base.R, base.m0, base.P0)
    res = assimilate(model, y, "kalman")
    (grad,) = torch.autograd.grad(res.log_evidence, A)
    # central finite differences of the (steady-engine) log-evidence
    h = 1e-6
    fd = torch.zeros_like(grad)
    for i in range(3):
        for j in range(3):
            E = torch.zeros(3, 3, dtype=f64)
            E[i, j] = h
            up = steady_state_smoother(LinearGaussianModel(base.A + E, base.Q, base.H, base.R, base.m0, base.P0), y)
            dn = steady_state_smoother(LinearGaussianModel(base.A - E, base.Q, base.H, base.R, base.m0, base.P0), y)
            fd[i, j] = (up.log_evidence - dn.log_evidence) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-5)


def test_engine_and_tolerance_options_are_validated():
    with pytest.raises(ParameterError, match="engine.*'auto'"):
        KalmanConfig(engine="fast")
    with pytest.raises(ParameterError, match="steady_tol"):
        KalmanConfig(steady_tol=-1e-3)
    with pytest.raises(ParameterError, match="steady_tol"):
        KalmanConfig(steady_tol=float("nan"))


def test_single_step_and_singular_covariances_fall_back_consistently():
    model = random_model(3, 2, seed=21)
    _, y = model.simulate(1, generator=torch.Generator().manual_seed(22))
    _assert_same(assimilate(model, y, "kalman"), assimilate(model, y, "kalman", engine="loop"), atol=1e-12)
    # Q = 0 and P0 = 0: the state is known exactly, P^- is singular; the engine falls back to the loop
    zero = torch.zeros(3, 3, dtype=f64)
    known = LinearGaussianModel(model.A, zero, model.H, model.R, model.m0, zero)
    _, y = model.simulate(15, generator=torch.Generator().manual_seed(23))
    res = assimilate(known, y, "kalman")
    z, m0 = [], model.m0
    for _ in range(15):
        m0 = model.A @ m0
        z.append(m0)
    torch.testing.assert_close(res.smoothed_mean, torch.stack(z), rtol=0, atol=1e-12)
    with pytest.raises(ParameterError, match="singular"):
        steady_state_smoother(known, y)
