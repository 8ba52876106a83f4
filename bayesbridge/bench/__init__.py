"""Benchmarks: bayesbridge and its peers on the same problems, in one process.

Each row module (``bayesbridge.bench.<row>``) exposes ``run(quick: bool) -> list[BenchRow]``.
Peers (DAPPER, filterpy) are optional: they are imported inside the row functions only, and a
missing peer is reported, never silently skipped. Times are medians over repeats; memory is the
peak resident-set growth during the call.
"""

from __future__ import annotations

from bayesbridge.bench.core import BenchRow, Timing, measure

__all__ = ["BenchRow", "Timing", "measure"]
