"""Registry of FAD embedders, and the audio-embedding pipeline the evaluation uses.

Every embedder maps a list of mono clips at its sample rate to, per clip, a
(frames, d) float32 array; FAD then fits one Gaussian to all frames of a set.
Windows are rendered with midilib.audio (a process pool) and embedded chunk by
chunk, so memory stays bounded for 10,000-window sets.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

EmbedFn = Callable[[list[np.ndarray]], list[np.ndarray]]


@cache
def _musicnn(model: str) -> EmbedFn:
    from midilib.fad import musicnn

    net = musicnn.load_musicnn(model)
    return lambda clips: musicnn.embed_clips(clips, net)


def _basic_pitch() -> EmbedFn:
    from midilib.fad import basic_pitch

    basic_pitch.load_session()  # fail now if the weights are missing
    return basic_pitch.embed_clips


def _vggish() -> EmbedFn:
    from midilib.fad import vggish

    vggish.embed_clips([])  # fail now if $MIDILIB_VGGISH is unset or wrong
    return vggish.embed_clips


# name -> (loader returning the embed function, sample rate of the clips it takes)
EMBEDDERS: dict[str, tuple[Callable[[], EmbedFn], int]] = {
    "musicnn": (lambda: _musicnn("MSD_musicnn"), 16_000),
    "musicnn-mtt": (lambda: _musicnn("MTT_musicnn"), 16_000),
    "basic-pitch": (_basic_pitch, 16_000),  # resampled to 22.05 kHz inside
    "vggish": (_vggish, 16_000),
}


def get_embedder(name: str) -> tuple[EmbedFn, int]:
    """(embed function, sample rate) of a registered embedder; weights load on first use."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
    loader, sample_rate = EMBEDDERS[name]
    return loader(), sample_rate


def embed_windows(
    windows: np.ndarray,
    embedder: str = "musicnn",
    workers: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Render each window (n, w, 4) to audio and embed it: per window a (frames_i, d) array."""
    import torch
    from tqdm.auto import tqdm

    from midilib.audio import iter_render

    embed, sample_rate = get_embedder(embedder)  # before rendering: fail fast
    windows = np.asarray(windows, dtype=np.float32)
    out: list[np.ndarray] = []
    with torch.no_grad(), tqdm(total=len(windows), desc=f"embed ({embedder})", unit="clip",
                               disable=not progress) as bar:
        for clips in iter_render(windows, sample_rate, workers, chunk=128):
            out.extend(np.asarray(e, dtype=np.float32) for e in embed(clips))
            bar.update(len(clips))
    return out


EMBED_VERSION = 1  # bump when rendering or an embedder changes: cached vectors go stale


def _cache_path(cache_dir: Path, windows: np.ndarray, embedder: str) -> Path:
    digest = hashlib.sha256(f"{EMBED_VERSION}\0{embedder}\0{windows.shape}\n".encode())
    digest.update(np.ascontiguousarray(windows, dtype=np.float32).data)
    return cache_dir / f"{embedder}-{digest.hexdigest()[:20]}.npy"


def window_vectors(
    windows: np.ndarray,
    embedders: Sequence[str],
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """One embedding vector per window (the mean over its frames) under each embedder.

    Windows are rendered once for all embedders that need them (they share a sample
    rate). With `cache_dir`, each set's vectors are kept in an .npy file named by a
    digest of the windows and the embedder, written atomically, so a reference or a
    floor set is embedded once per corpus however often the table is remade.
    Throughput on 2 CPU cores (make bench): ~18 windows/s for musicnn and for basic-pitch.
    """
    import torch
    from tqdm.auto import tqdm

    from midilib.atomic import atomic_write
    from midilib.audio import iter_render

    windows = np.ascontiguousarray(windows, dtype=np.float32)
    out: dict[str, np.ndarray] = {}
    paths = {e: _cache_path(Path(cache_dir), windows, e) for e in embedders} if cache_dir else {}
    for e, path in paths.items():
        if path.exists():
            out[e] = np.load(path)
    todo = [e for e in embedders if e not in out]
    if not todo:
        return out
    fns = {e: get_embedder(e) for e in todo}  # before rendering: fail fast
    rates = {rate for _, rate in fns.values()}
    if len(rates) != 1:
        raise ValueError(f"embedders {', '.join(todo)} need different sample rates; embed them apart")
    parts: dict[str, list[np.ndarray]] = {e: [] for e in todo}
    with torch.no_grad(), tqdm(total=len(windows), desc=f"embed ({', '.join(todo)})", unit="clip",
                               disable=not progress) as bar:
        for clips in iter_render(windows, rates.pop(), workers, chunk=128):
            for e, (fn, _) in fns.items():
                parts[e].extend(np.asarray(f, dtype=np.float64).mean(axis=0) for f in fn(clips))
            bar.update(len(clips))
    for e in todo:
        out[e] = np.stack(parts[e]).astype(np.float32)
        if e in paths:
            buffer = io.BytesIO()
            np.save(buffer, out[e])
            atomic_write(paths[e], buffer.getvalue())
    return out


def fad(
    windows_a: np.ndarray,
    windows_b: np.ndarray,
    embedder: str = "musicnn",
    workers: int | None = None,
    progress: bool = False,
) -> float:
    """Fréchet Audio Distance between two sets of windows (one Gaussian per set of frames)."""
    from midilib.metrics import frechet_distance, gaussian_stats

    stats = [gaussian_stats(np.concatenate(embed_windows(w, embedder, workers, progress)))
             for w in (windows_a, windows_b)]
    return frechet_distance(*stats[0], *stats[1])
