"""Long pieces side by side (notebook 07): every way this project has to make K windows in a row,
scored against real test pieces of the same length.

A *piece* here is K consecutive 8-note windows, (K * W, 4) notes in the columns of
windows.npz; a `PieceSet` holds N of them with the unit each belongs to (the file of a
real piece, so its pieces are resampled together; the piece itself for a generated one,
each drawn independently) and the model time it took. The makers, each deterministic
given its seed:

- `real_pieces`: non-overlapping runs of K consecutive windows of a split's files (the
  same cut as `latent.encode_sequences`, so piece i has sequence i's latents);
- `round_trip`: every window of real pieces through the VAE (posterior mean, decoded):
  what any generator that decodes VAE latents loses before it generates anything (at the
  decoding temperature of every VAE-decoded row, and, where that is not 0, at T = 0 too:
  what decoding every value at its mode would lose);
- `shuffled_pieces`: real windows, each of a piece from a different file
  (`longform.shuffled_windows`): every window right, no long-range structure;
- `prior_pieces`: K independent VAE prior samples in a row;
- `walk_pieces`: the original study's random walk in the VAE latent space
  (`models.vae.latent_walk`: z_{k+1} = z_k + s N(0, I) from a prior draw);
- `slerp_pieces`: the spherical interpolation between the latents of a real piece's
  first and last windows (`models.vae.interpolate`; Mittal et al.'s "interpolation");
- `continuation_pieces`: DDIM inpainting continuation from a real piece's first window
  (`diffusion.sampling.continue_pieces`, 4 notes known per new window);
- `latent_pieces`: latent diffusion (`latent.generate_pieces`), unconditional or guided
  towards composers.

`comparison_sets` makes all of them; `score_sets` scores sets against the real test
pieces: Mittal et al.'s framewise consistency and variance of pitch and duration
(`longform.framewise_similarity`), FD∞ of clips of 4 consecutive windows
(`longform.clips`, each clip's `metrics.window_features` taken over its 32 notes and
z-scored by the reference clips', `frechet.frechet_inf` with a split-half interval over
units) and whole-piece scale consistency (jackknife over units). `piece_probe` and
`guidance_sweep` ask whether composer guidance works: a composer probe
(`probe.fit_probe`) trained on real pieces of K windows classifies pieces generated for
each composer at several guidance weights.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from midilib import intervals as I
from midilib import longform
from midilib.frechet import frechet_inf
from midilib.metrics import standardise, window_features

FD_WINDOWS = 4  # windows per clip for FD∞ over clips
N_SPLITS = 10  # half-splits per FD∞ interval (as midilib.evaluate)

REAL = "real: test pieces"
TRAIN = "real: training pieces"
ROUND_TRIP = "VAE round trip of the test pieces"
ROUND_TRIP_MODE = "VAE round trip, every value its mode (T = 0)"
SHUFFLED = "baseline: shuffled windows"
PRIOR = "VAE prior (independent windows)"
WALK = "VAE random walk"
SLERP = "VAE slerp (first to last window)"
CONTINUATION = "DDIM continuation (inpainting)"
LATENT = "latent diffusion"


def guided_name(weight: float) -> str:
    """The comparison's name for latent diffusion guided towards the training composers at W."""
    return f"latent diffusion guided (W = {weight:g})"


@dataclass
class PieceSet:
    """N pieces of one maker: notes (N, L, 4) float32 and the unit each belongs to."""

    pieces: np.ndarray
    units: np.ndarray  # (N,) the file of a real piece; the piece's own index for a generated one
    seconds: float = float("nan")  # model time to make the set, on this machine

    def __post_init__(self) -> None:
        self.pieces = np.asarray(self.pieces, dtype=np.float32)
        self.units = np.asarray(self.units)
        if self.pieces.ndim != 3 or self.pieces.shape[-1] != 4 or self.units.shape != (len(self.pieces),):
            raise ValueError(f"need pieces (N, L, 4) and one unit per piece, got {self.pieces.shape}, "
                             f"{self.units.shape}")

    def __len__(self) -> int:
        return len(self.pieces)

    def windows(self, window: int = 8) -> np.ndarray:
        """The pieces cut back into windows, (N * L / window, window, 4), piece after piece."""
        if self.pieces.shape[1] % window:
            raise ValueError(f"pieces of {self.pieces.shape[1]} notes are not whole windows of {window}")
        return self.pieces.reshape(-1, window, 4)


def _generated(pieces: np.ndarray, seconds: float) -> PieceSet:
    return PieceSet(pieces, np.arange(len(pieces)), seconds)


# --------------------------------------------------------------------------------- makers


def real_pieces(windows: np.ndarray, owner: np.ndarray, k: int, n: int | None = None, seed: int = 0) -> PieceSet:
    """Every non-overlapping run of k consecutive windows (n, W, 4) of each file (`owner`: the
    file of each window, a file's windows consecutive and in order; remainders dropped),
    in row order; with `n`, n of them drawn without replacement (seeded), kept in row order.
    Units: the files."""
    from midilib.latent import cut_sequences

    windows, owner = np.asarray(windows), np.asarray(owner)
    if windows.ndim != 3 or owner.shape != (len(windows),) or k < 1:
        raise ValueError(f"need windows (n, W, 4), one owner per window and k >= 1, got {windows.shape}, "
                         f"{owner.shape}, {k}")
    rows = cut_sequences(owner, k)
    if n is not None and n < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    if not len(rows):
        raise ValueError(f"no file has {k} windows")
    pieces = windows[rows[:, None] + np.arange(k)].reshape(len(rows), k * windows.shape[1], 4)
    return PieceSet(pieces, owner[rows])


def round_trip(
    vae: torch.nn.Module, real: PieceSet, window: int = 8, temperature: float = 0.0, seed: int = 0
) -> PieceSet:
    """Each window of each piece replaced by the VAE's decoding of its posterior mean
    (`models.vae.reconstruct` at temperature 0, else drawn at `temperature`, seeded); the
    units stay the real pieces'."""
    from midilib.models.vae import decode, encode

    t0 = time.perf_counter()
    mu, _ = encode(vae, real.windows(window))  # at T = 0 this is `reconstruct`: nothing is drawn
    out = decode(vae, mu, temperature, torch.Generator().manual_seed(seed), length=window)
    return PieceSet(out.reshape(real.pieces.shape), real.units, time.perf_counter() - t0)


def shuffled_pieces(windows: np.ndarray, owner: np.ndarray, n: int, k: int, seed: int = 0) -> PieceSet:
    """n pieces of k real windows, each of a piece from another file (`longform.shuffled_windows`)."""
    pieces, _ = longform.shuffled_windows(windows, owner, n, k, seed)
    return _generated(pieces, 0.0)


def prior_pieces(vae: torch.nn.Module, n: int, k: int, seed: int = 0, temperature: float = 0.0) -> PieceSet:
    """n pieces of k windows decoded from independent prior draws z ~ N(0, I)
    (`models.vae.sample` of n * k windows, k at a time)."""
    from midilib.models.vae import sample

    t0 = time.perf_counter()
    windows = sample(vae, n * k, temperature, seed)
    return _generated(windows.reshape(n, k * windows.shape[1], 4), time.perf_counter() - t0)


def walk_latents(latent: int, n: int, k: int, scale: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n, k, latent) random walks z_1 ~ N(0, I), z_{j+1} = z_j + scale N(0, I); walk i draws what
    `models.vae.latent_walk(model, k, scale, seed + i)` draws."""
    if n < 1 or k < 1 or scale < 0:
        raise ValueError(f"need n, k >= 1 and scale >= 0, got {n}, {k}, {scale}")
    from midilib.models.vae import walk

    return np.stack([walk(latent, k, scale, torch.Generator().manual_seed(seed + i)).numpy() for i in range(n)])


def walk_pieces(
    vae: torch.nn.Module, n: int, k: int, scale: float = 0.5, seed: int = 0, temperature: float = 0.0
) -> PieceSet:
    """n random walks of k windows (`walk_latents`), decoded in one batch (at `temperature`, its
    draws from `models.vae.decode_generator(seed)`, apart from walk 0's): at temperature 0 piece i is `models.vae.latent_walk(vae, k, scale,
    seed + i)`, the original study's long piece."""
    from midilib.models.vae import decode, decode_generator

    t0 = time.perf_counter()
    z = walk_latents(vae.cfg.latent, n, k, scale, seed)
    windows = decode(vae, z.reshape(n * k, -1), temperature, decode_generator(seed))
    return _generated(windows.reshape(n, k * windows.shape[1], 4), time.perf_counter() - t0)


def slerp_pieces(
    vae: torch.nn.Module, real: PieceSet, k: int, window: int = 8, temperature: float = 0.0, seed: int = 0
) -> PieceSet:
    """For each real piece, k windows along the slerp from its first window's posterior mean to
    its last one's, decoded (at `temperature`, seeded): at temperature 0 piece i is
    `models.vae.interpolate(vae, first_i, last_i, k)`."""
    from midilib.models.vae import decode, encode, slerp

    if k < 2:
        raise ValueError(f"a slerp needs k >= 2 windows, got {k}")
    t0 = time.perf_counter()
    w = real.windows(window).reshape(len(real), -1, window, 4)
    mu, _ = encode(vae, np.concatenate([w[:, 0], w[:, -1]]))
    alpha = torch.linspace(0.0, 1.0, k)
    z = torch.cat([slerp(mu[i], mu[len(real) + i], alpha) for i in range(len(real))])
    windows = decode(vae, z, temperature, torch.Generator().manual_seed(seed), length=window)
    return _generated(windows.reshape(len(real), k * window, 4), time.perf_counter() - t0)


def continuation_windows(k: int, window: int = 8, n_known: int = 4) -> int:
    """Inpainted windows that continue one real window to k windows' worth of notes
    (each adds window - n_known notes; the last may overshoot and is trimmed)."""
    return -(-(k - 1) * window // (window - n_known))


def continuation_pieces(
    model: torch.nn.Module, scheduler: Any, real: PieceSet, k: int, window: int = 8, n_known: int = 4,
    seed: int = 0,
) -> PieceSet:
    """Each real piece's first window continued by DDIM inpainting to k * window notes
    (`diffusion.sampling.continue_pieces`: each new window has its first `n_known` notes
    fixed to the last ones so far)."""
    from midilib.diffusion.sampling import continue_pieces

    t0 = time.perf_counter()
    contexts = real.pieces[:, :window]
    out = continue_pieces(model, scheduler, contexts, continuation_windows(k, window, n_known), n_known, seed)
    return _generated(out[:, : k * window], time.perf_counter() - t0)


def latent_pieces(
    run: Any, n: int, seed: int = 0, steps: int | None = None, composers: Sequence[str] | None = None,
    guidance: float | None = None, temperature: float | None = None,
) -> PieceSet:
    """n pieces of latent diffusion (`latent.generate_pieces`, decoded at `temperature`, None: the run's):
    unconditional when `composers` is None, else piece i guided towards composers[i] with weight
    `guidance` (the pieces of one composer are drawn together, seed + 1 + its index in the run's
    vocabulary)."""
    from midilib.latent import generate_pieces, load_latent

    run = load_latent(run)
    t0 = time.perf_counter()
    if composers is None:
        return _generated(generate_pieces(run, n, steps, seed=seed, temperature=temperature),
                          time.perf_counter() - t0)
    composers = np.asarray(composers, dtype=object)
    if composers.shape != (n,):
        raise ValueError(f"need one composer per piece, got {composers.shape} for {n} pieces")
    out = np.empty((n, run.windows * run.vae.window, 4), np.float32)
    for name in dict.fromkeys(composers.tolist()):
        where = np.flatnonzero(composers == name)
        out[where] = generate_pieces(run, len(where), steps, name, guidance, seed=seed + 1 + run.label(name),
                                     temperature=temperature)
    return _generated(out, time.perf_counter() - t0)


def training_composers(run: Any, n: int, seed: int = 0) -> np.ndarray:
    """n composer names of the run's vocabulary, drawn as its training sequences' composers are
    distributed (each unseen or rare composer as "other")."""
    from midilib.latent import composer_labels

    train = run.sequences()["train"]
    labels = composer_labels(train.composer, run.composers)
    picked = np.random.default_rng(seed).choice(labels, n, replace=True)
    return np.asarray(run.composers, dtype=object)[picked]


def comparison_sets(
    run: Any, ddpm: torch.nn.Module, data: Any, n: int, seed: int = 0, steps: int | None = None,
    guidance: float = 2.0, walk_scale: float = 0.5, continuation_steps: int = 20, progress: bool = False,
    temperature: float | None = None,
) -> dict[str, PieceSet]:
    """Every maker's set, K = the latent run's windows: the real test pieces (all of them), then
    n pieces of each other maker, in the order of the module docstring.

    `run`: a `latent.LatentRun` (its VAE decodes the VAE rows); `ddpm`: a trained window
    diffusion model for the continuation, sampled by DDIM with `continuation_steps` steps (a
    piece costs 2 (K - 1) windows' worth of sampling, so 20 rather than notebook 05's 50);
    `data`: a `prepare.Prepared` of the run's corpus; `steps`: latent diffusion's sampler steps
    (None: 50); `guidance`: the weight of the guided row; `temperature`: the VAE's decoding
    temperature, one for every maker that decodes VAE latents (the round trip, prior, walk,
    slerp and latent diffusion; None: the run's, chosen on the validation files as notebook 03
    chooses it, `latent.decode_temperature`). The training pieces drawn for the
    floor row are those whose first windows the continuation starts from and whose first and
    last windows the slerp joins."""
    from midilib.diffusion.sampling import make_scheduler

    k, window, vae = run.windows, run.vae.window, run.vae
    temperature = run.temperature if temperature is None else temperature
    sets: dict[str, PieceSet] = {}
    jobs = [REAL, TRAIN, ROUND_TRIP, *([ROUND_TRIP_MODE] if temperature else []), SHUFFLED, PRIOR, WALK, SLERP,
            CONTINUATION, LATENT, guided_name(guidance)]
    bar = _bar(len(jobs), progress)
    for name in jobs:
        if name == REAL:
            made = real_pieces(data.test, data.test_file, k)
        elif name == TRAIN:
            made = real_pieces(data.train, data.train_file, k, n, seed)
        elif name == ROUND_TRIP:
            made = round_trip(vae, sets[REAL], window, temperature, seed)
        elif name == ROUND_TRIP_MODE:
            made = round_trip(vae, sets[REAL], window)
        elif name == SHUFFLED:
            made = shuffled_pieces(data.train, data.train_file, n, k, seed)
        elif name == PRIOR:
            made = prior_pieces(vae, n, k, seed, temperature)
        elif name == WALK:
            made = walk_pieces(vae, n, k, walk_scale, seed, temperature)
        elif name == SLERP:
            made = slerp_pieces(vae, sets[TRAIN], k, window, temperature, seed)
        elif name == CONTINUATION:
            scheduler = make_scheduler(ddpm, "ddim", min(continuation_steps, ddpm.timesteps))
            made = continuation_pieces(ddpm, scheduler, sets[TRAIN], k, window, seed=seed)
        elif name == LATENT:
            made = latent_pieces(run, n, seed, steps, temperature=temperature)
        else:
            made = latent_pieces(run, n, seed, steps, training_composers(run, n, seed), guidance, temperature)
        sets[name] = made
        bar.update()
    bar.close()
    return sets


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc="long pieces")


# -------------------------------------------------------------------------------- scoring


def _set_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def clip_features(pieces: PieceSet, clip_windows: int = FD_WINDOWS, window: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(features (M, 8), unit of each clip): `metrics.window_features` of each clip of
    `clip_windows` consecutive windows (`longform.clips`), taken over the clip's notes."""
    clips, owner = longform.clips(pieces.pieces, clip_windows, window)
    if not len(clips):
        return np.zeros((0, 8)), np.zeros(0, np.int64)
    return window_features(clips), pieces.units[owner]


def fd_clips(
    generated: PieceSet, reference: PieceSet, clip_windows: int = FD_WINDOWS, window: int = 8,
    seed: int | np.random.Generator = 0, alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(FD∞, low, high) of clip features (z-scored by the reference clips') against the
    reference's; subsets and half-splits draw units, not clips. NaN with fewer than 4 units
    in a set (the interval: fewer than 8)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    xr, ur = clip_features(reference, clip_windows, window)
    xg, ug = clip_features(generated, clip_windows, window)
    if len(xg) == 0 or len(xr) == 0:
        return float("nan"), float("nan"), float("nan")
    xg, xr = standardise(xg, xr), standardise(xr, xr)
    ug, ur = I.units(ug, len(ug)), I.units(ur, len(ur))
    if min(ug.max(), ur.max()) + 1 < 4:
        return float("nan"), float("nan"), float("nan")
    value = frechet_inf(xg, ug, xr, ur, rng)

    def statistic(ia: np.ndarray, ib: np.ndarray) -> float:
        return frechet_inf(xg[ia], ug[ia], xr[ib], ur[ib], rng)

    return I.split_half_interval(statistic, ug, ur, value, N_SPLITS, alpha, rng)


def score_sets(
    sets: Mapping[str, PieceSet], reference: PieceSet, clip_windows: int = FD_WINDOWS, window: int = 8,
    frame: int = longform.FRAME, hop: int = longform.HOP, seed: int = 0, alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per set (index "set"), each against the `reference` pieces:

    - `<channel>_consistency`, `<channel>_variance` (pitch, duration) with `_lo`/`_hi`:
      Mittal et al.'s scores (1 = as self-similar as the reference), and `<channel>_mean_oa`,
      the set's mean overlap of adjacent frames (the reference's is `<channel>_mean_gt`:
      above it, the set changes less from frame to frame than real music; below, more);
    - `fd_clips` with `_lo`/`_hi`: FD∞ of clips of `clip_windows` windows (`fd_clips`);
    - `scale_consistency` with `_lo`/`_hi` (clipped to [0, 1]): the mean over pieces of the
      share of a piece's notes in its best diatonic scale (`longform.piece_scale_consistency`);
    - `pieces`, `units`, `notes` (per piece), `seconds` (the set's).

    Intervals: 95% by default; over units (a real piece's file, a generated piece itself).
    """
    rows = []
    for name, s in sets.items():
        row: dict[str, Any] = {"set": name, "pieces": len(s), "units": len(np.unique(s.units)),
                               "notes": s.pieces.shape[1], "seconds": s.seconds}
        for channel in longform.CHANNELS:
            sim = longform.framewise_similarity(s.pieces, reference.pieces, channel, frame, hop, alpha,
                                                s.units, reference.units)
            for metric in ("consistency", "variance"):
                value, low, high = getattr(sim, metric)
                row.update({f"{channel}_{metric}": value, f"{channel}_{metric}_lo": low,
                            f"{channel}_{metric}_hi": high})
            row[f"{channel}_mean_oa"], row[f"{channel}_mean_gt"] = sim.mean_oa, sim.mean_gt
        value, low, high = fd_clips(s, reference, clip_windows, window, _set_rng(seed, name), alpha)
        row.update({"fd_clips": value, "fd_clips_lo": low, "fd_clips_hi": high})
        scale = np.array([longform.piece_scale_consistency(p) for p in s.pieces])
        value, low, high = I.mean_interval(scale, s.units, alpha)
        row.update({"scale_consistency": value, "scale_consistency_lo": max(low, 0.0),
                    "scale_consistency_hi": min(high, 1.0)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("set")


def frame_seconds(pieces: PieceSet, frame: int = longform.FRAME, hop: int = longform.HOP) -> np.ndarray:
    """The seconds from the first to the last onset of every frame (`frame` notes every `hop`)
    of every piece: how much music one frame of the self-similarity metric spans."""
    out = []
    for piece in pieces.pieces:
        onsets = np.cumsum(piece[:, 2].astype(np.float64))
        starts = np.arange(0, len(piece) - frame + 1, hop)
        out.append(onsets[starts + frame - 1] - onsets[starts])
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------- the composers


def piece_features(vae: torch.nn.Module, pieces: np.ndarray, window: int = 8) -> np.ndarray:
    """(N, latent): per piece, the mean over its windows of the VAE posterior means (what
    `probe.latent_means` gives a file), from its notes (N, L, 4)."""
    from midilib.models.vae import encode

    pieces = np.asarray(pieces, dtype=np.float32)
    n, length, _ = pieces.shape
    if length % window:
        raise ValueError(f"pieces of {length} notes are not whole windows of {window}")
    mu, _ = encode(vae, pieces.reshape(-1, window, 4))
    return mu.numpy().astype(np.float64).reshape(n, length // window, -1).mean(axis=1)


@dataclass
class PieceProbe:
    """A composer probe over real pieces of K windows (labels: a latent run's vocabulary)."""

    probe: Any  # fitted on every real piece (`probe.fit_probe`)
    labels: np.ndarray  # (pieces,) the composer of each real piece, in the run's vocabulary
    groups: np.ndarray  # (pieces,) its recording or piece (`corpus.group_key`): the folds' unit
    accuracy: tuple[float, float, float]  # out-of-fold accuracy on the real pieces, 95% interval
    baseline: tuple[float, float, float]  # the majority class's, on the same folds
    folds: int

    @property
    def counts(self) -> dict[str, int]:
        """Real pieces per class, most first."""
        names, counts = np.unique(self.labels, return_counts=True)
        return dict(sorted(zip(names.tolist(), counts.tolist()), key=lambda kv: (-kv[1], kv[0])))


def piece_probe(run: Any, folds: int = 5, seed: int = 0, splits: Sequence[str] | None = None) -> PieceProbe:
    """A probe of the latent run's composers on the real pieces of K windows of every split (or of
    `splits`: a choice made on the validation split leaves the test pieces out) (features:
    `piece_features`, read from the run's cached latents), cross-validated by recording
    (`probe.cross_validate`), then fitted on all of them."""
    from midilib import corpus, probe
    from midilib.latent import composer_labels
    from midilib.prepare import load_manifest

    seqs = {s: q for s, q in run.sequences().items() if splits is None or s in splits}
    manifest = load_manifest(run.config["data"])
    features = np.concatenate([s.latents.mean(axis=1) for s in seqs.values()]).astype(np.float64)
    composers = np.concatenate([s.composer for s in seqs.values()])
    files = np.concatenate([s.file for s in seqs.values()])
    labels = np.asarray(run.composers, dtype=object)[composer_labels(composers, run.composers)].astype(str)
    groups = np.array([corpus.group_key(manifest[f]["path"]) for f in files])
    folds = min(folds, len(np.unique(groups)))
    cv = probe.cross_validate(features, labels, groups, folds, seed)
    return PieceProbe(probe.fit_probe(features, labels), labels, groups, cv.accuracy, cv.baseline, folds)


def guidance_sweep(
    run: Any, composer_probe: PieceProbe, reference: PieceSet, weights: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
    n: int = 32, seed: int = 0, steps: int | None = None, composers: Sequence[str] | None = None,
    progress: bool = False, temperature: float | None = None,
) -> pd.DataFrame:
    """Pieces for each composer at each guidance weight W (decoded at `temperature`, None: the run's),
    classified by the probe.

    For each composer c (default: the run's, "other" left out) and W, n pieces guided towards c
    (the same seed for every c and W: paired draws); W = 0 is unconditional sampling, drawn
    once and asked for every c, so its rows give how often unguided pieces pass for c.
    Rows (guidance, composer): `pieces`, `accuracy` (the share classified as c) with
    `_lo`/`_hi` (jackknife over pieces), `seconds`; per W a row composer "all" pools the
    composers and adds `fd_clips` (`fd_clips` of the pooled pieces against `reference`); at
    W = 0 its interval resamples the n pieces, each asked once for every composer.
    """
    from midilib import probe
    from midilib.latent import OTHER, generate_pieces, load_latent

    run = load_latent(run)
    names = [c for c in (composers or run.composers) if c != OTHER]
    if not names:
        raise ValueError("the run has no composer to guide towards (only 'other')")
    bar = _bar(len(weights) * len(names), progress)
    rows, unguided = [], None
    for w in weights:
        pooled, correct_all, seconds = [], [], 0.0
        for c in names:
            t0 = time.perf_counter()
            if w == 0:
                if unguided is None:
                    unguided = generate_pieces(run, n, steps, seed=seed, temperature=temperature)
                pieces = unguided
            else:
                pieces = generate_pieces(run, n, steps, c, float(w), seed=seed, temperature=temperature)
            predicted, _ = probe.classify(composer_probe.probe, piece_features(run.vae, pieces, run.vae.window))
            seconds += time.perf_counter() - t0
            correct = (predicted == c).astype(np.float64)
            rows.append({"guidance": float(w), "composer": c, "pieces": n, "seconds": time.perf_counter() - t0,
                         **_accuracy(correct)})
            pooled.append(pieces)
            correct_all.append(correct)
            bar.update()
        every = np.concatenate(pooled) if w else pooled[0]  # at W = 0 every composer asked for the same pieces
        units = np.arange(len(every)) if w else np.tile(np.arange(n), len(names))
        value, low, high = fd_clips(_generated(every, 0.0), reference, window=run.vae.window,
                                    seed=_set_rng(seed, f"W={w}"))
        rows.append({"guidance": float(w), "composer": "all", "pieces": len(every), "seconds": seconds,
                     **_accuracy(np.concatenate(correct_all), units), "fd_clips": value, "fd_clips_lo": low,
                     "fd_clips_hi": high})
    bar.close()
    return pd.DataFrame(rows)


def _accuracy(correct: np.ndarray, units: np.ndarray | None = None) -> dict[str, float]:
    from midilib.probe import accuracy_interval

    value, low, high = accuracy_interval(correct, units)
    return {"accuracy": value, "accuracy_lo": low, "accuracy_hi": high}
