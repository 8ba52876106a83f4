"""Every command and code block of the README runs (issue 7: tried as a new user would)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from bayesbridge.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_block_runs(tmp_path, monkeypatch):
    (code,) = [b for b in _blocks("python") if "import bayesbridge as bb" in b]
    # the README's sizes, shrunk for the test suite
    small = code.replace("years=200", "years=30").replace("members=100", "members=20").replace(
        "latent_dim=20", "latent_dim=8")
    assert small != code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    assert (tmp_path / "posterior.nc").exists()
    assert namespace["gains"].maps["tos"].dims == ("index", "lat", "lon")
    assert "posterior_predictive" in str(namespace["idata"])


def test_every_bayesbridge_command_in_readme_is_known():
    commands = set(re.findall(r"`bayesbridge (\w+)", README)) | set(re.findall(r"bin/bayesbridge (\w+)", README))
    assert {"demo", "assimilate", "observations", "idealized", "bench", "sensitivity"} <= commands
    for name in commands:
        res = CliRunner().invoke(app, [name, "--help"])
        assert res.exit_code == 0, f"bayesbridge {name} --help failed: {res.output}"


def test_bring_your_own_cmip6_files(tmp_path):
    """The README's second assimilate example, on CMIP6-style files written by the twin generator."""
    from bayesbridge.datasets import make_twin_experiment, write_cmip6

    twin = make_twin_experiment(years=30, seed=2, cache_dir=tmp_path / "c")
    write_cmip6(twin.operational, tmp_path / "CMIP6", years_per_file=10)
    twin.idealized_observations[["nino3", "nino4", "h_w"]].to_dataframe().reset_index().assign(
        time=lambda f: [f"{t.year:04d}-{t.month:02d}" for t in f["time"]]
    ).to_csv(tmp_path / "my_indices.csv", index=False)
    (cmd,) = [c for c in _blocks("bash") if "--operational" in c]
    argv = shlex.split(cmd.replace("\\\n", " "))
    assert argv[0].endswith("bayesbridge")
    argv = [a.replace("CMIP6/", f"{tmp_path}/CMIP6/").replace("my_indices.csv", str(tmp_path / "my_indices.csv"))
            .replace("outputs/reanalysis", str(tmp_path / "out")) for a in argv[1:]]
    argv = argv[: argv.index("--members")] + ["--members", "20", "--latent-dim", "8", "--start", "1860-01",
                                              "--end", "1879-12", "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, argv, terminal_width=200)
    assert res.exit_code == 0, res.output
    post = xr.open_dataset(tmp_path / "out" / "posterior.nc")
    assert post.sizes["time"] == 240 and "h_w_q95" in post
    post.close()


@pytest.mark.parametrize("target", ["demo", "test"])
def test_quickstart_targets_exist(target):
    assert re.search(rf"^{target}: ", (ROOT / "Makefile").read_text(), re.M)
