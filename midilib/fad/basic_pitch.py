"""basic-pitch (Spotify, Apache-2.0) posteriorgrams as a second FAD embedding.

Its ONNX model maps 22.05-kHz audio patches of 43,844 samples (2 s less one
hop) to 172 frames (86 per second) of note and onset posteriors over the 88
piano keys. As in basic-pitch's own inference, patches overlap by 30 frames,
the audio is front-padded by half of that, 15 frames are cut from both ends of
each patch's output, and the result is trimmed to the clip's length. A frame's
embedding is note ++ onset (176-d): a transcription-aware view of the audio,
complementary to musicnn's timbre/tag view.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.signal import resample_poly

from midilib.fad.weights import weight_path

SAMPLE_RATE = 22_050
PATCH = 43_844  # 22050 * 2 - 256
HOP = 256
OVERLAP_FRAMES = 30
FPS = SAMPLE_RATE // HOP  # 86 output frames per second
_INPUT = "serving_default_input_2:0"
_NOTE, _ONSET = "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"


@cache
def load_session():
    """The ONNX Runtime session for nmp.onnx (fetched by `python -m midilib.fad.weights`)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("the basic-pitch embedder needs onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(weight_path("basic-pitch", "nmp.onnx")), options,
                                providers=["CPUExecutionProvider"])


def to_22k(audio: np.ndarray) -> np.ndarray:
    """16 kHz -> 22.05 kHz (polyphase, 441/320), float32."""
    return resample_poly(np.asarray(audio, dtype=np.float64), 441, 320).astype(np.float32)


def _patches(audio_22k: np.ndarray) -> np.ndarray:
    """Overlapping model inputs (p, PATCH, 1), zero-padded as basic-pitch's inference pads."""
    overlap = OVERLAP_FRAMES * HOP
    x = np.concatenate([np.zeros(overlap // 2, np.float32), audio_22k])
    step = PATCH - overlap
    starts = range(0, max(len(x), 1), step)
    out = np.zeros((len(starts), PATCH, 1), dtype=np.float32)
    for i, s in enumerate(starts):
        piece = x[s : s + PATCH]
        out[i, : len(piece), 0] = piece
    return out


def embed_clips(clips: list[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """16-kHz clips -> per clip its (frames, 176) float32 note ++ onset posteriors (>= 1 frame)."""
    session = load_session()
    resampled = [to_22k(c) for c in clips]
    per_clip = [_patches(a) for a in resampled]
    if not per_clip:
        return []
    stacked = np.concatenate(per_clip)
    notes, onsets = [], []
    for i in range(0, len(stacked), batch_size):
        note, onset = session.run([_NOTE, _ONSET], {_INPUT: stacked[i : i + batch_size]})
        notes.append(note)
        onsets.append(onset)
    frames = np.concatenate([np.concatenate(notes), np.concatenate(onsets)], axis=-1)
    cut = OVERLAP_FRAMES // 2
    frames = frames[:, cut:-cut]  # drop each patch's overlapping edges
    out, pos = [], 0
    for audio, p in zip(resampled, per_clip, strict=True):
        n = max(1, int(np.floor(len(audio) * FPS / SAMPLE_RATE)))
        out.append(frames[pos : pos + len(p)].reshape(-1, frames.shape[-1])[:n])
        pos += len(p)
    return out
