"""`ftmed export`: ONNX Runtime on the exported file computes what the run evaluated, for Lightning and
Keras (TensorFlow backend); bad input gives one line and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ftmed
from cli.main import app
from ftmed.onnx_export import image_shape, logit_tolerance
from ftmed_core.data import preprocess_images
from ftmed_core.losses import activate
from ftmed_core.metrics import accuracy
from ftmed_core.synth import write_synthetic
from typer.testing import CliRunner

FRAMEWORKS = ("lightning", "keras")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch run per framework on a 1% synthetic PathMNIST file (28 x 28 x 3)."""
    root = tmp_path_factory.mktemp("export")
    write_synthetic(root / "data", "pathmnist", 28, scale=0.01, seed=1)
    runs = {fw: Path(ftmed.train("baseline", framework=fw, epochs=1, data_dir=root / "data",
                                 runs_dir=root / "runs").run_key) for fw in FRAMEWORKS}
    raw = np.load(root / "data" / "pathmnist.npz")["test_images"]
    return root, {fw: root / "runs" / key for fw, key in runs.items()}, raw


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("with_preprocessing", [False, True])
def test_onnx_runtime_matches_the_runs_test_outputs(trained, framework, with_preprocessing):
    root, runs, raw = trained
    run_dir = runs[framework]
    out = root / f"out-{framework}-{with_preprocessing}"
    [path] = ftmed.export(run_dir, out=out, with_preprocessing=with_preprocessing)
    assert path == out / f"{run_dir.name}.onnx"
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    assert session.get_inputs()[0].shape[0] == "batch"
    x = raw if with_preprocessing else preprocess_images(raw)
    logits, probabilities = session.run(None, {"input": x})
    reference = np.load(run_dir / "test_logits.npy")
    record = json.loads((run_dir / "record.json").read_text())
    assert np.max(np.abs(logits - reference)) <= logit_tolerance(raw[0].size, reference)
    np.testing.assert_allclose(probabilities, activate(logits, "softmax"), atol=1e-6)
    labels = np.load(run_dir / "test_labels.npy")
    assert accuracy(probabilities, labels) == record["test"]["accuracy"]
    assert np.array_equal(np.argmax(logits, 1), np.argmax(reference, 1))
    # dynamic batch: one row and a few rows give the same numbers as the whole split
    one = session.run(["logits"], {"input": x[:1]})[0]
    np.testing.assert_allclose(one, logits[:1], atol=logit_tolerance(raw[0].size, reference))
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["framework"] == framework and metadata["ftmed_version"] == ftmed.__version__
    assert metadata["config_hash"] in run_dir.name and metadata["data_md5"] == record["data"]["md5"]
    assert float(metadata["test_accuracy"]) == record["test"]["accuracy"]
    assert metadata["preprocessing"] != "none" if with_preprocessing else metadata["preprocessing"] == "none"


@pytest.mark.slow
def test_the_tolerance_catches_a_missing_division_by_255(trained):
    """The declared tolerance is tight enough to fail on a graph that skips /255 (raw pixels as floats)."""
    root, runs, raw = trained
    [path] = ftmed.export(runs["lightning"], out=root / "mutant")
    reference = np.load(runs["lightning"] / "test_logits.npy")
    logits = _session(path).run(["logits"], {"input": raw.reshape(len(raw), -1).astype(np.float32)})[0]
    assert np.max(np.abs(logits - reference)) > logit_tolerance(raw[0].size, reference)


@pytest.mark.slow
def test_several_runs_into_one_folder_by_cli(trained):
    root, runs, _ = trained
    result = CliRunner().invoke(app, ["export", *map(str, runs.values()), "--out", str(root / "many")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "many").iterdir()) == sorted(f"{r.name}.onnx" for r in runs.values())


def test_image_shape_grayscale_and_colour():
    assert image_shape({"size": 28, "input_dim": 784}) == (28, 28)
    assert image_shape({"size": 64, "input_dim": 64 * 64 * 3}) == (64, 64, 3)


def _fails(args, message):
    result = CliRunner().invoke(app, ["export", *map(str, args)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path):
    root, runs, _ = trained
    _fails([runs["lightning"], "--format", "tflite"], "unknown export format 'tflite'")
    _fails([tmp_path / "missing"], "is not a run directory")

    no_weights = tmp_path / "no-weights"
    shutil.copytree(runs["keras"], no_weights)
    (no_weights / "model.keras").unlink()
    _fails([no_weights], "has no weights")

    failed = tmp_path / "failed"
    shutil.copytree(runs["lightning"], failed)
    payload = json.loads((failed / "record.json").read_text())
    payload.update(status="failed", error="RuntimeError: loss is NaN")
    (failed / "record.json").write_text(json.dumps(payload))
    _fails([failed], "failed")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _fails([runs["lightning"], "--out", blocker / "sub"], "cannot write to")

    # a failing run among good ones: checked before anything is exported
    _fails([runs["lightning"], failed, "--out", tmp_path / "mixed"], "failed")
    assert not (tmp_path / "mixed").exists() or not any((tmp_path / "mixed").iterdir())
    for run_dir in (no_weights, failed):
        assert not (run_dir / "model.onnx").exists()
