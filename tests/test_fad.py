"""FAD embedders: TF checkpoint reader, musicnn port vs TensorFlow, basic-pitch, VGGish, FAD.

tests/data/musicnn_reference.npz was made once with the original musicnn 0.1.0
code on TensorFlow 2.15.1 (CPU) and librosa 0.11.0, in a throwaway venv:
- chord_logmel: librosa log-mel (first 187 frames) of `synthetic_chord()` below;
- window_logmel: the same for `render_events(WINDOW)` (stored as float16, and
  fed to TF as exactly those float16 values);
- {msd,mtt}_penultimate / _tags: the TF graph's outputs for both patches;
- {msd,mtt}_extractor_chord: musicnn.extractor.extractor() on the chord as a
  16-kHz WAV (it casts the mel to float16, hence a looser tolerance).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from midilib.fad import weights
from midilib.fad.mel import mel_filterbank
from midilib.fad.tfcheckpoint import read_checkpoint

REFERENCE = Path(__file__).resolve().parent / "data" / "musicnn_reference.npz"
CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/giantmidi-sample"

WINDOW = np.array([  # pitch, velocity/127, delta s, duration s: a C-major arpeggio + chord
    [48, 0.70, 0.00, 1.20], [55, 0.55, 0.25, 0.90], [60, 0.60, 0.25, 0.80], [64, 0.65, 0.25, 0.70],
    [67, 0.75, 0.25, 1.00], [72, 0.80, 0.50, 1.50], [76, 0.50, 0.00, 1.40], [79, 0.45, 0.00, 1.30],
], dtype=np.float32)


def synthetic_chord(seconds: float = 4.0, sr: int = 16000) -> np.ndarray:
    """Four staggered decaying harmonic tones (A major with octave): a deterministic test signal."""
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t)
    for k, f0 in enumerate((220.0, 277.18, 329.63, 440.0)):
        onset = 0.5 * k
        env = np.where(t >= onset, np.exp(-(t - onset) * 1.5), 0.0)
        for h in range(1, 5):
            x += 0.1 / h * env * np.sin(2 * np.pi * f0 * h * (t - onset))
    return x.astype(np.float32)


def needs_weights(package: str, name: str) -> None:
    try:
        weights.weight_path(package, name)
    except FileNotFoundError:
        pytest.skip(f"{package} weights absent: run the `make` set-up or "
                    f"`python -m midilib.fad.weights {package}`")


# --- a hand-written TF checkpoint for the reader -------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _table_block(entries: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    """A LevelDB block with prefix-compressed keys and a restart array."""
    body, restarts, previous = b"", [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(body))
        else:
            shared = len(os.path.commonprefix([previous, key]))
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        body += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return body + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def write_checkpoint(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    dtypes = {np.dtype(np.float32): 1, np.dtype(np.int32): 3, np.dtype(np.float16): 19}
    data, entries = b"", [(b"", _int_field(1, 1))]  # BundleHeaderProto: num_shards = 1
    for name in sorted(tensors):
        raw = np.array(tensors[name], dtype=tensors[name].dtype.newbyteorder("<"), order="C")
        shape = b"".join(_bytes_field(2, _int_field(1, d)) for d in raw.shape)
        entry = (_int_field(1, dtypes[raw.dtype]) + _bytes_field(2, shape)
                 + _int_field(4, len(data)) + _int_field(5, raw.nbytes))
        entries.append((name.encode(), entry))
        data += raw.tobytes()
    out, index = b"", []
    for part in (entries[:3], entries[3:]):  # two data blocks
        block = _table_block(part)
        index.append((part[-1][0], _varint(len(out)) + _varint(len(block))))
        out += block + b"\0\0\0\0\0"  # trailer: no compression, (unchecked) crc
    meta = _table_block([])
    meta_handle = _varint(len(out)) + _varint(len(meta))
    out += meta + b"\0" * 5
    index_block = _table_block(index)
    index_handle = _varint(len(out)) + _varint(len(index_block))
    out += index_block + b"\0" * 5
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(out + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data)


def test_checkpoint_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "layer/kernel": rng.standard_normal((3, 5, 1, 2)).astype(np.float32),
        "layer/bias": rng.standard_normal(2).astype(np.float32),
        "layer/beta": np.array(rng.standard_normal(), dtype=np.float32),  # a scalar
        "other/count": np.arange(7, dtype=np.int32),
        "other/half": rng.standard_normal((2, 2)).astype(np.float16),
    }
    write_checkpoint(tmp_path / "ckpt", tensors)
    got = read_checkpoint(tmp_path / "ckpt")
    assert set(got) == set(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        assert np.array_equal(got[name], value)


def test_checkpoint_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing")
    (tmp_path / "bad.index").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="magic"):
        read_checkpoint(tmp_path / "bad")


def test_reader_on_musicnn_checkpoint():
    needs_weights("musicnn", "MSD_musicnn.index")
    variables = read_checkpoint(weights.weight_path("musicnn", "MSD_musicnn.index").with_suffix(""))
    assert variables["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert variables["conv2d_2/kernel"].shape == (128, 1, 1, 51)
    assert variables["dense/kernel"].shape == (1506, 200)
    assert variables["batch_normalization_10/moving_variance"].min() > 0


# --- front end and the musicnn port ----------------------------------------------------


def test_mel_filterbank_is_slaney_normalised():
    fb = mel_filterbank(16000, 512, 96)
    assert fb.shape == (96, 257) and (fb >= 0).all()
    hz = np.linspace(0, 8000, 257)
    areas = (fb * (hz[1] - hz[0])).sum(axis=1)
    assert np.allclose(areas[10:-2], 1.0, atol=0.1)  # unit area once filters span many bins


def test_logmel_matches_librosa_reference():
    from midilib.fad.musicnn import patches

    ref = np.load(REFERENCE)
    ours = patches(synthetic_chord())
    assert ours.shape == (1, 187, 96) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], ref["chord_logmel"], atol=1e-4)


def test_patches_pad_short_and_drop_remainder():
    from midilib.fad.musicnn import patches

    assert patches(np.zeros(1000, np.float32)).shape == (1, 187, 96)
    assert patches(np.zeros(16000 * 7, np.float32)).shape == (2, 187, 96)


@pytest.mark.parametrize("model", ["MSD_musicnn", "MTT_musicnn"])
def test_musicnn_port_reproduces_tensorflow(model):
    needs_weights("musicnn", f"{model}.index")
    from midilib.fad.musicnn import embed_clips, load_musicnn

    ref = np.load(REFERENCE)
    key = model.split("_")[0].lower()
    net = load_musicnn(model)
    x = torch.from_numpy(np.stack([ref["chord_logmel"], ref["window_logmel"].astype(np.float32)]))
    with torch.no_grad():
        emb, tags = net(x).numpy(), net.tags(x).numpy()
    scale = np.abs(ref[f"{key}_penultimate"]).max()
    assert np.abs(emb - ref[f"{key}_penultimate"]).max() < 1e-4 * scale
    assert np.abs(tags - ref[f"{key}_tags"]).max() < 1e-4
    # end to end from audio; the original extractor rounds its mel to float16
    chord = embed_clips([synthetic_chord()], net)[0]
    assert np.abs(chord[0] - ref[f"{key}_penultimate"][0]).max() < 1e-4 * scale
    assert np.abs(chord - ref[f"{key}_extractor_chord"]).max() < 1e-3 * scale


# --- basic-pitch and VGGish ----------------------------------------------------------


def test_basic_pitch_hears_the_chord():
    pytest.importorskip("onnxruntime")
    needs_weights("basic-pitch", "nmp.onnx")
    from midilib.fad import basic_pitch

    (frames,) = basic_pitch.embed_clips([synthetic_chord()])
    assert frames.shape == (int(4.0 * basic_pitch.FPS), 176)
    assert frames.min() >= 0 and frames.max() <= 1
    loudest = np.argsort(frames[basic_pitch.FPS * 2 :, :88].mean(axis=0))[-4:] + 21
    assert set(loudest) == {57, 61, 64, 69}  # A3 C#4 E4 A4
    (short,) = basic_pitch.embed_clips([np.zeros(100, np.float32)])
    assert short.shape == (1, 176)


def test_vggish_loads_local_state_dict_only(tmp_path, monkeypatch):
    from midilib.fad import vggish

    monkeypatch.delenv(vggish.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=vggish.ENV_VAR):
        vggish.load_vggish()
    torch.manual_seed(0)
    path = tmp_path / "vggish.pth"
    torch.save(vggish.VGGish().state_dict(), path)
    monkeypatch.setenv(vggish.ENV_VAR, str(path))
    clips = [synthetic_chord(), np.zeros(800, np.float32)]
    first = vggish.embed_clips(clips)
    assert [e.shape for e in first] == [(4, 128), (1, 128)]
    assert all(np.isfinite(e).all() for e in first)
    assert np.array_equal(first[0], vggish.embed_clips(clips[:1])[0])
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="torchvggish"):
        vggish.load_vggish(tmp_path / "wrong.pth")


# --- weights set-up --------------------------------------------------------------------


def test_fetch_is_atomic_checked_and_idempotent(tmp_path, monkeypatch):
    payload = b"weights" * 100
    wheel_member = weights.WeightFile("pkg/w.bin", "w.bin", len(payload),
                                      hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(weights.PACKAGES, "fake", weights.WeightPackage("fake==1", (wheel_member,)))
    monkeypatch.setenv("MIDILIB_WEIGHTS", str(tmp_path / "w"))
    calls = []

    def fake_download(requirement: str, dest: Path, content: bytes = payload) -> Path:
        calls.append(requirement)
        dest.mkdir(parents=True)
        with zipfile.ZipFile(dest / "fake-1-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/w.bin", content)
        return dest / "fake-1-py3-none-any.whl"

    with pytest.raises(FileNotFoundError, match="midilib.fad.weights fake"):
        weights.weight_path("fake", "w.bin")
    monkeypatch.setattr(weights, "_download_wheel", fake_download)
    folder = weights.fetch("fake")
    assert (folder / "w.bin").read_bytes() == payload
    assert weights.fetch("fake") == folder and calls == ["fake==1"]  # second call: no download
    assert weights.weight_path("fake", "w.bin") == folder / "w.bin"
    monkeypatch.setattr(weights, "_download_wheel",
                        lambda r, d: fake_download(r, d, content=b"tampered" * 88))
    with pytest.raises(RuntimeError, match="SHA-256"):
        weights.fetch("fake", force=True)
    assert (folder / "w.bin").read_bytes() == payload  # the good copy survives
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["fake"]  # no leftovers
    with pytest.raises(ValueError, match="unknown weights"):
        weights.fetch("nope")


# --- FAD end to end --------------------------------------------------------------------


def test_unknown_embedder_is_a_value_error():
    from midilib.fad import embed_windows

    with pytest.raises(ValueError, match="unknown embedder"):
        embed_windows(WINDOW[None], "nope")


def test_fad_end_to_end_on_real_windows():
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} absent")
    needs_weights("musicnn", "MSD_musicnn.index")
    from midilib.events import read_events, to_windows
    from midilib.fad import embed_windows, fad
    from midilib.metrics import frechet_distance, gaussian_stats

    files = sorted(CORPUS.glob("*.mid"))
    rng = np.random.default_rng(0)
    n = 40
    real_a = np.concatenate([to_windows(read_events(p)) for p in files[:4]])
    real_b = np.concatenate([to_windows(read_events(p)) for p in files[4:8]])
    real_a, real_b = real_a[rng.permutation(len(real_a))[:n]], real_b[rng.permutation(len(real_b))[:n]]
    noise = np.stack([rng.integers(21, 109, (n, 8)), rng.uniform(0.1, 1.0, (n, 8)),
                      rng.uniform(0.0, 0.5, (n, 8)), rng.uniform(0.05, 1.0, (n, 8))],
                     axis=-1).astype(np.float32)
    stats = [gaussian_stats(np.concatenate(embed_windows(w, progress=False)))
             for w in (real_a, real_b, noise)]
    real_vs_real = frechet_distance(*stats[0], *stats[1])
    real_vs_noise = frechet_distance(*stats[0], *stats[2])
    assert real_vs_real < 0.5 * real_vs_noise
    assert fad(real_a[:8], real_a[:8]) < 1e-6
