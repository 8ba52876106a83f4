"""The general latent state-space model with priors on its error scales.

.. math::
    z_0 \\sim N(m_0, P_0), \\quad
    z_t = f_t(z_{t-1}) + \\sigma L_t \\varepsilon_t, \\quad
    y_{t,k} = h_k(z_t) + s_k \\eta_{t,k}, \\qquad t = 1..T.

:class:`StateSpaceModel` conforms to :class:`~bayesbridge.model.protocol.StateSpace`;
:func:`as_state_space_model` views any model of the protocol as one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from bayesbridge.errors import InputTypeError, ParameterError, ShapeMismatchError
from bayesbridge.model.affine import AffineStructure, probe_affine
from bayesbridge.model.linear_gaussian import LinearGaussianModel, LinearTransition
from bayesbridge.model.observation import BoxObservation
from bayesbridge.model.tensors import as_tensor, check_finite, check_spd, check_square, jittered

__all__ = ["StateSpaceModel", "as_state_space_model"]


class _DeviceTransition:
    """A transition seen from ``device``: ``mean`` follows ``z`` (as every bayesbridge transition
    does) and ``noise_scale_tril(step)`` ``(d, d)`` is moved to ``device``, once per distinct
    factor (a time-invariant factor is copied once, not at every step)."""

    def __init__(self, transition, device: torch.device) -> None:
        self.transition, self.device = transition, device
        self.latent_dim = transition.latent_dim
        self._src: torch.Tensor | None = None
        self._moved: torch.Tensor | None = None

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``f_t(z)`` of the wrapped transition, ``(*batch, d) -> (*batch, d)`` on ``z``'s device."""
        return self.transition.mean(z, step).to(z.device)

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """The wrapped transition's ``L_t`` ``(d, d)`` on :attr:`device`."""
        src = as_tensor(self.transition.noise_scale_tril(step), "noise_scale_tril")
        if src.device == self.device:
            return src
        if self._src is None or not (src is self._src or torch.equal(src, self._src)):
            self._src, self._moved = src, src.to(self.device)
        return self._moved

    def __getattr__(self, name):
        return getattr(self.__dict__["transition"], name)


def _move(obj, device: torch.device):
    """``obj`` on ``device``: its own ``to`` (a deep copy first for a ``torch.nn.Module``, whose
    ``to`` works in place), or ``obj`` itself when it has none."""
    if isinstance(obj, torch.nn.Module):
        return copy.deepcopy(obj).to(device)
    if isinstance(obj, _DeviceTransition):
        return _DeviceTransition(obj.transition, device)
    mover = getattr(obj, "to", None)
    return mover(device) if callable(mover) else obj


def _positive_support(support) -> bool:
    """Whether a torch constraint lies within ``[0, inf)`` (positive, non-negative, or an interval above 0)."""
    from torch.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    lower = getattr(support, "lower_bound", None)
    if support is constraints.positive or support is constraints.nonnegative:
        return True
    return lower is not None and bool(torch.all(torch.as_tensor(lower) >= 0))


def _scale_prior(prior, default_loc: torch.Tensor, name: str):
    """A proper prior over positive scales with event shape ``default_loc.shape`` (default log-normal).

    Raises :class:`~bayesbridge.errors.ParameterError` for an improper prior, a support that is
    not within ``[0, inf)``, or a prior under which the nominal scales have zero density.
    """
    import pyro.distributions as dist

    if prior is None:
        prior = dist.LogNormal(default_loc.log(), torch.ones_like(default_loc))
    elif not isinstance(prior, torch.distributions.Distribution):
        raise InputTypeError(f"{name}: expected a pyro/torch distribution, got {type(prior).__name__}.")
    base = prior
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    if isinstance(base, dist.ImproperUniform):
        raise ParameterError(
            f"{name}: an improper prior ({type(base).__name__}) can make the posterior of the scales improper; "
            f"use a proper prior over positive scales, e.g. LogNormal(log s, 1) (the default), HalfNormal or Gamma."
        )
    if not _positive_support(prior.support):
        raise ParameterError(
            f"{name}: expected a prior over positive scales (support within [0, inf): LogNormal, HalfNormal, "
            f"Gamma ...), got {type(prior).__name__} with support {prior.support}."
        )
    if default_loc.ndim > 0 and tuple(prior.event_shape) != tuple(default_loc.shape):
        prior = prior.expand(default_loc.shape).to_event(1)
    try:
        with torch.no_grad():
            finite = bool(torch.isfinite(prior.log_prob(default_loc.to(torch.float64).cpu())).all())
    except ValueError:  # outside the support, with argument validation on
        finite = False
    if not finite:
        raise ParameterError(
            f"{name}: the nominal scales {default_loc.tolist()} have zero density under {type(base).__name__}; "
            f"centre the prior on the nominal scales (or pass nominal scales inside its support)."
        )
    return prior


class StateSpaceModel:
    """General latent state-space model with priors on the error scales.

    .. math::
        z_0 \\sim N(m_0, P_0), \\quad
        z_t = f_t(z_{t-1}) + \\sigma L_t \\varepsilon_t, \\quad
        y_{t,k} = h_k(z_t) + s_k \\eta_{t,k}, \\qquad t = 1..T,

    with :math:`\\varepsilon_t, \\eta_t` standard normal, ``f_t, L_t`` from a
    :class:`~bayesbridge.latent.base.Transition`, observation-error scales ``s`` ``(m,)`` and a
    model-error scale ``sigma`` multiplying the transition's own noise. The filters use the
    nominal scales (``obs_scale``, ``model_error_scale``); :meth:`pyro_model` (see
    :mod:`bayesbridge.model.pyro_program`) samples them from their priors.

    Parameters
    ----------
    transition : Transition
        ``mean(z, step)`` and ``noise_scale_tril(step)``; e.g. :class:`LinearTransition`.
    observation : array (m, d), callable or BoxObservation
        Observation operator: a matrix ``H`` (``h(z) = H z``), any callable ``(*batch, d) ->
        (*batch, m)``, or :class:`BoxObservation` (box means of the decoded field).
    obs_scale : float or array (m,)
        Nominal observation-error standard deviations (representation error included), > 0.
    initial_mean : array (d,), optional
        ``m_0`` (default zeros).
    initial_cov : array (d, d), optional
        ``P_0`` (default identity).
    model_error_scale : float
        Nominal ``sigma`` > 0 (default 1: the transition's own noise).
    obs_scale_prior, model_error_prior : pyro distribution, optional
        Priors of ``s`` and ``sigma``. Defaults: ``LogNormal(log obs_scale, 1)`` per observable
        and ``LogNormal(log model_error_scale, 1)`` (a factor of about 5 either way at 90 %).
    obs_names : sequence of str, optional
        Names of the observables (default from a :class:`BoxObservation`, else ``y0, y1, ...``).
    linear : bool, optional
        Whether ``f_t`` and ``h`` are affine. ``None`` (default) probes them; an affine model is
        marginalised exactly (:class:`pyro.distributions.GaussianHMM`) by :meth:`pyro_model`.
    """

    def __init__(
        self,
        transition,
        observation,
        obs_scale,
        *,
        initial_mean=None,
        initial_cov=None,
        model_error_scale: float = 1.0,
        obs_scale_prior=None,
        model_error_prior=None,
        obs_names=None,
        linear: bool | None = None,
    ) -> None:
        d = int(getattr(transition, "latent_dim", 0))
        if d < 1 or not callable(getattr(transition, "mean", None)) or not callable(
            getattr(transition, "noise_scale_tril", None)
        ):
            raise InputTypeError(
                f"transition: expected a Transition with latent_dim, mean(z, step) and "
                f"noise_scale_tril(step); got {type(transition).__name__}."
            )
        self.transition = transition
        self.latent_dim = d
        self.observation_matrix: torch.Tensor | None = None
        if isinstance(observation, BoxObservation) or callable(observation):
            self._observe = observation
        else:
            H = as_tensor(observation, "observation")
            check_finite(H, "observation")
            if H.ndim != 2 or H.shape[1] != d:
                raise ShapeMismatchError(
                    f"observation: expected a matrix of shape (m, {d}) or a callable, got shape {tuple(H.shape)}."
                )
            self.observation_matrix = H
            self._observe = lambda z: z @ H.mT
        with torch.no_grad():
            m = int(self._observe(torch.zeros(1, d, dtype=torch.float64, device="cpu")).shape[-1])
        self.obs_dim = m
        self.obs_scale = as_tensor(obs_scale, "obs_scale").reshape(-1).expand(m).clone()
        self.model_error_scale = float(model_error_scale)
        if not bool((self.obs_scale > 0).all()) or not bool(torch.isfinite(self.obs_scale).all()):
            raise ParameterError(
                f"obs_scale: expected positive finite observation-error scales ({m} values), got "
                f"{self.obs_scale.tolist()}; use the representation error, e.g. 0.15 degC for Nino indices."
            )
        if not (self.model_error_scale > 0 and np.isfinite(self.model_error_scale)):
            raise ParameterError(
                f"model_error_scale: expected a positive finite number, got {model_error_scale!r}."
            )
        self.m0 = torch.zeros(d, dtype=torch.float64, device="cpu") if initial_mean is None else as_tensor(initial_mean, "initial_mean")
        self.P0 = torch.eye(d, dtype=torch.float64, device="cpu") if initial_cov is None else as_tensor(initial_cov, "initial_cov")
        if self.m0.shape != (d,):
            raise ShapeMismatchError(f"initial_mean: expected shape ({d},), got {tuple(self.m0.shape)}.")
        check_finite(self.m0, "initial_mean")
        check_finite(self.P0, "initial_cov")
        check_square(self.P0, "initial_cov", d)
        check_spd(self.P0, "initial_cov", allow_singular=True)
        self.obs_scale_prior = _scale_prior(obs_scale_prior, self.obs_scale, "obs_scale_prior")
        self.model_error_prior = _scale_prior(
            model_error_prior, torch.tensor(self.model_error_scale, dtype=torch.float64, device="cpu"), "model_error_prior"
        )
        if obs_names is None:
            obs_names = getattr(observation, "names", None) or tuple(f"y{k}" for k in range(m))
        self.obs_names = tuple(str(n) for n in obs_names)
        if len(self.obs_names) != m:
            raise ShapeMismatchError(f"obs_names: expected {m} names, got {len(self.obs_names)}.")
        self._linear = linear
        self._affine_cache: dict[int, object] = {}

    def __repr__(self) -> str:
        return f"StateSpaceModel(latent_dim={self.latent_dim}, obs_dim={self.obs_dim}, observables={self.obs_names})"

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors (``m0``, ``P0``, ``obs_scale``...)."""
        return self.m0.device

    def to(self, device: str | torch.device) -> StateSpaceModel:
        """A copy whose tensors, transition and observation operator live on ``device``.

        ``m0``, ``P0``, ``obs_scale`` and an observation matrix are moved; a transition or
        observation operator with a ``to`` method (:class:`LinearTransition`,
        :class:`BoxObservation`, ``torch.nn.Module``) is moved by it (a module is deep-copied
        first, so the original stays where it was); any other transition is wrapped so that its
        noise factor is delivered on ``device`` (its ``mean`` must follow ``z``'s device, as the
        latent dynamics of :mod:`bayesbridge.latent` do). The priors stay on the CPU (they are
        used by the Pyro program, not by the filters).
        """
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        new = copy.copy(self)
        new.m0, new.P0, new.obs_scale = self.m0.to(dev), self.P0.to(dev), self.obs_scale.to(dev)
        new.transition = _move(self.transition, dev)
        if new.transition is self.transition and dev != self.device:
            new.transition = _DeviceTransition(self.transition, dev)
        if self.observation_matrix is not None:
            H = self.observation_matrix.to(dev)
            new.observation_matrix = H
            new._observe = lambda z: z @ H.mT
        else:
            new._observe = _move(self._observe, dev)
        new._affine_cache = {}
        return new

    # --- StateSpace protocol -----------------------------------------------------------------
    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        return self.m0, self.P0

    def transition_mean(self, z: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``f_t(z)`` of the transition: ``(*batch, d) -> (*batch, d)``, ``step`` = 0-based target index."""
        return self.transition.mean(z, step)

    def transition_scale_tril(self, step: int = 0) -> torch.Tensor:
        """``sigma L_t`` ``(d, d)`` at the 0-based target index ``step`` (nominal ``sigma``)."""
        return self.model_error_scale * as_tensor(self.transition.noise_scale_tril(step), "noise_scale_tril")

    def transition_cov(self, step: int = 0) -> torch.Tensor:
        """``Q_t = sigma^2 L_t L_t^T`` ``(d, d)`` at the 0-based target index ``step``."""
        lt = self.transition_scale_tril(step)
        return lt @ lt.mT

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``h(z)``: ``(*batch, d) -> (*batch, m)`` for states ``z``."""
        return self._observe(z)

    def obs_cov(self) -> torch.Tensor:
        """``R = diag(s^2)`` ``(m, m)`` from the nominal observation-error scales."""
        return torch.diag(self.obs_scale**2)

    # --- helpers -----------------------------------------------------------------------------
    def with_scales(self, obs_scale=None, model_error_scale=None) -> StateSpaceModel:
        """A copy with other nominal scales (same priors, e.g. posterior means).

        Parameters
        ----------
        obs_scale : float or array (m,), optional
            New observation-error scales ``s`` (> 0); ``None`` keeps the current ones.
        model_error_scale : float, optional
            New model-error scale ``sigma`` (> 0); ``None`` keeps the current one.

        Returns
        -------
        StateSpaceModel
            A shallow copy sharing transition, observation operator and priors.
        """
        new = copy.copy(self)
        if obs_scale is not None:
            new.obs_scale = as_tensor(obs_scale, "obs_scale").reshape(-1).expand(self.obs_dim).clone()
            if not bool((new.obs_scale > 0).all()):
                raise ParameterError(f"obs_scale: expected positive values, got {new.obs_scale.tolist()}.")
        if model_error_scale is not None:
            new.model_error_scale = float(model_error_scale)
            if not new.model_error_scale > 0:
                raise ParameterError(f"model_error_scale: expected a positive number, got {model_error_scale!r}.")
        return new

    def affine_structure(self, n_steps: int):
        """Affine form of the model over ``n_steps`` steps, or ``None`` if it is nonlinear.

        Returns
        -------
        AffineStructure or None
            ``A`` ``(T, d, d)``, ``b`` ``(T, d)`` with ``f_t(z) = A_t z + b_t``; ``L`` ``(T, d, d)``
            the transition noise factors (without ``sigma``); ``H`` ``(m, d)``, ``c`` ``(m,)``
            with ``h(z) = H z + c``.
        """
        if self._linear is False:
            return None
        if n_steps in self._affine_cache:
            return self._affine_cache[n_steps]
        d = self.latent_dim
        dev = self.m0.device
        obs = probe_affine(self._observe, d, device=dev)
        out = None
        if obs is not None:
            As, bs, Ls = [], [], []
            for t in range(n_steps):
                tr = probe_affine(lambda z, t=t: self.transition.mean(z, t), d, device=dev)
                if tr is None:
                    break
                As.append(tr[0].mT)
                bs.append(tr[1])
                Ls.append(as_tensor(self.transition.noise_scale_tril(t), "noise_scale_tril"))
            else:
                out = AffineStructure(torch.stack(As), torch.stack(bs), torch.stack(Ls), obs[0].mT, obs[1])
        if out is None and self._linear:
            raise ParameterError(
                "linear=True, but the transition mean or the observation operator is not affine; "
                "pass linear=None to detect it, or use a structured variational guide."
            )
        self._affine_cache[n_steps] = out
        return out

    def pyro_model(self, observations=None, n_steps: int | None = None) -> None:
        """The Pyro program of this model conditioned on ``observations`` ``(*batch, T, m)``.

        ``observations=None`` with ``n_steps`` samples observations (prior predictive, or
        posterior predictive with :class:`pyro.infer.Predictive`). See
        :func:`bayesbridge.model.pyro_program.state_space_program`.
        """
        from bayesbridge.model.pyro_program import state_space_program

        return state_space_program(self, observations, n_steps=n_steps)


class _ProtocolTransition:
    """Adapter: a StateSpace's ``transition_mean``/``transition_cov`` as a Transition."""

    def __init__(self, model) -> None:
        self.model = model
        self.latent_dim = int(model.latent_dim)

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        return self.model.transition_mean(z, 0 if step is None else step)

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        return torch.linalg.cholesky(jittered(self.model.transition_cov(0 if step is None else step)))


def as_state_space_model(model) -> StateSpaceModel:
    """View any :class:`~bayesbridge.model.StateSpace` as a :class:`StateSpaceModel`.

    A :class:`~bayesbridge.model.LinearGaussianModel` becomes ``LinearTransition(A, chol Q)``
    with ``H``, observation-error scales ``sqrt(diag R)`` and the default priors; its ``R`` must
    be diagonal (the scales are per observable).
    """
    if isinstance(model, StateSpaceModel):
        return model
    R = model.obs_cov()
    if not torch.equal(R, torch.diag(R.diagonal())):
        raise ParameterError(
            "model: observation-error scales are per observable, so R must be diagonal; got an R with "
            "off-diagonal entries. Decorrelate the observables or use the Kalman/EnKF engines."
        )
    m0, P0 = model.initial()
    if isinstance(model, LinearGaussianModel):
        transition = LinearTransition(model.A, torch.linalg.cholesky(jittered(model.Q)))
        return StateSpaceModel(
            transition, model.H, R.diagonal().sqrt(), initial_mean=m0, initial_cov=P0, linear=True
        )
    return StateSpaceModel(
        _ProtocolTransition(model), model.observe, R.diagonal().sqrt(), initial_mean=m0, initial_cov=P0
    )
