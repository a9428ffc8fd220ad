"""Fetch the FAD embedders' pretrained weights from PyPI wheels, once, at set-up.

The musicnn (ISC) and basic-pitch (Apache-2.0) wheels ship their weights, so
the package registry is the only source we need: `pip download` the pinned
wheel, check each needed file's size and SHA-256, and move them atomically into
`data/weights/<name>/` (or `$MIDILIB_WEIGHTS/<name>/`). Nothing is ever
downloaded at test or evaluation time.

    python -m midilib.fad.weights            # all embedders
    python -m midilib.fad.weights musicnn    # just one
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import midilib


@dataclass(frozen=True)
class WeightFile:
    member: str  # path inside the wheel
    name: str  # file name under data/weights/<package>/
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightPackage:
    requirement: str  # pinned wheel to download
    files: tuple[WeightFile, ...]


_MUSICNN = "musicnn/{model}/.{ext}"
PACKAGES: dict[str, WeightPackage] = {
    "musicnn": WeightPackage("musicnn==0.1.0", (
        WeightFile(_MUSICNN.format(model="MSD_musicnn", ext="index"), "MSD_musicnn.index", 4948,
                   "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8"),
        WeightFile(_MUSICNN.format(model="MSD_musicnn", ext="data-00000-of-00001"),
                   "MSD_musicnn.data-00000-of-00001", 9465596,
                   "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6"),
        WeightFile(_MUSICNN.format(model="MTT_musicnn", ext="index"), "MTT_musicnn.index", 4948,
                   "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57"),
        WeightFile(_MUSICNN.format(model="MTT_musicnn", ext="data-00000-of-00001"),
                   "MTT_musicnn.data-00000-of-00001", 9465596,
                   "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab"),
        WeightFile("musicnn-0.1.0.dist-info/LICENSE.md", "LICENSE.md", 817,
                   "60c4194f702ddd969f969577743546327b4e9db560c07ec286be5cec27f55fcd"),
    )),
    "basic-pitch": WeightPackage("basic-pitch==0.4.0", (
        WeightFile("basic_pitch/saved_models/icassp_2022/nmp.onnx", "nmp.onnx", 230444,
                   "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"),
        WeightFile("basic_pitch-0.4.0.dist-info/LICENSE", "LICENSE", 11384,
                   "929c910bae2152fa87199a5d0660e09263419b7eee6d4b301d05ee2aaf211c37"),
        WeightFile("basic_pitch-0.4.0.dist-info/NOTICE", "NOTICE", 1034,
                   "b810e55c0e3b520fabb45fc2ccc74880187bf84e309971968541cc812dcde905"),
    )),
}


def weights_root() -> Path:
    """`$MIDILIB_WEIGHTS` if set, else `data/weights` in the repository."""
    env = os.environ.get("MIDILIB_WEIGHTS")
    return Path(env) if env else Path(midilib.__file__).resolve().parents[1] / "data" / "weights"


def _complete(folder: Path, package: WeightPackage) -> bool:
    return all((folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size
               for f in package.files)


def weight_path(package: str, name: str) -> Path:
    """Path of one fetched weight file; FileNotFoundError saying how to fetch it."""
    if package not in PACKAGES:
        raise ValueError(f"unknown weights {package!r}; choose one of {', '.join(PACKAGES)}")
    path = weights_root() / package / name
    if not _complete(path.parent, PACKAGES[package]):
        raise FileNotFoundError(
            f"{package} weights not found in {path.parent}: run `python -m midilib.fad.weights "
            f"{package}` (or the `make` set-up) once, with access to PyPI"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(requirement: str, dest: Path) -> Path:
    """`pip download` one pinned wheel without dependencies; one-line error if that fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", requirement, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise RuntimeError(f"could not download {requirement} from the package registry "
                           f"(is PyPI reachable?): {reason}")
    return wheels[0]


def fetch(package: str, force: bool = False) -> Path:
    """Download and unpack one package's weights (idempotent); returns their folder."""
    if package not in PACKAGES:
        raise ValueError(f"unknown weights {package!r}; choose one of {', '.join(PACKAGES)}")
    spec = PACKAGES[package]
    root = weights_root()
    final = root / package
    if not force and _complete(final, spec):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{package}-") as tmp:
        staging = Path(tmp) / package
        staging.mkdir()
        wheel = _download_wheel(spec.requirement, Path(tmp) / "wheel")
        with zipfile.ZipFile(wheel) as zf:
            for f in spec.files:
                with zf.open(f.member) as src, open(staging / f.name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                got = staging / f.name
                if got.stat().st_size != f.size or _sha256(got) != f.sha256:
                    raise RuntimeError(f"{wheel.name}: {f.member} does not match its expected "
                                       "size/SHA-256; refusing to install it")
        if final.exists():  # incomplete or forced: swap the whole folder
            shutil.rmtree(final)
        os.replace(staging, final)  # same file system: atomic
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fetch FAD embedder weights from PyPI wheels.")
    parser.add_argument("packages", nargs="*", metavar="NAME",
                        help=f"any of {', '.join(PACKAGES)} (default: all)")
    parser.add_argument("--force", action="store_true", help="download again even if present")
    args = parser.parse_args(argv)
    try:
        for name in args.packages or list(PACKAGES):
            print(f"{name}: {fetch(name, force=args.force)}")
    except (RuntimeError, ValueError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
