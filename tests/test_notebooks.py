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
    assert (r["train_windows"], r["test_windows"]) == (885, 50)
    assert 0 < r["clipped_duration"] < 0.05 and 0.3 < r["chord_share"] < 0.9
    for name in ("01_composers", "01_histograms", "01_piano_roll", "01_notes_per_second"):
        assert (executed / f"{name}.png").stat().st_size > 10_000


def test_tokenization_records(executed):
    r = records(executed, "02_tokenization")
    assert r["train_shape"] == [885, 8, 4] and r["test_shape"] == [50, 8, 4]
    assert (r["train_files"], r["test_files"]) == (22, 2)
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
