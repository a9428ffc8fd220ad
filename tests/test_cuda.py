"""Everything that has a CUDA path runs on CUDA and agrees with the CPU.

CI has no GPU, so this module skips there; `.ci/gpu` runs it on a lent GPU machine.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_windows

from midilib.diffusion import DDIMScheduler, DDPMScheduler, build_diffusion
from midilib.diffusion.sampling import continue_piece, make_scheduler, sample
from midilib.models.vae import build_vae, reconstruct
from midilib.models.vae import sample as vae_sample
from midilib.profiles import get_profile

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run .ci/gpu on a GPU machine)")

FULL = get_profile("full")


@pytest.fixture(autouse=True)
def exact_fp32():
    """Compare devices in true fp32: cuDNN's RNNs use TF32 by default, which moves values by ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_full_size_models_agree_with_the_cpu() -> None:
    """The original's sizes: the same weights give the same outputs on both devices."""
    torch.manual_seed(0)
    x = torch.from_numpy(random_windows(64))
    vae = build_vae(FULL.vae).eval()
    cpu = reconstruct(vae, x)
    gpu = reconstruct(vae.cuda(), x)
    assert (cpu[..., 0] == gpu[..., 0]).mean() > 0.99  # argmax pitches: ties may differ in the last bit
    np.testing.assert_allclose(cpu[..., 1:], gpu[..., 1:], atol=1e-3)

    for denoiser in ("transformer", "lstm"):
        model = build_diffusion(replace(FULL.diffusion, denoiser=denoiser)).eval()
        xt, t = torch.randn(64, 8, 4), torch.randint(0, 1000, (64,))
        with torch.no_grad():
            want = model(xt, t)
            got = model.cuda()(xt.cuda(), t.cuda()).cpu()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_schedulers_step_the_same_on_both_devices(kind: str) -> None:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    make = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    cpu, gpu = make(betas), make(betas)
    cpu.set_timesteps(50)
    gpu.set_timesteps(50)
    x = torch.randn(32, 8, 4)
    xc, xg = x.clone(), x.cuda()
    for t in cpu.timesteps.tolist():
        eps = torch.tanh(xc)  # any deterministic stand-in for a denoiser
        noise = torch.randn_like(xc)
        xc = cpu.step(eps, t, xc, noise=noise)
        xg = gpu.step(torch.tanh(xg), t, xg, noise=noise.cuda())
    torch.testing.assert_close(xg.cpu(), xc, atol=1e-4, rtol=1e-4)


def test_sampling_on_cuda_is_seeded_and_in_range() -> None:
    model = build_diffusion(get_profile("smoke").diffusion).cuda()
    scheduler = make_scheduler(model, "ddim", 10)
    a = sample(model, scheduler, 300, batch_size=128, seed=3, progress=False)
    b = sample(model, scheduler, 300, batch_size=128, seed=3, progress=False)
    c = sample(model, scheduler, 300, batch_size=128, seed=4, progress=False)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (300, 8, 4) and np.isfinite(a).all()
    assert a[..., 0].min() >= 0 and a[..., 0].max() <= 127
    context = random_windows(1)[0]
    piece = continue_piece(model, scheduler, context, n_windows=2, n_known=4, seed=0, device="cuda")
    np.testing.assert_array_equal(piece[:8], context)


def test_vae_sampling_on_cuda_matches_the_cpu() -> None:
    """z comes from a CPU generator, so a seed gives the same latents on both devices."""
    vae = build_vae(get_profile("default").vae).eval()
    cpu = vae_sample(vae, 200, seed=1)
    gpu = vae_sample(vae.cuda(), 200, seed=1)
    assert (cpu[..., 0] == gpu[..., 0]).mean() > 0.99
    np.testing.assert_allclose(cpu[..., 1:], gpu[..., 1:], atol=1e-3)


def test_cli_prepare_train_generate_on_cuda(tmp_path: Path, sample_dir: Path) -> None:
    """The CLI end to end on the GPU: bf16 autocast training, a checkpoint that loads on the CPU."""
    from midilib.cli import main
    from midilib.runs import load_model

    data = tmp_path / "data"
    assert main(["prepare", str(sample_dir), "--out", str(data), "--max-files", "12", "--quiet"]) == 0
    for model, extra in (("vae", []), ("ddpm", ["--denoiser", "lstm"]), ("ddpm", ["--denoiser", "transformer"])):
        run = tmp_path / f"{model}{extra[-1] if extra else ''}"
        args = ["train", model, "--data", str(data), "--profile", "smoke", "--out", str(run),
                "--device", "cuda", "--quiet", *extra]
        assert main(args) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["device"] == "cuda"
        assert np.isfinite(metrics["final"]["loss"])
        cpu_model, _ = load_model(run, "cpu")
        assert next(cpu_model.parameters()).device.type == "cpu"
        generator = "vae" if model == "vae" else "ddim"
        out = tmp_path / f"gen-{run.name}"
        assert main(["generate", generator, "--run", str(run), "-n", "500", "--out", str(out),
                     "--device", "cuda", "--steps" if model == "ddpm" else "--seed", "20" if model == "ddpm" else "0",
                     "--quiet"]) == 0
        info = json.loads((out / "generate.json").read_text())
        assert info["device"].startswith("cuda")
        with np.load(out / "samples.npz") as f:
            assert f["samples"].shape == (500, 8, 4)
