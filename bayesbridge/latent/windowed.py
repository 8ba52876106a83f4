"""Windowed (lag-augmented) latent states and the codec that decodes them.

A transition that reads a window of the last ``w`` latent states (the LSTM of
:class:`~bayesbridge.latent.recurrent.LSTMDynamics`) is Markov in the augmented state

.. math:: Z_t = (z_t, z_{t-1}, \\dots, z_{t-w+1}) \\in \\mathbb R^{w d},

newest block first. :class:`WindowedCodec` wraps a fitted codec of latent size ``d`` so that
the rest of the package (observation operators, posterior decoding, explanations) sees a codec
of latent size ``w d`` whose decoder reads the first block only,

.. math:: \\operatorname{dec}_w(Z) = \\operatorname{dec}(Z_{1:d}),

and whose encoder returns the lag windows of the encoded series (:func:`lag_windows`). With a
linear base decoder (:class:`~bayesbridge.latent.EOFCodec`), ``WindowedCodec(base, w)`` is a
:class:`LinearWindowedCodec`, whose ``decoder_matrix`` is the base's stacked with zeros, so that
linear-decoder fast paths keep working.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import InputTypeError, ParameterError, ShapeMismatchError, check_int

__all__ = ["WindowedCodec", "LinearWindowedCodec", "lag_windows"]


def lag_windows(z: xr.DataArray, window: int) -> xr.DataArray:
    """Lag windows ``Z_t = (z_t, z_{t-1}, ..., z_{t-w+1})`` of a latent series.

    The first ``w - 1`` steps have too short a past: the missing lags repeat the first state,
    :math:`z_{s} := z_0` for :math:`s < 0` (a steady start, as if the series had rested at its
    first value).

    Parameters
    ----------
    z : xarray.DataArray
        Latent series on ``(time, latent)`` with ``d`` components.
    window : int
        Window length ``w >= 1``.

    Returns
    -------
    xarray.DataArray
        ``(time, latent)`` with ``w d`` components, block ``k`` (entries ``k d .. (k + 1) d - 1``)
        holding ``z_{t-k}``; same ``time`` coordinate and attributes as ``z``.
    """
    w = check_int(window, "window", minimum=1)
    if not isinstance(z, xr.DataArray) or set(z.dims) != {"time", "latent"}:
        raise ShapeMismatchError(
            f"z: expected an xarray.DataArray on (time, latent) (codec.encode output), got "
            f"{type(z).__name__} {getattr(z, 'dims', '')}."
        )
    x = np.asarray(z.transpose("time", "latent").values)
    padded = np.concatenate([np.repeat(x[:1], w - 1, axis=0), x], axis=0)
    n = x.shape[0]
    blocks = [padded[w - 1 - k : w - 1 - k + n] for k in range(w)]
    return xr.DataArray(
        np.concatenate(blocks, axis=1),
        dims=("time", "latent"),
        coords={"time": z["time"], "latent": np.arange(w * x.shape[1])},
        name=z.name,
        attrs={**z.attrs, "window": w},
    )


class WindowedCodec:
    """A codec of lag-augmented states ``Z = (z_t, ..., z_{t-w+1})`` around a codec of ``z``.

    ``decode_tensor(Z) = base.decode_tensor(Z[..., :d])``; ``encode`` gives the lag windows of
    ``base.encode`` (:func:`lag_windows`, first ``w - 1`` steps padded with the first state);
    ``points``, ``stacker`` and ``variables`` are the base's. Constructing it from a base whose
    type has a ``decoder_matrix`` (a linear decoder) returns a :class:`LinearWindowedCodec`.
    The windowed codec is not saved by itself: save the base codec and wrap it again.

    Parameters
    ----------
    base : Codec
        Codec of the latent state ``z`` (``d = base.latent_dim``), fitted or not.
    window : int
        Window length ``w >= 1``.

    Attributes
    ----------
    base : Codec
        The wrapped codec.
    window : int
        ``w``.
    """

    def __new__(cls, base, window: int):
        """Choose :class:`LinearWindowedCodec` for a base with a linear decoder."""
        if cls is WindowedCodec and hasattr(type(base), "decoder_matrix"):
            cls = LinearWindowedCodec
        return super().__new__(cls)

    def __init__(self, base, window: int) -> None:
        for attr in ("decode_tensor", "encode", "decode", "latent_dim"):
            if not hasattr(base, attr):
                raise InputTypeError(
                    f"base: expected a Codec (EOFCodec, Autoencoder, VAE), got {type(base).__name__} "
                    f"without `{attr}`."
                )
        self.base = base
        self.window = check_int(window, "window", minimum=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, window={self.window})"

    @property
    def base_dim(self) -> int:
        """Latent size ``d`` of the base codec (one block)."""
        return int(self.base.latent_dim)

    @property
    def latent_dim(self) -> int:
        """Latent size ``w d`` of the augmented state."""
        return self.window * self.base_dim

    @property
    def kind(self) -> str:
        """The base codec's kind with a ``windowed-`` prefix."""
        return f"windowed-{getattr(self.base, 'kind', 'codec')}"

    @property
    def points(self) -> pd.MultiIndex:
        """``(variable, lat, lon)`` of each decoded value: the base's."""
        return self.base.points

    @property
    def stacker(self):
        """The base codec's :class:`~bayesbridge.latent.FieldStacker` (None before fitting)."""
        return getattr(self.base, "stacker", None)

    @property
    def variables(self) -> tuple[str, ...]:
        """Variables the base codec was fitted on."""
        return self.base.variables

    def _require_fitted(self):
        return self.base._require_fitted()

    def __getattr__(self, name: str):
        # the VAE's learned per-point residual scale is the windowed codec's too
        if name == "residual_std" and "base" in self.__dict__ and hasattr(self.__dict__["base"], name):
            return getattr(self.__dict__["base"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def fit(self, fields: xr.Dataset) -> WindowedCodec:
        """Fit the base codec on anomaly ``fields`` ``(time, lat, lon)``; returns ``self``."""
        self.base.fit(fields)
        return self

    def encode(self, fields: xr.Dataset) -> xr.DataArray:
        """Lag windows ``(time, latent = w d)`` of ``base.encode(fields)`` (see :func:`lag_windows`)."""
        return lag_windows(self.base.encode(fields), self.window)

    def current(self, z):
        """The first block ``z_t`` ``(..., d)`` of augmented states ``z`` ``(..., w d)``.

        ``z`` is a tensor, an array or a DataArray with a trailing ``latent`` dimension.
        """
        d = self.base_dim
        if isinstance(z, xr.DataArray):
            if z.dims[-1] != "latent" or z.sizes["latent"] != self.latent_dim:
                raise ShapeMismatchError(
                    f"z: expected a trailing latent dimension of size {self.latent_dim} (window "
                    f"{self.window} x {d}), got dims {dict(z.sizes)}."
                )
            return z.isel(latent=slice(0, d))
        if not isinstance(z, torch.Tensor | np.ndarray):
            raise InputTypeError(
                f"z: expected a torch.Tensor, numpy array or xarray.DataArray, got {type(z).__name__}."
            )
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeMismatchError(
                f"z: expected shape (*batch, {self.latent_dim}) (window {self.window} x latent {d}), "
                f"got {tuple(z.shape)}."
            )
        return z[..., :d]

    def decode(self, z) -> xr.Dataset:
        """Fields ``(..., lat, lon)`` per variable of augmented states ``z`` ``(..., w d)``.

        The base codec's :meth:`decode` of the first block.
        """
        return self.base.decode(self.current(z))

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable batched decoder ``(*batch, w d) -> (*batch, n_points)``: the base's of ``z[..., :d]``."""
        return self.base.decode_tensor(self.current(z))


class LinearWindowedCodec(WindowedCodec):
    """A :class:`WindowedCodec` around a codec with a linear decoder.

    ``decode_tensor(Z) = Z W_w + mean`` with ``W_w = [W; 0; ...; 0]`` ``(w d, n_points)``: the
    base's ``decoder_matrix`` ``W`` ``(d, n_points)`` on the first block and zeros on the lags.

    Parameters
    ----------
    base : Codec
        Codec with a ``decoder_matrix`` property (:class:`~bayesbridge.latent.EOFCodec`).
    window : int
        Window length ``w >= 1``.
    """

    def __init__(self, base, window: int) -> None:
        if not hasattr(type(base), "decoder_matrix"):
            raise ParameterError(
                f"base: LinearWindowedCodec needs a codec with a linear decoder (decoder_matrix), got "
                f"{type(base).__name__}; use WindowedCodec."
            )
        super().__init__(base, window)

    @property
    def decoder_matrix(self) -> torch.Tensor:
        """``(w d, n_points)`` float64 ``W_w`` with ``decode_tensor(Z) = Z @ W_w + mean``."""
        W = torch.as_tensor(self.base.decoder_matrix)
        zeros = W.new_zeros((self.latent_dim - W.shape[0], W.shape[1]))
        return torch.cat([W, zeros], dim=0)
