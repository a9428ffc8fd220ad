"""From a corpus of MIDI files to cached training windows (`shards/` + `manifest.csv`).

Files are parsed in a process pool (the fast parser by default), cut into
windows, split 80/10/10 into train, valid and test *by piece* with a seeded
shuffle, and written atomically as shards (`midilib.shards`: .npy files of at
most SHARD_ROWS rows that training memory-maps). Nothing grows with the corpus
but a few numbers a file: the windows go to a spool file as they are parsed,
then, once the split is drawn, from the spool into each split's shards. Every choice a notebook makes (checkpoint,
step count, weight) is made on `valid`; `test` writes the final table once.
The output folder remembers the key of what produced it (parameters and every
file's size and mtime), so a rerun with the same inputs costs nothing, and a
digest of the arrays (content.txt), which trained runs are keyed by: a fresh
copy of the same corpus is prepared again but keeps its runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from midilib import corpus
from midilib.atomic import atomic_open, atomic_write
from midilib.events import MidiError, read_events, to_windows
from midilib.profiles import DataConfig
from midilib.shards import SHARD_ROWS, SHARDS_DIR, Shards, ShardWriter, open_split, split_names

SPLITS = ("train", "valid", "test")
# a held-out split of a corpus of 5 * 8 pieces or more gets at least 8 pieces: an interval that
# resamples pieces (and FD∞ on half-splits of them) needs that many; fewer would say nothing
MIN_PIECES = 8
MANIFEST_COLUMNS = ("path", "composer", "title", "notes", "windows", "split", "status")
# 2: split by piece; 3: a valid split; 4: at least MIN_PIECES pieces a split; 5: shards, not windows.npz;
# 6: composers from the folder and underscore names too (`corpus.composers_of`; arrays unchanged)
CACHE_VERSION = 6
ARRAY_NAMES = (*SPLITS, *(f"{s}_file" for s in SPLITS))
DIGEST_ROWS = 1 << 16  # rows read at a time to digest the shards (8 MiB of (8, 4) windows)


@dataclass(frozen=True)
class PrepareParams(DataConfig):
    """A profile's data settings plus the parser to read the files with."""

    parser: str = "fast"

    def validate(self) -> None:
        if not 1 <= self.window <= 4096:
            raise ValueError(f"--window must be in [1, 4096], got {self.window}")
        if not (self.s_max > 0 and np.isfinite(self.s_max)):
            raise ValueError(f"--s-max must be a positive number of seconds, got {self.s_max}")
        if not (self.d_max > 0 and np.isfinite(self.d_max)):
            raise ValueError(f"--d-max must be a positive number of seconds, got {self.d_max}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.test_fraction + self.valid_fraction >= 1.0:
            raise ValueError(f"--test-fraction + --valid-fraction must be < 1, got "
                             f"{self.test_fraction} + {self.valid_fraction}")
        if self.max_files is not None and self.max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {self.max_files}")


class Prepared:
    """What `prepare` produced: the folder and a one-line summary; the manifest and each array
    (train, valid, test, train_file...: in RAM, as `load_windows` gives them) are read from
    the folder when first asked for, so that preparing a corpus does not load it."""

    def __init__(self, out: str | Path, reused: bool, manifest: list[dict] | None = None) -> None:
        self.out = Path(out)
        self.reused = reused
        self._manifest = manifest
        self._arrays: dict[str, np.ndarray | None] = {}

    @property
    def manifest(self) -> list[dict]:
        if self._manifest is None:
            self._manifest = load_manifest(self.out)
        return self._manifest

    def array(self, name: str) -> np.ndarray | None:
        """Array `name` of the folder (read once), None if the folder has none of that name."""
        if name not in self._arrays:
            try:
                self._arrays[name] = load_windows(self.out, names=[name])[name]
            except KeyError:
                self._arrays[name] = None
        return self._arrays[name]

    train = property(lambda self: self.array("train"))
    valid = property(lambda self: self.array("valid"))
    test = property(lambda self: self.array("test"))
    train_file = property(lambda self: self.array("train_file"))  # the manifest row of each window
    valid_file = property(lambda self: self.array("valid_file"))
    test_file = property(lambda self: self.array("test_file"))

    def rows(self, name: str) -> int:
        """The number of windows of split `name`, without reading them (0 if absent)."""
        if self._arrays.get(name) is not None:
            return len(self._arrays[name])
        try:
            return len(open_split(self.out, name))
        except KeyError:
            return 0

    @property
    def summary(self) -> str:
        ok = sum(r["status"] == "ok" for r in self.manifest)
        skipped = len(self.manifest) - ok
        notes = sum(int(r["notes"]) for r in self.manifest)
        return (
            f"{ok} files ok, {skipped} skipped; {notes} notes; "
            f"{self.rows('train')} train, {self.rows('valid')} valid and "
            f"{self.rows('test')} test windows -> {self.out}"
        )


def resolve_source(source: str | Path, progress: bool = True) -> Path:
    """A folder of MIDI files from 'default', 'giantmidi', a folder or a zip archive."""
    if str(source) == "default":
        return corpus.build_embedded_corpus(progress=progress)
    if str(source) == "giantmidi":
        return corpus.fetch_giantmidi()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise ValueError(f"{path}: SOURCE must be a folder, a .zip archive or 'default'")
        key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        return corpus.extract_zip(path, corpus.DATA / "cache" / "extracted" / key)
    return path


def _parse_one(job: tuple[str, int, float, float, str]) -> tuple[np.ndarray | None, int, str]:
    """Worker: `read_windows` of one job tuple (pool.map passes one argument)."""
    return read_windows(*job)


def read_windows(
    path: str | Path, window: int, s_max: float, d_max: float, parser: str = "fast"
) -> tuple[np.ndarray | None, int, str]:
    """(windows or None, notes, status) of one MIDI file: status "ok", or why it is unusable
    (unreadable, or fewer notes than a window); never raises for a bad file."""
    try:
        events = read_events(path, s_max, d_max, parser)
    except MidiError as exc:
        return None, 0, str(exc).split(": ", 1)[-1]
    except Exception as exc:  # never let one odd file kill the batch
        return None, 0, f"unexpected {type(exc).__name__}: {exc}".splitlines()[0]
    windows = to_windows(events, window)
    if len(windows) == 0:
        return None, len(events), f"fewer than {window} notes"
    return windows, len(events), "ok"


def _cache_key(files: list[Path], root: Path, params: PrepareParams, composers: Path | None = None) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, asdict(params)]).encode())
    if composers is not None:  # the labels' file, by content: a new label means a new manifest
        digest.update(b"composers\0" + hashlib.sha256(composers.read_bytes()).digest())
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def split_files(n_files: int, test_fraction: float, seed: int, groups: list | None = None) -> np.ndarray:
    """Boolean mask of test files: a seeded shuffle of the pieces (`groups`, one key per file;
    default: every file its own piece), taking whole pieces until round(fraction * n_files)
    files are in test (at least one piece when the fraction is positive and there are two
    pieces or more, and at least min(MIN_PIECES, pieces // 5) pieces)."""
    groups = list(range(n_files)) if groups is None else list(groups)
    pieces = list(dict.fromkeys(groups))  # first-seen order, deterministic
    target = int(round(test_fraction * n_files))
    if test_fraction > 0 and len(pieces) >= 2:
        target = max(target, 1)
    min_pieces = min(MIN_PIECES, len(pieces) // 5) if test_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(pieces))
    chosen: set = set()
    count = 0
    sizes = {p: 0 for p in pieces}
    for g in groups:
        sizes[g] += 1
    for i in order:
        if (count >= target and len(chosen) >= min_pieces) or len(chosen) == len(pieces) - 1:
            break
        chosen.add(pieces[i])
        count += sizes[pieces[i]]
    return np.array([g in chosen for g in groups], dtype=bool)


def _take_pieces(groups: list, k: int, seed: int) -> np.ndarray:
    """Mask of the files of k pieces chosen by a seeded shuffle (one piece always left out)."""
    pieces = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(pieces))
    chosen = {pieces[i] for i in order[: min(k, len(pieces) - 1)]}
    return np.array([g in chosen for g in groups], dtype=bool)


def assign_splits(
    n_files: int, test_fraction: float, valid_fraction: float, seed: int, groups: list | None = None
) -> np.ndarray:
    """"train", "valid" or "test" per file, by piece.

    Test is drawn first exactly as `split_files` does (so adding a valid split leaves
    the test files of earlier runs unchanged); valid then takes whole pieces of the rest
    until round(valid_fraction * n_files) files, at least one piece when the fraction is
    positive and a training piece would remain.
    """
    groups = list(range(n_files)) if groups is None else list(groups)
    is_test = split_files(n_files, test_fraction, seed, groups)
    labels = np.where(is_test, "test", "train").astype(object)
    rest = [i for i in range(n_files) if not is_test[i]]
    if valid_fraction > 0 and rest:
        rest_groups = [groups[i] for i in rest]
        target = max(1, int(round(valid_fraction * n_files)))
        fraction = min(target / len(rest), 1.0)
        is_valid = split_files(len(rest), fraction, seed + 1, rest_groups)
        # the minimum is the whole corpus's (pieces // 5), not the remainder's
        need = min(MIN_PIECES, len(dict.fromkeys(groups)) // 5)
        if len({g for g, v in zip(rest_groups, is_valid) if v}) < need:
            is_valid = _take_pieces(rest_groups, need, seed + 1)
        labels[np.asarray(rest)[is_valid]] = "valid"
    return labels.astype(str)


def prepare(
    source: str | Path,
    out: str | Path,
    params: PrepareParams | None = None,
    workers: int | None = None,
    progress: bool = True,
    shard_rows: int = SHARD_ROWS,
    composers: str | Path | None = None,
) -> Prepared:
    """Parse every MIDI file of `source` into windows; write DIR/shards/ and manifest.csv.

    Pass 1 parses the files in a process pool, in order, and appends each usable file's
    windows to a spool file in a staging folder inside DIR, keeping only its counts and
    status; the split is then drawn over the usable files (`assign_splits`); pass 2 reads
    the spool back file by file into the shards of each split (at most `shard_rows` rows
    a shard) and writes the manifest. The staging folder then replaces DIR's shards, and
    key.txt comes last, so a crash anywhere leaves no key that matches.

    `composers`: a CSV of path,composer (paths relative to the corpus root) whose labels
    come first in the manifest's composer column (`corpus.composers_of` gives the rest).
    Labels change that column only, never the split or the arrays.
    """
    params = params or PrepareParams()
    params.validate()
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    root = resolve_source(source, progress=progress)
    files = corpus.list_midi_files(root)
    if params.max_files is not None:
        files = files[: params.max_files]
    if not files:
        raise ValueError(f"{root}: no .mid or .midi files found")
    out = Path(out)
    composers = Path(composers) if composers is not None else None
    overrides = corpus.read_composers_csv(composers) if composers is not None else None
    labels_of = corpus.composers_of(files, root, overrides)
    key = _cache_key(files, root, params, composers)
    if (out / "key.txt").exists() and (out / "key.txt").read_text() == key:
        return load_prepared(out, reused=True)

    out.mkdir(parents=True, exist_ok=True)
    _remove_dead_stages(out)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=f".prepare-{os.getpid()}-"))
    try:
        row_shape = (params.window, 4)
        notes = np.zeros(len(files), dtype=np.int64)
        counts = np.zeros(len(files), dtype=np.int64)  # windows of each file (0: skipped)
        status: list[str] = []
        with open(stage / "spool.f32", "wb") as spool:  # pass 1: every usable file's windows, in file order
            for i, (windows, n_notes, why) in enumerate(_parse_all(files, params, workers, progress)):
                notes[i] = n_notes
                status.append(why)
                if windows is not None:
                    windows = np.ascontiguousarray(windows, dtype=np.float32)
                    if windows.shape[1:] != row_shape:
                        raise AssertionError(f"{files[i]}: windows of shape {windows.shape[1:]}")
                    counts[i] = len(windows)
                    spool.write(memoryview(windows).cast("B"))

        ok = [i for i, why in enumerate(status) if why == "ok"]
        if not ok:
            reasons = sorted(set(status))
            raise ValueError(f"{root}: no usable MIDI file among {len(files)} ({'; '.join(reasons[:3])})")
        pieces = [corpus.piece_key(*corpus.describe(files[i])) for i in ok]
        labels = assign_splits(len(ok), params.test_fraction, params.valid_fraction, params.seed, pieces)
        split_of = np.full(len(files), -1, dtype=np.int8)  # index into SPLITS; -1: skipped
        split_of[ok] = [SPLITS.index(label) for label in labels]

        shards = stage / SHARDS_DIR  # pass 2: the spool, file by file, into each split's shards
        writers = {name: ShardWriter(shards, name, row_shape, np.float32, shard_rows) for name in SPLITS}
        writers.update({f"{name}_file": ShardWriter(shards, f"{name}_file", (), np.int32, shard_rows)
                        for name in SPLITS})
        row_floats = params.window * 4
        try:
            with open(stage / "spool.f32", "rb") as spool, atomic_open(stage / "manifest.csv") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
                writer.writeheader()
                for i, f in enumerate(files):
                    title, composer = corpus.describe(f)[1], labels_of[i]
                    split = SPLITS[split_of[i]] if split_of[i] >= 0 else ""
                    writer.writerow({
                        "path": f.relative_to(root).as_posix(), "composer": composer, "title": title,
                        "notes": int(notes[i]), "windows": int(counts[i]), "split": split, "status": status[i],
                    })
                    if counts[i]:
                        n = int(counts[i])
                        rows = np.fromfile(spool, dtype=np.float32, count=n * row_floats)
                        writers[split].append(rows.reshape(n, *row_shape))
                        writers[f"{split}_file"].append(np.full(n, i, dtype=np.int32))
                text.flush()
                text.detach()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for w in writers.values():
            w.close()
        (stage / "spool.f32").unlink()
        content = _content_key_of(shards)

        for stale in ("key.txt", "content.txt"):  # from here on, a crash must not leave a matching key
            (out / stale).unlink(missing_ok=True)
        if (out / SHARDS_DIR).exists():
            os.replace(out / SHARDS_DIR, stage / "old-shards")
        os.replace(shards, out / SHARDS_DIR)
        (out / "windows.npz").unlink(missing_ok=True)  # an earlier version's arrays
        os.replace(stage / "manifest.csv", out / "manifest.csv")
        info = {"source": str(source), "root": str(root), "params": asdict(params),
                "composers": str(composers) if composers is not None else None}
        atomic_write(out / "params.json", json.dumps(info, indent=1).encode())
        atomic_write(out / "content.txt", content.encode())
        atomic_write(out / "key.txt", key.encode())
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Prepared(out, reused=False)


def _parse_all(
    files: list[Path], params: PrepareParams, workers: int | None, progress: bool
) -> Iterator[tuple[np.ndarray | None, int, str]]:
    """`_parse_one` of every file, in file order, as each comes (a pool when workers > 1)."""
    jobs = [(str(f), params.window, params.s_max, params.d_max, params.parser) for f in files]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = dict(total=len(jobs), desc="prepare", unit="file", disable=not progress)
    if workers <= 1:
        yield from tqdm(map(_parse_one, jobs), **bar)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        # map yields in order and drops each result once yielded: only results not yet written are held
        yield from tqdm(pool.map(_parse_one, jobs, chunksize=chunk), **bar)


def _remove_dead_stages(out: Path) -> None:
    """Staging folders left in `out` by a prepare that died (its process is gone)."""
    for stage in out.glob(".prepare-*-*"):
        try:
            pid = int(stage.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stage, ignore_errors=True)
        except (ValueError, PermissionError, IndexError):
            pass


def _content_key_of(shards: Path) -> str:
    """`content_key` of the arrays in a shards folder, computed a block at a time: the same
    bytes in the same order (names sorted; a header of name, dtype and shape, then the data)."""
    return content_key({name: Shards.open(shards, name) for name in ARRAY_NAMES})


def content_key(arrays: dict[str, np.ndarray | Shards]) -> str:
    """A digest of the prepared arrays themselves: what trained runs are keyed by.

    key.txt keys the inputs by path, size and mtime, a cheap test for "prepare
    again"; a fresh copy of the same corpus fails it, yet gives the same arrays,
    so the runs trained on them stay valid. Shards are read a block at a time, so
    `prepare` digests its output into content.txt without holding it in memory.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        digest.update(f"{name}\0{a.dtype.str}\0{tuple(a.shape)}\n".encode())
        blocks = a.chunks(DIGEST_ROWS) if isinstance(a, Shards) else [np.ascontiguousarray(a)]
        for block in blocks:
            digest.update(block.data)  # the array's own buffer: hashing makes no copy
    return digest.hexdigest()


def data_key(folder: str | Path) -> str | None:
    """The key a run records for its data: the arrays' digest (content.txt), or for folders
    prepared before that existed, their input key (key.txt); None for a bare windows.npz."""
    for name in ("content.txt", "key.txt"):
        if (Path(folder) / name).exists():
            return (Path(folder) / name).read_text()
    return None


def load_manifest(folder: str | Path) -> list[dict]:
    with open(Path(folder) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_windows(folder: str | Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a prepared folder in RAM (train, valid, test and their *_file row ids, or
    just `names`): from its shards, or from windows.npz in a folder prepared before shards.
    KeyError for a name the folder does not have."""
    folder = Path(folder)
    if names is None:
        names = split_names(folder)
        if not names:
            raise FileNotFoundError(f"{folder / 'windows.npz'}: not found (nor {folder / SHARDS_DIR}); "
                                    "run `python -m midilib prepare` first")
    return {name: np.asarray(open_split(folder, name)) for name in names}


def load_prepared(folder: str | Path, reused: bool = True) -> Prepared:
    """A prepared folder as `prepare` returns it (arrays and manifest read when first asked for)."""
    return Prepared(Path(folder), reused)
