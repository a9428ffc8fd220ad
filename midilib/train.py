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
from tqdm.auto import tqdm

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


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    epoch: int,
    autocast: torch.autocast,
    grad_clip: float | None,
) -> tuple[torch.Tensor, dict]:
    """One optimiser step (the trainer's and the benchmark's): loss under autocast, clip, step."""
    with autocast:
        loss, logs = model.training_loss(batch, epoch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss, logs


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    seconds: float = 0.0  # training time so far


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


def fit(
    model: nn.Module,
    train: np.ndarray,
    cfg: TrainConfig,
    out: str | Path,
    config: dict,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train `model` on windows `train` (n, w, 4); write RUN/{config.json, log.csv, checkpoint.pt}.

    `config` is the fully resolved description of the run (model kind and sizes,
    data folder...), stored as config.json; a resumed run must match it.
    Returns the final training summary (also the last row of log.csv).
    """
    if cfg.max_minutes is not None and cfg.max_minutes <= 0:
        raise ValueError(f"--max-minutes must be > 0, got {cfg.max_minutes}")
    dev = resolve_device(device)
    autocast = autocast_for(dev, cfg.precision)  # checks the precision before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {**config, "train": asdict(cfg), "seed": seed}
    ckpt_path = out / "checkpoint.pt"
    state = TrainState()
    optimizer = None

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if _identity(ckpt["config"]) != _identity(json.loads(json.dumps(config))):
            raise ValueError(f"{ckpt_path}: --resume with a different configuration than the run's")
        model.load_state_dict(ckpt["model"])
        model.to(dev)
        optimizer = make_optimizer(model, cfg)
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["state"])
        _set_rng_state(ckpt["rng"])
        _truncate_log(out / "log.csv", state.epoch)
    else:
        seed_everything(seed)
        model.to(dev)
        optimizer = make_optimizer(model, cfg)
        (out / "log.csv").unlink(missing_ok=True)
    atomic_write(out / "config.json", json.dumps(config, indent=1))

    data = torch.as_tensor(np.ascontiguousarray(train, dtype=np.float32))
    if dev.type == "cuda":
        data = data.pin_memory().to(dev, non_blocking=True)
    n = len(data)
    if n == 0:
        raise ValueError("no training windows")
    batch = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    summary: dict = {}
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    epochs = range(state.epoch, cfg.epochs)
    for epoch in tqdm(epochs, desc=f"train {config.get('model', '')}", unit="epoch", disable=not progress):
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        if state.seconds >= budget:
            break
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n).to(dev)
        sums: dict[str, Any] = {}
        seen = 0
        for i in range(steps_per_epoch):
            if cfg.max_steps is not None and state.step >= cfg.max_steps:
                break
            idx = order[i * batch : (i + 1) * batch]
            loss, logs = train_step(model, optimizer, data[idx], epoch, autocast, cfg.grad_clip)
            state.step += 1
            k = len(idx)
            seen += k
            sums["loss"] = sums.get("loss", 0.0) + loss.detach().double() * k
            for name, value in logs.items():
                if name != "loss":
                    value = value.double() if torch.is_tensor(value) else value
                    sums[name] = sums.get(name, 0.0) + value * k
        if dev.type == "cuda":
            torch.cuda.synchronize()  # the epoch's time includes its queued GPU work
        elapsed = time.perf_counter() - t0
        state.seconds += elapsed
        state.epoch = epoch + 1
        row = {
            "epoch": epoch,
            "step": state.step,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": seen / max(elapsed, 1e-9),
            "seconds": state.seconds,
            **{name: round(float(value) / max(seen, 1), 12) for name, value in sums.items()},
        }
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": asdict(state),
                "rng": _rng_state(),
                "config": json.loads(json.dumps(config)),
            },
            ckpt_path,
        )
        _append_log(out / "log.csv", row)  # after the checkpoint: a logged epoch is a saved one
        summary = row
    model.eval()
    if not summary and (out / "log.csv").exists():  # nothing left to run: report the last epoch
        rows = list(csv.DictReader(open(out / "log.csv", newline="")))
        summary = {k: float(v) for k, v in rows[-1].items() if v} if rows else {}
    stopped = "epochs"
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        stopped = "max_steps"
    elif state.epoch < cfg.epochs and state.seconds >= budget:
        stopped = "max_minutes (the epoch count depends on the machine's speed)"
    return {**summary, "epochs_done": state.epoch, "stopped_by": stopped}


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
    `pitch_code` coded pitch linearly.
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
