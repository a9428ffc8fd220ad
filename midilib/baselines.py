"""Baselines, so that a model's figures mean something.

Reconstruction: `most_common_pitch` is what a model gets by ignoring its input;
`nearest_neighbour` is what it gets by memorising the training set. A VAE worth
its latent beats the first by far and should be compared honestly with the second.

Generation: `uniform_random_windows` knows nothing; `independent_marginals_windows`
knows every channel's distribution and nothing of how notes relate. The
evaluation puts both in every table as calibration rows.
"""

from __future__ import annotations

import numpy as np
import torch

from midilib.events import DELTA, DURATION, PITCH, VELOCITY


def _check_windows(name: str, windows: np.ndarray, empty_ok: bool = False) -> np.ndarray:
    w = np.asarray(windows, dtype=np.float32)
    if w.ndim != 3 or w.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (n, window, 4), got {w.shape}")
    if len(w) == 0 and not empty_ok:
        raise ValueError(f"{name} is empty")
    return w


def most_common_pitch(train_windows: np.ndarray, test_windows: np.ndarray) -> np.ndarray:
    """Every predicted note = the training set's most common pitch with median velocity,
    delta and duration: the best constant guess, blind to the input."""
    train = _check_windows("train_windows", train_windows)
    test = _check_windows("test_windows", test_windows, empty_ok=True)
    notes = train.reshape(-1, 4)
    pitches = np.clip(np.rint(notes[:, PITCH]), 0, 127).astype(np.int64)
    row = np.empty(4, dtype=np.float32)
    row[PITCH] = np.bincount(pitches, minlength=128).argmax()  # ties: the lowest pitch
    for col in (VELOCITY, DELTA, DURATION):
        row[col] = np.median(notes[:, col])
    return np.broadcast_to(row, test.shape).copy()


def window_features(windows: np.ndarray, s_max: float = 2.0, d_max: float = 2.0) -> np.ndarray:
    """Flattened (pitch, velocity, delta/s_max, duration/d_max) per window.

    Pitch stays in semitones while the other columns lie in [0, 1], so the
    search matches pitches first (what pitch accuracy scores) and breaks
    near-ties by timing and dynamics.
    """
    w = _check_windows("windows", windows, empty_ok=True).copy()
    w[..., DELTA] /= s_max
    w[..., DURATION] /= d_max
    return w.reshape(len(w), -1)


def nearest_neighbour(
    train_windows: np.ndarray,
    test_windows: np.ndarray,
    batch: int = 1024,
    s_max: float = 2.0,
    d_max: float = 2.0,
) -> np.ndarray:
    """For each test window, the nearest training window (Euclidean in `window_features`).

    Exact search in chunks of `batch` test windows with torch.cdist in float64
    (features centred first, so the matrix-product form of the distance loses
    no precision); ties go to the lowest training index.
    """
    train = _check_windows("train_windows", train_windows)
    test = _check_windows("test_windows", test_windows, empty_ok=True)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"window lengths differ: train {train.shape[1]}, test {test.shape[1]}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    ftrain = torch.from_numpy(window_features(train, s_max, d_max)).double()
    ftest = torch.from_numpy(window_features(test, s_max, d_max)).double()
    centre = ftrain.mean(0)
    ftrain, ftest = ftrain - centre, ftest - centre
    index = np.empty(len(test), dtype=np.int64)
    for i in range(0, len(test), batch):
        dist = torch.cdist(ftest[i : i + batch], ftrain)
        index[i : i + batch] = dist.argmin(1).numpy()
    return train[index].copy()


def uniform_random_windows(
    n: int, seed: int = 0, s_max: float = 2.0, d_max: float = 2.0, window: int = 8
) -> np.ndarray:
    """Every channel uniform over its valid range: the know-nothing baseline."""
    if n < 1 or window < 1:
        raise ValueError(f"n and window must be >= 1, got {n}, {window}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, window, 4), dtype=np.float32)
    out[..., PITCH] = rng.integers(0, 128, (n, window))
    out[..., VELOCITY] = rng.uniform(0.0, 1.0, (n, window))
    out[..., DELTA] = rng.uniform(0.0, s_max, (n, window))
    out[..., DURATION] = rng.uniform(0.0, d_max, (n, window))
    return out


def independent_marginals_windows(train_windows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Each channel of each note drawn independently from the training marginal.

    Right pitch, dynamics and rhythm distributions with no relation between
    notes or channels: a model must beat this to have learnt any structure.
    """
    train = _check_windows("train_windows", train_windows)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pool = train.reshape(-1, 4)
    out = np.empty((n, train.shape[1], 4), dtype=np.float32)
    for c in range(4):
        out[..., c] = pool[rng.integers(0, len(pool), (n, train.shape[1])), c]
    return out
