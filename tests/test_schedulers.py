"""Noise schedules and our DDPM/DDIM/DPM-Solver++ schedulers, checked against diffusers step for step."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from midilib.diffusion.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverScheduler  # noqa: E402
from midilib.diffusion.schedules import (  # noqa: E402
    alphas_cumprod,
    cosine_betas,
    linear_betas,
    make_betas,
    snr,
)

T = 1000
SHAPE = (16, 8, 4)


def test_schedules_match_diffusers_and_known_values() -> None:
    lin = linear_betas(T)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(cosine_betas(T), ref.betas.numpy(), rtol=1e-5, atol=1e-7)
    assert cosine_betas(T).max() == pytest.approx(0.999)
    ab = alphas_cumprod(cosine_betas(T))
    assert (np.diff(ab) < 0).all() and ab[0] > 0.9999 and ab[-1] < 1e-6
    assert (np.diff(snr(lin)) < 0).all()
    np.testing.assert_array_equal(make_betas("linear", 10), linear_betas(10))


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="unknown noise schedule 'sigmoid'"):
        make_betas("sigmoid", 100)
    with pytest.raises(ValueError, match="positive integer"):
        linear_betas(0)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        alphas_cumprod(np.array([0.1, 1.0]))


def pair(kind: str, betas: np.ndarray, clip: bool, eta: float, spacing: str, n: int, clipped_eps: bool = False):
    """Ours and diffusers' scheduler on the very same (float32) betas.

    diffusers keeps alpha_bar in float32, where 1 - alpha_bar_t / alpha_bar_prev
    loses about three digits at small t (errors up to 1e-3 at t = 999 with the
    cosine schedule); ours uses float64. We give diffusers float64 alpha_bar too,
    so that the comparison is of the algorithm, not of the rounding.
    """
    betas = betas.astype(np.float32)
    common = dict(
        num_train_timesteps=len(betas),
        trained_betas=betas,
        clip_sample=clip,
        timestep_spacing=spacing,
        steps_offset=0,
    )
    if kind == "ddpm":
        ours = DDPMScheduler(betas, clip_sample=clip, timestep_spacing=spacing)
        ref = diffusers.DDPMScheduler(**common, variance_type="fixed_small")
    else:
        ours = DDIMScheduler(betas, clip_sample=clip, eta=eta, timestep_spacing=spacing,
                             use_clipped_model_output=clipped_eps)
        ref = diffusers.DDIMScheduler(**common, set_alpha_to_one=True)
        ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    ref.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - betas.astype(np.float64)))
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    return ours, ref


CASES = [
    ("ddpm", "linear", True, 0.0, "leading", 1000),
    ("ddpm", "cosine", False, 0.0, "leading", 1000),
    ("ddpm", "linear", False, 0.0, "leading", 37),
    ("ddpm", "cosine", True, 0.0, "trailing", 50),
    ("ddpm", "linear", True, 0.0, "linspace", 20),
    ("ddim", "linear", True, 0.0, "leading", 50),
    ("ddim", "cosine", False, 0.0, "leading", 50),
    ("ddim", "linear", False, 1.0, "leading", 20),
    ("ddim", "cosine", True, 1.0, "leading", 40),
    ("ddim", "cosine", True, 0.5, "trailing", 25),
    ("ddim", "cosine", True, 0.0, "leading", 1000, True),
    ("ddim", "linear", True, 0.5, "leading", 50, True),
]


@pytest.mark.parametrize("kind,schedule,clip,eta,spacing,n,clipped_eps", [c + (False,) * (7 - len(c)) for c in CASES])
def test_step_matches_diffusers(kind, schedule, clip, eta, spacing, n, clipped_eps) -> None:
    betas = make_betas(schedule, T)
    ours, ref = pair(kind, betas, clip, eta, spacing, n, clipped_eps)
    torch.testing.assert_close(ours.timesteps, ref.timesteps.long(), rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    # First, middle and last steps, on samples at the matching noise level.
    ts = ours.timesteps.tolist()
    for t in sorted({ts[0], ts[1], ts[len(ts) // 2], ts[-2], ts[-1]}, reverse=True):
        x0 = torch.rand(SHAPE, generator=g) * 2.4 - 1.2
        eps = torch.randn(SHAPE, generator=g)
        x_t = ours.add_noise(x0, eps, torch.full((SHAPE[0],), t))
        torch.testing.assert_close(
            x_t, ref.add_noise(x0, eps, torch.full((SHAPE[0],), t)), rtol=1e-5, atol=1e-5
        )
        model_out = eps + 0.3 * torch.randn(SHAPE, generator=g)  # an imperfect denoiser
        noise = torch.randn(SHAPE, generator=g)
        if kind == "ddpm":  # diffusers draws its noise: give both the same generator seed
            got = ours.step(model_out, t, x_t, generator=torch.Generator().manual_seed(t))
            want = ref.step(model_out, t, x_t, generator=torch.Generator().manual_seed(t))
        else:
            got = ours.step(model_out, t, x_t, noise=noise)
            want = ref.step(model_out, t, x_t, eta=eta, variance_noise=noise, use_clipped_model_output=clipped_eps)
        want = want.prev_sample
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_add_noise_is_the_correct_forward_process() -> None:
    betas = linear_betas(T)
    ab = alphas_cumprod(betas)
    sched = DDPMScheduler(betas)
    x0, eps = torch.ones(3, 8, 4), torch.zeros(3, 8, 4)
    t = torch.tensor([0, 500, 999])
    x_t = sched.add_noise(x0, eps, t)  # no noise: sqrt(alpha_bar) * x0, not alpha_bar * x0
    np.testing.assert_allclose(x_t[:, 0, 0].numpy(), np.sqrt(ab[[0, 500, 999]]), rtol=1e-6)


def test_generator_makes_steps_reproducible() -> None:
    sched = DDIMScheduler(cosine_betas(100), eta=1.0)
    sched.set_timesteps(10)
    x, e = torch.randn(4, 8, 4), torch.randn(4, 8, 4)
    t = int(sched.timesteps[3])
    a = sched.step(e, t, x, generator=torch.Generator().manual_seed(5))
    b = sched.step(e, t, x, generator=torch.Generator().manual_seed(5))
    c = sched.step(e, t, x, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_timesteps_and_errors() -> None:
    sched = DDIMScheduler(linear_betas(T))
    sched.set_timesteps(50)
    assert sched.timesteps.dtype == torch.long and len(sched.timesteps) == 50
    assert sched.timesteps[0] == 980 and sched.timesteps[-1] == 0
    assert (sched.timesteps.diff() < 0).all()
    with pytest.raises(ValueError, match="integer in 1..1000"):
        sched.set_timesteps(1001)
    with pytest.raises(ValueError, match="not one of this scheduler's timesteps"):
        sched.step(torch.zeros(1, 8, 4), 999, torch.zeros(1, 8, 4))
    with pytest.raises(ValueError, match="eta"):
        DDIMScheduler(linear_betas(T), eta=2.0)
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDPMScheduler(linear_betas(T), timestep_spacing="uniform")


# ----------------------------------------------------------------------------- DPM-Solver++


def fake_eps(x: torch.Tensor, t: int, ab: torch.Tensor) -> torch.Tensor:
    """A fixed, deterministic, imperfect denoiser: the exact epsilon of N(0, I) data plus a
    nonlinear error scaled by alpha_t, so that the predicted x0 stays bounded at every t."""
    a, s = float(ab[t]) ** 0.5, (1.0 - float(ab[t])) ** 0.5
    return s * x + 0.4 * a * torch.sin(3.0 * x + t / 100.0)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers' np.array(tensor)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("n,spacing", [(1, "linspace"), (5, "linspace"), (10, "linspace"), (20, "linspace"),
                                       (10, "leading"), (20, "trailing")])
def test_dpmsolver_trajectory_matches_diffusers(schedule, clip, n, spacing) -> None:
    """The whole sampling trajectory of DPM-Solver++(2M) against diffusers' default
    `DPMSolverMultistepScheduler`; clipping as its thresholding with sample_max_value = 1
    (a clamp to [-1, 1]). diffusers' sigmas are replaced by float64 ones, as in `pair`."""
    betas = make_betas(schedule, T).astype(np.float32)
    ours = DPMSolverScheduler(betas, clip_sample=clip, timestep_spacing=spacing)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=betas, algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", lower_order_final=True, timestep_spacing=spacing,
        thresholding=clip, sample_max_value=1.0,
    )
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=0, atol=0)
    ab = torch.from_numpy(np.cumprod(1.0 - betas.astype(np.float64)))
    ref.sigmas = torch.from_numpy(np.append(((1 - ab) / ab).sqrt().numpy()[ref.timesteps.numpy()], 0.0))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(n))
    y = x.clone()
    for t in ours.timesteps.tolist():
        x = ours.step(fake_eps(x, t, ab), t, x)
        y = ref.step(fake_eps(y, t, ab), t, y).prev_sample
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    assert x.abs().max() > 0.1 and (not clip or x.abs().max() <= 1.0)


def _gaussian_error(scheduler, mu: float = 0.3, s: float = 0.5) -> float:
    """Largest distance to the exact probability-flow ODE solution for N(mu, s^2) data.

    With the exact epsilon E[eps | x_t] = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2)
    the ODE keeps z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) fixed, so it ends at mu + s z."""
    ab = scheduler.alphas_cumprod
    t0 = int(scheduler.timesteps[0])
    scale0 = float(ab[t0] * s**2 + 1 - ab[t0]) ** 0.5
    z = torch.randn(256, 8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = float(ab[t0]) ** 0.5 * mu + scale0 * z
    for t in scheduler.timesteps.tolist():
        a, sg = float(ab[t]) ** 0.5, (1.0 - float(ab[t])) ** 0.5
        x = scheduler.step(sg * (x - a * mu) / (a * a * s * s + sg * sg), t, x)
    return float((x - (mu + s * z)).abs().max())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpmsolver_with_the_exact_epsilon_reaches_the_ode_solution_in_few_steps(schedule) -> None:
    """Second order pays: DPM-Solver++ at 20 steps lands closer to the exact solution than DDIM
    at 50 (measured: cosine 0.008 against 0.065; linear 0.099 against 0.118), and at 10 and
    20 steps beats both DDIM and its own first-order form at the same step count."""
    betas = make_betas(schedule, T)

    def error(cls, n: int, **kw) -> float:
        scheduler = cls(betas, clip_sample=False, **kw)
        scheduler.set_timesteps(n)
        return _gaussian_error(scheduler)

    assert error(DPMSolverScheduler, 20) < error(DDIMScheduler, 50)
    for n in (10, 20):
        dpm = error(DPMSolverScheduler, n)
        assert dpm < 0.8 * error(DDIMScheduler, n) and dpm < 0.8 * error(DPMSolverScheduler, n, solver_order=1)
    if schedule == "cosine":
        assert error(DPMSolverScheduler, 20) < 0.02 and error(DPMSolverScheduler, 50) < 0.005


def test_dpmsolver_state_and_errors() -> None:
    sched = DPMSolverScheduler(cosine_betas(100))
    sched.set_timesteps(5)
    assert sched.timesteps.tolist() == [99, 79, 59, 40, 20]  # linspace(0, 99, 6), rounded, without 0
    ab = sched.alphas_cumprod

    def trajectory(x: torch.Tensor) -> torch.Tensor:
        for t in sched.timesteps.tolist():
            x = sched.step(fake_eps(x, t, ab), t, x)
        return x

    x = torch.randn(4, 8, 4, generator=torch.Generator().manual_seed(1))
    first = trajectory(x)
    torch.testing.assert_close(trajectory(x), first, rtol=0, atol=0)  # the first timestep starts afresh
    sched.step(torch.zeros_like(x), 99, x)
    with pytest.raises(ValueError, match="in order"):
        sched.step(torch.zeros_like(x), 59, x)
    sched.set_timesteps(1)  # one step: the clipped x0 prediction itself
    t = int(sched.timesteps[0])
    eps = torch.randn(4, 8, 4)
    want = ((x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()).clamp(-1, 1).float()
    torch.testing.assert_close(sched.step(eps, t, x), want)
    sched.set_timesteps(100)
    assert len(sched.timesteps) == len(set(sched.timesteps.tolist())) <= 100  # repeated rounds dropped
    with pytest.raises(ValueError, match="solver_order"):
        DPMSolverScheduler(cosine_betas(100), solver_order=3)
    with pytest.raises(ValueError, match="integer in 1..100"):
        sched.set_timesteps(0)
