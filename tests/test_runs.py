"""Run folders end to end through the CLI: train, resume after a kill, generate, evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import prepare_small_corpus

from midilib.cli import main
from midilib.prepare import PrepareParams, prepare
from midilib.runs import load_model, train_model
from midilib.train import normalized

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A small real corpus: the first files of the embedded corpus (or the sample corpus)."""
    return prepare_small_corpus(tmp_path_factory.mktemp("data"), max_files=16, valid_fraction=0.2)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_train_vae_writes_a_complete_run(data_dir, tmp_path, capsys):
    run = tmp_path / "vae"
    assert main(["train", "vae", "--data", str(data_dir), "--profile", "smoke", "--out", str(run),
                 "--epochs", "2", "--quiet"]) == 0
    assert "parameters" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "vae" and config["profile"] == "smoke" and config["train"]["epochs"] == 2
    assert config["data_params"] == {"window": 8, "s_max": 2.0, "d_max": 2.0}
    log = pd.read_csv(run / "log.csv")
    assert list(log.epoch) == [0, 1]
    assert {"loss", "ce", "mse", "kl", "beta", "teacher_forcing", "lr", "samples_per_s"} <= set(log.columns)
    assert list(log.teacher_forcing) == [0.6, 0.55] and list(log.beta) == [0.0, 0.01]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["parameters"] == 48_499
    names = [r["model"] for r in metrics["reconstruction"]]
    assert names[0].startswith("VAE") and len(names) == 3


def test_resume_after_a_kill_reaches_the_same_weights(data_dir, tmp_path):
    args = ["--data", str(data_dir), "--profile", "smoke", "--epochs", "12", "--max-steps", "100000", "--quiet"]
    straight = tmp_path / "straight"
    assert main(["train", "vae", *args, "--out", str(straight)]) == 0

    killed = tmp_path / "killed"
    # as many threads as this process's (conftest: 1): another count sums in another order
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "midilib", "train", "vae", *args, "--out", str(killed)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "log.csv").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((killed / "log.csv").read_text().splitlines()) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(pd.read_csv(killed / "log.csv"))
    assert 0 < done < 12, "the run should have been killed part-way"
    assert main(["train", "vae", *args, "--out", str(killed), "--resume"]) == 0
    log = pd.read_csv(killed / "log.csv")
    assert list(log.epoch) == list(range(12))
    a, b = _weights(straight), _weights(killed)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_refuses_another_configuration(data_dir, tmp_path):
    run = tmp_path / "run"
    train_model("vae", data_dir, "smoke", run, epochs=1, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train_model("vae", data_dir, "smoke", run, epochs=2, seed=5, resume=True, progress=False)


def test_train_reuses_a_finished_identical_run(data_dir, tmp_path):
    run = tmp_path / "run"
    first = train_model("vae", data_dir, "smoke", run, epochs=1, progress=False)
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    assert train_model("vae", data_dir, "smoke", run, epochs=1, progress=False) == first
    assert (run / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_an_unknown_precision_fails_before_anything_is_written(data_dir, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="--precision must be one of bf16, fp32"):
        train_model("vae", data_dir, "smoke", run, epochs=1, precision="fp16", progress=False)
    assert not run.exists()


def test_runs_from_before_precision_are_still_reused(data_dir, tmp_path):
    """A run whose config.json has no train.precision (older code) meant bf16 and is reused as such."""
    run = tmp_path / "run"
    first = train_model("ddpm", data_dir, "smoke", run, epochs=1, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["train"].pop("precision") == "bf16"
    (run / "config.json").write_text(json.dumps(config))
    assert train_model("ddpm", data_dir, "smoke", run, epochs=1, progress=False) == first


def test_a_fresh_copy_of_the_corpus_keeps_its_runs(tmp_path):
    """Copying a corpus changes every mtime: prepare runs again, the arrays come out the
    same, and a run trained on them is reused (runs are keyed by the arrays' digest)."""
    from midilib.corpus import DATA

    source = DATA / "default-corpus"
    if not (source / "corpus.json").exists():
        pytest.skip("no embedded corpus (run make set-up)")
    files = sorted(source.glob("*.mid"))[:10]
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        for i, f in enumerate(files):
            (folder / f.name).write_bytes(f.read_bytes())
            os.utime(folder / f.name, ns=(i, i + (folder == second)))  # the copy has other mtimes
    data = tmp_path / "data"
    prepare(first, data, PrepareParams(test_fraction=0.2), progress=False)
    keys = ((data / "key.txt").read_text(), (data / "content.txt").read_text())
    run = tmp_path / "run"
    trained = train_model("vae", data, "smoke", run, epochs=1, progress=False)
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    assert not prepare(second, data, PrepareParams(test_fraction=0.2), progress=False).reused
    assert (data / "key.txt").read_text() != keys[0] and (data / "content.txt").read_text() == keys[1]
    assert train_model("vae", data, "smoke", run, epochs=1, progress=False) == trained
    assert (run / "checkpoint.pt").stat().st_mtime_ns == stamp
    # other arrays (another split) are other data: the run is trained again
    prepare(second, data, PrepareParams(test_fraction=0.2, seed=1), progress=False)
    assert (data / "content.txt").read_text() != keys[1]
    train_model("vae", data, "smoke", run, epochs=1, progress=False)
    assert (run / "checkpoint.pt").stat().st_mtime_ns != stamp


def test_a_vae_checkpoint_from_before_value_weight_can_be_resumed(data_dir, tmp_path):
    run = tmp_path / "run"
    train_model("vae", data_dir, "smoke", run, epochs=1, progress=False)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    del ckpt["config"]["vae"]["value_weight"]  # as older code wrote it
    torch.save(ckpt, run / "checkpoint.pt")
    result = train_model("vae", data_dir, "smoke", run, epochs=2, resume=True, progress=False)
    assert result["final"]["epochs_done"] == 2


@pytest.mark.parametrize("kind, weight, match", [
    ("vae", 0.0, "--value-weight must be > 0 and finite"),
    ("vae", float("inf"), "--value-weight must be > 0 and finite"),
    ("ddpm", 10.0, "--value-weight is a VAE setting"),
])
def test_a_bad_value_weight_fails_before_anything_is_written(data_dir, tmp_path, kind, weight, match):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train_model(kind, data_dir, "smoke", run, epochs=1, value_weight=weight, progress=False)
    assert not run.exists()


def test_configs_from_before_new_fields_mean_what_those_runs_did():
    """A VAE config.json from older code weighed a softplus MSE by 1, without free bits;
    an older diffusion config coded pitch linearly. Fields a run stored are kept."""
    old = {"model": "vae", "vae": {"latent": 16}, "train": {"precision": "fp32"}}
    assert normalized(old)["vae"] == {"latent": 16, "value_weight": 1.0, "value_head": "mse",
                                      "value_bins": 64, "free_bits": 0.0, "beta_max": 0.1}
    assert normalized(old)["train"] == {"precision": "fp32"} and old["vae"] == {"latent": 16}
    assert normalized({"model": "ddpm", "ddpm": {}})["ddpm"] == {"pitch_code": "linear"}
    assert normalized({"ddpm": {"pitch_code": "fifths"}})["ddpm"] == {"pitch_code": "fifths"}


@pytest.fixture(scope="module")
def ddpm_run(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddpm")
    train_model("ddpm", data_dir, "smoke", run, epochs=2, progress=False)
    return run


def test_generate_and_evaluate_through_the_cli(data_dir, ddpm_run, tmp_path, capsys):
    vae_run = tmp_path / "vae"
    train_model("vae", data_dir, "smoke", vae_run, epochs=1, progress=False)
    specs = []
    for generator, run, extra in (("vae", vae_run, []), ("ddpm", ddpm_run, ["--steps", "20"]),
                                  ("ddim", ddpm_run, ["--steps", "10", "--eta", "0.5"])):
        out = tmp_path / f"gen-{generator}"
        assert main(["generate", generator, "--run", str(run), "-n", "64", "--out", str(out), "--quiet", *extra]) == 0
        with np.load(out / "samples.npz") as f:
            samples = f["samples"]
            assert samples.shape == (64, 8, 4) and samples.dtype == np.float32
            assert float(f["seconds_per_10k"]) > 0
        assert len(list(out.glob("*.mid"))) == 4
        assert np.all(samples[..., 0] == np.round(samples[..., 0]))
        assert samples[..., 2].min() >= 0 and samples[..., 2].max() <= 2
        specs.append(f"{generator}={out / 'samples.npz'}")
        again = tmp_path / f"again-{generator}"
        main(["generate", generator, "--run", str(run), "-n", "64", "--out", str(again), "--quiet", *extra])
        with np.load(again / "samples.npz") as f:
            np.testing.assert_array_equal(f["samples"], samples)  # seeded
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["evaluate", "--reference", str(data_dir), "--samples", *specs, "--out", str(out),
                 "--embedder", "none", "--n", "64", "--n-boot", "20"]) == 0
    table = pd.read_csv(out / "results.csv")
    names = set(table.iloc[:, 0])
    assert {"vae", "ddpm", "ddim"} <= names and any("floor" in n for n in names)
    assert (out / "results.md").read_text().count("|") > 20


def test_generate_dpmsolver_through_the_cli(ddpm_run, tmp_path, capsys):
    """`generate dpmsolver`: DPM-Solver++ on the DDPM run's denoiser, 20 steps unless --steps."""
    out = tmp_path / "dpm"
    assert main(["generate", "dpmsolver", "--run", str(ddpm_run), "-n", "32", "--out", str(out), "--steps", "10",
                 "--quiet"]) == 0
    assert "dpmsolver: 32 windows" in capsys.readouterr().out
    with np.load(out / "samples.npz") as f:
        samples = f["samples"]
    assert samples.shape == (32, 8, 4) and samples.dtype == np.float32 and np.isfinite(samples).all()
    assert np.all(samples[..., 0] == np.round(samples[..., 0])) and samples[..., 2].min() >= 0
    info = json.loads((out / "generate.json").read_text())
    assert (info["generator"], info["steps"]) == ("dpmsolver", 10) and len(list(out.glob("*.mid"))) == 4
    again = tmp_path / "again"
    assert main(["generate", "dpmsolver", "--run", str(ddpm_run), "-n", "32", "--out", str(again), "--quiet"]) == 0
    assert json.loads((again / "generate.json").read_text())["steps"] == 20  # the default
    with np.load(again / "samples.npz") as f:
        assert not np.array_equal(f["samples"], samples)  # 20 steps are not 10
    for extra, needle in ((["--steps", "0"], "--steps must be in [1, 100], got 0"), (["--eta", "0.5"], "--eta")):
        assert main(["generate", "dpmsolver", "--run", str(ddpm_run), "-n", "8", "--out", str(tmp_path / "x"),
                     "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

def test_cli_errors_are_one_line(data_dir, ddpm_run, tmp_path, capsys):
    cases = [
        (["train", "vae", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], "not found"),
        (["train", "vae", "--data", str(data_dir), "--profile", "huge", "--out", str(tmp_path / "r")], "unknown profile"),
        (["train", "vae", "--data", str(data_dir), "--out", str(tmp_path / "r"), "--epochs", "0"], "--epochs"),
        (["generate", "vae", "--run", str(ddpm_run), "-n", "10", "--out", str(tmp_path / "g")], "cannot generate"),
        (["generate", "ddim", "--run", str(ddpm_run), "-n", "10", "--out", str(tmp_path / "g"), "--steps", "100000"], "--steps"),
        (["generate", "ddim", "--run", str(ddpm_run), "-n", "10", "--out", str(tmp_path / "g"), "--eta", "2"], "--eta"),
        (["generate", "ddpm", "--run", str(tmp_path / "nothing"), "-n", "10", "--out", str(tmp_path / "g")], "not found"),
        (["evaluate", "--reference", str(data_dir), "--samples", f"x={tmp_path / 'none.npz'}", "--out", str(tmp_path / "e")], "none.npz"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)


def test_loaded_model_matches_the_trained_one(data_dir, ddpm_run):
    model, config = load_model(ddpm_run)
    assert config["model"] == "ddpm" and not model.training
    weights = _weights(ddpm_run)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name])


def test_compare_tabulates_vae_runs_by_head(data_dir, tmp_path, capsys):
    mse, classes = tmp_path / "mse", tmp_path / "classes"
    train_model("vae", data_dir, "smoke", mse, epochs=1, value_head="mse", progress=False)
    train_model("vae", data_dir, "smoke", classes, epochs=1, progress=False)
    out = tmp_path / "heads.md"
    assert main(["compare", f"mse={mse}", f"classes={classes}", "--out", str(out)]) == 0
    text = out.read_text()
    assert list(pd.read_csv(out.with_suffix(".csv")).run) == ["mse", "classes"]
    assert "| mse | mse | 1.000 | 0.000 | 0.100 | 1 |" in text and "| classes | classes |" in text
    assert text.count("| test |") + text.count("| valid |") == 2  # valid where the data has one
    assert main(["compare", f"classes={classes}", "--prior", "64"]) == 0
    printed = capsys.readouterr().out
    assert "prior_T" in printed and "scale_consistency_lo" in printed
    assert main(["compare", f"classes={classes}", "--prior", "0"]) == 2
    assert main(["compare", f"x={tmp_path / 'nothing'}"]) == 2
    assert "nothing/metrics.json: not found" in capsys.readouterr().err
    assert main(["compare", "no-name"]) == 2
    with pytest.raises(ValueError, match="--value-head must be mse or classes"):
        train_model("vae", data_dir, "smoke", tmp_path / "bad", epochs=1, value_head="gauss", progress=False)
    with pytest.raises(ValueError, match="--free-bits must be >= 0"):
        train_model("vae", data_dir, "smoke", tmp_path / "bad", epochs=1, free_bits=-1, progress=False)
    with pytest.raises(ValueError, match="--beta-max is a VAE setting"):
        train_model("ddpm", data_dir, "smoke", tmp_path / "bad", epochs=1, beta_max=0.2, progress=False)


@pytest.mark.parametrize("kind", ["vae", "ddpm"])
def test_a_run_stopped_by_max_steps_resumes_to_the_straight_weights(data_dir, tmp_path, kind):
    """--max-steps counts the run's steps in all: stopping inside an epoch (and on its boundary)
    and resuming with a larger --max-steps reaches, bit for bit, the weights of one straight run."""
    from midilib.prepare import load_windows

    n = len(load_windows(data_dir)["train"])
    per_epoch = -(-n // 64)
    assert per_epoch >= 3, "the test needs epochs of several steps"
    total = 2 * per_epoch + 2
    args = ["train", kind, "--data", str(data_dir), "--profile", "smoke", "--epochs", "3", "--batch-size", "64",
            "--quiet"]
    straight = tmp_path / "straight"
    assert main([*args, "--max-steps", str(total), "--out", str(straight)]) == 0
    for stops in ([per_epoch // 2, per_epoch + 1], [per_epoch]):  # inside an epoch; on a boundary
        run = tmp_path / f"stopped-{stops[0]}"
        assert main([*args, "--max-steps", str(stops[0]), "--out", str(run)]) == 0
        state = torch.load(run / "checkpoint.pt", weights_only=False)["state"]
        assert state["step"] == stops[0] and state["batch"] == stops[0] % per_epoch
        for stop in [*stops[1:], total]:
            assert main([*args, "--max-steps", str(stop), "--out", str(run), "--resume"]) == 0
        a, b = _weights(straight), _weights(run)
        assert all(torch.equal(a[name], b[name]) for name in a), kind
        log_a, log_b = pd.read_csv(straight / "log.csv"), pd.read_csv(run / "log.csv")
        assert list(log_b.epoch) == list(log_a.epoch) == [0, 1, 2]
        cols = [c for c in log_a.columns if c not in ("samples_per_s", "seconds")]
        pd.testing.assert_frame_equal(log_a[cols], log_b[cols])


def test_embed_writes_window_latents_and_file_means(data_dir, tmp_path, capsys):
    import shutil

    from midilib.models.vae import encode

    run = tmp_path / "vae"
    train_model("vae", data_dir, "smoke", run, max_steps=2, progress=False)
    source = json.loads((data_dir / "params.json").read_text())["root"]
    files = sorted(Path(source).rglob("*.mid"))[:3]
    folder = tmp_path / "midi"
    folder.mkdir()
    for f in files[1:]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.mid").write_bytes(b"MThd not really")
    out = tmp_path / "emb.npz"
    assert main(["embed", str(files[0]), str(folder), "--run", str(run), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.mid" in captured.err
    with np.load(out) as e:
        files_out, latents, owner, means = e["files"], e["latents"], e["window_file"], e["file_means"]
    assert len(files_out) == 3 and means.shape == (3, latents.shape[1]) and len(owner) == len(latents)
    model, _ = load_model(run)
    from midilib.events import read_events, to_windows

    first = to_windows(read_events(files[0]), 8)
    mu, _ = encode(model, first)
    np.testing.assert_allclose(latents[owner == 0], mu.numpy(), atol=1e-6)  # the posterior means, in file order
    np.testing.assert_allclose(means[0], mu.numpy().mean(0), atol=1e-5)
    assert main(["embed", str(folder / "broken.mid"), "--run", str(run), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no usable MIDI file" in capsys.readouterr().err
    ddpm = tmp_path / "ddpm"
    train_model("ddpm", data_dir, "smoke", ddpm, max_steps=1, progress=False)
    assert main(["embed", str(folder), "--run", str(ddpm), "--out", str(tmp_path / "y.npz")]) == 2
    assert "embed needs a VAE run" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "nowhere"), "--run", str(run), "--out", str(tmp_path / "z.npz")]) == 2


@pytest.mark.parametrize("kind", ["vae", "ddpm"])
def test_the_valid_loss_is_logged_without_touching_training(data_dir, tmp_path, kind):
    """Every epoch logs valid_loss on the valid split; scoring it leaves training's RNG alone, so
    the weights equal those of a fit without it, and it is the held-out loss of those weights."""
    from midilib.prepare import load_windows
    from midilib.runs import build_model, resolve_config
    from midilib.train import autocast_for, fit, held_out_loss, seed_everything

    arrays = load_windows(data_dir)
    config, cfg = resolve_config(kind, "smoke", data_dir, epochs=2)
    weights = {}
    for name, valid in (("with", arrays["valid"]), ("without", None)):
        seed_everything(0)
        model = build_model(kind, config[kind], config["data_params"])
        fit(model, arrays["train"], cfg, tmp_path / name, config, progress=False, held_out=valid)
        weights[name] = _weights(tmp_path / name)
    assert all(torch.equal(weights["with"][k], weights["without"][k]) for k in weights["with"])
    log = pd.read_csv(tmp_path / "with" / "log.csv")
    assert "valid_loss" not in pd.read_csv(tmp_path / "without" / "log.csv").columns
    assert log.valid_loss.notna().all() and (log.valid_loss > 0).all()
    assert not np.allclose(log.valid_loss, log.loss)  # another set of windows
    model, _ = load_model(tmp_path / "with")
    again = held_out_loss(model, arrays["valid"], 1, torch.device("cpu"), autocast_for(torch.device("cpu"), "fp32"))
    assert again["valid_loss"] == pytest.approx(log.valid_loss.iloc[-1], rel=1e-6)
