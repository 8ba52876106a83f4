"""The package's structure, measured from its source (``docs/design.md`` section 2).

An ``ast`` walk over every module, lazy imports (inside functions) included, builds the import
graph between files. The tests fail on a circle between files, on an import that goes up the
room table of ``docs/design.md``, on a file over 600 lines, on more than 8 modules directly in
``bayesbridge/``, on a module without ``__all__``, and on a design reference to a section that
does not exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bayesbridge"
MAX_LINES = 600
MAX_TOP_LEVEL = 8

CORE = {"errors", "dims", "devices", "regions", "operators", "parallel"}
# room -> rooms it may import (besides itself); `data` is datasets.observed (the bundled records)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "io": {"core"},
    "latent": {"core"},
    "model": {"core"},
    "infer": {"core", "io", "model"},
    "diagnostics": {"core", "io", "infer"},
    "data": {"core", "io", "diagnostics"},
    "idealized": {"core", "io", "diagnostics", "data"},
    "datasets": {"core", "io", "diagnostics", "data", "idealized"},
    "bridge": {"core", "io", "latent", "model", "infer"},
    "plots": {"core", "io", "diagnostics"},
    "apps": {"core", "io", "latent", "model", "infer", "diagnostics", "data", "idealized", "datasets",
             "bridge", "plots"},
    "bench": {"core", "io", "latent", "model", "infer", "diagnostics", "data", "idealized", "datasets",
              "bridge", "apps"},
    "cli": {"core", "io", "latent", "model", "infer", "diagnostics", "data", "idealized", "datasets",
            "bridge", "plots", "apps", "bench", "root"},
    "root": {"core"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """bayesbridge modules that ``name`` imports anywhere in its source (lazy imports too)."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            # a module importing its own package's __init__ is how Python loads it, not a cycle
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in CORE:
        return "core"
    if parts[1] == "datasets" and len(parts) > 2 and parts[2] == "observed":
        return "data"
    return parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_between_files():
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_room_table():
    wrong = sorted(
        f"{m} ({_room(m)}) imports {t} ({_room(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if _room(t) != _room(m) and _room(t) not in ALLOWED[_room(m)]
    )
    assert wrong == []


def test_private_modules_stay_in_their_room():
    leaks = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if t.rsplit(".", 1)[-1].startswith("_") and t.rsplit(".", 2)[-2] != m.rsplit(".", 2)[-2]
    )
    assert leaks == []


def test_files_are_small_and_the_top_level_is_short():
    big = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_all_and_a_docstring(name):
    tree = ast.parse(MODULES[name].read_text())
    assert ast.get_docstring(tree), f"{name}: no module docstring"
    names = {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{name}: no __all__"


def test_design_references_exist():
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", design, flags=re.M))
    cited = {}
    for name, path in MODULES.items():
        for number in re.findall(r"docs/design\.md`*,? section (\d+)", path.read_text()):
            cited.setdefault(number, []).append(name)
    assert cited, "no module cites docs/design.md"
    missing = {n: mods for n, mods in cited.items() if n not in sections}
    assert missing == {}
    assert "DESIGN" not in "".join(p.read_text() for p in MODULES.values())
