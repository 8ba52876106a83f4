"""Sphinx configuration of the bayesbridge documentation (``make docs``).

The build is offline: no intersphinx, nothing fetched. Two things are generated at build time
into ``docs/_generated/`` (gitignored), before Sphinx collects its sources:

- ``notebooks/``: copies of ``../notebooks/*.ipynb``. Sphinx reads documents only from its
  source directory; copying the four notebooks (they are committed without outputs and are
  rendered, not executed) is simpler and more portable than a symlink or than making the
  repository root the source directory (which would need an exclude list for everything else).
- ``cli.inc``: the ``--help`` text of every ``bayesbridge`` command, produced by running the
  typer app with ``typer.testing.CliRunner``.

``-t api`` builds the API reference only (``api/index`` as the root document): the fast build
of ``tests/test_docs.py``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import shutil
import sys
import warnings
from pathlib import Path
from unittest import mock

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
sys.path.insert(0, str(ROOT))  # a fresh clone documents its own sources, installed or not

import bayesbridge  # noqa: E402

API_ONLY = tags.has("api")  # noqa: F821 (``tags`` is provided by Sphinx)

project = "bayesbridge"
author = "bayesbridge developers"
copyright = "bayesbridge developers"
release = version = bayesbridge.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    # Markdown (MyST) pages and notebooks (myst_nb includes myst_parser); the API-only build has
    # no notebooks and takes the parser alone
    "myst_parser" if API_ONLY else "myst_nb",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
if API_ONLY:
    root_doc = "api/index"
    include_patterns = ["api/**"]
else:
    root_doc = "index"
# the changelog page includes ../CHANGELOG.md, and is left out while there is none
HAS_CHANGELOG = (ROOT / "CHANGELOG.md").exists()
if not HAS_CHANGELOG:
    exclude_patterns.append("changelog.md")

# -- Markdown and notebooks --------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are executed by tests/test_notebooks.py, not here

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
numpydoc_show_class_members = False  # autodoc lists the members; no autosummary stubs per class
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()  # validation is tests/test_docstrings.py's job
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------------------
# The API-only build (tests/test_docs.py) checks the pages' content, not their look: the plain
# theme skips furo's navigation tree, which it recomputes for every page (about 30 of 70 s).
html_theme = "basic" if API_ONLY else "furo"
html_title = f"bayesbridge {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless identical, so that incremental builds stay incremental."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _copy_notebooks() -> None:
    """Mirror ``notebooks/*.ipynb`` into ``_generated/notebooks/`` (stale copies removed)."""
    target = GENERATED / "notebooks"
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    names = {p.name for p in sources}
    for old in target.glob("*.ipynb") if target.exists() else ():
        if old.name not in names:
            old.unlink()
    for src in sources:
        _copy_if_changed(src, target / src.name)


def _cli_help() -> None:
    """Write ``_generated/cli.inc``: ``bayesbridge [<group>] <cmd> --help`` for every command."""
    import typer
    from typer.testing import CliRunner

    from bayesbridge.cli import app

    root = typer.main.get_command(app)
    runner = CliRunner()
    env = {"COLUMNS": "96", "NO_COLOR": "1", "TERM": "dumb"}

    def commands(group, path: list[str]):
        yield path
        context = type(group).context_class(group)
        for name in group.list_commands(context):
            sub = group.get_command(context, name)
            if hasattr(sub, "list_commands"):  # a group (typer may ship its own click)
                yield from commands(sub, [*path, name])
            else:
                yield [*path, name]

    parts = []
    for path in commands(root, []):
        # click's plain layout (what TYPER_USE_RICH=0 shows) reads better on a page than panels
        with mock.patch.object(typer.core, "HAS_RICH", False), mock.patch.object(typer.main, "HAS_RICH", False):
            result = runner.invoke(app, [*path, "--help"], prog_name="bayesbridge", env=env, color=False)
        if result.exit_code != 0:
            raise RuntimeError(f"bayesbridge {' '.join(path)} --help failed:\n{result.output}")
        title = " ".join(["bayesbridge", *path])
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts.append(f"## `{title}`\n\n````text\n{text}\n````\n")
    _write_if_changed(GENERATED / "cli.inc", "\n".join(parts))


def _clean_stubs() -> None:
    """Remove the autosummary pages of a previous build: a module that moved or was removed
    must not leave a stale page behind (autosummary writes, but never deletes)."""
    shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)


_clean_stubs()
_cli_help()
if not API_ONLY:
    _copy_notebooks()


# -- Module pages: each public name documented once, at its home ---------------------------------
def _is_private(modname: str) -> bool:
    return any(part.startswith("_") for part in modname.split("."))


@functools.cache
def _imported_from(modname: str, name: str) -> tuple[str, str] | None:
    """``(module, name there)`` when ``modname``'s source binds ``name`` by a top-level
    ``from module import ...``; None when the module defines it (or its source is unknown)."""
    spec = importlib.util.find_spec(modname)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    package = modname if spec.submodule_search_locations is not None else modname.rpartition(".")[0]
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return importlib.util.resolve_name("." * node.level + (node.module or ""), package), alias.name
    return None


def _public_names(modname: str) -> set[str]:
    """``__all__`` of a public bayesbridge module (empty for anything else)."""
    if not modname.startswith("bayesbridge") or _is_private(modname):
        return set()
    try:
        return set(getattr(importlib.import_module(modname), "__all__", ()))
    except ImportError:
        return set()


def _documented_at(modname: str, name: str, obj) -> tuple[str, str]:
    """Where ``modname.__all__``'s ``name`` is documented, and its name there: the public
    module nearest to its definition that lists it in its ``__all__``. The chain of
    re-exports is read from the sources' top-level ``from ... import`` statements, and from
    ``__module__`` for classes and functions that a package serves lazily."""
    chain, seen = [(modname, name)], {(modname, name)}
    while True:
        mod, nm = chain[-1]
        origin = _imported_from(mod, nm)
        if origin is None and (inspect.isclass(obj) or inspect.isroutine(obj)):
            home = getattr(obj, "__module__", None)
            if isinstance(home, str) and home != mod:
                origin = (home, obj.__name__)
        if origin is None or origin in seen:
            break
        chain.append(origin)
        seen.add(origin)
    for mod, nm in reversed(chain):
        if mod == modname or nm in _public_names(mod):
            return mod, nm
    return modname, name


def _module_members(modname: str) -> tuple[list[str] | None, list[tuple[str, str]]]:
    """The names a module's page documents, and ``(name, target)`` for the names it only
    re-exports (documented at their public home, see :func:`_documented_at`). A name defined
    in a private module is documented where it is re-exported, its only public home;
    submodules are listed by the page's module table instead. None: the module has no
    ``__all__`` (autodoc decides)."""
    module = importlib.import_module(modname)
    if not hasattr(module, "__all__"):
        return None, []
    here, elsewhere = [], []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        mod, nm = _documented_at(modname, name, obj)
        if mod == modname:
            here.append(name)
        else:
            elsewhere.append((name, f"{mod}.{nm}"))
    return here, elsewhere


# -- Docstring adaptations (rendering only; the docstrings stay as written) ----------------------
_TYPED_SECTIONS = {"Parameters", "Other Parameters", "Returns", "Yields", "Receives", "Attributes"}
_UNNAMED_SECTIONS = {"Returns", "Yields", "Receives"}  # where a line may be a bare type


def _escape_type_stars(app, what, name, obj, options, lines) -> None:
    """Escape ``*`` in numpydoc type fields: the shape convention ``Tensor (*batch, T, d)``
    (docs/conventions.md) is plain text in numpydoc but would open an emphasis in rst."""
    section = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            section = line.strip()
            continue
        if section not in _TYPED_SECTIONS or not line.strip() or line[0].isspace() or set(line) == {"-"}:
            continue
        if " : " in line:
            head, _, kind = line.partition(" : ")
            lines[i] = f"{head} : {_escape_stars(kind)}"
        elif section in _UNNAMED_SECTIONS:
            lines[i] = _escape_stars(line)


def _escape_stars(text: str) -> str:
    return re.sub(r"(?<!\\)\*", r"\\*", text)


_RELATIVE_REF = re.compile(r"(:(?:py:)?(?:mod|func|class|obj|data|attr|meth|exc):)`\.([\w.]+)`")


def _absolute_module_refs(app, what, name, obj, options, lines) -> None:
    """In the first paragraph of a module's docstring, make ``:mod:`.x``` absolute when
    ``<module>.x`` exists: that paragraph is also shown out of its module (the autosummary
    tables of the API pages), where a relative reference would be ambiguous. The rest of the
    docstring is left alone (the reference resolves on the module's own page, and a longer
    target would break the columns of a simple table)."""
    if what != "module":
        return

    def absolute(match: re.Match) -> str:
        role, target = match.groups()
        return f"{role}`~{name}.{target}`" if _exists(f"{name}.{target}") else match.group(0)

    for i, line in enumerate(lines):
        if not line.strip():
            break
        lines[i] = _RELATIVE_REF.sub(absolute, line)


def _exists(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _numpydoc_warnings_to_sphinx() -> None:
    """numpydoc reports a section it drops (``Unknown section ...``) with a Python warning;
    make it a Sphinx warning, so that ``-W`` fails on it like on any other docstring problem."""
    from sphinx.util import logging as sphinx_logging

    logger = sphinx_logging.getLogger("numpydoc")
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "numpydoc" in str(filename):
            logger.warning("numpydoc: %s", message)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.filterwarnings("always", category=UserWarning, module=r"numpydoc\.")
    warnings.showwarning = showwarning


def setup(app):
    _numpydoc_warnings_to_sphinx()
    app.connect("autodoc-process-docstring", _escape_type_stars, priority=400)  # before numpydoc
    app.connect("autodoc-process-docstring", _absolute_module_refs, priority=400)

    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class AutoModule(SphinxDirective):
        """``.. bb-automodule:: module``: ``automodule`` with the names of
        :func:`_module_members`, then a list of the names the module re-exports."""

        required_arguments = 1

        def run(self):
            modname = self.arguments[0]
            here, elsewhere = _module_members(modname)
            lines = [f".. automodule:: {modname}"]
            if here is None:
                lines.append("   :members:")
            elif here:
                lines.append(f"   :members: {', '.join(here)}")
            if elsewhere:
                lines += [
                    "",
                    ".. rubric:: Re-exported names",
                    "",
                    f"Importable from ``{modname}``, documented at their defining module:",
                    "",
                    *(f"- :py:obj:`{name} <{target}>`" for name, target in elsewhere),
                ]
            container = nodes.container()
            source = self.get_source_info()[0]
            self.state.nested_parse(StringList(lines, source=source), self.content_offset, container)
            return container.children

    app.add_directive("bb-automodule", AutoModule)

    def drop_changelog(app, docname, source):
        if docname == "index" and not HAS_CHANGELOG:
            source[0] = "\n".join(line for line in source[0].splitlines() if line.strip() != "changelog")

    app.connect("source-read", drop_changelog)

    def reread_api(app, env, added, changed, removed):
        # the API pages depend on the package's code, which Sphinx does not track: read them anew
        return [docname for docname in env.found_docs if docname.startswith("api/")]

    app.connect("env-get-outdated", reread_api)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
