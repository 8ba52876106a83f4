"""The linear-Gaussian model as Pyro's ``GaussianHMM``: an independent oracle and a parallel scan.

:func:`gaussian_hmm` builds :class:`pyro.distributions.GaussianHMM` for a
:class:`~bayesbridge.model.LinearGaussianModel` (an implementation independent of
:mod:`bayesbridge.infer.kalman`, used as its test oracle): ``log_prob(y)`` is the exact
log-evidence :math:`\\log p(y_{1:T})` and ``filter(y)`` the filtering distribution
:math:`p(z_T \\mid y_{1:T})`. :func:`parallel_smoothed_mean` uses its parallel-scan algorithms
(Särkkä & García-Fernández 2021, *IEEE Trans. Autom. Control* 66, 299-306), which contract the
time axis in ``O(log T)`` sequential depth, for the smoothed means of fully observed series.
"""

from __future__ import annotations

import torch

from bayesbridge.errors import ParameterError
from bayesbridge.infer._kalman_system import linear_parts

__all__ = ["gaussian_hmm", "parallel_smoothed_mean"]


def gaussian_hmm(model, T: int):
    """The model as :class:`pyro.distributions.GaussianHMM` over ``y_1..y_T``.

    Pyro's matrices act on row vectors, so the transition matrix is ``A^T`` and the observation
    matrix ``H^T``; its initial distribution is that of the state one step before the first
    observation, which is our ``z_0 ~ N(m0, P0)``. ``Q`` must be positive definite.

    Parameters
    ----------
    model : LinearGaussianModel
    T : int
        Number of observation times.

    Returns
    -------
    pyro.distributions.GaussianHMM
        ``log_prob(y)`` for ``y`` ``(*batch, T, m)`` is ``log p(y_{1:T})`` and ``filter(y)`` is
        ``p(z_T | y_{1:T})``.
    """
    import pyro.distributions as dist

    A, Q, H, R, m0, P0 = linear_parts(model)
    d, m = A.shape[0], H.shape[0]
    return dist.GaussianHMM(
        initial_dist=dist.MultivariateNormal(m0, covariance_matrix=P0),
        transition_matrix=A.mT.contiguous(),
        transition_dist=dist.MultivariateNormal(Q.new_zeros(d), covariance_matrix=Q),
        observation_matrix=H.mT.contiguous(),
        observation_dist=dist.MultivariateNormal(R.new_zeros(m), covariance_matrix=R),
        duration=T,
    )


def parallel_smoothed_mean(model, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact smoothed means and log-evidence by Pyro's parallel-scan algorithms.

    Uses :func:`pyro.ops.gaussian.sequential_gaussian_filter_sample` with zero noise (the
    posterior of the whole trajectory is Gaussian, so its zero-noise reparameterised sample is
    the smoothed mean) and :meth:`GaussianHMM.log_prob`; both contract the time axis in
    ``O(log T)`` sequential depth instead of a loop over ``T``. Fully observed ``y`` only.

    Parameters
    ----------
    model : LinearGaussianModel
    y : Tensor (*batch, T, m)
        Observations without NaN.

    Returns
    -------
    smoothed_mean : Tensor (*batch, T, d)
    log_evidence : Tensor (*batch,)
    """
    from pyro.ops.gaussian import sequential_gaussian_filter_sample

    if bool(torch.isnan(y).any()):
        raise ParameterError(
            "y: parallel_smoothed_mean needs fully observed data; use run() (method='kalman') "
            "for observations with NaN."
        )
    hmm = gaussian_hmm(model, y.shape[-2])
    trans = hmm._trans + hmm._obs.condition(y).event_pad(left=hmm.hidden_dim)
    trans = trans.expand(trans.batch_shape)
    zeros = y.new_zeros(*y.shape[:-2], y.shape[-2] + 1, hmm.hidden_dim)
    mean = sequential_gaussian_filter_sample(hmm._init, trans, (), noise=zeros)[..., 1:, :]
    return mean, hmm.log_prob(y)
