"""Shared fixtures: the real sample corpus (skipped where absent) and small MIDI builders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "corpora" / "giantmidi-sample"

os.environ.setdefault("MIDILIB_PROFILE", "smoke")  # notebooks under nbval run at smoke


def prepare_small_corpus(out: Path, max_files: int, valid_fraction: float) -> Path:
    """The first files of the embedded corpus (or the sample corpus) prepared into `out`; skips where neither exists."""
    from midilib.corpus import DATA
    from midilib.prepare import PrepareParams, prepare

    source = DATA / "default-corpus"
    if not (source / "corpus.json").exists():
        source = SAMPLE
    if not source.exists():
        pytest.skip("no corpus available (run make set-up)")
    params = PrepareParams(max_files=max_files, test_fraction=0.25, valid_fraction=valid_fraction)
    prepare(source, out, params, progress=False)
    return out


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"real GiantMIDI-Piano sample absent ({SAMPLE})")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_files(sample_dir: Path) -> list[Path]:
    return sorted(sample_dir.glob("*.mid"))


@pytest.fixture(scope="session")
def real_windows(sample_files: list[Path]) -> np.ndarray:
    from midilib.events import read_events, to_windows

    return np.concatenate([to_windows(read_events(p)) for p in sample_files[:8]])


def write_notes_midi(path: Path, notes: list[tuple[int, float, float, int]], drum: bool = False) -> Path:
    """A small MIDI file of (pitch, start, end, velocity) notes with pretty_midi."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0, is_drum=drum)
    for pitch, start, end, velocity in notes:
        inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def scale_notes(n: int = 40, seed: int = 0) -> list[tuple[int, float, float, int]]:
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += float(rng.choice([0.0, 0.125, 0.25, 0.5, 3.0]))
        out.append((int(rng.integers(40, 90)), t, t + float(rng.uniform(0.05, 2.5)), int(rng.integers(20, 120))))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread than on two threads fighting
    over a shared 2-core CPU (measured); notebooks run in their own kernels, unaffected."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_windows(n: int, seed: int = 0, window: int = 8) -> np.ndarray:
    """Synthetic windows with every channel in its valid range."""
    rng = np.random.default_rng(seed)
    w = np.empty((n, window, 4), dtype=np.float32)
    w[..., 0] = rng.integers(21, 109, (n, window))
    w[..., 1] = rng.uniform(0.1, 1.0, (n, window))
    w[..., 2] = rng.exponential(0.2, (n, window)).clip(0, 2)
    w[..., 3] = rng.exponential(0.4, (n, window)).clip(0, 2)
    return w


# (composer, pieces, notes per piece): Alpha and Beta keep their label at smoke (min_pieces 2),
# Gamma's single piece folds into "other"; 150 notes are 18 windows, 4 sequences of 4
COMPOSERS = [("Alpha, Anna", 5, 150), ("Beta, Bert", 4, 110), ("Gamma, Gus", 1, 200)]


def write_composer_corpus(folder: Path) -> Path:
    """A synthetic corpus of COMPOSERS' pieces named the GiantMIDI way (composer, title, id)."""
    seed = 0
    for composer, pieces, notes in COMPOSERS:
        for i in range(pieces):
            seed += 1
            write_notes_midi(folder / f"{composer}, Piece {i}, id{seed:03d}.mid", scale_notes(notes + 8 * i, seed))
    return folder


def perturbed_latent_run(run: Path):
    """A latent run's model with every weight moved at random, so that the composer matters (the
    adaLN gates start at zero and a smoke run barely moves them)."""
    import torch

    from midilib import latent

    loaded = latent.load_latent(run)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.denoiser.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return loaded
