"""The result container shared by every inference engine."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

__all__ = ["AssimilationResult", "StepDiagnostics"]


@dataclass
class StepDiagnostics:
    """Per-step diagnostics of a filter pass.

    Attributes
    ----------
    innovation : Tensor (*batch, T, m)
        ``y_t - E[h(z_t) | y_{1:t-1}]`` (NaN where the observation is missing).
    innovation_var : Tensor (*batch, T, m) or None
        Predicted variance of each innovation component (diagonal of ``S_t``).
    spread : Tensor (*batch, T)
        Root-mean ensemble/posterior variance of the analysis state, ``sqrt(tr P_t / d)``.
    ess : Tensor (*batch, T) or None
        Effective sample size (particle filters).
    """

    innovation: torch.Tensor
    spread: torch.Tensor
    innovation_var: torch.Tensor | None = None
    ess: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> StepDiagnostics:
        """A copy with every tensor on ``device``."""
        return replace(self, **{f.name: _moved(getattr(self, f.name), device) for f in fields(self)})


@dataclass
class AssimilationResult:
    """What :func:`bayesbridge.infer.assimilate` returns, whatever the method.

    Attributes
    ----------
    method : str
        The engine that produced it (``"kalman"``, ``"enkf"``, ...).
    filtered_mean : Tensor (*batch, T, d)
        ``E[z_t | y_{1:t}]``.
    log_evidence : Tensor (*batch,)
        ``log p(y_{1:T})`` (exact, Gaussian innovation form, or particle estimate).
    filtered_cov : Tensor (*batch, T, d, d) or None
        Exact or ensemble filtering covariance.
    filtered_ensemble : Tensor (*batch, T, member, d) or None
        Analysis ensemble or (resampled) particles.
    smoothed_mean : Tensor (*batch, T, d) or None
        ``E[z_t | y_{1:T}]`` for smoothing methods.
    smoothed_cov : Tensor (*batch, T, d, d) or None
    smoothed_ensemble : Tensor (*batch, T, member, d) or None
        Smoothed ensemble, or whole posterior trajectories (particle backward simulation,
        Kalman / variational draws), ``member`` indexing the draw.
    log_weights : Tensor (*batch, T, member) or None
        Normalised log importance weights of ``filtered_ensemble`` (particle filters).
    diagnostics : StepDiagnostics or None
    hyperparameters : dict of str to Tensor (draw, ...), optional
        Posterior draws of global parameters (observation/model error scales, inflation ...).
    config : object
        The validated method configuration dataclass.
    fit : object, optional
        Record of an optimisation-based engine: for ``svi`` the
        :class:`~bayesbridge.infer.variational_fit.ELBOTrace` (ELBO per step, convergence test);
        ``None`` for the filters.
    """

    method: str
    filtered_mean: torch.Tensor
    log_evidence: torch.Tensor
    filtered_cov: torch.Tensor | None = None
    filtered_ensemble: torch.Tensor | None = None
    smoothed_mean: torch.Tensor | None = None
    smoothed_cov: torch.Tensor | None = None
    smoothed_ensemble: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None
    diagnostics: StepDiagnostics | None = None
    hyperparameters: dict[str, torch.Tensor] = field(default_factory=dict)
    config: object | None = None
    fit: object | None = None

    @property
    def device(self) -> torch.device:
        """Device of the result's tensors."""
        return self.filtered_mean.device

    def to(self, device: str | torch.device) -> AssimilationResult:
        """A copy with every tensor (diagnostics and hyperparameter draws included) on ``device``."""
        from bayesbridge.devices import resolve_device

        dev = resolve_device(device)
        moved = {f.name: _moved(getattr(self, f.name), dev) for f in fields(self)
                 if f.name not in ("method", "config", "fit")}
        moved["diagnostics"] = None if self.diagnostics is None else self.diagnostics.to(dev)
        moved["hyperparameters"] = {k: _moved(v, dev) for k, v in self.hyperparameters.items()}
        return replace(self, **moved)

    def cpu(self) -> AssimilationResult:
        """The result on the CPU (``self`` when it is there already)."""
        return self if self.device.type == "cpu" else self.to("cpu")

    @property
    def n_steps(self) -> int:
        """Number of assimilation steps ``T``."""
        return int(self.filtered_mean.shape[-2])

    @property
    def latent_dim(self) -> int:
        """Latent size ``d``."""
        return int(self.filtered_mean.shape[-1])


def _moved(value, device):
    """A tensor moved to ``device``; anything else unchanged."""
    return value.to(device) if isinstance(value, torch.Tensor) else value
