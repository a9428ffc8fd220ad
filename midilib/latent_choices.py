"""Latent diffusion's design choices, made on the validation split (README, notebook 07).

`choose` trains one latent run per variant (keyword overrides of `latent.train_latent`, such as
`skip` and `min_snr`) on the same VAE, data and budget, and scores each on the validation
pieces of K windows, never the test ones:

- Mittal et al.'s self-similarity scores and FD∞ of 4-window clips (`long_pieces.score_sets`
  against every validation piece), whole-piece scale consistency;
- the validation ε-MSE with each sequence's composer and with the null token;
- how often a composer probe (`long_pieces.piece_probe` on the training and validation pieces)
  names unguided pieces (W = 0) and pieces guided at W = `guidance` as the composer asked for.

    python -m midilib.latent_choices --vae VAE_RUN --data DIR --profile P --out DIR [--min-pieces 3] [--md FILE]

writes DIR/<variant>/ (the runs) and, with --md, FILE and FILE.csv.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from midilib.atomic import atomic_write

# name: train_latent overrides
VARIANTS: dict[str, dict[str, Any]] = {
    "blind skip, plain ε-MSE (the first design)": {"skip": "gaussian", "min_snr": 0.0},
    "composer skip, plain ε-MSE": {"skip": "composer", "min_snr": 0.0},
    "composer skip, min-SNR 5": {"skip": "composer", "min_snr": 5.0},
    "composer skip, min-SNR 1": {"skip": "composer", "min_snr": 1.0},
    "composer skip's Gaussian alone (1 training step)": {"skip": "composer", "min_snr": 5.0, "max_steps": 1},
    "sequence skip's Gaussian alone (1 training step)": {"skip": "sequence", "min_snr": 5.0, "max_steps": 1},
    "sequence skip, plain ε-MSE": {"skip": "sequence", "min_snr": 0.0},
    "sequence skip, min-SNR 5": {"skip": "sequence", "min_snr": 5.0},
}
SHOWN = ("pitch_consistency", "pitch_variance", "duration_consistency", "duration_variance", "fd_clips",
         "scale_consistency")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.split(" (")[0]).strip("-").lower()


def choose(
    vae_run: str | Path, data_dir: str | Path, profile: str, out: str | Path,
    variants: Mapping[str, Mapping[str, Any]] = VARIANTS, n: int = 125, guidance: float = 2.0, n_guided: int = 32,
    min_pieces: int | None = None, seed: int = 0, progress: bool = False,
) -> pd.DataFrame:
    """One row per variant (index "variant"): the scores above, each self-similarity score and FD∞
    with its 95% interval (`_lo`/`_hi`), plus the validation pieces' own lower ends (row
    "real: validation pieces (lower ends)"). Runs already trained with the same configuration are reused."""
    from midilib import latent
    from midilib import long_pieces as LP
    from midilib.prepare import load_prepared

    if not variants or len({_slug(name) for name in variants}) != len(variants):
        raise ValueError("need at least one variant, and variant names that differ in their run folders")
    data = load_prepared(data_dir)
    if not len(getattr(data, "valid", ())):
        raise ValueError(f"{data_dir}: no validation split to choose on (prepare with --valid-fraction > 0)")
    rows, reference = [], None
    for name, overrides in variants.items():
        run_dir = Path(out) / _slug(name)
        result = latent.train_latent(vae_run, data_dir, profile, run_dir, min_pieces=min_pieces, progress=progress,
                                     seed=seed, **overrides)
        run = latent.load_latent(run_dir)
        if reference is None:
            reference = LP.real_pieces(data.valid, data.valid_file, run.windows)
        pieces = LP.latent_pieces(run, n, seed)
        scores = LP.score_sets({"real: validation pieces": reference, name: pieces}, reference, seed=seed)
        row = {"variant": name, "epochs": result["final"].get("epochs_done"),
               "valid_loss": result.get("valid_loss"), "valid_loss_uncond": result.get("valid_loss_uncond")}
        for m in SHOWN:
            row.update({c: float(scores.at[name, c]) for c in (m, f"{m}_lo", f"{m}_hi") if c in scores.columns})
        named = [c for c in run.composers if c != latent.OTHER]
        if len(named) >= 2:
            probe = LP.piece_probe(run, seed=seed, splits=("train", "valid"))
            sweep = LP.guidance_sweep(run, probe, reference, (0.0, guidance), n=n_guided, seed=seed)
            pooled = sweep[sweep.composer == "all"].set_index("guidance")
            row.update({"probe_real": probe.accuracy[0], "named_unguided": float(pooled.at[0.0, "accuracy"]),
                        f"named_W{guidance:g}": float(pooled.at[guidance, "accuracy"]),
                        f"fd_clips_W{guidance:g}": float(pooled.at[guidance, "fd_clips"])})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    real = scores.loc["real: validation pieces"]
    table.loc["real: validation pieces (lower ends)"] = {m: float(real[f"{m}_lo"]) for m in SHOWN
                                                         if m != "fd_clips"} | {"fd_clips": float(real.fd_clips)}
    return table


def markdown(table: pd.DataFrame, source: str, machine: str) -> str:
    """The table as markdown: value [95% interval] for the scores, with how it was made."""
    def cell(row: pd.Series, m: str) -> str:
        if pd.isna(row.get(m)):
            return ""
        if f"{m}_lo" in row and not pd.isna(row[f"{m}_lo"]) and row.name != table.index[-1]:
            return f"{row[m]:.3f} [{row[f'{m}_lo']:.3f}, {row[f'{m}_hi']:.3f}]"
        return f"{row[m]:.3f}"

    cols = [c for c in ("epochs", "valid_loss", "valid_loss_uncond", *SHOWN, "probe_real", "named_unguided")
            if c in table.columns] + [c for c in table.columns if c.startswith(("named_W", "fd_clips_W"))]
    lines = [f"Latent diffusion's design choices on the validation pieces of `{source}` "
             f"(`python -m midilib.latent_choices`; {machine}). Scores against every validation piece of K windows; "
             "the last row is the validation pieces' own lower ends (self-similarity) and FD∞ against themselves. "
             "named_*: the share of pieces a composer probe (fitted on training and validation pieces) names as "
             "the composer asked for.", "",
             "| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in table.iterrows():
        lines.append(f"| {name} | " + " | ".join(
            f"{int(row[c])}" if c == "epochs" and not pd.isna(row[c]) else
            cell(row, c) if c in SHOWN else "" if pd.isna(row[c]) else f"{row[c]:.4f}" if "loss" in c else
            f"{row[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from midilib.report import machine_line

    p = argparse.ArgumentParser(prog="python -m midilib.latent_choices", description=__doc__.split("\n")[0])
    p.add_argument("--vae", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--profile", default="default")
    p.add_argument("--out", required=True, help="folder for one run per variant")
    p.add_argument("--min-pieces", type=int, default=None)
    p.add_argument("--md", default=None, help="write the table here (and FILE.csv beside it)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        table = choose(args.vae, args.data, args.profile, args.out, min_pieces=args.min_pieces, seed=args.seed,
                       progress=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(table, str(args.data), machine_line().removeprefix("Machine: "))
    print(text)
    if args.md:
        atomic_write(Path(args.md), text)
        atomic_write(Path(args.md).with_suffix(".csv"), table.to_csv())
    return 0


if __name__ == "__main__":
    sys.exit(main())
