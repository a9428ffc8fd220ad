"""Run folders: build a model from a profile, train it with the one trainer, load it, generate.

A run folder holds ``config.json`` (fully resolved), ``log.csv``,
``checkpoint.pt`` and ``metrics.json``. Training with a config identical to
the stored one and a finished ``metrics.json`` reuses the run (the workbook's
cache); ``resume`` continues an interrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from midilib import baselines, distributed, metrics
from midilib.atomic import atomic_write
from midilib.diffusion.representation import PITCH_CODES
from midilib.events import write_midi
from midilib.models.vae import VALUE_HEADS
from midilib.prepare import data_key, load_windows
from midilib.profiles import (
    DiffusionConfig,
    LatentConfig,
    Profile,
    TrainConfig,
    VAEConfig,
    get_profile,
    override,
)
from midilib.shards import open_split, split_names
from midilib.train import fit, load_checkpoint, normalized, resolve_device, seed_everything

MODELS = ("vae", "ddpm")
GENERATORS = ("vae", "ddpm", "ddim", "dpmsolver")
# steps when --steps is not given (None: all T); dpmsolver: DPM-Solver++(2M), notebook 05 compares it with DDIM
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpmsolver": 20}


def data_params(data_dir: str | Path) -> dict:
    """window, s_max, d_max of a prepared folder (params.json written by prepare)."""
    path = Path(data_dir) / "params.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `python -m midilib prepare` first")
    params = json.loads(path.read_text())["params"]
    return {"window": params["window"], "s_max": params["s_max"], "d_max": params["d_max"]}


def build_model(kind: str, model_cfg: dict, data: dict) -> nn.Module:
    """The nn.Module of `kind` from a resolved config section and the data's params."""
    if kind == "vae":
        from midilib.models.vae import build_vae

        return build_vae(VAEConfig(**model_cfg), data["window"], data["s_max"], data["d_max"])
    if kind == "ddpm":
        from midilib.diffusion.model import build_diffusion

        return build_diffusion(
            DiffusionConfig(**model_cfg), data["s_max"], data["d_max"], window=data["window"]
        )
    if kind == "latent":  # data: a latent run's data_params, with latent_dim and the composers (midilib.latent)
        from midilib.diffusion.latent_model import build_latent_diffusion

        return build_latent_diffusion(LatentConfig(**model_cfg), data["latent_dim"], len(data["composers"]))
    raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_config(
    kind: str,
    profile: str | Profile,
    data_dir: str | Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    denoiser: str | None = None,
    schedule: str | None = None,
    pitch_code: str | None = None,
    batch_size: int | None = None,
    max_minutes: float | None = None,
    precision: str | None = None,
    value_weight: float | None = None,
    value_head: str | None = None,
    free_bits: float | None = None,
    beta_max: float | None = None,
) -> tuple[dict, TrainConfig]:
    """The fully resolved description of a training run and its TrainConfig."""
    prof = get_profile(profile)
    if value_weight is not None and kind != "vae":
        raise ValueError(f"--value-weight is a VAE setting, not one of {kind!r}")
    if value_weight is not None and not 0 < value_weight < float("inf"):
        raise ValueError(f"--value-weight must be > 0 and finite, got {value_weight}")
    if value_head is not None and kind != "vae":
        raise ValueError(f"--value-head is a VAE setting, not one of {kind!r}")
    if value_head is not None and value_head not in VALUE_HEADS:
        raise ValueError(f"--value-head must be {' or '.join(VALUE_HEADS)}, got {value_head!r}")
    for name, value in (("--free-bits", free_bits), ("--beta-max", beta_max)):
        if value is not None and kind != "vae":
            raise ValueError(f"{name} is a VAE setting, not one of {kind!r}")
        if value is not None and not 0 <= value < float("inf"):
            raise ValueError(f"{name} must be >= 0 and finite, got {value}")
    if kind == "vae":
        model_cfg = asdict(override(prof.vae, value_weight=value_weight, value_head=value_head,
                                    free_bits=free_bits, beta_max=beta_max))
        train_cfg = prof.vae_train
    elif kind == "ddpm":
        model_cfg = asdict(override(prof.diffusion, denoiser=denoiser, schedule=schedule, pitch_code=pitch_code))
        train_cfg = prof.diffusion_train
        if model_cfg["denoiser"] not in ("lstm", "transformer"):
            raise ValueError(f"--denoiser must be lstm or transformer, got {model_cfg['denoiser']!r}")
        if model_cfg["schedule"] not in ("linear", "cosine"):
            raise ValueError(f"--schedule must be linear or cosine, got {model_cfg['schedule']!r}")
        if model_cfg["pitch_code"] not in PITCH_CODES:
            raise ValueError(f"--pitch-code must be {' or '.join(PITCH_CODES)}, got {model_cfg['pitch_code']!r}")
    else:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    for name, value in (("--epochs", epochs), ("--max-steps", max_steps), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    train_cfg = override(train_cfg, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                         max_minutes=max_minutes, precision=precision)
    data_dir = Path(data_dir)
    key = data_key(data_dir)
    config = {
        "model": kind,
        "profile": prof.name,
        "data": str(data_dir.resolve()),
        "data_key": key,
        "data_params": data_params(data_dir),
        kind: model_cfg,
    }
    return config, train_cfg


def train_model(
    kind: str,
    data_dir: str | Path,
    profile: str | Profile,
    out: str | Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    device: str = "auto",
    seed: int = 0,
    resume: bool = False,
    denoiser: str | None = None,
    schedule: str | None = None,
    pitch_code: str | None = None,
    batch_size: int | None = None,
    max_minutes: float | None = None,
    precision: str | None = None,
    value_weight: float | None = None,
    value_head: str | None = None,
    free_bits: float | None = None,
    beta_max: float | None = None,
    reuse: bool = True,
    progress: bool = True,
) -> dict:
    """Train `kind` on a prepared folder DIR into RUN; returns metrics.json's content.

    Training reads DIR's train split from its memory-mapped shards (`open_split`), so the
    corpus need not fit in memory; the held-out splits (small) are read into memory."""
    config, train_cfg = resolve_config(
        kind, profile, data_dir, epochs, max_steps, denoiser, schedule, pitch_code, batch_size, max_minutes, precision,
        value_weight, value_head, free_bits, beta_max,
    )
    out = Path(out)
    full_config = {**config, "train": asdict(train_cfg), "seed": seed}
    if reuse and not resume and (out / "metrics.json").exists() and (out / "config.json").exists():
        if normalized(json.loads((out / "config.json").read_text())) == json.loads(json.dumps(full_config)):
            return json.loads((out / "metrics.json").read_text())
    main = distributed.world().main  # under torchrun, rank 0 alone writes the run folder
    if not resume and main:
        (out / "metrics.json").unlink(missing_ok=True)  # a killed retrain must not look finished
    train = open_split(data_dir, "train")  # memory-mapped: never read whole into RAM
    held_out = [name for name in ("valid", "test", "valid_file", "test_file") if name in split_names(data_dir)]
    arrays: dict = {**load_windows(data_dir, names=held_out), "train": train}
    seed_everything(seed)  # the initial weights too are a function of the seed
    model = build_model(kind, config[kind], config["data_params"])
    summary = fit(model, train, train_cfg, out, config, seed=seed, device=device,
                  resume=resume, progress=progress, held_out=arrays.get("valid"))
    result = {"model": kind, "parameters": count_parameters(model), "final": summary,
              "device": str(resolve_device(device))}
    if not main:
        return result
    split = "valid" if len(arrays.get("valid", ())) else "test"  # choices are made on valid
    if kind == "vae" and len(arrays[split]):
        table = reconstruction_table(model, arrays, n_boot=200, seed=seed, split=split)
        result["reconstruction"] = table.reset_index().to_dict(orient="records")
        result["reconstruction_split"] = split
    _write_json(out / "metrics.json", result)
    return result


def training_log(run: str | Path, held_out: np.ndarray | None = None) -> pd.DataFrame:
    """A run's log.csv. Runs trained before `fit` logged `valid_loss` get the held-out loss of their
    final weights on `held_out` (the valid windows) in the last row, computed now: one point of
    the validation curve instead of none (`plots.training_curves` draws it as one marker)."""
    from midilib.train import autocast_for, held_out_loss

    run = Path(run)
    log = pd.read_csv(run / "log.csv")
    if "valid_loss" not in log and held_out is not None and len(held_out):
        model, config = load_model(run)
        epoch = int(log["epoch"].iloc[-1])
        final = held_out_loss(model, held_out, epoch, torch.device("cpu"), autocast_for(torch.device("cpu"), "fp32"),
                              seed=int(config.get("seed", 0)))
        for name, value in final.items():
            log.loc[log.index[-1], name] = value
    return log


def compare_runs(runs: dict[str, str | Path], prior_n: int | None = None) -> pd.DataFrame:
    """The VAE runs' reconstruction on the split they were scored on (metrics.json), one row per
    run with its value head, value weight, KL settings, epochs and training seconds: the table a
    choice is made from. With `prior_n`, each run's prior samples too, at the temperature
    `prior_temperature` picks on the validation files: that temperature, their fmd_inf and scale
    consistency against `prior_n` validation windows (95% intervals by piece)."""
    rows = []
    for name, run in runs.items():
        run = Path(run)
        path = run / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; is {run} a finished run?")
        result = json.loads(path.read_text())
        if "reconstruction" not in result:
            raise ValueError(f"{run}: not a VAE run (no reconstruction in metrics.json)")
        config = json.loads((run / "config.json").read_text())
        cfg = normalized(config)["vae"]
        vae = result["reconstruction"][0]
        rows.append({"run": name, "value_head": cfg["value_head"], "value_weight": cfg["value_weight"],
                     "free_bits": cfg["free_bits"], "beta_max": cfg["beta_max"],
                     "epochs": result["final"].get("epochs_done"), "seconds": result["final"].get("seconds"),
                     "split": result.get("reconstruction_split", "test"),
                     **{k: vae[k] for k in ("pitch_accuracy", "pitch_accuracy_lo", "pitch_accuracy_hi",
                                            "note_iou", "note_iou_lo", "note_iou_hi")}})
        if prior_n:
            temperature, table = prior_temperature(run, load_windows(config["data"]), prior_n)
            row = table.loc[f"T={temperature}"]
            rows[-1].update({"prior_T": temperature, **{m: float(row[m]) for m in (
                "fmd_inf", "fmd_inf_lo", "fmd_inf_hi", "scale_consistency", "scale_consistency_lo",
                "scale_consistency_hi")}})
    return pd.DataFrame(rows).set_index("run")


PRIOR_TEMPERATURES = (0.0, 0.5, 0.8, 1.0)


def _checkpoint_stamp(run: str | Path) -> tuple[int, int]:
    """(size, mtime in ns) of RUN/checkpoint.pt: what a cache of a run's outputs is keyed by, so
    retraining the run invalidates it; a one-line error where there is no checkpoint."""
    ckpt = Path(run) / "checkpoint.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: not found; train the model first")
    stat = ckpt.stat()
    return stat.st_size, stat.st_mtime_ns


def prior_temperature(
    run: str | Path, arrays: dict, n: int, temperatures: tuple[float, ...] = PRIOR_TEMPERATURES,
    seed: int = 0, n_boot: int = 100,
) -> tuple[float, pd.DataFrame]:
    """The VAE prior's sampling temperature, chosen on the validation files: the one whose
    samples have the lowest fmd_inf against `n` validation windows (intervals by piece).

    Returns (temperature, the table it was chosen from). The samples are cached in the run
    (`cached_generate`), and so is the choice: RUN/temperature/<key>.pkl, keyed by the checkpoint
    (size and mtime, as the samples), a digest of the train and validation arrays and files, n, the
    temperatures, the seed, n_boot and the sampler version, written atomically; notebooks 03 and 06
    and every latent training ask the same question of one VAE, and only the first scores it.
    """
    import hashlib
    import io

    from midilib import evaluate
    from midilib.diffusion.sampling import SAMPLER_VERSION

    if "valid" not in arrays or not len(arrays["valid"]):
        raise ValueError("choosing a temperature needs a validation split (prepare with --valid-fraction > 0)")
    data = hashlib.sha256()
    for name in ("train", "train_file", "valid", "valid_file"):
        data.update(np.ascontiguousarray(arrays[name]).tobytes())
    key = json.dumps([*_checkpoint_stamp(run), data.hexdigest(), n, list(map(float, temperatures)), seed,
                      n_boot, SAMPLER_VERSION])
    cache = Path(run) / "temperature" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
    if cache.exists():
        stored = pd.read_pickle(cache)  # written below by this function only: the key and the table, dtypes kept
        if stored["key"] == key:
            table = stored["table"]
            return float(min(temperatures, key=lambda t: table.at[f"T={t}", "fmd_inf"])), table
    ref, groups = evaluate.reference_set(arrays["valid"], arrays["valid_file"], min(n, len(arrays["valid"])), seed=seed)
    sets = {f"T={t}": cached_generate("vae", run, n, temperature=t, seed=seed)["samples"] for t in temperatures}
    table = evaluate.evaluate_sets(ref, sets, train=arrays["train"], n_boot=n_boot, fad_embedder=None,
                                   reference_groups=groups, train_groups=arrays["train_file"], seed=seed)
    buffer = io.BytesIO()
    pd.to_pickle({"key": key, "table": table}, buffer)
    atomic_write(cache, buffer.getvalue())
    best = min(temperatures, key=lambda t: table.at[f"T={t}", "fmd_inf"])
    return float(best), table


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, default=float))


def load_model(run: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The trained model of a run folder (eval mode) and its config, in today's terms (`normalized`)."""
    ckpt = load_checkpoint(run)
    config = normalized(ckpt["config"])
    model = build_model(config["model"], config[config["model"]], config["data_params"])
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), config


def reconstruction_table(
    model: nn.Module, arrays: dict, n_boot: int = 1000, seed: int = 0,
    max_test: int = 20_000, max_train: int = 500_000, split: str = "test",
) -> pd.DataFrame:
    """Pitch accuracy and note IoU on the files of `split` (valid while choosing, test for
    the final table), with bootstrap 95% CIs over files, for the VAE (posterior mean, no
    teacher forcing) and two baselines."""
    from midilib.models.vae import reconstruct

    if split not in ("valid", "test") or split not in arrays:
        raise ValueError(f"split must be 'valid' or 'test' and present in the arrays, got {split!r}")
    test, train, groups = arrays[split], arrays["train"], arrays[f"{split}_file"]
    rng = np.random.default_rng(seed)
    if len(test) > max_test:  # GiantMIDI-sized test sets: a random subset keeps this in seconds
        keep = np.sort(rng.choice(len(test), max_test, replace=False))
        test, groups = test[keep], groups[keep]
    if len(train) > max_train:  # and the nearest-neighbour search in memory
        train = train[np.sort(rng.choice(len(train), max_train, replace=False))]
    train = np.asarray(train)  # memory-mapped shards (train_model): these rows in RAM
    predictions = {
        "VAE (posterior mean)": reconstruct(model, test),
        "baseline: most common pitch": baselines.most_common_pitch(train, test),
        "baseline: nearest training window": baselines.nearest_neighbour(train, test),
    }
    rows = []
    for name, pred in predictions.items():
        row = {"model": name}
        for metric, fn in (("pitch_accuracy", metrics.pitch_accuracy), ("note_iou", metrics.note_iou)):
            per_window = fn(test, pred)
            point, lo, hi = metrics.bootstrap_ci(np.mean, per_window, groups=groups, n_boot=n_boot, seed=seed)
            row.update({metric: point, f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def generate(
    kind: str,
    run: str | Path,
    n: int,
    out: str | Path | None = None,
    steps: int | None = None,
    eta: float = 0.0,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 4096,
    device: str = "auto",
    n_midi: int = 4,
    progress: bool = True,
) -> dict:
    """Generate n windows with a trained run; write OUT/samples.npz (+ a few .mid); time it.

    Returns {"samples": array, "seconds": model time, "seconds_per_10k": ...}.
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATORS)}")
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"--eta must be in [0, 1], got {eta}")
    if eta and kind == "dpmsolver":
        raise ValueError(f"--eta is a DDIM setting; dpmsolver is deterministic (got --eta {eta})")
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    model, config = load_model(run, device)
    expected = "vae" if kind == "vae" else "ddpm"
    if config["model"] != expected:
        raise ValueError(f"{run}: a {config['model']} run cannot generate with {kind}")
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    if kind == "vae":
        from midilib.models.vae import sample as vae_sample

        samples = vae_sample(model, n, temperature=temperature, seed=seed, batch_size=batch_size)
    else:
        from midilib.diffusion.sampling import make_scheduler
        from midilib.diffusion.sampling import sample as diffusion_sample

        if steps is not None and not 1 <= steps <= model.timesteps:
            raise ValueError(f"--steps must be in [1, {model.timesteps}], got {steps}")
        if steps is None and DEFAULT_STEPS[kind] is not None:
            steps = min(DEFAULT_STEPS[kind], model.timesteps)
        scheduler = make_scheduler(model, kind, steps, eta=eta)
        samples = diffusion_sample(model, scheduler, n, batch_size=batch_size, seed=seed,
                                   progress=progress, precision=config["train"]["precision"])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {"samples": samples, "seconds": seconds, "seconds_per_10k": seconds * 10_000 / n,
              "device": str(dev)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "samples.tmp.npz"
        np.savez(tmp, samples=samples, seconds_per_10k=np.float64(result["seconds_per_10k"]))
        os.replace(tmp, out / "samples.npz")
        for i in range(min(n_midi, len(samples))):
            write_midi(samples[i], out / f"sample_{i:02d}.mid")
        info = {k: v for k, v in result.items() if k != "samples"}
        _write_json(out / "generate.json", {"generator": kind, "run": str(run), "n": n, "steps": steps,
                                            "eta": eta, "temperature": temperature, "seed": seed, **info})
    return result


def cached_generate(
    kind: str,
    run: str | Path,
    n: int,
    steps: int | None = None,
    eta: float = 0.0,
    temperature: float = 0.0,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """`generate`, kept in RUN/samples/<parameters>/ and reused while the checkpoint is the same.

    Notebooks 04-06 ask for the same slow sets (DDPM-1000...); each is sampled
    once. The reported time is the one measured when the set was made.
    """
    run = Path(run)
    stamp = _checkpoint_stamp(run)
    dev = str(resolve_device(device))  # timings belong to a device
    from midilib.diffusion.sampling import SAMPLER_VERSION

    key = json.dumps([kind, n, steps, eta, temperature, seed, dev, *stamp, SAMPLER_VERSION])
    name = f"{kind}-n{n}-s{steps}-e{eta}-t{temperature}-seed{seed}-{dev}"
    out = run / "samples" / name
    info_path = out / "generate.json"
    if info_path.exists() and (out / "key.txt").exists() and (out / "key.txt").read_text() == key:
        info = json.loads(info_path.read_text())
        with np.load(out / "samples.npz") as f:
            return {**info, "samples": f["samples"], "cached": True}
    result = generate(kind, run, n, out, steps=steps, eta=eta, temperature=temperature, seed=seed,
                      device=device, progress=False)
    atomic_write(out / "key.txt", key)
    return {**result, "cached": False}
