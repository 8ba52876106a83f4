"""Compiled (numba) analysis cycle of the EnKF/ETKF for linear-Gaussian models, run by run.

The kernel runs exactly the loop of :func:`bayesbridge.infer.enkf.run` for the case where every
step is a small, fixed sequence of dense linear algebra, so that one compiled loop replaces the
~35 small torch operations per cycle of the general path. With ``E (member, d)`` the current
ensemble, ``N`` members, ``A`` the transition, ``H`` the observation operator, ``R = L L^T`` and
``W`` the whitening (``L^{-T}``, or ``diag(R)^{-1/2}`` when ``R`` is diagonal), one cycle is

1. forecast ``F = E A^T``, ``E = F + eps L_Q^T`` with ``eps (N, d)`` the model noise after
   ``draw_perturbations``'s post-processing for ``sampling`` (``"random"``: as drawn; ``"centred"``: centred
   over members and scaled by ``sqrt(N/(N-1))``; ``"exact"``: centred, projected off the span of
   the anomalies of ``F`` with a QR factorisation and whitened by the Cholesky factor of its
   sample covariance -- second-order exact sampling, Pham 2001, Evensen 2004 -- falling back to
   ``"centred"`` when ``N - 1 < 2 d`` or the Cholesky factorisation fails);
2. multiplicative inflation ``E = xbar + infl (E - xbar)`` (Anderson & Anderson 1999);
3. whitened anomalies ``Yt = E H^T W - mean``, innovation ``dt = y_t W - mean(E H^T W)``,
   ``G = Yt^T Yt = V diag(lam) V^T``, ``lamn = lam + N - 1``, ``U = Yt V``, ``dv = dt V``;
4. ``"enkf"`` (perturbed observations, Burgers et al. 1998): ``c = 1/lamn`` with eigenvalues
   below ``truncation * max(lamn)`` dropped, ``e = dv c``, ``P = eps_o V - U``,
   ``left = e + (P - mean(P)) c``; ``"etkf"`` (symmetric square root, Bishop et al. 2001; Hunt
   et al. 2007): ``e = dv / lamn``, ``left = e - U / (lamn + sqrt((N-1) lamn))``;
5. ``right = U^T E``, ``mean_a = xbar + e right``, ``E = E + left right``.

It records, per step, what ``run`` keeps for its post-processing: ``dt``, ``dv``, ``lamn``,
``G``, the analysis mean and ``||E - mean_a||_F``. The columns of ``V`` are defined up to sign
(LAPACK's choice), so ``dv`` agrees with ``run``'s only up to the sign of each component; ``run``
uses only ``dv**2`` (normalised innovation squared). The forecast-to-observation map is applied
as one product ``E (H^T W)`` instead of ``(E H^T) W``, which changes results only at round-off.

Eligibility (:func:`eligible`): a :class:`~bayesbridge.model.LinearGaussianModel` (its own
``transition_mean``/``observe``/``transition_cov``, i.e. time-invariant ``A``, ``Q``), one run
``y (T, m)`` or a batch ``(*batch, T, m)`` (each run cycled in turn, which on one core beats the
batched torch loop, see ``docs/lab-notes.md``), no missing values, everything on the CPU and nothing requiring
grad, variant ``"enkf"`` (with the default ``inversion="eigh"``) or ``"etkf"``, a float inflation,
no taper, no RTPS and ``store_ensemble=False``. All three ``sampling`` modes are supported. Any
``noise`` callable is: :func:`filter_records` requests the numbers step by step in ``run``'s order
(``"initial"``; then per step ``"model"`` then ``"obs"``), so stateful sources such as the default
:func:`~bayesbridge.infer.ensemble_noise.generator_noise` hand out the same numbers as in ``run``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from bayesbridge.infer.ensemble_noise import BlockNoise, draw_perturbations, generator_noise

__all__ = ["CycleRecords", "Eligibility", "eligible", "linear_cycle_block", "filter_records"]

_SAMPLING = {"random": 0, "centred": 1, "exact": 2}


@dataclass(frozen=True)
class Eligibility:
    """Whether the compiled path applies; truthy when it does.

    Attributes
    ----------
    ok : bool
        ``True`` when :func:`filter_records` reproduces ``enkf.run``'s loop for these inputs.
    reason : str
        Why not (empty when ``ok``).
    """

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class CycleRecords:
    """Per-step records of a block of ``k`` cycles (numpy float64), as ``enkf.run`` keeps them.

    :func:`filter_records` returns them for a batch of runs, with the leading ``(*batch,)`` axes
    of ``y`` in front of every field but ``completed``.

    Attributes
    ----------
    dt : ndarray (k, m)
        Whitened innovation ``L^{-1} (y_t - mean(h(E^f)))``.
    dv : ndarray (k, m)
        Innovation in the eigenbasis of ``G`` (each component up to sign, see the module notes).
    lamn : ndarray (k, m)
        Eigenvalues of ``G + (N-1) I`` (ascending).
    G : ndarray (k, m, m)
        ``Yt^T Yt``, whitened forecast-anomaly Gram matrix in observation space.
    mean : ndarray (k, d)
        Analysis means (NaN from the first step whose forecast was not finite).
    norm : ndarray (k,)
        ``||E^a - mean^a||_F`` (``spread = norm / sqrt((N-1) d)``).
    ensemble : ndarray (N, d)
        Analysis ensemble after the last completed step.
    completed : int
        Number of steps completed (``k`` unless the filter diverged: then the step
        ``completed`` had a non-finite forecast or innovation and later records are NaN; for a
        batch, the first such step over the runs).
    """

    dt: np.ndarray
    dv: np.ndarray
    lamn: np.ndarray
    G: np.ndarray
    mean: np.ndarray
    norm: np.ndarray
    ensemble: np.ndarray
    completed: int


@njit(cache=True)
def _cholesky_lower(C, L):  # pragma: no cover - compiled
    """Cholesky factor ``L`` of symmetric ``C (k, k)`` in place; ``False`` if not positive definite."""
    k = C.shape[0]
    L[:, :] = 0.0
    for j in range(k):
        s = C[j, j]
        for p in range(j):
            s -= L[j, p] * L[j, p]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        L[j, j] = ljj
        for i in range(j + 1, k):
            s = C[i, j]
            for p in range(j):
                s -= L[i, p] * L[j, p]
            L[i, j] = s / ljj
    return True


@njit(cache=True)
def _exact_noise(eps, F):  # pragma: no cover - compiled
    """``draw_perturbations(..., sampling="exact", F)`` on ``eps (N, d)`` in place (see the module notes)."""
    n, k = eps.shape
    mu = np.zeros(k)
    for i in range(n):
        mu += eps[i]
    mu /= n
    for i in range(n):
        eps[i] -= mu
    if n - 1 >= 2 * k:
        Fa = F.copy()
        fm = np.zeros(F.shape[1])
        for i in range(n):
            fm += F[i]
        fm /= n
        for i in range(n):
            Fa[i] -= fm
        Qf = np.ascontiguousarray(np.linalg.qr(Fa)[0])  # (N, d) orthonormal basis of the anomaly span
        proj = np.dot(Qf, np.dot(np.ascontiguousarray(Qf.T), eps))
        eps -= proj
        C = np.dot(np.ascontiguousarray(eps.T), eps) / (n - 1)
        L = np.empty((k, k))
        if _cholesky_lower(C, L):
            # eps L^{-T}, with L^{-1} by forward substitution (k^3/6) and one GEMM
            Li = np.zeros((k, k))
            for j in range(k):
                Li[j, j] = 1.0 / L[j, j]
                for i in range(j + 1, k):
                    s = 0.0
                    for p in range(j, i):
                        s -= L[i, p] * Li[p, j]
                    Li[i, j] = s / L[i, i]
            eps[:, :] = np.dot(eps, np.ascontiguousarray(Li.T))
            return
    eps *= math.sqrt(n / (n - 1))


@njit(cache=True)
def _cycle_block(E, AT, HW, lq_T, q_diag, use_qdiag, yw, eps_model, eps_obs, infl, stochastic, sampling,
                 truncation, out_dt, out_dv, out_lamn, out_g, out_mean, out_norm):  # pragma: no cover - compiled
    """Run ``k = yw.shape[0]`` cycles on ``E (N, d)`` in place; returns the number completed.

    ``AT (d, d) = A^T``, ``HW (d, m) = H^T W``, ``lq_T (d, d) = L_Q^T`` (or ``q_diag (d,)`` when
    ``use_qdiag``), ``yw (k, m)`` whitened observations, ``eps_model (k, N, d)`` and
    ``eps_obs (k, N, m)`` raw standard normals (``eps_obs`` unused unless ``stochastic``).
    """
    N, d = E.shape
    k, m = yw.shape
    nm1 = float(N - 1)
    sqrt_nm1 = math.sqrt(nm1)
    inflate = infl != 1.0
    xbar = np.empty(d)
    ybar = np.empty(m)
    dt = np.empty(m)
    c = np.empty(m)
    e = np.empty(m)
    left = np.empty((N, m))
    pbar = np.empty(m)
    for t in range(k):
        F = np.dot(E, AT)
        eps = eps_model[t].copy()
        if sampling == 1:
            mu = np.zeros(d)
            for i in range(N):
                mu += eps[i]
            mu /= N
            scale = math.sqrt(N / (N - 1.0))
            for i in range(N):
                eps[i] = (eps[i] - mu) * scale
        elif sampling == 2:
            _exact_noise(eps, F)
        if use_qdiag:
            for i in range(N):
                for j in range(d):
                    E[i, j] = F[i, j] + eps[i, j] * q_diag[j]
        else:
            E[:, :] = F + np.dot(eps, lq_T)
        xbar[:] = 0.0
        for i in range(N):
            xbar += E[i]
        xbar /= N
        if inflate:  # torch.lerp(xbar, E, w) for w >= 0.5: E - (E - xbar) (1 - w)
            for i in range(N):
                for j in range(d):
                    E[i, j] = E[i, j] - (E[i, j] - xbar[j]) * (1.0 - infl)
        Yt = np.dot(E, HW)  # (N, m)
        ybar[:] = 0.0
        for i in range(N):
            ybar += Yt[i]
        ybar /= N
        for i in range(N):
            Yt[i] -= ybar
        for j in range(m):
            dt[j] = yw[t, j] - ybar[j]
        G = np.dot(np.ascontiguousarray(Yt.T), Yt)
        if not (np.isfinite(G).all() and np.isfinite(dt).all()):
            out_mean[t:] = np.nan
            out_dt[t:] = np.nan
            out_dv[t:] = np.nan
            out_lamn[t:] = np.nan
            out_g[t:] = np.nan
            out_norm[t:] = np.nan
            return t
        lam, V = np.linalg.eigh(G)
        lamn = lam + nm1
        U = np.dot(Yt, V)  # (N, m), centred over members
        dv = np.dot(dt, V)
        out_dt[t] = dt
        out_dv[t] = dv
        out_lamn[t] = lamn
        out_g[t] = G
        if stochastic:
            top = lamn.max()
            for j in range(m):
                c[j] = 1.0 / lamn[j] if lamn[j] > truncation * top else 0.0
                e[j] = dv[j] * c[j]
            P = np.dot(eps_obs[t], V) - U
            pbar[:] = 0.0
            for i in range(N):
                pbar += P[i]
            pbar /= N
            for i in range(N):
                for j in range(m):
                    left[i, j] = e[j] + (P[i, j] - pbar[j]) * c[j]
        else:
            for j in range(m):
                e[j] = dv[j] / lamn[j]
                c[j] = 1.0 / (lamn[j] + sqrt_nm1 * math.sqrt(lamn[j]))
            for i in range(N):
                for j in range(m):
                    left[i, j] = e[j] - U[i, j] * c[j]
        right = np.dot(np.ascontiguousarray(U.T), E)  # (m, d) = U^T X
        mean_a = xbar + np.dot(e, right)
        E += np.dot(left, right)
        s = 0.0
        for i in range(N):
            for j in range(d):
                r = E[i, j] - mean_a[j]
                s += r * r
        out_mean[t] = mean_a
        out_norm[t] = math.sqrt(s)
    return k


@njit(cache=True)
def _cycle_runs(E, AT, HW, lq_T, q_diag, use_qdiag, yw, eps_model, eps_obs, infl, stochastic, sampling,
                truncation, out_dt, out_dv, out_lamn, out_g, out_mean, out_norm, completed):  # pragma: no cover
    """:func:`_cycle_block` for each of ``B`` independent runs; ``completed (B,)`` receives its result.

    ``E (B, N, d)``, ``yw (B, k, m)``, ``eps_model (B, k, N, d)``, ``eps_obs (B, k, N, m)`` (or
    ``(B, k, 1, m)``, unused, for the ETKF) and the outputs ``(B, k, ...)``; the shared operators
    are as in :func:`_cycle_block`.
    """
    for b in range(E.shape[0]):
        completed[b] = _cycle_block(E[b], AT, HW, lq_T, q_diag, use_qdiag, yw[b], eps_model[b], eps_obs[b], infl,
                                    stochastic, sampling, truncation, out_dt[b], out_dv[b], out_lamn[b], out_g[b],
                                    out_mean[b], out_norm[b])


def _operators(A: np.ndarray, HW: np.ndarray, L_Q: np.ndarray) -> tuple:
    """The shared operators of :func:`_cycle_block`: ``(A^T, HW, L_Q^T, diag(L_Q), L_Q is diagonal)``."""
    q_diag = np.ascontiguousarray(np.diagonal(L_Q))
    return (np.ascontiguousarray(A.T), HW, np.ascontiguousarray(L_Q.T), q_diag,
            bool(np.array_equal(L_Q, np.diag(q_diag))))


def _f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float64)


def linear_cycle_block(
    E, A, HW, L_Q, yw, eps_model, eps_obs=None, *, inflation: float = 1.0, variant: str = "enkf",
    sampling: str = "random", truncation: float = 1e-10,
) -> CycleRecords:
    """Run a block of ``k`` EnKF/ETKF cycles of a linear-Gaussian model in compiled code.

    Parameters
    ----------
    E : array (N, d)
        Ensemble before the block (analysis of the previous step, or the initial ensemble); not
        modified.
    A : array (d, d)
        Transition matrix (``F = E A^T``).
    HW : array (d, m)
        ``H^T W``: observation operator followed by the whitening ``W`` that ``run`` applies
        (``L_R^{-T}``, or ``diag(R)^{-1/2}`` for diagonal ``R``), so ``Yt = E HW - mean``.
    L_Q : array (d, d)
        Model-error factor, ``L_Q L_Q^T = Q`` (``linalg.psd_sqrt(Q)``); a diagonal factor is
        applied elementwise.
    yw : array (k, m)
        Whitened observations ``y_t W`` of the block (no missing values).
    eps_model : array (k, N, d)
        Raw standard normals ``noise("model", t, (N, d))`` of each step, before ``draw_perturbations``'s
        post-processing (done here, since ``"exact"`` needs the forecast).
    eps_obs : array (k, N, m), optional
        Raw standard normals ``noise("obs", t, (N, m))`` (``variant="enkf"`` only).
    inflation : float
        Multiplicative inflation ``>= 1``.
    variant : {"enkf", "etkf"}
    sampling : {"random", "centred", "exact"}
    truncation : float
        Relative eigenvalue cut-off of the stochastic EnKF's inverse (``EnKFConfig.truncation``).

    Returns
    -------
    CycleRecords
        Per-step records and the ensemble after the block.
    """
    if variant not in ("enkf", "etkf"):
        raise ValueError(f"variant: expected 'enkf' or 'etkf', got {variant!r}.")
    E = _f64(E).copy()
    A, HW, L_Q, yw, eps_model = (_f64(v) for v in (A, HW, L_Q, yw, eps_model))
    k, m = yw.shape
    N, d = E.shape
    stochastic = variant == "enkf"
    eps_obs = _f64(eps_obs) if stochastic else np.zeros((k, 1, m))
    rec = CycleRecords(np.empty((k, m)), np.empty((k, m)), np.empty((k, m)), np.empty((k, m, m)),
                       np.empty((k, d)), np.empty(k), E, 0)
    rec.completed = int(_cycle_block(
        E, *_operators(A, HW, L_Q), yw, eps_model, eps_obs, float(inflation), stochastic, _SAMPLING[sampling],
        float(truncation),
        rec.dt, rec.dv, rec.lamn, rec.G, rec.mean, rec.norm,
    ))
    return rec


def _run_major(eps, B: int) -> np.ndarray:
    """``(k, *batch, N, w)`` noise as a contiguous ``(B, k, N, w)`` float64 array (one copy)."""
    eps = np.asarray(eps, dtype=np.float64)
    k, N, w = eps.shape[0], eps.shape[-2], eps.shape[-1]
    return np.ascontiguousarray(eps.reshape(k, B, N, w).swapaxes(0, 1))


def _noise_segment(noise, lo: int, hi: int, shapes: dict[str, tuple]) -> tuple[dict[str, np.ndarray], int]:
    """Raw standard normals ``(k, *shape)`` of each kind for steps ``lo..`` and the end of the segment.

    Requests are made in ``run``'s order (for each step, the kinds in the order of ``shapes``).
    For the default block source (:func:`~bayesbridge.infer.ensemble_noise.generator_noise` with
    ``n_steps``) the first request of ``lo`` draws any new block exactly as ``run`` would, and the
    segment is cut where the first of the current blocks ends, so that no draw happens inside it
    in ``run`` either; the blocks are then returned as views, without a per-step call or copy.
    Any other source is called step by step up to ``hi`` and the results stacked.
    """
    if isinstance(noise, BlockNoise) and noise.n_steps is not None:
        for kind, shape in shapes.items():
            noise(kind, lo, shape)  # draws a new block of this kind if lo is not covered
        ends = [noise.blocks[kind][0] + noise.blocks[kind][1].shape[0] for kind in shapes]
        hi = min(hi, *ends)
        out = {}
        for kind in shapes:
            start, blk = noise.blocks[kind]
            out[kind] = blk[lo - start : hi - start].numpy()
        return out, hi
    out = {kind: np.empty((hi - lo, *shape)) for kind, shape in shapes.items()}
    for t in range(lo, hi):
        for kind, shape in shapes.items():
            out[kind][t - lo] = np.asarray(noise(kind, t, shape), dtype=np.float64)
    return out, hi


def eligible(model, config, y, noise=None) -> Eligibility:
    """Whether :func:`filter_records` reproduces ``enkf.run(model, y, config, ...)``.

    Conditions: ``model`` is a :class:`~bayesbridge.model.LinearGaussianModel` whose
    ``transition_mean``, ``transition_cov``, ``observe``, ``obs_cov`` and ``initial`` are the
    class's own (time-invariant linear); its tensors and ``y`` are float64 on the CPU and none
    requires grad; ``y`` ``(*batch, T, m)`` (one run or a batch of runs) has no NaN;
    ``config.variant`` is ``"enkf"`` (with ``inversion="eigh"``) or ``"etkf"``; ``inflation`` is a
    float (or a 0-dim tensor not requiring grad); no ``taper``; ``rtps == 0``; ``store_ensemble``
    is False. Any sampling mode and any ``noise`` callable (CPU tensors) are supported.
    """
    from bayesbridge.model import LinearGaussianModel

    def no(reason: str) -> Eligibility:
        return Eligibility(False, reason)

    if not isinstance(model, LinearGaussianModel):
        return no("model is not a LinearGaussianModel")
    cls = type(model)
    for name in ("transition_mean", "transition_cov", "observe", "obs_cov", "initial"):
        if getattr(cls, name) is not getattr(LinearGaussianModel, name):
            return no(f"model overrides {name}")
    tensors = [getattr(model, k) for k in ("A", "Q", "H", "R", "m0", "P0")]
    if not isinstance(y, torch.Tensor):
        return no("y is not a tensor")
    for x in (*tensors, y):
        if x.device.type != "cpu" or x.requires_grad or x.dtype != torch.float64:
            return no("an input is not a float64 CPU tensor without grad")
    if y.ndim < 2:
        return no("y is not a (*batch, T, m) series")
    if bool(torch.isnan(y).any()):
        return no("y has missing values")
    if config.variant not in ("enkf", "etkf"):
        return no(f"variant {config.variant!r}")
    if config.variant == "enkf" and config.inversion != "eigh":
        return no(f"inversion {config.inversion!r}")
    infl = config.inflation
    if isinstance(infl, torch.Tensor) and infl.requires_grad:
        return no("inflation requires grad")
    if config.taper is not None:
        return no("taper")
    if config.rtps != 0.0:
        return no("rtps")
    if config.store_ensemble:
        return no("store_ensemble")
    return Eligibility(True)


def filter_records(model, y: torch.Tensor, config, generator: torch.Generator, *, noise=None,
                   block: int = 512) -> tuple[np.ndarray, CycleRecords]:
    """The whole loop of ``enkf.run`` for an eligible case (:func:`eligible`), in blocks of cycles.

    Builds the initial ensembles as ``run`` does (in torch), requests the noise in ``run``'s
    order and shapes (``"model"`` then ``"obs"`` for each step, ``(*batch, N, .)``; see
    :func:`_noise_segment`: the default block source is read block by block without per-step
    calls) and cycles every run through :func:`_cycle_block` on segments of at most ``block``
    steps. The caller turns the records into the log-evidence and diagnostics with ``run``'s
    post-processing, and raises :class:`~bayesbridge.errors.FilterDivergenceError` naming step
    ``completed`` when ``completed < T`` (the means are NaN from there, so ``run``'s
    ``_check_block`` finds it).

    Parameters
    ----------
    model : LinearGaussianModel
    y : Tensor (*batch, T, m)
    config : EnKFConfig
    generator : torch.Generator
        Seeds :func:`~bayesbridge.infer.ensemble_noise.generator_noise` when ``noise`` is None.
    noise : callable, optional
        ``noise(kind, step, shape)`` as in ``run``.
    block : int
        Steps per compiled call.

    Returns
    -------
    L_R : ndarray (m, m)
        Cholesky factor of ``R`` (for the log-evidence and innovation post-processing).
    CycleRecords
        Records of all ``T`` steps with the leading ``(*batch,)`` axes (``completed < T`` if a
        run diverged: the first step at which one did).
    """
    from bayesbridge.infer.linalg import psd_sqrt as _psd_sqrt

    f64 = torch.float64
    N = config.members
    batch, (T, m) = tuple(y.shape[:-2]), tuple(y.shape[-2:])
    B = math.prod(batch)
    m0, P0 = (torch.as_tensor(v, dtype=f64) for v in model.initial())
    d = m0.shape[-1]
    R = torch.as_tensor(model.obs_cov(), dtype=f64)
    L_R = torch.linalg.cholesky(R)
    if noise is None:
        noise = generator_noise(generator, n_steps=T, device="cpu")  # run: device=y.device (the CPU here)
    if bool((R == torch.diag_embed(R.diagonal())).all()):
        W = torch.diag_embed(R.diagonal().rsqrt())
        yw = y * R.diagonal().rsqrt()
    else:
        W = torch.linalg.solve_triangular(L_R, torch.eye(m, dtype=f64), upper=False).mT
        yw = y @ W
    HW = (model.H.mT @ W).numpy()
    L_Q = _psd_sqrt(torch.as_tensor(model.transition_cov(0), dtype=f64)).numpy()
    ops = _operators(model.A.numpy(), HW, L_Q)
    E0 = m0 + draw_perturbations(noise, "initial", 0, (*batch, N, d), config.sampling, None) @ _psd_sqrt(P0).mT
    E = np.ascontiguousarray(E0.reshape(B, N, d).numpy())
    yw = np.ascontiguousarray(yw.reshape(B, T, m).numpy())
    stochastic = config.variant == "enkf"
    shapes = {"model": (*batch, N, d), "obs": (*batch, N, m)} if stochastic else {"model": (*batch, N, d)}
    fields = {"dt": (m,), "dv": (m,), "lamn": (m,), "G": (m, m), "mean": (d,), "norm": ()}
    out = {f: np.full((B, T, *shape), np.nan) for f, shape in fields.items()}
    first_bad = T
    lo = 0
    while lo < T:
        eps, hi = _noise_segment(noise, lo, min(T, lo + block), shapes)
        k = hi - lo
        em = _run_major(eps["model"], B)
        eo = _run_major(eps["obs"], B) if stochastic else np.zeros((B, k, 1, m))
        seg = {f: np.empty((B, k, *shape)) for f, shape in fields.items()}
        done = np.empty(B, dtype=np.int64)
        _cycle_runs(E, *ops, yw[:, lo:hi], em, eo, float(config.inflation), stochastic, _SAMPLING[config.sampling],
                    float(config.truncation), seg["dt"], seg["dv"], seg["lamn"], seg["G"], seg["mean"], seg["norm"],
                    done)
        for f in fields:
            out[f][:, lo:hi] = seg[f]
        bad = done < k
        if bad.any():  # a diverged run stays NaN (as in the torch loop); the others go on
            E[bad] = np.nan
            first_bad = min(first_bad, lo + int(done.min()))
        lo = hi
    rec = {f: v.reshape(*batch, T, *fields[f]) for f, v in out.items()}
    return L_R.numpy(), CycleRecords(**rec, ensemble=E.reshape(*batch, N, d), completed=first_bad)
