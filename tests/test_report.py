"""The comparison report, from records alone: table statistics, every output file, medmnist re-scoring."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from ftmed_core.records import list_records
from ftmed.reporting.render import render
from ftmed.reporting.rows import build_rows
from ftmed.reporting.tables import to_markdown
from ftmed_core.runner import FitResult, run_experiment
from ftmed_core.variants import VARIANTS


def _fit_with_accuracy(target: float):
    """A deterministic stand-in for a framework: hits `target` test accuracy; for report tests only."""

    def fit(config, runtime, data, weights, run_dir, on_epoch=None):
        rng = np.random.default_rng(config.seed)
        n = len(data.y_test)
        correct = rng.random(n) < target
        predicted = np.where(correct, data.y_test, (data.y_test + 1) % data.n_classes)
        logits = rng.normal(0, 0.1, (n, data.n_classes)).astype(np.float32)
        logits[np.arange(n), predicted] += 3.0
        hist = {"train_loss": [1.0, 0.8], "train_acc": [0.5, 0.6], "val_loss": [1.1, 0.9],
                "val_acc": [0.45, 0.55], "epoch_seconds": [0.2, 0.2]}
        return FitResult(hist, logits, 0.4, {})

    return fit


@pytest.fixture
def populated(tmp_path, tiny_synth_dir):
    runs = tmp_path / "runs"
    for name, target in (("baseline", 0.6), ("wider-deeper", 0.3)):
        for seed in (0, 1, 2):
            config = replace(VARIANTS[name].config, epochs=2, seed=seed, data_dir=str(tiny_synth_dir))
            for framework in ("lightning", "keras"):
                run_experiment(framework, _fit_with_accuracy(target), config, runs_dir=runs)
    return runs


def test_rows_statistics(populated):
    rows = build_rows(list_records(populated), margin=1.0)
    assert [r.variant for r in rows] == ["baseline", "wider-deeper"]
    base, wide = rows
    assert base.cells["lightning"].n_finished == 3 and base.cells["keras"].n_finished == 3
    assert base.study_accuracy == 60.54 and wide.study_accuracy == 57.17
    # The stand-in gives both frameworks the same result per seed: paired by seed, the difference is 0 in
    # every seed, which leaves no spread to test equivalence against: stated, not called equivalent.
    assert base.difference["method"] == "paired" and base.difference["diff"] == pytest.approx(0.0)
    assert base.difference["verdict"] == "identical in all 3 seeds" and not base.difference["equivalent"]
    assert base.cells["keras"].accuracy != [base.cells["keras"].accuracy[0]] * 3
    # Without common seeds the comparison falls back to Welch, which cannot see through that spread.
    unpaired = [r for r in list_records(populated)
                if r.config["name"] == "baseline" and (r.framework, r.config["seed"]) not in
                {("keras", 0), ("lightning", 1), ("lightning", 2)}]
    row = build_rows(unpaired, margin=1.0)[0]
    assert row.difference["method"] == "welch" and not row.difference["equivalent"]
    assert wide.vs_baseline["verdict"] == "worse" and wide.vs_baseline["p_value"] < 0.05
    assert wide.changes.startswith("hidden=1024-512-512-256-128")


def test_render_writes_every_output_and_marks_synthetic(populated):
    outputs = render(populated)
    md = (populated / "comparison.md").read_text()
    assert "SYNTHETIC" in md.splitlines()[0] and "| baseline |" in md
    rows = list(csv.DictReader(open(populated / "comparison.csv")))
    assert [r["variant"] for r in rows] == ["baseline", "wider-deeper"]
    payload = json.loads((populated / "comparison.json").read_text())
    assert payload["synthetic"] and len(payload["runs"]) == 12
    names = sorted(p.name for p in outputs["plots"])
    assert names == ["accuracy_bars.png", "confusion_keras.png", "confusion_lightning.png",
                     "curves_baseline.png", "curves_wider-deeper.png"]
    for path in outputs["plots"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(outputs["predictions"]) == 12


@pytest.mark.slow
def test_predictions_rescored_by_medmnist_evaluate(populated, tiny_synth_dir, tmp_path):
    """`python -m medmnist evaluate FILE` recomputes the recorded AUC and accuracy independently."""
    outputs = render(populated)
    home = tmp_path / "home"
    (home / ".medmnist").mkdir(parents=True)
    shutil.copy(tiny_synth_dir / "pathmnist.npz", home / ".medmnist" / "pathmnist.npz")
    path = outputs["predictions"][0]
    result = subprocess.run([sys.executable, "-m", "medmnist", "evaluate", str(path)], capture_output=True,
                            text=True, env={**os.environ, "HOME": str(home)}, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    line = [l for l in result.stdout.splitlines() if "Metrics(" in l][-1]
    auc_value = float(line.split("AUC=")[1].split(",")[0])
    acc_value = float(line.split("ACC=")[1].rstrip(")"))
    key = path.name.split("@")[1][:-4]
    record = json.loads((populated / key / "record.json").read_text())
    assert auc_value == pytest.approx(record["test"]["auc"], abs=1e-9)
    assert acc_value == pytest.approx(record["test"]["accuracy"], abs=1e-12)


def test_failed_runs_are_reported(populated, tiny_synth_dir):
    def broken(*args, **kwargs):
        raise MemoryError("out of memory (simulated)")

    config = replace(VARIANTS["baseline"].config, epochs=2, seed=7, data_dir=str(tiny_synth_dir))
    run_experiment("keras", broken, config, runs_dir=populated)
    records = list_records(populated)
    md = to_markdown(build_rows(records), records)
    assert "1 failed" in md and "seed 7: MemoryError: out of memory (simulated)" in md


def test_each_keras_backend_is_a_column_compared_with_lightning(tmp_path, tiny_synth_dir):
    """keras, keras[jax], keras[torch]: a column each, and a Lightning difference per Keras column (the
    stand-in gives keras[jax] 20 points less, so only its difference is non-zero; the others are identical)."""
    from ftmed.reporting.tables import table_cells, table_columns, to_csv, to_json

    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        config = replace(VARIANTS["baseline"].config, epochs=2, seed=seed, data_dir=str(tiny_synth_dir))
        for framework, target in (("lightning", 0.6), ("keras", 0.6), ("keras[jax]", 0.4), ("keras[torch]", 0.6)):
            run_experiment(framework, _fit_with_accuracy(target), config, runs_dir=runs)
    records = list_records(runs)
    assert sorted(r.run_key.split("-" + r.experiment.config_hash())[0] for r in records if r.config["seed"] == 0) == [
        "keras", "keras-jax", "keras-torch", "lightning"]
    (row,) = build_rows(records, margin=1.0)
    assert set(row.differences) == {"keras", "keras[jax]", "keras[torch]"} and row.difference == row.differences["keras"]
    assert row.differences["keras"]["diff"] == pytest.approx(0.0)
    assert row.differences["keras[torch]"]["verdict"] == "identical in all 3 seeds"
    assert row.differences["keras[jax]"]["diff"] > 5 and not row.differences["keras[jax]"]["equivalent"]
    frameworks = ["lightning", "keras", "keras[jax]", "keras[torch]"]
    columns = table_columns(frameworks)
    cells = dict(zip(columns, table_cells(row, frameworks)))
    assert cells["Δacc L−K [95% CI]"].startswith("+0.00") and cells["equivalence L−K[jax]"] != cells["equivalence"]
    assert cells["Δacc L−K[jax] [95% CI]"].startswith("+") and "keras[torch] acc %" in cells
    assert "| keras[jax] acc % |" in to_markdown([row], records)
    header = to_csv([row]).splitlines()[0].split(",")
    assert {"diff", "keras[jax]_diff", "keras[torch]_tost_p", "keras[jax]_n"} <= set(header)
    assert set(__import__("json").loads(to_json([row], records))["rows"][0]["differences"]) == set(frameworks[1:])
    # The test loss is the formula each framework computes (here softmax: the same for all).
    assert {r.environment["loss_formula"] for r in records} == {"keras"} | {"probability"}
