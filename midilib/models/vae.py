"""The recurrent VAE: a BiLSTM encoder and an LSTM decoder with memory overwrite.

A window of condensed note events (B, W, 4) is encoded to a Gaussian posterior
over a latent z; the decoder starts from a state computed from z and emits W
notes one by one (pitch logits, then velocity/delta/duration in scaled units),
with the memory-overwrite module re-injecting z after every step. The values
come from one of two heads (`VAEConfig.value_head`): "mse", the original's
softplus regression, which predicts the conditional mean; or "classes", a
categorical per value over the grid of midilib.models.value_grid, trained with
cross-entropy, whose mode reconstructs and whose draws sample.

Fixes over the original study's code (kept on purpose):
- when not teacher-forced, the decoder is fed the softmax distribution of the
  previous pitch (the original fed raw logits);
- teacher forcing is drawn per sequence and step, not one coin per batch;
- teacher forcing happens in training only, never in eval or reconstruction.

The functions below the class (encode, decode, reconstruct, sample,
latent_walk, slerp, interpolate) return numpy windows in the units of
windows.npz: pitch as an integer value, velocity in [0, 1], delta in
[0, s_max], duration in [0, d_max].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from midilib import distributed
from midilib.events import DELTA, DURATION, PITCH, VELOCITY
from midilib.models import eval_mode
from midilib.models.memory import MemoryOverwrite
from midilib.models.value_grid import ValueGrid
from midilib.profiles import VAEConfig
from midilib.schedules import kl_beta, teacher_forcing

N_PITCH = 128
N_VALUES = 3  # velocity, delta, duration
VALUE_HEADS = ("mse", "classes")


class VAE(nn.Module):
    def __init__(
        self, cfg: VAEConfig, window: int = 8, s_max: float = 2.0, d_max: float = 2.0
    ) -> None:
        super().__init__()
        _check_config(cfg, window, s_max, d_max)
        self.cfg, self.window, self.s_max, self.d_max = cfg, window, s_max, d_max
        # schedule parameters (see midilib.schedules); attributes so a notebook can change them
        self.tf_start, self.tf_step = 0.6, 0.05
        self.beta_step, self.beta_max = 0.01, cfg.beta_max
        self.grid = ValueGrid(cfg.value_bins, s_max, d_max) if cfg.value_head == "classes" else None
        # encoder
        self.pitch_embed = nn.Embedding(N_PITCH, cfg.pitch_embed)
        self.feature_embed = nn.Linear(N_VALUES, cfg.feature_embed)
        self.encoder = nn.LSTM(
            cfg.pitch_embed + cfg.feature_embed,
            cfg.enc_hidden,
            num_layers=cfg.enc_layers,
            dropout=cfg.dropout if cfg.enc_layers > 1 else 0.0,
            bidirectional=True,
            batch_first=True,
        )
        self.mu = nn.Linear(2 * cfg.enc_hidden, cfg.latent)
        self.logvar = nn.Linear(2 * cfg.enc_hidden, cfg.latent)
        # decoder
        self.h_z = nn.Linear(cfg.latent, cfg.dec_hidden)
        self.c_z = nn.Linear(cfg.latent, cfg.dec_hidden)
        self.start = nn.Parameter(torch.zeros(N_PITCH + N_VALUES))
        self.decoder = nn.LSTM(
            N_PITCH + N_VALUES, cfg.dec_hidden, num_layers=cfg.dec_layers, batch_first=True
        )
        self.memory = MemoryOverwrite(cfg.dec_hidden)
        self.fc = nn.Linear(cfg.dec_hidden, cfg.dec_fc)
        self.pitch_head = nn.Linear(cfg.dec_fc, N_PITCH)
        self.value_head = nn.Linear(cfg.dec_fc, sum(self.grid.sizes) if self.grid else N_VALUES)

    @property
    def device(self) -> torch.device:
        return self.start.device

    def scale(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Raw events (B, W, 4) -> (pitch indices (B, W) long, scaled values (B, W, 3))."""
        pitch = batch[..., PITCH].round().long().clamp(0, N_PITCH - 1)
        values = torch.stack(
            (
                batch[..., VELOCITY],
                batch[..., DELTA] / self.s_max,
                batch[..., DURATION] / self.d_max,
            ),
            dim=-1,
        )
        return pitch, values

    def encode(self, pitch: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """(pitch (B, W), scaled values (B, W, 3)) -> posterior (mu, logvar), each (B, latent)."""
        x = torch.cat((self.pitch_embed(pitch), F.relu(self.feature_embed(values))), dim=-1)
        _, (h_n, _) = self.encoder(x)
        top = torch.cat((h_n[-2], h_n[-1]), dim=-1)  # top layer: last forward, last backward
        return self.mu(top), self.logvar(top)

    def decode_steps(
        self,
        z: Tensor,
        length: int | None = None,
        target: tuple[Tensor, Tensor] | None = None,
        forcing: float = 0.0,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Run the decoder from z for `length` notes.

        Returns (pitch logits (B, L, 128), scaled values (B, L, 3), pitches (B, L) long,
        value logits (B, L, 128 + 2 * bins) for the "classes" head, else None).
        `target` = (pitch, values) enables teacher forcing with probability `forcing`,
        drawn per sequence and step from torch's global RNG, in training mode only.
        With temperature 0 the emitted pitch is the argmax and the next input is the
        softmax distribution; with temperature > 0 a pitch is sampled from
        softmax(logits / T) (randomness from `generator`) and fed back one-hot.
        The "classes" head emits each value's mode at temperature 0 and a draw from
        softmax(logits / T) otherwise; the emitted values are fed back.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not 0.0 <= forcing <= 1.0:
            raise ValueError(f"forcing must be a probability in [0, 1], got {forcing!r}")
        length = self.window if length is None else length
        batch = z.shape[0]
        h0, c0 = torch.tanh(self.h_z(z)), torch.tanh(self.c_z(z))
        layers = self.cfg.dec_layers
        state = (
            h0.unsqueeze(0).repeat(layers, 1, 1).contiguous(),
            c0.unsqueeze(0).repeat(layers, 1, 1).contiguous(),
        )
        # the overwrite gates depend on the latent only: compute them once per sequence
        (h_scale, h_shift), (c_scale, c_shift) = self.memory.gates(h0), self.memory.gates(c0)
        force = self.training and target is not None and forcing > 0.0
        x = self.start.expand(batch, -1)
        logits_out, values_out, pitch_out, value_logits_out = [], [], [], []
        for t in range(length):
            out, (h, c) = self.decoder(x.unsqueeze(1), state)
            state = (h * h_scale + h_shift, c * c_scale + c_shift)
            hidden = F.relu(self.fc(out[:, 0]))
            logits, raw = self.pitch_head(hidden), self.value_head(hidden)
            if self.grid is None:
                values = F.softplus(raw)
            else:
                values = self.grid.values(torch.stack(
                    [_sample_pitch(part / temperature, generator) if temperature > 0 else part.argmax(-1)
                     for part in self.grid.split(raw)], dim=-1))
                value_logits_out.append(raw)
            if temperature > 0:
                pitch = _sample_pitch(logits / temperature, generator)
                pitch_in = F.one_hot(pitch, N_PITCH).to(logits.dtype)
            else:
                pitch = logits.argmax(-1)
                pitch_in = torch.softmax(logits, dim=-1)
            x = torch.cat((pitch_in, values), dim=-1)
            if force and t + 1 < length:
                true_x = torch.cat(
                    (F.one_hot(target[0][:, t], N_PITCH).to(x.dtype), target[1][:, t]), dim=-1
                )
                mask = distributed.rand((batch, 1), device=x.device) < forcing
                x = torch.where(mask, true_x, x)
            logits_out.append(logits)
            values_out.append(values)
            pitch_out.append(pitch)
        value_logits = torch.stack(value_logits_out, 1) if value_logits_out else None
        return torch.stack(logits_out, 1), torch.stack(values_out, 1), torch.stack(pitch_out, 1), value_logits

    def forward(self, batch: Tensor, forcing: float = 0.0) -> dict[str, Tensor]:
        """Encode raw events (B, W, 4), draw z, decode with teacher forcing `forcing`.

        z is a reparameterised sample in training and the posterior mean in eval.
        """
        pitch, values = self.scale(batch)
        mu, logvar = self.encode(pitch, values)
        z = mu + distributed.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        logits, pred_values, pred_pitch, value_logits = self.decode_steps(
            z, batch.shape[1], target=(pitch, values), forcing=forcing
        )
        return {
            "logits": logits,
            "values": pred_values,
            "value_logits": value_logits,
            "pitch": pred_pitch,
            "mu": mu,
            "logvar": logvar,
            "target_pitch": pitch,
            "target_values": values,
        }

    def training_loss(self, batch: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor | float]]:
        """CE(pitch) + value_weight * values + beta * max(KL - free_bits, 0), each summed per
        window, batch-averaged. The values' term is the MSE of the scaled values ("mse" head)
        or the cross-entropy of their classes ("classes" head). The log's "mse" is the
        unweighted MSE of the emitted values under either head, its "kl" the KL before free bits.

        The logs are detached 0-d tensors (no host sync per step; the trainer reads them once an epoch).
        """
        forcing = teacher_forcing(epoch, self.tf_start, self.tf_step)
        beta = kl_beta(epoch, self.beta_step, self.beta_max)
        out = self(batch, forcing=forcing)
        n = batch.shape[0]
        ce = F.cross_entropy(
            out["logits"].reshape(-1, N_PITCH), out["target_pitch"].reshape(-1), reduction="sum"
        ) / n
        mse = F.mse_loss(out["values"], out["target_values"], reduction="sum") / n
        if self.grid is None:
            value_term = mse
        else:
            target = self.grid.classes(out["target_values"])
            value_term = sum(
                F.cross_entropy(part.reshape(-1, part.shape[-1]), target[..., i].reshape(-1), reduction="sum")
                for i, part in enumerate(self.grid.split(out["value_logits"]))
            ) / n
        mu, logvar = out["mu"], out["logvar"]
        kl_each = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)
        kl = kl_each.mean()
        kl_term = (kl_each - self.cfg.free_bits).clamp_min(0.0).mean() if self.cfg.free_bits else kl
        loss = ce + self.cfg.value_weight * value_term + beta * kl_term
        acc = (out["pitch"] == out["target_pitch"]).float().mean()
        logs = {} if self.grid is None else {"value_ce": value_term.detach()}
        return loss, {
            **logs,
            "loss": loss.detach(),
            "ce": ce.detach(),
            "mse": mse.detach(),
            "kl": kl.detach(),
            "beta": beta,
            "teacher_forcing": forcing,
            "pitch_acc": acc.detach(),
        }


def _check_config(cfg: VAEConfig, window: int, s_max: float, d_max: float) -> None:
    sizes = ("pitch_embed", "feature_embed", "enc_hidden", "enc_layers", "dec_hidden",
             "dec_layers", "dec_fc", "latent")
    for name in sizes:
        if getattr(cfg, name) < 1:
            raise ValueError(f"VAEConfig.{name} must be >= 1, got {getattr(cfg, name)!r}")
    if not 0.0 < cfg.value_weight < float("inf"):
        raise ValueError(f"VAEConfig.value_weight must be > 0 and finite, got {cfg.value_weight!r}")
    if cfg.value_head not in VALUE_HEADS:
        raise ValueError(f"VAEConfig.value_head must be one of {', '.join(VALUE_HEADS)}, got {cfg.value_head!r}")
    if cfg.value_head == "classes" and cfg.value_bins < 2:
        raise ValueError(f"VAEConfig.value_bins must be >= 2, got {cfg.value_bins!r}")
    for name in ("free_bits", "beta_max"):
        if not 0.0 <= getattr(cfg, name) < float("inf"):
            raise ValueError(f"VAEConfig.{name} must be >= 0 and finite, got {getattr(cfg, name)!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"VAEConfig.dropout must be in [0, 1), got {cfg.dropout!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    if s_max <= 0 or d_max <= 0:
        raise ValueError(f"s_max and d_max must be > 0, got {s_max!r}, {d_max!r}")


def _sample_pitch(logits: Tensor, generator: torch.Generator | None) -> Tensor:  # any categorical
    """Categorical draw by inverse CDF; the uniforms come from `generator` on its own device,
    so a CPU generator gives the same draws whatever device the model is on."""
    probs = torch.softmax(logits.float(), dim=-1)
    gen_device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape[0], 1, generator=generator, device=gen_device).to(logits.device)
    cdf = probs.cumsum(-1)
    return (cdf < u * cdf[:, -1:]).sum(-1).clamp(max=logits.shape[-1] - 1)


def build_vae(cfg: VAEConfig, window: int = 8, s_max: float = 2.0, d_max: float = 2.0) -> VAE:
    """The VAE for a profile's VAEConfig (the original's slip: VAEConfig(dec_layers=32, dec_fc=4))."""
    return VAE(cfg, window=window, s_max=s_max, d_max=d_max)


# --- generation and exploration ----------------------------------------------------------


def _tensor(x: np.ndarray | Tensor) -> Tensor:
    """A float32 CPU tensor from an array or a tensor on any device."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _as_windows(model: VAE, windows: np.ndarray | Tensor) -> Tensor:
    x = _tensor(windows)
    if x.ndim != 3 or x.shape[-1] != 4 or x.shape[1] < 1:
        raise ValueError(f"windows must have shape (n, window, 4), got {tuple(x.shape)}")
    pitch = x[..., PITCH]
    if not torch.isfinite(x).all():
        raise ValueError("windows contain non-finite values")
    if pitch.min() < 0 or pitch.max() > N_PITCH - 1:
        raise ValueError(f"pitches must lie in 0..127, got {pitch.min():.0f}..{pitch.max():.0f}")
    return x


def _to_raw(model: VAE, pitch: Tensor, values: Tensor) -> np.ndarray:
    """Decoder outputs -> raw condensed-event windows (n, L, 4) float32, clipped to range."""
    raw = torch.empty(*pitch.shape, 4, dtype=torch.float32)
    raw[..., PITCH] = pitch.float().cpu()
    v = values.float().cpu()
    raw[..., VELOCITY] = v[..., 0].clamp(0.0, 1.0)
    raw[..., DELTA] = (v[..., 1] * model.s_max).clamp(0.0, model.s_max)
    raw[..., DURATION] = (v[..., 2] * model.d_max).clamp(0.0, model.d_max)
    return raw.numpy()


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


@torch.no_grad()
def encode(
    model: VAE, windows: np.ndarray | Tensor, batch_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Posterior (mu, logvar) of raw windows (n, W, 4), as CPU tensors (n, latent)."""
    x = _as_windows(model, windows)
    mus, logvars = [], []
    with eval_mode(model):
        for sl in _batches(len(x), batch_size):
            mu, logvar = model.encode(*model.scale(x[sl].to(model.device)))
            mus.append(mu.cpu())
            logvars.append(logvar.cpu())
    if not mus:
        empty = torch.empty(0, model.cfg.latent)
        return empty, empty.clone()
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def decode(
    model: VAE,
    z: Tensor | np.ndarray,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    length: int | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Latents (n, latent) -> raw windows (n, length, 4); temperature 0 = argmax pitch."""
    z = _tensor(z)
    if z.ndim != 2 or z.shape[1] != model.cfg.latent:
        raise ValueError(f"z must have shape (n, {model.cfg.latent}), got {tuple(z.shape)}")
    length = model.window if length is None else length
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length!r}")
    parts = []
    with eval_mode(model):
        for sl in _batches(len(z), batch_size):
            _, values, pitch, _ = model.decode_steps(
                z[sl].to(model.device), length, temperature=temperature, generator=generator
            )
            parts.append(_to_raw(model, pitch, values))
    if not parts:
        return np.empty((0, length, 4), dtype=np.float32)
    return np.concatenate(parts)


def decode_generator(seed: int) -> torch.Generator:
    """The generator for a decoder's draws given `seed`: a stream of its own, seeded by
    SeedSequence((seed, 0x64656364)), so it shares no draws with a generator seeded by `seed`
    itself (a latent sampler's x_T, walk 0's steps)."""
    state = np.random.SeedSequence((int(seed), 0x64656364)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def reconstruct(model: VAE, windows: np.ndarray | Tensor, batch_size: int = 4096) -> np.ndarray:
    """Decode each window's posterior mean (argmax pitch, no teacher forcing)."""
    x = _as_windows(model, windows)
    mu, _ = encode(model, x, batch_size)
    return decode(model, mu, length=x.shape[1], batch_size=batch_size)


@torch.no_grad()
def sample(
    model: VAE, n: int, temperature: float = 0.0, seed: int = 0, batch_size: int = 4096
) -> np.ndarray:
    """n new windows from the prior z ~ N(0, I); the same seed gives the same windows."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.cfg.latent, generator=gen)
    return decode(model, z, temperature, gen, batch_size=batch_size)


@torch.no_grad()
def latent_walk(
    model: VAE,
    n_windows: int,
    scale: float = 0.5,
    seed: int = 0,
    start: Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """A random walk z_{k+1} = z_k + scale * N(0, I) decoded window by window.

    Neighbouring windows share most of their latent, so the walk gives a piece
    that drifts instead of jumping: `windows.reshape(-1, 4)` then write_midi.
    """
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows!r}")
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale!r}")
    latent = model.cfg.latent
    if start is not None and _tensor(start).numel() != latent:
        raise ValueError(f"start must have {latent} values, got {_tensor(start).numel()}")
    return decode(model, walk(latent, n_windows, scale, torch.Generator().manual_seed(seed), start))


def walk(latent: int, n_windows: int, scale: float, generator: torch.Generator,
         start: Tensor | np.ndarray | None = None) -> Tensor:
    """The latents (n_windows, latent) of a random walk: z_1 = `start` or N(0, I) drawn from
    `generator`, z_{k+1} = z_k + scale * N(0, I)."""
    z0 = torch.randn(latent, generator=generator) if start is None else _tensor(start).reshape(-1)
    steps = torch.randn(n_windows - 1, latent, generator=generator) * scale
    return torch.cat((z0[None], z0[None] + steps.cumsum(0)))


def slerp(z1: Tensor, z2: Tensor, alpha: float | Tensor) -> Tensor:
    """Spherical interpolation: follows the great circle, so intermediate latents keep a
    norm typical of the prior instead of shrinking towards the origin as a straight line does.

    z1, z2: (latent,); alpha: a float or a 1-D tensor of k values -> (latent,) or (k, latent).
    """
    z1, z2 = _tensor(z1), _tensor(z2)
    if z1.shape != z2.shape or z1.ndim != 1:
        raise ValueError(f"z1 and z2 must be 1-D of equal size, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    a = torch.as_tensor(alpha, dtype=torch.float32)
    scalar = a.ndim == 0
    a = a.reshape(-1, 1)
    cos = torch.dot(z1, z2) / (z1.norm() * z2.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4:  # (nearly) parallel: the straight line is the same path
        out = (1 - a) * z1 + a * z2
    else:
        out = (torch.sin((1 - a) * omega) * z1 + torch.sin(a * omega) * z2) / torch.sin(omega)
    return out[0] if scalar else out


@torch.no_grad()
def interpolate(
    model: VAE, window_a: np.ndarray | Tensor, window_b: np.ndarray | Tensor, n_steps: int
) -> np.ndarray:
    """n_steps windows along the slerp between the posterior means of two real windows."""
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 (both endpoints), got {n_steps!r}")
    a, b = _tensor(window_a), _tensor(window_b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"windows must both have shape (window, 4), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    mu, _ = encode(model, torch.stack((a, b)))
    z = slerp(mu[0], mu[1], torch.linspace(0.0, 1.0, n_steps))
    return decode(model, z, length=a.shape[0])
