"""The medmnist prediction files: each finished run's test probabilities, one CSV per run."""

from __future__ import annotations

import io
from pathlib import Path

from ftmed_core.records import RunRecord, atomic_write_text, load_probabilities


def write_predictions(records: list[RunRecord], runs_dir: Path, out_dir: Path) -> list[Path]:
    """Test probabilities in medmnist's standard evaluation file naming, so that
    `python -m medmnist evaluate FILE` re-scores them independently (against the data file at its root)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in records:
        if not r.finished:
            continue
        probabilities = load_probabilities(runs_dir / r.run_key)
        size = r.config["size"]
        flag = r.config["dataset"] + ("" if size == 28 else f"_{size}")
        auc = r.test.get("auc")  # None where the test split lacks a class (a tiny file): named "nan"
        name = f"{flag}_test_[AUC]{float('nan') if auc is None else auc:.3f}_[ACC]{r.test['accuracy']:.3f}@{r.run_key}.csv"
        buffer = io.StringIO()
        for i, row in enumerate(probabilities):
            buffer.write(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n")
        path = out_dir / name
        atomic_write_text(path, buffer.getvalue())
        written.append(path)
    return written
