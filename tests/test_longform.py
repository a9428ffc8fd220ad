"""Long-piece metrics: Gaussian overlap, framewise self-similarity, whole-piece tonality, clips, shuffled windows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from midilib import longform as L
from midilib.intervals import jackknife_se


def _numeric_overlap(m1: float, v1: float, m2: float, v2: float) -> float:
    s1, s2 = np.sqrt(v1), np.sqrt(v2)
    lo, hi = min(m1 - 12 * s1, m2 - 12 * s2), max(m1 + 12 * s1, m2 + 12 * s2)
    grid = np.linspace(lo, hi, 400_001)
    low = np.minimum(scipy.stats.norm.pdf(grid, m1, s1), scipy.stats.norm.pdf(grid, m2, s2))
    return float(scipy.integrate.trapezoid(low, grid))


def test_overlap_known_cases():
    assert L.gaussian_overlap(3.0, 2.0, 3.0, 2.0) == pytest.approx(1.0)
    assert L.gaussian_overlap(0.0, 1.0, 40.0, 1.0) < 1e-12
    assert L.gaussian_overlap(0.0, 1.0, 40.0, 9.0) < 1e-6
    # equal variances: 2 Phi(-d / 2 sigma)
    assert L.gaussian_overlap(0.0, 4.0, 2.0, 4.0) == pytest.approx(2 * scipy.stats.norm.cdf(-0.5))
    # one mean, variances 1 and 4: crossings at +-sqrt(8 ln 2 / 3)
    x = np.sqrt(8 * np.log(2) / 3)
    expected = 2 * (scipy.stats.norm.cdf(-x) + scipy.stats.norm.cdf(x / 2) - 0.5)
    assert L.gaussian_overlap(0.0, 1.0, 0.0, 4.0) == pytest.approx(expected, abs=1e-12)
    # symmetric in its two Gaussians, broadcast, in [0, 1]
    a = L.gaussian_overlap([0.0, 1.0], [1.0, 0.5], 2.0, 3.0)
    b = L.gaussian_overlap(2.0, 3.0, [0.0, 1.0], [1.0, 0.5])
    assert a.shape == (2,) and np.allclose(a, b) and np.all((a >= 0) & (a <= 1))
    with pytest.raises(ValueError, match="positive variances"):
        L.gaussian_overlap(0.0, 0.0, 1.0, 1.0)


def test_overlap_matches_numerical_integration():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m1, m2 = rng.normal(0.0, 3.0, 2)
        v1, v2 = np.exp(rng.normal(0.0, 1.5, 2))
        assert L.gaussian_overlap(m1, v1, m2, v2) == pytest.approx(_numeric_overlap(m1, v1, m2, v2), abs=1e-6)
    # nearly equal variances (the quadratic's leading term near 0) stay accurate
    for v2 in (1.0 + 1e-12, 1.0 + 1e-8, 1.0 + 1e-4):
        assert L.gaussian_overlap(0.0, 1.0, 1.5, v2) == pytest.approx(_numeric_overlap(0.0, 1.0, 1.5, v2), abs=1e-6)


def _piece(pitches: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    notes = np.empty((len(pitches), 4))
    notes[:, 0] = pitches
    notes[:, 1] = rng.uniform(0.2, 0.9, len(pitches))
    notes[:, 2] = rng.choice([0.0, 0.125, 0.25, 0.5], len(pitches))
    notes[:, 3] = rng.uniform(0.05, 1.5, len(pitches))
    return notes


def _varied_pieces(k: int, n: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Pieces whose register drifts slowly, with local spread: real-ish self-similarity."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        centre = 60 + np.cumsum(rng.normal(0.0, 0.6, n))
        out.append(_piece(np.rint(centre + rng.normal(0.0, 4.0, n)).clip(21, 108), seed + i))
    return out


def test_frames_and_series():
    mean, var = L.frame_gaussians(np.arange(40.0), frame=16, hop=8, var_floor=0.0)
    assert len(mean) == 4 and mean[0] == pytest.approx(7.5) and mean[1] == pytest.approx(15.5)
    assert var[0] == pytest.approx(np.var(np.arange(16.0)))
    assert len(L.frame_gaussians(np.arange(10.0), 16, 8)[0]) == 0
    piece = _varied_pieces(1)[0]
    series = L.oa_series(piece, "pitch")
    assert series.shape == ((len(piece) - 16) // 8,) and np.all((series >= 0) & (series <= 1))
    windows = piece.reshape(16, 8, 4)  # windows of the same piece give the same series
    assert np.allclose(L.oa_series(windows, "pitch"), series)
    assert len(L.oa_series(piece[:20])) == 0
    constant = _piece(np.full(64, 60.0))
    assert np.allclose(L.oa_series(constant, "pitch"), 1.0)  # floored variance: identical frames
    with pytest.raises(ValueError, match="channel"):
        L.oa_series(piece, "velocity")


def test_consistency_of_real_against_itself_is_one():
    pieces = _varied_pieces(12)
    for channel in ("pitch", "duration"):
        s = L.framewise_similarity(pieces, pieces, channel)
        assert s.consistency[0] == pytest.approx(1.0) and s.variance[0] == pytest.approx(1.0)
        assert s.consistency[1] < 1.0 and s.units == 12
    other = _varied_pieces(12, seed=100)  # another draw of the same kind scores near 1
    assert L.framewise_similarity(other, pieces).consistency[0] > 0.9


def test_constant_pitch_pieces_score_lower():
    real = _varied_pieces(12)
    constant = [_piece(np.full(128, 60.0 + i), seed=i) for i in range(12)]
    jumpy = [_piece(np.random.default_rng(i).integers(21, 109, 128).astype(float), seed=i) for i in range(12)]
    same = L.framewise_similarity(_varied_pieces(12, seed=50), real)
    flat = L.framewise_similarity(constant, real)
    assert flat.mean_oa == pytest.approx(1.0) and flat.var_oa == pytest.approx(0.0)
    assert flat.consistency[0] < same.consistency[0] - 0.1
    assert flat.variance[0] == 0.0 and flat.consistency[2] < same.consistency[1]
    noisy = L.framewise_similarity(jumpy, real)  # uniform pitches: every frame alike, OA near 1 too
    assert noisy.consistency[0] < same.consistency[0]


def test_consistency_formula_and_table():
    assert L.consistency_variance(0.5, 0.02, 0.5, 0.02) == (1.0, 1.0)
    assert L.consistency_variance(0.75, 0.03, 0.5, 0.02) == pytest.approx((0.5, 0.5))
    assert L.consistency_variance(1.5, 0.0, 0.5, 0.02) == (0.0, 0.0)
    table = L.framewise_table(_varied_pieces(6), _varied_pieces(6, seed=9))
    assert list(table["channel"]) == ["pitch", "duration"]
    assert (table["consistency_low"] <= table["consistency"]).all()
    assert (table["consistency"] <= table["consistency_high"]).all()


def test_groups_widen_the_interval():
    """Clips cut from few pieces are few units: the jackknife must resample pieces."""
    real = _varied_pieces(6, n=512)
    clip_set, owner = L.clips(real, windows_per_clip=16)
    gen = _varied_pieces(30, seed=7)
    by_clip = L.framewise_similarity(gen, clip_set)
    by_piece = L.framewise_similarity(gen, clip_set, reference_groups=owner)
    assert by_piece.consistency[0] == pytest.approx(by_clip.consistency[0])
    assert by_clip.units == 30 and by_piece.units == 30
    width = lambda s: s.consistency[2] - s.consistency[1]  # noqa: E731
    assert width(by_piece) > width(by_clip)
    with pytest.raises(ValueError, match="two pieces"):
        L.framewise_similarity(gen, [real[0]], "pitch")


def test_jackknife_se_of_a_mean():
    x = np.random.default_rng(0).normal(size=30)
    loo = (x.sum() - x) / (len(x) - 1)
    assert jackknife_se(loo) == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))
    assert np.isnan(jackknife_se(np.array([1.0])))


def test_piece_scale_consistency():
    c_major = [60, 62, 64, 65, 67, 69, 71, 72]
    assert L.piece_scale_consistency(_piece(np.array(c_major * 4, dtype=float))) == 1.0
    chromatic = _piece(np.arange(60, 72, dtype=float))
    assert L.piece_scale_consistency(chromatic) == pytest.approx(7 / 12)
    # whole piece, not the mean of windows: two windows each in its own key
    two_keys = np.array([60, 62, 64, 65, 67, 69, 71, 72, 61, 63, 66, 68, 70, 73, 75, 78], dtype=float)
    from midilib.metrics import scale_consistency

    windows = _piece(two_keys).reshape(2, 8, 4)
    assert scale_consistency(windows).mean() == 1.0
    assert L.piece_scale_consistency(windows) < 0.8


def test_clips():
    pieces = np.arange(3 * 70 * 4, dtype=np.float32).reshape(3, 70, 4)
    out, owner = L.clips(pieces, windows_per_clip=4, window=8)
    assert out.shape == (6, 32, 4) and list(owner) == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(out[1], pieces[0, 32:64]) and np.array_equal(out[2], pieces[1, :32])
    ragged = [np.zeros((40, 4)), np.zeros((10, 4)), np.ones((5, 8, 4))]
    out, owner = L.clips(ragged, windows_per_clip=4, window=8)
    assert out.shape == (2, 32, 4) and list(owner) == [0, 2] and out[1].min() == 1.0
    assert L.clips([np.zeros((10, 4))], 4, 8)[0].shape == (0, 32, 4)


def _windows_of(k: int, per: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Windows whose pitch encodes (piece, index): piece * 100 + index."""
    owner = np.repeat(np.arange(k) * 10 + 3, per)
    windows = np.zeros((k * per, 8, 4), np.float32)
    windows[..., 0] = (np.repeat(np.arange(k), per) * 100 + np.tile(np.arange(per), k))[:, None]
    return windows, owner


def test_shuffled_windows_come_from_different_pieces():
    windows, owner = _windows_of(10)
    pieces, sources = L.shuffled_windows(windows, owner, n_pieces=50, windows_per_piece=4, seed=1)
    assert pieces.shape == (50, 32, 4) and sources.shape == (50, 4)
    for piece, src in zip(pieces, sources):
        assert len(set(src)) == 4  # four different source pieces
        origin = (piece[::8, 0] // 100).astype(int) * 10 + 3  # each window as it was
        assert list(origin) == list(src)
        assert np.all(piece.reshape(4, 8, 4)[:, :, 0] == piece[::8, 0][:, None])
    again, _ = L.shuffled_windows(windows, owner, 50, 4, seed=1)
    assert np.array_equal(again, pieces)
    assert not np.array_equal(L.shuffled_windows(windows, owner, 50, 4, seed=2)[0], pieces)
    # more windows than pieces: no piece follows itself
    long, src = L.shuffled_windows(windows[:18], owner[:18], n_pieces=20, windows_per_piece=12, seed=0)
    assert long.shape == (20, 96, 4) and np.all(src[:, 1:] != src[:, :-1])
    with pytest.raises(ValueError, match="two source pieces"):
        L.shuffled_windows(windows[:6], owner[:6], 5, 2)


def test_shuffled_windows_lose_long_range_structure():
    """Real pieces' registers drift slowly; windows drawn from different pieces jump."""
    real = _shifted(_varied_pieces(20, n=256, seed=3))
    windows = np.concatenate([p.reshape(-1, 8, 4) for p in real])
    owner = np.repeat(np.arange(20), 32)
    shuffled, _ = L.shuffled_windows(windows, owner, 40, 16, seed=0)
    reference, ref_owner = L.clips(real, windows_per_clip=16)
    held, _ = L.clips(_shifted(_varied_pieces(20, n=256, seed=4)), windows_per_clip=16)
    fake = L.framewise_similarity(shuffled, reference, reference_groups=ref_owner)
    true = L.framewise_similarity(held, reference, reference_groups=ref_owner)
    assert fake.mean_oa < true.mean_oa
    assert fake.consistency[2] < true.consistency[0]


def _shifted(pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Each piece moved to its own register (30 + 3 i around middle C's 60)."""
    for i, piece in enumerate(pieces):
        piece[:, 0] = np.clip(piece[:, 0] - 60 + 30 + 3 * i, 21, 108)
    return pieces


def test_pieces_of_keeps_each_files_windows_in_order():
    windows, owner = _windows_of(3, per=4)
    order = np.concatenate([np.flatnonzero(owner == o) for o in (23, 3, 13)])  # files out of order
    pieces, ids = L.pieces_of(windows[order], owner[order])
    assert list(ids) == [3, 13, 23] and pieces[0].shape == (32, 4)
    assert list(pieces[1][::8, 0]) == [100, 101, 102, 103]
