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


def all_pitches_windows() -> np.ndarray:
    """Every pitch 0..127 with every velocity/delta/duration of a small grid -> (128, 36, 4)."""
    grid = np.stack(np.meshgrid([0, 1 / 127, 0.5, 1], [0, 0.001, 2], [0, 0.05, 2]), -1)
    values = np.broadcast_to(grid.reshape(-1, 3), (128, 36, 3))
    pitches = np.broadcast_to(np.arange(128.0)[:, None, None], (128, 36, 1))
    return np.concatenate([pitches, values], -1).astype(np.float32)


def test_fifths_round_trip_is_exact_for_every_pitch_numpy_and_torch() -> None:
    codec = DiffusionCodec(pitch_code="fifths")
    assert codec.channels == 6 and DiffusionCodec().channels == 4
    for w in (all_pitches_windows(), all_pitches_windows().reshape(4, 32, 36, 4)):
        x = codec.encode(w)
        assert x.dtype == np.float32 and x.shape == w.shape[:-1] + (6,)
        assert x.min() >= -1.0 and x.max() <= 1.0
        # The first four channels are the linear code, the last two a unit vector.
        np.testing.assert_array_equal(x[..., :4], DiffusionCodec().encode(w))
        np.testing.assert_allclose(np.hypot(x[..., 4], x[..., 5]), 1.0, atol=1e-6)
        back = codec.decode(x)
        np.testing.assert_array_equal(back[..., 0], w[..., 0])
        np.testing.assert_allclose(back[..., 1:], w[..., 1:], rtol=1e-5, atol=1e-6)
        xt = codec.encode(torch.from_numpy(w))
        assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32
        np.testing.assert_allclose(xt.numpy(), x, atol=1e-6)
        back_t = codec.decode(xt)
        np.testing.assert_array_equal(back_t[..., 0].numpy(), w[..., 0])
        np.testing.assert_allclose(back_t.numpy(), w, rtol=1e-5, atol=1e-6)


def test_fifths_round_trip_real_windows() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus {CORPUS} absent")
    w = np.concatenate([to_windows(read_events(p)) for p in sorted(CORPUS.glob("*.mid"))[:4]])
    back = DiffusionCodec(pitch_code="fifths").decode(DiffusionCodec(pitch_code="fifths").encode(w))
    np.testing.assert_array_equal(back[..., 0], w[..., 0])
    np.testing.assert_allclose(back[..., 1:], w[..., 1:], rtol=1e-5, atol=1e-6)


def test_a_diatonic_scale_is_an_arc_of_the_circle_of_fifths() -> None:
    codec = DiffusionCodec(pitch_code="fifths")
    w = np.zeros((12, 4), dtype=np.float32)
    w[:, 0] = 60 + np.arange(12)
    angles = np.degrees(np.arctan2(codec.encode(w)[:, 5], codec.encode(w)[:, 4])) % 360
    steps = np.round(angles / 30).astype(int) % 12
    assert steps[0] == 0 and steps[7] == 1  # C at 0 degrees, G a fifth up at 30
    c_major = sorted(steps[[0, 2, 4, 5, 7, 9, 11]])
    assert c_major == [0, 1, 2, 3, 4, 5, 11]  # F C G D A E B: 7 adjacent points
    assert sorted(steps) == list(range(12))


def test_fifths_decodes_any_vector_to_the_nearest_circle_class() -> None:
    codec = DiffusionCodec(pitch_code="fifths")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 6)) * 1.5).astype(np.float32)
    x[:50, 4:] = 0.0  # no direction at all
    pitch = codec.decode(x)[:, 0]
    assert (pitch == np.round(pitch)).all() and pitch.min() >= 0 and pitch.max() <= 127
    # Reference: the class whose circle angle is nearest to the vector's angle.
    angle = np.arctan2(x[:, 5], x[:, 4])
    circle = 2 * np.pi * ((7 * np.arange(12)) % 12) / 12
    gap = np.abs(np.angle(np.exp(1j * (angle[:, None] - circle[None]))))
    want_pc = np.where(np.hypot(x[:, 4], x[:, 5]) == 0, 0, gap.argmin(1))
    np.testing.assert_array_equal(pitch % 12, want_pc)
    # The pitch of that class nearest to the decoded height, among those in 0..127.
    height = (x[:, 0] + 1) * 63.5
    candidates = want_pc[:, None] + 12 * np.arange(11)[None]
    distance = np.where(candidates <= 127, np.abs(candidates - height[:, None]), np.inf)
    np.testing.assert_array_equal(pitch, candidates[np.arange(len(x)), distance.argmin(1)])
    np.testing.assert_array_equal(codec.decode(torch.from_numpy(x))[:, 0].numpy(), pitch)


def test_pitch_code_is_checked_and_shown() -> None:
    with pytest.raises(ValueError, match=r"pitch_code 'chroma'.*linear, fifths"):
        DiffusionCodec(pitch_code="chroma")
    assert "pitch_code='fifths'" in repr(DiffusionCodec(pitch_code="fifths"))
    with pytest.raises(ValueError, match="expected 6 channels"):
        DiffusionCodec(pitch_code="fifths").decode(np.zeros((2, 4), dtype=np.float32))
