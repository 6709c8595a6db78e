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

Before a file is written, ONNX Runtime runs it on the run's test split (read from the run's data file when
it is still there with the recorded MD5): its logits must equal the run's `test_logits.npy` within
`logit_tolerance` and its test accuracy must equal the record's, else the export fails. What it measured is
written beside the file as JSON (`export.json` next to `<run_dir>/model.onnx`, `<run key>.json` next to
`<out>/<run key>.onnx`); `ftmed report` reads `<run_dir>/export.json` (`export_section`).
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
from ftmed_core.records import RunRecord, atomic_write_bytes, atomic_write_text, read_record

FORMATS = ("onnx",)
MODEL_FILE = "model.onnx"
CHECK_FILE = "export.json"
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
    if is_keras(record.framework) and keras_backend(record.framework) == "jax" and not _installed("jax2onnx"):
        raise RunError(f"run {run_dir.name} is {canonical(record.framework)}: Keras exports JAX models through "
                       f"jax2onnx, which is not installed (pip install jax2onnx)")
    return record


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _destination(run_dir: Path, out: Path | None) -> tuple[Path, Path]:
    """The ONNX file and the JSON of its check."""
    if out is None:
        return run_dir / MODEL_FILE, run_dir / CHECK_FILE
    return out / f"{run_dir.name}.onnx", out / f"{run_dir.name}.json"


def check_format(format: str) -> str:
    """`format` when it is one ftmed exports to; ConfigError naming the choices otherwise."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    return format


def _test_images(record: RunRecord):
    """The run's raw test images from its data file, or (None, why not) when the file is gone or changed."""
    from ftmed_core.data import load_npz

    path = record.data.get("path")
    if not path or not Path(path).is_file():
        return None, f"data file {path} not found"
    raw = load_npz(path, record.data.get("dataset") or record.experiment.dataset, int(record.data["size"]))
    if raw.md5 != record.data.get("md5"):
        return None, f"data file {path} has MD5 {raw.md5}, the run's was {record.data.get('md5')}"
    return raw.images["test"], ""


def _check(payload: bytes, record: RunRecord, run_dir: Path, with_preprocessing: bool) -> dict:
    """ONNX Runtime on the run's test split against the run's own test outputs; RunError when they differ.

    Returns what export.json holds: onnxruntime version, rows, the ONNX Runtime test accuracy and the
    record's, max |logits - test_logits.npy| and its tolerance (accuracy and gap None, with `note` saying
    why, when the data file is gone).
    """
    import numpy as np
    import onnxruntime as ort

    from ftmed_core.data import preprocess_images
    from ftmed_core.losses import activate
    from ftmed_core.metrics import accuracy, multilabel_accuracy

    reference = np.load(run_dir / "test_logits.npy")
    labels = np.load(run_dir / "test_labels.npy")
    result = {"format": "onnx", "with_preprocessing": with_preprocessing, "onnxruntime": ort.__version__,
              "n_test": int(len(labels)), "run_test_accuracy": float(record.test["accuracy"]),
              "onnxruntime_test_accuracy": None, "max_abs_logit_diff": None,
              "logit_tolerance": logit_tolerance(int(record.data["input_dim"]), reference), "note": ""}
    images, why = _test_images(record)
    if images is None:
        result["note"] = f"not checked on the test split: {why}"
        return result
    if len(images) != len(labels):
        raise RunError(f"run {run_dir.name}: the data file has {len(images)} test rows, the run {len(labels)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    x = np.asarray(images) if with_preprocessing else preprocess_images(images)
    logits = session.run(["logits"], {"input": x})[0]
    gap = float(np.max(np.abs(logits.astype(np.float64) - reference))) if len(labels) else 0.0
    multi_label, head = head_of(record)
    onnx_accuracy = (multilabel_accuracy if multi_label else accuracy)(activate(logits, head), labels)
    result.update(onnxruntime_test_accuracy=float(onnx_accuracy), max_abs_logit_diff=gap)
    if not gap <= result["logit_tolerance"]:
        raise RunError(f"run {run_dir.name}: ONNX Runtime's logits differ from the run's test logits by {gap:.2e}"
                       f" (tolerance {result['logit_tolerance']:.2e}); nothing written")
    if onnx_accuracy != result["run_test_accuracy"]:
        raise RunError(f"run {run_dir.name}: ONNX Runtime's test accuracy {onnx_accuracy:.6f} differs from the "
                       f"run's {result['run_test_accuracy']:.6f}; nothing written")
    return result


def head_of(record: RunRecord) -> tuple[bool, str]:
    """(multi-label?, the activation the run's output layer applied): on a multi-label dataset a softmax
    head is one sigmoid per label (`ftmed_core.tasks.head_for`), and the exported graph does the same."""
    from ftmed_core.tasks import head_for

    return head_for(record.experiment.dataset, record.experiment.output_activation)


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
           "output_activation": head_of(record)[1],
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
                "output_activation": head_of(record)[1],
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
    `<out>/<run key>.onnx`; beside it, its check on the test split as JSON (`export.json` /
    `<run key>.json`). Raises ConfigError for an unknown format or an unwritable `out`, RunError for a run
    that is missing, failed, unfinished or has no weights -- all checked before anything is exported -- or
    whose export fails or computes something else than the run (logits beyond `logit_tolerance`, another
    test accuracy). Nothing is left half-written: each file appears whole or not at all, the JSON after it.

    Example:
        >>> ftmed.export(["runs/lightning-b4b93e647214-76a71640-s0"], out="deploy", with_preprocessing=True)
        [PosixPath('deploy/lightning-b4b93e647214-76a71640-s0.onnx')]
    """
    check_format(format)
    missing = [module for module in ("onnx", "onnxruntime") if not _installed(module)]
    if missing:
        raise ConfigError(f"ftmed export needs {' and '.join(missing)}: pip install 'ftmed[export]'")
    run_dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ConfigError("no run directories given")
    records = [_finished_record(run_dir) for run_dir in run_dirs]
    out = Path(out) if out is not None else None
    if out is not None:
        _check_writable(out)
    written = []
    for run_dir, record in zip(run_dirs, records):
        destination, check_path = _destination(run_dir, out)
        if out is None:
            _check_writable(run_dir)
        with tempfile.TemporaryDirectory(prefix="ftmed-export-") as scratch:
            raw_path = Path(scratch) / "raw.onnx"
            _run_child(record, run_dir, raw_path, with_preprocessing)
            payload = _finish(raw_path, record, with_preprocessing)
        checked = {"file": destination.name, **_check(payload, record, run_dir, with_preprocessing)}
        check_path.unlink(missing_ok=True)  # a stale check never describes a new file
        atomic_write_bytes(destination, payload)
        atomic_write_text(check_path, json.dumps(checked, indent=2) + "\n")
        written.append(destination)
    return written


def export_finished(runs_dir: str | os.PathLike, run_keys=None, format: str = "onnx") -> dict:
    """Export every finished run in `runs_dir` (or those of `run_keys`), each to `<run_dir>/model.onnx`.

    One run's failure does not stop the others: returns {"written": [paths], "failed": ["<run key>: <why>"]}
    (one line each). Failed and unfinished runs are not exported and not counted as failures: the report
    lists them already.
    """
    from ftmed_core.errors import FtmedError
    from ftmed_core.records import scan_records

    check_format(format)
    runs_dir = Path(runs_dir)
    if run_keys is None:
        run_keys = [r.run_key for r in scan_records(runs_dir)[0] if r.finished]
    written, failed = [], []
    for key in run_keys:
        try:
            written += export(runs_dir / key, format=format)
        except FtmedError as exc:
            message = " ".join(str(exc).split())
            failed.append(f"{key}: {message}")
    return {"written": written, "failed": failed}


def export_failures(result) -> list[str]:
    """One line per run whose export failed, over a Comparison or a dict of them ([] without exports)."""
    comparisons = result.values() if isinstance(result, dict) else [result]
    return [f"export failed: {line}" for c in comparisons for line in (getattr(c, "exports", None) or {}).get("failed", [])]


def read_check(run_dir: Path) -> dict | None:
    """The run's export.json (what `export` measured when it wrote `<run_dir>/model.onnx`), None without one
    or when it is not readable JSON."""
    try:
        return json.loads((Path(run_dir) / CHECK_FILE).read_text())
    except (OSError, ValueError):
        return None


def export_columns(frameworks) -> list[str]:
    """The report's extra columns: per framework, ONNX Runtime's test accuracy and max |Δ logits|."""
    return [name for fw in frameworks for name in (f"{fw} ONNX acc %", f"{fw} ONNX max |Δlogits|")]


def export_cells(records, runs_dir: str | os.PathLike, frameworks) -> list[str] | None:
    """The cells of `export_columns` for one report row's `records` (all its frameworks and seeds), read
    from each run's export.json: mean ONNX Runtime test accuracy in % over the exported seeds with their
    count when some seeds have none ("77.85 (2/3 seeds)"), and the largest |Δ logits| over them; "" for a
    framework without an exported run, "not checked" where the data file was gone at export time. None when
    no run of the row was exported."""
    cells, any_export = [], False
    for fw in frameworks:
        runs = [r for r in records if r.framework == fw and r.finished]
        checks = [c for c in (read_check(Path(runs_dir) / r.run_key) for r in runs) if c is not None]
        any_export = any_export or bool(checks)
        measured = [c for c in checks if c.get("onnxruntime_test_accuracy") is not None]
        if not checks:
            cells += ["", ""]
        elif not measured:
            cells += ["not checked", "not checked"]
        else:
            mean = 100.0 * sum(c["onnxruntime_test_accuracy"] for c in measured) / len(measured)
            seeds = "" if len(measured) == len(runs) else f" ({len(measured)}/{len(runs)} seeds)"
            cells += [f"{mean:.2f}{seeds}", f"{max(c['max_abs_logit_diff'] for c in measured):.1e}"]
    return cells if any_export else None


def export_section(rows, records, runs_dir: str | os.PathLike) -> str:
    """Markdown appended to comparison.md when at least one run of `records` has an export.json: one row per
    report row (variant), `export_columns` per framework. "" otherwise, so a runs folder without exports
    renders exactly as before."""
    from dataclasses import replace

    from ftmed_core.records import FRAMEWORKS

    frameworks = [fw for fw in FRAMEWORKS if any(r.framework == fw for r in records)]
    by_row: dict = {}
    for record in records:  # a report row: one variant name and its configuration bar the seed
        key = (record.config["name"], replace(record.experiment, seed=0).config_hash())
        by_row.setdefault(key, []).append(record)
    lines = []
    for row in rows:
        cells = export_cells(by_row.get((row.variant, row.config_hash), []), runs_dir, frameworks)
        if cells is not None:
            lines.append("| " + " | ".join([row.variant, *cells]) + " |")
    if not lines:
        return ""
    columns = ["variant", *export_columns(frameworks)]
    header = ["", "## ONNX exports", "",
              "ONNX Runtime (CPU) on each exported run's test split, read from the run's export.json "
              "(`ftmed export`, `ftmed compare --export onnx`): test accuracy in %, mean over the exported seeds, "
              "and the largest max |ONNX Runtime logits - the run's test logits| over them (each run within "
              "its `logit_tolerance`, K * 2^-24 * max(1, max|logits|), or it would not have been written).", "",
              "| " + " | ".join(c.replace("|", "/") for c in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(header + lines) + "\n"


def _child(job: dict) -> None:
    shape = tuple(job["image_shape"]) if job["image_shape"] is not None else None
    if is_keras(job["framework"]):
        from keras_ref.export import export_onnx
    else:
        from lightning_ft.export import export_onnx
    export_onnx(Path(job["run_dir"]), Path(job["path"]), job["output_activation"], job["input_dim"], shape)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
