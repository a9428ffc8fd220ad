"""Every measured number in the README comes from a committed file under figures/.

Each generated block sits between `<!-- NAME:start -->` and `<!-- NAME:end -->`
and is a copy of one file that a make target writes (`make workbook`, `make
seeds`, `make bench`). `python -m midilib.readme` (make readme) copies them in;
tests/test_readme.py fails when a block differs from its file. `measured.md`
is itself written from the notebooks' records (figures/records/*.json) by
`measured_markdown`, so the prose numbers of the workbook have a source too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from midilib.atomic import atomic_write
from midilib.report import block, refresh_markdown, replace_block
from midilib.workbook import ROOT

# block name -> source file, relative to the repository root
BLOCKS: dict[str, str] = {
    "measured": "figures/measured.md",
    "results": "figures/results.md",
    "seeds": "figures/seeds.md",
    "results-giantmidi-sample": "figures/giantmidi-sample-a479ab05/results.md",
    "measured-giantmidi-sample": "figures/giantmidi-sample-a479ab05/measured.md",
    "seeds-giantmidi-sample": "figures/giantmidi-sample-a479ab05/seeds.md",
    "bench": "figures/bench.md",
    "bench-gpu": "figures/bench-gpu.md",
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def blocks_in(text: str) -> list[str]:
    """Names of the generated blocks present in a README text."""
    return [name for name in BLOCKS if markers(name)[0] in text]


def _load(figures: Path, name: str) -> dict:
    path = figures / "records" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _f(x: float, d: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def measured_markdown(figures: str | Path) -> str:
    """The workbook's headline figures, as bullet points, from figures/records/*.json."""
    figures = Path(figures)
    wb, eda = _load(figures, "workbook"), _load(figures, "01_eda")
    vae, ddpm, ddim, ev = (_load(figures, n) for n in ("03_vae", "04_ddpm", "05_ddim", "06_evaluation"))
    lines = []
    if wb:
        parts = ", ".join(f"{k.split('_')[0]} {v:.0f} s" for k, v in wb["seconds"].items())
        lines.append(f"* `make workbook PROFILE={wb['profile']}` on `{wb['source']}` ran in "
                     f"**{sum(wb['seconds'].values()):.0f} s** ({parts}) on {wb['machine']}"
                     + (" (trained models reused)" if wb.get("reused") else "") + ";")
    if eda:
        lines.append(f"* data: {eda['files']} files, {eda['notes']:,} notes; {eda['train_windows']:,} train / "
                     f"{eda.get('valid_windows', 0):,} valid / {eda['test_windows']:,} test windows, split by piece;")
    if vae:
        line = (f"* **VAE** ({vae['parameters']:,} parameters, {vae['epochs']} epochs): on the validation files "
                f"pitch accuracy {_f(vae['pitch_accuracy'])}, note IoU {_f(vae['note_iou'])} (baselines: most "
                f"common pitch {_f(vae['baseline_common'])}; nearest training window {_f(vae['baseline_nn'])}, "
                f"IoU {_f(vae['nn_iou'])})")
        if "vae_test_pitch_accuracy" in ev:
            line += (f"; on the test files, read once in notebook 06: pitch accuracy "
                     f"{_f(ev['vae_test_pitch_accuracy'])}, note IoU {_f(ev['vae_test_note_iou'])}")
        lines.append(line + f"; {vae['seconds_per_10k']:.2f} s per 10,000 samples;")
    if ddpm:
        epochs = f", {ddpm['epochs']} epochs in {ddpm['train_seconds']:.0f} s" if "epochs" in ddpm else ""
        lines.append(f"* **diffusion** ({ddpm['parameters']:,} parameters{epochs}): DDPM and DDIM from one "
                     f"denoiser;")
    if ddim:
        sweep = ddim["sweep"]
        ddim_rows = sorted((k for k in sweep if k.startswith("DDIM")), key=lambda k: int(k.split("-")[1]))
        steps = "; ".join(f"{k.split('-')[1]} steps {_f(sweep[k].get('fmd_inf', np.nan), 2)}" for k in ddim_rows)
        lines.append(f"* DDIM on the validation files, fmd_inf by step count: {steps} (floor "
                     f"{_f(ddim.get('floor_fmd_inf', np.nan), 2)}); DDIM-50 is {ddim['speedup_ddim50']:.1f}× "
                     f"faster than DDPM in the same run;")
        sm = ddim.get("samplers", {})
        dpm = sorted((k for k in sm if k.startswith("DPM")), key=lambda k: int(k.rsplit("-", 1)[1]))
        if dpm:
            chosen = ddim.get("dpmsolver_steps")
            pick = (f"the smallest not worse than DDIM-50 on fmd_inf and scale consistency: **{chosen} steps**, "
                    f"{ddim['dpmsolver_speedup']:.1f}× DDIM-50's speed" if chosen else
                    "no step count is as good as DDIM-50 on both")
            lines.append("* DPM-Solver++ on the validation files, fmd_inf [95% interval] and seconds per 10,000 "
                         "windows by step count: " + "; ".join(
                             f"{k.rsplit('-', 1)[1]} steps {_f(sm[k]['fmd_inf'], 2)} [{_f(sm[k]['fmd_inf_lo'], 2)}, "
                             f"{_f(sm[k]['fmd_inf_hi'], 2)}], {sm[k]['sec_per_10k']:.1f} s" for k in dpm)
                         + f" ({pick});")
    if ev:
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in ev["seconds_per_10k"].items())
        lines.append(f"* seconds of model time per 10,000 windows: {timings}.")
    return "\n".join(lines) + "\n"


def _in(value: float, lo: float, hi: float) -> str:
    return "**yes**" if lo <= value <= hi else "no"


def targets_markdown(figures: str | Path) -> str:
    """Issue 13's targets against the final table (test files) of one corpus, with intervals.

    Note IoU's target is 0.6 on the embedded corpus and 0.35 on any other (GiantMIDI performances).
    "Within the floor's interval": the value lies in the floor row's 95% interval (for a distance,
    at or below its upper end).
    """
    import pandas as pd

    figures = Path(figures)
    ev, csv = _load(figures, "06_evaluation"), figures / "results.csv"
    if not ev or not csv.exists() or "vae_test" not in ev:
        return ""
    df = pd.read_csv(csv, index_col="set")
    floor = "floor (train vs test)"
    if floor not in df.index or "VAE" not in df.index:
        return ""

    def cell(row: str, m: str) -> str:
        return f"{_f(df.at[row, m])} [{_f(df.at[row, m + '_lo'])}, {_f(df.at[row, m + '_hi'])}]"

    def within(row: str, m: str) -> str:
        return _in(df.at[row, m], df.at[floor, m + "_lo"], df.at[floor, m + "_hi"])

    def below(row: str, m: str) -> str:
        return _in(df.at[row, m], -np.inf, df.at[floor, m + "_hi"])

    r = ev["vae_test"]
    iou_target = 0.6 if ev.get("source") == "default" else 0.35
    lines = ["* **Targets** (issue 13; the final table, test files; 'yes' where met):",
             f"  * VAE reconstruction: pitch accuracy {_f(r['pitch_accuracy'])} [{_f(r['pitch_accuracy_lo'])}, "
             f"{_f(r['pitch_accuracy_hi'])}] (≥ 0.95: {_in(r['pitch_accuracy'], 0.95, 1)}), note IoU "
             f"{_f(r['note_iou'])} [{_f(r['note_iou_lo'])}, {_f(r['note_iou_hi'])}] (≥ {iou_target}: "
             f"{_in(r['note_iou'], iou_target, 1)});"]
    if "fad_inf" in df.columns:
        limit = 2 * df.at[floor, "fad_inf"]
        lines.append(f"  * VAE prior samples: fad_inf {cell('VAE', 'fad_inf')} (within 2× the floor's "
                     f"{_f(df.at[floor, 'fad_inf'])}: {_in(df.at['VAE', 'fad_inf'], -np.inf, max(limit, 0.0))}); "
                     f"scale consistency {cell('VAE', 'scale_consistency')} (in the floor's "
                     f"{cell(floor, 'scale_consistency')}: {within('VAE', 'scale_consistency')});")
        samplers = [s for s in df.index if s.startswith(("DDPM", "DDIM", "DPM")) and "original" not in s]
        if samplers:
            best = min(samplers, key=lambda s: df.at[s, "fad_inf"])
            lines.append(f"  * best diffusion sampler by fad_inf, {best}: scale consistency "
                         f"{cell(best, 'scale_consistency')} (in the floor's interval: {within(best, 'scale_consistency')}), "
                         f"pitch-class entropy {cell(best, 'pitch_class_entropy')} (floor "
                         f"{cell(floor, 'pitch_class_entropy')}: {within(best, 'pitch_class_entropy')}), fad_inf "
                         f"{cell(best, 'fad_inf')} (floor {cell(floor, 'fad_inf')}: {below(best, 'fad_inf')}), fmd_inf "
                         f"{cell(best, 'fmd_inf')} (floor {cell(floor, 'fmd_inf')}: {below(best, 'fmd_inf')}).")
    return "\n".join(lines) + "\n"


SELF_SIMILARITY = ("pitch_consistency", "pitch_variance", "duration_consistency", "duration_variance")


def latent_markdown(figures: str | Path) -> str:
    """Notebook 07's long pieces and issue 14's targets, from records/07_latent_diffusion.json.

    "Inside the real interval": at or above the lower end of the real test pieces' interval
    (they score 1 against themselves); "nearer": a higher score than the baseline's. The
    guidance target: at some W > 0, the share of guided pieces the probe names as asked for
    is at least twice the unguided (W = 0) share.
    """
    from midilib import long_pieces as LP

    r = _load(Path(figures), "07_latent_diffusion")
    if not r:
        return ""
    real, ld = LP.REAL, LP.LATENT

    def score(name: str, m: str) -> str:
        return f"{_f(r[m][name])} [{_f(r[m + '_lo'][name])}, {_f(r[m + '_hi'][name])}]"

    loss = f"min-SNR-{r['min_snr']:g} loss" if r.get("min_snr") else "plain ε-MSE"
    inside = [m for m in SELF_SIMILARITY if r[m][ld] >= r[m + "_lo"][real]]
    nearer = {b: [m for m in SELF_SIMILARITY if r[m][ld] > r[m][b]] for b in (LP.SHUFFLED, LP.WALK)}
    lines = [
        f"* **latent diffusion** (issue 14; {r['parameters']:,} parameters, {r['epochs']} epochs in "
        f"{r['train_seconds']:.0f} s; sequences of K = {r['K']} windows of D = {r['latent_dim']} latents; "
        f"{r.get('skip', 'gaussian')} skip, "
        f"{loss}; VAE-decoded rows drawn at T = {r.get('temperature', 0):g}, chosen on the validation "
        f"files): {r['n_pieces']} pieces per set against every real test piece of {r['K']} windows; FD∞ of "
        f"4-window clips {score(ld, 'fd_clips')} (real training pieces {score(LP.TRAIN, 'fd_clips')}, shuffled "
        f"windows {score(LP.SHUFFLED, 'fd_clips')}); whole-piece scale consistency {score(ld, 'scale_consistency')} "
        f"(test pieces {score(real, 'scale_consistency')});",
        "* **Targets** (issue 14; test pieces; 'yes' where met):",
        "  * latent diffusion inside the real test pieces' interval: " + "; ".join(
            f"{m.replace('_', ' ')} {_f(r[m][ld])} (real [{_f(r[m + '_lo'][real])}, 1]: "
            f"{'**yes**' if m in inside else 'no'})" for m in SELF_SIMILARITY) + ";",
        f"  * nearer 1 than the shuffled windows on {len(nearer[LP.SHUFFLED])} of 4 scores "
        f"({'**yes**' if len(nearer[LP.SHUFFLED]) == 4 else 'no'}), than the VAE random walk on "
        f"{len(nearer[LP.WALK])} of 4 ({'**yes**' if len(nearer[LP.WALK]) == 4 else 'no'});",
    ]
    files = r.get("probe_files")
    if files:
        vae, major = files["vae latents"], files["majority"]
        lines.append(f"  * composer probe on real files: VAE latents {_f(vae[0])} [{_f(vae[1])}, {_f(vae[2])}], "
                     f"window statistics {_f(files['window statistics'][0])}, majority {_f(major[0])} "
                     f"[{_f(major[1])}, {_f(major[2])}] (above the majority, the interval's lower end too: "
                     f"{'**yes**' if vae[1] > major[0] else 'no'});")
    acc = r.get("guidance_accuracy")
    if acc:
        base = acc["0.0"][0]
        best = max((w for w in acc if float(w) > 0), key=lambda w: acc[w][0])
        ratio = acc[best][0] / base if base > 0 else float("inf")
        fd = r["guidance_fd_clips"]
        lines.append(
            "  * guided pieces named as the composer asked for: " + ", ".join(
                f"W = {float(w):g} {_f(a[0])} [{_f(a[1])}, {_f(a[2])}]" for w, a in acc.items())
            + f"; best W = {float(best):g}, {ratio:.1f}× unguided (≥ 2×: {'**yes**' if ratio >= 2 else 'no'}); "
            f"FD∞ of clips " + ", ".join(f"W = {float(w):g} {_f(v[0], 2)}" for w, v in fd.items()) + ".")
    return "\n".join(lines) + "\n"


def write_measured(figures: str | Path) -> Path:
    path = Path(figures) / "measured.md"
    atomic_write(path, measured_markdown(figures) + targets_markdown(figures) + latent_markdown(figures))
    return path


def sync(readme: str | Path = ROOT / "README.md", root: Path = ROOT) -> list[str]:
    """Copy every generated block's source file into the README; returns the names updated."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    done = []
    for name in blocks_in(text):
        source = root / BLOCKS[name]
        if not source.exists():
            print(f"[readme] {source} missing: block {name!r} left as it is", file=sys.stderr)
            continue
        text = replace_block(text, source.read_text(encoding="utf-8"), *markers(name), str(path))
        done.append(name)
    atomic_write(path, text)
    return done


def stale(readme: str | Path = ROOT / "README.md", root: Path = ROOT) -> list[str]:
    """Names of README blocks that differ from their source files (or whose file is missing)."""
    text = Path(readme).read_text(encoding="utf-8")
    out = []
    for name in blocks_in(text):
        source = root / BLOCKS[name]
        if not source.exists() or block(text, *markers(name)) != source.read_text(encoding="utf-8").strip():
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    for figures in (ROOT / "figures", ROOT / "figures" / "giantmidi-sample-a479ab05"):
        if (figures / "records" / "workbook.json").exists():
            write_measured(figures)
        if (figures / "results.csv").exists():
            refresh_markdown(figures)  # the table's reading as the code writes it today
    print("updated:", ", ".join(sync()) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
