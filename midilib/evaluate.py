"""The evaluation protocol: every generated set against held-out test windows.

The original study compared generated windows with the first 10k TRAINING
windows (about 22 pieces), unclamped, with no interval. Here the reference is
a random sample of TEST windows across all test files; every set (reference
included) is clipped to the valid ranges the same way; and three calibration
rows say what "good" and "bad" look like:

- "floor (train vs test)": fresh training windows; real music the model could
  at best imitate, so no model should be expected to beat it;
- "baseline: marginals": each channel of each note drawn independently from
  the training marginals; right notes and rhythms, no structure;
- "baseline: uniform": every channel uniform over its valid range.

Columns, and how each cell's interval is made (midilib.intervals):

- distances at the stated n (overlaps, Wasserstein, pitch-class TV, fmd, fad):
  a multinomial bootstrap over units (pieces of real sets, windows of
  generated ones), its spread placed around the value;
- `fmd_inf`, `fad_inf` (and `fad_inf_<embedder>` for further embedders): FD∞,
  the Fréchet distance extrapolated to infinitely many windows
  (midilib.frechet), with a split-half interval over units;
- per-set musicality (`scale_consistency`, `pitch_class_entropy`,
  `ioi_entropy`) and `copy_rate`: means over windows with a jackknife-t
  interval over units. For these, closer to the floor is better.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse

from midilib import intervals as I
from midilib import metrics as M
from midilib.baselines import independent_marginals_windows, uniform_random_windows
from midilib.events import DELTA, DURATION, PITCH, VELOCITY
from midilib.frechet import fast_frechet, frechet_inf

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
# per-window musicality, reported per set (mean over windows); s_max is bound at call time
MUSICALITY: dict[str, Callable[..., np.ndarray]] = {
    "scale_consistency": lambda w, s_max: M.scale_consistency(w),
    "pitch_class_entropy": lambda w, s_max: M.pitch_class_entropy(w),
    "ioi_entropy": lambda w, s_max: M.ioi_entropy(w, s_max),
}
# column -> (True if higher is better, False if lower is, None if closer to the floor is; meaning)
METRICS: dict[str, tuple[bool | None, str]] = {
    **{f"overlap_{c}": (True, f"{c} histogram overlap") for c in CHANNELS},
    **{f"w1_{c}": (False, f"{c} Wasserstein-1") for c in CHANNELS},
    "pitch_class_tv": (False, "corpus-wide pitch-class histogram, total variation"),
    **{f"w1_{s}": (False, f"{s.replace('_', ' ')} (per window) Wasserstein-1") for s in WINDOW_STATS},
    "scale_consistency": (None, "share of a window's notes in its best diatonic scale"),
    "pitch_class_entropy": (None, "entropy (bits) of a window's pitch classes"),
    "ioi_entropy": (None, "entropy (bits) of a window's inter-onset intervals, log grid"),
    "fmd": (False, "Frechet distance of window features (z-scored), at n"),
    "fmd_inf": (False, "FD-infinity of window features (z-scored)"),
    "copy_rate": (False, "share of windows copying a training window"),
    "fad": (False, "Frechet audio distance at n"),
    "fad_inf": (False, "FD-infinity of audio embeddings"),
}
# Wasserstein distances of channels are taken on values rounded to what a MIDI
# file holds anyway (integer pitch, 1/127 velocity steps, 1 ms), which moves
# them by at most half a step and keeps the bootstrap fast.
QUANTUM = {PITCH: 1.0, VELOCITY: 1.0 / 127.0, DELTA: 1e-3, DURATION: 1e-3}
N_SPLITS = 10  # half-splits per FD∞ interval (20 replicates)


def embedder_slug(name: str) -> str:
    return name.replace("-", "_")


def metric_info(column: str) -> tuple[bool | None, str]:
    """(direction, meaning) of a metric column, the per-embedder FAD columns included."""
    if column in METRICS:
        return METRICS[column]
    for stem in ("fad_inf_", "fad_"):
        if column.startswith(stem):
            base = METRICS[stem[:-1]]
            return base[0], f"{base[1]} ({column[len(stem):]})"
    raise KeyError(column)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a results table, in METRICS order, then the extra embedders'."""
    ordered = [m for m in METRICS if m in df.columns]
    extra = [c for c in df.columns if c.startswith("fad_") and c not in METRICS
             and not c.endswith(("_lo", "_hi"))]
    return ordered + sorted(extra, key=lambda c: (not c.startswith("fad_inf"), c))


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


def _sample_index(total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if total == 0:
        raise ValueError("cannot sample from an empty set of windows")
    return rng.choice(total, size=n, replace=n > total)


def _sample(windows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(windows)[_sample_index(len(windows), n, rng)]


def reference_windows(
    test_windows: np.ndarray, n: int, seed: int = 0, s_max: float = 2.0, d_max: float = 2.0
) -> np.ndarray:
    """n random test windows (without replacement when there are enough), clipped."""
    return reference_set(test_windows, None, n, seed, s_max, d_max)[0]


def reference_set(
    windows: np.ndarray, groups: np.ndarray | None, n: int, seed: int = 0,
    s_max: float = 2.0, d_max: float = 2.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(n random windows, clipped; their piece ids): what reference_windows draws, with groups."""
    idx = _sample_index(len(windows), n, np.random.default_rng(seed))
    picked = clip_windows(np.asarray(windows)[idx], s_max, d_max)
    return picked, None if groups is None else np.asarray(groups)[idx]


# --- the reference ----------------------------------------------------------------


def _set_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, set name): rows do not depend on the order of sets."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


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


def _frechet_reps(xg: np.ndarray, wg: np.ndarray, xr: np.ndarray, wr: np.ndarray) -> np.ndarray:
    """Frechet distance per bootstrap replicate (rows of the weight matrices)."""
    return np.array([fast_frechet(*_weighted_gaussian(xg, wg[b].astype(np.float64)),
                                  *_weighted_gaussian(xr, wr[b].astype(np.float64)))
                     for b in range(len(wg))])


def _fd_inf_row(
    column: str, xg: np.ndarray, ug: np.ndarray, xr: np.ndarray, ur: np.ndarray,
    rng: np.random.Generator, alpha: float,
) -> dict[str, float]:
    """FD∞ of one set against the reference with its split-half interval; subsets by unit."""
    if min(ug.max(), ur.max()) + 1 < 4:
        return {column: np.nan, f"{column}_lo": np.nan, f"{column}_hi": np.nan}
    value = frechet_inf(xg, ug, xr, ur, rng)

    def statistic(ia: np.ndarray, ib: np.ndarray) -> float:
        return frechet_inf(xg[ia], ug[ia], xr[ib], ur[ib], rng)

    value, low, high = I.split_half_interval(statistic, ug, ur, value, N_SPLITS, alpha, rng)
    return {column: value, f"{column}_lo": low, f"{column}_hi": high}


class _Reference:
    """Everything about the reference set that every row reuses."""

    def __init__(self, windows: np.ndarray, unit: np.ndarray, n_boot: int, seed: int,
                 s_max: float, d_max: float):
        self.windows, self.unit = windows, unit
        self.edges = M.channel_edges(s_max, d_max)
        self.weights = I.weighted_reps(unit, n_boot, _set_rng(seed, "reference"))
        self.quantised = {c: np.rint(windows[..., i] / QUANTUM[i]) * QUANTUM[i]
                          for c, i in CHANNELS.items()}
        self.hists = {c: _hist_counts(windows[..., i], self.edges[i]) for c, i in CHANNELS.items()}
        self.pc = _hist_counts(np.rint(windows[..., PITCH]) % 12, np.arange(13) - 0.5)
        self.stats = {s: f(windows) for s, f in WINDOW_STATS.items()}
        self.features = M.window_features(windows)
        self.vectors: dict[str, np.ndarray] = {}  # embedder -> (n_fad, d)


def _symbolic_row(
    gen: np.ndarray, ug: np.ndarray, ref: _Reference, wg: np.ndarray, alpha: float,
    rng: np.random.Generator, s_max: float,
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
    reps["fmd"] = _frechet_reps(fg, wg, fr, wr)
    row: dict[str, float] = {}
    for name, r in reps.items():
        bounds = (0.0, 1.0) if METRICS[name][0] else (0.0, np.inf)  # overlaps are shares
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = I.shifted_interval(r, alpha, bounds)
    for name, f in MUSICALITY.items():
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = I.mean_interval(f(gen, s_max), ug, alpha)
    row.update(_fd_inf_row("fmd_inf", fg, ug, fr, ref.unit, rng, alpha))
    return row


def _audio_rows(
    vectors: dict[str, np.ndarray], ug: np.ndarray, ref: _Reference, wg: np.ndarray,
    embedders: Sequence[str], alpha: float, rng: np.random.Generator,
) -> dict[str, float]:
    """fad (at n) and fad_inf per embedder; the first embedder's columns carry no suffix."""
    row: dict[str, float] = {}
    n = len(next(iter(vectors.values())))
    ur, wr = ref.unit[: len(ref.vectors[embedders[0]])], ref.weights[:, : len(ref.vectors[embedders[0]])]
    for i, e in enumerate(embedders):
        suffix = "" if i == 0 else f"_{embedder_slug(e)}"
        xg, xr = vectors[e].astype(np.float64), ref.vectors[e].astype(np.float64)
        reps = _frechet_reps(xg, wg[:, :n], xr, wr)
        value, low, high = I.shifted_interval(reps, alpha)
        row.update({f"fad{suffix}": value, f"fad{suffix}_lo": low, f"fad{suffix}_hi": high})
        row.update(_fd_inf_row(f"fad_inf{suffix}", xg, I.units(ug[:n], n), xr,
                               I.units(ur, len(ur)), rng, alpha))
    return row


def evaluate_sets(
    reference: np.ndarray,
    sets: dict[str, np.ndarray],
    train: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    fad_embedder: str | Sequence[str] | None = "musicnn",
    timings: dict[str, float] | None = None,
    *,
    reference_groups: np.ndarray | None = None,
    train_groups: np.ndarray | None = None,
    n_fad: int | None = None,
    embed_cache: str | Path | None = None,
    copy_tol: float = 0.01,
    s_max: float = 2.0,
    d_max: float = 2.0,
    alpha: float = 0.05,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per set (index "set") of metrics against the reference, with _lo/_hi bounds.

    With `train`, the calibration rows (floor, marginals, uniform; as many
    windows as the reference) are added and copy_rate is computed; the floor's
    copy_rate is the reference's own rate against train (how often unseen
    real music repeats a training window). `reference_groups`/`train_groups`
    give each window's piece, so that intervals resample pieces (without them
    every window counts as its own piece). Audio metrics use the first n_fad
    windows of each set (default: all) under each embedder in `fad_embedder`
    (a name or a list; the first one's columns are `fad`/`fad_inf`, the others'
    `fad_<name>`/`fad_inf_<name>`), cached under `embed_cache`. `timings` maps
    set names to seconds per 10k generated windows. Every set is clipped first.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_fad is not None and n_fad < 2:
        raise ValueError(f"n_fad must be >= 2, got {n_fad}")
    embedders = [fad_embedder] if isinstance(fad_embedder, str) else list(fad_embedder or [])
    reference = clip_windows(reference, s_max, d_max)
    if len(reference) < 2:
        raise ValueError("the reference needs at least 2 windows")
    all_sets: dict[str, np.ndarray] = {}
    groups: dict[str, np.ndarray] = {}
    if train is not None:
        train = clip_windows(train, s_max, d_max)
        idx = _sample_index(len(train), len(reference), _set_rng(seed, FLOOR))
        all_sets[FLOOR] = train[idx]
        if train_groups is not None:
            groups[FLOOR] = I.units(np.asarray(train_groups)[idx], len(idx))
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

    ref = _Reference(reference, I.units(reference_groups, len(reference)), n_boot, seed, s_max, d_max)
    if embedders:
        ref.vectors = _embed(reference[:n_fad], embedders, embed_cache, progress)
    rows = []
    for name, gen in all_sets.items():
        ug = groups.get(name, np.arange(len(gen)))
        rng = _set_rng(seed, name)
        wg = I.weighted_reps(ug, n_boot, rng)
        row: dict[str, float] = {"set": name, "n": len(gen)}
        row.update(_symbolic_row(gen, ug, ref, wg, alpha, rng, s_max))
        if train is not None:
            who, unit = (reference, ref.unit) if name == FLOOR else (gen, ug)
            mask = M.copy_mask(who, train, copy_tol).astype(np.float64)
            row["copy_rate"], row["copy_rate_lo"], row["copy_rate_hi"] = I.mean_interval(mask, unit, alpha)
        if embedders:
            row["n_fad"] = len(gen[:n_fad])
            vectors = _embed(gen[:n_fad], embedders, embed_cache, progress)
            row.update(_audio_rows(vectors, ug, ref, wg, embedders, alpha, rng))
        if timings is not None:
            row["sec_per_10k"] = float(timings.get(name, np.nan))
        rows.append(row)
    return pd.DataFrame(rows).set_index("set")


def set_musicality(windows: np.ndarray, groups: np.ndarray | None = None, s_max: float = 2.0,
                   alpha: float = 0.05) -> dict[str, tuple[float, float, float]]:
    """The musicality metrics of one set on its own (value, low, high), e.g. for the reference."""
    windows = clip_windows(windows, s_max)
    return {name: I.mean_interval(f(windows, s_max), groups, alpha) for name, f in MUSICALITY.items()}


def _embed(windows: np.ndarray, embedders: Sequence[str], cache: str | Path | None,
           progress: bool) -> dict[str, np.ndarray]:
    try:
        from midilib.fad import window_vectors
    except ImportError as exc:
        raise ValueError(
            f"fad_embedder={list(embedders)!r} needs midilib.fad ({exc}); pass fad_embedder=None to skip FAD"
        ) from None
    vectors = window_vectors(windows, embedders, cache, progress=progress)
    for e in embedders:
        if vectors[e].ndim != 2 or len(vectors[e]) != len(windows):
            raise ValueError(f"embedder {e!r} must give one vector per window, got {vectors[e].shape}")
    return vectors
