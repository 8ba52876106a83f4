"""The compiled route of the ensemble Kalman engines: eligibility, the cycle, the same result.

Linear-Gaussian CPU runs without missing values, stored ensembles, taper or RTPS (the exact
conditions are :func:`bayesbridge.infer._enkf_kernel.eligible`'s) are cycled by the numba kernel
of :mod:`bayesbridge.infer._enkf_kernel`, which records, per step, what the torch loop of
:func:`bayesbridge.infer.enkf.run` records (``dt``, ``dv``, ``lamn``, ``G``, analysis mean,
``||X_a||_F``) from the same random numbers. This module turns those records into the same
:class:`~bayesbridge.infer.result.AssimilationResult` (log-evidence and diagnostics by
:func:`~bayesbridge.infer._enkf_records.innovation_summary`, spread
``||X_a||_F / sqrt((N-1) d)``) and raises the same divergence errors.
"""

from __future__ import annotations

import math

import torch

from bayesbridge.errors import FilterDivergenceError, ParameterError
from bayesbridge.infer._enkf_records import innovation_summary
from bayesbridge.infer.divergence import REMEDIES, check_finite
from bayesbridge.infer.enkf_config import EnKFConfig
from bayesbridge.infer.result import AssimilationResult, StepDiagnostics

__all__ = ["run_compiled", "try_compiled"]

f64 = torch.float64


def try_compiled(model, y: torch.Tensor, config: EnKFConfig, generator, noise) -> AssimilationResult | None:
    """The result of the compiled cycle when ``config.engine`` allows it and the case is eligible, else None.

    ``model``, ``y (*batch, T, m)``, ``config``, ``generator`` and ``noise`` as in
    :func:`bayesbridge.infer.enkf.run`. ``engine="torch"`` always gives None; ``"compiled"``
    raises :class:`~bayesbridge.errors.ParameterError` saying why a case is not eligible.
    """
    if config.engine == "torch":
        return None
    from bayesbridge.infer._enkf_kernel import eligible

    ok = eligible(model, config, y, noise)
    if ok:  # linear runs on the CPU: the compiled cycle, same records and random numbers
        return run_compiled(model, y, config, generator, noise)
    if config.engine == "compiled":
        raise ParameterError(
            f"engine: the compiled cycle does not apply here ({ok.reason}); use engine='auto' or 'torch'."
        )
    return None


def run_compiled(model, y: torch.Tensor, config: EnKFConfig, generator, noise) -> AssimilationResult:
    """:func:`~bayesbridge.infer.enkf.run` through the compiled cycle (same records).

    ``model`` a linear-Gaussian model, ``y (*batch, T, m)`` fully observed, ``config`` an
    eligible configuration, ``generator`` and ``noise`` the random-number sources of ``run``.
    Returns ``filtered_mean (*batch, T, d)``, ``log_evidence (*batch,)`` and the diagnostics
    (no stored ensemble).
    """
    from bayesbridge.infer._enkf_kernel import filter_records

    variant, N, T = config.variant, config.members, y.shape[-2]
    L_R, rec = filter_records(model, y, config, generator, noise=noise)
    if config.check_divergence and rec.completed < T:
        check_finite(torch.from_numpy(rec.mean[..., rec.completed, :]), rec.completed, variant, "analysis mean")
        raise FilterDivergenceError(
            f"{variant}: the forecast or innovation is not finite at time step {rec.completed}; the filter "
            f"diverged. Remedies: {REMEDIES}."
        )
    as_t = torch.from_numpy
    log_ev, innov, innov_var = innovation_summary(
        y, as_t(rec.dt), as_t(rec.dv), as_t(rec.lamn), as_t(rec.G), torch.as_tensor(L_R, dtype=f64), N, variant,
        config.check_divergence)
    d = rec.mean.shape[-1]
    return AssimilationResult(
        method=variant,
        filtered_mean=as_t(rec.mean),
        log_evidence=log_ev,
        filtered_ensemble=None,
        diagnostics=StepDiagnostics(innovation=innov, spread=as_t(rec.norm) / math.sqrt((N - 1) * d),
                                    innovation_var=innov_var),
        config=config,
    )
