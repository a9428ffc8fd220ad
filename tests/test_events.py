"""Condensed note events: exact semantics, the fast parser against pretty_midi, the round trip."""

from __future__ import annotations

import warnings

import mido
import numpy as np
import pytest
from conftest import scale_notes, write_notes_midi

from midilib.events import (
    MidiError,
    events_to_midi,
    notes_to_events,
    read_events,
    to_windows,
    write_midi,
)


def test_rows_sorted_by_start_then_pitch_with_relative_times():
    starts = np.array([1.0, 0.5, 0.5, 4.0])
    ends = np.array([1.5, 3.5, 0.75, 4.1])
    ev = notes_to_events(starts, ends, np.array([60, 67, 64, 72]), np.array([127, 64, 0, 100]), 2.0, 2.0)
    assert ev.dtype == np.float32
    np.testing.assert_array_equal(ev[:, 0], [64, 67, 60, 72])
    np.testing.assert_allclose(ev[:, 1], [0, 64 / 127, 1, 100 / 127])
    # the first delta is the absolute start; 4.0 - 1.0 = 3 s is clipped to s_max = 2
    np.testing.assert_allclose(ev[:, 2], [0.5, 0.0, 0.5, 2.0])
    # 3.0 s is clipped to d_max = 2
    np.testing.assert_allclose(ev[:, 3], [0.25, 2.0, 0.5, 0.1], rtol=1e-6)


def test_windows_drop_the_remainder_and_keep_the_last_full_window():
    ev = np.arange(17 * 4, dtype=np.float32).reshape(17, 4)
    w = to_windows(ev, 8)
    assert w.shape == (2, 8, 4)
    np.testing.assert_array_equal(w[1, -1], ev[15])
    assert to_windows(ev[:16], 8).shape == (2, 8, 4)  # a multiple of 8 keeps every window
    assert to_windows(ev[:7], 8).shape == (0, 8, 4)


def test_fast_parser_equals_pretty_midi_on_real_files(sample_files):
    for path in sample_files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = read_events(path, parser="pretty_midi")
        fast = read_events(path, parser="fast")
        assert fast.shape == reference.shape, path.name
        np.testing.assert_allclose(fast, reference, atol=1e-4, err_msg=path.name)


def test_fast_parser_follows_pretty_midi_on_overlapping_and_odd_notes(tmp_path):
    """Re-struck notes, a note-off closing two note-ons, zero-length notes, tempo changes, drums."""
    mid = mido.MidiFile(ticks_per_beat=480)
    meta, piano, drums = mido.MidiTrack(), mido.MidiTrack(), mido.MidiTrack()
    mid.tracks += [meta, piano, drums]
    meta += [mido.MetaMessage("set_tempo", tempo=400000, time=0),
             mido.MetaMessage("set_tempo", tempo=900000, time=960)]
    msgs = [("note_on", 60, 90, 0), ("note_on", 60, 70, 120), ("note_off", 60, 0, 240),
            ("note_on", 62, 80, 0), ("note_on", 62, 0, 0),  # zero-length: dropped
            ("note_on", 64, 50, 0), ("note_off", 64, 0, 480), ("note_on", 64, 60, 0),
            ("note_off", 64, 0, 960), ("note_on", 65, 40, 0)]  # 65 never ends: dropped
    for kind, note, vel, dt in msgs:
        piano.append(mido.Message(kind, note=note, velocity=vel, time=dt))
    drums += [mido.Message("note_on", channel=9, note=36, velocity=100, time=0),
              mido.Message("note_off", channel=9, note=36, velocity=0, time=100)]
    path = tmp_path / "odd.mid"
    mid.save(path)
    reference = read_events(path, parser="pretty_midi")
    fast = read_events(path, parser="fast")
    np.testing.assert_allclose(fast, reference, atol=1e-6)
    assert len(fast) == 4


def test_round_trip_of_real_windows(sample_files, tmp_path):
    ev = read_events(sample_files[0])
    windows = to_windows(ev)
    back = to_windows(read_events(write_midi(windows, tmp_path / "rt.mid")))
    assert back.shape == windows.shape
    np.testing.assert_allclose(back, windows, atol=1e-4)


def test_round_trip_rounds_pitch_and_keeps_every_note():
    ev = np.array([[60.4, 0.5, 0.0, 0.0], [61.6, 1.2, 0.25, 0.5]], dtype=np.float32)
    pm = events_to_midi(ev)
    notes = pm.instruments[0].notes
    assert [n.pitch for n in notes] == [60, 62]
    assert notes[0].velocity == 64 and notes[1].velocity == 127
    assert notes[0].end > notes[0].start  # a zero duration is lengthened to 1 ms


def test_drum_only_and_empty_files_are_refused_with_reasons(tmp_path):
    drums = write_notes_midi(tmp_path / "drums.mid", scale_notes(20), drum=True)
    empty = write_notes_midi(tmp_path / "empty.mid", [])
    for parser in ("fast", "pretty_midi"):
        with pytest.raises(MidiError, match="no notes outside drum tracks"):
            read_events(drums, parser=parser)
        with pytest.raises(MidiError, match=r"empty\.mid: no notes"):
            read_events(empty, parser=parser)
    with pytest.raises(MidiError, match="cannot read"):
        read_events(tmp_path / "missing.mid")
    with pytest.raises(ValueError, match="unknown parser"):
        read_events(drums, parser="nope")
