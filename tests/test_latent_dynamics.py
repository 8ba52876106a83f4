"""Latent dynamics (LIM, neural) and the emulator check (bayesbridge.latent)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import xarray as xr
from synthetic_fields import make_synthetic_fields

import bayesbridge.latent as bl
from bayesbridge.errors import InputValueError, NotFittedError, ParameterError, TimeAxisError


@pytest.fixture(scope="module")
def long_data():
    syn = make_synthetic_fields(n_years=100, seed=1)
    codec = bl.EOFCodec(6).fit(syn.fields)
    return syn, codec, codec.encode(syn.fields)


def _as_latent(values, start="1900-01-01"):
    time = xr.date_range(start, periods=len(values), freq="MS", calendar="noleap", use_cftime=True)
    return xr.DataArray(values, dims=("time", "latent"), coords={"time": time})


def test_lim_recovers_known_transition_matrix(long_data):
    syn, _, _ = long_data
    lim = bl.LinearInverseModel().fit(_as_latent(syn.latent))
    # asymptotic standard errors of least squares: sqrt(Q_ii (Z0'Z0)^-1_jj)
    z0 = syn.latent[:-1]
    se = np.sqrt(np.outer(np.diag(syn.Q), np.diag(np.linalg.inv(z0.T @ z0))))
    assert np.all(np.abs(lim.A.numpy() - syn.A) < 4 * se)
    np.testing.assert_allclose(lim.Q.numpy(), syn.Q, atol=0.05)
    assert isinstance(lim, bl.Transition)
    # the EOF latent is a linear image of the driver: same oscillatory eigenvalues
    eig_true = np.linalg.eigvals(syn.A)
    period_true = 2 * np.pi / np.abs(np.angle(eig_true[np.abs(np.imag(eig_true)) > 0][0]))
    eig = np.linalg.eigvals(bl.LinearInverseModel().fit(long_data[2]).A.numpy())
    complex_eig = eig[np.abs(np.imag(eig)) > 1e-6]
    periods = 2 * np.pi / np.abs(np.angle(complex_eig))
    assert np.min(np.abs(periods - period_true)) < 8  # months


def test_seasonal_lim_recovers_monthly_matrices():
    rng = np.random.default_rng(5)
    a_m = [np.array([[0.6 + 0.3 * np.cos(2 * np.pi * m / 12), 0.1], [0.0, 0.5]]) for m in range(1, 13)]
    n = 12 * 300
    z = np.zeros((n, 2))
    for t in range(1, n):
        month = t % 12 + 1  # series starts in January
        z[t] = a_m[month - 1] @ z[t - 1] + 0.3 * rng.standard_normal(2)
    lim = bl.LinearInverseModel(seasonal=True).fit(_as_latent(z))
    assert lim.start_month == 1
    for m in (1, 4, 7, 10):
        np.testing.assert_allclose(lim.A_monthly[m - 1].numpy(), a_m[m - 1], atol=0.1)
    # step s has month (start_month - 1 + s) % 12 + 1; step 6 is July
    np.testing.assert_array_equal(lim.transition_matrix(6).numpy(), lim.A_monthly[6].numpy())
    lim.start_month = 3
    np.testing.assert_array_equal(lim.transition_matrix(6).numpy(), lim.A_monthly[8].numpy())
    mean = lim.mean(torch.ones(4, 5, 2, dtype=torch.float64), step=6)
    assert mean.shape == (4, 5, 2)
    np.testing.assert_allclose(mean[0, 0].numpy(), lim.A_monthly[8].numpy() @ np.ones(2))
    np.testing.assert_allclose(
        (lim.noise_scale_tril(6) @ lim.noise_scale_tril(6).T).numpy(), lim.Q_monthly[8].numpy()
    )


def test_lim_simulation_matches_stationary_covariance(long_data):
    syn, _, _ = long_data
    lim = bl.LinearInverseModel().fit(_as_latent(syn.latent))
    run = lim.simulate(600, members=20, seed=3)
    assert run.dims == ("member", "time", "latent") and run.shape == (20, 600, 4)
    np.testing.assert_array_equal(run.values, lim.simulate(600, members=20, seed=3).values)
    emp = np.cov(run.values.reshape(-1, 4).T)
    np.testing.assert_allclose(emp, lim.stationary_covariance().numpy(), atol=0.15 * np.trace(emp) / 4)


def _check_emulator(report):
    op, em = report.operational, report.emulator
    assert abs(em.std / op.std - 1) <= 0.10, report
    assert abs(em.acf_lag6 - op.acf_lag6) <= 0.1, report
    assert abs(em.acf_lag12 - op.acf_lag12) <= 0.1, report


def test_lim_emulator_check(long_data):
    syn, codec, z = long_data
    report = bl.emulator_check(codec, bl.LinearInverseModel().fit(z), syn.fields, members=10)
    print("\n", report)
    _check_emulator(report)
    # the operational statistics agree with scipy on the independent box index
    from bayesbridge.regions import box_index

    n3 = box_index(syn.fields["tos"], "nino3").values
    assert report.operational.std == pytest.approx(n3.std(ddof=1), rel=1e-6)
    f, p = scipy.signal.welch(n3 - n3.mean(), fs=12, nperseg=240)
    assert report.operational.spectral_peak_years == pytest.approx(1 / f[1:][np.argmax(p[1:])])


def test_neural_dynamics_emulator_check(long_data):
    syn, codec, z = long_data
    dyn = bl.NeuralDynamics(epochs=40, patience=8, progress=False, seed=0).fit(z)
    assert isinstance(dyn, bl.Transition) and dyn.latent_dim == 6
    report = bl.emulator_check(codec, dyn, syn.fields, members=10)
    print("\n", report)
    _check_emulator(report)
    zb = torch.zeros(2, 3, 6, dtype=torch.float64, requires_grad=True)
    out = dyn.mean(zb, step=1)
    assert out.shape == (2, 3, 6) and out.dtype == torch.float64
    out.sum().backward()
    assert zb.grad is not None and torch.isfinite(zb.grad).all()
    chol = dyn.noise_scale_tril()
    assert chol.shape == (6, 6) and torch.all(torch.diagonal(chol) > 0)
    assert torch.equal(chol, torch.tril(chol))


def test_neural_dynamics_seed_determinism_and_seasonal_step(long_data):
    _, _, z = long_data
    short = z.isel(time=slice(0, 240))
    a = bl.NeuralDynamics(epochs=3, progress=False, seed=2, seasonal=True).fit(short)
    b = bl.NeuralDynamics(epochs=3, progress=False, seed=2, seasonal=True).fit(short)
    zz = torch.ones(6, dtype=torch.float64)
    assert torch.equal(a.mean(zz, 3), b.mean(zz, 3))
    assert not torch.equal(a.mean(zz, 3), a.mean(zz, 9))  # month features matter
    with pytest.raises(ParameterError, match="step"):
        a.mean(zz)


def test_dynamics_input_errors(long_data):
    _, _, z = long_data
    with pytest.raises(NotFittedError):
        bl.LinearInverseModel().mean(torch.zeros(3))
    with pytest.raises(InputValueError, match="too few"):
        bl.LinearInverseModel().fit(z.isel(time=slice(0, 5)))
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputValueError, match="NaN"):
        bl.LinearInverseModel().fit(bad)
    with pytest.raises(TimeAxisError):
        bl.LinearInverseModel(seasonal=True).fit(z.assign_coords(time=np.arange(z.sizes["time"])))
    with pytest.raises(InputValueError, match="validation split"):
        bl.NeuralDynamics(progress=False).fit(z.isel(time=slice(0, 12)))
    with pytest.raises(ParameterError, match="ridge"):
        bl.LinearInverseModel(ridge=-1)
