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
