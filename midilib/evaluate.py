"""The evaluation protocol: every generated set against held-out test windows.

The original study compared generated windows with the first 10k TRAINING
windows (about 22 pieces), unclamped, with no interval. Here the reference is
a random sample of TEST windows across all test files; every set (reference
included) is clipped to the valid ranges the same way; each row gets
bootstrap 95% intervals (both sets resampled, corrected for the shift
that resampling itself gives a distance; see _interval); and three calibration rows say
what "good" and "bad" look like:

- "floor (train vs test)": fresh training windows; real music the model could
  at best imitate, so no model should be expected to beat it;
- "baseline: marginals": each channel of each note drawn independently from
  the training marginals; right notes and rhythms, no structure;
- "baseline: uniform": every channel uniform over its valid range.

The bootstrap is vectorised: a replicate is a vector of multinomial counts
per window, so histograms are `counts @ per-window-histograms`, Wasserstein
distances are signed cumulative sums over presorted pooled values, and
Gaussian statistics are weighted moments.
"""

from __future__ import annotations

import json
import os
import platform
import zipfile
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse

from midilib import metrics as M
from midilib.atomic import atomic_write
from midilib.events import DELTA, DURATION, PITCH, VELOCITY

FLOOR = "floor (train vs test)"
UNIFORM = "baseline: uniform"
MARGINALS = "baseline: marginals"
CALIBRATION = (FLOOR, MARGINALS, UNIFORM)
CHANNELS = {"pitch": PITCH, "velocity": VELOCITY, "delta": DELTA, "duration": DURATION}
WINDOW_STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pitch_range": M.pitch_range,
    "chord_share": M.chord_share,
    "polyphony": M.polyphony,
    "mean_abs_interval": M.mean_abs_interval,
}
# column -> (True if higher is better, what it measures)
METRICS: dict[str, tuple[bool, str]] = {
    **{f"overlap_{c}": (True, f"{c} histogram overlap") for c in CHANNELS},
    **{f"w1_{c}": (False, f"{c} Wasserstein-1") for c in CHANNELS},
    "pitch_class_tv": (False, "pitch-class histogram total variation"),
    **{f"w1_{s}": (False, f"{s.replace('_', ' ')} (per window) Wasserstein-1") for s in WINDOW_STATS},
    "fmd": (False, "Frechet distance of window features (z-scored)"),
    "copy_rate": (False, "share of windows copying a training window"),
    "fad": (False, "Frechet audio distance"),
}
# Wasserstein distances of channels are taken on values rounded to what a MIDI
# file holds anyway (integer pitch, 1/127 velocity steps, 1 ms), which moves
# them by at most half a step and keeps the bootstrap fast.
QUANTUM = {PITCH: 1.0, VELOCITY: 1.0 / 127.0, DELTA: 1e-3, DURATION: 1e-3}
START_MARKER, END_MARKER = "<!-- results:start -->", "<!-- results:end -->"


# --- sets ---------------------------------------------------------------------


def clip_windows(windows: np.ndarray, s_max: float = 2.0, d_max: float = 2.0) -> np.ndarray:
    """Windows clipped to the valid ranges (float32 copy): what gets played and compared.

    Pitch rounded and clipped to 0..127, velocity to [0, 1], delta to
    [0, s_max], duration to [0, d_max]; non-finite values are an error, not
    something to clip silently.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[-1] != 4 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"windows must have shape (n >= 1, window, 4), got {w.shape}")
    if s_max <= 0 or d_max <= 0:
        raise ValueError(f"s_max and d_max must be > 0, got {s_max}, {d_max}")
    bad = ~np.isfinite(w).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(w)} windows contain NaN or inf values")
    out = np.empty(w.shape, dtype=np.float32)
    out[..., PITCH] = np.clip(np.rint(w[..., PITCH]), 0, 127)
    out[..., VELOCITY] = np.clip(w[..., VELOCITY], 0.0, 1.0)
    out[..., DELTA] = np.clip(w[..., DELTA], 0.0, s_max)
    out[..., DURATION] = np.clip(w[..., DURATION], 0.0, d_max)
    return out


def _sample(windows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(windows) == 0:
        raise ValueError("cannot sample from an empty set of windows")
    idx = rng.choice(len(windows), size=n, replace=n > len(windows))
    return np.asarray(windows)[idx]


def reference_windows(
    test_windows: np.ndarray, n: int, seed: int = 0, s_max: float = 2.0, d_max: float = 2.0
) -> np.ndarray:
    """n random test windows (without replacement when there are enough), clipped."""
    return clip_windows(_sample(test_windows, n, np.random.default_rng(seed)), s_max, d_max)


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


def independent_marginals_windows(
    train_windows: np.ndarray, n: int, seed: int = 0
) -> np.ndarray:
    """Each channel of each note drawn independently from the training marginal.

    Right pitch, dynamics and rhythm distributions with no relation between
    notes or channels: a model must beat this to have learnt any structure.
    """
    train = M._check_windows(train_windows, "train_windows")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pool = train.reshape(-1, 4)
    out = np.empty((n, train.shape[1], 4), dtype=np.float32)
    for c in range(4):
        out[..., c] = pool[rng.integers(0, len(pool), (n, train.shape[1])), c]
    return out


# --- vectorised bootstrap -------------------------------------------------------


def _set_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, set name): rows do not depend on the order of sets."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, n) float32 multinomial counts; row 0 is all ones (the point estimate)."""
    out = np.ones((1 + n_boot, n), dtype=np.float32)
    chunk = max(1, 4_000_000 // n)
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        flat = rng.integers(0, n, (b, n)) + (np.arange(b) * n)[:, None]
        out[1 + s : 1 + s + b] = np.bincount(flat.ravel(), minlength=b * n).reshape(b, n)
    return out


def _hist_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-window histogram counts (n, bins) of (n, k) values."""
    idx = M.bin_index(values, edges)
    n, bins = idx.shape[0], len(edges) - 1
    flat = (idx + (np.arange(n) * bins)[:, None]).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float32)


def _normalised(h: np.ndarray) -> np.ndarray:
    return h / h.sum(axis=1, keepdims=True)


def _weighted_w1(xg: np.ndarray, xr: np.ndarray, wg: np.ndarray, wr: np.ndarray) -> np.ndarray:
    """Wasserstein-1 per replicate between window-weighted samples of (n, k) values.

    W1 = integral |F_g - F_r| over the pooled distinct values: each window's
    values are a sparse row of counts over those, so a replicate's CDFs are
    `weights @ counts` then a cumulative sum. Cost grows with the number of
    distinct values, hence the quantisation in QUANTUM.
    """
    xg, xr = xg.reshape(len(xg), -1), xr.reshape(len(xr), -1)
    grid, inverse = np.unique(np.concatenate([xg.ravel(), xr.ravel()]), return_inverse=True)
    gaps = np.diff(grid.astype(np.float64))
    split = xg.size

    def counts(codes: np.ndarray, n: int, k: int) -> scipy.sparse.csr_matrix:
        rows = np.repeat(np.arange(n), k)
        return scipy.sparse.csr_matrix(
            (np.ones(n * k, np.float32), (rows, codes)), shape=(n, len(grid))
        )

    cg_t = counts(inverse[:split], len(xg), xg.shape[1]).T.tocsr()
    cr_t = counts(inverse[split:], len(xr), xr.shape[1]).T.tocsr()
    out = np.empty(len(wg))
    chunk = max(1, 2_000_000 // len(grid))
    for s in range(0, len(wg), chunk):
        hg = np.asarray((cg_t @ wg[s : s + chunk].T).T, dtype=np.float64)
        hr = np.asarray((cr_t @ wr[s : s + chunk].T).T, dtype=np.float64)
        diff = np.cumsum(_normalised(hg) - _normalised(hr), axis=1)[:, :-1]
        out[s : s + chunk] = np.abs(diff) @ gaps
    return out


def _weighted_gaussian(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of rows x (m, d) with integer weights w (m,)."""
    total = w.sum()
    mu = w @ x / total
    centred = x - mu
    sigma = (centred * w[:, None]).T @ centred / max(total - 1.0, 1.0)
    return mu, sigma


def _frechet_reps(
    xg: np.ndarray, owner_g: np.ndarray, wg: np.ndarray,
    xr: np.ndarray, owner_r: np.ndarray, wr: np.ndarray,
) -> np.ndarray:
    """Frechet distance per replicate; rows of x belong to resampled units via owner."""
    out = np.empty(len(wg))
    for b in range(len(wg)):
        stats_g = _weighted_gaussian(xg, wg[b, owner_g].astype(np.float64))
        stats_r = _weighted_gaussian(xr, wr[b, owner_r].astype(np.float64))
        out[b] = M.frechet_distance(*stats_g, *stats_r)
    return out


class _Reference:
    """Everything about the reference set that every row reuses."""

    def __init__(self, windows: np.ndarray, n_boot: int, seed: int, s_max: float, d_max: float):
        self.windows = windows
        self.edges = M.channel_edges(s_max, d_max)
        self.weights = _boot_weights(len(windows), n_boot, _set_rng(seed, "reference"))
        self.quantised = {c: np.rint(windows[..., i] / QUANTUM[i]) * QUANTUM[i]
                          for c, i in CHANNELS.items()}
        self.hists = {c: _hist_counts(windows[..., i], self.edges[i]) for c, i in CHANNELS.items()}
        self.pc = _hist_counts(np.rint(windows[..., PITCH]) % 12, np.arange(13) - 0.5)
        self.stats = {s: f(windows) for s, f in WINDOW_STATS.items()}
        self.features = M.window_features(windows)
        self.fad_clips: list[np.ndarray] | None = None
        self.fad_weights: np.ndarray | None = None


def _interval(
    reps: np.ndarray, alpha: float, bounds: tuple[float, float] = (0.0, np.inf)
) -> tuple[float, float, float]:
    """Point value and a bias-corrected percentile interval from (1 + n_boot,) replicates.

    A resample of n windows holds only ~63% distinct ones, so a distance between
    two resampled sets is inflated: for Frechet distances of 200 clips the plain
    percentile interval lay wholly above the value it was drawn around (FAD
    0.661 [0.910, 1.462]). The bootstrap's own estimate of that shift, the mean
    of the replicates minus the value, is taken off both ends, which keeps the
    spread and centres it on the value; ends are clipped to the metric's range.
    """
    value, boots = float(reps[0]), reps[1:]
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0]) - (boots.mean() - value)
    return value, float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def _symbolic_row(
    gen: np.ndarray, ref: _Reference, wg: np.ndarray, alpha: float
) -> dict[str, float]:
    """All symbolic metrics of one set with their intervals."""
    wr = ref.weights
    reps: dict[str, np.ndarray] = {}
    for c, i in CHANNELS.items():
        hg = _normalised(wg @ _hist_counts(gen[..., i], ref.edges[i]))
        hr = _normalised(wr @ ref.hists[c])
        reps[f"overlap_{c}"] = np.minimum(hg, hr).sum(axis=1)
    for c, i in CHANNELS.items():
        q = QUANTUM[i]
        reps[f"w1_{c}"] = _weighted_w1(np.rint(gen[..., i] / q) * q, ref.quantised[c], wg, wr)
    pc_g = _normalised(wg @ _hist_counts(np.rint(gen[..., PITCH]) % 12, np.arange(13) - 0.5))
    reps["pitch_class_tv"] = 0.5 * np.abs(pc_g - _normalised(wr @ ref.pc)).sum(axis=1)
    for s, f in WINDOW_STATS.items():
        reps[f"w1_{s}"] = _weighted_w1(f(gen)[:, None], ref.stats[s][:, None], wg, wr)
    fg = M.standardise(M.window_features(gen), ref.features)
    fr = M.standardise(ref.features, ref.features)
    reps["fmd"] = _frechet_reps(fg, np.arange(len(fg)), wg, fr, np.arange(len(fr)), wr)
    row: dict[str, float] = {}
    for name, r in reps.items():
        bounds = (0.0, 1.0) if METRICS[name][0] else (0.0, np.inf)  # overlaps are shares
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = _interval(r, alpha, bounds)
    return row


def _embed(windows: np.ndarray, embedder: str) -> list[np.ndarray]:
    try:
        from midilib.fad import embed_windows
    except ImportError as exc:
        raise ValueError(
            f"fad_embedder={embedder!r} needs midilib.fad ({exc}); pass fad_embedder=None to skip FAD"
        ) from None
    clips = [np.asarray(c, dtype=np.float64) for c in embed_windows(windows, embedder)]
    if not clips or any(c.ndim != 2 or len(c) == 0 for c in clips):
        raise ValueError("midilib.fad.embed_windows must return non-empty (frames, d) arrays")
    return clips


def _fad_row(
    clips: list[np.ndarray], ref: _Reference, wc: np.ndarray, alpha: float
) -> dict[str, float]:
    """FAD with an interval from resampling clips of both sets."""
    assert ref.fad_clips is not None and ref.fad_weights is not None
    xg, xr = np.concatenate(clips), np.concatenate(ref.fad_clips)
    og = np.repeat(np.arange(len(clips)), [len(c) for c in clips])
    orf = np.repeat(np.arange(len(ref.fad_clips)), [len(c) for c in ref.fad_clips])
    value, low, high = _interval(_frechet_reps(xg, og, wc, xr, orf, ref.fad_weights), alpha)
    return {"fad": value, "fad_lo": low, "fad_hi": high}


def evaluate_sets(
    reference: np.ndarray,
    sets: dict[str, np.ndarray],
    train: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    fad_embedder: str | None = "musicnn",
    timings: dict[str, float] | None = None,
    *,
    n_fad: int | None = None,
    copy_tol: float = 0.01,
    s_max: float = 2.0,
    d_max: float = 2.0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per set (index "set") of metrics against the reference, with _lo/_hi bounds.

    With `train`, the calibration rows (floor, marginals, uniform; as many
    windows as the reference) are added and copy_rate is computed; the floor's
    copy_rate is the reference's own rate against train (how often unseen
    real music repeats a training window). FAD uses the first n_fad windows of
    each set (default: all). `timings` maps set names to seconds per 10k
    generated windows. Every set is clipped with clip_windows first.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_fad is not None and n_fad < 2:
        raise ValueError(f"n_fad must be >= 2, got {n_fad}")
    reference = clip_windows(reference, s_max, d_max)
    if len(reference) < 2:
        raise ValueError("the reference needs at least 2 windows")
    all_sets: dict[str, np.ndarray] = {}
    if train is not None:
        train = clip_windows(train, s_max, d_max)
        all_sets[FLOOR] = _sample(train, len(reference), _set_rng(seed, FLOOR))
    for name, windows in sets.items():
        if name in CALIBRATION:
            raise ValueError(f"set name {name!r} is reserved for a calibration row")
        all_sets[name] = clip_windows(windows, s_max, d_max)
        if all_sets[name].shape[1] != reference.shape[1] or len(all_sets[name]) < 2:
            raise ValueError(
                f"set {name!r} has shape {all_sets[name].shape}; need >= 2 windows "
                f"of {reference.shape[1]} notes like the reference"
            )
    if train is not None:
        n = len(reference)
        all_sets[MARGINALS] = independent_marginals_windows(train, n, seed + 1)
        all_sets[UNIFORM] = uniform_random_windows(n, seed + 2, s_max, d_max, reference.shape[1])
    unknown = set(timings or {}) - set(all_sets)
    if unknown:
        raise ValueError(f"timings name unknown sets: {', '.join(sorted(unknown))}")

    ref = _Reference(reference, n_boot, seed, s_max, d_max)
    if fad_embedder is not None:
        ref.fad_clips = _embed(reference[:n_fad], fad_embedder)
        ref.fad_weights = _boot_weights(len(ref.fad_clips), n_boot, _set_rng(seed, "fad reference"))
    rows = []
    for name, gen in all_sets.items():
        wg = _boot_weights(len(gen), n_boot, _set_rng(seed, name))
        row: dict[str, float] = {"set": name, "n": len(gen)}
        row.update(_symbolic_row(gen, ref, wg, alpha))
        if train is not None:
            who, weights = (reference, ref.weights) if name == FLOOR else (gen, wg)
            mask = M.copy_mask(who, train, copy_tol).astype(np.float64)
            reps = weights @ mask / weights.sum(axis=1)
            row["copy_rate"], row["copy_rate_lo"], row["copy_rate_hi"] = _interval(
                reps, alpha, (0.0, 1.0))
        if fad_embedder is not None:
            clips = _embed(gen[:n_fad], fad_embedder)
            wc = _boot_weights(len(clips), n_boot, _set_rng(seed, f"fad {name}"))
            row.update(_fad_row(clips, ref, wc, alpha))
        if timings is not None:
            row["sec_per_10k"] = float(timings.get(name, np.nan))
        rows.append(row)
    return pd.DataFrame(rows).set_index("set")


# --- reading and writing the table ------------------------------------------------


def _decimals(x: float) -> int:
    if not np.isfinite(x) or x == 0:
        return 3
    return int(np.clip(2 - np.floor(np.log10(abs(x))), 0, 4))


def _cell(df: pd.DataFrame, name: str, metric: str) -> str:
    value = df.at[name, metric]
    if not np.isfinite(value):
        return "–"
    d = _decimals(value)
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if lo in df.columns and np.isfinite(df.at[name, lo]):
        return f"{value:.{d}f} [{df.at[name, lo]:.{d}f}, {df.at[name, hi]:.{d}f}]"
    return f"{value:.{d}f}"


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a results table, in METRICS order (bounds excluded)."""
    return [m for m in METRICS if m in df.columns]


def results_markdown(df: pd.DataFrame, title_lines: Sequence[str] = ()) -> str:
    """Markdown: title lines, a table (one row per metric, one column per set), a reading."""
    sets = list(df.index)
    header = ["metric", "better", *sets]
    lines = [*(f"{t}  " for t in title_lines), ""] if title_lines else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| n windows |  | " + " | ".join(str(int(df.at[s, "n"])) for s in sets) + " |")
    for m in metric_columns(df):
        arrow = "↑" if METRICS[m][0] else "↓"
        lines.append(f"| {m} | {arrow} | " + " | ".join(_cell(df, s, m) for s in sets) + " |")
    if "sec_per_10k" in df.columns:
        lines.append("| seconds per 10k windows | ↓ | " +
                     " | ".join(_cell(df, s, "sec_per_10k") for s in sets) + " |")
    lines += ["", "Cells: value [95% bootstrap interval, both sets resampled, bias-corrected: "
              "the replicates' mean shift is taken off both ends].", ""]
    lines.append(describe_results(df))
    return "\n".join(lines).rstrip() + "\n"


def write_results(
    df: pd.DataFrame, out_dir: str | Path, title_lines: Sequence[str]
) -> tuple[Path, Path]:
    """Write results.csv (full precision) and results.md (rounded), each atomically."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    atomic_write(csv_path, df.to_csv(float_format="%.6g"))
    atomic_write(md_path, results_markdown(df, title_lines))
    return csv_path, md_path


def update_readme(
    readme_path: str | Path,
    md_text: str,
    start_marker: str = START_MARKER,
    end_marker: str = END_MARKER,
) -> Path:
    """Replace the text between the two markers (kept) with md_text, atomically."""
    path = Path(readme_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0:
        raise ValueError(f"{path}: markers {start_marker!r} and {end_marker!r} not both found")
    if end < start:
        raise ValueError(f"{path}: {end_marker!r} comes before {start_marker!r}")
    head = text[: start + len(start_marker)]
    atomic_write(path, f"{head}\n{md_text.strip()}\n{text[end:]}")
    return path


_BAND_NAMES = (
    "like the floor",
    "between floor and marginals baseline",
    "between the two baselines",
    "worse than the uniform baseline",
)


def _band(df: pd.DataFrame, name: str, metric: str) -> str:
    """Which calibration band the set's value falls in, for one metric."""
    sign = -1.0 if METRICS[metric][0] else 1.0  # make lower = better
    value = sign * df.at[name, metric]
    if FLOOR in df.index:
        lo, hi = f"{metric}_lo", f"{metric}_hi"
        overlaps = lo in df.columns and (
            df.at[name, lo] <= df.at[FLOOR, hi] and df.at[FLOOR, lo] <= df.at[name, hi]
        )
        if overlaps or value <= sign * df.at[FLOOR, metric]:
            return _BAND_NAMES[0]
    if MARGINALS in df.index and value <= sign * df.at[MARGINALS, metric]:
        return _BAND_NAMES[1]
    if UNIFORM not in df.index or value <= sign * df.at[UNIFORM, metric]:
        return _BAND_NAMES[2]
    return _BAND_NAMES[3]


def describe_results(df: pd.DataFrame) -> str:
    """A short reading of the table, every number taken from it.

    Per metric: the model closest to the reference and where the floor and the
    baselines sit. Per model: on how many metrics it is like the floor, between
    floor and the marginals baseline, between the baselines, or worse than
    uniform noise.
    """
    models = [s for s in df.index if s not in CALIBRATION]
    metrics = [m for m in metric_columns(df) if m != "copy_rate" and df[m].notna().any()]
    if not models:
        return "No model sets in this table; only the calibration rows."
    lines = ["Closest model to the reference, per metric:"]
    for m in metrics:
        higher = METRICS[m][0]
        values = df.loc[models, m].dropna()
        if values.empty:
            continue
        best = values.idxmax() if higher else values.idxmin()
        refs = "; ".join(f"{c} {_cell(df, c, m)}" for c in CALIBRATION if c in df.index)
        lines.append(f"- {m} ({'higher' if higher else 'lower'} is better): "
                     f"{best} {_cell(df, best, m)}" + (f"; {refs}" if refs else ""))
    bands = [c for c in CALIBRATION if c in df.index]
    if bands:
        lines += ["", "Where each model sits against the calibration rows (point values; "
                  "'like the floor' = its interval overlaps the floor's):"]
        for s in models:
            tally = dict.fromkeys(_BAND_NAMES, 0)
            for m in metrics:
                if np.isfinite(df.at[s, m]):
                    tally[_band(df, s, m)] += 1
            counts = ", ".join(f"{k} {v}/{len(metrics)}" for k, v in tally.items() if v)
            lines.append(f"- {s}: {counts}.")
    if "copy_rate" in df.columns:
        parts = [f"{s} {_cell(df, s, 'copy_rate')}" for s in models]
        if FLOOR in df.index:
            parts.append(f"test windows themselves {_cell(df, FLOOR, 'copy_rate')}")
        lines += ["", "Copy rate (share of windows repeating a training window): " + "; ".join(parts) + "."]
    return "\n".join(lines)


# --- CLI glue -------------------------------------------------------------------


def _parse_spec(spec: str) -> tuple[str, Path, str]:
    """NAME=PATH[:split] -> (name, path, array key); the key defaults to "samples"."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ValueError(f"sample spec {spec!r} is not NAME=PATH[:split]")
    path, key = Path(rest), "samples"
    if not path.exists() and ":" in rest:
        head, _, key = rest.rpartition(":")
        path = Path(head)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such samples file (from {spec!r})")
    return name, path, key


def load_samples(spec: str) -> tuple[str, np.ndarray]:
    """Parse NAME=PATH[:split] into (name, windows).

    PATH is a samples.npz (array "samples") or a windows.npz, with the array
    named after the colon (PATH:train). Errors are one-line ValueError /
    FileNotFoundError messages.
    """
    name, path, key = _parse_spec(spec)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                have = ", ".join(npz.files) or "none"
                raise ValueError(f"{path}: no array {key!r} (has: {have})")
            windows = np.asarray(npz[key], dtype=np.float32)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if windows.ndim != 3 or windows.shape[-1] != 4 or len(windows) == 0:
        raise ValueError(f"{path}:{key} has shape {windows.shape}; expected (n, window, 4)")
    return name, windows


def _seconds_per_10k(spec: str) -> float | None:
    """The optional scalar "seconds_per_10k" stored beside the samples."""
    _, path, _ = _parse_spec(spec)
    with np.load(path, allow_pickle=False) as npz:
        return float(npz["seconds_per_10k"]) if "seconds_per_10k" in npz.files else None


def machine_line() -> str:
    """Which machine produced a table: CPU, cores, accelerator, torch and the date."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"Machine: {cpu}, {os.cpu_count()} CPU cores{gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


def run_evaluation(
    reference_dir: str | Path,
    sample_specs: Sequence[str],
    out_dir: str | Path,
    embedder: str | None = None,
    n: int = 10_000,
    seed: int = 0,
    n_boot: int = 1000,
    *,
    n_fad: int | None = None,
    title_lines: Sequence[str] = (),
    s_max: float | None = None,
    d_max: float | None = None,
) -> pd.DataFrame:
    """The whole protocol: reference from windows.npz's test split, sets, table, files.

    Sets bigger than n are randomly subsampled to n. A samples file may carry
    a scalar "seconds_per_10k" array, which becomes the timing column. The
    clips s_max/d_max default to the ones the reference was prepared with
    (its params.json), else 2 s.
    """
    params_path = Path(reference_dir) / "params.json"
    prepared = json.loads(params_path.read_text())["params"] if params_path.is_file() else {}
    s_max = s_max if s_max is not None else prepared.get("s_max", 2.0)
    d_max = d_max if d_max is not None else prepared.get("d_max", 2.0)
    npz_path = Path(reference_dir) / "windows.npz"
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such file (run the data pipeline first)")
    with np.load(npz_path, allow_pickle=False) as npz:
        missing = [k for k in ("train", "test") if k not in npz.files]
        if missing:
            raise ValueError(f"{npz_path}: missing array(s) {', '.join(missing)}")
        train, test = npz["train"], npz["test"]
    reference = reference_windows(test, min(n, len(test)), seed, s_max, d_max)
    sets: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for spec in sample_specs:
        name, windows = load_samples(spec)
        if name in sets:
            raise ValueError(f"set name {name!r} given twice")
        if len(windows) > n:
            windows = _sample(windows, n, _set_rng(seed, f"subsample {name}"))
        sets[name] = windows
        seconds = _seconds_per_10k(spec)
        if seconds is not None:
            timings[name] = seconds
    df = evaluate_sets(reference, sets, train, n_boot, seed, embedder, timings or None,
                       n_fad=n_fad, s_max=s_max, d_max=d_max)
    lines = [
        *title_lines,
        f"Reference: {len(reference)} of {len(test)} test windows of {npz_path} (seed {seed}); "
        f"floor and baselines from {len(train)} training windows",
        f"Bootstrap: {n_boot} replicates" + (f"; FAD embedder: {embedder}" if embedder else ""),
        machine_line(),
    ]
    write_results(df, out_dir, lines)
    return df
