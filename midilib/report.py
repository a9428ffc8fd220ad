"""The results table as text: markdown, a reading written from its numbers, README blocks.

Nothing here computes a metric; everything reads a results frame made by
midilib.evaluate (one row per set, `<metric>`, `<metric>_lo`, `<metric>_hi`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from midilib.atomic import atomic_write
from midilib.evaluate import CALIBRATION, FLOOR, MARGINALS, UNIFORM, metric_columns, metric_info

START_MARKER, END_MARKER = "<!-- results:start -->", "<!-- results:end -->"
HOW_CELLS = (
    "Cells: value [95% interval]. Units resampled are pieces for real sets (floor, reference) "
    "and windows for generated ones. Distances at the stated n (overlap, w1, pitch_class_tv, fmd, "
    "fad): bootstrap spread placed around the value (these values are biased upward at finite n; "
    "the interval is their sampling spread, not a bound on the population distance). "
    "fmd_inf, fad_inf*: FD∞, the Fréchet distance extrapolated to infinitely many windows "
    "(Chong & Forsyth 2020), value ± t·sd over 20 random half-splits of the units. "
    "scale_consistency, pitch_class_entropy, ioi_entropy, copy_rate: means over windows, "
    "jackknife-t over units; for the first three, closer to the floor is better (≈)."
)


def _decimals(x: float) -> int:
    if not np.isfinite(x) or x == 0:
        return 3
    return int(np.clip(2 - np.floor(np.log10(abs(x))), 0, 4))


def cell(df: pd.DataFrame, name: str, metric: str) -> str:
    """'value [lo, hi]' rounded to about three significant digits ('–' for a missing value)."""
    value = df.at[name, metric]
    if not np.isfinite(value):
        return "–"
    d = _decimals(value)
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if lo in df.columns and np.isfinite(df.at[name, lo]):
        return f"{value:.{d}f} [{df.at[name, lo]:.{d}f}, {df.at[name, hi]:.{d}f}]"
    return f"{value:.{d}f}"


def _arrow(metric: str) -> str:
    higher = metric_info(metric)[0]
    return "≈" if higher is None else ("↑" if higher else "↓")


def results_markdown(df: pd.DataFrame, title_lines: Sequence[str] = ()) -> str:
    """Markdown: title lines, a table (one row per metric, one column per set), a reading."""
    sets = list(df.index)
    header = ["metric", "better", *sets]
    lines = [*(f"{t}  " for t in title_lines), ""] if title_lines else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| n windows |  | " + " | ".join(str(int(df.at[s, "n"])) for s in sets) + " |")
    if "n_fad" in df.columns:
        lines.append("| n windows (audio) |  | " + " | ".join(str(int(df.at[s, "n_fad"])) for s in sets) + " |")
    for m in metric_columns(df):
        lines.append(f"| {m} | {_arrow(m)} | " + " | ".join(cell(df, s, m) for s in sets) + " |")
    if "sec_per_10k" in df.columns:
        lines.append("| seconds per 10k windows | ↓ | " +
                     " | ".join(cell(df, s, "sec_per_10k") for s in sets) + " |")
    lines += ["", HOW_CELLS, ""]
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


def refresh_markdown(out_dir: str | Path) -> Path:
    """Rewrite results.md from results.csv, keeping its title lines: the reading follows the code."""
    out_dir = Path(out_dir)
    md_path = out_dir / "results.md"
    df = pd.read_csv(out_dir / "results.csv", index_col="set")
    old = md_path.read_text().splitlines() if md_path.exists() else []
    title = [line.removesuffix("  ") for line in old[: old.index("")]] if "" in old else []
    atomic_write(md_path, results_markdown(df, title))
    return md_path


def replace_block(text: str, body: str, start_marker: str, end_marker: str, where: str = "text") -> str:
    """text with the part between the two markers (kept) replaced by body."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0:
        raise ValueError(f"{where}: markers {start_marker!r} and {end_marker!r} not both found")
    if end < start:
        raise ValueError(f"{where}: {end_marker!r} comes before {start_marker!r}")
    return f"{text[: start + len(start_marker)]}\n{body.strip()}\n{text[end:]}"


def block(text: str, start_marker: str, end_marker: str) -> str:
    """The text between two markers, stripped."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"markers {start_marker!r} / {end_marker!r} not found in order")
    return text[start + len(start_marker) : end].strip()


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
    atomic_write(path, replace_block(path.read_text(encoding="utf-8"), md_text, start_marker,
                                     end_marker, str(path)))
    return path


def machine_line() -> str:
    """Which machine produced a table: CPU, cores, accelerator, torch and the date."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"Machine: {cpu}, {os.cpu_count()} CPU cores{gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


# --- the reading ------------------------------------------------------------------

_BAND_NAMES = (
    "like the floor",
    "between floor and marginals baseline",
    "between the two baselines",
    "worse than the uniform baseline",
)


def _score(df: pd.DataFrame, name: str, metric: str) -> float:
    """Lower = better: the value, its negative, or its distance from the floor's value."""
    higher = metric_info(metric)[0]
    value = df.at[name, metric]
    if higher is None:
        return abs(value - df.at[FLOOR, metric]) if FLOOR in df.index else np.nan
    return -value if higher else value


def _overlap(df: pd.DataFrame, a: str, b: str, metric: str) -> bool:
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if lo not in df.columns or not np.isfinite([df.at[a, lo], df.at[b, lo]]).all():
        return True  # no interval: nothing tells them apart
    return bool(df.at[a, lo] <= df.at[b, hi] and df.at[b, lo] <= df.at[a, hi])


def _band(df: pd.DataFrame, name: str, metric: str) -> str:
    """Which calibration band the set's value falls in, for one metric."""
    value = _score(df, name, metric)
    if FLOOR in df.index and (_overlap(df, name, FLOOR, metric) or value <= _score(df, FLOOR, metric)):
        return _BAND_NAMES[0]
    if MARGINALS in df.index and value <= _score(df, MARGINALS, metric):
        return _BAND_NAMES[1]
    if UNIFORM not in df.index or value <= _score(df, UNIFORM, metric):
        return _BAND_NAMES[2]
    return _BAND_NAMES[3]


def separations(df: pd.DataFrame, metric: str) -> list[str]:
    """Sentences on which rows the metric's intervals tell apart (intervals that do not overlap)."""
    if metric not in df.columns or not df[metric].notna().any():
        return []
    models = [s for s in df.index if s not in CALIBRATION and np.isfinite(df.at[s, metric])]
    out = []
    if FLOOR in df.index:
        same = [s for s in models if _overlap(df, s, FLOOR, metric)]
        apart = [s for s in models if s not in same]
        out.append(f"{metric}: like the floor ({cell(df, FLOOR, metric)}): "
                   f"{', '.join(same) or 'none'}; distinguishable from it: {', '.join(apart) or 'none'}.")
    ranked = sorted(models, key=lambda s: _score(df, s, metric))
    pairs = [f"{a} < {b}" for i, a in enumerate(ranked) for b in ranked[i + 1:]
             if not _overlap(df, a, b, metric)]
    if len(ranked) > 1:
        out.append(f"{metric}: pairs of models its intervals separate (better first): "
                   f"{'; '.join(pairs) or 'none'}.")
    return out


def embedder_agreement(df: pd.DataFrame) -> str | None:
    """Spearman rank correlation of the rows' FD∞ under the first embedder and each other one."""
    others = [c for c in df.columns if c.startswith("fad_inf_") and not c.endswith(("_lo", "_hi"))]
    if "fad_inf" not in df.columns or not others:
        return None
    parts = []
    for c in others:
        both = df[["fad_inf", c]].dropna()
        if len(both) < 3:
            continue
        rho = scipy.stats.spearmanr(both["fad_inf"], both[c]).statistic
        order_a = " < ".join(both["fad_inf"].sort_values().index)
        order_b = " < ".join(both[c].sort_values().index)
        parts.append(f"fad_inf vs {c}: Spearman rho {rho:.2f} over {len(both)} rows "
                     f"({'same order' if order_a == order_b else 'orders differ'}: "
                     f"{order_a} | {order_b})")
    return "Embedders: " + "; ".join(parts) + "." if parts else None


def agreed_verdict(df: pd.DataFrame) -> list[str]:
    """What every audio embedder's FD∞ interval says alike: the verdict the README states.

    A model is distinguishable from the floor (or like it) when its FD∞ interval
    avoids (or overlaps) the floor's under every embedder; a pair of models is
    ordered when its intervals are apart under every embedder, in the same direction.
    """
    cols = [c for c in df.columns if (c == "fad_inf" or c.startswith("fad_inf_"))
            and not c.endswith(("_lo", "_hi")) and df[c].notna().any()]
    if len(cols) < 2:
        return []
    models = [s for s in df.index if s not in CALIBRATION and np.isfinite(df.loc[s, cols]).all()]
    names = " and ".join(cols)
    out = []
    if FLOOR in df.index and models:
        apart = [s for s in models if not any(_overlap(df, s, FLOOR, c) for c in cols)]
        same = [s for s in models if all(_overlap(df, s, FLOOR, c) for c in cols)]
        split = [s for s in models if s not in apart and s not in same]
        out.append(f"Both {names} place apart from the floor: {', '.join(apart) or 'none'}; "
                   f"like the floor under both: {', '.join(same) or 'none'}"
                   + (f"; the embedders disagree on: {', '.join(split)}." if split else "."))
    pairs = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            signs = {np.sign(df.at[a, c] - df.at[b, c]) for c in cols}
            if len(signs) == 1 and not any(_overlap(df, a, b, c) for c in cols):
                better, worse = (a, b) if signs.pop() < 0 else (b, a)
                pairs.append(f"{better} < {worse}")
    if len(models) > 1:
        out.append(f"Pairs of models both {names} separate, in the same order (better first): "
                   f"{'; '.join(pairs) or 'none'}.")
    return out


def describe_results(df: pd.DataFrame) -> str:
    """A short reading of the table, every number taken from it.

    Per metric: the model closest to the reference and where the floor and the
    baselines sit. Per model: on how many metrics it is like the floor, between
    floor and the marginals baseline, between the baselines, or worse than
    uniform noise. Then which rows the FD∞ intervals separate, and whether the
    embedders agree on the order.
    """
    models = [s for s in df.index if s not in CALIBRATION]
    metrics = [m for m in metric_columns(df) if m != "copy_rate" and df[m].notna().any()]
    if not models:
        return "No model sets in this table; only the calibration rows."
    lines = ["Closest model to the reference, per metric:"]
    for m in metrics:
        scores = pd.Series({s: _score(df, s, m) for s in models}).dropna()
        if scores.empty:
            continue
        best = scores.idxmin()
        refs = "; ".join(f"{c} {cell(df, c, m)}" for c in CALIBRATION if c in df.index)
        how = {True: "higher is better", False: "lower is better", None: "closest to the floor"}
        lines.append(f"- {m} ({how[metric_info(m)[0]]}): {best} {cell(df, best, m)}"
                     + (f"; {refs}" if refs else ""))
    if any(c in df.index for c in CALIBRATION):
        lines += ["", "Where each model sits against the calibration rows (point values; "
                  "'like the floor' = its interval overlaps the floor's):"]
        for s in models:
            tally = dict.fromkeys(_BAND_NAMES, 0)
            for m in metrics:
                if np.isfinite(df.at[s, m]):
                    tally[_band(df, s, m)] += 1
            counts = ", ".join(f"{k} {v}/{len(metrics)}" for k, v in tally.items() if v)
            lines.append(f"- {s}: {counts}.")
    sep = [line for m in metrics if m.endswith("_inf") or "_inf_" in m for line in separations(df, m)]
    if sep:
        lines += ["", "What the FD∞ intervals separate:", *(f"- {line}" for line in sep)]
    agreement = embedder_agreement(df)
    if agreement:
        lines += ["", agreement]
    verdict = agreed_verdict(df)
    if verdict:
        lines += ["", "The verdict both audio embedders agree on:", *(f"- {line}" for line in verdict)]
    if "copy_rate" in df.columns:
        parts = [f"{s} {cell(df, s, 'copy_rate')}" for s in models]
        if FLOOR in df.index:
            parts.append(f"test windows themselves {cell(df, FLOOR, 'copy_rate')}")
        lines += ["", "Copy rate (share of windows repeating a training window): " + "; ".join(parts) + "."]
    return "\n".join(lines)
