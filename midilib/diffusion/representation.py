"""Condensed-event windows <-> the diffusion space, where every channel lies in [-1, 1].

The diffusion process adds unit Gaussian noise and the samplers clip the
predicted x0 to [-1, 1], so the data must fill that box and nothing real may
fall outside it (the original study mapped times outside it and then clipped).

* pitch: ``p / 63.5 - 1`` over the whole MIDI range 0..127 (nothing is ever
  clipped away); decoded by *rounding* to the nearest integer, then 0..127.
* velocity (already /127): ``2 v - 1``.
* delta and duration (seconds, in [0, s_max] / [0, d_max]): a log scale
  ``u = log1p(t / tau) / log1p(t_max / tau)``, then ``2 u - 1``. 0 maps to -1
  exactly (chords keep their zero delta) and t_max to +1.

Why ``tau = 0.02`` s: on GiantMIDI-Piano the delta has median 0.043 s, a
quarter of all deltas are under 4 ms (chords played slightly apart) and 6.5 %
are exact zeros, while durations have median 0.21 s. A linear scale would
crowd almost all notes into the bottom tenth of [-1, 1]. With tau = 0.02 the
chord jitter (< 5 ms) stays within 0.08 of -1, the musically relevant range
30 ms - 1 s spreads over most of the interval, and both channels get a
spread (std of u ~0.2-0.3) comparable to pitch and velocity. Smaller tau
spends resolution on sub-5 ms jitter, larger tau squeezes short notes.

Pitch codes (``pitch_code``):

* ``"linear"`` (4 channels: height, velocity, delta, duration) is the code
  above. A semitone is 1/63.5 = 0.016 of the box, and nothing in it makes the
  pitch *class* learnable: C4 and C#4 are neighbours, C4 and C5 are far apart,
  and a key is a comb of 7 teeth in 12 spread over the whole range. Models
  trained on it did not learn key: the scale consistency of their windows
  equals that of uniformly random pitches.
* ``"fifths"`` (6 channels: height, velocity, delta, duration, cos, sin) adds
  the pitch class pc = p mod 12 as a point on the unit circle of fifths,
  theta = 2 pi ((7 pc) mod 12) / 12. On that circle the 7 notes of a diatonic
  scale are 7 *adjacent* points, so a key is a region (an arc) that a denoiser
  can learn, and transposing by a fifth is a rotation by 30 degrees. The height
  channel keeps the register. The first four channels are exactly the linear
  code, so channel i means the same in both codes for i < 4.
  Decoding takes the class of the circle point nearest to (cos, sin) (largest
  dot product, defined for any vector, zero included: then C), then the pitch
  of that class nearest to the decoded height, inside 0..127. Real data round
  trip exactly: the encoded point is a circle point, 30 degrees from the next.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from midilib.events import DELTA, DURATION, PITCH, VELOCITY

DEFAULT_TAU = 0.02
PITCH_MAX = 127
PITCH_CODES = ("linear", "fifths")

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _ops(x: np.ndarray | torch.Tensor):
    """The array library of `x` (numpy or torch), so one code path serves both."""
    if isinstance(x, torch.Tensor):
        return torch
    if isinstance(x, np.ndarray):
        return np
    raise ValueError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def _circle_of_fifths(pc, xp) -> list:
    """Pitch classes (float, 0..11) -> [cos, sin] of their angles on the circle of fifths
    (C at 0 degrees, G at 30, D at 60, ...). Computed where `pc` lives: no host transfer."""
    theta = xp.remainder(7 * pc, 12) * (2 * math.pi / 12)
    return [xp.cos(theta), xp.sin(theta)]


class DiffusionCodec:
    """Exact, invertible map of raw windows (..., 4) to [-1, 1]^C and back (C = `channels`).

    Works on numpy arrays and torch tensors alike (same type and shape out);
    numpy output is float32. `pitch_code` is "linear" (C = 4) or "fifths" (C = 6),
    see the module docstring.
    """

    def __init__(
        self,
        s_max: float = 2.0,
        d_max: float = 2.0,
        tau: float = DEFAULT_TAU,
        pitch_code: str = "linear",
    ) -> None:
        for name, value in (("s_max", s_max), ("d_max", d_max), ("tau", tau)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if pitch_code not in PITCH_CODES:
            raise ValueError(
                f"unknown pitch_code {pitch_code!r}; choose one of {', '.join(PITCH_CODES)}"
            )
        self.s_max = float(s_max)
        self.d_max = float(d_max)
        self.tau = float(tau)
        self.pitch_code = pitch_code

    def __repr__(self) -> str:
        return (
            f"DiffusionCodec(s_max={self.s_max}, d_max={self.d_max}, tau={self.tau}, "
            f"pitch_code={self.pitch_code!r})"
        )

    @property
    def channels(self) -> int:
        """Channels per note in the diffusion space: 4 ("linear") or 6 ("fifths")."""
        return 6 if self.pitch_code == "fifths" else 4

    def _time_encode(self, t, t_max: float, xp):
        t = xp.clip(t, 0.0, t_max)
        return 2.0 * xp.log1p(t / self.tau) / math.log1p(t_max / self.tau) - 1.0

    def _time_decode(self, x, t_max: float, xp):
        u = xp.clip((x + 1.0) / 2.0, 0.0, 1.0)
        return xp.clip(self.tau * xp.expm1(u * math.log1p(t_max / self.tau)), 0.0, t_max)

    def encode(self, windows: Array) -> Array:
        """Raw condensed events (..., 4) -> diffusion space (..., channels) in [-1, 1].

        Values outside the event ranges are clipped first, so the output always
        stays inside the box the samplers clip to. "fifths" takes the class of
        the rounded pitch.
        """
        xp = _ops(windows)
        if windows.shape[-1] != 4:
            raise ValueError(f"expected events with 4 columns, got shape {tuple(windows.shape)}")
        w = windows.astype(np.float64) if xp is np else windows
        p = xp.clip(w[..., PITCH], 0.0, PITCH_MAX)
        pitch = p / (PITCH_MAX / 2) - 1.0
        velocity = 2.0 * xp.clip(w[..., VELOCITY], 0.0, 1.0) - 1.0
        delta = self._time_encode(w[..., DELTA], self.s_max, xp)
        duration = self._time_encode(w[..., DURATION], self.d_max, xp)
        columns = [pitch, velocity, delta, duration]
        if self.pitch_code == "fifths":
            columns += _circle_of_fifths(xp.remainder(xp.round(p), 12), xp)
        out = xp.stack(columns, -1)
        return out.astype(np.float32) if xp is np else out

    def _fifths_decode(self, x, xp):
        """Pitch from the circle point nearest to (cos, sin) and the height channel."""
        classes = np.arange(12.0) if xp is np else torch.arange(12, dtype=x.dtype, device=x.device)
        table = xp.stack(_circle_of_fifths(classes, xp), -1)  # (12, 2)
        pc = xp.argmax(x[..., 4:6] @ table.T, -1)  # first maximum: a zero vector gives C
        pc = pc.astype(np.float64) if xp is np else pc.to(x.dtype)
        height = (x[..., PITCH] + 1.0) * (PITCH_MAX / 2)
        octave = xp.clip(xp.round((height - pc) / 12), 0, None)
        octave = xp.minimum(octave, xp.floor((PITCH_MAX - pc) / 12))  # the highest in range
        return pc + 12 * octave

    def decode(self, x: Array) -> Array:
        """Diffusion space (..., channels) -> raw events: pitch an integer in 0..127, all clipped."""
        xp = _ops(x)
        if x.shape[-1] != self.channels:
            raise ValueError(
                f"expected {self.channels} channels ({self.pitch_code} pitch), "
                f"got shape {tuple(x.shape)}"
            )
        x = x.astype(np.float64) if xp is np else x
        if self.pitch_code == "fifths":
            pitch = self._fifths_decode(x, xp)
        else:
            pitch = xp.clip(xp.round((x[..., PITCH] + 1.0) * (PITCH_MAX / 2)), 0, PITCH_MAX)
        velocity = xp.clip((x[..., VELOCITY] + 1.0) / 2.0, 0.0, 1.0)
        delta = self._time_decode(x[..., DELTA], self.s_max, xp)
        duration = self._time_decode(x[..., DURATION], self.d_max, xp)
        out = xp.stack([pitch, velocity, delta, duration], -1)
        return out.astype(np.float32) if xp is np else out
