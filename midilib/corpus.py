"""Where MIDI files come from: any folder, GiantMIDI-Piano, and the embedded corpus.

GiantMIDI-Piano names its files ``Surname, Firstname, Title, youtubeid.mid``;
titles may themselves contain commas. The embedded default corpus is built
from the scores that the ``music21`` package ships (Bach chorales and a few
keyboard works), converted once to MIDI under ``data/default-corpus`` and
named the GiantMIDI way so that one parser describes every corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from midilib.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MIDI_SUFFIXES = {".mid", ".midi"}

# The archive that bytedance/GiantMIDI-Piano's disclaimer.md links to (Google
# Drive, 10,855 files, about 193 MB) as a direct download, with its MD5.
GIANTMIDI_FILE_ID = "1BDEPaEWFEB2ADquS1VYp5iLZYVngw799"
GIANTMIDI_URL = (
    "https://drive.usercontent.google.com/download?"
    f"id={GIANTMIDI_FILE_ID}&export=download&confirm=t"
)
GIANTMIDI_CHECKSUM = "md5:aaece5750b0cfe30b6a3be5c7bb14f83"


def list_midi_files(folder: str | Path) -> list[Path]:
    """Every .mid/.midi file under `folder` (recursive, any case), by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = [
        p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def describe(path: str | Path) -> tuple[str, str]:
    """(composer, title) from a GiantMIDI-Piano file name; otherwise ('unknown', stem)."""
    stem = Path(path).stem
    parts = stem.split(", ")
    if len(parts) >= 4 and all(parts[:3]) and parts[-1] and " " not in parts[-1]:
        surname, firstname = parts[0], parts[1]
        return f"{surname}, {firstname}", ", ".join(parts[2:-1])
    return "unknown", stem


def piece_key(composer: str, title: str) -> str:
    """Files of one piece share a key, so that the split never puts a piece on both sides.

    music21 ships several versions of some chorales (``bwv248.23-2`` and
    ``bwv248.23-s``); GiantMIDI-Piano holds several recordings of one title.
    """
    title = re.sub(r"^(bwv\d+(?:\.\d+)?)-\w+$", r"\1", title.strip(), flags=re.IGNORECASE)
    return f"{composer}\t{title}".lower()


# ---------------------------------------------------------------- downloading


def download(
    url: str,
    dest: str | Path,
    expected_size: int | None = None,
    checksum: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming a partial `.part` file; verify size/checksum.

    `checksum` is "algorithm:hexdigest" (e.g. "md5:…", "sha256:…").

    Idempotent: an existing `dest` that passes the checks is returned at once.
    """
    dest = Path(dest)
    if dest.exists() and _verify(dest, expected_size, checksum, raise_=False):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            response = None
        else:
            raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"{url}: network unreachable ({reason}); download the archive by hand and "
            f"pass its path instead"
        ) from None
    if response is not None:
        with response:
            resumed = response.status == 206
            total = response.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else expected_size
            mode = "ab" if resumed else "wb"
            with open(part, mode) as f, tqdm(
                total=total,
                initial=have if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
    _verify(part, expected_size, checksum, raise_=True)
    os.replace(part, dest)
    return dest


def _verify(path: Path, size: int | None, checksum: str | None, raise_: bool) -> bool:
    actual = path.stat().st_size
    if size is not None and actual != size:
        if raise_:
            path.unlink()
            raise ValueError(f"{path}: size {actual} bytes, expected {size}")
        return False
    if checksum is not None:
        algorithm, _, expected = checksum.partition(":")
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected.lower():
            if raise_:
                path.unlink()
                raise ValueError(f"{path}: {algorithm} mismatch (got {digest.hexdigest()})")
            return False
    return True


def extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip once (a marker file records the archive it came from)."""
    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive}: not a zip archive")
    stat = archive.stat()
    stamp = f"{archive.name} {stat.st_size} {stat.st_mtime_ns}"
    marker = dest / ".extracted"
    if marker.exists() and marker.read_text() == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (tmp / member.filename).resolve()
                if not str(target).startswith(str(tmp.resolve())):
                    raise ValueError(f"{archive}: unsafe path {member.filename!r}")
            zf.extractall(tmp)
        (tmp / ".extracted").write_text(stamp)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_giantmidi(
    dest: str | Path = DATA / "giantmidi",
    url: str = GIANTMIDI_URL,
    expected_size: int | None = None,
    checksum: str | None = GIANTMIDI_CHECKSUM,
) -> Path:
    """Download (resumable) and extract GiantMIDI-Piano; returns the folder of MIDI files."""
    dest = Path(dest)
    archive = download(url, dest / "giantmidi-piano.zip", expected_size, checksum)
    return extract_zip(archive, dest / "midis")


# ------------------------------------------------------- the embedded corpus

# (music21 corpus folder, composer as GiantMIDI writes it, selection rule)
EMBEDDED_SOURCES = (
    ("bach", "Bach, Johann Sebastian"),  # every chorale and keyboard score music21 ships
    ("mozart/k545", "Mozart, Wolfgang Amadeus"),
    ("joplin", "Joplin, Scott"),
    ("schumann_clara", "Schumann, Clara"),
    ("chopin", "Chopin, Frédéric"),
    ("cpebach", "Bach, Carl Philipp Emanuel"),
    ("beach", "Beach, Amy"),
)
EMBEDDED_VERSION = 3  # bump when the selection or the conversion changes
SCORE_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn"}


def embedded_selection() -> list[tuple[Path, str, str]]:
    """(score path, composer, output file name) of every score in the embedded corpus."""
    from music21 import corpus

    root = Path(corpus.__file__).parent
    chosen = []
    for folder, composer in EMBEDDED_SOURCES:
        base = root / folder
        scores = sorted(p for p in base.rglob("*") if p.suffix.lower() in SCORE_SUFFIXES)
        for score in scores:
            top = root / folder.split("/")[0]
            title = score.relative_to(top).with_suffix("").as_posix().replace("/", " ")
            chosen.append((score, composer, f"{composer}, {title}, music21.mid"))
    # a few chorales ship as both .krn and .mxl: keep one score per output file (MusicXML first)
    rank = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".krn": 3}
    unique: dict[str, tuple[Path, str, str]] = {}
    for item in sorted(chosen, key=lambda c: rank.get(c[0].suffix.lower(), 9)):
        unique.setdefault(item[2], item)
    return sorted(unique.values(), key=lambda c: c[2])


def _convert_score(job: tuple[str, str]) -> tuple[str, str | None]:
    """Convert one score to MIDI atomically; returns (output, error or None)."""
    import warnings

    from music21 import converter

    source, target = job
    warnings.simplefilter("ignore")
    try:
        score = converter.parse(source)
        tmp = f"{target}.{os.getpid()}.tmp"
        score.write("midi", fp=tmp)
        os.replace(tmp, target)
        return target, None
    except Exception as exc:  # a score music21 cannot render is skipped, not fatal
        return target, f"{type(exc).__name__}: {exc}".splitlines()[0]


def build_embedded_corpus(
    dest: str | Path = DATA / "default-corpus", workers: int | None = None, progress: bool = True
) -> Path:
    """Convert the embedded corpus to MIDI once; a valid cache is reused as is."""
    import music21

    dest = Path(dest)
    selection = embedded_selection()
    key = {
        "version": EMBEDDED_VERSION,
        "music21": music21.__version__,
        "files": [name for _, _, name in selection],
    }
    stamp = dest / "corpus.json"
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if {k: old.get(k) for k in key} == key and all(
            (dest / n).exists() or n in old.get("failed", {}) for n in key["files"]
        ):
            return dest
        if {k: old.get(k) for k in key} != key:  # another selection or converter: start afresh
            shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    jobs = [(str(src), str(dest / name)) for src, _, name in selection if not (dest / name).exists()]
    failed: dict[str, str] = {}
    workers = workers or os.cpu_count() or 1
    if jobs:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_convert_score, jobs, chunksize=4)
            for target, error in tqdm(
                results, total=len(jobs), desc="music21 -> MIDI", disable=not progress
            ):
                if error:
                    failed[Path(target).name] = error
    atomic_write(stamp, json.dumps({**key, "failed": failed}, indent=1, ensure_ascii=False))
    return dest
