"""Latent diffusion over sequences of window latents (Mittal et al., ISMIR 2021): data, runs, sampling.

A trained VAE run maps each 8-note window w of a prepared corpus to its posterior mean
z = mu(w) in R^D. A piece of n windows becomes z_1..z_n, cut into floor(n / K)
non-overlapping sequences of K consecutive windows (the remainder dropped), so a
sequence never crosses pieces and keeps its piece's split. A diffusion model
(midilib.diffusion.latent_model) learns those sequences, normalised per dimension by
the training split's mean and standard deviation, x = (z - mu) / sigma, conditioned
on the piece's composer (classifier-free guidance); each generated latent decodes with
the VAE into its 8 notes, and the K windows in order are a piece of K * 8 notes.

* `encode_sequences(vae_run, data_dir, K)`: the sequences of every split, with each
  sequence's piece (manifest row), first window (row of the split) and composer. The
  window latents are cached in VAE_RUN/latents/<key>/ (shards, key.json last), keyed by
  the VAE's weights digest and the data's key, so every K and every later run reuse them.
* `composer_vocabulary`: composers with at least `min_pieces` training pieces, then
  "other" (every other composer, and unseen ones); the null token is the label after it.
* `train_latent(...)`: a run folder trained with the one trainer (`midilib.train.fit`:
  resume, checkpoints, log.csv); config.json records the VAE run and its digest, K, the
  latent size and the composer vocabulary (data_params); the checkpoint holds the
  normalisation (mean, std and the samplers' clip range, as buffers).
* `load_latent(run)`, `generate_pieces(run, n, ...)` -> (n, K * 8, 4) windows.npz columns,
  `generate_latent(...)` (the CLI's: samples.npz + one .mid a piece), `infill(...)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from midilib.atomic import atomic_write
from midilib.diffusion.latent_model import SKIPS, Guided, LatentDiffusion, SequenceStats, pack
from midilib.models import eval_mode
from midilib.prepare import SPLITS, data_key, load_manifest
from midilib.profiles import LatentConfig, TrainConfig, get_profile, override
from midilib.shards import Shards, ShardWriter, open_split, split_names

OTHER = "other"  # the composers folded together (too few training pieces, or unseen)
CACHE_DIR = "latents"  # inside the VAE run
CACHE_VERSION = 1  # raised whenever the cached latents of the same (VAE, data) would differ
SAMPLERS = ("ddim", "ddpm", "dpmsolver")


@dataclass
class Sequences:
    """The K-window sequences of one split: sequence i is windows row[i] .. row[i] + K - 1 of the
    split (all of piece file[i], consecutive, in order)."""

    latents: np.ndarray  # (m, K, D) float32 posterior means, not normalised
    file: np.ndarray  # (m,) int32 manifest row of the piece
    row: np.ndarray  # (m,) int64 row of the first window in the split's windows
    composer: np.ndarray  # (m,) str, the manifest's composer of the piece

    def __len__(self) -> int:
        return len(self.latents)


# ----------------------------------------------------------------------------- encoding


def vae_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's weights (names, dtypes, shapes and bytes, in name order): what a
    latent run and the latent cache are keyed by; retraining the VAE changes it."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{tuple(value.shape)}\n".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def load_vae(run: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict, str]:
    """(VAE, its config, its weights digest) of a VAE run; a one-line error for any other run."""
    from midilib.runs import load_model

    if not (Path(run) / "checkpoint.pt").exists():
        raise FileNotFoundError(f"--vae {run}: no checkpoint.pt there; train a VAE first (`train vae`)")
    model, config = load_model(run, device)
    if config["model"] != "vae":
        raise ValueError(f"--vae {run}: a {config['model']} run, not a VAE run (`train vae` makes one)")
    return model, config, vae_digest(model)


def _check_data(vae_config: dict, vae_run: str | Path, data_dir: str | Path) -> dict:
    """The data folder's params, which must be the ones the VAE's windows were cut with."""
    from midilib.runs import data_params

    params = data_params(data_dir)
    theirs = {k: vae_config["data_params"][k] for k in params}
    if theirs != params:
        raise ValueError(f"--vae {vae_run}: trained on windows with {theirs}, but {data_dir} has {params}")
    return params


def encode_windows(
    vae: torch.nn.Module, vae_run: str | Path, digest: str, data_dir: str | Path, batch_size: int = 4096,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The posterior mean (n, D) of every window of each split of `data_dir`, in row order.

    Cached in VAE_RUN/latents/<key>/ as shards: the folder is written under a temporary
    name, key.json last, and renamed into place, so a reader sees all of it or none.
    """
    from midilib.models.vae import encode

    data_dir = Path(data_dir)
    splits = [s for s in SPLITS if s in split_names(data_dir)]
    key = {"version": CACHE_VERSION, "vae": digest, "data_key": data_key(data_dir)
           or str(data_dir.resolve()), "splits": splits}
    folder = Path(vae_run) / CACHE_DIR / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    if not _cache_valid(folder, key):
        folder.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        try:
            for split in splits:
                windows = open_split(data_dir, split)
                with ShardWriter(stage, split, (vae.cfg.latent,), np.float32) as writer:
                    for block in tqdm(windows.chunks(batch_size), total=-(-len(windows) // batch_size),
                                      desc=f"encode {split}", disable=not progress):
                        writer.append(encode(vae, block, batch_size)[0].numpy())
            atomic_write(stage / "key.json", json.dumps(key))
            if folder.exists():  # a stale or half-removed cache of this key
                shutil.rmtree(folder)
            try:
                os.rename(stage, folder)
            except OSError:  # another process renamed its copy first: use that one
                if not _cache_valid(folder, key):
                    raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return {split: np.asarray(Shards.open(folder, split), dtype=np.float32) for split in splits}


def _cache_valid(folder: Path, key: dict) -> bool:
    path = folder / "key.json"
    return path.is_file() and json.loads(path.read_text()) == key


def cut_sequences(file_ids: np.ndarray, windows: int) -> np.ndarray:
    """Rows of the first window of every non-overlapping run of `windows` consecutive windows
    of one file (a file's windows are consecutive and in order; its remainder is dropped)."""
    file_ids = np.asarray(file_ids)
    if len(file_ids) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, file_ids[1:] != file_ids[:-1]])
    if len(np.unique(file_ids[starts])) != len(starts):
        raise ValueError("the windows of a file are not consecutive; prepare the folder again")
    counts = np.diff(np.r_[starts, len(file_ids)]) // windows
    first = np.repeat(starts, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return (first + windows * within).astype(np.int64)


def longest_piece(file_ids: np.ndarray) -> int:
    """The most windows any one file has among `file_ids` (0 for none)."""
    return int(np.unique(np.asarray(file_ids), return_counts=True)[1].max()) if len(file_ids) else 0


def encode_sequences(
    vae_run: str | Path, data_dir: str | Path, windows: int = 16, device: str = "cpu",
    batch_size: int = 4096, progress: bool = False, vae: tuple[torch.nn.Module, dict, str] | None = None,
) -> dict[str, Sequences]:
    """The K-window latent sequences (K = `windows`) of every split of a prepared folder,
    encoded by the VAE of `vae_run` (posterior means, cached; see `encode_windows`).
    `vae`: what `load_vae(vae_run)` returns, where the caller has it already."""
    if windows < 1:
        raise ValueError(f"--windows must be >= 1, got {windows}")
    vae, config, digest = vae or load_vae(vae_run, device)
    _check_data(config, vae_run, data_dir)
    latents = encode_windows(vae, vae_run, digest, data_dir, batch_size, progress)
    composers = np.array([row["composer"] for row in load_manifest(data_dir)], dtype=object)
    out = {}
    for split, z in latents.items():
        files = np.asarray(open_split(data_dir, f"{split}_file"), dtype=np.int32)
        rows = cut_sequences(files, windows)
        out[split] = Sequences(z[rows[:, None] + np.arange(windows)].reshape(len(rows), windows, z.shape[1]),
                               files[rows], rows, composers[files[rows]].astype(str))
    if not len(out.get("train", ())):
        files = np.asarray(open_split(data_dir, "train_file"))
        raise ValueError(f"--windows {windows}: longer than every training piece of {data_dir} "
                         f"(the longest has {longest_piece(files)} windows)")
    return out


# ------------------------------------------------------------------ composers and stats


def composer_vocabulary(train: Sequences, min_pieces: int) -> list[str]:
    """Composers with at least `min_pieces` training pieces (files with a sequence), sorted,
    then "other"; the null token is label len(vocabulary)."""
    if min_pieces < 1:
        raise ValueError(f"min_pieces must be >= 1, got {min_pieces}")
    pieces = Counter(c for _, c in dict(zip(train.file.tolist(), train.composer.tolist())).items())
    return sorted(c for c, k in pieces.items() if k >= min_pieces and c != OTHER) + [OTHER]


def composer_labels(composers: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """The label of each composer: its index in the vocabulary, else that of "other"."""
    index = {c: i for i, c in enumerate(vocabulary)}
    return np.array([index.get(c, index[OTHER]) for c in composers], dtype=np.int64)


def normalisation(train: Sequences) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-dimension mean and std (D,) of the training sequences' latents (float64 sums), and
    the largest |x| of x = (z - mean) / std over them (the samplers' clip range; at least 1).
    A constant dimension gets std 1 (it normalises to 0 either way)."""
    z = train.latents.reshape(-1, train.latents.shape[-1]).astype(np.float64)
    mean, std = z.mean(0), z.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    clip = max(1.0, float(np.abs((z - mean) / std).max()))
    return mean.astype(np.float32), std.astype(np.float32), clip


def class_stats(
    train: Sequences, labels: np.ndarray, classes: int, mean: np.ndarray, std: np.ndarray, floor: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the mean and variance (classes, D) of the normalised latents x = (z - mean) / std
    of its training sequences (every window of each), float64 sums; a variance below `floor` is
    raised to it, and a label without sequences gets N(0, I)."""
    x = (train.latents.astype(np.float64) - mean) / std
    out_mean, out_var = np.zeros((classes, x.shape[-1])), np.ones((classes, x.shape[-1]))
    for c in range(classes):
        rows = x[labels == c].reshape(-1, x.shape[-1])
        if len(rows):
            out_mean[c], out_var[c] = rows.mean(0), np.maximum(rows.var(0), floor)
    return out_mean.astype(np.float32), out_var.astype(np.float32)


def sequence_stats(
    train: Sequences, labels: np.ndarray, classes: int, mean: np.ndarray, std: np.ndarray, rank: int = 128,
    prior: float | None = None,
) -> SequenceStats:
    """The "sequence" skip's Gaussians (`diffusion.latent_model.SequenceStats`) of the normalised
    training latents x = (z - mean) / std, float64 sums:

    - per label, the mean m_c (classes, D) (a label without sequences gets 0);
    - V (D, P), P = min(rank, D): the top-P eigenvectors of the covariance of x;
    - lag covariances over every pair of windows l apart within a sequence, in V's coordinates y,
      C(l) = sum_{n, k} y_{n,k} y_{n,k+l}^T / (N (K - l)), l = 0 .. K - 1: `within` (classes, K, P, P),
      label c's with y = V^T (x - m_c) over its N_c sequences, shrunk towards the pooled one of all labels
      as (N_c C_c + p C_pooled) / (N_c + p), p = `prior` sequences (default D: a label's own weighs
      half once it has as many sequences as dimensions), and `around` (K, P, P) with y = V^T x over
      all sequences (the null token's, around 0);
    - `resid`: each label's variance per dimension off V's span (shrunk alike; the null token's last;
      1 where P = D)."""
    x = (train.latents.astype(np.float64) - mean) / std
    k, dim = x.shape[1], x.shape[-1]
    prior = float(dim if prior is None else prior)
    if not prior > 0 or rank < 1:
        raise ValueError(f"need prior > 0 and rank >= 1, got {prior} and {rank}")
    rank = min(rank, dim)
    flat = x.reshape(-1, dim)
    _, vectors = np.linalg.eigh(flat.T @ flat / len(flat))
    basis = vectors[:, ::-1][:, :rank]

    def lags(y: np.ndarray) -> np.ndarray:
        return np.stack([np.einsum("nkd,nke->de", y[:, : k - lag], y[:, lag:]) / (len(y) * (k - lag))
                         for lag in range(k)])

    def off_span(y: np.ndarray) -> float:  # mean square per dimension off V's span
        return float(((y - (y @ basis) @ basis.T) ** 2).sum(-1).mean() / (dim - rank)) if rank < dim else 1.0

    class_mean = class_stats(train, labels, classes, mean, std)[0]  # the per-window skip's means, the same
    centred = x - class_mean[labels][:, None, :]
    pooled, pooled_resid = lags(centred @ basis), off_span(centred)
    within, resid = np.empty((classes, k, rank, rank)), np.empty(classes + 1)
    for c in range(classes):
        n_c = int((labels == c).sum())
        own = centred[labels == c]
        within[c] = (n_c * lags(own @ basis) + prior * pooled) / (n_c + prior) if n_c else pooled
        resid[c] = (n_c * off_span(own) + prior * pooled_resid) / (n_c + prior) if n_c else pooled_resid
    resid[classes] = off_span(x)
    return SequenceStats(class_mean, basis.astype(np.float32), within.astype(np.float32),
                         lags(x @ basis).astype(np.float32), np.maximum(resid, 1e-3).astype(np.float32))


# ----------------------------------------------------------------------------- training


def resolve_latent_config(
    profile: str, windows: int | None = None, schedule: str | None = None, epochs: int | None = None,
    max_steps: int | None = None, batch_size: int | None = None, max_minutes: float | None = None,
    precision: str | None = None, min_pieces: int | None = None, skip: str | None = None,
    min_snr: float | None = None,
) -> tuple[LatentConfig, TrainConfig]:
    """The profile's LatentConfig and TrainConfig with the options given, checked."""
    prof = get_profile(profile)
    for name, value in (("--windows", windows), ("--epochs", epochs), ("--max-steps", max_steps),
                        ("--batch-size", batch_size), ("--min-pieces", min_pieces)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if min_snr is not None and not 0 <= min_snr < float("inf"):
        raise ValueError(f"--min-snr must be >= 0 and finite (0: the plain ε-MSE), got {min_snr}")
    cfg = override(prof.latent, windows=windows, schedule=schedule, min_pieces=min_pieces, skip=skip, min_snr=min_snr)
    if cfg.schedule not in ("linear", "cosine"):
        raise ValueError(f"--schedule must be linear or cosine, got {cfg.schedule!r}")
    if cfg.skip not in SKIPS:
        raise ValueError(f"--skip must be one of {', '.join(SKIPS)}, got {cfg.skip!r}")
    train = override(prof.latent_train, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                     max_minutes=max_minutes, precision=precision)
    return cfg, train


def train_latent(
    vae_run: str | Path, data_dir: str | Path, profile: str, out: str | Path, windows: int | None = None,
    epochs: int | None = None, max_steps: int | None = None, batch_size: int | None = None,
    max_minutes: float | None = None, precision: str | None = None, schedule: str | None = None,
    device: str = "auto", seed: int = 0, resume: bool = False, reuse: bool = True, progress: bool = True,
    min_pieces: int | None = None, skip: str | None = None, min_snr: float | None = None,
) -> dict:
    """Train latent diffusion on the VAE latents of DIR's train split into RUN; returns metrics.json's
    content (final training row; with a valid split, the valid loss with and without composers).

    `min_pieces`: the training pieces a composer needs to be a class of its own (default: the
    profile's `latent.min_pieces`; a small corpus needs fewer to have two composers or more).
    `skip`: "sequence" (the profiles'), "composer" or "gaussian"; `min_snr`: the loss weighting's gamma, 0 for
    the plain ε-MSE (`diffusion.latent_model`).
    A finished run with the same config (VAE digest, data key, K, vocabulary, sizes) is reused.
    """
    from midilib import distributed
    from midilib.runs import _write_json, build_model, count_parameters, data_params
    from midilib.train import fit, normalized, resolve_device, seed_everything

    cfg, train_cfg = resolve_latent_config(profile, windows, schedule, epochs, max_steps, batch_size,
                                           max_minutes, precision, min_pieces, skip, min_snr)
    vae_run, data_dir, out = Path(vae_run), Path(data_dir), Path(out)
    loaded = load_vae(vae_run, device)  # encodes on the training device
    _, vae_config, digest = loaded
    seqs = encode_sequences(vae_run, data_dir, cfg.windows, progress=progress, vae=loaded)
    vocabulary = composer_vocabulary(seqs["train"], cfg.min_pieces)
    dim = seqs["train"].latents.shape[-1]
    config = {
        "model": "latent",
        "profile": get_profile(profile).name,
        "data": str(data_dir.resolve()),
        "data_key": data_key(data_dir),
        "data_params": {**data_params(data_dir), "latent_dim": dim, "composers": vocabulary},
        "vae_run": {"path": str(vae_run.resolve()), "digest": digest, "profile": vae_config["profile"]},
        "latent": asdict(cfg),
    }
    full_config = {**config, "train": asdict(train_cfg), "seed": seed}
    if reuse and not resume and (out / "metrics.json").exists() and (out / "config.json").exists():
        if normalized(json.loads((out / "config.json").read_text())) == json.loads(json.dumps(full_config)):
            return json.loads((out / "metrics.json").read_text())
    main = distributed.world().main
    if not resume and main:
        (out / "metrics.json").unlink(missing_ok=True)  # a killed retrain must not look finished
    labels = {s: composer_labels(q.composer, vocabulary) for s, q in seqs.items()}
    train = pack(torch.from_numpy(seqs["train"].latents), torch.from_numpy(labels["train"])).numpy()
    seed_everything(seed)
    model = build_model("latent", config["latent"], config["data_params"])
    mean, std, clip = normalisation(seqs["train"])
    model.set_stats(torch.from_numpy(mean), torch.from_numpy(std), clip)
    if model.sequence_skip:
        model.set_sequence_stats(sequence_stats(seqs["train"], labels["train"], len(vocabulary), mean, std,
                                                cfg.sequence_rank))
    elif model.composer_skip:
        model.set_class_stats(*map(torch.from_numpy, class_stats(seqs["train"], labels["train"], len(vocabulary),
                                                                 mean, std)))
    summary = fit(model, train, train_cfg, out, config, seed=seed, device=device, resume=resume, progress=progress)
    result = {"model": "latent", "parameters": count_parameters(model), "final": summary,
              "device": str(resolve_device(device)), "sequences": {s: len(q) for s, q in seqs.items()}}
    if not main:
        return result
    if len(seqs.get("valid", ())):
        held = seqs["valid"]
        result["valid_loss"] = held_out_loss(model, held.latents, labels["valid"], seed=seed)
        result["valid_loss_uncond"] = held_out_loss(model, held.latents, None, seed=seed)
        result["temperature"] = decode_temperature(vae_run, data_dir, profile)
    _write_json(out / "metrics.json", result)
    return result


def decode_temperature(vae_run: str | Path, data_dir: str | Path, profile: str) -> float:
    """The VAE's decoding temperature, chosen on the validation files as notebook 03 chooses it
    (`runs.prior_temperature` over the profile's `eval.n_generate` windows; the choice is cached
    in the VAE run, so after notebook 03 this is a lookup). Decoding at the mode
    (T = 0) plays every window's most likely gap and duration: on the GiantMIDI sample the
    round trip of real test pieces then keeps 0.15 of their duration variance score, 0.84 at
    T = 0.8 (notebook 07)."""
    from midilib.prepare import load_windows
    from midilib.runs import prior_temperature

    arrays = load_windows(data_dir, ("train", "train_file", "valid", "valid_file"))
    return prior_temperature(vae_run, arrays, get_profile(profile).eval.n_generate)[0]


@torch.inference_mode()
def held_out_loss(
    model: LatentDiffusion, latents: np.ndarray, labels: np.ndarray | None, seed: int = 0, draws: int = 4,
    batch_size: int = 1024,
) -> float:
    """The DDPM loss on held-out sequences, `draws` seeded (t, eps) per sequence (the same for
    any labels, so conditional and unconditional losses compare); labels None: the null token."""
    gen = torch.Generator().manual_seed(seed)
    dev = model.betas.device
    total, count = 0.0, 0
    with eval_mode(model):
        for _ in range(draws):
            for start in range(0, len(latents), batch_size):
                z = torch.from_numpy(latents[start:start + batch_size]).to(dev)
                b = len(z)
                t = torch.randint(0, model.timesteps, (b,), generator=gen).to(dev)
                noise = torch.randn(z.shape, generator=gen).to(dev)
                y = (torch.full((b,), model.null) if labels is None
                     else torch.from_numpy(labels[start:start + batch_size])).to(dev)
                total += float(model.loss(model.normalise(z), y, t, noise)) * b
                count += b
    return total / max(count, 1)


# --------------------------------------------------------------------------- generation


@dataclass
class LatentRun:
    """A trained latent run: its diffusion model, the VAE that decodes it, its config."""

    model: LatentDiffusion
    vae: torch.nn.Module
    config: dict
    path: Path

    @property
    def composers(self) -> list[str]:
        """The composer vocabulary ("other" last; the null token is the label after it)."""
        return list(self.config["data_params"]["composers"])

    @property
    def windows(self) -> int:
        return int(self.config["latent"]["windows"])

    @cached_property
    def temperature(self) -> float:
        """The VAE decoding temperature chosen on the validation files at training time
        (`decode_temperature`; 0, the mode, for a run without a validation split); read once."""
        path = self.path / "metrics.json"
        return float(json.loads(path.read_text()).get("temperature", 0.0)) if path.exists() else 0.0

    def label(self, composer: str | None) -> int | None:
        """The label of a composer name (None: unconditional); one-line error listing the known ones."""
        if composer is None:
            return None
        names = self.composers
        if composer in names:
            return names.index(composer)
        folded = [i for i, c in enumerate(names) if c.casefold() == composer.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise ValueError(f"--composer {composer!r}: not a composer of {self.path} (known: {'; '.join(names)})")

    def sequences(self, device: str = "cpu") -> dict[str, Sequences]:
        """The run's data as K-window sequences (the cached encoding of its VAE)."""
        return encode_sequences(self.config["vae_run"]["path"], self.config["data"], self.windows, device)


def load_latent(run: str | Path | LatentRun, device: str = "cpu") -> LatentRun:
    """A latent run folder's model and VAE (eval mode); the VAE must still be the one it was trained on."""
    from midilib.runs import load_model

    if isinstance(run, LatentRun):
        return run
    model, config = load_model(run, device)
    if config["model"] != "latent":
        raise ValueError(f"--run {run}: a {config['model']} run, not a latent run (`train latent` makes one)")
    vae_path = config["vae_run"]["path"]
    vae, _, digest = load_vae(vae_path, device)
    if digest != config["vae_run"]["digest"]:
        raise ValueError(f"{vae_path}: the VAE's weights changed since {run} was trained on it; train it again")
    return LatentRun(model, vae, config, Path(run))


def _scheduler(model: LatentDiffusion, sampler: str, steps: int | None, eta: float):
    """A sampler over the model's betas, its predicted x0 clipped to the training latents' box."""
    from midilib.diffusion.sampling import make_scheduler
    from midilib.runs import DEFAULT_STEPS

    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if steps is not None and not 1 <= steps <= model.timesteps:
        raise ValueError(f"--steps must be in [1, {model.timesteps}], got {steps}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"--eta must be in [0, 1], got {eta}")
    if eta and sampler != "ddim":
        raise ValueError(f"--eta is a DDIM setting, not one of {sampler} (got --eta {eta})")
    if steps is None and DEFAULT_STEPS[sampler] is not None:
        steps = min(DEFAULT_STEPS[sampler], model.timesteps)
    return make_scheduler(model, sampler, steps, eta=eta, clip_range=float(model.clip))


def _guidance(label: int | None, guidance: float | None) -> float:
    if guidance is not None and not 0 <= guidance < float("inf"):
        raise ValueError(f"--guidance must be >= 0 and finite, got {guidance}")
    if guidance is not None and label is None:
        raise ValueError("--guidance needs --composer (without one, sampling is unconditional)")
    return 1.0 if guidance is None else float(guidance)


@torch.inference_mode()
def sample_latents(
    run: LatentRun, n: int, steps: int | None = None, composer: str | None = None, guidance: float | None = None,
    seed: int = 0, sampler: str = "ddim", eta: float = 0.0, batch_size: int = 256,
    known: np.ndarray | None = None, keep: np.ndarray | None = None, progress: bool = False,
) -> np.ndarray:
    """n latent sequences (n, K, D) in the VAE's space (denormalised), deterministic given `seed`.

    `composer` None samples unconditionally (the null token); otherwise with guidance W
    (`guidance`, default 1: plainly conditional). `known` (n, L, D) raw latents with a bool
    mask `keep` (L,) regenerate the windows not kept, RePaint-style (`infill`)."""
    from midilib.diffusion.sampling import denoise
    from midilib.train import autocast_for

    if n < 1 or batch_size < 1:
        raise ValueError(f"-n and the batch size must be >= 1, got {n} and {batch_size}")
    model = run.model
    label = run.label(composer)
    net = Guided(model, label, _guidance(label, guidance))
    scheduler = _scheduler(model, sampler, steps, eta)
    dev = model.betas.device
    length = model.windows if known is None else known.shape[1]
    autocast = autocast_for(dev, run.config["train"]["precision"])
    generator = torch.Generator(dev).manual_seed(seed)
    out = []
    with eval_mode(model), tqdm(total=-(-n // batch_size) * len(scheduler.timesteps), disable=not progress,
                                desc="sampling") as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x = torch.randn((b, length, model.latent_dim), generator=generator, device=dev)
            extra = {}
            if known is not None:
                extra = {"known": model.normalise(torch.from_numpy(known[start:start + b]).to(dev)),
                         "keep": torch.from_numpy(np.asarray(keep, bool)).to(dev)[None, :, None]}
            x = denoise(net, scheduler, x, generator, autocast=autocast, bar=bar, **extra)
            out.append(model.denormalise(x).float().cpu())
    return torch.cat(out).numpy()


@torch.inference_mode()
def decode_latents(
    run: LatentRun, latents: np.ndarray, temperature: float | None = None, seed: int = 0
) -> np.ndarray:
    """Latent sequences (n, L, D) -> pieces (n, L * 8, 4): each latent's window by the VAE
    decoder (every value its mode at temperature 0, else drawn at T, seeded; None: the
    run's `temperature`; its draws from `models.vae.decode_generator(seed)`, apart from the
    sampler's, seeded by `seed`), the windows concatenated in order."""
    from midilib.models.vae import decode, decode_generator

    temperature = run.temperature if temperature is None else temperature
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    n, length, dim = latents.shape
    windows = decode(run.vae, latents.reshape(n * length, dim), temperature, decode_generator(seed))
    return windows.reshape(n, length * windows.shape[1], 4)


def generate_pieces(
    run: str | Path | LatentRun, n: int, steps: int | None = None, composer: str | None = None,
    guidance: float | None = None, seed: int = 0, sampler: str = "ddim", eta: float = 0.0,
    temperature: float | None = None, device: str = "auto", batch_size: int = 256,
) -> np.ndarray:
    """n new pieces (n, K * 8, 4) in the columns of windows.npz, decoded at `temperature` (None:
    the run's); deterministic given `seed`."""
    run = load_latent(run, device)
    latents = sample_latents(run, n, steps, composer, guidance, seed, sampler, eta, batch_size)
    return decode_latents(run, latents, temperature, seed)


def infill(
    run: str | Path | LatentRun, latents: np.ndarray, start: int, stop: int, steps: int | None = None,
    composer: str | None = None, guidance: float | None = None, seed: int = 0, sampler: str = "ddim",
    eta: float = 0.0, device: str = "auto", temperature: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows start..stop-1 of real latent sequences (L, D) or (n, L, D) regenerated with the
    rest fixed -> (pieces (n, L * 8, 4) decoded by the VAE at `temperature` (None: the run's), latents (n, L, D): the kept ones exact)."""
    run = load_latent(run, device)
    z = np.asarray(latents, dtype=np.float32)
    z = z[None] if z.ndim == 2 else z
    if z.ndim != 3 or z.shape[-1] != run.model.latent_dim or not 1 <= z.shape[1] <= run.model.windows:
        raise ValueError(f"latents must be (L, {run.model.latent_dim}) or (n, L, {run.model.latent_dim}) with "
                         f"L <= {run.model.windows}, got {np.shape(latents)}")
    if not 0 <= start < stop <= z.shape[1]:
        raise ValueError(f"infill needs 0 <= start < stop <= {z.shape[1]}, got {start}, {stop}")
    keep = np.ones(z.shape[1], bool)
    keep[start:stop] = False
    out = sample_latents(run, len(z), steps, composer, guidance, seed, sampler, eta, known=z, keep=keep)
    out[:, keep] = z[:, keep]  # exactly, not through the normalisation's round trip
    return decode_latents(run, out, temperature, seed), out


def generate_latent(
    run: str | Path, n: int, out: str | Path | None = None, steps: int | None = None, composer: str | None = None,
    guidance: float | None = None, seed: int = 0, sampler: str = "ddim", eta: float = 0.0,
    temperature: float | None = None, device: str = "auto", batch_size: int = 256, progress: bool = True,
) -> dict:
    """`generate_pieces` timed, written to OUT/samples.npz (samples (n, K * 8, 4), latents (n, K, D)),
    one OUT/piece_XXXX.mid per piece and OUT/generate.json."""
    from midilib.events import write_midi
    from midilib.runs import _write_json

    lrun = load_latent(run, device)
    dev = lrun.model.betas.device
    t0 = time.perf_counter()
    latents = sample_latents(lrun, n, steps, composer, guidance, seed, sampler, eta, batch_size, progress=progress)
    temperature = lrun.temperature if temperature is None else temperature
    samples = decode_latents(lrun, latents, temperature, seed)
    seconds = time.perf_counter() - t0
    result = {"samples": samples, "latents": latents, "seconds": seconds, "device": str(dev)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "samples.tmp.npz"
        np.savez(tmp, samples=samples, latents=latents)
        os.replace(tmp, out / "samples.npz")
        width = max(4, len(str(n - 1)))
        for i, piece in enumerate(samples):
            write_midi(piece, out / f"piece_{i:0{width}d}.mid")
        _write_json(out / "generate.json", {
            "generator": "latent", "run": str(run), "n": n, "steps": steps, "sampler": sampler,
            "composer": composer, "guidance": guidance, "eta": eta, "temperature": temperature, "seed": seed,
            "seconds": seconds, "device": str(dev)})
    return result
