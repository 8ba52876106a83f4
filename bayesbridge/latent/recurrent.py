"""Recurrent latent dynamics: an LSTM over a window of past latent states, as an augmented Markov chain.

The next latent state is predicted from the last ``w`` states by a long short-term memory
network (Hochreiter & Schmidhuber 1997, *Neural Comput.* 9, 1735), around a linear
autoregression on the same window, with learned Gaussian noise:

.. math:: z_t = \\underbrace{\\sum_{k=1}^{w} B_k z_{t-k}}_{\\text{skip}}
          + W\\, [\\mathrm{LSTM}_\\theta(\\tilde z_{t-w}, \\dots, \\tilde z_{t-1}),\\, \\mathbf s_{m(t)}]
          + L \\varepsilon_t, \\qquad \\varepsilon_t \\sim N(0, I_d),

with inputs standardised per component (:math:`\\tilde z = (z - \\mu) / s`), the LSTM's last
hidden state and the calendar features :math:`\\mathbf s_m = (\\sin 2\\pi m/12, \\cos 2\\pi m/12)`
(``seasonal=True``) mapped to the latent space by ``W`` (scaled back by ``s``). ``B_k`` start
at the ridge least-squares VAR(``w``) fit of the training years and ``W`` at zero, so training
starts at the best linear window model and learns its nonlinear correction (``skip="none"``
drops the linear part and starts ``W`` at random); ``L`` (lower triangular, softplus diagonal)
starts at the Cholesky factor of the starting mean's residual covariance (the VAR's, or nearly the
climatological one without the skip). Training minimises, over windows of the training
years, the one-step negative log-likelihood

.. math:: -\\tfrac1d \\log N\\big(z_t;\\, \\hat z_t(z_{t-w:t-1}),\\, L L^\\top\\big)

plus ``rollout_weight`` times the mean squared error of deterministic ``k``-step rollouts
(``k = 2..rollout``, as :class:`~bayesbridge.latent.neural.NeuralDynamics`), with AdamW and
early stopping on the last ``validation`` fraction of calendar years; the starting point competes,
so where the network does not help on the held-out years the fit stays the linear VAR(``w``).
The model error ``L`` the engines use is, by default (``noise="validation"``), the Cholesky factor
of the trained mean's one-step residual covariance on the **held-out** years: the window model
has ``w d^2`` autoregressive weights (2,400 for ``w = 6``, ``d = 20``) and fits its training
years far better than it forecasts (on the 40-year twin the in-sample residual covariance has
about a third of the held-out one's trace), and an engine run with the in-sample noise is
over-confident. ``noise="learned"`` keeps the likelihood's ``L``, ``noise="residual"`` the
training years' residual covariance.

**Augmented state.** Every engine works on a Markov state; the window is one,

.. math:: Z_t = (z_t, z_{t-1}, \\dots, z_{t-w+1}) \\in \\mathbb R^{w d}, \\qquad
          Z_t = F(Z_{t-1}) + \\mathcal L \\varepsilon_t, \\quad
          F(Z_{t-1}) = (\\hat z_t(Z_{t-1}), z_{t-1}, \\dots, z_{t-w+1}),

with :math:`\\mathcal L = \\operatorname{diag}(L, \\eta I, \\dots, \\eta I)`: the lag blocks are
shifted exactly, plus a jitter :math:`\\eta` = ``lag_jitter`` times the RMS standard deviation of
the training series, which keeps the model-error covariance positive definite (the
particle filter's backward smoother evaluates its density) while moving lags by about
:math:`10^{-6}` of their spread. :attr:`LSTMDynamics.latent_dim` is ``w d``; pair the dynamics
with :class:`~bayesbridge.latent.windowed.WindowedCodec` (the base codec's decoder of the first
block) and start the chain from the moments of the training windows
(:func:`~bayesbridge.latent.windowed.lag_windows`).

**Engines.** The ensemble Kalman filters update the lag blocks with the current one (a
fixed-lag smoother of the last ``w`` months, at no extra cost), and the ensemble Kalman
smoother's trajectories keep the shift structure. The particle filter runs as for any nonlinear
transition, but its backward simulation can only pick a particle whose blocks continue the drawn
future, i.e. its ancestor: the smoothed trajectories are the filter's ancestral lines (path
degeneracy; ``docs/lab-notes.md``). SVI's trajectory guides do not follow lag blocks this tight
and :class:`~bayesbridge.bridge.BridgeConfig` refuses ``method="svi"`` with ``dynamics="lstm"``.

Calendar: as for :class:`~bayesbridge.latent.linear.LinearInverseModel` (``start_month`` = month
of step 0, set by ``fit``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from bayesbridge.errors import NotFittedError, ParameterError, check_choice, check_int
from bayesbridge.latent.autoencoder import resolve_device
from bayesbridge.latent.linear import _safe_cholesky, fit_ar1
from bayesbridge.latent.neural import _month_features
from bayesbridge.latent.simulate import FreeRunMixin, latent_series, month_of_step
from bayesbridge.latent.stacking import split_years
from bayesbridge.latent.windowed import lag_windows

__all__ = ["LSTMDynamics", "Skip", "NoiseKind"]

Skip = Literal["var", "none"]
NoiseKind = Literal["validation", "learned", "residual"]


class _LSTMNet(nn.Module):
    """``(B, w d)`` augmented states (newest block first) -> ``(B, d)`` next-state means."""

    def __init__(self, d: int, window: int, hidden: int, layers: int, n_features: int, skip: bool):
        super().__init__()
        self.d, self.window = d, window
        self.lstm = nn.LSTM(d, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden + n_features, d)
        self.skip = nn.Linear(window * d, d, bias=False) if skip else None
        self.raw_tril = nn.Parameter(torch.zeros(d, d))
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        seq = z.reshape(z.shape[0], self.window, self.d).flip(1)  # oldest first
        h, _ = self.lstm((seq - self.loc) / self.scale)
        inputs = torch.cat([h[:, -1], features.expand(z.shape[0], features.shape[-1])], dim=-1)
        out = self.head(inputs) * self.scale
        return out + self.skip(z) if self.skip is not None else out + self.loc

    def scale_tril(self) -> torch.Tensor:
        diag = nn.functional.softplus(torch.diagonal(self.raw_tril)) + 1e-6
        return torch.tril(self.raw_tril, -1) + torch.diag(diag)


def _seeded_init(net: _LSTMNet, generator: torch.Generator, zero_head: bool) -> None:
    """PyTorch's default uniform laws, drawn from ``generator``: ``U(-1/sqrt(h), 1/sqrt(h))`` for
    the LSTM, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the head (zero with ``zero_head``)."""
    with torch.no_grad():
        bound = 1.0 / math.sqrt(net.lstm.hidden_size)
        for p in net.lstm.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        bound = 1.0 / math.sqrt(net.head.in_features)
        for p in (net.head.weight, net.head.bias):
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
            if zero_head:
                p.zero_()


def _residual_noise(net: _LSTMNet, x, windows, feats, starts) -> None:
    """Set ``net``'s noise factor to the Cholesky factor of its one-step residual covariance over
    the windows ending at ``starts`` (targets ``x[starts + 1]``)."""
    with torch.no_grad():
        resid = (x[starts + 1] - net(windows[starts], feats[starts + 1])).double().cpu()
        cov = resid.T @ resid / max(resid.shape[0] - 1, 1)
        chol = _safe_cholesky(0.5 * (cov + cov.T)).float().to(x.device)
        net.raw_tril.copy_(torch.tril(chol, -1) + torch.diag(torch.log(torch.expm1(torch.diagonal(chol)))))


@dataclass
class LSTMDynamics(FreeRunMixin):
    """LSTM transition over a window of ``w`` latent states, on the augmented state ``(z_t, ..., z_{t-w+1})``.

    Fitted on a latent series ``z`` ``(time, d)``; as a
    :class:`~bayesbridge.latent.base.Transition` it acts on augmented states ``(*batch, w d)``
    (module docstring).

    Parameters
    ----------
    window : int
        Number ``w`` of past states the LSTM reads (default 6 months).
    hidden : int
        Hidden size of the LSTM.
    layers : int
        Number of stacked LSTM layers.
    seasonal : bool
        Feed the calendar-month features of the target time to the output layer.
    skip : {"var", "none"}
        Linear autoregression on the window beside the LSTM, started at the least-squares VAR(``w``)
        fit (``"var"``), or none.
    noise : {"validation", "learned", "residual"}
        Noise factor ``L``: the Cholesky factor of the trained mean's one-step residual
        covariance on the held-out years (default), the one learned with the likelihood, or
        that of the residual covariance on the training years.
    ridge : float
        Tikhonov parameter of the VAR(``w``) fit that starts the skip and ``L``.
    lag_jitter : float
        Noise scale ``eta`` of the lag blocks relative to the RMS standard deviation of the
        training series (> 0; the model-error covariance must be positive definite).
    rollout : int
        Longest rollout horizon of the multi-step loss (1 disables it).
    rollout_weight : float
        Weight of the rollout loss.
    epochs, batch_size, learning_rate, weight_decay, patience, validation
        Optimisation and early-stopping settings (AdamW, held-out final calendar years).
    seed : int
        Seed of all training randomness (initial weights, batch order).
    device : str
        ``"cpu"`` or ``"cuda[:n]"``.
    progress : bool
        Show a tqdm progress bar.
    start_month : int, optional
        Calendar month of step 0 (set by :meth:`fit`).

    Attributes
    ----------
    net : torch.nn.Module or None
        The trained network (after :meth:`fit`).
    train_loss, validation_loss : list of float
        Loss per epoch on the training windows and on the held-out years (entry 0: before
        training).
    """

    window: int = 6
    hidden: int = 32
    layers: int = 1
    seasonal: bool = False
    skip: Skip = "var"
    noise: NoiseKind = "validation"
    ridge: float = 1e-3
    lag_jitter: float = 1e-6
    rollout: int = 6
    rollout_weight: float = 0.5
    epochs: int = 200
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
        for name in ("window", "hidden", "layers", "epochs", "batch_size", "patience", "rollout"):
            setattr(self, name, check_int(getattr(self, name), name, minimum=1))
        check_choice(self.skip, "skip", get_args(Skip))
        check_choice(self.noise, "noise", get_args(NoiseKind))
        if not self.learning_rate > 0 or self.weight_decay < 0 or self.rollout_weight < 0 or self.ridge < 0:
            raise ParameterError(
                "learning_rate must be > 0 and weight_decay, rollout_weight and ridge >= 0; got "
                f"{self.learning_rate}, {self.weight_decay}, {self.rollout_weight}, {self.ridge}."
            )
        if not (math.isfinite(self.lag_jitter) and self.lag_jitter > 0):
            raise ParameterError(
                f"lag_jitter: expected a small positive number (default 1e-6), got {self.lag_jitter!r}; "
                f"the lag blocks need some noise for a positive-definite model-error covariance."
            )
        self._device = resolve_device(self.device)
        self.net: _LSTMNet | None = None
        self.train_loss: list[float] = []
        self.validation_loss: list[float] = []
        self._tril: torch.Tensor | None = None

    # ------------------------------------------------------------------ sizes
    def _require(self) -> _LSTMNet:
        if self.net is None:
            raise NotFittedError("LSTMDynamics: call .fit(z) before using the dynamics.")
        return self.net

    @property
    def base_dim(self) -> int:
        """Size ``d`` of one latent state (one block of the augmented state)."""
        return int(self._require().d)

    @property
    def latent_dim(self) -> int:
        """Size ``w d`` of the augmented state the transition acts on."""
        return self.window * self.base_dim

    # ------------------------------------------------------------------ training
    def fit(self, z: xr.DataArray) -> LSTMDynamics:
        """Fit on a latent series ``z`` ``(time, d)`` with a datetime time axis (e.g. ``codec.encode(fields)``).

        Starts the skip and ``L`` at the ridge VAR(``w``) fit of the training years, then
        minimises the loss of the module docstring with AdamW over the windows whose ``w`` inputs
        and ``rollout`` targets lie in one block of consecutive training steps (no padded
        windows), keeping the weights of the epoch with the lowest loss on the held-out final
        years, the starting point included (early stopping after ``patience`` epochs without
        improvement). When no epoch beats the start, the fitted mean is the linear VAR(``w``).

        Parameters
        ----------
        z : xarray.DataArray
            Latent series on ``(time, latent)``: the base codec's encoding, not the windows.

        Returns
        -------
        LSTMDynamics
            ``self``, fitted (``train_loss`` and ``validation_loss`` hold the per-epoch curves,
            entry 0 before training).
        """
        w, k = self.window, self.rollout
        d = z.sizes.get("latent", 1) if isinstance(z, xr.DataArray) else 1
        series = latent_series(z, min_steps=w * d + w + 2)
        split = split_years(z["time"], self.validation, min_steps=w + k + 1)
        if self.start_month is None:
            self.start_month = series.start_month
        months = series.months if series.months is not None else np.ones(len(series.values), int)
        x = series.values
        windows = lag_windows(z, w).values  # (n, w d), row t = (z_t, ..., z_{t-w+1})
        starts_train = self._window_starts(split.train, w, k)
        starts_val = self._window_starts(split.validation, w, k)
        if starts_train.numel() < w * d + 2 or starts_val.numel() < 1:
            raise ParameterError(
                f"z: {starts_train.numel()} training and {starts_val.numel()} validation windows of "
                f"{w} inputs and {k} targets; fitting a window of {w} x {d} latents needs at least "
                f"{w * d + 2} and 1. Use more years, a smaller window, latent or rollout."
            )
        train_x = x[split.train]
        scale_rms = float(np.sqrt(train_x.var(0).mean()))
        self._jitter = self.lag_jitter * max(scale_rms, 1e-12)
        t0 = starts_train.numpy()
        B, _ = fit_ar1(windows[t0], x[t0 + 1], self.ridge)
        gen = torch.Generator().manual_seed(int(self.seed))
        net = _LSTMNet(d, w, self.hidden, self.layers, 2 if self.seasonal else 0, self.skip == "var")
        _seeded_init(net, gen, zero_head=self.skip == "var")
        with torch.no_grad():
            net.loc.copy_(torch.as_tensor(train_x.mean(0)))
            net.scale.copy_(torch.as_tensor(train_x.std(0)).clamp_min(1e-6))
            if net.skip is not None:
                net.skip.weight.copy_(torch.as_tensor(B))
        net = net.to(self._device)
        xt = torch.as_tensor(x, dtype=torch.float32, device=self._device)
        wt = torch.as_tensor(windows, dtype=torch.float32, device=self._device)
        feats = _month_features(months, self.seasonal).to(self._device)
        _residual_noise(net, xt, wt, feats, starts_train.to(self._device))  # L at the start's residuals
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        with torch.no_grad():  # epoch 0: the starting point (the VAR fit) competes too
            self.train_loss = [float(self._loss(net, xt, wt, feats, starts_train.to(self._device)))]
            self.validation_loss = [float(self._loss(net, xt, wt, feats, starts_val.to(self._device)))]
        best, best_state, waited = self.validation_loss[0], copy.deepcopy(net.state_dict()), 0
        bar = tqdm(range(self.epochs), desc="LSTMDynamics training", disable=not self.progress)
        for _ in bar:
            net.train()
            order = starts_train[torch.randperm(starts_train.numel(), generator=gen)]
            total = 0.0
            for i in range(0, order.numel(), self.batch_size):
                batch = order[i : i + self.batch_size].to(self._device)
                loss = self._loss(net, xt, wt, feats, batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * batch.numel()
            net.eval()
            with torch.no_grad():
                val = float(self._loss(net, xt, wt, feats, starts_val.to(self._device)))
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
        if self.noise != "learned":
            starts = starts_val if self.noise == "validation" else starts_train
            _residual_noise(self.net, xt, wt, feats, starts.to(self._device))
        self._tril = None
        return self

    @staticmethod
    def _window_starts(index: np.ndarray, w: int, k: int) -> torch.Tensor:
        """Positions ``t`` of ``index`` with ``t - w + 1 .. t + k`` consecutive steps inside ``index``."""
        index = np.asarray(index)
        span = w - 1 + k
        ok = [index[i + w - 1] for i in range(index.size - span) if index[i + span] - index[i] == span]
        return torch.as_tensor(np.asarray(ok, dtype=np.int64), dtype=torch.long)

    def _loss(self, net, x, windows, feats, starts) -> torch.Tensor:
        chol = net.scale_tril()
        state = windows[starts]
        nll = torch.zeros((), device=x.device)
        roll = torch.zeros((), device=x.device)
        d, k = x.shape[-1], self.rollout
        for j in range(1, k + 1):
            target = x[starts + j]
            pred = net(state, feats[starts + j])
            if j == 1:
                dist = torch.distributions.MultivariateNormal(pred, scale_tril=chol)
                nll = -dist.log_prob(target).mean() / d
            else:
                roll = roll + ((pred - target) ** 2).mean() / (k - 1)
            state = torch.cat([pred, state[:, : -d]], dim=-1) if self.window > 1 else pred
        return nll + self.rollout_weight * roll

    # ------------------------------------------------------------------ Transition protocol
    def mean(self, z: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``F(Z) = (LSTM mean of the window, z_{t-1}, ..., z_{t-w+1})``: ``(*batch, w d) -> (*batch, w d)``.

        The new block is computed in float32 on the dynamics' device and returned in ``z``'s
        dtype and device; the lag blocks are ``z``'s own values, shifted by one block (exact).
        Differentiable in ``z``. ``step`` is the 0-based target index (needed when ``seasonal``).
        """
        net = self._require()
        if self.seasonal and step is None:
            raise ParameterError(
                "step: this LSTMDynamics is seasonal, so mean() needs the target step to know the "
                "calendar month; pass step=t."
            )
        wd, d = self.latent_dim, self.base_dim
        if z.shape[-1] != wd:
            raise ParameterError(
                f"z: expected augmented states (*batch, {wd}) (window {self.window} x latent {d}), got "
                f"shape {tuple(z.shape)}; encode with WindowedCodec or lag_windows."
            )
        month = month_of_step(self.start_month or 1, step) if step is not None else 1
        feats = _month_features(np.array(month), self.seasonal).to(self._device)
        flat = z.reshape(-1, wd).to(device=self._device, dtype=torch.float32)
        new = net(flat, feats).reshape(*z.shape[:-1], d).to(dtype=z.dtype, device=z.device)
        return torch.cat([new, z[..., : wd - d]], dim=-1)

    def noise_scale_tril(self, step: int | None = None) -> torch.Tensor:
        """``diag(L, eta I, ..., eta I)`` ``(w d, w d)`` float64 (constant in time, ``step`` ignored)."""
        if self._tril is None:
            net = self._require()
            L = net.scale_tril().detach().double().cpu()
            d = L.shape[0]
            eye = torch.full((self.latent_dim - d,), float(self._jitter), dtype=torch.float64).diag()
            self._tril = torch.block_diag(L, eye)
        return self._tril

    def simulate(
        self, n_steps: int, members: int = 1, seed: int = 0, *, z0=None, burn_in: int = 120,
        start_month: int | None = None, augmented: bool = True,
    ) -> xr.DataArray:
        """Free run ``(member, time, latent)`` of the augmented chain; see :func:`~bayesbridge.latent.simulate.simulate_transition`.

        ``n_steps`` recorded steps of ``members`` runs seeded by ``seed``, started from ``z0``
        (``(w d,)`` or ``(members, w d)``, default zeros) ``burn_in`` steps earlier;
        ``start_month`` (1..12) is the calendar month of recorded step 0 (default: the model's).
        ``augmented=False`` keeps the current states ``z_t`` ``(latent = d)`` only.
        """
        run = super().simulate(n_steps, members, seed, z0=z0, burn_in=burn_in, start_month=start_month)
        return run if augmented else run.isel(latent=slice(0, self.base_dim))
