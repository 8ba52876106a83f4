"""Linear inverse model (LIM): least-squares AR(1) latent dynamics with Gaussian noise.

.. math:: z_t = A_{m(t)} z_{t-1} + w_t, \\qquad w_t \\sim N(0, Q_{m(t)}),

fitted by (ridge-regularised) least squares on consecutive pairs,

.. math:: \\hat A = Z_1^\\top Z_0 (Z_0^\\top Z_0 + \\lambda I)^{-1}, \\qquad
          \\hat Q = \\frac{1}{n - d} \\sum_t (z_t - \\hat A z_{t-1})(z_t - \\hat A z_{t-1})^\\top,

(Penland & Sardeshmukh 1995, *J. Climate* 8, 1999-2024, in its discrete-time form). With
``seasonal=True`` a separate :math:`(A_m, Q_m)` is fitted for each calendar month ``m`` of the
*target* time (cyclostationary LIM, Shin et al. 2021, *J. Climate* 34, 5163); the stationary
pair is kept for ``step=None``.

Calendar: step ``s`` of a run falls in month ``(start_month - 1 + s) % 12 + 1``. ``fit`` sets
``start_month`` to the month of the first fitted time; set the attribute (or pass
``start_month=`` to :meth:`LinearInverseModel.simulate`) to start a new run elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import xarray as xr

from bayesbridge.errors import NotFittedError, ParameterError, TimeAxisError
from bayesbridge.latent.simulate import FreeRunMixin, latent_series, month_of_step

__all__ = ["LinearInverseModel", "fit_ar1"]


def fit_ar1(z0: np.ndarray, z1: np.ndarray, ridge: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``A (d, d)`` and residual covariance ``Q (d, d)`` from pairs ``z0, z1 (n, d)``.

    ``ridge`` is the Tikhonov parameter added to the Gram matrix ``z0^T z0``.
    """
    n, d = z0.shape
    gram = z0.T @ z0 + ridge * np.eye(d)
    a = scipy.linalg.solve(gram, z0.T @ z1, assume_a="pos").T
    resid = z1 - z0 @ a.T
    q = resid.T @ resid / max(n - d, 1)
    return a, 0.5 * (q + q.T)


@dataclass
class LinearInverseModel(FreeRunMixin):
    """AR(1) latent dynamics, optionally cyclostationary by calendar month.

    Parameters
    ----------
    seasonal : bool
        Fit one ``(A, Q)`` per calendar month of the target time.
    ridge : float
        Tikhonov parameter ``lambda`` of the least-squares fit.
    start_month : int, optional
        Calendar month (1..12) of step 0; set by :meth:`fit` from the first fitted time.
    noise_prior_dof : float, optional
        ``seasonal`` only: degrees of freedom :math:`\\kappa` of the pooled noise covariance in
        each month's (default ``None``: :math:`d + 2`; ``0`` keeps the raw monthly estimates).
        Month :math:`m` has :math:`\nu_m = n_m - d` residual degrees of freedom, and its noise
        covariance is the posterior mean under an inverse-Wishart prior centred on the pooled
        :math:`Q` (Friedman 1989, *JASA* 84, 165-175, regularised discriminant analysis),

        .. math:: Q_m = \frac{\nu_m \\hat Q_m + \\kappa Q}{\nu_m + \\kappa}.

        With few years the raw :math:`\\hat Q_m` is near-singular (rank at most :math:`\nu_m`;
        eigenvalues of 1e-16 with 40 years and :math:`d = 20`), which no Kalman filter minds but
        which collapses the backward kernel of a particle smoother.

    Attributes
    ----------
    A, Q : torch.Tensor
        After :meth:`fit`: ``(latent, latent)`` float64 stationary transition matrix and noise
        covariance.
    A_monthly, Q_monthly : torch.Tensor or None
        After :meth:`fit`: ``(12, latent, latent)``, index ``m - 1`` for calendar month ``m``
        (seasonal only).
    """

    seasonal: bool = False
    ridge: float = 0.0
    start_month: int | None = None
    noise_prior_dof: float | None = None

    def __post_init__(self) -> None:
        if self.ridge < 0:
            raise ParameterError(f"ridge: expected >= 0, got {self.ridge}.")
        if self.noise_prior_dof is not None and not (np.isfinite(self.noise_prior_dof) and self.noise_prior_dof >= 0):
            raise ParameterError(
                f"noise_prior_dof: expected None (latent size + 2) or a finite number >= 0, got {self.noise_prior_dof!r}."
            )
        self.A: torch.Tensor | None = None
        self.Q: torch.Tensor | None = None
        self.A_monthly: torch.Tensor | None = None
        self.Q_monthly: torch.Tensor | None = None
        self._chol: torch.Tensor | None = None
        self._chol_monthly: torch.Tensor | None = None

    @property
    def latent_dim(self) -> int:
        """Latent size ``d``."""
        return int(self._require().shape[0])

    def _require(self) -> torch.Tensor:
        if self.A is None:
            raise NotFittedError("LinearInverseModel: call .fit(z) before using the dynamics.")
        return self.A

    def fit(self, z: xr.DataArray) -> LinearInverseModel:
        """Fit on a latent series ``(time, latent)`` (e.g. ``codec.encode(fields)``).

        Least squares on consecutive pairs, :math:`A = Z_1^\\top Z_0 (Z_0^\\top Z_0 + \\lambda I)^{-1}`
        and :math:`Q` the residual covariance (divided by ``n - d``); with ``seasonal`` also one
        ``(A, Q)`` per calendar month of the target time, from that month's transitions.

        Parameters
        ----------
        z : xarray.DataArray
            Latent series on ``(time, latent)`` with at least ``d + 2`` steps; ``seasonal=True``
            needs a datetime (or cftime) ``time`` coordinate and ``d + 2`` transitions per month.

        Returns
        -------
        LinearInverseModel
            ``self``, fitted.
        """
        d = z.sizes.get("latent", 1) if isinstance(z, xr.DataArray) else 1
        series = latent_series(z, min_steps=d + 2)
        x = series.values
        a, q = fit_ar1(x[:-1], x[1:], self.ridge)
        self.A, self.Q = torch.from_numpy(a), torch.from_numpy(q)
        self._chol = _safe_cholesky(self.Q)
        if self.start_month is None:
            self.start_month = series.start_month
        if self.seasonal:
            if series.months is None:
                raise TimeAxisError(
                    "z: seasonal=True needs a datetime (or cftime) time coordinate to know the "
                    "calendar month of each step; pass codec.encode output or use seasonal=False."
                )
            target = series.months[1:]
            a_m, q_m = np.empty((12, d, d)), np.empty((12, d, d))
            for m in range(1, 13):
                sel = np.nonzero(target == m)[0]
                if sel.size < d + 2:
                    raise ParameterError(
                        f"seasonal: calendar month {m} has {sel.size} transitions, fewer than the "
                        f"{d + 2} a per-month fit of a {d}-dimensional LIM needs; use more years, "
                        f"a smaller latent, ridge > 0 or seasonal=False."
                    )
                a_m[m - 1], q_m[m - 1] = fit_ar1(x[sel], x[sel + 1], self.ridge)
                nu, kappa = max(sel.size - d, 1), float(d + 2 if self.noise_prior_dof is None else self.noise_prior_dof)
                q_m[m - 1] = (nu * q_m[m - 1] + kappa * q) / (nu + kappa)
            self.A_monthly, self.Q_monthly = torch.from_numpy(a_m), torch.from_numpy(q_m)
            self._chol_monthly = torch.stack([_safe_cholesky(q) for q in self.Q_monthly])
        return self

    def _month_index(self, step: int | None) -> int | None:
        if step is None or not self.seasonal:
            return None
        return month_of_step(self.start_month or 1, step) - 1

    def transition_matrix(self, step: int | None = None) -> torch.Tensor:
        """``A_{m(step)}`` ``(latent, latent)`` float64 (stationary ``A`` when ``step`` is None)."""
        self._require()
        m = self._month_index(step)
        return self.A if m is None else self.A_monthly[m]

    def noise_covariance(self, step: int | None = None) -> torch.Tensor:
        """``Q_{m(step)}`` ``(latent, latent)`` float64."""
        self._require()
        m = self._month_index(step)
        return self.Q if m is None else self.Q_monthly[m]

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``A_{m(step)} z``: ``(*batch, latent) -> (*batch, latent)`` in ``z``'s dtype/device."""
        a = self.transition_matrix(step).to(dtype=z.dtype, device=z.device)
        return z @ a.T

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """Cholesky factor ``(latent, latent)`` float64 of ``Q_{m(step)}``."""
        self._require()
        m = self._month_index(step)
        return self._chol if m is None else self._chol_monthly[m]

    @property
    def spectral_radius(self) -> float:
        """Largest eigenvalue modulus of the stationary ``A`` (< 1 for a stable model)."""
        return float(np.max(np.abs(np.linalg.eigvals(self._require().numpy()))))

    def stationary_covariance(self) -> torch.Tensor:
        """``(latent, latent)`` solution of ``P = A P A^T + Q`` for the stationary model."""
        self._require()
        return torch.from_numpy(
            scipy.linalg.solve_discrete_lyapunov(self.A.numpy(), self.Q.numpy())
        )


def _safe_cholesky(q: torch.Tensor) -> torch.Tensor:
    """Cholesky factor with a tiny diagonal jitter when ``q`` is only semi-definite."""
    jitter = 0.0
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(q + jitter * eye)
        if int(info) == 0:
            return chol
        jitter = max(jitter * 10, 1e-10 * float(torch.diagonal(q).mean().clamp_min(1e-300)))
    raise ParameterError(
        "Q: the fitted noise covariance is not positive definite even with jitter; the latent "
        "series is degenerate (constant or collinear components)."
    )
