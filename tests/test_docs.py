"""The API reference builds without a single Sphinx warning (``make docs`` builds everything).

The build runs ``docs/conf.py`` with the ``api`` tag: the API pages and the command-line page
only (no notebooks, quickstart or design pages), with ``-W`` so that any docstring that
produces a warning (bad rst, a numpydoc section it cannot parse, a module that fails to import,
an object documented twice) fails this test. It runs in a subprocess: Sphinx and docutils keep
global state, and the build imports every public module.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# the docs stack is part of the `dev` extra that `make test` installs: a missing package fails here
import furo  # noqa: F401
import myst_nb  # noqa: F401
import numpydoc  # noqa: F401
import pytest
import sphinx  # noqa: F401
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _sphinx_build(out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-t", "api",
        "-d", str(out / "doctrees"), str(DOCS), str(out / "html"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``sphinx-build -W --keep-going -t api``: the process (its warnings on stderr) and the
    HTML folder (complete even when a warning fails the build, thanks to ``--keep-going``).

    Built once per session: conf.py and autosummary write into ``docs/`` (notebook copies, CLI
    pages, ``api/generated``), so xdist workers must not build at once; the first builds under a
    lock in the session's shared temporary folder, the others read its result (the pattern of
    pytest-xdist's "session-scoped fixtures run once").
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        out = tmp_path_factory.mktemp("docs")
        return _sphinx_build(out), out / "html"
    shared = tmp_path_factory.getbasetemp().parent
    record = shared / "sphinx-build.json"
    with FileLock(shared / "sphinx-build.lock"):
        if not record.exists():
            out = shared / "sphinx-docs"
            proc = _sphinx_build(out)
            record.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stderr": proc.stderr,
                                          "html": str(out / "html")}))
        done = json.loads(record.read_text())
    return subprocess.CompletedProcess(done["args"], done["returncode"], "", done["stderr"]), Path(done["html"])


@pytest.fixture(scope="module")
def api_build(build) -> Path:
    proc, html_dir = build
    if not (html_dir / "api" / "index.html").exists():
        pytest.fail(f"sphinx-build wrote no API pages ({proc.returncode}):\n{proc.stderr[-8000:]}")
    return html_dir


def test_api_pages_build_without_warnings(build):
    proc, _ = build
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, (
        f"sphinx-build -W failed ({proc.returncode}); fix what is named here:\n"
        + "\n".join(warnings or proc.stderr.splitlines()[-50:])
    )


def _text(page: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    raw = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", html.unescape(raw))


def test_class_documented_once_at_its_home(api_build):
    page = api_build / "api" / "generated" / "bayesbridge.model.linear_gaussian.html"
    assert page.exists()
    source = page.read_text(encoding="utf-8")
    # documented once, at its defining module, with its docstring's summary
    assert 'id="bayesbridge.model.linear_gaussian.LinearGaussianModel"' in source
    assert "Linear-Gaussian state-space model" in _text(page)
    # the package page links the re-export to it instead of documenting it again
    package = (api_build / "api" / "generated" / "bayesbridge.model.html").read_text(encoding="utf-8")
    assert 'id="bayesbridge.model.LinearGaussianModel"' not in package
    assert "bayesbridge.model.linear_gaussian.html#bayesbridge.model.linear_gaussian.LinearGaussianModel" in package


def test_every_room_has_a_page(api_build):
    import bayesbridge

    missing = [
        room for room in bayesbridge._SUBMODULES
        if not (api_build / "api" / "generated" / f"bayesbridge.{room}.html").exists()
    ]  # fmt: skip
    assert not missing, f"rooms without an API page (add them to docs/api/index.md or core.md): {missing}"


def test_cli_page_has_every_command(api_build):
    text = _text(api_build / "api" / "cli.html")
    for command in ("demo", "assimilate", "observations", "bench", "sensitivity", "idealized simulate"):
        assert f"Usage: bayesbridge {command} [OPTIONS]" in text, command
