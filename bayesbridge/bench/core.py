"""Timing and peak-memory measurement shared by the benchmark rows."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

__all__ = ["Timing", "BenchRow", "measure", "measure_pair", "PeakRSS"]


class PeakRSS:
    """Context manager sampling the resident set size in a thread; ``peak_mb`` is the growth.

    RSS catches numpy, torch and numba allocations alike (``tracemalloc`` sees only the ones
    made through Python's allocator).

    Parameters
    ----------
    interval_s : float
        Sampling interval of the polling thread, in seconds.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self.peak_mb = 0.0

    def __enter__(self) -> PeakRSS:
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mb = (self._peak - self._base) / 2**20


@dataclass(frozen=True)
class Timing:
    """Median wall time over ``repeats`` calls and the peak RSS growth of the first call.

    Built by :func:`measure`.

    Parameters
    ----------
    median_s : float
        Median wall-clock time of the timed calls, in seconds.
    times_s : tuple of float
        Wall-clock time of each timed call, in seconds, in call order (length ``repeats``).
    peak_mb : float
        Peak growth of the resident set size during the first timed call, in MiB (see
        :class:`PeakRSS`).
    """

    median_s: float
    times_s: tuple[float, ...]
    peak_mb: float


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls (JIT, caches), then ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    times = []
    peak = 0.0
    for i in range(repeats):
        if i == 0:
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            peak = mem.peak_mb
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), tuple(times), peak)


def _timed(fn: Callable[[], object], track_memory: bool) -> tuple[float, float]:
    if not track_memory:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, 0.0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
    return elapsed, mem.peak_mb


def measure_pair(
    ours: Callable[[], object], peer: Callable[[], object], repeats: int = 3, warmup: int = 1
) -> tuple[Timing, Timing]:
    """Time two implementations in alternation: ``(ours, peer)`` :class:`Timing` pairs.

    Timed calls alternate (ours, peer, peer, ours, ours, peer, ...) so that a change of machine
    load during the run (other processes on a shared machine) affects both sides alike and the
    ratio of medians stays fair; timing one side completely before the other does not. Peak
    memory is measured on each side's first timed call.

    Parameters
    ----------
    ours, peer : callable
        The two implementations, called without arguments.
    repeats : int
        Timed calls per side.
    warmup : int
        Untimed calls per side first (lazy imports, compilation, allocator pools).
    """
    for _ in range(warmup):
        ours()
        peer()
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    peaks = {"ours": 0.0, "peer": 0.0}
    fns = {"ours": ours, "peer": peer}
    for i in range(repeats):
        for side in (("ours", "peer") if i % 2 == 0 else ("peer", "ours")):
            elapsed, peak = _timed(fns[side], track_memory=i == 0)
            times[side].append(elapsed)
            peaks[side] = max(peaks[side], peak)
    return tuple(Timing(statistics.median(times[s]), tuple(times[s]), peaks[s]) for s in ("ours", "peer"))


@dataclass
class BenchRow:
    """One benchmark row: bayesbridge against one peer on the same problem.

    ``ratio = peer.median_s / ours.median_s`` (larger is better for bayesbridge).

    Parameters
    ----------
    name : str
        Name of the benchmark row.
    problem : str
        Description of the problem both implementations solve (sizes, settings).
    ours : Timing
        Timing of the bayesbridge implementation.
    peer_name : str
        Name of the peer implementation (library or reference code).
    peer : Timing or None
        Timing of the peer; None when the peer could not be run (e.g. not installed).
    key : str, optional
        JSON key of this row under ``ratios.`` (``docs/design.md`` section 3), when the row has one.
    note : str
        Free-text remark (e.g. why the peer is missing); empty by default.
    extra : dict of str to float
        Additional named figures of the row (e.g. ``member_years_per_s``); empty by default.
    """

    name: str
    problem: str
    ours: Timing
    peer_name: str
    peer: Timing | None
    key: str | None = None  # JSON key under ``ratios.`` (``docs/design.md`` section 3), when this row has one
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Speed-up ``peer.median_s / ours.median_s`` (float), or None when ``peer`` is None."""
        if self.peer is None:
            return None
        return self.peer.median_s / self.ours.median_s
