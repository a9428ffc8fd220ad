"""A composer probe: how much of "who wrote it" a file-level feature vector carries.

A multinomial logistic regression (scikit-learn; features standardised on the
training folds, L2 penalty C = 1) predicts each file's composer from one vector
per file, cross-validated with `StratifiedGroupKFold`: folds never split a group
(`corpus.group_key`: the files cut from one recording, else one piece), and keep
the composers' shares about even across folds. Every file gets an out-of-fold
prediction; accuracy is the mean of 0/1 over files, with a delete-one-group
jackknife t interval (`intervals.mean_interval`: groups, not files, are what is
independent). The majority baseline is cross-validated on the same folds: each
test fold gets the most common composer of its training folds.

Two feature sets are compared: the VAE's file latents (the mean over a file's
windows of the posterior means mu(x)) and `window_statistics`, a hand-made
baseline. Labels: composers of fewer than `min_pieces` groups are pooled into
"other" (`corpus.fold_composers`), so that a test group's composer always has
another group to be learnt from; "unknown" files, and an "other" of fewer than
two groups, are left out and reported.

`fit_probe` trains on every real file and `classify` scores new vectors, e.g.
generated pieces: does a Chopin-conditioned piece classify as Chopin?
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from midilib import corpus
from midilib.events import DELTA, DURATION, PITCH, VELOCITY
from midilib.intervals import mean_interval

OTHER = "other"
UNKNOWN = "unknown"
C = 1.0  # inverse L2 strength of the logistic regression, on standardised features (sklearn's default)
CHORD_GAP = 0.02  # onsets closer than 20 ms count as one chord (as metrics.CHORD_TOL)
STAT_NAMES = (
    "pitch_mean", "pitch_std", "pitch_range", "velocity_mean", "velocity_std",
    "ioi_mean", "ioi_std", "duration_mean", "duration_std", "notes_per_second",
    "chord_share", "mean_abs_interval", *(f"pitch_class_{k}" for k in range(12)),
)


def window_statistics(notes: np.ndarray) -> np.ndarray:
    """Hand-made features of one piece, (len(STAT_NAMES),) float64, from its (n, 4) notes.

    Columns of `notes`: pitch, velocity/127, seconds since the previous onset (ioi, clipped
    at s_max), duration (clipped at d_max), in onset order (a file's windows concatenated).

    - pitch mean, standard deviation, range (max - min), in semitones;
    - velocity mean and standard deviation (velocity / 127);
    - inter-onset interval (ioi) mean and standard deviation, duration mean and standard
      deviation, in seconds;
    - notes per second: n / sum(ioi) (0 when every ioi is 0);
    - chord share: the share of iois below CHORD_GAP (notes struck with the previous one);
    - mean |pitch_i - pitch_{i-1}| between consecutive notes;
    - a 12-bin pitch-class histogram (pitch mod 12, C = 0), normalised to sum to 1.
    """
    notes = np.asarray(notes, dtype=np.float64)
    if notes.ndim != 2 or notes.shape[1] != 4 or len(notes) < 2:
        raise ValueError(f"notes must have shape (n >= 2, 4), got {notes.shape}")
    pitch, velocity = notes[:, PITCH], notes[:, VELOCITY]
    ioi, duration = notes[:, DELTA], notes[:, DURATION]
    seconds = ioi.sum()
    classes = np.bincount(np.clip(np.rint(pitch), 0, 127).astype(np.int64) % 12, minlength=12)
    return np.array([
        pitch.mean(), pitch.std(), pitch.max() - pitch.min(), velocity.mean(), velocity.std(),
        ioi.mean(), ioi.std(), duration.mean(), duration.std(),
        len(notes) / seconds if seconds > 0 else 0.0,
        float((ioi[1:] < CHORD_GAP).mean()), float(np.abs(np.diff(pitch)).mean()),
        *(classes / classes.sum()),
    ])


def file_statistics(windows: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(file ids, features): `window_statistics` of each file's windows (n, W, 4), concatenated
    in row order; `owner[i]` is the file of window i. File ids are sorted."""
    windows, owner = np.asarray(windows), np.asarray(owner)
    if windows.ndim != 3 or windows.shape[-1] != 4 or owner.shape != (len(windows),):
        raise ValueError(f"need windows (n, W, 4) and one owner per window, got {windows.shape}, {owner.shape}")
    ids = np.unique(owner)
    return ids, np.stack([window_statistics(windows[owner == i].reshape(-1, 4)) for i in ids])


def latent_means(model, windows: np.ndarray, owner: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(file ids, (files, latent) means of the VAE posterior means of each file's windows)."""
    from midilib.models.vae import encode

    owner = np.asarray(owner)
    ids, index = np.unique(owner, return_inverse=True)
    mu = encode(model, np.asarray(windows, dtype=np.float32), batch_size=batch_size)[0].numpy().astype(np.float64)
    sums = np.zeros((len(ids), mu.shape[1]))
    np.add.at(sums, index, mu)
    return ids, sums / np.bincount(index)[:, None]


# --- labels ------------------------------------------------------------------------------------


@dataclass
class Labels:
    """Which files a probe uses and as what: `keep` masks the input files, `labels` and
    `groups` are those of the kept files, `dropped` says what was left out and why."""

    keep: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)  # reason: files

    @property
    def counts(self) -> dict[str, tuple[int, int]]:
        """{label: (files, groups)}, most files first."""
        out = {c: (int((self.labels == c).sum()), len(set(self.groups[self.labels == c])))
               for c in np.unique(self.labels)}
        return dict(sorted(out.items(), key=lambda kv: (-kv[1][0], kv[0])))


def probe_labels(composers: list[str], groups: list[str], min_pieces: int = 3) -> Labels:
    """The probe's classes: composers of `min_pieces` groups or more, the rest pooled as
    OTHER (dropped if fewer than 2 groups); UNKNOWN files dropped. ValueError if fewer
    than two classes remain."""
    if min_pieces < 2:
        raise ValueError(f"--min-pieces must be >= 2 (a held-out piece needs another of its "
                         f"composer to learn from), got {min_pieces}")
    composers, groups = np.asarray(composers, dtype=object), np.asarray(groups, dtype=object)
    known = composers != UNKNOWN
    dropped = {"composer unknown": int((~known).sum())}
    folded = np.asarray(corpus.fold_composers(list(composers[known]), min_pieces, list(groups[known])),
                        dtype=object)
    labels = np.full(len(composers), UNKNOWN, dtype=object)
    labels[known] = folded
    other = labels == OTHER
    if 0 < len(set(groups[other])) < 2:
        dropped[f"{OTHER} (fewer than 2 groups)"] = int(other.sum())
        known &= ~other
    dropped = {k: v for k, v in dropped.items() if v}
    keep = known
    classes = np.unique(labels[keep])
    if len(classes) < 2:
        unknown = int((composers == UNKNOWN).sum())
        hint = (f"; {unknown} of {len(composers)} files have no known composer (prepare the corpus "
                "again, or label its files with `prepare --composers CSV`)" if unknown else "")
        raise ValueError(f"a composer probe needs two classes or more; with --min-pieces {min_pieces} "
                         f"there are {len(classes)} ({', '.join(map(str, classes)) or 'none'}){hint}")
    return Labels(keep, labels[keep].astype(str), groups[keep].astype(str), dropped)


# --- the probe ---------------------------------------------------------------------------------


def make_probe(c: float = C):
    """An unfitted pipeline: StandardScaler, then multinomial LogisticRegression(C=c).
    Fit it inside `one_thread()`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def one_thread():
    """BLAS on one thread, for the probe's fits: its matrices are small, and two OpenBLAS threads
    beside another busy process spin against it (measured: one fit on 1,648 x 128 features,
    7 classes, 288 L-BFGS iterations, took 24 s on two threads of a shared 2-core machine and
    0.33 s on one)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float = C):
    """A probe trained on every file given (e.g. all real files), to `classify` others with."""
    features, labels = _check(features, labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("fit_probe needs two classes or more")
    with one_thread():
        return make_probe(c).fit(features, labels)


def classify(probe, features: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """(predicted labels, probabilities with one column per class) of each row of `features`."""
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    probabilities = pd.DataFrame(probe.predict_proba(features), columns=[str(c) for c in probe.classes_])
    return np.asarray(probe.predict(features)).astype(str), probabilities


@dataclass
class CrossValidation:
    """Out-of-fold predictions of one feature set, and accuracy with 95% intervals (by group)."""

    predicted: np.ndarray  # (files,) the probe's out-of-fold label of each file
    majority: np.ndarray  # (files,) the majority baseline's
    accuracy: tuple[float, float, float]  # (value, low, high)
    baseline: tuple[float, float, float]
    fold: np.ndarray  # (files,) the fold that held each file out


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels).astype(str)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"need features (files, d) and one label per file, got {features.shape}, {labels.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features hold NaN or infinite values")
    return features, labels


def folds_of(labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of each file: `StratifiedGroupKFold(folds, shuffle, seed)`."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = len(np.unique(groups))
    if not 2 <= folds <= k:
        raise ValueError(f"--folds must be in [2, {k}] (the number of groups), got {folds}")
    out = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected
        warnings.simplefilter("ignore", category=UserWarning)
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            out[test] = i
    return out


def cross_validate(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0, c: float = C,
) -> CrossValidation:
    """Out-of-fold composer predictions of `features` (see the module docstring)."""
    features, labels = _check(features, labels)
    groups = np.asarray(groups).astype(str)
    fold = folds_of(labels, groups, folds, seed)
    predicted = np.empty(len(labels), dtype=object)
    majority = np.empty(len(labels), dtype=object)
    for f in range(folds):
        test, train = fold == f, fold != f
        names, counts = np.unique(labels[train], return_counts=True)
        majority[test] = names[np.argmax(counts)]  # ties: the first name
        if len(names) < 2:  # nothing to tell apart: the probe is the majority
            predicted[test] = names[0]
            continue
        with warnings.catch_warnings(), one_thread():
            warnings.simplefilter("ignore", category=UserWarning)
            predicted[test] = make_probe(c).fit(features[train], labels[train]).predict(features[test])
    predicted, majority = predicted.astype(str), majority.astype(str)
    return CrossValidation(predicted, majority, accuracy_interval(predicted == labels, groups),
                           accuracy_interval(majority == labels, groups), fold)


def accuracy_interval(correct: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float, float]:
    """(accuracy, low, high): `mean_interval` of 0/1 per unit by group (None: each unit its own),
    clipped to [0, 1]."""
    value, low, high = mean_interval(np.asarray(correct, dtype=np.float64), groups)
    return value, max(low, 0.0), min(high, 1.0)


# --- a prepared corpus and a VAE run -----------------------------------------------------------


@dataclass
class CorpusFeatures:
    """Per usable file of a prepared folder: its manifest row, composer, group and feature sets."""

    paths: list[str]
    composers: list[str]
    groups: list[str]
    features: dict[str, np.ndarray]  # name: (files, d)


def corpus_features(run: str | Path | None, data: str | Path, device: str = "cpu") -> CorpusFeatures:
    """`window_statistics` (and, given a VAE `run`, its file latents) of every usable file of
    the prepared folder `data`, from its windows of all three splits."""
    from midilib.prepare import SPLITS, load_manifest, load_windows
    from midilib.runs import data_params

    data = Path(data)
    if not (data / "manifest.csv").is_file():
        raise FileNotFoundError(f"{data / 'manifest.csv'}: not found; give a folder `python -m midilib prepare` wrote")
    manifest = load_manifest(data)
    have = data_params(data)
    names = [n for s in SPLITS for n in (s, f"{s}_file")]
    try:
        arrays = load_windows(data, names)
    except KeyError as exc:
        raise ValueError(f"{data}: no array {exc} (prepare it again)") from None
    windows = np.concatenate([arrays[s] for s in SPLITS])
    owner = np.concatenate([arrays[f"{s}_file"] for s in SPLITS])
    if len(windows) == 0:
        raise ValueError(f"{data}: no windows")
    ids, stats = file_statistics(windows, owner)
    features = {"window statistics": stats}
    if run is not None:
        from midilib.runs import load_model

        model, config = load_model(run, device)
        if config["model"] != "vae":
            raise ValueError(f"{run}: a {config['model']} run has no encoder; the probe needs a VAE run")
        if config["data_params"] != have:
            raise ValueError(f"{run} was trained on windows {config['data_params']}, {data} holds {have}")
        features["vae latents"] = latent_means(model, windows, owner)[1]
    rows = [manifest[i] for i in ids]
    return CorpusFeatures(
        [r["path"] for r in rows], [r["composer"] for r in rows],
        [corpus.group_key(r["path"]) for r in rows], features,
    )


def probe_table(
    feats: CorpusFeatures, min_pieces: int = 3, folds: int = 5, seed: int = 0, c: float = C,
) -> tuple[pd.DataFrame, Labels]:
    """One row per feature set and one for the majority baseline: accuracy, 95% interval,
    files, composers (classes) and groups, all on the same folds."""
    chosen = probe_labels(feats.composers, feats.groups, min_pieces)
    rows, baseline = [], None
    for name in ("vae latents", "window statistics"):
        if name not in feats.features:
            continue
        cv = cross_validate(feats.features[name][chosen.keep], chosen.labels, chosen.groups, folds, seed, c)
        rows.append((name, *cv.accuracy))
        baseline = cv.baseline
    rows.append(("majority", *baseline))
    table = pd.DataFrame(rows, columns=["features", "accuracy", "low", "high"])
    table["files"] = len(chosen.labels)
    table["composers"] = len(np.unique(chosen.labels))
    table["groups"] = len(np.unique(chosen.groups))
    return table, chosen


def probe_report(table: pd.DataFrame, chosen: Labels, folds: int, data: str | Path) -> str:
    """The table as text: a header naming the classes and what was left out, then one line per row."""
    classes = ", ".join(f"{c} {files} ({groups})" for c, (files, groups) in chosen.counts.items())
    lines = [f"Composer probe on {data}: {len(chosen.labels)} files in {table['groups'].iloc[0]} groups "
             f"(recordings or pieces), {table['composers'].iloc[0]} composers, {folds}-fold "
             "StratifiedGroupKFold; 95% intervals: jackknife over groups",
             f"classes, files (groups): {classes}"]
    if chosen.dropped:
        lines.append("left out: " + "; ".join(f"{why}: {n} files" for why, n in chosen.dropped.items()))
    width = max(len(f) for f in table["features"])
    lines.append(f"{'features':<{width}}  accuracy  95% interval")
    for row in table.itertuples(index=False):
        lines.append(f"{row.features:<{width}}  {row.accuracy:8.3f}  [{row.low:.3f}, {row.high:.3f}]")
    return "\n".join(lines)
