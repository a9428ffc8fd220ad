"""Intervals that resample what is independent: whole pieces, not windows.

Windows of one piece share its key, tempo and texture, so a bootstrap over
windows treats a few pieces as thousands of independent draws and gives
intervals several times too narrow. Every interval here resamples *units*:
the pieces (files) of a real set, and the windows of a generated set (each
drawn independently by the sampler, so each is its own unit).

Three constructions, each checked by simulation in tests/test_intervals.py:

- `mean_interval`: a mean over windows (scale consistency, entropies, copy
  rate); a delete-one-unit jackknife with Student's t (scipy's bootstrap
  under-covers with few pieces: see its docstring).
- `split_half_interval`: any statistic of two sets, FD∞ in particular, where a
  resample with repeated units would bias it (a repeated unit is not new
  information, yet counts as if it were). Units of each set are split at
  random into two halves; the statistic of half a against half b, and of the
  complements, vary around the full-set value with about the full sets'
  variance (for a mean of n/2 of n units drawn without replacement,
  Var = S^2/(n/2) * (1 - 1/2) = S^2/n). Interval: value +- t * sd(halves),
  with t from Student's t on (fewest units - 1) degrees of freedom.
- `weighted_reps` + `shifted_interval`: the plain distances at a stated n, by a
  vectorised multinomial bootstrap over units. These distances are biased
  upward at finite n, and so are their replicates (a resample holds ~63% of the
  units); the interval is the replicates' spread placed around the value. It
  says how much the value moves between samples of this size, not where the
  population distance lies: the *_inf columns are for that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats


def units(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Dense unit ids 0..k-1 per row (None: every row its own unit)."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    return np.unique(groups, return_inverse=True)[1].reshape(n)


def multinomial_counts(k: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, k) float32 counts of k units drawn k times with replacement; row 0 is all ones."""
    out = np.ones((1 + n_boot, k), dtype=np.float32)
    chunk = max(1, 4_000_000 // k)
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        flat = rng.integers(0, k, (b, k)) + (np.arange(b) * k)[:, None]
        out[1 + s : 1 + s + b] = np.bincount(flat.ravel(), minlength=b * k).reshape(b, k)
    return out


def weighted_reps(unit: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, rows) bootstrap weights of rows: whole units resampled; row 0 all ones."""
    return multinomial_counts(int(unit.max()) + 1, n_boot, rng)[:, unit]


def shifted_interval(
    reps: np.ndarray, alpha: float = 0.05, bounds: tuple[float, float] = (0.0, np.inf)
) -> tuple[float, float, float]:
    """(value, low, high): the bootstrap percentile interval moved by (value - mean of replicates),
    clipped to the metric's range. reps[0] is the value, reps[1:] the replicates."""
    value, boots = float(reps[0]), np.asarray(reps[1:], dtype=np.float64)
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0]) - (boots.mean() - value)
    return value, float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def mean_interval(
    values: np.ndarray, groups: np.ndarray | None = None, alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(mean of values, low, high): a delete-one-group jackknife t interval.

    The mean over windows is a ratio of per-group sums, R = sum_g s_g / sum_g c_g.
    Leaving group g out gives R_(g); the jackknife standard error is
    se^2 = (G-1)/G * sum_g (R_(g) - mean R_(.))^2, and the interval is
    R +- t_{1-alpha/2, G-1} se. Chosen over `scipy.stats.bootstrap` (BCa or
    percentile over groups) by simulation: with 6 pieces the bootstrap covered a
    known mean 0.83 of the time at 95%, the jackknife t 0.93 (tests/test_intervals.py).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    unit = units(groups, len(values))
    sums, counts = np.bincount(unit, weights=values), np.bincount(unit).astype(np.float64)
    value = float(sums.sum() / counts.sum())
    k = len(sums)
    if k < 2:
        return value, float("nan"), float("nan")
    loo = (sums.sum() - sums) / (counts.sum() - counts)
    se = float(np.sqrt((k - 1) / k * ((loo - loo.mean()) ** 2).sum()))
    t = float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df=k - 1))
    return value, value - t * se, value + t * se


def split_half_interval(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    unit_a: np.ndarray, unit_b: np.ndarray, value: float, n_splits: int = 10,
    alpha: float = 0.05, seed: int | np.random.Generator = 0, min_units: int = 8,
) -> tuple[float, float, float]:
    """(value, low, high) for a statistic of two sets, by random half-splits of their units.

    statistic(rows_a, rows_b) is computed on row-index subsets; unit_a/unit_b give
    each row's unit (see `units`). Each split yields two replicates (the halves and
    their complements); their standard deviation estimates the statistic's standard
    error at the full sizes (see the module docstring), and the interval is
    value +- t_{1-alpha/2, k-1} * sd with k the fewer units of the two sets. With
    fewer than `min_units` units in a set the interval is NaN: say so, don't guess.
    """
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    ka, kb = int(unit_a.max()) + 1, int(unit_b.max()) + 1
    if min(ka, kb) < min_units:  # FD∞ on halves of fewer than 4 units has nothing to fit
        return value, float("nan"), float("nan")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    reps = []
    for _ in range(n_splits):
        half_a = rng.permutation(ka) < ka // 2 + rng.integers(0, 2) * (ka % 2)
        half_b = rng.permutation(kb) < kb // 2 + rng.integers(0, 2) * (kb % 2)
        for side in (True, False):
            rows_a = np.flatnonzero(half_a[unit_a] == side)
            rows_b = np.flatnonzero(half_b[unit_b] == side)
            reps.append(statistic(rows_a, rows_b))
    sd = float(np.std(reps, ddof=1))
    t = float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df=min(ka, kb) - 1))
    return value, value - t * sd, value + t * sd


def jackknife_se(loo: np.ndarray) -> float:
    """The delete-one jackknife standard error from k leave-one-unit-out replicates of a statistic:
    se^2 = (k-1)/k * sum_g (loo_g - mean loo)^2 (as in `mean_interval`, for any statistic)."""
    loo = np.asarray(loo, dtype=np.float64)
    if loo.ndim != 1 or len(loo) < 2:
        return float("nan")
    k = len(loo)
    return float(np.sqrt((k - 1) / k * ((loo - loo.mean()) ** 2).sum()))
