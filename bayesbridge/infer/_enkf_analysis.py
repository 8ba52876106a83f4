"""The analysis step of the ensemble Kalman filters, in the whitened eigenbasis of the anomalies.

With the forecast ensemble ``E (*b, N, d)``, its anomalies ``X = E - mean(E)``, the whitened
observation anomalies ``Yt = (h(E) - mean h(E)) L^{-T}`` ``(*b, N, m)`` (``R = L L^T``) and the
whitened innovation ``dt = (y - mean h(E)) L^{-T}`` ``(*b, 1, m)``, every variant is computed
from one ``m x m`` eigendecomposition :math:`G = \\tilde Y^T \\tilde Y = V \\Lambda V^T`, with
``lamn = lam + N - 1`` the eigenvalues of ``G + (N-1) I``, ``U = Yt V`` and ``dv = dt V``. Each
update has the form ``mean_a = xbar + e right``, ``E_a = E + left right`` (one fused GEMM each,
:func:`add_matmul`):

* stochastic EnKF (Burgers, van Leeuwen & Evensen 1998; Evensen 2003),
  :func:`stochastic_update`: ``c`` the robust inverse of ``lamn`` (:func:`gain_weights`),
  ``e = dv c``, ``left = e + (P - mean P) c`` with ``P = eps V - U`` (``eps`` the standard
  normal observation perturbations), ``right = U^T X`` -- or, with a taper ``rho``,
  ``right = V^T L^{-1} (rho o X^T Y)^T`` (Houtekamer & Mitchell 2001);
* ETKF with the symmetric square root (Bishop, Etherton & Majumdar 2001; Hunt, Kostelich &
  Szunyogh 2007), :func:`transform_update`: ``e = dv / lamn``,
  ``left = e - U diag(1 / (lamn + sqrt((N-1) lamn)))``, ``right = U^T X``.

RTPS (Whitaker & Hamill 2012) rescales the analysis anomalies afterwards
(:func:`relax_to_prior_spread`). Missing observations are decoupled per component
(:func:`missing_step`, :func:`obs_factor`). The derivations are in the docstring of
:mod:`bayesbridge.infer.enkf`, which runs these steps in its loop over time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bayesbridge.infer.enkf_config import EnKFConfig

__all__ = [
    "add_matmul",
    "gain_weights",
    "missing_step",
    "obs_factor",
    "relax_to_prior_spread",
    "stochastic_update",
    "sym_inverse",
    "transform_update",
    "whitened_step",
]

f64 = torch.float64


def obs_factor(R: torch.Tensor, mask: torch.Tensor | None, L_full: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of ``M R M + (I - M)`` ``(*batch, m, m)`` (``L_full`` when all observed).

    ``R (m, m)`` the observation-error covariance, ``mask (*batch, m)`` True where observed (or
    None), ``L_full`` the Cholesky factor of ``R``.
    """
    if mask is None:
        return L_full
    mf = mask.to(R.dtype)
    R_eff = R * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    return torch.linalg.cholesky(R_eff)


def sym_inverse(C: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """Robust inverse of symmetric PSD ``C (*b, m, m)``: truncated eigen or Tikhonov.

    ``config.inversion="eigh"`` drops eigenvalues below ``config.truncation`` times the largest
    (pseudo-inverse); ``"tikhonov"`` adds ``config.ridge`` times the mean diagonal first.
    """
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


def gain_weights(lamn: torch.Tensor, config: EnKFConfig) -> torch.Tensor:
    """``c = 1 / lamn`` ``(*b, 1, m)``, the robust inverse of ``G + (N-1) I`` in its eigenbasis.

    ``lamn (*b, 1, m)`` are the eigenvalues; ``config.inversion="eigh"`` drops those below
    ``truncation`` times the largest; ``"tikhonov"`` adds ``ridge`` times their mean before
    inverting.
    """
    if config.inversion == "tikhonov":
        return torch.add(lamn, lamn.mean(-1, keepdim=True), alpha=config.ridge).reciprocal()
    keep = lamn > config.truncation * lamn.amax(-1, keepdim=True)
    return torch.where(keep, lamn.reciprocal(), 0.0)


def whitened_step(HE: torch.Tensor, whiten: Callable[[torch.Tensor], torch.Tensor], ones_n: torch.Tensor,
                  yw_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Whitened anomalies, innovation and eigendecomposition for a fully observed step.

    ``HE (*b, N, m)`` the observed forecast members, ``whiten`` the map ``x -> x L^{-T}``,
    ``ones_n (1, N)`` the averaging row ``1/N`` and ``yw_t (*b, 1, m)`` the whitened observation.
    Returns ``Yt (*b, N, m)``, ``dt (*b, 1, m)``, ``G = Yt^T Yt (*b, m, m)`` and its eigenvalues
    ``lam (*b, m)`` and eigenvectors ``V (*b, m, m)`` (round-off negatives of ``lam`` are
    harmless next to ``N - 1``).
    """
    HEw = whiten(HE)
    ybar = ones_n @ HEw
    Yt = HEw - ybar  # (*b, N, m) whitened anomalies
    dt = yw_t - ybar  # (*b, 1, m) whitened innovation
    G = Yt.mT @ Yt
    lam, V = torch.linalg.eigh(G)
    return Yt, dt, G, lam, V


def missing_step(HE, y_t, mask, R, fake):
    """Whitened anomalies, innovation and eigen-decomposition for a step with missing components.

    Missing components get zero anomalies and innovation and ``R`` is replaced by
    ``M R M + (I - M)``; their (zero) rows and columns of ``G`` receive distinct negative
    placeholders ``fake (m,)`` so that ``eigh`` (and its gradient) sees no repeated eigenvalue,
    and the corresponding eigenvalues are then reset to 0 (those directions carry no anomaly).
    Shapes: ``HE (*b, N, m)``, ``y_t``/``mask (*b, m)``, ``R (m, m)``; returns
    ``Yt (*b, N, m)``, ``dt (*b, 1, m)``, ``G (*b, m, m)``, ``lam (*b, m)``, ``V (*b, m, m)``,
    ``L_eff (*b, m, m)``.
    """
    mf = mask.to(f64)
    L_eff = obs_factor(R, mask, None)
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


def stochastic_update(lamn, dv, eps_o, U, V, E, config: EnKFConfig, ones_n, *, taper=None, X=None, Yt=None,
                      L_eff=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(e, left, right)`` of the perturbed-observation EnKF analysis.

    Parameters
    ----------
    lamn, dv : Tensor (*b, 1, m)
        Eigenvalues of ``G + (N-1) I`` and the whitened innovation in the eigenbasis ``V``.
    eps_o : Tensor (*b, N, m)
        Standard-normal observation perturbations (zero for missing components).
    U : Tensor (*b, N, m)
        ``Yt V`` (centred over members).
    V : Tensor (*b, m, m)
        Eigenvectors of ``G``.
    E : Tensor (*b, N, d)
        Forecast ensemble (inflated).
    config : EnKFConfig
        Inversion of ``G + (N-1) I`` (:func:`gain_weights`).
    ones_n : Tensor (1, N)
        Averaging row ``1/N``.
    taper : Tensor (d, m), optional
        Schur-product localisation of ``X^T Y``; then ``X (*b, N, d)`` (forecast anomalies),
        ``Yt (*b, N, m)`` and ``L_eff (*b, m, m)`` (the factor of the effective ``R``) are needed.

    Returns
    -------
    e : Tensor (*b, 1, m)
        ``mean_a = xbar + e right``.
    left : Tensor (*b, N, m)
        ``E_a = E + left right``: member innovations ``dt + eps_i - Yt_i`` (``eps`` centred over
        members) in the eigenbasis, times ``c``.
    right : Tensor (*b, m, d)
        ``U^T X`` (``U^T E``, since ``U`` sums to zero over members), or the tapered
        ``V^T L^{-1} (rho o X^T Y)^T``.
    """
    c = gain_weights(lamn, config)
    e = dv * c
    # member innovations L^{-1}(y + D_i - h(E_i)) = dt + eps_i - Yt_i with eps centred
    # over members, in the eigenbasis of G (U is already centred)
    P = eps_o @ V - U
    left = torch.addcmul(e, P - ones_n @ P, c)
    if taper is not None:
        m = L_eff.shape[-1]
        Linv = torch.linalg.solve_triangular(L_eff, torch.eye(m, dtype=f64, device=L_eff.device), upper=False)
        Pxy = X.mT @ (Yt @ L_eff.mT)  # (*b, d, m) = X^T Y
        right = V.mT @ Linv @ (taper * Pxy).mT
    else:
        right = U.mT @ E  # (*b, m, d) = U^T X, since U sums to zero over members
    return e, left, right


def transform_update(lamn: torch.Tensor, dv: torch.Tensor, U: torch.Tensor, E: torch.Tensor,
                     sqrt_nm1: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(e, left, right)`` of the ETKF (symmetric square root) analysis.

    ``lamn``, ``dv (*b, 1, m)`` as in :func:`stochastic_update`, ``U (*b, N, m)``, ``E (*b, N, d)``
    the forecast ensemble and ``sqrt_nm1 = sqrt(N - 1)``. ``e = dv / lamn`` gives
    ``wbar = U e``; ``W - I = U diag(cc) U^T`` with ``cc = -1 / ((N-1) s (1 + s))``,
    ``s = sqrt(lamn / (N-1))``, so ``left = e - U / (lamn + sqrt((N-1) lamn))`` ``(*b, N, m)`` and
    ``right = U^T X`` ``(*b, m, d)``. The smoother applies the same transform to past ensembles.
    """
    e = dv / lamn  # wbar = U e
    cc = torch.add(lamn, lamn.sqrt(), alpha=sqrt_nm1).reciprocal()
    left = torch.addcmul(e, U, cc, value=-1.0)  # (*b, N, m)
    right = U.mT @ E  # (*b, m, d) = U^T X, since U sums to zero over members
    return e, left, right


def relax_to_prior_spread(E: torch.Tensor, mean_a: torch.Tensor, X: torch.Tensor, alpha: float,
                          nm1: float) -> torch.Tensor:
    """RTPS (Whitaker & Hamill 2012): analysis anomalies scaled by ``alpha sigma_f / sigma_a + 1 - alpha``.

    ``E (*b, N, d)`` the analysis ensemble, ``mean_a (*b, 1, d)`` its mean, ``X (*b, N, d)`` the
    forecast anomalies, ``alpha`` in ``(0, 1]`` and ``nm1 = N - 1``; the spreads are per component.
    """
    Xa = E - mean_a
    sf = X.square().sum(-2).div(nm1).sqrt()
    sa = Xa.square().sum(-2).div(nm1).sqrt()
    factor = alpha * sf / sa.clamp_min(1e-300) + (1.0 - alpha)
    return mean_a + Xa * factor.unsqueeze(-2)


def add_matmul(E: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``E + left @ right`` in one fused (batched) BLAS call; shapes ``(*b, N, d)``, ``(*b, N, k)``, ``(*b, k, d)``."""
    if E.ndim == 2:
        return torch.addmm(E, left, right)
    shape = E.shape
    out = torch.baddbmm(E.reshape(-1, *shape[-2:]), left.reshape(-1, *left.shape[-2:]),
                        right.reshape(-1, *right.shape[-2:]))
    return out.reshape(shape)
