"""Neural codecs: a deterministic autoencoder and a variational autoencoder (MLP, torch).

Both work on the normalised, area-weighted stacked anomalies :math:`\\tilde x \\in \\mathbb R^P`
of :mod:`bayesbridge.latent.stacking`. Encoder and decoder are *residual around the EOF map*:

.. math::

    e(\\tilde x) = W_e \\tilde x + b_e + f_\\theta(\\tilde x), \\qquad
    g(z) = W_d z + b_d + h_\\phi(z),

with MLPs :math:`f_\\theta, h_\\phi` whose last layer starts at zero and, with ``init="eof"``,
``W_e, W_d`` starting at the EOF projection and patterns (unit-variance principal components).
Training therefore starts from the linear optimum and only has to learn the nonlinear
correction (e.g. the eastward shift of strong El Nino events), which makes small-data training
stable; ``init="random"`` gives a plain MLP autoencoder.

:class:`Autoencoder` minimises the area-weighted mean squared error. :class:`VAE` (Kingma &
Welling 2014, *ICLR*) has a Gaussian encoder :math:`q(z|x) = N(\\mu(x), \\operatorname{diag}
\\sigma^2(x))`, prior :math:`N(0, I)` and a Gaussian decoder with a learned per-point residual
variance, :math:`p(x|z) = N(g(z), \\operatorname{diag} \\rho^2)`, trained on the negative ELBO

.. math:: \\mathcal L = \\tfrac12 \\sum_j \\Big[\\frac{(\\tilde x_j - g_j(z))^2}{\\rho_j^2}
          + \\log 2\\pi\\rho_j^2\\Big] + \\beta\\, \\mathrm{KL}(q(z|x) \\,\\|\\, N(0, I)),
          \\quad z \\sim q(z|x).

:attr:`VAE.residual_std` (:math:`\\rho` in physical units) is the representation error that
decoded fields carry (:meth:`VAE.decode_sample`).

Training holds out the last ``validation`` fraction of calendar years, stops early when the
validation loss has not improved for ``patience`` epochs and restores the best weights. All
randomness (weight initialisation, batch order, latent noise) comes from generators seeded by
``seed``; no global random state is touched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from bayesbridge.devices import resolve_device
from bayesbridge.errors import ParameterError
from bayesbridge.latent._codec import CodecBase
from bayesbridge.latent.eof import EOFCodec
from bayesbridge.latent.stacking import split_years

__all__ = ["Autoencoder", "VAE", "TrainingHistory", "resolve_device", "seeded_linear_init"]

Init = Literal["eof", "random"]


def seeded_linear_init(module: nn.Module, generator: torch.Generator, zero_last: bool) -> None:
    """Re-initialise every ``nn.Linear`` in ``module`` from ``generator`` (PyTorch's default
    uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) law); ``zero_last`` zeroes the last one (a residual
    block that starts as the identity)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
            layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
        if zero_last and linears:
            linears[-1].weight.zero_()
            linears[-1].bias.zero_()


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _CodecNet(nn.Module):
    """Encoder/decoder pair residual around a linear map; ``(*, P) <-> (*, d)``."""

    def __init__(self, n_points: int, latent_dim: int, hidden: tuple[int, ...], variational: bool):
        super().__init__()
        self.enc_lin = nn.Linear(n_points, latent_dim)
        self.enc_mlp = _mlp(n_points, hidden, latent_dim)
        self.dec_lin = nn.Linear(latent_dim, n_points)
        self.dec_mlp = _mlp(latent_dim, hidden, n_points)
        self.variational = variational
        if variational:
            self.enc_logvar = _mlp(n_points, hidden, latent_dim)
            self.log_residual_var = nn.Parameter(torch.zeros(n_points))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mu = self.enc_lin(x) + self.enc_mlp(x)
        logvar = self.enc_logvar(x) if self.variational else None
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec_lin(z) + self.dec_mlp(z)


@dataclass
class TrainingHistory:
    """Loss curves of a training run (per point, per sample; validation = held-out years).

    Attributes
    ----------
    train_loss : list of float
        Mean training loss per epoch.
    validation_loss : list of float
        Loss on the held-out years per epoch (posterior mean, no sampling noise).
    best_epoch : int
        Epoch (0-based) whose weights were kept (lowest validation loss); -1 before training.
    stopped_early : bool
        Whether training stopped after ``patience`` epochs without improvement.
    validation_years : tuple of int
        Calendar years held out for validation.
    """

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    validation_years: tuple[int, ...] = ()


@dataclass
class Autoencoder(CodecBase):
    """MLP autoencoder codec (residual around the EOF map).

    Parameters
    ----------
    latent_dim : int
        Latent size ``d``.
    hidden : tuple of int
        Widths of the hidden layers of the encoder and decoder MLPs.
    epochs : int
        Maximum number of passes over the training years.
    batch_size : int
        Time steps per optimisation step.
    learning_rate, weight_decay : float
        AdamW settings.
    patience : int
        Early stopping: epochs without validation improvement before stopping.
    validation : float
        Fraction of (final) calendar years held out for early stopping.
    init : {"eof", "random"}
        Start the linear parts at the EOF solution, or from random weights.
    seed : int
        Seed of every random operation of training.
    device : str
        ``"cpu"`` or ``"cuda[:n]"``.
    progress : bool
        Show a tqdm progress bar over epochs.
    """

    latent_dim: int
    hidden: tuple[int, ...] = (64,)
    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20
    validation: float = 0.2
    init: Init = "eof"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    kind = "autoencoder"
    _variational = False

    def __post_init__(self) -> None:
        self._check_latent_dim()
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h < 1 for h in self.hidden):
            raise ParameterError(f"hidden: expected positive layer widths, got {self.hidden}.")
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {getattr(self, name)!r}.")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ParameterError(
                f"learning_rate must be > 0 and weight_decay >= 0, got {self.learning_rate}, "
                f"{self.weight_decay}."
            )
        if self.init not in get_args(Init):
            raise ParameterError(f"init: expected one of {', '.join(get_args(Init))}, got {self.init!r}.")
        self._device = resolve_device(self.device)
        self.stacker = None
        self.net: _CodecNet | None = None
        self.history = TrainingHistory()

    # ------------------------------------------------------------------ training
    def _build_net(self, n_points: int) -> _CodecNet:
        return _CodecNet(n_points, self.latent_dim, self.hidden, self._variational)

    def _loss(self, net: _CodecNet, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        mu, _ = net.encode(x)
        return ((net.decode(mu) - x) ** 2).mean()

    def _fit_array(self, x: np.ndarray, fields: xr.Dataset) -> None:
        if self.latent_dim > min(x.shape[0] - 1, x.shape[1]):
            raise ParameterError(
                f"latent_dim: {self.latent_dim} exceeds the rank bound min(T - 1, n_points) = "
                f"{min(x.shape[0] - 1, x.shape[1])} of the data ({x.shape[0]} steps, {x.shape[1]} "
                f"points); use a smaller latent_dim or more data."
            )
        split = split_years(fields["time"], self.validation, min_steps=2)
        x_train, x_val = x[split.train], x[split.validation]
        max_rank = min(x_train.shape[0] - 1, x_train.shape[1])
        if self.latent_dim > max_rank:
            raise ParameterError(
                f"latent_dim: {self.latent_dim} exceeds the rank bound min(T_train - 1, n_points) = "
                f"{max_rank} of the training years ({x_train.shape[0]} steps, {x_train.shape[1]} "
                f"points); use latent_dim <= {max_rank}."
            )
        cpu_gen = torch.Generator().manual_seed(self.seed)
        dev_gen = torch.Generator(device=self._device).manual_seed(self.seed + 1)
        net = self._build_net(x.shape[1])
        seeded_linear_init(net.enc_mlp, cpu_gen, zero_last=self.init == "eof")
        seeded_linear_init(net.dec_mlp, cpu_gen, zero_last=self.init == "eof")
        seeded_linear_init(net.enc_lin, cpu_gen, zero_last=False)
        seeded_linear_init(net.dec_lin, cpu_gen, zero_last=False)
        if self.init == "eof":
            self._init_from_eof(net, x_train)
        elif self._variational:
            seeded_linear_init(net.enc_logvar, cpu_gen, zero_last=False)
        net = net.to(self._device)
        xt = torch.as_tensor(x_train, dtype=torch.float32, device=self._device)
        xv = torch.as_tensor(x_val, dtype=torch.float32, device=self._device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        history = TrainingHistory(validation_years=split.validation_years)
        best_state, best, waited = copy.deepcopy(net.state_dict()), math.inf, 0
        bar = tqdm(range(self.epochs), desc=f"{type(self).__name__} training", disable=not self.progress)
        for epoch in bar:
            net.train()
            order = torch.randperm(xt.shape[0], generator=cpu_gen).to(self._device)
            total = 0.0
            for start in range(0, xt.shape[0], self.batch_size):
                batch = xt[order[start : start + self.batch_size]]
                loss = self._loss(net, batch, dev_gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * batch.shape[0]
            net.eval()
            with torch.no_grad():
                val = float(self._loss(net, xv, None))
            history.train_loss.append(total / xt.shape[0])
            history.validation_loss.append(val)
            bar.set_postfix(train=f"{history.train_loss[-1]:.4f}", val=f"{val:.4f}")
            if val < best - 1e-6 * abs(best if math.isfinite(best) else 1.0):
                best, waited, history.best_epoch = val, 0, epoch
                best_state = copy.deepcopy(net.state_dict())
            else:
                waited += 1
                if waited >= self.patience:
                    history.stopped_early = True
                    break
        bar.close()
        net.load_state_dict(best_state)
        # frozen after fitting: decode_tensor outputs carry gradients only through z
        self.net, self.history = net.eval().requires_grad_(False), history

    def _init_from_eof(self, net: _CodecNet, x_train: np.ndarray) -> EOFCodec:
        eof = EOFCodec(self.latent_dim, method="full")
        eof._fit_array(x_train, None)
        sv, comps = eof.singular_values, eof.components
        with torch.no_grad():
            net.enc_lin.weight.copy_((comps / sv[:, None]).float())
            net.enc_lin.bias.copy_(-(torch.from_numpy(x_train.mean(0)) @ (comps / sv[:, None]).T).float())
            net.dec_lin.weight.copy_((sv[:, None] * comps).T.float())
            net.dec_lin.bias.copy_(torch.from_numpy(x_train.mean(0)).float())
        return eof

    # ------------------------------------------------------------------ codec hooks
    def _require_net(self) -> _CodecNet:
        self._require_fitted()
        return self.net

    def _encode_array(self, x: np.ndarray) -> np.ndarray:
        net = self._require_net()
        with torch.no_grad():
            mu, _ = net.encode(torch.as_tensor(x, dtype=torch.float32, device=self._device))
        return mu.double().cpu().numpy()

    def _decode_normalised(self, z: torch.Tensor) -> torch.Tensor:
        return self._require_net().decode(z.to(device=self._device, dtype=torch.float32))

    def _state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._require_net().state_dict())

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        net = self._build_net(self.stacker.n_points)
        net.load_state_dict(state)
        self.net = net.to(self._device).eval().requires_grad_(False)

    def _extra_metadata(self) -> dict:
        h = self.history
        return {"history": {"train_loss": h.train_loss, "validation_loss": h.validation_loss,
                            "best_epoch": h.best_epoch, "stopped_early": h.stopped_early,
                            "validation_years": list(h.validation_years)}}

    def _set_extra_metadata(self, extra: dict) -> None:
        h = extra.get("history", {})
        self.history = TrainingHistory(
            list(h.get("train_loss", [])), list(h.get("validation_loss", [])),
            int(h.get("best_epoch", -1)), bool(h.get("stopped_early", False)),
            tuple(h.get("validation_years", ())),
        )


@dataclass
class VAE(Autoencoder):
    """Variational autoencoder codec with a learned per-point residual variance.

    Parameters
    ----------
    latent_dim, hidden, epochs, batch_size, learning_rate, weight_decay, patience, validation, init, seed, device, progress
        As in :class:`Autoencoder`.
    beta : float
        Weight of the KL term (``1`` = the ELBO; smaller values trade prior regularity for
        reconstruction, Higgins et al. 2017).

    ``encode`` returns the posterior mean :math:`\\mu(x)`; :meth:`encode_std` its standard
    deviation. :attr:`residual_std` ``(n_points,)`` is the decoder's representation error in
    physical units.
    """

    beta: float = 1.0

    kind = "vae"
    _variational = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta >= 0:
            raise ParameterError(f"beta: expected a non-negative KL weight, got {self.beta}.")

    def _init_from_eof(self, net: _CodecNet, x_train: np.ndarray) -> EOFCodec:
        eof = super()._init_from_eof(net, x_train)
        with torch.no_grad():
            xt = torch.from_numpy(x_train)
            recon = ((xt - xt.mean(0)) @ eof.components.T) @ eof.components + xt.mean(0)
            resid_var = ((xt - recon) ** 2).mean(0).clamp_min(1e-6)
            net.log_residual_var.copy_(resid_var.log().float())
            last = [m for m in net.enc_logvar.modules() if isinstance(m, nn.Linear)][-1]
            last.weight.zero_()
            last.bias.fill_(-6.0)
        return eof

    def _loss(self, net: _CodecNet, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        mu, logvar = net.encode(x)
        if gen is None:  # evaluation: posterior mean, no sampling noise
            z = mu
        else:
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, device=mu.device,
                                                            dtype=mu.dtype)
        lv = net.log_residual_var
        nll = 0.5 * (((x - net.decode(z)) ** 2) * torch.exp(-lv) + lv + math.log(2 * math.pi)).sum(-1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)
        return (nll + self.beta * kl).mean() / x.shape[-1]

    @property
    def residual_std(self) -> torch.Tensor:
        """Decoder residual standard deviation ``(n_points,)`` float32, physical units."""
        net = self._require_net()
        scale = torch.as_tensor(self.stacker.scale, dtype=torch.float32)
        return torch.exp(0.5 * net.log_residual_var.detach().float().cpu()) * scale

    def decode_sample(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Decoded mean plus Gaussian representation error: ``(*batch, latent) -> (*batch, n_points)``.

        ``generator`` must live on ``z``'s device.
        """
        mean = self.decode_tensor(z)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + noise * self.residual_std.to(dtype=mean.dtype, device=mean.device)

    def encode_std(self, fields: xr.Dataset) -> xr.DataArray:
        """Posterior standard deviation ``(time, latent)`` of the encoder ``q(z | x)``.

        Parameters
        ----------
        fields : xarray.Dataset
            Anomaly fields ``(time, lat, lon)`` on the fitted grid.

        Returns
        -------
        xarray.DataArray
            ``z_std`` on ``(time, latent)``, float64, with the coordinates of :meth:`encode`.
        """
        net = self._require_net()
        x = self.stacker.transform(fields)
        with torch.no_grad():
            _, logvar = net.encode(torch.as_tensor(x, dtype=torch.float32, device=self._device))
        mean = self.encode(fields)
        return mean.copy(data=torch.exp(0.5 * logvar).double().cpu().numpy()).rename("z_std")
