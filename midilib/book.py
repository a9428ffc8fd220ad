"""The workbook as a static HTML book: one page per executed notebook, an index, and a listening quiz.

`python -m midilib.book` (``make book``) reads the notebooks that the last
``make workbook`` executed (build/notebooks/<profile>/<source>/), converts each with
nbconvert's JupyterLab template into build/book/NN.html, writes an index page and
"Can you tell?" (pairs of a real and a generated clip, order random, the answer
revealed after each guess), and copies MathJax (from the npm registry) beside the pages, so the book opens
from disk with no network (file:// or any static server). It also refreshes the
committed copies in executed/: the same notebooks with their figures and tables,
audio replaced by a line that points to the book, so they read on GitHub and stay
small (`EXECUTED_BUDGET`, tested).

Why nbconvert and not Jupyter Book or mkdocs-jupyter: nbconvert already comes with
Jupyter, renders every output exactly as JupyterLab shows it (the audio players
included), and needs nothing beyond one local copy of MathJax 2 (npm's ``mathjax``
package, the version nbconvert's template configures); the book is six pages and a quiz, which needs no
site generator.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midilib.atomic import atomic_write
from midilib.workbook import NOTEBOOKS, ROOT, figures_dir, source_name

BOOK_DIR = ROOT / "build" / "book"
EXECUTED_DIR = ROOT / "executed"
EXECUTED_BUDGET = 5_000_000  # bytes: every committed executed notebook together, audio stripped
MATHJAX = "mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
AUDIO_NOTE = "[audio: plays in the book (make book) and when the notebook runs]"
QUIZ_FILE = "quiz.npz"  # written by notebook 06 beside its figures

TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<link rel="icon" href="data:,"><style>{{ resources.book_css }}</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}{{ resources.book_nav }}{%- endblock body_header -%}
{%- block body_footer -%}{{ resources.book_nav }}{{ super() }}{%- endblock body_footer -%}
"""

CSS = """
nav.book { display: flex; gap: 1.5em; padding: 0.6em 1em; margin: 0 0 1em; background: #f3f5f7;
  border-bottom: 1px solid #d8dde2; font: 15px/1.4 system-ui, sans-serif; }
nav.book a { color: #0b5cad; text-decoration: none; }
nav.book .here { font-weight: 600; }
body.book-page { max-width: 60em; margin: 0 auto; padding: 0 1em 3em; font: 16px/1.5 system-ui, sans-serif; }
.pair { display: flex; gap: 2em; margin: 1em 0; }
.pair figure { margin: 0; }
.quiz button { font-size: 15px; margin: 0.3em 0.6em 0.3em 0; padding: 0.3em 0.9em; }
#verdict { min-height: 1.5em; font-weight: 600; }
table.tally { border-collapse: collapse; } table.tally td, table.tally th { padding: 0.2em 0.8em;
  border-bottom: 1px solid #ddd; text-align: left; }
"""


@dataclass(frozen=True)
class Page:
    name: str  # notebook name, e.g. "03_vae"
    title: str
    summary: str

    @property
    def file(self) -> str:
        return f"{self.name}.html"


def executed_dir(profile: str = "default", source: str = "default") -> Path:
    """Where `make workbook` leaves the executed notebooks of a profile and corpus."""
    return ROOT / "build" / "notebooks" / profile / source_name(source)


def _title_and_summary(nb) -> tuple[str, str]:
    """The first markdown heading and the first sentence or two after it, as plain text."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.strip().splitlines()
        if lines and lines[0].startswith("# "):
            title = lines[0][2:].strip()
            text = " ".join(line.strip() for line in lines[1:] if line.strip())
            text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # links -> their text
            text = re.sub(r"[*_`$]", "", text)
            summary = " ".join(re.split(r"(?<=[.!?])\s+", text)[:2])
            return title, summary[:400]
    return nb.metadata.get("title", ""), ""


def _nav(pages: list[Page], here: str) -> str:
    links = ['<a href="index.html"{}>Contents</a>'.format(' class="here"' if here == "index" else "")]
    for page in pages:
        number = page.name.split("_")[0]
        cls = ' class="here"' if page.name == here else ""
        links.append(f'<a href="{page.file}"{cls} title="{html.escape(page.title)}">{number}</a>')
    links.append('<a href="quiz.html"{}>Can you tell?</a>'.format(' class="here"' if here == "quiz" else ""))
    return '<nav class="book">' + "".join(links) + "</nav>"


def strip_audio(nb) -> int:
    """Replace every audio output (IPython's Audio renders as an HTML <audio> element) by one
    line of text; returns how many were replaced."""
    import nbformat

    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "<audio" in "".join(data.get("text/html", "")):
                replaced += 1
                outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": AUDIO_NOTE}))
            else:
                outputs.append(out)
        cell["outputs"] = outputs
    return replaced


def _clean_parameters(nb) -> None:
    """Drop papermill's injected-parameters cell, its execution metadata and stderr streams
    (progress bars and library warnings: what a run logged, not what it found)."""
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


READING = "**Reading.**"  # how the notebooks' readings start (a Markdown output formatted from the numbers)


def tag_readings(nb) -> int:
    """Tag the code cells whose output is a reading ("reading"): the book shows their text, not the
    f-string that formats it (the notebook and executed/ keep the code). A cell that also checks
    something (`assert`: the implement-and-check cells) keeps its code. Returns how many."""
    tagged = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "assert " not in cell.source and any(
            "".join(o.get("data", {}).get("text/markdown", "")).startswith(READING) for o in cell.get("outputs", [])
        ):
            tags = cell.metadata.setdefault("tags", [])
            if "reading" not in tags:
                tags.append("reading")
            tagged += 1
    return tagged


def build_pages(src: Path, out: Path, names: tuple[str, ...] = NOTEBOOKS) -> list[Page]:
    """Convert the executed notebooks in `src` to out/NN.html with navigation and local MathJax."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    missing = [n for n in names if not (src / f"{n}.ipynb").exists()]
    if missing:
        raise FileNotFoundError(f"{src}: no executed {', '.join(missing)}; run `make workbook` first")
    notebooks = {n: nbformat.read(src / f"{n}.ipynb", as_version=4) for n in names}
    pages = [Page(n, *_title_and_summary(nb)) for n, nb in notebooks.items()]
    template = out / ".template.html.j2"
    atomic_write(template, TEMPLATE)
    exporter = HTMLExporter(template_file=str(template), mathjax_url=MATHJAX, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.template_paths.append(str(out))
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=("reading",)), enabled=True)
    for page in pages:
        nb = notebooks[page.name]
        _clean_parameters(nb)
        tag_readings(nb)
        resources = {"book_nav": _nav(pages, page.name), "book_css": CSS,
                     "metadata": {"name": page.title}}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        atomic_write(out / page.file, body)
    template.unlink()
    return pages


def _page(title: str, body: str, nav: str, head: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1.0">'
            f'<title>{html.escape(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style>{head}</head>'
            f'<body class="book-page">{nav}{body}</body></html>\n')


def build_index(out: Path, pages: list[Page], about: str) -> None:
    items = "".join(
        f'<li><a href="{p.file}">{html.escape(p.title)}</a><br><span>{html.escape(p.summary)}</span></li>'
        for p in pages
    )
    body = (
        "<h1>midilib: generative modelling of piano music, measured</h1>"
        "<p>The executed notebooks of the workbook, with their figures, tables, equations and audio. Each "
        "<b>Reading</b> is computed from the numbers above it; the book hides the code that formats it, the "
        "notebooks show it. "
        f"{html.escape(about)}</p><ol>{items}</ol>"
        '<p><a href="quiz.html">Can you tell?</a> Pairs of clips, one real and one generated: '
        "guess which is real.</p>"
    )
    atomic_write(out / "index.html", _page("midilib: the book", body, _nav(pages, "index")))


QUIZ_JS = """
const pairs = PAIRS;
let at = 0, right = 0, answered = false;
const tally = {};
function show() {
  const p = pairs[at];
  document.getElementById('count').textContent = `Pair ${at + 1} of ${pairs.length}`;
  document.getElementById('clip-a').src = p.a;
  document.getElementById('clip-b').src = p.b;
  document.getElementById('verdict').textContent = '';
  document.getElementById('next').disabled = true;
  for (const b of document.querySelectorAll('button.guess')) b.disabled = false;
  answered = false;
}
function guess(side) {
  if (answered) return;
  answered = true;
  const p = pairs[at];
  const ok = side === p.real;
  if (ok) right += 1;
  tally[p.model] = tally[p.model] || [0, 0];
  tally[p.model][0] += ok ? 1 : 0; tally[p.model][1] += 1;
  const fake = p.real === 'a' ? 'B' : 'A';
  document.getElementById('verdict').textContent =
    (ok ? 'Right. ' : 'Wrong. ') + `${p.real.toUpperCase()} was real (${p.source}); ${fake} came from ${p.model}.`;
  document.getElementById('score').textContent = `Score: ${right} of ${at + 1}`;
  for (const b of document.querySelectorAll('button.guess')) b.disabled = true;
  document.getElementById('next').disabled = at + 1 >= pairs.length;
  if (at + 1 >= pairs.length) finish();
}
function finish() {
  const rows = Object.entries(tally).map(([m, [r, n]]) => `<tr><td>${m}</td><td>${r} of ${n}</td></tr>`).join('');
  document.getElementById('done').innerHTML =
    `<p>You found the real clip in ${right} of ${pairs.length} pairs; guessing finds ` +
    `${pairs.length / 2} on average. A model you could not tell from the real thing scores near half.</p>` +
    `<table class="tally"><tr><th>generated by</th><th>found the real one</th></tr>${rows}</table>`;
}
function next() { if (at + 1 < pairs.length) { at += 1; show(); } }
window.addEventListener('DOMContentLoaded', show);
"""


def quiz_clips(test: np.ndarray, test_file: np.ndarray, sets: dict[str, np.ndarray], per_model: int = 2,
               windows: int = 2, seed: int = 0, file_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Pairs for "Can you tell?": per model, `per_model` clips of `windows` generated windows played
    end to end, each beside `windows` consecutive real windows of one test file (a different file per
    pair where there are enough). Returns arrays real and fake (n, windows * w, 4), model and source
    (the real clip's file: `file_names[row]` where given, else its manifest row)."""
    rng = np.random.default_rng(seed)
    test, test_file = np.asarray(test), np.asarray(test_file)
    starts = [i for i in range(len(test) - windows + 1) if test_file[i] == test_file[i + windows - 1]]
    if not starts:
        raise ValueError(f"no test file has {windows} windows: use fewer windows per clip")
    by_file: dict[int, list[int]] = {}
    for i in starts:
        by_file.setdefault(int(test_file[i]), []).append(i)
    files = list(rng.permutation(sorted(by_file)))
    real, fake, model, source = [], [], [], []
    for name, generated in sets.items():
        generated = np.asarray(generated)
        for j in rng.choice(len(generated) // windows, size=per_model, replace=False):
            file = files[len(real) % len(files)]
            start = int(rng.choice(by_file[file]))
            real.append(test[start : start + windows].reshape(-1, 4))
            fake.append(generated[j * windows : (j + 1) * windows].reshape(-1, 4))
            model.append(name)
            label = Path(file_names[file]).stem if file_names is not None else f"manifest row {file}"
            source.append(f"{label}, window {start - by_file[file][0] + 1} on")
    return {"real": np.stack(real), "fake": np.stack(fake), "model": np.array(model), "source": np.array(source)}


def save_quiz(path: str | Path, *args, **kwargs) -> Path:
    """`quiz_clips(*args, **kwargs)` saved atomically to `path` (notebook 06 writes figures/quiz.npz)."""
    from midilib.atomic import atomic_open

    with atomic_open(path) as f:
        np.savez(f, **quiz_clips(*args, **kwargs))
    return Path(path)


def build_quiz(out: Path, pages: list[Page], quiz: Path, seed: int = 0) -> int:
    """quiz.html and its clips (quiz/NN-a.wav, NN-b.wav) from notebook 06's quiz.npz; returns the pairs."""
    from midilib.audio import SAMPLE_RATE, render_events, to_wav_bytes

    if not quiz.exists():
        raise FileNotFoundError(f"{quiz}: not found; run notebook 06 (make workbook) first")
    data = np.load(quiz, allow_pickle=False)
    real, fake, models = data["real"], data["fake"], [str(m) for m in data["model"]]
    sources = [str(s) for s in data["source"]]
    rng = np.random.default_rng(seed)
    (out / "quiz").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(len(fake)):
        real_side = "a" if rng.random() < 0.5 else "b"
        clips = {real_side: real[i], ("b" if real_side == "a" else "a"): fake[i]}
        entry = {"real": real_side, "model": models[i], "source": sources[i]}
        for side, events in clips.items():
            name = f"quiz/{i:02d}-{side}.wav"
            atomic_write(out / name, to_wav_bytes(render_events(events.reshape(-1, 4), SAMPLE_RATE), SAMPLE_RATE))
            entry[side] = name
        pairs.append(entry)
    seconds = float(np.mean([np.sum(c.reshape(-1, 4)[:, 2]) for c in real]))
    body = (
        "<h1>Can you tell?</h1>"
        f"<p>Each pair holds one real excerpt from the held-out test files and one the models generated, "
        f"{real.shape[1]} notes each (about {seconds:.0f} s), in random order. Listen to both, then say which "
        "is real; the answer and your running score appear after each guess. Everything plays from this "
        "folder, offline.</p>"
        '<div class="quiz"><p id="count"></p><div class="pair">'
        '<figure><figcaption>A</figcaption><audio id="clip-a" controls preload="auto"></audio></figure>'
        '<figure><figcaption>B</figcaption><audio id="clip-b" controls preload="auto"></audio></figure></div>'
        '<button class="guess" id="guess-a" onclick="guess(\'a\')">A is real</button>'
        '<button class="guess" id="guess-b" onclick="guess(\'b\')">B is real</button>'
        '<button id="next" onclick="next()" disabled>Next pair</button>'
        '<p id="verdict"></p><p id="score">Score: 0 of 0</p><div id="done"></div></div>'
    )
    script = "<script>" + QUIZ_JS.replace("PAIRS", json.dumps(pairs)) + "</script>"
    atomic_write(out / "quiz.html", _page("Can you tell?", body, _nav(pages, "quiz"), head=script))
    return len(pairs)


MATHJAX_VERSION = "2.7.9"  # the MathJax 2 API that nbconvert's template configures
MATHJAX_PARTS = ("MathJax.js", "config", "extensions", "jax/input/TeX", "jax/output/CommonHTML", "jax/element",
                 "fonts/HTML-CSS/TeX/woff", "localization/en")


def find_mathjax() -> Path:
    """A MathJax 2 package folder: $MIDILIB_MATHJAX, or the npm registry's copy installed once into
    build/npm (npm comes with Node.js; the PyPI wheel jupyter-server-mathjax lacks the TeX fonts)."""
    import os
    import subprocess

    if os.environ.get("MIDILIB_MATHJAX"):
        path = Path(os.environ["MIDILIB_MATHJAX"])
        if not (path / "MathJax.js").exists():
            raise FileNotFoundError(f"MIDILIB_MATHJAX={path}: no MathJax.js there")
        return path
    prefix = ROOT / "build" / "npm"
    path = prefix / "node_modules" / "mathjax"
    if not (path / "MathJax.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("MathJax: not found and no npm to install it (install Node.js, or set "
                                    "MIDILIB_MATHJAX to a MathJax 2 folder)")
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                        f"mathjax@{MATHJAX_VERSION}"], check=True)
    return path


def copy_mathjax(out: Path) -> None:
    """The parts of MathJax 2 the pages use (TeX in, CommonHTML out, its woff fonts), beside the
    pages: equations render with no CDN at view time."""
    target = out / "mathjax"
    if (target / "MathJax.js").exists():
        return
    source = find_mathjax()
    tmp = out / ".mathjax.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, tmp / part)
        else:
            (tmp / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, tmp / part)
    tmp.rename(target)


def write_executed(src: Path, dest: Path = EXECUTED_DIR, names: tuple[str, ...] = NOTEBOOKS) -> int:
    """Copies of the executed notebooks for GitHub: outputs kept, audio and progress bars stripped.
    Returns the bytes written."""
    import nbformat

    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in names:
        nb = nbformat.read(src / f"{name}.ipynb", as_version=4)
        _clean_parameters(nb)
        strip_audio(nb)
        text = nbformat.writes(nb)
        atomic_write(dest / f"{name}.ipynb", text)
        total += len(text.encode())
    if total > EXECUTED_BUDGET:
        raise ValueError(f"{dest}: {total:,} bytes of executed notebooks, over the {EXECUTED_BUDGET:,} budget")
    return total


def build_book(profile: str = "default", source: str = "default", out: Path = BOOK_DIR,
               src: Path | None = None, executed: Path | None = EXECUTED_DIR) -> dict:
    """The whole book from the last `make workbook` at `profile` and `source`; returns what it wrote."""
    src = Path(src or executed_dir(profile, source))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    pages = build_pages(src, out)
    machine = ""
    run = figures_dir(profile, source) / "records" / "workbook.json"
    if run.exists():
        machine = json.loads(run.read_text()).get("machine", "")
    about = f"Profile {profile}, corpus {source}" + (f"; executed on {machine}." if machine else ".")
    build_index(out, pages, about)
    n_pairs = build_quiz(out, pages, figures_dir(profile, source) / QUIZ_FILE)
    for path in out.rglob("*"):  # atomic writes leave 0600: a static server running as another user reads 0644
        if path.is_file():
            path.chmod(0o644)
    written = {"pages": len(pages), "pairs": n_pairs, "out": str(out)}
    if executed is not None:
        written["executed_bytes"] = write_executed(src, Path(executed))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midilib.book", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--source", default="default")
    parser.add_argument("--out", default=str(BOOK_DIR))
    parser.add_argument("--no-executed", action="store_true", help="do not refresh the committed executed/ copies")
    args = parser.parse_args(argv)
    executed = None if args.no_executed or args.profile == "smoke" else EXECUTED_DIR
    try:
        written = build_book(args.profile, args.source, Path(args.out), executed=executed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[book] {written['pages']} pages and {written['pairs']} quiz pairs in {written['out']}/index.html"
          + (f"; executed/ {written['executed_bytes']:,} bytes" if "executed_bytes" in written else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
