"""Sampling and continuation: determinism given a seed, shapes and ranges, known notes kept."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from midilib.diffusion.model import build_diffusion
from midilib.diffusion.sampling import continue_piece, continue_pieces, make_scheduler, sample
from midilib.events import events_to_midi
from midilib.profiles import DiffusionConfig

CFG = DiffusionConfig(timesteps=40, tf_width=32, tf_layers=1, tf_heads=2)




@pytest.fixture(params=["transformer", "lstm"])
def model(request):
    torch.manual_seed(0)
    m = build_diffusion(
        replace(CFG, denoiser=request.param, lstm_hidden=16, lstm_time_embed=16, lstm_layers=1)
    )
    for p in m.parameters():  # an untrained but not trivially zero denoiser
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.1)
    return m


def check_events(ev: np.ndarray) -> None:
    assert ev.dtype == np.float32 and np.isfinite(ev).all()
    assert (ev[..., 0] == np.round(ev[..., 0])).all()
    assert ev[..., 0].min() >= 0 and ev[..., 0].max() <= 127
    assert ev[..., 1].min() >= 0 and ev[..., 1].max() <= 1
    assert ev[..., 2].min() >= 0 and ev[..., 2].max() <= 2
    assert ev[..., 3].min() >= 0 and ev[..., 3].max() <= 2


@pytest.mark.parametrize(
    "kind,steps,eta", [("ddpm", None, 0.0), ("ddim", 10, 0.0), ("ddim", 8, 1.0), ("dpmsolver", 10, 0.0)]
)
def test_sample_is_deterministic_given_the_seed(model, kind, steps, eta) -> None:
    sched = make_scheduler(model, kind, steps, eta=eta)
    model.train()  # as mid-training: sampling runs in eval mode and gives the mode back
    a = sample(model, sched, 10, batch_size=4, seed=3, progress=False)
    assert model.training
    assert a.shape == (10, 8, 4)
    check_events(a)
    torch.manual_seed(99)  # the global RNG must not matter
    b = sample(model, sched, 10, batch_size=4, seed=3, progress=False)
    np.testing.assert_array_equal(a, b)
    c = sample(model, sched, 10, batch_size=4, seed=4, progress=False)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["ddim", "dpmsolver"])
def test_deterministic_samplers_depend_only_on_the_start_noise(model, kind) -> None:
    """Deterministic DDIM and DPM-Solver++ (whose multistep state restarts with every batch):
    the batch split must not change a window."""
    sched = make_scheduler(model, kind, 5)
    whole = sample(model, sched, 6, batch_size=6, seed=0, progress=False)
    split = sample(model, sched, 6, batch_size=3, seed=0, progress=False)
    np.testing.assert_allclose(whole, split, atol=1e-5)


def test_continue_piece_keeps_context_and_is_playable(model) -> None:
    rng = np.random.default_rng(0)
    context = np.stack(
        [rng.integers(40, 80, 10), rng.random(10), rng.random(10) * 0.3, rng.random(10)], -1
    ).astype(np.float32)
    sched = make_scheduler(model, "ddim", 6)
    out = continue_piece(model, sched, context, n_windows=3, n_known=4, seed=1)
    assert out.shape == (10 + 3 * 4, 4)
    np.testing.assert_array_equal(out[:10], context)  # the real notes, bit for bit
    check_events(out[10:])
    again = continue_piece(model, sched, context, n_windows=3, n_known=4, seed=1)
    np.testing.assert_array_equal(out, again)
    assert len(events_to_midi(out).instruments[0].notes) == len(out)


def test_continue_pieces_batches_contexts_and_one_context_is_continue_piece(model) -> None:
    rng = np.random.default_rng(1)
    contexts = np.stack(
        [rng.integers(40, 80, (3, 8)), rng.random((3, 8)), rng.random((3, 8)) * 0.3, rng.random((3, 8))], -1
    ).astype(np.float32)
    sched = make_scheduler(model, "ddim", 5, eta=0.5)
    out = continue_pieces(model, sched, contexts, n_windows=2, n_known=4, seed=2, batch_size=2)
    assert out.shape == (3, 8 + 2 * 4, 4)
    np.testing.assert_array_equal(out[:, :8], contexts)
    check_events(out[:, 8:])
    np.testing.assert_array_equal(out, continue_pieces(model, sched, contexts, 2, 4, seed=2, batch_size=2))
    assert not np.array_equal(out[0, 8:], out[1, 8:])  # each piece has its own noise
    for i in range(3):  # one context at a time: continue_piece's notes, bit for bit
        one = continue_pieces(model, sched, contexts[i:i + 1], 2, 4, seed=2)[0]
        np.testing.assert_array_equal(one, continue_piece(model, sched, contexts[i], 2, 4, seed=2))
    with pytest.raises(ValueError, match="\\(B >= 1, k, 4\\)"):
        continue_pieces(model, sched, contexts[0], 1)


def test_inpainting_pins_the_known_notes(model) -> None:
    """With n_known = 7 the one new note per window is shaped by the 7 known notes."""
    sched = make_scheduler(model, "ddpm", None)
    low = np.tile(np.array([[30, 0.2, 0.1, 0.5]], dtype=np.float32), (7, 1))
    high = np.tile(np.array([[100, 0.9, 0.0, 1.5]], dtype=np.float32), (7, 1))
    a = continue_piece(model, sched, low, n_windows=1, n_known=7, seed=0)
    b = continue_piece(model, sched, high, n_windows=1, n_known=7, seed=0)
    np.testing.assert_array_equal(a[:7], low)
    assert not np.array_equal(a[7:], b[7:])


class Recorder(torch.nn.Module):
    """A stand-in denoiser that predicts zero noise and remembers what it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, torch.Tensor]] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append((int(t[0]), x_t.clone()))
        return torch.zeros_like(x_t)


def test_known_part_is_reset_to_the_noised_known_notes_every_step() -> None:
    model = build_diffusion(CFG)
    model.denoiser = Recorder()
    sched = make_scheduler(model, "ddim", 8)
    context = np.array([[60, 0.5, 0.0, 0.4], [64, 0.6, 0.0, 0.4], [67, 0.7, 0.25, 0.3]], "f4")
    continue_piece(model, sched, context, n_windows=1, n_known=3, seed=0)
    known = model.codec.encode(torch.from_numpy(context))
    ab = model.alphas_cumprod
    assert [t for t, _ in model.denoiser.seen] == sched.timesteps.tolist()
    for t, x_t in model.denoiser.seen:
        noise = (x_t[0, :3] - ab[t].sqrt() * known) / (1 - ab[t]).sqrt()
        # What is left after removing the signal is a unit-Gaussian draw, at every noise level.
        assert noise.abs().max() < 5 and 0.3 < noise.std() < 2.0, t
        assert not torch.allclose(x_t[0, 3:], x_t[0, :3].mean(0))


def test_bad_arguments(model) -> None:
    sched = make_scheduler(model, "ddim", 5)
    ctx = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="n_known"):
        continue_piece(model, sched, ctx, 1, n_known=8)
    with pytest.raises(ValueError, match="at least n_known=4"):
        continue_piece(model, sched, ctx[:2], 1)
    with pytest.raises(ValueError, match="\\(k, 4\\)"):
        continue_piece(model, sched, np.zeros((4, 3)), 1)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler(model, "euler")
    other = build_diffusion(replace(CFG, timesteps=30))
    with pytest.raises(ValueError, match="training timesteps"):
        sample(model, make_scheduler(other, "ddim", 5), 2, progress=False)
    with pytest.raises(ValueError, match=">= 1"):
        sample(model, sched, 0, progress=False)


@pytest.fixture(params=["transformer", "lstm"])
def fifths_model(request):
    torch.manual_seed(0)
    m = build_diffusion(replace(
        CFG, denoiser=request.param, pitch_code="fifths", lstm_hidden=16, lstm_time_embed=16,
        lstm_layers=1,
    ))
    for p in m.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.1)
    return m


@pytest.mark.parametrize("kind,steps", [("ddpm", None), ("ddim", 10), ("dpmsolver", 10)])
def test_fifths_model_generates_valid_windows(fifths_model, kind, steps) -> None:
    assert fifths_model.codec.channels == 6
    sched = make_scheduler(fifths_model, kind, steps)
    a = sample(fifths_model, sched, 6, batch_size=4, seed=1, progress=False)
    assert a.shape == (6, 8, 4)
    check_events(a)
    np.testing.assert_array_equal(a, sample(fifths_model, sched, 6, batch_size=4, seed=1,
                                            progress=False))


def test_fifths_model_continues_a_piece(fifths_model) -> None:
    context = np.array([[60, 0.5, 0.0, 0.4], [64, 0.6, 0.1, 0.4], [67, 0.7, 0.25, 0.3],
                        [72, 0.4, 0.2, 0.5]], dtype=np.float32)
    out = continue_piece(fifths_model, make_scheduler(fifths_model, "ddim", 5), context, 2)
    assert out.shape == (4 + 2 * 4, 4)
    np.testing.assert_array_equal(out[:4], context)
    check_events(out[4:])
