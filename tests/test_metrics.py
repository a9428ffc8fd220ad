"""Every metric against small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from midilib import metrics as M


def _windows(pitch, velocity=None, delta=None, duration=None) -> np.ndarray:
    """(n, w, 4) windows from per-channel (n, w) lists; omitted channels are 0.5."""
    pitch = np.asarray(pitch, dtype=np.float32)
    out = np.full(pitch.shape + (4,), 0.5, dtype=np.float32)
    out[..., 0] = pitch
    for c, values in enumerate((velocity, delta, duration), start=1):
        if values is not None:
            out[..., c] = values
    return out


def _random_windows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.empty((n, 8, 4), dtype=np.float32)
    w[..., 0] = rng.integers(40, 90, (n, 8))
    w[..., 1] = rng.uniform(0.2, 0.9, (n, 8))
    w[..., 2] = rng.exponential(0.15, (n, 8)) * (rng.random((n, 8)) > 0.3)
    w[..., 3] = rng.exponential(0.3, (n, 8))
    return np.clip(w, 0, [127, 1, 2, 2]).astype(np.float32)


# --- reconstruction --------------------------------------------------------------


def test_pitch_accuracy_counts_positions_in_order():
    true = _windows([[60, 62, 64, 65], [60, 60, 60, 60]])
    pred = _windows([[60, 62.4, 65, 64], [61, 60, 59, 60]])
    np.testing.assert_allclose(M.pitch_accuracy(true, pred), [0.5, 0.5])
    np.testing.assert_allclose(M.pitch_accuracy(true, true), [1.0, 1.0])


def test_pitch_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        M.pitch_accuracy(_windows([[60, 61]]), _windows([[60, 61, 62]]))


def test_onsets_are_cumulative_deltas():
    w = _windows([[60, 61, 62]], delta=[[0.5, 0.0, 0.25]])
    np.testing.assert_allclose(M.onsets(w), [[0.5, 0.5, 0.75]])


def test_note_iou_hand_computed():
    # true notes: [0, 1], [1, 2];  pred: [0, 0.5] (IoU 0.5), [1.5, 2.5] (IoU 0.5/1.5)
    true = _windows([[60, 60]], delta=[[0.0, 1.0]], duration=[[1.0, 1.0]])
    pred = _windows([[60, 60]], delta=[[0.0, 1.5]], duration=[[0.5, 1.0]])
    np.testing.assert_allclose(M.note_iou(true, pred), [(0.5 + 1 / 3) / 2])
    np.testing.assert_allclose(M.note_iou(true, true), [1.0])


def test_note_iou_disjoint_and_empty_union():
    true = _windows([[60, 60]], delta=[[0.0, 1.0]], duration=[[0.5, 0.0]])
    pred = _windows([[60, 60]], delta=[[1.0, 0.0]], duration=[[0.5, 0.0]])
    # note 1: [0, .5] vs [1, 1.5] -> 0; note 2: zero-length at 1.0 vs at 1.0 -> 1
    np.testing.assert_allclose(M.note_iou(true, pred), [0.5])
    pred_late = _windows([[60, 60]], delta=[[0.0, 1.2]], duration=[[0.5, 0.0]])
    # note 2 is now an empty point at 1.2 vs 1.0 -> 0
    np.testing.assert_allclose(M.note_iou(true, pred_late), [0.5])


# --- Frechet ----------------------------------------------------------------------


def _direct_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("d", [1, 5, 20])
def test_frechet_matches_direct_sqrtm(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(200, d)) @ rng.normal(size=(d, d))
    b = rng.normal(1.0, 2.0, size=(300, d)) @ rng.normal(size=(d, d))
    stats = (*M.gaussian_stats(a), *M.gaussian_stats(b))
    expected = _direct_frechet(*stats)
    assert M.frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_frechet_identical_is_zero_and_singular_is_finite():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(100, 6))
    mu, sigma = M.gaussian_stats(frames)
    assert M.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    low_rank = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 6))  # rank-2 covariance
    value = M.frechet_distance(*M.gaussian_stats(low_rank), mu, sigma)
    assert np.isfinite(value) and value > 0


def test_gaussian_stats_and_shape_errors():
    frames = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = M.gaussian_stats(frames)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(frames.T))
    with pytest.raises(ValueError, match="m >= 2"):
        M.gaussian_stats(frames[:1])
    with pytest.raises(ValueError, match="shapes do not match"):
        M.frechet_distance(mu, sigma, np.zeros(3), np.eye(3))


# --- distribution distances ---------------------------------------------------------


def test_overlap_area_identical_disjoint_and_partial():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    a = np.array([0.5, 0.5, 1.5, 1.5])
    assert M.overlap_area(a, a, edges) == pytest.approx(1.0)
    assert M.overlap_area(a, a + 10, bins=4, range=(0, 20)) == pytest.approx(0.0)
    # a: half in bin 0, half in bin 1; b: all in bin 1 -> overlap 0.5
    assert M.overlap_area(a, np.array([1.2, 1.7]), edges) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="increasing"):
        M.overlap_area(a, a, np.array([1.0, 0.0]))


def test_channel_edges_cover_every_valid_value():
    edges = M.channel_edges(2.0, 2.0)
    assert len(edges[0]) - 1 == 128 and len(edges[1]) - 1 == 32
    for c, top in ((0, 127), (1, 1.0), (2, 2.0), (3, 2.0)):
        idx = M.bin_index(np.array([0.0, top]), edges[c])
        assert idx[0] == 0 and idx[1] == len(edges[c]) - 2
    assert M.bin_index(np.array([0.0, 0.0005, 0.0011]), edges[2]).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="must exceed"):
        M.channel_edges(0.0, 2.0)


def test_wasserstein_identical_and_shift():
    a = np.array([0.0, 1.0, 3.0])
    assert M.wasserstein(a, a) == 0.0
    assert M.wasserstein(a, a + 0.25) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="non-empty"):
        M.wasserstein(a, np.array([]))


def test_pitch_class_histogram_and_distance():
    w = _windows([[60, 72, 61, 62]])  # C, C, C#, D
    np.testing.assert_allclose(M.pitch_class_histogram(w)[:3], [0.5, 0.25, 0.25])
    c_only = M.pitch_class_histogram(_windows([[60, 72]]))
    d_only = M.pitch_class_histogram(_windows([[62, 74]]))
    assert M.pitch_class_distance(c_only, c_only) == 0.0
    assert M.pitch_class_distance(c_only, d_only) == pytest.approx(1.0)
    assert M.pitch_class_distance(M.pitch_class_histogram(w), c_only) == pytest.approx(0.5)


# --- in-window statistics -----------------------------------------------------------


def test_in_window_statistics_hand_computed():
    # onsets 0, 0, 1, 1.005 ; durations 2, 0.5, 0.5, 0.5 ; pitches 60 64 67 55
    w = _windows(
        [[60, 64, 67, 55]], delta=[[0.0, 0.0, 1.0, 0.005]], duration=[[2.0, 0.5, 0.5, 0.5]]
    )
    assert M.pitch_range(w).tolist() == [12.0]
    np.testing.assert_allclose(M.chord_share(w), [2 / 3])  # notes 2 and 4 (5 ms <= 20 ms)
    np.testing.assert_allclose(M.chord_share(w, tol=0.0), [1 / 3])
    # sounding at t=0: notes 1, 2 -> 2 (each); at t=1: notes 1, 3 -> 2;
    # at t=1.005: notes 1, 3, 4 -> 3
    np.testing.assert_allclose(M.polyphony(w), [(2 + 2 + 2 + 3) / 4])
    np.testing.assert_allclose(M.mean_abs_interval(w), [(4 + 3 + 12) / 3])


def test_polyphony_counts_zero_length_note_itself():
    w = _windows([[60, 62]], delta=[[0.0, 1.0]], duration=[[0.0, 0.0]])
    np.testing.assert_allclose(M.polyphony(w), [1.0])


def test_window_features_columns():
    w = _random_windows(50, 0)
    f = M.window_features(w)
    assert f.shape == (50, len(M.FEATURE_NAMES))
    np.testing.assert_allclose(f[:, 0], M.pitch_range(w))
    np.testing.assert_allclose(f[:, 4], w[..., 0].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(f[:, 7], np.log(w[..., 3].astype(np.float64) + 1e-3).mean(axis=1))


def test_feature_frechet_zero_for_identical_and_grows_with_shift():
    w = _random_windows(400, 1)
    assert M.feature_frechet(w, w) == pytest.approx(0.0, abs=1e-9)
    other = _random_windows(400, 2)
    shifted = other.copy()
    shifted[..., 0] += 12
    assert M.feature_frechet(shifted, w) > M.feature_frechet(other, w) > 0


# --- novelty --------------------------------------------------------------------------


def test_copy_rate_finds_planted_copies():
    train = _random_windows(5000, 3)
    gen = _random_windows(200, 4)
    gen[:30] = train[[7 * i for i in range(30)]]
    gen[30:40] = train[100:110] + np.array([0, 0.004, 0.003, -0.002], np.float32)  # near copies
    mask = M.copy_mask(gen, train, tol=0.01)
    assert mask[:40].all() and not mask[40:].any()
    assert M.copy_rate(gen, train, tol=0.01) == pytest.approx(40 / 200)
    assert M.copy_rate(gen, train, tol=0.0) == pytest.approx(30 / 200)  # exact only
    moved = gen[:30].copy()
    moved[:, 3, 0] += 1  # one pitch changed: not a copy at any tolerance
    assert M.copy_rate(moved, train, tol=1.0) == 0.0


def test_copy_rate_rejects_bad_input():
    w = _random_windows(4, 0)
    with pytest.raises(ValueError, match="window lengths differ"):
        M.copy_rate(w, w[:, :4])
    with pytest.raises(ValueError, match="tol"):
        M.copy_rate(w, w, tol=-1)


# --- bootstrap ------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(size=100), rng.normal(size=10_000)
    p1, lo1, hi1 = M.bootstrap_ci(np.mean, small, n_boot=300, seed=1)
    p2, lo2, hi2 = M.bootstrap_ci(np.mean, big, n_boot=300, seed=1)
    assert lo1 <= p1 <= hi1 and lo2 <= p2 <= hi2
    assert (hi2 - lo2) < 0.3 * (hi1 - lo1)
    assert M.bootstrap_ci(np.mean, small, n_boot=300, seed=1) == (p1, lo1, hi1)


def test_bootstrap_ci_paired_and_two_sample():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.7, true, (true + 1) % 5)
    point, lo, hi = M.bootstrap_ci(lambda t, p: np.mean(t == p), true, pred, n_boot=200)
    assert point == pytest.approx(np.mean(true == pred)) and lo < point < hi
    a, b = rng.normal(size=300), rng.normal(0.5, 1, size=200)
    point, lo, hi = M.bootstrap_ci(M.wasserstein, a, b, paired=False, n_boot=200)
    assert lo <= point <= hi
    with pytest.raises(ValueError, match="equal lengths"):
        M.bootstrap_ci(M.wasserstein, a, b)


def test_bootstrap_ci_over_groups_is_wider_for_clustered_data():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(10), 100)  # 10 files of 100 windows
    values = rng.normal(size=10)[groups] + 0.1 * rng.normal(size=1000)
    _, lo_rows, hi_rows = M.bootstrap_ci(np.mean, values, n_boot=300)
    _, lo_groups, hi_groups = M.bootstrap_ci(np.mean, values, groups=groups, n_boot=300)
    assert (hi_groups - lo_groups) > 3 * (hi_rows - lo_rows)
    with pytest.raises(ValueError, match="groups must have shape"):
        M.bootstrap_ci(np.mean, values, groups=groups[:5])
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(np.mean, values, alpha=1.5)


def _window(pitches, deltas=None):
    w = np.zeros((1, len(pitches), 4), dtype=np.float32)
    w[0, :, 0] = pitches
    w[0, :, 1] = 0.5
    w[0, :, 2] = 0.25 if deltas is None else deltas
    w[0, :, 3] = 0.3
    return w


def test_scale_consistency_hand_computed():
    c_major = _window([60, 62, 64, 65, 67, 69, 71, 72])
    assert M.scale_consistency(c_major)[0] == 1.0
    a_minor = _window([57, 59, 60, 62, 64, 65, 67, 69])  # natural minor = relative major's set
    assert M.scale_consistency(a_minor)[0] == 1.0
    chromatic = _window([60, 61, 62, 63, 64, 65, 66, 67])
    assert M.scale_consistency(chromatic)[0] == pytest.approx(5 / 8)  # best key holds 5 of 8
    rng = np.random.default_rng(0)
    noise = np.zeros((4000, 8, 4), np.float32)
    noise[..., 0] = rng.integers(0, 128, (4000, 8))
    assert 0.80 < M.scale_consistency(noise).mean() < 0.86  # random pitches: about 0.83


def test_pitch_class_entropy_hand_computed():
    assert M.pitch_class_entropy(_window([60] * 8))[0] == 0.0
    assert M.pitch_class_entropy(_window([60, 72] * 4))[0] == 0.0  # octaves share a class
    assert M.pitch_class_entropy(_window([60, 62] * 4))[0] == pytest.approx(1.0)
    assert M.pitch_class_entropy(_window(range(60, 68)))[0] == pytest.approx(3.0)


def test_ioi_entropy_hand_computed():
    steady = _window([60] * 8, [1.0] + [0.25] * 7)  # the first gap points outside: ignored
    assert M.ioi_entropy(steady)[0] == 0.0
    jitter = _window([60] * 8, [0.0, 0.25, 0.26, 0.24, 0.25, 0.255, 0.245, 0.25])  # one bin
    assert M.ioi_entropy(jitter)[0] == 0.0
    two = _window([60] * 8, [0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.5])  # chords and half notes
    assert M.ioi_entropy(two)[0] == pytest.approx(-(3 / 7) * np.log2(3 / 7) - (4 / 7) * np.log2(4 / 7))
    spread = _window([60] * 8, [0.0, 0.03, 0.06, 0.12, 0.24, 0.48, 0.96, 1.92])  # 7 octaves apart
    assert M.ioi_entropy(spread)[0] == pytest.approx(np.log2(7))
    edges = M.ioi_edges(2.0)
    assert edges[0] == 0.0 and edges[1] == M.CHORD_TOL and edges[-1] >= 2.0
    assert np.allclose(edges[2:] / edges[1:-1], np.sqrt(2))
