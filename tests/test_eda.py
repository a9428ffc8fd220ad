"""The small statistics the notebooks' readings are written from."""

import numpy as np
import pytest

from midilib import eda


def test_seconds_runs_from_the_first_onset_to_the_last_note_off():
    ev = np.array([[60, 0.5, 1.0, 0.5], [64, 0.5, 0.0, 2.0], [67, 0.5, 0.5, 0.25]], dtype=np.float32)
    assert eda.seconds(ev) == pytest.approx(2.0)  # onsets 1.0, 1.0, 1.5; the second note ends at 3.0
    assert eda.seconds(ev[None]) == pytest.approx(2.0)  # windows are flattened
    assert eda.seconds(np.zeros((0, 4))) == 0.0


def test_most_common():
    assert eda.most_common(np.array([0.7, 0.7, 0.7, 0.2])) == (pytest.approx(0.7), 0.75)


def test_window_stats():
    windows = np.array([
        [[60, 0.5, 0.0, 0.5], [64, 0.5, 0.0, 0.5], [72, 0.5, 0.25, 0.5], [60, 0.5, 0.0, 0.5]],
        [[62, 0.2, 0.5, 1.0], [62, 0.6, 0.25, 1.0], [62, 0.2, 0.25, 1.0], [62, 0.6, 0.5, 1.0]],
    ], dtype=np.float32)
    s = eda.window_stats(windows)
    assert s["pitch_range"] == pytest.approx(6.0)  # 12 and 0 semitones
    assert s["zero_gaps"] == pytest.approx(3 / 8)
    assert s["median_gap"] == pytest.approx(0.25)  # of the gaps above 0
    assert s["mean_duration"] == pytest.approx(0.75)
    assert s["velocity_spread"] == pytest.approx(0.2 * 127 / 2, rel=1e-5)  # 0 in the first window, 25.4 in the second
    assert s["pitch_drift"] == pytest.approx(2.0)  # mean pitch 64, then 62
    with pytest.raises(ValueError):
        eda.window_stats(windows[0])
