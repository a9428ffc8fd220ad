"""Sharded, memory-mapped arrays: a split of windows bigger than memory, read a few rows at a time.

A split NAME of a prepared folder lives in DIR/shards/NAME-00000.npy, NAME-00001.npy, ...:
plain .npy files of at most `SHARD_ROWS` rows each, in row order, every one written
atomically (a temporary file renamed into place). `ShardWriter` appends rows to them
without holding more than the rows it is given; `Shards` reads them back as one array:
a gather of any rows (from memory maps), consecutive blocks (`chunks`, read from the
files, for uploading to a GPU block by block) or the whole (`np.asarray`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

SHARD_ROWS = 1 << 20  # 1,048,576 rows: 128 MiB of (8, 4) float32 windows
SHARDS_DIR = "shards"


def shard_path(folder: str | Path, name: str, k: int) -> Path:
    """The path of shard k of `name` in `folder` (the shards folder itself)."""
    return Path(folder) / f"{name}-{k:05d}.npy"


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy (1.0) header of an array of `dtype` and `shape`; numpy pads it so that a longer
    first dimension fits in the same length (the writer rewrites it in place)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buffer.getvalue()


class ShardWriter:
    """Appends rows of one shape and dtype to `folder`/NAME-{k:05d}.npy, at most `shard_rows` a file.

    Rows go straight to a temporary file (nothing is buffered but what `append` is
    given); a full shard gets its final header and is renamed into place. `close`
    finishes the last one; a name with no rows still gets one empty shard, so that a
    reader knows its dtype and row shape. Used as a context manager, an exception
    removes the unfinished shard.
    """

    def __init__(self, folder: str | Path, name: str, row_shape: tuple[int, ...], dtype: np.dtype | type,
                 shard_rows: int = SHARD_ROWS) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.folder, self.name = Path(folder), name
        self.row_shape, self.dtype = tuple(int(d) for d in row_shape), np.dtype(dtype)
        self.shard_rows = shard_rows
        self.rows = 0  # written so far, all shards
        self.paths: list[Path] = []
        self._file = None
        self._tmp: Path | None = None
        self._in_shard = 0
        self._header_len = len(_header(self.dtype, (0, *self.row_shape)))
        self.folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        path = shard_path(self.folder, self.name, len(self.paths))
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._file = open(self._tmp, "wb")
        self._file.write(_header(self.dtype, (0, *self.row_shape)))  # rewritten with the count at the end
        self._in_shard = 0

    def _finish(self) -> None:
        assert self._file is not None and self._tmp is not None
        header = _header(self.dtype, (self._in_shard, *self.row_shape))
        if len(header) != self._header_len:  # numpy pads the header for this; never expected
            raise RuntimeError(f"{self._tmp}: the .npy header changed length")
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        path = shard_path(self.folder, self.name, len(self.paths))
        os.replace(self._tmp, path)
        self.paths.append(path)
        self._file, self._tmp = None, None

    def append(self, rows: np.ndarray) -> None:
        """Write `rows` (n, *row_shape) after the rows written so far."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        start = 0
        while start < len(rows):
            if self._file is None:
                self._open()
            take = min(len(rows) - start, self.shard_rows - self._in_shard)
            self._file.write(memoryview(rows[start:start + take]).cast("B"))
            self._in_shard += take
            self.rows += take
            start += take
            if self._in_shard == self.shard_rows:
                self._finish()

    def close(self) -> list[Path]:
        """Finish the last shard; returns every shard's path, in order."""
        if self._file is not None or not self.paths:
            if self._file is None:
                self._open()
            self._finish()
        return self.paths

    def abort(self) -> None:
        """Drop the unfinished shard (the finished ones stay)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, traceback: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class Shards:
    """Row-concatenated arrays (memory-mapped shards, or arrays in memory) read as one array.

    `len`, `shape` and `dtype` as an ndarray's; indexing by an int, a slice, a list or an
    integer (or boolean) array returns a plain ndarray of those rows in that order (a
    gather across shards); a tuple indexes the rows first, then the rest of the row.
    `chunks(rows)` yields consecutive blocks; `np.asarray(shards)` materialises the whole.
    Shards are opened as read-only memory maps (`np.load(mmap_mode="r")`: header, shape,
    offset; nothing read), and rows are read from their files, so the process holds
    only the rows asked for (the kernel's page cache holds the rest, as it sees fit).
    """

    def __init__(self, parts: Sequence[np.ndarray], paths: Sequence[Path | None] | None = None) -> None:
        if not parts:
            raise ValueError("Shards needs at least one part (an empty one gives the dtype and row shape)")
        self._parts = list(parts)
        self._paths = list(paths) if paths is not None else [None] * len(self._parts)
        first = self._parts[0]
        for p in self._parts[1:]:
            if p.dtype != first.dtype or p.shape[1:] != first.shape[1:]:
                raise ValueError(f"shards disagree: {p.dtype}{p.shape[1:]} and {first.dtype}{first.shape[1:]}")
        self.dtype: np.dtype = first.dtype
        self.row_shape: tuple[int, ...] = tuple(int(d) for d in first.shape[1:])
        self._starts = np.cumsum([0] + [len(p) for p in self._parts]).astype(np.int64)

    @classmethod
    def open(cls, folder: str | Path, name: str) -> Shards:
        """The shards of `name` in `folder` (the shards folder itself), memory-mapped."""
        paths = sorted(Path(folder).glob(f"{name}-[0-9][0-9][0-9][0-9][0-9].npy"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no shards of {name!r}")
        return cls([np.load(p, mmap_mode="r") for p in paths], paths)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"Shards(shape={self.shape}, dtype={self.dtype}, shards={len(self._parts)})"

    def _empty(self, n: int) -> np.ndarray:
        return np.empty((n, *self.row_shape), dtype=self.dtype)

    def _read(self, part: int, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows [lo, hi) of one part into `out`: read from its file (no pages stay mapped) or copied."""
        path = self._paths[part]
        if path is None or hi <= lo:
            out[...] = self._parts[part][lo:hi]
            return
        row_bytes = out.nbytes // max(len(out), 1)
        with open(path, "rb") as f:
            f.seek(self._parts[part].offset + lo * row_bytes)
            view = memoryview(out).cast("B")
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise OSError(f"{path}: truncated shard")
                got += n

    def _range(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one new array."""
        out = self._empty(max(stop - start, 0))
        if stop <= start:
            return out
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        at = 0
        for p in range(first, len(self._parts)):
            lo, hi = max(start - int(self._starts[p]), 0), min(stop, int(self._starts[p + 1])) - int(self._starts[p])
            if hi > lo:
                self._read(p, lo, hi, out[at:at + hi - lo])
                at += hi - lo
            if self._starts[p + 1] >= stop:
                break
        return out

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        shape = idx.shape
        idx = idx.reshape(-1).astype(np.int64, copy=True)
        n = len(self)
        idx[idx < 0] += n
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"index out of range for {n} rows")
        out = self._empty(len(idx))
        part = np.searchsorted(self._starts, idx, side="right") - 1
        for p in np.unique(part):
            where = np.flatnonzero(part == p)
            local = idx[where] - self._starts[p]
            if self._paths[p] is None:
                out[where] = self._parts[p][local]
            else:
                self._pread(p, local, where, out)
        return out.reshape(*shape, *self.row_shape)

    def _pread(self, part: int, local: np.ndarray, where: np.ndarray, out: np.ndarray) -> None:
        """Rows `local` of a shard's file into out[where], a run of consecutive rows a read.

        Read, not faulted in through the memory map: the kernel maps a read-around of
        neighbours with every page fault (64 KiB), so a few random batches from the map
        left most of a shard resident; a read leaves nothing in the process but the rows.
        """
        row_bytes = out.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        view = memoryview(out.reshape(len(out), -1)).cast("B")
        base = self._parts[part].offset
        breaks = np.flatnonzero((np.diff(local) != 1) | (np.diff(where) != 1)) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(local)]]).tolist()
        local, where = local.tolist(), where.tolist()
        fd = os.open(self._paths[part], os.O_RDONLY)
        try:
            for a, b in zip(starts, ends):
                size = (b - a) * row_bytes
                at = where[a] * row_bytes
                if os.preadv(fd, [view[at:at + size]], base + local[a] * row_bytes) != size:
                    raise OSError(f"{self._paths[part]}: truncated shard")
        finally:
            os.close(fd)

    def __getitem__(self, key: int | slice | tuple | list | np.ndarray) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            rows = self[key[0]]  # then the rest of the key on the leading axes the rows kept
            kept = 1 if isinstance(key[0], slice) else np.ndim(key[0])
            return rows[(slice(None),) * kept + key[1:]]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {key} out of range for {len(self)} rows")
            return self._gather(np.array([i]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._range(start, stop)
            return self._gather(np.arange(start, stop, step))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} rows")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"Shards index must be integers, a slice or a boolean mask, got {idx.dtype}")
        return self._gather(idx)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of `rows` rows (the last may be shorter), each a new array read from
        the files: the whole in order with no more than one block in memory."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        for start in range(0, len(self), rows):
            yield self._range(start, min(start + rows, len(self)))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """The whole, read into one new array (`np.asarray(shards)`)."""
        out = self._range(0, len(self))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.chunks(4096):
            yield from block


def open_split(folder: str | Path, name: str) -> Shards:
    """Split `name` (train, valid, test, train_file...) of a prepared folder, without reading it:
    its shards, memory-mapped, or in a folder prepared before shards (a lone windows.npz) that
    one array. KeyError for a name the folder does not have."""
    folder = Path(folder)
    shards = folder / SHARDS_DIR
    if shards.is_dir() and any(shards.glob("*.npy")):
        try:
            return Shards.open(shards, name)
        except FileNotFoundError:
            raise KeyError(f"{folder}: no split {name!r} (has: {', '.join(split_names(folder))})") from None
    npz = folder / "windows.npz"
    if npz.is_file():
        with np.load(npz) as data:
            if name not in data.files:
                raise KeyError(f"{npz}: no array {name!r} (has: {', '.join(data.files)})")
            return Shards([data[name]])
    raise FileNotFoundError(f"{npz}: not found (nor {shards}); run `python -m midilib prepare` first")


def split_names(folder: str | Path) -> list[str]:
    """The names of the arrays a prepared folder holds (shards, else windows.npz), sorted."""
    folder = Path(folder)
    shards = folder / SHARDS_DIR
    names = {p.name.rsplit("-", 1)[0] for p in shards.glob("*-[0-9][0-9][0-9][0-9][0-9].npy")} if shards.is_dir() else set()
    if not names and (folder / "windows.npz").is_file():
        with np.load(folder / "windows.npz") as data:
            names = set(data.files)
    return sorted(names)
