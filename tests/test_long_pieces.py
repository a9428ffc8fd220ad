"""Long pieces side by side: each maker is the method it names, deterministic given its seed, and the
scores tell real structure from shuffled windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import perturbed_latent_run, write_composer_corpus

from midilib import latent
from midilib import long_pieces as LP
from midilib.diffusion.sampling import continue_pieces, make_scheduler
from midilib.models import vae as V
from midilib.prepare import PrepareParams, prepare
from midilib.runs import load_model, train_model

K = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic corpus named the GiantMIDI way (as tests/test_latent.py's), prepared."""
    source = write_composer_corpus(tmp_path_factory.mktemp("midi"))
    return prepare(source, tmp_path_factory.mktemp("data"), PrepareParams(test_fraction=0.2, valid_fraction=0.2),
                   progress=False)


@pytest.fixture(scope="module")
def vae_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae")
    train_model("vae", data.out, "smoke", run, max_steps=12, progress=False)
    return run


@pytest.fixture(scope="module")
def vae(vae_run):
    return load_model(vae_run)[0]


@pytest.fixture(scope="module")
def lrun(vae_run, data, tmp_path_factory) -> latent.LatentRun:
    """A smoke latent run, every weight then moved at random so that the composer matters."""
    run = tmp_path_factory.mktemp("latent")
    latent.train_latent(vae_run, data.out, "smoke", run, windows=K, progress=False)
    return perturbed_latent_run(run)


@pytest.fixture(scope="module")
def ddpm(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddpm")
    train_model("ddpm", data.out, "smoke", run, max_steps=3, progress=False)
    return load_model(run)[0]


def _windows(files: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Windows of files whose pitch drifts slowly inside a register of their own, with real-like timing."""
    rng = np.random.default_rng(seed)
    parts, owner = [], []
    for f, n in enumerate(files):
        centre = rng.uniform(40, 80)
        pitch = np.clip(np.round(centre + np.cumsum(rng.normal(0, 0.7, n * 8)) + rng.normal(0, 2, n * 8)), 0, 127)
        notes = np.stack([pitch, rng.uniform(0.3, 0.9, n * 8), rng.choice([0.0, 0.125, 0.25], n * 8),
                          rng.uniform(0.1, 0.2, n * 8) * (1 + f % 3)], -1)
        parts.append(notes.reshape(n, 8, 4))
        owner.append(np.full(n, f))
    return np.concatenate(parts).astype(np.float32), np.concatenate(owner)


def test_real_pieces_are_runs_of_consecutive_windows_of_one_file():
    windows, owner = _windows([9, 4, 3, 8])
    s = LP.real_pieces(windows, owner, 4)
    assert s.pieces.shape == (2 + 1 + 0 + 2, 32, 4) and s.units.tolist() == [0, 0, 1, 3, 3]
    starts = [0, 4, 9, 16, 20]  # remainders dropped, never across files
    for piece, start in zip(s.pieces, starts):
        np.testing.assert_array_equal(piece, windows[start:start + 4].reshape(-1, 4))
    np.testing.assert_array_equal(s.windows(), s.pieces.reshape(-1, 8, 4))
    some = LP.real_pieces(windows, owner, 4, n=3, seed=1)
    assert len(some) == 3 and {p.tobytes() for p in some.pieces} <= {p.tobytes() for p in s.pieces}
    np.testing.assert_array_equal(some.pieces, LP.real_pieces(windows, owner, 4, n=3, seed=1).pieces)
    with pytest.raises(ValueError, match="no file has 10 windows"):
        LP.real_pieces(windows, owner, 10)


def test_vae_makers_are_the_vae_methods_they_name(vae, data):
    real = LP.real_pieces(data.train, data.train_file, K, n=3, seed=0)
    trip = LP.round_trip(vae, real)
    np.testing.assert_array_equal(trip.units, real.units)
    np.testing.assert_allclose(trip.windows(), V.reconstruct(vae, real.windows()), atol=1e-5)
    prior = LP.prior_pieces(vae, 3, K, seed=5)
    np.testing.assert_array_equal(prior.pieces, V.sample(vae, 3 * K, seed=5).reshape(3, K * 8, 4))
    assert prior.units.tolist() == [0, 1, 2] and prior.seconds > 0
    walk = LP.walk_pieces(vae, 3, K, scale=0.5, seed=7)
    slerp = LP.slerp_pieces(vae, real, K)
    for i in range(3):
        np.testing.assert_allclose(walk.pieces[i], V.latent_walk(vae, K, 0.5, seed=7 + i).reshape(-1, 4), atol=1e-5)
        first, last = real.pieces[i, :8], real.pieces[i, -8:]
        np.testing.assert_allclose(slerp.pieces[i], V.interpolate(vae, first, last, K).reshape(-1, 4), atol=1e-5)
    z = LP.walk_latents(16, 2, 50, scale=0.3, seed=0)
    assert abs(np.diff(z, axis=1).std() - 0.3) < 0.02 and abs(z[:, 0].std() - 1) < 0.3


def test_shuffled_pieces_draw_each_window_from_another_file(data):
    s = LP.shuffled_pieces(data.train, data.train_file, 5, K, seed=3)
    assert s.pieces.shape == (5, K * 8, 4) and s.units.tolist() == list(range(5))
    rows = {w.tobytes(): f for w, f in zip(data.train, data.train_file)}
    for piece in s.pieces:
        files = [rows[w.tobytes()] for w in piece.reshape(K, 8, 4)]
        assert all(a != b for a, b in zip(files, files[1:]))


def test_continuation_starts_from_the_real_first_window(ddpm, data):
    real = LP.real_pieces(data.train, data.train_file, K, n=3, seed=0)
    scheduler = make_scheduler(ddpm, "ddim", 4)
    cont = LP.continuation_pieces(ddpm, scheduler, real, K, seed=2)
    assert cont.pieces.shape == (3, K * 8, 4) and LP.continuation_windows(K) == 6
    np.testing.assert_array_equal(cont.pieces[:, :8], real.pieces[:, :8])
    full = continue_pieces(ddpm, scheduler, real.pieces[:, :8], 6, 4, seed=2)
    np.testing.assert_array_equal(cont.pieces, full[:, : K * 8])
    assert LP.continuation_windows(16) == 30 and LP.continuation_windows(8, n_known=5) == 19


def test_guided_latent_pieces_are_generated_per_composer(lrun):
    names = np.array(["Beta, Bert", "Alpha, Anna", "Beta, Bert"], dtype=object)
    s = LP.latent_pieces(lrun, 3, seed=4, steps=3, composers=names, guidance=2.0)
    beta = latent.generate_pieces(lrun, 2, 3, "Beta, Bert", 2.0, seed=4 + 1 + lrun.label("Beta, Bert"))
    alpha = latent.generate_pieces(lrun, 1, 3, "Alpha, Anna", 2.0, seed=4 + 1 + lrun.label("Alpha, Anna"))
    np.testing.assert_array_equal(s.pieces[[0, 2]], beta)
    np.testing.assert_array_equal(s.pieces[1], alpha[0])
    plain = LP.latent_pieces(lrun, 2, seed=4, steps=3)
    np.testing.assert_array_equal(plain.pieces, latent.generate_pieces(lrun, 2, 3, seed=4))
    drawn = LP.training_composers(lrun, 200, seed=0)
    assert set(drawn) <= set(lrun.composers) and len(set(drawn)) >= 2
    with pytest.raises(ValueError, match="one composer per piece"):
        LP.latent_pieces(lrun, 2, composers=["Alpha, Anna"])


def test_comparison_sets_are_every_maker_and_deterministic(lrun, ddpm, data):
    a = LP.comparison_sets(lrun, ddpm, data, 4, seed=0, steps=3, temperature=0.0)
    assert list(a) == [LP.REAL, LP.TRAIN, LP.ROUND_TRIP, LP.SHUFFLED, LP.PRIOR, LP.WALK, LP.SLERP,
                       LP.CONTINUATION, LP.LATENT, LP.guided_name(2.0)]
    assert all(s.pieces.shape[1:] == (K * 8, 4) for s in a.values())
    assert len(a[LP.REAL]) == len(LP.real_pieces(data.test, data.test_file, K)) and len(a[LP.TRAIN]) == 4
    b = LP.comparison_sets(lrun, ddpm, data, 4, seed=0, steps=3, temperature=0.0)
    for name in a:
        np.testing.assert_array_equal(a[name].pieces, b[name].pieces)
    np.testing.assert_array_equal(a[LP.CONTINUATION].pieces[:, :8], a[LP.TRAIN].pieces[:, :8])


def test_scores_tell_real_structure_from_shuffled_windows():
    windows, owner = _windows([24] * 12, seed=1)
    real = LP.real_pieces(windows, owner, 8)
    other = LP.real_pieces(*_windows([24] * 12, seed=2), 8)
    shuffled = LP.shuffled_pieces(*_windows([24] * 12, seed=2), 30, 8, seed=0)
    table = LP.score_sets({"real": real, "other real": other, "shuffled": shuffled}, real)
    assert list(table.index) == ["real", "other real", "shuffled"]
    assert table.loc["real", ["pitch_consistency", "pitch_variance", "duration_consistency"]].tolist() == [1, 1, 1]
    assert table.loc["real", "units"] == 12 and table.loc["real", "pieces"] == 36
    assert table.loc["real", "pitch_consistency_lo"] < 1
    # jumping between registers: adjacent frames overlap less than real ones, and it shows
    assert table.loc["shuffled", "pitch_mean_oa"] < table.loc["real", "pitch_mean_gt"]
    assert table.loc["shuffled", "pitch_consistency_hi"] < table.loc["other real", "pitch_consistency"]
    assert abs(table.loc["real", "fd_clips"]) < 0.1 * table.loc["shuffled", "fd_clips"]
    assert table.loc["other real", "fd_clips"] < table.loc["shuffled", "fd_clips"]
    for name in table.index:
        row = table.loc[name]
        assert row.scale_consistency_lo <= row.scale_consistency <= row.scale_consistency_hi
        assert row.fd_clips_lo <= row.fd_clips <= row.fd_clips_hi


def test_fd_on_clips_resamples_units_not_clips():
    windows, owner = _windows([40, 40, 40], seed=0)
    real = LP.real_pieces(windows, owner, 8)  # 15 pieces, 3 files
    value, low, high = LP.fd_clips(real, real)
    assert np.isnan(value) and np.isnan(low) and np.isnan(high)  # 3 units: nothing to extrapolate
    x, units = LP.clip_features(real)
    assert x.shape == (30, 8) and units.tolist() == np.repeat([0, 1, 2], 10).tolist()


def test_frame_seconds():
    notes = np.zeros((1, 32, 4), np.float32)
    notes[0, :, 2] = 0.25
    s = LP.PieceSet(notes, np.zeros(1))
    np.testing.assert_allclose(LP.frame_seconds(s, 16, 8), [3.75, 3.75, 3.75])
    with pytest.raises(ValueError, match="one unit per piece"):
        LP.PieceSet(notes, np.zeros(2))


def test_probe_and_guidance_sweep(lrun, vae, data):
    probe = LP.piece_probe(lrun, folds=3)
    seqs = lrun.sequences()
    assert sum(probe.counts.values()) == sum(len(s) for s in seqs.values())
    assert set(probe.counts) <= set(lrun.composers) and 0 <= probe.accuracy[0] <= 1
    real = LP.real_pieces(data.test, data.test_file, K)
    np.testing.assert_allclose(LP.piece_features(vae, real.pieces), seqs["test"].latents.mean(1), atol=1e-5)
    sweep = LP.guidance_sweep(lrun, probe, real, weights=(0, 3), n=6, steps=3)
    named = ["Alpha, Anna", "Beta, Bert"]
    assert sweep[["guidance", "composer"]].values.tolist() == [
        [w, c] for w in (0.0, 3.0) for c in (*named, "all")]
    at0 = sweep[(sweep.guidance == 0) & (sweep.composer != "all")]
    assert at0.accuracy.sum() <= 1 + 1e-9  # at W = 0 every composer is asked of the same pieces
    pooled = sweep.set_index(["guidance", "composer"])
    for w in (0.0, 3.0):
        assert pooled.loc[(w, "all"), "accuracy"] == pytest.approx(pooled.loc[[(w, c) for c in named], "accuracy"].mean())
    assert pooled.loc[(0.0, "all"), "pieces"] == 6 and pooled.loc[(3.0, "all"), "pieces"] == 12
    assert ((sweep.accuracy_lo <= sweep.accuracy) & (sweep.accuracy <= sweep.accuracy_hi)).all()


def test_every_vae_decoded_set_decodes_at_one_temperature(lrun, ddpm, data):
    """At T > 0 the round trip, prior, walk, slerp and latent rows all draw at T (each seeded), and a
    round trip at the mode is added; T None is the run's own, chosen on the validation files."""
    warm = LP.comparison_sets(lrun, ddpm, data, 4, seed=0, steps=3, temperature=0.8)
    assert list(warm)[:4] == [LP.REAL, LP.TRAIN, LP.ROUND_TRIP, LP.ROUND_TRIP_MODE]
    vae = lrun.vae
    np.testing.assert_array_equal(warm[LP.ROUND_TRIP_MODE].pieces, LP.round_trip(vae, warm[LP.REAL]).pieces)
    np.testing.assert_array_equal(warm[LP.ROUND_TRIP].pieces, LP.round_trip(vae, warm[LP.REAL], 8, 0.8, 0).pieces)
    np.testing.assert_array_equal(warm[LP.PRIOR].pieces, LP.prior_pieces(vae, 4, K, 0, 0.8).pieces)
    np.testing.assert_array_equal(warm[LP.WALK].pieces, LP.walk_pieces(vae, 4, K, 0.5, 0, 0.8).pieces)
    np.testing.assert_array_equal(warm[LP.SLERP].pieces, LP.slerp_pieces(vae, warm[LP.TRAIN], K, 8, 0.8, 0).pieces)
    np.testing.assert_array_equal(warm[LP.LATENT].pieces, latent.generate_pieces(lrun, 4, 3, seed=0, temperature=0.8))
    assert not np.array_equal(warm[LP.ROUND_TRIP].pieces, warm[LP.ROUND_TRIP_MODE].pieces)
    own = LP.comparison_sets(lrun, ddpm, data, 4, seed=0, steps=3)
    np.testing.assert_array_equal(own[LP.LATENT].pieces,
                                  latent.generate_pieces(lrun, 4, 3, seed=0, temperature=lrun.temperature))
