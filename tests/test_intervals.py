"""Statistics are code too: FD∞ and the intervals checked on simulated cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from midilib import intervals as I
from midilib.frechet import _moments, fast_frechet, frechet_inf
from midilib.metrics import frechet_distance


def _clustered(rng: np.random.Generator, pieces: int, n: int, between: np.ndarray, within: np.ndarray):
    """n vectors from `pieces` pieces: x = u_piece + e, u ~ N(0, between), e ~ N(0, within)."""
    sizes = rng.multinomial(n, np.full(pieces, 1.0 / pieces))
    u = rng.normal(size=(pieces, len(between))) * np.sqrt(between)
    x = np.repeat(u, sizes, axis=0) + rng.normal(size=(n, len(within))) * np.sqrt(within)
    return x, np.repeat(np.arange(pieces), sizes)


def test_fast_frechet_equals_the_eigendecomposition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 12)), rng.normal(size=(300, 12)) * 1.5 + 0.3
    ma, mb = _moments(a), _moments(b)
    assert fast_frechet(*ma, *mb) == pytest.approx(frechet_distance(*ma, *mb), rel=1e-9)
    singular = np.zeros((12, 12))  # falls back without failing
    assert fast_frechet(ma[0], singular, mb[0], mb[1]) == pytest.approx(
        frechet_distance(ma[0], singular, mb[0], mb[1]), rel=1e-9)


def test_fd_inf_of_one_distribution_is_near_zero_where_plain_fd_is_not():
    rng = np.random.default_rng(1)
    d = 32
    cov = np.linspace(0.5, 2.0, d)
    a = rng.normal(size=(200, d)) * np.sqrt(cov)
    b = rng.normal(size=(200, d)) * np.sqrt(cov)  # disjoint samples, true distance 0
    plain = fast_frechet(*_moments(a), *_moments(b))
    assert plain > 0.3 * cov.sum() / 200 * 2  # about tr/n_a + tr/n_b and more: the bias
    inf = frechet_inf(a, None, b, None, seed=0)
    assert abs(inf) < 0.25 * plain


def test_fd_inf_does_not_depend_on_n():
    """FD∞ at n = 500 and n = 2,000 agree within their intervals; plain FD does not."""
    rng = np.random.default_rng(2)
    d = 16
    mu = np.full(d, 0.2)
    truth = frechet_distance(np.zeros(d), np.eye(d), mu, 1.5 * np.eye(d))
    found = {}
    for n in (500, 2000):
        a = rng.normal(size=(n, d))
        b = mu + rng.normal(size=(n, d)) * np.sqrt(1.5)
        value = frechet_inf(a, None, b, None, seed=n)
        found[n] = I.split_half_interval(lambda ia, ib, a=a, b=b: frechet_inf(a[ia], None, b[ib], None, seed=3),
                                         np.arange(n), np.arange(n), value, n_splits=10, seed=4)
        found[n, "plain"] = fast_frechet(*_moments(a), *_moments(b))
    (_, lo1, hi1), (_, lo2, hi2) = found[500], found[2000]
    assert lo1 <= hi2 and lo2 <= hi1  # the intervals overlap
    assert lo1 <= truth <= hi1 and lo2 <= truth <= hi2
    assert hi2 - lo2 < hi1 - lo1  # and narrow with n
    assert found[500, "plain"] > found[2000, "plain"] > truth  # the bias plain FD keeps


def test_fd_inf_removes_the_bias_of_few_pieces_when_subsets_are_drawn_by_piece():
    rng = np.random.default_rng(3)
    d = 6
    between, within = np.full(d, 0.4), np.full(d, 0.8)
    total = between + within
    by_piece, by_window = [], []
    for r in range(40):
        x, g = _clustered(rng, 30, 900, between, within)
        y = rng.normal(size=(900, d)) * np.sqrt(total)  # the same population, iid
        by_piece.append(frechet_inf(x, g, y, None, seed=r))
        by_window.append(frechet_inf(x, None, y, None, seed=r))
    # truth 0: drawn by piece, FD∞ sits near it; drawn by window, the pieces' mean noise stays
    # truth 0: drawn by window, the pieces' shared offsets stay in the estimate (0.13 here);
    # drawn by piece, most of that goes (0.05: some remains, subsets of 30 pieces go down to 7)
    assert np.mean(by_piece) < 0.5 * np.mean(by_window)


def test_fd_inf_interval_covers_a_known_distance():
    """200 simulated corpora (40 pieces of correlated windows against an iid model):
    the 95% split-half interval of FD∞ covers the true distance at least 90% of the time."""
    rng = np.random.default_rng(4)
    d = 4
    between, within = np.linspace(0.2, 0.5, d), np.linspace(1.0, 0.5, d)
    mu, model_var = np.full(d, 0.25), np.full(d, 0.8)
    truth = frechet_distance(np.zeros(d), np.diag(between + within), mu, np.diag(model_var))
    hits, widths = 0, []
    for _ in range(200):
        x, g = _clustered(rng, 40, 600, between, within)
        y = mu + rng.normal(size=(600, d)) * np.sqrt(model_var)
        ux, uy = I.units(g, len(x)), np.arange(len(y))
        value = frechet_inf(y, uy, x, ux, rng)
        _, lo, hi = I.split_half_interval(
            lambda iy, ix, x=x, y=y, ux=ux, uy=uy: frechet_inf(y[iy], uy[iy], x[ix], ux[ix], rng),
            uy, ux, value, n_splits=10, seed=rng)
        hits += lo <= truth <= hi
        widths.append(hi - lo)
    assert hits / 200 >= 0.9
    # conservative (the halves' FD∞ is noisier than half the variance says) but not useless:
    # here the mean width is about 2.5x the distance, and shrinks with more pieces
    assert np.mean(widths) < 3.0 * truth


@pytest.mark.parametrize("pieces", [6, 40])
def test_mean_interval_covers_a_known_mean_with_few_or_many_pieces(pieces):
    rng = np.random.default_rng(pieces)
    hits = 0
    for _ in range(300):
        sizes = rng.integers(5, 60, pieces)
        values = np.concatenate([0.9 + e + rng.normal(0, 0.08, s)
                                 for e, s in zip(rng.normal(0, 0.05, pieces), sizes)])
        value, lo, hi = I.mean_interval(values, np.repeat(np.arange(pieces), sizes))
        hits += lo <= 0.9 <= hi
    assert hits / 300 >= 0.9


def test_mean_interval_by_piece_is_wider_than_by_window_on_clustered_data():
    rng = np.random.default_rng(7)
    values = np.repeat(rng.normal(0, 1, 20), 50) + rng.normal(0, 0.2, 1000)
    groups = np.repeat(np.arange(20), 50)
    _, lo_p, hi_p = I.mean_interval(values, groups)
    _, lo_w, hi_w = I.mean_interval(values)
    assert (hi_p - lo_p) > 3 * (hi_w - lo_w)
    v, lo, hi = I.mean_interval(np.full(10, 0.5), np.zeros(10))
    assert v == 0.5 and np.isnan(lo) and np.isnan(hi)  # one piece: no interval, not a fake one
    with pytest.raises(ValueError, match="non-empty"):
        I.mean_interval(np.zeros(0))


def test_units_and_weighted_reps_resample_whole_pieces():
    groups = np.array([7, 7, 3, 3, 3, 9])
    unit = I.units(groups, 6)
    assert list(unit) == [1, 1, 0, 0, 0, 2]
    w = I.weighted_reps(unit, 50, np.random.default_rng(0))
    assert w.shape == (51, 6) and (w[0] == 1).all()
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 4]).all()  # a piece moves as one
    assert (w[1:].reshape(50, 6)[:, [0, 2, 5]].sum(axis=1) == 3).all()  # 3 pieces drawn 3 times
    with pytest.raises(ValueError, match="groups must have shape"):
        I.units(groups, 5)


def test_split_half_interval_says_nothing_with_too_few_units():
    v, lo, hi = I.split_half_interval(lambda a, b: 0.0, np.arange(5), np.arange(100), 1.0)
    assert v == 1.0 and np.isnan(lo) and np.isnan(hi)
