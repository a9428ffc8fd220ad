"""Every generated README block equals the committed file it comes from."""

from __future__ import annotations

import json

import pytest

from midilib import readme
from midilib.workbook import ROOT


def test_readme_blocks_match_their_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    present = readme.blocks_in(text)
    assert {"measured", "results", "bench"} <= set(present)
    assert readme.stale() == [], "run `make readme` (or the make target that writes the file)"


def test_sync_and_stale_on_a_copy(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "results.md").write_text("| a | b |\n")
    page = tmp_path / "README.md"
    page.write_text("# T\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    assert readme.stale(page, tmp_path) == ["results"]
    assert readme.sync(page, tmp_path) == ["results"]
    assert readme.stale(page, tmp_path) == []
    assert "| a | b |" in page.read_text() and "old" not in page.read_text()
    (tmp_path / "figures" / "results.md").write_text("| changed |\n")
    assert readme.stale(page, tmp_path) == ["results"]


def test_measured_markdown_is_written_from_records(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "workbook.json").write_text(json.dumps(
        {"profile": "default", "source": "default", "seconds": {"01_eda": 4.0, "03_vae": 370.0},
         "machine": "x86_64, 2 CPU cores"}))
    (records / "03_vae.json").write_text(json.dumps(
        {"parameters": 1234, "epochs": 9, "pitch_accuracy": 0.9312, "note_iou": 0.4, "baseline_common": 0.07,
         "baseline_nn": 0.33, "nn_iou": 0.49, "seconds_per_10k": 0.26}))
    text = readme.measured_markdown(tmp_path)
    assert "**374 s** (01 4 s, 03 370 s)" in text
    assert "1,234 parameters, 9 epochs" in text and "pitch accuracy 0.931" in text


@pytest.mark.parametrize("name", sorted(readme.BLOCKS))
def test_every_block_names_a_file_under_figures(name):
    assert readme.BLOCKS[name].startswith("figures/")


def test_targets_say_yes_only_where_the_measurement_meets_them(tmp_path):
    import pandas as pd

    def row(v, half):
        return {"v": v, "lo": v - half, "hi": v + half}

    table = {"floor (train vs test)": {"fad_inf": row(0.5, 0.3), "fmd_inf": row(1.0, 1.0),
                                       "scale_consistency": row(0.95, 0.01), "pitch_class_entropy": row(2.0, 0.05)},
             "VAE": {"fad_inf": row(0.9, 0.1), "fmd_inf": row(9.0, 1.0),
                     "scale_consistency": row(0.90, 0.01), "pitch_class_entropy": row(2.2, 0.05)},
             "DDIM-50": {"fad_inf": row(0.7, 0.2), "fmd_inf": row(1.5, 0.5),
                         "scale_consistency": row(0.955, 0.01), "pitch_class_entropy": row(2.3, 0.05)},
             "DDIM-50 (original's linear pitch)": {"fad_inf": row(0.1, 0.2), "fmd_inf": row(0.1, 0.1),
                                                   "scale_consistency": row(0.83, 0.01),
                                                   "pitch_class_entropy": row(2.45, 0.05)}}
    df = pd.DataFrame({s: {f"{m}{suffix}": cells[k] for m, cells in metrics.items()
                           for suffix, k in (("", "v"), ("_lo", "lo"), ("_hi", "hi"))}
                       for s, metrics in table.items()}).T
    df.index.name = "set"
    df.to_csv(tmp_path / "results.csv")
    (tmp_path / "records").mkdir()
    vae_test = {"pitch_accuracy": 0.96, "pitch_accuracy_lo": 0.94, "pitch_accuracy_hi": 0.97,
                "note_iou": 0.30, "note_iou_lo": 0.28, "note_iou_hi": 0.32}
    (tmp_path / "records" / "06_evaluation.json").write_text(json.dumps({"source": "x", "vae_test": vae_test}))
    text = readme.targets_markdown(tmp_path)
    assert "pitch accuracy 0.960 [0.940, 0.970] (≥ 0.95: **yes**), note IoU 0.300 [0.280, 0.320] (≥ 0.35: no)" in text
    assert "within 2× the floor's 0.500: **yes**" in text  # 0.9 <= 1.0
    assert "scale consistency 0.900 [0.890, 0.910] (in the floor's 0.950 [0.940, 0.960]: no)" in text
    # the original's design is not a candidate for the best sampler even where its fad_inf is lowest
    assert "best diffusion sampler by fad_inf, DDIM-50: scale consistency 0.955 [0.945, 0.965] " \
           "(in the floor's interval: **yes**), pitch-class entropy" in text
    assert "(floor 2.000 [1.950, 2.050]: no), fad_inf 0.700 [0.500, 0.900] (floor 0.500 [0.200, 0.800]: **yes**)" in text
    assert "fmd_inf 1.500 [1.000, 2.000] (floor 1.000 [0.000, 2.000]: **yes**)" in text
    assert readme.targets_markdown(tmp_path / "nothing") == ""


def test_latent_targets_say_yes_only_where_the_measurement_meets_them(tmp_path):
    from midilib import long_pieces as LP

    sets = [LP.REAL, LP.TRAIN, LP.SHUFFLED, LP.WALK, LP.LATENT]
    record = {"K": 16, "latent_dim": 128, "parameters": 1000, "epochs": 10, "train_seconds": 60.0, "n_pieces": 8,
              "skip": "composer", "min_snr": 5.0, "temperature": 0.8}
    values = {  # per metric: real, train, shuffled, walk, latent
        "pitch_consistency": [1.0, 0.99, 0.90, 0.97, 0.975], "pitch_variance": [1.0, 0.9, 0.3, 0.5, 0.6],
        "duration_consistency": [1.0, 0.97, 0.9, 0.98, 0.95], "duration_variance": [1.0, 0.8, 0.3, 0.2, 0.9],
        "fd_clips": [0.0, 1.0, 2.0, 7.0, 1.5], "scale_consistency": [0.87, 0.88, 0.67, 0.85, 0.8]}
    lows = {"pitch_consistency": 0.97, "pitch_variance": 0.7, "duration_consistency": 0.96, "duration_variance": 0.7,
            "fd_clips": -1.0, "scale_consistency": 0.85}
    for m, v in values.items():
        record[m] = dict(zip(sets, v))
        record[m + "_lo"] = {s: lows[m] for s in sets}
        record[m + "_hi"] = {s: 1.0 for s in sets}
    record["probe_files"] = {"vae latents": [0.3, 0.15, 0.45], "window statistics": [0.33, 0.16, 0.5],
                             "majority": [0.1, 0.0, 0.2]}
    record["guidance_accuracy"] = {"0.0": [0.13, 0.1, 0.16], "1.0": [0.25, 0.2, 0.3], "2.0": [0.2, 0.1, 0.3]}
    record["guidance_fd_clips"] = {"0.0": [0.5, 0, 1], "1.0": [1.1, 0, 2], "2.0": [3.5, 2, 5]}
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "07_latent_diffusion.json").write_text(json.dumps(record))
    text = readme.latent_markdown(tmp_path)
    assert ("pitch consistency 0.975 (real [0.970, 1]: **yes**); pitch variance 0.600 (real [0.700, 1]: no); "
            "duration consistency 0.950 (real [0.960, 1]: no); duration variance 0.900 (real [0.700, 1]: **yes**)") in text
    assert "shuffled windows on 4 of 4 scores (**yes**), than the VAE random walk on 3 of 4 (no)" in text
    assert "(above the majority, the interval's lower end too: **yes**)" in text
    assert "best W = 1, 1.9× unguided (≥ 2×: no)" in text  # 0.25 / 0.13
    assert "composer skip, min-SNR-5 loss; VAE-decoded rows drawn at T = 0.8" in text
    assert readme.latent_markdown(tmp_path / "nothing") == ""
