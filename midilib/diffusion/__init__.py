"""Diffusion over 8-note windows: codec, schedules, DDPM/DDIM/DPM-Solver++ samplers, model, sampling."""

from midilib.diffusion.model import DiffusionModel, build_diffusion
from midilib.diffusion.representation import DEFAULT_TAU, DiffusionCodec
from midilib.diffusion.sampling import continue_piece, continue_pieces, make_scheduler, sample
from midilib.diffusion.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverScheduler
from midilib.diffusion.schedules import alphas_cumprod, cosine_betas, linear_betas, make_betas, snr

__all__ = [
    "DEFAULT_TAU",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverScheduler",
    "DiffusionCodec",
    "DiffusionModel",
    "alphas_cumprod",
    "build_diffusion",
    "continue_piece",
    "continue_pieces",
    "cosine_betas",
    "linear_betas",
    "make_betas",
    "make_scheduler",
    "sample",
    "snr",
]
