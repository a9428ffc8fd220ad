"""prepare: many real and broken files in, shards + manifest.csv out; the cache; the CLI."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import mido
import numpy as np
import pytest
from conftest import scale_notes, write_notes_midi

from midilib.cli import main
from midilib.events import read_events, to_windows
from midilib.prepare import (
    MANIFEST_COLUMNS,
    PrepareParams,
    load_manifest,
    load_windows,
    prepare,
    split_files,
)


def _track_bytes(body: bytes) -> bytes:
    return b"MTrk" + len(body).to_bytes(4, "big") + body


def _header(n_tracks: int = 1, division: int = 480, fmt: int = 1) -> bytes:
    return b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + n_tracks.to_bytes(2, "big") + division.to_bytes(2, "big")


def _tempo_file(path: Path, tempo: int, ticks: int) -> Path:
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    for i in range(10):
        track.append(mido.Message("note_on", note=60 + i, velocity=80, time=ticks if i else 0))
        track.append(mido.Message("note_off", note=60 + i, velocity=0, time=10))
    mid.tracks.append(track)
    mid.save(path)
    return path


def make_fuzz_set(folder: Path) -> dict[str, str]:
    """At least 20 broken MIDI files; returns name -> a word their skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_notes_midi(folder / "_good_source.mid", scale_notes(40)).read_bytes()
    (folder / "_good_source.mid").unlink()
    note_on = b"\x00\x90\x3c\x40\x60\x80\x3c\x40"
    bad: dict[str, bytes | None] = {
        "empty_bytes.mid": b"",
        "random_bytes.mid": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "text.mid": b"this is not a MIDI file at all\n" * 20,
        "truncated_header.mid": good[:10],
        "truncated_track.mid": good[: len(good) // 2],
        "header_only.mid": _header(0),
        "missing_track.mid": _header(1),
        "smpte_division.mid": _header(1, division=0xE728) + _track_bytes(note_on + b"\x00\xff\x2f\x00"),
        "zero_division.mid": _header(1, division=0) + _track_bytes(note_on + b"\x00\xff\x2f\x00"),
        "no_status.mid": _header(1) + _track_bytes(b"\x00\x3c\x40" + b"\x00\xff\x2f\x00"),
        "long_varlen.mid": _header(1) + _track_bytes(b"\xff\xff\xff\xff\xff\x90\x3c\x40"),
        "bad_data_byte.mid": _header(1) + _track_bytes(b"\x00\x90\xbc\x40\x60\x80\x3c\x40\x00\xff\x2f\x00"),
        "undefined_status.mid": _header(1) + _track_bytes(b"\x00\xf4\x00\x00"),
        "zip_named_mid.mid": None,  # filled below
        "only_tempo.mid": _header(1) + _track_bytes(b"\x00\xff\x51\x03\x07\xa1\x20\x00\xff\x2f\x00"),
        "only_note_offs.mid": _header(1) + _track_bytes(b"\x00\x80\x3c\x40\x10\x80\x3e\x40\x00\xff\x2f\x00"),
        "never_released.mid": _header(1) + _track_bytes(b"\x00\x90\x3c\x40\x10\x90\x3e\x40\x00\xff\x2f\x00"),
        "zero_tempo.mid": _header(1) + _track_bytes(b"\x00\xff\x51\x03\x00\x00\x00" + note_on + b"\x00\xff\x2f\x00"),
        "huge_ticks.mid": _header(1) + _track_bytes(b"\x00\x90\x3c\x40\xff\xff\xff\x7f\x80\x3c\x40\x00\xff\x2f\x00"),
    }
    reasons = {
        "empty_bytes.mid": "", "random_bytes.mid": "", "text.mid": "", "truncated_header.mid": "",
        "truncated_track.mid": "", "header_only.mid": "no notes", "missing_track.mid": "",
        "smpte_division.mid": "", "zero_division.mid": "", "no_status.mid": "", "long_varlen.mid": "",
        "bad_data_byte.mid": "", "undefined_status.mid": "", "zip_named_mid.mid": "",
        "only_tempo.mid": "no notes", "only_note_offs.mid": "no notes", "never_released.mid": "no notes",
        "zero_tempo.mid": "", "huge_ticks.mid": "",
    }
    for name, data in bad.items():
        if data is not None:
            (folder / name).write_bytes(data)
    with zipfile.ZipFile(folder / "zip_named_mid.mid", "w") as zf:
        zf.writestr("x.txt", "hello")
    write_notes_midi(folder / "drums_only.mid", scale_notes(30), drum=True)
    reasons["drums_only.mid"] = "drum"
    write_notes_midi(folder / "too_short.mid", scale_notes(5))
    reasons["too_short.mid"] = "fewer than 8 notes"
    _tempo_file(folder / "absurd_tempo.mid", tempo=16_000_000, ticks=1_000_000)
    reasons["absurd_tempo.mid"] = ""
    return reasons


@pytest.fixture
def mixed_corpus(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    root = tmp_path / "corpus"
    reasons = make_fuzz_set(root / "broken")
    good = []
    for i in range(6):
        name = f"Chopin, Frédéric, Étude Op. 10, No. {i}, abcDEF{i}.mid"
        write_notes_midi(root / name, scale_notes(40 + 8 * i, seed=i))
        good.append(name)
    write_notes_midi(root / "nested" / "UPPER.MIDI", scale_notes(33, seed=9))
    good.append("nested/UPPER.MIDI")
    return root, reasons, good


def test_fuzz_set_is_skipped_with_reasons_and_good_files_are_kept(mixed_corpus, tmp_path):
    root, reasons, good = mixed_corpus
    assert len(reasons) >= 20
    result = prepare(root, tmp_path / "out", PrepareParams(test_fraction=0.3), workers=2, progress=False)
    manifest = {r["path"]: r for r in result.manifest}
    assert len(manifest) == len(reasons) + len(good)
    for name, word in reasons.items():
        row = manifest[f"broken/{name}"]
        assert row["status"] != "ok", name
        assert word.lower() in row["status"].lower(), (name, row["status"])
        assert "\n" not in row["status"]
    expected_windows = 0
    for name in good:
        row = manifest[name]
        assert row["status"] == "ok"
        n = len(read_events(root / name))
        assert int(row["notes"]) == n and int(row["windows"]) == n // 8
        expected_windows += n // 8
    assert len(result.train) + len(result.valid) + len(result.test) == expected_windows
    row = manifest[good[1]]
    assert row["composer"] == "Chopin, Frédéric" and row["title"] == "Étude Op. 10, No. 1"
    assert "skipped" in result.summary and f"{len(good)} files ok" in result.summary


def test_windows_layout_split_by_file_and_order(mixed_corpus, tmp_path):
    root, _, good = mixed_corpus
    out = tmp_path / "out"
    result = prepare(root, out, PrepareParams(test_fraction=0.3, seed=3), workers=1, progress=False)
    data = load_windows(out)
    assert data["train"].dtype == np.float32 and data["train"].shape[1:] == (8, 4)
    train, train_file = data["train"], data["train_file"]
    test_file = data["test_file"]
    assert set(train_file).isdisjoint(set(test_file))  # no file in both splits
    manifest = load_manifest(out)
    assert tuple(manifest[0].keys()) == MANIFEST_COLUMNS
    ok_train = [r for r in manifest if r["split"] == "train"]
    # files in sorted relative-path order, windows in file order
    expected = np.concatenate([to_windows(read_events(root / r["path"])) for r in ok_train])
    np.testing.assert_array_equal(train, expected)
    assert [r["path"] for r in manifest] == sorted(r["path"] for r in manifest)
    n_test_files = sum(r["split"] == "test" for r in manifest)
    assert n_test_files == round(0.3 * len(good))
    again = prepare(root, tmp_path / "other", PrepareParams(test_fraction=0.3, seed=3), workers=2, progress=False)
    np.testing.assert_array_equal(again.train, result.train)  # parallel == sequential, seeded split


def test_three_splits_by_piece_and_test_unchanged_by_valid():
    from midilib.prepare import assign_splits

    labels = assign_splits(50, 0.1, 0.1, 7)
    assert (labels == "test").sum() == 8 and (labels == "valid").sum() == 8  # MIN_PIECES
    labels = assign_splits(200, 0.1, 0.1, 7)
    assert (labels == "test").sum() == 20 and (labels == "valid").sum() == 20
    np.testing.assert_array_equal(labels == "test", split_files(200, 0.1, 7))  # test as before valid existed
    assert (assign_splits(50, 0.1, 0.0, 7) == "valid").sum() == 0
    groups = [i // 2 for i in range(40)]  # 20 pieces of 2 files
    labels = assign_splits(40, 0.1, 0.1, 1, groups)
    for g in range(20):
        assert labels[2 * g] == labels[2 * g + 1]
    assert list(assign_splits(2, 0.1, 0.1, 0)).count("train") == 1  # a training piece remains


def test_valid_split_is_written_and_options_checked(mixed_corpus, tmp_path):
    root, _, good = mixed_corpus
    result = prepare(root, tmp_path / "out", PrepareParams(test_fraction=0.3, valid_fraction=0.3),
                     progress=False)
    data = load_windows(tmp_path / "out")
    assert {"train", "valid", "test", "train_file", "valid_file", "test_file"} <= set(data)
    ids = [set(data[f"{s}_file"]) for s in ("train", "valid", "test")]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])
    splits = [r["split"] for r in result.manifest if r["status"] == "ok"]
    assert splits.count("valid") == round(0.3 * len(good)) and "valid" in result.summary
    assert len(result.valid) == len(result.valid_file) > 0
    for bad, match in ((PrepareParams(valid_fraction=-0.1), "--valid-fraction"),
                       (PrepareParams(test_fraction=0.5, valid_fraction=0.5), "must be < 1")):
        with pytest.raises(ValueError, match=match):
            prepare(root, tmp_path / "bad", bad, progress=False)


def test_split_fraction_zero_and_bounds():
    assert not split_files(10, 0.0, 0).any()
    assert split_files(9, 0.1, 0).sum() == 1
    assert split_files(10, 0.1, 0).sum() == 2  # at least pieces // 5 ...
    assert split_files(100, 0.01, 0).sum() == 8  # ... up to MIN_PIECES: enough to resample
    assert split_files(2, 0.01, 0).sum() == 1  # at least one test file
    np.testing.assert_array_equal(split_files(50, 0.1, 7), split_files(50, 0.1, 7))
    assert not np.array_equal(split_files(50, 0.5, 1), split_files(50, 0.5, 2))


def test_cache_is_reused_and_invalidated(mixed_corpus, tmp_path):
    root, _, good = mixed_corpus
    out = tmp_path / "out"
    first = prepare(root, out, progress=False)
    assert not first.reused
    assert prepare(root, out, progress=False).reused
    assert not prepare(root, out, PrepareParams(window=4), progress=False).reused
    write_notes_midi(root / good[0], scale_notes(80, seed=42))  # a changed file
    changed = prepare(root, out, PrepareParams(window=4), progress=False)
    assert not changed.reused


def test_real_sample_corpus(sample_dir, tmp_path):
    result = prepare(sample_dir, tmp_path / "sample", progress=False)
    assert all(r["status"] == "ok" for r in result.manifest)
    notes = sum(int(r["notes"]) for r in result.manifest)
    assert notes == 214731
    assert len(result.train) + len(result.valid) + len(result.test) == sum(int(r["windows"]) for r in result.manifest)
    assert sum(r["split"] == "test" for r in result.manifest) == 8  # MIN_PIECES (round(0.1 * 56) is 6)
    assert sum(r["split"] == "valid" for r in result.manifest) == 8
    giant = [r for r in result.manifest if r["composer"] != "unknown"]
    assert {r["composer"] for r in giant} >= {"Liszt, Franz", "Ravel, Maurice"}


def test_zip_source(mixed_corpus, tmp_path):
    root, _, good = mixed_corpus
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in good:
            zf.write(root / name, name)
    result = prepare(archive, tmp_path / "out", progress=False)
    assert len(result.manifest) == len(good)


def test_cli_errors_are_one_line(tmp_path, capsys, mixed_corpus):
    root, _, _ = mixed_corpus
    cases = [
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "no such file or folder"),
        ([str(root), "--out", str(tmp_path / "o"), "--test-fraction", "1"], "--test-fraction"),
        ([str(root), "--out", str(tmp_path / "o"), "--window", "0"], "--window"),
        ([str(root), "--out", str(tmp_path / "o"), "--s-max", "-1"], "--s-max"),
        ([str(root), "--out", str(tmp_path / "o"), "--workers", "0"], "--workers"),
        ([str(root / "broken"), "--out", str(tmp_path / "o")], "no usable MIDI file"),
    ]
    for argv, needle in cases:
        assert main(["prepare", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert main(["prepare", str(root), "--out", str(tmp_path / "ok"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "files ok" in captured.out and "skipped broken/text.mid" in captured.err


def test_only_broken_files_in_a_copy_keep_nothing(mixed_corpus, tmp_path):
    root, _, _ = mixed_corpus
    only_bad = tmp_path / "only_bad"
    shutil.copytree(root / "broken", only_bad)
    with pytest.raises(ValueError, match="no usable MIDI file"):
        prepare(only_bad, tmp_path / "o", progress=False)


def test_versions_of_one_piece_stay_on_one_side(tmp_path):
    from midilib.corpus import piece_key

    assert piece_key("Bach, Johann Sebastian", "bwv248.23-2") == piece_key("Bach, Johann Sebastian", "bwv248.23-s")
    assert piece_key("Bach, Johann Sebastian", "bwv248.23") != piece_key("Bach, Johann Sebastian", "bwv248.24")
    root = tmp_path / "c"
    for i in range(8):
        for version in ("2", "s"):
            write_notes_midi(root / f"Bach, Johann Sebastian, bwv{i}.1-{version}, music21.mid", scale_notes(16, seed=i))
    for seed in range(5):
        result = prepare(root, tmp_path / f"o{seed}", PrepareParams(test_fraction=0.25, seed=seed), progress=False)
        split = {r["path"].split("-")[0]: set() for r in result.manifest}
        for r in result.manifest:
            split[r["path"].split("-")[0]].add(r["split"])
        assert all(len(sides) == 1 for sides in split.values()), split
        assert sum(r["split"] == "test" for r in result.manifest) == 4  # 2 pieces of 2 versions


def _old_arrays(root: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    """The arrays as prepare built them in memory before shards: per split, files in order."""
    arrays = {}
    for split in ("train", "valid", "test"):
        rows = [(i, r) for i, r in enumerate(manifest) if r["split"] == split]
        parts = [to_windows(read_events(root / r["path"])) for _, r in rows]
        arrays[split] = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 8, 4), np.float32)
        ids = [np.full(len(w), i, dtype=np.int32) for (i, _), w in zip(rows, parts)]
        arrays[f"{split}_file"] = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    return arrays


def test_tiny_shards_give_the_old_arrays_and_content_key(mixed_corpus, tmp_path):
    from midilib.prepare import content_key

    root, reasons, good = mixed_corpus
    out = tmp_path / "out"
    result = prepare(root, out, PrepareParams(test_fraction=0.3, valid_fraction=0.2), workers=2,
                     progress=False, shard_rows=7)
    manifest = load_manifest(out)
    assert sum(r["status"] != "ok" for r in manifest) == len(reasons)  # the broken files: skipped, reported
    assert sum(r["status"] == "ok" for r in manifest) == len(good)
    old = _old_arrays(root, manifest)
    assert len(old["train"]) > 14 and len(list((out / "shards").glob("train-*.npy"))) > 2
    new = load_windows(out)
    assert set(new) == set(old)
    for name in old:
        assert new[name].dtype == old[name].dtype and np.array_equal(new[name], old[name]), name
    assert (out / "content.txt").read_text() == content_key(old)  # trained runs keep their data key
    np.testing.assert_array_equal(result.valid_file, old["valid_file"])
    from midilib.cli import load_samples

    assert np.array_equal(load_samples(f"t={out}:train")[1], old["train"])  # `evaluate --samples DIR:train`
    with pytest.raises(ValueError, match="no array 'nope'"):
        load_samples(f"t={out}:nope")
    assert not (out / "windows.npz").exists() and not list(out.glob(".prepare-*"))
    bigger = prepare(root, tmp_path / "big", PrepareParams(test_fraction=0.3, valid_fraction=0.2), workers=1,
                     progress=False)
    assert (bigger.out / "content.txt").read_text() == content_key(old)  # the shard size changes nothing


def test_an_old_windows_npz_folder_loads_and_is_prepared_again(mixed_corpus, tmp_path):
    from midilib.prepare import load_prepared

    root, _, good = mixed_corpus
    out = tmp_path / "out"
    prepare(root, out, progress=False)
    arrays = load_windows(out)
    shutil.rmtree(out / "shards")  # as an earlier version left it
    np.savez(out / "windows.npz", **arrays)
    (out / "key.txt").write_text("an earlier version's key")
    again = load_windows(out)
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays) and set(again) == set(arrays)
    old = load_prepared(out)
    assert np.array_equal(old.train, arrays["train"]) and f"{len(arrays['train'])} train" in old.summary
    fresh = prepare(root, out, progress=False)
    assert not fresh.reused and not (out / "windows.npz").exists() and (out / "shards").is_dir()
    assert np.array_equal(fresh.train, arrays["train"])


def test_a_crash_while_preparing_leaves_the_folder_as_it_was(mixed_corpus, tmp_path, monkeypatch):
    import midilib.prepare as P

    root, _, _ = mixed_corpus
    out = tmp_path / "out"
    first = prepare(root, out, progress=False)
    key, content = (out / "key.txt").read_text(), (out / "content.txt").read_text()

    def crash(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(P.ShardWriter, "append", crash)
    with pytest.raises(OSError, match="disk full"):
        prepare(root, out, PrepareParams(window=4), progress=False)
    assert (out / "key.txt").read_text() == key and (out / "content.txt").read_text() == content
    assert not list(out.glob(".prepare-*")) and not list((out / "shards").glob(".*"))
    monkeypatch.undo()
    (out / ".prepare-999999999-dead").mkdir()  # a killed prepare's staging folder (no such process)
    assert prepare(root, out, progress=False).reused
    prepare(root, out, PrepareParams(window=4), progress=False)
    assert not list(out.glob(".prepare-*"))
    prepare(root, out, progress=False)
    assert np.array_equal(load_windows(out)["train"], first.train)
