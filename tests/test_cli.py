"""CLI error paths and data commands through Typer's CliRunner: one line, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import tiny_arrays, write_npz

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=2):
    assert result.exit_code == code, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "compare", "report", "variants", "data"):
        assert command in result.output


def test_variants_lists_the_registry():
    result = invoke("variants", "study")
    assert result.exit_code == 0 and "sgd-momentum" in result.output and "60.54" in result.output


def test_data_synth_info_and_no_overwrite(tmp_path):
    result = invoke("data", "synth", "--out", tmp_path, "--scale", "0.005")
    assert result.exit_code == 0 and "SYNTHETIC" in result.output
    before = (tmp_path / "pathmnist.npz").read_bytes()
    assert_one_line_error(invoke("data", "synth", "--out", tmp_path, "--scale", "0.005"), "already exists")
    assert (tmp_path / "pathmnist.npz").read_bytes() == before
    result = invoke("data", "info", "--data-dir", tmp_path)
    assert result.exit_code == 0 and "SYNTHETIC file" in result.output


def test_data_download_offline_is_one_clear_line(tmp_path, monkeypatch):
    import ftmed_core.data as data_mod
    from ftmed_core.medmnist_info import dataset_info

    info = dataset_info("pathmnist")
    offline = type(info)(**{**info.__dict__, "urls": {28: "http://127.0.0.1:9/pathmnist.npz"}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: offline)
    result = invoke("data", "download", "--data-dir", tmp_path)
    assert_one_line_error(result, "could not download pathmnist.npz", "a8b06965200029087d5bd730944a56c1",
                          "ftmed data synth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "-f", "pytorch"], ["'pytorch' is not one of"]),
        (["train", "-f", "lightning", "--optimizer", "adamz"], ["'adamz' is not one of"]),
        (["train", "-f", "lightning", "--lr", "-0.1"], ["learning rate must be a positive, finite number"]),
        (["train", "-f", "lightning", "--lr", "0"], ["learning rate must be a positive, finite number"]),
        (["train", "-f", "keras", "--hidden", ""], ["at least one layer"]),
        (["train", "-f", "keras", "--hidden", "512,abc"], ["comma-separated integers"]),
        (["train", "-f", "keras", "--variant", "nope"], ["unknown variant 'nope'", "baseline"]),
        (["train", "-f", "keras", "--epochs", "0"], ["epochs must be an integer from 1 to 100,000"]),
        (["train", "-f", "keras", "--dataset", "organmnist3d"], ["3D dataset", "chestmnist"]),
        (["train", "-f", "keras", "--size", "32"], ["image size", "28, 64, 128, 224"]),
        (["train", "-f", "keras", "--output-activation", "relu"], ["'relu' is not one of"]),
        (["compare", "--variants", "baseline,bogus"], ["unknown variant 'bogus'"]),
        (["compare", "--frameworks", "jax"], ["unknown framework", "lightning, keras"]),
        (["compare", "--seeds", "a,b"], ["seeds must be comma-separated integers"]),
        (["compare", "--jobs", "0"], ["--jobs must be >= 1"]),
        (["report", "/nonexistent/runs"], ["does not exist"]),
        (["variants", "--bogus"], ["No such option: --bogus"]),
    ],
)
def test_bad_options_one_line_exit_2(args, fragments, tmp_path):
    result = invoke(*args, *(["--runs-dir", tmp_path / "runs"] if args[0] in ("train", "compare") else []))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_invalid_data_file_stops_before_anything_is_written(tmp_path, command):
    arrays = tiny_arrays()
    arrays["train_labels"] = arrays["train_labels"] + 20
    write_npz(tmp_path / "data" / "pathmnist.npz", **arrays)
    extra = ["-f", "lightning"] if command == "train" else []
    result = invoke(command, *extra, "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "train_labels range over", "classes 0..8")
    assert not (tmp_path / "runs").exists()


def test_missing_data_file_offline_points_at_the_offline_path(tmp_path, monkeypatch):
    import ftmed_core.data as data_mod
    from ftmed_core.medmnist_info import dataset_info

    info = dataset_info("pathmnist")
    offline = type(info)(**{**info.__dict__, "urls": {28: "http://127.0.0.1:9/pathmnist.npz"}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: offline)
    result = invoke("compare", "--data-dir", tmp_path / "empty", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "could not download", "place it at", "ftmed data synth")
    assert not (tmp_path / "runs").exists()


def test_unreadable_runs_dir(tmp_path, tiny_synth_dir):
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a directory")
    result = invoke("compare", "--data-dir", tiny_synth_dir, "--runs-dir", blocker)
    assert_one_line_error(result, "is a file, not a folder")
    assert blocker.read_text() == "a file, not a directory"
    assert_one_line_error(invoke("report", blocker), "does not exist or is not a directory")


def test_report_on_empty_dir(tmp_path):
    assert_one_line_error(invoke("report", tmp_path), "holds no run records")


def test_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, tiny_synth_dir, monkeypatch):
    """A full disk while writing the report: one line, exit 1, the finished record and old report intact."""
    import errno

    import ftmed_core.records as records_mod
    from ftmed_core.config import ExperimentConfig
    from ftmed_core.runner import FitResult, run_experiment

    def fit(config, runtime, data, weights, run_dir, on_epoch=None):
        logits = np.eye(data.n_classes, dtype=np.float32)[data.y_test]
        hist = {k: [0.5] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")}
        return FitResult(hist, logits, 0.1, {})

    runs = tmp_path / "runs"
    record = run_experiment("keras", fit, ExperimentConfig(data_dir=str(tiny_synth_dir), epochs=1), runs_dir=runs)
    assert invoke("report", runs).exit_code == 0
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}

    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(records_mod, "atomic_write_bytes", full)
    result = invoke("report", runs)
    assert_one_line_error(result, "disk full while writing", "comparison.md", code=1)
    after = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert after == before and (runs / record.run_key / "record.json") in after
