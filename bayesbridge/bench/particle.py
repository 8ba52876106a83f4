"""Benchmark rows: our particle filter against Pyro's ``SMCFilter``, per assimilation step.

Both run a bootstrap particle filter with systematic-or-multinomial resampling at ESS < N/2 on
the same linear-Gaussian problem (latent 8, 3 observables; :func:`bayesbridge.bench.enkf.linear_problem`)
and the same observations. Pyro's ``SMCFilter`` gets a model/guide pair whose ``step`` samples
``z_t ~ N(A z_{t-1}, Q)`` and observes ``y_t ~ N(H z_t, R)`` vectorised over a particle plate
(its intended, fastest use), with Cholesky factors computed once (``scale_tril``) and Pyro's
argument validation off (with it on, every step checks the covariance broadcast over the
particle plate for positive definiteness, which makes ``SMCFilter`` 4-7 times slower). Like
``SMCFilter``, which keeps only the current particles, ours runs with ``smoother="none"`` and
``store_ensemble=False`` (it still returns filtered means, covariances, ESS and innovations).
Rows at 1,000 particles (key ``pf_vs_smcfilter``) and 10,000 particles; times are per step,
one intra-op thread.
"""

from __future__ import annotations

import torch

from bayesbridge.bench.core import BenchRow, measure_pair
from bayesbridge.bench.enkf import _per_cycle, _single_thread, linear_problem

__all__ = ["run"]


class _SMCModel:
    """Linear-Gaussian model in ``SMCFilter``'s ``init``/``step`` form (also its bootstrap guide)."""

    def __init__(self, model) -> None:
        self.model = model
        # Cholesky factors once, not per step (MultivariateNormal(..., scale_tril=...))
        self.L0, self.LQ, self.LR = (torch.linalg.cholesky(c) for c in (model.P0, model.Q, model.R))

    def init(self, state, initial=None):
        import pyro
        import pyro.distributions as dist

        self.t = 0
        state["z"] = pyro.sample("z_init", dist.MultivariateNormal(self.model.m0, scale_tril=self.L0))

    def step(self, state, y=None):
        import pyro
        import pyro.distributions as dist

        self.t += 1
        mean = state["z"] @ self.model.A.mT
        state["z"] = pyro.sample(f"z_{self.t}", dist.MultivariateNormal(mean, scale_tril=self.LQ))
        if y is not None:
            pyro.sample(f"y_{self.t}", dist.MultivariateNormal(state["z"] @ self.model.H.mT, scale_tril=self.LR), obs=y)


class _SMCGuide(_SMCModel):
    def init(self, state, initial=None):
        import pyro
        import pyro.distributions as dist

        self.t = 0
        pyro.sample("z_init", dist.MultivariateNormal(self.model.m0, scale_tril=self.L0))

    def step(self, state, y=None):
        import pyro
        import pyro.distributions as dist

        self.t += 1
        pyro.sample(f"z_{self.t}", dist.MultivariateNormal(state["z"] @ self.model.A.mT, scale_tril=self.LQ))


def _smc_filter_run(model, y: torch.Tensor, particles: int, seed: int) -> None:
    import pyro
    from pyro.infer import SMCFilter

    from bayesbridge.model.pyro_program import isolated_pyro

    # argument validation off: with it, every step checks the covariance broadcast over the
    # particle plate for positive definiteness, which costs SMCFilter 4-7x (not its fast form)
    with isolated_pyro(torch.Generator().manual_seed(seed)), pyro.validation_enabled(False):
        smc = SMCFilter(_SMCModel(model), _SMCGuide(model), num_particles=particles, max_plate_nesting=0)
        smc.init()
        for t in range(y.shape[0]):
            smc.step(y[t])


def run(quick: bool = False) -> list[BenchRow]:
    """Rows at 1,000 (keyed ``pf_vs_smcfilter``) and 10,000 particles; time per step.

    Parameters
    ----------
    quick : bool
        Shorter series (ours 100 steps, SMCFilter 30, one timed peer run) instead of 300 / 100.

    Returns
    -------
    list of BenchRow
    """
    from bayesbridge.infer import assimilate

    d, m = 8, 3
    T_ours, T_peer = (100, 30) if quick else (300, 100)
    model, _, y = linear_problem(d, m, T_ours, seed=0)
    rows = []
    with _single_thread():
        for n in (1_000, 10_000):
            ours, peer = measure_pair(
                lambda n=n: assimilate(model, y, "pf", members=n, seed=0, smoother="none", store_ensemble=False,
                                             proposal="bootstrap", warn_degeneracy=False),
                lambda n=n: _smc_filter_run(model, y[:T_peer], n, 0),
                repeats=2 if quick else 3,
            )
            rows.append(BenchRow(
                name=f"particle filter, {n} particles",
                problem=f"linear-Gaussian, latent {d}, {m} observables, bootstrap, ESS threshold 0.5",
                ours=_per_cycle(ours, T_ours),
                peer_name="pyro SMCFilter",
                peer=_per_cycle(peer, T_peer),
                key="pf_vs_smcfilter" if n == 1_000 else None,
                note=f"per step; ours over {T_ours} steps, SMCFilter over {T_peer}",
            ))
    return rows
