"""Librosa-compatible power mel spectrogram in numpy (no librosa dependency).

The embedders were trained on librosa features, so we reproduce
`librosa.feature.melspectrogram` defaults: a centred STFT with zero padding
(librosa >= 0.10), a periodic Hann window, power 2, and the Slaney mel scale with
Slaney (area) normalisation of the triangular filters.
"""

from __future__ import annotations

import numpy as np


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz,
                    min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep,
                    hz / f_sp)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of hz_to_mel."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    mel * f_sp)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each with unit area (Slaney norm)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {fmin}, {fmax}")
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2, shape (frames, n_fft // 2 + 1): centred frames, zero padding, periodic Hann."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    padded = np.pad(audio, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2


def melspectrogram(
    audio: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int
) -> np.ndarray:
    """Power mel spectrogram (frames, n_mels), float32, as librosa computes it (transposed)."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    return (power_spectrogram(audio, n_fft, hop) @ fb.T).astype(np.float32)
