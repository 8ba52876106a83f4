"""Neural latent dynamics: a residual MLP around a linear inverse model with learned Gaussian noise.

.. math:: z_t = A z_{t-1} + f_\\theta(z_{t-1}, \\mathbf s_{m(t)}) + L w_t, \\qquad w_t \\sim N(0, I),

with :math:`\\mathbf s_m = (\\sin 2\\pi m/12, \\cos 2\\pi m/12)` calendar features when
``seasonal=True``, ``A`` initialised at the least-squares LIM, the last layer of
:math:`f_\\theta` at zero and ``L`` (lower triangular, positive diagonal through softplus) at
the LIM noise Cholesky factor. Training minimises the one-step negative log-likelihood

.. math:: -\\log N(z_t;\\, A z_{t-1} + f_\\theta(z_{t-1}),\\, L L^\\top)

plus ``rollout_weight`` times the mean squared error of deterministic ``k``-step rollouts
(``k = 2..rollout``), which penalises drift of the mean dynamics over several months
(a multi-step "rollout" loss as in Keisler 2022, arXiv:2202.07575). The last ``validation``
fraction of calendar years is held out for early stopping. Every random step uses generators
seeded by ``seed``.

Calendar: as for :class:`~bayesbridge.latent.linear.LinearInverseModel` (``start_month`` = month
of step 0, set by ``fit``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from bayesbridge.errors import NotFittedError, ParameterError
from bayesbridge.latent.autoencoder import _mlp, resolve_device, seeded_linear_init
from bayesbridge.latent.linear import LinearInverseModel
from bayesbridge.latent.simulate import FreeRunMixin, latent_series, month_of_step
from bayesbridge.latent.stacking import split_years

__all__ = ["NeuralDynamics"]


class _DynamicsNet(nn.Module):
    def __init__(self, d: int, hidden: tuple[int, ...], n_features: int):
        super().__init__()
        self.linear = nn.Linear(d, d, bias=False)
        self.residual = _mlp(d + n_features, hidden, d)
        self.raw_tril = nn.Parameter(torch.zeros(d, d))

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([z, features.expand(*z.shape[:-1], features.shape[-1])], dim=-1)
        return self.linear(z) + self.residual(inputs)

    def scale_tril(self) -> torch.Tensor:
        diag = nn.functional.softplus(torch.diagonal(self.raw_tril)) + 1e-6
        return torch.tril(self.raw_tril, -1) + torch.diag(diag)


def _month_features(months: np.ndarray | torch.Tensor, seasonal: bool) -> torch.Tensor:
    months = torch.as_tensor(np.asarray(months, dtype=float), dtype=torch.float32)
    if not seasonal:
        return months[..., None][..., :0]
    angle = 2 * math.pi * months / 12.0
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)


@dataclass
class NeuralDynamics(FreeRunMixin):
    """Residual-MLP transition with learned Gaussian noise.

    Parameters
    ----------
    hidden : tuple of int
        Hidden widths of :math:`f_\\theta`.
    seasonal : bool
        Feed calendar-month features to :math:`f_\\theta`.
    rollout : int
        Longest rollout horizon of the multi-step loss (1 disables it).
    rollout_weight : float
        Weight of the rollout loss.
    epochs, batch_size, learning_rate, weight_decay, patience, validation
        Optimisation and early-stopping settings (AdamW, held-out final years).
    seed : int
        Seed of all training randomness.
    device : str
        ``"cpu"`` or ``"cuda[:n]"``.
    progress : bool
        Show a tqdm progress bar.
    start_month : int, optional
        Calendar month of step 0 (set by :meth:`fit`).
    """

    hidden: tuple[int, ...] = (32,)
    seasonal: bool = False
    rollout: int = 6
    rollout_weight: float = 0.5
    epochs: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 30
    validation: float = 0.2
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    start_month: int | None = None

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("epochs", "batch_size", "patience", "rollout"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {getattr(self, name)!r}.")
        if not self.learning_rate > 0 or self.weight_decay < 0 or self.rollout_weight < 0:
            raise ParameterError(
                "learning_rate must be > 0, weight_decay >= 0 and rollout_weight >= 0; got "
                f"{self.learning_rate}, {self.weight_decay}, {self.rollout_weight}."
            )
        self._device = resolve_device(self.device)
        self.net: _DynamicsNet | None = None
        self.train_loss: list[float] = []
        self.validation_loss: list[float] = []

    @property
    def latent_dim(self) -> int:
        """Latent size ``d``."""
        return int(self._require().linear.in_features)

    def _require(self) -> _DynamicsNet:
        if self.net is None:
            raise NotFittedError("NeuralDynamics: call .fit(z) before using the dynamics.")
        return self.net

    # ------------------------------------------------------------------ training
    def fit(self, z: xr.DataArray) -> NeuralDynamics:
        """Fit on a latent series ``(time, latent)`` with a datetime time axis.

        Initialises ``A`` and ``L`` from a :class:`LinearInverseModel` fitted on the training
        years, then minimises the loss of the module docstring with AdamW over windows of
        ``rollout + 1`` consecutive steps, keeping the weights of the epoch with the lowest
        loss on the held-out final years (early stopping after ``patience`` epochs without
        improvement).

        Parameters
        ----------
        z : xarray.DataArray
            Latent series on ``(time, latent)`` (e.g. ``codec.encode(fields)``).

        Returns
        -------
        NeuralDynamics
            ``self``, fitted (``train_loss`` and ``validation_loss`` hold the per-epoch curves).
        """
        d = z.sizes.get("latent", 1) if isinstance(z, xr.DataArray) else 1
        series = latent_series(z, min_steps=d + 2)
        split = split_years(z["time"], self.validation, min_steps=self.rollout + 2)
        if self.start_month is None:
            self.start_month = series.start_month
        months = series.months if series.months is not None else np.ones(len(series.values), int)
        x = torch.as_tensor(series.values, dtype=torch.float32)
        feats = _month_features(months, self.seasonal)
        lim = LinearInverseModel().fit(z.isel(time=split.train))
        gen = torch.Generator().manual_seed(self.seed)
        net = _DynamicsNet(d, self.hidden, feats.shape[-1])
        seeded_linear_init(net.residual, gen, zero_last=True)
        with torch.no_grad():
            net.linear.weight.copy_(lim.A.float())
            chol = lim.noise_scale_tril().float()
            raw = torch.tril(chol, -1) + torch.diag(torch.log(torch.expm1(torch.diagonal(chol))))
            net.raw_tril.copy_(raw)
        net = net.to(self._device)
        x, feats = x.to(self._device), feats.to(self._device)
        k = self.rollout
        starts_train = self._window_starts(split.train, k)
        starts_val = self._window_starts(split.validation, k)
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        best, best_state, waited = math.inf, copy.deepcopy(net.state_dict()), 0
        self.train_loss, self.validation_loss = [], []
        bar = tqdm(range(self.epochs), desc="NeuralDynamics training", disable=not self.progress)
        for _ in bar:
            net.train()
            order = starts_train[torch.randperm(starts_train.numel(), generator=gen)]
            total = 0.0
            for i in range(0, order.numel(), self.batch_size):
                loss = self._loss(net, x, feats, order[i : i + self.batch_size].to(self._device), k)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * min(self.batch_size, order.numel() - i)
            net.eval()
            with torch.no_grad():
                val = float(self._loss(net, x, feats, starts_val.to(self._device), k))
            self.train_loss.append(total / order.numel())
            self.validation_loss.append(val)
            bar.set_postfix(train=f"{self.train_loss[-1]:.3f}", val=f"{val:.3f}")
            if val < best:
                best, best_state, waited = val, copy.deepcopy(net.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        bar.close()
        net.load_state_dict(best_state)
        self.net = net.eval().requires_grad_(False)
        return self

    @staticmethod
    def _window_starts(index: np.ndarray, k: int) -> torch.Tensor:
        """Start positions ``t`` with ``t .. t + k`` all inside one contiguous block of ``index``."""
        index = np.asarray(index)
        ok = [i for i in range(index.size - k) if index[i + k] - index[i] == k]
        return torch.as_tensor(index[ok], dtype=torch.long)

    def _loss(self, net, x, feats, starts, k) -> torch.Tensor:
        chol = net.scale_tril()
        state = x[starts]
        nll = torch.zeros((), device=x.device)
        roll = torch.zeros((), device=x.device)
        for j in range(1, k + 1):
            target = x[starts + j]
            pred = net(state, feats[starts + j])
            if j == 1:
                dist = torch.distributions.MultivariateNormal(pred, scale_tril=chol)
                nll = -dist.log_prob(target).mean() / x.shape[-1]
            else:
                roll = roll + ((pred - target) ** 2).mean() / (k - 1)
            state = pred
        return nll + self.rollout_weight * roll

    # ------------------------------------------------------------------ Transition protocol
    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``A z + f(z, month(step))``: ``(*batch, latent) -> (*batch, latent)``, differentiable."""
        net = self._require()
        if self.seasonal and step is None:
            raise ParameterError(
                "step: this NeuralDynamics is seasonal, so mean() needs the target step to know "
                "the calendar month; pass step=t."
            )
        month = month_of_step(self.start_month or 1, step) if step is not None else 1
        feats = _month_features(np.array(month), self.seasonal).to(self._device)
        out = net(z.to(device=self._device, dtype=torch.float32), feats)
        return out.to(dtype=z.dtype, device=z.device)

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """Learned Cholesky factor ``(latent, latent)`` float64 (constant in time, so ``step`` is ignored)."""
        return self._require().scale_tril().detach().double().cpu()
