"""Member-years per second of the idealized ENSO kernel vs a numpy reference.

Usage: ``python benchmarks/bench_idealized.py [--quick]``.
"""

from __future__ import annotations

import sys

import numba

from bayesbridge.bench.idealized import run


def main() -> None:
    quick = "--quick" in sys.argv
    for row in run(quick=quick):
        print(f"{row.name}: {row.problem}  (numba threads: {numba.get_num_threads()})")
        print(f"  bayesbridge kernel : {row.extra['member_years_per_s']:12,.0f} member-years/s")
        print(f"  {row.peer_name}: {row.extra['numpy_member_years_per_s']:12,.0f} member-years/s")
        print(f"  ratio              : {row.ratio:12.1f}x   ({row.note})")


if __name__ == "__main__":
    main()
