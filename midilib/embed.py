"""MIDI files to VAE latents: one posterior mean per window and their mean per file.

`python -m midilib embed --run VAE_RUN PATH... --out emb.npz` reads every MIDI file
named (folders are searched recursively), cuts it into the run's windows with the
run's own clips (s_max, d_max), and encodes each window to its posterior mean
mu(x). A file-level vector is the mean of its windows' means. Files that cannot be
read, or have fewer notes than a window, are skipped and reported as `prepare` reports
them (`prepare.read_windows`); the rest are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midilib.corpus import MIDI_SUFFIXES, list_midi_files
from midilib.prepare import read_windows


@dataclass
class Embedding:
    """Latents of the windows of `files`; `window_file[i]` is the index in `files` of window i."""

    files: list[str]
    latents: np.ndarray  # (n_windows, latent) posterior means
    window_file: np.ndarray  # (n_windows,) int32
    file_means: np.ndarray  # (n_files, latent)
    skipped: dict[str, str] = field(default_factory=dict)  # path: reason

    def save(self, path: str | Path) -> Path:
        from midilib.atomic import atomic_open

        with atomic_open(path) as f:
            np.savez(f, files=np.array(self.files), latents=self.latents, window_file=self.window_file,
                     file_means=self.file_means)
        return Path(path)


def midi_paths(paths: list[str | Path]) -> list[Path]:
    """The MIDI files named: files as given, folders searched recursively; a missing path is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += list_midi_files(p)
        elif p.is_file():
            if p.suffix.lower() not in MIDI_SUFFIXES:
                raise ValueError(f"{p}: not a .mid or .midi file")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def embed_files(run: str | Path, paths: list[str | Path], batch_size: int = 4096, device: str = "cpu") -> Embedding:
    """Encode the windows of every readable MIDI file under `paths` with the VAE of `run`."""
    from midilib.models.vae import encode
    from midilib.runs import load_model

    model, config = load_model(run, device)
    if config["model"] != "vae":
        raise ValueError(f"{run}: a {config['model']} run has no encoder; embed needs a VAE run")
    params = config["data_params"]
    files = midi_paths(paths)
    if not files:
        raise ValueError(f"no .mid or .midi files under {', '.join(map(str, paths))}")
    kept, parts, owners, skipped = [], [], [], {}
    for f in files:
        windows, _, status = read_windows(f, params["window"], params["s_max"], params["d_max"])
        if windows is None:
            skipped[str(f)] = status
            continue
        owners.append(np.full(len(windows), len(kept), dtype=np.int32))
        kept.append(str(f))
        parts.append(windows)
    latent = model.cfg.latent
    if not kept:
        return Embedding([], np.zeros((0, latent), np.float32), np.zeros(0, np.int32),
                         np.zeros((0, latent), np.float32), skipped)
    mu, _ = encode(model, np.concatenate(parts), batch_size=batch_size)
    latents = mu.numpy().astype(np.float32)
    window_file = np.concatenate(owners)
    sums = np.zeros((len(kept), latent), np.float64)
    np.add.at(sums, window_file, latents)
    file_means = (sums / np.bincount(window_file, minlength=len(kept))[:, None]).astype(np.float32)
    return Embedding(kept, latents, window_file, file_means, skipped)
