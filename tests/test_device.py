"""``device=`` through the engines, the result, the posterior and the bridge.

No GPU is needed for most of these tests. The device-following check runs every engine on CPU
inputs inside ``with torch.device("meta")``: there, any tensor our code creates without an
explicit device lands on the "meta" device (no data), and mixing it with the CPU inputs raises,
or the result comes back on "meta". An engine that passes and reproduces the normal run
exactly therefore creates every tensor on its inputs' device, which is what makes it run on
CUDA. The CUDA comparison at the end runs only where a GPU is present.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bayesbridge.bridge import BridgeConfig
from bayesbridge.devices import resolve_device, resolve_optional_device
from bayesbridge.errors import ParameterError
from bayesbridge.infer import AssimilationResult, assimilate
from bayesbridge.infer import particle as particle_mod
from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

CUDA = torch.cuda.is_available()


def _system(seed: int = 1, d: int = 3, m: int = 2, T: int = 25, runs: int = 2, missing: bool = True):
    g = torch.Generator().manual_seed(seed)
    A = 0.8 * torch.eye(d, dtype=torch.float64) + 0.05 * torch.randn(d, d, generator=g, dtype=torch.float64)
    H = torch.randn(m, d, generator=g, dtype=torch.float64)
    model = LinearGaussianModel(A, 0.1 * torch.eye(d), H, 0.2 * torch.eye(m), torch.zeros(d), torch.eye(d))
    _, y = model.simulate(T, generator=g, batch_shape=(runs,))
    if missing:
        y[0, 3, 1] = float("nan")
        y[1, 7, :] = float("nan")
    return model, y


def _ssm(model: LinearGaussianModel, nonlinear: bool) -> StateSpaceModel:
    """The same system as a StateSpaceModel: linear pieces, or a tanh observation operator."""
    transition = LinearTransition(model.A, torch.linalg.cholesky(model.Q))
    H = model.H
    observation = (lambda z: torch.tanh(z @ H.mT)) if nonlinear else H
    return StateSpaceModel(transition, observation, model.R.diagonal().sqrt(), initial_cov=model.P0)


def _tensors(result: AssimilationResult) -> dict[str, torch.Tensor]:
    out = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    out = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    if result.diagnostics is not None:
        for f in dataclasses.fields(result.diagnostics):
            v = getattr(result.diagnostics, f.name)
            if isinstance(v, torch.Tensor):
                out[f"diagnostics.{f.name}"] = v
    return out


def _assert_same(a: AssimilationResult, b: AssimilationResult, exact: bool = True) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    assert ta, "no tensors compared"
    for name, x in ta.items():
        y = tb[name]
        assert y.device == x.device, name
        if exact:
            assert torch.equal(x.nan_to_num(1e300), y.nan_to_num(1e300)), name
        else:
            torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-9, equal_nan=True, msg=name)


CASES = [
    ("kalman", {"engine": "loop", "draws": 4}),
    ("kalman", {"engine": "steady", "draws": 4}),
    ("enkf", {"members": 20}),
    ("etkf", {"members": 20}),
    ("enks", {"members": 20}),
    ("enks", {"members": 20, "smoother": "rts"}),
    ("pf", {"members": 64}),
    ("pf", {"members": 64, "proposal": "guided"}),
    ("pf", {"members": 64, "smoother": "backward", "n_trajectories": 5}),
    ("pf", {"members": 64, "obs_likelihood": "student_t", "df": 5.0}),
]


@pytest.mark.parametrize(("method", "options"), CASES, ids=[f"{m}-{'-'.join(map(str, o.values()))}" for m, o in CASES])
def test_engines_create_no_tensor_off_their_inputs_device(method, options):
    model, y = _system()
    reference = assimilate(model, y, method, seed=3, **options)
    with torch.device("meta"):
        out = assimilate(model, y, method, seed=3, **options)
    assert out.filtered_mean.device.type == "cpu"
    _assert_same(reference, out)


SSM_CASES = [(m, nl) for m in ("enkf", "etkf", "enks", "pf") for nl in (False, True)] + [("kalman", False)]


@pytest.mark.parametrize(("method", "nonlinear"), SSM_CASES)
def test_state_space_model_engines_follow_inputs_device(method, nonlinear):
    """Includes the Kalman engine on an affine StateSpaceModel (affine_structure probes)."""
    base, y = _system(seed=4)
    model = _ssm(base, nonlinear)
    options = {"members": 32, "proposal": "guided"} if method == "pf" else {}
    reference = assimilate(model, y, method, seed=5, **options)
    with torch.device("meta"):
        out = assimilate(model, y, method, seed=5, **options)
    _assert_same(reference, out)


@pytest.mark.parametrize("options", [{}, {"proposal": "guided"}, {"smoother": "backward", "n_trajectories": 4},
                                     {"obs_likelihood": "student_t", "df": 4.0}])
def test_particle_torch_weighting_matches_compiled_kernels(monkeypatch, options):
    """Off the CPU the particle filter weighs and resamples with torch ops instead of numba;
    on the same random numbers both routes agree to rounding, and the torch route creates no
    tensor off its inputs' device."""
    model, y = _system(seed=6)
    compiled = assimilate(model, y, "pf", members=128, seed=7, **options)
    monkeypatch.setattr(particle_mod, "_use_compiled", lambda y: False)
    torch_route = assimilate(model, y, "pf", members=128, seed=7, **options)
    _assert_same(compiled, torch_route, exact=False)
    with torch.device("meta"):
        on_meta = assimilate(model, y, "pf", members=128, seed=7, **options)
    _assert_same(torch_route, on_meta)


def test_particle_torch_weighting_without_resampling_accumulates_likelihoods(monkeypatch):
    """With a threshold no ESS can fall below (ESS >= 1 > 1e-9 N) nothing is resampled, so the
    final normalised log weight of particle i is the normalised sum over steps of
    log N(y_t; H z_t^i, R) along its fixed path (scipy oracle)."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    model, y = _system(seed=8, runs=1, missing=False)
    monkeypatch.setattr(particle_mod, "_use_compiled", lambda y: False)
    out = assimilate(model, y, "pf", members=40, seed=1, ess_threshold=1e-9, proposal="bootstrap",
                     warn_degeneracy=False)
    z = out.filtered_ensemble[0].numpy()  # (T, N, d)
    H, R = model.H.numpy(), model.R.numpy()
    loglik = np.stack([multivariate_normal(mean=np.zeros(2), cov=R).logpdf(y[0, t].numpy() - z[t] @ H.T)
                       for t in range(z.shape[0])])  # (T, N)
    total = loglik.sum(0)
    np.testing.assert_allclose(out.log_weights[0, -1].numpy(), total - logsumexp(total), rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore::bayesbridge.infer.degeneracy.DegeneracyWarning")  # bootstrap, 25 steps
def test_particle_torch_weighting_estimates_the_exact_evidence(monkeypatch):
    """The torch route's log-evidence estimate is close to the exact Kalman value."""
    model, y = _system(seed=13)
    exact = assimilate(model, y, "kalman")
    monkeypatch.setattr(particle_mod, "_use_compiled", lambda y: False)
    for proposal in ("bootstrap", "guided"):
        est = assimilate(model, y, "pf", members=3000, seed=2, proposal=proposal, store_ensemble=False)
        torch.testing.assert_close(est.log_evidence, exact.log_evidence, rtol=0.0, atol=0.4)
        torch.testing.assert_close(est.filtered_mean, exact.filtered_mean, rtol=0.0, atol=0.15)


def test_kalman_loop_on_meta_equals_steady_engine():
    """Both Kalman engines agree; the loop run under the meta default device is the exact oracle."""
    model, y = _system(seed=9)
    steady = assimilate(model, y, "kalman", engine="steady")
    with torch.device("meta"):
        loop = assimilate(model, y, "kalman", engine="loop")
    torch.testing.assert_close(loop.smoothed_mean, steady.smoothed_mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(loop.log_evidence, steady.log_evidence, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("method", "options"), CASES + [("svi", {"steps": 15})],
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES + [("svi", {})])])
def test_explicit_cpu_device_is_the_default(method, options):
    model, y = _system(seed=10)
    _assert_same(assimilate(model, y, method, seed=2, **options),
                 assimilate(model, y, method, seed=2, device="cpu", **options))
    _assert_same(assimilate(model, y, method, seed=2, **options),
                 assimilate(model, y, method, seed=2, device=torch.device("cpu"), **options))


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", 3.5])
def test_bad_device_names_the_argument(bad):
    model, y = _system()
    with pytest.raises(ParameterError, match=r"^device: expected 'cpu', 'cuda'"):
        assimilate(model, y, "kalman", device=bad)
    with pytest.raises(ParameterError, match="device"):
        resolve_device(bad)


def test_meta_device_is_refused():
    with pytest.raises(ParameterError, match=r"device: .*'meta' is not supported"):
        resolve_device("meta")


def test_cuda_unavailable_is_a_parameter_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, y = _system()
    with pytest.raises(ParameterError, match=r"device: 'cuda' requested but CUDA is not available.*device='cpu'"):
        assimilate(model, y, "enkf", device="cuda")
    with pytest.raises(ParameterError, match="CUDA is not available"):
        model.to("cuda:0")
    with pytest.raises(ParameterError, match=r"^device: 'cuda'"):
        BridgeConfig(device="cuda")
    assert resolve_optional_device(None) is None
    assert resolve_optional_device("cpu") == torch.device("cpu")


def test_svi_refuses_a_gpu_explicitly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    model, y = _system()
    with pytest.raises(ParameterError, match=r"device: method 'svi' runs on the CPU only"):
        assimilate(model, y, "svi", device="cuda")


def test_generator_on_another_device_is_refused():
    """A model living on another device (here it reports "meta") makes the engine run there;
    a CPU generator passed as seed is then refused before any work."""
    model, y = _system()

    class Elsewhere(LinearGaussianModel):
        device = property(lambda self: torch.device("meta"))

    moved = Elsewhere(model.A, model.Q, model.H, model.R, model.m0, model.P0)
    with pytest.raises(ParameterError, match=r"seed: the generator lives on cpu but the engine runs on meta"):
        assimilate(moved, y, "enkf", seed=torch.Generator().manual_seed(1))


def test_bridge_config_device_validation():
    assert BridgeConfig().device == "cpu"
    assert BridgeConfig(device=torch.device("cpu")).device == "cpu"
    with pytest.raises(ParameterError, match=r"^device: expected 'cpu', 'cuda'"):
        BridgeConfig(device="gpu")
    with pytest.raises(ParameterError, match=r"^device: expected a string"):
        BridgeConfig(device=0.5)


def test_models_and_results_move_as_copies():
    model, y = _system()
    ssm = _ssm(model, nonlinear=False)
    for m in (model, ssm):
        moved = m.to("cpu")
        assert moved is not m and moved.device == torch.device("cpu")
        _assert_same(assimilate(m, y, "enks", members=10, seed=1), assimilate(moved, y, "enks", members=10, seed=1))
    res = assimilate(model, y, "pf", members=16, seed=1)
    assert res.cpu() is res
    copy = res.to("cpu")
    assert copy is not res and copy.diagnostics is not res.diagnostics
    _assert_same(res, copy)


def test_device_transition_delivers_noise_factor_once():
    """A transition without ``to`` is wrapped: its noise factor is copied once, not per step."""
    from bayesbridge.model.state_space import _DeviceTransition

    model, _ = _system()
    calls = []

    class Plain:
        latent_dim = 3

        def mean(self, z, step=None):
            return z @ model.A.to(z.device).mT

        def noise_scale_tril(self, step=None):
            calls.append(step)
            return torch.linalg.cholesky(model.Q)  # a new tensor at every call

    wrapped = _DeviceTransition(Plain(), torch.device("meta"))
    first = wrapped.noise_scale_tril(0)
    assert first.device.type == "meta"
    assert wrapped.noise_scale_tril(5) is first  # same values: the copy is reused
    assert calls == [0, 5]


def test_bridge_and_posterior_follow_the_result_device(tmp_path):
    """Assimilate with a fitted (EOF) bridge under the meta default device: the engine, the
    state-space model's observation operator, the posterior's draws and decoding create no
    tensor off the CPU, and the summaries are identical to a normal run."""
    import xarray as xr

    from bayesbridge import io
    from bayesbridge.bridge import Bridge
    from bayesbridge.datasets import make_twin_experiment

    twin = make_twin_experiment(years=16, seed=3, cache_dir=tmp_path)
    ops = io.open_operational(twin.operational, region=None).load()
    bridge = Bridge(BridgeConfig(latent_dim=6, members=10, device="cpu")).fit(ops)
    names = ["nino3", "nino4", "h_w"]
    reference = bridge.assimilate(twin.idealized_observations, names, seed=2)
    summary = reference.posterior.summary()
    with torch.device("meta"):
        out = bridge.assimilate(twin.idealized_observations, names, seed=2)
        moved = bridge.state_space_model(names, 1).to("cpu")
        on_meta = out.posterior.summary()
    _assert_same(reference.result, out.result)
    xr.testing.assert_identical(summary, on_meta)
    assert moved.observe(torch.zeros(2, 6, dtype=torch.float64)).shape == (2, 3)


# ----------------------------------------------------------------------------------------------
# On a CUDA machine: every engine and the bridge on the GPU, compared with the CPU.
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CI is CPU-only)")
def test_cuda_matches_cpu(tmp_path):
    """Every engine and the bridge on the GPU, compared with the CPU. The Kalman filter is
    deterministic (same numbers to rounding); the Monte-Carlo engines draw from a CUDA
    generator (another stream), so they are compared with the exact smoother instead."""
    from bayesbridge import io
    from bayesbridge.bridge import Bridge
    from bayesbridge.datasets import make_twin_experiment

    model, y = _system(seed=11, runs=3)
    exact = assimilate(model, y, "kalman")
    for method, options in CASES:
        gpu = assimilate(model, y, method, seed=3, device="cuda", **options)
        assert gpu.filtered_mean.device.type == "cuda"
        back = gpu.cpu()
        assert back.filtered_mean.device.type == "cpu"
        if method == "kalman":
            torch.testing.assert_close(back.filtered_mean, exact.filtered_mean, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(back.smoothed_cov, exact.smoothed_cov, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(back.log_evidence, exact.log_evidence, rtol=1e-9, atol=1e-8)
        else:
            tol = 4.0 * exact.filtered_cov.diagonal(dim1=-2, dim2=-1).sqrt().max()
            assert float((back.filtered_mean - exact.filtered_mean).abs().max()) < tol, (method, options)
    pf = assimilate(model, y, "pf", members=4000, seed=1, device="cuda").cpu()
    torch.testing.assert_close(pf.log_evidence, exact.log_evidence, rtol=0.0, atol=0.5)

    twin = make_twin_experiment(years=16, seed=3, cache_dir=tmp_path)
    ops = io.open_operational(twin.operational, region=None).load()
    names = ["nino3", "nino4", "h_w"]
    outs = {}
    for dev in ("cpu", "cuda"):
        bridge = Bridge(BridgeConfig(latent_dim=6, members=200, method="enks", device=dev)).fit(ops)
        outs[dev] = bridge.assimilate(twin.idealized_observations, names, seed=2).posterior.summary()
    for name in ("nino3", "nino4", "nino34"):
        a, b = (np.asarray(outs[d][f"{name}_mean"]) for d in ("cpu", "cuda"))
        spread = np.asarray(outs["cpu"][f"{name}_std"]).mean()
        assert np.abs(a - b).max() < 3.0 * spread, name
