"""Benchmark row: latent-space assimilation against a full-space EnKF on the decoded fields.

Problem. The default grid of the twin experiment (21 x 81, 2 degrees, ``tos`` and ``zos``; about
3,200 ocean points in all), a synthetic operational run compressed by an EOF codec (``d`` = 20)
and a stationary linear inverse model :math:`z_t = A z_{t-1} + w_t`, :math:`w_t \\sim N(0, Q)`.
Observations: the monthly ``nino3``, ``nino4`` and ``h_w`` box averages (``h_w`` = 150 x the
``zos`` box mean), with the bridge's observation errors. Both sides run a stochastic
(perturbed-observation) EnKF with the same number of members and return the analysis-mean
fields at every step.

* **Ours** (:class:`bayesbridge.Bridge` state-space model): ``assimilate(model, y, "enkf")`` in
  the latent space, the observation operator decoding every member and box-averaging it
  (:class:`bayesbridge.model.BoxObservation`), then the analysis means decoded to fields.
* **Peer** (:func:`fullspace_enkf`, numpy): the textbook perturbed-observation EnKF (Burgers et
  al. 1998; Evensen 2003) on the full state :math:`x \\in \\mathbb R^P` (every ocean point of both
  fields). Its dynamics are the latent LIM carried to full space,

  .. math:: x_t - \\mu = M (x_{t-1} - \\mu) + D L e_t + \\rho \\odot \\eta_t, \\qquad
            M = D A D^{+}, \\quad Q = L L^\\top,

  with :math:`D` the EOF decoder (``P x d``), :math:`D^+` its pseudo-inverse, :math:`\\rho` the
  codec's per-point residual standard deviation (a diagonal nugget, so that the full-space model
  error is not confined to the EOF subspace) and :math:`e, \\eta` standard normal. ``M`` is a
  dense ``P x P`` matrix: the cheapest generic full-space linear model (a general circulation
  model costs far more per step); its propagation, ``N P^2`` flops per step, dominates the peer.
  The analysis uses the ensemble-anomaly form of the gain, :math:`K = A_f (H A_f)^\\top
  [(H A_f)(H A_f)^\\top + (N - 1) R]^{-1}` (``O(N P m)``; no ``P x P`` covariance is formed), with
  the box-averaging matrix ``H`` (``m x P``).

``extra["factored_peer_per_cycle_s"]`` times the same peer propagating with the factored
operator :math:`((x - \\mu) D^{+\\top}) A^\\top D^\\top` instead (``O(N P d)``): what is left of the
speed-up when the full-space dynamics happen to be low rank. ``extra["mean_field_rel_diff"]`` is
the RMS difference of the two analysis means relative to the RMS of the field (a consistency
check, since both filter the same model up to the nugget and sampling noise).
``extra["ratio_with_affine_observation"]`` is the ratio when our observation operator is the
equivalent affine map ``z @ (W H^T) + mu H^T`` (exact for the linear EOF decoder) instead of
decoding every member to all ``P`` points and averaging: the decode dominates our cycle.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np
import torch

from bayesbridge.bench.core import BenchRow, measure
from bayesbridge.bench.enkf import _per_cycle, _single_thread

__all__ = ["run", "LatentProblem", "latent_problem", "fullspace_enkf", "FullSpaceEnKFResult"]


@dataclass
class LatentProblem:
    """The fitted bridge pieces and observations shared by both sides of the row.

    Attributes
    ----------
    bridge : Bridge
        Fitted on the synthetic operational run (EOF codec, stationary LIM).
    y : numpy.ndarray
        ``(T, m)`` observations (``nino3``, ``nino4``, ``h_w``).
    names : tuple of str
        Observation names.
    model : StateSpaceModel
        The bridge's latent state-space model observing ``names``.
    """

    bridge: object
    y: np.ndarray
    names: tuple[str, ...]
    model: object

    @property
    def decoder(self) -> np.ndarray:
        """``(d, P)`` float64 matrix ``W`` with ``decode(z) = z @ W + mean``."""
        return self.bridge.codec.decoder_matrix.numpy()

    @property
    def mean(self) -> np.ndarray:
        """``(P,)`` training mean of the stacked fields."""
        return np.asarray(self.bridge.codec.stacker.mean, dtype=float)

    @property
    def obs_matrix(self) -> np.ndarray:
        """``(m, P)`` box-averaging matrix in observation units (``h_w`` scaled to thermocline metres)."""
        from bayesbridge.model import BoxObservation

        boxes = BoxObservation(self.bridge.codec, self.names)
        scale = np.array([self.bridge.config.region(n).scale for n in self.names])
        return boxes.weights.numpy() * scale[:, None]

    @property
    def obs_error(self) -> np.ndarray:
        """``(m,)`` observation-error standard deviations used by the bridge."""
        return self.model.obs_scale.numpy()

    @property
    def residual_std(self) -> np.ndarray:
        """``(P,)`` per-point standard deviation of the codec residual on the training data."""
        return self.bridge.residual_points.std(axis=0).astype(float)


@functools.lru_cache(maxsize=2)
def latent_problem(years: int = 40, latent_dim: int = 20, seed: int = 0) -> LatentProblem:
    """Fit the bridge (EOF + stationary LIM) on ``years`` of the synthetic operational model.

    The observations are the run's own box indices (any index series serves for timing).
    """
    from bayesbridge import io, regions
    from bayesbridge.bridge import Bridge, BridgeConfig
    from bayesbridge.datasets.twin import synthetic_operational

    fields = io.open_operational(synthetic_operational(years, seed), region=None).load()
    with _single_thread():
        bridge = Bridge(BridgeConfig(latent_dim=latent_dim, dynamics="linear", method="enkf",
                                     representation_error=False)).fit(fields, seed=seed)
    names = ("nino3", "nino4", "h_w")
    idx = regions.indices(fields, names)  # observation units: h_w in metres of thermocline
    y = np.stack([np.asarray(idx[n].values, float) for n in names], axis=-1)
    start = int(fields["time"].dt.month.values[0])
    return LatentProblem(bridge, y, names, bridge.state_space_model(names, start))


@dataclass
class FullSpaceEnKFResult:
    """Output of :func:`fullspace_enkf`.

    Attributes
    ----------
    analysis_mean : numpy.ndarray
        ``(T, P)`` float32 analysis-mean fields.
    """

    analysis_mean: np.ndarray


def fullspace_enkf(
    y: np.ndarray,
    transition: np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray],
    noise_factor: np.ndarray,
    nugget: np.ndarray,
    obs_matrix: np.ndarray,
    obs_error: np.ndarray,
    mean: np.ndarray,
    init_factor: np.ndarray,
    members: int,
    seed: int,
) -> FullSpaceEnKFResult:
    """Perturbed-observation EnKF on the full state (the peer of the latent row), in numpy.

    Parameters
    ----------
    y : numpy.ndarray
        ``(T, m)`` observations; NaN entries are skipped.
    transition : numpy.ndarray or (Dp, At, W)
        Row-form transition: ``(P, P)`` matrix ``Mr`` with ``x_t - mu = (x_{t-1} - mu) @ Mr``, or
        the factors ``(P, d)``, ``(d, d)``, ``(d, P)`` applied as ``((x - mu) @ Dp) @ At @ W``.
    noise_factor : numpy.ndarray
        ``(k, P)``: model noise ``e @ noise_factor`` with ``e ~ N(0, I_k)`` (``L^T W`` here).
    nugget : numpy.ndarray
        ``(P,)`` standard deviation of independent per-point model noise.
    obs_matrix : numpy.ndarray
        ``(m, P)`` linear observation operator ``H``.
    obs_error : numpy.ndarray
        ``(m,)`` observation-error standard deviations (``R = diag(obs_error^2)``).
    mean : numpy.ndarray
        ``(P,)`` climatological mean ``mu``.
    init_factor : numpy.ndarray
        ``(k0, P)``: initial ensemble ``mu + e @ init_factor``.
    members : int
        Ensemble size ``N``.
    seed : int
        Seed of the ``numpy.random.Generator``.

    Returns
    -------
    FullSpaceEnKFResult
    """
    rng = np.random.default_rng(seed)
    n_steps, n_obs = y.shape
    n_points = mean.size
    x = mean + rng.standard_normal((members, init_factor.shape[0])) @ init_factor  # (N, P)
    out = np.empty((n_steps, n_points), dtype=np.float32)
    for t in range(n_steps):
        anom = x - mean
        if isinstance(transition, tuple):
            dp, at, w = transition
            anom = ((anom @ dp) @ at) @ w
        else:
            anom = anom @ transition
        anom += rng.standard_normal((members, noise_factor.shape[0])) @ noise_factor
        anom += rng.standard_normal((members, n_points)) * nugget
        x = mean + anom
        ok = np.isfinite(y[t])
        if ok.any():
            h, r = obs_matrix[ok], obs_error[ok]
            hx = x @ h.T  # (N, m)
            xa = x - x.mean(axis=0)
            hxa = hx - hx.mean(axis=0)
            s = hxa.T @ hxa + (members - 1) * np.diag(r**2)
            perturbed = y[t, ok] + rng.standard_normal((members, ok.sum())) * r
            x = x + np.linalg.solve(s, (perturbed - hx).T).T @ (hxa.T @ xa)
        out[t] = x.mean(axis=0)
    return FullSpaceEnKFResult(out)


def _peer_operators(problem: LatentProblem) -> dict[str, np.ndarray]:
    dyn = problem.bridge.dynamics
    a = dyn.transition_matrix().numpy()
    q = dyn.noise_covariance().numpy()
    w = problem.decoder  # (d, P)
    dp = np.linalg.pinv(w)  # (P, d): z = (x - mu) @ dp
    chol_q = np.linalg.cholesky(q + 1e-12 * np.eye(q.shape[0]))
    q = q * problem.model.model_error_scale**2
    p0 = problem.model.P0.numpy()
    chol_p0 = np.linalg.cholesky(p0 + 1e-12 * np.eye(p0.shape[0]))
    return {
        "dense": dp @ a.T @ w,
        "factors": (dp, a.T.copy(), w),
        "noise_factor": chol_q.T @ w,
        "init_factor": chol_p0.T @ w,
    }


def run(quick: bool = False, tiny: bool = False) -> list[BenchRow]:
    """One row (key ``latent_vs_fullspace_enkf``), time per assimilation cycle.

    ``quick``: 20 years of training data, ours over 240 cycles, the dense peer over 12;
    full: 40 years, 480 and 48. ``tiny`` shrinks further (tests): 10 years, 60 and 4 cycles.
    """
    from bayesbridge.infer import assimilate

    members = 100
    years, t_ours, t_peer = (10, 60, 4) if tiny else (20, 240, 12) if quick else (40, 480, 48)
    repeats = 1 if (quick or tiny) else 3
    problem = latent_problem(years)
    y = problem.y[:t_ours]
    codec = problem.bridge.codec
    ops = _peer_operators(problem)
    peer_args = dict(noise_factor=ops["noise_factor"], nugget=problem.residual_std, obs_matrix=problem.obs_matrix,
                     obs_error=problem.obs_error, mean=problem.mean, init_factor=ops["init_factor"],
                     members=members, seed=1)

    def ours_run():
        res = assimilate(problem.model, y, "enkf", members=members, seed=1, sampling="random",
                         store_ensemble=False)
        with torch.no_grad():
            return codec.decode_tensor(res.filtered_mean).to(torch.float32)

    # The same model with the box-average-of-decode operator folded into one affine map
    # h(z) = z @ (W H^T) + mu H^T (exact for the linear EOF decoder): what BoxObservation could do.
    gain_w = torch.from_numpy(problem.decoder @ problem.obs_matrix.T)
    offset = torch.from_numpy(problem.mean @ problem.obs_matrix.T)
    affine_model = copy.copy(problem.model)
    affine_model._observe = lambda z: z @ gain_w + offset

    def affine_run():
        res = assimilate(affine_model, y, "enkf", members=members, seed=1, sampling="random", store_ensemble=False)
        with torch.no_grad():
            return codec.decode_tensor(res.filtered_mean).to(torch.float32)

    with _single_thread():
        ours = _per_cycle(measure(ours_run, repeats=repeats), t_ours)
        affine = _per_cycle(measure(affine_run, repeats=repeats), t_ours)
        peer = _per_cycle(measure(lambda: fullspace_enkf(y[:t_peer], ops["dense"], **peer_args),
                                  repeats=repeats, warmup=0), t_peer)
        factored = _per_cycle(measure(lambda: fullspace_enkf(y, ops["factors"], **peer_args),
                                      repeats=repeats, warmup=0), t_ours)
        mine = ours_run().numpy()
        theirs = fullspace_enkf(y, ops["factors"], **peer_args).analysis_mean
    rel = float(np.sqrt(np.mean((mine - theirs) ** 2)) / np.sqrt(np.mean((mine - problem.mean) ** 2)))
    n_points = problem.mean.size
    return [BenchRow(
        name="latent EnKF vs full-space EnKF",
        problem=(f"default grid tos+zos, {n_points} ocean points, latent {codec.latent_dim}, 3 box observations, "
                 f"{members} members, time per cycle"),
        ours=ours,
        peer_name="full-space perturbed-obs EnKF (numpy, dense P x P LIM)",
        peer=peer,
        key="latent_vs_fullspace_enkf",
        note=f"ours over {t_ours} cycles, dense peer over {t_peer}; peer dynamics x_t = D A D^+ x_(t-1) + noise",
        extra={
            "n_points": float(n_points),
            "factored_peer_per_cycle_s": factored.median_s,
            "ratio_vs_factored_peer": factored.median_s / ours.median_s,
            "mean_field_rel_diff": rel,
            "ours_affine_observation_per_cycle_s": affine.median_s,
            "ratio_with_affine_observation": peer.median_s / affine.median_s,
        },
    )]
