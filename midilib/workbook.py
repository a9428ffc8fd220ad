"""What the notebooks share: where data, runs and figures live, key results, and the runner.

Each notebook starts with ``wb = Workbook("03_vae", PROFILE, SOURCE)``; it
prepares (or reuses) the windows of SOURCE, names run folders keyed by the
profile and the data, saves figures and records key figures in a small JSON
that the tests assert. ``python -m midilib.workbook`` executes every notebook
in order with papermill (this is what ``make workbook`` runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from midilib.atomic import atomic_write
from midilib.profiles import Profile, get_profile

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_eda", "02_tokenization", "03_vae", "04_ddpm", "05_ddim", "06_evaluation", "07_latent_diffusion")


def figures_dir(profile: str, source: str = "default") -> Path:
    """figures/ for real runs on the embedded corpus, figures/<source>/ for other corpora;
    smoke runs (CI) write under build/ so they never touch figures/."""
    if profile == "smoke":
        return ROOT / "build" / "figures-smoke"
    return ROOT / "figures" if source == "default" else ROOT / "figures" / source_name(source)


def source_name(source: str) -> str:
    """A short, stable folder name for a SOURCE (builtin name or path)."""
    if source in ("default", "giantmidi"):
        return source
    path = Path(source).resolve()
    return f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


@dataclass
class Workbook:
    notebook: str
    profile_name: str = "default"
    source: str = "default"
    figures: str | Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.profile: Profile = get_profile(self.profile_name)
        self.figures = Path(self.figures) if self.figures else figures_dir(self.profile.name, self.source)
        self.figures.mkdir(parents=True, exist_ok=True)
        (self.figures / "records").mkdir(exist_ok=True)

    # ------------------------------------------------------------------ data
    @property
    def data_dir(self) -> Path:
        suffix = f"-max{self.profile.data.max_files}" if self.profile.data.max_files else ""
        return ROOT / "data" / "prepared" / f"{source_name(self.source)}{suffix}"

    @cached_property
    def prepared(self):
        """The windows of SOURCE at this profile (prepared once, then reused)."""
        from midilib.prepare import PrepareParams, prepare

        params = PrepareParams(**asdict(self.profile.data))
        return prepare(self.source, self.data_dir, params, progress=self.progress)

    @property
    def source_root(self) -> Path:
        from midilib.prepare import resolve_source

        return resolve_source(self.source, progress=self.progress)

    def run_dir(self, model: str) -> Path:
        return ROOT / "runs" / self.profile.name / source_name(self.source) / model

    # --------------------------------------------------------------- outputs
    def savefig(self, fig: Any, name: str) -> None:
        """Save `fig` as FIGURES/name.png (nothing is returned, so a cell ending with it shows the
        figure and not the path)."""
        fig.savefig(self.figures / f"{name}.png", dpi=110, bbox_inches="tight")

    def record(self, **values: Any) -> dict:
        """Store key results of this notebook (tests read them back)."""
        path = self.figures / "records" / f"{self.notebook}.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update({k: _plain(v) for k, v in values.items()})
        data["profile"], data["source"] = self.profile.name, self.source
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True))
        return data


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def read_records(notebook: str, profile: str = "default", figures: str | Path | None = None,
                 source: str = "default") -> dict:
    path = Path(figures or figures_dir(profile, source)) / "records" / f"{notebook}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run notebook {notebook} first")
    data = json.loads(path.read_text())
    if data.get("profile") != profile or data.get("source") != source:
        raise ValueError(f"{path}: recorded at profile {data.get('profile')!r}, source {data.get('source')!r}; "
                         f"run notebook {notebook} at profile {profile!r}, source {source!r} first")
    return data


# ----------------------------------------------------------------- the runner


def run_notebooks(
    profile: str,
    source: str,
    names: tuple[str, ...] = NOTEBOOKS,
    out_dir: str | Path | None = None,
    figures: str | Path | None = None,
) -> dict[str, float]:
    """Execute the notebooks in order with papermill into build/notebooks/PROFILE/SOURCE/ (what
    `make book` reads); returns seconds per notebook."""
    import papermill as pm

    get_profile(profile)
    out_dir = Path(out_dir or ROOT / "build" / "notebooks" / profile / source_name(source))
    out_dir.mkdir(parents=True, exist_ok=True)
    if source not in ("default", "giantmidi"):  # the notebooks run in notebooks/: pass absolute paths
        source = str(Path(source).resolve())
    parameters = {"PROFILE": profile, "SOURCE": source, "FIGURES": str(figures or "")}
    times = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"[workbook] {name} (profile {profile}, source {source})", flush=True)
        pm.execute_notebook(
            str(ROOT / "notebooks" / f"{name}.ipynb"),
            str(out_dir / f"{name}.ipynb"),
            parameters=parameters,
            cwd=str(ROOT / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
        times[name] = time.perf_counter() - t0
        print(f"[workbook] {name}: {times[name]:.1f} s", flush=True)
    return times


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def refresh_committed(names: tuple[str, ...] = NOTEBOOKS) -> None:
    """Re-execute the notebooks at smoke and keep only the outputs that nbval compares.

    The committed notebooks stay small (no images, no audio) while the cells
    marked NBVAL_CHECK_OUTPUT carry the counts that a change must not alter.
    """
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        run_notebooks("smoke", "default", names, out_dir=tmp, figures=Path(tmp) / "figures")
        for name in names:
            source_path = ROOT / "notebooks" / f"{name}.ipynb"
            source = nbformat.read(source_path, as_version=4)
            executed = nbformat.read(Path(tmp) / f"{name}.ipynb", as_version=4)
            ran = {c.source: c for c in executed.cells if c.cell_type == "code"}
            for cell in source.cells:
                if cell.cell_type != "code":
                    continue
                checked = cell.source.startswith(CHECK_MARK) and cell.source in ran
                cell.outputs = ran[cell.source].outputs if checked else []
                cell.execution_count = ran[cell.source].execution_count if checked else None
            nbformat.write(source, source_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midilib.workbook", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--source", default="default")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names (default: all)")
    parser.add_argument("--refresh-committed", action="store_true",
                        help="re-run at smoke and store only the nbval-checked outputs in notebooks/")
    args = parser.parse_args(argv)
    if args.refresh_committed:
        refresh_committed(tuple(args.only or NOTEBOOKS))
        return 0
    try:
        times = run_notebooks(args.profile, args.source, tuple(args.only or NOTEBOOKS))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[workbook] done in {sum(times.values()):.0f} s: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    if args.profile != "smoke" and not args.only:  # a whole run: its timings and README blocks
        record_run(args.profile, args.source, times)
    return 0


def record_run(profile: str, source: str, times: dict[str, float]) -> None:
    """figures/.../records/workbook.json (seconds per notebook, machine), measured.md, README blocks."""
    from midilib import readme
    from midilib.report import machine_line

    figures = figures_dir(profile, source)
    info = {"profile": profile, "source": source, "seconds": times,
            "machine": machine_line().removeprefix("Machine: ")}
    atomic_write(figures / "records" / "workbook.json", json.dumps(info, indent=1))
    readme.write_measured(figures)
    readme.sync()


if __name__ == "__main__":
    sys.exit(main())
