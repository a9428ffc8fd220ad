"""Latent diffusion: an epsilon-prediction DDPM over sequences of K VAE window latents.

After Mittal et al. (ISMIR 2021): a trained VAE maps each 8-note window to its posterior
mean z in R^D; a piece becomes a sequence z_1..z_K of consecutive windows, and this
model learns p(z_1..z_K | composer). The network sees normalised latents
x0 = (z - mu) / sigma (per dimension, from the training split: the `mean` and `std`
buffers, so the checkpoint carries them), trained with the simple DDPM loss

    L = E_{x0, c, t, eps} || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t, c) ||^2,

where the noising is `midilib.diffusion.schedulers.add_noise` (the one copy of q(x_t | x0)).
Training weighs each noise level by min-SNR-gamma (Hang et al. 2023, `min_snr` = gamma > 0),

    L_w = E[ w(t) || eps - eps_theta ||^2 ],   w(t) = min(SNR_t, gamma) / SNR_t / E_t[min(SNR_t, gamma) / SNR_t],

SNR_t = ab_t / (1 - ab_t): the nearly clean levels, where eps is hard to tell from x_t and
nothing long-range is decided, count less; the normaliser is the mean over all t, a constant,
so the weights do not depend on how a batch is split. `loss` stays the plain epsilon-MSE
(the held-out losses are comparable across weightings); `weighted_loss` is what trains.

Two things keep sampling stable. The first steps estimate
x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), which magnifies any error in eps by
1 / sqrt(ab_t) (34x at t = 980 of 1000, cosine), and nothing bounds latents as the
[-1, 1] box bounds windows. So (1) the network predicts a residual over the Gaussian
denoiser, eps_theta = sqrt(1 - ab_t) x_t + F(x_t, t, c), the first term being E[eps | x_t]
were x0 ~ N(0, I) (what the normalisation makes of it to second order), F's head
starting at zero (a skip, as c_skip in EDM, Karras et al. 2022): at high noise it is
almost all of eps; and (2) the samplers clip the predicted x0 to [-r, r], r the largest
|x| of the training split (the `clip` buffer). Measured on the default corpus and VAE
(DDIM-50, 64 sequences): a plain DiT after ~400 steps sampled latents of mean norm 40
(19 with the clip) against 5.2 for real ones; with both, after ~100 steps, 5.7.

The skip need not be blind to the composer (`LatentConfig.skip`, "composer" by default):
under x0 ~ N(m_c, diag s_c^2), the Gaussian fitted to composer c's training latents,
E[eps | x_t, c] = sqrt(1 - ab_t) (x_t - sqrt(ab_t) m_c) / (ab_t s_c^2 + 1 - ab_t), which is the
blind skip for m = 0, s = 1 (the null token's row). A learnt label path alone was measured
to go unused: on the GiantMIDI sample's default run the valid loss was 0.24909 with the
composer and 0.24910 without, and guidance moved the probe's hits 1.1x; the composer's own
Gaussian gives eps_c - eps_null a part that is there from the first step.

Nor need the skip be blind to the other windows ("sequence", the profiles'). Take x0 as the whole
flattened sequence (K D) and x0 ~ N(m_c, Sigma_c), Sigma_c fitted to composer c's training
sequences less their mean, shrunk towards all composers' pooled one (the null token's: all
sequences around 0; `midilib.latent.sequence_stats`): the lag covariances C(l) = E[x_k x_{k+l}^T]
give a stationary sequence's block-Toeplitz covariance, and in the orthonormal DCT over the
windows, Phi, which nearly diagonalises any stationary sequence's covariance in time, its
frequencies are taken as independent, each with its own D x D covariance
Sigma_f = U_f diag(lambda_f) U_f^T. Then

    E[eps | x_t, c] = sqrt(1 - ab_t) (ab_t Sigma_c + (1 - ab_t) I)^{-1} (x_t - sqrt(ab_t) m_c)
                    = sqrt(1 - ab_t) Phi^T U diag(1 / (ab_t lambda + 1 - ab_t)) U^T Phi (x_t - sqrt(ab_t) m_c),

frequency by frequency: K D^2 per sequence against (K D)^2 for the full covariance, whose skip
took a third of a training step on the GiantMIDI sample's default model. For a large D the
correlation is kept in the top P principal directions V of the latents (`sequence_rank`) and
each label's Gaussian is isotropic off them, so the statistics stay (classes + 1) K P^2 numbers.
Adjacent windows' latents are correlated, and a DiT trained for minutes on a CPU did not learn
it: on that sample's validation pieces (figures/giantmidi-sample-a479ab05/latent-choices.md),
samples of this Gaussian alone, before any training, scored pitch consistency 0.994 and FD-inf
of clips 0.17, against 0.973 and 1.18 for the trained per-window ("composer") model.

The composer c enters the network F with the timestep: c_vec = MLP(timestep features(t)) + E[c], which
modulates every DiT block by adaLN-Zero. E has one row per composer of the run's
vocabulary plus a last, learned null row; in training c is replaced by the null token
with probability `p_uncond`, so one network gives both eps(x, t, c) and eps(x, t, null).
Classifier-free guidance (Ho & Salimans 2022) then samples with

    eps_W = eps(x, t, null) + W (eps(x, t, c) - eps(x, t, null)),

W = 0 unconditional, W = 1 conditional, W > 1 more composer-typical (`Guided`).

Training batches carry the composer id as an extra channel (`pack`): the trainer
(`midilib.train.fit`) takes one array, (N, K, D + 1), and never needs to know.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from midilib import distributed
from midilib.diffusion.schedulers import add_noise
from midilib.diffusion.schedules import make_betas
from midilib.models.denoisers import TransformerDenoiser, timestep_embedding
from midilib.profiles import LatentConfig

SKIPS = ("gaussian", "composer", "sequence")


class LatentDenoiser(TransformerDenoiser):
    """DiT over K tokens, token k the (noised, normalised) latent of window k, with a learned
    position each; conditioned by adaLN-Zero on c_vec = MLP(timestep features) + E[label].

    `classes` labels are composers; label `classes` itself is the null token."""

    def __init__(self, cfg: LatentConfig, latent_dim: int, classes: int) -> None:
        super().__init__(cfg.width, cfg.depth, cfg.heads, cfg.dropout, window=cfg.windows, channels=latent_dim)
        self.classes = classes
        self.label = nn.Embedding(classes + 1, cfg.width)
        nn.init.normal_(self.label.weight, std=0.02)
        nn.init.zeros_(self.head.weight)  # the model starts as the Gaussian denoiser (LatentDiffusion)
        nn.init.zeros_(self.head.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Predicted noise (B, L, D) for x_t (B, L, D), L <= K, at timesteps t (B,) given labels (B,)."""
        return self.trunk(x_t, self.time_mlp(timestep_embedding(t, self.width)) + self.label(label))


class LatentDiffusion(nn.Module):
    """Noise schedule + normalisation + `LatentDenoiser`, with the trainer's loss."""

    def __init__(
        self, denoiser: LatentDenoiser, betas: torch.Tensor, p_uncond: float = 0.1, skip: str = "gaussian",
        min_snr: float = 0.0, sequence_rank: int = 128,
    ) -> None:
        super().__init__()
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {', '.join(SKIPS)}, got {skip!r}")
        if not 0.0 <= min_snr < float("inf"):
            raise ValueError(f"min_snr must be >= 0 and finite (0: unweighted), got {min_snr}")
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
        self.denoiser = denoiser
        self.p_uncond = float(p_uncond)
        self.register_buffer("betas", betas.float())
        ab = torch.cumprod(1.0 - betas, 0)
        self.register_buffer("alphas_cumprod", ab.float())
        snr = ab / (1.0 - ab)
        weight = torch.clamp(snr, max=min_snr) / snr if min_snr > 0 else torch.ones_like(snr)
        self.min_snr = float(min_snr)
        self.register_buffer("loss_weight", (weight / weight.mean()).float(), persistent=False)
        self.register_buffer("mean", torch.zeros(denoiser.channels))
        self.register_buffer("std", torch.ones(denoiser.channels))
        self.register_buffer("clip", torch.tensor(1.0))
        self.skip_kind = skip
        self.composer_skip = skip in ("composer", "sequence")  # the skip has a Gaussian per label
        self.sequence_skip = skip == "sequence"
        if self.composer_skip:  # rows: each label's mean (and variance) of normalised latents; the null row N(0, I)
            self.register_buffer("class_mean", torch.zeros(denoiser.classes + 1, denoiser.channels))
        if skip == "composer":
            self.register_buffer("class_var", torch.ones(denoiser.classes + 1, denoiser.channels))
        if self.sequence_skip:  # until set: I at lag 0, 0 beyond, in the first P dimensions (the blind skip)
            if sequence_rank < 1:
                raise ValueError(f"sequence_rank must be >= 1, got {sequence_rank}")
            rank = min(sequence_rank, denoiser.channels)
            self.register_buffer("seq_basis", torch.eye(denoiser.channels)[:, :rank])  # V (D, P), orthonormal
            lags = torch.zeros(denoiser.classes + 1, denoiser.pos.shape[1], rank, rank)  # per label, around 0 last
            lags[:, 0] = torch.eye(rank)
            self.register_buffer("lag_cov", lags)
            self.register_buffer("resid_var", torch.ones(denoiser.classes + 1))  # sigma_c^2 off V's span
            self._bases: dict[tuple, tuple[torch.Tensor, ...]] = {}
            self.register_load_state_dict_post_hook(lambda module, _: module._bases.clear())

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def windows(self) -> int:
        """K, the longest sequence the positions cover."""
        return self.denoiser.pos.shape[1]

    @property
    def latent_dim(self) -> int:
        return self.denoiser.channels

    @property
    def null(self) -> int:
        """The label of the null (unconditional) token: the last one."""
        return self.denoiser.classes

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor, clip: float) -> None:
        """Store the training split's per-dimension mean and std (D,) of the latents, and the
        largest |x| of its normalised latents: the samplers clip their predicted x0 to that box."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != self.mean.shape or std.shape != self.std.shape or not (std > 0).all():
            raise ValueError(f"stats must be ({self.latent_dim},) with std > 0")
        if not 0 < clip < float("inf"):
            raise ValueError(f"clip must be > 0 and finite, got {clip}")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.clip.fill_(clip)

    def set_class_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Store each composer label's per-dimension mean and variance (classes, D) of the normalised
        training latents, for the "composer" skip; the null token's row stays N(0, I)."""
        if self.skip_kind != "composer":
            raise ValueError(f"this model's skip is {self.skip_kind!r}: it has no per-window composer statistics")
        mean, var = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(var, dtype=torch.float32)
        shape = (self.null, self.latent_dim)
        if mean.shape != shape or var.shape != shape or not (var > 0).all() or not mean.isfinite().all():
            raise ValueError(f"class stats must be {shape} with finite means and variances > 0")
        self.class_mean[: self.null] = mean
        self.class_var[: self.null] = var

    def set_sequence_stats(self, stats: SequenceStats) -> None:
        """Store the "sequence" skip's Gaussians (`SequenceStats`, from `midilib.latent.sequence_stats`)."""
        if not self.sequence_skip:
            raise ValueError(f"this model's skip is {self.skip_kind!r}: it has no sequence statistics")
        k, rank = self.lag_cov.shape[1], self.lag_cov.shape[2]
        shapes = {"mean": (self.null, self.latent_dim), "basis": (self.latent_dim, rank),
                  "within": (self.null, k, rank, rank), "around": (k, rank, rank), "resid": (self.null + 1,)}
        values = {name: torch.as_tensor(getattr(stats, name), dtype=torch.float32) for name in shapes}
        for name, shape in shapes.items():
            if values[name].shape != shape or not values[name].isfinite().all():
                raise ValueError(f"sequence stats: {name} must be {shape} and finite, got {tuple(values[name].shape)}")
        if not (values["resid"] > 0).all():
            raise ValueError("sequence stats: resid variances must be > 0")
        self.class_mean[: self.null] = values["mean"]
        self.seq_basis.copy_(values["basis"])
        self.lag_cov.copy_(torch.cat((values["within"], values["around"][None])))
        self.resid_var.copy_(values["resid"])
        self._bases.clear()

    def toeplitz_covariance(self, label: int, length: int | None = None) -> torch.Tensor:
        """The block-Toeplitz covariance (L, L, P, P), float64, in V's coordinates, of a stationary sequence of
        L <= K windows from label `label`'s lag covariances: block (i, j) is C(j - i) for j >= i, C(i - j)^T below."""
        lags = self.lag_cov[label].double().cpu()
        length = lags.shape[0] if length is None else length
        i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        return torch.where((j >= i)[..., None, None], lags[(j - i).abs()], lags[(i - j).abs()].transpose(-1, -2))

    def _basis(self, label: int, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(Phi (L, L), U (L, P, P), lambda (L, P)), float32 on `device`: the orthonormal DCT-II over
        the windows and, per frequency f, the eigenvectors and eigenvalues (floored at 1e-3) of
        Sigma_f = sum_{i,j} Phi[f, i] Phi[f, j] C_ij, the Toeplitz covariance's diagonal block in the
        DCT basis. Computed once per (label, L, device), again after new statistics are loaded."""
        key = (label, length, str(device))
        if key not in self._bases:
            phi = dct_matrix(length)
            blocks = torch.einsum("fi,ijde,fj->fde", phi, self.toeplitz_covariance(label, length), phi)
            lam, vectors = torch.linalg.eigh((blocks + blocks.transpose(-1, -2)) / 2)
            self._bases[key] = tuple(v.float().to(device) for v in (phi, vectors, lam.clamp(min=1e-3)))
        return self._bases[key]

    def sequence_covariance(self, label: int, length: int | None = None) -> torch.Tensor:
        """The covariance (L D, L D), float64, flattened window-major, of label `label`'s "sequence" Gaussian:
        in V's span, the Toeplitz covariance with its frequencies made independent,
        (Phi^T x V) blockdiag_f(U_f diag(lambda_f) U_f^T) (Phi x V^T); off it, sigma_c^2 I for every window."""
        length = self.lag_cov.shape[1] if length is None else length
        phi, vectors, lam = (v.double() for v in self._basis(label, length, torch.device("cpu")))
        basis = self.seq_basis.double().cpu()
        blocks = basis @ vectors @ torch.diag_embed(lam) @ vectors.transpose(-1, -2) @ basis.T  # (f, D, D)
        blocks += float(self.resid_var[label]) * (torch.eye(self.latent_dim, dtype=torch.float64) - basis @ basis.T)
        cov = torch.einsum("fi,fde,fj->idje", phi, blocks, phi)
        return cov.reshape(length * self.latent_dim, length * self.latent_dim)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """x = (z - mu) / sigma per dimension: what the network sees."""
        return (z - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """z = x sigma + mu: back to the VAE's latent space."""
        return x * self.std + self.mean

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Predicted noise for normalised x_t (B, L, D) at timesteps t (B,) and labels (B,):
        eps = skip(x_t, t, label) + F(x_t, t, label), the network F learning the residual."""
        return self.skip(x_t, t, label) + self.denoiser(x_t, t, label)

    def skip(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] were x0 ~ N(m, diag s^2): sqrt(1 - ab_t) (x_t - sqrt(ab_t) m) / (ab_t s^2 + 1 - ab_t),
        with (m, s^2) the label's Gaussian ("composer" skip) or (0, 1) ("gaussian": sqrt(1 - ab_t) x_t)."""
        ab = self.alphas_cumprod[t][:, None, None]  # float32: 1 - ab_t is lost in bf16 at small t
        if self.sequence_skip:
            return self._sequence_skip(x_t, ab, label)
        if not self.composer_skip:
            return ((1.0 - ab).sqrt() * x_t).to(x_t.dtype)
        mean, var = self.class_mean[label][:, None, :], self.class_var[label][:, None, :]
        return ((1.0 - ab).sqrt() * (x_t - ab.sqrt() * mean) / (ab * var + 1.0 - ab)).to(x_t.dtype)

    def _sequence_skip(self, x_t: torch.Tensor, ab: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] were the whole sequence x0 ~ N(m_c, Sigma_c) (m_c repeated over the windows, Sigma_c
        `sequence_covariance(c)`): sqrt(1 - ab_t) (ab_t Sigma_c + (1 - ab_t) I)^{-1} (x_t - sqrt(ab_t) m_c),
        applied in V's span as Phi^T U diag(1 / (ab_t lambda + 1 - ab_t)) U^T Phi per frequency (`_basis`)
        and off it as 1 / (ab_t sigma_c^2 + 1 - ab_t): the noise is N(0, I) in any orthonormal basis."""
        with torch.autocast(x_t.device.type, enabled=False):  # float32 products, whatever autocast is on
            v = x_t.float() - ab.sqrt() * self.class_mean[label][:, None, :]
            inside = v @ self.seq_basis  # (B, L, P): coordinates in V's span
            out = (v - inside @ self.seq_basis.T) / (ab * self.resid_var[label][:, None, None] + 1.0 - ab)
            for c in label.unique().tolist():
                rows = label == c
                phi, vectors, lam = self._basis(c, x_t.shape[1], x_t.device)
                a = ab[rows].reshape(1, -1, 1)
                coords = torch.bmm((phi @ inside[rows]).transpose(0, 1), vectors)  # (f, b, e): U_f^T Phi V^T v
                coords = coords / (a * lam[:, None, :] + 1.0 - a)
                back = torch.bmm(coords, vectors.transpose(1, 2)).transpose(0, 1)  # (b, f, P)
                out[rows] += (phi.T @ back) @ self.seq_basis.T
            return ((1.0 - ab).sqrt() * out).to(x_t.dtype)

    def drop_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Each label replaced by the null token with probability p_uncond (batch-split invariant)."""
        drop = distributed.rand(label.shape, device=label.device) < self.p_uncond
        return torch.where(drop, torch.full_like(label, self.null), label)

    def loss(
        self, x0: torch.Tensor, label: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """|| eps - eps_theta(x_t, t, label) ||^2 averaged, x_t = q(x_t | x0) with the given noise
        (`weighted_loss`'s plain part)."""
        return self.weighted_loss(x0, label, t, noise)[1]

    def weighted_loss(
        self, x0: torch.Tensor, label: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the training objective: mean over the batch of w(t) times each sequence's epsilon-MSE,
        the plain epsilon-MSE of the same batch); w is all ones when min_snr is 0."""
        per = ((self(add_noise(self.alphas_cumprod, x0, noise, t), t, label) - noise) ** 2).mean(dim=(1, 2))
        return (self.loss_weight[t] * per).mean(), per.mean()

    def training_loss(
        self, batch: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The (min-SNR weighted) DDPM loss on a packed batch (B, K, D + 1) (`pack`), labels dropped
        to the null token with probability p_uncond; logs the plain epsilon-MSE and the share of
        null labels."""
        z, label = unpack(batch, self.latent_dim)
        x0 = self.normalise(z)
        used = self.drop_labels(label)
        t = distributed.randint(self.timesteps, (x0.shape[0],), device=x0.device)
        noise = distributed.randn_like(x0)
        loss, mse = self.weighted_loss(x0, used, t, noise)
        return loss, {"mse": mse.detach(), "uncond": (used == self.null).float().mean().detach()}


def pack(latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, K, D) latents and (N,) integer labels -> one float array (N, K, D + 1), the label
    repeated in the last channel of every token (exact in float32 for labels < 2^24)."""
    labels = torch.as_tensor(labels, dtype=latents.dtype, device=latents.device)
    return torch.cat((latents, labels[:, None, None].expand(-1, latents.shape[1], 1)), dim=-1)


def unpack(batch: torch.Tensor, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `pack`: (latents (B, K, D), labels (B,) long)."""
    if batch.dim() != 3 or batch.shape[-1] != latent_dim + 1:
        raise ValueError(f"expected a packed batch (B, K, {latent_dim + 1}), got {tuple(batch.shape)}")
    return batch[..., :latent_dim].float(), batch[:, 0, latent_dim].round().long()


class Guided(nn.Module):
    """eps(x_t, t) of a LatentDiffusion for one composer (or none) with guidance weight W, so the
    samplers' loop (`midilib.diffusion.sampling.denoise`) runs it like any denoiser.

    `label` None: eps(x, t, null). Otherwise one batched call on [x; x] with labels
    [label; null] gives eps_c and eps_u, and eps = eps_u + W (eps_c - eps_u).
    """

    def __init__(self, model: LatentDiffusion, label: int | None, guidance: float = 1.0) -> None:
        super().__init__()
        if label is not None and not 0 <= label < model.null:
            raise ValueError(f"label must be in 0..{model.null - 1} (or None), got {label}")
        if not guidance >= 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.model = model
        self.label = label
        self.guidance = float(guidance)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        null = torch.full((b,), self.model.null, dtype=torch.long, device=x_t.device)
        if self.label is None:
            return self.model(x_t, t, null)
        label = torch.full_like(null, self.label)
        eps_c, eps_u = self.model(torch.cat((x_t, x_t)), torch.cat((t, t)), torch.cat((label, null))).chunk(2)
        return eps_u + self.guidance * (eps_c - eps_u)


class SequenceStats(NamedTuple):
    """The "sequence" skip's Gaussians, over normalised latents: `mean` (classes, D) per composer label;
    `basis` V (D, P), orthonormal columns, the span in which windows are correlated; lag covariances
    C(l), l = 0..K-1, in V's coordinates, `within` (classes, K, P, P) per label and `around` (K, P, P)
    for the null token (mean 0); `resid` (classes + 1,) each label's variance off V's span, the
    null token's last (`midilib.latent.sequence_stats`)."""

    mean: np.ndarray
    basis: np.ndarray
    within: np.ndarray
    around: np.ndarray
    resid: np.ndarray


def dct_matrix(length: int) -> torch.Tensor:
    """The orthonormal DCT-II (L, L), float64: Phi[f, k] = sqrt(2 / L) c_f cos(pi (2 k + 1) f / (2 L)),
    c_0 = 1 / sqrt(2), else 1 (scipy.fft.dct(..., norm="ortho") as a matrix; Phi Phi^T = I)."""
    k = torch.arange(length, dtype=torch.float64)
    phi = (2.0 / length) ** 0.5 * torch.cos(torch.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * length))
    phi[0] /= 2**0.5
    return phi


def build_latent_diffusion(cfg: LatentConfig, latent_dim: int, classes: int) -> LatentDiffusion:
    """A LatentDiffusion sized by `cfg` over D = `latent_dim` with `classes` composer labels."""
    if cfg.windows < 1 or latent_dim < 1 or classes < 1:
        raise ValueError(f"need windows, latent_dim and classes >= 1, got {cfg.windows}, {latent_dim}, {classes}")
    betas = torch.from_numpy(make_betas(cfg.schedule, cfg.timesteps))
    return LatentDiffusion(LatentDenoiser(cfg, latent_dim, classes), betas, cfg.p_uncond, cfg.skip, cfg.min_snr,
                           cfg.sequence_rank)
