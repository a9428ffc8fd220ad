"""Condensed note events: one float32 row per note, and back to MIDI.

A row is (pitch, velocity/127, delta, duration): delta is the time since the
previous note's onset (the first note: its absolute onset), clipped to
[0, s_max]; duration is clipped to [0, d_max]. Notes of every non-drum
instrument are merged and sorted by (start, pitch). Songs are cut into
non-overlapping windows of `window` notes; the remainder is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi

COLUMNS = ("pitch", "velocity", "delta", "duration")
PITCH, VELOCITY, DELTA, DURATION = range(4)


class MidiError(ValueError):
    """A MIDI file that cannot give note events; the message says why."""


def notes_to_events(
    starts: np.ndarray,
    ends: np.ndarray,
    pitches: np.ndarray,
    velocities: np.ndarray,
    s_max: float = 2.0,
    d_max: float = 2.0,
) -> np.ndarray:
    """Raw note arrays (any order) -> condensed events (n, 4) float32."""
    starts = np.asarray(starts, dtype=np.float64)
    pitches = np.asarray(pitches, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.float64)
    velocities = np.asarray(velocities, dtype=np.float64)
    # by start, then pitch; end and velocity only settle exact ties so that
    # every parser gives the same rows whatever order it found the notes in
    order = np.lexsort((velocities, ends, pitches, starts))
    starts = starts[order]
    ends = ends[order]
    events = np.empty((len(starts), 4), dtype=np.float32)
    events[:, PITCH] = pitches[order]
    events[:, VELOCITY] = velocities[order] / 127.0
    delta = np.diff(starts, prepend=0.0)
    events[:, DELTA] = np.clip(delta, 0.0, s_max)
    events[:, DURATION] = np.clip(ends - starts, 0.0, d_max)
    return events


def _check_notes(path: str, starts: np.ndarray, ends: np.ndarray) -> None:
    if len(starts) == 0:
        raise MidiError(f"{path}: no notes outside drum tracks")
    if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        raise MidiError(f"{path}: non-finite note times (broken tempo map)")
    if starts.min() < 0 or ends.max() > 24 * 3600:
        raise MidiError(f"{path}: note times outside 0..24 h (absurd tempo map)")


def read_pretty_midi(path: str | Path, s_max: float = 2.0, d_max: float = 2.0) -> np.ndarray:
    """Parse a MIDI file with pretty_midi into condensed events (the reference parser)."""
    path = str(path)
    try:
        pm = pretty_midi.PrettyMIDI(path)
    except Exception as exc:  # pretty_midi/mido raise many types on bad bytes
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MidiError(f"{path}: not a readable MIDI file ({reason})") from None
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    starts = np.array([n.start for n in notes], dtype=np.float64)
    ends = np.array([n.end for n in notes], dtype=np.float64)
    _check_notes(path, starts, ends)
    return notes_to_events(
        starts,
        ends,
        np.array([n.pitch for n in notes]),
        np.array([n.velocity for n in notes]),
        s_max,
        d_max,
    )


def read_fast(path: str | Path, s_max: float = 2.0, d_max: float = 2.0) -> np.ndarray:
    """The fast path (midilib.fastmidi): the same arrays as pretty_midi, several times faster."""
    from midilib.fastmidi import read_notes

    path = str(path)
    try:
        starts, ends, pitches, velocities = read_notes(path)
    except (OSError, ValueError, IndexError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(exc, OSError):
            raise MidiError(f"{path}: cannot read ({exc.strerror or reason})") from None
        raise MidiError(f"{path}: not a readable MIDI file ({reason})") from None
    _check_notes(path, starts, ends)
    return notes_to_events(starts, ends, pitches, velocities, s_max, d_max)


PARSERS = {"pretty_midi": read_pretty_midi, "fast": read_fast}


def read_events(
    path: str | Path, s_max: float = 2.0, d_max: float = 2.0, parser: str = "fast"
) -> np.ndarray:
    """Condensed events of one MIDI file; raises MidiError with the reason."""
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose one of {', '.join(PARSERS)}")
    return PARSERS[parser](path, s_max, d_max)


def to_windows(events: np.ndarray, window: int = 8) -> np.ndarray:
    """Non-overlapping windows (k, window, 4) from the first note; the remainder is dropped."""
    k = len(events) // window
    return np.ascontiguousarray(events[: k * window].reshape(k, window, events.shape[-1]))


def events_to_midi(
    events: np.ndarray, program: int = 0, tempo: float = 120.0
) -> pretty_midi.PrettyMIDI:
    """Events (n, 4) or windows (k, w, 4) -> a PrettyMIDI of one piano track.

    Onsets are the cumulative deltas; pitch is rounded and clipped to 0..127,
    velocity scaled back to 1..127; notes shorter than 1 ms are lengthened
    to 1 ms so that every note survives in the file.
    """
    ev = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    onsets = np.cumsum(np.clip(ev[:, DELTA], 0.0, None))
    # 9600 ticks per beat at 120 bpm: a tick is 52 µs, so times survive the file
    pm = pretty_midi.PrettyMIDI(resolution=9600, initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=program, name="piano")
    pitches = np.clip(np.rint(ev[:, PITCH]), 0, 127).astype(int)
    velocities = np.clip(np.rint(ev[:, VELOCITY] * 127.0), 1, 127).astype(int)
    durations = np.maximum(ev[:, DURATION], 1e-3)
    for p, v, s, d in zip(pitches, velocities, onsets, durations):
        inst.notes.append(pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s), end=float(s + d)))
    pm.instruments.append(inst)
    return pm


def write_midi(events: np.ndarray, path: str | Path, **kwargs) -> Path:
    """Write events or windows to a .mid file (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    events_to_midi(events, **kwargs).write(str(path))
    return path
