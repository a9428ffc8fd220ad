"""Where MIDI files come from: any folder, GiantMIDI-Piano, and the embedded corpus.

GiantMIDI-Piano names its files ``Surname, Firstname, Title, youtubeid.mid``;
titles may themselves contain commas. The embedded default corpus is built
from the scores that the ``music21`` package ships (Bach chorales and a few
keyboard works), converted once to MIDI under ``data/default-corpus`` and
named the GiantMIDI way so that one parser describes every corpus.

The split keys pieces by `describe` alone (`piece_key`), as it always has; the
manifest's composer column comes from `composers_of`, which also reads a labels
CSV, composer folders and ``Surname_Title_....mid`` names (the GiantMIDI
evaluation files'), so labelling a corpus never changes its split or its arrays.
`group_key` joins the files cut from one recording, for folds that must not leak.
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


# --------------------------------------------------------- composer labels

# the first token of an underscore name is taken for a surname only if it is a capitalised
# word of letters alone (``Debussy``, ``Dvořák``) of 3 letters or more, not one of these
# words that open titles instead (``Prelude_in_C.mid`` names no composer)
TITLE_WORDS = frozenset({
    "Air", "Allegro", "Andante", "Aria", "Ballade", "Barcarolle", "Berceuse", "Canon", "Chorale",
    "Concerto", "Dance", "Etude", "Etudes", "Fantasia", "Fantasie", "Fantasy", "Fugue", "Gavotte",
    "Gigue", "Impromptu", "Intermezzo", "Invention", "March", "Mazurka", "Menuet", "Minuet",
    "Nocturne", "Overture", "Partita", "Piano", "Piece", "Polonaise", "Prelude", "Preludes",
    "Rhapsody", "Rondo", "Scherzo", "Sonata", "Sonatina", "Song", "Study", "Suite", "Symphony",
    "Theme", "Toccata", "Track", "Variations", "Waltz", "Untitled",
})
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
# what the GiantMIDI evaluation files append after the YouTube id: _cut, _midi, _mov_N, _no_N,
# _partN, or one lower-case letter (``_a``)
_CUT_SUFFIX = re.compile(r"_(?:cut|midi|part\d+|mov_\d+|no_\d+|[a-z])$")


def underscore_composer(path: str | Path) -> str | None:
    """The surname that opens a ``Surname_Title_..._youtubeid.mid`` name, else None.

    Conservative: the stem must have no ``", "`` (the GiantMIDI comma form), at least
    three ``_``-separated tokens, and a first token that is a capitalised word of 3 or
    more letters alone (``str.isalpha``: accents allowed, digits and hyphens not), lower
    case after its first letter, and not in TITLE_WORDS. ``Debussy_Clair_de_Lune_abc.mid``
    gives "Debussy"; ``Prelude_in_C.mid``, ``track_01_a.mid``, ``BWV_846_x.mid`` give None.
    """
    stem = Path(path).stem
    if ", " in stem:
        return None
    tokens = stem.split("_")
    first = tokens[0]
    if len(tokens) < 3 or len(first) < 3 or not first.isalpha():
        return None
    if not (first[0].isupper() and first[1:].islower()) or first in TITLE_WORDS:
        return None
    return first


def read_composers_csv(path: str | Path) -> dict[str, str]:
    """{relative path: composer} from a CSV with columns path,composer (others ignored).

    Paths are relative to the corpus root, with ``/`` separators. A file that cannot be
    read or parsed, lacks either column, or has an empty composer is a one-line ValueError
    naming the file.
    """
    import csv

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            if not {"path", "composer"} <= columns:
                raise ValueError(f"{path}: a composers CSV needs columns path,composer "
                                 f"(has: {', '.join(sorted(columns)) or 'none'})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read the composers CSV ({type(exc).__name__}: {exc})") from None
    out: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        rel, composer = (row.get("path") or "").strip(), (row.get("composer") or "").strip()
        if not rel or not composer:
            raise ValueError(f"{path}: line {line} has an empty path or composer")
        out[Path(rel).as_posix()] = composer
    return out


def composers_of(
    files: list[Path], root: str | Path, overrides: dict[str, str] | None = None
) -> list[str]:
    """The composer of each file (paths under `root`), by the first rule that gives one:

    1. `overrides` (`read_composers_csv`), keyed by the path relative to `root`;
    2. the GiantMIDI comma form, ``Surname, Firstname, Title, youtubeid.mid`` (`describe`);
    3. the first folder under `root` (``root/chopin/x.mid`` -> "chopin"), unless every
       file lies in one and the same folder (a zip's wrapping folder names no composer);
    4. the underscore form, ``Surname_Title_....mid`` (`underscore_composer`); a surname
       that exactly one comma-form composer of the corpus bears becomes that composer
       (``Chopin_Etudes_Op10_x.mid`` beside ``Chopin, Frédéric, ...`` -> "Chopin, Frédéric");
    5. "unknown".

    Only the manifest's composer column comes from here: the split keys pieces by
    `piece_key(*describe(path))`, which these rules leave alone, so labelling a corpus
    never moves a file between train, valid and test.
    """
    root = Path(root)
    overrides = overrides or {}
    rels = [Path(f).relative_to(root).as_posix() for f in files]
    if overrides and not set(overrides) & set(rels):
        raise ValueError(f"no path of the composers CSV names a file under {root} "
                         f"(paths are relative to it, e.g. {rels[0]!r})")
    by_folder = len({rel.split("/")[0] for rel in rels}) > 1
    out: list[str | None] = []
    surnames: list[str | None] = []
    for f, rel in zip(files, rels):
        composer = overrides.get(rel)
        if composer is None and (named := describe(f)[0]) != "unknown":
            composer = named
        if composer is None and by_folder and "/" in rel:
            composer = rel.split("/")[0]
        out.append(composer)
        surnames.append(underscore_composer(f) if composer is None else None)
    full: dict[str, set[str]] = {}
    for f in files:
        named = describe(f)[0]
        if named != "unknown":
            full.setdefault(named.split(", ")[0], set()).add(named)
    labels = []
    for composer, surname in zip(out, surnames):
        if composer is None and surname is not None:
            matches = full.get(surname, set())
            composer = next(iter(matches)) if len(matches) == 1 else surname
        labels.append(composer or "unknown")
    return labels


def fold_composers(
    composers: list[str], min_pieces: int, pieces: list[str] | None = None, other: str = "other"
) -> list[str]:
    """Composers with fewer than `min_pieces` pieces (distinct `pieces` keys, one per file;
    default: every file its own piece) become `other`; the rest are kept as they are."""
    if min_pieces < 1:
        raise ValueError(f"min_pieces must be >= 1, got {min_pieces}")
    pieces = list(range(len(composers))) if pieces is None else list(pieces)
    if len(pieces) != len(composers):
        raise ValueError(f"{len(pieces)} piece keys for {len(composers)} composers")
    held: dict[str, set] = {}
    for composer, piece in zip(composers, pieces):
        held.setdefault(composer, set()).add(piece)
    return [c if len(held[c]) >= min_pieces else other for c in composers]


def group_key(path: str | Path) -> str:
    """The unit a file belongs to for cross-validation folds and resampling.

    Files cut from one recording share it: the YouTube id that ends a GiantMIDI name,
    in the comma form (its last part) or the underscore form (the last 11 characters
    before the suffixes _cut, _midi, _mov_N, _no_N, _partN or _x, preceded by ``_``).
    So ``Chopin_Etudes_Op10_g0hoN6_HDVU_no_12_cut.mid`` and ``Chopin, Frédéric,
    Études, Op.10, g0hoN6_HDVU.mid`` are one group. Any other file's group is its
    `piece_key` where its name says its composer, else the file itself (its path
    without suffix: ``a/piece_1.mid`` and ``b/piece_1.mid`` are two pieces). Two names
    that merely end alike are merged, never split: the safe direction for folds.
    """
    stem = Path(path).stem
    parts = stem.split(", ")
    if len(parts) >= 4 and _YOUTUBE_ID.fullmatch(parts[-1]):
        return f"youtube:{parts[-1]}"
    if ", " not in stem:
        while (m := _CUT_SUFFIX.search(stem)) and len(stem) - len(m.group(0)) > 12:
            stem = stem[: m.start()]
        tail = stem[-11:]
        if len(stem) > 12 and stem[-12] == "_" and _YOUTUBE_ID.fullmatch(tail):
            return f"youtube:{tail}"
    composer, title = describe(path)
    if composer == "unknown":
        return "file:" + Path(path).with_suffix("").as_posix()
    return "piece:" + piece_key(composer, title)


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
