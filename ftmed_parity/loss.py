"""Layers 4-5: the same loss, the same gradients.

4 loss: Keras's compiled loss (`test_on_batch`, the graph `evaluate` runs, where the TF backend takes the
  softmax/sigmoid logits shortcut) vs the port's `keras_loss` on the same logits and labels, every output
  activation x loss mode; plus two pins: on a sigmoid output Keras's loss is softmax cross-entropy on the
  logits (the core's float64 reference) and not the literal probability formula; and, informational, per
  (output, loss) the registry's variants use, the formula TensorFlow computes (`effective_loss`).
5 gradients: GradientTape (in a tf.function, as `fit` runs it) vs torch autograd through `keras_loss`, on
  the baseline net, its initial weights and one 128-image batch, every output activation x loss mode.

Tolerances and their reasons are declared on the checks below.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np

from ftmed_core.config import LOSS_MODES, OUTPUT_ACTIVATIONS
from ftmed_core.variants import BASELINE
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.sides import (
    INPUT_DIM,
    N_CLASSES,
    keras_compiled,
    max_diff,
    one_hot,
    sample_data,
    torch_loss_and_gradients,
)

LOSS = Tolerance(2e-6)
LITERAL_GAP = Tolerance(1e-3, compare=">")
GRADIENTS = Tolerance(1e-5, scale="max|g|")
GRADIENTS_SIGNED = Tolerance(1e-4, scale="max|g|")
SIGNED_OUTPUTS = ("linear", "tanh")
MODE_IDS = {"keras": "keras", "probability": "prob"}

# ---------------------------------------------------------------------------------------------- 4 loss


def _keras_loss(ctx: Context, output: str, mode: str, n_rows: int) -> tuple[float, np.ndarray]:
    """Keras's compiled loss and its logits (the baseline's initial weights, `n_rows` images)."""
    from ftmed_core.protocol import initial_weights

    def compute():
        x, y = sample_data(n_rows)
        weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
        net = keras_compiled(ctx.sides.reference, replace(BASELINE, output_activation=output, loss=mode), weights)
        value = float(net.test_on_batch(x, one_hot(y), return_dict=True)["loss"])
        return value, np.asarray(ctx.sides.reference.logits_model(net).predict_on_batch(x))

    return ctx.memo(("keras loss", output, mode, n_rows), compute)


def loss_checks(output_activations: Iterable[str] = OUTPUT_ACTIVATIONS, loss_modes: Iterable[str] = LOSS_MODES,
                n_rows: int = 64) -> list[Check]:
    output_activations = tuple(output_activations)

    def loss(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            import torch

            from ftmed_core import losses as core_losses

            keras_value, z = _keras_loss(ctx, output, mode, n_rows)
            _, y = sample_data(n_rows)
            torch_value = float(ctx.sides.port.keras_loss(torch.from_numpy(z), torch.from_numpy(y), output, mode))
            reference = core_losses.mean_loss(z, y, output, mode)
            return Measurement(abs(keras_value - torch_value),
                               f"keras {keras_value:.6f}, port {torch_value:.6f}, core float64 {reference:.6f}")
        return measure

    def pin_softmax(ctx: Context, output: str) -> Measurement:
        from ftmed_core import losses as core_losses

        keras_value, z = _keras_loss(ctx, "sigmoid", "keras", n_rows)
        softmax_ce = core_losses.mean_loss(z, sample_data(n_rows)[1], "softmax", "keras")
        return Measurement(abs(keras_value - softmax_ce), f"keras {keras_value:.6f}, softmax-CE(z) {softmax_ce:.6f}")

    def pin_literal(ctx: Context, output: str) -> Measurement:
        from ftmed_core import losses as core_losses

        keras_value, z = _keras_loss(ctx, "sigmoid", "keras", n_rows)
        literal = core_losses.mean_loss(z, sample_data(n_rows)[1], "sigmoid", "probability")
        return Measurement(abs(keras_value - literal),
                           f"keras {keras_value:.6f}, literal -log(sigmoid/sum) {literal:.6f}")

    def formula(ctx: Context, subject: str) -> Measurement:
        from ftmed_core import losses as core_losses
        from ftmed_core.frameworks import effective_loss

        output, mode = subject.split(", loss=")
        keras_value, z = _keras_loss(ctx, output, mode, n_rows)
        name = effective_loss("keras", mode)
        reference = core_losses.mean_loss(z, sample_data(n_rows)[1], output, name)
        names = uses[(output, mode)]
        variants = ", ".join(names) if len(names) <= 2 else f"{names[0]} and {len(names) - 1} more"
        return Measurement(abs(keras_value - reference), f"{variants}: keras (TensorFlow) computes the '{name}' "
                                                         f"formula ({keras_value:.6f}; Lightning counterpart loss={name})")

    uses = {k: v for k, v in registry_loss_uses().items() if k[0] in output_activations and k[1] in loss_modes}
    why = "losses ~2.2 (ulp 2.4e-7); the divide-by-sum formula on signed outputs amplifies rounding to < 1e-6"
    checks = [Check(f"loss.{MODE_IDS.get(mode, mode)}", 4, f"loss ({mode})", LOSS, why, loss(mode),
                    output_activations, "output") for mode in loss_modes]
    if "sigmoid" in output_activations:
        checks += [
            Check("loss.pin", 4, "pin: sigmoid = softmax CE", LOSS,
                  "the TF backend's logits shortcut: same numbers as layer 4's loss rows", pin_softmax, ("sigmoid",),
                  "output"),
            Check("loss.pin.literal", 4, "pin: not the literal formula", LITERAL_GAP,
                  "the literal -log(sigmoid/sum) must be far (> 1e-3) from what Keras computed", pin_literal,
                  ("sigmoid",), "output"),
        ]
    if uses:
        checks.append(Check("loss.formula", 4, "formula; gap to TF's", informational(),
                            "which formula the backend computes per the variants' (output, loss): measured, shown, "
                            "not asserted", formula, tuple(f"{o}, loss={m}" for o, m in uses)))
    return checks


def registry_loss_uses() -> dict[tuple[str, str], list[str]]:
    """(output activation, loss) -> the registry variants that train with it, in registry order."""
    from ftmed_core.variants import VARIANTS

    uses: dict[tuple[str, str], list[str]] = {}
    for name, variant in VARIANTS.items():
        uses.setdefault((variant.config.output_activation, variant.config.loss), []).append(name)
    return uses


# ----------------------------------------------------------------------------------------- 5 gradients


def gradient_checks(output_activations: Iterable[str] = OUTPUT_ACTIVATIONS, loss_modes: Iterable[str] = LOSS_MODES,
                    n_rows: int = 128) -> list[Check]:
    output_activations = tuple(output_activations)

    def gradients(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            from ftmed_core.protocol import initial_weights

            keras, port = ctx.sides.reference, ctx.sides.port
            x, y = sample_data(n_rows)
            weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
            config = replace(BASELINE, output_activation=output, loss=mode)
            _, keras_grads = keras.loss_and_gradients(keras_compiled(keras, config, weights))(x, one_hot(y))
            keras_grads = [np.asarray(g) for g in keras_grads]
            _, torch_grads = torch_loss_and_gradients(port, port.build_mlp(config, INPUT_DIM, N_CLASSES, weights),
                                                      x, y, output, mode)
            scale = max(float(np.abs(g).max()) for g in keras_grads)
            diff = max_diff(keras_grads, torch_grads)
            return Measurement(diff, f"max|g| {scale:.2e}; relative gap {diff / scale if scale else 0:.1e}", scale)
        return measure

    checks = []
    for mode in loss_modes:
        bounded = tuple(o for o in output_activations if o not in SIGNED_OUTPUTS)
        signed = tuple(o for o in output_activations if o in SIGNED_OUTPUTS)
        mode_id = MODE_IDS.get(mode, mode)
        if bounded:
            checks.append(Check(f"grad.{mode_id}", 5, f"gradients ({mode})", GRADIENTS,
                                "a batch sum of products through 4 layers: rounding scales with the largest "
                                "gradient; a 1 % scaled loss shows as 1e-2 * max|g|",
                                gradients(mode), bounded, "output"))
        if signed:
            checks.append(Check(f"grad.{mode_id}.signed", 5, f"gradients ({mode})", GRADIENTS_SIGNED,
                                "divide-by-sum loss on signed outputs: 1/sum(outputs) amplifies the logits' "
                                "rounding; a 1 % scaled loss still shows 100x above it",
                                gradients(mode), signed, "output"))
    return checks
