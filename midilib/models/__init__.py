"""Networks of the workbook (VAE, denoisers, the memory-overwrite module) and what they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, no teacher forcing) for a block of generation code; the caller's
    mode is restored afterwards, so sampling in the middle of training changes nothing."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
