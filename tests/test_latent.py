"""Latent diffusion over sequences of VAE window latents: data, guidance, sampling, runs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import perturbed_latent_run, write_composer_corpus

from midilib import latent
from midilib.cli import main
from midilib.diffusion.latent_model import Guided
from midilib.prepare import PrepareParams, load_manifest, prepare
from midilib.runs import train_model
from midilib.shards import open_split

K = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A synthetic corpus named the GiantMIDI way (composer, title, id), prepared."""
    source = write_composer_corpus(tmp_path_factory.mktemp("midi"))
    out = tmp_path_factory.mktemp("data")
    prepare(source, out, PrepareParams(test_fraction=0.2, valid_fraction=0.2), progress=False)
    return out


@pytest.fixture(scope="module")
def vae_run(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae")
    train_model("vae", data_dir, "smoke", run, max_steps=12, progress=False)
    return run


@pytest.fixture(scope="module")
def latent_run(vae_run, data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("latent")
    latent.train_latent(vae_run, data_dir, "smoke", run, windows=K, progress=False)
    return run


def _perturbed(run: Path) -> latent.LatentRun:
    return perturbed_latent_run(run)


def test_sequences_stay_inside_their_piece_and_split(vae_run, data_dir):
    from midilib.models.vae import encode
    from midilib.runs import load_model

    seqs = latent.encode_sequences(vae_run, data_dir, K)
    manifest = load_manifest(data_dir)
    vae, _ = load_model(vae_run)
    files_by_split = {}
    for split, s in seqs.items():
        owner = np.asarray(open_split(data_dir, f"{split}_file"))
        counts = pd.Series(owner).value_counts()
        assert s.latents.shape == (int((counts // K).sum()), K, 16) and len(s.file) == len(s.row) == len(s)
        for i in range(len(s)):
            assert (owner[s.row[i]:s.row[i] + K] == s.file[i]).all()  # one piece, consecutive
            assert manifest[s.file[i]]["split"] == split and s.composer[i] == manifest[s.file[i]]["composer"]
        windows = np.asarray(open_split(data_dir, split))[s.row[:, None] + np.arange(K)]
        mu, _ = encode(vae, windows.reshape(-1, 8, 4))
        np.testing.assert_allclose(s.latents.reshape(-1, 16), mu.numpy(), atol=1e-5)
        files_by_split[split] = set(s.file.tolist())
    assert set(files_by_split) == {"train", "valid", "test"}
    train, valid, test = files_by_split.values()
    assert not (train & valid or train & test or valid & test)
    # every piece of train with K windows or more gives floor(n / K) sequences
    longest = max(int(r["windows"]) for r in manifest if r["split"] == "train")
    assert len(seqs["train"]) > len(train) and longest >= K


def test_the_window_latents_are_cached_and_reused(vae_run, data_dir, monkeypatch):
    first = latent.encode_sequences(vae_run, data_dir, K)
    (folder,) = (vae_run / latent.CACHE_DIR).iterdir()
    key = json.loads((folder / "key.json").read_text())
    assert key["vae"] == latent.load_vae(vae_run)[2] and key["data_key"] == (data_dir / "content.txt").read_text()

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr("midilib.models.vae.encode", no_encoding)
    again = latent.encode_sequences(vae_run, data_dir, 2 * K)  # another K: the same window latents
    assert again["train"].latents.shape[1] == 2 * K
    np.testing.assert_array_equal(again["train"].latents[0, :K], first["train"].latents[0])
    (folder / "key.json").unlink()  # an unfinished cache is not used
    with pytest.raises(AssertionError, match="encoded again"):
        latent.encode_sequences(vae_run, data_dir, K)


def test_rare_and_unseen_composers_fold_into_other():
    seqs = latent.Sequences(np.zeros((7, K, 2), np.float32), np.array([0, 0, 1, 2, 3, 4, 5]),
                            np.arange(7), np.array(["A", "A", "A", "B", "B", "C", "other"]))
    vocab = latent.composer_vocabulary(seqs, min_pieces=2)  # A: files 0, 1; B: 2, 3; C: 4
    assert vocab == ["A", "B", "other"]
    assert latent.composer_vocabulary(seqs, min_pieces=3) == ["other"]
    np.testing.assert_array_equal(latent.composer_labels(np.array(["B", "C", "Z", "A"]), vocab), [1, 2, 2, 0])


def test_a_run_records_its_vae_composers_and_train_only_stats(latent_run, vae_run, data_dir):
    config = json.loads((latent_run / "config.json").read_text())
    assert config["model"] == "latent" and config["latent"]["windows"] == K
    assert config["vae_run"] == {"path": str(vae_run.resolve()), "digest": latent.load_vae(vae_run)[2],
                                 "profile": "smoke"}
    assert config["data_params"]["composers"] == ["Alpha, Anna", "Beta, Bert", "other"]
    assert config["data_params"]["latent_dim"] == 16
    metrics = json.loads((latent_run / "metrics.json").read_text())
    assert metrics["valid_loss"] > 0 and metrics["valid_loss_uncond"] > 0 and metrics["sequences"]["valid"] > 0
    lrun = latent.load_latent(latent_run)
    seqs = latent.encode_sequences(vae_run, data_dir, K)
    mean, std, clip = latent.normalisation(seqs["train"])
    np.testing.assert_allclose(lrun.model.mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(lrun.model.std.numpy(), std, rtol=1e-6)
    x = (seqs["train"].latents - mean) / std
    assert lrun.model.clip.item() == pytest.approx(np.abs(x).max(), rel=1e-5) and clip > 1
    everything = np.concatenate([s.latents for s in seqs.values()]).reshape(-1, 16)
    assert not np.allclose(everything.mean(0), mean, atol=1e-4)  # the held-out splits are not in them
    log = pd.read_csv(latent_run / "log.csv")
    assert {"loss", "mse", "uncond"} <= set(log.columns) and (log.uncond < 0.6).all()


def test_labels_drop_to_the_null_token_at_p_uncond(latent_run):
    model = latent.load_latent(latent_run).model
    assert model.p_uncond == 0.2 and model.null == 3
    torch.manual_seed(0)
    dropped = model.drop_labels(torch.ones(50_000, dtype=torch.long))
    assert set(dropped.unique().tolist()) == {1, 3}
    assert abs((dropped == model.null).float().mean().item() - 0.2) < 0.01
    batch = torch.cat((torch.zeros(4000, K, 16), torch.ones(4000, K, 1)), dim=-1)  # packed: every label 1
    _, logs = model.training_loss(batch, 0)
    assert abs(logs["uncond"].item() - 0.2) < 0.03


def test_sampling_without_a_composer_always_uses_the_null_token(latent_run):
    lrun = latent.load_latent(latent_run)
    seen: list[torch.Tensor] = []
    lrun.model.denoiser.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    latent.generate_pieces(lrun, 3, steps=4, seed=0)
    assert len(seen) == 4 and all((y == lrun.model.null).all() and len(y) == 3 for y in seen)
    seen.clear()
    latent.generate_pieces(lrun, 3, steps=4, seed=0, composer="Beta, Bert", guidance=2.0)
    assert all(y.tolist() == [1, 1, 1, 3, 3, 3] for y in seen)  # one batched call: cond then null


def test_guidance_zero_is_unconditional_and_one_is_conditional(latent_run):
    model = _perturbed(latent_run).model.eval()
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(5, K, 16, generator=gen), torch.tensor([0, 10, 50, 90, 99])
    with torch.no_grad():
        cond = model(x, t, torch.full((5,), 0))
        uncond = model(x, t, torch.full((5,), model.null))
        assert (cond - uncond).abs().max() > 1e-2  # the composer changes the prediction
        torch.testing.assert_close(Guided(model, None, 1.0)(x, t), uncond, atol=1e-6, rtol=0)
        torch.testing.assert_close(Guided(model, 0, 0.0)(x, t), uncond, atol=1e-6, rtol=0)
        torch.testing.assert_close(Guided(model, 0, 1.0)(x, t), cond, atol=1e-6, rtol=0)
        torch.testing.assert_close(Guided(model, 0, 3.0)(x, t), uncond + 3 * (cond - uncond), atol=1e-5, rtol=0)


def test_generation_is_deterministic_given_the_seed(latent_run):
    lrun = latent.load_latent(latent_run)
    a = latent.generate_pieces(lrun, 4, steps=5, seed=7, sampler="ddpm")
    assert a.shape == (4, K * 8, 4) and a.dtype == np.float32
    assert np.all(a[..., 0] == np.round(a[..., 0])) and 0 <= a[..., 2].min() and a[..., 2].max() <= 2
    np.testing.assert_array_equal(a, latent.generate_pieces(lrun, 4, steps=5, seed=7, sampler="ddpm"))
    z1 = latent.sample_latents(lrun, 4, steps=5, seed=7, sampler="ddpm")
    z2 = latent.sample_latents(lrun, 4, steps=5, seed=8, sampler="ddpm")
    assert z1.shape == (4, K, 16) and not np.allclose(z1, z2)
    z3 = latent.sample_latents(lrun, 4, steps=5, seed=7, sampler="dpmsolver")
    assert np.isfinite(z3).all() and not np.allclose(z1, z3)


def test_infill_regenerates_the_middle_and_keeps_the_context(latent_run, vae_run, data_dir):
    lrun = _perturbed(latent_run)
    real = latent.encode_sequences(vae_run, data_dir, K)["test"].latents[:2]
    pieces, z = latent.infill(lrun, real, 1, 3, steps=5, seed=0)
    assert pieces.shape == (2, K * 8, 4) and z.shape == real.shape
    np.testing.assert_array_equal(z[:, [0, 3]], real[:, [0, 3]])
    assert np.abs(z[:, 1:3] - real[:, 1:3]).max() > 1e-3
    with pytest.raises(ValueError, match="start < stop"):
        latent.infill(lrun, real, 3, 3)


def test_train_and_generate_latent_through_the_cli(vae_run, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "latent", "--vae", str(vae_run), "--data", str(data_dir), "--profile", "smoke",
            "--out", str(run), "--windows", str(K), "--max-steps", "100", "--quiet"]
    assert main([*args, "--epochs", "2"]) == 0
    assert "training sequences" in capsys.readouterr().out
    assert main([*args, "--epochs", "3", "--resume"]) == 0
    assert list(pd.read_csv(run / "log.csv").epoch) == [0, 1, 2]
    out = tmp_path / "gen"
    gen = ["generate", "latent", "--run", str(run), "-n", "3", "--steps", "5", "--quiet"]
    assert main([*gen, "--out", str(out), "--composer", "Alpha, Anna", "--guidance", "2"]) == 0
    with np.load(out / "samples.npz") as f:
        samples, latents = f["samples"], f["latents"]
    assert samples.shape == (3, K * 8, 4) and latents.shape == (3, K, 16)
    assert sorted(p.name for p in out.glob("*.mid")) == ["piece_0000.mid", "piece_0001.mid", "piece_0002.mid"]
    assert main([*gen, "--out", str(tmp_path / "again"), "--composer", "Alpha, Anna", "--guidance", "2"]) == 0
    with np.load(tmp_path / "again" / "samples.npz") as f:
        np.testing.assert_array_equal(f["samples"], samples)
    assert main([*gen, "--out", str(tmp_path / "uncond")]) == 0
    with np.load(tmp_path / "uncond" / "samples.npz") as f:
        assert not np.array_equal(f["latents"], latents)


def test_a_finished_identical_latent_run_is_reused(latent_run, vae_run, data_dir):
    stamp = (latent_run / "checkpoint.pt").stat().st_mtime_ns
    first = json.loads((latent_run / "metrics.json").read_text())
    assert latent.train_latent(vae_run, data_dir, "smoke", latent_run, windows=K, progress=False) == first
    assert (latent_run / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_min_pieces_overrides_the_profiles(vae_run, data_dir, tmp_path):
    seqs = latent.encode_sequences(vae_run, data_dir, K)
    files = {c: len(set(seqs["train"].file[seqs["train"].composer == c].tolist())) for c in ("Alpha, Anna", "Beta, Bert")}
    need = max(files.values())  # only the composer(s) with the most training pieces keep their label
    run = tmp_path / "run"
    assert main(["train", "latent", "--vae", str(vae_run), "--data", str(data_dir), "--profile", "smoke",
                 "--out", str(run), "--windows", str(K), "--max-steps", "1", "--min-pieces", str(need), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["latent"]["min_pieces"] == need
    assert config["data_params"]["composers"] == [c for c in sorted(files) if files[c] >= need] + ["other"]
    result = latent.train_latent(vae_run, data_dir, "smoke", tmp_path / "api", windows=K, max_steps=1,
                                 min_pieces=100, progress=False)
    assert result["final"]["step"] == 1
    assert json.loads((tmp_path / "api" / "config.json").read_text())["data_params"]["composers"] == ["other"]


def test_bad_latent_inputs_are_one_line_errors(latent_run, vae_run, data_dir, tmp_path, capsys):
    ddpm = tmp_path / "ddpm"
    train_model("ddpm", data_dir, "smoke", ddpm, max_steps=1, progress=False)
    longest = max(int(r["windows"]) for r in load_manifest(data_dir) if r["split"] == "train")
    train = ["train", "latent", "--data", str(data_dir), "--profile", "smoke", "--out", str(tmp_path / "r")]
    gen = ["generate", "latent", "--run", str(latent_run), "-n", "2", "--steps", "2", "--out", str(tmp_path / "g")]
    cases = [
        ([*gen, "--composer", "Mozart"], "--composer 'Mozart': not a composer of"),
        ([*gen, "--composer", "Mozart"], "known: Alpha, Anna; Beta, Bert; other"),
        ([*train, "--vae", str(vae_run), "--windows", "1000"], f"the longest has {longest} windows"),
        ([*train, "--vae", str(ddpm)], "a ddpm run, not a VAE run"),
        ([*train, "--vae", str(tmp_path / "nowhere")], "no checkpoint.pt"),
        (train, "needs --vae"),
        ([*gen, "--composer", "Alpha, Anna", "--guidance", "-1"], "--guidance must be >= 0"),
        ([*gen, "--guidance", "2"], "--guidance needs --composer"),
        (["generate", "latent", "--run", str(vae_run), "-n", "2", "--out", str(tmp_path / "g")], "not a latent run"),
        (["generate", "ddim", "--run", str(ddpm), "-n", "2", "--out", str(tmp_path / "g"), "--composer", "x"],
         "--composer is a latent setting"),
        (["train", "vae", "--data", str(data_dir), "--out", str(tmp_path / "v"), "--vae", str(vae_run)],
         "--vae is a latent setting"),
        (["train", "ddpm", "--data", str(data_dir), "--out", str(tmp_path / "v"), "--min-pieces", "3"],
         "--min-pieces is a latent setting"),
        ([*train, "--vae", str(vae_run), "--min-pieces", "0"], "--min-pieces must be >= 1"),
        ([*gen, "--sampler", "ddpm", "--eta", "0.5"], "--eta is a DDIM setting"),
        (["train", "ddpm", "--data", str(data_dir), "--out", str(tmp_path / "v"), "--skip", "gaussian"],
         "--skip is a latent setting"),
        (["train", "vae", "--data", str(data_dir), "--out", str(tmp_path / "v"), "--min-snr", "1"],
         "--min-snr is a latent setting"),
        ([*train, "--vae", str(vae_run), "--min-snr", "-1"], "--min-snr must be >= 0"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "g").exists()


def test_the_composer_skip_is_the_gaussian_posterior_mean_of_the_noise():
    """Simulated known answer: under x0 ~ N(m, s^2) per dimension, the least-squares predictor of
    eps from x_t = a x0 + b eps is b (x_t - a m) / (a^2 s^2 + b^2); the skip must be that line."""
    from midilib.diffusion.latent_model import build_latent_diffusion
    from midilib.profiles import LatentConfig

    model = build_latent_diffusion(LatentConfig(windows=2, width=16, depth=1, heads=2, timesteps=100, skip="composer"),
                                   3, 2)
    m = torch.tensor([[1.5, -0.5, 0.0], [-2.0, 0.3, 0.7]])
    var = torch.tensor([[0.25, 1.0, 2.0], [0.5, 0.1, 1.5]])
    model.set_class_stats(m, var)
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    for label in (0, 1):
        for step in (5, 50, 95):
            t = torch.full((n,), step)
            x0 = m[label] + var[label].sqrt() * torch.randn(n, 1, 3, generator=gen)
            eps = torch.randn(n, 1, 3, generator=gen)
            ab = model.alphas_cumprod[step]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
            skip = model.skip(x_t, t, torch.full((n,), label))
            for d in range(3):  # the regression of eps on x_t, fitted to the draws
                xs, es = x_t[:, 0, d].double(), eps[:, 0, d].double()
                slope = ((xs - xs.mean()) * (es - es.mean())).mean() / xs.var()
                fitted = es.mean() + slope * (xs - xs.mean())
                assert (fitted - skip[:, 0, d].double()).abs().max() < 0.03
    null = torch.full((4,), model.null)  # the null token keeps N(0, I): sqrt(1 - ab_t) x_t
    x, t = torch.randn(4, 2, 3, generator=gen), torch.tensor([0, 30, 60, 99])
    torch.testing.assert_close(model.skip(x, t, null), (1 - model.alphas_cumprod[t]).sqrt()[:, None, None] * x)


@pytest.mark.parametrize("rank", [3, 2])
def test_the_sequence_skip_is_the_gaussian_posterior_mean_of_the_noise_over_the_whole_sequence(rank):
    """Simulated known answer: under x0 ~ N(m, Sigma) for the flattened sequence, the least-squares
    predictor of eps from x_t = a x0 + b eps is b (a^2 Sigma + b^2 I)^{-1} (x_t - a m); the skip must
    be that map, for two labels and the null token (mean 0, its own covariance). Sigma is built here
    by hand: in V's span, the block-Toeplitz covariance of the lags, in scipy's DCT basis, with the
    blocks between frequencies dropped; off it (rank 2 of 3 dimensions) sigma_c^2 I. A skip blind to
    the other windows (per-window Gaussian) misses the regression by far more than the tolerance."""
    from scipy.fft import dct

    from midilib.diffusion.latent_model import SequenceStats, build_latent_diffusion
    from midilib.profiles import LatentConfig

    k, d = 3, 3
    model = build_latent_diffusion(LatentConfig(windows=k, width=16, depth=1, heads=2, timesteps=100,
                                                skip="sequence", sequence_rank=rank), d, 2)
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen))[0][:, :rank]
    a0 = torch.tensor([[1.0, 0.3, 0.1], [0.3, 0.5, 0.0], [0.1, 0.0, 0.8]])[:rank, :rank]
    tilt = torch.zeros(rank, rank)
    tilt[0, 1], tilt[1, 0] = 0.1, -0.05
    within = torch.stack([torch.stack([a0, 0.6 * a0 + tilt, 0.3 * a0]),
                          torch.stack([2 * a0, -0.5 * a0, 0.1 * a0])])  # each composer's own lags
    around = torch.stack([a0 + 0.5, 0.6 * a0 + 0.5, 0.3 * a0 + 0.5])
    means = torch.tensor([[1.5, -0.5, 0.2], [-2.0, 0.3, 0.0]])
    resid = torch.tensor([0.4, 1.7, 0.9])
    model.set_sequence_stats(SequenceStats(means, basis, within, around, resid))
    phi = np.kron(dct(np.eye(k), norm="ortho", axis=0), np.eye(d))  # window-major flattening
    lift = np.kron(np.eye(k), basis.numpy())
    off = np.kron(np.eye(k), np.eye(d) - basis.numpy() @ basis.numpy().T)
    for label, lags in ((0, within[0]), (1, within[1]), (model.null, around)):
        toeplitz = np.block([[lags[j - i].numpy() if j >= i else lags[i - j].numpy().T for j in range(k)]
                             for i in range(k)])
        full = lift @ toeplitz @ lift.T
        spectral = phi @ full @ phi.T * np.kron(np.eye(k), np.ones((d, d)))  # frequencies independent
        expected = phi.T @ spectral @ phi + float(resid[label]) * off
        np.testing.assert_allclose(model.sequence_covariance(label).numpy(), expected, atol=1e-6)
    n = 200_000
    for label, lag0, mean in ((0, within[0, 0], means[0]), (1, within[1, 0], means[1]),
                              (model.null, around[0], torch.zeros(d))):
        chol = torch.linalg.cholesky(model.sequence_covariance(label)).float()
        for step in (10, 50, 90):
            x0 = (mean.repeat(k) + torch.randn(n, k * d, generator=gen) @ chol.T).reshape(n, k, d)
            eps = torch.randn(n, k, d, generator=gen)
            ab = model.alphas_cumprod[step]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
            xs, es = x_t.reshape(n, -1).double(), eps.reshape(n, -1).double()
            xs1 = torch.cat((xs, torch.ones(n, 1, dtype=torch.float64)), 1)
            fitted = torch.linalg.lstsq(xs1, es).solution  # regression of eps on all of x_t, + intercept
            probe = torch.cat((torch.eye(k * d), torch.zeros(1, k * d))).reshape(-1, k, d)  # units, then 0
            labels, steps = torch.full((len(probe),), label), torch.full((len(probe),), step)
            out = model.skip(probe, steps, labels).reshape(len(probe), -1).double()
            skip = torch.cat((out[:-1] - out[-1], out[-1:]))  # the skip's affine map, as `fitted` is laid out
            assert (fitted - skip).abs().max() < 0.02, (label, step)
            var = torch.diagonal(basis @ lag0 @ basis.T + float(resid[label]) * (torch.eye(d) - basis @ basis.T))
            diag = var.repeat(k)  # a skip that sees one window at a time
            blind = torch.cat((torch.diag((1 - ab).sqrt() / (ab * diag + 1 - ab)),
                               (-(1 - ab).sqrt() * ab.sqrt() * mean.repeat(k) / (ab * diag + 1 - ab))[None]))
            if step < 90:  # near pure noise every skip is about sqrt(1 - ab_t) x_t
                assert (fitted - blind.double()).abs().max() > 0.1, (label, step)
    with pytest.raises(ValueError, match="within must be"):
        model.set_sequence_stats(SequenceStats(means, basis, within[:, :2], around, resid))
    with pytest.raises(ValueError, match="resid variances must be > 0"):
        model.set_sequence_stats(SequenceStats(means, basis, within, around, torch.tensor([0.4, 0.0, 0.9])))


def test_a_run_stores_each_composers_gaussian_and_the_guidance_it_gives(latent_run, vae_run, data_dir, tmp_path):
    lrun = latent.load_latent(latent_run)
    model = lrun.model
    assert model.sequence_skip and lrun.config["latent"]["skip"] == "sequence"  # the profiles' skip
    seqs = latent.encode_sequences(vae_run, data_dir, K)
    labels = latent.composer_labels(seqs["train"].composer, lrun.composers)
    mean, std, _ = latent.normalisation(seqs["train"])
    x = (seqs["train"].latents - mean) / std
    basis = model.seq_basis.numpy().astype(np.float64)
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-5)
    y = x @ basis  # the null token's lag-1 covariance by hand: pairs of adjacent windows, all sequences
    lag1 = np.einsum("nkd,nke->de", y[:, :-1], y[:, 1:]) / (len(y) * (K - 1))
    np.testing.assert_allclose(model.lag_cov[model.null, 1].numpy(), lag1, atol=1e-4)
    for c in range(len(lrun.composers)):
        rows = x[labels == c].reshape(-1, x.shape[-1])
        np.testing.assert_allclose(model.class_mean[c].numpy(), rows.mean(0), atol=1e-5)
    assert (model.class_mean[model.null] == 0).all()
    # the per-window "composer" skip keeps each composer's diagonal Gaussian
    latent.train_latent(vae_run, data_dir, "smoke", tmp_path / "c", windows=K, progress=False, skip="composer")
    diagonal = latent.load_latent(tmp_path / "c").model
    for c in range(len(lrun.composers)):
        rows = x[labels == c].reshape(-1, x.shape[-1])
        np.testing.assert_allclose(diagonal.class_var[c].numpy(), np.maximum(rows.var(0), 1e-2), rtol=1e-4)
    assert (diagonal.class_var[diagonal.null] == 1).all()
    # guidance moves the prediction even before the network has learnt anything of the label
    xt, t = torch.randn(3, K, 16), torch.tensor([500 % model.timesteps, 20, 70])
    with torch.no_grad():
        shift = Guided(model, 0, 2.0)(xt, t) - Guided(model, None)(xt, t)
    assert shift.abs().max() > 1e-3
    with pytest.raises(ValueError, match="class stats must be"):
        diagonal.set_class_stats(torch.zeros(2, 16), torch.ones(2, 16))
    with pytest.raises(ValueError, match="no per-window composer statistics"):
        model.set_class_stats(torch.zeros(2, 16), torch.ones(2, 16))


def test_runs_made_before_the_composer_skip_load_as_gaussian(latent_run, tmp_path):
    """A checkpoint of a "gaussian" run (as every run before `skip` existed) loads and samples."""
    import shutil

    from midilib.train import load_checkpoint, normalized

    old = tmp_path / "old"
    shutil.copytree(latent_run, old)
    ckpt = load_checkpoint(old)
    del ckpt["config"]["latent"]["skip"], ckpt["config"]["latent"]["min_snr"]
    ckpt["model"] = {k: v for k, v in ckpt["model"].items()
                     if not k.startswith(("class_", "seq_basis", "lag_cov", "resid_var"))}
    torch.save(ckpt, old / "checkpoint.pt")
    assert normalized(ckpt["config"])["latent"]["skip"] == "gaussian"
    assert normalized(ckpt["config"])["latent"]["min_snr"] == 0.0
    lrun = latent.load_latent(old)
    assert not lrun.model.composer_skip and (lrun.model.loss_weight == 1).all()
    assert np.isfinite(latent.generate_pieces(lrun, 2, steps=3, seed=0)).all()


def test_pieces_decode_at_the_temperature_chosen_on_the_validation_files(latent_run, vae_run, data_dir, tmp_path):
    import shutil

    metrics = json.loads((latent_run / "metrics.json").read_text())
    assert metrics["temperature"] == latent.decode_temperature(vae_run, data_dir, "smoke")  # 03's choice
    assert metrics["temperature"] in (0.0, 0.5, 0.8, 1.0)
    warm = tmp_path / "warm"  # the same run, as if T = 0.5 had been chosen
    shutil.copytree(latent_run, warm)
    (warm / "metrics.json").write_text(json.dumps({**metrics, "temperature": 0.5}))
    lrun = latent.load_latent(warm)
    assert lrun.temperature == 0.5
    default = latent.generate_pieces(lrun, 3, steps=3, seed=2)
    np.testing.assert_array_equal(default, latent.generate_pieces(lrun, 3, steps=3, seed=2, temperature=0.5))
    assert not np.array_equal(default, latent.generate_pieces(lrun, 3, steps=3, seed=2, temperature=0.0))
    out = latent.generate_latent(warm, 2, tmp_path / "g", steps=3, seed=2, progress=False)
    np.testing.assert_array_equal(out["samples"], latent.generate_pieces(lrun, 2, steps=3, seed=2, temperature=0.5))
    assert json.loads((tmp_path / "g" / "generate.json").read_text())["temperature"] == 0.5


def test_the_temperature_choice_is_cached_in_the_vae_run(vae_run, data_dir, monkeypatch):
    """`runs.prior_temperature` scores once per (checkpoint, data, n, temperatures, seed, n_boot): the
    same question again reads RUN/temperature/, equal to the table first computed; another n, or a
    retrained checkpoint, scores again."""
    import os

    from midilib import evaluate, runs
    from midilib.prepare import load_windows

    arrays = load_windows(data_dir)
    before = set((vae_run / "temperature").glob("*.pkl"))
    temperature, table = runs.prior_temperature(vae_run, arrays, 40)
    assert len(set((vae_run / "temperature").glob("*.pkl")) - before) == 1

    def scored_again(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(evaluate, "evaluate_sets", scored_again)
    again, cached = runs.prior_temperature(vae_run, arrays, 40)
    assert again == temperature
    pd.testing.assert_frame_equal(cached, table, check_exact=True)
    with pytest.raises(AssertionError, match="scored again"):
        runs.prior_temperature(vae_run, arrays, 41)
    ckpt = vae_run / "checkpoint.pt"
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))
    try:
        with pytest.raises(AssertionError, match="scored again"):
            runs.prior_temperature(vae_run, arrays, 40)
    finally:
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_decoder_draws_from_a_stream_apart_from_the_samplers(latent_run):
    """At T > 0 the VAE decoder's draws come from `decode_generator(seed)`, not from a generator
    seeded by `seed` itself, whose first draws are the sampler's x_T (and walk 0's steps)."""
    from midilib.models.vae import decode, decode_generator

    first = torch.randn(1000, generator=decode_generator(3))
    torch.testing.assert_close(first, torch.randn(1000, generator=decode_generator(3)))  # deterministic
    assert not torch.equal(first, torch.randn(1000, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, torch.randn(1000, generator=decode_generator(4)))
    lrun = latent.load_latent(latent_run)
    z = latent.sample_latents(lrun, 2, steps=3, seed=3)
    expected = decode(lrun.vae, torch.from_numpy(z.reshape(-1, z.shape[-1])), 0.8, decode_generator(3))
    np.testing.assert_array_equal(latent.decode_latents(lrun, z, 0.8, seed=3), expected.reshape(2, -1, 4))


def test_the_training_loss_weighs_noise_levels_by_min_snr():
    from midilib.diffusion.latent_model import build_latent_diffusion
    from midilib.diffusion.schedulers import add_noise
    from midilib.profiles import LatentConfig

    cfg = LatentConfig(windows=2, width=16, depth=1, heads=2, timesteps=100, min_snr=5.0)
    model = build_latent_diffusion(cfg, 3, 2)
    ab = model.alphas_cumprod.double()
    snr = ab / (1 - ab)
    w = torch.clamp(snr, max=5.0) / snr
    torch.testing.assert_close(model.loss_weight.double(), w / w.mean(), rtol=1e-5, atol=1e-6)
    assert model.loss_weight[0] < 0.1 < model.loss_weight[-1]  # clean levels count less, noisy ones more
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 2, 3, generator=gen), torch.randn(6, 2, 3, generator=gen)
    t, label = torch.tensor([0, 5, 20, 50, 80, 99]), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        weighted, plain = model.weighted_loss(x0, label, t, noise)
        per = ((model(add_noise(model.alphas_cumprod, x0, noise, t), t, label) - noise) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(weighted, (model.loss_weight[t] * per).mean())
    torch.testing.assert_close(plain, model.loss(x0, label, t, noise))
    flat = build_latent_diffusion(LatentConfig(windows=2, width=16, depth=1, heads=2, timesteps=100, min_snr=0.0), 3, 2)
    assert (flat.loss_weight == 1).all()
    with pytest.raises(ValueError, match="min_snr"):
        build_latent_diffusion(LatentConfig(windows=2, width=16, depth=1, heads=2, timesteps=100, min_snr=-1.0), 3, 2)


def test_design_choices_are_scored_on_the_validation_pieces(vae_run, data_dir, tmp_path):
    from midilib import latent_choices

    variants = {"blind": {"skip": "gaussian", "min_snr": 0.0}, "composer": {"skip": "composer", "min_snr": 5.0}}
    table = latent_choices.choose(vae_run, data_dir, "smoke", tmp_path, variants, n=4, n_guided=2, min_pieces=2)
    assert list(table.index) == ["blind", "composer", "real: validation pieces (lower ends)"]
    assert json.loads((tmp_path / "blind" / "config.json").read_text())["latent"]["skip"] == "gaussian"
    assert json.loads((tmp_path / "composer" / "config.json").read_text())["latent"]["min_snr"] == 5.0
    for name in ("blind", "composer"):
        row = table.loc[name]
        assert row.valid_loss > 0 and 0 <= row.named_unguided <= 1 and 0 <= row.named_W2 <= 1
        assert row.pitch_consistency_lo <= row.pitch_consistency <= row.pitch_consistency_hi
    assert (table.loc["real: validation pieces (lower ends)", ["pitch_consistency", "duration_variance"]] < 1).all()
    text = latent_choices.markdown(table, "corpus", "this machine")
    assert text.count("\n| ") == 4 and "| blind | " in text and "named_W2" in text
    again = latent_choices.choose(vae_run, data_dir, "smoke", tmp_path, variants, n=4, n_guided=2, min_pieces=2)
    pd.testing.assert_frame_equal(table, again)  # runs reused, the scores deterministic
