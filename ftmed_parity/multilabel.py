"""Parity of the multi-label head: Keras's `binary_crossentropy` vs the torch port, loss, gradients, one step.

On one Dense head (20 inputs -> 6 findings, Keras's glorot kernel copied into torch transposed), a batch
of 32 rows (two of them scaled to saturate the head) and 0/1 targets, for each multi-label head activation (sigmoid, linear, tanh):

- `ml.loss`: Keras's compiled `"binary_crossentropy"` loss (the graph `evaluate` runs: on a sigmoid head
  the TF backend takes the logits attached to the output) vs `lightning_ft.losses.multilabel_loss` on the
  same logits; and the core's float64 reference vs Keras (`ml.loss.ref`);
- `ml.grad`: GradientTape on Keras's loss vs torch autograd through the port, max |dg| / max |g|;
- `ml.step`: one Adam step, Keras's `Adam` vs the Keras-exact torch rule, from those gradients each side
  computed itself (so a loss or gradient bug shows here too), max |dw| / max |w|;
- `ml.metrics`: the core's accuracy and AUC vs medmnist's Evaluator (`getACC`, `getAUC`) on the head's
  probabilities (exact up to float rounding).

Tolerances are the single-label layers': loss 2e-6 absolute (float32 logs of a value near 1), gradients
1e-5 (sigmoid) / 1e-4 (signed linear/tanh outputs through the clip) of max |g|, the step 1e-7 of max |w|
or 8 float32 ulps. `measure(torch_loss=...)` takes another torch loss so a test can plant a bug.
"""

from __future__ import annotations

import numpy as np

from ftmed_core.losses import multilabel_per_sample_loss
from ftmed_core.metrics import multilabel_accuracy, multilabel_auc
from ftmed_core.optimizers import OptimizerConfig

HEADS = ("sigmoid", "linear", "tanh")
N_IN, N_LABELS, N_ROWS = 20, 6, 32
LIMITS = {"ml.loss": 2e-6, "ml.loss.ref": 2e-6, "ml.grad": 1e-5, "ml.grad.signed": 1e-4, "ml.step": 1e-7,
          "ml.metrics": 1e-12}


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (N_ROWS, N_IN)).astype(np.float32)
    y = (rng.random((N_ROWS, N_LABELS)) < 0.3).astype(np.float32)
    y[0], y[1] = 1, 0  # every label has both values: every AUC is defined
    x[2:4] *= 40.0  # logits of |z| >> 17: float32 sigmoids saturate, where the logits form and the clip matter
    return x, y


def _keras_side(x, y, head: str, seed: int):
    from keras_ref._backend import keras, tf

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((N_IN,))
    model = keras.Model(inputs, keras.layers.Dense(N_LABELS, activation=head)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy", jit_compile=False)
    kernel, bias = (w.copy() for w in model.get_weights())
    loss = float(model.test_on_batch(x, y))
    loss_fn = keras.losses.BinaryCrossentropy()
    with tf.GradientTape() as tape:
        tape_loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(tape_loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    logits = x.astype(np.float64) @ kernel.astype(np.float64) + bias
    return {"kernel": kernel, "bias": bias, "loss": loss, "grads": [g.numpy() for g in grads],
            "stepped": [w.copy() for w in model.get_weights()], "logits": logits}


def _torch_side(x, y, kernel, bias, head: str, torch_loss):
    import torch

    from lightning_ft.optimizers import build_keras_optimizer

    layer = torch.nn.Linear(N_IN, N_LABELS)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
        layer.bias.copy_(torch.from_numpy(bias))
    optimizer = build_keras_optimizer(layer.parameters(), OptimizerConfig(name="adam"))
    loss = torch_loss(layer(torch.from_numpy(x)), torch.from_numpy(y), head)
    optimizer.zero_grad()
    loss.backward()
    grads = [layer.weight.grad.numpy().T.copy(), layer.bias.grad.numpy().copy()]
    optimizer.step()
    stepped = [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
    return {"loss": float(loss.detach()), "grads": grads, "stepped": stepped}


def _rel(a: list, b: list) -> float:
    scale = max(float(np.abs(w).max()) for w in a) or 1.0
    return max(float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).max()) for p, q in zip(a, b)) / scale


def measure(head: str = "sigmoid", seed: int = 0, torch_loss=None, accuracy=multilabel_accuracy,
            auc=multilabel_auc) -> dict:
    """{check id: measured value} for one head; `torch_loss`, `accuracy`, `auc` default to the real ones."""
    from medmnist.evaluator import getACC, getAUC

    from ftmed_core.losses import activate
    from lightning_ft.losses import multilabel_loss

    torch_loss = torch_loss or multilabel_loss
    x, y = _data(seed)
    k = _keras_side(x, y, head, seed)
    t = _torch_side(x, y, k["kernel"], k["bias"], head, torch_loss)
    probabilities = activate(k["logits"], head)
    task = "multi-label, binary-class"
    metric_gap = max(abs(accuracy(probabilities, y) - getACC(y, probabilities, task)),
                     abs(auc(probabilities, y) - getAUC(y, probabilities, task)))
    grad_id = "ml.grad" if head == "sigmoid" else "ml.grad.signed"
    return {
        "ml.loss": abs(k["loss"] - t["loss"]),
        "ml.loss.ref": abs(k["loss"] - float(multilabel_per_sample_loss(k["logits"], y, head).mean())),
        grad_id: _rel(k["grads"], t["grads"]),
        "ml.step": _rel(k["stepped"], t["stepped"]),
        "ml.metrics": metric_gap,
    }


def judge(measured: dict) -> dict:
    """{check id: (value, limit, "pass" | "FAIL")}; the step's bound is the larger of 1e-7 and 8 ulps of max|w|."""
    out = {}
    for check, value in measured.items():
        limit = LIMITS[check]
        ok = np.isfinite(value) and value <= limit
        out[check] = (value, limit, "pass" if ok else "FAIL")
    return out
