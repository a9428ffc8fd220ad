"""The book: built from smoke-executed notebooks and checked in a real headless Chromium.

Every page loads from a local server with no console error and no request leaving the
machine; every image has a non-zero natural size; every audio element loads a non-zero
duration; every equation renders (MathJax, no error); the quiz is clicked through to its
final score. Screenshots land in build/book-screens/ (ignored by git). Skips, saying why,
where Chromium or Playwright is missing.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from midilib import book

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENS = REPO / "build" / "book-screens"
MATH_PAGES = ("03_vae", "04_ddpm", "05_ddim", "06_evaluation", "07_latent_diffusion")  # pages with LaTeX


# ---------------------------------------------------------------- no browser needed


def test_quiz_clips_pair_real_files_with_each_model():
    rng = np.random.default_rng(0)
    test = rng.random((40, 8, 4))
    test_file = np.repeat(np.arange(8), 5)  # 8 files of 5 windows
    sets = {"A": rng.random((30, 8, 4)), "B": rng.random((30, 8, 4))}
    q = book.quiz_clips(test, test_file, sets, per_model=3, windows=2, seed=1)
    assert q["real"].shape == q["fake"].shape == (6, 16, 4)
    assert list(q["model"]) == ["A"] * 3 + ["B"] * 3
    for real in q["real"]:  # two consecutive windows of one file
        start = next(i for i in range(len(test)) if np.array_equal(test[i], real[:8]))
        assert np.array_equal(test[start + 1], real[8:]) and test_file[start] == test_file[start + 1]
    for fake, model in zip(q["fake"], q["model"]):  # two windows of that model's set, in order
        w = sets[model].reshape(-1, 2, 8, 4)
        assert any(np.array_equal(fake, pair.reshape(16, 4)) for pair in w)
    assert len(set(q["source"])) == 6  # a different real excerpt in every pair
    with pytest.raises(ValueError, match="no test file has 9 windows"):
        book.quiz_clips(test, test_file, sets, windows=9)


def test_strip_audio_keeps_figures_and_drops_players():
    import nbformat
    from IPython.display import Audio

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("play(x)")
    html = Audio(data=np.sin(np.arange(800) / 5.0), rate=8000)._repr_html_()
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": html, "text/plain": "<Audio>"}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
        nbformat.v4.new_output("stream", name="stderr", text="render: 100%|####|"),
    ]
    nb.cells.append(cell)
    assert book.strip_audio(nb) == 1
    book._clean_parameters(nb)
    kinds = [list(o.get("data", {})) for o in nb.cells[0].outputs]
    assert kinds == [["text/plain"], ["image/png", "text/plain"]]
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == book.AUDIO_NOTE


def test_committed_executed_notebooks_are_current_and_small():
    """executed/ is what a reader sees on GitHub: the default-profile outputs of the notebooks as
    they are now (their code cells equal notebooks/), with figures, without audio, under budget."""
    import nbformat

    paths = sorted(book.EXECUTED_DIR.glob("*.ipynb"))
    assert [p.stem for p in paths] == list(book.NOTEBOOKS), "run `make workbook && make book`"
    total = sum(p.stat().st_size for p in paths)
    assert total <= book.EXECUTED_BUDGET, f"{total:,} bytes of executed notebooks"
    for path in paths:
        executed = nbformat.read(path, as_version=4)
        source = nbformat.read(REPO / "notebooks" / path.name, as_version=4)
        code = [c.source for c in source.cells if c.cell_type == "code"]
        assert [c.source for c in executed.cells if c.cell_type == "code"] == code, (
            f"{path}: stale; run `make workbook && make book` after editing notebooks/{path.name}")
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert not any("<audio" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path}: no figure"


# ------------------------------------------------------------------ the browser test


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory) -> Path:
    if CHROMIUM is None:
        pytest.skip("no Chromium (Debian: apt-get install chromium; make setup installs it as root)")
    pytest.importorskip("playwright", reason="playwright (pip) missing: make setup installs it")
    from midilib.workbook import run_notebooks

    try:
        book.find_mathjax()
    except FileNotFoundError as exc:  # no npm and no MathJax folder
        pytest.skip(str(exc))

    executed = tmp_path_factory.mktemp("executed")
    run_notebooks("smoke", "default", out_dir=executed)
    out = tmp_path_factory.mktemp("book")
    written = book.build_book("smoke", "default", out=out, src=executed, executed=None)
    assert written["pages"] == len(book.NOTEBOOKS) and written["pairs"] >= 4
    return out


@pytest.fixture(scope="module")
def server(smoke_book):
    handler = functools.partial(_QuietHandler, directory=str(smoke_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def _open(browser, url: str, base: str):
    """A page whose console errors, page errors and requests outside `base` are recorded."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def route(r):
        if r.request.url.startswith((base, "data:", "blob:")):
            return r.continue_()
        problems.append(f"request left the book: {r.request.url}")
        return r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load")
    return page, problems


AUDIO_DURATIONS = """async () => Promise.all(Array.from(document.querySelectorAll('audio')).map(a =>
  new Promise(resolve => {
    const done = () => resolve(Number.isFinite(a.duration) ? a.duration : -1);
    if (a.readyState >= 1) return done();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', () => resolve(-2), {once: true});
    setTimeout(() => resolve(-3), 15000);
    a.load();
  })))"""

MATH = """async () => {
  if (!window.MathJax || !MathJax.Hub) return {loaded: false};
  await new Promise(resolve => MathJax.Hub.Queue(resolve));
  return {loaded: true,
          sources: document.querySelectorAll('script[type^="math/tex"]').length,
          rendered: document.querySelectorAll('.MathJax_CHTML, .MathJax, .MathJax_SVG').length,
          errors: document.querySelectorAll('.MathJax_Error, merror').length
                  + (document.body.innerText.includes('Math Processing Error') ? 1 : 0)};
}"""


@pytest.mark.parametrize("name", ["index", *book.NOTEBOOKS])
def test_book_page_loads_offline_with_figures_audio_and_equations(browser, server, name):
    page, problems = _open(browser, f"{server}/{name}.html", server)
    try:
        images = page.evaluate("Array.from(document.images).map(i => [i.src.slice(0, 60), i.naturalWidth])")
        assert all(width > 0 for _, width in images), images
        durations = page.evaluate(AUDIO_DURATIONS)
        assert all(d > 0 for d in durations), durations
        math = page.evaluate(MATH)
        if name != "index":
            assert images, f"{name}: no figure"
            assert math["loaded"], f"{name}: MathJax did not load"
            assert math["errors"] == 0 and math["rendered"] >= math["sources"], math
        if name in MATH_PAGES:
            assert math["sources"] >= 3, f"{name}: equations missing ({math})"
        if name in ("03_vae", "05_ddim", "06_evaluation", "07_latent_diffusion"):
            assert durations, f"{name}: no audio player"
        if name != "index":  # readings show their text, not the f-string that formats it
            readings = page.evaluate("Array.from(document.querySelectorAll('.jp-RenderedMarkdown p'))"
                                     ".filter(p => p.innerText.startsWith('Reading.')).length")
            assert readings >= 1, f"{name}: no reading"
            shown = page.inner_text("body").count("display(Markdown(")  # only cells that also assert keep theirs
            assert shown < readings, f"{name}: {shown} readings show their code"
        links = page.evaluate("Array.from(document.querySelectorAll('nav.book a')).map(a => a.getAttribute('href'))")
        assert "quiz.html" in links and "index.html" in links
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=name == "index")
        assert not problems, problems
    finally:
        page.close()


def test_quiz_clicks_through_to_a_score(browser, server):
    page, problems = _open(browser, f"{server}/quiz.html", server)
    try:
        pairs = page.evaluate("pairs")
        assert len(pairs) >= 4 and {p["real"] for p in pairs} <= {"a", "b"}
        right = 0
        for i, pair in enumerate(pairs):
            assert page.inner_text("#count") == f"Pair {i + 1} of {len(pairs)}"
            assert all(d > 0 for d in page.evaluate(AUDIO_DURATIONS))
            page.click("#guess-a")
            right += pair["real"] == "a"
            verdict = page.inner_text("#verdict")
            assert verdict.startswith("Right." if pair["real"] == "a" else "Wrong.")
            assert pair["model"] in verdict
            assert page.inner_text("#score") == f"Score: {right} of {i + 1}"
            assert page.is_disabled("#guess-b")  # one guess per pair
            if i + 1 < len(pairs):
                page.click("#next")
        assert page.is_disabled("#next")
        assert f"You found the real clip in {right} of {len(pairs)} pairs" in page.inner_text("#done")
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / "quiz.png"), full_page=True)
        assert not problems, problems
    finally:
        page.close()


def test_book_refuses_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make workbook` first"):
        book.build_pages(tmp_path, tmp_path)
