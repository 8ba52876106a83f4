"""The demo's ablation: the run beside its counterpart with ``eq_sst`` toggled."""

import json

import numpy as np
import pytest

from bayesbridge.apps.ablation import ablation_rows, toggled_observables
from bayesbridge.errors import ParameterError

SMALL = dict(quick=True, years=10, members=10, latent_dim=6, stat_draws=2)


def test_toggled_observables_drops_or_adds_the_profile():
    assert toggled_observables(("nino3", "nino4", "h_w", "eq_sst")) == ("nino3", "nino4", "h_w")
    assert toggled_observables(["nino3", "h_w"]) == ("nino3", "h_w", "eq_sst")
    assert toggled_observables(("nino3", "x"), profile="x") == ("nino3",)


def test_ablation_rows_are_empty_without_both_runs():
    assert ablation_rows({}) == []
    assert ablation_rows({"twin.ablation.with_eq_sst.std_ratio": 0.8}) == []


def test_ablation_defaults_on_for_the_full_demo_only():
    from bayesbridge.apps.demo import DemoConfig

    assert DemoConfig().ablation is True
    assert DemoConfig(quick=True).ablation is False
    assert DemoConfig(ablation=False).ablation is False
    with pytest.raises(ParameterError, match=r"^ablation: .*observe nothing.*ablation=False"):
        DemoConfig(observables=("eq_sst",), ablation=True)
    assert DemoConfig(observables=("eq_sst",), ablation=False).observables == ("eq_sst",)


@pytest.fixture
def no_figures(monkeypatch):
    import bayesbridge.apps.demo as demo
    from bayesbridge.apps.explanation import Explanation

    # figures are tested elsewhere; leaving them out keeps these runs to the assimilation
    monkeypatch.setattr(demo, "report_figure_jobs", lambda *args, **kwargs: {})
    monkeypatch.setattr(Explanation, "figure_jobs", lambda self: {})


def test_ablation_rows_equal_the_two_runs_scored_on_their_own(tmp_path, no_figures):
    from bayesbridge.apps.demo import DemoConfig, run_demo

    cache = str(tmp_path / "c")
    both = run_demo(tmp_path / "both", DemoConfig(**SMALL, cache_dir=cache, ablation=True)).metrics
    alone = run_demo(tmp_path / "alone", DemoConfig(**SMALL, cache_dir=cache, observables=("nino3", "nino4", "h_w"))).metrics
    assert json.loads((tmp_path / "both" / "metrics.json").read_text()) == pytest.approx(both)
    for label, m in (("with_eq_sst", both), ("without_eq_sst", alone)):
        a = f"twin.ablation.{label}."
        for stat in ("std", "skew"):
            want = m[f"twin.map_rmse.{stat}.bridged"] / m[f"twin.map_rmse.{stat}.operational"]
            assert both[f"{a}{stat}_ratio"] == pytest.approx(want, rel=1e-6)
        n3 = [m[f"twin.nino3_skew.{s}"] for s in ("bridged", "truth", "operational")]
        assert both[f"{a}nino3_skew_error"] == pytest.approx(abs(n3[0] - n3[1]) / abs(n3[2] - n3[1]), rel=1e-6)
        for box in ("nino12", "nino3", "nino4", "h_w"):
            assert both[f"{a}coverage90_{box}"] == pytest.approx(m[f"twin.uq.coverage90_{box}"], abs=1e-12)
        assert both[f"{a}coverage90_nino34"] == pytest.approx(m["twin.uq.coverage90"], abs=1e-12)
    assert both["twin.ablation.with_eq_sst.std_ratio"] != both["twin.ablation.without_eq_sst.std_ratio"]
    report = (tmp_path / "both" / "report.md").read_text()
    section = report.split("## Ablation: what the equatorial profile adds")[1].split("\n## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| box indices", "| box indices + eq_sst",
                                                         "| pattern bound (truth's box indices)"]
    bound = both["twin.map_rmse.std.pattern_bound"] / both["twin.map_rmse.std.operational"]
    assert float(lines[3].split(" | ")[1]) == pytest.approx(bound, abs=5e-4)
    assert "## Ablation" not in (tmp_path / "alone" / "report.md").read_text()
    assert np.isfinite(both["timing.ablation_s"])
