"""The VAE's per-epoch schedules are exact: no float drift at any epoch."""

import pytest

from midilib.schedules import kl_beta, teacher_forcing


def test_teacher_forcing_steps_down_exactly_to_zero():
    values = [teacher_forcing(e) for e in range(20)]
    assert values[:13] == [(60 - 5 * e) / 100 for e in range(13)]
    assert values[3] == 0.45  # 0.6 - 0.05 * 3 is 0.44999999999999996 without rounding
    assert teacher_forcing(12) == 0.0
    assert values[12:] == [0.0] * 8


def test_kl_beta_warms_up_exactly_and_caps():
    assert [kl_beta(e) for e in range(11)] == [k / 100 for k in range(11)]
    assert kl_beta(3) == 0.03
    assert kl_beta(10) == 0.1
    assert kl_beta(50) == 0.1


def test_schedule_parameters():
    assert teacher_forcing(2, start=1.0, step=0.25) == 0.5
    assert teacher_forcing(4, start=1.0, step=0.25) == 0.0
    assert teacher_forcing(7, step=0.0) == 0.6
    assert kl_beta(7, step=0.1, max=1.0) == 0.7
    assert kl_beta(30, step=0.1, max=1.0) == 1.0
    assert kl_beta(5, max=0.0) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: teacher_forcing(-1),
        lambda: teacher_forcing(1.5),
        lambda: teacher_forcing(0, start=1.2),
        lambda: teacher_forcing(0, step=-0.1),
        lambda: kl_beta(-3),
        lambda: kl_beta(0, step=-0.01),
        lambda: kl_beta(0, max=-1.0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
