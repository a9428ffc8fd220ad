"""`make bench`: measured speed and memory of every stage, side by side with the original's way.

Every figure is the min and median of >= 3 repeats, each ratio measured in the
same process against a baseline that works the way the original did, their
repeats interleaved so that the machine's drift falls on both alike. Each
section runs in its own subprocess so that its peak memory (RSS; CUDA max
allocated on a GPU) belongs to that stage alone. Results go to
figures/bench.csv and figures/bench.md. Benchmarks are not tests: nothing
in `make test` depends on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "corpora" / "giantmidi-sample"
GIANTMIDI_FILES = 10_855
SECTIONS = ("prepare", "scale", "train", "generate", "audio")
# The original's published generation times (RTX 4070-class GPU, rendering included): not measured here.
PUBLISHED = {"VAE": 220.0, "DDPM-1000": 540.0, "DDIM-1000": 580.0}
DPM_SOLVER_STEPS = (10, 20)  # section_generate: DPM-Solver++ beside DDIM-50


def _time_once(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of one call, its queued GPU work included, and its result."""
    t0 = time.perf_counter()
    result = fn()
    _sync()
    return time.perf_counter() - t0, result


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeats):
        seconds, result = _time_once(fn)
        times.append(seconds)
    return min(times), statistics.median(times), result


def _timed_pair(
    ours: Callable[[], object], baseline: Callable[[], object], repeats: int, warmup: bool = False
) -> tuple[tuple[float, float, object], tuple[float, float, object]]:
    """_timed of two ways, their repeats interleaved (baseline, ours, baseline, ...) so that a
    machine's drift during the run falls on both alike; `warmup` runs each once untimed first
    (lazy optimiser state, allocator growth, cuDNN autotuning)."""
    if warmup:
        baseline(), _sync(), ours(), _sync()
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            seconds, results[name] = _time_once(fn)
            times[name].append(seconds)
    o, b = times["ours"], times["baseline"]
    return ((min(o), statistics.median(o), results["ours"]),
            (min(b), statistics.median(b), results["baseline"]))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _corpus() -> Path:
    from midilib.corpus import DATA

    return SAMPLE if SAMPLE.is_dir() else DATA / "default-corpus"


def _row(section: str, what: str, unit: str, best: float, median: float, **extra) -> dict:
    return {"section": section, "what": what, "unit": unit, "best": best, "median": median, **extra}


# ------------------------------------------------------------------ sections


def section_prepare(repeats: int) -> list[dict]:
    """1. prepare (fast reader, all cores, no cache) against a sequential pretty_midi loop."""
    from midilib.corpus import list_midi_files
    from midilib.events import read_pretty_midi, to_windows
    from midilib.prepare import PrepareParams, prepare

    root = _corpus()
    files = list_midi_files(root)

    def baseline() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.concatenate([to_windows(read_pretty_midi(f)) for f in files])

    def ours() -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            return prepare(root, tmp, PrepareParams(test_fraction=0.0, valid_fraction=0.0), progress=False).train

    (o_min, o_med, windows), (b_min, b_med, base) = _timed_pair(ours, baseline, repeats)
    if base.shape != windows.shape or not np.allclose(base, windows, atol=1e-4):
        raise AssertionError("prepare and the pretty_midi loop disagree")
    notes = len(windows) * windows.shape[1]
    n = len(files)
    return [
        _row("prepare", f"pretty_midi loop, {n} files", "files/s", n / b_min, n / b_med, notes_per_s=notes / b_min),
        _row("prepare", f"prepare, {n} files, {os.cpu_count()} cores", "files/s", n / o_min, n / o_med,
             notes_per_s=notes / o_min, ratio=b_min / o_min),
    ]


def _disk_mb(folder: Path) -> float:
    """Size on disk of the files under `folder`, in MiB (symlinks not followed)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


_PREPARE_CODE = (
    "import resource, sys, time; from midilib.prepare import prepare, PrepareParams; "
    "t = time.perf_counter(); r = prepare(sys.argv[1], sys.argv[2], PrepareParams(test_fraction=0.0, "
    "valid_fraction=0.0), progress=False); seconds = time.perf_counter() - t; "
    "print(seconds, r.rows('train'), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
# the trainer alone, as train_model runs it (smoke VAE, train split memory-mapped), for a fixed number of
# steps; train_model then scores the VAE against a nearest-neighbour baseline over up to 500k training
# windows, whose memory grows with the corpus up to that cap: not the trainer's, so not measured here
_TRAIN_CODE = (
    "import resource, sys, time, torch; from midilib.runs import build_model, resolve_config; "
    "from midilib.shards import open_split; from midilib.train import fit; "
    "config, cfg = resolve_config('vae', 'smoke', sys.argv[1], max_steps=int(sys.argv[3])); "
    "model = build_model('vae', config['vae'], config['data_params']); t = time.perf_counter(); "
    "fit(model, open_split(sys.argv[1], 'train'), cfg, sys.argv[2], config, progress=False); "
    "cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else -1; "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cuda)")
ARIA_MIDI_FILES = 1_190_000
# peak memory "flat" from the smallest copy to the largest: it grew by less than this share of what the
# windows on disk grew (constant buffers fill up on the way; anything that follows the data shows)
FLAT_SHARE = 0.1


def section_scale(
    repeats: int, copies: tuple[int, ...] = (1, 4, 16, 64), train_steps: int = 20, root: Path | None = None
) -> list[dict]:
    """2. prepare on 1x, 4x, 16x and 64x copies (symlinks) of the corpus: time, peak memory and
    output on disk; then a smoke VAE trained `train_steps` steps on each prepared folder (its
    training split memory-mapped): peak memory. Each in its own subprocess. From the largest
    copy's per-file rate and bytes per file, projections for GiantMIDI-Piano and Aria-MIDI."""
    from midilib.corpus import list_midi_files

    root = Path(root) if root is not None else _corpus()
    files = list_midi_files(root)
    rows, peaks, disk = [], {"prepare": [], "train": []}, []
    for k in copies:
        n_files = k * len(files)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            for c in range(k):
                for f in files:
                    link = src / f"copy{c}" / f.relative_to(root)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(f.resolve())
            times, rss, workers = [], [], []
            for i in range(repeats):
                out = subprocess.run([sys.executable, "-c", _PREPARE_CODE, str(src), str(Path(tmp) / f"out{i}")],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                seconds, n_windows, rss_kb, child_kb = out.stdout.split()[-4:]
                times.append(float(seconds))
                rss.append(int(rss_kb) / 1024)
                workers.append(int(child_kb) / 1024)
            prepared = Path(tmp) / "out0"
            disk_mb = _disk_mb(prepared)
            disk.append(disk_mb)
            peaks["prepare"].append(max(rss))
            rows.append(_row("scale", f"prepare {k}x ({n_files} files)", "s", min(times), statistics.median(times),
                             peak_rss_mb=max(rss), worker_peak_rss_mb=max(workers), windows=int(n_windows),
                             output_mb=disk_mb, s_per_file=min(times) / n_files))
            times, rss, cuda = [], [], []
            for i in range(repeats):
                out = subprocess.run([sys.executable, "-c", _TRAIN_CODE, str(prepared), str(Path(tmp) / f"run{i}"),
                                      str(train_steps)], capture_output=True, text=True, check=True, cwd=ROOT)
                seconds, rss_kb, cuda_mb = out.stdout.split()[-3:]
                times.append(float(seconds))
                rss.append(int(rss_kb) / 1024)
                cuda.append(float(cuda_mb))
            peaks["train"].append(max(rss))
            rows.append(_row("scale", f"train smoke VAE {train_steps} steps on {k}x ({int(n_windows)} windows, "
                             "memory-mapped)", "s", min(times), statistics.median(times), peak_rss_mb=max(rss),
                             cuda_max_mb=max(cuda) if max(cuda) >= 0 else None))
    largest = rows[-2]  # the largest copy's prepare row
    per_file, mb_per_file = largest["s_per_file"], largest["output_mb"] / (copies[-1] * len(files))
    windows_per_file = largest["windows"] / (copies[-1] * len(files))
    growth = {stage: p[-1] - p[0] for stage, p in peaks.items()}  # MB, largest copy against smallest
    flat = "flat" if max(growth.values()) <= FLAT_SHARE * (disk[-1] - disk[0]) else "NOT flat"
    note = (f"peak memory measured {flat} from {copies[0]}x to {copies[-1]}x: prepare {peaks['prepare'][0]:.0f} -> "
            f"{peaks['prepare'][-1]:.0f} MB, training {peaks['train'][0]:.0f} -> {peaks['train'][-1]:.0f} MB, "
            f"as the windows on disk grow {disk[0]:.0f} -> {disk[-1]:.0f} MB")
    for name, n in (("GiantMIDI-Piano", GIANTMIDI_FILES), ("Aria-MIDI", ARIA_MIDI_FILES)):
        rows.append(_row("scale", f"projected: prepare {name} ({n:,} files) at {copies[-1]}x's s/file; {note}", "s",
                         per_file * n, per_file * n, output_gb=mb_per_file * n / 1024,
                         windows=windows_per_file * n, peak_growth_prepare_mb=growth["prepare"],
                         peak_growth_train_mb=growth["train"]))
    return rows


def section_train(repeats: int) -> list[dict]:
    """3. training samples/s (VAE, both denoisers; default and full sizes) against a per-item
    Dataset + DataLoader(num_workers=0) loop like the original's, same model, batch and step
    (the trainer's own `train_step`: autocast, clipping, LAMB). On CUDA, bf16 autocast (the
    trainer's default there) and plain fp32 are both measured."""
    from dataclasses import asdict

    import torch
    from torch.utils.data import Dataset

    from midilib.prepare import prepare
    from midilib.profiles import get_profile
    from midilib.runs import build_model
    from midilib.train import make_optimizer, resolve_device

    dev = resolve_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        windows = prepare(_corpus(), tmp, progress=False).train
    data = torch.as_tensor(windows).to(dev)

    class PerItem(Dataset):  # the original's EventMidiDataset: one (8, 4) array per item
        def __init__(self, arrays: np.ndarray) -> None:
            self.items = [a for a in arrays]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.tensor(self.items[i], dtype=torch.float32)

    precisions = ("bf16", "fp32") if dev.type == "cuda" else ("fp32",)
    rows = []
    for profile in ("default", "full"):
        prof = get_profile(profile)
        # a few optimiser steps, not a whole epoch: a `full` step takes seconds on a CPU
        steps = 5 if dev.type == "cuda" else (2 if profile == "default" else 1)
        for kind, cfg, train_cfg, extra in (
            ("vae", prof.vae, prof.vae_train, {}),
            ("ddpm", prof.diffusion, prof.diffusion_train, {"denoiser": "transformer"}),
            ("ddpm", prof.diffusion, prof.diffusion_train, {"denoiser": "lstm"}),
        ):
            for precision in precisions:
                model_cfg = {**asdict(cfg), **extra}
                torch.manual_seed(0)
                model = build_model(kind, model_cfg, {"window": 8, "s_max": 2.0, "d_max": 2.0}).to(dev)
                opt = make_optimizer(model, train_cfg)
                batch = min(train_cfg.batch_size, len(data))
                name = f"{kind if kind == 'vae' else extra['denoiser'] + ' denoiser'} @ {profile} (batch {batch}"
                name += f", {precision})" if dev.type == "cuda" else ")"
                try:
                    o_min, o_med, b_min, b_med = _train_pair(model, opt, data, PerItem(windows[: batch * steps]),
                                                             batch, steps, dev, repeats, precision,
                                                             train_cfg.grad_clip)
                except RuntimeError as exc:  # e.g. a cuDNN build without bf16 LSTMs: keep the other rows
                    rows.append(_row("train", f"{name}: FAILED {' '.join(str(exc).split())[:120]}", "",
                                     float("nan"), float("nan")))
                    continue
                n = batch * steps
                rows.append(_row("train", f"{name}: per-item DataLoader", "samples/s", n / b_min, n / b_med))
                rows.append(_row("train", f"{name}: one tensor on the device", "samples/s", n / o_min,
                                 n / o_med, ratio=b_min / o_min,
                                 projected_100_epochs_4_3M_min=100 * 4.3e6 / (n / o_min) / 60))
    return rows


def _train_pair(model, opt, data, dataset, batch: int, steps: int, dev, repeats: int, precision: str,
                grad_clip: float) -> tuple[float, ...]:
    """(ours min, median, original min, median) seconds for `steps` optimiser steps."""
    import torch
    from torch.utils.data import DataLoader

    from midilib.train import autocast_for, train_step

    autocast = autocast_for(dev, precision)

    def ours() -> None:  # the trainer's way: index slices of one tensor on the device
        order = torch.randperm(len(data), device=dev)
        for i in range(steps):
            train_step(model, opt, data[order[i * batch:(i + 1) * batch]], 0, autocast, grad_clip)

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0, pin_memory=dev.type == "cuda")

    def original() -> None:  # per-item Dataset + DataLoader(num_workers=0)
        for x in loader:
            train_step(model, opt, x.to(dev), 0, autocast, grad_clip)

    (o_min, o_med, _), (b_min, b_med, _) = _timed_pair(ours, original, repeats, warmup=True)
    return o_min, o_med, b_min, b_med


def section_generate(repeats: int) -> list[dict]:
    """4. generation of windows (VAE, DDPM-1000, DDIM-50, DDIM-1000) batched as the workbook does,
    against the original's way (batches of 256, one MIDI file per window written in the loop);
    DPM-Solver++ at 10 and 20 steps batched against DDIM-50 batched, measured beside it.
    On CUDA at `default` and `full` sizes, 10,000 windows in one batch; on a CPU at `default`,
    on fewer windows, scaled to 10,000."""
    from dataclasses import asdict

    import torch

    from midilib.diffusion import make_scheduler
    from midilib.diffusion import sample as diffusion_sample
    from midilib.events import write_midi
    from midilib.models.vae import sample as vae_sample
    from midilib.profiles import get_profile
    from midilib.runs import build_model
    from midilib.train import resolve_device

    dev = resolve_device("auto")
    gpu = dev.type == "cuda"
    data = {"window": 8, "s_max": 2.0, "d_max": 2.0}
    batch = 10_000 if gpu else 4096

    def diffusion(ddpm, kind: str, steps: int):
        return lambda n, b: diffusion_sample(ddpm, make_scheduler(ddpm, kind, steps), n, b, progress=False)

    def jobs(vae, ddpm) -> dict:  # name: (generate n windows in batches of b, n measured (ours, original's way))
        return {
            "VAE": (lambda n, b: vae_sample(vae, n, batch_size=b), (10_000, 4096) if gpu else (4096, 4096)),
            # the original's way on a GPU: one batch of 256 for the 1000-step samplers, scaled to
            # 10,000 windows (two batches each made the whole bench overrun its device time)
            "DDIM-50": (diffusion(ddpm, "ddim", 50), (10_000, 1024) if gpu else (512, 512)),
            "DDPM-1000": (diffusion(ddpm, "ddpm", 1000), (10_000, 256) if gpu else (64, 64)),
            "DDIM-1000": (diffusion(ddpm, "ddim", 1000), (10_000, 256) if gpu else (64, 64)),
        }

    rows = []
    for profile in ("default", "full") if gpu else ("default",):
        prof = get_profile(profile)
        torch.manual_seed(0)
        vae = build_model("vae", asdict(prof.vae), data).to(dev).eval()
        ddpm = build_model("ddpm", asdict(prof.diffusion), data).to(dev).eval()
        with tempfile.TemporaryDirectory() as tmp:
            for name, (fn, (n, n_orig)) in jobs(vae, ddpm).items():
                def original(fn=fn, n=n_orig) -> None:
                    for start in range(0, n, 256):
                        for i, w in enumerate(fn(min(256, n - start), 256)):
                            write_midi(w, Path(tmp) / f"{start + i}.mid")

                (o_min, o_med, _), (b_min, b_med, _) = _timed_pair(
                    lambda fn=fn, n=n: fn(n, batch), original, repeats)
                b_min, b_med = b_min * 10_000 / n_orig, b_med * 10_000 / n_orig
                o_min, o_med = o_min * 10_000 / n, o_med * 10_000 / n
                label = f"{name} @ {profile}"
                rows.append(_row("generate", f"{label}: batches of 256 + a MIDI file per window (original's way)",
                                 "s per 10k", b_min, b_med, measured_n=n_orig))
                rows.append(_row("generate", f"{label}: batched (workbook, batch {min(batch, n)})", "s per 10k",
                                 o_min, o_med, measured_n=n, ratio=b_min / o_min))
                if name in PUBLISHED and profile == "default":
                    rows.append(_row("generate", f"{name}: published by the original (GPU, rendering included; "
                                     "NOT measured here)", "s per 10k", PUBLISHED[name], PUBLISHED[name]))
            ddim50, n = diffusion(ddpm, "ddim", 50), 10_000 if gpu else 512  # DDIM-50's n above
            for steps in DPM_SOLVER_STEPS:  # the ratio is against DDIM-50, timed beside it the same way
                dpm = diffusion(ddpm, "dpmsolver", steps)
                (o_min, o_med, _), (b_min, b_med, _) = _timed_pair(
                    lambda dpm=dpm, n=n: dpm(n, batch), lambda n=n, ddim50=ddim50: ddim50(n, batch), repeats)
                rows.append(_row("generate", f"DPM-Solver++-{steps} @ {profile}: batched (workbook, batch "
                                 f"{min(batch, n)}); ratio vs DDIM-50 batched beside it", "s per 10k",
                                 o_min * 10_000 / n, o_med * 10_000 / n, measured_n=n, ratio=b_min / o_min,
                                 ddim50_s_per_10k=b_min * 10_000 / n))
    return rows + _attention_rows(repeats)


def _attention_rows(repeats: int, calls: int = 50) -> list[dict]:
    """Attention over 8 note tokens at the default denoiser's shape (4 heads of 24, a sampling batch):
    fused scaled_dot_product_attention against two batched matmuls (`short_attention`), side by side."""
    import torch
    import torch.nn.functional as F

    from midilib.models.denoisers import short_attention
    from midilib.train import resolve_device

    dev = resolve_device("auto")
    batch = 10_000 if dev.type == "cuda" else 512
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, 4, 8, 24, generator=gen).to(dev) for _ in range(3))
    with torch.inference_mode():
        (o_min, o_med, _), (b_min, b_med, _) = _timed_pair(
            lambda: [short_attention(q, k, v) for _ in range(calls)],
            lambda: [F.scaled_dot_product_attention(q, k, v) for _ in range(calls)], repeats, warmup=True)
    what = f"attention over 8 tokens, batch {batch} x 4 heads of 24, {calls} calls"
    return [_row("generate", f"{what}: fused scaled_dot_product_attention", "ms", b_min * 1e3, b_med * 1e3),
            _row("generate", f"{what}: two batched matmuls (short_attention, the denoiser's)", "ms",
                 o_min * 1e3, o_med * 1e3, ratio=b_min / o_min)]


def section_audio(repeats: int, n: int = 200) -> list[dict]:
    """5. rendering windows to 16 kHz audio and embedding them (musicnn): one process/thread vs all cores."""
    import torch

    from midilib.audio import render_windows
    from midilib.fad import embed_windows

    with tempfile.TemporaryDirectory() as tmp:
        from midilib.prepare import prepare

        windows = prepare(_corpus(), tmp, progress=False).train[:n]
    rows = []
    try:
        render_windows(windows[:2], workers=1, progress=False)
    except (ImportError, OSError, RuntimeError) as exc:  # no libfluidsynth on this machine: say so
        return [_row("audio", f"skipped: {' '.join(str(exc).split())[:160]}", "", float("nan"), float("nan"))]
    ra, r1 = _timed_pair(lambda: render_windows(windows, workers=None, progress=False),
                         lambda: render_windows(windows, workers=1, progress=False), repeats)
    rows.append(_row("audio", f"render {n} windows, 1 process", "clips/s", n / r1[0], n / r1[1]))
    rows.append(_row("audio", f"render {n} windows, {os.cpu_count()} processes", "clips/s", n / ra[0], n / ra[1],
                     ratio=r1[0] / ra[0]))
    threads = torch.get_num_threads()

    def embed(n_threads: int) -> object:
        torch.set_num_threads(n_threads)
        return embed_windows(windows[:60], "musicnn", workers=1 if n_threads == 1 else None, progress=False)

    try:
        ea, e1 = _timed_pair(lambda: embed(threads), lambda: embed(1), repeats)
    except (FileNotFoundError, ValueError) as exc:  # no weights: say so in the table
        rows.append(_row("audio", f"musicnn embedding skipped: {exc}", "", float("nan"), float("nan")))
        return rows
    finally:
        torch.set_num_threads(threads)
    rows.append(_row("audio", "render + musicnn embedding (60 windows), 1 thread", "clips/s", 60 / e1[0], 60 / e1[1]))
    rows.append(_row("audio", f"render + musicnn embedding (60 windows), {threads} threads", "clips/s",
                     60 / ea[0], 60 / ea[1], ratio=e1[0] / ea[0]))
    rows += _two_embedders(windows[:60], repeats)
    return rows


def _two_embedders(windows: np.ndarray, repeats: int) -> list[dict]:
    """The evaluation's embedding: musicnn and basic-pitch from one rendering (window_vectors),
    against rendering once per embedder (embed_windows twice), and a second call served by the cache."""
    from midilib.fad import embed_windows, window_vectors

    names = ("musicnn", "basic-pitch")
    n = len(windows)
    try:
        shared, apart = _timed_pair(lambda: window_vectors(windows, names, progress=False),
                                    lambda: [embed_windows(windows, e, progress=False) for e in names], repeats)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        return [_row("audio", f"two-embedder vectors skipped: {exc}", "", float("nan"), float("nan"))]
    rows = [_row("audio", f"musicnn + basic-pitch, {n} windows: each renders its own audio (original's way)",
                 "clips/s", n / apart[0], n / apart[1]),
            _row("audio", f"musicnn + basic-pitch, {n} windows: one rendering (window_vectors)", "clips/s",
                 n / shared[0], n / shared[1], ratio=apart[0] / shared[0])]
    with tempfile.TemporaryDirectory() as cache:
        window_vectors(windows, names, cache, progress=False)
        cached = _timed(lambda: window_vectors(windows, names, cache, progress=False), repeats)
    rows.append(_row("audio", f"musicnn + basic-pitch, {n} windows: again, from the embedding cache", "clips/s",
                     n / cached[0], n / cached[1], ratio=shared[0] / cached[0]))
    return rows


def profile_stages(path: str | Path, steps: int = 5) -> str:
    """torch.profiler tables for the two stages with GPU goals: a `full` VAE training step and
    DDPM sampling at `full` (10,000 windows). Device time against wall time tells whether a stage
    is bound by the GPU's arithmetic or by the host launching small kernels."""
    from dataclasses import asdict

    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from midilib.diffusion import make_scheduler
    from midilib.profiles import get_profile
    from midilib.runs import build_model
    from midilib.train import autocast_for, make_optimizer, resolve_device, train_step

    dev = resolve_device("auto")
    prof = get_profile("full")
    data = {"window": 8, "s_max": 2.0, "d_max": 2.0}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    torch.manual_seed(0)
    vae = build_model("vae", asdict(prof.vae), data).to(dev)
    opt = make_optimizer(vae, prof.vae_train)
    batch = torch.as_tensor(_random_windows(prof.vae_train.batch_size)).to(dev)
    autocast = autocast_for(dev, prof.vae_train.precision)
    ddpm = build_model("ddpm", asdict(prof.diffusion), data).to(dev).eval()
    scheduler = make_scheduler(ddpm, "ddpm", 1000)
    x = torch.randn(10_000, 8, 4, device=dev)

    def vae_steps() -> None:
        for _ in range(steps):
            train_step(vae, opt, batch, 20, autocast, prof.vae_train.grad_clip)

    sample_autocast = autocast_for(dev, prof.diffusion_train.precision)  # as midilib.diffusion.sample does

    @torch.inference_mode()
    def ddpm_steps() -> None:
        y = x
        for t in scheduler.timesteps.tolist()[: 10 * steps]:
            with sample_autocast:
                eps = ddpm(y, torch.full((len(y),), t, device=dev))
            y = scheduler.step(eps.float(), t, y)

    text = [f"device: {dev}; torch {torch.__version__}"]
    for name, fn, n in (("VAE @ full, training step (batch 4096)", vae_steps, steps),
                        ("DDPM @ full, sampling step (10,000 windows)", ddpm_steps, 10 * steps)):
        fn()  # warm-up: cuDNN plans, allocator
        _sync()
        with profile(activities=activities) as p:
            t0 = time.perf_counter()
            fn()
            _sync()
            wall = time.perf_counter() - t0
        events = p.key_averages()
        # device time = the kernels' own time (operators' "self device" columns would count it twice)
        kernel_events = [e for e in p.events() if e.device_type == DeviceType.CUDA]
        device_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
                        for e in kernel_events)
        kernels = len(kernel_events)
        text += ["", f"## {name}: {wall / n * 1e3:.2f} ms per step wall, "
                 f"{device_us / 1e3 / n:.2f} ms per step on the device ({kernels / n:.0f} kernels per step)", "",
                 _table(events, sort)]
    report = "\n".join(text)
    Path(path).write_text(report)
    return report


def _table(events, sort: str) -> str:
    try:
        return events.table(sort_by=sort, row_limit=18, max_name_column_width=60)
    except (KeyError, AttributeError, ValueError):  # older torch names the device columns "cuda"
        return events.table(sort_by=sort.replace("device", "cuda"), row_limit=18, max_name_column_width=60)


def _random_windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.empty((n, 8, 4), dtype=np.float32)
    w[..., 0] = rng.integers(21, 109, (n, 8))
    w[..., 1] = rng.uniform(0.1, 1.0, (n, 8))
    w[..., 2:] = rng.exponential(0.3, (n, 8, 2)).clip(0, 2)
    return w


RUNNERS = {"prepare": section_prepare, "scale": section_scale, "train": section_train,
           "generate": section_generate, "audio": section_audio}


# ------------------------------------------------------------------ driver


def _run_section(name: str, repeats: int) -> list[dict]:
    """One section in a subprocess; its rows carry the subprocess's peak memory."""
    code = ("import json, resource, sys, torch; from midilib.bench import RUNNERS; "
            "rows = RUNNERS[sys.argv[1]](int(sys.argv[2])); "
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None; "
            "print('BENCH' + json.dumps({'rows': rows, 'peak_rss_mb': peak, 'cuda_max_mb': cuda}))")
    out = subprocess.run([sys.executable, "-c", code, name, str(repeats)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"bench section {name} failed: {out.stderr.strip().splitlines()[-1:]}")
    payload = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("BENCH"))[5:])
    for row in payload["rows"]:
        row["section_peak_rss_mb"] = payload["peak_rss_mb"]
        row["section_cuda_max_mb"] = payload["cuda_max_mb"]
    return payload["rows"]


def machine() -> dict:
    import torch

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA)",
        "torch": torch.__version__,
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    }


def to_markdown(rows: list[dict], info: dict) -> str:
    lines = [f"Machine: {info['machine']}; device: {info['device']}; torch {info['torch']}; {info['date']}.",
             "Each figure: the best and the median of the repeats (for rates, best = fastest) (`python -m midilib.bench`, `make bench`).", ""]
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines += ["", f"### {section} (peak RSS of the section: {r['section_peak_rss_mb']:.0f} MB"
                      + (f", CUDA max allocated {r['section_cuda_max_mb']:.0f} MB" if r.get("section_cuda_max_mb") else "")
                      + ")", "", "| what | unit | best | median | ratio vs original's way | notes |", "|---|---|---|---|---|---|"]
        notes = ", ".join(f"{k} {v:,.3g}" for k, v in r.items()
                          if k not in ("section", "what", "unit", "best", "median", "ratio", "section_peak_rss_mb",
                                       "section_cuda_max_mb") and v is not None)
        ratio = f"{r['ratio']:.1f}x" if r.get("ratio") else ""
        lines.append(f"| {r['what']} | {r['unit']} | {r['best']:,.4g} | {r['median']:,.4g} | {ratio} | {notes} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midilib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "figures"))
    parser.add_argument("--profile", metavar="FILE", help="only write torch.profiler tables of the stages "
                        "with GPU goals (a full VAE training step, DDPM sampling) to FILE")
    parser.add_argument("--quiet", action="store_true", help="with --profile: write FILE only")
    args = parser.parse_args(argv)
    if args.profile:
        report = profile_stages(args.profile)
        if not args.quiet:
            print(report)
        return 0
    if args.repeats < 3:
        print("error: --repeats must be >= 3 (min and median of at least three)", file=sys.stderr)
        return 2
    sections = args.sections or list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    info = machine()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in sections:
        t0 = time.perf_counter()
        try:
            rows += _run_section(name, args.repeats)
        except RuntimeError as exc:  # one broken stage must not lose the others' figures
            print(f"[bench] {exc}", file=sys.stderr, flush=True)
            rows.append(_row(name, f"FAILED: {exc}", "", float("nan"), float("nan"),
                             section_peak_rss_mb=float("nan"), section_cuda_max_mb=None))
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        text = write_tables(rows, info, out)  # after every section: a stopped run keeps what it measured
    if sections == list(SECTIONS) and out.resolve() == (ROOT / "figures").resolve():
        from midilib.report import update_readme

        suffix = _suffix(info)
        update_readme(ROOT / "README.md", text, f"<!-- bench{suffix}:start -->", f"<!-- bench{suffix}:end -->")
    print(text)
    return 0


def _suffix(info: dict) -> str:
    return "" if info["device"].startswith("CPU") else "-gpu"


def write_tables(rows: list[dict], info: dict, out: Path) -> str:
    """figures/bench{,-gpu}.{csv,md}, each written atomically; returns the markdown."""
    import pandas as pd

    from midilib.atomic import atomic_write

    suffix = _suffix(info)
    atomic_write(out / f"bench{suffix}.csv", pd.DataFrame([{**info, **r} for r in rows]).to_csv(index=False))
    text = to_markdown(rows, info)
    atomic_write(out / f"bench{suffix}.md", text)
    return text

if __name__ == "__main__":
    sys.exit(main())
