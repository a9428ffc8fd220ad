"""Evaluation metrics as pure functions over numpy arrays.

Windows are (n, w, 4) condensed events (midilib.events): pitch (integer
value), velocity in [0, 1], delta = seconds since the previous onset,
duration in seconds. Every function here is deterministic given its inputs
(and `seed` where it samples), so the evaluation protocol in
midilib.evaluate can bootstrap and tabulate them without hidden state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

from midilib.events import DELTA, DURATION, PITCH, VELOCITY

CHORD_TOL = 0.02  # onsets closer than 20 ms are heard as one chord
LOG_EPS = 1e-3  # floor inside log(delta), log(duration): about the MIDI tick size
FEATURE_NAMES = (
    "pitch_range",
    "chord_share",
    "polyphony",
    "mean_abs_interval",
    "mean_pitch",
    "mean_velocity",
    "mean_log_delta",
    "mean_log_duration",
)


def _check_windows(windows: np.ndarray, name: str = "windows") -> np.ndarray:
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[-1] != 4 or windows.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, window, 4), got {windows.shape}")
    return windows


def _check_pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _check_windows(true, "true"), _check_windows(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"true and pred shapes differ: {true.shape} vs {pred.shape}")
    return true, pred


# --- reconstruction ----------------------------------------------------------


def pitch_accuracy(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per window, the share of positions whose rounded pitch equals the true pitch.

    Positions are compared in order: a reconstruction that plays the right
    notes in the wrong order is wrong, as it sounds different.
    """
    true, pred = _check_pair(true, pred)
    same = np.rint(true[..., PITCH]) == np.rint(pred[..., PITCH])
    return same.mean(axis=1)


def onsets(windows: np.ndarray) -> np.ndarray:
    """Onset times (n, w) inside each window: the cumulative deltas.

    The first note's delta (its distance to the previous window) is
    included, so a reconstruction is also judged on where the window starts.
    """
    windows = _check_windows(windows)
    return np.cumsum(np.clip(windows[..., DELTA].astype(np.float64), 0.0, None), axis=1)


def note_iou(true: np.ndarray, pred: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """Per window, the mean over notes of the 1-D IoU of [onset, onset + duration].

    Timing errors of reconstructions in one number per note: 1 when a note
    starts and ends where it should, 0 when it does not overlap the truth.
    When the union is empty (both notes have zero duration) the IoU is 1 if
    the onsets agree within `atol` and 0 otherwise.
    """
    true, pred = _check_pair(true, pred)
    s1, s2 = onsets(true), onsets(pred)
    e1 = s1 + np.clip(true[..., DURATION].astype(np.float64), 0.0, None)
    e2 = s2 + np.clip(pred[..., DURATION].astype(np.float64), 0.0, None)
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0.0, None)
    union = (e1 - s1) + (e2 - s2) - inter
    empty = union <= 0.0
    iou = np.where(empty, 0.0, inter / np.where(empty, 1.0, union))
    iou = np.where(empty & (np.abs(s1 - s2) <= atol), 1.0, iou)
    return iou.mean(axis=1)


# --- Gaussian / Frechet ------------------------------------------------------


def gaussian_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (m, d) frames, in float64 (FID/FAD convention)."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[0] < 2:
        raise ValueError(f"frames must have shape (m >= 2, d), got {frames.shape}")
    return frames.mean(axis=0), np.atleast_2d(np.cov(frames, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between two Gaussians: |mu1-mu2|^2 + tr(s1 + s2 - 2 (s1 s2)^1/2).

    tr (s1 s2)^1/2 is taken from the eigenvalues of the symmetric PSD matrix
    s1^1/2 s2 s1^1/2 (same spectrum as s1 s2), which avoids the complex
    round-off of a general sqrtm and works for singular covariances.
    Tiny negative results from round-off are clamped to 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}"
        )
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


# --- per-channel distribution distances ----------------------------------------


def channel_edges(s_max: float = 2.0, d_max: float = 2.0) -> dict[int, np.ndarray]:
    """Fixed histogram bin edges per channel, so every set is binned identically.

    Pitch: 128 integer bins; velocity: 32 bins on [0, 1]; delta and duration:
    one bin [0, 1 ms) for chords / staccato-at-tick, then 63 log-spaced bins
    up to s_max / d_max (timing matters in ratios, not in seconds).
    """
    if s_max <= LOG_EPS or d_max <= LOG_EPS:
        raise ValueError(f"s_max and d_max must exceed {LOG_EPS}, got {s_max}, {d_max}")
    return {
        PITCH: np.arange(129, dtype=np.float64) - 0.5,
        VELOCITY: np.linspace(0.0, 1.0, 33),
        DELTA: np.concatenate([[0.0], np.geomspace(LOG_EPS, s_max, 64)]),
        DURATION: np.concatenate([[0.0], np.geomspace(LOG_EPS, d_max, 64)]),
    }


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value (int64); values outside the edges go to the end bins."""
    idx = np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.float64), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalised histogram (sums to 1) of values on fixed edges (end bins absorb outliers)."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        raise ValueError("cannot histogram an empty set of values")
    counts = np.bincount(bin_index(values, edges), minlength=len(edges) - 1)
    return counts / counts.sum()


def overlap_area(
    a: np.ndarray,
    b: np.ndarray,
    bins: int | np.ndarray = 64,
    range: tuple[float, float] | None = None,  # noqa: A002 - numpy's name
) -> float:
    """Overlapping area of the two normalised histograms, in [0, 1] (1 = identical).

    `bins` is a count (with `range`, default: the pooled min..max) or explicit
    edges; use channel_edges() so that every set is binned the same way.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        lo, hi = range if range is not None else (min(a.min(), b.min()), max(a.max(), b.max()))
        if not hi > lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a 1-D increasing array of length >= 2")
    return float(np.minimum(histogram(a, edges), histogram(b, edges)).sum())


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """1-D earth mover's distance between two samples, in the channel's own units."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein needs two non-empty samples")
    return float(scipy.stats.wasserstein_distance(a, b))


def pitch_class_histogram(windows: np.ndarray) -> np.ndarray:
    """Share of notes (12,) on each pitch class C, C#, ..., B: the key/tonality profile."""
    windows = _check_windows(windows)
    pcs = np.clip(np.rint(windows[..., PITCH]), 0, 127).astype(np.int64) % 12
    counts = np.bincount(pcs.ravel(), minlength=12)
    return counts / counts.sum()


def pitch_class_distance(h1: np.ndarray, h2: np.ndarray) -> float:
    """Total variation distance 0.5 * L1 between two pitch-class histograms, in [0, 1].

    Chosen over Jensen-Shannon because it reads directly: the share of notes
    that would have to change pitch class to turn one profile into the other.
    """
    h1, h2 = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
    if h1.shape != (12,) or h2.shape != (12,):
        raise ValueError(f"pitch-class histograms must have shape (12,), got {h1.shape}, {h2.shape}")
    return float(0.5 * np.abs(h1 / h1.sum() - h2 / h2.sum()).sum())


# --- in-window statistics -------------------------------------------------------


def pitch_range(windows: np.ndarray) -> np.ndarray:
    """Per window, highest minus lowest pitch (semitones)."""
    p = np.rint(_check_windows(windows)[..., PITCH])
    return (p.max(axis=1) - p.min(axis=1)).astype(np.float64)


def chord_share(windows: np.ndarray, tol: float = CHORD_TOL) -> np.ndarray:
    """Per window, the share of notes 2..w struck with the previous one (delta <= tol).

    The first note is excluded: its delta points outside the window. Real
    performances spread a chord over a few ms, hence the tolerance.
    """
    windows = _check_windows(windows)
    if windows.shape[1] < 2:
        raise ValueError("chord_share needs windows of at least 2 notes")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return (windows[:, 1:, DELTA] <= tol).mean(axis=1)


def polyphony(windows: np.ndarray) -> np.ndarray:
    """Per window, the mean number of notes sounding at each note's onset (itself included).

    A note j sounds at time t when onset_j <= t < onset_j + duration_j.
    """
    windows = _check_windows(windows)
    on = onsets(windows)
    off = on + np.clip(windows[..., DURATION].astype(np.float64), 0.0, None)
    t = on[:, :, None]  # (n, i, 1): the onset of note i
    sounding = (on[:, None, :] <= t) & (off[:, None, :] > t)
    sounding |= np.eye(windows.shape[1], dtype=bool)[None]
    return sounding.sum(axis=2).mean(axis=1).astype(np.float64)


def mean_abs_interval(windows: np.ndarray) -> np.ndarray:
    """Per window, the mean |pitch_{i+1} - pitch_i| in semitones (melodic leap size)."""
    windows = _check_windows(windows)
    if windows.shape[1] < 2:
        raise ValueError("mean_abs_interval needs windows of at least 2 notes")
    p = np.rint(windows[..., PITCH].astype(np.float64))
    return np.abs(np.diff(p, axis=1)).mean(axis=1)


def window_features(windows: np.ndarray) -> np.ndarray:
    """Per window, a feature vector (n, 8) in the order of FEATURE_NAMES.

    These summarise harmony, texture, melody, dynamics and rhythm of a window;
    their joint distribution is what feature_frechet compares.
    """
    windows = _check_windows(windows).astype(np.float64)
    return np.stack(
        [
            pitch_range(windows),
            chord_share(windows),
            polyphony(windows),
            mean_abs_interval(windows),
            windows[..., PITCH].mean(axis=1),
            windows[..., VELOCITY].mean(axis=1),
            np.log(np.clip(windows[..., DELTA], 0.0, None) + LOG_EPS).mean(axis=1),
            np.log(np.clip(windows[..., DURATION], 0.0, None) + LOG_EPS).mean(axis=1),
        ],
        axis=1,
    )


def standardise(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Features z-scored with the reference's mean and std (constant features left at scale 1)."""
    mu, sd = reference.mean(axis=0), reference.std(axis=0)
    return (features - mu) / np.where(sd > 0, sd, 1.0)


def feature_frechet(generated: np.ndarray, reference: np.ndarray) -> float:
    """Frechet distance between the window_features of two sets ("FMD", symbolic).

    Features are z-scored with the reference's statistics first, so that mean
    pitch (std ~10 semitones) does not drown chord share (std ~0.2).
    """
    fg, fr = window_features(generated), window_features(reference)
    if len(fg) < 2 or len(fr) < 2:
        raise ValueError("feature_frechet needs at least 2 windows per set")
    return frechet_distance(*gaussian_stats(standardise(fg, fr)), *gaussian_stats(standardise(fr, fr)))


# --- musicality in the window -------------------------------------------------------

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)  # natural minor scales hold the same 12 pitch-class sets
IOI_BINS_PER_OCTAVE = 2  # inter-onset bins a half octave (x1.41) wide


def _window_pc_counts(windows: np.ndarray) -> np.ndarray:
    """Per window, the count of notes on each pitch class (n, 12)."""
    pcs = np.clip(np.rint(_check_windows(windows)[..., PITCH]), 0, 127).astype(np.int64) % 12
    n = len(pcs)
    flat = (pcs + 12 * np.arange(n)[:, None]).ravel()
    return np.bincount(flat, minlength=12 * n).reshape(n, 12).astype(np.float64)


def scale_consistency(windows: np.ndarray) -> np.ndarray:
    """Per window, the largest share of its notes that lie in one diatonic scale.

    sc = max over the 24 major and minor keys k of |{notes in k}| / |notes|
    (muspy's `scale_consistency`, applied to each window; minor keys are
    rotations of major ones, so 12 pitch-class sets suffice). Tonal music
    scores near 1; uniformly random pitches score about 0.83 on 8 notes.
    """
    counts = _window_pc_counts(windows)
    member = np.zeros((12, 12))
    for root in range(12):
        member[[(root + step) % 12 for step in MAJOR_SCALE], root] = 1.0
    return (counts @ member).max(axis=1) / counts.sum(axis=1)


def _entropy_bits(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


def pitch_class_entropy(windows: np.ndarray) -> np.ndarray:
    """Per window, the Shannon entropy (bits) of its pitch-class histogram.

    H = -sum_c p_c log2 p_c with p_c the share of the window's notes on pitch
    class c (muspy's `pitch_class_entropy`, per window): 0 for one pitch class,
    log2(8) = 3 for 8 notes on 8 classes.
    """
    return _entropy_bits(_window_pc_counts(windows))


def ioi_edges(s_max: float = 2.0) -> np.ndarray:
    """Bin edges of inter-onset intervals: [0, CHORD_TOL) is "together", then bins half an
    octave wide (ratio sqrt 2) up to s_max, the last one closed."""
    if s_max <= CHORD_TOL:
        raise ValueError(f"s_max must exceed {CHORD_TOL}, got {s_max}")
    octaves = np.log2(s_max / CHORD_TOL)
    k = int(np.ceil(octaves * IOI_BINS_PER_OCTAVE))
    return np.concatenate([[0.0], CHORD_TOL * 2.0 ** (np.arange(k + 1) / IOI_BINS_PER_OCTAVE)])


def ioi_entropy(windows: np.ndarray, s_max: float = 2.0) -> np.ndarray:
    """Per window, the entropy (bits) of its inter-onset intervals on a log grid.

    The gaps delta_2..delta_w inside the window (the first points outside it)
    are binned by `ioi_edges` (chords in one bin, then ratio-sqrt(2) bins), and
    H = -sum_b p_b log2 p_b. A steady rhythm scores 0, seven different gaps
    log2 7 = 2.81: a measure of rhythmic variety that ignores tempo.
    """
    windows = _check_windows(windows)
    if windows.shape[1] < 2:
        raise ValueError("ioi_entropy needs windows of at least 2 notes")
    edges = ioi_edges(s_max)
    idx = bin_index(windows[:, 1:, DELTA], edges)
    n, bins = len(idx), len(edges) - 1
    flat = (idx + bins * np.arange(n)[:, None]).ravel()
    return _entropy_bits(np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float64))


# --- novelty --------------------------------------------------------------------


def _pitch_keys(windows: np.ndarray) -> np.ndarray:
    """A uint64 key per window from its rounded pitch sequence (exact for w <= 9)."""
    p = np.clip(np.rint(windows[..., PITCH]), 0, 127).astype(np.uint64)
    key = np.zeros(len(windows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(p.shape[1]):  # polynomial hash mod 2^64; base 128 = exact packing
            key = key * np.uint64(128) + p[:, j]
    return key


def copy_mask(generated: np.ndarray, train: np.ndarray, tol: float = 0.01) -> np.ndarray:
    """Per generated window, whether it copies some training window.

    A copy has the same rounded pitch sequence and every velocity, delta and
    duration within `tol` (absolute; tol=0 asks for exact equality). Windows
    are first matched on a hash of their pitch sequence (sorted keys +
    searchsorted), and only those candidates are compared value by value, so
    10k x 500k windows take seconds.
    """
    generated, train = _check_windows(generated, "generated"), _check_windows(train, "train")
    if generated.shape[1] != train.shape[1]:
        raise ValueError(f"window lengths differ: {generated.shape[1]} vs {train.shape[1]}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    tkeys = _pitch_keys(train)
    order = np.argsort(tkeys, kind="stable")
    tkeys = tkeys[order]
    gkeys = _pitch_keys(generated)
    lo = np.searchsorted(tkeys, gkeys, side="left")
    hi = np.searchsorted(tkeys, gkeys, side="right")
    gp = np.rint(generated[..., PITCH])
    tp = np.rint(train[..., PITCH])
    out = np.zeros(len(generated), dtype=bool)
    for i in np.flatnonzero(hi > lo):
        cand = order[lo[i] : hi[i]]
        same_pitch = (tp[cand] == gp[i]).all(axis=1)
        diff = np.abs(train[cand][:, :, 1:] - generated[i, :, 1:]).max(axis=(1, 2))
        out[i] = bool(np.any(same_pitch & (diff <= tol)))
    return out


def copy_rate(generated: np.ndarray, train: np.ndarray, tol: float = 0.01) -> float:
    """Share of generated windows that copy a training window (see copy_mask)."""
    return float(copy_mask(generated, train, tol).mean())


# --- bootstrap ------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    groups: np.ndarray | None = None,
    paired: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap: (statistic(*arrays), low, high) at level 1 - alpha.

    paired=True resamples the rows of all arrays together (e.g. true/pred
    pairs); with `groups` (an id per row, e.g. the source file) whole groups
    are resampled instead, because windows of one piece are not independent.
    paired=False resamples every array on its own (two-sample statistics such
    as a distance between generated and reference sets).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arrays = tuple(np.asarray(a) for a in arrays)
    if any(len(a) == 0 for a in arrays):
        raise ValueError("bootstrap_ci cannot resample an empty array")
    rng = np.random.default_rng(seed)
    point = float(statistic(*arrays))
    if paired:
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(f"paired arrays need equal lengths, got {[len(a) for a in arrays]}")
        draw = _group_sampler(groups, n, rng)
        reps = [float(statistic(*(a[idx] for a in arrays))) for idx in map(draw, range(n_boot))]
    else:
        if groups is not None:
            raise ValueError("groups need paired=True (one id per row of every array)")
        reps = [
            float(statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays)))
            for _ in range(n_boot)
        ]
    low, high = np.quantile(np.asarray(reps), [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(low), float(high)


def _group_sampler(
    groups: np.ndarray | None, n: int, rng: np.random.Generator
) -> Callable[[int], np.ndarray]:
    if groups is None:
        return lambda _: rng.integers(0, n, n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    members: Sequence[np.ndarray] = np.split(np.argsort(inverse, kind="stable"),
                                             np.cumsum(np.bincount(inverse))[:-1])
    k = len(members)
    return lambda _: np.concatenate([members[g] for g in rng.integers(0, k, k)])
