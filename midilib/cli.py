"""`python -m midilib prepare|train|generate|evaluate`.

Every user error (a wrong path, a parameter out of range, a corrupt input)
ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import zipfile
from collections.abc import Callable, Sequence


class CliError(Exception):
    pass


def _cmd_prepare(args: argparse.Namespace) -> int:
    from midilib.prepare import PrepareParams, prepare

    params = PrepareParams(
        window=args.window,
        s_max=args.s_max,
        d_max=args.d_max,
        test_fraction=args.test_fraction,
        seed=args.seed,
        parser=args.parser,
        max_files=args.max_files,
    )
    result = prepare(args.source, args.out, params, workers=args.workers, progress=not args.quiet)
    for row in result.manifest:
        if row["status"] != "ok":
            print(f"skipped {row['path']}: {row['status']}", file=sys.stderr)
    print(("reused cache: " if result.reused else "") + result.summary)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from midilib.runs import train_model

    result = train_model(
        args.model, args.data, args.profile, args.out, epochs=args.epochs, max_steps=args.max_steps,
        device=args.device, seed=args.seed, resume=args.resume, denoiser=args.denoiser,
        schedule=args.schedule, batch_size=args.batch_size, max_minutes=args.max_minutes,
        precision=args.precision, value_weight=args.value_weight, reuse=False, progress=not args.quiet,
    )
    final = result["final"]
    line = f"{args.model}: {result['parameters']:,} parameters; epoch {final.get('epoch')} loss {final.get('loss', float('nan')):.4f}"
    for row in result.get("reconstruction", [])[:1]:
        line += f"; test pitch accuracy {row['pitch_accuracy']:.3f}, note IoU {row['note_iou']:.3f}"
    print(line + f" -> {args.out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from midilib.runs import generate

    result = generate(
        args.generator, args.run, args.n, args.out, steps=args.steps, eta=args.eta,
        temperature=args.temperature, seed=args.seed, batch_size=args.batch_size,
        device=args.device, progress=not args.quiet,
    )
    print(f"{args.generator}: {args.n} windows in {result['seconds']:.2f} s "
          f"({result['seconds_per_10k']:.2f} s per 10k on {result['device']}) -> {args.out}/samples.npz")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from midilib.evaluate import run_evaluation

    embedder = None if args.embedder == "none" else args.embedder
    df = run_evaluation(args.reference, args.samples, args.out, embedder=embedder, n=args.n,
                        seed=args.seed, n_boot=args.n_boot)
    print(f"{len(df)} rows -> {args.out}/results.csv, {args.out}/results.md")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "generate": _cmd_generate,
    "evaluate": _cmd_evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m midilib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="MIDI files -> windows.npz + manifest.csv")
    p.add_argument("source", help="a folder of MIDI files, a GiantMIDI zip, 'default' or 'giantmidi'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--s-max", type=float, default=2.0, help="clip of the onset gap (s)")
    p.add_argument("--d-max", type=float, default=2.0, help="clip of the duration (s)")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--parser", choices=("fast", "pretty_midi"), default="fast")
    p.add_argument("--max-files", type=int, default=None, help="use only the first N files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("model", choices=("vae", "ddpm"))
    p.add_argument("--data", required=True, help="a prepared folder (windows.npz)")
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
    p.add_argument("--value-weight", type=float, default=None,
                   help="VAE only: weight of the values' MSE against the pitch cross-entropy")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("generate", help="generate windows with a trained run")
    p.add_argument("generator", choices=("vae", "ddpm", "ddim"))
    p.add_argument("--run", required=True)
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (diffusion; default: all for ddpm, 50 for ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 DDPM-like)")
    p.add_argument("--temperature", type=float, default=0.0, help="VAE pitch temperature (0 = argmax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("evaluate", help="compare sample sets against held-out windows")
    p.add_argument("--reference", required=True, help="a prepared folder (its test split is the reference)")
    p.add_argument("--samples", nargs="+", required=True, metavar="NAME=PATH[:split]")
    p.add_argument("--out", required=True)
    p.add_argument("--embedder", default="musicnn", help="FAD embedder (musicnn, musicnn-mtt, basic-pitch, vggish, none)")
    p.add_argument("--n", type=int, default=10_000, help="windows per set")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
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
