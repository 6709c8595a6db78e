"""`ftmed compare` end to end on a tiny generated file: outputs, interruption, resumption, failures."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ftmed_core.records import list_records

pytestmark = pytest.mark.slow
GRID = ["--variants", "baseline,sgd-momentum", "--seeds", "0,1", "--epochs", "1"]


def finished_records(runs: Path) -> dict:
    return {r.run_key: r for r in list_records(runs) if r.finished}


def test_compare_interrupted_resumes_without_retraining_and_writes_every_output(tiny_synth_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", *GRID, "--data-dir", str(tiny_synth_dir), "--runs-dir", str(runs), "--jobs", "1"]
    # 1. Start the study and press Ctrl-C once the first runs have finished.
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(finished_records(runs) if runs.is_dir() else {}) < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr.splitlines()[-1] and "Traceback" not in stderr
    before = finished_records(runs)
    assert 2 <= len(before) < 8
    assert not (runs / "comparison.md").exists()

    # 2. Rerun: finished runs are kept as they are, the rest is trained, the report written.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"({len(before)} already finished)" in result.output
    after = finished_records(runs)
    assert len(after) == 8
    for key, record in before.items():
        assert after[key].started_at == record.started_at and after[key].finished_at == record.finished_at

    # 3. Every output exists and parses.
    md = (runs / "comparison.md").read_text()
    assert md.startswith("# ftmed comparison on SYNTHETIC") and "| sgd-momentum |" in md
    rows = list(csv.DictReader(open(runs / "comparison.csv")))
    assert [r["variant"] for r in rows] == ["baseline", "sgd-momentum"]
    assert all(r["lightning_n"] == "2" and r["keras_n"] == "2" for r in rows)
    payload = json.loads((runs / "comparison.json").read_text())
    assert payload["synthetic"] and len(payload["runs"]) == 8
    plots = sorted(p.name for p in (runs / "plots").iterdir())
    assert plots == ["accuracy_bars.png", "confusion_keras.png", "confusion_lightning.png",
                     "curves_baseline.png", "curves_sgd-momentum.png"]
    assert all((runs / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    predictions = list((runs / "predictions").glob("pathmnist_test_[[]AUC[]]*@*.csv"))
    assert len(predictions) == 8

    # 4. A third run trains nothing and `ftmed report` re-renders from the records alone.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "(8 already finished)" in result.output
    assert finished_records(runs).keys() == after.keys()
    (runs / "comparison.md").unlink()
    result = CliRunner().invoke(app, ["report", str(runs)])
    assert result.exit_code == 0 and (runs / "comparison.md").read_text() == md


def test_failed_runs_are_recorded_and_reported(tiny_synth_dir, tmp_path):
    """A step size that makes the loss overflow fails every run during training (a non-finite loss);
    each failure is recorded, the study goes on."""
    runs = tmp_path / "runs"
    variants = tmp_path / "explode.toml"
    variants.write_text('[[variant]]\nname = "explode"\nlearning_rate = 1e30\n')
    result = CliRunner().invoke(app, ["compare", "--variants-file", str(variants), "--variants", "file",
                                      "--frameworks", "lightning", "--seeds", "0,1", "--epochs", "1",
                                      "--data-dir", str(tiny_synth_dir), "--runs-dir", str(runs)])
    assert result.exit_code == 1, result.output
    records = list_records(runs)
    assert len(records) == 2 and all(r.status == "failed" and r.error for r in records)
    md = (runs / "comparison.md").read_text()
    assert "Failed runs:" in md and "2 failed" in md


def test_a_worker_that_dies_is_recorded_as_failed_with_its_log(tiny_synth_dir, tmp_path):
    """A worker process that exits with an error before writing a record (here: its data file vanished)
    gets a failed record naming the error and its log; the loop goes on."""
    from dataclasses import replace

    from ftmed.executors.local import run_all
    from ftmed.grid import Job
    from ftmed_core.config import RuntimeConfig
    from ftmed_core.records import read_record, run_key
    from ftmed_core.variants import VARIANTS

    config = replace(VARIANTS["baseline"].config, epochs=1, data_dir=str(tmp_path / "gone"))
    job = Job("lightning", config, run_key("lightning", config, "0" * 32))
    runs = tmp_path / "runs"
    runs.mkdir()
    runtime = RuntimeConfig(threads=1, progress=False)
    run_all([job], runtime, {"md5": "0" * 32, "synthetic": {"generator": "test"}}, runs, jobs=1)
    record = read_record(runs / job.run_key)
    assert record.status == "failed"
    assert "worker process died" in record.error and "DataError" in record.error
    assert (runs / "logs" / f"{job.run_key}.log").read_text()
