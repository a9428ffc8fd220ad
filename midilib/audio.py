"""Render condensed note events to mono audio with FluidSynth, fast and deterministic.

`pretty_midi.fluidsynth()` starts a synthesizer and loads the SoundFont on every
call (~44 ms for an 8-note window). Here each worker process keeps ONE
synthesizer: per clip we reset it, schedule note on/offs at sample positions and
pull float samples (~14 ms a window). Reverb and chorus are off, voices are
killed between clips, the synthesizer is warmed up once and every clip starts
on a fresh 64-sample synthesis block, so a clip's audio depends only on its
notes, never on which clips the synthesizer rendered before: the output is
bit-identical for any number of workers.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import wave
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
RELEASE_S = 0.5  # silence kept after the last note-off so the release tail is heard
MIN_DURATION_S = 1e-3  # as in events.events_to_midi: every note sounds
GAIN = 1.0  # synth.gain: typical 8-note windows peak near 0.1-0.3, whole pieces below 1
_BLOCK = 64  # FluidSynth renders in blocks of 64 samples; events apply at block starts


def soundfont_path() -> Path:
    """The General MIDI SoundFont shipped inside the pretty_midi package (TimGM6mb.sf2)."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"SoundFont not found: {path} (reinstall pretty_midi)")
    return path


def _fluidsynth():
    """Import pyfluidsynth, turning a missing system library into one clear line."""
    try:
        import fluidsynth
    except (ImportError, OSError):
        raise ImportError(
            "libfluidsynth not found: install the system package `fluidsynth` "
            "(apt-get install fluidsynth) and pyfluidsynth"
        ) from None
    return fluidsynth


def _notes(events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(onsets, ends, pitches, velocities) in seconds/MIDI units, as events_to_midi decodes."""
    ev = np.asarray(events, dtype=np.float64)
    if ev.ndim != 2 or ev.shape[1] != 4:
        raise ValueError(f"events must have shape (n, 4), got {ev.shape}")
    if not np.isfinite(ev).all():
        raise ValueError("events contain NaN or infinite values")
    onsets = np.cumsum(np.clip(ev[:, 2], 0.0, None))
    ends = onsets + np.maximum(ev[:, 3], MIN_DURATION_S)
    pitches = np.clip(np.rint(ev[:, 0]), 0, 127).astype(int)
    velocities = np.clip(np.rint(ev[:, 1] * 127.0), 1, 127).astype(int)
    return onsets, ends, pitches, velocities


class Renderer:
    """One FluidSynth synthesizer with the piano loaded, reused for many clips."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, program: int = 0) -> None:
        if not 8000 <= sample_rate <= 96000:
            raise ValueError(f"sample_rate must be in 8000..96000 Hz, got {sample_rate}")
        fs = _fluidsynth()
        self.sample_rate = int(sample_rate)
        self.program = program
        self.synth = fs.Synth(
            gain=GAIN,
            samplerate=float(sample_rate),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0},
        )
        self.sfid = self.synth.sfload(str(soundfont_path()))
        if self.sfid < 0:
            raise RuntimeError(f"FluidSynth could not load {soundfont_path()}")
        self._write = fs._fl.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p, ctypes.c_int,
                                                                  ctypes.c_int] * 2
        self._write.restype = ctypes.c_int
        self.synth.program_select(0, self.sfid, 0, program)
        self._warm_up()

    def _warm_up(self) -> None:
        """Use every voice slot once, so that no clip ever gets a never-used voice.

        A voice's first note comes out slightly different from its later ones
        (FluidSynth initialises some DSP state lazily), which would make a clip's
        audio depend on how many voices earlier clips had used.
        """
        polyphony = int(self.synth.get_setting("synth.polyphony"))
        for i in range(4 * polyphony):
            if self.synth.get_active_voice_count() >= polyphony:
                break
            self.synth.noteon(0, 21 + i % 88, 64)
        scratch = np.zeros(16 * _BLOCK, dtype=np.float32)
        self._pull(scratch, scratch.copy(), 0, len(scratch))
        self.synth.all_sounds_off(0)
        self._pull(scratch, scratch.copy(), 0, len(scratch))

    def _pull(self, left: np.ndarray, right: np.ndarray, start: int, stop: int) -> None:
        """Synthesize samples [start, stop) into the float32 buffers (no dither, no clipping)."""
        if stop > start:
            self._write(self.synth.synth, stop - start, left.ctypes.data, start, 1,
                        right.ctypes.data, start, 1)

    def render(self, events: np.ndarray) -> np.ndarray:
        """Events (n, 4) -> mono float32 audio: last note end + RELEASE_S, silence if n == 0."""
        onsets, ends, pitches, velocities = _notes(events)
        sr = self.sample_rate
        total = int(np.ceil(((ends.max() if len(ends) else 0.0) + RELEASE_S) * sr))
        padded = -(-total // _BLOCK) * _BLOCK  # whole blocks: the next clip starts on a block
        left = np.zeros(padded, dtype=np.float32)
        right = np.zeros(padded, dtype=np.float32)
        # Kill every voice now: system_reset() lets them ring on into the next clip.
        self.synth.all_sounds_off(0)
        on = np.rint(onsets * sr).astype(np.int64)
        off = np.maximum(np.rint(ends * sr).astype(np.int64), on + 1)
        # (sample, kind, pitch): offs (kind 0) before ons (kind 1) at the same sample
        schedule = sorted(
            [(int(s), 0, int(p), 0) for s, p in zip(off, pitches, strict=True)]
            + [(int(s), 1, int(p), int(v)) for s, p, v in zip(on, pitches, velocities, strict=True)]
        )
        pos = 0
        for sample, kind, pitch, velocity in schedule:
            sample = min(sample, padded)
            self._pull(left, right, pos, sample)
            pos = sample
            if kind:
                self.synth.noteon(0, pitch, velocity)
            else:
                self.synth.noteoff(0, pitch)
        self._pull(left, right, pos, padded)
        return ((left + right) * 0.5)[:total]


_RENDERERS: dict[int, Renderer] = {}  # one per process and sample rate


def _renderer(sample_rate: int) -> Renderer:
    if sample_rate not in _RENDERERS:
        _RENDERERS[sample_rate] = Renderer(sample_rate)
    return _RENDERERS[sample_rate]


def render_events(events: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A whole piece (or one window) of condensed events (n, 4) -> mono float32 audio."""
    return _renderer(sample_rate).render(np.asarray(events).reshape(-1, 4))


def _render_chunk(args: tuple[np.ndarray, int]) -> list[np.ndarray]:
    windows, sample_rate = args
    renderer = _renderer(sample_rate)
    return [renderer.render(w) for w in windows]


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver (else spawn), never plain fork.

    A child forked from a parent that has already run torch hangs inside
    FluidSynth (OpenMP state copied mid-use), and notebooks do run torch first.
    The fork server starts clean and preloads this module, so workers still
    start in milliseconds. Like any spawn-style pool, a plain script must call
    us under `if __name__ == "__main__":`.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["midilib.audio"])
        return ctx
    return multiprocessing.get_context("spawn")


def _check_windows(windows: np.ndarray) -> np.ndarray:
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[-1] != 4:
        raise ValueError(f"windows must have shape (n, window, 4), got {windows.shape}")
    return windows


def iter_render(
    windows: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    workers: int | None = None,
    chunk: int = 64,
) -> Iterator[list[np.ndarray]]:
    """Render windows (n, w, 4) chunk by chunk, in order, over a process pool.

    Only a few chunks are in flight at a time, so a consumer (an embedder) can
    keep memory bounded however many windows there are. workers=None: every core.
    """
    windows = _check_windows(windows)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1 or chunk < 1:
        raise ValueError(f"workers and chunk must be >= 1, got {workers}, {chunk}")
    _fluidsynth()  # fail here, in one line, rather than inside a worker
    starts = range(0, len(windows), chunk)
    workers = min(workers, len(starts))
    if workers <= 1:
        renderer = _renderer(sample_rate)
        for i in starts:
            yield [renderer.render(w) for w in windows[i : i + chunk]]
        return
    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        pending: deque = deque()
        for i in starts:
            pending.append(pool.submit(_render_chunk, (windows[i : i + chunk], sample_rate)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def render_windows(
    windows: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    workers: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Render each window (n, w, 4) to its own clip; the same clips for any `workers`.

    workers=None uses every core, workers=1 renders in this process.
    """
    from tqdm.auto import tqdm

    windows = _check_windows(windows)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    chunk = max(1, min(64, -(-len(windows) // (4 * max(n_workers, 1)))))  # >= 4 per worker
    clips: list[np.ndarray] = []
    with tqdm(total=len(windows), desc="render", unit="clip", disable=not progress) as bar:
        for part in iter_render(windows, sample_rate, workers, chunk):
            clips.extend(part)
            bar.update(len(part))
    return clips


def to_wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float audio in [-1, 1] -> the bytes of a 16-bit PCM WAV file."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()


def play(events_or_windows: np.ndarray, sample_rate: int = SAMPLE_RATE):
    """An IPython Audio player for events (n, 4) or windows (k, w, 4), played back to back."""
    from IPython.display import Audio

    audio = render_events(np.asarray(events_or_windows).reshape(-1, 4), sample_rate)
    return Audio(data=to_wav_bytes(audio, sample_rate), rate=sample_rate)
