"""From a corpus of MIDI files to cached training windows (`windows.npz` + `manifest.csv`).

Files are parsed in a process pool (the fast parser by default), cut into
windows, split 80/10/10 into train, valid and test *by piece* with a seeded
shuffle, and written atomically. Every choice a notebook makes (checkpoint,
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from midilib import corpus
from midilib.atomic import atomic_write
from midilib.events import MidiError, read_events, to_windows
from midilib.profiles import DataConfig

SPLITS = ("train", "valid", "test")
# a held-out split of a corpus of 5 * 8 pieces or more gets at least 8 pieces: an interval that
# resamples pieces (and FD∞ on half-splits of them) needs that many; fewer would say nothing
MIN_PIECES = 8
MANIFEST_COLUMNS = ("path", "composer", "title", "notes", "windows", "split", "status")
CACHE_VERSION = 4  # 2: split by piece; 3: a valid split; 4: at least MIN_PIECES pieces a split


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


@dataclass
class Prepared:
    """What `prepare` produced: the folder, the arrays and a one-line summary."""

    out: Path
    train: np.ndarray
    test: np.ndarray
    manifest: list[dict]
    reused: bool
    valid: np.ndarray | None = None
    train_file: np.ndarray | None = None  # the manifest row of each window
    valid_file: np.ndarray | None = None
    test_file: np.ndarray | None = None

    @property
    def summary(self) -> str:
        ok = sum(r["status"] == "ok" for r in self.manifest)
        skipped = len(self.manifest) - ok
        notes = sum(int(r["notes"]) for r in self.manifest)
        return (
            f"{ok} files ok, {skipped} skipped; {notes} notes; "
            f"{len(self.train)} train, {len(self.valid) if self.valid is not None else 0} valid and "
            f"{len(self.test)} test windows -> {self.out}"
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
    """Worker: (windows or None, notes, status) for one file."""
    path, window, s_max, d_max, parser = job
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


def _cache_key(files: list[Path], root: Path, params: PrepareParams) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, asdict(params)]).encode())
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
) -> Prepared:
    """Parse every MIDI file of `source` into windows; write DIR/windows.npz and manifest.csv."""
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
    key = _cache_key(files, root, params)
    if (out / "key.txt").exists() and (out / "key.txt").read_text() == key:
        return load_prepared(out, reused=True)

    jobs = [(str(f), params.window, params.s_max, params.d_max, params.parser) for f in files]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            results = list(
                tqdm(pool.map(_parse_one, jobs, chunksize=chunk), total=len(jobs),
                     desc="prepare", unit="file", disable=not progress)
            )
    else:
        results = [_parse_one(j) for j in tqdm(jobs, desc="prepare", unit="file", disable=not progress)]

    ok = [i for i, (w, _, _) in enumerate(results) if w is not None]
    if not ok:
        reasons = sorted({status for _, _, status in results})
        raise ValueError(f"{root}: no usable MIDI file among {len(files)} ({'; '.join(reasons[:3])})")
    pieces = [corpus.piece_key(*corpus.describe(files[i])) for i in ok]
    labels = assign_splits(len(ok), params.test_fraction, params.valid_fraction, params.seed, pieces)
    split_of = dict(zip(ok, labels))

    manifest: list[dict] = []
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    file_ids: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for i, (f, (windows, notes, status)) in enumerate(zip(files, results)):
        composer, title = corpus.describe(f)
        split = split_of.get(i, "")
        manifest.append({
            "path": f.relative_to(root).as_posix(), "composer": composer, "title": title,
            "notes": notes, "windows": 0 if windows is None else len(windows),
            "split": split, "status": status,
        })
        if windows is not None:
            parts[split].append(windows)
            file_ids[split].append(np.full(len(windows), i, dtype=np.int32))

    def stack(name: str) -> np.ndarray:
        if parts[name]:
            return np.concatenate(parts[name]).astype(np.float32, copy=False)
        return np.zeros((0, params.window, 4), dtype=np.float32)

    def ids(name: str) -> np.ndarray:
        return np.concatenate(file_ids[name]) if file_ids[name] else np.zeros(0, dtype=np.int32)

    arrays = {name: stack(name) for name in SPLITS}
    arrays.update({f"{name}_file": ids(name) for name in SPLITS})
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("key.txt", "content.txt"):  # a crash below must not leave a matching key
        (out / stale).unlink(missing_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(out / "windows.npz", buffer.getbuffer())  # a view: no second copy of the arrays
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest)
    atomic_write(out / "manifest.csv", text.getvalue().encode())
    info = {"source": str(source), "root": str(root), "params": asdict(params)}
    atomic_write(out / "params.json", json.dumps(info, indent=1).encode())
    atomic_write(out / "content.txt", content_key(arrays).encode())
    atomic_write(out / "key.txt", key.encode())
    return _prepared(out, arrays, manifest, reused=False)


def content_key(arrays: dict[str, np.ndarray]) -> str:
    """A digest of the prepared arrays themselves: what trained runs are keyed by.

    key.txt keys the inputs by path, size and mtime, a cheap test for "prepare
    again"; a fresh copy of the same corpus fails it, yet gives the same arrays,
    so the runs trained on them stay valid.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\n".encode())
        digest.update(a.data)  # the array's own buffer: hashing makes no copy
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


def load_windows(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays of DIR/windows.npz (train, valid, test and their *_file row ids)."""
    path = Path(folder) / "windows.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `python -m midilib prepare` first")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _prepared(out: Path, arrays: dict[str, np.ndarray], manifest: list[dict], reused: bool) -> Prepared:
    return Prepared(Path(out), arrays["train"], arrays["test"], manifest, reused,
                    valid=arrays.get("valid"), train_file=arrays.get("train_file"),
                    valid_file=arrays.get("valid_file"), test_file=arrays.get("test_file"))


def load_prepared(folder: str | Path, reused: bool = True) -> Prepared:
    return _prepared(Path(folder), load_windows(folder), load_manifest(folder), reused)
