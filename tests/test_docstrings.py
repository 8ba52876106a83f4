"""Every public name of bayesbridge is documented (numpydoc).

The public surface is the ``__all__`` of every public module (:data:`MODULES`: every module
whose dotted name has no ``_`` part; lazy names are fetched with ``getattr``). The rule, strict
but fair:

1. every public function and class, and every public method or property of a public class
   (defined in bayesbridge, not inherited from a library), has a non-empty docstring whose
   first line is a summary sentence;
2. a function or method with parameters (other than ``self``/``cls``) documents them: either
   with a numpydoc ``Parameters`` section, or, for short docstrings, by naming every parameter
   (e.g. ``box`` or ````box````); ``*args``/``**kwargs`` count as documented when the docstring
   mentions their name;
3. a class documents its constructor's parameters the same way, in the class docstring (a
   ``Parameters`` or ``Attributes`` section, as numpydoc recommends for dataclasses) or in its
   ``__init__`` docstring.

Constants, type aliases and submodules are not checked themselves (submodules are walked).
Gaps that predate this test are recorded in ``docstring_gaps.txt``, a backlog that may only
shrink (see :func:`test_public_names_are_documented`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

KNOWN_GAPS = Path(__file__).with_name("docstring_gaps.txt")


def _public_modules() -> tuple[str, ...]:
    """Every module of the package whose dotted name has no ``_`` component (the cli excluded:
    its commands are documented by ``--help``, tested in ``tests/test_cli.py``)."""
    import pkgutil

    import bayesbridge

    names = ["bayesbridge"]
    for info in pkgutil.walk_packages(bayesbridge.__path__, "bayesbridge."):
        parts = info.name.split(".")
        if not any(p.startswith("_") for p in parts) and parts[1] != "cli":
            names.append(info.name)
    return tuple(sorted(names))


MODULES = _public_modules()


def _own(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("bayesbridge")


def _params(fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def _documents(doc: str, names: list[str]) -> list[str]:
    """Names that ``doc`` never mentions (a numpydoc ``Parameters`` entry is a mention)."""
    return [n for n in names if not re.search(rf"\b{re.escape(n)}\b", doc)]


def _check_callable(label: str, fn, problems: list[str]) -> None:
    doc = inspect.getdoc(fn) or ""
    if not doc.strip():
        problems.append(f"{label}: no docstring")
        return
    missing = _documents(doc, _params(fn))
    if missing:
        problems.append(f"{label}: parameters {missing} not documented")


def _check_class(label: str, cls, problems: list[str]) -> None:
    doc = inspect.getdoc(cls) or ""
    if not doc.strip() or doc == inspect.getdoc(object):
        problems.append(f"{label}: no docstring")
        return
    if issubclass(cls, BaseException):
        return  # exception classes take a message; their docstring says when they are raised
    init = cls.__dict__.get("__init__")
    names = _params(cls) if (init is not None or dataclasses.is_dataclass(cls)) else []
    init_doc = (inspect.getdoc(init) or "") if init is not None and _own(init) else ""
    missing = [n for n in _documents(doc, names) if n in _documents(init_doc, names)] if names else []
    if missing:
        problems.append(f"{label}: constructor parameters {missing} not documented")
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            if not (inspect.getdoc(member) or "").strip():
                problems.append(f"{label}.{name}: property without docstring")
            continue
        func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        if inspect.isfunction(func) and _own(func):
            _check_callable(f"{label}.{name}", func, problems)


def _public(module_name: str):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    for name in names:
        yield name, getattr(module, name)  # getattr also resolves lazy names


def _problems(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    problems: list[str] = []
    if not (module.__doc__ or "").strip():
        problems.append(f"{module_name}: no module docstring")
    for name, obj in _public(module_name):
        label = f"{module_name}.{name}"
        if inspect.ismodule(obj):
            if not (obj.__doc__ or "").strip():
                problems.append(f"{label}: no module docstring")
        elif inspect.isclass(obj) and _own(obj):
            _check_class(label, obj, problems)
        elif (inspect.isfunction(obj) or inspect.isbuiltin(obj)) and _own(obj):
            _check_callable(label, obj, problems)
    return problems


def _known_gaps() -> set[str]:
    if not KNOWN_GAPS.exists():
        return set()
    lines = KNOWN_GAPS.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_public_names_are_documented():
    """No undocumented public name beyond the recorded backlog, and the backlog holds no fixed entry.

    ``docstring_gaps.txt`` lists the gaps found when this test was introduced; it may only
    shrink: a new gap fails, and so does a listed gap that has been fixed (delete its line).
    """
    found = {p for m in MODULES for p in _problems(m)}
    known = _known_gaps()
    new = sorted(found - known)
    fixed = sorted(known - found)
    assert not new, "undocumented public API:\n" + "\n".join(new)
    assert not fixed, f"fixed, delete these lines from {KNOWN_GAPS.name}:\n" + "\n".join(fixed)


def test_every_subpackage_module_is_walked():
    """Each module reachable through ``bayesbridge.__all__`` (and its submodules' ``__all__``) is in MODULES."""
    seen, stack = set(), ["bayesbridge"]
    while stack:
        name = stack.pop()
        for _attr, obj in _public(name):
            if inspect.ismodule(obj) and obj.__name__ not in seen:
                seen.add(obj.__name__)
                if hasattr(obj, "__all__"):
                    stack.append(obj.__name__)
    unwalked = sorted(m for m in seen if m not in MODULES)
    assert not unwalked, f"add these modules to MODULES: {unwalked}"


def test_checker_flags_gaps():
    """The rule itself catches a missing docstring and an undocumented parameter."""

    def bare(x):
        return x

    def half(x, y):
        """Add.

        Parameters
        ----------
        x : float
        """
        return x + y

    def fine(x, y):
        """Add ``x`` and ``y``."""
        return x + y

    problems: list[str] = []
    for label, fn in (("bare", bare), ("half", half), ("fine", fine)):
        _check_callable(label, fn, problems)
    assert problems == ["bare: no docstring", "half: parameters ['y'] not documented"]
