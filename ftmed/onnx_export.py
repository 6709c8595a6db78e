"""`ftmed.export`: finished runs as ONNX models that compute what the run evaluated.

Each run is exported in a child process of its own (`python -m ftmed.onnx_export`), with the framework the run
was trained in -- Lightning through torch's exporter (`lightning_ft.export`), a Keras label through Keras 3's
own exporter on that label's backend (`keras_ref.export`) -- so torch and TensorFlow never share a process
and the parent imports no framework. The parent then gives every file the same interface, whatever the
exporter named things:

  input          float32 (batch, input_dim): pixels / 255, flattened -- the study's model input; or, with
                 `with_preprocessing`, uint8 (batch, H, W) for grayscale or (batch, H, W, C) as MedMNIST
                 stores images, divided by 255 in float32 and flattened inside the graph
  logits         float32 (batch, n_classes): the pre-activation outputs (the record's test_logits.npy)
  probabilities  float32 (batch, n_classes): the run's output activation applied (test_probabilities.npy)

`batch` is a named dynamic axis. Metadata (`metadata_props`): ftmed_version, framework, run_key,
config_hash, data_md5, test_accuracy, output_activation, preprocessing. The file is written atomically:
a failed export leaves nothing at the destination.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ftmed_core import __version__
from ftmed_core.errors import ConfigError, RunError
from ftmed_core.frameworks import canonical, is_keras, keras_backend, keras_backend_environment
from ftmed_core.records import RunRecord, atomic_write_bytes, read_record

FORMATS = ("onnx",)
MODEL_FILE = "model.onnx"
OUTPUT_NAMES = ("logits", "probabilities")
WEIGHTS = {"lightning": Path("checkpoints") / "last.ckpt", "keras": Path("model.keras")}


def logit_tolerance(input_dim: int, reference_logits) -> float:
    """The declared bound on max |ONNX Runtime logits - the run's own test logits|.

    Both sides compute the same float32 products and differ only in the order their GEMM kernels sum them.
    Reordering a float32 sum of K terms changes it by at most K * u * sum|terms| (u = 2^-24; Higham's
    gamma_K); the widest layer is the first (K = input_dim), and the logits' magnitude stands in for the sum
    of absolute terms, floored at 1. Measured differences are ~100x below this; a transposed kernel, a
    missing /255 or a second softmax miss it by orders of magnitude.
    """
    import numpy as np

    scale = max(1.0, float(np.max(np.abs(reference_logits))) if np.size(reference_logits) else 1.0)
    return float(input_dim) * 2.0 ** -24 * scale


def weights_file(run_dir: Path, framework: str) -> Path:
    return Path(run_dir) / WEIGHTS["keras" if is_keras(framework) else "lightning"]


def image_shape(data: dict) -> tuple[int, ...]:
    """The stored image shape of the run's data: (H, W) for grayscale, (H, W, C) otherwise."""
    size, input_dim = int(data["size"]), int(data["input_dim"])
    channels, rest = divmod(input_dim, size * size)
    if rest or channels < 1:
        raise RunError(f"the record's input_dim {input_dim} is not size x size x channels for size {size}")
    return (size, size) if channels == 1 else (size, size, channels)


def _finished_record(run_dir: Path) -> RunRecord:
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a run directory")
    record = read_record(run_dir)
    if record is None:
        raise RunError(f"{run_dir} has no record.json: the run never finished; train it first")
    if not record.finished:
        raise RunError(f"run {run_dir.name} {record.status}"
                       f"{': ' + record.error.splitlines()[0] if record.error else ''}; only finished runs export")
    if not weights_file(run_dir, record.framework).is_file():
        raise RunError(f"run {run_dir.name} has no weights ({weights_file(run_dir, record.framework)} is missing)")
    return record


def _destination(run_dir: Path, out: Path | None) -> Path:
    return run_dir / MODEL_FILE if out is None else out / f"{run_dir.name}.onnx"


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ftmed-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _run_child(record: RunRecord, run_dir: Path, raw_path: Path, with_preprocessing: bool) -> None:
    framework = canonical(record.framework)
    env = dict(os.environ)
    if is_keras(framework):
        env.update(keras_backend_environment(keras_backend(framework), "cpu"))
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "")  # the exporters trace on the CPU
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    job = {"framework": framework, "run_dir": str(run_dir), "path": str(raw_path),
           "output_activation": record.experiment.output_activation,
           "input_dim": int(record.data["input_dim"]),
           "image_shape": list(image_shape(record.data)) if with_preprocessing else None}
    done = subprocess.run([sys.executable, "-m", "ftmed.onnx_export", json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0 or not raw_path.is_file():
        lines = [line for line in (done.stderr or "").strip().splitlines() if line.strip()]
        raise RunError(f"exporting {run_dir.name} ({framework}) failed: {lines[-1] if lines else 'no output'}")


def _finish(raw_path: Path, record: RunRecord, with_preprocessing: bool) -> bytes:
    """The exporter's graph with the shared names, a named batch axis and the run's metadata."""
    import onnx

    model = onnx.load(str(raw_path))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 2:
        raise RunError(f"the exporter wrote {len(inputs)} inputs and {len(graph.output)} outputs, expected 1 and 2")
    renames = {inputs[0].name: "input", graph.output[0].name: "logits", graph.output[1].name: "probabilities"}
    for value in (inputs[0], *graph.output):
        value.name = renames[value.name]
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    metadata = {"ftmed_version": __version__, "framework": canonical(record.framework), "run_key": record.run_key,
                "config_hash": record.experiment.config_hash(), "data_md5": str(record.data.get("md5", "")),
                "test_accuracy": repr(float(record.test["accuracy"])),
                "output_activation": record.experiment.output_activation,
                "preprocessing": "uint8 / 255 (float32), flattened" if with_preprocessing else "none"}
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "ftmed", __version__
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export(run_dirs, format: str = "onnx", out: str | os.PathLike | None = None,
           with_preprocessing: bool = False) -> list[Path]:
    """Export each finished run in `run_dirs` (one path or several) and return the written files.

    Without `out` each file is `<run_dir>/model.onnx`; with `out` (a folder, created if needed) it is
    `<out>/<run key>.onnx`. Raises ConfigError for
    an unknown format or an unwritable `out`, RunError for a run that is missing, failed, unfinished or has
    no weights -- all checked before anything is exported -- or whose export fails. Nothing is left half-
    written: each file appears whole or not at all.

    Example:
        >>> ftmed.export(["runs/lightning-b4b93e647214-76a71640-s0"], out="deploy", with_preprocessing=True)
        [PosixPath('deploy/lightning-b4b93e647214-76a71640-s0.onnx')]
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    run_dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ConfigError("no run directories given")
    records = [_finished_record(run_dir) for run_dir in run_dirs]
    out = Path(out) if out is not None else None
    if out is not None:
        _check_writable(out)
    written = []
    for run_dir, record in zip(run_dirs, records):
        destination = _destination(run_dir, out)
        if out is None:
            _check_writable(run_dir)
        with tempfile.TemporaryDirectory(prefix="ftmed-export-") as scratch:
            raw_path = Path(scratch) / "raw.onnx"
            _run_child(record, run_dir, raw_path, with_preprocessing)
            payload = _finish(raw_path, record, with_preprocessing)
        atomic_write_bytes(destination, payload)
        written.append(destination)
    return written


def _child(job: dict) -> None:
    shape = tuple(job["image_shape"]) if job["image_shape"] is not None else None
    if is_keras(job["framework"]):
        from keras_ref.export import export_onnx
    else:
        from lightning_ft.export import export_onnx
    export_onnx(Path(job["run_dir"]), Path(job["path"]), job["output_activation"], job["input_dim"], shape)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
