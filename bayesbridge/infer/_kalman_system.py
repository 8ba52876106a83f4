"""The affine system a Kalman engine runs on, read from the model, and its masked observation step.

The engines of :mod:`bayesbridge.infer.kalman` run on the per-step affine system

.. math::
    z_t = A_t z_{t-1} + b_t + w_t,\\; w_t \\sim N(0, Q_t),\\qquad
    y_t = H z_t + c + v_t,\\; v_t \\sim N(0, R),\\qquad z_0 \\sim N(m_0, P_0),

read from a :class:`~bayesbridge.model.LinearGaussianModel` (time-invariant, ``b = c = 0``) or
from the ``affine_structure`` of a :class:`~bayesbridge.model.StateSpaceModel` whose transition
and observation operator are affine (:func:`affine_system`). :func:`steady_parts` says whether
``A`` and ``Q`` are time-invariant (the condition of the steady-state engine).
:func:`masked_obs_system` neutralises missing components (NaN) of one step without gathering:
rows of ``H`` zeroed, innovations 0 and ``R`` replaced by ``M R M + (I - M)`` (``M`` the 0/1
mask), so that the gain has zero columns for them and the log-density is that of the observed
components only.
"""

from __future__ import annotations

import torch

from bayesbridge.errors import InputTypeError

__all__ = ["affine_system", "as_f64", "linear_parts", "masked_obs_system", "needs_grad", "steady_parts"]


def linear_parts(model) -> tuple[torch.Tensor, ...]:
    """``(A, Q, H, R, m0, P0)`` of a linear-Gaussian ``model`` as float64 tensors (an explanatory error otherwise)."""
    names = ("A", "Q", "H", "R", "m0", "P0")
    if not all(hasattr(model, n) for n in names):
        raise InputTypeError(
            f"model: the exact Kalman engine needs a linear-Gaussian model with attributes "
            f"{', '.join(names)} (e.g. bayesbridge.model.LinearGaussianModel), got "
            f"{type(model).__name__}; use method='enkf', 'etkf' or 'pf' for nonlinear models."
        )
    return tuple(as_f64(getattr(model, n)) for n in names)


def as_f64(x, device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a float64 tensor on ``device`` (a tensor's own device when None, else the CPU)."""
    if device is None:
        device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def affine_system(model, T: int) -> tuple[torch.Tensor, ...]:
    """Per-step affine system ``A (T, d, d)``, ``b (T, d)``, ``Q (T, d, d)``, ``H``, ``c``, ``R``, ``m0``, ``P0``.

    ``z_t = A_t z_{t-1} + b_t + w_t``, ``w_t ~ N(0, Q_t)``, ``y_t = H z_t + c + v_t``. A
    :class:`~bayesbridge.model.LinearGaussianModel` is time-invariant with ``b = c = 0``; a
    :class:`~bayesbridge.model.StateSpaceModel` whose transition and observation operator are
    affine (a linear inverse model, seasonal or not, and an EOF decoder with box averages) is
    linearised exactly by its ``affine_structure``.
    """
    if all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0")):
        A, Q, H, R, m0, P0 = linear_parts(model)
        d, m = A.shape[0], H.shape[0]
        return (A.expand(T, d, d), A.new_zeros(T, d), Q.expand(T, d, d), H, A.new_zeros(m), R, m0, P0)
    structure = model.affine_structure(T) if hasattr(model, "affine_structure") else None
    if structure is None:
        linear_parts(model)  # raises the explanatory error
    m0, P0 = (as_f64(x) for x in model.initial())
    Q = torch.stack([as_f64(model.transition_cov(t), m0.device) for t in range(T)])
    R = as_f64(model.obs_cov(), m0.device)
    return structure.A, structure.b, Q, structure.H, structure.c, R, m0, P0


def masked_obs_system(
    y_t: torch.Tensor, H: torch.Tensor, R: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observation system of one step with missing components neutralised.

    Parameters
    ----------
    y_t : Tensor (*batch, m)
        Observations, NaN = missing.
    H : Tensor (m, d) or (*batch, m, d)
    R : Tensor (m, m)

    Returns
    -------
    mask : Tensor (*batch, m) bool
        True where observed.
    y0 : Tensor (*batch, m)
        ``y_t`` with missing components set to 0.
    H_eff : Tensor (*batch, m, d)
        ``H`` with rows of missing components zeroed.
    R_eff : Tensor (*batch, m, m)
        ``M R M + (I - M)``.
    """
    mask = ~torch.isnan(y_t)
    mf = mask.to(R.dtype)
    y0 = torch.where(mask, y_t, torch.zeros_like(y_t))
    H_eff = H * mf.unsqueeze(-1)
    R_eff = R * (mf.unsqueeze(-1) * mf.unsqueeze(-2)) + torch.diag_embed(1.0 - mf)
    return mask, y0, H_eff, R_eff


def steady_parts(model, T: int, system: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...] | None:
    """``(A, b (T, d), Q, H, c, R, m0, P0)`` if the model has time-invariant ``A`` and ``Q``, else None.

    ``system`` is the model's :func:`affine_system` when already computed.
    """
    if system is None and all(hasattr(model, n) for n in ("A", "Q", "H", "R", "m0", "P0")):
        A, Q, H, R, m0, P0 = linear_parts(model)
        d, m = A.shape[0], H.shape[0]
        return A, A.new_zeros(T, d), Q, H, A.new_zeros(m), R, m0, P0
    A_seq, b_seq, Q_seq, H, c, R, m0, P0 = affine_system(model, T) if system is None else system
    if not (torch.equal(A_seq, A_seq[:1].expand_as(A_seq)) and torch.equal(Q_seq, Q_seq[:1].expand_as(Q_seq))):
        return None
    return A_seq[0], b_seq, Q_seq[0], H, c, R, m0, P0


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` requires gradients (the steady-state engine is not differentiable)."""
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in tensors)
