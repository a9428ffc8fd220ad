"""Every size and budget of the workbook, in one place.

`smoke` runs the whole workbook in seconds (CI), `default` is sized to learn
something real on a 2-core CPU within minutes, `full` is the original study's
sizes for a GPU. Notebooks and the CLI only ever name a profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    window: int = 8
    s_max: float = 2.0
    d_max: float = 2.0
    test_fraction: float = 0.1
    valid_fraction: float = 0.1  # choices (checkpoints, steps, weights) are made on this split
    seed: int = 0
    max_files: int | None = None  # cap on the corpus (smoke only)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    max_steps: int | None = None  # stop after this many optimiser steps in all
    max_minutes: float | None = None  # wall-clock budget; the schedule still follows epochs
    precision: str = "bf16"  # on CUDA: bf16 autocast or plain fp32 (the CPU always trains in fp32)


@dataclass(frozen=True)
class VAEConfig:
    pitch_embed: int = 4
    feature_embed: int = 12
    enc_hidden: int = 64
    enc_layers: int = 4
    dec_hidden: int = 64
    dec_layers: int = 4
    dec_fc: int = 32
    latent: int = 1024
    dropout: float = 0.5
    # weight of the velocity/delta/duration term against the pitch cross-entropy; the
    # original's 1 leaves an MSE cheap next to the KL term, so the code drops timing
    value_weight: float = 1.0
    # how velocity, delta and duration are emitted: "mse" (the original: softplus regression, which
    # predicts the conditional mean) or "classes" (a categorical over a grid per value, trained with
    # cross-entropy: reconstruction takes the mode, sampling draws from it)
    value_head: str = "mse"
    value_bins: int = 64  # grid size per value for value_head="classes"
    # KL free bits (MusicVAE): nats of KL per window that cost nothing, so the posterior keeps them
    free_bits: float = 0.0
    beta_max: float = 0.1  # the KL weight's final value (reached by 0.01 per epoch)


@dataclass(frozen=True)
class DiffusionConfig:
    denoiser: str = "transformer"  # lstm | transformer
    schedule: str = "cosine"  # linear | cosine
    timesteps: int = 1000
    # lstm denoiser (the original's)
    lstm_time_embed: int = 128
    lstm_hidden: int = 128
    lstm_layers: int = 4
    lstm_bottleneck: int = 64
    lstm_dropout: float = 0.1
    # transformer denoiser
    tf_width: int = 192
    tf_layers: int = 6
    tf_heads: int = 4
    tf_dropout: float = 0.0
    # how pitch enters the diffusion space: "linear" (the original: p / 63.5 - 1, one channel) or
    # "fifths" (pitch class on the circle of fifths as (cos, sin) plus the linear height: 3 channels)
    pitch_code: str = "linear"


@dataclass(frozen=True)
class LatentConfig:
    """Latent diffusion (midilib.latent): a DiT over sequences of `windows` consecutive VAE
    window latents, conditioned on the composer with classifier-free guidance."""

    windows: int = 16  # K: consecutive windows per sequence (16 x 8 = 128 notes, ~30 s)
    width: int = 256
    depth: int = 6  # DiT blocks
    heads: int = 4
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: str = "cosine"  # linear | cosine
    p_uncond: float = 0.1  # chance a training sequence's composer is replaced by the null token
    min_pieces: int = 10  # composers with fewer training pieces (files) fold into "other"
    # the network's skip: "gaussian", E[eps | x_t] were x0 ~ N(0, I); "composer", the same under each
    # composer's own Gaussian N(m_c, diag s_c^2), one window at a time (the null token keeps N(0, I));
    # "sequence", under each composer's Gaussian of the whole sequence, windows correlated (the null
    # token's: all sequences' around 0), so the label and the neighbours have a path that does not wait
    # to be learnt (midilib.diffusion.latent_model; chosen on validation by midilib.latent_choices)
    skip: str = "sequence"
    # "sequence" skip: windows are correlated within the top-P principal directions of the latents
    # (P = min(sequence_rank, D)), each label's covariance P x P per DCT frequency; isotropic off them
    sequence_rank: int = 128
    # the training loss weighs noise level t by min(SNR_t, gamma) / SNR_t (Hang et al. 2023, "min-SNR"),
    # normalised to mean 1 over t; 0: the plain epsilon-MSE (midilib.diffusion.latent_model), which with
    # the sequence skip scored better on validation (figures/giantmidi-sample-a479ab05/latent-choices.md)
    min_snr: float = 0.0


@dataclass(frozen=True)
class EvalConfig:
    n_generate: int = 10_000  # windows generated per model
    n_reference: int = 10_000  # reference windows drawn from the test files
    n_fad: int = 10_000  # windows rendered to audio per set for FAD
    bootstrap: int = 1000
    ddim_steps: tuple[int, ...] = (10, 20, 50, 100, 250, 1000)


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    diffusion_train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    latent_train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Profile(
    name="full",
    vae=VAEConfig(),
    # fp32: on an H200 the VAE's cuDNN LSTMs trained 1.5x faster in fp32 than under bf16 autocast
    # (`make bench`, figures/bench-gpu.md); the denoisers keep bf16
    vae_train=TrainConfig(epochs=100, batch_size=4096, precision="fp32"),
    # 160 wide, 4 blocks, 5 heads of 32: 1,958,564 parameters, the original's ~2.0M
    diffusion=DiffusionConfig(denoiser="transformer", tf_width=160, tf_layers=4, tf_heads=5),
    diffusion_train=TrainConfig(epochs=100, batch_size=4096),
    eval=EvalConfig(),
    # 384 wide, 8 blocks of 6 heads over K = 16 tokens of the VAE's 1024 dims: 22.7M parameters (GPU)
    latent=LatentConfig(width=384, depth=8, heads=6),
    latent_train=TrainConfig(epochs=100, batch_size=256, lr=1e-3),
)

DEFAULT = Profile(
    name="default",
    # Wider pitch embedding, fewer/bigger LSTM layers and a higher learning
    # rate learn far faster on a CPU than the original sizes (DEVELOPERS.md).
    # Measured on 2 cores: one LSTM layer each side steps ~6x faster than two and
    # reaches 0.74 held-out pitch accuracy in 2 minutes on the sample corpus.
    vae=VAEConfig(
        pitch_embed=32,
        feature_embed=16,
        enc_hidden=128,
        enc_layers=1,
        dec_hidden=128,
        dec_layers=1,
        dec_fc=64,
        latent=128,
        dropout=0.0,
        # the original's "mse" head regresses timing to the mean (notebook 03); among the value weights
        # tried on the GiantMIDI sample's validation files (figures/giantmidi-sample-a479ab05/vae-heads.md,
        # `python -m midilib compare`), 0.5 came closest to the targets pitch 0.95 / note IoU 0.35
        value_head="classes",
        value_weight=0.5,
    ),
    vae_train=TrainConfig(epochs=100, batch_size=256, lr=1e-2, max_minutes=6.0, precision="fp32"),
    diffusion=DiffusionConfig(
        denoiser="transformer",
        tf_width=96,
        tf_layers=3,
        tf_heads=4,
        lstm_time_embed=64,
        lstm_hidden=64,
        lstm_layers=2,
        # chosen on the validation files: with "linear" DDIM-50's windows are, in key, uniform random
        # pitches; notebook 05 scores both codes (records/05_ddim.json, pitch_codes)
        pitch_code="fifths",
    ),
    diffusion_train=TrainConfig(epochs=60, batch_size=256, lr=2e-3, max_minutes=4.0),
    eval=EvalConfig(
        n_generate=2000, n_reference=2000, n_fad=2000, bootstrap=200,
        ddim_steps=(10, 20, 50, 100, 250, 1000),
    ),
    latent=LatentConfig(width=128, depth=4, heads=4),
    latent_train=TrainConfig(epochs=400, batch_size=64, lr=2e-3, max_minutes=4.0),
)

SMOKE = Profile(
    name="smoke",
    data=DataConfig(max_files=24),
    vae=VAEConfig(
        pitch_embed=8,
        feature_embed=8,
        enc_hidden=32,
        enc_layers=1,
        dec_hidden=32,
        dec_layers=1,
        dec_fc=16,
        latent=16,
        dropout=0.0,
        value_head="classes",
    ),
    # 12 epochs of 5 steps at lr 1e-2: the smoke VAE beats the constant baseline (3 epochs at 3e-3
    # left it at pitch accuracy 0.03 and note IoU 0.00, so no test could tell it from a broken one)
    vae_train=TrainConfig(epochs=12, batch_size=128, lr=1e-2, max_steps=60),
    diffusion=DiffusionConfig(
        denoiser="transformer",
        timesteps=100,
        tf_width=32,
        tf_layers=1,
        tf_heads=2,
        lstm_time_embed=16,
        lstm_hidden=16,
        lstm_layers=1,
        lstm_bottleneck=16,
        pitch_code="fifths",
    ),
    diffusion_train=TrainConfig(epochs=3, batch_size=128, lr=3e-3, max_steps=60),
    eval=EvalConfig(
        n_generate=200, n_reference=200, n_fad=16, bootstrap=50, ddim_steps=(5, 10, 20, 100)
    ),
    latent=LatentConfig(windows=8, width=32, depth=1, heads=2, timesteps=100, p_uncond=0.2, min_pieces=2),
    latent_train=TrainConfig(epochs=3, batch_size=32, lr=3e-3, max_steps=30),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, DEFAULT, FULL)}


def get_profile(name: str | Profile) -> Profile:
    """The profile called `name` (a Profile passes through)."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


def override(cfg: Any, **changes: Any) -> Any:
    """A copy of a frozen config with some fields changed (None values ignored)."""
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})
