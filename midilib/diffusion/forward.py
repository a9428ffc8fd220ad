"""The forward (noising) process made visible: a real window at several noise levels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from midilib.diffusion.model import DiffusionModel
from midilib.diffusion.schedulers import add_noise


def noised_windows(
    model: DiffusionModel, window: np.ndarray, timesteps: Sequence[int], seed: int = 0
) -> dict[int, np.ndarray]:
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε for each t, decoded back to note events.

    One ε for every t, so the pictures differ only by the noise level.
    """
    x0 = model.codec.encode(torch.as_tensor(np.asarray(window, dtype=np.float32))[None])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        if not 0 <= t < model.timesteps:
            raise ValueError(f"timestep {t} outside 0..{model.timesteps - 1}")
        x_t = add_noise(model.alphas_cumprod, x0, noise, t)
        out[int(t)] = model.codec.decode(x_t.clamp(-1, 1))[0].numpy()
    return out
