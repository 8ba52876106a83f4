"""Run every bayesbridge benchmark row and print the table; optionally write the JSON report.

Usage::

    python benchmarks/run_all.py [--quick] [--json bench.json] [--only enkf,latent]

The same as ``bayesbridge bench``; peers (DAPPER, filterpy) come with ``pip install 'bayesbridge[bench]'``.
"""

from __future__ import annotations

import argparse

from bayesbridge.bench.suite import MODULES, print_report, run_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter problems")
    parser.add_argument("--json", default=None, help="write the report to this file")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(MODULES)}")
    args = parser.parse_args()
    modules = tuple(m for m in args.only.split(",") if m) if args.only else None
    report = run_all(quick=args.quick, modules=modules, progress=lambda name: print(f"running {name} ...", flush=True))
    print_report(report)
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
