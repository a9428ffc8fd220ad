"""Rendering condensed events to audio: length, silence, determinism, bad input."""

from __future__ import annotations

import io
import sys
import wave

import numpy as np
import pytest

from midilib import audio

SR = audio.SAMPLE_RATE


@pytest.fixture(scope="module", autouse=True)
def _needs_fluidsynth():
    try:
        audio._fluidsynth()
    except ImportError as exc:
        pytest.skip(str(exc))


def random_windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(36, 96, (n, 8)), rng.uniform(0.2, 1.0, (n, 8)),
                     rng.uniform(0.0, 0.4, (n, 8)), rng.uniform(0.05, 1.0, (n, 8))],
                    axis=-1).astype(np.float32)


def test_clip_length_and_onset():
    window = random_windows(1)[0]
    window[0, 2] = 0.5  # first onset at 0.5 s: silence before it
    clip = audio.render_events(window)
    onsets = np.cumsum(window[:, 2])
    end = (onsets + window[:, 3]).max()
    assert clip.dtype == np.float32 and clip.ndim == 1
    assert len(clip) == int(np.ceil((end + audio.RELEASE_S) * SR))
    assert np.abs(clip[: int(0.49 * SR)]).max() == 0.0
    assert np.abs(clip[int(0.5 * SR) : int(0.7 * SR)]).max() > 1e-3
    assert np.abs(clip).max() < 1.0


def test_empty_events_are_silence():
    clip = audio.render_events(np.zeros((0, 4), np.float32))
    assert len(clip) == int(audio.RELEASE_S * SR) and not clip.any()


def test_louder_velocity_is_louder():
    soft = np.array([[60, 0.2, 0.0, 0.5]], np.float32)
    loud = np.array([[60, 1.0, 0.0, 0.5]], np.float32)
    assert np.abs(audio.render_events(loud)).max() > 2 * np.abs(audio.render_events(soft)).max()


def test_same_clip_whatever_came_before_and_any_workers():
    windows = random_windows(40)
    serial = audio.render_windows(windows, workers=1, progress=False)
    backwards = audio.render_windows(windows[::-1], workers=1, progress=False)[::-1]
    pooled = audio.render_windows(windows, workers=2, progress=False)
    assert len(serial) == len(pooled) == 40
    for a, b, c in zip(serial, backwards, pooled, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_iter_render_chunks_in_order():
    windows = random_windows(10, seed=1)
    chunks = list(audio.iter_render(windows, workers=1, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert np.array_equal(chunks[2][1], audio.render_events(windows[9]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: audio.render_windows(np.zeros((2, 8, 3)), progress=False),
        lambda: audio.render_windows(random_windows(2), workers=0, progress=False),
        lambda: audio.render_events(np.full((2, 4), np.nan)),
        lambda: audio.Renderer(sample_rate=100),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_wav_bytes_round_trip():
    clip = audio.render_events(random_windows(1)[0])
    with wave.open(io.BytesIO(audio.to_wav_bytes(clip)), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SR)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert len(pcm) == len(clip)
    assert np.abs(pcm / 32767 - clip).max() < 1e-4


def test_play_gives_notebook_audio():
    pytest.importorskip("IPython")
    player = audio.play(random_windows(2))
    assert player.data[:4] == b"RIFF"


def test_missing_library_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # import now fails
    with pytest.raises(ImportError, match="fluidsynth") as info:
        audio._fluidsynth()
    assert "apt" in str(info.value) and "\n" not in str(info.value)
