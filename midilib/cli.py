"""`python -m midilib prepare|train|generate|evaluate`.

Every user error (a wrong path, a parameter out of range, a corrupt input)
ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"prepare": _cmd_prepare}


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ValueError, FileNotFoundError, ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
