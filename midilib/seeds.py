"""How much a headline metric moves when only the training seed changes.

The results table's intervals cover the sampling of windows and pieces, not
the training run: one run per model is one draw. This module trains the
workbook's diffusion model with a few seeds (seed 0 is the workbook's own run,
reused), samples DDIM-50 from each, scores every seed against the same test
reference in one table, and writes the spread per metric to
FIGURES/seeds.csv and seeds.md. A difference between two models smaller
than this spread is not evidence that one is better.

    python -m midilib.seeds --profile default --source default   (make seeds)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from midilib.atomic import atomic_write

HEADLINE = ("fmd_inf", "fad_inf", "fad_inf_basic_pitch", "scale_consistency", "pitch_class_entropy",
            "ioi_entropy", "overlap_pitch", "w1_delta")
START_MARKER, END_MARKER = "<!-- seeds:start -->", "<!-- seeds:end -->"


def seed_spread(results: pd.DataFrame, names: Sequence[str], metrics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """Per metric: each seed's value, their mean, standard deviation (ddof 1) and range."""
    rows = []
    for m in metrics:
        if m not in results.columns:
            continue
        values = results.loc[list(names), m].astype(float)
        rows.append({"metric": m, **{n: values[n] for n in names}, "mean": values.mean(),
                     "sd": values.std(ddof=1), "range": values.max() - values.min()})
    return pd.DataFrame(rows).set_index("metric")


def spread_markdown(spread: pd.DataFrame, title_lines: Sequence[str]) -> str:
    from midilib.report import _decimals

    def fmt(x: float) -> str:
        return "–" if not np.isfinite(x) else f"{x:.{_decimals(x)}f}"

    cols = list(spread.columns)
    lines = [*(f"{t}  " for t in title_lines), "", "| metric | " + " | ".join(cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for m, row in spread.iterrows():
        lines.append(f"| {m} | " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def run(profile: str, source: str, seeds: Sequence[int], embedders: Sequence[str],
        progress: bool = True) -> pd.DataFrame:
    from midilib import evaluate as E
    from midilib import runs
    from midilib.report import machine_line
    from midilib.workbook import ROOT, Workbook

    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs at least 2 distinct seeds, got {list(seeds)}")
    wb = Workbook("seeds", profile, source, progress=progress)
    data, d, ev = wb.prepared, wb.profile.data, wb.profile.eval
    steps = min(50, wb.profile.diffusion.timesteps)
    sets = {}
    for seed in seeds:
        run_dir = wb.run_dir("ddpm" if seed == 0 else f"ddpm-seed{seed}")
        print(f"[seeds] seed {seed}: train (or reuse) {run_dir}", flush=True)
        runs.train_model("ddpm", wb.data_dir, wb.profile, run_dir, seed=seed, progress=progress)
        out = runs.cached_generate("ddim", run_dir, ev.n_generate, seed=0, steps=steps)
        sets[f"DDIM-{steps} seed {seed}"] = out["samples"]
    reference, groups = E.reference_set(data.test, data.test_file, min(ev.n_reference, len(data.test)),
                                        seed=0, s_max=d.s_max, d_max=d.d_max)
    results = E.evaluate_sets(reference, sets, train=None, n_boot=ev.bootstrap,
                              fad_embedder=list(embedders) or None, reference_groups=groups,
                              n_fad=ev.n_fad,
                              embed_cache=ROOT / "data" / "cache" / "embeddings", s_max=d.s_max,
                              d_max=d.d_max, progress=progress)
    spread = seed_spread(results, list(sets))
    title = [f"Training-seed spread: the `{profile}` diffusion model trained with seeds "
             f"{', '.join(map(str, seeds))} on corpus `{source}`, DDIM-{steps}, {ev.n_generate} windows each, "
             f"scored against the same {len(reference)} test windows", machine_line()]
    atomic_write(wb.figures / "seeds.csv", spread.to_csv(float_format="%.6g"))
    atomic_write(wb.figures / "seeds.md", spread_markdown(spread, title))
    print(spread_markdown(spread, title))
    return spread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midilib.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--source", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--embedders", default="musicnn,basic-pitch", help="comma-separated; '' for none")
    args = parser.parse_args(argv)
    try:
        run(args.profile, args.source, args.seeds, [e for e in args.embedders.split(",") if e.strip()])
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
