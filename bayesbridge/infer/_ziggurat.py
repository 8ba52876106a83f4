"""Float32 standard normals for the particle filter's model noise: xoshiro256++ and a ziggurat.

The bootstrap particle filter draws ``N d`` normals per step; with its compiled kernel these
draws are the largest single cost (measurements in ``docs/lab-notes.md``). This module draws
them from

* **xoshiro256++** (Blackman & Vigna 2021, *Scrambled linear pseudorandom number generators*,
  ACM Trans. Math. Softw. 47(4), 36), a 256-bit-state generator that passes BigCrush and
  PractRand, seeded by **splitmix64** (Steele, Lea & Flood 2014) as its authors recommend; each
  64-bit output gives two 32-bit words;
* the **ziggurat** method of Marsaglia & Tsang (2000, *J. Stat. Softw.* 5(8)) with 256 layers,
  in the float32 form of numpy's ``random_standard_normal_f``: a 32-bit word gives the layer
  (8 bits), the sign (1 bit) and a 23-bit abscissa, accepted at once with probability 0.988;
  otherwise the wedge test against ``exp(-x^2/2)`` or, in the base layer, Marsaglia's (1964)
  exact tail beyond ``r = 3.6541528853610088``.

The stream is a pure function of the seed: filling an array in pieces of any sizes gives the
numbers of one fill, so blocks of any size draw the same sequence. The seed comes from the caller's
``torch.Generator``, so ``seed=`` reproduces a run. The tests check the output against the
normal distribution (chi-square over 200 equiprobable bins, tail frequencies, moments).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

__all__: list[str] = []

_R = 3.6541528853610088  # right edge of the base layer for 256 layers (Marsaglia & Tsang 2000)
_V = 0.00492867323399  # area of every layer: R exp(-R^2/2) plus the tail beyond R (tested)
_M = float(2**23)  # the abscissa has 23 bits


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang's (2000) ``zigset`` for 256 layers and a 23-bit abscissa.

    Returns ``ki`` (256,) uint32 acceptance thresholds, ``wi`` (256,) float32 abscissa scales
    and ``fi`` (256,) float32 densities ``exp(-x_i^2/2)`` at the layer edges.
    """
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    ki = np.zeros(256, np.uint32)
    wi = np.zeros(256, np.float64)
    fi = np.zeros(256, np.float64)
    dn = tn = _R
    q = _V / f(dn)
    ki[0] = int(dn / q * _M)
    wi[0], wi[255] = q / _M, dn / _M
    fi[0], fi[255] = 1.0, f(dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_V / dn + f(dn)))
        ki[i + 1] = int(dn / tn * _M)
        tn = dn
        fi[i], wi[i] = f(dn), dn / _M
    return ki, wi.astype(np.float32), fi.astype(np.float32)


_KI, _WI, _FI = _tables()
_jit = numba.njit(cache=True)


@_jit
def _next(s):  # pragma: no cover - compiled
    """One 64-bit output of xoshiro256++; advances the state ``s`` (4,) uint64 in place."""
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    v = s0 + s3
    out = ((v << np.uint64(23)) | (v >> np.uint64(41))) + s0
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3
    return out


@_jit
def _unit(s):  # pragma: no cover - compiled
    """A uniform in (0, 1) from the top 53 bits of one output."""
    return (np.float64(_next(s) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@_jit
def _slow(s, r, ki, wi, fi):  # pragma: no cover - compiled
    """The ziggurat's rare branch for the rejected 32-bit word ``r``: tail or wedge, retrying."""
    while True:
        idx = r & np.uint32(0xFF)
        neg = (r >> np.uint32(8)) & np.uint32(1)
        rabs = (r >> np.uint32(9)) & np.uint32(0x7FFFFF)
        x = np.float64(rabs) * np.float64(wi[idx])
        if rabs < ki[idx]:
            return -x if neg else x
        if idx == 0:  # the tail beyond R (Marsaglia 1964)
            while True:
                xx = -math.log(_unit(s)) / _R
                yy = -math.log(_unit(s))
                if yy + yy > xx * xx:
                    return -(_R + xx) if neg else _R + xx
        u = np.float64(_next(s) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        if fi[idx] + u * (fi[idx - 1] - fi[idx]) < math.exp(-0.5 * x * x):
            return -x if neg else x
        r = np.uint32(_next(s) & np.uint64(0xFFFFFFFF))


@_jit
def _draw(s, r, ki, wi, fi):  # pragma: no cover - compiled
    """The standard normal of the 32-bit word ``r``: layer (8 bits), sign (1), abscissa (23)."""
    idx = r & np.uint32(0xFF)
    rabs = (r >> np.uint32(9)) & np.uint32(0x7FFFFF)
    if rabs < ki[idx]:
        x = np.float32(rabs) * wi[idx]
        return -x if (r >> np.uint32(8)) & np.uint32(1) else x
    return np.float32(_slow(s, r, ki, wi, fi))


@_jit
def _fill(s, out, ki, wi, fi):  # pragma: no cover - compiled
    """Fill ``out`` (n,) float32 with standard normals, two 32-bit words per generator output.

    ``s`` (6,) uint64: the xoshiro256++ state, then a pending 32-bit word and a flag saying
    whether it is pending; a word left over by an odd-length fill opens the next, so filling in
    pieces gives the numbers of one fill.
    """
    n = out.shape[0]
    i = 0
    mask = np.uint64(0xFFFFFFFF)
    if n > 0 and s[5]:
        s[5] = 0
        out[0] = _draw(s, np.uint32(s[4] & mask), ki, wi, fi)
        i = 1
    while i + 1 < n:  # the fast path written out: a call per number costs ten times more
        r64 = _next(s)
        for half in range(2):
            r = np.uint32((r64 >> np.uint64(32 * half)) & mask)
            idx = r & np.uint32(0xFF)
            rabs = (r >> np.uint32(9)) & np.uint32(0x7FFFFF)
            if rabs < ki[idx]:
                x = np.float32(rabs) * wi[idx]
                out[i] = -x if (r >> np.uint32(8)) & np.uint32(1) else x
            else:
                out[i] = np.float32(_slow(s, r, ki, wi, fi))
            i += 1
    if i < n:
        r64 = _next(s)
        out[i] = _draw(s, np.uint32(r64 & mask), ki, wi, fi)
        s[4] = r64 >> np.uint64(32)
        s[5] = 1


def _splitmix64(x: int) -> tuple[int, int]:
    """One splitmix64 step on the 64-bit ``x``: ``(next state, output)``."""
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return x, z ^ (z >> 31)


class ZigguratNormals:
    """A stream of float32 standard normals seeded from a ``torch.Generator``.

    Parameters
    ----------
    generator : torch.Generator
        Consulted once, for 62 random bits that seed the xoshiro256++ state via splitmix64.
    """

    def __init__(self, generator: torch.Generator) -> None:
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        state = []
        for _ in range(4):
            seed, word = _splitmix64(seed)
            state.append(word)
        self.state = np.array(state + [0, 0], dtype=np.uint64)  # + no pending word

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (any shape, C-contiguous float32) in place with the next numbers; return it."""
        _fill(self.state, out.reshape(-1), _KI, _WI, _FI)
        return out
