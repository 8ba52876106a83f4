"""Every notebook in ``notebooks/`` executes top to bottom in smoke mode (``SMOKE=1``).

The kernel is this test's own interpreter (a kernelspec written to a temporary
``JUPYTER_PATH``), so the notebooks run against the package under test whatever kernels the
machine has installed. Committed notebooks must carry no outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01_bridging_uq_study.ipynb",
    "02_posterior_diagnostics.ipynb",
    "03_sensitivity_analysis.ipynb",
    "04_idealized_model.ipynb",
)
KERNEL = "bayesbridge-notebook-test"
CELL_TIMEOUT_S = 600


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_expected_notebooks_present():
    names = {p.name for p in _notebooks()}
    missing = [n for n in EXPECTED if n not in names]
    assert not missing, f"notebooks missing from {NOTEBOOKS}: {missing}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'os.environ.get("SMOKE"' in code, f"{path.name}: must read the SMOKE setting"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that starts ipykernel with this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bayesbridge tests",
        "language": "python",
    }))
    return root


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_executes_in_smoke_mode(path, kernel_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(kernel_dir), os.environ.get("JUPYTER_PATH", "")]))
    monkeypatch.setenv("SMOKE", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "some cells did not run"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = sum("image/png" in o.get("data", {}) for c in code_cells for o in c.get("outputs", []))
    assert figures >= 1, f"{path.name}: produced no figure"
    conclusions = "".join(o.get("text", "") for o in code_cells[-1].get("outputs", [])
                          if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert conclusions.strip(), f"{path.name}: the last cell states no computed conclusions"
