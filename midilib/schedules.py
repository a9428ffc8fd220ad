"""Per-epoch schedules of the VAE: teacher forcing decays, the KL weight warms up.

Both are pure functions of the 0-based epoch so that a resumed run, the
notebook's plots and the trainer agree exactly. Values are rounded to 10
decimals: 0.6 - 0.05 * 3 is 0.44999999999999996 in floats, and a schedule
that is meant to reach 0 or 0.1 must reach it exactly.
"""

from __future__ import annotations

import builtins


def _check(epoch: int, **nonneg: float) -> None:
    if int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    for name, value in nonneg.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def teacher_forcing(epoch: int, start: float = 0.6, step: float = 0.05) -> float:
    """Probability of feeding the decoder the true previous note: start, start - step, ..., 0.

    Forcing early makes the decoder learn from clean inputs; removing it later
    makes it learn to run on its own predictions, as it must at generation.
    """
    _check(epoch, step=step)
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start must be a probability in [0, 1], got {start!r}")
    return builtins.max(0.0, round(start - step * epoch, 10))


def kl_beta(epoch: int, step: float = 0.01, max: float = 0.1) -> float:
    """Weight of the KL term: 0, step, 2 step, ... capped at `max`.

    A zero weight at first lets the encoder put information into the latent
    before the prior pulls it back (against posterior collapse).
    """
    _check(epoch, step=step, max=max)
    return builtins.min(max, round(step * epoch, 10))
