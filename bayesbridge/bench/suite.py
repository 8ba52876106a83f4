"""The whole benchmark suite: every row module, one report, a table and the JSON of ``docs/design.md`` section 3.

:func:`run_all` runs the row modules (:data:`MODULES`: ``enkf``, ``kalman``, ``particle``, ``hyper``,
``idealized``, ``latent``, ``memory``, ``job``) in this process, one after another, and returns a :class:`BenchReport`.
``BenchReport.to_json()`` holds at least

* ``ratios.<key>`` for every key of :data:`RATIO_KEYS` (peer time / bayesbridge time, larger is
  better): ``enkf_vs_dapper``, ``pf_vs_smcfilter``, ``latent_vs_fullspace_enkf``,
  ``batched_vs_sequential``, ``gaussianhmm_vs_loop_kalman`` (and ``idealized_vs_numpy``,
  ``nuts_scales_vs_pyro_trace``, and the demo's phases ``read_vs_xarray``, ``decode_vs_numpy``,
  ``evaluate_vs_numpy``, ``write_vs_defaults``);
* ``idealized.member_years_per_s`` and ``memory.posterior_summary_peak_mb``.

A value that could not be measured is ``null`` and its key appears in ``missing`` with the reason
(``"peer missing: DAPPER not installed ..."``, ``"row failed: ..."``, ``"not run"``): nothing is
dropped silently. ``targets`` compares every ratio with the goal of issue 8 and ``rows`` lists every
row with its timings, ratio, peak memory, note and extra figures; ``machine`` records where it ran.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bayesbridge.bench.core import BenchRow
from bayesbridge.errors import InputValueError

__all__ = ["run_all", "BenchReport", "MODULES", "RATIO_KEYS", "TARGETS", "print_report"]

MODULES: tuple[str, ...] = ("enkf", "kalman", "particle", "hyper", "idealized", "latent", "memory", "job")
"""Row modules ``bayesbridge.bench.<name>``, in running order."""

RATIO_KEYS: dict[str, str] = {
    "enkf_vs_dapper": "enkf",
    "gaussianhmm_vs_loop_kalman": "kalman",
    "batched_vs_sequential": "enkf",
    "pf_vs_smcfilter": "particle",
    "idealized_vs_numpy": "idealized",
    "latent_vs_fullspace_enkf": "latent",
    "nuts_scales_vs_pyro_trace": "hyper",
    "read_vs_xarray": "job",
    "decode_vs_numpy": "job",
    "evaluate_vs_numpy": "job",
    "write_vs_defaults": "job",
}
"""``ratios.<key>`` of the JSON and the module whose keyed row provides it."""

TARGETS: dict[str, float] = {
    "enkf_vs_dapper": 10.0,
    "pf_vs_smcfilter": 20.0,
    "gaussianhmm_vs_loop_kalman": 10.0,
    "latent_vs_fullspace_enkf": 100.0,
    "batched_vs_sequential": 20.0,
    "nuts_scales_vs_pyro_trace": 3.0,
    "read_vs_xarray": 5.0,
    "decode_vs_numpy": 5.0,
    "evaluate_vs_numpy": 5.0,
    "write_vs_defaults": 5.0,
}
"""Minimum ratios of issue 8 (the posterior-summary memory growth target is below 10 %), of
issue 14 (NUTS over the error scales at least 3 times the Pyro-trace route: 34 s against 102 s)
and of issue 16 (each phase of the demo at least 5 times its plain reference)."""

MEMORY_GROWTH_TARGET = 0.10


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


@dataclass
class BenchReport:
    """Rows of every module, failures, and settings of one suite run.

    Attributes
    ----------
    rows : list of BenchRow
    errors : dict of str to str
        Module name -> the exception that stopped it (its rows are then missing).
    skipped : tuple of str
        Modules that were not asked for.
    quick, tiny : bool
        Problem sizes used.
    seconds : float
        Wall time of the whole run.
    machine : dict
        Platform, cores, load average, library versions.
    """

    rows: list[BenchRow]
    errors: dict[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    quick: bool = False
    tiny: bool = False
    seconds: float = 0.0
    machine: dict = field(default_factory=dict)

    def keyed(self, key: str) -> BenchRow | None:
        """The row that carries JSON ratio ``key`` (``None`` if it was not produced)."""
        return next((r for r in self.rows if r.key == key), None)

    def _row_of(self, name: str) -> BenchRow | None:
        return next((r for r in self.rows if r.name == name), None)

    def _why_missing(self, module: str) -> str:
        if module in self.errors:
            return f"row failed: {self.errors[module]}"
        if module in self.skipped:
            return "not run (module not selected)"
        return "row not produced"

    def to_json(self) -> dict:
        """The JSON document of ``bayesbridge bench --json`` (see the module docstring)."""
        ratios: dict[str, float | None] = {}
        missing: dict[str, str] = {}
        for key, module in RATIO_KEYS.items():
            row = self.keyed(key)
            if row is None:
                ratios[key] = None
                missing[f"ratios.{key}"] = self._why_missing(module)
            elif row.peer is None:
                ratios[key] = None
                missing[f"ratios.{key}"] = f"peer missing: {row.note or row.peer_name}"
            else:
                ratios[key] = _finite(row.ratio)
        ideal = self._row_of("idealized_kernel")
        idealized = {"member_years_per_s": _finite(ideal.extra.get("member_years_per_s")) if ideal else None}
        if ideal is None:
            missing["idealized.member_years_per_s"] = self._why_missing("idealized")
        mem = self._row_of("posterior summary memory")
        memory = {
            "posterior_summary_peak_mb": _finite(mem.ours.peak_mb) if mem else None,
            "posterior_summary_growth_50_to_400": _finite(mem.extra.get("growth_50_to_400")) if mem else None,
        }
        if mem is None:
            missing["memory.posterior_summary_peak_mb"] = self._why_missing("memory")
        targets = {
            key: {"target": goal, "value": ratios[key], "met": None if ratios[key] is None else ratios[key] >= goal}
            for key, goal in TARGETS.items()
        }
        growth = memory["posterior_summary_growth_50_to_400"]
        targets["memory.posterior_summary_growth_50_to_400"] = {
            "target": MEMORY_GROWTH_TARGET, "value": growth, "met": None if growth is None else growth < MEMORY_GROWTH_TARGET,
            "comparison": "below"}
        return {
            "ratios": ratios,
            "idealized": idealized,
            "memory": memory,
            "missing": missing,
            "targets": targets,
            "errors": dict(self.errors),
            "settings": {"quick": self.quick, "tiny": self.tiny, "seconds": self.seconds,
                         "modules_skipped": list(self.skipped)},
            "machine": dict(self.machine),
            "rows": [_row_json(r) for r in self.rows],
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` to ``path`` atomically; returns the path."""
        from bayesbridge.io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False))
        return path

    def table(self):
        """A :class:`rich.table.Table`: row, problem, ours, peer, ratio, peak MB."""
        from rich.table import Table

        t = Table(title=f"bayesbridge bench ({'tiny' if self.tiny else 'quick' if self.quick else 'full'})",
                  show_lines=False)
        for col, justify in (("row", "left"), ("problem", "left"), ("ours", "right"), ("peer", "left"),
                             ("peer time", "right"), ("ratio", "right"), ("peak MB", "right")):
            t.add_column(col, justify=justify, overflow="fold")
        for r in self.rows:
            ratio = r.ratio
            goal = TARGETS.get(r.key or "")
            ratio_text = "peer missing" if r.peer is None and r.key else "-" if ratio is None else f"{ratio:.1f}x"
            if ratio is not None and goal is not None:
                ratio_text = f"[{'green' if ratio >= goal else 'red'}]{ratio_text}[/] (>= {goal:g})"
            peer_name = r.peer_name if r.peer is not None or not r.note else f"{r.peer_name}: {r.note}"
            t.add_row(
                r.name + (f" [dim]\\[{r.key}][/]" if r.key else ""),
                r.problem,
                _fmt_time(r.ours.median_s),
                peer_name,
                "-" if r.peer is None else _fmt_time(r.peer.median_s),
                ratio_text,
                f"{r.ours.peak_mb:.1f}",
            )
        for module, err in self.errors.items():
            t.add_row(f"[red]{module}[/]", "row failed", "-", err, "-", "-", "-")
        return t


def _fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _row_json(r: BenchRow) -> dict:
    return {
        "name": r.name,
        "key": r.key,
        "problem": r.problem,
        "ours_s": _finite(r.ours.median_s),
        "ours_times_s": [_finite(x) for x in r.ours.times_s],
        "peer": r.peer_name,
        "peer_s": None if r.peer is None else _finite(r.peer.median_s),
        "ratio": None if r.ratio is None else _finite(r.ratio),
        "peak_mb": _finite(r.ours.peak_mb),
        "peer_peak_mb": None if r.peer is None else _finite(r.peer.peak_mb),
        "note": r.note,
        "extra": {k: _finite(v) for k, v in r.extra.items()},
    }


def machine_info() -> dict:
    """Where the benchmark ran: platform, cores, load, thread settings, library versions."""
    import numpy as np
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        pass
    try:
        import psutil

        info["cpu_count_physical"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = psutil.virtual_memory().total / 2**30
    except ImportError:  # pragma: no cover
        pass
    return info


def run_all(
    quick: bool = False,
    *,
    tiny: bool = False,
    modules: Sequence[str] | None = None,
    progress=None,
) -> BenchReport:
    """Run the row modules and collect one :class:`BenchReport`.

    Parameters
    ----------
    quick : bool
        Shorter problems (every row's ``quick`` sizes).
    tiny : bool
        Smallest sizes, for tests: passed to rows that accept it; the others run ``quick``.
    modules : sequence of str, optional
        Subset of :data:`MODULES` (default: all). The others are reported as not run.
    progress : callable, optional
        Called with each module name before it runs.

    Returns
    -------
    BenchReport
        A module that raises does not stop the others: its error is recorded in
        ``BenchReport.errors`` and its keys are reported missing with the reason.
    """
    chosen = tuple(MODULES if modules is None else modules)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        raise InputValueError(f"modules: unknown benchmark modules {unknown}; choose from {', '.join(MODULES)}.")
    rows: list[BenchRow] = []
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    machine = machine_info()
    for name in chosen:
        if progress is not None:
            progress(name)
        try:
            mod = importlib.import_module(f"bayesbridge.bench.{name}")
            params = inspect.signature(mod.run).parameters
            kwargs = {"quick": bool(quick or tiny)}
            if "tiny" in params:
                kwargs["tiny"] = bool(tiny)
            rows.extend(mod.run(**kwargs))
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            last = traceback.extract_tb(exc.__traceback__)[-1]
            errors[name] = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
    return BenchReport(rows=rows, errors=errors, skipped=tuple(m for m in MODULES if m not in chosen),
                       quick=bool(quick), tiny=bool(tiny), seconds=time.perf_counter() - t0, machine=machine)


def print_report(report: BenchReport, console=None) -> None:
    """Print the ``report``'s table and target summary with rich (on ``console``, default a new one)."""
    from rich.console import Console

    console = console or Console()
    console.print(report.table())
    doc = report.to_json()
    for key, t in doc["targets"].items():
        met = t["met"]
        mark = "[yellow]n/a[/]" if met is None else "[green]met[/]" if met else "[red]missed[/]"
        value = "missing" if t["value"] is None else f"{t['value']:.3g}"
        sign = "<" if t.get("comparison") == "below" else ">="
        console.print(f"  {key}: {value} (target {sign} {t['target']:g}) {mark}")
    for key, why in doc["missing"].items():
        console.print(f"  [yellow]{key}[/]: {why}")
    m = report.machine
    console.print(f"[dim]{m.get('cpu_count')} logical cores, load {m.get('load_average_1min', float('nan')):.1f}, "
                  f"{report.seconds:.0f} s in all[/]")
