"""Both denoisers: sizes, shapes, time conditioning, and that they learn on a tiny batch."""

from dataclasses import replace

import pytest
import torch

from midilib.diffusion.model import DiffusionModel, build_diffusion
from midilib.diffusion.representation import DiffusionCodec
from midilib.models.denoisers import (
    LSTMDenoiser,
    TransformerDenoiser,
    build_denoiser,
    timestep_embedding,
)
from midilib.profiles import DiffusionConfig, get_profile
from midilib.runs import count_parameters

TINY = DiffusionConfig(
    timesteps=50,
    lstm_time_embed=12,
    lstm_hidden=16,
    lstm_layers=2,
    lstm_bottleneck=8,
    lstm_dropout=0.0,
    tf_width=32,
    tf_layers=2,
    tf_heads=4,
)






def test_lstm_at_full_has_the_originals_parameter_count() -> None:
    cfg = replace(get_profile("full").diffusion, denoiser="lstm")
    assert (cfg.lstm_time_embed, cfg.lstm_hidden, cfg.lstm_layers) == (128, 128, 4)
    assert (cfg.lstm_bottleneck, cfg.timesteps) == (64, 1000)
    model = build_denoiser(cfg)
    assert isinstance(model, LSTMDenoiser)
    assert count_parameters(model) == 2_015_560


def test_time_projection_only_when_sizes_differ() -> None:
    same = LSTMDenoiser(10, time_embed=16, hidden=16, layers=1, bottleneck=4)
    other = LSTMDenoiser(10, time_embed=8, hidden=16, layers=1, bottleneck=4)
    assert count_parameters(other) - count_parameters(same) == (8 * 16 + 16) - (10 * 8)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_shapes_and_time_dependence(kind: str) -> None:
    torch.manual_seed(0)
    model = build_denoiser(replace(TINY, denoiser=kind)).eval()
    if kind == "transformer":  # adaLN-Zero starts t-blind; give the gates a nudge
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(5, 8, 4)
    eps = model(x, torch.zeros(5, dtype=torch.long))
    assert eps.shape == (5, 8, 4) and eps.dtype == torch.float32
    assert torch.isfinite(eps).all()
    later = model(x, torch.full((5,), 40, dtype=torch.long))
    assert not torch.allclose(eps, later), "the output must depend on t"
    # The noise of one note depends on other notes too.
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(model(y, torch.zeros(5, dtype=torch.long))[:, 0], eps[:, 0])


# kind -> (config changes, Adam lr, steps, required loss ratio after/before). The LSTM's
# autoregressive decoder must squeeze the window through its bottleneck and learns slowly.
LEARN = {
    "lstm": (
        dict(lstm_hidden=32, lstm_time_embed=16, lstm_layers=1, lstm_bottleneck=16),
        1e-2,
        80,
        0.9,
    ),
    "transformer": ({}, 3e-3, 40, 0.5),
}


@pytest.mark.parametrize("kind", sorted(LEARN))
def test_a_few_steps_reduce_the_loss(kind: str) -> None:
    changes, lr, steps, ratio = LEARN[kind]
    torch.manual_seed(0)
    model = build_diffusion(replace(TINY, denoiser=kind, **changes))
    scale, offset = torch.tensor([40.0, 1.0, 0.5, 1.0]), torch.tensor([40.0, 0, 0, 0])
    batch = torch.rand(64, 8, 4) * scale + offset
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def mean_loss() -> float:
        torch.manual_seed(123)  # the same t and noise at every evaluation
        with torch.no_grad():
            return sum(model.training_loss(batch, 0)[0].item() for _ in range(8)) / 8

    before = mean_loss()
    torch.manual_seed(1)
    for _ in range(steps):
        loss, logs = model.training_loss(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) == {"mse"} and logs["mse"].ndim == 0 and not logs["mse"].requires_grad
    after = mean_loss()
    assert after < ratio * before, (before, after)


def test_training_loss_is_deterministic_given_the_seed() -> None:
    model = build_diffusion(TINY)
    batch = torch.rand(8, 8, 4)
    torch.manual_seed(3)
    a = model.training_loss(batch, 0)[0]
    torch.manual_seed(3)
    b = model.training_loss(batch, 0)[0]
    assert a.item() == b.item()


def test_model_holds_schedule_and_codec() -> None:
    model = build_diffusion(replace(TINY, schedule="linear"), s_max=3.0)
    assert model.timesteps == 50 and model.betas.dtype == torch.float32
    assert isinstance(model.codec, DiffusionCodec) and model.codec.s_max == 3.0
    assert "betas" in model.state_dict()


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="unknown denoiser 'unet'"):
        build_denoiser(replace(TINY, denoiser="unet"))
    with pytest.raises(ValueError, match="unknown noise schedule"):
        build_diffusion(replace(TINY, schedule="quadratic"))
    with pytest.raises(ValueError, match="heads"):
        TransformerDenoiser(width=30, heads=4)
    with pytest.raises(ValueError, match="expected a batch"):
        build_diffusion(TINY).training_loss(torch.zeros(2, 7, 4), 0)
    with pytest.raises(ValueError, match="betas"):
        DiffusionModel(torch.nn.Identity(), torch.tensor([0.1, 1.5]))


def test_timestep_embedding() -> None:
    e = timestep_embedding(torch.tensor([0, 1, 999]), 9)
    assert e.shape == (3, 9)
    assert torch.allclose(e[0, :4], torch.ones(4)) and e[0, 4:].abs().max() == 0
