"""Figures of the workbook: every plot a notebook shows is drawn here, once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from midilib.events import COLUMNS, DELTA, DURATION, PITCH, VELOCITY  # noqa: E402

CHANNEL_LABELS = {
    "pitch": "pitch (MIDI number)",
    "velocity": "velocity / 127",
    "delta": "onset gap (s)",
    "duration": "duration (s)",
}


def composers(table: pd.DataFrame) -> plt.Figure:
    """Files and notes per composer: bars on a log axis (one composer can have hundreds of times
    another's files), each labelled with its count."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(table) + 1.5), sharey=True)
    names = list(table.index)[::-1]
    for ax, column, color in ((axes[0], "files", "C0"), (axes[1], "notes", "C1")):
        counts = table[column].to_numpy(dtype=float)[::-1]
        ax.barh(names, counts, color=color)
        ax.set_xscale("log")
        ax.set_xlim(counts.min() / 2, counts.max() * 4)  # room for the labels; a bar of 1 stays visible
        for y, count in enumerate(counts):
            ax.annotate(f"{count:,.0f}", (count, y), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.set_xlabel(f"{column} (log scale)")
    axes[0].set_ylabel("composer")
    fig.tight_layout()
    return fig


def channel_histograms(
    events: np.ndarray,
    s_max: float | None = None,
    d_max: float | None = None,
    log_times: bool = True,
) -> plt.Figure:
    """Histograms of the four event channels; clip limits drawn as dashed lines."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3))
    axes[0].hist(events[:, PITCH], bins=np.arange(-0.5, 128.5, 1), color="C0")
    axes[1].hist(events[:, VELOCITY], bins=64, range=(0, 1), color="C1")
    for ax, col, limit, color in (
        (axes[2], DELTA, s_max, "C2"),
        (axes[3], DURATION, d_max, "C3"),
    ):
        values = events[:, col]
        if log_times:
            positive = values[values > 0]
            hi = max(float(positive.max()) if len(positive) else 1.0, 1e-3)
            bins = np.geomspace(1e-3, hi * 1.01, 60)
            ax.hist(np.clip(values, 1e-3, None), bins=bins, color=color)
            ax.set_xscale("log")
        else:
            ax.hist(values, bins=60, color=color)
        if limit is not None:
            ax.axvline(limit, color="k", ls="--", lw=1)
    for ax, name in zip(axes, COLUMNS):
        ax.set_xlabel(CHANNEL_LABELS[name])
    axes[0].set_ylabel("notes")
    fig.tight_layout()
    return fig


def piano_roll(
    events: np.ndarray, ax: plt.Axes | None = None, title: str = "", window: int | None = None
) -> plt.Axes:
    """Notes as bars (onset = cumulative delta); velocity as opacity; window borders dashed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3))
    ev = np.asarray(events).reshape(-1, 4)
    onsets = np.cumsum(ev[:, DELTA])
    for (p, v, _, d), s in zip(ev, onsets):
        ax.barh(p, max(d, 0.01), left=s, height=0.8, color="C0", alpha=0.25 + 0.75 * float(np.clip(v, 0, 1)))
    if window:
        for k in range(window, len(ev), window):
            ax.axvline(onsets[k], color="grey", ls=":", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    return ax


def piano_rolls(rolls: Mapping[str, np.ndarray], ncols: int = 4, window: int | None = None) -> plt.Figure:
    """A grid of piano rolls with titles."""
    n = len(rolls)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax, (name, ev) in zip(axes.flat, rolls.items()):
        piano_roll(ev, ax=ax, title=name, window=window)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def stacked_rolls(rolls: Mapping[str, np.ndarray], window: int | None = None) -> plt.Figure:
    """Piano rolls one above the other on a shared time and pitch axis (real against models)."""
    n = len(rolls)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.7 * n + 0.6), sharex=True, sharey=True, squeeze=False)
    for ax, (name, ev) in zip(axes[:, 0], rolls.items()):
        piano_roll(ev, ax=ax, window=window)
        ax.set_title(name, loc="left", fontsize=9)
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def distribution(values: Sequence[float], xlabel: str, bins: int = 40) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(np.asarray(values, dtype=float)[np.isfinite(values)], bins=bins, color="C4")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("files")
    fig.tight_layout()
    return fig


def compare_channels(sets: Mapping[str, np.ndarray], max_points: int = 20000) -> plt.Figure:
    """Per-channel distributions of several window sets (seaborn KDE/hist), one panel a channel."""
    import seaborn as sns

    frames = []
    for name, windows in sets.items():
        ev = np.asarray(windows).reshape(-1, 4)[:max_points]
        frame = pd.DataFrame(ev, columns=COLUMNS)
        frame["delta"] = np.log10(np.clip(frame["delta"], 1e-3, None))
        frame["duration"] = np.log10(np.clip(frame["duration"], 1e-3, None))
        frame["set"] = name
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    labels = {**CHANNEL_LABELS, "delta": "log10 onset gap (s)", "duration": "log10 duration (s)"}
    for ax, col in zip(axes, COLUMNS):
        sns.histplot(data=data, x=col, hue="set", stat="density", common_norm=False,
                     element="step", fill=False, bins=50, ax=ax, legend=(col == "duration"))
        ax.set_xlabel(labels[col])
    fig.tight_layout()
    return fig


LOG_LABELS = {
    "loss": "loss (the objective)", "ce": "pitch cross-entropy (nats)", "mse": "value loss", "kl": "KL (nats)",
    "pitch_acc": "pitch accuracy", "samples_per_s": "windows per second",
}


def training_curves(log: pd.DataFrame, columns: Sequence[str], title: str = "") -> plt.Figure:
    """Per-epoch curves from a run's log.csv: each column on the training windows and, where the
    log has `valid_<column>` (the held-out loss `fit` logs), on the validation windows beside it;
    a held-out value known for the last epoch only is drawn as one marker."""
    cols = [c for c in columns if c in log]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3), squeeze=False)
    for ax, col in zip(axes[0], cols):
        ax.plot(log["epoch"], log[col], marker="o", ms=3, label="train")
        held = f"valid_{col}"
        if held in log and log[held].notna().any():
            known = log[log[held].notna()]
            ax.plot(known["epoch"], known[held], marker="s" if len(known) == 1 else "o", ms=5 if len(known) == 1 else 3,
                    label="valid" if len(known) > 1 else "valid (final weights)")
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LOG_LABELS.get(col, col))
        ax.set_title(col)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def diffusion_states(rows: Mapping[str, Mapping[str, np.ndarray]], channels: Sequence[str],
                     limit: float = 3.0) -> plt.Figure:
    """Rows of diffusion-space states x (window, channels), each a heat map with notes across and
    channels down, on one colour scale [-limit, limit] (values beyond it saturate): the forward
    process next to the reverse one."""
    ncols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols + 1, 1.9 * len(rows) + 0.4), squeeze=False)
    image = None
    for r, (row_name, states) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(states):
                ax.axis("off")
                continue
            label, x = list(states.items())[c]
            image = ax.imshow(np.asarray(x).T, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_title(label, fontsize=9)
            ax.set_xticks(range(np.asarray(x).shape[0]))
            ax.set_xticklabels([str(i + 1) if i % 2 == 0 else "" for i in range(np.asarray(x).shape[0])], fontsize=7)
            ax.set_yticks(range(len(channels)))
            ax.set_yticklabels(channels if c == 0 else [], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_name, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("note", fontsize=8)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="value in the diffusion space")
    return fig


def schedules(curves: Mapping[str, Sequence[float]], xlabel: str = "epoch") -> plt.Figure:
    """Per-epoch schedules (teacher forcing, KL weight...) as step plots."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 2.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], curves.items()):
        ax.step(np.arange(len(values)), values, where="post", marker=".")
        ax.set_xlabel(xlabel)
        ax.set_title(name)
    fig.tight_layout()
    return fig


def before_after(originals: np.ndarray, others: np.ndarray, names: tuple[str, str]) -> plt.Figure:
    """Pairs of piano rolls (e.g. real window vs reconstruction), one column per pair: the
    original above, the other below with the original's notes outlined, and every panel on the
    same time and pitch axes so that a shift in time or pitch reads directly."""
    originals = [np.asarray(ev, dtype=float).reshape(-1, 4) for ev in originals]
    others = [np.asarray(ev, dtype=float).reshape(-1, 4) for ev in others]
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(3.4 * n, 4.8), squeeze=False, sharex=True, sharey=True)
    for i, (a, b) in enumerate(zip(originals, others)):
        piano_roll(a, ax=axes[0, i], title=f"window {i}")
        onsets = np.cumsum(a[:, DELTA])
        axes[1, i].barh(a[:, PITCH], np.maximum(a[:, DURATION], 0.01), left=onsets, height=0.8, fill=False,
                        edgecolor="0.45", lw=0.7)
        piano_roll(b, ax=axes[1, i])
    both = np.concatenate(originals + others)
    ends = [float((np.cumsum(ev[:, DELTA]) + ev[:, DURATION]).max()) for ev in originals + others if len(ev)]
    axes[0, 0].set_xlim(0, 1.03 * max(ends, default=1.0))
    if len(both):
        axes[0, 0].set_ylim(both[:, PITCH].min() - 1.5, both[:, PITCH].max() + 1.5)
    for ax in axes.flat:
        ax.label_outer()
    axes[0, 0].set_ylabel(f"{names[0]}\npitch")
    axes[1, 0].set_ylabel(f"{names[1]}\n(outline: {names[0]})\npitch")
    fig.tight_layout()
    return fig


def interval_plot(df: pd.DataFrame, metric: str, ax: plt.Axes | None = None, xlabel: str = "",
                  log: bool = False, floor: str | None = None) -> plt.Axes:
    """A metric with its [lo, hi] interval per row of a results table (columns metric, metric_lo,
    metric_hi); `log` for distances spanning decades, `floor` names a row drawn as a dashed line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(df) + 1))
    y = np.arange(len(df))
    values = df[metric].to_numpy(dtype=float)
    lo = values - df[f"{metric}_lo"].to_numpy(dtype=float)
    hi = df[f"{metric}_hi"].to_numpy(dtype=float) - values
    lo, hi = np.nan_to_num(np.clip(lo, 0, None)), np.nan_to_num(np.clip(hi, 0, None))
    if log:  # a log axis cannot show values <= 0 (FD∞ can be): clip the drawing, not the data
        tiny = np.nanmin(values[values > 0]) / 10 if (values > 0).any() else 1e-3
        shown = np.clip(values, tiny, None)
        lo = np.minimum(lo, shown - tiny / 2)
        ax.errorbar(shown, y, xerr=[lo, hi], fmt="o", capsize=3)
        ax.set_xscale("log")
    else:
        ax.errorbar(values, y, xerr=[lo, hi], fmt="o", capsize=3)
    if floor is not None and floor in df.index:
        ax.axvline(max(df.at[floor, metric], 1e-12) if log else df.at[floor, metric], color="k", ls="--",
                   lw=1, label="floor")
    ax.set_yticks(y, list(df.index))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel or metric)
    return ax


def _yerr(rows: pd.DataFrame, metric: str) -> list[np.ndarray] | None:
    """Error bar lengths below and above from <metric>_lo/_hi, or None without them."""
    if f"{metric}_lo" not in rows.columns:
        return None
    return [np.nan_to_num(np.clip(rows[metric] - rows[f"{metric}_lo"], 0, None).to_numpy(float)),
            np.nan_to_num(np.clip(rows[f"{metric}_hi"] - rows[metric], 0, None).to_numpy(float))]


def steps_sweep(
    sweep: pd.DataFrame, metrics: Sequence[str], floor: str | None = None, lines: Sequence[str] = ("DDIM",)
) -> plt.Figure:
    """Quality against sampling time, one panel per metric: each sampler of `lines` as a line
    through its step counts (rows named "<sampler>-K", in order of K, labelled with K), DDPM
    rows as separate markers, intervals where the table has <metric>_lo/_hi, and the `floor`
    row (real music) as a dashed line with its band."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.2), squeeze=False)
    names = [str(k) for k in sweep.index]
    curves = {
        line: sweep.loc[sorted((k for k in names if k.rsplit("-", 1)[0] == line), key=lambda k: int(k.rsplit("-", 1)[1]))]
        for line in lines
    }
    others = sweep.loc[[k for k in names if k.startswith("DDPM")]]
    for ax, metric in zip(axes[0], metrics):
        for i, (line, rows) in enumerate(curves.items()):
            ax.errorbar(rows.sec_per_10k, rows[metric], yerr=_yerr(rows, metric), fmt="o-" if i == 0 else "D-",
                        capsize=3, color=f"C{0 if i == 0 else i + 3}", label=line)
            for name, row in rows.iterrows():
                ax.annotate(str(name).rsplit("-", 1)[1], (row.sec_per_10k, row[metric]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
        for name, row in others.iterrows():
            ax.errorbar(row.sec_per_10k, row[metric], yerr=_yerr(others.loc[[name]], metric), fmt="s", capsize=3,
                        color="C3", label=name)
        if floor is not None and floor in sweep.index and np.isfinite(sweep.at[floor, metric]):
            ax.axhline(sweep.at[floor, metric], color="k", ls="--", lw=1, label="floor (real music)")
            if f"{metric}_lo" in sweep.columns and np.isfinite(sweep.at[floor, f"{metric}_lo"]):
                ax.axhspan(sweep.at[floor, f"{metric}_lo"], sweep.at[floor, f"{metric}_hi"], color="k", alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per 10,000 windows (this machine)")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
