"""Synthetic twin experiment: a CMIP-formatted operational model with ENSO biases and a known truth.

No CMIP6 archive is reachable offline, so bayesbridge's default data set is generated here
(``docs/design.md`` section 6). Everything lives on one grid, 20S-20N x 120E-280E at 2 degrees (21 x 81),
monthly on a 365-day (``noleap``) cftime calendar, with CMIP6 variable names (``tos`` in degC,
``zos`` in m), CF attributes and a small land mask (a Central-America corner and bits of the
maritime continent and northern Australia), so the same reader serves real CMIP6 files.

**Truth.** Driven by one idealized-model run (T_E = Nino 3, T_C = Nino 4, h_W):

.. math::

    \\mathrm{tos}(t, y, x) = C(m_t, y, x) + \\tilde b_0(x, y)
        + P_E(x, y) T_E(t) + P_C(x, y) T_C(t) + \\kappa N(x, y) \\max(T_E(t), 0)^2
        + \\varepsilon(t, y, x),

with :math:`P_{E,C}(x, y) = b_{e,c}(x) G(y) / \\bar G`, the observed 5S-5N regression
coefficients of Chen, Fang & Yu (2022) (``data/equatorial_sst_regression.nc``) trapped
meridionally by :math:`G(y) = \\exp(-(y / 8^\\circ)^2)` (:math:`\\bar G` its 5S-5N mean, so the
5S-5N mean profile is the observed one), then corrected by a 2 x 2 matrix so that the Nino 3 and
Nino 4 box means of the field are exactly T_E and T_C. The nonlinear pattern :math:`N` (east
positive, central Pacific negative, zero Nino 3 and Nino 4 means) makes strong EP events peak
further east; :math:`\\varepsilon` is spatially smooth AR(1) red noise; :math:`C` a seasonal
climatology with a cold tongue. ``zos`` is sea-surface height (m) as a thermocline proxy,
:math:`\\eta = D / 150` with thermocline displacement
:math:`D = W h_W + S \\alpha T_E + \\varepsilon_h` (W: western-Pacific pattern with unit h_W-box
mean, S: east-west seesaw with zero h_W-box mean, :math:`\\alpha` = 12 m per degC).

**Operational model** (the biases the bridge must correct, recorded in the global attributes):
a Gaussian damped linear oscillator :math:`z_t = \\rho e^{i 2 \\pi / P} z_{t-1} + \\xi_t`
(complex AR(1), i.e. AR(2) for each component) with the truth's period and Nino variances; its
marginals are mapped by ranks to exactly symmetric, light-tailed laws (Nino 3 skewness 0,
\\|T\\| < 2 degC: no extreme events); Nino 4 is 0.75-correlated with Nino 3 and there is no
nonlinear term (weak EP/CP diversity); seasonal phase locking is weak (+-10 %); the patterns and
the mean cold tongue extend 15 degrees too far west in the central Pacific, tapering to no shift
at the American coast. Its noise uses a stream independent of the truth's.

All random numbers come from ``numpy.random.default_rng([seed, stream])`` with a fixed stream per
component, so a seed fixes every array and the components are mutually independent.

The package is split by concept: :mod:`.grid` (grid, land mask, time axis, climatologies, box
means), :mod:`.patterns` (SST and thermocline patterns, red noise), :mod:`.drivers` (index runs),
:mod:`.oscillator` (the operational model's oscillator), :mod:`.synthesis` (the fields of the
truth, the operational model and the scoring oracle), :mod:`.cmip` (CMIP6-style files) and
:mod:`.experiment` (:class:`TwinExperiment`, its construction and cache).

References: Chen, Fang & Yu (2022), npj Clim. Atmos. Sci. 5:16; Behnoudfar et al.,
arXiv 2510.13030.
"""

from __future__ import annotations

from bayesbridge.datasets.twin.cmip import write_cmip6
from bayesbridge.datasets.twin.drivers import OBSERVED_VARIABLES
from bayesbridge.datasets.twin.experiment import (
    RECORD_YEARS,
    TwinExperiment,
    default_cache_dir,
    historical_record,
    independent_idealized_run,
    make_twin_experiment,
    twin_from_drivers,
)
from bayesbridge.datasets.twin.grid import twin_grid
from bayesbridge.datasets.twin.oscillator import (
    OPERATIONAL_NINO_CORR,
    OscillatorTarget,
    centroid_period,
)
from bayesbridge.datasets.twin.synthesis import (
    COLD_TONGUE_SHIFT_DEG,
    GENERATOR_VERSION,
    THERMOCLINE_PER_ZOS,
    assemble_fields,
    operational_pattern_fields,
    synthetic_operational,
    synthetic_truth,
)

__all__ = [
    "GENERATOR_VERSION",
    "OBSERVED_VARIABLES",
    "THERMOCLINE_PER_ZOS",
    "COLD_TONGUE_SHIFT_DEG",
    "OPERATIONAL_NINO_CORR",
    "OscillatorTarget",
    "TwinExperiment",
    "twin_grid",
    "centroid_period",
    "assemble_fields",
    "synthetic_truth",
    "synthetic_operational",
    "operational_pattern_fields",
    "twin_from_drivers",
    "default_cache_dir",
    "make_twin_experiment",
    "independent_idealized_run",
    "RECORD_YEARS",
    "historical_record",
    "write_cmip6",
]
