"""Synthesis of the twin experiment's fields: the truth, the operational model and the oracle.

Every field lives on :func:`~bayesbridge.datasets.twin.grid.twin_grid` (``docs/design.md``
section 6). :func:`assemble_fields` builds ``tos`` (degC) and ``zos`` (m) from three index
series and red noise,

.. math::

    \\mathrm{tos} = C(m_t) + b_0 + P_E T_E + P_C T_C + \\kappa N \\max(T_E, 0)^2 + \\varepsilon,
    \\qquad
    \\mathrm{zos} = C_\\eta(m_t) + (W h_W + S \\alpha T_E + \\varepsilon_h) / 150;

:func:`synthetic_truth` drives it with an idealized-model run (unshifted patterns, nonlinear
term :data:`NONLINEAR_COEF`), :func:`synthetic_operational` with the damped oscillator of
:mod:`~bayesbridge.datasets.twin.oscillator` (patterns and cold tongue
:data:`COLD_TONGUE_SHIFT_DEG` too far west, no nonlinear term; the biases are :data:`BIASES`),
and :func:`operational_pattern_fields` with given indices through the operational construction
(a scoring-only oracle). Random numbers come from ``numpy.random.default_rng([seed, stream])``
with the fixed streams :data:`STREAMS`.

References: Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import xarray as xr

from bayesbridge.datasets.twin.cmip import write_cmip6
from bayesbridge.datasets.twin.drivers import OBSERVED_VARIABLES, driver_arrays
from bayesbridge.datasets.twin.grid import time_axis, tos_climatology, twin_grid, zos_climatology
from bayesbridge.datasets.twin.oscillator import (
    OPERATIONAL_CAP_DEGC,
    OPERATIONAL_NINO_CORR,
    OPERATIONAL_PHASE_LOCKING,
    OscillatorTarget,
    oscillator_indices,
)
from bayesbridge.datasets.twin.patterns import (
    MERIDIONAL_EFOLD_DEG,
    NOISE_PHI,
    red_noise,
    sst_patterns,
    zos_patterns,
)
from bayesbridge.errors import check_int
from bayesbridge.regions import THERMOCLINE_PER_ZOS

__all__ = [
    "GENERATOR_VERSION",
    "STREAMS",
    "THERMOCLINE_PER_ZOS",
    "COLD_TONGUE_SHIFT_DEG",
    "NONLINEAR_COEF",
    "TILT_M_PER_DEGC",
    "TOS_NOISE_DEGC",
    "ZOS_NOISE_M",
    "BIASES",
    "assemble_fields",
    "synthetic_truth",
    "operational_model",
    "synthetic_operational",
    "operational_pattern_fields",
]

GENERATOR_VERSION = "3"
"""Bumped whenever generated values change; part of the cache key."""
STREAMS = {"truth_driver": 1, "truth_noise": 3, "oscillator": 4, "op_noise": 5, "pattern_oracle": 9,
           "statistical_driver": 10, "record_driver": 11, "record_noise": 12}
"""Stream number of each random component: ``default_rng([seed, STREAMS[component]])``."""
COLD_TONGUE_SHIFT_DEG = 15.0
"""Westward shift of the operational model's patterns west of 200E (tapering to 0 at 280E)."""
NONLINEAR_COEF = 0.12
"""kappa (degC^-1) of the truth's T_E^2 term (the peak of N is 1)."""
TILT_M_PER_DEGC = 12.0
"""alpha: east-west thermocline tilt (m) per degC of T_E."""
TOS_NOISE_DEGC = (0.22, 0.18)
"""Point std of the SST noise (degC): value at the equator, increase towards 20 degrees."""
ZOS_NOISE_M = 3.0
"""Std of the thermocline-displacement noise (m)."""

_VAR_ATTRS = {
    "tos": {"standard_name": "sea_surface_temperature", "long_name": "Sea Surface Temperature",
            "units": "degC", "cell_methods": "area: mean where sea time: mean"},
    "zos": {"standard_name": "sea_surface_height_above_geoid",
            "long_name": "Sea Surface Height Above Geoid (thermocline proxy)", "units": "m",
            "cell_methods": "area: mean where sea time: mean",
            "comment": f"thermocline displacement = {THERMOCLINE_PER_ZOS:g} x zos anomaly"},
}


def assemble_fields(idx: Mapping[str, np.ndarray], rng: np.random.Generator, start_year: int,
                    shift_deg: float, nonlinear: float) -> xr.Dataset:
    """``tos`` and ``zos`` on the twin grid, driven by three index series.

    .. math::

        \\mathrm{tos}(t) = C(m_t) + b_0 + P_E T_E(t) + P_C T_C(t)
            + \\kappa N \\max(T_E(t), 0)^2 + \\sigma(y) \\varepsilon(t),

        \\mathrm{zos}(t) = C_\\eta(m_t) + \\big(W h_W(t) + \\alpha S T_E(t)
            + \\sigma_h \\varepsilon_h(t)\\big) / 150,

    with the patterns of :mod:`~bayesbridge.datasets.twin.patterns` and the climatologies of
    :mod:`~bayesbridge.datasets.twin.grid` shifted by ``shift_deg``, :math:`\\kappa` =
    ``nonlinear``, :math:`\\alpha` = :data:`TILT_M_PER_DEGC`, :math:`\\sigma(y)` =
    :data:`TOS_NOISE_DEGC` (0.22 + 0.18 \\|lat\\|/20), :math:`\\sigma_h` = :data:`ZOS_NOISE_M` and
    two red-noise fields drawn from ``rng`` in that order (SST first).

    Parameters
    ----------
    idx : mapping of str to numpy.ndarray
        ``nino3``, ``nino4`` (degC) and ``h_w`` (m), each ``(time,)``, first month January.
    rng : numpy.random.Generator
        Source of the red noise.
    start_year : int
        Calendar year of the first month.
    shift_deg : float
        Westward displacement of patterns and cold tongue (0 for the truth,
        :data:`COLD_TONGUE_SHIFT_DEG` for the operational model).
    nonlinear : float
        :math:`\\kappa` (degC^-1) of the EP nonlinearity; 0 leaves the term out.

    Returns
    -------
    xarray.Dataset
        ``tos`` (degC), ``zos`` (m), float32 on ``(time, lat, lon)``, NaN over land, CF
        attributes, ``noleap`` time encoding; no global attributes.
    """
    grid = twin_grid()
    lat, lon, ocean = grid["lat"].values, grid["lon"].values, grid["ocean"].values
    n = idx["nino3"].size
    sst, thc = sst_patterns(lat, lon, ocean, shift_deg), zos_patterns(lat, lon, ocean, shift_deg)
    month = np.arange(n) % 12
    te, tc, hw = (idx[k][:, None, None] for k in OBSERVED_VARIABLES)
    amp = TOS_NOISE_DEGC[0] + TOS_NOISE_DEGC[1] * np.abs(lat)[:, None] / 20.0
    tos = tos_climatology(lat, lon, shift_deg)[month] + sst["b0"] + sst["ep"] * te + sst["cp"] * tc
    if nonlinear:
        tos += nonlinear * sst["nonlinear"] * np.maximum(te, 0.0) ** 2
    tos += amp * red_noise(rng, n, lat.size, lon.size)
    depth = thc["west"] * hw + thc["tilt"] * TILT_M_PER_DEGC * te
    depth += ZOS_NOISE_M * red_noise(rng, n, lat.size, lon.size)
    zos = zos_climatology(lat, lon)[month] + depth / THERMOCLINE_PER_ZOS
    time, _ = time_axis(n, start_year)
    land = ~ocean[None]
    data = {name: (("time", "lat", "lon"), np.where(land, np.nan, arr).astype(np.float32), dict(_VAR_ATTRS[name]))
            for name, arr in (("tos", tos), ("zos", zos))}
    ds = xr.Dataset(data, coords={"time": ("time", time, {"standard_name": "time", "long_name": "time",
                                                          "axis": "T"}),
                                  "lat": grid["lat"], "lon": grid["lon"]})
    ds["time"].encoding.update({"units": f"days since {start_year:04d}-01-01 00:00:00",
                                "calendar": "noleap", "dtype": "float64"})
    return ds


def _global_attrs(role: str, seed: int, extra: Mapping[str, object]) -> dict[str, object]:
    """CMIP6-like global attributes of a ``role`` ("truth", "operational"), ``extra`` prefixed."""
    attrs = {
        "Conventions": "CF-1.7 CMIP-6.2", "title": f"bayesbridge synthetic twin experiment: {role}",
        "institution": "bayesbridge (synthetic data)", "source_id": "SYNTH", "experiment_id": "piControl",
        "variant_label": "r1i1p1f1", "grid_label": "gn", "table_id": "Omon", "frequency": "mon",
        "realm": "ocean", "bayesbridge_role": role, "bayesbridge_generator_version": GENERATOR_VERSION,
        "bayesbridge_seed": int(seed), "bayesbridge_thermocline_per_zos": THERMOCLINE_PER_ZOS,
    }
    attrs.update({f"bayesbridge_{k}": v for k, v in extra.items()})
    return attrs


def synthetic_truth(driver: xr.Dataset, seed: int, *, start_year: int = 1850) -> xr.Dataset:
    """Truth fields ``tos``, ``zos`` on ``(time, lat, lon)`` driven by an idealized-model run.

    Parameters
    ----------
    driver : xarray.Dataset
        ``nino3``, ``nino4`` (degC) and ``h_w`` (m) anomalies on ``time`` (one member, first
        month January), e.g. ``MultiscaleENSO().simulate(years, members=1, seed=s)``.
    seed : int
        Seed of the red noise (stream 3 of ``default_rng([seed, stream])``).
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    xarray.Dataset
        float32 fields (absolute values: anomalies are the reader's job), NaN over land, with
        CF attributes and global attributes describing the construction (package docstring of
        :mod:`bayesbridge.datasets.twin`).
    """
    check_int(seed, "seed", minimum=0)
    check_int(start_year, "start_year", minimum=1)
    idx = driver_arrays(driver)
    ds = assemble_fields(idx, np.random.default_rng([seed, STREAMS["truth_noise"]]), start_year, 0.0, NONLINEAR_COEF)
    ds.attrs = _global_attrs("truth", seed, {
        "construction": "tos = clim + b0 + P_E T_E + P_C T_C + kappa N max(T_E,0)^2 + red noise; "
                        "zos = clim + (W h_W + S alpha T_E + noise) / thermocline_per_zos",
        "meridional_efolding_deg": MERIDIONAL_EFOLD_DEG, "nonlinear_coef_per_degc": NONLINEAR_COEF,
        "tilt_m_per_degc": TILT_M_PER_DEGC, "noise_ar1": NOISE_PHI,
        "tos_noise_std_degc": f"{TOS_NOISE_DEGC[0]} + {TOS_NOISE_DEGC[1]} |lat|/20",
        "zos_noise_std_m_thermocline": ZOS_NOISE_M})
    return ds


def operational_pattern_fields(driver: xr.Dataset, seed: int, *, start_year: int = 1850) -> xr.Dataset:
    """The operational generator's fields driven by given indices: a scoring-only oracle.

    Exactly the operational model's construction (patterns and cold tongue shifted
    :data:`COLD_TONGUE_SHIFT_DEG` west, no nonlinear term, its noise amplitudes) but driven by
    ``driver``'s indices instead of the oscillator, with red noise from stream 9 of
    ``default_rng([seed, stream])``. Driven by the truth's own indices (``truth_driver``), it is
    the best any method decoding through the operational model's patterns can be expected to do:
    the distance of its statistic maps to the truth's is a structural bound. Never an input of
    the bridge.

    Parameters
    ----------
    driver : xarray.Dataset
        ``nino3``, ``nino4`` (degC), ``h_w`` (m) on ``time`` (one member, first month January).
    seed : int
        Seed of the red noise.
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    xarray.Dataset
        ``tos``, ``zos`` float32 on ``(time, lat, lon)`` (absolute values), NaN over land.
    """
    seed = check_int(seed, "seed", minimum=0)
    start_year = check_int(start_year, "start_year", minimum=1)
    rng = np.random.default_rng([seed, STREAMS["pattern_oracle"]])
    return assemble_fields(driver_arrays(driver), rng, start_year, COLD_TONGUE_SHIFT_DEG, 0.0)


BIASES = {
    "bias_distribution": "Gaussian linear oscillator; Nino 3/4 marginals mapped to exactly symmetric "
                         "laws: Nino 3 skewness 0 (truth about +0.9), Nino 4 skewness 0",
    "bias_extremes": f"|Nino 3|, |Nino 4| < {OPERATIONAL_CAP_DEGC} degC: no extreme El Nino",
    "bias_westward_extension": f"SST/thermocline patterns and the mean cold tongue extend "
                               f"{COLD_TONGUE_SHIFT_DEG} deg too far west west of 200E, tapering to 0 at 280E",
    "bias_ep_cp_contrast": f"corr(Nino 3, Nino 4) = {OPERATIONAL_NINO_CORR}, no nonlinear EP term",
    "bias_phase_locking": f"Nino 3 amplitude seasonal modulation only +-{OPERATIONAL_PHASE_LOCKING:.0%}",
    "matched": "variances of Nino 3, Nino 4, h_W and the ENSO period/decay of the target",
}
"""The operational model's built-in biases, recorded as ``bayesbridge_<key>`` global attributes."""


def operational_model(n: int, seed: int, target: OscillatorTarget,
                      start_year: int) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """The operational model's fields and the oscillator indices that drive them (no checks).

    Parameters
    ----------
    n : int
        Number of months.
    seed : int
        Seed: the oscillator uses stream ``STREAMS["oscillator"]``, the red noise
        ``STREAMS["op_noise"]``.
    target : OscillatorTarget
        Statistics the oscillator reproduces.
    start_year : int
        Calendar year of the first month.

    Returns
    -------
    fields : xarray.Dataset
        ``tos``, ``zos`` on ``(time, lat, lon)`` with :data:`BIASES` and the target in the
        global attributes.
    indices : dict of str to numpy.ndarray
        The oscillator's ``nino3``, ``nino4``, ``h_w``, each ``(n,)``.
    """
    idx = oscillator_indices(n, target, np.random.default_rng([seed, STREAMS["oscillator"]]))
    ds = assemble_fields(idx, np.random.default_rng([seed, STREAMS["op_noise"]]), start_year,
                         COLD_TONGUE_SHIFT_DEG, 0.0)
    ds.attrs = _global_attrs("operational", seed, {**BIASES, **{
        f"target_{k}": (np.asarray(v, dtype=float) if isinstance(v, tuple) else float(v))
        for k, v in vars(target).items()}})
    return ds, idx


def synthetic_operational(years: int, seed: int, *, target: OscillatorTarget | None = None,
                          start_year: int = 1850, out_dir: str | os.PathLike | None = None,
                          years_per_file: int = 50) -> xr.Dataset:
    """The synthetic operational model alone: biased ``tos``, ``zos`` on ``(time, lat, lon)``.

    Parameters
    ----------
    years, seed : int
        Length (years >= 2) and seed (oscillator stream 4, noise stream 5).
    target : OscillatorTarget, optional
        Variances and period to reproduce; default :class:`OscillatorTarget` (the idealized
        model's published statistics).
        :func:`~bayesbridge.datasets.twin.experiment.make_twin_experiment` uses
        ``OscillatorTarget.from_driver(truth_driver)``, so passing that gives identical fields.
    start_year : int
        Calendar year of the first month.
    out_dir : path, optional
        If given, also write CMIP6-style files there with
        :func:`~bayesbridge.datasets.twin.cmip.write_cmip6`.
    years_per_file : int
        Years per file when writing.

    Returns
    -------
    xarray.Dataset
        float32 fields with CF attributes; every built-in bias is a ``bayesbridge_bias_*``
        global attribute.
    """
    years = check_int(years, "years", minimum=2)
    check_int(seed, "seed", minimum=0)
    check_int(start_year, "start_year", minimum=1)
    ds, _ = operational_model(12 * years, seed, target or OscillatorTarget(), start_year)
    if out_dir is not None:
        write_cmip6(ds, out_dir, years_per_file=years_per_file)
    return ds


