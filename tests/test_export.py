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


def _copied(runs: dict, runs_dir: Path) -> Path:
    """A fresh runs folder holding a copy of each trained run (the module's runs stay untouched)."""
    for run_dir in runs.values():
        shutil.copytree(run_dir, runs_dir / run_dir.name)
    return runs_dir


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
    assert sorted(p.name for p in (root / "many").iterdir()) == sorted(
        f"{r.name}{suffix}" for r in runs.values() for suffix in (".json", ".onnx"))  # the file and its check


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


@pytest.mark.slow
def test_export_writes_its_check_beside_the_run_and_the_report_shows_it(trained, tmp_path):
    root, runs, _ = trained
    runs_dir = _copied(runs, tmp_path / "runs")
    before = ftmed.report(runs_dir, out_dir=tmp_path / "before", predictions=False)
    assert "ONNX" not in before["markdown"].read_text()  # no export: the report is what it always was
    [path] = ftmed.export(runs_dir / runs["keras"].name)
    check = json.loads((path.parent / "export.json").read_text())
    record = json.loads((path.parent / "record.json").read_text())
    assert check["file"] == "model.onnx" and check["with_preprocessing"] is False
    assert check["onnxruntime_test_accuracy"] == record["test"]["accuracy"]
    assert 0 <= check["max_abs_logit_diff"] <= check["logit_tolerance"]
    text = ftmed.report(runs_dir, out_dir=tmp_path / "after", predictions=False)["markdown"].read_text()
    section = text.split("## ONNX exports", 1)[1]
    header, _, row = [line for line in section.splitlines() if line.startswith("|")]
    assert "keras ONNX acc %" in header and "lightning ONNX max /Δlogits/" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "baseline" and cells[1:3] == ["", ""]  # lightning: not exported
    assert cells[3] == f"{100 * record['test']['accuracy']:.2f}" and float(cells[4]) == float(f"{check['max_abs_logit_diff']:.1e}")


@pytest.mark.slow
def test_an_export_that_computes_something_else_is_refused_and_writes_nothing(trained, tmp_path):
    _, runs, _ = trained
    run_dir = tmp_path / "tampered"
    shutil.copytree(runs["lightning"], run_dir)
    logits = np.load(run_dir / "test_logits.npy")
    np.save(run_dir / "test_logits.npy", logits + np.float32(0.01))  # not what the weights compute
    with pytest.raises(ftmed.RunError, match="differ from the run's test logits"):
        ftmed.export(run_dir)
    assert not (run_dir / "model.onnx").exists() and not (run_dir / "export.json").exists()


@pytest.mark.slow
def test_export_finished_names_each_failed_run_and_exports_the_rest(trained, tmp_path):
    from ftmed.onnx_export import export_failures, export_finished

    _, runs, _ = trained
    runs_dir = _copied(runs, tmp_path / "runs")
    (runs_dir / runs["keras"].name / "model.keras").unlink()
    result = export_finished(runs_dir)
    assert result["written"] == [runs_dir / runs["lightning"].name / "model.onnx"]
    assert len(result["failed"]) == 1 and result["failed"][0].startswith(f"{runs['keras'].name}: ")
    assert "has no weights" in result["failed"][0]

    class Done:
        exports = result
    assert export_failures(Done()) == [f"export failed: {result['failed'][0]}"]


@pytest.mark.slow
def test_compare_export_onnx_exports_the_grid_and_fails_per_run(tiny_synth_dir, tmp_path):
    args = ["compare", "--variants", "baseline", "--seeds", "0", "--epochs", "1", "--data-dir", str(tiny_synth_dir),
            "--runs-dir", str(tmp_path / "runs"), "--jobs", "1", "--export", "onnx"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dirs = [p.parent for p in (tmp_path / "runs").glob("*/record.json")]
    assert len(run_dirs) == 2 and all((p / "model.onnx").is_file() and (p / "export.json").is_file() for p in run_dirs)
    assert "## ONNX exports" in (tmp_path / "runs" / "comparison.md").read_text()

    keras_run = next(p for p in run_dirs if p.name.startswith("keras"))
    (keras_run / "model.keras").unlink()  # the finished run is kept (resumable), its export now fails
    result = CliRunner().invoke(app, args)
    failures = [line for line in result.output.splitlines() if line.startswith("export failed:")]
    assert result.exit_code == 1 and len(failures) == 1 and keras_run.name in failures[0], result.output

    bad = CliRunner().invoke(app, [*args[:-1], "tflite"])
    assert bad.exit_code != 0 and "unknown export format 'tflite'" in bad.output


def test_the_inference_table_shows_every_path_against_the_baseline():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import inference
        import tables
    finally:
        sys.path.pop(0)
    text = tables.inference_table()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "images/s" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == list(inference.PATHS)
    baseline = next(row for row in rows if row.startswith(f"| {inference.BASELINE} |"))
    assert baseline.count("(1×)") == len(inference.BATCHES)


def test_a_missing_exporter_package_is_one_line(trained, monkeypatch):
    from ftmed import onnx_export

    _, runs, _ = trained
    monkeypatch.setattr(onnx_export, "_installed", lambda module: module != "onnxruntime")
    _fails([runs["lightning"]], "ftmed export needs onnxruntime: pip install 'ftmed[export]'")


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_multi_label_run_exports_its_sigmoid_head(tmp_path, framework):
    """ChestMNIST: the baseline's softmax is one sigmoid per finding in training, and so in the graph;
    the check on the test split counts label bits (medmnist's multi-label accuracy)."""
    from ftmed_core.metrics import multilabel_accuracy

    write_synthetic(tmp_path / "data", "chestmnist", 28, scale=0.005, seed=2)
    key = ftmed.train("baseline", framework=framework, dataset="chestmnist", epochs=1,
                      data_dir=tmp_path / "data", runs_dir=tmp_path / "runs").run_key
    run_dir = tmp_path / "runs" / key
    [path] = ftmed.export(run_dir, with_preprocessing=True)
    raw = np.load(tmp_path / "data" / "chestmnist.npz")["test_images"]
    logits, probabilities = _session(path).run(None, {"input": raw})
    np.testing.assert_allclose(probabilities, activate(logits, "sigmoid"), atol=1e-6)
    labels = np.load(run_dir / "test_labels.npy")
    assert labels.shape[1:] == (14,)
    record = json.loads((run_dir / "record.json").read_text())
    assert multilabel_accuracy(probabilities, labels) == record["test"]["accuracy"]
    checked = json.loads((run_dir / "export.json").read_text())
    assert checked["onnxruntime_test_accuracy"] == record["test"]["accuracy"]
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["output_activation"] == "sigmoid"
