"""Noise schedules: beta_t for t = 0..T-1, and the quantities derived from them.

The linear schedule is DDPM's (Ho et al. 2020) and the original study's; the
cosine schedule (Nichol & Dhariwal 2021) destroys information more evenly
over t, which matters for small, low-dimensional data such as 8x4 windows
where the linear schedule leaves the last few hundred steps almost pure noise.
Betas are float64 numpy arrays; consumers cast as they need.
"""

from __future__ import annotations

import math

import numpy as np


def _check_steps(T: int) -> None:
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise ValueError(f"the number of timesteps must be a positive integer, got {T!r}")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linearly increasing betas (1e-4 -> 0.02 at T = 1000)."""
    _check_steps(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = f(t)/f(0), f = cos^2((t/T+s)/(1+s) pi/2).

    beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped to `max_beta` so that the
    last step is not a singular beta = 1.
    """
    _check_steps(T)
    if s < 0:
        raise ValueError(f"the cosine offset s must be >= 0, got {s}")
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def make_betas(name: str, T: int) -> np.ndarray:
    """Betas of the schedule called `name` ("linear" or "cosine") with T steps."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](T)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s): the signal fraction left at step t."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) == 0 or not ((betas > 0) & (betas < 1)).all():
        raise ValueError("betas must be a non-empty 1-D array with every value in (0, 1)")
    return np.cumprod(1.0 - betas)


def snr(betas: np.ndarray) -> np.ndarray:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each step (falls with t)."""
    ab = alphas_cumprod(betas)
    return ab / (1.0 - ab)
