"""Corpus sources: file naming, folder listing, the resumable downloader (offline), the embedded corpus."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import scale_notes, write_notes_midi

from midilib import corpus


def test_giantmidi_names():
    assert corpus.describe("Liszt, Franz, Hungarian Rhapsody No.2, S.244_2, LdH1hSWGFGU.mid") == (
        "Liszt, Franz",
        "Hungarian Rhapsody No.2, S.244_2",
    )
    assert corpus.describe("x/Ravel, Maurice, Jeux d'eau, v-QmwrhO3ec.mid") == ("Ravel, Maurice", "Jeux d'eau")
    assert corpus.describe("Debussy_Estampes_R-YcnPXY2yE_cut_no_3.mid") == (
        "unknown",
        "Debussy_Estampes_R-YcnPXY2yE_cut_no_3",
    )
    assert corpus.describe("a, b, c.mid") == ("unknown", "a, b, c")


def test_listing_is_recursive_any_case_and_sorted(tmp_path):
    for name in ("b.mid", "A/c.MID", "A/a.midi", "z.Midi", "notes.txt", "A/x.mid.bak"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in corpus.list_midi_files(tmp_path)]
    assert names == ["A/a.midi", "A/c.MID", "b.mid", "z.Midi"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        corpus.list_midi_files(tmp_path / "missing")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut a response short once."""

    cut_after: int | None = None

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            body = body[: type(self).cut_after]
            type(self).cut_after = None
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_RangeHandler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def _make_zip(root: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(3):
        write_notes_midi(src / f"Bach, Johann Sebastian, Prelude {i}, abcdefghij{i}.mid", scale_notes(30, seed=i))
    archive = root / "giant.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.iterdir()):
            zf.write(p, f"midis/{p.name}")
    return archive


def test_download_resumes_verifies_and_is_idempotent(server, tmp_path):
    root, url, handler = server
    archive = _make_zip(root, tmp_path)
    payload = archive.read_bytes()
    md5 = "md5:" + hashlib.md5(payload).hexdigest()
    dest = tmp_path / "dl" / "giant.zip"
    handler.cut_after = 500  # the first transfer dies after 500 bytes
    with pytest.raises(ValueError, match="size"):
        corpus.download(f"{url}/giant.zip", dest, expected_size=len(payload), progress=False)
    # a partial file left behind by a killed process resumes from where it stopped
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(payload[:700])
    got = corpus.download(f"{url}/giant.zip", dest, expected_size=len(payload), checksum=md5, progress=False)
    assert got.read_bytes() == payload and not part.exists()
    mtime = got.stat().st_mtime_ns
    time.sleep(0.01)
    corpus.download(f"{url}/giant.zip", dest, checksum=md5, progress=False)
    assert got.stat().st_mtime_ns == mtime  # nothing downloaded again
    with pytest.raises(ValueError, match="md5 mismatch"):
        corpus.download(f"{url}/giant.zip", tmp_path / "other.zip", checksum="md5:" + "0" * 32, progress=False)


def test_fetch_giantmidi_extracts_once_and_prepares(server, tmp_path):
    root, url, _ = server
    archive = _make_zip(root, tmp_path)
    md5 = "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()
    folder = corpus.fetch_giantmidi(tmp_path / "giant", url=f"{url}/giant.zip", checksum=md5)
    files = corpus.list_midi_files(folder)
    assert len(files) == 3 and corpus.describe(files[0])[0] == "Bach, Johann Sebastian"
    marker = (folder / ".extracted").stat().st_mtime_ns
    assert corpus.fetch_giantmidi(tmp_path / "giant", url=f"{url}/giant.zip", checksum=md5) == folder
    assert (folder / ".extracted").stat().st_mtime_ns == marker


def test_missing_file_on_server(server, tmp_path):
    _, url, _ = server
    with pytest.raises(ConnectionError, match="HTTP 404"):
        corpus.download(f"{url}/none.zip", tmp_path / "none.zip", progress=False)


def test_unreachable_network_is_one_clear_line(tmp_path):
    with pytest.raises(ConnectionError, match="network unreachable") as info:
        corpus.download("http://127.0.0.1:9/giant.zip", tmp_path / "x.zip", timeout=2, progress=False)
    assert "\n" not in str(info.value)



def test_embedded_corpus_is_real_music_and_cached():
    folder = corpus.DATA / "default-corpus"
    if not (folder / "corpus.json").exists():
        pytest.skip("embedded corpus not built yet (make does it: python -m midilib prepare default)")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert corpus.build_embedded_corpus(progress=False) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing rebuilt
    from midilib.events import read_events

    files = corpus.list_midi_files(folder)
    assert len(files) >= 400
    notes = sum(len(read_events(f)) for f in files)
    assert notes >= 100_000
    composers = {corpus.describe(f)[0] for f in files}
    assert "Bach, Johann Sebastian" in composers and len(composers) >= 5
