"""The benchmark's side-by-side timer (timings themselves are never tested)."""

from __future__ import annotations

from midilib import bench


def test_timed_pair_interleaves_the_two_ways_and_warms_up_once():
    calls: list[str] = []

    def way(name: str):
        return lambda: calls.append(name) or name

    ours, baseline = bench._timed_pair(way("ours"), way("base"), repeats=3, warmup=True)
    assert calls == ["base", "ours"] + ["base", "ours"] * 3
    assert ours[2] == "ours" and baseline[2] == "base"
    assert 0.0 <= ours[0] <= ours[1] and 0.0 <= baseline[0] <= baseline[1]
    calls.clear()
    bench._timed_pair(way("ours"), way("base"), repeats=2)
    assert calls == ["base", "ours", "base", "ours"]


def test_scale_section_rows_on_a_tiny_corpus(tmp_path):
    """The scale section's rows, shape only: two copies of a few files, a 2-step training."""
    from conftest import scale_notes, write_notes_midi

    for i in range(4):
        write_notes_midi(tmp_path / "corpus" / f"piece{i}.mid", scale_notes(64, seed=i))
    rows = bench.section_scale(1, copies=(1, 2), train_steps=2, root=tmp_path / "corpus")
    prepare_rows = [r for r in rows if r["what"].startswith("prepare")]
    train_rows = [r for r in rows if r["what"].startswith("train")]
    projected = [r for r in rows if r["what"].startswith("projected")]
    assert [r["what"].split(" (")[0] for r in prepare_rows] == ["prepare 1x", "prepare 2x"]
    assert [r["windows"] for r in prepare_rows] == [32, 64] and all(r["output_mb"] > 0 for r in prepare_rows)
    assert len(train_rows) == 2 and all(r["peak_rss_mb"] > 0 for r in train_rows)
    assert [r["what"].split(" (")[0] for r in projected] == ["projected: prepare GiantMIDI-Piano",
                                                            "projected: prepare Aria-MIDI"]
    assert "from 1x to 2x" in projected[1]["what"] and projected[1]["windows"] == 1_190_000 * 8
    for r in rows:  # as _run_section adds them
        r.update(section_peak_rss_mb=0.0, section_cuda_max_mb=None)
    assert "| projected: prepare Aria-MIDI" in bench.to_markdown(rows, {"machine": "m", "device": "d", "torch": "t",
                                                                       "date": "now"})
