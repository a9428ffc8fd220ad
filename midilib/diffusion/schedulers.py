"""DDPM, DDIM and DPM-Solver++ samplers for an epsilon-predicting model, in the style of diffusers.

Our own small code, checked step for step against diffusers' `DDPMScheduler`,
`DDIMScheduler` and `DPMSolverMultistepScheduler` (tests/test_schedulers.py);
DPM-Solver++ is described in `DPMSolverScheduler`. The choices that make DDPM and
DDIM agree with diffusers exactly, and why they are sensible here:

* ``timestep_spacing="leading"`` (diffusers' default): with T = 1000 and n = 50
  the timesteps are 980, 960, ..., 0. "trailing" (999, 979, ..., 19) starts at
  the pure-noise end and is also offered; "linspace" rounds an even grid.
* ``steps_offset = 0`` and, for DDIM, ``set_alpha_to_one=True``: the last step
  lands on alpha_bar = 1, i.e. returns the predicted x0 itself.
* DDPM uses the "fixed_small" posterior variance beta~_t of Ho et al. (eq. 7),
  with the respaced beta_t = 1 - alpha_bar_t / alpha_bar_prev when n < T.
* x0 clipping (``clip_sample``) clips the *predicted x0* to [-r, r] before the
  posterior mean. DDIM keeps the unclipped epsilon for its direction term by
  default, as diffusers does; ``use_clipped_model_output=True`` re-derives it
  from the clipped x0 (GLIDE), which `make_scheduler` chooses: with the raw
  epsilon, x0 and the direction disagree at every clipped step, and over 1000
  DDIM steps the error piled up (in notebook 05's sweep on the `default` run,
  feature Frechet distance 16.1 against 1.54 with the re-derived one; 1.75
  against 1.69 at 50 steps).
* The previous timestep is the next entry of ``timesteps``; no noise is added
  on the final step (diffusers adds noise of std 1e-10 there for "trailing").

alpha_bar is kept in float64 and the per-step coefficients are Python floats,
so a step costs a few fused tensor ops in the sample's own dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from midilib.diffusion.schedules import alphas_cumprod

SPACINGS = ("leading", "trailing", "linspace")


def _check_steps(n: object, T: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= T:
        raise ValueError(f"the number of sampling steps must be an integer in 1..{T}, got {n!r}")


def _randn_like(sample: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, so a seed gives the same noise anywhere."""
    device = generator.device if generator is not None else sample.device
    noise = torch.randn(sample.shape, generator=generator, device=device, dtype=sample.dtype)
    return noise.to(sample.device)


def add_noise(
    alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int
) -> torch.Tensor:
    """q(x_t | x0) = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps: the one copy of the forward process.

    The schedulers' `add_noise` and the model's training loss both call it. `t` is an
    int or a LongTensor (B,), indexed into `alphas_cumprod` on that tensor's device and
    not range-checked here (no host sync: the trainer calls this every step); alpha_bar
    is cast to `x0`'s device and dtype before the square roots, as in diffusers.
    """
    t = torch.as_tensor(t, dtype=torch.long, device=alphas_cumprod.device)
    ab = alphas_cumprod[t].to(device=x0.device, dtype=x0.dtype)
    ab = ab.reshape(ab.shape + (1,) * (x0.dim() - ab.dim()))
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


class _Scheduler:
    """What DDPM and DDIM share: alpha_bar, respacing, the forward process."""

    def __init__(
        self,
        betas: np.ndarray | torch.Tensor,
        clip_sample: bool = True,
        clip_range: float = 1.0,
        timestep_spacing: str = "leading",
    ) -> None:
        if isinstance(betas, torch.Tensor):
            betas = betas.detach().cpu().double().numpy()
        self.alphas_cumprod = torch.from_numpy(alphas_cumprod(betas))
        self.num_train_timesteps = len(betas)
        if clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {clip_range}")
        if timestep_spacing not in SPACINGS:
            raise ValueError(
                f"unknown timestep_spacing {timestep_spacing!r}; choose one of {', '.join(SPACINGS)}"
            )
        self.clip_sample = clip_sample
        self.clip_range = float(clip_range)
        self.timestep_spacing = timestep_spacing
        self.set_timesteps(self.num_train_timesteps)

    def _spacing(self, n: int, T: int) -> np.ndarray:
        """The n timesteps `timestep_spacing` names (diffusers' DDPM/DDIM spacings), any order."""
        if self.timestep_spacing == "leading":
            return np.arange(n) * (T // n)
        if self.timestep_spacing == "trailing":
            return np.round(np.arange(T, 0, -T / n))[:n] - 1
        return np.linspace(0, T - 1, n).round()

    def set_timesteps(self, n: int) -> None:
        """Use n sampling steps (1 <= n <= T); `timesteps` becomes a descending LongTensor
        (repeated integers of the spacing dropped)."""
        T = self.num_train_timesteps
        _check_steps(n, T)
        steps = np.unique(self._spacing(n, T).astype(np.int64))[::-1].copy()
        self.num_inference_steps = len(steps)
        self.timesteps = torch.from_numpy(steps)
        prev = np.append(steps[1:], -1)
        self._prev = dict(zip(steps.tolist(), prev.tolist(), strict=True))

    def previous_timestep(self, t: int) -> int:
        """The timestep the step from `t` lands on (-1 after the last one)."""
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(
                f"timestep {int(t)} is not one of this scheduler's timesteps"
            ) from None

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int
    ) -> torch.Tensor:
        """The forward process q(x_t | x0) = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

        `t` is an int or a LongTensor (B,) of per-sample timesteps, checked to lie in 0..T-1.
        """
        t = torch.as_tensor(t, dtype=torch.long, device="cpu")
        if (t < 0).any() or (t >= self.num_train_timesteps).any():
            raise ValueError(f"timesteps must lie in 0..{self.num_train_timesteps - 1}")
        return add_noise(self.alphas_cumprod, x0, noise, t)

    def _alpha_bars(self, t: int, prev: int, final: float) -> tuple[float, float]:
        ab_t = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else final
        return ab_t, ab_prev

    def _predict_x0(self, eps: torch.Tensor, sample: torch.Tensor, ab_t: float) -> torch.Tensor:
        x0 = (sample - (1.0 - ab_t) ** 0.5 * eps) / ab_t**0.5
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0


class DDPMScheduler(_Scheduler):
    """Ancestral sampling p(x_prev | x_t) with the fixed-small posterior variance."""

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step from timestep `t` (epsilon prediction) -> x at the previous timestep."""
        t = int(t)
        prev = self.previous_timestep(t)
        ab_t, ab_prev = self._alpha_bars(t, prev, 1.0)
        alpha_t = ab_t / ab_prev
        beta_t = 1.0 - alpha_t
        x0 = self._predict_x0(model_output, sample, ab_t)
        x0_coef = ab_prev**0.5 * beta_t / (1.0 - ab_t)
        xt_coef = alpha_t**0.5 * (1.0 - ab_prev) / (1.0 - ab_t)
        mean = x0_coef * x0 + xt_coef * sample
        if prev < 0:
            return mean
        variance = max((1.0 - ab_prev) / (1.0 - ab_t) * beta_t, 1e-20)
        if noise is None:
            noise = _randn_like(sample, generator)
        return mean + variance**0.5 * noise


class DDIMScheduler(_Scheduler):
    """DDIM (Song et al. 2021): eta = 0 is deterministic, eta = 1 matches DDPM's variance."""

    def __init__(
        self,
        betas: np.ndarray | torch.Tensor,
        clip_sample: bool = True,
        eta: float = 0.0,
        clip_range: float = 1.0,
        timestep_spacing: str = "leading",
        set_alpha_to_one: bool = True,
        use_clipped_model_output: bool = False,
    ) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)
        self.use_clipped_model_output = bool(use_clipped_model_output)
        super().__init__(betas, clip_sample, clip_range, timestep_spacing)
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDIM update from timestep `t` (epsilon prediction) -> x at the previous timestep."""
        t = int(t)
        prev = self.previous_timestep(t)
        ab_t, ab_prev = self._alpha_bars(t, prev, self.final_alpha_cumprod)
        x0 = self._predict_x0(model_output, sample, ab_t)
        if self.use_clipped_model_output and self.clip_sample:  # the epsilon that the clipped x0 implies
            model_output = (sample - ab_t**0.5 * x0) / (1.0 - ab_t) ** 0.5
        variance = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
        std = self.eta * variance**0.5
        direction = max(1.0 - ab_prev - std**2, 0.0) ** 0.5 * model_output
        prev_sample = ab_prev**0.5 * x0 + direction
        if self.eta > 0:
            if noise is None:
                noise = _randn_like(sample, generator)
            prev_sample = prev_sample + std * noise
        return prev_sample


class DPMSolverScheduler(_Scheduler):
    r"""DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095): a deterministic
    second-order multistep ODE solver in data-prediction form, for 10-20 steps.

    With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and the half log-SNR
    lambda_t = log(alpha_t / sigma_t), each model call gives the data prediction

        x0_i = (x_{t_i} - sigma_{t_i} eps(x_{t_i}, t_i)) / alpha_{t_i}     (clipped to [-r, r] by clip_sample)

    and, with h_i = lambda_{t_{i+1}} - lambda_{t_i} > 0 and r_i = h_{i-1} / h_i, the step is

        x_{t_{i+1}} = (sigma_{t_{i+1}} / sigma_{t_i}) x_{t_i}
                      - alpha_{t_{i+1}} (e^{-h_i} - 1) [x0_i + (x0_i - x0_{i-1}) / (2 r_i)]

    (Algorithm 2, the "midpoint" form diffusers uses). The first step has no x0_{i-1} and the
    last one lands on sigma = 0; both use the first-order update (the bracket is x0_i alone),
    which is DDIM with eta = 0, and the last one returns x0 itself. These are diffusers'
    defaults (algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
    lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace");
    ``solver_order=1`` gives the first-order solver throughout.

    Timesteps are spaced as diffusers' DPM-Solver does (the n + 1 points of the spacing
    without the last: "linspace" with n = 10 and T = 1000 is 999, 899, ..., 100, and the
    step from 100 goes to x0), with repeated integers dropped, so n near T may give fewer
    steps. ``clip_sample`` clips the predicted x0 as DDIM does; the solver uses x0 only,
    so there is no epsilon to re-derive (diffusers: ``thresholding=True`` with
    ``sample_max_value=1``, which clamps to [-1, 1]). ``step`` must be called on the
    timesteps in order; a call at the first timestep starts a new trajectory.
    Coefficients are Python floats computed in float64.
    """

    def __init__(
        self,
        betas: np.ndarray | torch.Tensor,
        clip_sample: bool = True,
        clip_range: float = 1.0,
        timestep_spacing: str = "linspace",
        solver_order: int = 2,
    ) -> None:
        if solver_order not in (1, 2):
            raise ValueError(f"solver_order must be 1 or 2, got {solver_order!r}")
        self.solver_order = solver_order
        super().__init__(betas, clip_sample, clip_range, timestep_spacing)

    def _spacing(self, n: int, T: int) -> np.ndarray:
        """Spaced as diffusers' DPM-Solver spaces them: the n + 1 points without the last."""
        if self.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
        if self.timestep_spacing == "leading":
            return (np.arange(n + 1) * (T // (n + 1))).round()[::-1][:-1]
        return np.round(np.arange(T, 0, -T / n)) - 1

    def set_timesteps(self, n: int) -> None:
        """Use n sampling steps (1 <= n <= T); a new trajectory starts."""
        super().set_timesteps(n)
        self._index = {t: i for i, t in enumerate(self.timesteps.tolist())}
        self._reset()

    def _reset(self) -> None:
        self._last: int | None = None  # index of the last step taken
        self._x0_prev: torch.Tensor | None = None
        self._h_prev = 0.0

    def _lambda(self, ab: float) -> float:
        return 0.5 * (math.log(ab) - math.log1p(-ab))

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DPM-Solver++ update from timestep `t` (epsilon prediction) -> x at the next timestep.

        Deterministic: `generator` and `noise` are accepted for the common API and ignored.
        """
        t = int(t)
        prev = self.previous_timestep(t)
        i = self._index[t]
        if i == 0:
            self._reset()
        elif self._last != i - 1:
            raise ValueError(
                f"DPM-Solver++ steps must follow the timesteps in order: step {i} (t={t}) "
                f"after {'none' if self._last is None else self._last}"
            )
        ab_t, ab_prev = self._alpha_bars(t, prev, 1.0)
        x0 = self._predict_x0(model_output, sample, ab_t)
        if prev < 0:  # sigma = 0: the solution is the data prediction itself
            out, h = x0, math.inf
        else:
            sigma_ratio = ((1.0 - ab_prev) / (1.0 - ab_t)) ** 0.5
            h = self._lambda(ab_prev) - self._lambda(ab_t)
            coef = -(ab_prev**0.5) * math.expm1(-h)  # -alpha_next (e^{-h} - 1) > 0
            if self.solver_order == 2 and self._x0_prev is not None:
                half_over_r = 0.5 * h / self._h_prev  # 1 / (2 r_i)
                out = sigma_ratio * sample + (coef * (1.0 + half_over_r)) * x0 - (coef * half_over_r) * self._x0_prev
            else:
                out = sigma_ratio * sample + coef * x0
        self._last, self._x0_prev, self._h_prev = i, x0, h
        return out
