"""State-space models: the generative model every inference engine works on.

The :class:`StateSpace` protocol (:mod:`.protocol`) is the engines' contract;
:class:`LinearGaussianModel` (:mod:`.linear_gaussian`) is the oracle's case; the general
:class:`StateSpaceModel` (:mod:`.state_space`) puts priors on its error scales and is written as
a Pyro program in :mod:`.pyro_program` (``GaussianHMM`` marginalisation when it is affine,
:mod:`.affine`). :class:`BoxObservation` (:mod:`.observation`) observes box means of decoded
fields.
"""

from __future__ import annotations

from bayesbridge.model.affine import AffineStructure
from bayesbridge.model.linear_gaussian import LinearGaussianModel, LinearTransition
from bayesbridge.model.observation import BoxObservation, OperatorObservation
from bayesbridge.model.protocol import StateSpace
from bayesbridge.model.state_space import StateSpaceModel, as_state_space_model
from bayesbridge.model.tensors import as_tensor

__all__ = [
    "StateSpace",
    "LinearGaussianModel",
    "as_tensor",
    "StateSpaceModel",
    "LinearTransition",
    "BoxObservation",
    "OperatorObservation",
    "AffineStructure",
    "as_state_space_model",
]
