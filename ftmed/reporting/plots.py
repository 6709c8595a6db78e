"""Plots for reports, drawn from run records only.

matplotlib is imported inside the functions, so importing ftmed -- and `ftmed --help` -- never pays for it.
Figures are `matplotlib.figure.Figure` objects made without pyplot: no backend is switched (a notebook's
inline plotting is left alone), nothing global is kept open, and the `*_figure` functions hand the same
figures to `ftmed.Comparison.figures()`.

- curves_<variant>.png: train/val accuracy and loss per epoch, both frameworks overlaid, mean over seeds
  with a min-max band;
- accuracy_bars.png: test accuracy per variant and framework, mean with ±std error bars, the study's
  single-run figures as markers;
- confusion_<framework>.png: the baseline's test confusion matrix per framework (summed over seeds,
  row-normalised).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ftmed_core.metrics import confusion_matrix
from ftmed_core.records import RunRecord, load_labels, load_probabilities

COLORS = {"lightning": "#792ee5", "keras": "#d00000", "keras[jax]": "#1a7f37", "keras[torch]": "#ee7600"}


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig, path: Path) -> Path:
    from ftmed_core.records import atomic_write_bytes
    import io

    buffer = io.BytesIO()
    # No "Software" stamp: the bytes depend on the drawing only, so a committed plot can be checked by
    # re-rendering it (matplotlib writes no date into PNGs).
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def curves(records: list[RunRecord], variant: str, out_dir: Path, subtitle: str = "") -> Path | None:
    fig = curves_figure(records, variant, subtitle)
    return None if fig is None else _save(fig, out_dir / f"curves_{_safe(variant)}.png")


def curves_figure(records: list[RunRecord], variant: str, subtitle: str = ""):
    finished = [r for r in records if r.finished and r.config["name"] == variant]
    if not finished:
        return None
    fig = _figure((11, 4))
    axes = fig.subplots(1, 2)
    for framework in sorted({r.framework for r in finished}):
        runs = [r for r in finished if r.framework == framework]
        n_epochs = min(len(r.history["train_loss"]) for r in runs)
        epochs = np.arange(1, n_epochs + 1)
        for ax, metric in zip(axes, ("acc", "loss")):
            for split, style in (("train", "--"), ("val", "-")):
                values = np.array([r.history[f"{split}_{metric}"][:n_epochs] for r in runs], dtype=float)
                if metric == "acc":
                    values = values * 100
                mean = values.mean(axis=0)
                ax.plot(epochs, mean, style, color=COLORS.get(framework), marker="o", markersize=3,
                        label=f"{framework} {split} (n={len(runs)})")
                if len(runs) > 1:
                    ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=COLORS.get(framework),
                                    alpha=0.12)
    axes[0].set_ylabel("accuracy %")
    axes[1].set_ylabel("loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{variant}: training curves, mean over seeds (band: min-max){subtitle}", fontsize=10)
    return fig


def accuracy_bars(rows, out_dir: Path, subtitle: str = "") -> Path | None:
    """`rows` are `ftmed.reporting.rows.Row`s."""
    fig = accuracy_bars_figure(rows, subtitle)
    return None if fig is None else _save(fig, out_dir / "accuracy_bars.png")


def accuracy_bars_figure(rows, subtitle: str = ""):
    from ftmed_core.stats import summarize

    if not rows:
        return None
    frameworks = sorted({fw for row in rows for fw in row.cells})
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(frameworks))
    fig = _figure((max(6, 1.6 * len(rows)), 4.2))
    ax = fig.subplots()
    for i, fw in enumerate(frameworks):
        stats = [summarize(row.cells[fw].accuracy) if fw in row.cells else None for row in rows]
        means = [s.mean if s and s.n else np.nan for s in stats]
        stds = [s.std if s and s.n else 0.0 for s in stats]
        ax.bar(x + (i - (len(frameworks) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               color=COLORS.get(fw), alpha=0.8, label=f"{fw} (mean ± std over seeds)")
    study = [row.study_accuracy if row.study_accuracy is not None else np.nan for row in rows]
    if not np.all(np.isnan(study)):
        ax.scatter(x, study, marker="D", color="black", zorder=3, label="study (single Keras run, PathMNIST)")
    ax.set_xticks(x, [row.variant for row in rows], rotation=20, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Test accuracy per variant and framework{subtitle}", fontsize=10)
    return fig


def confusion(records: list[RunRecord], runs_dir: Path, framework: str, variant: str, out_dir: Path,
              subtitle: str = "") -> Path | None:
    fig = confusion_figure(records, runs_dir, framework, variant, subtitle)
    return None if fig is None else _save(fig, out_dir / f"confusion_{_safe(framework)}.png")


def confusion_figure(records: list[RunRecord], runs_dir: Path, framework: str, variant: str, subtitle: str = ""):
    runs = [r for r in records if r.finished and r.framework == framework and r.config["name"] == variant]
    if not runs:
        return None
    if load_labels(runs_dir / runs[0].run_key).ndim == 2:
        return None  # multi-label (label bits): no single-label confusion matrix to draw
    class_names = runs[0].data.get("class_names") or [str(i) for i in range(runs[0].data["n_classes"])]
    n_classes = len(class_names)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for r in runs:
        predicted = np.argmax(load_probabilities(runs_dir / r.run_key), axis=1)
        matrix += confusion_matrix(predicted, load_labels(runs_dir / r.run_key), n_classes)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = _figure((6.5, 5.5))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(n_classes):
        for j in range(n_classes):
            ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black")
    short = [name[:14] for name in class_names]
    ax.set_xticks(range(n_classes), short, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n_classes), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(f"{variant} / {framework}: test confusion (row-normalised, {len(runs)} seed(s)){subtitle}",
                 fontsize=9)
    return fig
