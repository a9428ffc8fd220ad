"""One trainer for every model of the workbook (the VAE and the denoisers).

A model only has to define ``training_loss(batch, epoch) -> (loss, logs)``,
logs being floats or detached 0-d tensors (summed on the device and read once
an epoch, so a GPU step never waits for the host).
The trainer owns everything else: LAMB, gradient clipping, the run's precision
on CUDA (bf16 autocast or fp32), the whole training set as one tensor on the device (batches are index
slices of a seeded permutation, no per-item Dataset loop), a per-epoch
``log.csv``, and an atomic checkpoint after every epoch that holds the model,
optimiser, RNG state and position, so ``resume`` continues a killed run and,
on CPU, lands on the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from midilib import distributed
from midilib.atomic import atomic_write
from midilib.profiles import TrainConfig

LOG_COLUMNS_FIRST = ("epoch", "step", "loss", "lr", "samples_per_s", "seconds")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """LAMB as in the original study: torch-optimizer's update, computed without host syncs."""
    from midilib.lamb import Lamb

    return Lamb(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


PRECISIONS = ("bf16", "fp32")


def autocast_for(dev: torch.device, precision: str = "bf16") -> torch.autocast:
    """bf16 autocast on CUDA when asked; the CPU trains in fp32 (bf16 LSTMs are slow or missing there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dev.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(dev.type, enabled=False)


class LossModule(nn.Module):
    """A model whose forward is its training loss: DistributedDataParallel syncs gradients
    through forward, and our models' forward is not their loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        return self.model.training_loss(batch, epoch)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    epoch: int,
    autocast: torch.autocast,
    grad_clip: float | None,
    weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """One optimiser step (the trainer's and the benchmark's): loss under autocast, clip, step.

    `model` is a model with `training_loss` or a LossModule (wrapped in DDP); the gradient is
    that of `weight` * loss (a rank's share of the global batch's mean, times the world size).
    """
    with autocast:
        loss, logs = model(batch, epoch) if isinstance(model, (LossModule, DDP)) else model.training_loss(batch, epoch)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss, logs


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n training windows in `epoch`: a function of (seed, epoch) alone, so a
    resumed run, and every rank of a data-parallel one, draws the same permutation."""
    # int32 where it fits: the order of Aria-MIDI's ~570M windows is 2.3 GB, not 4.6 (the same permutation)
    return np.random.default_rng([seed, epoch]).permutation(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64))


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    seconds: float = 0.0  # training time so far
    batch: int = 0  # batches of epoch `epoch` already taken (0: on an epoch boundary)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Batches:
    """Rows of the training windows by index, from an array or from memory-mapped shards.

    An array, and shards on CUDA, become one tensor on the device (uploaded block by block,
    so host memory holds one block); shards on the CPU are gathered batch by batch from the
    memory map, so the corpus never has to fit in memory.
    """

    BLOCK = 1 << 20  # rows per upload

    def __init__(self, train: Any, dev: torch.device) -> None:
        self.dev = dev
        self.shards = None
        if isinstance(train, (np.ndarray, torch.Tensor)):
            data = torch.as_tensor(np.ascontiguousarray(train, dtype=np.float32))
            self.data = data.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else data
        elif dev.type == "cuda":
            self.data = torch.empty(tuple(train.shape), dtype=torch.float32, device=dev)
            at = 0
            for block in train.chunks(self.BLOCK):
                self.data[at : at + len(block)] = torch.as_tensor(np.asarray(block, dtype=np.float32)).to(dev)
                at += len(block)
        else:
            self.shards = train

    def __getitem__(self, idx: np.ndarray) -> torch.Tensor:
        if self.shards is not None:
            return torch.from_numpy(np.asarray(self.shards[idx], dtype=np.float32))
        return self.data[torch.from_numpy(idx).to(self.dev)]


def fit(
    model: nn.Module,
    train: Any,
    cfg: TrainConfig,
    out: str | Path,
    config: dict,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    held_out: Any = None,
) -> dict:
    """Train `model` on windows `train` (n, w, 4); write RUN/{config.json, log.csv, checkpoint.pt}.

    With `held_out` windows (the valid split), every finished epoch also logs the model's loss
    on them as `valid_loss` (and `valid_<log>` for each of its logs), from `held_out_loss`:
    the generalisation curve beside the training one, at no cost to the training's RNG.

    `train` is an array or memory-mapped shards (`midilib.shards.Shards`: anything with len,
    shape, indexing by an index array and `chunks`). `config` is the fully resolved
    description of the run (model kind and sizes, data folder...), stored as config.json;
    a resumed run must match it. Returns the final training summary (also the last row of log.csv).

    Stops and resume: a checkpoint is written after every epoch and when `max_steps` stops
    the run inside an epoch, with the position in the epoch (the epoch's order is a
    function of the seed and the epoch), the running log sums and every RNG state; so
    `--resume` from any checkpoint, with a larger `--max-steps` or `--epochs`, reaches the
    weights of a run never stopped, bit for bit on the CPU. `max_steps` counts the run's
    steps in all, not the steps of this call. `max_minutes` is checked between epochs
    (a time-budgeted run ends on an epoch boundary); a kill loses the epoch in progress.

    Under torchrun (WORLD_SIZE > 1) the model trains with DistributedDataParallel: every
    rank takes its part of each global batch (`distributed.World.part`), rank 0 alone
    writes the run folder.
    """
    if cfg.max_minutes is not None and cfg.max_minutes <= 0:
        raise ValueError(f"--max-minutes must be > 0, got {cfg.max_minutes}")
    dev = resolve_device(device)
    autocast = autocast_for(dev, cfg.precision)  # checks the precision before anything is written
    ranks = distributed.setup(dev)
    if dev.type == "cuda" and ranks.size > 1:
        dev = torch.device("cuda", ranks.local_rank)
    out = Path(out)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    config = {**config, "train": asdict(cfg), "seed": seed}
    ckpt_path = out / "checkpoint.pt"
    state = TrainState()
    optimizer = None
    partial: dict = {}

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if _identity(ckpt["config"]) != _identity(json.loads(json.dumps(config))):
            raise ValueError(f"{ckpt_path}: --resume with a different configuration than the run's")
        model.load_state_dict(ckpt["model"])
        model.to(dev)
        optimizer = make_optimizer(model, cfg)
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["state"])
        rng = ckpt["rng"]
        if isinstance(rng, list):  # one state per rank
            if len(rng) != ranks.size:
                raise ValueError(f"{ckpt_path}: saved by {len(rng)} processes, resumed by {ranks.size}")
            rng = rng[ranks.rank]
        elif ranks.size > 1:
            raise ValueError(f"{ckpt_path}: saved by 1 process, resumed by {ranks.size}")
        _set_rng_state(rng)
        partial = ckpt.get("partial") or {}
    else:
        seed_everything(seed)
        model.to(dev)
        optimizer = make_optimizer(model, cfg)
        if ranks.main:
            (out / "log.csv").unlink(missing_ok=True)
    if ranks.main:
        atomic_write(out / "config.json", json.dumps(config, indent=1))

    n = len(train)
    if n == 0:
        raise ValueError("no training windows")
    batch = min(cfg.batch_size, n)
    if batch < ranks.size:
        raise ValueError(f"a global batch of {batch} windows cannot be split over {ranks.size} processes")
    data = _Batches(train, dev)
    net: nn.Module = model
    if ranks.size > 1:
        net = DDP(LossModule(model), device_ids=[dev.index] if dev.type == "cuda" else None)
    steps_per_epoch = math.ceil(n / batch)
    summary: dict = {}
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf

    def out_of_steps() -> bool:
        return cfg.max_steps is not None and state.step >= cfg.max_steps

    def save(sums: dict, seen: int, elapsed: float) -> None:
        rng = distributed.gather_objects(_rng_state())
        if not ranks.main:
            return
        mid = state.batch > 0
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": asdict(state),
                "rng": rng if ranks.size > 1 else rng[0],
                "partial": {"sums": sums, "seen": seen, "seconds": elapsed} if mid else None,
                "config": json.loads(json.dumps(config)),
            },
            ckpt_path,
        )

    stale_log = resume  # truncated once, before the first row this call appends
    epochs = range(state.epoch, cfg.epochs)
    for epoch in tqdm(epochs, desc=f"train {config.get('model', '')}", unit="epoch",
                      disable=not (progress and ranks.main)):
        if out_of_steps() or (state.batch == 0 and state.seconds >= budget):
            break
        model.train()
        t0 = time.perf_counter()
        order = epoch_order(n, seed, epoch)
        start = state.batch
        # the sums of an epoch a checkpoint stopped inside (rank 0 holds the all-ranks sums)
        sums: dict[str, Any] = dict(partial.get("sums", {})) if start and ranks.main else {}
        seen = partial.get("seen", 0) if start and ranks.main else 0
        before = partial.get("seconds", 0.0) if start else 0.0
        partial = {}
        for i in range(start, steps_per_epoch):
            if out_of_steps():
                break
            idx = order[i * batch : (i + 1) * batch]
            k = len(idx)
            lo, hi = ranks.part(k)
            mine = idx[lo:hi] if hi > lo else idx[:1]  # an empty part steps with weight 0 (k < ranks)
            weight = ranks.size * (hi - lo) / k
            with distributed.rows(lo, hi, k) if ranks.size > 1 and hi > lo else contextlib.nullcontext():
                loss, logs = train_step(net, optimizer, data[mine], epoch, autocast, cfg.grad_clip, weight)
            state.step += 1
            state.batch = i + 1
            local = hi - lo
            seen += local
            sums["loss"] = sums.get("loss", 0.0) + loss.detach().double() * local
            for name, value in logs.items():
                if name != "loss":
                    value = value.double() if torch.is_tensor(value) else value
                    sums[name] = sums.get(name, 0.0) + value * local
        if dev.type == "cuda":
            torch.cuda.synchronize()  # the epoch's time includes its queued GPU work
        elapsed = before + time.perf_counter() - t0
        sums = {k: float(v) for k, v in sums.items()}
        totals = distributed.all_sum({**sums, "__seen": seen})
        seen = int(totals.pop("__seen"))
        sums = totals
        finished = state.batch == steps_per_epoch
        state.seconds += time.perf_counter() - t0
        if finished:
            state.epoch, state.batch = epoch + 1, 0
        row = {
            "epoch": epoch,
            "step": state.step,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": seen / max(elapsed, 1e-9),
            "seconds": state.seconds,
            **{name: round(float(value) / max(seen, 1), 12) for name, value in sums.items()},
        }
        if finished and held_out is not None and len(held_out) and ranks.main:
            row.update(held_out_loss(model, held_out, epoch, dev, autocast, seed=seed))
        save(sums, seen, elapsed)
        if ranks.main:
            if stale_log:  # rows past the checkpoint (a kill between the two writes, a stop inside an epoch)
                _truncate_log(out / "log.csv", epoch)
                stale_log = False
            _append_log(out / "log.csv", row)  # after the checkpoint: a logged epoch is a saved one
        summary = row
        if not finished:  # stopped by max_steps inside the epoch
            break
    distributed.barrier()  # the other ranks wait for rank 0's last checkpoint
    model.eval()
    if not summary and (out / "log.csv").exists():  # nothing left to run: report the last epoch
        rows = list(csv.DictReader(open(out / "log.csv", newline="")))
        summary = {k: float(v) for k, v in rows[-1].items() if v} if rows else {}
    stopped = "epochs"
    if out_of_steps():
        stopped = "max_steps"
    elif state.epoch < cfg.epochs and state.seconds >= budget:
        stopped = "max_minutes (the epoch count depends on the machine's speed)"
    return {**summary, "epochs_done": state.epoch, "stopped_by": stopped}


def held_out_loss(model: nn.Module, windows: Any, epoch: int, dev: torch.device,
                  autocast: Any = None, batch: int = 1024, seed: int = 0) -> dict[str, float]:
    """The model's training loss and logs on held-out windows, averaged over windows:
    ``valid_loss`` = (1/n) sum_i loss(x_i) at the epoch's schedule (KL weight, teacher forcing),
    in eval mode and without gradients. Its random draws (diffusion t and noise, the VAE's
    reparameterisation) come from a stream seeded by `seed` alone inside `torch.random.fork_rng`,
    so every epoch is scored on the same draws and training's RNG is left as it was."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for i in range(0, len(windows), batch):
            x = torch.as_tensor(np.asarray(windows[i : i + batch], dtype=np.float32), device=dev)
            with autocast or contextlib.nullcontext():
                loss, logs = model.training_loss(x, epoch)
            k = len(x)
            n += k
            for name, value in {"loss": loss, **logs}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * k
    model.train(was)
    return {f"valid_{name}": round(total / max(n, 1), 12) for name, total in sums.items()}


def _truncate_log(path: Path, epochs: int) -> None:
    """Drop log rows of epochs past the checkpoint (a kill between the two writes)."""
    if not path.exists():
        return
    rows = list(csv.DictReader(open(path, newline="")))
    if all(int(r["epoch"]) < epochs for r in rows):
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(r for r in rows if int(r["epoch"]) < epochs)


def _identity(config: dict) -> dict:
    """A run's config in today's terms, without its stopping rules: a resumed run may be extended."""
    config = normalized(config)
    train = {k: v for k, v in config.get("train", {}).items()
             if k not in ("epochs", "max_steps", "max_minutes")}
    return {**config, "train": train}


def normalized(config: dict) -> dict:
    """A stored run config in today's terms: fields added since mean what runs did before them.

    Runs made before `precision` existed trained under bf16 autocast on CUDA; VAE runs
    made before `value_weight`, `value_head`, `free_bits` and `beta_max` weighed a softplus
    MSE by 1 with no free bits and beta rising to 0.1; diffusion runs made before
    `pitch_code` coded pitch linearly; latent runs made before `skip` skipped over N(0, I), and before `min_snr`
    trained on the plain ε-MSE.
    """
    config = dict(config)
    if "train" in config and "precision" not in config["train"]:
        config["train"] = {**config["train"], "precision": "bf16"}
    for section, legacy in _LEGACY.items():
        if isinstance(config.get(section), dict):
            config[section] = {**legacy, **config[section]}
    return config


# what a run's config meant before each field existed
_LEGACY = {
    "vae": {"value_weight": 1.0, "value_head": "mse", "value_bins": 64, "free_bits": 0.0, "beta_max": 0.1},
    "ddpm": {"pitch_code": "linear"},
    "latent": {"skip": "gaussian", "min_snr": 0.0, "sequence_rank": 128},
}


def _append_log(path: Path, row: dict) -> None:
    columns = list(LOG_COLUMNS_FIRST) + sorted(k for k in row if k not in LOG_COLUMNS_FIRST)
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != columns:  # a schedule added a column: rewrite with the union
            rows = list(csv.DictReader(open(path, newline="")))
            columns = header + [c for c in columns if c not in header]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def load_checkpoint(run: str | Path) -> dict:
    """The checkpoint dict of a run folder (model weights, config, state)."""
    path = Path(run) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; train the model first")
    return torch.load(path, map_location="cpu", weights_only=False)
