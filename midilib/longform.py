"""Metrics of long pieces, as pure functions over note arrays (muspy's style).

A piece is an (n, 4) array of notes (pitch, velocity/127, seconds since the previous
onset, duration), or (L, W, 4) windows of it, taken in order. Window metrics
(midilib.metrics) say whether each 8 notes sound right; these say whether a piece
holds together over many windows:

- framewise self-similarity (Mittal, Engel, Hawthorne and Simon, "Symbolic Music
  Generation with Diffusion Models", ISMIR 2021, section 5.2): a Gaussian fitted to
  the pitches (and the durations) of each frame, the overlapping area OA of adjacent
  frames' Gaussians, and how the set's OA mean and variance compare with real music
  (`framewise_similarity`);
- `piece_scale_consistency`: the share of a whole piece's notes in its best diatonic scale;
- `clips`: non-overlapping clips of a few windows, for FD∞ over clips (midilib.frechet);
- `shuffled_windows`: a long-piece baseline that needs no model: real windows, each
  piece drawn from different pieces (every window right, no long-range structure).

Frames. Mittal et al. use 4-measure frames with a 2-measure hop over quantised
melodies. Performed piano has no measures to cut at, so a frame here is FRAME = 16
consecutive notes (two 8-note windows) with a hop of HOP = 8 (one window): adjacent
frames share half their notes, as theirs do, and each frame straddles a boundary
between windows, which is where a window-by-window generator can break. Both are
parameters; compare sets only at the same frame and hop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from midilib.events import DURATION, PITCH
from midilib.intervals import jackknife_se, units

FRAME = 16  # notes per frame (two 8-note windows)
HOP = 8  # notes between frame starts (one window)
CHANNELS = {"pitch": PITCH, "duration": DURATION}
# a frame of one repeated value still has a proper Gaussian: its variance is floored at that of a
# uniform rounding error on the channel's grid (1 semitone; 1 ms, about a MIDI tick)
VAR_FLOOR = {"pitch": 1.0 / 12.0, "duration": 1e-6 / 12.0}


def as_notes(piece: np.ndarray) -> np.ndarray:
    """A piece as (n, 4) float64 notes: (n, 4) as is, (L, W, 4) windows concatenated in order."""
    piece = np.asarray(piece, dtype=np.float64)
    if piece.ndim == 3 and piece.shape[-1] == 4:
        piece = piece.reshape(-1, 4)
    if piece.ndim != 2 or piece.shape[1] != 4:
        raise ValueError(f"a piece must be (n, 4) notes or (L, W, 4) windows, got {piece.shape}")
    return piece


# --- the overlapping area of two Gaussians ----------------------------------------------------


def gaussian_overlap(mu1, var1, mu2, var2) -> np.ndarray:
    """OA = integral of min(N(x; mu1, var1), N(x; mu2, var2)) dx, in [0, 1]; broadcasts.

    Closed form through the points where the densities cross. With equal variances
    there is one, the midpoint, and OA = 2 Phi(-|mu1 - mu2| / (2 sigma)). Otherwise,
    with a the narrower Gaussian (var_a < var_b), they cross at the two roots x1 < x2 of

        (x - mu_a)^2 / var_a - (x - mu_b)^2 / var_b + 2 log(sigma_a / sigma_b) = 0,

    N_a lies above N_b between them and below outside, so

        OA = Phi_a(x1) + 1 - Phi_a(x2) + Phi_b(x2) - Phi_b(x1).

    (Mittal et al.'s code keeps one crossing, which is exact for equal variances only.)
    Variances must be positive.
    """
    mu1, var1, mu2, var2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (mu1, var1, mu2, var2)))
    if not (np.all(var1 > 0) and np.all(var2 > 0)):
        raise ValueError("gaussian_overlap needs positive variances")
    swap = var1 > var2
    mu_a, mu_b = np.where(swap, mu2, mu1), np.where(swap, mu1, mu2)
    var_a, var_b = np.where(swap, var2, var1), np.where(swap, var1, var2)
    sd_a, sd_b = np.sqrt(var_a), np.sqrt(var_b)
    equal = (var_b - var_a) <= 1e-9 * var_b
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((var_a + var_b) / 2.0)
        oa_equal = 2.0 * scipy.special.ndtr(-np.abs(mu_a - mu_b) / (2.0 * sd))
        a = 1.0 / var_a - 1.0 / var_b
        b = -2.0 * (mu_a / var_a - mu_b / var_b)
        c = mu_a**2 / var_a - mu_b**2 / var_b + 2.0 * np.log(sd_a / sd_b)
        root = np.sqrt(np.clip(b * b - 4.0 * a * c, 0.0, None))
        q = -0.5 * (b + np.where(b >= 0, 1.0, -1.0) * root)  # the stable pair of roots: q / a, c / q
        r1 = q / a
        r2 = np.where(q != 0, c / np.where(q != 0, q, 1.0), -r1)
        x1, x2 = np.minimum(r1, r2), np.maximum(r1, r2)
        phi = scipy.special.ndtr
        oa = (phi((x1 - mu_a) / sd_a) + 1.0 - phi((x2 - mu_a) / sd_a)
              + phi((x2 - mu_b) / sd_b) - phi((x1 - mu_b) / sd_b))
    return np.clip(np.where(equal, oa_equal, oa), 0.0, 1.0)


# --- framewise self-similarity ----------------------------------------------------------------


def frame_gaussians(values: np.ndarray, frame: int = FRAME, hop: int = HOP,
                    var_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(means, variances) of the frames values[s : s + frame], s = 0, hop, 2 hop, ... (whole
    frames only); variances (ddof 0) floored at `var_floor`. Empty if len(values) < frame."""
    if frame < 2 or hop < 1:
        raise ValueError(f"frame must be >= 2 and hop >= 1, got {frame}, {hop}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) < frame:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(values, frame)[::hop]
    return frames.mean(axis=1), np.maximum(frames.var(axis=1), var_floor)


def oa_series(piece: np.ndarray, channel: str = "pitch", frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    """OA of each pair of adjacent frames of a piece: (frames - 1,), empty for a piece with
    fewer than two frames (n < frame + hop). `channel`: "pitch" or "duration"."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    mean, var = frame_gaussians(as_notes(piece)[:, CHANNELS[channel]], frame, hop, VAR_FLOOR[channel])
    return gaussian_overlap(mean[:-1], var[:-1], mean[1:], var[1:]) if len(mean) >= 2 else np.zeros(0)


def consistency_variance(mean_oa: float, var_oa: float, mean_gt: float, var_gt: float) -> tuple[float, float]:
    """Mittal et al.'s scores of a set's OA moments against the ground truth's:

        Consistency = max(0, 1 - |mu_OA - mu_GT| / mu_GT)
        Variance    = max(0, 1 - |var_OA - var_GT| / var_GT)

    1 is "as self-similar as real music", both for too little change (OA near 1) and
    too much (OA near 0). Variance is NaN where var_GT is 0.
    """
    consistency = max(0.0, 1.0 - abs(mean_oa - mean_gt) / mean_gt) if mean_gt > 0 else float("nan")
    variance = max(0.0, 1.0 - abs(var_oa - var_gt) / var_gt) if var_gt > 0 else float("nan")
    return consistency, variance


@dataclass
class SelfSimilarity:
    """Framewise self-similarity of a set against ground truth, for one channel."""

    channel: str
    mean_oa: float  # mu_OA of the set: the mean OA over every adjacent-frame pair of every piece
    var_oa: float  # sigma^2_OA (ddof 0)
    mean_gt: float
    var_gt: float
    consistency: tuple[float, float, float]  # (value, low, high)
    variance: tuple[float, float, float]
    units: int  # units (pieces, or groups of them) of the set with two frames or more
    pairs: int  # adjacent-frame pairs of the set


def _unit_sums(
    pieces: Sequence[np.ndarray] | np.ndarray, groups: np.ndarray | None, channel: str, frame: int, hop: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (a group of pieces, or each piece), the sum, sum of squares and count of its OA
    values; pieces with fewer than two frames add nothing. ValueError below two units."""
    series = [oa_series(p, channel, frame, hop) for p in pieces]
    unit = units(None if groups is None else np.asarray(groups), len(series))
    kept = np.array([len(x) > 0 for x in series], dtype=bool)
    if len(np.unique(unit[kept])) < 2:
        raise ValueError(f"need two pieces (or groups) or more with at least frame + hop = {frame + hop} "
                         f"notes, got {len(np.unique(unit[kept]))}")
    unit = np.unique(unit[kept], return_inverse=True)[1]
    series = [x for x, k in zip(series, kept) if k]
    sums = np.array([[x.sum(), (x**2).sum(), len(x)] for x in series], dtype=np.float64)
    return tuple(np.bincount(unit, weights=sums[:, j]) for j in range(3))


def _moments(sums: np.ndarray, squares: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = sums / counts
    return mean, np.maximum(squares / counts - mean**2, 0.0)


def framewise_similarity(
    generated: Sequence[np.ndarray] | np.ndarray, reference: Sequence[np.ndarray] | np.ndarray,
    channel: str = "pitch", frame: int = FRAME, hop: int = HOP, alpha: float = 0.05,
    generated_groups: np.ndarray | None = None, reference_groups: np.ndarray | None = None,
) -> SelfSimilarity:
    """Consistency and Variance of `generated` pieces against `reference` (real, e.g. test) pieces.

    OA values are pooled over all adjacent-frame pairs of all pieces of a set (pieces
    with fewer than two frames are skipped). Intervals: delete-one-unit jackknife,
    over the generated units and over the reference units, the two independent
    standard errors added in quadrature, value +- t_{1-alpha/2, k-1} se with k the
    fewer units of the two sets (`intervals.jackknife_se`). A unit is a piece, or
    where `*_groups` gives one id per piece, a group: clips cut from one real file
    (`clips`' owner) are one unit, not many.
    """
    gs, gq, gc = _unit_sums(generated, generated_groups, channel, frame, hop)
    rs, rq, rc = _unit_sums(reference, reference_groups, channel, frame, hop)
    mean_oa, var_oa = _moments(gs.sum(), gq.sum(), gc.sum())
    mean_gt, var_gt = _moments(rs.sum(), rq.sum(), rc.sum())
    value = consistency_variance(mean_oa, var_oa, mean_gt, var_gt)
    # leave one generated piece out (ground truth whole), then one reference piece out
    g_loo = _moments(gs.sum() - gs, gq.sum() - gq, gc.sum() - gc)
    r_loo = _moments(rs.sum() - rs, rq.sum() - rq, rc.sum() - rc)
    loo_g = np.array([consistency_variance(m, v, mean_gt, var_gt) for m, v in zip(*g_loo)])
    loo_r = np.array([consistency_variance(mean_oa, var_oa, m, v) for m, v in zip(*r_loo)])
    t = float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df=min(len(gs), len(rs)) - 1))
    intervals = []
    for j, v in enumerate(value):
        se = float(np.hypot(jackknife_se(loo_g[:, j]), jackknife_se(loo_r[:, j])))
        intervals.append((v, max(v - t * se, 0.0), min(v + t * se, 1.0)))
    return SelfSimilarity(channel, float(mean_oa), float(var_oa), float(mean_gt), float(var_gt),
                          intervals[0], intervals[1], len(gs), int(gc.sum()))


def framewise_table(
    generated: Sequence[np.ndarray] | np.ndarray, reference: Sequence[np.ndarray] | np.ndarray,
    frame: int = FRAME, hop: int = HOP,
    generated_groups: np.ndarray | None = None, reference_groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """`framewise_similarity` of pitch and duration as a table (one row per channel)."""
    rows = []
    for channel in CHANNELS:
        s = framewise_similarity(generated, reference, channel, frame, hop,
                                 generated_groups=generated_groups, reference_groups=reference_groups)
        rows.append({
            "channel": channel, "consistency": s.consistency[0], "consistency_low": s.consistency[1],
            "consistency_high": s.consistency[2], "variance": s.variance[0], "variance_low": s.variance[1],
            "variance_high": s.variance[2], "mean_oa": s.mean_oa, "var_oa": s.var_oa,
            "mean_gt": s.mean_gt, "var_gt": s.var_gt, "units": s.units, "pairs": s.pairs,
        })
    return pd.DataFrame(rows)


# --- whole-piece tonality ---------------------------------------------------------------------


def piece_scale_consistency(piece: np.ndarray) -> float:
    """The largest share of the whole piece's notes in one diatonic scale:
    max over the 24 major and minor keys k of |{notes in k}| / |notes|
    (`metrics.scale_consistency` applied to the piece as one window)."""
    from midilib.metrics import scale_consistency

    notes = as_notes(piece)
    if len(notes) == 0:
        raise ValueError("piece_scale_consistency of an empty piece")
    return float(scale_consistency(notes[None])[0])


# --- cutting and assembling pieces ------------------------------------------------------------


def pieces_of(windows: np.ndarray, owner: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """(pieces, ids): the windows (n, W, 4) of each owner (a file id per window), concatenated
    in row order into (n_g * W, 4) notes; ids sorted."""
    windows, owner = np.asarray(windows), np.asarray(owner)
    if windows.ndim != 3 or windows.shape[-1] != 4 or owner.shape != (len(windows),):
        raise ValueError(f"need windows (n, W, 4) and one owner per window, got {windows.shape}, {owner.shape}")
    ids = np.unique(owner)
    return [windows[owner == i].reshape(-1, 4) for i in ids], ids


def clips(
    pieces: Sequence[np.ndarray] | np.ndarray, windows_per_clip: int = 4, window: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(clips, owner): each piece cut into non-overlapping clips of `windows_per_clip`
    consecutive windows of `window` notes, from its start (a shorter tail is dropped).

    `pieces`: an (N, L, 4) array or a sequence of (n_i, 4) notes or (L_i, W, 4) windows.
    Returns clips (M, windows_per_clip * window, 4) float32 and the index in `pieces` of
    each clip's piece, for `frechet.frechet_inf(features, owner, ...)` over clips, whose
    intervals must resample pieces, not clips.
    """
    if windows_per_clip < 1 or window < 1:
        raise ValueError(f"windows_per_clip and window must be >= 1, got {windows_per_clip}, {window}")
    length = windows_per_clip * window
    parts, owner = [], []
    for i, piece in enumerate(pieces):
        notes = as_notes(piece)
        k = len(notes) // length
        if k:
            parts.append(notes[: k * length].reshape(k, length, 4))
            owner.append(np.full(k, i))
    if not parts:
        return np.zeros((0, length, 4), np.float32), np.zeros(0, np.int64)
    return np.concatenate(parts).astype(np.float32), np.concatenate(owner)


def shuffled_windows(
    windows: np.ndarray, owner: np.ndarray, n_pieces: int, windows_per_piece: int, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A baseline for long pieces: (pieces, sources) of `n_pieces` pieces of `windows_per_piece`
    real windows each, every window of a piece drawn from a different source piece.

    For each piece: `windows_per_piece` distinct owners at random (when there are fewer
    owners than that, a random sequence in which no owner follows itself: adjacent
    windows always come from different pieces), then one window of each at random, in
    the order drawn. Each window is real, the piece has no
    long-range structure: what a long-piece metric must score below real music.
    pieces: (n_pieces, windows_per_piece * W, 4) float32; sources: (n_pieces,
    windows_per_piece), the owner of each window. Deterministic given `seed`.
    """
    windows, owner = np.asarray(windows), np.asarray(owner)
    if windows.ndim != 3 or windows.shape[-1] != 4 or owner.shape != (len(windows),):
        raise ValueError(f"need windows (n, W, 4) and one owner per window, got {windows.shape}, {owner.shape}")
    ids, index = np.unique(owner, return_inverse=True)
    if len(ids) < 2 or windows_per_piece < 1:
        raise ValueError(f"need two source pieces or more and windows_per_piece >= 1, got {len(ids)} "
                         f"and {windows_per_piece}")
    if n_pieces < 1:
        raise ValueError(f"n_pieces must be >= 1, got {n_pieces}")
    rows_of = np.split(np.argsort(index, kind="stable"), np.cumsum(np.bincount(index))[:-1])
    rng = np.random.default_rng(seed)
    chosen = np.empty((n_pieces, windows_per_piece), dtype=np.int64)
    sources = np.empty((n_pieces, windows_per_piece), dtype=ids.dtype)
    for p in range(n_pieces):
        if windows_per_piece <= len(ids):
            picks = rng.choice(len(ids), windows_per_piece, replace=False)
        else:  # each owner unlike the one before: a uniform draw among the other len(ids) - 1
            picks = np.empty(windows_per_piece, dtype=np.int64)
            picks[0] = rng.integers(len(ids))
            for j in range(1, windows_per_piece):
                step = rng.integers(1, len(ids))
                picks[j] = (picks[j - 1] + step) % len(ids)
        chosen[p] = [rows_of[k][rng.integers(len(rows_of[k]))] for k in picks]
        sources[p] = ids[picks]
    pieces = windows[chosen.ravel()].reshape(n_pieces, -1, 4).astype(np.float32)
    return pieces, sources
