"""The affine form of a state-space model (exact for linear codecs and linear dynamics).

An affine model, ``f_t(z) = A_t z + b_t`` and ``h(z) = H z + c``, is marginalised exactly by the
Kalman filter and :class:`pyro.distributions.GaussianHMM`; :func:`probe_affine` detects it by
evaluating the maps on the origin, the unit vectors and random probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AffineStructure", "probe_affine"]


@dataclass(frozen=True)
class AffineStructure:
    """Affine form of a state-space model over ``T`` steps (column-vector convention).

    Attributes
    ----------
    A : Tensor (T, d, d)
    b : Tensor (T, d)
    L : Tensor (T, d, d)
        Transition noise factors before the model-error scale ``sigma``.
    H : Tensor (m, d)
    c : Tensor (m,)
    """

    A: torch.Tensor
    b: torch.Tensor
    L: torch.Tensor
    H: torch.Tensor
    c: torch.Tensor

    @property
    def time_invariant(self) -> bool:
        """Whether ``A_t, b_t, L_t`` are the same at every step."""
        return bool(
            torch.equal(self.A, self.A[:1].expand_as(self.A))
            and torch.equal(self.b, self.b[:1].expand_as(self.b))
            and torch.equal(self.L, self.L[:1].expand_as(self.L))
        )


def probe_affine(fn, d: int, n_probe: int = 2, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Affine form of ``fn`` ``(*batch, d) -> (*batch, k)``, found by probing.

    ``fn`` is evaluated on the origin, the ``d`` unit vectors and ``n_probe`` random probes (on
    ``device``). Returns ``(M (d, k), b (k,))`` with ``fn(z) = b + z M`` if it is affine on them,
    else None.
    """
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
