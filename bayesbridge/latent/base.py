"""Interfaces shared by codecs, latent dynamics and the inference engines.

Codecs (EOF, autoencoder, VAE) and dynamics (linear inverse model, neural transition) are
interchangeable behind these two protocols; the state-space model (:mod:`bayesbridge.model`)
and the inference engines (:mod:`bayesbridge.infer`) use nothing else of them.

Shapes follow the project convention ``(*batch, member, latent)``: any number of leading batch
dimensions, then members, then the latent dimension ``d``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd
import torch
import xarray as xr

__all__ = ["Codec", "Transition"]


@runtime_checkable
class Codec(Protocol):
    """Maps anomaly fields to a latent vector and back.

    Attributes
    ----------
    latent_dim : int
        Size ``d`` of the latent vector.
    points : pandas.MultiIndex
        Levels ``(variable, lat, lon)``; one entry per ocean grid point entering the model, in
        the order of the last axis of :meth:`decode_tensor`. Observation operators build box
        averages from it.

    A :class:`typing.Protocol` (runtime checkable): any class with these members conforms and
    passes ``isinstance(obj, Codec)``; the protocol itself is not instantiated
    (``Codec(*args, **kwargs)`` raises ``TypeError``).
    """

    latent_dim: int
    points: pd.MultiIndex

    def fit(self, fields: xr.Dataset) -> Codec:
        """Fit on anomaly ``fields`` ``(time, lat, lon)`` (one or more variables, NaN over land); returns ``self``."""
        ...

    def encode(self, fields: xr.Dataset) -> xr.DataArray:
        """Latent series on ``(time, latent)`` of anomaly ``fields`` on the fitted grid."""
        ...

    def decode(self, z: xr.DataArray) -> xr.Dataset:
        """Fields on ``(..., lat, lon)`` per variable, in physical anomaly units, of latents ``z`` ``(..., latent)``."""
        ...

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable batched decoder of ``z``: ``(*batch, d) -> (*batch, n_points)`` in physical units."""
        ...


@runtime_checkable
class Transition(Protocol):
    """Latent dynamics ``z_t = mean(z_{t-1}, t) + w_t``, ``w_t ~ N(0, L_t L_t^T)``.

    ``step`` is the integer index of the *target* time ``t`` (0-based); seasonally varying
    dynamics use ``calendar month = (month0 + step) % 12``, others ignore it.

    A :class:`typing.Protocol` (runtime checkable): any class with these members conforms and
    passes ``isinstance(obj, Transition)``; the protocol itself is not instantiated
    (``Transition(*args, **kwargs)`` raises ``TypeError``).
    """

    latent_dim: int

    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Deterministic part of the transition of ``z``, ``(*batch, d) -> (*batch, d)``, to target ``step``."""
        ...

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """Cholesky factor ``(d, d)`` of the model-error covariance at target step ``step``."""
        ...
