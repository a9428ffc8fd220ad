"""Generation: unconditional sampling of windows, continuation of a piece by inpainting, and
`denoise`, the reverse-process loop for any shape (with optional known entries, RePaint-style),
which `sample` and latent diffusion (midilib.latent) run.

All randomness comes from one seeded `torch.Generator` on the sampling device,
so a seed gives the same notes on that device regardless of the global RNG.
(Drawing the noise on the CPU and copying it over would make CPU and GPU
agree, but it cost a host-to-device copy at every one of the 1000 DDPM steps.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from tqdm.auto import tqdm

from midilib.diffusion.model import DiffusionModel
from midilib.diffusion.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverScheduler
from midilib.models import eval_mode
from midilib.train import autocast_for

SCHEDULERS = ("ddpm", "ddim", "dpmsolver")
Scheduler = DDPMScheduler | DDIMScheduler | DPMSolverScheduler
# Raised whenever the samplers' numbers change for the same checkpoint and seed; cached sample
# sets (midilib.runs.cached_generate) are keyed by it. 2: DDIM re-derives epsilon from the clipped x0.
SAMPLER_VERSION = 2


def make_scheduler(
    model: DiffusionModel,
    kind: str = "ddim",
    steps: int | None = 50,
    eta: float = 0.0,
    clip_sample: bool = True,
    use_clipped_model_output: bool = True,
    clip_range: float = 1.0,
) -> Scheduler:
    """A sampler over `model`'s own betas with `steps` steps (None: all T).

    DDIM re-derives epsilon from the clipped x0 unless `use_clipped_model_output=False`
    (diffusers' default; see midilib.diffusion.schedulers for the measured difference).
    "dpmsolver" is DPM-Solver++(2M) with diffusers' defaults, x0 clipped as DDIM clips it.
    The predicted x0 is clipped to [-clip_range, clip_range] (the windows' box: 1).
    """
    if kind == "ddpm":
        scheduler = DDPMScheduler(model.betas, clip_sample=clip_sample, clip_range=clip_range)
    elif kind == "ddim":
        scheduler = DDIMScheduler(model.betas, clip_sample=clip_sample, eta=eta, clip_range=clip_range,
                                  use_clipped_model_output=use_clipped_model_output)
    elif kind == "dpmsolver":
        scheduler = DPMSolverScheduler(model.betas, clip_sample=clip_sample, clip_range=clip_range)
    else:
        raise ValueError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")
    scheduler.set_timesteps(steps if steps is not None else model.timesteps)
    return scheduler


def _check(model: DiffusionModel, scheduler: Scheduler) -> None:
    if scheduler.num_train_timesteps != model.timesteps:
        raise ValueError(
            f"scheduler has {scheduler.num_train_timesteps} training timesteps, "
            f"the model {model.timesteps}"
        )


def _device(model: DiffusionModel, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else model.betas.device


@torch.inference_mode()
def sample(
    model: DiffusionModel,
    scheduler: Scheduler,
    n: int,
    batch_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: str = "bf16",
) -> np.ndarray:
    """Generate `n` windows -> raw condensed events (n, window, 4), deterministic given `seed`.

    On CUDA the denoiser runs under bf16 autocast unless `precision="fp32"` (the
    scheduler's arithmetic stays fp32): fp32 attention and GEMMs made DDPM-1000 take
    15 s per 10,000 windows at `full` on an H200, bf16 tensor cores a fraction of that.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got {n} and {batch_size}")
    _check(model, scheduler)
    device = _device(model, device)
    model.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    autocast = autocast_for(device, precision)
    steps = scheduler.timesteps.tolist()
    out = []
    with (
        eval_mode(model),
        tqdm(total=len(steps) * -(-n // batch_size), disable=not progress, desc="sampling") as bar,
    ):
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            shape = (b, model.window, model.codec.channels)
            x = torch.randn(shape, generator=generator, device=device)
            x = denoise(model, scheduler, x, generator, autocast=autocast, bar=bar)
            out.append(model.codec.decode(x).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def denoise(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: Scheduler,
    x: torch.Tensor,
    generator: torch.Generator,
    known: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    autocast: AbstractContextManager | None = None,
    bar: tqdm | None = None,
) -> torch.Tensor:
    """The reverse process from x = x_T over `scheduler.timesteps`, for any shape (B, ...):
    x_prev = scheduler.step(eps_theta(x_t, t), t, x_t). `model(x_t, t)` takes t as a (B,) LongTensor.

    With `known` (x's shape) and `keep` (a bool mask broadcastable to it): RePaint without
    resampling. Before every denoiser call the kept entries of x_t are replaced by `known`
    noised to that step's level, x_t = sqrt(ab_t) known + sqrt(1 - ab_t) eps (the scheduler's
    `add_noise`), so the rest is generated consistently with them; at the end they are set
    back exactly. Every draw comes from `generator`, so a seed fixes the result.
    """
    if (known is None) != (keep is None):
        raise ValueError("known and keep go together: pass both or neither")
    b = x.shape[0]
    for t in scheduler.timesteps.tolist():
        if known is not None:
            noise = torch.randn(known.shape, generator=generator, device=known.device, dtype=known.dtype)
            x = torch.where(keep, scheduler.add_noise(known, noise, t).to(x.dtype), x)
        with autocast or contextlib.nullcontext():
            eps = model(x, torch.full((b,), t, dtype=torch.long, device=x.device))
        x = scheduler.step(eps.float(), t, x, generator=generator)
        if bar is not None:
            bar.update()
    return x if known is None else torch.where(keep, known.to(x.dtype), x)


def _inpaint(
    model: DiffusionModel,
    scheduler: Scheduler,
    known: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Windows whose first notes are `known` (B, k, channels, diffusion space): RePaint without
    resampling -> (B, window, channels).

    Before every denoiser call the known part of x_t is replaced by the known
    notes noised to that step's level, so the unknown part is generated
    consistently with them; at the end the known part is set back exactly.
    """
    b, k, channels = known.shape
    device = known.device
    x = torch.randn(b, model.window, channels, generator=generator, device=device)
    for t in scheduler.timesteps.tolist():
        noise = torch.randn(b, k, channels, generator=generator, device=device)
        x[:, :k] = scheduler.add_noise(known, noise, t)
        eps = model(x, torch.full((b,), t, dtype=torch.long, device=device))
        x = scheduler.step(eps, t, x, generator=generator)
    x[:, :k] = known
    return x


@torch.inference_mode()
def continue_piece(
    model: DiffusionModel,
    scheduler: Scheduler,
    context_events: np.ndarray,
    n_windows: int,
    n_known: int = 4,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Continue a piece window by window -> events (k + n_windows * (window - n_known), 4).

    The result starts with `context_events` unchanged; each new window is
    conditioned on the last `n_known` notes so far (real ones first, then
    generated ones) and contributes its other notes. Playable with
    `midilib.events.write_midi`. (`continue_pieces` of this one context.)
    """
    context = np.asarray(context_events, dtype=np.float32)
    if context.ndim != 2 or context.shape[1] != 4:
        raise ValueError(f"context_events must be an array (k, 4), got shape {context.shape}")
    return continue_pieces(model, scheduler, context[None], n_windows, n_known, seed, device, progress)[0]


@torch.inference_mode()
def continue_pieces(
    model: DiffusionModel,
    scheduler: Scheduler,
    contexts: np.ndarray,
    n_windows: int,
    n_known: int = 4,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    batch_size: int = 1024,
) -> np.ndarray:
    """`continue_piece` for B contexts at once, (B, k, 4) -> (B, k + n_windows * (window - n_known), 4):
    every denoiser call takes a window of each piece of a batch of `batch_size`. Deterministic
    given `seed` and `batch_size`; one context gives `continue_piece`'s notes exactly."""
    contexts = np.asarray(contexts, dtype=np.float32)
    if contexts.ndim != 3 or contexts.shape[2] != 4 or len(contexts) == 0:
        raise ValueError(f"contexts must be an array (B >= 1, k, 4), got shape {contexts.shape}")
    if not 1 <= n_known < model.window:
        raise ValueError(f"n_known must lie in 1..{model.window - 1}, got {n_known}")
    if contexts.shape[1] < n_known:
        raise ValueError(f"need at least n_known={n_known} context notes, got {contexts.shape[1]}")
    if n_windows < 1 or batch_size < 1:
        raise ValueError(f"n_windows and batch_size must be >= 1, got {n_windows} and {batch_size}")
    _check(model, scheduler)
    device = _device(model, device)
    model.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    out = []
    with eval_mode(model), tqdm(total=n_windows * -(-len(contexts) // batch_size), disable=not progress,
                                desc="continuing") as bar:
        for start in range(0, len(contexts), batch_size):
            events = [contexts[start:start + batch_size]]
            for _ in range(n_windows):
                # Condition on the notes exactly as they stand in the output (pitch rounded).
                last = np.concatenate(events, axis=1)[:, -n_known:]
                known = model.codec.encode(torch.from_numpy(last)).to(device)
                x = _inpaint(model, scheduler, known, generator)
                events.append(model.codec.decode(x[:, n_known:]).cpu().numpy())
                bar.update()
            out.append(np.concatenate(events, axis=1))
    return np.concatenate(out).astype(np.float32)
