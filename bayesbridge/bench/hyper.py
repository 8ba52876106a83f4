"""Benchmark row: NUTS over the error scales, compiled potential against the Pyro-trace route.

Problem (issue 14). The posterior of the observation-error scales ``s (m,)`` and the model-error
scale ``sigma`` of a linear-Gaussian model, latent 6, 2 observables, 200 steps, with the
latent chain integrated out exactly; one NUTS chain of 300 warm-up and 300 draws (quick: 100
steps, 100 + 100; tiny: 50 steps, 30 + 30), the same seed on both sides.

* **Ours**: :func:`bayesbridge.infer.hyper.infer_hyperparameters` with ``engine="compiled"``:
  Pyro's NUTS on a ``potential_fn``
  (:class:`~bayesbridge.infer.scale_posterior.ScalePosterior`) whose likelihood and gradient come
  from one compiled Kalman pass with forward sensitivities
  (:class:`~bayesbridge.infer.scale_likelihood.ScaleLikelihood`).
* **Peer**: the same function with ``engine="pyro"``, the route it replaces: NUTS on the Pyro
  program, traced at every gradient, with the latent chain marginalised by
  :class:`pyro.distributions.GaussianHMM` and differentiated by autograd.

Extra figures: the time of one gradient evaluation of the potential on each side
(``gradient_s``, ``pyro_gradient_s``), the same for the bridge's own state-space model (EOF
codec, latent 20, ``nino3``/``nino4``/``h_w``, 480 months; tiny: 120; ``bridge_gradient_s`` with
a stationary linear inverse model, ``bridge_seasonal_gradient_s`` with the default seasonal one),
the posterior means of both runs (they target the same posterior and must agree to
Monte-Carlo error), and variational inference on the same problem:
``assimilate(model, y, "svi")`` with its defaults (exact marginalisation, compiled likelihood,
convergence test; ``svi_s``, ``svi_steps``) against the route it replaced, Pyro's ``SVI`` with an
``AutoNormal`` guide on the GaussianHMM program for 1,500 steps (150 in quick and tiny mode;
``pyro_svi_s``).
"""

from __future__ import annotations

import numpy as np
import torch

from bayesbridge.bench.core import BenchRow, measure, measure_pair
from bayesbridge.bench.enkf import _single_thread

__all__ = ["run", "scale_problem", "gradient_time"]

_KEY = "nuts_scales_vs_pyro_trace"


def scale_problem(d: int = 6, m: int = 2, T: int = 200, seed: int = 4):
    """The issue's scale-posterior problem: ``(StateSpaceModel, y (T, m))``.

    ``d`` latent components, ``m`` observables, ``T`` steps, ``seed`` for the matrices and the
    simulation. A stable random linear-Gaussian truth with model error ``1.5^2 Q`` and observation-error
    scales 0.3, 0.6, ...; the model gets ``L = chol Q`` and nominal scales 0.5 and 1 (the
    centres of its log-normal priors).
    """
    from bayesbridge.model import LinearGaussianModel, LinearTransition, StateSpaceModel

    rng = np.random.default_rng(seed)
    A = 0.9 * np.linalg.qr(rng.normal(size=(d, d)))[0]
    B = rng.normal(size=(d, d)) * 0.3
    Q = B @ B.T / d + 0.1 * np.eye(d)
    H = rng.normal(size=(m, d)) / np.sqrt(d)
    obs = 0.3 * np.arange(1, m + 1)
    truth = LinearGaussianModel(A, 1.5**2 * Q, H, np.diag(obs**2), np.zeros(d), np.eye(d))
    _, y = truth.simulate(T, generator=torch.Generator().manual_seed(seed))
    return StateSpaceModel(LinearTransition(A, np.linalg.cholesky(Q)), H, 0.5), y


def gradient_time(model, y, engine: str, repeats: int = 50) -> float:
    """Median seconds of one potential-and-gradient evaluation at the prior medians.

    ``model`` an affine state-space model, ``y (T, m)`` its observations, ``repeats`` timed
    evaluations. ``engine="compiled"``: :meth:`ScalePosterior.potential`; ``"pyro"``: the potential Pyro's
    NUTS builds from the program (:func:`pyro.infer.mcmc.util.initialize_model`).
    """
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    from bayesbridge.infer.scale_posterior import ScalePosterior
    from bayesbridge.model.pyro_program import isolated_pyro, state_space_program
    from bayesbridge.model.state_space import as_state_space_model

    ssm = as_state_space_model(model)
    y = torch.as_tensor(y, dtype=torch.float64)
    post = ScalePosterior(ssm, y)
    params = post.unconstrain({"obs_scale": ssm.obs_scale, "model_error_scale": torch.tensor(ssm.model_error_scale,
                                                                                              dtype=torch.float64)})
    if engine == "compiled":
        fn = post.potential
    else:
        with isolated_pyro(torch.Generator().manual_seed(0)):
            _, fn, _, _ = initialize_model(lambda obs: state_space_program(ssm, obs), model_args=(y,))
    timing = measure(lambda: potential_grad(fn, params), repeats=repeats, warmup=2)
    return timing.median_s


def pyro_svi_time(model, y, steps: int) -> float:
    """Seconds of ``steps`` steps of Pyro's SVI (``AutoNormal``, ``Trace_ELBO``, ``ClippedAdam``) on the
    Pyro program of ``model`` with observations ``y (T, m)``: the variational route before issue 14."""
    import time

    import pyro.infer.autoguide as autoguide
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import ClippedAdam

    from bayesbridge.model.pyro_program import isolated_pyro, state_space_program

    def program(obs):
        return state_space_program(model, obs)

    with isolated_pyro(torch.Generator().manual_seed(0)):
        guide = autoguide.AutoNormal(program, init_loc_fn=autoguide.init_to_median, init_scale=0.05)
        svi = SVI(program, guide, ClippedAdam({"lr": 0.03, "clip_norm": 10.0}), Trace_ELBO())
        t0 = time.perf_counter()
        for _ in range(steps):
            svi.step(y)
        return time.perf_counter() - t0


def seasonal_bridge_problem(years: int, latent_dim: int = 20, seed: int = 0):
    """The bridge's default state-space model (EOF codec, seasonal linear inverse model: ``A_t`` of
    period 12) fitted on ``years`` of the synthetic operational run, with its own ``nino3``,
    ``nino4``, ``h_w`` indices as observations: ``(StateSpaceModel, y (12 years, 3))``."""
    from bayesbridge import io, regions
    from bayesbridge.bridge import Bridge, BridgeConfig
    from bayesbridge.datasets.twin import synthetic_operational

    fields = io.open_operational(synthetic_operational(years, seed), region=None).load()
    bridge = Bridge(BridgeConfig(latent_dim=latent_dim, dynamics="seasonal", method="enks",
                                 representation_error=False)).fit(fields, seed=seed)
    names = ("nino3", "nino4", "h_w")
    idx = regions.indices(fields, names)
    y = np.stack([np.asarray(idx[n].values, float) for n in names], axis=-1)
    return bridge.state_space_model(names, int(fields["time"].dt.month.values[0])), y


def run(quick: bool = False, tiny: bool = False) -> list[BenchRow]:
    """The NUTS-over-scales row (key ``nuts_scales_vs_pyro_trace``); see the module docstring.

    ``quick`` and ``tiny`` shorten the series and the chain (tiny: for tests).
    """
    from bayesbridge.bench.latent import latent_problem
    from bayesbridge.infer.hyper import infer_hyperparameters

    T, iters, years = (50, 30, 10) if tiny else (100, 100, 20) if quick else (200, 300, 40)
    model, y = scale_problem(T=T)
    kw = {"num_samples": iters, "warmup": iters, "chains": 1, "seed": 1}
    out = {}

    def side(engine):
        def call():
            out[engine] = infer_hyperparameters(model, y, engine=engine, **kw)
        return call

    with _single_thread():
        for engine in ("compiled", "pyro"):  # compile, import and trace once, on a short run
            infer_hyperparameters(model, y[:20], engine=engine, num_samples=5, warmup=5, chains=1, seed=0)
        ours, peer = measure_pair(side("compiled"), side("pyro"), repeats=1, warmup=0)
        grad = gradient_time(model, y, "compiled")
        pyro_grad = gradient_time(model, y, "pyro", repeats=5 if tiny else 20)
        bridge = latent_problem(years)
        n_months = 12 * years
        bridge_grad = gradient_time(bridge.model, bridge.y[:n_months], "compiled")
        seasonal_model, seasonal_y = seasonal_bridge_problem(max(years, 30))
        seasonal_grad = gradient_time(seasonal_model, seasonal_y, "compiled", repeats=10)
        from bayesbridge.infer import assimilate

        svi = measure(lambda: out.__setitem__("svi", assimilate(model, y, "svi", seed=1)), repeats=1)
        pyro_svi = pyro_svi_time(model, y, 150 if quick or tiny else 1500)
    extra = {"gradient_s": grad, "pyro_gradient_s": pyro_grad, "bridge_gradient_s": bridge_grad,
             "bridge_months": float(n_months), "bridge_latent_dim": float(bridge.model.latent_dim),
             "bridge_seasonal_gradient_s": seasonal_grad, "svi_s": svi.median_s, "svi_steps": float(out.pop("svi").fit.steps), "pyro_svi_s": pyro_svi}
    for engine, post in out.items():
        for name, value in post.mean().items():
            for k, v in enumerate(np.atleast_1d(value.numpy())):
                extra[f"{engine}_mean_{name}_{k}"] = float(v)
    return [BenchRow(
        name="NUTS over error scales",
        problem=f"linear-Gaussian latent 6, 2 observables, {T} steps, 1 chain x ({iters} warm-up + {iters} draws)",
        ours=ours,
        peer_name="same NUTS on the Pyro program (GaussianHMM, autograd)",
        peer=peer,
        key=_KEY,
        note="ours = infer_hyperparameters(engine='compiled'): potential_fn with the compiled Kalman likelihood "
             "and its forward-sensitivity gradient; bridge_gradient_s: one gradient on the bridge's EOF + LIM model",
        extra=extra,
    )]
