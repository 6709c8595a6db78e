"""Layers 4-5: the same loss, the same gradients.

4 loss: Keras's compiled loss (`test_on_batch`, the graph `evaluate` runs, where the TF backend takes the
  softmax/sigmoid logits shortcut) vs the port's `keras_loss` on the same logits and labels, every output
  activation x loss mode, the port in the loss mode that computes what that Keras backend computes
  (`matching_lightning_loss`: the same mode on TensorFlow, "probability" for "keras" on JAX and torch).
  Pins on the sigmoid output: Keras's loss is the formula `effective_loss` names for the backend (the
  core's float64 loss); on TensorFlow, where that is softmax cross-entropy on the logits, also not the
  literal probability formula. Informational, per (output, loss) the registry's variants use: which formula
  the backend computes, measured against TensorFlow's formula -- on JAX and torch the sigmoid output's
  differs: a known difference, not a failure.
5 gradients: the backend's own train-step differentiation (GradientTape in a tf.function on TensorFlow,
  `keras_ref._backend.native.gradient_step`) vs torch autograd through `keras_loss`, on the baseline net,
  its initial weights and one 128-image batch, every output activation x loss mode.

Each builder takes `keras_backend` (ids end in @backend except on TensorFlow). Tolerances and their reasons
are declared on the checks below, the same for every backend.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np

from ftmed_core.config import LOSS_MODES, OUTPUT_ACTIVATIONS
from ftmed_core.frameworks import effective_loss, keras_label, matching_lightning_loss
from ftmed_core.variants import BASELINE
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.sides import (
    INPUT_DIM,
    N_CLASSES,
    check_id,
    max_diff,
    one_hot,
    pair_label,
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


def _keras_loss(ctx: Context, keras_backend: str, output: str, mode: str, n_rows: int) -> tuple[float, np.ndarray]:
    """Keras's compiled loss and its logits (the baseline's initial weights, `n_rows` images)."""
    from ftmed_core.protocol import initial_weights

    def compute():
        x, y = sample_data(n_rows)
        weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
        config = replace(BASELINE, output_activation=output, loss=mode)
        return ctx.sides.keras(keras_backend).compiled_loss(config, weights, x, one_hot(y), INPUT_DIM, N_CLASSES)

    return ctx.memo(("keras loss", keras_backend, output, mode, n_rows), compute)


def loss_checks(output_activations: Iterable[str] = OUTPUT_ACTIVATIONS, loss_modes: Iterable[str] = LOSS_MODES,
                n_rows: int = 64, keras_backend: str = "tensorflow") -> list[Check]:
    output_activations = tuple(output_activations)
    label, pair = keras_label(keras_backend), pair_label(keras_backend)
    logits_shortcut = effective_loss(label, "keras") == "keras"  # TensorFlow's softmax CE on the logits

    def loss(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            import torch

            from ftmed_core import losses as core_losses

            keras_value, z = _keras_loss(ctx, keras_backend, output, mode, n_rows)
            _, y = sample_data(n_rows)
            port_mode = matching_lightning_loss(label, mode)
            torch_value = float(ctx.sides.port.keras_loss(torch.from_numpy(z), torch.from_numpy(y), output,
                                                          port_mode))
            reference = core_losses.mean_loss(z, y, output, port_mode)
            return Measurement(abs(keras_value - torch_value),
                               f"{label} {keras_value:.6f}, port (loss={port_mode}) {torch_value:.6f}, "
                               f"core float64 {reference:.6f}")
        return measure

    def pin_formula(ctx: Context, output: str) -> Measurement:
        from ftmed_core import losses as core_losses

        keras_value, z = _keras_loss(ctx, keras_backend, "sigmoid", "keras", n_rows)
        formula = effective_loss(label, "keras")
        expected = core_losses.mean_loss(z, sample_data(n_rows)[1], "sigmoid", formula)
        what = "softmax-CE(z)" if logits_shortcut else f"core float64 '{formula}' formula"
        return Measurement(abs(keras_value - expected), f"{label} {keras_value:.6f}, {what} {expected:.6f}")

    def pin_literal(ctx: Context, output: str) -> Measurement:
        from ftmed_core import losses as core_losses

        keras_value, z = _keras_loss(ctx, keras_backend, "sigmoid", "keras", n_rows)
        literal = core_losses.mean_loss(z, sample_data(n_rows)[1], "sigmoid", "probability")
        return Measurement(abs(keras_value - literal),
                           f"{label} {keras_value:.6f}, literal -log(sigmoid/sum) {literal:.6f}")

    def formula(ctx: Context, subject: str) -> Measurement:
        from ftmed_core import losses as core_losses

        output, mode = subject.split(", loss=")
        value, z = _keras_loss(ctx, keras_backend, output, mode, n_rows)
        mine, tf = effective_loss(label, mode), effective_loss("keras", mode)
        tf_value = core_losses.mean_loss(z, sample_data(n_rows)[1], output, tf)
        names = uses[(output, mode)]
        variants = ", ".join(names) if len(names) <= 2 else f"{names[0]} and {len(names) - 1} more"
        gap = abs(value - tf_value)
        if mine == tf:
            verdict = "" if keras_backend == "tensorflow" else "; the same formula as TensorFlow"
        elif gap > 1e-3:
            verdict = f"; TensorFlow computes '{tf}' ({tf_value:.6f}): a known difference, not a failure"
        else:  # e.g. softmax: the probability formula is softmax cross-entropy, written another way
            verdict = f"; TensorFlow's '{tf}' formula gives the same number on this output"
        return Measurement(gap, f"{variants}: {label} computes the '{mine}' formula ({value:.6f}; Lightning "
                                f"counterpart loss={mine}){verdict}")

    uses = {k: v for k, v in registry_loss_uses().items() if k[0] in output_activations and k[1] in loss_modes}
    why = ("losses ~2.2 (ulp 2.4e-7); the divide-by-sum formula on signed outputs amplifies rounding to < 1e-6; "
           "Lightning in the loss mode that computes what this backend computes")
    checks = [Check(check_id(f"loss.{MODE_IDS.get(mode, mode)}", keras_backend), 4, f"loss ({mode})", LOSS, why,
                    loss(mode), output_activations, "output", frameworks=pair) for mode in loss_modes]
    if "sigmoid" in output_activations:
        checks.append(Check(check_id("loss.pin", keras_backend), 4,
                            "pin: sigmoid = softmax CE" if logits_shortcut else "pin: effective_loss formula", LOSS,
                            "the sigmoid output's loss 'keras' is the formula effective_loss names for this backend "
                            "(TensorFlow: its logits shortcut)", pin_formula, ("sigmoid",), "output", frameworks=pair))
        if logits_shortcut:  # elsewhere the literal formula is the pinned one
            checks.append(Check(check_id("loss.pin.literal", keras_backend), 4, "pin: not the literal formula",
                                LITERAL_GAP, "the literal -log(sigmoid/sum) must be far (> 1e-3) from what Keras "
                                "computed", pin_literal, ("sigmoid",), "output", frameworks=pair))
    if uses:
        checks.append(Check(check_id("loss.formula", keras_backend), 4, "formula; gap to TF's", informational(),
                            "which formula the backend computes per the variants' (output, loss), and its gap to "
                            "TensorFlow's: measured, shown, not asserted", formula,
                            tuple(f"{o}, loss={m}" for o, m in uses), frameworks=pair_label(keras_backend, "keras")))
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
                    n_rows: int = 128, keras_backend: str = "tensorflow") -> list[Check]:
    output_activations = tuple(output_activations)
    label, pair = keras_label(keras_backend), pair_label(keras_backend)

    def gradients(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            from ftmed_core.protocol import initial_weights

            port = ctx.sides.port
            x, y = sample_data(n_rows)
            weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
            config = replace(BASELINE, output_activation=output, loss=mode)
            keras_loss, keras_grads = ctx.sides.keras(keras_backend).loss_and_gradients(
                config, weights, x, one_hot(y), INPUT_DIM, N_CLASSES)
            port_mode = matching_lightning_loss(label, mode)
            torch_loss, torch_grads = torch_loss_and_gradients(
                port, port.build_mlp(replace(config, loss=port_mode), INPUT_DIM, N_CLASSES, weights), x, y, output,
                port_mode)
            scale = max(float(np.abs(g).max()) for g in keras_grads)
            diff = max_diff(keras_grads, torch_grads)
            return Measurement(diff, f"max|g| {scale:.2e}; relative gap {diff / scale if scale else 0:.1e}; loss gap "
                                     f"{abs(keras_loss - torch_loss):.1e} (port loss={port_mode})", scale)
        return measure

    checks = []
    for mode in loss_modes:
        bounded = tuple(o for o in output_activations if o not in SIGNED_OUTPUTS)
        signed = tuple(o for o in output_activations if o in SIGNED_OUTPUTS)
        mode_id = MODE_IDS.get(mode, mode)
        if bounded:
            checks.append(Check(check_id(f"grad.{mode_id}", keras_backend), 5, f"gradients ({mode})", GRADIENTS,
                                "a batch sum of products through 4 layers: rounding scales with the largest "
                                "gradient; a 1 % scaled loss shows as 1e-2 * max|g|",
                                gradients(mode), bounded, "output", frameworks=pair))
        if signed:
            checks.append(Check(check_id(f"grad.{mode_id}.signed", keras_backend), 5, f"gradients ({mode})",
                                GRADIENTS_SIGNED, "divide-by-sum loss on signed outputs: 1/sum(outputs) amplifies "
                                "the logits' rounding; a 1 % scaled loss still shows 100x above it",
                                gradients(mode), signed, "output", frameworks=pair))
    return checks
