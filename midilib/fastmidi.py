"""A lean Standard MIDI File reader that gives exactly pretty_midi's notes, faster.

pretty_midi builds a mido Message object per event; on GiantMIDI-Piano files
(thousands of notes, dense pedal data) that dominates the parse. This reader
walks the bytes once, keeps only note and tempo events, and pairs note-on/off
with pretty_midi's own rules (per track and channel; a note-off ends every
open note of its pitch that began at an earlier tick; a note-off at the very
tick of the only open note drops it; notes left open are dropped; tempo only
from the first track; channel 10 is drums). Tested against pretty_midi on
real files (tests/test_events.py).
"""

from __future__ import annotations

import numpy as np

MAX_TICK = 10_000_000  # pretty_midi's own limit for a sane file


class MidiFormatError(ValueError):
    pass


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= len(data):
            raise MidiFormatError("truncated variable-length number")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos
    raise MidiFormatError("variable-length number longer than 4 bytes")


_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}


def _read_track(data: bytes, first: bool, tempos: list, notes: list) -> None:
    """Append this track's (start_tick, end_tick, pitch, velocity) to notes."""
    pos, tick, status = 0, 0, 0
    open_notes: dict[int, list[tuple[int, int]]] = {}
    end = len(data)
    while pos < end:
        delta, pos = _varlen(data, pos)
        tick += delta
        if pos >= end:
            raise MidiFormatError("truncated track")
        byte = data[pos]
        if byte == 0xFF:  # meta event
            if pos + 1 >= end:
                raise MidiFormatError("truncated meta event")
            kind = data[pos + 1]
            length, pos = _varlen(data, pos + 2)
            if kind == 0x51 and first and length == 3:
                tempo = int.from_bytes(data[pos : pos + 3], "big")
                if tempo == 0:
                    raise MidiFormatError("tempo of 0 microseconds per beat")
                tempos.append((tick, tempo))
            pos += length
            if kind == 0x2F:
                break
            continue
        if byte in (0xF0, 0xF7):  # sysex
            length, pos = _varlen(data, pos + 1)
            pos += length
            continue
        if byte & 0x80:
            status = byte
            pos += 1
        elif not status:
            raise MidiFormatError("data byte without a running status")
        kind = status & 0xF0
        n = _DATA_LEN.get(kind)
        if n is None:
            raise MidiFormatError(f"unexpected status byte 0x{status:02X}")
        if pos + n > end:
            raise MidiFormatError("truncated channel event")
        if kind == 0x90 or kind == 0x80:
            pitch, velocity = data[pos], data[pos + 1]
            if pitch > 127 or velocity > 127:
                raise MidiFormatError("data byte out of range")
            key = ((status & 0x0F) << 7) | pitch
            if kind == 0x90 and velocity > 0:
                open_notes.setdefault(key, []).append((tick, velocity))
            elif key in open_notes:
                pending = open_notes[key]
                close = [(s, v) for s, v in pending if s != tick]
                keep = [(s, v) for s, v in pending if s == tick]
                for s, v in close:
                    notes.append((s, tick, key, v))
                if close and keep:
                    open_notes[key] = keep
                else:
                    del open_notes[key]
        pos += n


def _ticks_to_seconds(ticks: np.ndarray, tempos: list, resolution: int) -> np.ndarray:
    """pretty_midi's tick -> seconds map: piecewise linear over tempo changes."""
    starts, scales = [0], [500000 / (1e6 * resolution)]
    for tick, tempo in sorted(tempos, key=lambda x: x[0]):
        scale = tempo / (1e6 * resolution)
        if tick == starts[-1]:
            scales[-1] = scale
        elif scale != scales[-1]:
            starts.append(tick)
            scales.append(scale)
    starts_a = np.array(starts, dtype=np.int64)
    scales_a = np.array(scales)
    offsets = np.concatenate([[0.0], np.cumsum(np.diff(starts_a) * scales_a[:-1])])
    seg = np.searchsorted(starts_a, ticks, side="right") - 1
    return offsets[seg] + (ticks - starts_a[seg]) * scales_a[seg]


def read_notes(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, pitches, velocities) of every non-drum note, in seconds."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"MThd" or len(data) < 14:
        raise MidiFormatError("no MThd header")
    header_len = int.from_bytes(data[4:8], "big")
    n_tracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000 or division == 0:
        raise MidiFormatError("SMPTE or zero time division is not supported")
    pos = 8 + header_len
    tempos: list = []
    notes: list = []
    for index in range(n_tracks):
        if data[pos : pos + 4] != b"MTrk":
            raise MidiFormatError(f"track {index}: missing MTrk chunk")
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            raise MidiFormatError(f"track {index}: truncated")
        _read_track(body, index == 0, tempos, notes)
        pos += 8 + length
    if not notes:
        empty = np.zeros(0)
        return empty, empty, empty.astype(np.int64), empty.astype(np.int64)
    arr = np.array(notes, dtype=np.int64)
    if arr[:, 1].max() > MAX_TICK:
        raise MidiFormatError(f"largest tick {arr[:, 1].max()} > {MAX_TICK}: likely corrupt")
    channel, pitch = arr[:, 2] >> 7, arr[:, 2] & 0x7F
    arr, pitch = arr[channel != 9], pitch[channel != 9]
    seconds = _ticks_to_seconds(arr[:, :2].ravel(), tempos, division).reshape(-1, 2)
    return seconds[:, 0], seconds[:, 1], pitch, arr[:, 3]
