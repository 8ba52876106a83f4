"""The bridge as one generative model: a Pyro program from the idealized parameters to the data.

:class:`BridgeModel` writes down, as one Pyro program, what every route of the package assumes
(``docs/design.md`` section 5):

.. code-block:: text

    theta ~ p(theta)                         idealized parameters: the bundled calibration
                                             posterior (Empirical) or the prior box (Uniform)
    y     ~ MultiscaleENSO(theta)            the idealized run: its sparse output (nino3, nino4,
                                             h_w) on T months              site "idealized_run"
    s_k   ~ p(s_k),  sigma ~ p(sigma)        observation-error scales per observable (floored
                                             at the representation error) and the model-error
                                             scale                 sites "obs_scale", "model_error_scale"
    z_0   ~ N(m_0, P_0)
    z_t   ~ N(f_t(z_{t-1}), sigma^2 Q_t)     the operational model's latent dynamics
    y_t   | z_t ~ N(h(z_t), diag(s^2))       the run read as observations of the latent state
                                             (site "y", or "z_t" / "y_t" when h or f is not affine)
    x_t   = decode(z_t) + r_t                the field, with representation error r_t (the
                                             Posterior's layer, :mod:`bayesbridge.bridge.posterior`)

It is a *cut* model (modular Bayes; Plummer 2015, *Stat. Comput.* 25, 37-43): the idealized run
is the data of the bridge and is not explained by the operational latent state, so ``theta`` is
learnt from observed ENSO statistics only (``bayesbridge idealized calibrate``) and the bridge's
posterior is the mixture :math:`\\int p(z, s, \\sigma \\mid y)\\, p(y \\mid \\theta)\\, p(\\theta)`.
Every engine is an approximation of the conditional part for a given run: the exact Kalman
smoother and NUTS/SVI over the scales on its exact marginal, the ensemble Kalman smoother, the
particle smoother and the structured variational guides; parameter propagation
(:func:`bayesbridge.apps.propagate.propagate_parameter_uncertainty`) samples the outer part.
Called with data, the program is the conditional part alone (its log density is the exact
marginal likelihood for affine bridges; tested against the Kalman filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from bayesbridge.errors import ParameterError, check_choice, check_int

__all__ = ["BridgeModel", "IdealizedRun", "THETA_PRIORS"]

ThetaPrior = Literal["posterior", "prior"]
THETA_PRIORS: tuple[str, ...] = get_args(ThetaPrior)
"""Priors of the idealized parameters: the bundled calibration posterior or the uniform box."""

_SIMULATED = ("nino3", "nino4", "h_w")


class IdealizedRun(dist.TorchDistribution):
    """One run of the multiscale ENSO model at parameters ``theta``: ``(T, m)`` monthly indices.

    A simulator, not a density: :meth:`sample` runs
    :meth:`bayesbridge.idealized.MultiscaleENSO.simulate` with a seed drawn from torch's generator
    (so Pyro's seeding governs it); :meth:`log_prob` is not available (condition on the run, not
    through it).

    Parameters
    ----------
    theta : Tensor (p,)
        Values of ``names`` (fields of :class:`~bayesbridge.idealized.ENSOParameters`).
    names : tuple of str
        Parameter names, in the order of ``theta``.
    observables : tuple of str
        Simulated indices returned, from ``nino3``, ``nino4``, ``h_w``.
    n_steps : int
        Months ``T`` (whole years are simulated and cut).
    start_month : int
        Calendar month of the first step.
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, theta, names: Sequence[str], observables: Sequence[str], n_steps: int, start_month: int = 1,
                 burn_in_years: int = 10) -> None:
        self.theta = torch.as_tensor(theta, dtype=torch.float64)
        self.names, self.observables = tuple(names), tuple(observables)
        self.n_steps, self.start_month, self.burn_in_years = int(n_steps), int(start_month), int(burn_in_years)
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size((self.n_steps, len(self.observables))),
                         validate_args=False)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Simulated indices ``(*sample_shape, T, m)`` float64."""
        from bayesbridge.idealized import ENSOParameters, MultiscaleENSO

        params = ENSOParameters().replace(**dict(zip(self.names, self.theta.tolist(), strict=True)))
        sample_shape = torch.Size(sample_shape)
        n = int(np.prod(sample_shape)) if len(sample_shape) else 1
        seed = int(torch.randint(0, 2**31 - 1, ()))
        years = (self.start_month - 1 + self.n_steps + 11) // 12
        sim = MultiscaleENSO(params).simulate(years, members=n, seed=seed, burn_in_years=self.burn_in_years)
        first = self.start_month - 1
        values = np.stack([sim[v].values[:, first: first + self.n_steps] for v in self.observables], axis=-1)
        return torch.as_tensor(values, dtype=torch.float64).reshape(*sample_shape, *self.event_shape)

    def log_prob(self, value):
        raise NotImplementedError(
            "IdealizedRun has no tractable density: the idealized model is the data's generator in a cut "
            "model; condition the bridge on a run (BridgeModel(observations=...)) instead."
        )


@dataclass
class BridgeModel:
    """The bridge's generative model as a Pyro program (see the module docstring).

    Attributes
    ----------
    bridge : Bridge
        A fitted :class:`~bayesbridge.bridge.Bridge`.
    observables : tuple of str
        What the idealized run gives and the bridge assimilates (default ``nino3, nino4, h_w``).
    n_steps : int
        Months ``T``.
    start_month : int
        Calendar month of the first step (the seasonal dynamics depend on it).
    theta_prior : {"posterior", "prior"}
        The bundled calibration posterior (default) or the calibration's uniform prior box.
    """

    bridge: object
    observables: tuple[str, ...] = _SIMULATED
    n_steps: int = 120
    start_month: int = 1
    theta_prior: str = "posterior"

    def __post_init__(self) -> None:
        self.observables = tuple(self.observables)
        bad = [v for v in self.observables if v not in _SIMULATED]
        if bad or not self.observables:
            raise ParameterError(
                f"observables: expected a non-empty selection of {', '.join(_SIMULATED)} (what the idealized "
                f"model simulates), got {list(self.observables)}."
            )
        check_int(self.n_steps, "n_steps", minimum=1)
        if check_int(self.start_month, "start_month", minimum=1) > 12:
            raise ParameterError(f"start_month: expected a calendar month 1..12, got {self.start_month!r}.")
        check_choice(self.theta_prior, "theta_prior", THETA_PRIORS)
        self.state_space = self.bridge.state_space_model(list(self.observables), self.start_month)

    def theta_distribution(self) -> tuple[dist.Distribution, tuple[str, ...]]:
        """The prior of the idealized parameters and their names."""
        if self.theta_prior == "posterior":
            from bayesbridge.idealized.calibrated import calibration_posterior

            draws = calibration_posterior().draws
            values = torch.tensor(draws.to_numpy(), dtype=torch.float64)
            return dist.Empirical(values, torch.zeros(values.shape[0], dtype=torch.float64)), tuple(draws.columns)
        from bayesbridge.idealized.calibrate import CalibrationConfig

        priors = CalibrationConfig().priors
        lo = torch.tensor([b[0] for b in priors.values()], dtype=torch.float64)
        hi = torch.tensor([b[1] for b in priors.values()], dtype=torch.float64)
        return dist.Uniform(lo, hi).to_event(1), tuple(priors)

    def __call__(self, observations=None) -> None:
        """The Pyro program.

        Parameters
        ----------
        observations : array (T, m), optional
            A run to condition on (NaN = missing): then only the bridge's conditional part runs.
            ``None`` samples ``theta`` and the idealized run first (prior predictive).
        """
        if observations is None:
            prior, names = self.theta_distribution()
            theta = pyro.sample("theta", prior)
            observations = pyro.sample(
                "idealized_run", IdealizedRun(theta, names, self.observables, self.n_steps, self.start_month))
        self.state_space.pyro_model(observations)

    def sites(self, seed: int = 0) -> pd.DataFrame:
        """The program's sample sites from one prior-predictive trace: ``distribution``,
        ``shape`` and ``observed``, one row per site (a plate-diagram table)."""
        from bayesbridge.model.pyro_program import isolated_pyro

        with isolated_pyro(torch.Generator().manual_seed(int(seed))):
            trace = pyro.poutine.trace(self).get_trace()
        rows = {name: {"distribution": type(site["fn"]).__name__, "shape": tuple(site["value"].shape),
                       "observed": bool(site["is_observed"])}
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and not isinstance(site["fn"], dist.Unit)}  # not pyro.factor
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "site"
        return frame
