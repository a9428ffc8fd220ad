"""The evaluation protocol: sets, vectorised bootstrap, table, files, CLI glue."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from midilib import baselines as B
from midilib import cli as C
from midilib import evaluate as E
from midilib import intervals as I
from midilib import metrics as M
from midilib import report as R

CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/giantmidi-sample"


def _music(n: int, seed: int) -> np.ndarray:
    """Music-like windows: scale-wise melodies around a centre, chords, real-ish rhythm."""
    rng = np.random.default_rng(seed)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    degree = rng.integers(14, 28, n)[:, None] + np.cumsum(rng.integers(-2, 3, (n, 8)), axis=1)
    pitch = 24 + 12 * (degree // 7) + scale[degree % 7]
    w = np.empty((n, 8, 4), dtype=np.float32)
    w[..., 0] = pitch
    w[..., 1] = np.clip(rng.normal(0.55, 0.1, n)[:, None] + rng.normal(0, 0.03, (n, 8)), 0, 1)
    beat = rng.choice([0.125, 0.25, 0.5], n)[:, None]
    w[..., 2] = np.where(rng.random((n, 8)) < 0.3, 0.0, beat * rng.choice([1, 2], (n, 8)))
    w[..., 3] = beat * rng.uniform(0.6, 1.6, (n, 8))
    return w


def _synthetic_split():
    return _music(3000, 1), _music(600, 2)


# --- sets --------------------------------------------------------------------------


def test_clip_windows_ranges_and_errors():
    w = np.array([[[130.4, 1.5, -1.0, 5.0], [-3.0, -0.1, 3.0, 0.5], [60.6, 0.5, 0.1, 0.2]]])
    out = E.clip_windows(w, s_max=2.0, d_max=1.0)
    np.testing.assert_allclose(out[0, :, 0], [127, 0, 61])
    np.testing.assert_allclose(out[0, :, 1], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(out[0, :, 2], [0.0, 2.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 3], [1.0, 0.5, 0.2], rtol=1e-6)
    assert out.dtype == np.float32
    w[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="1 of 1 windows contain NaN"):
        E.clip_windows(w)
    with pytest.raises(ValueError, match="shape"):
        E.clip_windows(np.zeros((3, 4)))


def test_reference_windows_sample_without_replacement_when_possible():
    test = _music(50, 3)
    test[..., 0] = np.arange(50)[:, None]  # a window's pitch is its id
    ref = E.reference_windows(test, 40, seed=0)
    assert len(np.unique(ref[:, 0, 0])) == 40
    np.testing.assert_array_equal(ref, E.reference_windows(test, 40, seed=0))
    assert not np.array_equal(ref, E.reference_windows(test, 40, seed=1))
    assert len(E.reference_windows(test, 80, seed=0)) == 80  # more than there are: replacement
    with pytest.raises(ValueError, match="n must be >= 1"):
        E.reference_windows(test, 0)


def test_uniform_windows_cover_valid_ranges():
    w = B.uniform_random_windows(4000, seed=0, s_max=2.0, d_max=1.0)
    assert w.shape == (4000, 8, 4)
    assert w[..., 0].min() == 0 and w[..., 0].max() == 127
    assert np.all(w[..., 0] == np.rint(w[..., 0]))
    assert 0 <= w[..., 1].min() and w[..., 1].max() <= 1
    assert w[..., 3].max() <= 1.0 and w[..., 2].max() > 1.9
    assert abs(w[..., 2].mean() - 1.0) < 0.05


def test_independent_marginals_keep_marginals_and_lose_structure():
    train = _music(2000, 4)
    base = B.independent_marginals_windows(train, 2000, seed=0)
    for c in range(4):
        assert np.isin(base[..., c], train[..., c]).all()
        assert M.wasserstein(base[..., c], train[..., c]) < 0.05 * (np.std(train[..., c]) + 1e-9)
    # structure is lost: melodic steps in train are small, in the baseline they are not
    assert M.mean_abs_interval(base).mean() > 2 * M.mean_abs_interval(train).mean()


# --- vectorised bootstrap = plain metrics at the point -----------------------------------


def test_weighted_statistics_match_plain_metrics():
    gen, ref = E.clip_windows(_music(300, 5)), E.clip_windows(_music(200, 6))
    ones_g, ones_r = np.ones((1, 300), np.float32), np.ones((1, 200), np.float32)
    w1 = E._weighted_w1(gen[..., 3], ref[..., 3], ones_g, ones_r)[0]
    assert w1 == pytest.approx(scipy.stats.wasserstein_distance(gen[..., 3].ravel(),
                                                                ref[..., 3].ravel()), rel=1e-6)
    df = E.evaluate_sets(ref, {"g": gen}, n_boot=20, fad_embedder=None)
    assert df.at["g", "fmd"] == pytest.approx(M.feature_frechet(gen, ref), rel=1e-6)
    edges = M.channel_edges()
    assert df.at["g", "overlap_velocity"] == pytest.approx(
        M.overlap_area(gen[..., 1], ref[..., 1], edges[1]), rel=1e-5)
    assert df.at["g", "pitch_class_tv"] == pytest.approx(M.pitch_class_distance(
        M.pitch_class_histogram(gen), M.pitch_class_histogram(ref)), rel=1e-5)
    assert df.at["g", "w1_polyphony"] == pytest.approx(
        M.wasserstein(M.polyphony(gen), M.polyphony(ref)), rel=1e-6)
    # channel W1 is on values rounded to 1 ms: within half a step of the exact one
    assert abs(df.at["g", "w1_delta"] - M.wasserstein(gen[..., 2], ref[..., 2])) <= 5e-4


def test_frechet_interval_is_centred_on_the_value_it_was_drawn_around():
    # two sets from one distribution: resampling inflates the distance, so the plain
    # percentile interval misses the value; the shifted one holds it with the same spread
    rng = np.random.default_rng(0)
    n, d = 200, 20
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    wx = I.weighted_reps(np.arange(n), 200, E._set_rng(0, "x"))
    wy = I.weighted_reps(np.arange(n), 200, E._set_rng(0, "y"))
    reps = E._frechet_reps(x, wx, y, wy)
    value, lo, hi = I.shifted_interval(reps, 0.05)
    plain_lo, plain_hi = np.quantile(reps[1:], [0.025, 0.975])
    assert value < plain_lo  # the flaw being corrected
    assert lo < value < hi
    assert hi - lo == pytest.approx(plain_hi - plain_lo)
    # and the ends stay in the metric's range
    assert I.shifted_interval(np.array([0.01, 0.5, 0.6, 0.7]), 0.05)[1] == 0.0
    assert I.shifted_interval(np.array([0.99, 0.5, 0.6, 0.7]), 0.05, (0.0, 1.0))[2] == 1.0


# --- evaluate_sets ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    train, test = _synthetic_split()
    ref = E.reference_windows(test, 400, seed=0)
    model = E.clip_windows(_music(400, 7))
    model[..., 1] = 0.9  # loud, otherwise like the data
    copier = train[:400].copy()
    return E.evaluate_sets(ref, {"model": model, "copier": copier}, train=train, n_boot=60,
                           seed=0, fad_embedder=None, timings={"model": 12.5})


def test_evaluate_sets_rows_and_columns(table):
    assert list(table.index) == [E.FLOOR, "model", "copier", E.MARGINALS, E.UNIFORM]
    assert (table["n"] == 400).all()
    for m in E.metric_columns(table):
        assert (table[f"{m}_lo"] <= table[m]).all() and (table[m] <= table[f"{m}_hi"]).all(), m
    for m in ("fmd_inf", "scale_consistency", "pitch_class_entropy", "ioi_entropy"):
        assert table[m].notna().all(), m
    assert "fad" not in table.columns
    assert table.at["model", "sec_per_10k"] == 12.5 and np.isnan(table.at["copier", "sec_per_10k"])


def test_floor_is_closer_than_uniform_on_every_distance(table):
    for m in E.metric_columns(table):
        if m == "copy_rate" or E.METRICS[m][0] is None:
            continue
        floor, uniform = table.at[E.FLOOR, m], table.at[E.UNIFORM, m]
        assert (floor > uniform) if E.METRICS[m][0] else (floor < uniform), m


def test_metrics_see_what_is_wrong(table):
    # velocity is the model's one flaw; it must be visible there and not on pitch
    assert table.at["model", "w1_velocity"] > table.at[E.MARGINALS, "w1_velocity"]
    assert table.at["model", "overlap_pitch"] > table.at[E.UNIFORM, "overlap_pitch"]
    assert table.at["model", "w1_mean_abs_interval"] < table.at[E.MARGINALS, "w1_mean_abs_interval"]
    assert table.at["copier", "copy_rate"] == 1.0 and table.at["model", "copy_rate"] < 0.5
    # the data's melodies are diatonic: real-like sets are tonal, uniform noise is not
    assert table.at[E.FLOOR, "scale_consistency"] > 0.99
    assert table.at[E.UNIFORM, "scale_consistency_hi"] < 0.9
    # FD∞ separates the copier (real windows) from uniform noise by orders of magnitude
    assert table.at["copier", "fmd_inf"] < 0.2 < 10 < table.at[E.UNIFORM, "fmd_inf"]


def test_evaluate_sets_rejects_bad_input():
    ref = _music(50, 0)
    with pytest.raises(ValueError, match="reserved"):
        E.evaluate_sets(ref, {E.FLOOR: ref}, fad_embedder=None)
    with pytest.raises(ValueError, match="windows of 8 notes"):
        E.evaluate_sets(ref, {"short": ref[:, :4]}, fad_embedder=None)
    with pytest.raises(ValueError, match="timings name unknown"):
        E.evaluate_sets(ref, {"a": ref}, fad_embedder=None, timings={"b": 1.0}, n_boot=2)
    with pytest.raises(ValueError, match="n_boot"):
        E.evaluate_sets(ref, {"a": ref}, fad_embedder=None, n_boot=0)


def test_fad_columns_with_stand_in_embedders(monkeypatch):
    """FAD plumbing (bootstrap, FD∞, two embedders) with cheap embedders: a vector per window."""

    def window_vectors(windows, embedders, cache=None, progress=False):
        out = {"stand-in": np.asarray(windows[:, :, 0], np.float32),  # the pitches
               "other-one": np.asarray(windows[:, :, 1:3].reshape(len(windows), -1), np.float32)}
        return {e: out[e] for e in embedders}

    monkeypatch.setitem(sys.modules, "midilib.fad", types.SimpleNamespace(window_vectors=window_vectors))
    ref = E.clip_windows(_music(300, 8))
    sets = {"same": _music(300, 9), "shifted": _music(300, 9) + np.array([7, 0, 0, 0], "f4")}
    df = E.evaluate_sets(ref, sets, n_boot=40, fad_embedder=["stand-in", "other-one"], n_fad=250)
    assert df.at["same", "fad_lo"] < df.at["same", "fad_hi"]
    assert df.at["shifted", "fad_lo"] > df.at["same", "fad_hi"]
    assert df.at["shifted", "fad_inf_lo"] > df.at["same", "fad_inf_hi"]
    assert (df["n_fad"] == 250).all()
    assert {"fad_other_one", "fad_inf_other_one", "fad_inf_other_one_lo"} <= set(df.columns)
    vec = lambda w: window_vectors(w, ["stand-in"])["stand-in"].astype(np.float64)  # noqa: E731
    expected = M.frechet_distance(*M.gaussian_stats(vec(E.clip_windows(sets["shifted"])[:250])),
                                  *M.gaussian_stats(vec(ref[:250])))
    assert df.at["shifted", "fad"] == pytest.approx(expected, rel=1e-6)
    assert "fad_inf_other_one" in E.metric_columns(df)
    assert R.embedder_agreement(df) is None  # fewer than 3 rows: no rank correlation


def test_missing_fad_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "midilib.fad", None)  # import fails
    ref = _music(20, 0)
    with pytest.raises(ValueError, match="pass fad_embedder=None"):
        E.evaluate_sets(ref, {"a": ref}, n_boot=2, fad_embedder="musicnn")


# --- table, files, README -------------------------------------------------------------------


def test_write_results_and_describe(table, tmp_path):
    csv_path, md_path = R.write_results(table, tmp_path / "out", ["Profile: smoke", "Corpus: x"])
    back = pd.read_csv(csv_path, index_col="set")
    assert list(back.index) == list(table.index)
    np.testing.assert_allclose(back["fmd"], table["fmd"], rtol=1e-5)
    md = md_path.read_text()
    assert md.startswith("Profile: smoke") and "| fmd | ↓ |" in md
    assert f"| metric | better | {E.FLOOR} | model |" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.md"]
    text = R.describe_results(table)
    best = table.loc[["model", "copier"], "fmd"].idxmin()
    assert f"- fmd (lower is better): {best} {R.cell(table, best, 'fmd')}" in text
    assert "- model:" in text and "like the floor" in text
    assert R.describe_results(table.loc[list(E.CALIBRATION)]).startswith("No model sets")


def test_cells_are_rounded_sensibly():
    df = pd.DataFrame({"fmd": [0.012345, 123.456], "fmd_lo": [0.01, 120.0],
                       "fmd_hi": [0.015, 130.0]}, index=["a", "b"])
    assert R.cell(df, "a", "fmd") == "0.0123 [0.0100, 0.0150]"
    assert R.cell(df, "b", "fmd") == "123 [120, 130]"


def test_update_readme_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# T\nintro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    R.update_readme(readme, "| new | table |\n")
    assert readme.read_text() == ("# T\nintro\n<!-- results:start -->\n| new | table |\n"
                                  "<!-- results:end -->\nend\n")
    R.update_readme(readme, "again")
    assert "new" not in readme.read_text() and "again" in readme.read_text()
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="not both found"):
        R.update_readme(readme, "x")
    with pytest.raises(FileNotFoundError):
        R.update_readme(tmp_path / "missing.md", "x")


# --- CLI glue ----------------------------------------------------------------------------------


def test_load_samples_specs_and_errors(tmp_path):
    windows = _music(10, 0)
    np.savez(tmp_path / "samples.npz", samples=windows)
    np.savez(tmp_path / "windows.npz", train=windows[:6], test=windows[6:])
    name, w = C.load_samples(f"vae={tmp_path / 'samples.npz'}")
    assert name == "vae" and np.array_equal(w, windows)
    name, w = C.load_samples(f"train={tmp_path / 'windows.npz'}:train")
    assert name == "train" and len(w) == 6
    with pytest.raises(FileNotFoundError, match="no such samples file"):
        C.load_samples(f"x={tmp_path / 'nope.npz'}")
    with pytest.raises(ValueError, match="no array 'valid'"):
        C.load_samples(f"x={tmp_path / 'windows.npz'}:valid")
    with pytest.raises(ValueError, match="NAME=PATH"):
        C.load_samples(str(tmp_path / "samples.npz"))
    np.savez(tmp_path / "flat.npz", samples=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="expected \\(n, window, 4\\)"):
        C.load_samples(f"x={tmp_path / 'flat.npz'}")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        C.load_samples(f"x={tmp_path / 'junk.npz'}")


def test_run_evaluation_end_to_end(tmp_path):
    train, test = _synthetic_split()
    np.savez(tmp_path / "windows.npz", train=train, test=test, train_file=np.arange(len(train)) // 50,
             test_file=np.arange(len(test)) // 50)
    np.savez(tmp_path / "samples.npz", samples=_music(500, 11), seconds_per_10k=np.float64(3.0))
    df = C.run_evaluation(tmp_path, [f"ddpm={tmp_path / 'samples.npz'}"], tmp_path / "res",
                          embedder=None, n=200, seed=0, n_boot=20, title_lines=["Profile: test"])
    assert df.at["ddpm", "n"] == 200 and df.at["ddpm", "sec_per_10k"] == 3.0
    md = (tmp_path / "res" / "results.md").read_text()
    assert md.startswith("Profile: test") and "Machine:" in md and "200 of 600 test windows" in md and "from 12 pieces" in md
    with pytest.raises(FileNotFoundError, match="windows.npz"):
        C.run_evaluation(tmp_path / "none", [], tmp_path / "res")


def test_floor_beats_uniform_on_real_corpus():
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} absent")
    from midilib.events import read_events, to_windows

    files = sorted(CORPUS.glob("*.mid"))[:8]
    per_file = [to_windows(read_events(p)) for p in files]
    train, test = np.concatenate(per_file[:6]), np.concatenate(per_file[6:])
    ref = E.reference_windows(test, 300, seed=0)
    df = E.evaluate_sets(ref, {}, train=train, n_boot=30, fad_embedder=None)
    for m in ("overlap_pitch", "w1_delta", "w1_mean_abs_interval", "fmd"):
        floor, uniform = df.at[E.FLOOR, m], df.at[E.UNIFORM, m]
        assert (floor > uniform) if E.METRICS[m][0] else (floor < uniform), m
    assert df.at[E.FLOOR, "fmd"] < df.at[E.MARGINALS, "fmd"]


def test_agreed_verdict_states_only_what_both_embedders_say():
    def row(a, b):  # (value, half-width) under fad_inf and under fad_inf_bp
        return {"fad_inf": a[0], "fad_inf_lo": a[0] - a[1], "fad_inf_hi": a[0] + a[1],
                "fad_inf_bp": b[0], "fad_inf_bp_lo": b[0] - b[1], "fad_inf_bp_hi": b[0] + b[1]}
    df = pd.DataFrame({E.FLOOR: row((0.1, 0.2), (0.01, 0.01)),
                       "good": row((0.2, 0.1), (0.05, 0.01)),     # like the floor in one, apart in the other
                       "bad": row((5.0, 0.5), (0.30, 0.02)),      # apart from the floor and from good in both
                       "flip": row((3.0, 0.5), (0.04, 0.005))}).T  # apart from the floor in both
    verdict = R.agreed_verdict(df)
    assert verdict[0] == ("Both fad_inf and fad_inf_bp place apart from the floor: bad, flip; "
                          "like the floor under both: none; the embedders disagree on: good.")
    # good < bad and flip < bad under both; good vs flip: fad_inf says good, fad_inf_bp says flip
    assert verdict[1].endswith("(better first): good < bad; flip < bad.")
    assert R.agreed_verdict(df[["fad_inf", "fad_inf_lo", "fad_inf_hi"]]) == []  # one embedder: nothing to agree
