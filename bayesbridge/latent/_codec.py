"""Machinery shared by every codec: xarray wrapping, latent-shape checks, save/load.

A concrete codec implements ``_fit_array(x, fields)``, ``_encode_array(x)`` on normalised
stacked data ``(time, n_points)`` and ``_decode_normalised(z)`` in torch; this base turns them
into the :class:`~bayesbridge.latent.base.Codec` protocol (physical units, xarray in and out).

Files written by :meth:`CodecBase.save` are a directory holding ``metadata.json`` (codec kind,
hyperparameters, grid, masks, variables, normalisation) and ``state_dict.pt`` (tensors only,
read back with ``torch.load(weights_only=True)``): no pickled code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bayesbridge.errors import (
    DataFileError,
    InputTypeError,
    NotFittedError,
    ParameterError,
    ShapeMismatchError,
)
from bayesbridge.latent.stacking import FieldStacker, as_dataset

__all__ = ["CodecBase", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class CodecBase:
    """Base of :class:`EOFCodec`, :class:`Autoencoder` and :class:`VAE` (not used directly)."""

    kind: ClassVar[str] = "codec"
    latent_dim: int
    stacker: FieldStacker | None = None

    # ------------------------------------------------------------------ to implement
    def _fit_array(self, x: np.ndarray, fields: xr.Dataset) -> None:  # pragma: no cover
        raise NotImplementedError

    def _encode_array(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _decode_normalised(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _state_dict(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol
    def _check_latent_dim(self) -> None:
        if not isinstance(self.latent_dim, int | np.integer) or self.latent_dim < 1:
            raise ParameterError(
                f"latent_dim: expected a positive integer, got {self.latent_dim!r}."
            )

    def _require_fitted(self) -> FieldStacker:
        if self.stacker is None:
            raise NotFittedError(
                f"{type(self).__name__}: call .fit(fields) (or {type(self).__name__}.load(path)) "
                f"before encoding or decoding."
            )
        return self.stacker

    @property
    def points(self) -> pd.MultiIndex:
        """``(variable, lat, lon)`` of each entry of the last axis of :meth:`decode_tensor`."""
        return self._require_fitted().points

    @property
    def variables(self) -> tuple[str, ...]:
        """Variables the codec was fitted on."""
        return self._require_fitted().variables

    def fit(self, fields: xr.Dataset | xr.DataArray, mask: xr.DataArray | None = None):
        """Fit on anomaly fields ``(time, lat, lon)`` (one or more variables, NaN over land).

        ``mask`` (boolean ``(lat, lon)``) excludes further points. Returns ``self``.
        """
        ds = as_dataset(fields)
        stacker = FieldStacker.fit(ds, mask=mask)
        x = stacker.transform(ds)
        self.stacker = stacker
        try:
            self._fit_array(x, ds)
        except Exception:
            self.stacker = None
            raise
        return self

    def encode(self, fields: xr.Dataset | xr.DataArray) -> xr.DataArray:
        """Latent series ``(time, latent)`` (float64) of anomaly fields on the fitted grid."""
        stacker = self._require_fitted()
        ds = as_dataset(fields)
        z = self._encode_array(stacker.transform(ds))
        return xr.DataArray(
            np.asarray(z, dtype=float),
            dims=("time", "latent"),
            coords={"time": ds["time"], "latent": np.arange(self.latent_dim)},
            name="z",
            attrs={"long_name": f"{self.kind} latent state", "units": "1"},
        )

    def _as_latent_tensor(self, z, argument: str = "z") -> torch.Tensor:
        if isinstance(z, xr.DataArray):
            z = z.values
        if isinstance(z, np.ndarray):
            z = torch.from_numpy(np.asarray(z, dtype=np.float64))
        if not isinstance(z, torch.Tensor):
            raise InputTypeError(
                f"{argument}: expected a torch.Tensor, numpy array or xarray.DataArray with a "
                f"trailing latent axis, got {type(z).__name__}."
            )
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeMismatchError(
                f"{argument}: expected shape (*batch, {self.latent_dim}) (trailing axis = the codec's "
                f"latent_dim {self.latent_dim}), got {tuple(z.shape)}; encode with this codec or "
                f"use a codec with latent_dim={z.shape[-1] if z.ndim else '?'}."
            )
        if not torch.is_floating_point(z):
            z = z.to(torch.float64)
        return z

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable batched decoder ``(*batch, latent) -> (*batch, n_points)``.

        Physical anomaly units (the last axis follows :attr:`points`), in the dtype and on the
        device of ``z``; gradients flow to ``z``.
        """
        stacker = self._require_fitted()
        z = self._as_latent_tensor(z)
        x_n = self._decode_normalised(z)
        scale = torch.as_tensor(stacker.scale, dtype=x_n.dtype, device=x_n.device)
        mean = torch.as_tensor(stacker.mean, dtype=x_n.dtype, device=x_n.device)
        return (x_n * scale + mean).to(dtype=z.dtype, device=z.device)

    def decode(self, z: xr.DataArray | np.ndarray | torch.Tensor) -> xr.Dataset:
        """Fields ``(..., lat, lon)`` per variable (float32, physical units, NaN over land).

        ``z`` is ``(..., latent)``; a DataArray keeps its leading dimensions and coordinates
        (an array gets ``time`` for 2-D input, ``dim_0, dim_1, ...`` otherwise).
        """
        stacker = self._require_fitted()
        tensor = self._as_latent_tensor(z)
        with torch.no_grad():
            x = self.decode_tensor(tensor).cpu().numpy()
        if isinstance(z, xr.DataArray):
            dims = tuple(d for d in z.dims if d != "latent")
            if len(dims) != z.ndim - 1 or z.dims[-1] != "latent":
                raise ShapeMismatchError(
                    f"z: expected the latent dimension last and named 'latent', got dims {z.dims}; "
                    f"use z.transpose(..., 'latent')."
                )
            coords = {k: v for k, v in z.coords.items() if "latent" not in v.dims}
        else:
            dims = ("time",) if x.ndim == 2 else tuple(f"dim_{i}" for i in range(x.ndim - 1))
            coords = None
        return stacker.unstack(x, dims, coords)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.device):
                value = str(value)
            if isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``path/metadata.json`` and ``path/state_dict.pt``; returns the directory."""
        stacker = self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "config": self._config(),
            "grid": stacker.to_metadata(),
            "extra": self._extra_metadata(),
        }
        state = {k: v.detach().cpu().clone() for k, v in self._state_dict().items()}
        torch.save(state, path / "state_dict.pt")
        (path / "metadata.json").write_text(json.dumps(meta, indent=1))
        return path

    def _extra_metadata(self) -> dict:
        return {}

    def _set_extra_metadata(self, extra: dict) -> None:
        return None

    @classmethod
    def load(cls, path: str | Path, fields: xr.Dataset | None = None, **overrides):
        """Read a codec written by :meth:`save`.

        ``fields``, when given, must have the saved variables, grid and ocean mask (else
        :class:`ShapeMismatchError` / :class:`VariableNotFoundError`). ``overrides`` replace
        saved hyperparameters that do not change the weights (e.g. ``device="cuda"``).
        """
        path = Path(path)
        meta_file, state_file = path / "metadata.json", path / "state_dict.pt"
        if not meta_file.is_file() or not state_file.is_file():
            raise DataFileError(
                f"path: {path} is not a saved codec directory (expected metadata.json and "
                f"state_dict.pt inside); write one with codec.save(path)."
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") != cls.kind:
            raise DataFileError(
                f"path: {path} holds a {meta.get('kind')!r} codec, not a {cls.kind!r}; load it "
                f"with the matching class."
            )
        config = {**meta["config"], **overrides}
        codec = cls(**config)
        codec.stacker = FieldStacker.from_metadata(meta["grid"])
        codec._set_extra_metadata(meta.get("extra", {}))
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        try:
            codec._load_state_dict(state)
        except (RuntimeError, KeyError) as err:
            raise DataFileError(
                f"path: the weights in {state_file} do not fit the metadata in {meta_file} "
                f"({err}); the directory is corrupted or mixes two codecs."
            ) from err
        if fields is not None:
            codec.stacker.check_compatible(fields)
        return codec
