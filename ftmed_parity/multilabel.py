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

Registered in `ftmed parity` (`multilabel_checks`): layer 4 holds `ml.loss`, `ml.loss.ref`, `ml.metrics`,
layer 5 `ml.grad` (`ml.grad.signed` for linear/tanh), layer 6 `ml.step`. Tolerances are the single-label
layers': loss 2e-6 absolute (float32 logs of values near 1), gradients 1e-5 (sigmoid) / 1e-4 (signed
linear/tanh outputs through the clip) of max |g|, the step max(1e-7, 8 float32 ulps of max |w|) like the
optimizer layer, metrics 1e-12 (the same sums). `multilabel_checks(layer, torch_loss=...)` takes another
torch loss (or accuracy, AUC) so a test can plant a bug and see the row fail.
"""

from __future__ import annotations

import numpy as np

from ftmed_core.losses import multilabel_per_sample_loss
from ftmed_core.metrics import multilabel_accuracy, multilabel_auc
from ftmed_core.optimizers import OptimizerConfig
from ftmed_parity.checks import Check, Context, Measurement, Tolerance

HEADS = ("sigmoid", "linear", "tanh")
N_IN, N_LABELS, N_ROWS = 20, 6, 32


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


def _max_diff(a: list, b: list) -> float:
    return max(float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).max()) for p, q in zip(a, b))


def _max_abs(arrays: list) -> float:
    return max(float(np.abs(w).max()) for w in arrays)


def measure(head: str = "sigmoid", seed: int = 0, torch_loss=None, accuracy=multilabel_accuracy,
            auc=multilabel_auc) -> dict[str, Measurement]:
    """{check id: Measurement} for one head; `torch_loss`, `accuracy`, `auc` default to the real ones (a
    test passes others to plant a bug). Gradient and step values are absolute, with the scale
    (max |g|, max |w|) their tolerance is relative to."""
    from medmnist.evaluator import getACC, getAUC

    from ftmed_core.losses import activate
    from lightning_ft.losses import multilabel_loss

    torch_loss = torch_loss or multilabel_loss
    x, y = _data(seed)
    k = _keras_side(x, y, head, seed)
    t = _torch_side(x, y, k["kernel"], k["bias"], head, torch_loss)
    probabilities = activate(k["logits"], head)
    task = "multi-label, binary-class"
    ours, theirs = (accuracy(probabilities, y), auc(probabilities, y)), (getACC(y, probabilities, task),
                                                                         getAUC(y, probabilities, task))
    reference = float(multilabel_per_sample_loss(k["logits"], y, head).mean())
    g_scale, w_scale = _max_abs(k["grads"]), _max_abs(k["stepped"])
    return {
        "ml.loss": Measurement(abs(k["loss"] - t["loss"]), f"keras {k['loss']:.7f}, port {t['loss']:.7f}"),
        "ml.loss.ref": Measurement(abs(k["loss"] - reference), f"keras {k['loss']:.7f}, core float64 {reference:.7f}"),
        "ml.grad": Measurement(_max_diff(k["grads"], t["grads"]), f"max|g| {g_scale:.2e}", g_scale),
        "ml.step": Measurement(_max_diff(k["stepped"], t["stepped"]), f"one Adam step; max|w| {w_scale:.2e}", w_scale),
        "ml.metrics": Measurement(max(abs(a - b) for a, b in zip(ours, theirs)),
                                  f"accuracy {ours[0]:.6f} vs getACC {theirs[0]:.6f}; "
                                  f"AUC {ours[1]:.6f} vs getAUC {theirs[1]:.6f}"),
    }


# The single-label layers' tolerances (ftmed_parity.loss / .optimizers), and the same reasons.
LOSS = Tolerance(2e-6)
GRADIENTS = Tolerance(1e-5, scale="max|g|")
GRADIENTS_SIGNED = Tolerance(1e-4, scale="max|g|")
KERAS_STEP = Tolerance(1e-7, scale="max|w|", ulps=8)
METRICS = Tolerance(1e-12)
SIGNED_HEADS = ("linear", "tanh")

# (id, layer, name, tolerance, reason, heads)
DECLARED = (
    ("ml.loss", 4, "multi-label loss (binary_crossentropy)", LOSS,
     "losses ~0.7 in float32 (ulp 6e-8); Keras's clip and its mean over labels then rows, ported", HEADS),
    ("ml.loss.ref", 4, "multi-label loss vs core float64", LOSS,
     "the core's float64 reference (float32 clip bounds) vs Keras's float32 graph", HEADS),
    ("ml.metrics", 4, "multi-label accuracy/AUC vs medmnist", METRICS,
     "the same per-label means as medmnist's getACC/getAUC: equal up to float rounding", HEADS),
    ("ml.grad", 5, "multi-label gradients", GRADIENTS,
     "a batch sum of products: rounding scales with the largest gradient", tuple(h for h in HEADS if h not in SIGNED_HEADS)),
    ("ml.grad.signed", 5, "multi-label gradients", GRADIENTS_SIGNED,
     "signed linear/tanh outputs through Keras's clip: the single-label signed rows' bound", SIGNED_HEADS),
    ("ml.step", 6, "multi-label one Adam step", KERAS_STEP,
     "each side's own gradients through the Keras-exact Adam: the optimizer layer's bound", HEADS),
)


def multilabel_checks(layer: int, torch_loss=None, accuracy=multilabel_accuracy, auc=multilabel_auc) -> list[Check]:
    """The multi-label rows of parity `layer` (4: loss and metrics, 5: gradients, 6: one step; none
    elsewhere), one subject per head activation. `torch_loss`/`accuracy`/`auc` plant a bug (tests)."""

    def check(check_id: str):
        def run(ctx: Context, head: str) -> Measurement:
            key = ("multilabel", head, torch_loss, accuracy, auc)
            values = ctx.memo(key, lambda: measure(head, torch_loss=torch_loss, accuracy=accuracy, auc=auc))
            return values["ml.grad" if check_id.startswith("ml.grad") else check_id]
        return run

    return [Check(i, lay, name, tol, reason, check(i), heads, "head")
            for i, lay, name, tol, reason, heads in DECLARED if lay == layer]
