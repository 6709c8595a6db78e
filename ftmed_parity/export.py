"""Layer 9: export. One configuration (the baseline, seed 0) is trained for one epoch by each framework --
`lightning_ft.train` and `keras_ref.train`, which start from the core's initial weights and take the core's
batch order -- on a synthetic PathMNIST-format file (2 % scale, 28 x 28 x 3). Each finished run is then
exported in this process by its framework's exporter (`lightning_ft.export.export_onnx`,
`keras_ref.export.export_onnx`: the functions `ftmed export` runs in its child processes), once taking
float32 model inputs and once taking uint8 images (the with-preprocessing graph), and every graph is run by
ONNX Runtime (CPU, one thread) on the test split:

- each framework's graph against that framework's own test logits and probabilities (the run's
  `test_logits.npy` / `test_probabilities.npy`) and its recorded test accuracy;
- the Lightning graph against the Keras graph (same start, same batches, one epoch).

Tolerances (K = the input dimension, 2352; u = 2^-24, float32's unit roundoff):
- own logits: K * u * max(1, max|z|). Exporter and framework compute the same float32 products and differ
  only in the order their GEMM kernels sum them; reordering a sum of K terms moves it by at most
  K * u * sum|terms| (Higham's gamma_K), the first layer is the widest, and the logits' magnitude stands in
  for the sum of absolute terms. The same bound `ftmed.onnx_export.logit_tolerance` states.
- own probabilities: the same bound. The output activation is 1-Lipschitz in max-norm (softmax: |dp| <=
  max|dz| / 2), and its own rounding over 9 classes (~10 u) is far below K * u.
- accuracy: exact. Predictions are argmaxes; rounding-level logit differences leave them alone here.
- Lightning graph vs Keras graph: the closed-loop bound. After one epoch the two trainings differ by
  rounding compounded through Adam's steps (layer 7's drift: ~1e-5 in the weights); 1e-3 * max(1, max|z|)
  leaves room for that and is still orders of magnitude below what a layout, preprocessing or activation
  bug in either export does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ftmed_core.config import RuntimeConfig
from ftmed_core.variants import BASELINE
from ftmed_parity.checks import Check, Context, Measurement, Tolerance
from ftmed_parity.sides import INPUT_DIM

PACKAGES = ("onnx", "onnxruntime", "tf2onnx")  # the `export` extra, as far as this layer needs it


def missing_packages() -> list[str]:
    """The packages this layer needs that are not installed here (empty when it can run)."""
    from importlib.util import find_spec

    return [name for name in PACKAGES if find_spec(name) is None]


SCALE = 0.02
SEED = 0
FRAMEWORKS = ("lightning", "keras")
GRAPHS = tuple(f"{fw}{suffix}" for suffix in ("", " uint8") for fw in FRAMEWORKS)
UNIT_ROUNDOFF = 2.0 ** -24
OWN_LIMIT = INPUT_DIM * UNIT_ROUNDOFF
CROSS_LIMIT = 1e-3
SCALE_TEXT = "max(1, max|z|)"


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _exporter(framework: str):
    """The framework's export function, looked up at call time (what `ftmed export`'s child process calls)."""
    if framework == "lightning":
        from lightning_ft import export as module
    else:
        from keras_ref import export as module
    return module.export_onnx


def _train_and_export(ctx: Context) -> dict:
    """Train both runs, export each twice, run every graph on the test split."""
    from ftmed_core.data import preprocess_images
    from ftmed_core.synth import write_synthetic

    folder = Path(ctx.workdir) / "export"
    write_synthetic(folder / "data", "pathmnist", 28, scale=SCALE, seed=11, overwrite=True)
    config = replace(BASELINE, data_dir=str(folder / "data"), epochs=1, seed=SEED)
    runtime = RuntimeConfig(accelerator="cpu", threads=1, progress=False)
    raw = np.load(folder / "data" / "pathmnist.npz")["test_images"]
    trainers = {"lightning": ctx.sides.port.train, "keras": ctx.sides.reference.train}
    out: dict = {"raw_shape": raw.shape}
    for framework in FRAMEWORKS:
        record = trainers[framework](config, runtime=runtime, runs_dir=folder / "runs")
        if not record.finished:
            raise RuntimeError(f"{framework} training failed: {record.error}")
        run_dir = folder / "runs" / record.run_key
        own = {"logits": np.load(run_dir / "test_logits.npy"),
               "probabilities": np.load(run_dir / "test_probabilities.npy"),
               "labels": np.load(run_dir / "test_labels.npy"), "accuracy": float(record.test["accuracy"])}
        for suffix, shape in (("", None), (" uint8", tuple(raw.shape[1:]))):
            path = folder / f"{framework}{suffix.strip()}.onnx"
            _exporter(framework)(run_dir, path, config.output_activation, INPUT_DIM, shape)
            session = _session(path)
            x = raw if shape else preprocess_images(raw)
            logits, probabilities = session.run(None, {session.get_inputs()[0].name: x})
            out[f"{framework}{suffix}"] = {"logits": logits, "probabilities": probabilities, "own": own}
    return out


def _scale(logits: np.ndarray) -> float:
    return max(1.0, float(np.max(np.abs(logits))))


def export_checks() -> list[Check]:
    """The layer's rows: per exported graph (lightning, keras; float32 and uint8 input) its logits,
    probabilities and accuracy against its own run; the Lightning graph against the Keras graph."""

    def run(ctx: Context) -> dict:
        return ctx.memo("export", lambda: _train_and_export(ctx))

    def own(what: str):
        def measure(ctx: Context, graph: str) -> Measurement:
            result = run(ctx)[graph]
            reference = result["own"][what]
            gap = float(np.max(np.abs(result[what].astype(np.float64) - reference)))
            return Measurement(gap, f"{len(reference)} test rows; max|z| {np.max(np.abs(result['own']['logits'])):.2f}",
                               _scale(result["own"]["logits"]))
        return measure

    def accuracy(ctx: Context, graph: str) -> Measurement:
        from ftmed_core.metrics import accuracy as core_accuracy

        result = run(ctx)[graph]
        onnx_accuracy = core_accuracy(result["probabilities"], result["own"]["labels"])
        return Measurement(abs(onnx_accuracy - result["own"]["accuracy"]),
                           f"onnxruntime {onnx_accuracy:.4f}, run {result['own']['accuracy']:.4f}")

    def cross(ctx: Context, _: str) -> Measurement:
        r = run(ctx)
        a, b = r["lightning"]["logits"], r["keras"]["logits"]
        agree = float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))
        return Measurement(float(np.max(np.abs(a.astype(np.float64) - b))),
                           f"{agree:.1%} of test predictions agree", max(_scale(a), _scale(b)))

    own_tolerance = Tolerance(OWN_LIMIT, SCALE_TEXT)
    return [
        Check("export.logits", 9, "ONNX Runtime logits vs own test logits", own_tolerance,
              "same float32 products, another summation order: K*u*max|z| with K=2352 (gamma_K)", own("logits"),
              GRAPHS, "graph"),
        Check("export.probs", 9, "ONNX Runtime probabilities vs own", own_tolerance,
              "the output activation contracts logit gaps; its own rounding (~10u) is far below K*u",
              own("probabilities"), GRAPHS, "graph"),
        Check("export.accuracy", 9, "ONNX Runtime test accuracy vs own", Tolerance(0),
              "argmax of rounding-level different outputs: identical predictions", accuracy, GRAPHS, "graph"),
        Check("export.cross", 9, "Lightning graph vs Keras graph logits", Tolerance(CROSS_LIMIT, SCALE_TEXT),
              "one epoch from the same start and batches: layer 7's compounded rounding (~1e-5), with room",
              cross, ("baseline, 1 epoch",), "run", frameworks="keras vs lightning"),
    ]
