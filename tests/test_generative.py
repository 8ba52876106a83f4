"""The bridge's generative model as one Pyro program (bayesbridge.apps.generative)."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from bayesbridge import errors
from bayesbridge.apps.generative import BridgeModel, IdealizedRun
from bayesbridge.apps.reanalysis import default_operational
from bayesbridge.bridge import Bridge, BridgeConfig
from bayesbridge.idealized import ENSOParameters, MultiscaleENSO
from bayesbridge.idealized.calibrated import calibration_posterior
from bayesbridge.infer import assimilate
from bayesbridge.model.pyro_program import isolated_pyro


@pytest.fixture(scope="module")
def bridge():
    return Bridge(BridgeConfig(latent_dim=6, method="kalman")).fit(default_operational(years=20), seed=0)


def test_prior_predictive_runs_the_idealized_model_at_a_calibration_draw(bridge):
    model = BridgeModel(bridge, n_steps=30, start_month=3)
    table = model.sites()
    assert list(table.index) == ["theta", "idealized_run", "obs_scale", "model_error_scale", "y"]
    assert table.loc["y", "observed"] and not table.loc["idealized_run", "observed"]
    with isolated_pyro(torch.Generator().manual_seed(4)):
        trace = pyro.poutine.trace(model).get_trace()
    theta = trace.nodes["theta"]["value"].numpy()
    draws = calibration_posterior().draws.to_numpy()
    assert np.isclose(draws, theta).all(axis=1).any()  # one of the stored posterior draws
    run = trace.nodes["idealized_run"]["value"]
    assert run.shape == (30, 3) and torch.equal(trace.nodes["y"]["value"], run)  # the run is the bridge's data


def test_idealized_run_is_the_simulator_with_a_torch_drawn_seed():
    theta = torch.tensor([0.6, 0.9], dtype=torch.float64)
    run = IdealizedRun(theta, ("f", "wind_amp"), ("nino3", "h_w"), n_steps=14, start_month=2, burn_in_years=5)
    torch.manual_seed(11)
    values = run.sample()
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    sim = MultiscaleENSO(ENSOParameters().replace(f=0.6, wind_amp=0.9)).simulate(2, members=1, seed=seed, burn_in_years=5)
    expected = np.stack([sim["nino3"].values[0, 1:15], sim["h_w"].values[0, 1:15]], -1)
    np.testing.assert_allclose(values.numpy(), expected)
    with pytest.raises(NotImplementedError, match="no tractable density"):
        run.log_prob(values)


def test_conditional_part_is_the_exact_marginal_likelihood(bridge):
    model = BridgeModel(bridge, observables=("nino3", "nino4"), n_steps=48)
    rng = np.random.default_rng(0)
    y = rng.normal(scale=0.8, size=(48, 2))
    y[5, 1] = np.nan
    s = torch.tensor([0.3, 0.25], dtype=torch.float64)
    sigma = torch.tensor(1.2, dtype=torch.float64)
    fixed = pyro.poutine.condition(model, {"obs_scale": s, "model_error_scale": sigma})
    trace = pyro.poutine.trace(fixed).get_trace(torch.as_tensor(y))
    trace.compute_log_prob()
    log_lik = sum(site["log_prob"].sum() for name, site in trace.nodes.items()
                  if site["type"] == "sample" and name not in ("obs_scale", "model_error_scale"))
    exact = assimilate(model.state_space.with_scales(obs_scale=s, model_error_scale=float(sigma)), y, method="kalman")
    assert float(log_lik) == pytest.approx(float(exact.log_evidence), abs=1e-6)


def test_bad_settings_are_named(bridge):
    with pytest.raises(errors.ParameterError, match="observables: .*nino3, nino4, h_w"):
        BridgeModel(bridge, observables=("nino34",))
    with pytest.raises(errors.ParameterError, match="theta_prior"):
        BridgeModel(bridge, theta_prior="flat")
    with pytest.raises(errors.ParameterError, match="start_month"):
        BridgeModel(bridge, start_month=13)
