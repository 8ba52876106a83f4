"""Structural error of unobserved boxes (bayesbridge.bridge.structural, bayesbridge.apps.structural)."""

from __future__ import annotations

import numpy as np
import pytest

from bayesbridge import errors
from bayesbridge.apps.reanalysis import default_operational, reconstruct
from bayesbridge.apps.structural import structural_error
from bayesbridge.bridge import Bridge, BridgeConfig
from bayesbridge.bridge.structural import add_structural_terms, check_structural
from bayesbridge.datasets import observed_indices
from bayesbridge.datasets.observed import equatorial_regression
from bayesbridge.regions import box_index


def test_terms_are_one_coherent_amplitude_per_draw_and_leave_assimilated_boxes_alone():
    rng = np.random.default_rng(0)
    boxes = ["nino3", "nino4", "nino12"]
    index = rng.normal(size=(3, 50, 4000))
    before = index.copy()
    delta = np.array([0.4, -0.2])
    add_structural_terms(index, boxes, ["nino3", "nino4"], {"nino12": delta}, seed=3)
    np.testing.assert_array_equal(index[:2], before[:2])
    u = np.stack([before[0].mean(-1), before[1].mean(-1)], -1)
    amplitude = u @ delta  # (T,)
    added = index[2] - before[2]  # (T, draw) = amplitude_t * xi_draw
    xi = added / amplitude[:, None]
    np.testing.assert_allclose(xi, np.broadcast_to(xi[0], xi.shape), rtol=1e-9)  # one xi per draw, all months
    assert abs(xi[0].mean()) < 0.06 and xi[0].std() == pytest.approx(1.0, abs=0.04)
    # an assimilated box is never changed, whatever its term
    index2 = before.copy()
    add_structural_terms(index2, boxes, ["nino3", "nino4", "nino12"], {"nino12": delta}, seed=3)
    np.testing.assert_array_equal(index2, before)


def test_bad_terms_are_named():
    with pytest.raises(errors.ParameterError, match=r"structural_error\['nino12'\]: expected two finite"):
        check_structural({"nino12": (1.0, np.nan)}, ["nino3", "nino4", "nino12"])
    with pytest.raises(errors.VariableNotFoundError, match="nino4"):
        check_structural({"nino12": (1.0, 0.0)}, ["nino3", "nino12"])


@pytest.fixture(scope="module")
def bridge():
    return Bridge(BridgeConfig(latent_dim=8, members=20, method="kalman")).fit(default_operational(years=30), seed=0)


def test_coefficients_are_the_operational_and_observed_relations(bridge):
    est = structural_error(bridge, ["nino12", "nino34", "h_w"])
    assert est.boxes == ("nino12", "nino34")  # h_w is not an SST box: no term
    # operational: box means of the codec's reconstruction of the training data, regressed on Nino 3, 4
    recon = bridge.codec.decode(bridge.latent_train)["tos"]
    series = {b: box_index(recon, b).values for b in ("nino3", "nino4", "nino12", "nino34")}
    X = np.column_stack([np.ones(len(series["nino3"])), series["nino3"], series["nino4"]])
    reg = equatorial_regression()
    lon = reg["lon"].values
    for box, (lo, hi) in (("nino12", (270, 280)), ("nino34", (190, 240))):
        beta = np.linalg.lstsq(X, series[box], rcond=None)[0]
        sel = (lon >= lo) & (lon <= hi)
        row = est.coefficients.loc[box]
        assert row["op_b_e"] == pytest.approx(beta[1], abs=2e-3) and row["op_b_c"] == pytest.approx(beta[2], abs=2e-3)
        assert row["obs_b_e"] == pytest.approx(reg["b_e"].values[sel].mean())
        assert row["obs_b_c"] == pytest.approx(reg["b_c"].values[sel].mean())
        d_e, d_c = est.terms()[box]
        assert d_e == pytest.approx(row["obs_b_e"] - row["op_b_e"]) and d_c == pytest.approx(row["obs_b_c"] - row["op_b_c"])


def test_reconstruction_widens_only_the_unobserved_boxes():
    obs = observed_indices().sel(time=slice("1980-01", "1999-12"))
    op = default_operational(years=30)
    config = BridgeConfig(latent_dim=8, members=40, method="kalman")
    plain = reconstruct(obs, ["nino3", "nino4"], operational=op, config=config, structural_error=False)
    wide = reconstruct(obs, ["nino3", "nino4"], operational=op, config=config)
    assert plain.structural is None and set(wide.structural.boxes) == {"nino12", "nino34"}
    p, w = plain.bridge_result.posterior, wide.bridge_result.posterior
    for box in ("nino3", "nino4", "h_w"):
        np.testing.assert_array_equal(p.index_draws(box).values, w.index_draws(box).values)
    terms = wide.structural.terms()
    u = np.stack([p.index_draws(b).values.mean(0) for b in ("nino3", "nino4")], -1)
    for box in ("nino12", "nino34"):
        added = w.index_draws(box).values - p.index_draws(box).values  # (draw, T)
        amplitude = u @ np.asarray(terms[box])
        # the spread added is the amplitude of the pattern mismatch, month by month
        big = np.abs(amplitude) > 0.05
        ratio = added[:, big] / amplitude[big]
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-6, atol=1e-6)
    assert "nino12" in w.summary().attrs["structural_error_boxes"]

