"""Corpus statistics for the first notebooks (pure functions over event arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from midilib.events import DELTA, DURATION, read_events


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
