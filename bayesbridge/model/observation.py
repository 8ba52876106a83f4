"""Observation operators on decoded fields: box averages and operator rows, in observation units."""

from __future__ import annotations

import copy

import numpy as np
import torch

from bayesbridge.errors import InputTypeError

__all__ = ["BoxObservation", "OperatorObservation"]


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


class OperatorObservation:
    """``h(z) = decode(z) @ W^T`` for operator rows ``W`` ``(m, n_points)`` (scales included).

    The nonlinear-codec counterpart of an affine operator: every member's field is decoded and
    the rows applied, without linearisation.

    Parameters
    ----------
    codec : Codec
        With ``decode_tensor`` ``(*batch, d) -> (*batch, n_points)``.
    weights : torch.Tensor
        ``(m, n_points)`` float64.
    """

    def __init__(self, codec, weights) -> None:
        self.codec, self.weights = codec, weights

    def __call__(self, z):
        """Observables ``(*batch, m)`` of ``z`` ``(*batch, d)`` (float64)."""
        return self.codec.decode_tensor(z).to(torch.float64) @ self.weights.to(z.device).mT

    def to(self, device) -> OperatorObservation:
        """A copy with the rows on ``device`` (the codec is shared)."""
        from bayesbridge.devices import resolve_device

        return OperatorObservation(self.codec, self.weights.to(resolve_device(device)))
