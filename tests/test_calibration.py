"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018) of every route.

Each replication draws the error scales from their priors (``svi``, which infers them) or fixes
them at the nominal values (the filters and smoothers, which take them as known), simulates a
trajectory and observations of a small bridge-like model (a damped ENSO-like oscillation of
period 14 steps plus a damped mode, 3 latent components, 2 "box" observables of all three, 40
steps), runs the route and records the rank of the true value among 99 posterior draws. If the
route samples the exact posterior, the rank is uniform on ``0..99`` (ties, e.g. repeated
particle trajectories, are broken at random). Each replication contributes the rank of ONE
quantity, cycling over the states ``z_t[k]`` at ``t = 10, 20, 39`` and the components ``k``
(and, for ``svi``, over ``log s_1, log s_2, log sigma``), so the ranks are independent and the
chi-square test of their histogram is valid.

Routes with fixed scales (``kalman``, ``enkf``, ``enks``, ``pf``) are calibrated on the latent
states only; ``enkf`` is checked on its filtered ensemble (the truth ``z_t`` against
``p(z_t | y_{1:t})``), the others on whole-trajectory draws. ``svi`` integrates over the scales,
so its states and scales are both calibrated.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import linalg, stats

from bayesbridge.infer import assimilate
from bayesbridge.model import LinearTransition, StateSpaceModel

T = 40
DRAWS = 99
TIMES = (10, 20, T - 1)
S_MEDIAN, S_TAU, SIGMA_TAU = 0.4, 0.5, 0.3


def _system():
    th = 2.0 * np.pi / 14.0
    A = np.zeros((3, 3))
    A[:2, :2] = 0.92 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A[2, 2] = 0.7
    L = np.diag([0.3, 0.3, 0.25])
    H = np.array([[0.8, 0.3, 0.5], [-0.2, 0.9, 0.4]])
    return A, L, H, linalg.solve_discrete_lyapunov(A, L @ L.T)


def _model(obs_factor: float = 1.0) -> StateSpaceModel:
    """The assimilating model: nominal scales at the prior medians (times ``obs_factor``)."""
    A, L, H, P0 = _system()
    loc = torch.full((2,), np.log(S_MEDIAN), dtype=torch.float64)
    return StateSpaceModel(
        LinearTransition(A, L), H, S_MEDIAN * obs_factor, initial_cov=P0,
        obs_scale_prior=dist.LogNormal(loc, torch.full((2,), S_TAU, dtype=torch.float64)),
        model_error_prior=dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(SIGMA_TAU, dtype=torch.float64)),
    )


def _simulate(rng: np.random.Generator, scales_from_prior: bool):
    """``(z (T, 3), y (T, 2), log scales (3,))`` from the prior predictive."""
    A, L, H, P0 = _system()
    s = np.exp(np.log(S_MEDIAN) + S_TAU * rng.standard_normal(2)) if scales_from_prior else np.full(2, S_MEDIAN)
    sigma = np.exp(SIGMA_TAU * rng.standard_normal()) if scales_from_prior else 1.0
    z, zs, ys = rng.multivariate_normal(np.zeros(3), P0), [], []
    for _ in range(T):
        z = A @ z + sigma * L @ rng.standard_normal(3)
        zs.append(z)
        ys.append(H @ z + s * rng.standard_normal(2))
    return np.array(zs), np.array(ys), np.log(np.append(s, sigma))


def _draws(route: str, model, y: np.ndarray, seed: int, options: dict):
    """Latent draws ``(T, DRAWS, 3)`` and, for svi, log-scale draws ``(DRAWS, 3)``."""
    y = torch.as_tensor(y)
    if route == "svi":
        res = assimilate(model, y, "svi", members=DRAWS, seed=seed, **options)
        hyper = torch.cat([res.hyperparameters["obs_scale"].log(), res.hyperparameters["model_error_scale"].log()[:, None]], 1)
        return res.smoothed_ensemble.numpy(), hyper.numpy()
    if route == "pf":
        res = assimilate(model, y, "pf", seed=seed, n_trajectories=DRAWS, **options)
    else:
        res = assimilate(model, y, route, members=DRAWS, seed=seed, **options)
    ens = res.filtered_ensemble if route == "enkf" else res.smoothed_ensemble
    return ens.numpy(), None


def _rank(draws: np.ndarray, truth: float, rng: np.random.Generator) -> int:
    return int((draws < truth).sum() + rng.integers(0, (draws == truth).sum() + 1))


def sbc_ranks(route: str, reps: int, seed: int = 0, model=None, **options) -> dict[str, np.ndarray]:
    """Ranks ``(reps,)`` of one state quantity per replication (and of one log scale, svi)."""
    rng = np.random.default_rng(seed)
    model = _model() if model is None else model
    states, scales = [], []
    for r in range(reps):
        z, y, log_scales = _simulate(rng, route == "svi")
        ens, hyper = _draws(route, model, y, 1000 * seed + r, options)
        q = r % (3 * len(TIMES))
        t, k = TIMES[q // 3], q % 3
        states.append(_rank(ens[t, :, k], z[t, k], rng))
        if hyper is not None:
            j = r % 3
            scales.append(_rank(hyper[:, j], log_scales[j], rng))
    out = {"states": np.array(states)}
    if scales:
        out["scales"] = np.array(scales)
    return out


def uniformity_pvalue(ranks: np.ndarray, bins: int) -> float:
    """Chi-square p-value of the ranks ``0..DRAWS`` pooled into ``bins`` equal bins."""
    counts = np.bincount(ranks * bins // (DRAWS + 1), minlength=bins)
    return float(stats.chisquare(counts).pvalue)


ROUTES = {
    "kalman": {},
    "enkf": {},
    "enks": {},
    "pf": {"members": 1000},
    "svi": {},
}


@pytest.mark.slow
@pytest.mark.parametrize("route", list(ROUTES))
def test_sbc_ranks_are_uniform(route):
    ranks = sbc_ranks(route, 200, seed=1, **ROUTES[route])
    pvalues = {name: uniformity_pvalue(r, 10) for name, r in ranks.items()}
    print(f"SBC {route}: 200 replications, p-values {pvalues}")
    assert min(pvalues.values()) > 0.01, pvalues


def test_sbc_quick_every_route_and_a_miscalibrated_one():
    # Fewer replications (40 in 10 bins; svi 12, a lighter fit, its state and scale ranks pooled in 4
    # bins) and p > 0.001; the same check rejects a Kalman smoother whose observation-error scale
    # is 4 times too small (p about 4e-4 at 40 replications).
    quick = {"pf": {"members": 300}, "svi": {"window": 50, "elbo_particles": 4, "importance": 5}}
    for route, options in ROUTES.items():
        ranks = sbc_ranks(route, 12 if route == "svi" else 40, seed=2, **{**options, **quick.get(route, {})})
        pooled = np.concatenate(list(ranks.values()))
        assert uniformity_pvalue(pooled, 4 if route == "svi" else 10) > 0.001, route
    overconfident = sbc_ranks("kalman", 40, seed=2, model=_model(obs_factor=0.25))["states"]
    assert uniformity_pvalue(overconfident, 10) < 0.001
