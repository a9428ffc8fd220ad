"""Corpus statistics for the first notebooks (pure functions over event arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from midilib.events import DELTA, DURATION, PITCH, VELOCITY, read_events


def raw_events(root: str | Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    """Unclipped events (s_max = d_max = inf) of every usable file, by relative path."""
    root = Path(root)
    return {
        row["path"]: read_events(root / row["path"], np.inf, np.inf)
        for row in manifest
        if row["status"] == "ok"
    }


def clip_shares(events: np.ndarray, s_max: float, d_max: float) -> dict[str, float]:
    """Share of onset gaps and durations that clipping at s_max / d_max changes."""
    return {
        "delta": float(np.mean(events[:, DELTA] > s_max)),
        "duration": float(np.mean(events[:, DURATION] > d_max)),
    }


def notes_per_second(events: np.ndarray) -> float:
    """Notes per second of a piece (first to last onset)."""
    onsets = np.cumsum(events[:, DELTA])
    span = onsets[-1] - onsets[0]
    return float(len(events) / span) if span > 0 else float("nan")


def corpus_table(manifest: list[dict], raw: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per usable file: composer, title, split, notes, windows, notes/s."""
    df = pd.DataFrame([r for r in manifest if r["status"] == "ok"])
    df["notes"] = df["notes"].astype(int)
    df["windows"] = df["windows"].astype(int)
    df["notes_per_s"] = [notes_per_second(raw[p]) for p in df["path"]]
    return df


def per_composer(table: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    return (
        table.groupby("composer")
        .agg(files=("path", "size"), notes=("notes", "sum"))
        .sort_values("notes", ascending=False)
        .head(top)
    )


def chord_share(raw: dict[str, np.ndarray]) -> float:
    """Share of notes that start together with the previous one (gap 0), first notes excluded."""
    gaps = np.concatenate([e[1:, DELTA] for e in raw.values()])
    return float(np.mean(gaps == 0)) if len(gaps) else float("nan")


def seconds(events: np.ndarray) -> float:
    """Seconds from the first onset to the end of the last note to sound (onsets = cumulative gaps)."""
    ev = np.asarray(events, dtype=float).reshape(-1, 4)
    if not len(ev):
        return 0.0
    onsets = np.cumsum(ev[:, DELTA])
    return float((onsets + ev[:, DURATION]).max() - onsets[0])


def most_common(values: np.ndarray) -> tuple[float, float]:
    """The most frequent value and the share of the values equal to it."""
    uniq, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    if not len(uniq):
        return float("nan"), float("nan")
    k = int(counts.argmax())
    return float(uniq[k]), float(counts[k] / counts.sum())


def window_stats(windows: np.ndarray) -> dict[str, float]:
    """Simple statistics of a set of windows (n, window, 4), to set generated windows beside real ones.

    pitch_range: semitones from the lowest to the highest note of a window (mean over windows);
    zero_gaps: share of onset gaps of exactly 0 (chord notes); median_gap (of the gaps above 0,
    so between chords) and mean_duration in seconds; velocity_spread: standard deviation of the
    velocity within a window in MIDI units (mean over windows); pitch_drift: how far the mean pitch
    moves from one window to the next (mean absolute change in semitones; for an ordered sequence
    of windows such as a walk).
    """
    w = np.asarray(windows, dtype=float)
    if w.ndim != 3 or w.shape[-1] != 4 or not len(w):
        raise ValueError(f"windows must have shape (n, window, 4) with n >= 1, got {w.shape}")
    pitch, gaps = w[:, :, PITCH], w[:, :, DELTA]
    mean_pitch = pitch.mean(1)
    return {
        "pitch_range": float((pitch.max(1) - pitch.min(1)).mean()),
        "zero_gaps": float((gaps == 0).mean()),
        "median_gap": float(np.median(gaps[gaps > 0])) if (gaps > 0).any() else 0.0,
        "mean_duration": float(w[:, :, DURATION].mean()),
        "velocity_spread": float((w[:, :, VELOCITY] * 127).std(1).mean()),
        "pitch_drift": float(np.abs(np.diff(mean_pitch)).mean()) if len(w) > 1 else float("nan"),
    }
