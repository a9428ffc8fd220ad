"""VGGish (Hershey et al., 2017), the original FAD embedder, with user-supplied weights.

We never download VGGish: pass a torchvggish-format state dict (`features.*`,
`embeddings.*`) via `path=` or `$MIDILIB_VGGISH`. The front end follows the
reference `vggish_input`: 25 ms Hann frames every 10 ms (n_fft 512, magnitude,
no centring), 64 HTK-mel bands over 125-7500 Hz, log(mel + 0.01), and
non-overlapping 0.96-s examples of 96 x 64. The embedding is the 128-d output
of the last fully connected layer, without ReLU and without the PCA
post-processing, as the FAD paper used it.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16_000
WIN, HOP, N_FFT = 400, 160, 512
N_MELS, FMIN, FMAX = 64, 125.0, 7500.0
EXAMPLE_FRAMES = 96
LOG_OFFSET = 0.01
ENV_VAR = "MIDILIB_VGGISH"


def _htk_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """(N_FFT // 2 + 1, 64) triangular filters on the HTK mel axis, unnormalised, DC bin off."""
    bins_mel = _htk_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_htk_mel(FMIN), _htk_mel(FMAX), N_MELS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0] = 0.0
    return weights


def examples(audio: np.ndarray) -> np.ndarray:
    """Mono 16-kHz audio -> (k, 96, 64) float32 log-mel examples; short clips are zero-padded."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    min_len = WIN + (EXAMPLE_FRAMES - 1) * HOP
    if len(audio) < min_len:
        audio = np.pad(audio, (0, min_len - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, WIN)[::HOP]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
    spec = np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=-1))
    logmel = np.log(spec @ mel_matrix() + LOG_OFFSET)
    k = len(logmel) // EXAMPLE_FRAMES
    return logmel[: k * EXAMPLE_FRAMES].reshape(k, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


class VGGish(nn.Module):
    """The VGG-like network; module names match torchvggish so its state dicts load as is."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for block in ((64,), (128,), (256, 256), (512, 512)):
            for out_ch in block:
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Examples (B, 96, 64) -> embeddings (B, 128)."""
        h = self.features(x.unsqueeze(1))  # (B, 512, 6, 4)
        h = h.permute(0, 2, 3, 1).flatten(1)  # TF's channels-last flattening order
        return self.embeddings(h)


def load_vggish(path: str | Path | None = None) -> VGGish:
    """VGGish in eval mode from a local torchvggish state dict (`path` or $MIDILIB_VGGISH)."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        raise FileNotFoundError(
            f"VGGish weights are never downloaded: set ${ENV_VAR} to a local torchvggish "
            "state dict (.pth)"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGGish weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = VGGish()
    expected = set(net.state_dict())
    if not isinstance(state, dict) or set(state) != expected:
        got = sorted(set(state) ^ expected)[:3] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a torchvggish state dict (mismatched keys: {got})")
    net.load_state_dict(state)
    return net.eval()


@cache
def _cached(path: str) -> VGGish:
    return load_vggish(path)


@torch.no_grad()
def embed_clips(
    clips: list[np.ndarray], path: str | Path | None = None, batch_size: int = 64
) -> list[np.ndarray]:
    """16-kHz clips -> per clip its (examples, 128) float32 embeddings."""
    path = path or os.environ.get(ENV_VAR)
    net = _cached(str(Path(path).resolve())) if path else load_vggish(None)
    per_clip = [examples(c) for c in clips]
    if not per_clip:
        return []
    stacked = np.concatenate(per_clip)
    flat = np.concatenate([net(torch.from_numpy(stacked[i : i + batch_size])).numpy()
                           for i in range(0, len(stacked), batch_size)])
    return np.split(flat, np.cumsum([len(p) for p in per_clip])[:-1])
