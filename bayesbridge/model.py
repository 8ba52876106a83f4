"""State-space models: the generative model that every inference engine works on.

The contract shared by all engines is the :class:`StateSpace` protocol,

.. math::
    z_0 \\sim N(m_0, P_0), \\quad
    z_t = f_t(z_{t-1}) + w_t,\\; w_t \\sim N(0, Q_t), \\quad
    y_t = h(z_t) + v_t,\\; v_t \\sim N(0, R), \\qquad t = 1..T,

so the first observation sees :math:`z_1` (textbook column-vector convention; note that
:class:`pyro.distributions.GaussianHMM` uses row vectors and puts its initial state one step
before the first observation, which is the same convention once matrices are transposed).

:class:`LinearGaussianModel` is the linear-Gaussian special case (``f_t(z) = A z``,
``h(z) = H z``) for which the exact Kalman filter/smoother is the oracle.
"""

from __future__ import annotations

import copy
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from bayesbridge.errors import InputTypeError, ParameterError, ShapeMismatchError

__all__ = [
    "StateSpace",
    "LinearGaussianModel",
    "as_tensor",
    "StateSpaceModel",
    "LinearTransition",
    "BoxObservation",
]


def as_tensor(value, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Convert an array-like argument to a tensor, naming the argument on failure.

    Parameters
    ----------
    value : array-like or torch.Tensor
        Numbers of any shape; a tensor is only cast to ``dtype``.
    name : str
        Argument name used in the error message.
    dtype : torch.dtype
        Result dtype (default float64, the filter algebra's precision).

    Returns
    -------
    torch.Tensor
        Same shape as ``value``.

    Raises
    ------
    InputTypeError
        If ``value`` cannot be read as an array of numbers.
    """
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    try:
        return torch.as_tensor(np.asarray(value, dtype=float), dtype=dtype, device="cpu")
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            f"{name}: expected an array or tensor of numbers, got {type(value).__name__} ({exc})."
        ) from exc


@runtime_checkable
class StateSpace(Protocol):
    """What an inference engine needs from a model (shapes ``(*batch, member, d)``).

    A :class:`typing.Protocol` (runtime checkable): :class:`LinearGaussianModel` and
    :class:`StateSpaceModel` conform, and so does any class with these members; the protocol
    itself is not instantiated (``StateSpace(*args, **kwargs)`` raises ``TypeError``).

    Attributes
    ----------
    latent_dim : int
        Latent size ``d``.
    obs_dim : int
        Number of observables ``m``.
    """

    latent_dim: int
    obs_dim: int

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        ...

    def transition_mean(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """``f_t(z)``: ``(*batch, d) -> (*batch, d)``; ``step`` = t - 1 is the 0-based target index."""
        ...

    def transition_cov(self, step: int) -> torch.Tensor:
        """``Q_t`` ``(d, d)``, model-error covariance at the 0-based target index ``step``."""
        ...

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``h(z)``: ``(*batch, d) -> (*batch, m)``, applied member by member."""
        ...

    def obs_cov(self) -> torch.Tensor:
        """``R`` ``(m, m)``."""
        ...


def _check_square(mat: torch.Tensor, name: str, size: int) -> None:
    if mat.shape != (size, size):
        raise ShapeMismatchError(
            f"{name}: expected shape ({size}, {size}), got {tuple(mat.shape)}."
        )


def _check_spd(mat: torch.Tensor, name: str, allow_singular: bool = False) -> None:
    mat = mat.detach()  # a validation, not part of any gradient
    if not torch.allclose(mat, mat.mT, atol=1e-10, rtol=1e-8):
        raise ParameterError(f"{name}: expected a symmetric covariance matrix; symmetrise it, e.g. (M + M.T) / 2.")
    eig_min = float(torch.linalg.eigvalsh(mat).min())
    scale = float(mat.diagonal().abs().max().clamp_min(1e-300))
    if eig_min < -1e-10 * scale or (not allow_singular and eig_min <= 0.0):
        raise ParameterError(
            f"{name}: expected a positive-definite covariance, smallest eigenvalue is {eig_min:.3g}; "
            f"add a small multiple of the identity."
        )


class LinearGaussianModel:
    """Linear-Gaussian state-space model ``z_t = A z_{t-1} + w_t``, ``y_t = H z_t + v_t``.

    Parameters
    ----------
    A : array (d, d)
        Transition matrix.
    Q : array (d, d)
        Model-error covariance (positive semi-definite).
    H : array (m, d)
        Observation matrix.
    R : array (m, m)
        Observation-error covariance (positive definite).
    m0 : array (d,)
        Mean of ``z_0``.
    P0 : array (d, d)
        Covariance of ``z_0``.

    Notes
    -----
    Textbook column-vector convention (Anderson & Moore 1979, *Optimal Filtering*); observations
    ``y_1..y_T`` start one step after ``z_0``.
    """

    def __init__(self, A, Q, H, R, m0, P0) -> None:
        self.A = as_tensor(A, "A")
        self.Q = as_tensor(Q, "Q")
        self.H = as_tensor(H, "H")
        self.R = as_tensor(R, "R")
        self.m0 = as_tensor(m0, "m0")
        self.P0 = as_tensor(P0, "P0")
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ShapeMismatchError(f"A: expected a square (d, d) matrix, got shape {tuple(self.A.shape)}.")
        d = self.A.shape[0]
        if self.H.ndim != 2 or self.H.shape[1] != d:
            raise ShapeMismatchError(
                f"H: expected shape (m, {d}) to match A ({d}, {d}), got {tuple(self.H.shape)}."
            )
        m = self.H.shape[0]
        _check_square(self.Q, "Q", d)
        _check_square(self.R, "R", m)
        _check_square(self.P0, "P0", d)
        if self.m0.shape != (d,):
            raise ShapeMismatchError(f"m0: expected shape ({d},), got {tuple(self.m0.shape)}.")
        _check_spd(self.Q, "Q", allow_singular=True)
        _check_spd(self.P0, "P0", allow_singular=True)
        _check_spd(self.R, "R")
        self.latent_dim = d
        self.obs_dim = m

    def __repr__(self) -> str:
        return f"LinearGaussianModel(latent_dim={self.latent_dim}, obs_dim={self.obs_dim})"

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors."""
        return self.A.device

    def to(self, device: str | torch.device) -> LinearGaussianModel:
        """A copy with ``A, Q, H, R, m0, P0`` on ``device`` (validated, see :func:`bayesbridge.devices.resolve_device`)."""
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        new = copy.copy(self)
        for name in ("A", "Q", "H", "R", "m0", "P0"):
            setattr(new, name, getattr(self, name).to(dev))
        return new

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m0 (d,), P0 (d, d))``: mean and covariance of ``z_0``."""
        return self.m0, self.P0

    def transition_mean(self, z: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``A z`` for ``z`` ``(*batch, d)``; ``step`` is ignored (time-invariant)."""
        return z @ self.A.mT

    def transition_cov(self, step: int = 0) -> torch.Tensor:
        """``Q`` ``(d, d)``; ``step`` is ignored (time-invariant)."""
        return self.Q

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``H z``: ``(*batch, d) -> (*batch, m)`` for states ``z``."""
        return z @ self.H.mT

    def obs_cov(self) -> torch.Tensor:
        """``R`` ``(m, m)``."""
        return self.R

    def simulate(
        self, n_steps: int, *, generator: torch.Generator | None = None, batch_shape: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a trajectory and its observations.

        ``z_0 ~ N(m0, P0)``, then ``z_t = A z_{t-1} + w_t`` and ``y_t = H z_t + v_t`` with
        Gaussian ``w_t ~ N(0, Q)``, ``v_t ~ N(0, R)`` (``Q`` and ``P0`` get a 1e-12 jitter for the
        Cholesky factor).

        Parameters
        ----------
        n_steps : int
            Number of steps ``T``.
        generator : torch.Generator, optional
            Source of the standard normals (``None``: torch's global generator).
        batch_shape : tuple of int
            Leading batch shape: independent trajectories.

        Returns
        -------
        z : Tensor (*batch, T, d)
            States ``z_1..z_T``.
        y : Tensor (*batch, T, m)
            Observations ``y_1..y_T``.
        """
        d, m = self.latent_dim, self.obs_dim
        dev = self.A.device
        lq = torch.linalg.cholesky(self.Q + 1e-12 * torch.eye(d, dtype=self.Q.dtype, device=dev))
        lr = torch.linalg.cholesky(self.R)
        l0 = torch.linalg.cholesky(self.P0 + 1e-12 * torch.eye(d, dtype=self.P0.dtype, device=dev))
        noise = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=generator, device=dev)  # noqa: E731
        z = self.m0 + noise(*batch_shape, d) @ l0.mT
        zs, ys = [], []
        for _ in range(n_steps):
            z = z @ self.A.mT + noise(*batch_shape, d) @ lq.mT
            zs.append(z)
            ys.append(z @ self.H.mT + noise(*batch_shape, m) @ lr.mT)
        return torch.stack(zs, -2), torch.stack(ys, -2)


# --------------------------------------------------------------------------------------------
# General state-space model: a latent Transition, an observation operator, error-scale priors.
# --------------------------------------------------------------------------------------------


class LinearTransition:
    """Time-invariant linear dynamics ``z_t = A z_{t-1} + L w_t`` (a :class:`~bayesbridge.latent.base.Transition`).

    Parameters
    ----------
    A : array (d, d)
        Transition matrix (column-vector convention).
    noise_scale_tril : array (d, d)
        Lower-triangular factor ``L`` of the model-error covariance ``L L^T``.
    """

    def __init__(self, A, noise_scale_tril) -> None:
        self.A = as_tensor(A, "A")
        self.L = as_tensor(noise_scale_tril, "noise_scale_tril")
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ShapeMismatchError(f"A: expected a square (d, d) matrix, got shape {tuple(self.A.shape)}.")
        _check_square(self.L, "noise_scale_tril", self.A.shape[0])
        self.latent_dim = int(self.A.shape[0])

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``A z`` for ``z`` of shape ``(*batch, d)``; ``step`` is ignored (time-invariant)."""
        return z @ self.A.mT

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """``L`` ``(d, d)``; ``step`` is ignored (time-invariant)."""
        return self.L

    def to(self, device: str | torch.device) -> LinearTransition:
        """A copy with ``A`` and ``L`` on ``device``."""
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        new = copy.copy(self)
        new.A, new.L = self.A.to(dev), self.L.to(dev)
        return new


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


class BoxObservation:
    """Box averages of the decoded field, in observation units: ``h(z) = W decode(z)``.

    Parameters
    ----------
    codec : Codec
        Provides ``points`` (MultiIndex ``variable, lat, lon``) and the differentiable batched
        decoder ``decode_tensor`` ``(*batch, d) -> (*batch, n_points)`` in physical units.
    boxes : sequence of str or Region
        One observable per box (default ``("nino3", "nino4")``); each box is averaged over its
        region's usual variable (``tos`` for SST boxes, ``zos`` for ``h_w``).
    variables : dict of str to str, optional
        Override the variable of a box, e.g. ``{"h_w": "thetao"}``.

    Notes
    -----
    Row ``k`` of ``weights`` ``(m, n_points)`` holds ``cos(lat_j) / sum_{j in B_k} cos(lat_j)`` for
    the points ``j`` of box ``B_k`` (:func:`bayesbridge.regions.point_box_weights` on the codec's
    points), so ``h`` is the area-weighted box mean of the decoded field. It is applied member by member, without linearisation.
    """

    def __init__(self, codec, boxes=("nino3", "nino4"), *, variables: dict[str, str] | None = None) -> None:
        from bayesbridge.errors import AllMissingError, GridCoverageError, VariableNotFoundError
        from bayesbridge.regions import get_region, point_box_weights

        points = getattr(codec, "points", None)
        if points is None or getattr(points, "nlevels", 0) != 3:
            raise InputTypeError(
                "codec: expected a fitted Codec whose `points` is a MultiIndex (variable, lat, lon); "
                f"got {type(codec).__name__} with points={type(points).__name__}. Call codec.fit(ds) first."
            )
        rows, names = [], []
        for box in boxes:
            reg = get_region(box)
            name = (variables or {}).get(reg.name, reg.variable)
            try:
                rows.append(point_box_weights(points, reg, name))
            except (AllMissingError, GridCoverageError, VariableNotFoundError) as exc:
                raise AllMissingError(
                    f"boxes: no codec point of variable {name!r} lies inside box {reg.name!r} ({exc}). "
                    f"Choose boxes inside the codec's domain or pass variables={{'{reg.name}': '<variable>'}}."
                ) from exc
            names.append(reg.name)
        self.codec = codec
        self.names = tuple(names)
        self.weights = torch.as_tensor(np.stack(rows), dtype=torch.float64, device="cpu")

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Box means ``(*batch, m)`` of the decoded fields of ``z`` ``(*batch, d)`` (float64)."""
        return self.codec.decode_tensor(z).to(torch.float64) @ self.weights.mT

    def to(self, device: str | torch.device) -> BoxObservation:
        """A copy with the box weights on ``device``.

        The codec is shared: its ``decode_tensor`` returns fields on the device of ``z`` (a neural
        codec decodes on the device it was trained on, ``Autoencoder(device=...)``).
        """
        from bayesbridge.devices import resolve_device

        new = copy.copy(self)
        new.weights = self.weights.to(resolve_device(device))
        return new


def _move(obj, device: torch.device):
    """``obj`` on ``device``: its own ``to`` (a deep copy first for a ``torch.nn.Module``, whose
    ``to`` works in place), or ``obj`` itself when it has none."""
    if isinstance(obj, torch.nn.Module):
        return copy.deepcopy(obj).to(device)
    if isinstance(obj, _DeviceTransition):
        return _DeviceTransition(obj.transition, device)
    mover = getattr(obj, "to", None)
    return mover(device) if callable(mover) else obj


def _scale_prior(prior, default_loc: torch.Tensor, name: str):
    """A prior over positive scales with event shape ``default_loc.shape`` (default log-normal)."""
    import pyro.distributions as dist

    if prior is None:
        prior = dist.LogNormal(default_loc.log(), torch.ones_like(default_loc))
    elif not isinstance(prior, torch.distributions.Distribution):
        raise InputTypeError(f"{name}: expected a pyro/torch distribution, got {type(prior).__name__}.")
    if default_loc.ndim == 0 or tuple(prior.event_shape) == tuple(default_loc.shape):
        return prior
    return prior.expand(default_loc.shape).to_event(1)


def _probe_affine(fn, d: int, n_probe: int = 2, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(M (d, k), b (k,))`` with ``fn(z) = b + z M`` if ``fn`` is affine on probes (on ``device``), else None."""
    gen = torch.Generator().manual_seed(20240917)
    probes = torch.cat(
        [torch.zeros(1, d, device="cpu"), torch.eye(d, device="cpu"), torch.randn(n_probe, d, generator=gen, device="cpu")], 0
    ).to(dtype=torch.float64, device=device or "cpu")
    with torch.no_grad():
        out = fn(probes).to(torch.float64)
    b, M = out[0], out[1 : d + 1] - out[0]
    check = b + probes[d + 1 :] @ M
    tol = 1e-7 * (1.0 + float(out.abs().max()))
    if not torch.allclose(out[d + 1 :], check, atol=tol, rtol=1e-6):
        return None
    return M, b


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
    :mod:`bayesbridge.model_pyro`) samples them from their priors.

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
        _check_square(self.P0, "initial_cov", d)
        _check_spd(self.P0, "initial_cov", allow_singular=True)
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
        from bayesbridge.model_pyro import AffineStructure

        d = self.latent_dim
        dev = self.m0.device
        obs = _probe_affine(self._observe, d, device=dev)
        out = None
        if obs is not None:
            As, bs, Ls = [], [], []
            for t in range(n_steps):
                tr = _probe_affine(lambda z, t=t: self.transition.mean(z, t), d, device=dev)
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
        :func:`bayesbridge.model_pyro.state_space_program`.
        """
        from bayesbridge.model_pyro import state_space_program

        return state_space_program(self, observations, n_steps=n_steps)
