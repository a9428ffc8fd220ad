"""The memory-overwrite module (MOM) shared by the VAE decoder and the LSTM denoiser.

After every decoder step each layer's state is rewritten as
``state * sigmoid(F(m)) + sigmoid(S(m)) * tanh(T(m))`` where m is the latent
projection (h_z for h, c_z for c). The gates depend on the latent only, so the
module is a z-dependent affine map that re-injects the latent at every step,
keeping a long decoder from forgetting what it is decoding.
"""

from __future__ import annotations

import torch
from torch import nn


class MemoryOverwrite(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.forget = nn.Linear(hidden, hidden)  # F
        self.select = nn.Linear(hidden, hidden)  # S
        self.write = nn.Linear(hidden, hidden)  # T

    def gates(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of the affine rewrite for a latent projection `memory`.

        They are constant over the decoding steps, so compute them once.
        """
        scale = torch.sigmoid(self.forget(memory))
        shift = torch.sigmoid(self.select(memory)) * torch.tanh(self.write(memory))
        return scale, shift

    def forward(self, state: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Rewrite `state` (layers, B, H) with `memory` (B, H) or (layers, B, H)."""
        scale, shift = self.gates(memory)
        return state * scale + shift
