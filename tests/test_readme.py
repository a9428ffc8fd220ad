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
