"""The diffusion codec: exact inverse, full range representable, everything inside [-1, 1]."""

from pathlib import Path

import numpy as np
import pytest
import torch

from midilib.diffusion.representation import DiffusionCodec
from midilib.events import read_events, to_windows

CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/giantmidi-sample"


def synthetic_windows(n: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.empty((n, 8, 4), dtype=np.float32)
    w[..., 0] = rng.integers(0, 128, (n, 8))
    w[..., 1] = rng.integers(1, 128, (n, 8)) / 127.0
    w[..., 2] = np.where(rng.random((n, 8)) < 0.3, 0.0, rng.exponential(0.1, (n, 8)).clip(0, 2))
    w[..., 3] = rng.exponential(0.4, (n, 8)).clip(0, 2)
    return w


def check_round_trip(codec: DiffusionCodec, w: np.ndarray) -> None:
    x = codec.encode(w)
    assert x.dtype == np.float32 and x.shape == w.shape
    assert x.min() >= -1.0 and x.max() <= 1.0
    back = codec.decode(x)
    np.testing.assert_array_equal(back[..., 0], w[..., 0])  # pitch exact
    np.testing.assert_allclose(back[..., 1:], w[..., 1:], rtol=1e-5, atol=1e-6)


def test_round_trip_synthetic_numpy_and_torch() -> None:
    codec = DiffusionCodec()
    w = synthetic_windows()
    check_round_trip(codec, w)
    xt = codec.encode(torch.from_numpy(w))
    assert isinstance(xt, torch.Tensor)
    np.testing.assert_allclose(xt.numpy(), codec.encode(w), atol=1e-6)
    back = codec.decode(xt)
    assert isinstance(back, torch.Tensor)
    np.testing.assert_array_equal(back[..., 0].numpy(), w[..., 0])
    np.testing.assert_allclose(back.numpy(), w, rtol=1e-5, atol=1e-6)


def test_round_trip_real_windows() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus {CORPUS} absent")
    files = sorted(CORPUS.glob("*.mid"))[:4]
    w = np.concatenate([to_windows(read_events(p)) for p in files])
    check_round_trip(DiffusionCodec(), w)


def test_range_ends_are_representable() -> None:
    codec = DiffusionCodec(s_max=2.0, d_max=3.0)
    ends = np.array([[0, 0, 0, 0], [127, 1, 2, 3]], dtype=np.float32)
    np.testing.assert_array_equal(codec.encode(ends), [[-1, -1, -1, -1], [1, 1, 1, 1]])
    np.testing.assert_allclose(codec.decode(codec.encode(ends)), ends, atol=1e-6)
    # Chords: a zero delta survives exactly and is distinct from a 1 ms delta.
    chord = np.array([[60, 0.5, 0.0, 0.1], [64, 0.5, 0.001, 0.1]], dtype=np.float32)
    back = codec.decode(codec.encode(chord))
    assert back[0, 2] == 0.0 and back[1, 2] > 0.0


def test_decode_clips_and_rounds() -> None:
    codec = DiffusionCodec()
    x = np.array([[3.0, -2.0, 1.5, -1.5], [(60.4 / 63.5) - 1, 0.0, 0.0, 0.0]], dtype=np.float32)
    w = codec.decode(x)
    np.testing.assert_allclose(w[0], [127, 0, 2, 0])
    assert w[1, 0] == 60.0  # rounded, not truncated
    x = np.array([[(60.6 / 63.5) - 1, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert codec.decode(x)[0, 0] == 61.0


def test_encode_clips_out_of_range_input_into_the_box() -> None:
    w = np.array([[200, 1.5, 5.0, -1.0]], dtype=np.float32)
    x = DiffusionCodec().encode(w)
    np.testing.assert_array_equal(x, [[1, 1, 1, -1]])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tau"):
        DiffusionCodec(tau=0)
    with pytest.raises(ValueError, match="4 columns"):
        DiffusionCodec().encode(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        DiffusionCodec().encode([[0, 0, 0, 0]])
