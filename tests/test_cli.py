"""The command line: --version, --help, `observations` reproduces the PROVENANCE.md table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import bayesbridge
from bayesbridge.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_version_and_help():
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and bayesbridge.__version__ in out.output
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "observations" in out.output


def test_observations_reproduces_provenance_table(tmp_path):
    out = runner.invoke(app, ["observations", "--json", str(tmp_path / "stats.json")], terminal_width=200)
    assert out.exit_code == 0, out.output
    stats = json.loads((tmp_path / "stats.json").read_text())
    # Reference values from data/PROVENANCE.md (ERSST v5, 1950-2019)
    table = (ROOT / "data" / "PROVENANCE.md").read_text()
    assert "| variance (degC^2) | 0.744 | 0.393 |" in table
    assert abs(stats["moments"]["nino3"]["variance"] - 0.744) < 0.0015
    assert abs(stats["moments"]["nino4"]["variance"] - 0.393) < 0.0015
    assert round(stats["moments"]["nino3"]["skewness"], 2) == 0.81
    assert round(stats["moments"]["nino4"]["skewness"], 2) == -0.33
    assert round(stats["moments"]["nino3"]["kurtosis"], 2) == 4.31
    assert round(stats["moments"]["nino4"]["kurtosis"], 2) == 2.70
    assert round(stats["corr_nino3_nino4"], 2) == 0.77
    assert stats["event_counts"]["ep"] == 12 and stats["event_counts"]["cp"] == 9
    assert stats["event_counts"]["la_nina"] == 27 and stats["event_counts"]["extreme_ep"] == 3
    ref_monthly = [1.02, 0.78, 0.64, 0.60, 0.71, 0.73, 0.78, 0.83, 0.88, 0.99, 1.11, 1.14]
    assert [round(v, 2) for v in stats["monthly_std"]["nino3"]] == ref_monthly
    # the printed table carries the same numbers
    assert re.search(r"skewness\s.*0\.810", out.output)


def test_console_script_reports_errors_cleanly():
    proc = subprocess.run(
        [sys.executable, "-c", "from bayesbridge.cli import main; main()", "observations", "--start", "3000-01", "--end", "3001-01"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stdout and "3000-01" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_readme_quickstart_is_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
