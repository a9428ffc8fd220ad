"""Composer labels: the rules of `corpus.composers_of`, the CSV, folding, groups; labels never move the split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import REPO, scale_notes, write_notes_midi

from midilib import corpus
from midilib.cli import main
from midilib.prepare import PrepareParams, assign_splits, prepare

# the digests of the two corpora every trained run is keyed by (data/prepared/*/content.txt)
SAMPLE_CONTENT = "f013fd816633fbf1d5367452e264043bfe9a80bf4256cdac564b654ccd845e09"
DEFAULT_CONTENT = "e7d724839142590ba8bf5e86c98583944ba8f78784226b0db75daefdeed0ddb6"

UNDERSCORE_NAMES = [
    "Debussy_Clair_de_Lune_abc123.mid", "Debussy_Arabesque_No_1_def456.mid",
    "Chopin_Nocturne_Op_9_ghi789.mid", "Chopin_Ballade_No_1_jkl012.mid",
    "Satie_Gymnopedie_No_1_mno345.mid", "Satie_Gnossienne_No_1_pqr678.mid",
    "Bach_Prelude_in_C_stu901.mid", "Bach_Fugue_in_C_vwx234.mid",
    "Prelude_in_C_minor_yza567.mid", "track_01_bcd890.mid",
]


def _rel(names: list[str]) -> list[Path]:
    return [Path("/corpus") / n for n in names]


def test_rules_in_order():
    files = _rel([
        "Liszt, Franz, Hungarian Rhapsody No.2, S.244_2, LdH1hSWGFGU.mid",  # comma form
        "Liszt_Etude_No_1_abcdefghijk.mid",  # underscore: one "Liszt, ..." in the corpus
        "Debussy_Clair_de_Lune_abc123.mid",  # underscore: no comma-form Debussy
        "Prelude_in_C_x.mid",  # a title word, not a surname
        "BWV_846_prelude.mid", "track_01_a.mid", "Dvořák_Humoresque_x.mid", "Ab_cd_ef.mid", "Bach_x.mid",
    ])
    assert corpus.composers_of(files, "/corpus") == [
        "Liszt, Franz", "Liszt, Franz", "Debussy", "unknown",
        "unknown", "unknown", "Dvořák", "unknown", "unknown",
    ]


def test_two_full_names_keep_the_surname_alone():
    files = _rel(["Bach, Johann Sebastian, Prelude, abcdefghijk.mid",
                  "Bach, Carl Philipp Emanuel, Sonata, bcdefghijkl.mid", "Bach_Fugue_in_C_x.mid"])
    assert corpus.composers_of(files, "/corpus")[2] == "Bach"


def test_folders_and_overrides():
    root = Path("/corpus")
    files = [root / "chopin" / "x.mid", root / "liszt" / "y.mid", root / "Debussy_Clair_de_Lune_a.mid",
             root / "Ravel, Maurice, Jeux d'eau, v-QmwrhO3ec.mid", root / "satie" / "Debussy_Reverie_b.mid"]
    assert corpus.composers_of(files, root) == ["chopin", "liszt", "Debussy", "Ravel, Maurice", "satie"]
    overrides = {"chopin/x.mid": "Chopin, Frédéric", "Ravel, Maurice, Jeux d'eau, v-QmwrhO3ec.mid": "Someone"}
    assert corpus.composers_of(files, root, overrides)[:4] == ["Chopin, Frédéric", "liszt", "Debussy", "Someone"]
    # one wrapping folder (as a zip has) names no composer: the underscore rule applies
    wrapped = [root / "midis" / "Debussy_Clair_de_Lune_a.mid", root / "midis" / "x.mid"]
    assert corpus.composers_of(wrapped, root) == ["Debussy", "unknown"]
    with pytest.raises(ValueError, match="no path of the composers CSV"):
        corpus.composers_of(files, root, {"elsewhere/x.mid": "A"})


def test_fold_composers():
    composers = ["A", "A", "A", "B", "B", "C"]
    assert corpus.fold_composers(composers, 2) == ["A", "A", "A", "B", "B", "other"]
    # by pieces: A's three files are one piece
    assert corpus.fold_composers(composers, 2, ["p", "p", "p", "q", "r", "s"]) == [
        "other", "other", "other", "B", "B", "other"]
    with pytest.raises(ValueError):
        corpus.fold_composers(composers, 0)


def test_group_key_joins_cuts_of_one_recording():
    keys = [corpus.group_key(n) for n in (
        "Chopin, Frédéric, Études, Op.10, g0hoN6_HDVU.mid", "Chopin_Etudes_Op10_g0hoN6_HDVU_no_12_cut.mid",
        "Chopin_Etudes_Op10_g0hoN6_HDVU_no_9_cut.mid", "Beethoven_Sonata_No_3_3asWeutbY0c_cut_midi.mid",
        "Liszt_Don_Juan_S418_JI6JfJXcUjU_part1.mid", "Bach_Fugue_BWV862_gCL5Zvnt0TU_a.mid",
        "Bach, Johann Sebastian, bwv248.23-2, music21.mid", "Bach, Johann Sebastian, bwv248.23-s, music21.mid",
        "Debussy_Clair_de_Lune.mid",
    )]
    assert keys[0] == keys[1] == keys[2] == "youtube:g0hoN6_HDVU"
    assert keys[3:6] == ["youtube:3asWeutbY0c", "youtube:JI6JfJXcUjU", "youtube:gCL5Zvnt0TU"]
    assert keys[6] == keys[7] == "piece:" + corpus.piece_key("Bach, Johann Sebastian", "bwv248.23")
    assert keys[8] == "file:Debussy_Clair_de_Lune"
    assert corpus.group_key("a/piece_1.mid") != corpus.group_key("b/piece_1.mid")


def test_composers_csv_errors(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("path,composer,note\na/x.mid,Chopin,\n")
    assert corpus.read_composers_csv(good) == {"a/x.mid": "Chopin"}
    missing = tmp_path / "cols.csv"
    missing.write_text("file,who\nx.mid,A\n")
    with pytest.raises(ValueError, match="cols.csv: a composers CSV needs columns path,composer"):
        corpus.read_composers_csv(missing)
    with pytest.raises(ValueError, match="nope.csv: cannot read"):
        corpus.read_composers_csv(tmp_path / "nope.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00path")
    with pytest.raises(ValueError, match="bin.csv"):
        corpus.read_composers_csv(binary)


@pytest.fixture(scope="module")
def underscore_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("underscore")
    for i, name in enumerate(UNDERSCORE_NAMES):
        write_notes_midi(root / name, scale_notes(40, seed=i))
    return root


def test_labels_change_the_column_not_the_split(underscore_corpus, tmp_path):
    root = underscore_corpus
    params = PrepareParams(test_fraction=0.2, valid_fraction=0.2)
    plain = prepare(root, tmp_path / "plain", params, workers=1, progress=False)
    rows = plain.manifest
    assert [r["composer"] for r in rows] == corpus.composers_of(corpus.list_midi_files(root), root)
    assert {r["composer"] for r in rows} == {"Bach", "Chopin", "Debussy", "Satie", "unknown"}
    # the split is the one the file names alone gave before composers were read from them
    files = corpus.list_midi_files(root)
    before = assign_splits(len(files), 0.2, 0.2, 0, [corpus.piece_key(*corpus.describe(f)) for f in files])
    assert [r["split"] for r in rows] == list(before)
    assert len(set(before)) == 3
    content = (plain.out / "content.txt").read_text()
    # a CSV relabelling every file: a new manifest column, the same split and arrays
    labels = tmp_path / "labels.csv"
    labels.write_text("path,composer\n" + "".join(f"{n},Composer {i % 3}\n" for i, n in enumerate(UNDERSCORE_NAMES)))
    relabelled = prepare(root, tmp_path / "plain", params, workers=1, progress=False, composers=labels)
    assert not relabelled.reused  # the labels are part of the key
    new_rows = relabelled.manifest
    assert [r["composer"] for r in new_rows] != [r["composer"] for r in rows]
    assert {r["composer"] for r in new_rows} == {"Composer 0", "Composer 1", "Composer 2"}
    assert [r["split"] for r in new_rows] == [r["split"] for r in rows]
    assert (relabelled.out / "content.txt").read_text() == content


def test_folder_labels_leave_pieces_as_they_were(tmp_path):
    """``a/piece_1.mid`` and ``b/piece_1.mid`` were one piece to the split; they stay one,
    though their composers (their folders) now differ."""
    root = tmp_path / "corpus"
    for folder in ("alpha", "beta"):
        for i in range(5):
            write_notes_midi(root / folder / f"piece_{i}.mid", scale_notes(24, seed=i))
    result = prepare(root, tmp_path / "out", PrepareParams(test_fraction=0.2, valid_fraction=0.2),
                     workers=1, progress=False)
    rows = result.manifest
    assert {r["composer"] for r in rows} == {"alpha", "beta"}
    split = {r["path"]: r["split"] for r in rows}
    assert all(split[f"alpha/piece_{i}.mid"] == split[f"beta/piece_{i}.mid"] for i in range(5))
    assert set(split.values()) == {"train", "valid", "test"}


def test_prepare_cli_composers(underscore_corpus, tmp_path, capsys):
    root = underscore_corpus
    bad = tmp_path / "bad.csv"
    bad.write_text("name,composer\nx.mid,A\n")
    for csv_path, needle in ((bad, "bad.csv: a composers CSV needs columns"), (tmp_path / "none.csv", "none.csv")):
        assert main(["prepare", str(root), "--out", str(tmp_path / "o"), "--composers", str(csv_path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    good = tmp_path / "good.csv"
    good.write_text(f"path,composer\n{UNDERSCORE_NAMES[-1]},Anonymous\n")
    assert main(["prepare", str(root), "--out", str(tmp_path / "o"), "--composers", str(good), "--quiet"]) == 0
    with open(tmp_path / "o" / "manifest.csv", newline="") as f:
        rows = {r["path"]: r["composer"] for r in csv.DictReader(f)}
    assert rows[UNDERSCORE_NAMES[-1]] == "Anonymous" and rows[UNDERSCORE_NAMES[0]] == "Debussy"


@pytest.mark.parametrize("corpus_name", ["giantmidi-sample", "default"])
def test_known_corpora_keep_their_content(corpus_name, tmp_path):
    """Re-preparing with composer labels leaves the arrays that trained runs are keyed by."""
    if corpus_name == "default":
        source, expected = REPO / "data" / "default-corpus", DEFAULT_CONTENT
        if not (source / "corpus.json").exists():
            pytest.skip("embedded corpus not built (make set-up)")
    else:
        source, expected = REPO.parent / "shared" / "corpora" / "giantmidi-sample", SAMPLE_CONTENT
        if not source.is_dir():
            pytest.skip(f"real GiantMIDI-Piano sample absent ({source})")
    result = prepare(source, tmp_path / corpus_name, workers=2, progress=False)
    assert (result.out / "content.txt").read_text() == expected
    composers = {r["composer"] for r in result.manifest}
    if corpus_name == "giantmidi-sample":
        assert "unknown" not in composers
        assert {"Debussy", "Schubert", "Chopin, Frédéric", "Liszt, Franz"} <= composers
    else:
        assert "Bach, Johann Sebastian" in composers and "unknown" not in composers
