"""The diffusion processes made visible: a real window at several noise levels (forward), and
one sample's states along the reverse process."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from midilib.diffusion.model import DiffusionModel
from midilib.diffusion.schedulers import add_noise

CHANNEL_NAMES = {4: ("pitch", "velocity", "gap", "duration"),
                 6: ("pitch height", "velocity", "gap", "duration", "fifths cos", "fifths sin")}


def noised_windows(
    model: DiffusionModel, window: np.ndarray, timesteps: Sequence[int], seed: int = 0, decode: bool = True
) -> dict[int, np.ndarray]:
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε for each t, decoded back to note events (or, with
    `decode=False`, x_t itself in the diffusion space, (window, channels), unclipped).

    One ε for every t, so the pictures differ only by the noise level.
    """
    x0 = model.codec.encode(torch.as_tensor(np.asarray(window, dtype=np.float32))[None])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        if not 0 <= t < model.timesteps:
            raise ValueError(f"timestep {t} outside 0..{model.timesteps - 1}")
        x_t = add_noise(model.alphas_cumprod, x0, noise, t)
        out[int(t)] = model.codec.decode(x_t.clamp(-1, 1))[0].numpy() if decode else x_t[0].numpy()
    return out


@torch.inference_mode()
def reverse_states(model: DiffusionModel, scheduler, record: int = 6, seed: int = 0) -> dict[int, np.ndarray]:
    """One sample's x_t (window, channels) along the reverse process: x_T (pure noise) and the
    states after `record` - 1 evenly spaced steps of `scheduler`'s timesteps, the last being the
    generated x_0. Keys are the timestep each state belongs to (-1 for the final x_0)."""
    if record < 2:
        raise ValueError(f"record must be >= 2 (x_T and x_0), got {record}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, model.window, model.codec.channels), generator=generator)
    steps = scheduler.timesteps.tolist()
    keep = set(np.linspace(0, len(steps), record).round().astype(int)[1:-1].tolist())  # steps taken
    out = {int(steps[0]): x[0].numpy().copy()}
    model.eval()
    for i, t in enumerate(steps):
        eps = model(x, torch.full((1,), t, dtype=torch.long))
        x = scheduler.step(eps.float(), t, x, generator=generator)
        if i + 1 < len(steps) and (i + 1) in keep:
            out[int(steps[i + 1])] = x[0].numpy().copy()
    out[-1] = x[0].numpy().copy()
    return out
