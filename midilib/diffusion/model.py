"""The trainable diffusion model: codec + noise schedule + denoiser, with the trainer's loss.

The model takes raw condensed-event windows (as in windows.npz), so the
trainer, the sampler and the evaluation never see the diffusion space. The
betas are a buffer, so a checkpoint carries the schedule it was trained with;
the forward process itself is `midilib.diffusion.schedulers.add_noise`, the
code the samplers use too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from midilib import distributed
from midilib.diffusion.representation import DEFAULT_TAU, DiffusionCodec
from midilib.diffusion.schedulers import add_noise
from midilib.diffusion.schedules import make_betas
from midilib.models.denoisers import build_denoiser
from midilib.profiles import DiffusionConfig


class DiffusionModel(nn.Module):
    """An epsilon-prediction DDPM over windows (B, window, 4) of condensed events.

    The denoiser works in the codec's diffusion space, (B, window, codec.channels).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        betas: torch.Tensor,
        codec: DiffusionCodec | None = None,
        window: int = 8,
    ) -> None:
        super().__init__()
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        self.denoiser = denoiser
        self.codec = codec or DiffusionCodec()
        self.window = window
        self.register_buffer("betas", betas.float())
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float())

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for x_t (B, window, channels) in diffusion space at timesteps t (B,)."""
        return self.denoiser(x_t, t)

    def training_loss(
        self, batch: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The simple DDPM loss: MSE between the true and predicted noise at a random t
        (the log is a detached tensor: no host sync per step)."""
        if batch.dim() != 3 or batch.shape[1:] != (self.window, 4):
            raise ValueError(f"expected a batch (B, {self.window}, 4), got {tuple(batch.shape)}")
        x0 = self.codec.encode(batch.float())
        t = distributed.randint(self.timesteps, (x0.shape[0],), device=x0.device)
        noise = distributed.randn_like(x0)
        x_t = add_noise(self.alphas_cumprod, x0, noise, t)
        loss = F.mse_loss(self(x_t, t), noise)
        return loss, {"mse": loss.detach()}


def build_diffusion(
    cfg: DiffusionConfig,
    s_max: float = 2.0,
    d_max: float = 2.0,
    tau: float = DEFAULT_TAU,
    window: int = 8,
) -> DiffusionModel:
    """A DiffusionModel with the schedule, pitch code and denoiser that `cfg` names."""
    betas = torch.from_numpy(make_betas(cfg.schedule, cfg.timesteps))
    codec = DiffusionCodec(s_max, d_max, tau, cfg.pitch_code)
    return DiffusionModel(build_denoiser(cfg, window, codec.channels), betas, codec, window)
