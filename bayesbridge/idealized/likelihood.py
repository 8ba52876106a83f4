"""The emulated Gaussian synthetic likelihood of the idealized model's calibration, and its sampler.

Observed summary statistics ``s_obs`` (:mod:`~bayesbridge.idealized.statistics`, on the model
scale) are modelled with a Gaussian synthetic likelihood (Wood 2010; Price et al. 2018)

.. math::

    s_{obs} \\mid \\theta \\sim \\mathcal N\\big(\\mu(\\theta),\\; (1 + 1/R) D(\\theta) C D(\\theta) + E\\big),

where ``mu`` and the standard deviations ``D = diag(d(theta))`` of the statistics of one record
of the observed length are estimated by simulation (:func:`fit_emulator`): at ``design_points``
parameter values (a Latin hypercube design over the prior box) ``replicates`` records are
simulated with common random numbers (the same seed at every design point, so the estimates are
smooth in theta), ``mu`` and ``log d`` are fitted by quadratic regression in theta (the
:class:`Emulator`), ``C`` is the pooled correlation of the replicate residuals, ``E`` the
emulator's lack-of-fit variance and ``1/R`` (R = replicates) accounts for the Monte Carlo error
of the estimated mean. :func:`log_likelihood` evaluates it; :func:`pyro_model` is the same
density with uniform priors as a Pyro program; :func:`adaptive_metropolis` samples the
posterior gradient-free in logit coordinates of the prior box.

References: Wood (2010), Nature 466:1102-1104; Price, Drovandi, Lee & Nott (2018), J. Comput.
Graph. Stat. 27:1-11; Haario, Saksman & Tamminen (2001), Bernoulli 7:223-242.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import qmc

from bayesbridge.idealized.params import ENSOParameters
from bayesbridge.idealized.statistics import ObservedRecord, simulate_statistics, to_model_scale

__all__ = [
    "Emulator",
    "n_features",
    "quadratic_features",
    "fit_emulator",
    "log_likelihood",
    "pyro_model",
    "adaptive_metropolis",
]


def n_features(p: int) -> int:
    """Number of quadratic features of ``p`` parameters: :math:`1 + p + p(p+1)/2`.

    Parameters
    ----------
    p : int
        Number of calibrated parameters.

    Returns
    -------
    int
        Columns of :func:`quadratic_features` (the emulator's regression design).
    """
    return 1 + p + p * (p + 1) // 2


def quadratic_features(z: np.ndarray) -> np.ndarray:
    """Quadratic features of normalised parameters, ``(n, p) -> (n, 1 + p + p(p+1)/2)``.

    Columns ``1, z_1 .. z_p, z_i z_j (i <= j)`` in row-major order of ``(i, j)``.

    Parameters
    ----------
    z : ndarray, shape ``(n, p)``
        Parameters normalised to [-1, 1] (:meth:`Emulator.normalise`).

    Returns
    -------
    ndarray, shape ``(n, n_features(p))``
    """
    cols = [np.ones(len(z))] + [z[:, i] for i in range(z.shape[1])]
    for i in range(z.shape[1]):
        for j in range(i, z.shape[1]):
            cols.append(z[:, i] * z[:, j])
    return np.stack(cols, axis=-1)


@dataclass(frozen=True)
class Emulator:
    """Quadratic emulator of the statistics' mean and log std; pooled residual correlation.

    ``coef_mean``, ``coef_logsd``: ``(n_feature, n_stat)``; ``corr``: ``(n_stat, n_stat)``;
    ``lack_of_fit``: ``(n_stat,)`` variance; ``low``, ``high``: ``(n_param,)`` prior box;
    ``inflation``: the factor :math:`1 + 1/R` of :math:`D C D` in the likelihood covariance
    (R = replicates per design point). Features are ``1, z_i, z_i z_j (i <= j)`` of the
    normalised parameters ``z`` (:meth:`normalise`).
    """

    coef_mean: np.ndarray
    coef_logsd: np.ndarray
    corr: np.ndarray
    lack_of_fit: np.ndarray
    low: np.ndarray
    high: np.ndarray
    inflation: float = 1.0

    def normalise(self, theta: np.ndarray) -> np.ndarray:
        """Map parameters from the prior box to [-1, 1]: ``z = 2 (theta - low)/(high - low) - 1``.

        Parameters
        ----------
        theta : ndarray, shape ``(..., n_param)``
            Parameter values in the order of the calibrated parameters.

        Returns
        -------
        ndarray, shape ``(..., n_param)``
        """
        return 2.0 * (np.asarray(theta) - self.low) / (self.high - self.low) - 1.0


def fit_emulator(
    obs: ObservedRecord,
    parameters: tuple[str, ...],
    priors: Mapping[str, tuple[float, float]],
    *,
    design_points: int,
    replicates: int,
    burn_in_years: int,
    seed: int,
    progress: bool = False,
) -> Emulator:
    """Fit the :class:`Emulator` by simulation over a Latin hypercube design of the prior box.

    At each of ``design_points`` parameter values (Latin hypercube seeded with
    ``default_rng(seed)``) ``replicates`` records of ``obs``'s lengths are simulated with the same
    seed ``seed + 1`` (common random numbers). Their model-scale statistics give a mean
    :math:`\\mu_i` and standard deviation :math:`d_i` per design point; ``coef_mean`` and
    ``coef_logsd`` are the least-squares quadratic fits of :math:`\\mu` and :math:`\\log d`,
    ``lack_of_fit`` the residual variance of the mean fit (divided by its degrees of freedom),
    ``corr`` the pooled correlation of the standardised replicate residuals shrunk as
    :math:`0.9 C + 0.1 I`, and ``inflation`` :math:`1 + 1/R` with :math:`R` = ``replicates``.

    Parameters
    ----------
    obs : ObservedRecord
        Observed statistics (their names fix the statistics) and record lengths.
    parameters : tuple of str
        Calibrated fields of :class:`ENSOParameters`, in emulator order.
    priors : mapping of str to (float, float)
        ``name -> (low, high)`` uniform prior bounds of every calibrated parameter.
    design_points : int
        Number of design points (more than :func:`n_features` of ``len(parameters)``).
    replicates : int
        Records simulated per design point (R).
    burn_in_years : int
        Spin-up per record.
    seed : int
        Seed of the design (``seed``) and of the simulations (``seed + 1``).
    progress : bool
        Show a progress bar over the design points.

    Returns
    -------
    Emulator
    """
    names = list(obs.statistics.index)
    low = np.array([priors[p][0] for p in parameters])
    high = np.array([priors[p][1] for p in parameters])
    design = qmc.LatinHypercube(d=len(low), seed=np.random.default_rng(seed)).random(design_points)
    thetas = low + design * (high - low)
    means, logsds, resid = [], [], []
    iterator = range(len(thetas))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="synthetic likelihood design", unit="point")
    for i in iterator:
        params = ENSOParameters().replace(**dict(zip(parameters, thetas[i], strict=True)))
        s = to_model_scale(
            simulate_statistics(params, replicates, obs.years, obs.hw_years, seed + 1, burn_in_years),
            names,
        )  # common random numbers: the same seed at every design point
        mu = s.mean(0)
        sd = s.std(0, ddof=1) + 1e-9
        means.append(mu)
        logsds.append(np.log(sd))
        resid.append((s - mu) / sd)
    means, logsds = np.array(means), np.array(logsds)
    x = quadratic_features(2.0 * design - 1.0)
    coef_mean, *_ = np.linalg.lstsq(x, means, rcond=None)
    coef_logsd, *_ = np.linalg.lstsq(x, logsds, rcond=None)
    dof = max(len(thetas) - x.shape[1], 1)
    lack = ((means - x @ coef_mean) ** 2).sum(0) / dof
    r = np.concatenate(resid)
    corr = np.corrcoef(r, rowvar=False)
    corr = 0.9 * corr + 0.1 * np.eye(len(names))  # shrinkage keeps C well conditioned
    # 1 + 1/R: the Monte Carlo error of the estimated mean, common to all design points under
    # common random numbers, adds Sigma/R to the variance of s_obs - mu(theta)
    return Emulator(coef_mean, coef_logsd, corr, lack, low, high, 1.0 + 1.0 / replicates)


def log_likelihood(emu: Emulator, theta: np.ndarray, s_obs: np.ndarray) -> float:
    """Gaussian synthetic log-likelihood of ``s_obs`` (model scale) at ``theta``.

    :math:`\\log \\mathcal N(s_{obs};\\, \\mu(\\theta),\\, (1 + 1/R) D C D + E)` with
    :math:`\\mu = \\phi^\\top B_\\mu`, :math:`D = \\mathrm{diag}(\\exp(\\phi^\\top B_{\\log d}))`,
    :math:`\\phi` the quadratic features of the normalised ``theta``.

    Parameters
    ----------
    emu : Emulator
        Fitted emulator.
    theta : ndarray, shape ``(n_param,)``
        Parameter values in the emulator's order.
    s_obs : ndarray, shape ``(n_stat,)``
        Observed statistics on the model scale.

    Returns
    -------
    float
        The log density; ``-inf`` when the covariance is not positive definite.
    """
    phi = quadratic_features(emu.normalise(theta)[None])[0]
    mu = phi @ emu.coef_mean
    sd = np.exp(phi @ emu.coef_logsd)
    cov = emu.inflation * sd[:, None] * emu.corr * sd[None, :] + np.diag(emu.lack_of_fit)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return -np.inf
    r = np.linalg.solve(chol, s_obs - mu)
    return float(-0.5 * r @ r - np.log(np.diag(chol)).sum() - 0.5 * len(r) * math.log(2 * math.pi))


def pyro_model(emu: Emulator, s_obs: np.ndarray, parameters: tuple[str, ...]):
    """The calibration as a Pyro program (uniform priors, emulated synthetic likelihood).

    Returns a callable model for Pyro inference (``pyro.infer.NUTS(model)`` etc.); its log
    density equals the target of :func:`adaptive_metropolis` (and of
    :func:`~bayesbridge.idealized.calibrate.calibrate`). ``s_obs``: shape ``(n_stat,)`` on the
    model scale (log for scale statistics).

    Parameters
    ----------
    emu : Emulator
        Fitted emulator (prior box, mean and log-std coefficients, correlation, lack of fit).
    s_obs : ndarray, shape ``(n_stat,)``
        Observed statistics on the model scale (log scales and kurtosis, atanh correlation,
        square-root event rates).
    parameters : tuple of str
        Names of the calibrated parameters, in the emulator's order; each becomes a
        ``pyro.sample`` site with a ``Uniform(low, high)`` prior.

    Returns
    -------
    callable
        A model without arguments; the statistics are the observed site ``"statistics"``
        (multivariate normal, covariance ``inflation D C D + diag(lack_of_fit)``).
    """
    import pyro
    import pyro.distributions as dist
    import torch

    dtype = torch.float64
    low = torch.as_tensor(emu.low, dtype=dtype)
    high = torch.as_tensor(emu.high, dtype=dtype)
    cm = torch.as_tensor(emu.coef_mean, dtype=dtype)
    cs = torch.as_tensor(emu.coef_logsd, dtype=dtype)
    corr = torch.as_tensor(emu.corr, dtype=dtype)
    lack = torch.as_tensor(emu.lack_of_fit, dtype=dtype)
    y = torch.as_tensor(s_obs, dtype=dtype)
    p = len(parameters)

    def model() -> None:
        theta = torch.stack(
            [pyro.sample(name, dist.Uniform(low[i], high[i])) for i, name in enumerate(parameters)]
        )
        z = 2.0 * (theta - low) / (high - low) - 1.0
        cols = [torch.ones((), dtype=dtype)] + [z[i] for i in range(p)]
        cols += [z[i] * z[j] for i in range(p) for j in range(i, p)]
        phi = torch.stack(cols)
        sd = torch.exp(phi @ cs)
        cov = emu.inflation * sd[:, None] * corr * sd[None, :] + torch.diag(lack)
        pyro.sample("statistics", dist.MultivariateNormal(phi @ cm, covariance_matrix=cov), obs=y)

    return model


def adaptive_metropolis(
    emu: Emulator,
    s_obs: np.ndarray,
    *,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    seed: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive random-walk Metropolis (Haario et al. 2001) in logit coordinates of the prior box.

    Gradient-free and cheap (one 21 x 21 Cholesky per step). The proposal covariance is
    ``2.38^2 / d`` times the warmup sample covariance (updated every 100 warmup steps) and fixed
    while sampling, so the sampling phase is a valid Metropolis chain. Chains start at
    independent standard-normal draws in logit coordinates. The target is
    :func:`log_likelihood` plus the log Jacobian :math:`\\sum \\log u (1 - u)` of the uniform
    prior, :math:`\\theta = low + u (high - low)`, :math:`u = \\sigma(x)`.

    Parameters
    ----------
    emu : Emulator
        Fitted emulator (its prior box bounds the parameters).
    s_obs : ndarray, shape ``(n_stat,)``
        Observed statistics on the model scale.
    num_warmup, num_samples, num_chains : int
        Steps per chain that adapt the proposal (discarded), steps kept, and chains.
    seed : int
        Seed of the sampler (``SeedSequence([seed, 7919])``).
    progress : bool
        Show a progress bar over all steps.

    Returns
    -------
    theta : ndarray, shape ``(chain, draw, n_param)``
        Posterior draws of the parameters.
    accept : ndarray, shape ``(chain,)``
        Acceptance rates of the sampling phase.
    """
    d = len(emu.low)
    width = emu.high - emu.low

    def log_target(x: np.ndarray) -> float:
        u = 1.0 / (1.0 + np.exp(-x))
        theta = emu.low + u * width
        # uniform prior on theta -> density of x: prod u (1 - u) (Jacobian)
        return log_likelihood(emu, theta, s_obs) + float(np.sum(np.log(u) + np.log1p(-u)))

    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    draws = np.empty((num_chains, num_samples, d))
    accept = np.empty(num_chains)
    total = num_chains * (num_warmup + num_samples)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="adaptive Metropolis", unit="step")
    for c in range(num_chains):
        x = rng.normal(0.0, 1.0, d)
        lp = log_target(x)
        prop_chol = 0.3 * np.eye(d)
        history = []
        n_acc = 0
        for it in range(num_warmup + num_samples):
            y = x + prop_chol @ rng.standard_normal(d)
            lpy = log_target(y)
            sampling = it >= num_warmup
            if np.log(rng.uniform()) < lpy - lp:
                x, lp = y, lpy
                n_acc += sampling
            if sampling:
                draws[c, it - num_warmup] = x
            else:
                history.append(x)
                if (it + 1) % 100 == 0 and len(history) > 2 * d:
                    cov = np.cov(np.array(history[len(history) // 2 :]), rowvar=False)
                    prop_chol = np.linalg.cholesky((2.38**2 / d) * cov + 1e-8 * np.eye(d))
            if bar is not None:
                bar.update()
        accept[c] = n_acc / max(num_samples, 1)
    if bar is not None:
        bar.close()
    theta = emu.low + width / (1.0 + np.exp(-draws))
    return theta, accept
