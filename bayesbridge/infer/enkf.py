"""Ensemble Kalman filters and smoother: stochastic EnKF, ETKF and EnKS.

Every variant propagates an ensemble ``E (*batch, member, d)`` through the model
(``model.transition_mean`` plus Gaussian model error ``N(0, Q_t)``, member by member) and
analyses it with the observation operator applied member by member, ``HE = h(E)`` (no
linearisation): with forecast anomalies ``X = E - mean(E)``, ``Y = HE - mean(HE)`` and
innovation ``d = y - mean(HE)``,

* ``"enkf"`` -- stochastic EnKF with perturbed observations (Burgers, van Leeuwen & Evensen
  1998; Evensen 2003). Member ``i`` sees ``y + D_i`` with ``D_i ~ N(0, R)`` (centred over members);
  the gain is :math:`K = X^T Y (Y^T Y + (N-1) R)^{-1}` and ``E_a = E + (d + D - Y) K^T``, as in
  DAPPER's ``EnKF('PertObs')`` (``docs/lab-notes.md`` says why not the ensemble estimate of
  the perturbed-observation covariance). Both variants work in
  observation space whitened by ``R = L L^T``: with ``Yt = Y L^{-T}``, ``G = Yt^T Yt = V diag(lam)
  V^T`` and ``U = Yt V``, ``YtY + (N-1) R = L V diag(lam + N - 1) V^T L^T``, so the update is
  ``E_a = E + [(dt + eps - Yt) V diag(c)] (U^T X)`` with ``dt = L^{-1} d``, ``eps`` the centred
  standard-normal perturbations (``D = eps L^T``) and ``c = 1 / (lam + N - 1)``, computed from
  one ``m x m`` eigendecomposition. The inversion is eigenvalue-truncated (``inversion="eigh"``:
  eigenvalues of ``G + (N-1) I`` below ``truncation`` times the largest are dropped; they are
  all ``>= N-1``, so this only acts at condition numbers beyond ``1/truncation``) or
  Tikhonov-regularised (``inversion="tikhonov"``, ridge ``ridge`` times their mean). An
  optional taper ``rho (d, m)`` localises the gain by a Schur product with the state-observation
  covariance, :math:`K = (\\rho \\circ X^T Y)(Y^T Y + (N-1) R)^{-1}` (Houtekamer & Mitchell 2001);
  build it e.g. with :func:`gaspari_cohn`.
* ``"etkf"`` -- ensemble transform Kalman filter with the symmetric square root (Bishop, Etherton &
  Majumdar 2001; Hunt, Kostelich & Szunyogh 2007). With :math:`\\tilde Y = Y L^{-T}`,
  :math:`R = L L^T`, :math:`\\bar w = [(N-1) I + \\tilde Y \\tilde Y^T]^{-1} \\tilde Y L^{-1} d` and
  :math:`W = [I + \\tilde Y \\tilde Y^T / (N-1)]^{-1/2}`: ``mean_a = mean + w^T X``,
  ``X_a = W X``. Both are computed in the ``m``-dimensional observation space from the eigen
  decomposition :math:`\\tilde Y^T \\tilde Y = V \\Lambda V^T` (``W = I + Z^T diag(c) Z`` with
  ``Z = V^T \\tilde Y^T`` and ``c = -1 / ((N-1) s (1+s))``, ``s = sqrt(1 + \\lambda/(N-1))``), so
  the cost per cycle is ``O(N m (m + d))``, never ``O(N^3)``.
* ``"enks"`` -- ensemble Kalman smoother (Evensen & van Leeuwen 2000) on top of the ETKF: every
  analysis is a linear transform of the forecast ensemble, ``E_a = T_t E_f`` with
  ``T_t = 11^T/N + 1 w^T (I - 11^T/N) + W (I - 11^T/N)``, and the same transform is applied to
  the smoothed ensembles of the previous ``lag`` steps (all steps when ``lag=None``)
  (``smoother="transform"``). The default ``smoother="rts"`` is the ensemble RTS smoother
  (Raanes 2016), equivalent in the linear case but using only consecutive ensembles, so that
  spurious long-range sample correlations do not add noise; with second-order exact sampling it
  reproduces the RTS smoothed means exactly for linear-Gaussian models.

Multiplicative inflation ``inflation >= 1`` scales the forecast anomalies before the analysis
(Anderson & Anderson 1999); relaxation to prior spread (RTPS, Whitaker & Hamill 2012) scales each
component of the analysis anomalies by ``alpha * sigma_f / sigma_a + (1 - alpha)``. RTPS is a
per-component (right) scaling, not an ensemble transform, so the smoother does not propagate it
backwards.

Missing observations (NaN) are handled per component and per run without gathering: the
anomalies ``Y``, perturbations ``D`` and innovation ``d`` of missing components are set to 0 and
``R`` is replaced by ``M R M + (I - M)`` (``M`` the 0/1 mask), which decouples them; the gain's
columns for missing components are then zero and the log-likelihood involves only observed ones.

The log-evidence is the Gaussian innovation form (e.g. Carrassi et al. 2017, *Estimating model
evidence using data assimilation*):
:math:`\\log p(y_{1:T}) \\approx \\sum_t \\log N(y_t; \\overline{h(z^f_t)}, S_t)`,
:math:`S_t = Y^T Y / (N-1) + R` (with the inflated forecast).

Batching and random numbers: all runs in the leading batch dimensions of the observations and all
members are processed together (batched linear algebra, the only Python loop is over time). The
default noise source (:func:`generator_noise`) draws the standard normals of each kind for blocks
of cycles at once; a custom ``noise(kind, step, shape)`` is called step by step with shapes for all
runs, so batch entry ``b`` is the same algorithm as a separate run on ``y[b]`` fed with the noise
slice ``[b]`` (tested to round-off) but not bitwise identical to a separate call with the same
seed, which would draw different numbers.

Speed: the loop issues no host synchronisation per step. Innovation statistics are recorded and
turned into the log-evidence, the diagnostics and the innovation-consistency check after the
loop; the analysis means are checked for NaN/inf every 64 steps and at the end (the error names
the first non-finite step), and a linear-algebra failure on non-finite input is reported the same
way. Diagonal ``Q`` and ``R`` (not requiring grad) are applied elementwise.

Gradients: the whole pass is differentiable with autograd for fixed random numbers (a fixed seed or
``noise``): with respect to ``Q``, ``R``, ``P0``, ``m0`` held by the model as tensors requiring
grad, model parameters inside ``transition_mean``/``observe``, and ``inflation`` given as a 0-dim
tensor, e.g. for ensemble-likelihood hyperparameter inference with common random numbers.

The pieces live in :mod:`~bayesbridge.infer.enkf_config` (:class:`EnKFConfig`),
:mod:`~bayesbridge.infer.localisation` (:func:`gaspari_cohn`), ``_enkf_analysis`` (the analysis
maths above), ``_enkf_smoother`` (ensemble RTS and the EnKS transform), ``_enkf_records`` (the
per-step records and the log-evidence), ``_enkf_compiled`` with ``_enkf_kernel`` (the compiled
route); this module holds the entry point :func:`run` and its torch loop over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bayesbridge.errors import FilterDivergenceError, InputTypeError, ShapeMismatchError
from bayesbridge.infer._enkf_analysis import (
    add_matmul,
    missing_step,
    relax_to_prior_spread,
    stochastic_update,
    transform_update,
    whitened_step,
)
from bayesbridge.infer._enkf_compiled import try_compiled
from bayesbridge.infer._enkf_records import Records, check_block, innovation_summary
from bayesbridge.infer._enkf_smoother import ensemble_rts, transform_smooth
from bayesbridge.infer.divergence import REMEDIES
from bayesbridge.infer.enkf_config import (
    MIN_MEMBERS,
    EnKFConfig,
    Inversion,
    Sampling,
    Smoother,
    Variant,
)
from bayesbridge.infer.ensemble_noise import Noise, draw_perturbations, generator_noise
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.localisation import gaspari_cohn
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = ["EnKFConfig", "Variant", "Inversion", "Sampling", "Smoother", "run", "gaspari_cohn", "generator_noise",
           "MIN_MEMBERS"]

f64 = torch.float64
_CHECK_EVERY = 64  # steps between the (host-synchronising) finiteness checks of the analysis means


def run(
    model, y: torch.Tensor, config: EnKFConfig, generator: torch.Generator, *, noise: Noise | None = None
) -> AssimilationResult:
    """Run the ensemble Kalman filter/smoother chosen by ``config.variant``.

    Parameters
    ----------
    model : StateSpace
        Provides ``initial()``, ``transition_mean(z, step)``, ``transition_cov(step)``,
        ``observe(z)`` (member by member, ``(*batch, member, d) -> (*batch, member, m)``) and
        ``obs_cov()``.
    y : Tensor (*batch, T, m)
        Validated observations (float64, NaN = missing).
    config : EnKFConfig
    generator : torch.Generator
        Source of all randomness (initial ensemble, model error, observation perturbations),
        through :func:`generator_noise`.
    noise : callable, optional
        ``noise(kind, step, shape) -> Tensor`` of standard normals replacing the generator, with
        ``kind`` in ``"initial"`` (shape ``(*batch, N, d)``), ``"model"`` (``(*batch, N, d)``)
        and ``"obs"`` (``(*batch, N, m)``, stochastic EnKF only); for common random numbers and
        tests.

    Returns
    -------
    AssimilationResult
        ``filtered_mean (*batch, T, d)``, ``filtered_ensemble (*batch, T, member, d)`` (if
        ``store_ensemble``), ``smoothed_mean``/``smoothed_ensemble`` for ``"enks"``,
        ``log_evidence (*batch,)`` and diagnostics (innovation, innovation variance, spread).

    Raises
    ------
    FilterDivergenceError
        NaN/inf in the ensemble (naming the step) or grossly inconsistent innovations.
    """
    if not isinstance(config, EnKFConfig):
        raise InputTypeError(f"config: expected an EnKFConfig, got {type(config).__name__}.")
    compiled = try_compiled(model, y, config, generator, noise)
    if compiled is not None:
        return compiled
    s = _prepare(model, y, config, generator, noise)
    rec = Records(s.batch, s.T, s.N, s.d, s.m, s.L_R, any_missing=s.any_missing,
                  store_ensemble=config.store_ensemble, rts=s.rts, smooth=s.smooth)
    E = s.m0 + draw_perturbations(s.noise, "initial", 0, (*s.batch, s.N, s.d), config.sampling, None) @ _psd_sqrt(
        s.P0).mT
    _cycle(model, y, config, s, rec, E)
    return _result(y, config, s, rec)


@dataclass
class _Setup:
    """What the torch loop of one :func:`run` call fixes before the first step (see :func:`_prepare`)."""

    batch: tuple  # leading batch shape of the runs
    T: int  # steps
    m: int  # observation dimension
    d: int  # latent dimension
    N: int  # members
    m0: torch.Tensor  # (d,) initial mean
    P0: torch.Tensor  # (d, d) initial covariance
    R: torch.Tensor  # (m, m) observation-error covariance
    L_R: torch.Tensor  # (m, m) its Cholesky factor
    taper: torch.Tensor | None  # (d, m) localisation, stochastic EnKF only
    noise: Noise  # standard normals by (kind, step, shape)
    stochastic: bool  # perturbed-observation EnKF (else ETKF transform)
    smooth: bool  # transform smoother (EnKS, smoother="transform")
    rts: bool  # ensemble RTS smoother (EnKS, smoother="rts")
    nm1: float  # N - 1
    sqrt_nm1: float  # sqrt(N - 1)
    infl: float | torch.Tensor  # multiplicative inflation
    inflate: bool  # whether to apply it (always for a tensor, so autograd reaches it)
    ones_n: torch.Tensor  # (1, N) averaging row: xbar = ones_n @ E, one small GEMV, cheaper than mean()
    whiten: Callable[[torch.Tensor], torch.Tensor]  # x -> x L_R^{-T} (elementwise when R is diagonal)
    nan: torch.Tensor  # (*b, T, m) missing components
    step_missing: list[bool]  # per step: some component of some run missing
    any_missing: bool
    yw: torch.Tensor  # (*b, T, m) whitened observations (missing set to 0)
    fake: torch.Tensor  # (m,) distinct placeholders in (-1/2, 0) for missing directions, see missing_step


def _prepare(model, y: torch.Tensor, config: EnKFConfig, generator: torch.Generator, noise: Noise | None) -> _Setup:
    """Validate the shapes of ``model`` against ``y (*batch, T, m)`` and fix the loop's constants.

    The default noise source (:func:`generator_noise` on ``generator``) is created here, before
    any number is drawn; ``noise`` replaces it when given.
    """
    N = config.members
    batch = y.shape[:-2]
    T, m = y.shape[-2], y.shape[-1]
    dev = y.device
    m0, P0 = (torch.as_tensor(v, dtype=f64, device=dev) for v in model.initial())
    d = m0.shape[-1]
    R = torch.as_tensor(model.obs_cov(), dtype=f64, device=dev)
    L_R = torch.linalg.cholesky(R)
    taper = None if config.taper is None else config.taper.to(dev)
    if taper is not None and tuple(taper.shape) != (d, m):
        raise ShapeMismatchError(
            f"taper: expected shape ({d}, {m}) = (latent_dim, obs_dim), got {tuple(taper.shape)}."
        )
    if noise is None:
        noise = generator_noise(generator, n_steps=T, device=dev)
    nm1 = float(N - 1)
    infl = config.inflation
    if isinstance(infl, torch.Tensor):
        infl = infl.to(dev)
    r_diag = not R.requires_grad and bool((R == torch.diag_embed(R.diagonal())).all())
    if r_diag:
        whiten = R.diagonal().rsqrt().mul
    else:
        LinvT = torch.linalg.solve_triangular(L_R, torch.eye(m, dtype=f64, device=dev), upper=False).mT
        whiten = LinvT.__rmatmul__
    nan = torch.isnan(y)
    step_missing = nan.any(-1).reshape(-1, T).any(0).tolist() if nan.any() else [False] * T
    any_missing = any(step_missing)
    return _Setup(
        batch=batch, T=T, m=m, d=d, N=N, m0=m0, P0=P0, R=R, L_R=L_R, taper=taper, noise=noise,
        stochastic=config.variant == "enkf",
        smooth=config.variant == "enks" and config.smoother == "transform",
        rts=config.variant == "enks" and config.smoother == "rts",
        nm1=nm1, sqrt_nm1=math.sqrt(nm1), infl=infl, inflate=isinstance(infl, torch.Tensor) or infl != 1.0,
        ones_n=torch.full((1, N), 1.0 / N, dtype=f64, device=dev), whiten=whiten, nan=nan,
        step_missing=step_missing, any_missing=any_missing,
        yw=whiten(torch.where(nan, 0.0, y)) if any_missing else whiten(y),
        fake=-(torch.arange(m, dtype=f64, device=dev) + 1.0) / (2.0 * (m + 1)),
    )


class _ModelError:
    """Square root ``L_Q (d, d)`` of the model-error covariance, refactorised only when ``Q_t`` changes.

    Also its diagonal ``(d,)`` when ``L_Q`` is diagonal and ``Q`` does not require grad (then the
    noise is scaled elementwise), else None.
    """

    def __init__(self, model, device: torch.device) -> None:
        self.model, self.device = model, device
        self.prev, self.L, self.diag = None, None, None

    def __call__(self, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        Q = self.model.transition_cov(t)
        if Q is not self.prev and (self.prev is None or not torch.equal(Q, self.prev)):
            Qt = torch.as_tensor(Q, dtype=f64, device=self.device)
            self.L, self.prev = _psd_sqrt(Qt), Q
            diag = not Qt.requires_grad and bool((self.L == torch.diag_embed(self.L.diagonal())).all())
            self.diag = self.L.diagonal() if diag else None
        return self.L, self.diag


def _cycle(model, y: torch.Tensor, config: EnKFConfig, s: _Setup, rec: Records, E: torch.Tensor) -> None:
    """Forecast and analyse every step from the initial ensemble ``E (*b, N, d)``, recording into ``rec``.

    The analysis means are checked for NaN/inf every :data:`_CHECK_EVERY` steps and at the end;
    a linear-algebra failure (non-finite input to ``eigh``/``cholesky``) is reported naming the
    first non-finite step, else the step at which it happened.
    """
    variant = config.variant
    q_factor = _ModelError(model, y.device)
    checked = 0
    t = 0
    try:
        for t in range(s.T):
            E, xbar, X = _forecast(model, E, t, config, s, q_factor)
            if s.rts:
                rec.fc_all[..., t, :, :] = E
            HE = model.observe(E)
            if s.step_missing[t] and not bool((~s.nan[..., t, :]).any()):
                rec.unobserved(t, E, xbar)  # nothing observed in any run: the analysis is the forecast
                continue
            E, mean_a = _analyse(E, xbar, X, HE, y, t, config, s, rec)
            rec.store(t, E, mean_a)
            if config.check_divergence and t + 1 - checked >= _CHECK_EVERY:
                check_block(rec.means, checked, t + 1, variant)
                checked = t + 1
    except torch.linalg.LinAlgError as exc:  # non-finite input to eigh/cholesky: name the first bad step
        check_block(rec.means, checked, len(rec.means), variant)
        raise FilterDivergenceError(
            f"{variant}: the analysis failed at time step {t} ({exc}); the filter diverged. Remedies: {REMEDIES}."
        ) from exc
    if config.check_divergence:
        check_block(rec.means, checked, s.T, variant)


def _forecast(model, E: torch.Tensor, t: int, config: EnKFConfig, s: _Setup, q_factor: _ModelError):
    """Forecast of step ``t``: ``E = f(E) + eps L_Q^T``, inflated; returns ``(E, xbar, X)``.

    ``E (*b, N, d)`` the previous analysis; ``xbar (*b, 1, d)`` the forecast mean and ``X`` the
    forecast anomalies ``(*b, N, d)`` where RTPS or the taper need them (else None).
    """
    L_Q, q_diag = q_factor(t)
    F = model.transition_mean(E, t)
    eps = draw_perturbations(s.noise, "model", t, (*s.batch, s.N, s.d), config.sampling, F)
    E = torch.addcmul(F, eps, q_diag) if q_diag is not None else torch.add(F, eps @ L_Q.mT)
    xbar = s.ones_n @ E  # (*b, 1, d)
    if s.inflate:
        E = torch.lerp(xbar, E, s.infl)  # xbar + infl (E - xbar)
    X = E - xbar if (config.rtps > 0.0 or s.taper is not None) else None
    return E, xbar, X


def _analyse(E, xbar, X, HE, y, t: int, config: EnKFConfig, s: _Setup, rec: Records):
    """Analysis of step ``t`` (at least one component observed): ``(E_a (*b, N, d), mean_a (*b, 1, d))``.

    ``E``, ``xbar``, ``X`` from :func:`_forecast`, ``HE = h(E) (*b, N, m)``. Records the
    innovation statistics, draws the observation perturbations (stochastic EnKF) and, for the
    transform smoother, updates the past smoothed ensembles.
    """
    missing = s.step_missing[t]
    mask = ~s.nan[..., t, :] if missing else None
    if missing:
        Yt, dt, G, lam, V, L_eff = missing_step(HE, y[..., t, :], mask, s.R, s.fake)
        rec.l_all[..., t, :, :] = L_eff
    else:
        Yt, dt, G, lam, V = whitened_step(HE, s.whiten, s.ones_n, s.yw[..., t : t + 1, :])
        L_eff = s.L_R
    lamn = lam.unsqueeze(-2) + s.nm1  # (*b, 1, m) eigenvalues of G + (N-1) I, >= N-1
    U = Yt @ V  # (*b, N, m), centred over members
    dv = dt @ V  # (*b, 1, m)
    rec.innovation(dt, dv, lamn, G)
    if s.stochastic:
        eps_o = s.noise("obs", t, (*s.batch, s.N, s.m))
        if missing:
            eps_o = eps_o * mask.unsqueeze(-2)
        e, left, right = stochastic_update(lamn, dv, eps_o, U, V, E, config, s.ones_n, taper=s.taper, X=X, Yt=Yt,
                                           L_eff=L_eff)
    else:
        e, left, right = transform_update(lamn, dv, U, E, s.sqrt_nm1)
        if s.smooth and t > 0:
            transform_smooth(rec.smo_all, left, U, t, config.lag)
    mean_a = add_matmul(xbar, e, right)  # (*b, 1, d)
    E = add_matmul(E, left, right)
    if config.rtps > 0.0:
        E = relax_to_prior_spread(E, mean_a, X, config.rtps, s.nm1)
    return E, mean_a


def _result(y: torch.Tensor, config: EnKFConfig, s: _Setup, rec: Records) -> AssimilationResult:
    """Log-evidence, diagnostics and smoothed ensembles from the records of a completed loop."""
    L_t = s.L_R if rec.l_all is None else rec.l_all
    log_ev, innov, innov_var = innovation_summary(
        y, torch.cat(rec.dt, -2), torch.cat(rec.dv, -2), torch.cat(rec.lamn, -2), torch.stack(rec.g, -3), L_t, s.N,
        config.variant, config.check_divergence)
    result = AssimilationResult(
        method=config.variant,
        filtered_mean=torch.cat(rec.means, -2),  # (*b, T, d)
        log_evidence=log_ev,
        filtered_ensemble=rec.ens_all if config.store_ensemble else None,
        diagnostics=StepDiagnostics(innovation=innov, spread=rec.spread(s.N, s.d), innovation_var=innov_var),
        config=config,
    )
    if s.rts:
        result.smoothed_ensemble = ensemble_rts(rec.ens_all, rec.fc_all, config)
        result.smoothed_mean = result.smoothed_ensemble.mean(-2)
    if s.smooth:
        result.smoothed_ensemble = rec.smo_all.transpose(-3, -2).contiguous()
        result.smoothed_mean = rec.smo_all.mean(-3)
    return result
