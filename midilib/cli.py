"""`python -m midilib prepare|train|generate|evaluate|compare|embed`.

Every user error (a wrong path, a parameter out of range, a corrupt input)
ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


class CliError(Exception):
    pass


def _cmd_prepare(args: argparse.Namespace) -> int:
    from midilib.prepare import PrepareParams, prepare

    params = PrepareParams(
        window=args.window,
        s_max=args.s_max,
        d_max=args.d_max,
        test_fraction=args.test_fraction,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        parser=args.parser,
        max_files=args.max_files,
    )
    result = prepare(args.source, args.out, params, workers=args.workers, progress=not args.quiet,
                     composers=args.composers)
    for row in result.manifest:
        if row["status"] != "ok":
            print(f"skipped {row['path']}: {row['status']}", file=sys.stderr)
    print(("reused cache: " if result.reused else "") + result.summary)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from midilib.runs import train_model

    if args.model == "latent":
        return _train_latent(args)
    for name, value in (("--vae", args.vae), ("--windows", args.windows), ("--min-pieces", args.min_pieces),
                        ("--skip", args.skip), ("--min-snr", args.min_snr)):
        if value is not None:
            raise CliError(f"{name} is a latent setting, not one of {args.model!r}")
    result = train_model(
        args.model, args.data, args.profile, args.out, epochs=args.epochs, max_steps=args.max_steps,
        device=args.device, seed=args.seed, resume=args.resume, denoiser=args.denoiser,
        schedule=args.schedule, pitch_code=args.pitch_code, batch_size=args.batch_size, max_minutes=args.max_minutes,
        precision=args.precision, value_weight=args.value_weight, value_head=args.value_head,
        free_bits=args.free_bits, beta_max=args.beta_max, reuse=False, progress=not args.quiet,
    )
    from midilib.distributed import world

    if not world().main:  # under torchrun, rank 0 alone reports
        return 0
    final = result["final"]
    line = f"{args.model}: {result['parameters']:,} parameters; epoch {final.get('epoch')} loss {final.get('loss', float('nan')):.4f}"
    for row in result.get("reconstruction", [])[:1]:
        line += (f"; {result.get('reconstruction_split', 'test')} pitch accuracy "
                 f"{row['pitch_accuracy']:.3f}, note IoU {row['note_iou']:.3f}")
    print(line + f" -> {args.out}")
    return 0


def _train_latent(args: argparse.Namespace) -> int:
    """`train latent --vae VAE_RUN`: diffusion over sequences of the VAE's window latents."""
    from midilib.distributed import world
    from midilib.latent import train_latent

    if args.vae is None:
        raise CliError("train latent needs --vae VAE_RUN (a trained VAE run)")
    for name in ("denoiser", "pitch_code", "value_weight", "value_head", "free_bits", "beta_max"):
        if getattr(args, name) is not None:
            raise CliError(f"--{name.replace('_', '-')} is not a latent setting")
    result = train_latent(
        args.vae, args.data, args.profile, args.out, windows=args.windows, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, max_minutes=args.max_minutes,
        precision=args.precision, schedule=args.schedule, device=args.device, seed=args.seed,
        resume=args.resume, reuse=False, progress=not args.quiet, min_pieces=args.min_pieces, skip=args.skip,
        min_snr=args.min_snr,
    )
    if not world().main:
        return 0
    final = result["final"]
    line = (f"latent: {result['parameters']:,} parameters, {result['sequences']['train']} training sequences; "
            f"epoch {final.get('epoch')} ε-MSE {final.get('mse', float('nan')):.4f}")
    if "valid_loss" in result:
        line += f"; valid loss {result['valid_loss']:.4f} ({result['valid_loss_uncond']:.4f} without composer)"
    print(line + f" -> {args.out}")
    return 0


def _generate_latent(args: argparse.Namespace) -> int:
    """`generate latent --run RUN`: pieces of K windows, OUT/samples.npz and one .mid a piece."""
    from midilib.latent import generate_latent

    n = 16 if args.n is None else args.n
    result = generate_latent(
        args.run, n, args.out, steps=args.steps, composer=args.composer, guidance=args.guidance,
        seed=args.seed, sampler=args.sampler or "ddim", eta=args.eta, temperature=args.temperature,
        device=args.device, batch_size=256 if args.batch_size is None else args.batch_size,
        progress=not args.quiet,
    )
    _, length, _ = result["samples"].shape
    print(f"latent: {n} pieces of {length} notes in {result['seconds']:.2f} s on {result['device']} "
          f"-> {args.out}/samples.npz")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from midilib.runs import generate

    if args.generator == "latent":
        return _generate_latent(args)
    for name, value in (("--sampler", args.sampler), ("--composer", args.composer), ("--guidance", args.guidance)):
        if value is not None:
            raise CliError(f"{name} is a latent setting, not one of {args.generator!r}")
    result = generate(
        args.generator, args.run, 10_000 if args.n is None else args.n, args.out, steps=args.steps, eta=args.eta,
        temperature=args.temperature or 0.0, seed=args.seed,
        batch_size=4096 if args.batch_size is None else args.batch_size,
        device=args.device, progress=not args.quiet,
    )
    print(f"{args.generator}: {len(result['samples'])} windows in {result['seconds']:.2f} s "
          f"({result['seconds_per_10k']:.2f} s per 10k on {result['device']}) -> {args.out}/samples.npz")
    return 0


# --- evaluate: sample files in, a results table out -----------------------------------


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
    if not (path.is_file() or (path.is_dir() and key != "samples")):
        raise FileNotFoundError(f"{path}: no such samples file (from {spec!r})")
    return name, path, key


def load_samples(spec: str) -> tuple[str, np.ndarray]:
    """Parse NAME=PATH[:split] into (name, windows).

    PATH is a samples.npz (array "samples"), or a prepared folder or a windows.npz
    with the array named after the colon (DIR:train). Errors are one-line ValueError /
    FileNotFoundError messages.
    """
    name, path, key = _parse_spec(spec)
    if path.is_dir():
        from midilib.shards import open_split, split_names

        try:
            windows = np.asarray(open_split(path, key), dtype=np.float32)
        except (KeyError, FileNotFoundError):
            raise ValueError(f"{path}: no array {key!r} (has: {', '.join(split_names(path)) or 'none'})") from None
    else:
        windows = _npz_array(path, key)
    if windows.ndim != 3 or windows.shape[-1] != 4 or len(windows) == 0:
        raise ValueError(f"{path}:{key} has shape {windows.shape}; expected (n, window, 4)")
    return name, windows


def _npz_array(path: Path, key: str) -> np.ndarray:
    """Array `key` of an .npz file as float32; one-line ValueError if it is not readable or absent."""
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
    return windows


def _seconds_per_10k(spec: str) -> float | None:
    """The optional scalar "seconds_per_10k" stored beside the samples."""
    _, path, _ = _parse_spec(spec)
    if path.is_dir():
        return None
    with np.load(path, allow_pickle=False) as npz:
        return float(npz["seconds_per_10k"]) if "seconds_per_10k" in npz.files else None


def run_evaluation(
    reference_dir: str | Path,
    sample_specs: Sequence[str],
    out_dir: str | Path,
    embedder: str | Sequence[str] | None = None,
    n: int = 10_000,
    seed: int = 0,
    n_boot: int = 1000,
    *,
    n_fad: int | None = None,
    title_lines: Sequence[str] = (),
    s_max: float | None = None,
    d_max: float | None = None,
    embed_cache: str | Path | None = None,
) -> pd.DataFrame:
    """The whole protocol: reference from a prepared folder's test split (intervals by its files),
    sets, table, files.

    Sets bigger than n are randomly subsampled to n; `n` also caps the windows
    embedded for FAD. A samples file may carry a scalar "seconds_per_10k" array,
    which becomes the timing column. The clips s_max/d_max default to the ones
    the reference was prepared with (its params.json), else 2 s.
    """
    from midilib import evaluate as E
    from midilib.report import machine_line, write_results

    params_path = Path(reference_dir) / "params.json"
    prepared = json.loads(params_path.read_text())["params"] if params_path.is_file() else {}
    s_max = s_max if s_max is not None else prepared.get("s_max", 2.0)
    d_max = d_max if d_max is not None else prepared.get("d_max", 2.0)
    from midilib.prepare import load_windows
    from midilib.shards import split_names

    have = split_names(reference_dir)  # shards, or a windows.npz from before them
    if not have:
        raise FileNotFoundError(f"{Path(reference_dir) / 'windows.npz'}: no such file, nor shards "
                                "(run the data pipeline first)")
    missing = [k for k in ("train", "test") if k not in have]
    if missing:
        raise ValueError(f"{reference_dir}: missing array(s) {', '.join(missing)}")
    arrays = load_windows(reference_dir, names=[k for k in ("train", "test", "train_file", "test_file") if k in have])
    train, test = arrays["train"], arrays["test"]
    train_file, test_file = arrays.get("train_file"), arrays.get("test_file")
    reference, ref_groups = E.reference_set(test, test_file, min(n, len(test)), seed, s_max, d_max)
    sets: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for spec in sample_specs:
        name, windows = load_samples(spec)
        if name in sets:
            raise ValueError(f"set name {name!r} given twice")
        if len(windows) > n:
            windows = E._sample(windows, n, E._set_rng(seed, f"subsample {name}"))
        sets[name] = windows
        seconds = _seconds_per_10k(spec)
        if seconds is not None:
            timings[name] = seconds
    df = E.evaluate_sets(reference, sets, train, n_boot, seed, embedder, timings or None,
                         reference_groups=ref_groups, train_groups=train_file,
                         n_fad=n_fad or n, embed_cache=embed_cache, s_max=s_max, d_max=d_max)
    pieces = len(np.unique(ref_groups)) if ref_groups is not None else len(reference)
    embedders = [embedder] if isinstance(embedder, str) else list(embedder or [])
    lines = [
        *title_lines,
        f"Reference: {len(reference)} of {len(test)} test windows of {reference_dir} from {pieces} pieces "
        f"(seed {seed}); floor and baselines from {len(train)} training windows",
        f"Bootstrap: {n_boot} replicates" + (f"; FAD embedders: {', '.join(embedders)}" if embedders else ""),
        machine_line(),
    ]
    write_results(df, out_dir, lines)
    return df


def _cmd_evaluate(args: argparse.Namespace) -> int:
    embedders = [e for e in args.embedder.split(",") if e and e != "none"]
    df = run_evaluation(args.reference, args.samples, args.out, embedder=embedders or None, n=args.n,
                        seed=args.seed, n_boot=args.n_boot)
    print(f"{len(df)} rows -> {args.out}/results.csv, {args.out}/results.md")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from midilib.atomic import atomic_write
    from midilib.report import machine_line
    from midilib.runs import compare_runs

    pairs = dict(_name_path(item) for item in args.runs)
    if args.prior is not None and args.prior < 1:
        raise CliError(f"--prior must be >= 1 windows, got {args.prior}")
    table = compare_runs(pairs, prior_n=args.prior).reset_index()
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    text = ("VAE runs, reconstruction on the split each was scored on (95% intervals over files)  \n"
            f"{machine_line()}\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.out:  # FILE.md, and the same table as FILE.csv for code to read
        atomic_write(Path(args.out), text)
        atomic_write(Path(args.out).with_suffix(".csv"), table.to_csv(index=False))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from midilib.embed import embed_files

    result = embed_files(args.run, args.paths, batch_size=args.batch_size, device=args.device)
    for path, reason in result.skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not result.files:
        raise CliError(f"no usable MIDI file among {len(result.skipped)} ({'; '.join(sorted(set(result.skipped.values()))[:3])})")
    result.save(args.out)
    print(f"embed: {len(result.latents)} windows of {len(result.files)} files ({len(result.skipped)} skipped), "
          f"latent {result.latents.shape[1]} -> {args.out}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from midilib.probe import corpus_features, probe_report, probe_table

    if args.folds < 2:
        raise CliError(f"--folds must be >= 2, got {args.folds}")
    feats = corpus_features(args.run, args.data, device=args.device)
    table, chosen = probe_table(feats, min_pieces=args.min_pieces, folds=args.folds, seed=args.seed)
    print(probe_report(table, chosen, args.folds, args.data))
    if args.out:
        from midilib.atomic import atomic_write

        atomic_write(Path(args.out), table.to_csv(index=False))
    return 0


def _name_path(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise CliError(f"--runs: expected NAME=RUN, got {item!r}")
    return name, path


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compare": _cmd_compare,
    "embed": _cmd_embed,
    "probe": _cmd_probe,
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "generate": _cmd_generate,
    "evaluate": _cmd_evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m midilib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="MIDI files -> DIR/shards + manifest.csv")
    p.add_argument("source", help="a folder of MIDI files, a GiantMIDI zip, 'default' or 'giantmidi'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--s-max", type=float, default=2.0, help="clip of the onset gap (s)")
    p.add_argument("--d-max", type=float, default=2.0, help="clip of the duration (s)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of files (whole pieces) in test")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="share of files (whole pieces) in valid, where choices are made (0 allowed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--parser", choices=("fast", "pretty_midi"), default="fast")
    p.add_argument("--max-files", type=int, default=None, help="use only the first N files")
    p.add_argument("--composers", default=None, metavar="CSV",
                   help="path,composer labels (paths relative to the corpus root) that come before "
                        "the ones read from file and folder names")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("model", choices=("vae", "ddpm", "latent"),
                   help="latent: diffusion over sequences of a VAE run's window latents (needs --vae)")
    p.add_argument("--data", required=True, help="a prepared folder (DIR/shards)")
    p.add_argument("--profile", default="default", help="smoke | default | full")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default=None, choices=("bf16", "fp32"),
                   help="on CUDA: bf16 autocast (the profiles' choice) or fp32; the CPU always uses fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--denoiser", choices=("lstm", "transformer"), default=None)
    p.add_argument("--schedule", choices=("linear", "cosine"), default=None)
    p.add_argument("--pitch-code", choices=("linear", "fifths"), default=None,
                   help="ddpm only: pitch as one linear channel, or circle of fifths + height")
    p.add_argument("--value-weight", type=float, default=None,
                   help="VAE only: weight of the values' term against the pitch cross-entropy")
    p.add_argument("--value-head", choices=("mse", "classes"), default=None,
                   help="VAE only: velocity/delta/duration by softplus MSE (the original's) or as classes")
    p.add_argument("--free-bits", type=float, default=None,
                   help="VAE only: nats of KL per window that cost nothing (MusicVAE's free bits)")
    p.add_argument("--beta-max", type=float, default=None, help="VAE only: the KL weight's final value")
    p.add_argument("--vae", default=None, metavar="VAE_RUN", help="latent only: the trained VAE run to encode with")
    p.add_argument("--windows", type=int, default=None, metavar="K",
                   help="latent only: consecutive windows per sequence (default: the profile's, 16)")
    p.add_argument("--min-pieces", type=int, default=None, metavar="N",
                   help="latent only: training pieces a composer needs to be a class of its own; fewer fold "
                        "into 'other' (default: the profile's: 10 at default, 2 at smoke)")
    p.add_argument("--skip", choices=("sequence", "composer", "gaussian"), default=None,
                   help="latent only: the denoiser's skip: each composer's Gaussian over the whole sequence "
                        "(default), over one window at a time, or N(0, I)")
    p.add_argument("--min-snr", type=float, default=None, metavar="GAMMA",
                   help="latent only: weigh the loss by min(SNR, GAMMA) / SNR (default 0: the plain ε-MSE)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("generate", help="generate windows with a trained run")
    from midilib.runs import GENERATORS

    p.add_argument("generator", choices=(*GENERATORS, "latent"),
                   help="latent: whole pieces of K windows from a `train latent` run")
    p.add_argument("--run", required=True)
    p.add_argument("-n", type=int, default=None, help="windows (default 10,000), or pieces for latent (default 16)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (diffusion; default: all for ddpm, 50 for ddim, 20 for dpmsolver)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 DDPM-like; ddim only)")
    p.add_argument("--temperature", type=float, default=None,
                   help="VAE decoding temperature (0: every pitch and value its mode; default 0, and for latent "
                        "the one chosen on the validation files when the run was trained)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default: 4096 windows, or 256 latent pieces")
    p.add_argument("--sampler", choices=("ddim", "ddpm", "dpmsolver"), default=None, help="latent only (default ddim)")
    p.add_argument("--composer", default=None, help="latent only: condition on this composer of the run")
    p.add_argument("--guidance", type=float, default=None,
                   help="latent only: classifier-free guidance weight W with --composer (0 unconditional, "
                        "1 conditional, the default; > 1 stronger)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("evaluate", help="compare sample sets against held-out windows")
    p.add_argument("--reference", required=True, help="a prepared folder (its test split is the reference)")
    p.add_argument("--samples", nargs="+", required=True, metavar="NAME=PATH[:split]")
    p.add_argument("--out", required=True)
    p.add_argument("--embedder", default="musicnn",
                   help="FAD embedder(s), comma-separated, the first one's columns unsuffixed "
                        "(musicnn, musicnn-mtt, basic-pitch, vggish; none)")
    p.add_argument("--n", type=int, default=10_000, help="windows per set, for every metric (FAD included)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("embed", help="VAE latents of MIDI files: one per window and the mean per file")
    p.add_argument("paths", nargs="+", metavar="PATH", help="MIDI files or folders (searched recursively)")
    p.add_argument("--run", required=True, help="a trained VAE run")
    p.add_argument("--out", required=True, help="the .npz to write (files, latents, window_file, file_means)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("probe", help="cross-validated composer probe: VAE file latents vs window statistics")
    p.add_argument("--run", required=True, help="a trained VAE run")
    p.add_argument("--data", required=True, help="a prepared folder (composers from its manifest)")
    p.add_argument("--min-pieces", type=int, default=3,
                   help="composers with fewer groups (recordings or pieces) are pooled as 'other'")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="also write the table here (CSV)")

    p = sub.add_parser("compare", help="tabulate trained VAE runs' validation reconstruction")
    p.add_argument("runs", nargs="+", metavar="NAME=RUN")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--prior", type=int, default=None, metavar="N",
                   help="also score each run's prior samples against N validation windows (fmd_inf, scale "
                        "consistency) at the temperature chosen on them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ValueError, OSError, ImportError, RuntimeError, EOFError, zipfile.BadZipFile,
            pickle.UnpicklingError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
