"""Every notebook runs headless at the smoke profile (papermill) and records its key figures.

Counts are asserted exactly (they are fixed by the embedded corpus and the
profile); learned metrics within tolerances that a broken model would miss.
nbval runs over the same notebooks separately (`pytest --nbval-lax notebooks`).
"""

from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

from midilib.workbook import NOTEBOOKS, ROOT


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    """Run every notebook once, in order, at smoke; returns the figures folder."""
    figures = tmp_path_factory.mktemp("figures")
    out = tmp_path_factory.mktemp("executed")
    for name in NOTEBOOKS:
        pm.execute_notebook(
            str(ROOT / "notebooks" / f"{name}.ipynb"),
            str(out / f"{name}.ipynb"),
            parameters={"PROFILE": "smoke", "SOURCE": "default", "FIGURES": str(figures)},
            cwd=str(ROOT / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
    return figures


def records(figures: Path, name: str) -> dict:
    return json.loads((figures / "records" / f"{name}.json").read_text())


def test_eda_records(executed):
    r = records(executed, "01_eda")
    assert (r["profile"], r["files"], r["notes"]) == ("smoke", 24, 7585)
    assert (r["train_windows"], r["valid_windows"], r["test_windows"]) == (611, 151, 173)
    assert 0 < r["clipped_duration"] < 0.05 and 0.3 < r["chord_share"] < 0.9
    for name in ("01_composers", "01_histograms", "01_piano_roll", "01_notes_per_second"):
        assert (executed / f"{name}.png").stat().st_size > 10_000


def test_tokenization_records(executed):
    r = records(executed, "02_tokenization")
    assert r["train_shape"] == [611, 8, 4] and r["valid_shape"] == [151, 8, 4] and r["test_shape"] == [173, 8, 4]
    assert (r["train_files"], r["valid_files"], r["test_files"]) == (16, 4, 4)  # MIN_PIECES: 24 // 5
    assert r["round_trip_error"] < 1e-4
    assert (executed / "02_round_trip.mid").exists()


def test_committed_notebooks_are_small_and_carry_no_audio():
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        assert path.stat().st_size < 1_000_000
        text = path.read_text()
        assert "audio/wav" not in text and "<audio" not in text
        nb = json.loads(text)
        assert "parameters" in nb["cells"][1]["metadata"].get("tags", [])


def test_vae_records(executed):
    r = records(executed, "03_vae")
    assert r["parameters"] == 48_499 and r["epochs"] >= 1
    assert r["final_loss"] < r["first_loss"]  # it learns
    # an untrained or broken VAE scores ~0.02 / ~0.00 here; the smoke one ~0.08 / ~0.16
    assert r["pitch_accuracy"] > 0.05 and r["note_iou"] > 0.08
    assert r["baseline_nn"] > r["baseline_common"]  # the nearest neighbour beats a constant
    # the prior's temperature is the one with the lowest fmd_inf on the validation files
    assert r["prior_temperature"] == float(min(r["prior_fmd_inf"], key=r["prior_fmd_inf"].get).removeprefix("T="))
    assert r["seconds_per_10k"] > 0
    for name in ("03_schedules", "03_training", "03_reconstructions", "03_samples", "03_walk_interpolation"):
        assert (executed / f"{name}.png").exists()


def test_ddpm_records(executed):
    r = records(executed, "04_ddpm")
    assert r["parameters"] == 23_814
    assert r["final_loss"] < r["first_loss"]
    assert r["floor_overlap_pitch"] > r["uniform_overlap_pitch"]  # the metric separates real from noise
    assert (executed / "04_forward_process.png").exists()


def test_ddim_records(executed):
    r = records(executed, "05_ddim")
    assert set(r["sweep"]) == {"DDIM-5", "DDIM-10", "DDIM-20", "DDIM-50", "DDIM-100", "DDPM-100"}
    # the sweep is scored on valid with FD∞ and the floor beside it: real music is far closer
    assert all(r["floor_fmd_inf"] < row["fmd_inf"] for row in r["sweep"].values())
    assert r["lstm_parameters"] == 8_056
    assert r["context_kept"] and r["continuation_notes"] == 16 + 12 * 4
    # DPM-Solver++ beside DDIM: one step by hand equals the scheduler's, every set is scored
    s, steps = r["samplers"], (5, 10, 20, 50)
    assert r["dpmsolver_step_error"] < 1e-5
    assert set(s) == {f"{name}-{k}" for name in ("DDIM", "DPM-Solver++") for k in steps}
    assert all(r["floor_fmd_inf"] < row["fmd_inf"] for row in s.values())
    # it solves DDIM's ODE, closer than DDIM at each step count to DDIM-T's windows from the same noise
    # (smoke: 0.007 against 0.050 at 10 steps, pitch agreement 0.97; unrelated windows agree on ~0.15 of pitches)
    dpm = {k: s[f"DPM-Solver++-{k}"] for k in steps}
    assert all(dpm[k]["ode_gap"] < s[f"DDIM-{k}"]["ode_gap"] for k in (5, 10, 20))
    assert dpm[50]["ode_gap"] < dpm[20]["ode_gap"] < dpm[5]["ode_gap"] < 0.05 and dpm[20]["pitch_agreement"] > 0.9
    # the step count is the smallest not worse than DDIM-50 on fmd_inf and scale consistency: inside
    # DDIM-50's interval, or nearer the floor than DDIM-50
    base, floor = s["DDIM-50"], r["samplers_floor"]

    def not_worse(row: dict, m: str) -> bool:
        return base[f"{m}_lo"] <= row[m] <= base[f"{m}_hi"] or abs(row[m] - floor[m]) < abs(base[m] - floor[m])

    passing = [k for k in steps if all(not_worse(dpm[k], m) for m in ("fmd_inf", "scale_consistency"))]
    assert r["dpmsolver_steps"] == (min(passing) if passing else None)
    assert (executed / "05_samplers.png").stat().st_size > 10_000


def test_evaluation_records(executed):
    r = records(executed, "06_evaluation")
    assert r["rows"][0].startswith("floor") and "baseline: uniform" in r["rows"]
    assert {"VAE", "DDPM-100", "DDIM-50"} <= set(r["rows"])
    floor, uniform = "floor (train vs test)", "baseline: uniform"
    assert r["fmd"][floor] < r["fmd"][uniform]
    assert r["fmd_inf"][floor] < 0.2 * r["fmd_inf"][uniform]  # FD∞ (4 test pieces at smoke)
    # scale consistency: real music is tonal, uniform pitches are not (~0.83 on 8 notes)
    assert r["scale_consistency"][floor] > 0.93 > 0.86 > r["scale_consistency"][uniform]
    assert r["reference_scale_consistency"] > 0.93
    if r["fad"]:  # weights present: FAD separates real music from uniform noise
        assert r["fad"][floor] < r["fad"][uniform]
        assert set(r["fad_inf_basic_pitch"]) == set(r["rows"])  # the second embedder fills every row
    assert (executed / "results.csv").exists() and (executed / "results.md").exists()


def test_latent_diffusion_records(executed):
    if not (executed / "records" / "07_latent_diffusion.json").exists():
        pytest.skip("07_latent_diffusion did not run here (not in midilib.workbook.NOTEBOOKS)")
    from midilib import long_pieces as LP

    r = records(executed, "07_latent_diffusion")
    assert (r["K"], r["latent_dim"], r["parameters"]) == (8, 16, 24_560)
    assert r["sequences"] == {"train": 70, "valid": 17, "test": 20}
    # one composer with 3 training pieces: the notebook says so and skips the guidance sweep
    assert r["composers"] == ["Bach, Johann Sebastian", "other"] and r["guidance_accuracy"] is None
    # the by-hand cells: normalisation, loss and guidance equal midilib's
    assert r["normalisation_error"] < 1e-4 and r["loss_error"] < 1e-5 and r["guidance_error"] < 1e-4
    # below the blind Gaussian denoiser (smoke: 0.372 against 0.491); a broken model scores ~1
    assert r["valid_loss"] < r["gaussian_denoiser_loss"] < 0.6
    # the sequence Gaussian by hand equals the skip; on held-out sequences it beats the blind skip (smoke:
    # 0.325 against 0.405), and the model (skip + F) stays near it (0.331); a broken F would add ~1
    assert r["sequence_skip_error"] < 1e-3
    assert r["skip_loss"] < 0.9 * r["blind_loss"] and r["model_loss"] < 0.95 * r["blind_loss"]
    # VAE-decoded rows draw at the temperature 03 chose on the validation files; a mode round trip beside
    assert r["temperature"] == records(executed, "03_vae")["prior_temperature"]
    assert r["sets"] == [LP.REAL, LP.TRAIN, LP.ROUND_TRIP, *([LP.ROUND_TRIP_MODE] if r["temperature"] else []),
                         LP.SHUFFLED, LP.PRIOR, LP.WALK, LP.SLERP, LP.CONTINUATION, LP.LATENT, LP.guided_name(2.0)]
    # the composer's Gaussian skip carries part of eps_c - eps_null (its share is 0 for a blind skip)
    assert r["skip"] == "sequence" and 0.05 < r["guidance_skip_share"] <= 1
    # the real pieces against themselves score 1 with an interval; shuffled windows fall below it
    # (pitch consistency, whole-piece key) and their clips are far from real ones (smoke: 11.7 against 0.25)
    for metric in ("pitch_consistency", "pitch_variance", "duration_consistency", "duration_variance"):
        assert r[metric][LP.REAL] == 1 and r[f"{metric}_lo"][LP.REAL] < 1
    for metric in ("pitch_consistency", "scale_consistency"):
        assert r[metric][LP.SHUFFLED] < r[f"{metric}_lo"][LP.REAL]
    assert r["fd_clips"][LP.TRAIN] < 0.2 * r["fd_clips"][LP.SHUFFLED]
    assert all(r["seconds"][name] > 0 for name in r["sets"][2:] if name != LP.SHUFFLED)
    assert r["continuation_context_kept"] and r["infill_context_kept"] and r["infill_windows"] == [2, 6]
    assert 0.5 < r["frame_seconds_median"] < 8
    for name in ("07_training", "07_piece", "07_long_pieces", "07_infill"):
        assert (executed / f"{name}.png").stat().st_size > 10_000
