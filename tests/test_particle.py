"""Particle filter and backward-simulation smoother against the exact Kalman oracle."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from lg_oracle import kalman_oracle, random_lg_problem

from bayesbridge.errors import (
    BayesBridgeError,
    FilterDivergenceError,
    ObservationValueError,
    ParameterError,
)
from bayesbridge.infer import assimilate
from bayesbridge.infer.degeneracy import DegeneracyWarning
from bayesbridge.infer.particle import ParticleConfig, systematic_resample
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel


def _problem(d=8, m=3, T=100, seed=1, obs_noise=0.5, missing=True):
    A, Q, H, R, m0, P0 = random_lg_problem(d=d, m=m, seed=seed, obs_noise=obs_noise)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    z, y = model.simulate(T, generator=torch.Generator().manual_seed(seed))
    if missing:
        y[5, 1] = float("nan")
        y[7] = float("nan")
    return model, z, y, kalman_oracle(A, Q, H, R, m0, P0, y.numpy())


def test_guided_log_evidence_within_one_nat_with_10000_particles():
    model, _, y, (mf, Pf, _, _, loglik) = _problem(T=60)
    # two independent runs as a batch; the estimator's Monte-Carlo sd here is about 0.3 nat
    res = assimilate(model, y.expand(2, *y.shape), "pf", members=10_000, seed=11, proposal="guided", smoother="none")
    assert res.log_evidence.shape == (2,)
    assert (res.log_evidence - loglik).abs().max() < 1.0
    z = (res.filtered_mean[0].numpy() - mf) / np.sqrt(np.einsum("tii->ti", Pf))
    assert np.sqrt((z**2).mean()) < 0.1  # filtered means within 0.1 posterior sd (rms)


def test_bootstrap_log_evidence_and_smoother_means():
    model, _, y, (mf, Pf, ms, Ps, loglik) = _problem(d=4, m=2, T=60, seed=3)
    res = assimilate(model, y, "pf", members=10_000, seed=2, proposal="bootstrap", n_trajectories=400)
    assert abs(float(res.log_evidence) - loglik) < 1.0
    assert res.smoothed_ensemble.shape == (60, 400, 4)
    # 400 backward trajectories: an exact sampler would give an rms z-error of 1/sqrt(400) = 0.05;
    # path correlation through a finite particle set inflates it, so allow 4x that floor.
    zs = (res.smoothed_mean.numpy() - ms) / np.sqrt(np.einsum("tii->ti", Ps))
    assert np.sqrt((zs**2).mean()) < 0.2
    # and the smoother's spread is the smoothing one (narrower than filtering), within 20 %
    sm_sd = res.smoothed_ensemble.std(-2).numpy()
    ratio = sm_sd / np.sqrt(np.einsum("tii->ti", Ps))
    assert 0.8 < ratio[:-1].mean() < 1.2
    # filtered weighted covariance against the exact one
    fvar = res.filtered_cov.diagonal(dim1=-2, dim2=-1).numpy()
    assert abs(fvar.mean() / np.einsum("tii->ti", Pf).mean() - 1) < 0.1


def test_batched_runs_each_match_their_own_oracle():
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=2, seed=5)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(50, generator=torch.Generator().manual_seed(9), batch_shape=(3,))
    res = assimilate(model, y, "pf", members=5000, seed=1, proposal="guided", smoother="none")
    exact = np.array([kalman_oracle(A, Q, H, R, m0, P0, y[b].numpy())[-1] for b in range(3)])
    assert res.filtered_ensemble.shape == (3, 50, 5000, 4)
    assert res.log_weights.shape == (3, 50, 5000)
    assert np.abs(res.log_evidence.numpy() - exact).max() < 1.0
    assert torch.allclose(torch.logsumexp(res.log_weights, -1), torch.zeros(3, 50, dtype=torch.float64))
    assert res.diagnostics.ess.shape == (3, 50) and bool((res.diagnostics.ess <= 5000 + 1e-6).all())


def _student_t_twin(seed=0, T=300, df=2.5, scale=0.3):
    d = 4
    rng = np.random.default_rng(seed)
    A = 0.95 * np.linalg.qr(rng.normal(size=(d, d)))[0]
    Q = 0.1 * np.eye(d)
    H = np.eye(d)
    R = np.diag(np.full(d, scale**2))
    z = np.zeros(d)
    zs, ys = [], []
    for _ in range(T):
        z = A @ z + rng.multivariate_normal(np.zeros(d), Q)
        zs.append(z)
        ys.append(z + scale * rng.standard_t(df, size=d))
    return A, Q, H, R, np.array(zs), np.array(ys)


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # t(2.5) outliers
def test_student_t_particle_filter_beats_gaussian_filter_on_heavy_tailed_twin():
    df, scale = 2.5, 0.3
    A, Q, H, R, z, y = _student_t_twin(seed=1, df=df, scale=scale)
    t_var = R * df / (df - 2.0)  # the true error variance: the Kalman filter is then the BLUE
    model = LinearGaussianModel(A, Q, H, R, np.zeros(4), np.eye(4))
    res = assimilate(model, y, "pf", members=1000, seed=4, obs_likelihood="student_t", df=df, smoother="none")
    kf_mean = kalman_oracle(A, Q, H, t_var, np.zeros(4), np.eye(4), y)[0]
    rmse_pf = np.sqrt(((res.filtered_mean.numpy() - z) ** 2).mean())
    rmse_kf = np.sqrt(((kf_mean - z) ** 2).mean())
    assert rmse_pf < 0.95 * rmse_kf


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # t(2.5) outliers
def test_student_t_particle_filter_beats_enkf_on_heavy_tailed_twin():
    df, scale = 2.5, 0.3
    A, Q, H, R, z, y = _student_t_twin(seed=3, df=df, scale=scale)
    pf_model = LinearGaussianModel(A, Q, H, R, np.zeros(4), np.eye(4))
    enkf_model = LinearGaussianModel(A, Q, H, R * df / (df - 2.0), np.zeros(4), np.eye(4))
    pf = assimilate(pf_model, y, "pf", members=1000, seed=4, obs_likelihood="student_t", df=df, smoother="none")
    enkf = assimilate(enkf_model, y, "enkf", members=200, seed=4)
    rmse_pf = np.sqrt(((pf.filtered_mean.numpy() - z) ** 2).mean())
    rmse_enkf = np.sqrt(((enkf.filtered_mean.numpy() - z) ** 2).mean())
    assert rmse_pf < rmse_enkf


def test_systematic_resampling_counts():
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    idx = systematic_resample(w.log(), torch.Generator().manual_seed(0))
    counts = torch.bincount(idx[0], minlength=4)
    # systematic resampling gives floor(N w) or ceil(N w) copies of each particle
    assert bool(((counts - 4 * w[0]).abs() < 1).all())


def test_systematic_resampling_honours_weights_and_keeps_uniform_members():
    # (moved here from the posterior, which no longer resamples particles per step)
    M = 400
    lw = torch.full((3, M), -1e9, dtype=torch.float64)
    lw[:, 7], lw[:, 11] = np.log(0.25), np.log(0.75)
    ids = systematic_resample(lw, torch.Generator().manual_seed(2))
    assert set(ids.unique().tolist()) == {7, 11}
    frac = (ids == 11).double().mean(1)
    torch.testing.assert_close(frac, torch.full((3,), 0.75, dtype=torch.float64), atol=1.0 / M, rtol=0)
    # uniform weights: every member exactly once, in order
    uniform = torch.full((3, M), -np.log(M), dtype=torch.float64)
    np.testing.assert_array_equal(systematic_resample(uniform, torch.Generator().manual_seed(0)).numpy(),
                                  np.broadcast_to(np.arange(M), (3, M)))


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # one step, 100,000 particles
@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
@pytest.mark.parametrize("proposal", ["bootstrap", "guided"])
@pytest.mark.parametrize("y_obs", [0.5, 3.0])
def test_one_step_nonlinear_evidence_matches_quadrature(proposal, likelihood, y_obs):
    # z_0 ~ N(1, 1), z_1 = 0.9 z_0 + 0.7 w, y_1 = z_1 + 0.1 z_1^3 + 0.3 e (e Gaussian or t_4):
    # p(y_1) is a 1-D integral, computed by adaptive quadrature.
    from scipy import integrate, stats

    def h(z):
        return z + 0.1 * z**3

    model = StateSpaceModel(LinearTransition([[0.9]], [[0.7]]), h, 0.3, initial_mean=[1.0], initial_cov=[[1.0]])
    noise = stats.norm(scale=0.3) if likelihood == "gaussian" else stats.t(df=4.0, scale=0.3)
    prior = stats.norm(0.9, math.sqrt(0.81 + 0.49))
    exact = math.log(integrate.quad(lambda z: prior.pdf(z) * noise.pdf(y_obs - h(z)), -15, 15, points=[0, 1, 2])[0])
    y = torch.full((1, 1), y_obs, dtype=torch.float64)
    res = assimilate(model, y, "pf", members=100_000, seed=0, proposal=proposal, obs_likelihood=likelihood,
                     df=4.0, smoother="none")
    assert abs(float(res.log_evidence) - exact) < 0.03
    # weighted posterior mean against quadrature too
    post_mean = integrate.quad(lambda z: z * prior.pdf(z) * noise.pdf(y_obs - h(z)), -15, 15, points=[0, 1, 2])[0]
    assert abs(float(res.filtered_mean[0, 0]) - post_mean / math.exp(exact)) < 0.02


@pytest.mark.parametrize(
    "options",
    [
        {"members": 5},
        {"ess_threshold": 0.0},
        {"ess_threshold": 1.5},
        {"proposal": "optimal"},
        {"smoother": "ffbs"},
        {"obs_likelihood": "laplace"},
        {"df": 0.0},
        {"n_trajectories": 0},
    ],
)
def test_bad_config_raises(options):
    with pytest.raises(ParameterError):
        ParticleConfig(**options)


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # bad inputs
def test_bad_inputs_raise_bayesbridge_errors():
    model, _, y, _ = _problem(d=4, m=2, T=10)
    with pytest.raises(BayesBridgeError, match="at least 10 particles"):
        assimilate(model, y, "pf", members=3)
    with pytest.raises(BayesBridgeError, match="variables"):
        assimilate(model, y[:, :1], "pf")
    with pytest.raises(BayesBridgeError):
        assimilate(model, torch.full_like(y, float("nan")), "pf")
    corr = LinearGaussianModel(model.A, model.Q, model.H, [[0.25, 0.1], [0.1, 0.25]], model.m0, model.P0)
    with pytest.raises(ParameterError, match="diagonal"):
        assimilate(corr, y, "pf", obs_likelihood="student_t")
    singular = LinearGaussianModel(model.A, torch.zeros(4, 4), model.H, model.R, model.m0, model.P0)
    with pytest.raises(ParameterError, match="positive-definite"):
        assimilate(singular, y, "pf", smoother="backward")


class _BlowUp:
    latent_dim = 2

    def mean(self, z, step=None):
        return z * (math.inf if step == 3 else 1.0)

    def noise_scale_tril(self, step=None):
        return torch.eye(2, dtype=torch.float64)


def test_divergence_names_time_step():
    model = StateSpaceModel(_BlowUp(), np.eye(2), 0.5, linear=False)
    y = torch.zeros(10, 2, dtype=torch.float64)
    with pytest.raises(FilterDivergenceError, match="time step 3"):
        assimilate(model, y, "pf", members=100, smoother="none")


class _Opaque:
    """A model whose transition and observation are plain callables: forces the torch loop."""

    def __init__(self, model):
        self.model, self.latent_dim, self.obs_dim = model, model.latent_dim, model.obs_dim

    def initial(self):
        return self.model.initial()

    def transition_mean(self, z, step):
        return self.model.transition_mean(z, step)

    def transition_cov(self, step):
        return self.model.transition_cov(step)

    def observe(self, z):
        return self.model.observe(z)

    def obs_cov(self):
        return self.model.obs_cov()


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # bootstrap kernels compared
@pytest.mark.parametrize("likelihood, diagonal_q", [("gaussian", False), ("student_t", False), ("gaussian", True)])
def test_compiled_bootstrap_matches_torch_loop(likelihood, diagonal_q):
    # the linear bootstrap filter runs as a compiled kernel; the torch loop is an independent
    # implementation drawing the same random numbers, so every output must agree to rounding
    # (a diagonal model error takes the kernel's elementwise branch)
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=3, seed=7)
    if diagonal_q:
        Q = np.diag(np.diag(Q))
    if likelihood == "gaussian":  # correlated observation errors (student_t needs a diagonal R)
        R = R + 0.05 * (np.ones((3, 3)) - np.eye(3))
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(40, generator=torch.Generator().manual_seed(2), batch_shape=(2,))
    y[0, 5, 1] = float("nan")
    y[1, 9] = float("nan")
    opts = dict(members=500, seed=3, obs_likelihood=likelihood, smoother="none", ess_threshold=0.7, proposal="bootstrap")
    fast = assimilate(model, y, "pf", **opts)
    ref = assimilate(_Opaque(model), y, "pf", **opts)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-9, atol=1e-9)  # noqa: E731
    assert close(fast.log_evidence, ref.log_evidence)
    assert close(fast.filtered_ensemble, ref.filtered_ensemble)
    assert close(fast.log_weights, ref.log_weights)
    assert close(fast.filtered_mean, ref.filtered_mean)
    assert close(fast.filtered_cov, ref.filtered_cov)
    assert close(fast.diagnostics.ess, ref.diagnostics.ess)
    assert close(fast.diagnostics.innovation_var, ref.diagnostics.innovation_var)
    assert torch.equal(fast.diagnostics.innovation.isnan(), ref.diagnostics.innovation.isnan())
    assert close(fast.diagnostics.innovation.nan_to_num(), ref.diagnostics.innovation.nan_to_num())
    # resampling happened in some steps and not in others, so both branches were compared
    resampled = fast.diagnostics.ess < 0.7 * 500
    assert bool(resampled.any()) and not bool(resampled.all())


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # bootstrap
def test_compiled_bootstrap_with_correlated_errors_and_gaps_matches_kalman():
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=3, seed=4)
    R = R + 0.08 * (np.ones((3, 3)) - np.eye(3))
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(50, generator=torch.Generator().manual_seed(8))
    y[3, 0] = y[10, 2] = float("nan")
    y[20] = float("nan")
    mf, Pf, _, _, loglik = kalman_oracle(A, Q, H, R, m0, P0, y.numpy())
    res = assimilate(model, y, "pf", members=10_000, seed=5, smoother="none", proposal="bootstrap")
    assert abs(float(res.log_evidence) - loglik) < 1.0
    z = (res.filtered_mean.numpy() - mf) / np.sqrt(np.einsum("tii->ti", Pf))
    assert np.sqrt((z**2).mean()) < 0.1


@pytest.mark.parametrize("store", [True, False])
@pytest.mark.parametrize("opaque", [False, True])
def test_divergence_names_step_of_impossible_observation(opaque, store):
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=2, seed=1)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(12, generator=torch.Generator().manual_seed(0))
    y[6, 0] = 1e200  # squared residual overflows: every weight is zero at step 6
    target = _Opaque(model) if opaque else model
    # assimilate rejects the value before the engine runs, naming its step
    with pytest.raises(ObservationValueError, match="time step 6"):
        assimilate(target, y, "pf", members=200, smoother="none", store_ensemble=store)
    # the engine itself, past the input checks, names the step where every weight vanished
    from bayesbridge.infer import particle

    config = ParticleConfig(members=200, smoother="none", store_ensemble=store)
    with pytest.raises(FilterDivergenceError, match="zero weight at time step 6"):
        particle.run(target, y.to(torch.float64), config, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("opaque", [False, True])
def test_without_stored_ensemble_same_filter(opaque):
    # store_ensemble=False keeps two steps of particles in a ring; every summary is unchanged
    A, Q, H, R, m0, P0 = random_lg_problem(d=3, m=2, seed=6)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(30, generator=torch.Generator().manual_seed(1), batch_shape=(2,))
    y[1, 4] = float("nan")
    model = _Opaque(model) if opaque else model
    full = assimilate(model, y, "pf", members=300, seed=9, smoother="none")
    lean = assimilate(model, y, "pf", members=300, seed=9, smoother="none", store_ensemble=False)
    assert lean.filtered_ensemble is None and lean.log_weights is None
    assert full.filtered_ensemble.shape == (2, 30, 300, 3)
    for a, b in [(full.log_evidence, lean.log_evidence), (full.filtered_mean, lean.filtered_mean),
                 (full.filtered_cov, lean.filtered_cov), (full.diagnostics.ess, lean.diagnostics.ess)]:
        assert torch.equal(a, b)
    # and the stored ensemble is consistent with the returned weighted mean
    w = full.log_weights.exp().unsqueeze(-1)
    assert torch.allclose((w * full.filtered_ensemble).sum(-2), full.filtered_mean, atol=1e-12)
    # the backward smoother still works (it keeps what it needs)
    sm = assimilate(model, y, "pf", members=300, seed=9, smoother="backward", n_trajectories=5, store_ensemble=False)
    assert sm.filtered_ensemble is None and sm.smoothed_ensemble.shape == (2, 30, 5, 3)


# --- defaults that do not collapse (issue 14) ------------------------------------------------


def _oracle_case(seed=1, T=100):
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=2, seed=seed, obs_noise=0.5)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(T, generator=torch.Generator().manual_seed(seed))
    y[5, 1] = float("nan")
    y[7] = float("nan")
    return model, y, kalman_oracle(A, Q, H, R, m0, P0, y.numpy())


def test_default_particle_smoother_matches_the_exact_smoother():
    # Default settings (auto -> guided proposal, ESS resampling, backward simulation of 100
    # trajectories), 2,000 particles: smoothing means within 0.25 posterior sd (RMS over time and
    # components), time-averaged posterior variances within [0.8, 1.25] of the exact ones per
    # component, log-evidence within 3 nats, and no degeneracy warning.
    model, y, (_, _, ms, Ps, loglik) = _oracle_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegeneracyWarning)
        res = assimilate(model, y, "pf", members=2000, seed=3)
    assert res.config.proposal == "guided"
    sd = np.sqrt(np.einsum("tii->ti", Ps))
    z = (res.smoothed_mean.numpy() - ms) / sd
    assert np.sqrt((z**2).mean()) < 0.25
    ratio = res.smoothed_ensemble.var(-2).numpy().mean(0) / (sd**2).mean(0)
    assert ((0.8 <= ratio) & (ratio <= 1.25)).all(), ratio
    assert abs(float(res.log_evidence) - loglik) < 3.0


@pytest.mark.slow
def test_default_particle_log_evidence_at_20000_particles():
    model, y, (*_, loglik) = _oracle_case(seed=2, T=200)
    res = assimilate(model, y, "pf", members=20_000, seed=4)
    assert abs(float(res.log_evidence) - loglik) < 3.0


def test_bootstrap_degeneracy_warns_with_step_ess_and_remedy():
    # precise observations and a bootstrap proposal: the weights collapse at most steps
    A, Q, H, R, m0, P0 = random_lg_problem(d=4, m=2, seed=1, obs_noise=0.05)
    model = LinearGaussianModel(A, Q, H, R, m0, P0)
    _, y = model.simulate(60, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DegeneracyWarning, match=r"below 10% of the 100 particles at \d+ of 60 steps.*at time step "
                                                r"\d+.*proposal='guided'"):
        res = assimilate(model, y, "pf", members=100, seed=1, proposal="bootstrap")
    assert float((res.diagnostics.ess < 10).double().mean()) > 0.05
    with warnings.catch_warnings():  # the locally optimal proposal does not collapse here
        warnings.simplefilter("error", DegeneracyWarning)
        assimilate(model, y, "pf", members=100, seed=1)
        assimilate(model, y, "pf", members=100, seed=1, proposal="bootstrap", warn_degeneracy=False)


class _NumpyObservation:
    """An observation operator torch cannot differentiate (goes through numpy)."""

    def __call__(self, z):
        return torch.as_tensor(np.tanh(z.detach().numpy()[..., :2]))


def test_auto_proposal_is_guided_when_the_operator_allows_it():
    A, Q, H, R, m0, P0 = random_lg_problem(d=2, m=2, seed=3)
    y = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cases = {
        "matrix": (LinearGaussianModel(A, Q, H, R, m0, P0), "guided"),
        "probed affine": (StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), lambda z: z @ torch.as_tensor(H).T + 1.0, 0.5),
                          "guided"),
        "differentiable": (StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), torch.tanh, 0.5), "guided"),
        "numpy": (StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), _NumpyObservation(), 0.5),
                  "bootstrap"),
    }
    for name, (model, expected) in cases.items():
        res = assimilate(model, y, "pf", members=50, seed=0, smoother="none", warn_degeneracy=False)
        assert res.config.proposal == expected, name
    with pytest.raises(ParameterError, match="proposal: 'guided'.*proposal='bootstrap'"):
        assimilate(cases["numpy"][0], y, "pf", members=50, proposal="guided")
