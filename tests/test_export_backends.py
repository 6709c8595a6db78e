"""`ftmed export` of Keras runs on the other backends: keras[torch] exports (trained in a child process:
this test process holds Keras on TensorFlow) and ONNX Runtime computes what the run evaluated; keras[jax]
exports through jax2onnx, and without it is refused in one line before anything is exported."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import ftmed
from cli.main import app
from ftmed.onnx_export import logit_tolerance
from ftmed_core.data import preprocess_images
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, tiny_synth_dir):
    """One finished 1-epoch keras[torch] run, trained by `ftmed train` in a child process."""
    runs = tmp_path_factory.mktemp("keras-torch-runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "train", "-f", "keras[torch]", "--epochs", "1",
                           "--data-dir", str(tiny_synth_dir), "--runs-dir", str(runs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    [record] = list(runs.glob("*/record.json"))
    return record.parent


@pytest.mark.slow
@pytest.mark.parametrize("with_preprocessing", [False, True])
def test_keras_torch_exports_what_the_run_evaluated(torch_run, tiny_synth_dir, tmp_path, with_preprocessing):
    [path] = ftmed.export(torch_run, out=tmp_path, with_preprocessing=with_preprocessing)
    check = json.loads((tmp_path / f"{torch_run.name}.json").read_text())
    record = json.loads((torch_run / "record.json").read_text())
    assert record["framework"] == "keras[torch]"
    raw = np.load(tiny_synth_dir / "pathmnist.npz")["test_images"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": raw if with_preprocessing else preprocess_images(raw)})[0]
    reference = np.load(torch_run / "test_logits.npy")
    assert np.max(np.abs(logits - reference)) <= logit_tolerance(raw[0].size, reference)
    assert check["onnxruntime_test_accuracy"] == record["test"]["accuracy"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax2onnx") is not None, reason="jax2onnx is installed: jax exports")
def test_keras_jax_without_jax2onnx_is_one_line_and_writes_nothing(torch_run, tmp_path):
    run_dir = tmp_path / "keras-jax-run"
    shutil.copytree(torch_run, run_dir)
    payload = json.loads((run_dir / "record.json").read_text())
    payload["framework"] = "keras[jax]"  # a keras[jax] run's files are the same: model.keras + arrays
    (run_dir / "record.json").write_text(json.dumps(payload))
    result = CliRunner().invoke(app, ["export", str(run_dir)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert "keras[jax]" in lines[0] and "jax2onnx, which is not installed" in lines[0]
    assert not (run_dir / "model.onnx").exists() and not (run_dir / "export.json").exists()
