"""Shards: rows written across many tiny .npy shards read back as one array, in any order."""

from __future__ import annotations

import numpy as np
import pytest

from midilib.shards import Shards, ShardWriter, open_split, split_names


def _write(folder, data: np.ndarray, shard_rows: int, blocks: list[int]) -> list:
    writer = ShardWriter(folder, "train", data.shape[1:], data.dtype, shard_rows=shard_rows)
    at = 0
    for n in blocks:  # uneven appends: some inside a shard, some across two or more
        writer.append(data[at:at + n])
        at += n
    assert at == len(data)
    return writer.close()


def test_round_trip_across_shard_boundaries(tmp_path):
    data = np.arange(11 * 2 * 3, dtype=np.float32).reshape(11, 2, 3)
    paths = _write(tmp_path, data, 3, [2, 0, 5, 1, 3])
    assert [p.name for p in paths] == [f"train-{k:05d}.npy" for k in range(4)]
    assert [len(np.load(p)) for p in paths] == [3, 3, 3, 2]
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    s = Shards.open(tmp_path, "train")
    assert len(s) == 11 and s.shape == (11, 2, 3) and s.dtype == np.float32 and s.ndim == 3
    assert s.nbytes == data.nbytes
    full = np.asarray(s)
    assert type(full) is np.ndarray and np.array_equal(full, data)


def test_gather_slices_and_chunks(tmp_path):
    data = np.random.default_rng(0).normal(size=(13, 4)).astype(np.float32)
    _write(tmp_path, data, 4, [13])
    s = Shards.open(tmp_path, "train")
    idx = np.array([12, 0, 5, 5, 3, 8, 11, 4, -1])
    for key in (idx, list(idx), idx.astype(np.int32)):
        got = s[key]
        assert type(got) is np.ndarray and np.array_equal(got, data[idx])  # in the order asked, repeats too
    assert np.array_equal(s[idx.reshape(3, 3)], data[idx.reshape(3, 3)])
    for sl in (slice(None), slice(2, 11), slice(3, 9), slice(None, None, 2), slice(10, 1, -3), slice(5, 5), slice(-3, None)):
        assert np.array_equal(s[sl], data[sl]), sl
    assert np.array_equal(s[7], data[7]) and np.array_equal(s[-2], data[-2])
    assert np.array_equal(s[np.int64(4)], data[4])
    assert np.array_equal(s[:, 1], data[:, 1]) and np.array_equal(s[idx, 2], data[idx, 2]) and s[3, 1] == data[3, 1]
    mask = data[:, 0] > 0
    assert np.array_equal(s[mask], data[mask])
    assert s[np.array([], dtype=np.int64)].shape == (0, 4)
    for bad in (13, -14, [0, 13]):
        with pytest.raises(IndexError):
            s[bad]
    for rows in (1, 4, 5, 13, 100):
        blocks = list(s.chunks(rows))
        assert [len(b) for b in blocks] == [min(rows, 13 - i) for i in range(0, 13, rows)]
        assert all(type(b) is np.ndarray for b in blocks)
        assert np.array_equal(np.concatenate(blocks), data)
    with pytest.raises(ValueError):
        next(s.chunks(0))


def test_empty_split_and_ids_and_in_memory_parts(tmp_path):
    empty = ShardWriter(tmp_path, "valid", (8, 4), np.float32, shard_rows=3)
    assert [p.name for p in empty.close()] == ["valid-00000.npy"]  # one empty shard keeps dtype and shape
    s = Shards.open(tmp_path, "valid")
    assert s.shape == (0, 8, 4) and np.asarray(s).shape == (0, 8, 4) and list(s.chunks(2)) == []
    ids = ShardWriter(tmp_path, "valid_file", (), np.int32, shard_rows=3)
    ids.append(np.arange(7))
    ids.close()
    assert np.array_equal(np.asarray(Shards.open(tmp_path, "valid_file")), np.arange(7, dtype=np.int32))
    parts = Shards([np.arange(3), np.arange(3, 10)])  # arrays in memory read the same way
    assert np.array_equal(parts[[9, 0, 4]], [9, 0, 4]) and np.array_equal(np.concatenate(list(parts.chunks(4))), np.arange(10))


def test_a_failed_writer_leaves_only_finished_shards(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", (2,), np.float32, shard_rows=4) as w:
            w.append(np.zeros((6, 2)))
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.npy"]
    with pytest.raises(ValueError, match="shape"):
        ShardWriter(tmp_path, "x", (2,), np.float32).append(np.zeros((1, 3)))


def test_open_split_reads_shards_or_an_old_windows_npz(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    train = np.ones((5, 8, 4), np.float32)
    np.savez(old / "windows.npz", train=train, test=train[:2], train_file=np.zeros(5, np.int32))
    assert split_names(old) == ["test", "train", "train_file"]
    assert np.array_equal(np.asarray(open_split(old, "train")), train) and len(open_split(old, "test")) == 2
    with pytest.raises(KeyError):
        open_split(old, "valid")
    new = tmp_path / "new"
    _write(new / "shards", train, 2, [5])
    assert split_names(new) == ["train"] and len(open_split(new, "train")) == 5
    with pytest.raises(KeyError):
        open_split(new, "test")
    with pytest.raises(FileNotFoundError, match="prepare"):
        open_split(tmp_path / "none", "train")
