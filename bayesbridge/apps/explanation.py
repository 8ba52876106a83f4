"""Why the correction happened: gain maps, latent increments and regime composites of an assimilation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import xarray as xr

__all__ = ["Explanation", "explain_assimilation"]


@dataclass
class Explanation:
    """Why the correction happened: gains, increments and regime composites (see
    :mod:`bayesbridge.diagnostics.explain`).

    Attributes
    ----------
    gains : GainMaps
        Decoded Kalman gain of each observed index.
    increments : LatentIncrements
        Analysis increments in the latent space and their direction shares.
    walker : RegimeComposites
        Decoded corrections composited by Walker-circulation regime (high / low ``I``).
    enso : RegimeComposites
        Decoded corrections composited by EP / CP El Nino years.
    """

    gains: object
    increments: object
    walker: object
    enso: object

    def figure_jobs(self) -> dict[str, object]:
        """Callables drawing the figures, keyed by file stem (for
        :func:`bayesbridge.apps.rendering.start_rendering`)."""
        from bayesbridge.plots import explain as ep

        return {
            "gain_maps": lambda: ep.plot_gain_maps(self.gains),
            "latent_increment_maps": lambda: ep.plot_increment_maps(self.increments),
            "latent_increment_shares": lambda: ep.plot_increment_shares(self.increments),
            "composites_walker": lambda: ep.plot_regime_composites(self.walker),
            "composites_ep_cp": lambda: ep.plot_regime_composites(self.enso),
        }

    def figures(self) -> dict[str, object]:
        """The figures, drawn now, keyed by file stem."""
        return {name: job() for name, job in self.figure_jobs().items()}

    def to_dict(self) -> dict[str, float]:
        """Scalar summaries for ``metrics.json``."""
        shares = self.increments.direction_share.values
        out = {"explain.increment_share_mode0": float(shares[0])}
        for regime, n in zip(self.walker.counts["regime"].values, self.walker.counts.values, strict=True):
            out[f"explain.walker_months.{regime}"] = float(n)
        return out


def explain_assimilation(res, codec, observed: xr.Dataset, seed: int) -> Explanation:
    """Gain maps (last ten years), latent increments and Walker / EP-CP regime composites of an assimilation.

    Parameters
    ----------
    res : BridgeResult
        The assimilation (model, engine result, observations).
    codec : Codec
        The codec that decodes its latent states.
    observed : xarray.Dataset
        The idealized run's indices (``nino3``, ``nino4``, ``walker_i``) for the regimes.
    seed : int
        Seed of the forecast ensemble of the gain maps.
    """
    import torch

    from bayesbridge.diagnostics import enso, explain

    model, result, time = res.model, res.result, res.observations["time"]
    # The gain is averaged over the last ten years: enough for a stable average (the filter's
    # gain converges within a few years), without decoding the forecast ensemble of the whole
    # run. The window's first forecast starts from the model's prior (one step in 120).
    recent = slice(max(0, result.n_steps - 120), result.n_steps)
    filtered = result if result.filtered_ensemble is not None else _filter_for_gains(res, seed)
    window = dataclasses.replace(
        filtered,
        filtered_mean=filtered.filtered_mean[..., recent, :],
        filtered_ensemble=None if filtered.filtered_ensemble is None else filtered.filtered_ensemble[..., recent, :, :],
        filtered_cov=None if filtered.filtered_cov is None else filtered.filtered_cov[..., recent, :, :],
        smoothed_mean=None, smoothed_ensemble=None, smoothed_cov=None, log_weights=None,
        diagnostics=None,
    )
    gains = explain.gain_maps(model, window, codec, time=time.values[recent],
                              generator=torch.Generator().manual_seed(seed))
    increments = explain.latent_increments(model, result, codec, time=time.values)
    correction = explain.decoded_increments(model, result, codec, time=time.values)
    walker = explain.regime_composites(correction, explain.walker_regimes(observed["walker_i"].values),
                                       order=("high_I", "low_I"))
    events = enso.classify_events(observed["nino3"], observed["nino4"])
    regimes = explain.enso_regimes(events, time.values)
    order = [r for r in ("ep", "cp") if (regimes == r).any()]
    enso_comp = explain.regime_composites(correction, regimes, order=order or None)
    return Explanation(gains, increments, walker, enso_comp)


def _filter_for_gains(res, seed: int):
    """A filter run of the same model and observations, for engines whose result holds no filter
    ensemble (SVI): the gain is a property of the model and the observing system, so the exact
    Kalman filter gives it for an affine bridge and an ensemble Kalman filter otherwise."""
    import numpy as np

    from bayesbridge.infer import assimilate

    model = res.model
    y = res.y if res.y is not None else np.stack([res.observations[n].values for n in model.obs_names], axis=-1)
    if model.affine_structure(y.shape[-2]) is not None:
        return assimilate(model, y, method="kalman")
    return assimilate(model, y, method="enkf", members=100, seed=seed)
