"""Parameters of the multiscale stochastic conceptual ENSO model (2024 recalibration).

The model of Chen, Fang & Yu (2022, npj Clim. Atmos. Sci. 5:16) with the parameter values of its
J. Climate recalibration (2024, doi:10.1175/JCLI-D-24-0017.1). Everything is non-dimensional;
one time unit is two months. Most coefficients derive from the single factor ``f`` (0.65):

.. math::

    \\alpha_2 = 0.125 f,\\quad \\alpha_1 = \\alpha_2 f / 2,\\quad
    \\delta_u = \\alpha_1 b_0 \\mu,\\quad \\delta_h = \\alpha_2 b_0 \\mu,\\quad r = 0.25 f,

    \\gamma_C = \\gamma_E = 0.75 f,\\quad r_C = \\zeta_C = \\gamma_C b_0 \\mu / 2,\\quad
    r_E = 3 \\gamma_E b_0 \\mu / 2,\\quad \\zeta_E = \\gamma_E b_0 \\mu / 2,\\quad C_u = 0.03 f.

The fields of :class:`ENSOParameters` are the primary, physically interpretable knobs (the ones
the calibration perturbs); the derived coefficients are read-only properties.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, get_args

import numpy as np

from bayesbridge.errors import InputTypeError, ParameterError

__all__ = ["ENSOParameters", "Variant", "SCALES", "SIGMA_E_FILTER_COEF"]

Variant = Literal["default", "sigma_e"]
"""``"default"``: sigma_E = 0 (the 2024 model); ``"sigma_e"``: sigma_E = sqrt(5) 1e-2 sqrt(f),
the variant that keeps a filter well posed (noise on every SST equation)."""

SIGMA_E_FILTER_COEF: float = math.sqrt(5.0) * 1e-2
"""Coefficient of sqrt(f) in sigma_E for the ``"sigma_e"`` variant."""

SCALES: dict[str, float] = {"T_C": 7.5, "T_E": 7.5, "h_W": 150.0, "u": 1.5, "tau": 5.0, "I": 1.0}
"""Factors from non-dimensional model units to degC, m, m/s, m/s (and I unchanged)."""

_NONNEGATIVE = ("sigma_u_coef", "sigma_h_coef", "sigma_c_coef", "noise_scale", "wind_amp")
_POSITIVE = ("f", "b0", "mu", "d_tau", "lam", "beta_e_coef")


@dataclass(frozen=True)
class ENSOParameters:
    """Validated parameters of :class:`~bayesbridge.idealized.MultiscaleENSO`.

    Parameters
    ----------
    f : float
        Overall factor of the 2024 recalibration (0.65); scales damping, coupling and noise.
    b0, mu : float
        Thermocline-tilt coefficient b_0 = 2.5 and coupling mu = 0.5.
    d_tau : float
        Damping of the wind bursts tau (2).
    lam : float
        Damping lambda of the Walker-circulation index I (2/60).
    m : float
        Mean of I, in [0, 4] (2).
    wind_amp : float
        Wind-burst amplitude: sigma_tau = wind_amp [tanh(7.5 T_C) + 1][1 + 0.3 cos(2 pi t/6 + 2 pi/6)]
        (0.9).
    beta_e_coef : float
        beta_E = beta_e_coef sqrt(f) (2 - I/5) (0.15); beta_u = -0.2 beta_E, beta_h = -0.4 beta_E,
        beta_C = 0.8 beta_E.
    sigma_u_coef, sigma_h_coef, sigma_c_coef : float
        sigma_u, sigma_h, sigma_C = coef sqrt(f) (0.04, 0.02, 0.04).
    noise_scale : float
        Common multiplier of sigma_u, sigma_h, sigma_C and sigma_E (1); the calibration's
        "noise amplitude".
    variant : {"default", "sigma_e"}
        sigma_E = 0 (default) or sqrt(5) 1e-2 sqrt(f).

    Raises
    ------
    ParameterError
        Non-positive damping/coupling (f, b0, mu, d_tau, lam, beta_e_coef), negative noise,
        m outside [0, 4] or an unknown variant.
    """

    f: float = 0.65
    b0: float = 2.5
    mu: float = 0.5
    d_tau: float = 2.0
    lam: float = 2.0 / 60.0
    m: float = 2.0
    wind_amp: float = 0.9
    beta_e_coef: float = 0.15
    sigma_u_coef: float = 0.04
    sigma_h_coef: float = 0.02
    sigma_c_coef: float = 0.04
    noise_scale: float = 1.0
    variant: Variant = "default"

    def __post_init__(self) -> None:
        for fl in fields(self):
            if fl.name == "variant":
                continue
            value = getattr(self, fl.name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
                raise InputTypeError(
                    f"ENSOParameters.{fl.name}: expected a real number, received "
                    f"{type(value).__name__} {value!r}; pass a float."
                )
            if not math.isfinite(float(value)):
                raise ParameterError(
                    f"ENSOParameters.{fl.name}: expected a finite number, received {value!r}."
                )
            object.__setattr__(self, fl.name, float(value))
        for name in _POSITIVE:
            if getattr(self, name) <= 0.0:
                raise ParameterError(
                    f"ENSOParameters.{name}: expected a positive value (a damping or coupling "
                    f"coefficient), received {getattr(self, name)!r}; use a value > 0."
                )
        for name in _NONNEGATIVE:
            if getattr(self, name) < 0.0:
                raise ParameterError(
                    f"ENSOParameters.{name}: expected a non-negative noise amplitude, received "
                    f"{getattr(self, name)!r}; use a value >= 0."
                )
        if not 0.0 <= self.m <= 4.0:
            raise ParameterError(
                f"ENSOParameters.m: expected the mean of the Walker index I inside [0, 4] (I is "
                f"uniform on [0, 4]), received {self.m!r}; use e.g. m=2."
            )
        if self.variant not in get_args(Variant):
            raise ParameterError(
                f"ENSOParameters.variant: expected one of {list(get_args(Variant))}, received "
                f"{self.variant!r}."
            )

    # ----------------------------------------------------------------- derived coefficients
    @property
    def alpha_2(self) -> float:
        """alpha_2 = 0.125 f, the SST-forcing factor of the h_W equation (delta_h = alpha_2 b_0 mu)."""
        return 0.125 * self.f

    @property
    def alpha_1(self) -> float:
        """alpha_1 = alpha_2 f / 2, the SST-forcing factor of the u equation (delta_u = alpha_1 b_0 mu)."""
        return self.alpha_2 * self.f / 2.0

    @property
    def delta_u(self) -> float:
        """delta_u = alpha_1 b_0 mu, response of the current u to the mean SST (T_C + T_E)/2."""
        return self.alpha_1 * self.b0 * self.mu

    @property
    def delta_h(self) -> float:
        """delta_h = alpha_2 b_0 mu, response of the thermocline h_W to the mean SST (T_C + T_E)/2."""
        return self.alpha_2 * self.b0 * self.mu

    @property
    def r(self) -> float:
        """r = 0.25 f, linear damping of u and h_W."""
        return 0.25 * self.f

    @property
    def gamma(self) -> float:
        """gamma_C = gamma_E = 0.75 f."""
        return 0.75 * self.f

    @property
    def r_c(self) -> float:
        """r_C = gamma_C b_0 mu / 2, linear growth rate of T_C (before the damping c_1)."""
        return self.gamma * self.b0 * self.mu / 2.0

    @property
    def zeta_c(self) -> float:
        """zeta_C = gamma_C b_0 mu / 2, coupling of T_E into the T_C equation."""
        return self.gamma * self.b0 * self.mu / 2.0

    @property
    def r_e(self) -> float:
        """r_E = 3 gamma_E b_0 mu / 2, linear growth rate of T_E (before the seasonal damping c_2)."""
        return 3.0 * self.gamma * self.b0 * self.mu / 2.0

    @property
    def zeta_e(self) -> float:
        """zeta_E = gamma_E b_0 mu / 2, coupling of T_C into the T_E equation (with a minus sign)."""
        return self.gamma * self.b0 * self.mu / 2.0

    @property
    def c_u(self) -> float:
        """C_u = 0.03 f, constant forcing of the T_C equation."""
        return 0.03 * self.f

    @property
    def sigma_u(self) -> float:
        """sigma_u = noise_scale sigma_u_coef sqrt(f), noise amplitude of u."""
        return self.noise_scale * self.sigma_u_coef * math.sqrt(self.f)

    @property
    def sigma_h(self) -> float:
        """sigma_h = noise_scale sigma_h_coef sqrt(f), noise amplitude of h_W."""
        return self.noise_scale * self.sigma_h_coef * math.sqrt(self.f)

    @property
    def sigma_c(self) -> float:
        """sigma_C = noise_scale sigma_c_coef sqrt(f), noise amplitude of T_C."""
        return self.noise_scale * self.sigma_c_coef * math.sqrt(self.f)

    @property
    def sigma_e(self) -> float:
        """sigma_E, noise amplitude of T_E: 0 (``"default"``) or noise_scale sqrt(5) 1e-2 sqrt(f) (``"sigma_e"``)."""
        coef = SIGMA_E_FILTER_COEF if self.variant == "sigma_e" else 0.0
        return self.noise_scale * coef * math.sqrt(self.f)

    def replace(self, **changes: float | str) -> ENSOParameters:
        """A validated copy with some fields changed.

        Parameters
        ----------
        **changes : float or str
            New values of primary fields by name (e.g. ``f=0.7``, ``variant="sigma_e"``);
            validated as in the constructor.

        Returns
        -------
        ENSOParameters
        """
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float | str]:
        """The primary fields as a plain dict (for netCDF attributes and JSON)."""
        return asdict(self)

    def kernel_vector(self) -> np.ndarray:
        """Coefficients packed for the compiled kernel, shape ``(20,)`` float64.

        Order: delta_u, delta_h, r, gamma_C, gamma_E, r_C, zeta_C, r_E, zeta_E, C_u, d_tau,
        lambda, m, f, beta_E0 = beta_e_coef sqrt(f), sigma_u, sigma_h, sigma_C, sigma_E, wind_amp.
        """
        return np.array(
            [
                self.delta_u, self.delta_h, self.r, self.gamma, self.gamma, self.r_c,
                self.zeta_c, self.r_e, self.zeta_e, self.c_u, self.d_tau, self.lam, self.m,
                self.f, self.beta_e_coef * math.sqrt(self.f), self.sigma_u, self.sigma_h,
                self.sigma_c, self.sigma_e, self.wind_amp,
            ],
            dtype=np.float64,
        )  # fmt: skip
