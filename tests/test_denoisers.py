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


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_channels_set_the_input_and_output_size(kind: str) -> None:
    cfg = replace(TINY, denoiser=kind)
    four, six = build_denoiser(cfg), build_denoiser(cfg, channels=6)
    assert six(torch.randn(3, 8, 6), torch.zeros(3, dtype=torch.long)).shape == (3, 8, 6)
    # Only the layers that read or write a note grow.
    h = cfg.lstm_hidden
    extra = 2 * (2 * 4 * h + 4 * h + 1 + h + 1) if kind == "lstm" else 2 * (2 * cfg.tf_width + 1)
    assert count_parameters(six) - count_parameters(four) == extra


def test_fifths_model_has_six_channels_and_trains_a_step() -> None:
    torch.manual_seed(0)
    model = build_diffusion(replace(TINY, pitch_code="fifths"))
    assert model.codec.pitch_code == "fifths" and model.codec.channels == 6
    assert model.denoiser.embed.in_features == 6 and model.denoiser.head.out_features == 6
    batch = torch.rand(16, 8, 4) * torch.tensor([127.0, 1, 2, 2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss, _ = model.training_loss(batch, 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown pitch_code"):
        build_diffusion(replace(TINY, pitch_code="chroma"))


def test_linear_checkpoints_load_into_todays_model() -> None:
    """A model built before pitch_code existed has the same state dict (4 channels)."""
    old = build_diffusion(TINY)
    fields = {k: v for k, v in vars(TINY).items() if k != "pitch_code"}
    new = build_diffusion(DiffusionConfig(**fields))
    assert new.codec.channels == 4
    new.load_state_dict(old.state_dict())
    assert {k: v.shape for k, v in new.state_dict().items()} == {
        k: v.shape for k, v in old.state_dict().items()
    }


@pytest.mark.parametrize("pitch_code", ["linear", "fifths"])
def test_training_loss_noises_with_the_schedulers_add_noise(monkeypatch, pitch_code: str) -> None:
    """The model owns no copy of q(x_t | x0): training noises through schedulers.add_noise."""
    import midilib.diffusion.model as model_module
    from midilib.diffusion import schedulers

    model = build_diffusion(replace(TINY, pitch_code=pitch_code))
    seen = []

    def spy(alphas_cumprod, x0, noise, t):
        seen.append((alphas_cumprod, x0, noise, t))
        return schedulers.add_noise(alphas_cumprod, x0, noise, t)

    monkeypatch.setattr(model_module, "add_noise", spy)
    batch = torch.rand(8, 8, 4) * torch.tensor([127.0, 1, 2, 2])
    torch.manual_seed(5)
    loss = model.training_loss(batch, 0)[0]
    assert len(seen) == 1 and seen[0][0] is model.alphas_cumprod
    # The same numbers by hand, through a DDPMScheduler over the model's betas.
    torch.manual_seed(5)
    x0 = model.codec.encode(batch)
    t = torch.randint(0, model.timesteps, (8,))
    noise = torch.randn_like(x0)
    x_t = schedulers.DDPMScheduler(model.betas).add_noise(x0, noise, t)
    torch.testing.assert_close(seen[0][2], noise, rtol=0, atol=0)
    with torch.no_grad():
        want = torch.nn.functional.mse_loss(model(x_t, t), noise)
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)


def test_schedulers_add_noise_delegates_to_the_shared_function(monkeypatch) -> None:
    from midilib.diffusion import schedulers

    calls = []
    real = schedulers.add_noise
    monkeypatch.setattr(
        schedulers, "add_noise", lambda *args: calls.append(args) or real(*args)
    )
    sched = schedulers.DDIMScheduler(build_diffusion(TINY).betas)
    sched.add_noise(torch.zeros(2, 8, 6), torch.ones(2, 8, 6), torch.tensor([0, 49]))
    assert len(calls) == 1 and calls[0][0] is sched.alphas_cumprod


def test_short_attention_equals_fused_attention():
    import torch.nn.functional as F

    from midilib.models.denoisers import short_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(64, 4, 8, 24, generator=gen) for _ in range(3))
    assert torch.allclose(short_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5)
