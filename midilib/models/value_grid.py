"""Velocity, delta and duration as classes: the grid behind the VAE's categorical value head.

A regression head trained with MSE predicts the conditional *mean* of a value.
Where the data are multi-modal (a gap is either ~0, a chord, or a beat) the
mean is a value that never occurs: chords smear and gaps collapse. A
categorical over a grid models the whole conditional distribution instead;
reconstruction takes its mode and sampling draws from it (the time-shift
tokens of event-based MIDI models, e.g. Oore et al. 2018, do the same).

The grid, in the VAE's scaled units (velocity in [0, 1], delta / s_max,
duration / d_max):

* velocity: the 128 MIDI velocities k / 127, exact;
* delta and duration: ``bins`` classes uniform in the log scale
  ``u = log1p(t / tau) / log1p(t_max / tau)`` (the diffusion codec's, tau = 0.02 s),
  so the relative resolution is about the same at 30 ms as at 1 s:
  a class spans ``(t + tau) * log1p(t_max / tau) / bins`` seconds (7 % of t + 1.4 ms
  for 64 bins over 2 s). Class 0 (t under 1.5 ms at 64 bins) decodes to exactly 0,
  so chords keep their zero gap; class k > 0 decodes to the centre of its u-bin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

N_VELOCITY = 128
TAU = 0.02


class ValueGrid:
    """Scaled values (..., 3) <-> class indices (..., 3) for velocity, delta, duration."""

    def __init__(self, bins: int, s_max: float, d_max: float, tau: float = TAU) -> None:
        if bins < 2:
            raise ValueError(f"value_bins must be >= 2, got {bins!r}")
        self.bins, self.s_max, self.d_max, self.tau = int(bins), float(s_max), float(d_max), float(tau)
        self.sizes = (N_VELOCITY, self.bins, self.bins)
        self._centres: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _u(self, scaled: Tensor, t_max: float) -> Tensor:
        t = scaled.clamp(0.0, 1.0) * t_max
        return torch.log1p(t / self.tau) / math.log1p(t_max / self.tau)

    def _time_centres(self, t_max: float) -> Tensor:
        """Scaled value of each class of a time channel (bins,)."""
        u = (torch.arange(self.bins, dtype=torch.float64) + 0.5) / self.bins
        t = self.tau * torch.expm1(u * math.log1p(t_max / self.tau))
        t[0] = 0.0
        return (t / t_max).float()

    def centres(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Per channel, the scaled value each class decodes to (computed once per device:
        the decoder asks for them at every step)."""
        device = torch.device(device)
        if device not in self._centres:
            vel = torch.arange(N_VELOCITY, dtype=torch.float32) / (N_VELOCITY - 1)
            self._centres[device] = tuple(c.to(device) for c in (vel, self._time_centres(self.s_max),
                                                                 self._time_centres(self.d_max)))
        return self._centres[device]

    def classes(self, values: Tensor) -> Tensor:
        """Scaled values (..., 3) -> class indices (..., 3) long."""
        vel = (values[..., 0].clamp(0.0, 1.0) * (N_VELOCITY - 1)).round()
        delta = (self._u(values[..., 1], self.s_max) * self.bins).floor()
        duration = (self._u(values[..., 2], self.d_max) * self.bins).floor()
        out = torch.stack((vel, delta, duration), dim=-1).long()
        return torch.minimum(out, torch.tensor(self.sizes, device=out.device) - 1)

    def values(self, classes: Tensor) -> Tensor:
        """Class indices (..., 3) -> the scaled values (..., 3) they decode to."""
        centres = self.centres(classes.device)
        return torch.stack([centres[i][classes[..., i]] for i in range(3)], dim=-1)

    def split(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The value head's logits (..., 128 + 2 * bins) -> one logits tensor per channel."""
        return tuple(torch.split(logits, self.sizes, dim=-1))
