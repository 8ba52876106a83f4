"""Random numbers of the ensemble Kalman engines: the default block noise source and the
post-processing of perturbations (centred or second-order exact sampling).

A noise source is any callable ``noise(kind, step, shape) -> Tensor`` of float64 standard
normals; ``kind`` is ``"initial"``, ``"model"`` or ``"obs"``. The default,
:func:`generator_noise`, draws each kind for blocks of cycles at once from a NumPy generator
seeded by the caller's ``torch.Generator``; the compiled cycle
(:mod:`bayesbridge.infer._enkf_kernel`) reads the same blocks, so both routes see the same
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Noise", "BlockNoise", "generator_noise", "draw_perturbations"]

Noise = Callable[[str, int, tuple], torch.Tensor]
"""``noise(kind, step, shape) -> Tensor``: float64 standard normals of ``shape``."""


class BlockNoise:
    """Standard normals drawn in blocks of cycles (see :func:`generator_noise`).

    Parameters
    ----------
    generator : torch.Generator
        Source of the one 63-bit seed of a NumPy PCG64 generator.
    n_steps : int or None
        Number of cycles; ``None`` draws step by step.
    block_elements : int
        Largest block, in numbers.
    device : torch.device, optional
        Where the numbers are delivered (default: the generator's device).
    """

    def __init__(self, generator: torch.Generator, n_steps: int | None, block_elements: int,
                 device: torch.device | None = None) -> None:
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))
        self.rng = np.random.default_rng(seed)
        self.device = generator.device if device is None else torch.device(device)
        self.n_steps = n_steps
        self.block_elements = block_elements
        self.blocks: dict[str, tuple[int, torch.Tensor]] = {}

    def _draw(self, shape: tuple) -> torch.Tensor:
        out = torch.from_numpy(self.rng.standard_normal(shape))
        return out if self.device.type == "cpu" else out.to(self.device)  # one copy per block

    def __call__(self, kind: str, step: int, shape: tuple) -> torch.Tensor:
        if kind == "initial" or self.n_steps is None:
            return self._draw(shape)
        start, block = self.blocks.get(kind, (0, None))
        if block is None or not (start <= step < start + block.shape[0]) or tuple(block.shape[1:]) != tuple(shape):
            size = max(1, math.prod(shape))
            k = max(1, min(self.n_steps - step, self.block_elements // size))
            start, block = step, self._draw((k, *shape))
            self.blocks[kind] = (start, block)
        return block[step - start]


def generator_noise(
    generator: torch.Generator, n_steps: int | None = None, block_elements: int = 2**20,
    device: str | torch.device | None = None,
) -> Noise:
    """The default noise source: float64 standard normals seeded by ``generator``, drawn in blocks.

    Parameters
    ----------
    generator : torch.Generator
        One 63-bit seed is drawn from it for a NumPy PCG64 generator (same generator state, same
        numbers: common random numbers).
    n_steps : int, optional
        Number of cycles ``T``; when given, each kind of noise is drawn for up to
        ``block_elements // prod(shape)`` cycles at once (one call per block instead of one per
        step), else step by step.
    block_elements : int
        Largest block, in numbers (default 2**20, 8 MiB).
    device : str or torch.device, optional
        Where the numbers are delivered (default: the generator's device). They are drawn on the
        CPU and copied once per block, so a CUDA run draws the same numbers as a CPU run with
        the same seed only if the seeds drawn from the two generators coincide (they do not:
        CPU and CUDA generators have different streams).

    Returns
    -------
    callable
        ``noise(kind, step, shape) -> Tensor`` of float64 standard normals of ``shape``.

    Notes
    -----
    NumPy's ziggurat sampler is about twice as fast per float64 number as ``torch.randn`` on the
    CPU; why not float32 draws: ``docs/lab-notes.md``.
    """
    return BlockNoise(generator, n_steps, block_elements, device)


def draw_perturbations(
    noise: Noise, kind: str, step: int, shape: tuple, sampling: str, F: torch.Tensor | None
) -> torch.Tensor:
    """Standard normals ``noise(kind, step, shape)`` ``(*batch, N, k)`` post-processed according to ``sampling``.

    ``"centred"``: zero mean over members, rescaled by ``sqrt(N/(N-1))``. ``"exact"``: also
    orthogonal to the anomalies of ``F`` (the deterministic forecast, when given) and whitened so
    that the sample covariance is exactly the identity; falls back to ``"centred"`` when
    ``N - 1 < k + rank(F)`` (not enough members).
    """
    eps = noise(kind, step, shape)
    if sampling == "random":
        return eps
    n, k = shape[-2], shape[-1]
    eps = eps - eps.mean(-2, keepdim=True)
    if sampling == "exact":
        if F is not None and n - 1 >= 2 * k:
            Fa = F - F.mean(-2, keepdim=True)
            Qf, _ = torch.linalg.qr(Fa)  # (*b, N, k') orthonormal basis of the anomaly span
            eps = eps - Qf @ (Qf.mT @ eps)
        if n - 1 >= k + (k if F is not None else 0):
            C = eps.mT @ eps / (n - 1)
            L, info = torch.linalg.cholesky_ex(C)
            if bool((info == 0).all()):
                return torch.linalg.solve_triangular(L, eps.mT, upper=False).mT
    return eps * math.sqrt(n / (n - 1))
