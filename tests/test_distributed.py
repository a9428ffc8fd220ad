"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import prepare_small_corpus

from midilib import distributed
from midilib.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return prepare_small_corpus(tmp_path_factory.mktemp("data"), max_files=12, valid_fraction=0.0)


def _torchrun(args: list[str], procs: int = 2) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "midilib", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_a_rank_gets_its_contiguous_part_of_the_batch():
    parts = [distributed.World(r, 3).part(10) for r in range(3)]
    assert parts == [(0, 4), (4, 7), (7, 10)]
    assert distributed.World(1, 2).part(1) == (1, 1)  # an empty part: that rank steps with weight 0


def test_batch_randomness_does_not_depend_on_the_split():
    x = torch.zeros(10, 3)
    torch.manual_seed(0)
    whole = (distributed.randn_like(x), distributed.rand((10, 1)), distributed.randint(7, (10,)))
    pieces = []
    for lo, hi in [(0, 4), (4, 7), (7, 10)]:
        torch.manual_seed(0)
        with distributed.rows(lo, hi, 10):
            pieces.append((distributed.randn_like(x[lo:hi]), distributed.rand((hi - lo, 1)),
                           distributed.randint(7, (hi - lo,))))
    for i in range(3):
        assert torch.equal(torch.cat([p[i] for p in pieces]), whole[i])
    torch.manual_seed(0)
    ours = distributed.randn_like(x)
    torch.manual_seed(0)
    assert torch.equal(ours, torch.randn_like(x))  # one process: torch's own draws
    with pytest.raises(ValueError, match="rows"), distributed.rows(0, 4, 10):
        distributed.randn_like(x)


@pytest.mark.parametrize("kind", ["vae", "ddpm"])
def test_two_processes_reach_the_weights_of_one(data_dir, tmp_path, kind, capsys):
    """Same global batch, dropout off (smoke): 2 gloo processes = 1 process within float rounding;
    rank 0 alone writes the run; a 2-process run stopped inside an epoch resumes to its straight weights."""
    args = ["train", kind, "--data", str(data_dir), "--profile", "smoke", "--batch-size", "63", "--epochs", "2",
            "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--max-steps", "6", "--out", str(one)]) == 0
    _torchrun([*args, "--max-steps", "6", "--out", str(two)])
    a, b = _weights(one), _weights(two)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, f"2 processes differ from 1 by {worst}"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(two.glob("*.tmp"))

    resumed = tmp_path / "resumed"
    _torchrun([*args, "--max-steps", "3", "--out", str(resumed)])
    _torchrun([*args, "--max-steps", "6", "--out", str(resumed), "--resume"])
    c = _weights(resumed)
    assert all(torch.equal(b[k], c[k]) for k in b), "a resumed 2-process run left its straight weights"
    assert main([*args, "--max-steps", "7", "--out", str(resumed), "--resume"]) == 2
    assert "saved by 2 processes, resumed by 1" in capsys.readouterr().err
