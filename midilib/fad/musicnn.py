"""musicnn (Pons & Serra, 2019) in PyTorch, loading the original TF checkpoints.

The network reads 3-s patches of a 96-band log-mel spectrogram (16 kHz, n_fft
512, hop 256, log10(10000 * mel + 1), 187 frames). Front end: vertical
"timbral" convolutions spanning 40 % / 70 % of the mel axis and horizontal
"temporal" ones of 128/64/32 frames, each max-pooled over frequency. Mid end:
three 7-frame 1-D convolutions with residual connections, densely concatenated
with the front end. Back end: max and mean over time, then a 200-unit dense
layer whose batch-normalised output ("penultimate") is the FAD embedding.
TF batch norm (epsilon 1e-3, moving statistics) is reproduced in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from midilib.fad.mel import melspectrogram
from midilib.fad.tfcheckpoint import read_checkpoint
from midilib.fad.weights import weight_path

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH_FRAMES = 187  # 3 s, as librosa.time_to_frames(3, ...) + 1 in musicnn's extractor
MODELS = ("MSD_musicnn", "MTT_musicnn")
_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default


def logmel(audio: np.ndarray) -> np.ndarray:
    """Mono 16-kHz audio -> (frames, 96) float32 log-compressed mel spectrogram."""
    return np.log10(10000.0 * melspectrogram(audio, SAMPLE_RATE, N_FFT, HOP, N_MELS) + 1.0)


def patches(audio: np.ndarray) -> np.ndarray:
    """Non-overlapping 3-s log-mel patches (p, 187, 96); a clip under 3 s is padded with silence.

    Like musicnn's extractor, trailing frames that do not fill a patch are dropped.
    """
    audio = np.asarray(audio, dtype=np.float32)
    min_len = (PATCH_FRAMES - 1) * HOP
    if len(audio) < min_len:
        audio = np.pad(audio, (0, min_len - len(audio)))
    spec = logmel(audio)
    n = len(spec) // PATCH_FRAMES
    return spec[: n * PATCH_FRAMES].reshape(n, PATCH_FRAMES, N_MELS)


def _bn(channels: int, dims: int = 1) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, eps=_BN_EPS)


class MusiCNN(nn.Module):
    """The musicnn tagger; `forward` gives the 200-d penultimate embedding of each patch."""

    def __init__(self, n_mels: int = N_MELS, n_classes: int = 50, midend: int = 64,
                 backend: int = 200) -> None:
        super().__init__()
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)  # musicnn's num_filt = 1.6
        self.input_bn = _bn(1, 2)
        self.timbral = nn.ModuleList(
            nn.Conv2d(1, timbral, (7, int(f * n_mels))) for f in (0.4, 0.7))
        self.timbral_bn = nn.ModuleList(_bn(timbral, 2) for _ in range(2))
        self.temporal = nn.ModuleList(nn.Conv2d(1, temporal, (k, 1)) for k in (128, 64, 32))
        self.temporal_bn = nn.ModuleList(_bn(temporal, 2) for _ in range(3))
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList(
            nn.Conv1d(c, midend, 7, padding=3) for c in (front, midend, midend))
        self.mid_bn = nn.ModuleList(_bn(midend) for _ in range(3))
        pooled = 2 * (front + 3 * midend)  # max and mean of every channel
        self.pool_bn = _bn(pooled)
        self.dense = nn.Linear(pooled, backend)
        self.dense_bn = _bn(backend)
        self.logits = nn.Linear(backend, n_classes)

    def _block(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        """max over frequency of bn(relu(conv(x))) -> (B, C, T).

        In eval mode batch norm is a per-channel affine a*r + b, so its max over
        frequency is a*relu(max z) + b where a >= 0 and a*relu(min z) + b where
        a < 0: pooling before the affine skips two passes over the largest maps
        (~30 % of the network's time), with the same result.
        """
        z = conv(x)
        if self.training:
            return bn(F.relu(z)).amax(dim=3)
        lo, hi = torch.aminmax(z, dim=3)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        picked = torch.where(scale[:, None] >= 0, F.relu(hi), F.relu(lo))
        return picked * scale[:, None] + shift[:, None]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel patches (B, T, n_mels) -> penultimate embeddings (B, 200)."""
        x = self.input_bn(x.unsqueeze(1))  # (B, 1, T, F)
        front = []
        for conv, bn in zip(self.timbral, self.timbral_bn, strict=True):
            front.append(self._block(conv, bn, F.pad(x, (0, 0, 3, 3))))  # 'same' in time only
        for conv, bn in zip(self.temporal, self.temporal_bn, strict=True):
            k = conv.kernel_size[0]
            front.append(self._block(conv, bn, F.pad(x, (0, 0, (k - 1) // 2, k // 2))))  # TF 'same'
        h = torch.cat(front, dim=1)  # (B, 561, T)
        levels = [h]
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn, strict=True)):
            y = bn(F.relu(conv(levels[-1])))
            levels.append(y if i == 0 else y + levels[-1])
        h = torch.cat(levels, dim=1)  # (B, 753, T)
        pooled = torch.stack([h.amax(dim=2), h.mean(dim=2)], dim=2).flatten(1)  # TF's order
        return self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def tags(self, x: torch.Tensor) -> torch.Tensor:
        """Tag probabilities (B, 50), as musicnn's taggram."""
        return torch.sigmoid(self.logits(self.features(x)))

    def load_tf_variables(self, variables: dict[str, np.ndarray]) -> None:
        """Copy the checkpoint's variables, named by TF's layer creation order, into the modules."""

        def conv(name: str) -> torch.Tensor:  # TF (kh, kw, in, out) -> torch (out, in, kh, kw)
            return torch.from_numpy(variables[f"{name}/kernel"]).permute(3, 2, 0, 1)

        convs = [*self.timbral, *self.temporal]
        for i, module in enumerate(convs):
            module.weight.data.copy_(conv(f"conv2d{'_' + str(i) if i else ''}"))
            module.bias.data.copy_(torch.from_numpy(variables[f"conv2d{'_' + str(i) if i else ''}/bias"]))
        for i, module in enumerate(self.mid, start=len(convs)):
            # TF convolves (T, C, 1) maps with a (7, C) kernel: a Conv1d over C channels
            module.weight.data.copy_(conv(f"conv2d_{i}").squeeze(1).permute(0, 2, 1))
            module.bias.data.copy_(torch.from_numpy(variables[f"conv2d_{i}/bias"]))
        bns = [self.input_bn, *self.timbral_bn, *self.temporal_bn, *self.mid_bn, self.pool_bn,
               self.dense_bn]
        for i, bn in enumerate(bns):
            prefix = f"batch_normalization{'_' + str(i) if i else ''}"
            bn.weight.data.copy_(torch.from_numpy(variables[f"{prefix}/gamma"]))
            bn.bias.data.copy_(torch.from_numpy(variables[f"{prefix}/beta"]))
            bn.running_mean.copy_(torch.from_numpy(variables[f"{prefix}/moving_mean"]))
            bn.running_var.copy_(torch.from_numpy(variables[f"{prefix}/moving_variance"]))
        for module, name in ((self.dense, "dense"), (self.logits, "dense_1")):
            module.weight.data.copy_(torch.from_numpy(variables[f"{name}/kernel"]).T)
            module.bias.data.copy_(torch.from_numpy(variables[f"{name}/bias"]))


def load_musicnn(model: str = "MSD_musicnn") -> MusiCNN:
    """The pretrained network in eval mode, from data/weights/musicnn (see weights.py)."""
    if model not in MODELS:
        raise ValueError(f"unknown musicnn model {model!r}; choose one of {', '.join(MODELS)}")
    prefix = weight_path("musicnn", f"{model}.index").with_suffix("")
    net = MusiCNN()
    net.load_tf_variables(read_checkpoint(prefix))
    return net.eval()


@torch.no_grad()
def embed_clips(
    clips: list[np.ndarray], net: MusiCNN, batch_size: int = 64
) -> list[np.ndarray]:
    """16-kHz clips -> per clip its (patches, 200) float32 embeddings, batched over all clips."""
    per_clip = [patches(c) for c in clips]
    if not per_clip:
        return []
    stacked = np.concatenate(per_clip)
    out = [net(torch.from_numpy(stacked[i : i + batch_size])).numpy()
           for i in range(0, len(stacked), batch_size)]
    flat = np.concatenate(out) if out else np.zeros((0, net.dense.out_features), np.float32)
    return np.split(flat, np.cumsum([len(p) for p in per_clip])[:-1])
