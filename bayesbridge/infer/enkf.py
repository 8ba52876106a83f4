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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from bayesbridge.errors import (
    FilterDivergenceError,
    InputTypeError,
    ParameterError,
    ShapeMismatchError,
    check_choice,
)
from bayesbridge.infer.divergence import REMEDIES, check_finite, check_innovations
from bayesbridge.infer.ensemble_noise import Noise, draw_perturbations, generator_noise
from bayesbridge.infer.kalman import _LOG_2PI
from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = ["EnKFConfig", "Variant", "Inversion", "Sampling", "Smoother", "run", "gaspari_cohn", "generator_noise", "MIN_MEMBERS"]

Variant = Literal["enkf", "etkf", "enks"]
Inversion = Literal["eigh", "tikhonov"]
Sampling = Literal["exact", "centred", "random"]
Smoother = Literal["rts", "transform"]
Engine = Literal["auto", "compiled", "torch"]
MIN_MEMBERS: dict[str, int] = {"enkf": 2, "etkf": 2, "enks": 2}

f64 = torch.float64
_CHECK_EVERY = 64  # steps between the (host-synchronising) finiteness checks of the analysis means


@dataclass
class EnKFConfig:
    """Configuration of the ensemble Kalman engines (validated on construction).

    Attributes
    ----------
    variant : {"enkf", "etkf", "enks"}
        Stochastic EnKF, ETKF (symmetric square root) or ETKF-based ensemble Kalman smoother;
        :func:`~bayesbridge.infer.assimilate` sets it from ``method``.
    members : int
        Ensemble size ``N`` (at least :data:`MIN_MEMBERS` for the variant).
    inflation : float or Tensor ()
        Multiplicative inflation of the forecast anomalies, ``>= 1`` (1 = none). A 0-dim tensor
        (e.g. one requiring grad) is applied even when it equals 1, so that autograd reaches it:
        the log-evidence is differentiable in it, as in ``Q`` and ``R`` when the model holds them as
        tensors requiring grad (for fixed random numbers, i.e. a fixed seed).
    rtps : float
        Relaxation-to-prior-spread coefficient ``alpha`` in ``[0, 1]`` (0 = none).
    inversion : {"eigh", "tikhonov"}
        How the stochastic EnKF inverts the innovation covariance of the perturbed observations.
    truncation : float
        ``eigh``: eigenvalues of the whitened ``G + (N-1) I`` below ``truncation`` times the largest
        are dropped (pseudo-inverse).
    ridge : float
        ``tikhonov``: ``ridge`` times the mean eigenvalue of the whitened ``G + (N-1) I`` is added
        to its eigenvalues before inverting.
    taper : array (d, m) or None
        Schur-product localisation of the state-observation covariance in the stochastic EnKF
        gain (entries in ``[0, 1]``); see :func:`gaspari_cohn`. Not available for ETKF/EnKS
        (their global transform cannot be localised without local analyses).
    smoother : {"rts", "transform"}
        How ``"enks"`` smooths: ``"rts"`` (default), the ensemble Rauch-Tung-Striebel smoother
        (Raanes 2016), whose gains use only consecutive ensembles and so carry no spurious
        long-range sample correlations; ``"transform"``, the Evensen & van Leeuwen (2000) EnKS
        that applies each analysis transform to the past ``lag`` ensembles.
    lag : int or None
        Smoother lag in steps for ``smoother="transform"`` (``None`` = the whole window).
    check_divergence : bool
        Check the ensemble for NaN/inf at every step and the innovations' consistency at the end.
    sampling : {"exact", "centred", "random"}
        How the initial ensemble and the model-error draws are sampled. ``"random"``: plain
        Gaussian draws. ``"centred"``: centred over members (rescaled by ``sqrt(N/(N-1))``), so
        linear dynamics propagate the ensemble mean exactly. ``"exact"`` (default): second-order
        exact sampling (Pham 2001; Evensen 2004, "improved sampling"): also orthogonal to the
        forecast anomalies and with sample covariance exactly ``P0`` / ``Q``, which removes the
        sampling error of the forecast covariance for linear dynamics; needs ``N > 2 d``, else
        it falls back to ``"centred"``.
    store_ensemble : bool
        Return ``filtered_ensemble (*batch, T, member, d)`` (memory ``T N d`` per run).
    engine : {"auto", "compiled", "torch"}
        ``"auto"`` runs linear CPU runs (one or a batch, cycled run by run) without missing
        values, stored ensembles, taper or RTPS through the compiled cycle of
        :mod:`bayesbridge.infer._enkf_kernel` (the same records and random numbers, a few times
        faster for one run, 1.5x for a batch) and everything else through the torch loop; ``"compiled"`` insists on the compiled cycle (an error says why a case is not
        eligible); ``"torch"`` always runs the torch loop (autograd, devices, reference).
    """

    variant: Variant = "enkf"
    members: int = 100
    inflation: float | torch.Tensor = 1.0
    rtps: float = 0.0
    inversion: Inversion = "eigh"
    truncation: float = 1e-10
    ridge: float = 1e-6
    taper: object | None = None
    smoother: Smoother = "rts"
    lag: int | None = None
    check_divergence: bool = True
    sampling: Sampling = "exact"
    store_ensemble: bool = True
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        check_choice(self.variant, "variant", get_args(Variant))
        check_choice(self.engine, "engine", get_args(Engine))
        check_choice(self.inversion, "inversion", get_args(Inversion))
        check_choice(self.sampling, "sampling", get_args(Sampling))
        check_choice(self.smoother, "smoother", get_args(Smoother))
        if not isinstance(self.members, int) or isinstance(self.members, bool):
            raise ParameterError(f"members: expected an integer ensemble size, got {self.members!r}.")
        need = MIN_MEMBERS[self.variant]
        if self.members < need:
            raise ParameterError(
                f"members: the {self.variant} needs at least {need} members to estimate a "
                f"covariance, got {self.members}; use 50-100 or more (2,000 for near-exact results)."
            )
        if isinstance(self.inflation, torch.Tensor):
            if self.inflation.ndim != 0:
                raise ParameterError(
                    f"inflation: expected a float or a 0-dim tensor, got a tensor of shape "
                    f"{tuple(self.inflation.shape)}; pass one factor for all runs."
                )
            self.inflation = self.inflation.to(torch.float64)  # differentiable cast, keeps the graph
            value = float(self.inflation.detach())
        elif isinstance(self.inflation, (int, float)) and not isinstance(self.inflation, bool):
            value = float(self.inflation)
        else:
            raise ParameterError(f"inflation: expected a float or a 0-dim tensor, got {self.inflation!r}.")
        if not (math.isfinite(value) and value >= 1.0):
            raise ParameterError(
                f"inflation: expected a multiplicative factor >= 1 (1 = no inflation), got {value!r}."
            )
        if not (0.0 <= self.rtps <= 1.0):
            raise ParameterError(f"rtps: expected a relaxation coefficient in [0, 1], got {self.rtps!r}.")
        if not (0.0 <= self.truncation < 1.0):
            raise ParameterError(f"truncation: expected a relative tolerance in [0, 1), got {self.truncation!r}.")
        if not (self.ridge >= 0.0):
            raise ParameterError(f"ridge: expected a non-negative Tikhonov factor, got {self.ridge!r}.")
        if self.lag is not None and (not isinstance(self.lag, int) or self.lag < 0):
            raise ParameterError(f"lag: expected None (whole window) or an integer >= 0, got {self.lag!r}.")
        if self.taper is not None:
            if self.variant != "enkf":
                raise ParameterError(
                    f"taper: localisation is implemented for the stochastic EnKF only, got variant "
                    f"{self.variant!r}; use variant='enkf' or drop the taper."
                )
            taper = torch.as_tensor(self.taper, dtype=torch.float64, device="cpu" if not isinstance(
                self.taper, torch.Tensor) else self.taper.device)
            if taper.ndim != 2 or bool(((taper < 0) | (taper > 1)).any()):
                raise ParameterError(
                    f"taper: expected a (d, m) matrix with entries in [0, 1], got shape {tuple(taper.shape)}."
                )
            self.taper = taper


def gaspari_cohn(distance, length: float) -> torch.Tensor:
    """Gaspari & Cohn (1999, eq. 4.10) compactly supported correlation, zero beyond ``2 * length``.

    Parameters
    ----------
    distance : array (...)
        Non-negative distances (e.g. ``|i - j|`` in latent index space, or km).
    length : float
        Half-width ``c``; the taper is 1 at 0 and vanishes at ``2 c``.

    Returns
    -------
    Tensor (...)
        Taper values in ``[0, 1]``, usable as ``EnKFConfig(taper=...)``.
    """
    if not length > 0:
        raise ParameterError(f"length: expected a positive localisation half-width, got {length!r}.")
    r = torch.as_tensor(distance, dtype=torch.float64).abs() / length
    inner = -0.25 * r**5 + 0.5 * r**4 + 0.625 * r**3 - 5.0 / 3.0 * r**2 + 1.0
    outer = r**5 / 12.0 - 0.5 * r**4 + 0.625 * r**3 + 5.0 / 3.0 * r**2 - 5.0 * r + 4.0 - 2.0 / (3.0 * r.clamp_min(1e-300))
    out = torch.where(r <= 1.0, inner, torch.where(r < 2.0, outer, torch.zeros_like(r)))
    return out.clamp(0.0, 1.0)


def _obs_factor(R: torch.Tensor, mask: torch.Tensor | None, L_full: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of ``M R M + (I - M)`` ``(*batch, m, m)`` (``L_full`` when all observed)."""
    if mask is None:
        return L_full
    mf = mask.to(R.dtype)
    R_eff = R * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    return torch.linalg.cholesky(R_eff)


def _sym_inverse(C: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """Robust inverse of symmetric PSD ``C (*b, m, m)``: truncated eigen or Tikhonov."""
    C = 0.5 * (C + C.mT)
    if config.inversion == "tikhonov":
        m = C.shape[-1]
        scale = C.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
        eye = torch.eye(m, dtype=C.dtype, device=C.device)
        return torch.linalg.inv(C + config.ridge * scale[..., None, None] * eye)
    lam, V = torch.linalg.eigh(C)
    keep = lam > config.truncation * lam[..., -1:].clamp_min(1e-300)
    inv = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))
    return (V * inv.unsqueeze(-2)) @ V.mT


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
    if config.engine != "torch":
        from bayesbridge.infer._enkf_kernel import eligible

        ok = eligible(model, config, y, noise)
        if ok:  # linear runs on the CPU: the compiled cycle, same records and random numbers
            return _run_compiled(model, y, config, generator, noise)
        if config.engine == "compiled":
            raise ParameterError(
                f"engine: the compiled cycle does not apply here ({ok.reason}); use engine='auto' or 'torch'."
            )
    variant = config.variant
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
    stochastic = variant == "enkf"
    smooth = variant == "enks" and config.smoother == "transform"
    rts = variant == "enks" and config.smoother == "rts"
    nm1 = float(N - 1)
    sqrt_nm1 = math.sqrt(nm1)
    infl = config.inflation
    if isinstance(infl, torch.Tensor):
        infl = infl.to(dev)
    inflate = isinstance(infl, torch.Tensor) or infl != 1.0
    ones_n = torch.full((1, N), 1.0 / N, dtype=f64, device=dev)  # xbar = ones_n @ E: one small GEMV, cheaper than mean()
    # Whitening by the observation-error factor: x -> x L_R^{-T} (elementwise when R is diagonal).
    r_diag = not R.requires_grad and bool((R == torch.diag_embed(R.diagonal())).all())
    if r_diag:
        r_isd = R.diagonal().rsqrt()
        whiten = r_isd.mul
    else:
        LinvT = torch.linalg.solve_triangular(L_R, torch.eye(m, dtype=f64, device=dev), upper=False).mT
        whiten = LinvT.__rmatmul__
    nan = torch.isnan(y)
    step_missing = nan.any(-1).reshape(-1, T).any(0).tolist() if nan.any() else [False] * T
    any_missing = any(step_missing)
    yw = whiten(torch.where(nan, 0.0, y)) if any_missing else whiten(y)  # (*b, T, m)
    # Per-step records, turned into the log-evidence and diagnostics after the loop (no host syncs).
    # (appending to lists and stacking once costs far less than T small copies into buffers)
    rec_dt: list[torch.Tensor] = []  # whitened innovation (*b, 1, m)
    rec_dv: list[torch.Tensor] = []  # innovation in the eigenbasis of G (*b, 1, m)
    rec_lamn: list[torch.Tensor] = []  # eigenvalues of G + (N-1) I (*b, 1, m)
    rec_g: list[torch.Tensor] = []  # G = Yt^T Yt (*b, m, m)
    means: list[torch.Tensor] = []  # analysis means (*b, 1, d)
    norms: list[torch.Tensor] = []  # ||X_a||_F (*b,) when the ensembles are not stored
    l_all = L_R.expand(*batch, T, m, m).clone() if any_missing else None
    fc_all = torch.empty(*batch, T, N, d, dtype=f64, device=dev) if rts else None
    ens_all = torch.empty(*batch, T, N, d, dtype=f64, device=dev) if (config.store_ensemble or rts) else None
    smo_all = torch.empty(*batch, N, T, d, dtype=f64, device=dev) if smooth else None  # member-major for the lag update
    fake = -(torch.arange(m, dtype=f64, device=dev) + 1.0) / (2.0 * (m + 1))  # distinct in (-1/2, 0), see _missing_step
    E = m0 + draw_perturbations(noise, "initial", 0, (*batch, N, d), config.sampling, None) @ _psd_sqrt(P0).mT
    q_prev, L_Q, q_diag = None, None, None
    checked = 0
    t = 0
    try:
        for t in range(T):
            # --- forecast: E = f(E) + L_Q eps (elementwise when Q is diagonal) ---
            Q = model.transition_cov(t)
            if Q is not q_prev and (q_prev is None or not torch.equal(Q, q_prev)):
                Qt = torch.as_tensor(Q, dtype=f64, device=dev)
                L_Q, q_prev = _psd_sqrt(Qt), Q
                diag = not Qt.requires_grad and bool((L_Q == torch.diag_embed(L_Q.diagonal())).all())
                q_diag = L_Q.diagonal() if diag else None
            F = model.transition_mean(E, t)
            eps = draw_perturbations(noise, "model", t, (*batch, N, d), config.sampling, F)
            E = torch.addcmul(F, eps, q_diag) if q_diag is not None else torch.add(F, eps @ L_Q.mT)
            xbar = ones_n @ E  # (*b, 1, d)
            if inflate:
                E = torch.lerp(xbar, E, infl)  # xbar + infl (E - xbar)
            X = E - xbar if (config.rtps > 0.0 or taper is not None) else None
            if rts:
                fc_all[..., t, :, :] = E
            HE = model.observe(E)
            if step_missing[t]:
                mask = ~nan[..., t, :]
                if not bool(mask.any()):  # nothing observed in any run: the analysis is the forecast
                    zero = torch.zeros(*batch, 1, m, dtype=f64, device=dev)
                    rec_dt.append(zero)
                    rec_dv.append(zero)
                    rec_lamn.append(torch.full((*batch, 1, m), nm1, dtype=f64, device=dev))
                    rec_g.append(torch.zeros(*batch, m, m, dtype=f64, device=dev))
                    _store(t, E, xbar, ens_all, smo_all, means, norms)
                    continue
                Yt, dt, G, lam, V, L_eff = _missing_step(HE, y[..., t, :], mask, R, fake)
                l_all[..., t, :, :] = L_eff
                Linv = None
            else:
                HEw = whiten(HE)
                ybar = ones_n @ HEw
                Yt = HEw - ybar  # (*b, N, m) whitened anomalies
                dt = yw[..., t : t + 1, :] - ybar  # (*b, 1, m) whitened innovation
                G = Yt.mT @ Yt
                lam, V = torch.linalg.eigh(G)  # (round-off negatives are harmless next to N-1)
                L_eff = L_R
            lamn = lam.unsqueeze(-2) + nm1  # (*b, 1, m) eigenvalues of G + (N-1) I, >= N-1
            U = Yt @ V  # (*b, N, m), centred over members
            dv = dt @ V  # (*b, 1, m)
            rec_dt.append(dt)
            rec_dv.append(dv)
            rec_lamn.append(lamn)
            rec_g.append(G)
            if stochastic:
                c = _gain_weights(lamn, config)
                e = dv * c
                eps_o = noise("obs", t, (*batch, N, m))
                if step_missing[t]:
                    eps_o = eps_o * mask.unsqueeze(-2)
                # member innovations L^{-1}(y + D_i - h(E_i)) = dt + eps_i - Yt_i with eps centred
                # over members, in the eigenbasis of G (U is already centred)
                P = eps_o @ V - U
                left = torch.addcmul(e, P - ones_n @ P, c)
                if taper is not None:
                    Linv = torch.linalg.solve_triangular(L_eff, torch.eye(m, dtype=f64, device=dev), upper=False)
                    Pxy = X.mT @ (Yt @ L_eff.mT)  # (*b, d, m) = X^T Y
                    right = V.mT @ Linv @ (taper * Pxy).mT
                else:
                    right = U.mT @ E  # (*b, m, d) = U^T X, since U sums to zero over members
            else:
                e = dv / lamn  # wbar = U e
                # W - I = U diag(cc) U^T with cc = -1 / ((N-1) s (1 + s)), s = sqrt(lamn / (N-1))
                cc = torch.add(lamn, lamn.sqrt(), alpha=sqrt_nm1).reciprocal()
                left = torch.addcmul(e, U, cc, value=-1.0)  # (*b, N, m)
                right = U.mT @ E  # (*b, m, d) = U^T X, since U sums to zero over members
                if smooth and t > 0:
                    # E_s <- T_t E_s = E_s + left (U^T E_s) for the past `lag` smoothed ensembles
                    # (U sums to zero over members, so no centring is needed).
                    lo = 0 if config.lag is None else max(0, t - config.lag)
                    if lo < t:
                        past = smo_all[..., lo:t, :].flatten(-2)  # view (*b, N, L*d)
                        past.add_(left @ (U.mT @ past))
            mean_a = _add_matmul(xbar, e, right)  # (*b, 1, d)
            E = _add_matmul(E, left, right)
            if config.rtps > 0.0:
                Xa = E - mean_a
                sf = X.square().sum(-2).div(nm1).sqrt()
                sa = Xa.square().sum(-2).div(nm1).sqrt()
                factor = config.rtps * sf / sa.clamp_min(1e-300) + (1.0 - config.rtps)
                E = mean_a + Xa * factor.unsqueeze(-2)
            _store(t, E, mean_a, ens_all, smo_all, means, norms)
            if config.check_divergence and t + 1 - checked >= _CHECK_EVERY:
                _check_block(means, checked, t + 1, variant)
                checked = t + 1
    except torch.linalg.LinAlgError as exc:  # non-finite input to eigh/cholesky: name the first bad step
        _check_block(means, checked, len(means), variant)
        raise FilterDivergenceError(
            f"{variant}: the analysis failed at time step {t} ({exc}); the filter diverged. Remedies: {REMEDIES}."
        ) from exc
    if config.check_divergence:
        _check_block(means, checked, T, variant)
    L_t = L_R if l_all is None else l_all
    log_ev, innov, innov_var = _innovation_summary(
        y, torch.cat(rec_dt, -2), torch.cat(rec_dv, -2), torch.cat(rec_lamn, -2), torch.stack(rec_g, -3), L_t, N,
        variant, config.check_divergence)
    mean_all = torch.cat(means, -2)  # (*b, T, d)
    if ens_all is not None:
        spread = ens_all.var(-2).mean(-1).sqrt()
    else:
        spread = torch.stack(norms, -1) / math.sqrt((N - 1) * d)
    result = AssimilationResult(
        method=variant,
        filtered_mean=mean_all,
        log_evidence=log_ev,
        filtered_ensemble=ens_all if config.store_ensemble else None,
        diagnostics=StepDiagnostics(innovation=innov, spread=spread, innovation_var=innov_var),
        config=config,
    )
    if rts:
        result.smoothed_ensemble = _ensemble_rts(ens_all, fc_all, config)
        result.smoothed_mean = result.smoothed_ensemble.mean(-2)
    if smooth:
        result.smoothed_ensemble = smo_all.transpose(-3, -2).contiguous()
        result.smoothed_mean = smo_all.mean(-3)
    return result


def _innovation_summary(y, dt_all, dv_all, lamn_all, g_all, L_t, N: int, variant: str, check: bool):
    """Log-evidence ``(*b,)``, innovations and their variances ``(*b, T, m)`` from the per-step records.

    Gaussian innovation form with ``S_t = L_t (I + G_t / (N-1)) L_t^T`` (``L_t`` the, possibly
    masked, observation-error factor and ``G_t`` the whitened forecast-anomaly Gram matrix);
    ``dv`` is the whitened innovation in the eigenbasis of ``G_t`` and ``lamn`` the eigenvalues
    of ``G_t + (N-1) I``.
    """
    nm1 = float(N - 1)
    obs = ~torch.isnan(y)
    dof = obs.sum(-1).to(f64)
    nis = (dv_all.square() * nm1 / lamn_all).sum(-1)
    log_l = L_t.diagonal(dim1=-2, dim2=-1).log()
    half_logdet = (log_l * obs).sum(-1) + 0.5 * (lamn_all / nm1).log().sum(-1)
    log_ev = -0.5 * (dof * _LOG_2PI + 2.0 * half_logdet + nis).sum(-1)
    innov = (L_t @ dt_all.unsqueeze(-1)).squeeze(-1)
    LG = L_t @ g_all
    innov_var = (LG * L_t).sum(-1) / nm1 + L_t.square().sum(-1)  # diag(L G L^T / (N-1) + L L^T)
    nan_f = torch.tensor(float("nan"), dtype=f64, device=y.device)
    innov = torch.where(obs, innov, nan_f)
    innov_var = torch.where(obs, innov_var, nan_f)
    if check:
        check_innovations(nis, dof, variant)
    return log_ev, innov, innov_var


def _run_compiled(model, y: torch.Tensor, config: EnKFConfig, generator, noise) -> AssimilationResult:
    """:func:`run` through the compiled cycle of :mod:`bayesbridge.infer._enkf_kernel` (same records)."""
    from bayesbridge.infer._enkf_kernel import filter_records

    variant, N, T = config.variant, config.members, y.shape[-2]
    L_R, rec = filter_records(model, y, config, generator, noise=noise)
    if config.check_divergence and rec.completed < T:
        check_finite(torch.from_numpy(rec.mean[..., rec.completed, :]), rec.completed, variant, "analysis mean")
        raise FilterDivergenceError(
            f"{variant}: the forecast or innovation is not finite at time step {rec.completed}; the filter "
            f"diverged. Remedies: {REMEDIES}."
        )
    as_t = torch.from_numpy
    log_ev, innov, innov_var = _innovation_summary(
        y, as_t(rec.dt), as_t(rec.dv), as_t(rec.lamn), as_t(rec.G), torch.as_tensor(L_R, dtype=f64), N, variant,
        config.check_divergence)
    d = rec.mean.shape[-1]
    return AssimilationResult(
        method=variant,
        filtered_mean=as_t(rec.mean),
        log_evidence=log_ev,
        filtered_ensemble=None,
        diagnostics=StepDiagnostics(innovation=innov, spread=as_t(rec.norm) / math.sqrt((N - 1) * d),
                                    innovation_var=innov_var),
        config=config,
    )


def _gain_weights(lamn: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """``c = 1 / lamn`` ``(*b, 1, m)``, the robust inverse of ``G + (N-1) I`` in its eigenbasis.

    ``inversion="eigh"`` drops eigenvalues below ``truncation`` times the largest;
    ``"tikhonov"`` adds ``ridge`` times their mean before inverting.
    """
    if config.inversion == "tikhonov":
        return torch.add(lamn, lamn.mean(-1, keepdim=True), alpha=config.ridge).reciprocal()
    keep = lamn > config.truncation * lamn.amax(-1, keepdim=True)
    return torch.where(keep, lamn.reciprocal(), 0.0)


def _missing_step(HE, y_t, mask, R, fake):
    """Whitened anomalies, innovation and eigen-decomposition for a step with missing components.

    Missing components get zero anomalies and innovation and ``R`` is replaced by
    ``M R M + (I - M)``; their (zero) rows and columns of ``G`` receive distinct negative
    placeholders ``fake`` so that ``eigh`` (and its gradient) sees no repeated eigenvalue, and the
    corresponding eigenvalues are then reset to 0 (those directions carry no anomaly).
    Shapes: ``HE (*b, N, m)``, ``y_t``/``mask (*b, m)``; returns ``Yt (*b, N, m)``,
    ``dt (*b, 1, m)``, ``G (*b, m, m)``, ``lam (*b, m)``, ``V (*b, m, m)``, ``L_eff (*b, m, m)``.
    """
    mf = mask.to(f64)
    L_eff = _obs_factor(R, mask, None)
    Linv = torch.linalg.solve_triangular(L_eff, torch.eye(R.shape[-1], dtype=f64, device=R.device), upper=False)
    ybar = HE.mean(-2, keepdim=True)
    Y = (HE - ybar) * mf.unsqueeze(-2)
    dvec = torch.where(mask, y_t - ybar.squeeze(-2), 0.0).unsqueeze(-2)
    Yt = Y @ Linv.mT
    dt = dvec @ Linv.mT
    G = Yt.mT @ Yt
    lam, V = torch.linalg.eigh(G + torch.diag_embed((1.0 - mf) * fake))
    observed_dir = (V.square() * mf.unsqueeze(-1)).sum(-2) > 0.5
    lam = torch.where(observed_dir, lam.clamp_min(0.0), 0.0)
    return Yt, dt, G, lam, V, L_eff


def _check_block(means: list[torch.Tensor], lo: int, hi: int, variant: str) -> None:
    """Raise naming the first step in ``[lo, hi)`` whose analysis mean ``(*b, 1, d)`` is not finite."""
    if hi <= lo:
        return
    block = torch.cat(means[lo:hi], -2)  # (*b, hi - lo, d)
    ok = torch.isfinite(block).reshape(-1, hi - lo, block.shape[-1]).all(-1).all(0)
    if not bool(ok.all()):
        t = lo + int(torch.argmin(ok.to(torch.int8)))
        check_finite(means[t], t, variant, "analysis mean")


def _ensemble_rts(an_all: torch.Tensor, fc_all: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """Ensemble RTS smoother (Raanes 2016) on stored analysis/forecast ensembles ``(*b, T, N, d)``.

    ``G_t = X_t^{a T} X_{t+1}^f (X_{t+1}^{f T} X_{t+1}^f)^{-1}`` (robust inverse as configured),
    ``E_t^s = E_t^a + (E_{t+1}^s - E_{t+1}^f) G_t^T``. The gains of all steps are computed at once.
    """
    T = an_all.shape[-3]
    out = torch.empty_like(an_all)
    out[..., T - 1, :, :] = an_all[..., T - 1, :, :]
    if T == 1:
        return out
    Xa = an_all[..., :-1, :, :] - an_all[..., :-1, :, :].mean(-2, keepdim=True)
    Xf = fc_all[..., 1:, :, :] - fc_all[..., 1:, :, :].mean(-2, keepdim=True)
    G = (Xa.mT @ Xf) @ _sym_inverse(Xf.mT @ Xf, config)  # (*b, T-1, d, d)
    Es = out[..., T - 1, :, :]
    for t in range(T - 2, -1, -1):
        Es = an_all[..., t, :, :] + (Es - fc_all[..., t + 1, :, :]) @ G[..., t, :, :].mT
        out[..., t, :, :] = Es
    return out


def _add_matmul(E: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``E + left @ right`` in one fused (batched) BLAS call; shapes ``(*b, N, d)``, ``(*b, N, k)``, ``(*b, k, d)``."""
    if E.ndim == 2:
        return torch.addmm(E, left, right)
    shape = E.shape
    out = torch.baddbmm(E.reshape(-1, *shape[-2:]), left.reshape(-1, *left.shape[-2:]),
                        right.reshape(-1, *right.shape[-2:]))
    return out.reshape(shape)


def _store(t, E, mean_a, ens_all, smo_all, means, norms) -> None:
    """Record the analysis of step ``t`` (``E (*b, N, d)``, ``mean_a (*b, 1, d)``)."""
    means.append(mean_a)
    if ens_all is not None:
        ens_all[..., t, :, :] = E
    else:  # ||X_a||_F, turned into sqrt(tr(P_a) / d) after the loop (no torch.var two-pass kernel)
        norms.append(torch.linalg.vector_norm(E - mean_a, dim=(-2, -1)))
    if smo_all is not None:
        smo_all[..., t, :] = E
