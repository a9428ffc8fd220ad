"""The composer probe: features, labels, cross-validation against the majority baseline, classify, the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import write_notes_midi

from midilib import probe
from midilib.cli import main

COMPOSERS = ("Alkan", "Byrd", "Czerny", "Dufay")
MEAN_PITCH = {"Alkan": 40.0, "Byrd": 55.0, "Czerny": 70.0, "Dufay": 85.0}


def _notes(mean_pitch: float, n: int, rng: np.random.Generator) -> np.ndarray:
    notes = np.empty((n, 4))
    notes[:, 0] = np.rint(rng.normal(mean_pitch, 4.0, n)).clip(21, 108)
    notes[:, 1] = rng.uniform(0.2, 0.9, n)
    notes[:, 2] = rng.choice([0.0, 0.125, 0.25, 0.5], n)
    notes[:, 3] = rng.uniform(0.05, 1.5, n)
    return notes


def _corpus(groups_per_composer: int = 8, files_per_group: int = 2, seed: int = 0):
    """(features, labels, groups): composers differ in mean pitch; files of a group share a
    register offset (a recording's own character), so groups, not files, are independent."""
    rng = np.random.default_rng(seed)
    feats, labels, groups = [], [], []
    for c in COMPOSERS:
        for g in range(groups_per_composer):
            offset = rng.normal(0.0, 2.0)
            for _ in range(files_per_group):
                feats.append(probe.window_statistics(_notes(MEAN_PITCH[c] + offset, 200, rng)))
                labels.append(c)
                groups.append(f"{c}-{g}")
    return np.array(feats), np.array(labels), np.array(groups)


def test_window_statistics():
    notes = np.array([[60, 0.5, 0.0, 1.0], [64, 0.7, 0.5, 0.5], [67, 0.5, 0.01, 0.5], [72, 0.3, 0.5, 2.0]])
    s = dict(zip(probe.STAT_NAMES, probe.window_statistics(notes)))
    assert len(probe.STAT_NAMES) == len(probe.window_statistics(notes)) == 24
    assert s["pitch_mean"] == pytest.approx(65.75) and s["pitch_range"] == 12
    assert s["pitch_std"] == pytest.approx(np.std([60, 64, 67, 72]))
    assert s["velocity_mean"] == pytest.approx(0.5) and s["ioi_mean"] == pytest.approx(1.01 / 4)
    assert s["duration_mean"] == pytest.approx(1.0) and s["notes_per_second"] == pytest.approx(4 / 1.01)
    assert s["chord_share"] == pytest.approx(1 / 3) and s["mean_abs_interval"] == pytest.approx(4.0)
    assert s["pitch_class_0"] == pytest.approx(0.5) and s["pitch_class_4"] == s["pitch_class_7"] == 0.25
    assert probe.window_statistics(notes[[0, 0]])[probe.STAT_NAMES.index("notes_per_second")] == 0.0
    with pytest.raises(ValueError):
        probe.window_statistics(notes[:1])


def test_file_statistics_concatenate_each_files_windows():
    rng = np.random.default_rng(0)
    windows = rng.uniform(0, 1, (6, 8, 4))
    windows[..., 0] = rng.integers(40, 80, (6, 8))
    owner = np.array([5, 5, 2, 2, 2, 9])
    ids, stats = probe.file_statistics(windows, owner)
    assert list(ids) == [2, 5, 9]
    np.testing.assert_allclose(stats[0], probe.window_statistics(windows[2:5].reshape(-1, 4)))


def test_probe_beats_the_majority_when_composers_differ():
    features, labels, groups = _corpus()
    cv = probe.cross_validate(features, labels, groups, folds=4, seed=0)
    # 23 of the 24 statistics carry nothing here, which costs a 64-file probe dearly (pitch
    # mean alone scores 1.0): still far above the majority, whose interval it clears
    assert cv.accuracy[0] > 0.6 and cv.baseline[0] <= 0.3
    assert cv.accuracy[1] > cv.baseline[2]
    only_pitch = probe.cross_validate(features[:, :1], labels, groups, folds=4, seed=0)
    assert only_pitch.accuracy[0] > 0.9
    for f in range(4):  # a group is never split across folds
        held = set(groups[cv.fold == f])
        assert not held & set(groups[cv.fold != f])
        names, counts = np.unique(labels[cv.fold != f], return_counts=True)  # the training folds' majority
        assert set(cv.majority[cv.fold == f]) == {names[np.argmax(counts)]}


def test_probe_does_not_beat_the_majority_on_random_labels():
    features, labels, groups = _corpus()
    rng = np.random.default_rng(1)
    by_group = {g: rng.choice(COMPOSERS) for g in np.unique(groups)}  # random composer per group
    shuffled = np.array([by_group[g] for g in groups])
    cv = probe.cross_validate(features, shuffled, groups, folds=4, seed=0)
    assert cv.accuracy[1] <= cv.baseline[0] <= cv.accuracy[2]
    assert cv.accuracy[0] < 0.5
    for f in range(4):  # unbalanced classes: the baseline is the training folds' majority
        names, counts = np.unique(shuffled[cv.fold != f], return_counts=True)
        assert set(cv.majority[cv.fold == f]) == {names[np.argmax(counts)]}


def test_labels_fold_and_drop():
    composers = ["A"] * 4 + ["B"] * 3 + ["C", "D"] + ["unknown"] * 2
    groups = ["a1", "a2", "a3", "a3", "b1", "b2", "b3", "c1", "d1", "u1", "u2"]
    chosen = probe.probe_labels(composers, groups, min_pieces=3)
    assert list(chosen.labels) == ["A"] * 4 + ["B"] * 3 + ["other"] * 2
    assert chosen.counts == {"A": (4, 3), "B": (3, 3), "other": (2, 2)}
    assert chosen.dropped == {"composer unknown": 2}
    # an "other" of one group is left out
    chosen = probe.probe_labels(composers[:8], groups[:8], min_pieces=3)
    assert list(chosen.labels) == ["A"] * 4 + ["B"] * 3 and chosen.dropped == {"other (fewer than 2 groups)": 1}
    with pytest.raises(ValueError, match="two classes"):
        probe.probe_labels(["A", "A", "unknown"], ["a1", "a2", "u"], min_pieces=2)
    with pytest.raises(ValueError, match="min-pieces"):
        probe.probe_labels(composers, groups, min_pieces=1)
    with pytest.raises(ValueError, match="--folds"):
        probe.folds_of(np.array(["A", "B"]), np.array(["g", "h"]), folds=3)


def test_classify_generated_pieces():
    features, labels, _ = _corpus()
    pitch = slice(0, 1)  # the pitch mean: what tells these composers apart
    fitted = probe.fit_probe(features[:, pitch], labels)
    rng = np.random.default_rng(7)
    new = np.stack([probe.window_statistics(_notes(MEAN_PITCH[c], 200, rng))[pitch] for c in COMPOSERS])
    predicted, probabilities = probe.classify(fitted, new)
    assert list(predicted) == list(COMPOSERS)  # a piece "in the style of" each classifies as it
    assert list(probabilities.columns) == sorted(COMPOSERS)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert all(probabilities[c].iloc[i] == probabilities.iloc[i].max() for i, c in enumerate(COMPOSERS))
    assert probabilities["Alkan"].iloc[0] > 0.5 and probabilities["Dufay"].iloc[3] > 0.5
    with pytest.raises(ValueError, match="two classes"):
        probe.fit_probe(features[:3], labels[:3])


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory) -> Path:
    """Two composers in folders (the folder rule), eight pieces each, apart in register."""
    root = tmp_path_factory.mktemp("composers")
    rng = np.random.default_rng(0)
    for c in COMPOSERS[:2]:
        for i in range(8):
            t, notes = 0.0, []
            for _ in range(96):
                t += float(rng.choice([0.125, 0.25, 0.5]))
                pitch = int(np.clip(rng.normal(MEAN_PITCH[c], 4.0), 21, 108))
                notes.append((pitch, t, t + float(rng.uniform(0.1, 0.8)), int(rng.integers(30, 110))))
            write_notes_midi(root / c.lower() / f"piece_{i}.mid", notes)
    return root


def test_cli_probe(folder_corpus, tmp_path, capsys):
    from midilib.prepare import prepare
    from midilib.runs import train_model

    data = tmp_path / "data"
    prepare(folder_corpus, data, workers=1, progress=False)
    run = tmp_path / "vae"
    train_model("vae", data, "smoke", run, max_steps=2, progress=False)
    out = tmp_path / "probe.csv"
    argv = ["probe", "--run", str(run), "--data", str(data), "--folds", "5", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "16 files in 16 groups" in text and "2 composers" in text and "alkan 8 (8)" in text
    with open(out, newline="") as f:
        rows = {r["features"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"vae latents", "window statistics", "majority"}
    assert float(rows["window statistics"]["accuracy"]) > float(rows["majority"]["high"])
    assert all(int(r["files"]) == 16 and int(r["composers"]) == 2 for r in rows.values())
    cases = [
        (["--run", str(run), "--data", str(tmp_path / "nope")], "manifest.csv: not found"),
        (["--run", str(tmp_path / "norun"), "--data", str(data)], "not found"),
        (["--run", str(run), "--data", str(data), "--min-pieces", "9"], "two classes"),
        (["--run", str(run), "--data", str(data), "--folds", "1"], "--folds"),
        (["--run", str(run), "--data", str(data), "--folds", "40"], "--folds"),
    ]
    for args, needle in cases:
        assert main(["probe", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_the_giantmidi_sample_groups_cuts_of_one_recording(sample_dir):
    """On the real sample, the probe's groups join a recording's cuts (no fold leaks them)."""
    from midilib import corpus

    files = corpus.list_midi_files(sample_dir)
    groups = {corpus.group_key(f) for f in files}
    composers = corpus.composers_of(files, sample_dir)
    assert len(files) == 56 and len(groups) == 38 and "unknown" not in composers
    chosen = probe.probe_labels(composers, [corpus.group_key(f) for f in files], min_pieces=3)
    assert len(chosen.counts) == 8 and chosen.counts["Debussy"] == (11, 4)
