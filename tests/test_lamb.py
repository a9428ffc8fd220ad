"""midilib.lamb.Lamb is torch-optimizer's LAMB: the same weights after many steps, state included."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_optimizer
from torch import nn

from midilib.lamb import Lamb


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(16, 6), nn.Flatten(), nn.Linear(18, 32), nn.Tanh(), nn.Linear(32, 5))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    """`steps` optimiser steps on seeded random batches of a toy classification task."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randint(0, 16, (32, 3), generator=gen), torch.randint(0, 5, (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _train(opt_cls, steps: int = 40, **kw) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    opt = opt_cls(model.parameters(), **kw)
    _steps(model, opt, steps, seed=1)
    return model, opt


@pytest.mark.parametrize("kw", [dict(lr=1e-3, weight_decay=1e-4), dict(lr=1e-2, weight_decay=0.0),
                                dict(lr=3e-2, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-8)])
def test_same_weights_as_torch_optimizer(kw: dict) -> None:
    ours, opt = _train(Lamb, **kw)
    theirs, ref = _train(torch_optimizer.Lamb, **kw)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert opt.state[p]["step"] == ref.state[q]["step"] == 40
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"], rtol=1e-5, atol=1e-9)


def test_a_zero_parameter_gets_the_adam_step() -> None:
    """weight norm 0 -> trust ratio 1, as in torch-optimizer (a zero-initialised gate must still learn)."""
    w = nn.Parameter(torch.zeros(4))
    opt = Lamb([w], lr=0.1)
    w.grad = torch.ones(4)
    opt.step()
    assert torch.all(w < 0)


def test_resumes_from_a_torch_optimizer_state() -> None:
    """A checkpoint written with torch_optimizer.Lamb loads into ours and continues as torch-optimizer would."""
    _, ref = _train(torch_optimizer.Lamb, steps=5)
    continued = {}
    for cls in (Lamb, torch_optimizer.Lamb):
        model = _model(seed=3)
        opt = cls(model.parameters())
        opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from a file: no shared tensors
        _steps(model, opt, 10, seed=2)
        assert all(opt.state[p]["step"] == 15 for p in model.parameters())
        continued[cls] = model
    for a, b in zip(continued[Lamb].parameters(), continued[torch_optimizer.Lamb].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_param_groups_and_frozen_parameters() -> None:
    """Each group keeps its own lr and weight decay; a parameter without a gradient is left alone."""
    results = []
    for cls in (Lamb, torch_optimizer.Lamb):
        model = _model()
        frozen = model[4].bias.detach().clone()
        groups = [{"params": list(model[0].parameters()), "lr": 1e-2},
                  {"params": list(model[2].parameters()) + [model[4].weight], "lr": 1e-3, "weight_decay": 1e-2},
                  {"params": [model[4].bias], "lr": 5e-2}]
        opt = cls(groups)
        model[4].bias.requires_grad_(False)
        _steps(model, opt, 10, seed=4)
        torch.testing.assert_close(model[4].bias, frozen, rtol=0, atol=0)
        results.append(model)
    for a, b in zip(results[0].parameters(), results[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(lr=1e-3, betas=(1.0, 0.9)), dict(lr=1e-3, weight_decay=-1)])
def test_rejects_bad_hyperparameters(bad: dict) -> None:
    with pytest.raises(ValueError):
        Lamb(_model().parameters(), **bad)
