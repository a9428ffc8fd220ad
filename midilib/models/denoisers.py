"""Two epsilon-prediction denoisers for 8-note windows: forward(x_t (B, L, C), t (B,)) -> eps.

C is the codec's channel count (`channels`: 4 for the linear pitch code, 6 for
"fifths"; see midilib.diffusion.representation); input and output have C channels.

* `LSTMDenoiser` is the original study's design: a bidirectional LSTM encoder
  whose initial state is a learned embedding of t, a bottleneck, and an
  autoregressive LSTM decoder whose state is re-injected with the bottleneck
  by the memory-overwrite module after every note. It predicts the noise of
  note i from its own prediction for note i-1, which makes it a curious fit
  for a task where every output depends on every input; we keep it as the
  baseline.
* `TransformerDenoiser` is the modern choice (DiT, Peebles & Xie 2023): the
  notes are tokens, attention sees all of them at once, and t enters every
  block by adaptive layer norm (scale/shift/gate) with zero-initialised gates,
  so each block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from midilib.models.memory import MemoryOverwrite
from midilib.profiles import DiffusionConfig

N_FEATURES = 4  # the default channel count: the linear pitch code


class LSTMDenoiser(nn.Module):
    """The original's BiLSTM encoder -> bottleneck -> MOM LSTM decoder (2,015,560 params at full)."""

    def __init__(
        self,
        timesteps: int,
        time_embed: int = 128,
        hidden: int = 128,
        layers: int = 4,
        bottleneck: int = 64,
        dropout: float = 0.1,
        channels: int = N_FEATURES,
    ) -> None:
        super().__init__()
        self.layers = layers
        self.channels = channels
        self.time_embed = nn.Embedding(timesteps, time_embed)
        # The time embedding is every encoder layer's and direction's h0 and c0.
        self.time_proj = nn.Linear(time_embed, hidden) if time_embed != hidden else nn.Identity()
        between = dropout if layers > 1 else 0.0
        self.encoder = nn.LSTM(
            channels, hidden, layers, batch_first=True, bidirectional=True, dropout=between
        )
        self.to_bottleneck = nn.Linear(2 * hidden, bottleneck)
        self.to_h = nn.Linear(bottleneck, hidden)
        self.to_c = nn.Linear(bottleneck, hidden)
        self.decoder = nn.LSTM(channels, hidden, layers, batch_first=True, dropout=between)
        self.start = nn.Parameter(torch.zeros(1, channels))
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.memory = MemoryOverwrite(hidden)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = x_t.shape
        e = self.time_proj(self.time_embed(t))  # (B, H)
        h0 = e.unsqueeze(0).expand(2 * self.layers, -1, -1).contiguous()
        _, (h_n, _) = self.encoder(x_t, (h0, h0))
        z = self.to_bottleneck(torch.cat([h_n[-2], h_n[-1]], dim=-1))  # top fwd + bwd
        h_z, c_z = torch.tanh(self.to_h(z)), torch.tanh(self.to_c(z))
        h = h_z.unsqueeze(0).expand(self.layers, -1, -1).contiguous()
        c = c_z.unsqueeze(0).expand(self.layers, -1, -1).contiguous()
        (h_scale, h_shift), (c_scale, c_shift) = self.memory.gates(h_z), self.memory.gates(c_z)
        step_in = self.start.expand(B, -1)
        outputs = []
        for _ in range(L):
            y, (h, c) = self.decoder(step_in.unsqueeze(1), (h, c))
            step_in = self.out(y[:, 0])
            outputs.append(step_in)
            h, c = h * h_scale + h_shift, c * c_scale + c_shift
        return torch.stack(outputs, dim=1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) -> (B, dim), as in the Transformer/DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as two batched matmuls, the softmax in fp32.

    For sequences of 8 notes this beats fused scaled_dot_product_attention, whose kernels are
    built for long sequences (`make bench`, generate section, the attention rows); on an H200
    flash attention spent 3.2 ms of an 8.2 ms DDPM step on 50,000 such tiny problems.
    """
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    return scores.float().softmax(-1).to(v.dtype) @ v


class DiTBlock(nn.Module):
    """Pre-norm self-attention + MLP, each modulated and gated by the time embedding."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(4 * width, width),
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p) if p > 0 else short_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, L, W))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attention(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class TransformerDenoiser(nn.Module):
    """DiT-style denoiser over the notes of a window (adaLN-Zero conditioning on t)."""

    def __init__(
        self,
        width: int = 192,
        layers: int = 6,
        heads: int = 4,
        dropout: float = 0.0,
        window: int = 8,
        channels: int = N_FEATURES,
    ) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"tf_width {width} must split into {heads} heads of even size")
        self.width = width
        self.channels = channels
        self.embed = nn.Linear(channels, width)
        self.pos = nn.Parameter(torch.randn(1, window, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(DiTBlock(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, channels)
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.trunk(x_t, self.time_mlp(timestep_embedding(t, self.width)))

    def trunk(self, x_t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The network given its conditioning vector c (B, width): tokens -> blocks -> head.
        `forward` conditions on t alone; subclasses add to c (midilib.diffusion.latent_model)."""
        L = x_t.shape[1]
        if L > self.pos.shape[1]:
            raise ValueError(f"window of {L} notes exceeds the {self.pos.shape[1]} positions")
        x = self.embed(x_t) + self.pos[:, :L]
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.head(_modulate(self.norm(x), shift, scale))


DENOISERS = ("lstm", "transformer")


def build_denoiser(cfg: DiffusionConfig, window: int = 8, channels: int = N_FEATURES) -> nn.Module:
    """The denoiser named by `cfg.denoiser`, sized by `cfg` (see midilib/profiles.py), over
    `channels` channels per note (the codec's `channels`)."""
    if cfg.denoiser == "lstm":
        return LSTMDenoiser(
            cfg.timesteps,
            cfg.lstm_time_embed,
            cfg.lstm_hidden,
            cfg.lstm_layers,
            cfg.lstm_bottleneck,
            cfg.lstm_dropout,
            channels,
        )
    if cfg.denoiser == "transformer":
        return TransformerDenoiser(
            cfg.tf_width, cfg.tf_layers, cfg.tf_heads, cfg.tf_dropout, window, channels
        )
    raise ValueError(f"unknown denoiser {cfg.denoiser!r}; choose one of {', '.join(DENOISERS)}")
