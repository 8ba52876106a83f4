"""Latent space of the operational model: codecs and latent dynamics.

Codecs (:class:`EOFCodec`, :class:`Autoencoder`, :class:`VAE`) compress anomaly fields
``(time, lat, lon)`` of one or more variables into a latent series ``(time, latent)`` and decode
back, in xarray (``encode``/``decode``) and as a differentiable batched torch map
(``decode_tensor``: ``(*batch, latent) -> (*batch, n_points)``). Dynamics
(:class:`LinearInverseModel`, :class:`NeuralDynamics`, :class:`LSTMDynamics`) give
``p(z_t | z_{t-1})`` through the :class:`Transition` protocol and free runs through ``simulate``;
the LSTM reads a window of past states and acts on the lag-augmented state, decoded by a
:class:`WindowedCodec` around the codec.
:func:`reconstruction_report` and :func:`emulator_check` score them against the operational data.
"""

from __future__ import annotations

from bayesbridge.latent.autoencoder import VAE, Autoencoder, TrainingHistory
from bayesbridge.latent.base import Codec, Transition
from bayesbridge.latent.emulator import (
    EmulatorReport,
    IndexStatistics,
    emulator_check,
    series_statistics,
)
from bayesbridge.latent.eof import EOFCodec
from bayesbridge.latent.linear import LinearInverseModel
from bayesbridge.latent.neural import NeuralDynamics
from bayesbridge.latent.recurrent import LSTMDynamics
from bayesbridge.latent.report import (
    ReconstructionReport,
    ReconstructionScores,
    box_operator,
    reconstruction_report,
)
from bayesbridge.latent.stacking import FieldStacker, split_years
from bayesbridge.latent.windowed import LinearWindowedCodec, WindowedCodec, lag_windows

__all__ = [
    "Codec",
    "Transition",
    "EOFCodec",
    "Autoencoder",
    "VAE",
    "TrainingHistory",
    "LinearInverseModel",
    "NeuralDynamics",
    "LSTMDynamics",
    "WindowedCodec",
    "LinearWindowedCodec",
    "lag_windows",
    "FieldStacker",
    "split_years",
    "ReconstructionReport",
    "ReconstructionScores",
    "reconstruction_report",
    "box_operator",
    "EmulatorReport",
    "IndexStatistics",
    "emulator_check",
    "series_statistics",
]
