"""Reconstruction baselines: the constant guess and the memorising nearest neighbour."""

import time

import numpy as np
import pytest
from conftest import random_windows

from midilib.baselines import most_common_pitch, nearest_neighbour, window_features
from midilib.metrics import note_iou, pitch_accuracy


def test_most_common_pitch_is_mode_with_median_times():
    train = random_windows(50, seed=1)
    train[:, :3, 0] = 64  # 150 notes of E4: the clear mode
    test = random_windows(7, seed=2)
    pred = most_common_pitch(train, test)
    assert pred.shape == test.shape and pred.dtype == np.float32
    notes = train.reshape(-1, 4)
    assert np.all(pred[..., 0] == 64)
    for col in (1, 2, 3):
        assert np.allclose(pred[..., col], np.median(notes[:, col]))
    expected = (test[..., 0] == 64).mean(axis=1)
    assert np.allclose(pitch_accuracy(test, pred), expected)


def test_nearest_neighbour_recovers_perturbed_copies():
    train = random_windows(500, seed=3)
    rng = np.random.default_rng(4)
    picks = rng.choice(len(train), 60, replace=False)
    test = train[picks].copy()
    test[..., 1:] += rng.normal(0, 0.01, test[..., 1:].shape).astype(np.float32)
    pred = nearest_neighbour(train, test, batch=16)
    assert np.array_equal(pred, train[picks])
    assert np.all(pitch_accuracy(test, pred) == 1.0)
    assert note_iou(test, pred).mean() > 0.8


def test_nearest_neighbour_matches_brute_force():
    train, test = random_windows(300, seed=5), random_windows(40, seed=6)
    ft, fq = window_features(train), window_features(test)
    d = ((fq[:, None, :].astype(np.float64) - ft[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(nearest_neighbour(train, test, batch=7), train[d.argmin(1)])


def test_nearest_neighbour_is_fast_at_corpus_scale():
    train, test = random_windows(25_000, seed=7), random_windows(3_000, seed=8)
    start = time.perf_counter()
    pred = nearest_neighbour(train, test)
    seconds = time.perf_counter() - start
    assert pred.shape == test.shape
    assert seconds < 20.0, f"nearest_neighbour took {seconds:.1f} s on 25k x 3k windows"
    for row in pred[:20]:  # every prediction is a training window
        assert (train == row).all(axis=(1, 2)).any()


def test_bad_inputs_raise():
    good = random_windows(4)
    with pytest.raises(ValueError, match="shape"):
        most_common_pitch(good[..., :3], good)
    with pytest.raises(ValueError, match="empty"):
        most_common_pitch(good[:0], good)
    with pytest.raises(ValueError, match="window lengths"):
        nearest_neighbour(good, random_windows(2, window=6))
    with pytest.raises(ValueError, match="batch"):
        nearest_neighbour(good, good, batch=0)
