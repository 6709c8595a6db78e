"""What Keras computes on the backend this process imported it with, as arrays, for parity against Lightning.

The parity layers 1-7 need Keras's numbers for one backend at a time, and Keras fixes its backend at
import: `ftmed_parity.probe.probe(backend, request, arrays)` starts `python -m keras_ref.backend_probe`
in a child process with that backend's environment and reads back what `compute` returned. Every number is
Keras's own, computed the way `fit` computes it on that backend:

| key                          | layer | what                                                                                    |
|------------------------------|-------|-----------------------------------------------------------------------------------------|
| meta (JSON)                  | -     | backend, keras version, and per variant: parameter count and variable shapes (layer 1)  |
| baseline_logits              | 4, 5  | the baseline's logits on x (Lightning's loss is evaluated on them)                      |
| weights/{i}                  | 2     | the core's initial weights after core -> Keras -> neutral file -> Keras -> core          |
| logits/{hidden}              | 3     | pre-activation outputs per hidden activation                                            |
| output/{hidden}/{output}     | 3     | activated outputs                                                                       |
| loss/{output}/{mode}         | 4     | the compiled loss (`test_on_batch`, i.e. evaluate's step), scalar                        |
| grad/{output}/{mode}/{i}     | 5     | d loss / d variable i as the backend's train step differentiates it (neutral layout)     |
| replay/{optimizer}/{i}       | 6     | variable i after each recorded step (`record_steps`) when the Keras optimizer applies the given gradients |
| closed/{name}/losses, closed/{name}/weights/{step}/{i} | 7 | per config in `closed_loop_configs`: one epoch of `train_on_batch` over the core's batches (data from the config's data_dir): per-step losses, weights after the recorded steps and the last |

Arrays in (`arrays`): x (N, input_dim) float32, y (N,) int; for layer 6 `start/{i}` and `grads/{step}/{i}`.
The process runs on CPU, float32, one thread (the parity suite's setting).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftmed_core.config import ExperimentConfig, OptimizerConfig
from ftmed_core.data import one_hot
from ftmed_core.protocol import initial_weights
from ftmed_core.variants import BASELINE, VARIANTS
from keras_ref._backend import BACKEND, keras, native
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights, logits_model


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float32)


def loss_and_gradients(model: keras.Model, x: np.ndarray, y_onehot: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """The loss and its gradients w.r.t. `model.trainable_variables`, as the backend's `train_step` computes them:
    TensorFlow: `compute_loss` under a GradientTape in a tf.function (where the logits shortcut applies);
    JAX: `jax.value_and_grad` of the trainer's own `compute_loss_and_updates`; torch: `compute_loss` then
    `backward()`. Kernels come back (fan_in, fan_out), Keras's layout."""
    loss, grads = native.gradient_step(model)(x, y_onehot)
    return float(_numpy(keras.ops.convert_to_numpy(loss))), [_numpy(keras.ops.convert_to_numpy(g)) for g in grads]


def _architecture(input_dim: int, n_classes: int) -> dict:
    out = {}
    for name, variant in VARIANTS.items():
        net = build_mlp(variant.config, input_dim, n_classes)
        out[name] = {"count": int(net.count_params()),
                     "shapes": [[int(d) for d in v.shape] for v in net.trainable_variables]}
    return out


def _weights_round_trip(input_dim: int, n_classes: int, workdir: Path) -> list[np.ndarray]:
    from keras_ref.weights import export_weights, import_weights

    start = initial_weights(BASELINE, input_dim, n_classes)
    export_weights(build_mlp(BASELINE, input_dim, n_classes, start), workdir / "k.npz")
    back = get_weights(import_weights(BASELINE, workdir / "k.npz"))
    return [array for pair in back for array in pair]


def _replay(opt: OptimizerConfig, hidden: tuple, input_dim: int, n_classes: int, start: list, grads_seq: list,
            record_steps: list[int]) -> list[np.ndarray]:
    """Variable i after each step in `record_steps` (1-based), stacked: (len(record_steps), *shape) per variable."""
    from keras_ref.optimizers import build_optimizer

    config = replace(BASELINE, hidden_units=hidden)
    pairs = [(start[2 * i], start[2 * i + 1]) for i in range(len(start) // 2)]
    net = build_mlp(config, input_dim, n_classes, pairs)
    optimizer = build_optimizer(replace(opt, semantics="keras"))
    variables = net.trainable_variables
    kept: list[list[np.ndarray]] = [[] for _ in variables]
    for step, grads in enumerate(grads_seq, start=1):
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
        if step in record_steps:
            for i, v in enumerate(variables):
                kept[i].append(_numpy(keras.ops.convert_to_numpy(v.value)))
    return [np.stack(k) for k in kept]


def _closed_loop(name: str, config: ExperimentConfig, record_steps: list[int]) -> dict[str, np.ndarray]:
    from ftmed_core.data import load_experiment_data
    from keras_ref.backend.common import CoreBatchSequence

    data = load_experiment_data(config, allow_download=False)
    weights = initial_weights(config, data.input_dim, data.n_classes)
    net = build_mlp(config, data.input_dim, data.n_classes, weights)
    compile_model(net, config)
    n = len(data.y_train)
    batches = CoreBatchSequence(data.train, data.n_classes, config.batch_size, config.seed, config.shuffle)
    out: dict[str, np.ndarray] = {}
    losses = []
    for step in range(len(batches)):
        xb, yb = batches[step]
        losses.append(float(net.train_on_batch(xb, yb, return_dict=True)["loss"]))
        if step + 1 in record_steps or step + 1 == len(batches):
            for i, array in enumerate(a for pair in get_weights(net) for a in pair):
                out[f"closed/{name}/weights/{step + 1}/{i}"] = array
    out[f"closed/{name}/losses"] = np.asarray(losses, dtype=np.float64)
    return out


def compute(request: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the checks `request["checks"]` names (architecture, weights, forward, loss, gradients, optimizers,
    closed_loop) on this process's backend; return (meta, arrays) as in the module docstring."""
    checks = set(request["checks"])
    input_dim, n_classes = int(request.get("input_dim", 2352)), int(request.get("n_classes", 9))
    meta: dict = {"backend": BACKEND, "keras": keras.__version__}
    out: dict[str, np.ndarray] = {}
    x = np.asarray(arrays["x"], dtype=np.float32) if "x" in arrays else None
    y = np.asarray(arrays["y"]) if "y" in arrays else None
    weights = initial_weights(BASELINE, input_dim, n_classes)
    if "architecture" in checks:
        meta["architecture"] = _architecture(input_dim, n_classes)
    if "weights" in checks:
        with tempfile.TemporaryDirectory() as tmp:
            for i, array in enumerate(_weights_round_trip(input_dim, n_classes, Path(tmp))):
                out[f"weights/{i}"] = array
    if x is not None:  # the baseline's logits on x: what layers 4 and 5 feed Lightning's loss
        out["baseline_logits"] = _numpy(keras.ops.convert_to_numpy(
            logits_model(build_mlp(BASELINE, input_dim, n_classes, weights)).predict_on_batch(x)))
    if "forward" in checks:
        for hidden in request["hidden_activations"]:
            config = replace(BASELINE, hidden_activation=hidden)
            for output in request["output_activations"]:
                net = build_mlp(replace(config, output_activation=output), input_dim, n_classes, weights)
                if BACKEND == "jax":  # one batch: op by op is cheaper than compiling a predict step per model
                    net.jit_compile = False
                if f"logits/{hidden}" not in out:
                    out[f"logits/{hidden}"] = _numpy(keras.ops.convert_to_numpy(logits_model(net).predict_on_batch(x)))
                out[f"output/{hidden}/{output}"] = _numpy(keras.ops.convert_to_numpy(net.predict_on_batch(x)))
    for output in request.get("output_activations", ()):
        for mode in request.get("loss_modes", ()):
            config = replace(BASELINE, output_activation=output, loss=mode)
            if "loss" in checks:
                net = build_mlp(config, input_dim, n_classes, weights)
                compile_model(net, config)
                if BACKEND == "jax":  # one batch: op by op is cheaper than compiling evaluate's step
                    net.jit_compile = False
                value = net.test_on_batch(x, one_hot(y, n_classes), return_dict=True)["loss"]
                out[f"loss/{output}/{mode}"] = np.asarray(float(value), dtype=np.float64)
            if "gradients" in checks:
                net = build_mlp(config, input_dim, n_classes, weights)
                compile_model(net, config)
                rows = slice(0, int(request.get("gradient_rows", len(x))))
                loss, grads = loss_and_gradients(net, x[rows], one_hot(y[rows], n_classes))
                out[f"grad_loss/{output}/{mode}"] = np.asarray(loss, dtype=np.float64)
                for i, g in enumerate(grads):
                    out[f"grad/{output}/{mode}/{i}"] = g
    if "optimizers" in checks:
        n_vars = len([k for k in arrays if k.startswith("start/")])
        start = [arrays[f"start/{i}"] for i in range(n_vars)]
        n_steps = len({k.split("/")[1] for k in arrays if k.startswith("grads/")})
        grads_seq = [[arrays[f"grads/{s}/{i}"] for i in range(n_vars)] for s in range(n_steps)]
        record_steps = [int(s) for s in request["record_steps"]]
        for name, opt in request["optimizers"].items():
            for i, stacked in enumerate(_replay(OptimizerConfig(**opt), tuple(request["open_loop_hidden"]),
                                                input_dim, n_classes, start, grads_seq, record_steps)):
                out[f"replay/{name}/{i}"] = stacked
    if "closed_loop" in checks:
        for name, config in request["closed_loop_configs"].items():
            out.update(_closed_loop(name, ExperimentConfig.from_dict(config),
                                    [int(s) for s in request.get("record_steps_closed", (1, 2, 3))]))
    return meta, out


def main(argv: list[str]) -> int:
    """`python -m keras_ref.backend_probe DIR`: reads DIR/request.json and DIR/in.npz, writes DIR/out.npz and
    DIR/meta.json."""
    folder = Path(argv[0])
    request = json.loads((folder / "request.json").read_text())
    with np.load(folder / "in.npz", allow_pickle=False) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    native.limit_threads(1)
    meta, out = compute(request, arrays)
    np.savez(folder / "out.npz", **out)
    (folder / "meta.json").write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
