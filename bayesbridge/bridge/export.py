"""A posterior as an ArviZ container (``inference_data.nc``, ``docs/design.md`` section 3)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["posterior_groups", "posterior_inference_data", "thin_draws"]


def thin_draws(arr: np.ndarray, n: int) -> np.ndarray:
    """``arr`` ``(k, ...)`` with ``n`` draws on the first axis: evenly thinned, or broadcast from one value."""
    if arr.ndim == 0 or arr.shape[0] == 1:
        return np.broadcast_to(arr.reshape(1, *arr.shape[arr.ndim > 0:]), (n, *arr.shape[arr.ndim > 0:]))
    if arr.shape[0] == n:
        return arr
    keep = np.unique(np.linspace(0, arr.shape[0] - 1, n).round().astype(int))
    return arr[keep]


def posterior_inference_data(post, include_latent: bool = True):
    """The ArviZ container of a :class:`~bayesbridge.bridge.posterior.Posterior` ``post``: the
    groups of :func:`posterior_groups` (``include_latent`` as there) in an ArviZ object."""
    from bayesbridge.io import arviz_compat

    return arviz_compat.from_groups(posterior_groups(post, include_latent))


def posterior_groups(post, include_latent: bool = True) -> dict:
    """The groups of the ArviZ container of a :class:`~bayesbridge.bridge.posterior.Posterior`
    ``post``, as Datasets (:func:`bayesbridge.io.arviz_compat.build_groups`; no ArviZ import).

    Groups: ``posterior`` (latent states ``z`` on ``(chain, draw, time, latent)`` when
    ``include_latent``, and the hyperparameters, e.g. integrated error scales ``obs_error_scale``
    on ``(chain, draw, index)`` and ``model_error_scale``; ensemble/variational draws form one chain),
    ``posterior_predictive`` (index draws per box, ``(chain, draw, time)``), ``observed_data``
    (the observed indices on ``time``), ``sample_stats`` (``log_evidence`` of each draw's run and
    the engine's ``ess`` per step where it weighs particles, ``(chain, draw[, time])``; the draws
    themselves are equally weighted trajectories, :mod:`bayesbridge.bridge.draws`).
    Hyperparameter draws whose count differs from the latent draws are thinned evenly to the
    smaller count, and the latent draws with them; single values are broadcast. Latent and index
    draws are stored in float32, the precision of the decoded fields.
    """
    from bayesbridge.io import arviz_compat

    result = post.result
    hyper = {k: v.detach().cpu().to(torch.float64).numpy() for k, v in result.hyperparameters.items()}
    counts = [v.shape[0] for v in hyper.values() if v.ndim >= 1 and v.shape[0] > 1]
    n_post = min([post.n_draws, *counts])
    posterior = {name: thin_draws(arr, n_post)[None] for name, arr in hyper.items()}
    dims: dict[str, list[str]] = {}
    coords: dict[str, np.ndarray] = {"time": np.asarray(post.time)}
    if "obs_error_scale" in posterior:  # integrated scales (bayesbridge.bridge.scales), one per observable
        m = posterior["obs_error_scale"].shape[-1]
        dims["obs_error_scale"] = ["index"]
        coords["index"] = np.asarray(post.assimilated if len(post.assimilated) == m else np.arange(m))
    if include_latent:
        z = post.latent_draws().permute(1, 0, 2).numpy().astype(np.float32)  # (draw, T, d), as decoded
        posterior["z"] = thin_draws(z, n_post)[None]
        dims["z"] = ["time", "latent"]
        coords["latent"] = np.arange(post.latent_dim)
    predictive = {}
    if post.boxes:
        for box in post.boxes:
            predictive[box] = post.index_draws(box).values.astype(np.float32)[None]  # (1, draw, T)
            dims[box] = ["time"]
    observed = {}
    for name, values in post.observations.items():
        observed[name] = values
        dims[name] = ["time"]
    for name, da in post.profile_observations.items():  # e.g. eq_sst on (time, eq_sst_lon)
        observed[name] = np.asarray(da.values)
        dims[name] = list(da.dims)
        if da.dims[1] in da.coords:
            coords[da.dims[1]] = np.asarray(da[da.dims[1]].values)
    n_batch, members = post.draws.n_batch, post.draws.members
    per_draw_run = np.repeat(np.arange(n_batch), members)
    log_ev = result.log_evidence.detach().reshape(-1).to(torch.float64).cpu().numpy()
    stats = {"log_evidence": log_ev[per_draw_run][None] if log_ev.size == n_batch
             else np.full((1, post.n_draws), float(log_ev.sum()))}
    ess = post.ess()
    if ess is not None:
        stats["ess"] = ess[per_draw_run][None]
        dims["ess"] = ["time"]
    attrs = {"method": result.method, "source": post.source,
             "log_evidence_total": float(log_ev.sum()), "assimilated": ",".join(post.assimilated)}
    if "obs_error_scale" in posterior and hasattr(result.fit, "stats"):  # integrated scales: how they were drawn
        attrs["error_scale_sampler"] = str(result.fit.sampler)
        attrs.update({f"error_scale_{k}": float(v) for k, v in result.fit.stats.items()})
    return arviz_compat.build_groups(
        posterior=posterior or None,
        posterior_predictive=predictive or None,
        observed_data=observed or None,
        sample_stats=stats,
        coords=coords,
        dims=dims,
        attrs=attrs,
    )
