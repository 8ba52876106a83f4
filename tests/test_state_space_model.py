"""StateSpaceModel: the Pyro program against independent densities, box observation, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
import xarray as xr
from lg_oracle import kalman_oracle, random_lg_problem
from pyro.infer import Predictive
from scipy import stats

from bayesbridge.errors import (
    AllMissingError,
    BayesBridgeError,
    InputTypeError,
    ParameterError,
    ShapeMismatchError,
)
from bayesbridge.model import BoxObservation, LinearGaussianModel, LinearTransition, StateSpaceModel
from bayesbridge.model.pyro_program import masked_gaussian_hmm
from bayesbridge.model.state_space import as_state_space_model
from bayesbridge.regions import box_weights


def _model(linear=None, d=4, m=2, seed=0):
    A, Q, H, R, m0, P0 = random_lg_problem(d=d, m=m, seed=seed, obs_noise=0.4)
    model = StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, [0.4, 0.7], initial_mean=m0,
                            initial_cov=P0, model_error_scale=1.3, linear=linear)
    return model, (A, Q, H, m0, P0)


def _conditioned_trace(model, y, s, sigma):
    cond = pyro.condition(model.pyro_model, data={"obs_scale": s, "model_error_scale": sigma})
    return pyro.poutine.trace(cond).get_trace(y)


def test_exact_marginal_matches_kalman_oracle_with_missing_values():
    model, (A, Q, H, m0, P0) = _model()
    _, y = LinearGaussianModel(A, Q, H, np.diag([0.16, 0.49]), m0, P0).simulate(
        50, generator=torch.Generator().manual_seed(1))
    y[3, 0] = float("nan")
    y[9] = float("nan")
    s = torch.tensor([0.5, 0.3], dtype=torch.float64)
    sigma = torch.tensor(0.8, dtype=torch.float64)
    tr = _conditioned_trace(model, y, s, sigma)
    tr.compute_log_prob()
    loglik = float(tr.nodes["y"]["log_prob_sum"] + tr.nodes["missing_correction"]["log_prob_sum"])
    exact = kalman_oracle(A, 0.64 * Q, H, np.diag([0.25, 0.09]), m0, P0, y.numpy())[-1]
    assert abs(loglik - exact) < 1e-8
    # priors: default log-normal centred on the nominal scales, sd 1 in log space
    lp_s = stats.lognorm(s=1.0, scale=np.array([0.4, 0.7])).logpdf(s.numpy()).sum()
    lp_sig = stats.lognorm(s=1.0, scale=1.3).logpdf(0.8)
    assert abs(float(tr.nodes["obs_scale"]["log_prob_sum"]) - lp_s) < 1e-10
    assert abs(float(tr.nodes["model_error_scale"]["log_prob_sum"]) - lp_sig) < 1e-10


def test_sequential_program_joint_density_matches_scipy():
    model, (A, Q, H, m0, P0) = _model(linear=False)
    assert model.affine_structure(10) is None
    y = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[4, 1] = float("nan")
    s = torch.tensor([0.5, 0.3], dtype=torch.float64)
    tr = _conditioned_trace(model, y, s, torch.tensor(0.8, dtype=torch.float64))
    tr.compute_log_prob()
    z = [tr.nodes[f"z_{t}"]["value"][0].numpy() for t in range(11)]
    expected = stats.multivariate_normal(m0, P0).logpdf(z[0])
    for t in range(1, 11):
        expected += stats.multivariate_normal(A @ z[t - 1], 0.64 * Q).logpdf(z[t])
        obs = ~np.isnan(y[t - 1].numpy())
        expected += stats.norm(H @ z[t], s.numpy()).logpdf(y[t - 1].numpy())[obs].sum()
    got = sum(float(tr.nodes[f"z_{t}"]["log_prob_sum"]) for t in range(11))
    got += sum(float(tr.nodes[f"y_{t}"]["log_prob_sum"]) for t in range(1, 11))
    assert abs(got - expected) < 1e-8


def test_affine_probe_time_varying_and_predictive():
    class Seasonal:
        latent_dim = 2

        def mean(self, z, step=None):
            return z * (0.9 + 0.05 * np.cos(2 * np.pi * step / 12)) + 0.1

        def noise_scale_tril(self, step=None):
            return 0.5 * torch.eye(2, dtype=torch.float64)

    model = StateSpaceModel(Seasonal(), np.eye(2), 0.3)
    aff = model.affine_structure(24)
    assert aff is not None and not aff.time_invariant
    assert torch.allclose(aff.A[6], torch.eye(2, dtype=torch.float64) * 0.85)
    assert torch.allclose(aff.b[3], torch.full((2,), 0.1, dtype=torch.float64))
    draws = Predictive(model.pyro_model, num_samples=7)(None, n_steps=24)
    assert draws["y"].shape == (7, 24, 2)
    assert draws["obs_scale"].shape == (7, 2)
    # the exact marginal with time-varying A_t and offsets is a Gaussian: check its mean
    masked = masked_gaussian_hmm(model, None, n_steps=24)
    zmean, means = torch.zeros(2, dtype=torch.float64), []
    for t in range(24):
        zmean = model.transition_mean(zmean, t)
        means.append(zmean)
    sample = masked.hmm.sample(torch.Size([4000]))
    assert torch.allclose(sample.mean(0), torch.stack(means), atol=0.15)


class _FakeCodec:
    """Linear decoder on a small (variable, lat, lon) grid."""

    def __init__(self):
        lat = np.arange(-9.0, 10.0, 2.0)
        lon = np.arange(120.0, 281.0, 10.0)
        rows = [(v, la, lo) for v in ("tos", "zos") for la in lat for lo in lon]
        self.points = pd.MultiIndex.from_tuples(rows, names=["variable", "lat", "lon"])
        self.lat, self.lon = lat, lon
        self.latent_dim = 3
        self.W = torch.randn(3, len(rows), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def decode_tensor(self, z):
        return (z @ self.W).to(torch.float32)


def test_box_observation_matches_regions_box_weights():
    codec = _FakeCodec()
    obs = BoxObservation(codec, ("nino3", "nino4", "h_w"))
    assert obs.names == ("nino3", "nino4", "h_w")
    grid = xr.DataArray(np.zeros((codec.lat.size, codec.lon.size)), dims=("lat", "lon"),
                        coords={"lat": codec.lat, "lon": codec.lon})
    n = codec.lat.size * codec.lon.size
    for k, (box, var_block) in enumerate((("nino3", 0), ("nino4", 0), ("h_w", 1))):
        ref = box_weights(grid, box).values.reshape(-1)
        got = obs.weights[k].numpy().reshape(2, n)
        assert np.allclose(got[var_block], ref) and np.allclose(got[1 - var_block], 0.0)
    z = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fields = codec.decode_tensor(z).double()
    assert torch.allclose(obs(z), fields @ obs.weights.mT)
    model = StateSpaceModel(LinearTransition(0.9 * np.eye(3), 0.3 * np.eye(3)), obs, 0.15)
    assert model.obs_dim == 3 and model.obs_names == ("nino3", "nino4", "h_w")
    assert model.affine_structure(5) is not None  # a linear decoder gives an exact marginal
    with pytest.raises(AllMissingError):
        BoxObservation(codec, ((30.0, 40.0, 150.0, 160.0),))  # a box north of the grid


def test_bad_inputs():
    transition = LinearTransition(0.9 * np.eye(2), 0.3 * np.eye(2))
    with pytest.raises(ParameterError, match="obs_scale"):
        StateSpaceModel(transition, np.eye(2), [0.3, -0.1])
    with pytest.raises(ParameterError, match="obs_scale"):
        StateSpaceModel(transition, np.eye(2), 0.0)
    with pytest.raises(ParameterError, match="model_error_scale"):
        StateSpaceModel(transition, np.eye(2), 0.3, model_error_scale=0.0)
    with pytest.raises(ShapeMismatchError):
        StateSpaceModel(transition, np.ones((2, 3)), 0.3)
    with pytest.raises(InputTypeError, match="transition"):
        StateSpaceModel(object(), np.eye(2), 0.3)
    with pytest.raises(InputTypeError, match="distribution"):
        StateSpaceModel(transition, np.eye(2), 0.3, obs_scale_prior="lognormal")
    with pytest.raises(ParameterError, match="diagonal"):
        as_state_space_model(LinearGaussianModel(np.eye(2), np.eye(2), np.eye(2), [[1, 0.5], [0.5, 1]],
                                                 np.zeros(2), np.eye(2)))
    with pytest.raises(ParameterError, match="not affine"):
        StateSpaceModel(transition, lambda z: z**2, 0.3, linear=True).affine_structure(3)
    model = StateSpaceModel(transition, np.eye(2), 0.3)
    with pytest.raises(ParameterError):
        model.with_scales(obs_scale=[0.1, 0.0])


def test_custom_prior_and_conversion():
    import pyro.distributions as dist

    transition = LinearTransition(0.9 * np.eye(2), 0.3 * np.eye(2))
    model = StateSpaceModel(transition, np.eye(2), 0.3, obs_scale_prior=dist.HalfNormal(torch.tensor(0.5, dtype=torch.float64)),
                            model_error_prior=dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 2.0))
    assert model.obs_scale_prior.event_shape == (2,)
    A, Q, H, R, m0, P0 = random_lg_problem(d=3, m=2)
    lgm = LinearGaussianModel(A, Q, H, R, m0, P0)
    ssm = as_state_space_model(lgm)
    assert torch.allclose(ssm.transition_cov(0), lgm.Q, atol=1e-8) and torch.allclose(ssm.obs_cov(), lgm.R)


def test_improper_or_non_positive_priors_are_refused_naming_the_option():
    import pyro.distributions as dist

    transition = LinearTransition(0.9 * np.eye(2), 0.3 * np.eye(2))
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    cases = {
        "obs_scale_prior": (dist.Normal(f64(0.5), f64(1.0)), "positive scales"),
        "model_error_prior": (dist.ImproperUniform(dist.constraints.positive, (), ()), "improper"),
    }
    for option, (prior, what) in cases.items():
        with pytest.raises(BayesBridgeError, match=f"{option}: .*{what}"):
            StateSpaceModel(transition, np.eye(2), 0.3, **{option: prior})
    with pytest.raises(BayesBridgeError, match="model_error_prior: the nominal scales .* zero density"):
        StateSpaceModel(transition, np.eye(2), 0.3, model_error_prior=dist.Uniform(f64(2.0), f64(3.0)))
    # proper priors over positive scales are fine
    StateSpaceModel(transition, np.eye(2), 0.3, model_error_prior=dist.Uniform(f64(0.5), f64(3.0)))
