"""Data parallelism under torchrun, and randomness that does not depend on how a batch is split.

`torchrun --standalone --nproc_per_node=N -m midilib train ...` starts N processes with
RANK, LOCAL_RANK and WORLD_SIZE set; `setup()` joins them into one process group
(gloo on the CPU, NCCL on CUDA). Each optimiser step takes one global batch of the
epoch's permutation; rank r trains on its contiguous part, rows [lo_r, hi_r), and
DistributedDataParallel averages the gradients.

So that N processes reach the weights one process reaches (up to float rounding in
the all-reduce), every random draw a model makes for a batch comes from here:
inside `rows(lo, hi, total)` each rank draws the numbers of the *whole* global batch
from its generator (seeded alike on every rank) and keeps its own rows. One process
draws exactly what `torch.randn_like` and friends would, so the single-process path
is unchanged. Dropout masks are not covered: compare with dropout off.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

_ROWS: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar("rows", default=None)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (1 process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder and prints."""
        return self.rank == 0

    def part(self, total: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a global batch of `total` rows (contiguous, sizes differ by <= 1)."""
        base, extra = divmod(total, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)


def world() -> World:
    """The World torchrun's environment describes (no environment: one process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> World:
    """Join the process group once (gloo on the CPU, NCCL on CUDA); a no-op for one process."""
    w = world()
    if w.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_teardown)
    return w


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(values: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor | float]:
    """Sums of each value over the ranks (one all-reduce for the whole dict); unchanged for one process."""
    if not dist.is_initialized() or not values:
        return values
    names = list(values)
    flat = torch.tensor([float(values[k]) for k in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        flat = flat.cuda()
    dist.all_reduce(flat)
    return dict(zip(names, flat.cpu().tolist()))


def gather_objects(obj: object) -> list:
    """Every rank's `obj`, in rank order (a one-element list for one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------ batch randomness


@contextlib.contextmanager
def rows(lo: int, hi: int, total: int) -> Iterator[None]:
    """Within this block, the random draws below are rows [lo, hi) of draws for `total` rows."""
    if not 0 <= lo <= hi <= total:
        raise ValueError(f"rows [{lo}, {hi}) are not inside a batch of {total}")
    token = _ROWS.set((lo, hi, total))
    try:
        yield
    finally:
        _ROWS.reset(token)


def _whole(shape: Sequence[int]) -> tuple[tuple[int, ...], slice | None]:
    """The shape to draw (the global batch's) and the slice of it that is ours."""
    span = _ROWS.get()
    if span is None:
        return tuple(shape), None
    lo, hi, total = span
    if shape[0] != hi - lo:
        raise ValueError(f"a draw of {shape[0]} rows inside rows [{lo}, {hi})")
    return (total, *shape[1:]), slice(lo, hi)


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """torch.randn_like(x), batch-split invariant (dim 0 is the batch)."""
    shape, part = _whole(x.shape)
    z = torch.randn(shape, dtype=x.dtype, device=x.device)
    return z if part is None else z[part]


def rand(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """torch.rand(shape), batch-split invariant (dim 0 is the batch)."""
    whole, part = _whole(shape)
    u = torch.rand(whole, device=device)
    return u if part is None else u[part]


def randint(high: int, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """torch.randint(0, high, shape), batch-split invariant (dim 0 is the batch)."""
    whole, part = _whole(shape)
    t = torch.randint(0, high, whole, device=device)
    return t if part is None else t[part]
